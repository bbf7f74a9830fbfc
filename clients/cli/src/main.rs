//! `dengine`: see `docs/cli.md` (or `dengine --help`).

fn main() {
    std::process::exit(dengine_cli::run(std::env::args_os()));
}
