//! The run summary: operations by outcome, faults injected by kind,
//! anomalies and notes. Printed, and written to `$FAULT_REPORT` when set
//! (JSON if the path ends in `.json`, markdown otherwise).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::workloads::Counts;

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub duration: Duration,
    /// Workload → [ok, fail, info].
    pub ops: BTreeMap<String, Counts>,
    /// Fault kind → times injected.
    pub faults: BTreeMap<String, u64>,
    /// One line per injected fault, in order.
    pub timeline: Vec<String>,
    pub anomalies: Vec<String>,
    pub notes: Vec<String>,
}

fn esc(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

impl Report {
    pub fn total_ops(&self) -> u64 {
        self.ops.values().map(|c| c.iter().sum::<u64>()).sum()
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Fault suite report\n\nseed {} · {} nodes · {:.1} s · {} operations · {} faults · {} anomalies\n",
            self.seed,
            self.nodes,
            self.duration.as_secs_f64(),
            self.total_ops(),
            self.faults.values().sum::<u64>(),
            self.anomalies.len()
        );
        let _ = writeln!(s, "| workload | ok | fail | info |\n|---|---:|---:|---:|");
        for (w, c) in &self.ops {
            let _ = writeln!(s, "| {w} | {} | {} | {} |", c[0], c[1], c[2]);
        }
        let _ = writeln!(s, "\n| fault | injected |\n|---|---:|");
        for (f, n) in &self.faults {
            let _ = writeln!(s, "| {f} | {n} |");
        }
        let _ = writeln!(s, "\n## Timeline\n");
        for t in &self.timeline {
            let _ = writeln!(s, "- {t}");
        }
        let _ = writeln!(s, "\n## Anomalies ({})\n", self.anomalies.len());
        for a in &self.anomalies {
            let _ = writeln!(s, "```\n{a}\n```");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    pub fn json(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|x| format!("\"{}\"", esc(x)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let ops = self
            .ops
            .iter()
            .map(|(w, c)| {
                format!(
                    "\"{}\":{{\"ok\":{},\"fail\":{},\"info\":{}}}",
                    esc(w),
                    c[0],
                    c[1],
                    c[2]
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let faults = self
            .faults
            .iter()
            .map(|(f, n)| format!("\"{}\":{n}", esc(f)))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"seed\":{},\"nodes\":{},\"duration_s\":{:.3},\"operations\":{},\"ops\":{{{ops}}},\"faults\":{{{faults}}},\"timeline\":[{}],\"anomalies\":[{}],\"notes\":[{}]}}\n",
            self.seed,
            self.nodes,
            self.duration.as_secs_f64(),
            self.total_ops(),
            list(&self.timeline),
            list(&self.anomalies),
            list(&self.notes)
        )
    }

    /// Prints the markdown summary and writes `$FAULT_REPORT` if set.
    pub fn emit(&self) {
        eprintln!("{}", self.markdown());
        if let Some(path) = std::env::var_os("FAULT_REPORT") {
            let path = std::path::PathBuf::from(path);
            let text = if path.extension().is_some_and(|e| e == "json") {
                self.json()
            } else {
                self.markdown()
            };
            match std::fs::write(&path, text) {
                Ok(()) => eprintln!("[fault] report written to {}", path.display()),
                Err(e) => eprintln!("[fault] cannot write report to {}: {e}", path.display()),
            }
        }
    }
}
