//! Compiles the .proto files with protox (pure Rust: no system `protoc`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/dengine/v1/client.proto",
        "proto/dengine/v1/raft.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("dengine_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Stored keys and values are `bytes::Bytes` end to end: a node
        // answers reads and watch events with the state machine's own
        // bytes (shared, never copied per response or per watcher).
        .bytes(".dengine.v1.KeyValue")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
