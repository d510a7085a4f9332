//! Who is calling: one tower layer checks the bearer token of every request
//! (except the few public RPCs) and puts a `Caller` into the request's
//! extensions; handlers read it with `caller(&request)`.
//!
//! A token is checked twice the first time a node sees it: its signature
//! here, and its session with the auth service (`CheckSession`), so that a
//! signed-out, revoked or deactivated session stops working at once. The
//! answer is remembered until the token expires, or until the auth service
//! announces on pub/sub that the session ended: then every node forgets it
//! and tells the session's open streams.
//!
//! Two kinds of token are accepted: Colink's own, and, with single sign-on,
//! the OpenID provider's access tokens. A provider token is checked here
//! against the provider's keys; `CheckSession` then names the account it
//! belongs to (making it on first sight) and refuses a barred one.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::clients::PeerChannel;
use bytes::Bytes;
use colink_proto::auth::v1::auth_service_client::AuthServiceClient;
use colink_proto::auth::v1::{CheckSessionRequest, CheckSessionResponse, GetJwksRequest};
use futures_util::future::BoxFuture;
use jsonwebtoken::DecodingKey;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, RwLock, broadcast, watch};
use tonic::{Code, Status};

use crate::clients::retry_idempotent;
use crate::limits::RequestLimits;
use crate::metrics::{Metrics, Refusal};
use crate::oidc::OpenIdProvider;
use crate::pubsub::{Frame, PubSub, SESSIONS_ENDED_TOPIC};
use crate::request_context::RequestContext;
use crate::token::{self, Claims, TokenError};

/// RPCs that need no token: signing up and in (passwords, single sign-on,
/// passkeys), key discovery, health and reflection.
const PUBLIC_PATHS: &[&str] = &[
    "/colink.auth.v1.AuthService/Register",
    "/colink.auth.v1.AuthService/Login",
    "/colink.auth.v1.AuthService/VerifySecondFactor",
    "/colink.auth.v1.AuthService/Refresh",
    "/colink.auth.v1.AuthService/GetJwks",
    "/colink.auth.v1.AuthService/CheckSession",
    "/colink.auth.v1.AuthService/RequestPasswordReset",
    "/colink.auth.v1.AuthService/ResetPassword",
    "/colink.auth.v1.AuthService/GetSignInOptions",
    "/colink.auth.v1.AuthService/BeginSingleSignOn",
    "/colink.auth.v1.AuthService/FinishSingleSignOn",
    "/colink.auth.v1.AuthService/BeginPasskeySignIn",
    "/colink.auth.v1.AuthService/FinishPasskeySignIn",
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
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// The OpenID provider whose access tokens are accepted too.
    provider: Option<Arc<OpenIdProvider>>,
    auth: AuthServiceClient<PeerChannel>,
    last_fetch: Mutex<Option<Instant>>,
    /// What the node knows of tokens and sessions; one lock, so that an
    /// answer to `CheckSession` cannot be remembered after the announcement
    /// that its session ended.
    known: std::sync::Mutex<Known>,
    /// Sessions announced as ended, for the streams they hold open.
    ended: broadcast::Sender<Arc<str>>,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Default)]
struct Known {
    /// Tokens already checked, until they expire: a client sends the same
    /// token with every call, and each call would otherwise pay a signature
    /// check and a round trip to the auth service.
    tokens: HashMap<Arc<str>, Verdict>,
    /// Sessions announced as ended, and until when (seconds) that is kept:
    /// long enough to outlast any `CheckSession` answer still on its way.
    ended: HashMap<Arc<str>, i64>,
}

#[derive(Clone)]
enum Verdict {
    Live(Caller),
    /// The session ended; kept so that a client retrying with the token
    /// does not send each retry on to the auth service.
    Ended {
        expires_at: i64,
    },
}

/// Checked tokens remembered at most; beyond this the memory starts over.
const VERIFIED_CAPACITY: usize = 16_384;
/// How long an announcement that a session ended is kept (seconds).
const ENDED_KEPT_SECS: i64 = 600;
/// The same for the sessions of provider tokens, which come back when an
/// account is reactivated: long enough for any answer on its way.
const PROVIDER_ENDED_KEPT_SECS: i64 = 30;
/// Ended-session announcements that open streams may lag behind.
const ENDED_BACKLOG: usize = 1024;
const SESSION_ENDED: &str = "the session has ended (signed out, revoked, or the account was deactivated)";

