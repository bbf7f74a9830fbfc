//! `watch`: prints events until Ctrl-C, `--count` events, or the server
//! ends the watch (then the error's exit code).
//!
//! A `--range-end`/`--from-key` watch opens a prefix watch on the longest
//! prefix every key of the range shares and drops events outside the range
//! here, so it needs nothing beyond the key and prefix watches every
//! client has.

use d_engine_client::{EventType, WatchEvent};
use serde_json::json;

use super::Interrupt;
use crate::args::{Format, Global, WatchArgs};
use crate::connect::connect;
use crate::exit::{self, CliError, CliResult};
use crate::output::{kv_json, print_json, text};

/// The longest prefix shared by `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter()
        .zip(b)
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| *x)
        .collect()
}

fn print_event(format: Format, e: &WatchEvent) {
    let kind = match e.kind {
        EventType::Put => "PUT",
        EventType::Delete => "DELETE",
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
        },
    }
}

pub async fn watch(g: &Global, a: WatchArgs) -> CliResult {
    let key = a.key.as_bytes().to_vec();
    let (open_prefix, lo, hi): (Option<Vec<u8>>, Vec<u8>, Option<Vec<u8>>) =
        match (&a.range.range_end, a.range.from_key, a.range.prefix) {
            (Some(end), _, _) => {
                let end = end.as_bytes().to_vec();
                if end <= key {
                    return Err(CliError::usage(format!(
                        "--range-end {:?} must sort after KEY {:?}",
                        a.range.range_end.as_deref().unwrap_or_default(),
                        a.key
                    )));
                }
                (Some(common_prefix(&key, &end)), key.clone(), Some(end))
            }
            (None, true, _) => (Some(Vec::new()), key.clone(), None),
            (None, false, true) => (Some(key.clone()), Vec::new(), None),
            (None, false, false) => (None, Vec::new(), None),
        };
    let client = connect(g).await?;
    let kv = client.kv();
    let mut stream = match &open_prefix {
        Some(p) => kv.watch_prefix(p, a.rev).await?,
        None => kv.watch(&key, a.rev).await?,
    };
    let in_range = |k: &[u8]| k >= lo.as_slice() && hi.as_deref().is_none_or(|h| k < h);
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
                    if !in_range(&e.kv.key) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_of_a_range() {
        assert_eq!(common_prefix(b"app/a", b"app/m"), b"app/".to_vec());
        assert_eq!(common_prefix(b"a", b"b"), Vec::<u8>::new());
    }
}
