//! Access tokens: compact JWTs signed with Ed25519 (`alg: EdDSA`).
//!
//! The auth service signs; every node verifies with the public keys the auth
//! service publishes as a JWKS. Only EdDSA is accepted, whatever the header
//! claims, so a token cannot pick a weaker algorithm.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// What an access token says about its bearer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Username.
    pub usr: String,
    /// Workspace role: admin, moderator, member or guest.
    pub role: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    Algorithm,
    #[error("token signed by an unknown key")]
    UnknownKey(String),
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token from another issuer")]
    Issuer,
}

/// Signs claims with a key identified by `kid`.
pub fn sign(claims: &Claims, kid: &str, key: &SigningKey) -> String {
    let header = Header { alg: "EdDSA".into(), typ: "JWT".into(), kid: kid.into() };
    let mut token = String::with_capacity(256);
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default()));
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default()));
    let signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

/// The key id a token names, before any verification.
pub fn key_id(token: &str) -> Result<String, TokenError> {
    let header_b64 = token.split('.').next().ok_or(TokenError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm);
    }
    Ok(header.kid)
}

/// Verifies signature, issuer and expiry (`now` in seconds).
pub fn verify(token: &str, key: &VerifyingKey, issuer: &str, now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    key_id(token)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Malformed)?;
    let signed_len = header.len() + 1 + payload.len();
    key.verify_strict(&token.as_bytes()[..signed_len], &signature).map_err(|_| TokenError::Signature)?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?)
        .map_err(|_| TokenError::Malformed)?;
    if claims.iss != issuer {
        return Err(TokenError::Issuer);
    }
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Encodes a public key as the `x` of an OKP JWK.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// Decodes the `x` of an OKP JWK.
pub fn decode_public_key(x: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "colink".into(),
            sub: "u".into(),
            sid: "s".into(),
            usr: "alice".into(),
            role: "member".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn round_trip() {
        let k = key(1);
        let token = sign(&claims(100), "k1", &k);
        assert_eq!(key_id(&token).unwrap(), "k1");
        assert_eq!(verify(&token, &k.verifying_key(), "colink", 50).unwrap(), claims(100));
    }

    #[test]
    fn rejects_expired_foreign_and_tampered_tokens() {
        let k = key(1);
        let token = sign(&claims(100), "k1", &k);
        assert_eq!(verify(&token, &k.verifying_key(), "colink", 100), Err(TokenError::Expired));
        assert_eq!(verify(&token, &k.verifying_key(), "other", 50), Err(TokenError::Issuer));
        assert_eq!(verify(&token, &key(2).verifying_key(), "colink", 50), Err(TokenError::Signature));
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 3, 'A');
        assert!(verify(&tampered, &k.verifying_key(), "colink", 50).is_err());
        assert_eq!(verify("a.b", &k.verifying_key(), "colink", 50), Err(TokenError::Malformed));
    }

    #[test]
    fn rejects_other_algorithms() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert_eq!(key_id(&format!("{header}.e30.")), Err(TokenError::Algorithm));
    }
}
