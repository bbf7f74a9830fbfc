//! `d-engine-server`: see `docs/server.md` and `d-engine-server --help`.

use std::process::ExitCode;

use clap::Parser;
use d_engine_server::{certs, logging, main_with, restore, secrets, Cli, Command, LogFormat};

/// mimalloc: sled and the request path allocate from several threads at
/// once, where glibc malloc's arena locks cost a third of the write
/// throughput (docs/performance.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(cmd) = &cli.command {
        let out: Result<String, String> = match cmd {
            Command::Certs(args) => certs::main(args)
                .map(|()| String::new())
                .map_err(|e| e.to_string()),
            Command::HashPassword => {
                secrets::hash_password_from(std::io::stdin()).map_err(|e| e.to_string())
            }
            Command::GenToken => secrets::gen_token().map_err(|e| e.to_string()),
            Command::GenSecret(args) => secrets::gen_secret(args).map_err(|e| e.to_string()),
            Command::Restore(args) => restore::main(args),
        };
        return match out {
            Ok(text) => {
                if !text.is_empty() {
                    println!("{}", text.trim_end());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("d-engine-server: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Err(e) = logging::init(cli.log_format, &cli.log) {
        eprintln!("d-engine-server: {e}");
        return ExitCode::from(2);
    }
    let json = cli.log_format == LogFormat::Json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("d-engine")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("d-engine-server: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(main_with(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                tracing::error!(error = %e, exit_code = e.exit_code(), "d-engine-server failed");
            }
            eprintln!("d-engine-server: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
