//! A client process for the multi-process coordination tests
//! (`tests/tests/cluster_coord.rs`): takes a lock or campaigns in an
//! election through the gRPC `Lock`/`Election` services, on a lease kept
//! alive by `LeaseKeeper`, then holds it until killed.
//!
//! ```text
//! coord-client lock     <endpoints,comma,separated> <name> <ttl_ms>
//! coord-client campaign <endpoints,comma,separated> <name> <ttl_ms> <value>
//! ```
//!
//! Prints, one line each, flushed (times are unix milliseconds):
//! `LEASE <id>`; `ACK <invoke_ms> <return_ms>` for the grant and every
//! acknowledged renewal; `LOCKED <fencing> <key>` or `LEADER <revision>
//! <key>` once it holds; `LOST <reason>` if the keeper reports the lease
//! lost (then it exits with status 3).

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use d_engine_client::{
    CasOutcome, ClientBuilder, Consistency, CoordClient, DeleteRangeOutcome, GrpcKv, KeyValue,
    KvClient, LeaseGrant, LeaseKeeper, LeaseStatus, LeaseTtl, RangeEnd, RangeOptions, RangePage,
    Result, Txn, TxnOutcome, WatchStream,
};

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints every acknowledged renewal, delegates everything.
#[derive(Clone)]
struct Printing(GrpcKv);

impl KvClient for Printing {
    fn put(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<u64>> + Send {
        KvClient::put(&self.0, key, value)
    }
    fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        KvClient::put_with_ttl(&self.0, key, value, ttl)
    }
    fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Option<KeyValue>>> + Send {
        KvClient::get_with(&self.0, key, consistency)
    }
    fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<Option<KeyValue>>>> + Send {
        KvClient::get_multi(&self.0, keys, consistency)
    }
    fn delete(&self, key: impl AsRef<[u8]> + Send) -> impl Future<Output = Result<bool>> + Send {
        KvClient::delete(&self.0, key)
    }
    fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<CasOutcome>> + Send {
        KvClient::compare_and_swap(&self.0, key, expected, new_value)
    }
    fn range(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: RangeOptions,
    ) -> impl Future<Output = Result<RangePage>> + Send {
        KvClient::range(&self.0, key, options)
    }
    fn delete_range(
        &self,
        key: impl AsRef<[u8]> + Send,
        end: RangeEnd,
        prev_kv: bool,
    ) -> impl Future<Output = Result<DeleteRangeOutcome>> + Send {
        KvClient::delete_range(&self.0, key, end, prev_kv)
    }
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome>> + Send {
        KvClient::txn(&self.0, txn)
    }
    fn put_with_lease(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> impl Future<Output = Result<u64>> + Send {
        KvClient::put_with_lease(&self.0, key, value, lease)
    }
    fn lease_grant(&self, ttl: Duration) -> impl Future<Output = Result<LeaseGrant>> + Send {
        KvClient::lease_grant(&self.0, ttl)
    }
    fn lease_revoke(&self, id: u64) -> impl Future<Output = Result<u64>> + Send {
        KvClient::lease_revoke(&self.0, id)
    }
    async fn lease_renew(&self, id: u64) -> Result<Duration> {
        let invoke = unix_ms();
        let r = KvClient::lease_renew(&self.0, id).await;
        if r.is_ok() {
            say(format!("ACK {invoke} {}", unix_ms()));
        }
        r
    }
    fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseTtl>> + Send {
        KvClient::lease_time_to_live(&self.0, id, keys)
    }
    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseStatus>>> + Send {
        KvClient::lease_list(&self.0)
    }
    fn watch(
        &self,
        key: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        KvClient::watch(&self.0, key, start_revision)
    }
    fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        KvClient::watch_prefix(&self.0, prefix, start_revision)
    }

    fn watch_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: d_engine_client::WatchOptions,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        KvClient::watch_with(&self.0, key, options)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: coord-client lock|campaign <endpoints> <name> <ttl_ms> [value]";
    if args.len() < 4 {
        return Err(usage.into());
    }
    let (mode, endpoints, name) = (&args[0], &args[1], &args[2]);
    let ttl = Duration::from_millis(args[3].parse()?);
    let client = ClientBuilder::new(endpoints.split(',').map(String::from))
        .request_timeout(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .await?;
    let kv = Printing(client.kv());
    let invoke = unix_ms();
    let grant = kv.0.lease_grant(ttl).await?;
    say(format!("LEASE {}", grant.id));
    say(format!("ACK {invoke} {}", unix_ms()));
    let mut keeper = LeaseKeeper::start(Arc::new(kv.clone()), grant.id, grant.ttl);
    let held = async {
        match mode.as_str() {
            "lock" => {
                kv.0.lock(name, grant.id)
                    .await
                    .map(|k| format!("LOCKED {} {}", k.revision, String::from_utf8_lossy(&k.key)))
            }
            "campaign" => {
                let value = args.get(4).cloned().unwrap_or_default();
                kv.0.campaign(name, grant.id, value)
                    .await
                    .map(|l| format!("LEADER {} {}", l.revision, String::from_utf8_lossy(&l.key)))
            }
            _ => Err(d_engine_client::Error::InvalidArgument(usage.into())),
        }
    };
    tokio::select! {
        r = held => say(r?),
        e = keeper.lost() => {
            say(format!("LOST {e}"));
            std::process::exit(3);
        }
    }
    let e = keeper.lost().await;
    say(format!("LOST {e}"));
    std::process::exit(3);
}
