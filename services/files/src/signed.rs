//! The node's own file URLs: each one names one object, one purpose (to
//! put exactly so many bytes of one type, or to get the object under one
//! name and type), and an expiry, all covered by an HMAC-SHA-256 signature.
//! Changing any part of the URL breaks the signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Where signed URLs point: `/blobs/` and the object's key.
pub const BLOB_PREFIX: &str = "/blobs/";

/// What a URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Store exactly `length` bytes declared as `content_type`, whose
    /// SHA-256 (lower-case hex) is `sha256` unless that is empty.
    Put { length: u64, content_type: String, sha256: String },
    /// Read the object, served as `content_type` under `filename`.
    Get { content_type: String, filename: String, attachment: bool },
}

/// A URL checked against its signature.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    pub key: String,
    pub grant: Grant,
}

/// Why a URL is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the URL is malformed: {0}")]
    Malformed(&'static str),
    #[error("the URL's signature does not match")]
    BadSignature,
    #[error("the URL has expired")]
    Expired,
}

pub struct Signer {
    key: Vec<u8>,
    /// The node's public address, without a trailing slash.
    base: String,
}

impl Signer {
    pub fn new(key: Vec<u8>, base: &str) -> Self {
        Self { key, base: base.trim_end_matches('/').to_string() }
    }

    /// A URL for `grant` on `key`, good until `expires` (seconds since the
    /// epoch).
    pub fn url(&self, key: &str, grant: &Grant, expires: i64) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("expires", &expires.to_string());
        match grant {
            Grant::Put { length, content_type, sha256 } => {
                query.append_pair("length", &length.to_string());
                query.append_pair("type", content_type);
                if !sha256.is_empty() {
                    query.append_pair("sha256", sha256);
                }
            }
            Grant::Get { content_type, filename, attachment } => {
                query.append_pair("type", content_type);
                query.append_pair("name", filename);
                query.append_pair("disposition", if *attachment { "attachment" } else { "inline" });
            }
        }
        query.append_pair("signature", &self.signature(key, grant, expires));
        format!("{}{BLOB_PREFIX}{key}?{}", self.base, query.finish())
    }

    /// Checks a request's path and query at `now` (seconds).
    pub fn check(&self, method: &http::Method, path: &str, query: &str, now: i64) -> Result<Signed, Refused> {
        let key = path.strip_prefix(BLOB_PREFIX).ok_or(Refused::Malformed("not a file path"))?;
        let mut expires = None;
        let (mut length, mut content_type, mut sha256, mut filename, mut disposition, mut signature) =
            (None, None, None, None, None, None);
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "expires" => &mut expires,
                "length" => &mut length,
                "type" => &mut content_type,
                "sha256" => &mut sha256,
                "name" => &mut filename,
                "disposition" => &mut disposition,
                "signature" => &mut signature,
                _ => return Err(Refused::Malformed("unknown query parameter")),
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(Refused::Malformed("repeated query parameter"));
            }
        }
        let expires: i64 = expires.and_then(|e| e.parse().ok()).ok_or(Refused::Malformed("expires"))?;
        let content_type = content_type.ok_or(Refused::Malformed("type"))?;
        let grant = if method == http::Method::PUT {
            let length = length.and_then(|l| l.parse().ok()).ok_or(Refused::Malformed("length"))?;
            Grant::Put { length, content_type, sha256: sha256.unwrap_or_default() }
        } else {
            let attachment = match disposition.as_deref() {
                Some("attachment") => true,
                Some("inline") => false,
                _ => return Err(Refused::Malformed("disposition")),
            };
            Grant::Get { content_type, filename: filename.ok_or(Refused::Malformed("name"))?, attachment }
        };
        let given = signature.and_then(|s| hex::decode(s).ok()).ok_or(Refused::Malformed("signature"))?;
        let expected = hex::decode(self.signature(key, &grant, expires)).map_err(|_| Refused::BadSignature)?;
        if !bool::from(given.ct_eq(&expected)) {
            return Err(Refused::BadSignature);
        }
        // Checked after the signature, so that an expiry pushed into the
        // future reads as tampering, not as a valid URL.
        if now > expires {
            return Err(Refused::Expired);
        }
        Ok(Signed { key: key.to_string(), grant })
    }

    fn signature(&self, key: &str, grant: &Grant, expires: i64) -> String {
        // Fields are joined with a byte no field may hold unescaped, so
        // that no two different URLs sign the same text.
        let text = match grant {
            Grant::Put { length, content_type, sha256 } => {
                format!("PUT\n{key}\n{expires}\n{length}\n{content_type}\n{sha256}")
            }
            Grant::Get { content_type, filename, attachment } => {
                format!("GET\n{key}\n{expires}\n{content_type}\n{}\n{attachment}", filename.escape_default())
            }
        };
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this cannot happen.
            Err(_) => return String::new(),
        };
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, String) {
        let rest = url.strip_prefix("http://node:7700").unwrap();
        let (path, query) = rest.split_once('?').unwrap();
        (path.to_string(), query.to_string())
    }

    #[test]
    fn a_url_works_for_its_purpose_until_it_expires() {
        let signer = Signer::new(b"k".repeat(32), "http://node:7700/");
        let grant = Grant::Get { content_type: "image/png".into(), filename: "a b&c.png".into(), attachment: false };
        let (path, query) = parts(&signer.url("files/1", &grant, 100));
        let signed = signer.check(&http::Method::GET, &path, &query, 100).unwrap();
        assert_eq!(signed, Signed { key: "files/1".into(), grant });
        assert_eq!(signer.check(&http::Method::GET, &path, &query, 101), Err(Refused::Expired));
        // The same URL does not allow an upload.
        assert!(signer.check(&http::Method::PUT, &path, &query, 100).is_err());
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let signer = Signer::new(b"k".repeat(32), "http://node:7700");
        let grant = Grant::Put { length: 10, content_type: "text/plain".into(), sha256: String::new() };
        let (path, query) = parts(&signer.url("uploads/1", &grant, 100));
        let put = http::Method::PUT;
        assert!(signer.check(&put, &path, &query, 50).is_ok());
        let other_key = path.replace("uploads/1", "uploads/2");
        assert_eq!(signer.check(&put, &other_key, &query, 50), Err(Refused::BadSignature));
        for (from, to) in [("length=10", "length=11"), ("expires=100", "expires=999"), ("text%2Fplain", "text%2Fhtml")]
        {
            assert_eq!(signer.check(&put, &path, &query.replace(from, to), 50), Err(Refused::BadSignature), "{to}");
        }
        let other_signer = Signer::new(b"j".repeat(32), "http://node:7700");
        assert_eq!(other_signer.check(&put, &path, &query, 50), Err(Refused::BadSignature));
        assert!(matches!(signer.check(&put, &path, &format!("{query}&x=1"), 50), Err(Refused::Malformed(_))));
    }
}
