//! Latency histograms and per-case results.
//!
//! Latencies are recorded in nanoseconds in an HDR histogram (3 significant
//! digits). Only successful requests are recorded; every failed request is
//! counted in `errors` or `timeouts` (and its message in `error_kinds`), so a
//! result always accounts for every request issued.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A fresh latency histogram (ns, 3 significant digits, auto-resizing).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is valid");
    h.auto(true);
    h
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Latency {
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// Range readers that ran beside a round's clients (`write-range-reader`),
/// over the same measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Background {
    pub readers: usize,
    pub page_size: u32,
    pub pages: u64,
    pub keys: u64,
    pub pages_per_sec: f64,
    pub keys_per_sec: f64,
    pub errors: u64,
    pub timeouts: u64,
    /// Latency of a page.
    pub latency: Latency,
}

/// The outcome of one measured round of one case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Round {
    /// Successful requests in the measured window.
    pub ok: u64,
    /// Failed requests other than timeouts.
    pub errors: u64,
    /// Requests that timed out (the tool's per-request timeout or the
    /// system's own timeout error); a write's outcome is then unknown.
    pub timeouts: u64,
    /// Measured window, seconds (first measured request to last completion).
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// `txn`: transactions whose compare held; `range-page`: keys
    /// returned; other scenarios: the successful requests.
    pub items: u64,
    pub items_per_sec: f64,
    pub latency: Latency,
    /// Distinct error messages (truncated) and how often each occurred.
    pub error_kinds: BTreeMap<String, u64>,
    /// Range readers beside the clients, if any.
    pub background: Option<Background>,
    /// CPU of the tool and of the system's server processes over the
    /// measured window, per successful request (`None`: not measured).
    pub cpu: Option<crate::cpu::CpuUse>,
}

impl Round {
    /// Share of successful requests whose transaction succeeded (`txn`).
    pub fn success_ratio(&self) -> f64 {
        if self.ok == 0 {
            0.0
        } else {
            self.items as f64 / self.ok as f64
        }
    }
}

/// The `q` quantile (0..=1) of `values` by nearest rank (the smallest
/// value with at least `q` of the values at or below it); `None` if empty.
/// For a handful of runs (elections, failovers) p99 is then the maximum.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank - 1])
}

/// One case (target x scenario x clients) over all its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// System measured: `d-engine-embedded`, `d-engine-standalone`, `etcd`.
    pub system: String,
    pub nodes: usize,
    pub scenario: String,
    pub consistency: String,
    pub clients: usize,
    /// gRPC connections the clients share (0 for in-process).
    pub connections: usize,
    /// The round with the median throughput (its latencies are reported).
    pub median: Round,
    /// Throughput of every round, in run order.
    pub rounds_ops_per_sec: Vec<f64>,
    /// Errors and timeouts summed over all rounds (none may be hidden).
    pub total_errors: u64,
    pub total_timeouts: u64,
    /// Name of the floor this case is compared with, its p50 (µs) and the ratio
    /// of this case's p50 to it.
    pub floor: Option<String>,
    pub floor_p50_us: Option<f64>,
    pub p50_over_floor: Option<f64>,
}

impl CaseResult {
    /// Picks the median round by throughput.
    pub fn median_of(mut rounds: Vec<Round>) -> (Round, Vec<f64>, u64, u64) {
        let all: Vec<f64> = rounds.iter().map(|r| r.ops_per_sec).collect();
        let errors = rounds.iter().map(|r| r.errors).sum();
        let timeouts = rounds.iter().map(|r| r.timeouts).sum();
        rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
        let mid = rounds.len() / 2;
        (rounds.swap_remove(mid), all, errors, timeouts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_reads_quantiles_in_microseconds() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1_000).unwrap();
        }
        let l = Latency::from_histogram(&h);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0, "{l:?}");
    }

    #[test]
    fn nearest_rank_quantiles() {
        assert_eq!(quantile(&[], 0.5), None);
        let v = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 9.0, 8.0, 7.0, 6.0];
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.99), Some(10.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[3.0, 1.0], 0.5), Some(1.0));
        assert_eq!(quantile(&[3.0, 1.0], 0.99), Some(3.0));
    }

    #[test]
    fn median_round_is_the_middle_by_throughput_and_errors_are_summed() {
        let r = |ops: f64, errors: u64| Round {
            ok: 1,
            errors,
            timeouts: 1,
            elapsed_s: 1.0,
            ops_per_sec: ops,
            ..Default::default()
        };
        let (m, all, e, t) = CaseResult::median_of(vec![r(3.0, 1), r(1.0, 2), r(2.0, 3)]);
        assert_eq!(m.ops_per_sec, 2.0);
        assert_eq!(all, vec![3.0, 1.0, 2.0]);
        assert_eq!((e, t), (6, 3));
    }
}
