//! `check perf`: N concurrent writers put values for a while; prints the
//! throughput and latency percentiles, then deletes the keys it wrote.

use std::time::{Duration, Instant};

use d_engine_client::{Error, RangeEnd};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::args::{Format, Global, PerfArgs};
use crate::connect::connect;
use crate::exit::{self, CliError, CliResult};
use crate::output::{print_json, Table};

/// Latencies in microseconds, 1 µs ..= 60 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

pub async fn perf(g: &Global, a: PerfArgs) -> CliResult {
    if a.clients == 0 || a.clients > 1024 {
        return Err(CliError::usage(format!(
            "--clients is {}; use 1..=1024",
            a.clients
        )));
    }
    if a.keys == 0 {
        return Err(CliError::usage("--keys must be >= 1"));
    }
    if a.prefix.is_empty() {
        return Err(CliError::usage(
            "--prefix must not be empty (its keys are deleted afterwards)",
        ));
    }
    let client = connect(g).await?;
    let start = Instant::now();
    let deadline = start + a.duration;
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let kv = client.kv();
        let prefix = a.prefix.clone();
        let value = vec![b'x'; a.value_size];
        let (clients, keys) = (a.clients as u64, a.keys);
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0u64;
            let mut last_error: Option<Error> = None;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("{prefix}{:010}", (n * clients + i as u64) % keys);
                n += 1;
                let t0 = Instant::now();
                match kv.put(&key, &value).await {
                    Ok(_) => {
                        let us = t0.elapsed().as_micros().clamp(1, 60_000_000) as u64;
                        let _ = h.record(us);
                    }
                    Err(e) => {
                        errors += 1;
                        if !e.is_retryable() {
                            last_error = Some(e);
                            break;
                        }
                        last_error = Some(e);
                    }
                }
            }
            (h, errors, last_error)
        }));
    }
    let mut all = histogram();
    let mut errors = 0;
    let mut last_error = None;
    for t in tasks {
        let (h, e, le) = t
            .await
            .map_err(|e| CliError::new(exit::ERROR, format!("writer task failed: {e}")))?;
        all.add(h)
            .map_err(|e| CliError::new(exit::ERROR, format!("merging latencies: {e}")))?;
        errors += e;
        if le.is_some() {
            last_error = le;
        }
    }
    let elapsed = start.elapsed().max(Duration::from_millis(1));
    let cleanup = client
        .kv()
        .delete_range(&a.prefix, RangeEnd::Prefix, false)
        .await;
    let ops = all.len();
    if ops == 0 {
        return Err(match last_error {
            Some(e) => CliError::from(e),
            None => CliError::new(exit::ERROR, "no write completed; raise --duration"),
        });
    }
    let throughput = ops as f64 / elapsed.as_secs_f64();
    let (p50, p99, max) = (
        all.value_at_quantile(0.50),
        all.value_at_quantile(0.99),
        all.max(),
    );
    match g.output {
        Format::Json => print_json(&json!({
            "clients": a.clients,
            "duration_ms": elapsed.as_millis() as u64,
            "ops": ops,
            "ops_per_sec": throughput,
            "p50_us": p50,
            "p99_us": p99,
            "max_us": max,
            "errors": errors,
        })),
        Format::Simple => println!("{throughput:.0} {p50} {p99}"),
        Format::Table => {
            let mut t = Table::new(&[
                "CLIENTS", "DURATION", "OPS", "OPS/S", "P50", "P99", "MAX", "ERRORS",
            ]);
            t.row(vec![
                a.clients.to_string(),
                format!("{:.1}s", elapsed.as_secs_f64()),
                ops.to_string(),
                format!("{throughput:.0}"),
                ms(p50),
                ms(p99),
                ms(max),
                errors.to_string(),
            ]);
            t.print();
        }
    }
    if let Some(e) = last_error {
        eprintln!("{errors} writes failed; the last error: {e}");
    }
    if let Err(e) = cleanup {
        eprintln!(
            "could not delete the test keys under {:?}: {e}; delete them with `dengine del {:?} --prefix`",
            a.prefix, a.prefix
        );
    }
    Ok(exit::OK)
}