impl TokenVerifier {
    pub fn new(issuer: String, auth: PeerChannel) -> Self {
        Self {
            issuer,
            keys: RwLock::new(HashMap::new()),
            provider: None,
            auth: AuthServiceClient::new(auth),
            last_fetch: Mutex::new(None),
            known: std::sync::Mutex::new(Known::default()),
            ended: broadcast::channel(ENDED_BACKLOG).0,
            metrics: None,
        }
    }

    /// Counts how often a token's verdict was remembered.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Accepts the access tokens of an OpenID provider as well.
    pub fn with_provider(mut self, provider: Arc<OpenIdProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Follows the auth service's announcements of ended sessions until
    /// `shutdown`. After a gap in pub/sub (a lost broker connection, a
    /// receiver that fell behind) every remembered token is checked again.
    pub async fn listen(self: Arc<Self>, pubsub: Arc<dyn PubSub>, mut shutdown: watch::Receiver<bool>) {
        let mut announcements = pubsub.subscribe(SESSIONS_ENDED_TOPIC).await;
        loop {
            let received = tokio::select! {
                received = announcements.recv() => received,
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            match received {
                Ok(bytes) => match Frame::decode(bytes) {
                    Some(Frame::Event(body)) => self.sessions_ended(&body),
                    Some(Frame::Resync) => self.forget_live(),
                    _ => {}
                },
                Err(RecvError::Lagged(_)) => self.forget_live(),
                Err(RecvError::Closed) => break,
            }
        }
        drop(announcements);
        pubsub.release(SESSIONS_ENDED_TOPIC);
    }

    /// Announcements of ended sessions, by session id, for open streams.
    /// A receiver that lags must check its token again.
    pub fn ended_sessions(&self) -> broadcast::Receiver<Arc<str>> {
        self.ended.subscribe()
    }

    /// Applies an announcement: session ids, one per line.
    fn sessions_ended(&self, body: &Bytes) {
        let now = crate::ids::now_micros() / 1_000_000;
        let ids: Vec<Arc<str>> =
            String::from_utf8_lossy(body).lines().filter(|l| !l.is_empty()).map(Arc::from).collect();
        if let Ok(mut known) = self.known.lock() {
            known.ended.retain(|_, until| *until > now);
            for id in &ids {
                let kept = if is_provider_session(id) { PROVIDER_ENDED_KEPT_SECS } else { ENDED_KEPT_SECS };
                known.ended.insert(id.clone(), now + kept);
            }
            known.tokens.retain(|_, verdict| match verdict {
                Verdict::Live(caller) => !ids.iter().any(|id| **id == *caller.session_id),
                Verdict::Ended { .. } => true,
            });
        }
        for id in ids {
            let _ = self.ended.send(id);
        }
    }

    /// Forgets which tokens were live, so that each is checked again.
    fn forget_live(&self) {
        if let Ok(mut known) = self.known.lock() {
            known.tokens.retain(|_, verdict| matches!(verdict, Verdict::Ended { .. }));
        }
    }

    /// Adds a verifying key without fetching it from the auth service.
    pub async fn preload(&self, kid: &str, key: DecodingKey) {
        self.keys.write().await.insert(kid.to_string(), key);
    }

    /// Verifies a bearer token and its session, and returns its caller.
    pub async fn verify(&self, token: &str) -> Result<Caller, Status> {
        let now = crate::ids::now_micros() / 1_000_000;
        let remembered = self.remembered(token, now);
        if let Some(metrics) = &self.metrics {
            metrics.token_cache_lookup(remembered.is_some());
        }
        match remembered {
            Some(Verdict::Live(caller)) => return Ok(caller),
            Some(Verdict::Ended { .. }) => return Err(Status::unauthenticated(SESSION_ENDED)),
            None => {}
        }
        let checked = match &self.provider {
            Some(provider) if token::peek(token).is_ok_and(|seen| seen.iss == provider.issuer()) => {
                let expires_at = check_provider_token(provider, token).await?;
                // Whose it is, the auth service says.
                self.ask_session(token)
                    .await?
                    .map(|answer| provider_caller(answer, token, expires_at))
                    .ok_or(expires_at)
            }
            _ => {
                let caller = self.check_own_token(token).await?;
                let live =
                    self.announced_ended(&caller.session_id, now).is_none() && self.ask_session(token).await?.is_some();
                if live { Ok(caller) } else { Err(caller.expires_at) }
            }
        };
        let verdict = match checked {
            Ok(caller) => self.remember(caller.token.clone(), &caller.session_id.clone(), Verdict::Live(caller), now),
            Err(expires_at) => self.remember(Arc::from(token), "", Verdict::Ended { expires_at }, now),
        };
        match verdict {
            Verdict::Live(caller) => Ok(caller),
            Verdict::Ended { .. } => Err(Status::unauthenticated(SESSION_ENDED)),
        }
    }

    /// A Colink token: signature, issuer and expiry.
    async fn check_own_token(&self, token: &str) -> Result<Caller, Status> {
        let kid = token::key_id(token).map_err(reject)?;
        // Bind first: a guard in the match scrutinee would be held across
        // `refetch`, which takes the write lock.
        let cached = self.keys.read().await.get(&kid).cloned();
        let key = match cached {
            Some(key) => key,
            None => self.refetch(&kid).await?,
        };
        let claims = token::verify(token, &key, &self.issuer).map_err(reject)?;
        caller_from(claims, token)
    }

    /// A token checked before that has not expired since.
    fn remembered(&self, token: &str, now: i64) -> Option<Verdict> {
        let known = self.known.lock().ok()?;
        known.tokens.get(token).filter(|verdict| verdict.expires_at() > now).cloned()
    }

    fn announced_ended(&self, session_id: &str, now: i64) -> Option<i64> {
        let known = self.known.lock().ok()?;
        known.ended.get(session_id).copied().filter(|until| *until > now)
    }

    /// Remembers a verdict, unless the session was announced as ended while
    /// it was being reached: then that is what is remembered and returned.
    fn remember(&self, token: Arc<str>, session_id: &str, verdict: Verdict, now: i64) -> Verdict {
        let Ok(mut known) = self.known.lock() else { return verdict };
        let verdict = match verdict {
            Verdict::Live(caller) if known.ended.get(session_id).is_some_and(|until| *until > now) => {
                Verdict::Ended { expires_at: caller.expires_at }
            }
            other => other,
        };
        if known.tokens.len() >= VERIFIED_CAPACITY {
            known.tokens.clear();
        }
        known.tokens.insert(token, verdict.clone());
        verdict
    }

    /// Asks the auth service whether the token's session is live: its
    /// answer when it is, `None` when it ended. Fails closed: a node that
    /// cannot ask refuses the token (UNAVAILABLE).
    async fn ask_session(&self, token: &str) -> Result<Option<CheckSessionResponse>, Status> {
        let asked = retry_idempotent(|| {
            let mut auth = self.auth.clone();
            let request = CheckSessionRequest { access_token: token.to_string() };
            async move { auth.check_session(request).await }
        })
        .await;
        match asked {
            Ok(answer) => Ok(Some(answer.into_inner())),
            Err(status) if status.code() == Code::Unauthenticated => Ok(None),
            Err(status) => Err(Status::unavailable(format!("cannot check the session: {}", status.message()))),
        }
    }

    async fn refetch(&self, kid: &str) -> Result<DecodingKey, Status> {
        let mut last = self.last_fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        let cached = self.keys.read().await.get(kid).cloned();
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
        let fresh: HashMap<String, DecodingKey> = response
            .into_inner()
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| token::decode_public_key(&k.x).map(|key| (k.kid, token::decoding_key(&key))))
            .collect();
        let found = fresh.get(kid).cloned();
        *self.keys.write().await = fresh;
        // Keys may have been withdrawn: verify every token again.
        if let Ok(mut known) = self.known.lock() {
            known.tokens.clear();
        }
        found.ok_or_else(|| reject(TokenError::UnknownKey(kid.into())))
    }
}

impl Verdict {
    fn expires_at(&self) -> i64 {
        match self {
            Verdict::Live(caller) => caller.expires_at,
            Verdict::Ended { expires_at } => *expires_at,
        }
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

/// A provider token's signature, issuer, audience, `exp` and `nbf`; its
/// expiry.
async fn check_provider_token(provider: &OpenIdProvider, token: &str) -> Result<i64, Status> {
    #[derive(serde::Deserialize)]
    struct Expiry {
        exp: i64,
    }
    match provider.verify::<Expiry>(token, provider.config().audience()).await {
        Ok(Expiry { exp }) => Ok(exp),
        Err(crate::oidc::OidcError::Token(e)) => Err(reject(e)),
        Err(other) => Err(Status::unavailable(other.to_string())),
    }
}

/// The caller of a provider token, as the auth service names it.
fn provider_caller(answer: CheckSessionResponse, token: &str, expires_at: i64) -> Caller {
    Caller {
        user_id: answer.user_id,
        username: answer.username,
        session_id: answer.session_id,
        role: Role::parse(&answer.role).unwrap_or(Role::Guest),
        expires_at,
        token: Arc::from(token),
    }
}

/// The session every provider token of an account belongs to: the auth
/// service announces it as ended when the account is deactivated or
/// suspended.
pub fn provider_session_id(user_id: &str) -> String {
    format!("{PROVIDER_SESSION_PREFIX}{user_id}")
}

const PROVIDER_SESSION_PREFIX: &str = "idp:";

fn is_provider_session(session_id: &str) -> bool {
    session_id.starts_with(PROVIDER_SESSION_PREFIX)
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

/// The tower layer that authenticates every non-public RPC and holds each
/// call to its budget (see `limits`). It runs inside the request context
/// (`stack::ContextLayer`), whose client address the budgets count by.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    limits: Arc<RequestLimits>,
    metrics: Arc<Metrics>,
}

impl AuthLayer {
    pub fn new(verifier: Arc<TokenVerifier>, limits: Arc<RequestLimits>, metrics: Arc<Metrics>) -> Self {
        Self { verifier, limits, metrics }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthLayer,
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
        let client_ip = request.extensions().get::<RequestContext>().map(|c| c.client_ip.clone()).unwrap_or_default();
        let path = request.uri().path().to_string();
        let layer = self.layer.clone();
        Box::pin(async move {
            if PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p)) {
                return inner.call(request).await;
            }
            let checked = if PUBLIC_PATHS.contains(&path.as_str()) {
                layer
                    .limits
                    .anonymous(&path, &client_ip)
                    .await
                    .inspect_err(|_| layer.metrics.refused(Refusal::Anonymous))
            } else {
                let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                let verified = match bearer(header) {
                    Ok(token) => layer.verifier.verify(token).await,
                    Err(status) => Err(status),
                };
                match verified {
                    Ok(caller) => {
                        let spent = layer.limits.signed_in(&path, &caller.user_id).await;
                        if spent.is_err() {
                            layer.metrics.refused(Refusal::SignedIn);
                        }
                        request.extensions_mut().insert(caller);
                        spent
                    }
                    // A refused token counts as a call without one.
                    Err(refused) => match layer.limits.anonymous(&path, &client_ip).await {
                        Ok(()) => Err(refused),
                        Err(over) => {
                            layer.metrics.refused(Refusal::Anonymous);
                            Err(over)
                        }
                    },
                }
            };
            match checked {
                Ok(()) => inner.call(request).await,
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

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(
            "colink".into(),
            PeerChannel::remote(tonic::transport::Endpoint::from_static("http://[::1]:1").connect_lazy()),
        )
    }

    fn live_user(verdict: Option<Verdict>) -> Option<String> {
        match verdict {
            Some(Verdict::Live(caller)) => Some(caller.user_id),
            _ => None,
        }
    }

    #[tokio::test]
    async fn remembered_tokens_stop_counting_when_they_expire() {
        let verifier = verifier();
        let now = 1_000;
        for (token, expires_at) in [("live", now + 60), ("stale", now)] {
            verifier.remember(Arc::from(token), "s", Verdict::Live(caller(token, expires_at)), now);
        }
        assert_eq!(live_user(verifier.remembered("live", now)), Some("u".to_string()));
        assert!(verifier.remembered("stale", now).is_none());
        assert!(verifier.remembered("unknown", now).is_none());
    }

    #[tokio::test]
    async fn an_ended_session_is_forgotten_and_never_remembered_again() {
        let verifier = verifier();
        let now = crate::ids::now_micros() / 1_000_000;
        let mut streams = verifier.ended_sessions();
        verifier.remember(Arc::from("t1"), "s", Verdict::Live(caller("t1", now + 60)), now);
        verifier.sessions_ended(&Bytes::from_static(b"other\ns"));
        assert!(verifier.remembered("t1", now).is_none(), "forgotten");
        assert_eq!(streams.recv().await.unwrap().as_ref(), "other");
        assert_eq!(streams.recv().await.unwrap().as_ref(), "s", "streams are told");
        // An answer that left the auth service before the session ended
        // arrives late: the announcement wins.
        let late = verifier.remember(Arc::from("t2"), "s", Verdict::Live(caller("t2", now + 60)), now);
        assert!(matches!(late, Verdict::Ended { .. }));
        assert!(matches!(verifier.remembered("t2", now), Some(Verdict::Ended { .. })));
    }
}
