//! `watch`: prints events until Ctrl-C, `--count` events, or the server
//! ends the watch (then the error's exit code). A key, a prefix, a
//! `--range-end` range or `--from-key` are watched server-side (the
//! Watch RPC's range options).

use d_engine_client::{EventType, RangeEnd, WatchEvent, WatchOptions};
use serde_json::json;

use super::Interrupt;
use crate::args::{Format, Global, WatchArgs};
use crate::connect::connect;
use crate::exit::{self, CliError, CliResult};
use crate::output::{kv_json, print_json, text};

fn print_event(format: Format, e: &WatchEvent) {
    let kind = match e.kind {
        EventType::Put => "PUT",
        EventType::Delete => "DELETE",
        EventType::Progress => return,
    };
    match format {
        Format::Json => {
            let mut v = kv_json(&e.kv, e.kind == EventType::Delete);
            v["type"] = json!(kind);
            print_json(&v);
        }
        Format::Simple => {
            println!("{kind}");
            println!("{}", text(&e.kv.key));
            if e.kind == EventType::Put {
                println!("{}", text(&e.kv.value));
            }
        }
        Format::Table => match e.kind {
            EventType::Put => println!(
                "PUT     rev={}  {}  {}",
                e.kv.mod_revision,
                text(&e.kv.key),
                text(&e.kv.value)
            ),
            EventType::Delete => {
                println!("DELETE  rev={}  {}", e.kv.mod_revision, text(&e.kv.key))
            }
            EventType::Progress => {}
        },
    }
}

pub async fn watch(g: &Global, a: WatchArgs) -> CliResult {
    let key = a.key.as_bytes().to_vec();
    let end = match (&a.range.range_end, a.range.from_key, a.range.prefix) {
        (Some(end), _, _) => {
            let end = end.as_bytes().to_vec();
            if end <= key {
                return Err(CliError::usage(format!(
                    "--range-end {:?} must sort after KEY {:?}",
                    a.range.range_end.as_deref().unwrap_or_default(),
                    a.key
                )));
            }
            RangeEnd::Before(end)
        }
        (None, true, _) => RangeEnd::FromKey,
        (None, false, true) => RangeEnd::Prefix,
        (None, false, false) => RangeEnd::Single,
    };
    let client = connect(g).await?;
    let kv = client.kv();
    let options = WatchOptions {
        end,
        start_revision: a.rev,
        ..Default::default()
    };
    let mut stream = kv.watch_with(&key, options).await?;
    let mut seen = 0u64;
    if a.count == Some(0) {
        return Ok(exit::OK);
    }
    let mut stop = Interrupt::new()?;
    loop {
        tokio::select! {
            _ = stop.recv() => return Ok(exit::OK),
            ev = stream.recv() => match ev {
                None => {
                    return Err(CliError::new(exit::UNAVAILABLE, "the watch ended")
                        .with_hint("the server closed it; run the watch again with --rev"))
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(e)) => {
                    if e.kind == EventType::Progress {
                        continue;
                    }
                    print_event(g.output, &e);
                    seen += 1;
                    if a.count.is_some_and(|c| seen >= c) {
                        return Ok(exit::OK);
                    }
                }
            }
        }
    }
}
