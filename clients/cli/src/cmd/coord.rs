//! `lock` and `elect`: hold a lock or leadership on a kept-alive lease.

use d_engine_client::CoordClient;
use serde_json::json;

use super::Interrupt;
use crate::args::{ElectArgs, Format, Global, LockArgs};
use crate::connect::connect;
use crate::exit::{self, CliError, CliResult};
use crate::output::{print_json, text};

/// How holding the lock ended.
enum Ended {
    Exited(std::process::ExitStatus),
    Lost(d_engine_client::Error),
    Interrupted,
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    if let Some(c) = status.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    exit::ERROR
}

/// Holds lock NAME until Ctrl-C, or while CMD runs (then exits with CMD's
/// code). Losing the lock's lease kills CMD and exits with `LOST`.
pub async fn lock(g: &Global, a: LockArgs) -> CliResult {
    let client = connect(g).await?;
    let kv = client.kv();
    let mut stop = Interrupt::new()?;
    // Ctrl-C while waiting: the lease (and queue place) ends after --ttl.
    let mut held = tokio::select! {
        r = kv.lock_with_ttl(&a.name, a.ttl) => r?,
        _ = stop.recv() => return Ok(exit::OK),
    };
    let key = text(&held.key().key);
    let token = held.fencing_token();
    let lease = held.lease();
    let ended = if a.cmd.is_empty() {
        match g.output {
            Format::Json => {
                print_json(&json!({"key": key, "fencing_token": token, "lease": lease}))
            }
            Format::Simple => println!("{key}"),
            Format::Table => {
                println!("locked {key} (fencing token {token}, lease {lease}); Ctrl-C releases it")
            }
        }
        tokio::select! {
            _ = stop.recv() => Ended::Interrupted,
            e = held.lost() => Ended::Lost(e),
        }
    } else {
        let spawned = tokio::process::Command::new(&a.cmd[0])
            .args(&a.cmd[1..])
            .env("DENGINE_LOCK_KEY", &key)
            .env("DENGINE_LOCK_FENCING_TOKEN", token.to_string())
            .env("DENGINE_LOCK_LEASE", lease.to_string())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = held.release().await;
                return Err(CliError::new(
                    exit::ERROR,
                    format!("cannot run {:?}: {e} (the lock was released)", a.cmd[0]),
                ));
            }
        };
        let ended = tokio::select! {
            s = child.wait() => Ended::Exited(s?),
            e = held.lost() => Ended::Lost(e),
            _ = stop.recv() => Ended::Interrupted,
        };
        if !matches!(ended, Ended::Exited(_)) {
            let _ = child.kill().await;
        }
        ended
    };
    match ended {
        Ended::Lost(e) => Err(CliError::new(
            exit::LOST,
            format!("lost lock {key} (lease {lease}): {e}"),
        )
        .with_hint("another holder may have the lock now; the command (if any) was killed")),
        Ended::Exited(status) => {
            held.release().await?;
            Ok(exit_code(status))
        }
        Ended::Interrupted => {
            held.release().await?;
            Ok(exit::OK)
        }
    }
}

/// Campaigns with VALUE and holds the leadership until Ctrl-C (then
/// resigns), or with `--listen` prints each leader's value.
pub async fn elect(g: &Global, a: ElectArgs) -> CliResult {
    let client = connect(g).await?;
    let kv = client.kv();
    if a.listen {
        let mut rx = kv.observe(&a.name).await?;
        let mut seen = 0u64;
        let mut stop = Interrupt::new()?;
        loop {
            let item = tokio::select! {
                _ = stop.recv() => return Ok(exit::OK),
                m = rx.recv() => m,
            };
            match item {
                None => {
                    return Err(CliError::new(exit::UNAVAILABLE, "the observation ended")
                        .with_hint("the server closed it; run the command again"))
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(l)) => {
                    match g.output {
                        Format::Json => print_json(&json!({
                            "key": text(&l.key), "value": text(&l.value),
                            "revision": l.create_revision, "lease": l.lease,
                        })),
                        Format::Simple => println!("{}", text(&l.value)),
                        Format::Table => println!(
                            "leader {} (key {}, revision {})",
                            text(&l.value),
                            text(&l.key),
                            l.create_revision
                        ),
                    }
                    seen += 1;
                    if a.count.is_some_and(|c| seen >= c) {
                        return Ok(exit::OK);
                    }
                }
            }
        }
    }
    let value = a.value.unwrap_or_default();
    let mut stop = Interrupt::new()?;
    let mut keeper = kv.lease_keep_alive(a.ttl).await?;
    let lease = keeper.id();
    let leader = tokio::select! {
        r = kv.campaign(&a.name, lease, &value) => r?,
        _ = stop.recv() => {
            let _ = kv.lease_revoke(lease).await;
            return Ok(exit::OK);
        }
        e = keeper.lost() => {
            return Err(CliError::new(exit::LOST, format!("lease {lease} lost while campaigning: {e}")))
        }
    };
    let key = text(&leader.key);
    match g.output {
        Format::Json => print_json(&json!({
            "key": key, "value": value, "revision": leader.revision, "lease": lease
        })),
        Format::Simple => println!("{key}"),
        Format::Table => println!(
            "elected {key} with value {value:?} (revision {}, lease {lease}); Ctrl-C resigns",
            leader.revision
        ),
    }
    tokio::select! {
        _ = stop.recv() => {}
        e = keeper.lost() => {
            return Err(CliError::new(exit::LOST, format!("lost leadership {key} (lease {lease}): {e}"))
                .with_hint("another candidate may lead now"))
        }
    }
    drop(keeper);
    kv.resign(&leader).await?;
    match kv.lease_revoke(lease).await {
        Ok(_) | Err(d_engine_client::Error::LeaseNotFound(_)) => Ok(exit::OK),
        Err(e) => Err(e.into()),
    }
}
