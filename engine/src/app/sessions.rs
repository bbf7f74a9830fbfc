//! Write-id deduplication for application commands: a command proposed
//! with the same `(client_id, seq)` as one already applied is not applied
//! again; its proposer gets the original output.
//!
//! Bounds (fixed, so every replica forgets the same things at the same
//! index): the newest [`MAX_RESULTS_PER_CLIENT`] results per client and
//! [`MAX_CLIENTS`] clients (the one whose last write is oldest goes first).
//! A retry older than the window is answered `DuplicateExpired`, never
//! applied again. The table is part of the state: it is in every snapshot.

use std::collections::BTreeMap;

use bytes::Bytes;

pub(super) const MAX_RESULTS_PER_CLIENT: usize = 256;
pub(super) const MAX_CLIENTS: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Client {
    /// Index of the entry that last wrote for this client.
    last_index: u64,
    /// Seqs below this one were forgotten.
    floor: u64,
    /// seq -> (index it applied at, encoded output).
    results: BTreeMap<u64, (u64, Bytes)>,
}

/// What the table knows about a write id.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    New,
    Done { revision: u64, output: Bytes },
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Sessions {
    clients: BTreeMap<u64, Client>,
}

impl Sessions {
    pub(super) fn check(&self, client_id: u64, seq: u64) -> Seen {
        match self.clients.get(&client_id) {
            None => Seen::New,
            Some(c) => match c.results.get(&seq) {
                Some((revision, output)) => Seen::Done {
                    revision: *revision,
                    output: output.clone(),
                },
                None if seq < c.floor => Seen::Expired,
                None => Seen::New,
            },
        }
    }

    pub(super) fn record(&mut self, client_id: u64, seq: u64, index: u64, output: Bytes) {
        if !self.clients.contains_key(&client_id) && self.clients.len() >= MAX_CLIENTS {
            if let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(id, c)| (c.last_index, **id))
                .map(|(id, _)| *id)
            {
                self.clients.remove(&oldest);
            }
        }
        let c = self.clients.entry(client_id).or_default();
        c.last_index = index;
        c.results.insert(seq, (index, output));
        while c.results.len() > MAX_RESULTS_PER_CLIENT {
            if let Some((s, _)) = c.results.pop_first() {
                c.floor = c.floor.max(s + 1);
            }
        }
    }

    /// `u32 n, n × (u64 client, u64 last_index, u64 floor, u32 m,
    /// m × (u64 seq, u64 index, u32 len, output))`, little-endian.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(&(self.clients.len() as u32).to_le_bytes());
        for (id, c) in &self.clients {
            for v in [*id, c.last_index, c.floor] {
                w.extend_from_slice(&v.to_le_bytes());
            }
            w.extend_from_slice(&(c.results.len() as u32).to_le_bytes());
            for (seq, (index, out)) in &c.results {
                w.extend_from_slice(&seq.to_le_bytes());
                w.extend_from_slice(&index.to_le_bytes());
                w.extend_from_slice(&(out.len() as u32).to_le_bytes());
                w.extend_from_slice(out);
            }
        }
        w
    }

    pub(super) fn decode(b: &[u8]) -> Result<Self, String> {
        let mut r = Cursor { b, at: 0 };
        let mut s = Sessions::default();
        for _ in 0..r.u32()? {
            let (id, last_index, floor) = (r.u64()?, r.u64()?, r.u64()?);
            let mut results = BTreeMap::new();
            for _ in 0..r.u32()? {
                let (seq, index) = (r.u64()?, r.u64()?);
                let len = r.u32()? as usize;
                results.insert(seq, (index, Bytes::copy_from_slice(r.take(len)?)));
            }
            s.clients.insert(
                id,
                Client {
                    last_index,
                    floor,
                    results,
                },
            );
        }
        if r.at != b.len() {
            return Err(format!("{} bytes after the write-id table", b.len() - r.at));
        }
        Ok(s)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| {
            format!(
                "write-id table truncated at byte {} (needs {n} more)",
                self.at
            )
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_round_trips() {
        let mut s = Sessions::default();
        assert_eq!(s.check(1, 1), Seen::New);
        s.record(1, 1, 10, Bytes::from_static(b"a"));
        assert_eq!(
            s.check(1, 1),
            Seen::Done {
                revision: 10,
                output: Bytes::from_static(b"a")
            }
        );
        for seq in 2..=(MAX_RESULTS_PER_CLIENT as u64 + 1) {
            s.record(1, seq, 10 + seq, Bytes::new());
        }
        assert_eq!(s.check(1, 1), Seen::Expired);
        assert_eq!(Sessions::decode(&s.encode()).unwrap(), s);
        assert!(Sessions::decode(&s.encode()[..9]).is_err());
    }
}
