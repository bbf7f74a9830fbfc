//! Peer authentication with a shared cluster secret (`[peer] secret_file`).
//!
//! Every peer call (a Raft message stream, a snapshot transfer) carries in
//! its metadata the header [`AUTH_HEADER`] = `v1.<unix-ms>.<nonce>.<mac>`,
//! where `mac` is HMAC-SHA256 under the cluster secret over
//! ([`handshake_bytes`]): the protocol label, the cluster id, the claimed
//! sender id, the target node id, the call kind, the sender's advertised
//! address, the timestamp and a 16-byte random nonce.
//!
//! The receiver ([`PeerSecret::verify`]) refuses a call (UNAUTHENTICATED)
//! whose header is missing or malformed, whose MAC does not verify (another
//! or no secret; another cluster, sender, target or call kind), whose
//! timestamp is more than [`MAX_CLOCK_SKEW`] away from its own clock, or
//! whose nonce it has already accepted within the skew window (a replayed
//! handshake). The replay memory holds at most [`MAX_REMEMBERED_NONCES`]
//! nonces; when it is full of unexpired ones, further calls are refused
//! with UNAVAILABLE until the oldest expire (legitimate peers open a
//! handful of streams per minute).
//!
//! What this proves: the caller holds the cluster secret and claims to be
//! the sender it names, so the transport's membership check applies to a
//! real member. What it does not do: encrypt or integrity-protect the
//! messages of an established stream. Against an attacker on the network
//! path use peer mutual TLS (`tls.peer`), alone or together with the secret.
//!
//! Over 500 lines only because its unit tests sit beside it (the code
//! itself is under ~520 lines).

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use d_engine_core::NodeId;
use ring::hmac;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::config::ConfigError;

/// Optional metadata key: the sender's own peer address. A node that does
/// not know the sender yet (a learner waiting to join) uses it to answer.
pub const FROM_ADDR_HEADER: &str = "x-dengine-from-addr";

/// Metadata key carrying the handshake MAC on every peer call.
pub const AUTH_HEADER: &str = "x-dengine-auth";
/// Metadata key naming the node the call is for (decimal id).
pub const TO_HEADER: &str = "x-dengine-to";
/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest accepted secret file, in bytes (hex text and whitespace).
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;
/// Largest accepted difference between the sender's and the receiver's
/// clocks; handshakes older or newer than this are refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Nonces remembered to refuse replayed handshakes (each for twice
/// [`MAX_CLOCK_SKEW`]).
pub const MAX_REMEMBERED_NONCES: usize = 65_536;

const LABEL: &[u8] = b"d-engine-peer-auth-v1";

/// Which peer call a handshake opens (bound into the MAC so a captured
/// stream handshake cannot open a snapshot transfer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerCall {
    /// `Raft.Stream`: Raft messages.
    Stream,
    /// `Raft.InstallSnapshot`: a snapshot transfer.
    Snapshot,
}

impl PeerCall {
    fn as_str(self) -> &'static str {
        match self {
            PeerCall::Stream => "stream",
            PeerCall::Snapshot => "snapshot",
        }
    }
}

/// What one handshake binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake<'a> {
    pub cluster_id: &'a str,
    pub from: NodeId,
    pub to: NodeId,
    pub call: PeerCall,
    /// The sender's `x-dengine-from-addr` (empty when not sent).
    pub from_addr: &'a str,
    pub unix_ms: u64,
    pub nonce: [u8; 16],
}

/// The bytes the MAC covers: every field length-prefixed, so no two
/// different handshakes share an encoding.
pub fn handshake_bytes(h: &Handshake<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + h.cluster_id.len() + h.from_addr.len());
    let mut field = |b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    };
    field(LABEL);
    field(h.cluster_id.as_bytes());
    field(&h.from.to_be_bytes());
    field(&h.to.to_be_bytes());
    field(h.call.as_str().as_bytes());
    field(h.from_addr.as_bytes());
    field(&h.unix_ms.to_be_bytes());
    field(&h.nonce);
    out
}

/// Replay memory: nonces accepted within the skew window.
#[derive(Default)]
struct Seen {
    order: VecDeque<(u64, [u8; 16])>,
    set: HashSet<[u8; 16]>,
}

