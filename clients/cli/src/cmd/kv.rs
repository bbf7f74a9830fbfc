//! `get`, `put`, `del`, `txn`.

use std::io::Read;

use d_engine_client::{KeyValue, RangeEnd, RangeOptions, TxnOpResult};
use serde_json::json;

use super::{consistency, range_end};
use crate::args::{DelArgs, Format, GetArgs, Global, PutArgs, TxnArgs};
use crate::connect::connect;
use crate::exit::{self, CliError, CliResult};
use crate::output::{kv_json, print_json, text, Table};

/// Largest page the server returns.
const MAX_PAGE: u64 = 10_000;

/// Prints pairs in the chosen format (JSON is printed by the caller).
fn print_kvs(format: Format, kvs: &[KeyValue], keys_only: bool) {
    match format {
        Format::Simple => {
            for kv in kvs {
                println!("{}", text(&kv.key));
                if !keys_only {
                    println!("{}", text(&kv.value));
                }
            }
        }
        _ => {
            let mut t = if keys_only {
                Table::new(&["KEY", "MOD_REV", "VERSION", "LEASE"])
            } else {
                Table::new(&["KEY", "VALUE", "MOD_REV", "VERSION", "LEASE"])
            };
            for kv in kvs {
                let mut row = vec![text(&kv.key)];
                if !keys_only {
                    row.push(text(&kv.value));
                }
                row.extend([
                    kv.mod_revision.to_string(),
                    kv.version.to_string(),
                    kv.lease.to_string(),
                ]);
                t.row(row);
            }
            t.print();
        }
    }
}

pub async fn get(g: &Global, a: GetArgs) -> CliResult {
    let end = range_end(&a.range);
    let single = end == RangeEnd::Single;
    let client = connect(g).await?;
    let kv = client.kv();
    let key = a.key.as_bytes().to_vec();
    let mut opts = RangeOptions {
        end: end.clone(),
        limit: 0,
        keys_only: a.keys_only,
        count_only: a.count_only,
        consistency: consistency(a.consistency),
    };
    if a.count_only {
        let page = kv.range(&key, opts).await?;
        match g.output {
            Format::Json => print_json(&json!({"count": page.count, "revision": page.revision})),
            _ => println!("{}", page.count),
        }
        return Ok(exit::OK);
    }
    // Page through the range (each page its own point in time) until the
    // limit or the end; the end is fixed from the first key.
    let wire_end = end.to_wire(&key);
    let mut next = Some(key);
    let (mut kvs, mut count, mut revision, mut more) = (Vec::new(), 0, 0, false);
    while let Some(k) = next.take() {
        let remaining = if a.limit == 0 {
            MAX_PAGE
        } else {
            (a.limit - kvs.len() as u64).min(MAX_PAGE)
        };
        opts.limit = remaining as u32;
        opts.end = match wire_end.as_slice() {
            [] => RangeEnd::Single,
            [0] => RangeEnd::FromKey,
            e => RangeEnd::Before(e.to_vec()),
        };
        let page = kv.range(&k, opts.clone()).await?;
        if revision == 0 {
            revision = page.revision;
            count = page.count;
        }
        kvs.extend(page.kvs);
        if page.more {
            if a.limit > 0 && kvs.len() as u64 >= a.limit {
                more = true;
            } else {
                next = page.next_key;
            }
        }
    }
    match g.output {
        Format::Json => print_json(&json!({
            "revision": revision,
            "count": count,
            "more": more,
            "kvs": kvs.iter().map(|kv| kv_json(kv, a.keys_only)).collect::<Vec<_>>(),
        })),
        f => {
            if !(single && kvs.is_empty()) {
                print_kvs(f, &kvs, a.keys_only);
            }
            if more {
                eprintln!(
                    "({} of {count} keys shown; raise --limit for more)",
                    kvs.len()
                );
            }
        }
    }
    if single && kvs.is_empty() {
        eprintln!("key {:?} not found", a.key);
        return Ok(exit::NOT_FOUND);
    }
    Ok(exit::OK)
}

pub async fn put(g: &Global, a: PutArgs) -> CliResult {
    let client = connect(g).await?;
    let kv = client.kv();
    let rev = match (a.lease, a.ttl) {
        (Some(l), _) => kv.put_with_lease(&a.key, &a.value, l).await?,
        (None, Some(t)) => kv.put_with_ttl(&a.key, &a.value, t).await?,
        (None, None) => kv.put(&a.key, &a.value).await?,
    };
    match g.output {
        Format::Json => print_json(&json!({"revision": rev})),
        Format::Simple => println!("OK"),
        Format::Table => println!("OK (revision {rev})"),
    }
    Ok(exit::OK)
}

pub async fn del(g: &Global, a: DelArgs) -> CliResult {
    let client = connect(g).await?;
    let out = client
        .kv()
        .delete_range(&a.key, range_end(&a.range), a.prev_kv)
        .await?;
    match g.output {
        Format::Json => print_json(&json!({
            "deleted": out.deleted,
            "revision": out.revision,
            "prev_kvs": out.prev_kvs.iter().map(|kv| kv_json(kv, false)).collect::<Vec<_>>(),
            "prev_kvs_truncated": out.prev_kvs_truncated,
        })),
        f => {
            println!("{}", out.deleted);
            if a.prev_kv {
                print_kvs(f, &out.prev_kvs, false);
            }
            if out.prev_kvs_truncated {
                eprintln!("(the deleted pairs were cut at the response size limit)");
            }
        }
    }
    Ok(exit::OK)
}

pub async fn txn(g: &Global, a: TxnArgs) -> CliResult {
    let input = match &a.file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CliError::usage(format!("cannot read txn file {}: {e}", p.display())))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::usage(format!("cannot read the txn from stdin: {e}")))?;
            s
        }
    };
    let t = crate::txn_input::parse(&input).map_err(|e| {
        CliError::usage(e).with_hint("the txn grammar (text and JSON) is in docs/cli.md, \"txn\"")
    })?;
    let client = connect(g).await?;
    let out = client.kv().txn(t).await?;
    match g.output {
        Format::Json => {
            let results: Vec<_> = out
                .results
                .iter()
                .map(|r| match r {
                    TxnOpResult::Put { revision } => json!({"put": {"revision": revision}}),
                    TxnOpResult::Range(p) => json!({"get": {
                        "count": p.count,
                        "more": p.more,
                        "kvs": p.kvs.iter().map(|kv| kv_json(kv, false)).collect::<Vec<_>>(),
                    }}),
                    TxnOpResult::DeleteRange(d) => json!({"del": {
                        "deleted": d.deleted,
                        "prev_kvs": d.prev_kvs.iter().map(|kv| kv_json(kv, false)).collect::<Vec<_>>(),
                    }}),
                })
                .collect();
            print_json(&json!({
                "succeeded": out.succeeded,
                "revision": out.revision,
                "results": results,
            }));
        }
        f => {
            println!("{}", if out.succeeded { "SUCCESS" } else { "FAILURE" });
            for r in &out.results {
                match r {
                    TxnOpResult::Put { .. } => println!("OK"),
                    TxnOpResult::Range(p) => print_kvs(f, &p.kvs, false),
                    TxnOpResult::DeleteRange(d) => {
                        println!("{}", d.deleted);
                        print_kvs(f, &d.prev_kvs, false);
                    }
                }
            }
        }
    }
    Ok(if out.succeeded {
        exit::OK
    } else {
        exit::COMPARE_FAILED
    })
}
