//! Ids, times, text limits and page tokens: the small shared vocabulary of
//! request validation.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::FieldError;

/// A new time-ordered id (UUIDv7) in its canonical text form.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Checks that a field holds a UUID and returns it in canonical form.
pub fn parse_id(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    uuid::Uuid::try_parse(raw).map(|id| id.to_string()).map_err(|_| FieldError::new(field, "must be a UUID"))
}

/// Parses a list of ids, naming each bad one as `field[i]`; repeats are dropped.
pub fn parse_id_list(v: &mut crate::error::Violations, field: &str, raw: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        if let Some(id) = v.check(parse_id(&format!("{field}[{i}]"), value))
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// Like `parse_id`, but an empty value means "none".
pub fn parse_optional_id(field: &str, raw: &str) -> Result<Option<String>, FieldError> {
    if raw.is_empty() { Ok(None) } else { parse_id(field, raw).map(Some) }
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// A time as RFC 3339 in UTC to the second, as people read it in
/// messages: "2026-12-01T10:41:00Z".
pub fn rfc3339(micros: i64) -> String {
    let (days, secs) = (micros.div_euclid(86_400_000_000), micros.rem_euclid(86_400_000_000) / 1_000_000);
    let (year, month, day) = civil_date(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The calendar date of a day counted from 1970-01-01 (Howard Hinnant's
/// algorithm).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A stored time as a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as stored: microseconds since the epoch.
pub fn micros_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1_000_000).saturating_add(i64::from(t.nanos) / 1_000)
}

/// An optional stored time as an optional protobuf timestamp.
pub fn opt_timestamp(micros: Option<i64>) -> Option<prost_types::Timestamp> {
    micros.map(timestamp)
}

/// Checks a text field's length in characters; `trim_required` also rejects
/// values that are only white space.
pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), FieldError> {
    let len = value.chars().count();
    if min > 0 && value.trim().is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if len < min || len > max {
        return Err(FieldError::new(field, format!("must be {min} to {max} characters long (got {len})")));
    }
    Ok(())
}

/// Resolves a requested page size: 0 means the default, otherwise it must lie
/// within 1..=max.
pub fn page_size(field: &str, requested: i32, default: u64, max: u64) -> Result<u64, FieldError> {
    match requested {
        0 => Ok(default),
        n if n < 0 || n as u64 > max => Err(FieldError::new(field, format!("must be within 1..={max}"))),
        n => Ok(n as u64),
    }
}

/// Encodes an opaque page token.
pub fn encode_page_token(parts: &str) -> String {
    URL_SAFE_NO_PAD.encode(parts)
}

/// Decodes a page token made by `encode_page_token`; empty means none.
pub fn decode_page_token(field: &str, token: &str) -> Result<Option<String>, FieldError> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| FieldError::new(field, "is not a valid page token"))
}

/// The idempotency key of a request: the body field, or else the
/// `Idempotency-Key` header, which REST clients send and Envoy passes on as
/// gRPC metadata.
pub fn idempotency_key<T>(field: &str, request: &tonic::Request<T>) -> String {
    if !field.is_empty() {
        return field.to_string();
    }
    request.metadata().get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// An idempotency key: empty for none, else 1..=128 printable ASCII characters.
pub fn check_idempotency_key(field: &str, key: &str) -> Result<Option<String>, FieldError> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(field, "must be at most 128 printable ASCII characters"));
    }
    Ok(Some(key.to_string()))
}

/// A digest of what a request asks for, kept with its idempotency key: the
/// same key with a different request is then refused instead of silently
/// answered with the first request's result. `request` must have its key
/// field cleared (the key may come in a header instead).
pub fn request_fingerprint(request: &impl prost::Message) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(request.encode_to_vec());
    URL_SAFE_NO_PAD.encode(&digest[..18])
}

/// Whether a request repeats the one first sent with its idempotency key.
/// Keys stored before fingerprints were kept have none and match anything.
pub fn check_same_request(stored: Option<&str>, fingerprint: &str) -> Result<(), crate::Error> {
    match stored {
        Some(stored) if stored != fingerprint => Err(crate::Error::invalid(
            "idempotency_key",
            "was already used for a different request; a retry must repeat the request exactly, \
             and a new request needs a new key",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_rfc_3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2026-12-01T10:41:07.5Z
        assert_eq!(rfc3339(1_796_121_667_500_000), "2026-12-01T10:41:07Z");
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
    }

    #[test]
    fn ids_are_canonical_and_checked() {
        let id = new_id();
        assert_eq!(parse_id("x", &id.to_uppercase()).unwrap(), id);
        assert_eq!(parse_id("channel_id", "nope").unwrap_err().field, "channel_id");
        assert!(parse_id("x", "").is_err());
    }

    #[test]
    fn timestamps_round_down_to_seconds_and_nanos() {
        let ts = timestamp(1_700_000_000_123_456);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
    }

    #[test]
    fn text_limits_count_characters() {
        assert!(check_text("text", "héllo", 1, 5).is_ok());
        assert!(check_text("text", "   ", 1, 5).is_err());
        assert!(check_text("text", "toolong", 1, 5).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let token = encode_page_token("b:42");
        assert_eq!(decode_page_token("page_token", &token).unwrap().as_deref(), Some("b:42"));
        assert!(decode_page_token("page_token", "%%%").is_err());
        assert_eq!(page_size("page_size", 0, 50, 100).unwrap(), 50);
        assert!(page_size("page_size", 101, 50, 100).is_err());
        assert!(page_size("page_size", -1, 50, 100).is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart_and_old_keys_match_anything() {
        let a = request_fingerprint(&prost_types::Duration { seconds: 1, nanos: 0 });
        let b = request_fingerprint(&prost_types::Duration { seconds: 2, nanos: 0 });
        assert_ne!(a, b);
        assert_eq!(a, request_fingerprint(&prost_types::Duration { seconds: 1, nanos: 0 }));
        assert!(check_same_request(Some(&a), &a).is_ok());
        assert!(check_same_request(None, &a).is_ok());
        assert!(check_same_request(Some(&b), &a).is_err());
    }
}