/// The cluster secret, loaded once at startup, and the replay memory of
/// the handshakes it accepted.
pub struct PeerSecret {
    key: hmac::Key,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(<redacted>)")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A new random secret as the hex text a secret file holds (with a final
/// newline).
pub fn generate_secret_text() -> Result<String, String> {
    let mut raw = [0u8; MIN_SECRET_BYTES];
    getrandom::fill(&mut raw).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(format!("{}\n", hex(&raw)))
}

impl PeerSecret {
    /// A secret from raw key bytes (at least [`MIN_SECRET_BYTES`]).
    pub fn from_bytes(raw: &[u8]) -> Result<Self, String> {
        if raw.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                raw.len()
            ));
        }
        Ok(PeerSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, raw),
            seen: Mutex::new(Seen::default()),
        })
    }

    /// Parses a secret file's text: hex digits (at least 64, i.e. 32
    /// bytes), surrounding whitespace ignored.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let raw = unhex(t).ok_or_else(|| {
            "the file must hold the secret as hex digits (an even number of 0-9a-f); \
             create one with `d-engine-server gen-secret --out FILE`"
                .to_string()
        })?;
        Self::from_bytes(&raw)
            .map_err(|e| format!("{e}; create one with `d-engine-server gen-secret --out FILE`"))
    }

    /// Reads the secret file named by `peer.secret_file`. Errors name the
    /// key and the path: unreadable, too large, not hex, shorter than 32
    /// bytes, or (Unix) readable or writable by group or others.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        const KEY: &str = "peer.secret_file";
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| ConfigError::new(KEY, format!("cannot read {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(ConfigError::new(KEY, format!("{shown} is not a file")));
        }
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(ConfigError::new(
                KEY,
                format!(
                    "{shown} is {} bytes; a secret file holds at most {MAX_SECRET_FILE_BYTES}",
                    meta.len()
                ),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ConfigError::new(
                    KEY,
                    format!(
                        "{shown} has mode {mode:03o}: the cluster secret must be private to \
                         the node's user; run `chmod 600 {shown}`"
                    ),
                ));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(KEY, format!("cannot read {shown}: {e}")))?;
        Self::from_text(&text).map_err(|e| ConfigError::new(KEY, format!("{shown}: {e}")))
    }

    fn mac(&self, h: &Handshake<'_>) -> hmac::Tag {
        hmac::sign(&self.key, &handshake_bytes(h))
    }

    /// The [`AUTH_HEADER`] value for a call from `from` to `to`, stamped
    /// now with a fresh nonce.
    pub fn sign(
        &self,
        cluster_id: &str,
        from: NodeId,
        to: NodeId,
        call: PeerCall,
        from_addr: &str,
    ) -> String {
        let mut nonce = [0u8; 16];
        if getrandom::fill(&mut nonce).is_err() {
            // No OS randomness: a unique-enough nonce from the clock and a
            // counter still makes every handshake distinct.
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            nonce[..8].copy_from_slice(&now_ms().to_be_bytes());
            nonce[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        }
        let h = Handshake {
            cluster_id,
            from,
            to,
            call,
            from_addr,
            unix_ms: now_ms(),
            nonce,
        };
        format!(
            "v1.{}.{}.{}",
            h.unix_ms,
            hex(&nonce),
            hex(self.mac(&h).as_ref())
        )
    }

    /// Checks the handshake of an incoming call claiming to come from
    /// `from` (already parsed from the metadata) for node `local` of
    /// `cluster_id`. See the module docs for what is refused.
    pub fn verify(
        &self,
        md: &MetadataMap,
        cluster_id: &str,
        from: NodeId,
        local: NodeId,
        call: PeerCall,
    ) -> Result<(), Status> {
        self.verify_at(md, cluster_id, from, local, call, now_ms())
    }

    pub(crate) fn verify_at(
        &self,
        md: &MetadataMap,
        cluster_id: &str,
        from: NodeId,
        local: NodeId,
        call: PeerCall,
        now: u64,
    ) -> Result<(), Status> {
        let unauth = |why: &str| {
            Status::unauthenticated(format!(
                "peer call claiming to be node {from} refused: {why}; every node needs the \
                 same peer.secret_file (see docs/tls.md, \"Peer authentication\")"
            ))
        };
        let value = md
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauth(&format!("no {AUTH_HEADER} metadata")))?;
        let to = md
            .get(TO_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<NodeId>().ok())
            .ok_or_else(|| unauth(&format!("no valid {TO_HEADER} metadata")))?;
        if to != local {
            return Err(unauth(&format!(
                "the handshake is for node {to}, this is node {local}"
            )));
        }
        let mut parts = value.split('.');
        let (Some("v1"), Some(ts), Some(nonce), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(unauth(&format!("malformed {AUTH_HEADER} metadata")));
        };
        let ts: u64 = ts
            .parse()
            .map_err(|_| unauth(&format!("malformed {AUTH_HEADER} timestamp")))?;
        let nonce: [u8; 16] = unhex(nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| unauth(&format!("malformed {AUTH_HEADER} nonce")))?;
        let mac = unhex(mac).ok_or_else(|| unauth(&format!("malformed {AUTH_HEADER} MAC")))?;
        let from_addr = md
            .get(FROM_ADDR_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let h = Handshake {
            cluster_id,
            from,
            to,
            call,
            from_addr,
            unix_ms: ts,
            nonce,
        };
        hmac::verify(&self.key, &handshake_bytes(&h), &mac).map_err(|_| {
            unauth("the handshake MAC does not verify (a different or no cluster secret)")
        })?;
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        if ts.abs_diff(now) > skew {
            return Err(unauth(&format!(
                "the handshake is stamped {} ms away from this node's clock (at most {} ms \
                 allowed): synchronize the clocks (NTP)",
                ts.abs_diff(now),
                skew
            )));
        }
        self.remember(nonce, now).map_err(|e| match e {
            Remember::Replayed => unauth("the handshake was already used (a replay)"),
            Remember::Full => Status::unavailable(format!(
                "more than {MAX_REMEMBERED_NONCES} peer handshakes within {} s; retry later",
                2 * MAX_CLOCK_SKEW.as_secs()
            )),
        })
    }

    fn remember(&self, nonce: [u8; 16], now: u64) -> Result<(), Remember> {
        let keep = 2 * MAX_CLOCK_SKEW.as_millis() as u64;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(at, n)) = seen.order.front() {
            if now.saturating_sub(at) <= keep {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&n);
        }
        if seen.set.contains(&nonce) {
            return Err(Remember::Replayed);
        }
        if seen.set.len() >= MAX_REMEMBERED_NONCES {
            return Err(Remember::Full);
        }
        seen.set.insert(nonce);
        seen.order.push_back((now, nonce));
        Ok(())
    }
}

