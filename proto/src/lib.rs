//! d-engine's wire contract: Rust types and tonic services generated from
//! `proto/proto/dengine/v1/*.proto` (package `dengine.v1`).

/// Package `dengine.v1`: the client API (`Kv`, `Cluster`, `Admin`) and the
/// peer protocol (`Raft`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dengine.v1");
}

/// Encoded `FileDescriptorSet` of every d-engine .proto file, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dengine_descriptor.bin"));

/// Domain used in `google.rpc.ErrorInfo` for d-engine errors.
pub const ERROR_DOMAIN: &str = "d-engine";
