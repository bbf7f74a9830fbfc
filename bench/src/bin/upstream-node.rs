//! `upstream-node`: one node of upstream d-engine 0.2.4 in standalone mode
//! (its gRPC server), for the benchmark's `upstream-standalone-3` target.
//! Upstream publishes no server binary, only the `StandaloneEngine` API;
//! this is the few lines its own example wraps around it.
//!
//! ```text
//! upstream-node --config node1.toml --data-dir /tmp/x/node1
//! ```
//!
//! `--config` is an upstream config file (`[cluster]`, `[raft]`, ...; see
//! `d_engine_bench`'s `systems/upstream.rs`), `--data-dir` where the file
//! Raft log and file state machine live. Upstream also reads `RAFT__*`
//! environment variables over the file. Runs until SIGTERM or SIGINT
//! (graceful stop) or SIGKILL.

/// The allocator of `d-engine-server` and of the benchmark tool, so the
/// standalone processes of both systems run on the same allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use upstream_d_engine as up;

const USAGE: &str = "usage: upstream-node --config <file.toml> --data-dir <dir>";

/// `(config, data_dir)` from the command line.
fn parse_args(args: &[String]) -> Result<(String, PathBuf)> {
    let (mut config, mut data) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().cloned(),
            "--data-dir" => data = it.next().map(PathBuf::from),
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    match (config, data) {
        (Some(c), Some(d)) => Ok((c, d)),
        (None, _) => bail!("--config is required; {USAGE}"),
        (_, None) => bail!("--data-dir is required; {USAGE}"),
    }
}

async fn run(config: String, data: PathBuf) -> Result<()> {
    std::fs::metadata(&config).with_context(|| format!("--config {config}"))?;
    let storage = up::FileStorageEngine::new(data.join("storage"))
        .map_err(|e| anyhow!("opening the file log in {}: {e:?}", data.display()))?;
    let sm = up::FileStateMachine::new(data.join("state_machine"))
        .await
        .map_err(|e| {
            anyhow!(
                "opening the file state machine in {}: {e:?}",
                data.display()
            )
        })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(());
    });
    up::StandaloneEngine::run_custom(
        std::sync::Arc::new(storage),
        std::sync::Arc::new(sm),
        stop_rx,
        Some(&config),
    )
    .await
    .map_err(|e| anyhow!("upstream node stopped with an error: {e:?}"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, data) = parse_args(&args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(config, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn both_flags_are_required_and_unknown_ones_refused() {
        let (c, d) = parse_args(&s(&["--config", "a.toml", "--data-dir", "/d"])).unwrap();
        assert_eq!((c.as_str(), d), ("a.toml", PathBuf::from("/d")));
        let e = parse_args(&s(&["--config", "a.toml"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--data-dir is required"), "{e}");
        let e = parse_args(&s(&["--port", "1"])).unwrap_err().to_string();
        assert!(e.contains("unknown argument \"--port\""), "{e}");
    }
}