/// What a node's peer port authenticates with, decided at startup from
/// `[peer]` and `[tls]` (already validated by `Config::validate`). Loads the
/// cluster secret if one is configured, and logs — at every start — a
/// warning when peers are not authenticated in a multi-node or
/// non-loopback configuration.
pub fn startup(
    config: &crate::config::Config,
) -> Result<Option<std::sync::Arc<PeerSecret>>, ConfigError> {
    let secret = if config.peer.secret_file.as_os_str().is_empty() {
        None
    } else {
        Some(std::sync::Arc::new(PeerSecret::load(
            &config.peer.secret_file,
        )?))
    };
    let how = match (secret.is_some(), config.tls.peer) {
        (true, true) => "cluster secret and peer mutual TLS",
        (true, false) => "cluster secret",
        (false, true) => "peer mutual TLS",
        (false, false) => "none",
    };
    if config.peer_authenticated() {
        tracing::info!(
            node = config.node_id,
            peer_authentication = how,
            "peer port authenticates callers"
        );
        return Ok(secret);
    }
    let exposed = !crate::config::is_loopback_addr(&config.peer_addr)
        || config
            .members
            .iter()
            .any(|m| !crate::config::is_loopback_addr(&m.peer_addr));
    if config.peer.allow_unauthenticated && exposed {
        tracing::warn!(
            node = config.node_id,
            peer_addr = %config.peer_addr,
            "peer authentication is OFF (peer.allow_unauthenticated = true): anyone who can \
             reach the peer port can act as a cluster member and write any data; set \
             peer.secret_file or tls.peer = true"
        );
    } else if config.multi_node() {
        tracing::warn!(
            node = config.node_id,
            peer_addr = %config.peer_addr,
            "peer authentication is off in a loopback-only cluster: every local process can \
             act as a cluster member; set peer.secret_file (d-engine-server gen-secret) to \
             authenticate peers"
        );
    }
    Ok(secret)
}

enum Remember {
    Replayed,
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> PeerSecret {
        PeerSecret::from_bytes(&[b; 32]).unwrap()
    }

