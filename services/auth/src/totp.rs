//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30-second
//! steps), the base32 text form authenticator apps read, and recovery codes.

use hmac::{Hmac, Mac};
use sha1::Sha1;

pub const STEP_SECS: i64 = 30;
pub const DIGITS: usize = 6;
/// Steps of clock drift accepted on either side of now.
const DRIFT_STEPS: i64 = 1;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The code for one time step.
pub fn code_at(secret: &[u8], step: i64) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else { return String::new() };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary =
        u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    format!("{:0width$}", binary % 10_u32.pow(DIGITS as u32), width = DIGITS)
}

/// The time step a code belongs to, if it is valid now (with drift) and
/// newer than `last_step`, so that no code is accepted twice.
pub fn matching_step(secret: &[u8], code: &str, now_secs: i64, last_step: i64) -> Option<i64> {
    if !is_code(code) {
        return None;
    }
    let now = now_secs.div_euclid(STEP_SECS);
    ((now - DRIFT_STEPS)..=(now + DRIFT_STEPS))
        .filter(|step| *step > last_step)
        .find(|step| constant_time_eq(code_at(secret, *step).as_bytes(), code.as_bytes()))
}

/// Whether the text has the shape of a code (6 ASCII digits).
pub fn is_code(code: &str) -> bool {
    code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 4648 base32 without padding, as in otpauth:// URIs.
pub fn encode_base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buffer = [0_u8; 5];
        buffer[..chunk.len()].copy_from_slice(chunk);
        let bits = buffer.iter().fold(0_u64, |acc, b| (acc << 8) | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            let index = ((bits >> (35 - i * 5)) & 0x1f) as usize;
            out.push(char::from(BASE32[index]));
        }
    }
    out
}

/// Decodes base32 (case-insensitive, padding and spaces ignored).
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut bits, mut count) = (0_u32, 0_u32);
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let value = BASE32.iter().position(|b| *b == c.to_ascii_uppercase())? as u32;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B (SHA-1 key), last six of the eight digits.
    #[test]
    fn matches_the_rfc_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in
            [(59, "287082"), (1_111_111_109, "081804"), (1_234_567_890, "005924"), (2_000_000_000, "279037")]
        {
            assert_eq!(code_at(secret, time / STEP_SECS), code, "t={time}");
        }
    }

    #[test]
    fn accepts_drift_and_refuses_replays() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_109;
        let step = now / STEP_SECS;
        assert_eq!(matching_step(secret, &code_at(secret, step - 1), now, 0), Some(step - 1));
        assert_eq!(matching_step(secret, &code_at(secret, step), now, step), None, "already used");
        assert_eq!(matching_step(secret, &code_at(secret, step - 2), now, 0), None, "too old");
        assert_eq!(matching_step(secret, "12345", now, 0), None);
        assert_eq!(matching_step(secret, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_round_trips() {
        // RFC 4648 section 10, without padding.
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(encode_base32(plain.as_bytes()), encoded);
            assert_eq!(decode_base32(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(decode_base32("mzxw 6ytb oi======").unwrap(), b"foobar");
        assert_eq!(decode_base32("1"), None);
    }
}
