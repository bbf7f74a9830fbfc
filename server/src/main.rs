fn main() {
    eprintln!("d-engine-server: not yet implemented");
    std::process::exit(2);
}
