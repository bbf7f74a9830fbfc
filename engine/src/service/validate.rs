//! Request validation of the client API.
//!
//! Every refusal is INVALID_ARGUMENT whose message names the field and the
//! limit (size limits: the API's `limits`, one message everywhere) and whose `ErrorInfo` metadata carries `field` (and `limit` for
//! size limits), so clients can act on it without parsing text. The node
//! checks again (defence in depth); checking here first gives the precise
//! field name.

use std::time::Duration;

use d_engine_api::{Consistency, Limits};
use d_engine_proto::v1 as pb;
use tonic::Status;

use super::status::{invalid, limit};
use crate::config::LimitsConfig;
use crate::runtime::handle::WriteId;

/// Longest accepted TTL: 10 years. Anything longer is almost certainly a
/// unit mistake (seconds vs milliseconds) and would overflow expiry times.
pub const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// The API's size limits with the node's configured maxima.
pub fn api_limits(l: &LimitsConfig) -> Limits {
    Limits {
        max_key_bytes: l.max_key_bytes,
        max_value_bytes: l.max_value_bytes,
    }
}

/// A key: `1..=max_key_bytes` bytes. `field` names it in errors ("key", "keys[3]").
pub fn key(l: &LimitsConfig, field: &str, k: &[u8]) -> Result<(), Status> {
    api_limits(l).key(field, k).map_err(|e| e.to_status())
}

/// A prefix: empty (everything) up to `max_key_bytes`.
pub fn prefix(l: &LimitsConfig, field: &str, p: &[u8]) -> Result<(), Status> {
    api_limits(l).prefix(field, p).map_err(|e| e.to_status())
}

/// A value: at most `max_value_bytes`.
pub fn value(l: &LimitsConfig, field: &str, v: &[u8]) -> Result<(), Status> {
    api_limits(l).value(field, v).map_err(|e| e.to_status())
}

/// A range `[key, range_end)` (`range_end` empty: one key; `"\0"`:
/// every key from `key` on; otherwise it must sort after `key`). `key` may
/// be empty only with a `range_end`.
pub fn range(
    l: &LimitsConfig,
    key_field: &str,
    end_field: &str,
    k: &[u8],
    end: &[u8],
) -> Result<(), Status> {
    if end.is_empty() {
        return key(l, key_field, k);
    }
    prefix(l, key_field, k)?;
    if end == [0] {
        return Ok(());
    }
    let max = l.max_key_bytes + 1;
    if end.len() > max {
        return Err(limit(
            end_field,
            max as u64,
            format!(
                "{end_field} is {} bytes; the limit is {max} bytes (limits.max_key_bytes + 1)",
                end.len()
            ),
        ));
    }
    let start: &[u8] = if k.is_empty() { &[0] } else { k };
    if end <= start {
        return Err(invalid(
            end_field,
            format!(
                "{end_field} is at or before {key_field}: the range is empty; use an empty \
                 {end_field} for one key, \"\\0\" for every key from {key_field} on, or an \
                 end above {key_field}"
            ),
        ));
    }
    Ok(())
}

/// A page size: 0 = the server maximum, at most `limits.max_scan_limit`.
pub fn range_limit(l: &LimitsConfig, field: &str, n: u32) -> Result<(), Status> {
    if n > l.max_scan_limit {
        return Err(limit(
            field,
            l.max_scan_limit as u64,
            format!(
                "{field} is {n}; the limit is {} (limits.max_scan_limit); read further pages \
                 with next_key instead",
                l.max_scan_limit
            ),
        ));
    }
    Ok(())
}

/// A list of at most `max` entries (`field`: "compare", "success", ...).
pub fn count(field: &str, n: usize, max: usize, what_to_do: &str) -> Result<(), Status> {
    if n > max {
        return Err(limit(
            field,
            max as u64,
            format!("{field} has {n} entries; the limit is {max}; {what_to_do}"),
        ));
    }
    Ok(())
}

/// A lease TTL: 1 ms ..= 1 year.
pub fn lease_ttl(field: &str, ttl_ms: u64) -> Result<Duration, Status> {
    let max = d_engine_storage::command::MAX_LEASE_TTL_MS;
    if ttl_ms == 0 || ttl_ms > max {
        return Err(limit(
            field,
            max,
            format!("{field} is {ttl_ms}; a lease's TTL must be 1..={max} ms (one year)"),
        ));
    }
    Ok(Duration::from_millis(ttl_ms))
}

/// A lease id where one is required (not 0).
pub fn lease_id(field: &str, id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(invalid(
            field,
            format!("{field} is 0; lease ids are >= 1 (0 means \"no lease\")"),
        ));
    }
    Ok(id)
}

