//! The example application state machine (`engine/facade/examples/app_jobs.rs`)
//! built as a binary of this crate, so `tests/tests/cluster_app.rs` runs the
//! very example file as a 3-process cluster.

#[path = "../../../engine/facade/examples/app_jobs.rs"]
mod example;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    example::main()
}