    fn md_with(auth: &str, to: NodeId, from_addr: Option<&str>) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert(AUTH_HEADER, auth.parse().unwrap());
        md.insert(TO_HEADER, to.to_string().parse().unwrap());
        if let Some(a) = from_addr {
            md.insert(
                super::super::tonic_common::FROM_ADDR_HEADER,
                a.parse().unwrap(),
            );
        }
        md
    }

    #[test]
    fn a_signed_handshake_verifies_once_and_binds_every_field() {
        let s = secret(7);
        let h = s.sign("c", 2, 1, PeerCall::Stream, "10.0.0.2:9081");
        let md = md_with(&h, 1, Some("10.0.0.2:9081"));
        s.verify(&md, "c", 2, 1, PeerCall::Stream).unwrap();
        // The same handshake again is a replay.
        let e = s.verify(&md, "c", 2, 1, PeerCall::Stream).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("replay"), "{}", e.message());

        let check = |md: &MetadataMap, cluster: &str, from, local, call| {
            let e = s.verify(md, cluster, from, local, call).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
            e.message().to_string()
        };
        let fresh = || s.sign("c", 2, 1, PeerCall::Stream, "10.0.0.2:9081");
        assert!(check(
            &md_with(&fresh(), 1, Some("10.0.0.2:9081")),
            "other",
            2,
            1,
            PeerCall::Stream
        )
        .contains("does not verify"));
        assert!(check(
            &md_with(&fresh(), 1, Some("10.0.0.2:9081")),
            "c",
            3,
            1,
            PeerCall::Stream
        )
        .contains("does not verify"));
        assert!(check(
            &md_with(&fresh(), 1, Some("10.0.0.2:9081")),
            "c",
            2,
            1,
            PeerCall::Snapshot
        )
        .contains("does not verify"));
        assert!(check(
            &md_with(&fresh(), 1, Some("6.6.6.6:1")),
            "c",
            2,
            1,
            PeerCall::Stream
        )
        .contains("does not verify"));
        // Re-targeted at another node: the header says 1, this is node 4.
        assert!(check(
            &md_with(&fresh(), 1, Some("10.0.0.2:9081")),
            "c",
            2,
            4,
            PeerCall::Stream
        )
        .contains("for node 1"));
        // Signed for node 1, header rewritten to 4, checked by node 4.
        assert!(check(
            &md_with(&fresh(), 4, Some("10.0.0.2:9081")),
            "c",
            2,
            4,
            PeerCall::Stream
        )
        .contains("does not verify"));
        // Another secret.
        let other = secret(8).sign("c", 2, 1, PeerCall::Stream, "10.0.0.2:9081");
        assert!(check(
            &md_with(&other, 1, Some("10.0.0.2:9081")),
            "c",
            2,
            1,
            PeerCall::Stream
        )
        .contains("does not verify"));
        // Missing or garbage headers.
        assert!(check(&MetadataMap::new(), "c", 2, 1, PeerCall::Stream).contains(AUTH_HEADER));
        for bad in [
            "",
            "v1",
            "v2.1.2.3",
            "v1.x.00.00",
            "v1.1.zz.00",
            "v1.1.00.00.00",
        ] {
            check(&md_with(bad, 1, None), "c", 2, 1, PeerCall::Stream);
        }
    }

    #[test]
    fn stale_or_future_handshakes_are_refused() {
        let s = secret(1);
        let h = s.sign("c", 2, 1, PeerCall::Stream, "");
        let md = md_with(&h, 1, None);
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        let e = s
            .verify_at(&md, "c", 2, 1, PeerCall::Stream, now_ms() + skew + 5_000)
            .unwrap_err();
        assert!(e.message().contains("clock"), "{}", e.message());
        let e = s
            .verify_at(&md, "c", 2, 1, PeerCall::Stream, now_ms() - skew - 5_000)
            .unwrap_err();
        assert!(e.message().contains("clock"), "{}", e.message());
    }

    #[test]
    fn replay_memory_is_bounded_and_expires() {
        let s = secret(1);
        let t0 = 1_000_000_000u64;
        for i in 0..MAX_REMEMBERED_NONCES as u64 {
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&i.to_be_bytes());
            assert!(s.remember(n, t0).is_ok());
        }
        assert!(matches!(s.remember([0xff; 16], t0), Err(Remember::Full)));
        // Once the window has passed, old nonces are forgotten.
        let later = t0 + 2 * MAX_CLOCK_SKEW.as_millis() as u64 + 1;
        assert!(s.remember([0xff; 16], later).is_ok());
        assert_eq!(s.seen.lock().unwrap().set.len(), 1);
    }

    #[test]
    fn secret_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        let e = PeerSecret::load(&p).unwrap_err();
        assert_eq!(e.key, "peer.secret_file");
        let write = |text: &str, mode: u32| {
            std::fs::write(&p, text).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            #[cfg(not(unix))]
            let _ = mode;
        };
        write("abcd\n", 0o600);
        let e = PeerSecret::load(&p).unwrap_err();
        assert!(e.message.contains("at least 32"), "{e}");
        write(
            "not hex at all, not hex at all, not hex at all, not hex at all!!",
            0o600,
        );
        let e = PeerSecret::load(&p).unwrap_err();
        assert!(e.message.contains("hex"), "{e}");
        let good = generate_secret_text().unwrap();
        assert_eq!(good.trim().len(), 64);
        write(&good, 0o600);
        PeerSecret::load(&p).unwrap();
        #[cfg(unix)]
        {
            write(&good, 0o644);
            let e = PeerSecret::load(&p).unwrap_err();
            assert!(e.message.contains("chmod 600"), "{e}");
        }
    }
}