/// GetMulti's keys are distinct: a repeated key is refused (not folded),
/// naming both positions and the key, before anything is read. `field`
/// names the list ("keys").
pub fn distinct_keys(field: &str, keys: &[bytes::Bytes]) -> Result<(), Status> {
    match crate::runtime::validate::first_duplicate(keys) {
        None => Ok(()),
        Some((first, again)) => Err(invalid(
            &format!("{field}[{again}]"),
            crate::runtime::validate::duplicate_key_message(keys, first, again),
        )),
    }
}

/// The request's consistency; UNSPECIFIED means LINEARIZABLE.
pub fn consistency(raw: i32) -> Result<Consistency, Status> {
    match pb::Consistency::try_from(raw) {
        Ok(pb::Consistency::Unspecified) | Ok(pb::Consistency::Linearizable) => {
            Ok(Consistency::Linearizable)
        }
        Ok(pb::Consistency::Lease) => Ok(Consistency::Lease),
        Ok(pb::Consistency::Eventual) => Ok(Consistency::Eventual),
        Err(_) => Err(invalid(
            "consistency",
            format!(
                "consistency {raw} is unknown; use LINEARIZABLE (1), LEASE (2) or EVENTUAL (3)"
            ),
        )),
    }
}

/// `ttl_ms` (0 = no expiry) as a duration.
pub fn ttl(field: &str, ttl_ms: u64) -> Result<Option<Duration>, Status> {
    if ttl_ms > MAX_TTL_MS {
        return Err(limit(
            field,
            MAX_TTL_MS,
            format!("{field} is {ttl_ms} ms; the limit is {MAX_TTL_MS} ms (10 years)"),
        ));
    }
    Ok((ttl_ms > 0).then(|| Duration::from_millis(ttl_ms)))
}

/// The optional write id (`client_id` 0 = no deduplication).
pub fn write_id(w: Option<pb::WriteId>) -> Result<Option<WriteId>, Status> {
    match w {
        None => Ok(None),
        Some(w) if w.client_id == 0 => Ok(None),
        Some(w) if w.seq == 0 => Err(invalid(
            "write_id.seq",
            "write_id.seq must be >= 1 when write_id.client_id is set",
        )),
        Some(w) => Ok(Some(WriteId {
            client_id: w.client_id,
            seq: w.seq,
            user: String::new(),
        })),
    }
}

/// A node id in an admin request.
pub fn node_id(field: &str, id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(invalid(
            field,
            format!("{field} must be >= 1 (0 is reserved)"),
        ));
    }
    Ok(id)
}

