//! Rendering: aligned tables, JSON values, and text for bytes.

use d_engine_client::KeyValue;
use serde_json::{json, Value};

/// Bytes as text: UTF-8 as is, anything else with invalid sequences
/// replaced (U+FFFD). Keys and values written by this tool are UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A key-value pair as JSON (`value` omitted when `keys_only`).
pub fn kv_json(kv: &KeyValue, keys_only: bool) -> Value {
    let mut v = json!({
        "key": text(&kv.key),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    });
    if !keys_only {
        v["value"] = Value::String(text(&kv.value));
    }
    v
}

/// Prints a JSON value on one line.
pub fn print_json(v: &Value) {
    println!("{v}");
}

/// Columns aligned to their widest cell, two spaces apart.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut width = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(n) {
                if i + 1 == n {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A duration in the unit people read best.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["KEY", "VALUE"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["long-key".into(), "2".into()]);
        assert_eq!(t.render(), "KEY       VALUE\na         1\nlong-key  2\n");
    }

    #[test]
    fn durations_read_well() {
        use std::time::Duration;
        assert_eq!(human_duration(Duration::from_secs(10)), "10s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }
}
