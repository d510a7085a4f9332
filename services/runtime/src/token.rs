//! Colink's own access tokens: JWTs signed with Ed25519 (`alg: EdDSA`),
//! made and checked with `jsonwebtoken`.
//!
//! The auth service signs; every node verifies with the public keys the auth
//! service publishes as a JWKS. Only EdDSA is accepted, whatever the header
//! claims, so a token cannot pick a weaker algorithm.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token from another issuer")]
    Issuer,
    #[error("token meant for another audience")]
    Audience,
    #[error("unusable signing key")]
    Key,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                TokenError::Algorithm
            }
            ErrorKind::InvalidKeyFormat | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidEcdsaKey => TokenError::Key,
            _ => TokenError::Malformed,
        }
    }
}

/// A signing key in the form `jsonwebtoken` signs with.
pub fn encoding_key(key: &SigningKey) -> Result<EncodingKey, TokenError> {
    let der = key.to_pkcs8_der().map_err(|_| TokenError::Key)?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
}

/// A public key in the form `jsonwebtoken` verifies with.
pub fn decoding_key(key: &VerifyingKey) -> DecodingKey {
    DecodingKey::from_ed_der(key.as_bytes())
}

/// Signs claims with a key identified by `kid`.
pub fn sign(claims: &Claims, kid: &str, key: &EncodingKey) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

/// What a token's header and issuer say, before any verification: which
/// keys, and whose, to check it with.
pub struct Unverified {
    pub alg: Algorithm,
    pub kid: String,
    pub iss: String,
}

#[derive(Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: String,
}

pub fn peek(token: &str) -> Result<Unverified, TokenError> {
    let data = jsonwebtoken::dangerous::insecure_decode::<IssuerOnly>(token).map_err(|_| TokenError::Malformed)?;
    Ok(Unverified { alg: data.header.alg, kid: data.header.kid.unwrap_or_default(), iss: data.claims.iss })
}

/// The key id of a Colink token, before any verification.
pub fn key_id(token: &str) -> Result<String, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Algorithm);
    }
    header.kid.ok_or(TokenError::Malformed)
}

/// Verifies signature, issuer and expiry of a Colink token.
pub fn verify(token: &str, key: &DecodingKey, issuer: &str) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    // Colink's nodes share a clock closely enough; its tokens end on time.
    validation.leeway = 0;
    Ok(jsonwebtoken::decode::<Claims>(token, key, &validation)?.claims)
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

    fn now() -> i64 {
        crate::ids::now_micros() / 1_000_000
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

    fn signed(claims: &Claims, k: &SigningKey) -> String {
        sign(claims, "k1", &encoding_key(k).unwrap()).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = key(1);
        let exp = now() + 60;
        let token = signed(&claims(exp), &k);
        assert_eq!(key_id(&token).unwrap(), "k1");
        let public = decoding_key(&k.verifying_key());
        assert_eq!(verify(&token, &public, "colink").unwrap(), claims(exp));
        let seen = peek(&token).unwrap();
        assert_eq!((seen.alg, seen.kid.as_str(), seen.iss.as_str()), (Algorithm::EdDSA, "k1", "colink"));
        let published = decode_public_key(&encode_public_key(&k.verifying_key())).unwrap();
        assert_eq!(verify(&token, &decoding_key(&published), "colink").unwrap(), claims(exp));
    }

    #[test]
    fn rejects_expired_foreign_and_tampered_tokens() {
        let k = key(1);
        let public = decoding_key(&k.verifying_key());
        let expired = signed(&claims(now() - 1), &k);
        assert_eq!(verify(&expired, &public, "colink"), Err(TokenError::Expired));
        let token = signed(&claims(now() + 60), &k);
        assert_eq!(verify(&token, &public, "other"), Err(TokenError::Issuer));
        assert_eq!(verify(&token, &decoding_key(&key(2).verifying_key()), "colink"), Err(TokenError::Signature));
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 3, 'A');
        assert!(verify(&tampered, &public, "colink").is_err());
        assert_eq!(verify("a.b", &public, "colink"), Err(TokenError::Malformed));
    }

    #[test]
    fn rejects_other_algorithms() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        assert!(key_id(&format!("{header}.e30.")).is_err());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
        assert_eq!(key_id(&format!("{header}.e30.")), Err(TokenError::Algorithm));
    }
}
