//! Who is calling: one tower layer checks the bearer token of every request
//! (except the few public RPCs) and puts a `Caller` into the request's
//! extensions; handlers read it with `caller(&request)`.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use colink_proto::auth::v1::GetJwksRequest;
use colink_proto::auth::v1::auth_service_client::AuthServiceClient;
use ed25519_dalek::VerifyingKey;
use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, RwLock};
use tonic::Status;
use tonic::transport::Channel;

use crate::token::{self, Claims, TokenError};

/// RPCs that need no token: signing up and in, key discovery, health and reflection.
const PUBLIC_PATHS: &[&str] = &[
    "/colink.auth.v1.AuthService/Register",
    "/colink.auth.v1.AuthService/Login",
    "/colink.auth.v1.AuthService/VerifySecondFactor",
    "/colink.auth.v1.AuthService/Refresh",
    "/colink.auth.v1.AuthService/GetJwks",
    "/colink.auth.v1.AuthService/RequestPasswordReset",
    "/colink.auth.v1.AuthService/ResetPassword",
];
const PUBLIC_PREFIXES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

/// How often an unknown key id may trigger a JWKS refetch.
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Workspace role of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Moderator,
    Member,
    Guest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::Member => "member",
            Role::Guest => "guest",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Role::Admin,
            "moderator" => Role::Moderator,
            "member" => Role::Member,
            "guest" => Role::Guest,
            _ => return None,
        })
    }
}

/// The authenticated caller of an RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub username: String,
    pub session_id: String,
    pub role: Role,
    /// Token expiry, seconds since the epoch.
    pub expires_at: i64,
    /// The bearer token, forwarded on calls made on the caller's behalf.
    pub token: Arc<str>,
}

/// The caller of a request that passed the auth layer.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Caller>().ok_or_else(|| Status::unauthenticated("missing access token"))
}

/// Checks access tokens against the auth service's published keys, fetched
/// over gRPC and cached; an unknown key id triggers a (rate-limited) refetch,
/// so key rotation needs no restart.
pub struct TokenVerifier {
    issuer: String,
    keys: RwLock<HashMap<String, VerifyingKey>>,
    auth: AuthServiceClient<Channel>,
    last_fetch: Mutex<Option<Instant>>,
    /// Tokens already verified, until they expire. A client sends the same
    /// token with every call, and each call otherwise pays a signature check.
    verified: std::sync::Mutex<HashMap<Arc<str>, Caller>>,
}

/// Verified tokens remembered at most; beyond this the memory starts over.
const VERIFIED_CAPACITY: usize = 16_384;

impl TokenVerifier {
    pub fn new(issuer: String, auth: Channel) -> Self {
        Self {
            issuer,
            keys: RwLock::new(HashMap::new()),
            auth: AuthServiceClient::new(auth),
            last_fetch: Mutex::new(None),
            verified: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Adds a verifying key without fetching it from the auth service.
    pub async fn preload(&self, kid: &str, key: VerifyingKey) {
        self.keys.write().await.insert(kid.to_string(), key);
    }

    /// Verifies a bearer token and returns its caller.
    pub async fn verify(&self, token: &str) -> Result<Caller, Status> {
        let now = crate::ids::now_micros() / 1_000_000;
        if let Some(caller) = self.remembered(token, now) {
            return Ok(caller);
        }
        let kid = token::key_id(token).map_err(reject)?;
        // Bind first: a guard in the match scrutinee would be held across
        // `refetch`, which takes the write lock.
        let cached = self.keys.read().await.get(&kid).copied();
        let key = match cached {
            Some(key) => key,
            None => self.refetch(&kid).await?,
        };
        let claims = token::verify(token, &key, &self.issuer, now).map_err(reject)?;
        let caller = caller_from(claims, token)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(caller.token.clone(), caller.clone());
        }
        Ok(caller)
    }

    /// A token verified before that has not expired since.
    fn remembered(&self, token: &str, now: i64) -> Option<Caller> {
        let verified = self.verified.lock().ok()?;
        verified.get(token).filter(|caller| caller.expires_at > now).cloned()
    }

    async fn refetch(&self, kid: &str) -> Result<VerifyingKey, Status> {
        let mut last = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        let cached = self.keys.read().await.get(kid).copied();
        if let Some(key) = cached {
            return Ok(key);
        }
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return Err(reject(TokenError::UnknownKey(kid.into())));
        }
        let response = self
            .auth
            .clone()
            .get_jwks(GetJwksRequest {})
            .await
            .map_err(|s| Status::unavailable(format!("cannot fetch token keys: {}", s.message())))?;
        *last = Some(Instant::now());
        let fresh: HashMap<String, VerifyingKey> = response
            .into_inner()
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| token::decode_public_key(&k.x).map(|key| (k.kid, key)))
            .collect();
        let found = fresh.get(kid).copied();
        *self.keys.write().await = fresh;
        // Keys may have been withdrawn: verify every token again.
        if let Ok(mut verified) = self.verified.lock() {
            verified.clear();
        }
        found.ok_or_else(|| reject(TokenError::UnknownKey(kid.into())))
    }
}

fn caller_from(claims: Claims, token: &str) -> Result<Caller, Status> {
    let role = Role::parse(&claims.role).ok_or_else(|| Status::unauthenticated("token has an unknown role"))?;
    Ok(Caller {
        user_id: claims.sub,
        username: claims.usr,
        session_id: claims.sid,
        role,
        expires_at: claims.exp,
        token: Arc::from(token),
    })
}

fn reject(err: TokenError) -> Status {
    Status::unauthenticated(format!("invalid access token: {err}"))
}

/// Extracts the token from an `authorization: Bearer ...` value.
pub fn bearer(value: Option<&str>) -> Result<&str, Status> {
    let value = value.ok_or_else(|| Status::unauthenticated("missing access token (authorization: Bearer ...)"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(Status::unauthenticated("authorization must be \"Bearer <access token>\"")),
    }
}

/// The tower layer that authenticates every non-public RPC.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
}

impl AuthLayer {
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, verifier: self.verifier.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
}

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for Authenticate<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: HttpRequest) -> Self::Future {
        // Take the service that was polled ready and leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if PUBLIC_PATHS.contains(&path) || PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(inner.call(request));
        }
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let verified = match bearer(header) {
                Ok(token) => verifier.verify(token).await,
                Err(status) => Err(status),
            };
            match verified {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(token: &str, expires_at: i64) -> Caller {
        Caller {
            user_id: "u".into(),
            username: "u".into(),
            session_id: "s".into(),
            role: Role::Member,
            expires_at,
            token: Arc::from(token),
        }
    }

    #[tokio::test]
    async fn remembered_tokens_stop_counting_when_they_expire() {
        let verifier = TokenVerifier::new(
            "colink".into(),
            tonic::transport::Endpoint::from_static("http://[::1]:1").connect_lazy(),
        );
        let now = 1_000;
        if let Ok(mut verified) = verifier.verified.lock() {
            verified.insert(Arc::from("live"), caller("live", now + 60));
            verified.insert(Arc::from("stale"), caller("stale", now));
        }
        assert_eq!(verifier.remembered("live", now).map(|c| c.user_id), Some("u".to_string()));
        assert!(verifier.remembered("stale", now).is_none());
        assert!(verifier.remembered("unknown", now).is_none());
    }
}