/// A `host:port` address in an admin request (`required`: must be set).
pub fn address(field: &str, addr: &str, required: bool) -> Result<(), Status> {
    if addr.is_empty() {
        if required {
            return Err(invalid(field, format!("{field} must be set (host:port)")));
        }
        return Ok(());
    }
    let ok = addr
        .rsplit_once(':')
        .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
        .unwrap_or(false);
    if !ok || addr.len() > 255 || addr.contains("://") {
        return Err(invalid(
            field,
            format!("{field} '{addr}' is not a host:port address (e.g. 10.0.0.4:9081)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    fn limits() -> LimitsConfig {
        crate::config::Config::default().limits
    }

    fn info(s: &Status) -> std::collections::HashMap<String, String> {
        let i = s.get_details_error_info().expect("ErrorInfo");
        assert_eq!(i.domain, "d-engine");
        assert_eq!(i.reason, "INVALID_ARGUMENT");
        i.metadata
    }

    #[test]
    fn keys_must_be_non_empty_and_within_the_limit() {
        let l = limits();
        key(&l, "key", b"k").unwrap();
        let e = key(&l, "key", b"").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("key is empty"), "{}", e.message());
        assert_eq!(info(&e)["field"], "key");
        let big = vec![b'k'; l.max_key_bytes + 1];
        let e = key(&l, "keys[2]", &big).unwrap_err();
        assert!(
            e.message().contains("keys[2] is 4097 bytes"),
            "{}",
            e.message()
        );
        assert_eq!(info(&e)["limit"], l.max_key_bytes.to_string());
        prefix(&l, "prefix", b"").unwrap();
    }

    #[test]
    fn api_maxima_are_the_state_machine_maxima() {
        // The state machine re-checks every command against its own
        // constants when applying; they must be the API's.
        assert_eq!(
            d_engine_api::MAX_KEY_BYTES,
            d_engine_storage::command::MAX_KEY_BYTES
        );
        assert_eq!(
            d_engine_api::MAX_VALUE_BYTES,
            d_engine_storage::command::MAX_VALUE_BYTES
        );
        assert_eq!(d_engine_api::MAX_KEY_BYTES, crate::config::MAX_KEY_BYTES);
    }

    #[test]
    fn values_within_the_limit() {
        let l = limits();
        value(&l, "value", &vec![0; l.max_value_bytes]).unwrap();
        let e = value(&l, "value", &vec![0; l.max_value_bytes + 1]).unwrap_err();
        assert!(
            e.message().contains("limits.max_value_bytes"),
            "{}",
            e.message()
        );
        assert_eq!(info(&e)["field"], "value");
    }

    #[test]
    fn repeated_keys_are_refused_naming_the_key() {
        let k = |s: &'static str| bytes::Bytes::from_static(s.as_bytes());
        distinct_keys("keys", &[k("a"), k("b")]).unwrap();
        distinct_keys("keys", &[]).unwrap();
        let e = distinct_keys("keys", &[k("a"), k("b"), k("c"), k("b")]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("keys[3] repeats keys[1] ('b')"),
            "{}",
            e.message()
        );
        assert_eq!(info(&e)["field"], "keys[3]");
        let e = distinct_keys("keys", &[k("\u{1}x"), k("\u{1}x")]).unwrap_err();
        assert!(e.message().contains("\\x01x"), "{}", e.message());
    }

    #[test]
    fn ranges_limits_and_lease_fields() {
        let l = limits();
        range(&l, "key", "range_end", b"a", b"").unwrap();
        range(&l, "key", "range_end", b"a", b"b").unwrap();
        range(&l, "key", "range_end", b"", b"\0").unwrap();
        range(&l, "key", "range_end", b"a", b"\0").unwrap();
        let e = range(&l, "key", "range_end", b"", b"").unwrap_err();
        assert_eq!(info(&e)["field"], "key");
        for (k, end) in [(&b"b"[..], &b"a"[..]), (b"a", b"a")] {
            let e = range(&l, "key", "range_end", k, end).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert_eq!(info(&e)["field"], "range_end");
            assert!(e.message().contains("at or before key"), "{}", e.message());
        }
        let e = range(&l, "key", "range_end", b"a", &vec![b'z'; 4098]).unwrap_err();
        assert_eq!(info(&e)["limit"], "4097");
        range_limit(&l, "limit", 0).unwrap();
        range_limit(&l, "limit", l.max_scan_limit).unwrap();
        let e = range_limit(&l, "limit", l.max_scan_limit + 1).unwrap_err();
        assert!(
            e.message().contains("limits.max_scan_limit"),
            "{}",
            e.message()
        );
        assert_eq!(info(&e)["limit"], l.max_scan_limit.to_string());
        let e = count("success", 129, 128, "split it").unwrap_err();
        assert_eq!(info(&e)["field"], "success");
        assert_eq!(info(&e)["limit"], "128");
        assert!(lease_ttl("ttl_ms", 0).is_err());
        assert!(lease_ttl("ttl_ms", 365 * 24 * 3600 * 1000 + 1).is_err());
        assert_eq!(lease_ttl("ttl_ms", 5).unwrap(), Duration::from_millis(5));
        assert!(lease_id("id", 0).is_err());
    }

    #[test]
    fn unknown_consistency_is_refused() {
        assert_eq!(consistency(0).unwrap(), Consistency::Linearizable);
        assert_eq!(consistency(2).unwrap(), Consistency::Lease);
        assert_eq!(consistency(3).unwrap(), Consistency::Eventual);
        let e = consistency(9).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("consistency 9 is unknown"));
        assert_eq!(info(&e)["field"], "consistency");
    }

    #[test]
    fn ttl_write_id_node_id_and_addresses() {
        assert_eq!(ttl("ttl_ms", 0).unwrap(), None);
        assert_eq!(
            ttl("ttl_ms", 1500).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(ttl("ttl_ms", u64::MAX).is_err());
        assert_eq!(write_id(None).unwrap(), None);
        assert_eq!(
            write_id(Some(pb::WriteId {
                client_id: 0,
                seq: 5
            }))
            .unwrap(),
            None
        );
        assert!(write_id(Some(pb::WriteId {
            client_id: 3,
            seq: 0
        }))
        .is_err());
        assert!(node_id("id", 0).is_err());
        address("peer_addr", "127.0.0.1:9081", true).unwrap();
        address("client_addr", "", false).unwrap();
        assert!(address("peer_addr", "", true).is_err());
        assert!(address("peer_addr", "http://x:1", true).is_err());
        assert!(address("peer_addr", "nohost", true).is_err());
    }
}
