//! An in-memory index of every live key's metadata (revisions, version,
//! deadline), kept beside the sled state machine so that a put or a delete
//! learns what it replaces without reading the old value from sled.
//!
//! Contract: after every successful `apply_batch` the index holds exactly
//! the keys (and their metadata) of the database's `'k'` records. It is
//! rebuilt from the database on open and on snapshot install, and updated
//! only after the batch it mirrors has been committed to sled.

use super::record::meta_from_bytes;
use super::sled_sm::P_KV;
use super::{KeyMeta, SmError};
use std::collections::HashMap;

/// Live keys and their metadata. Keys are copied (a key borrowed from a
/// log entry would keep the whole entry's buffer alive).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    keys: HashMap<Box<[u8]>, KeyMeta>,
}

impl KeyIndex {
    /// Reads the metadata of every key record in `tree`.
    pub fn load(tree: &sled::Tree) -> Result<Self, SmError> {
        let mut keys = HashMap::new();
        for item in tree.scan_prefix([P_KV]) {
            let (k, v) = item?;
            let meta = meta_from_bytes(&v).map_err(|e| {
                SmError::Corrupt(format!(
                    "value record of key {:?}: {e}",
                    bytes::Bytes::copy_from_slice(&k[1..])
                ))
            })?;
            keys.insert(Box::from(&k[1..]), meta);
        }
        Ok(KeyIndex { keys })
    }

    /// The metadata of `key`, if it is live.
    pub fn get(&self, key: &[u8]) -> Option<KeyMeta> {
        self.keys.get(key).copied()
    }

    /// Records `key` as live with `meta` (`Some`) or removes it (`None`).
    pub fn set(&mut self, key: &[u8], meta: Option<KeyMeta>) {
        match meta {
            Some(m) => {
                if let Some(slot) = self.keys.get_mut(key) {
                    *slot = m;
                } else {
                    self.keys.insert(Box::from(key), m);
                }
            }
            None => {
                self.keys.remove(key);
            }
        }
    }

    /// Number of live keys.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::record::value_bytes;
    use crate::sm::sled_sm::prefixed;
    use crate::sm::KeyValue;
    use bytes::Bytes;

    fn kv(key: &str, rev: u64, ttl: Option<u64>) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"a value that is not read"),
            create_revision: 1,
            mod_revision: rev,
            version: rev,
            expires_at_ms: ttl,
        }
    }

    #[test]
    fn load_reads_only_key_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        for (k, rev, ttl) in [("a", 3, None), ("b", 7, Some(99))] {
            let rec = kv(k, rev, ttl);
            db.insert(prefixed(P_KV, k.as_bytes()), value_bytes(&rec))
                .unwrap();
        }
        db.insert(b"m/applied", &[0u8; 16][..]).unwrap();
        db.insert(prefixed(b'd', b"\0\0\0\0\0\0\0\x01"), &b"x"[..])
            .unwrap();
        let idx = KeyIndex::load(&db).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get(b"a"), Some(kv("a", 3, None).meta()));
        assert_eq!(idx.get(b"b").unwrap().expires_at_ms, Some(99));
        assert_eq!(idx.get(b"c"), None);
    }

    #[test]
    fn a_damaged_record_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.insert(prefixed(P_KV, b"bad"), &[1u8, 2][..]).unwrap();
        let err = KeyIndex::load(&db).expect_err("corrupt");
        assert!(err.to_string().contains("bad"), "{err}");
    }

    #[test]
    fn set_replaces_and_removes() {
        let mut idx = KeyIndex::default();
        idx.set(b"k", Some(kv("k", 1, None).meta()));
        idx.set(b"k", Some(kv("k", 2, Some(5)).meta()));
        assert_eq!(idx.get(b"k").unwrap().mod_revision, 2);
        assert_eq!(idx.len(), 1);
        idx.set(b"k", None);
        assert_eq!(idx.get(b"k"), None);
        assert_eq!(idx.len(), 0);
    }
}
