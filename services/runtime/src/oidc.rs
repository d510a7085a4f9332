//! An OpenID provider (Keycloak, or any other): its discovery document, its
//! signing keys, and checking the tokens it signs.
//!
//! The provider is discovered on first use and its JWKS fetched then; a
//! token naming a key id the node has not seen fetches the JWKS again (at
//! most every `REFETCH_INTERVAL`), so the provider can rotate its keys
//! without any node restarting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, OnceCell, RwLock};

use crate::config::OidcConfig;
use crate::token::TokenError;

/// How often an unknown key id may fetch the provider's keys again.
const REFETCH_INTERVAL: Duration = Duration::from_secs(2);
/// Deadline of each call to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider answered unexpectedly: {0}")]
    Protocol(String),
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
}

/// What `.well-known/openid-configuration` says, as far as Colink uses it.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// What the token endpoint answers to a code exchange.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub id_token: Option<String>,
    #[serde(default)]
    pub access_token: String,
}

#[derive(Deserialize)]
struct ProviderRefusal {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct PublishedKeys {
    keys: Vec<serde_json::Value>,
}

/// A provider's key, ready to verify with, and the one algorithm it may sign.
struct ProviderKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct OpenIdProvider {
    config: OidcConfig,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
    keys: RwLock<HashMap<String, ProviderKey>>,
    last_fetch: Mutex<Option<Instant>>,
}

impl OpenIdProvider {
    pub fn new(config: OidcConfig) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        Ok(Self {
            config,
            http,
            discovery: OnceCell::new(),
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The configured issuer, the `iss` every token of the provider carries.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The provider's endpoints, read once (a failed read is tried again
    /// on the next call).
    pub async fn discovery(&self) -> Result<&Discovery, OidcError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let found: Discovery = self.get_json(&url).await?;
                if found.issuer != self.config.issuer {
                    return Err(OidcError::Protocol(format!(
                        "the provider calls itself {:?}, not the configured issuer {:?}",
                        found.issuer, self.config.issuer
                    )));
                }
                if !found.code_challenge_methods_supported.is_empty()
                    && !found.code_challenge_methods_supported.iter().any(|m| m == "S256")
                {
                    return Err(OidcError::Protocol("the provider does not support PKCE with S256".into()));
                }
                Ok(found)
            })
            .await
    }

    /// Checks a token the provider signed: its signature with the key its
    /// header names (RS256, ES256 or EdDSA, and only the algorithm that
    /// key is for), its issuer, that `audience` is among its audiences, and
    /// `exp` and `nbf` with the configured leeway.
    pub async fn verify<T: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<T, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.unwrap_or_default();
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_secs;
        let checked = {
            let keys = self.keys.read().await;
            keys.get(&kid).map(|found| check(token, found, header.alg, &validation))
        };
        match checked {
            Some(result) => result,
            None => {
                self.refetch_keys(&kid).await?;
                let keys = self.keys.read().await;
                let found = keys.get(&kid).ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
                check(token, found, header.alg, &validation)
            }
        }
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
    ) -> Result<TokenResponse, OidcError> {
        let endpoint = &self.discovery().await?.token_endpoint;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
            ("client_id", &self.config.client_id),
        ];
        let mut request = self.http.post(endpoint).form(&form);
        if !self.config.client_secret.is_empty() {
            // Form-encoded first, as RFC 6749 (2.3.1) asks.
            let (id, secret) = (url_encode(&self.config.client_id), url_encode(&self.config.client_secret));
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ProviderRefusal>(&body) {
                Ok(refused) => OidcError::Protocol(format!(
                    "the provider refused the code: {} {}",
                    refused.error, refused.error_description
                )),
                Err(_) => OidcError::Protocol(format!("the token endpoint answered {status}")),
            });
        }
        serde_json::from_slice(&body).map_err(|e| OidcError::Protocol(format!("unreadable token response: {e}")))
    }

    async fn refetch_keys(&self, kid: &str) -> Result<(), OidcError> {
        let mut last = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited.
        if self.keys.read().await.contains_key(kid) {
            return Ok(());
        }
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return Err(TokenError::UnknownKey(kid.to_string()).into());
        }
        let jwks_uri = self.discovery().await?.jwks_uri.clone();
        // Each key is read on its own: one of a kind Colink does not know
        // (an encryption key, a new curve) leaves the others usable.
        let set: PublishedKeys = self.get_json(&jwks_uri).await?;
        *last = Some(Instant::now());
        let fresh: HashMap<String, ProviderKey> = set
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, provider_key(&jwk)?)))
            .collect();
        tracing::info!(keys = fresh.len(), issuer = %self.config.issuer, "fetched the identity provider's keys");
        *self.keys.write().await = fresh;
        Ok(())
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let response = self.http.get(url).send().await.map_err(|e| OidcError::Unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(OidcError::Protocol(format!("{url} answered {}", response.status())));
        }
        response.json().await.map_err(|e| OidcError::Protocol(format!("{url}: {e}")))
    }
}

fn check<T: DeserializeOwned>(
    token: &str,
    found: &ProviderKey,
    alg: Algorithm,
    validation: &Validation,
) -> Result<T, OidcError> {
    // A key is for one algorithm: a token cannot choose another for it.
    if alg != found.algorithm {
        return Err(TokenError::Algorithm.into());
    }
    Ok(jsonwebtoken::decode::<T>(token, &found.key, validation).map_err(TokenError::from)?.claims)
}

/// A published key Colink accepts: RSA (RS256), P-256 (ES256) or Ed25519
/// (EdDSA); others (and keys for encryption) are skipped.
fn provider_key(jwk: &Jwk) -> Option<ProviderKey> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        _ => return None,
    };
    // A key that states its algorithm must state this one.
    if jwk.common.key_algorithm.is_some_and(|stated| stated.to_string() != format!("{algorithm:?}")) {
        return None;
    }
    Some(ProviderKey { algorithm, key: DecodingKey::from_jwk(jwk).ok()? })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_only_unreserved_characters() {
        assert_eq!(url_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(url_encode("openid email"), "openid%20email");
        assert_eq!(url_encode("https://x/y?z=1&w"), "https%3A%2F%2Fx%2Fy%3Fz%3D1%26w");
    }
}
