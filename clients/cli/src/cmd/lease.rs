//! `lease grant | revoke | keepalive | timetolive | list`.

use std::time::Duration;

use serde_json::json;

use super::Interrupt;
use crate::args::{Format, Global, LeaseCmd};
use crate::connect::connect;
use crate::exit::{self, CliResult};
use crate::output::{human_duration, print_json, text, Table};

pub async fn lease(g: &Global, c: LeaseCmd) -> CliResult {
    let client = connect(g).await?;
    let kv = client.kv();
    match c {
        LeaseCmd::Grant { ttl } => {
            let l = kv.lease_grant(ttl).await?;
            match g.output {
                Format::Json => print_json(&json!({
                    "id": l.id, "ttl_ms": l.ttl.as_millis() as u64, "revision": l.revision
                })),
                Format::Simple => println!("{}", l.id),
                Format::Table => {
                    println!("lease {} granted with TTL {}", l.id, human_duration(l.ttl))
                }
            }
        }
        LeaseCmd::Revoke { id } => {
            let deleted = kv.lease_revoke(id).await?;
            match g.output {
                Format::Json => print_json(&json!({"id": id, "deleted_keys": deleted})),
                Format::Simple => println!("{deleted}"),
                Format::Table => println!("lease {id} revoked ({deleted} keys deleted)"),
            }
        }
        LeaseCmd::Keepalive { id, once } => {
            let mut stop = Interrupt::new()?;
            loop {
                let ttl = kv.lease_renew(id).await?;
                match g.output {
                    Format::Json => {
                        print_json(&json!({"id": id, "ttl_ms": ttl.as_millis() as u64}))
                    }
                    Format::Simple => println!("{}", ttl.as_millis()),
                    Format::Table => println!("lease {id} kept alive, TTL {}", human_duration(ttl)),
                }
                if once {
                    break;
                }
                // Renew three times per TTL, like the clients' lease keepers.
                let pause = (ttl / 3).max(Duration::from_millis(50));
                tokio::select! {
                    _ = stop.recv() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        LeaseCmd::Timetolive { id, keys } => {
            let t = kv.lease_time_to_live(id, keys).await?;
            let key_list: Vec<String> = t.keys.iter().map(|k| text(k)).collect();
            match g.output {
                Format::Json => print_json(&json!({
                    "id": t.id,
                    "granted_ttl_ms": t.granted_ttl.as_millis() as u64,
                    "remaining_ms": t.remaining.as_millis() as u64,
                    "key_count": t.key_count,
                    "keys": key_list,
                })),
                Format::Simple => {
                    println!("{}", t.remaining.as_millis());
                    for k in &key_list {
                        println!("{k}");
                    }
                }
                Format::Table => {
                    println!(
                        "lease {} granted {}, remaining {}, {} keys",
                        t.id,
                        human_duration(t.granted_ttl),
                        human_duration(t.remaining),
                        t.key_count
                    );
                    for k in &key_list {
                        println!("  {k}");
                    }
                }
            }
        }
        LeaseCmd::List => {
            let leases = kv.lease_list().await?;
            match g.output {
                Format::Json => print_json(&json!({
                    "leases": leases.iter().map(|l| json!({
                        "id": l.id, "granted_ttl_ms": l.granted_ttl.as_millis() as u64
                    })).collect::<Vec<_>>()
                })),
                Format::Simple => {
                    for l in &leases {
                        println!("{}", l.id);
                    }
                }
                Format::Table => {
                    let mut t = Table::new(&["ID", "TTL"]);
                    for l in &leases {
                        t.row(vec![l.id.to_string(), human_duration(l.granted_ttl)]);
                    }
                    t.print();
                }
            }
        }
    }
    Ok(exit::OK)
}
