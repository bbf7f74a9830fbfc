//! `dengine`, the command-line client for d-engine clusters, as a library:
//! [`run`] parses the arguments, runs one command against the cluster and
//! returns the process exit code (see [`exit`] and `docs/cli.md`).
//!
//! Every command builds one gRPC client ([`connect`]) from the global flags
//! and uses the public Rust client (`d-engine-client`) only.

pub mod args;
mod cmd;
pub mod connect;
pub mod exit;
pub mod output;
pub mod txn_input;

use std::ffi::OsString;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::CliResult;

/// Runs `dengine` with `args` (the first being the program name); returns
/// the exit code. Usage errors print clap's message and return 2; `--help`
/// and `--version` return 0.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::ERROR;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            e.code
        }
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    let g = &cli.global;
    match cli.command {
        // Parsed before connecting: malformed input fails without a server.
        Command::Txn(a) => cmd::kv::txn(g, a).await,
        Command::Get(a) => cmd::kv::get(g, a).await,
        Command::Put(a) => cmd::kv::put(g, a).await,
        Command::Del(a) => cmd::kv::del(g, a).await,
        Command::Watch(a) => cmd::watch::watch(g, a).await,
        Command::Lease(c) => cmd::lease::lease(g, c).await,
        Command::Lock(a) => cmd::coord::lock(g, a).await,
        Command::Elect(a) => cmd::coord::elect(g, a).await,
        Command::Member(c) => cmd::cluster::member(g, c).await,
        Command::Leader(c) => cmd::cluster::leader(g, c).await,
        Command::Endpoint(c) => cmd::cluster::endpoint(g, c).await,
        Command::Snapshot(c) => cmd::cluster::snapshot(g, c).await,
        Command::User(c) => cmd::auth::user(g, c).await,
        Command::Role(c) => cmd::auth::role(g, c).await,
        Command::Token(c) => cmd::auth::token(g, c).await,
        Command::Check(args::CheckCmd::Perf(a)) => cmd::perf::perf(g, a).await,
    }
}
