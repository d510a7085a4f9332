//! How services reach each other: one channel per peer service, with a
//! deadline on every call, the caller's token forwarded, and retries only
//! for idempotent calls.
//!
//! A service this node hosts is called in process, through the node's own
//! server stack (context, span, guard, authentication, then the service):
//! the call meets the same checks as one from another node, without the
//! HTTP/2 framing, the loopback socket and the tasks on either side of it.
//! A service listed under `peers` is called over the network.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::HeaderValue;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use colink_proto::users::v1::CheckBlockedRequest;
use colink_proto::users::v1::users_service_client::UsersServiceClient;

use crate::Error;
use crate::auth::Caller;
use crate::config::{Config, SERVICES};

/// How a node's calls to its peers introduce themselves. A node admits
/// such calls beside its limit for clients' calls (`stack::GuardLayer`): a
/// call it has admitted must not fail on its own nested calls.
pub const PEER_USER_AGENT: &str = "colink-peer";

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A node's whole server stack as one service, for calls made in process.
pub type LocalStack = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// Where the node's stack is found once it is built. Services get their
/// peer channels before the stack that serves them exists; until it is
/// set, and once the node that holds it is gone, calls to local services
/// go through the node's listener. The node holds the stack; this holds
/// it weakly, since the stack holds the services, which hold this.
#[derive(Clone, Default)]
pub struct LocalServer(Arc<OnceLock<Weak<LocalStack>>>);

impl LocalServer {
    /// Sets the stack; only the first call counts.
    pub fn set(&self, stack: &Arc<LocalStack>) {
        let _ = self.0.set(Arc::downgrade(stack));
    }

    fn get(&self) -> Option<Arc<LocalStack>> {
        self.0.get().and_then(Weak::upgrade)
    }
}

/// Channels to every service, local or remote.
#[derive(Clone)]
pub struct Peers {
    channels: HashMap<&'static str, PeerChannel>,
    local: LocalServer,
}

#[derive(Debug, thiserror::Error)]
#[error("peers.{service}: invalid address {address:?}: {reason}")]
pub struct PeerError {
    service: String,
    address: String,
    reason: String,
}

impl Peers {
    /// Builds channels from `peers` in the config; unlisted services are
    /// this node's own, called in process once [`Peers::local`] is set, and
    /// on the node's own listener until then.
    pub fn new(config: &Config, local: SocketAddr) -> Result<Self, PeerError> {
        let local_host =
            if local.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], local.port())) } else { local };
        let timeout = Duration::from_millis(config.call_timeout_ms);
        let server = LocalServer::default();
        let mut channels = HashMap::new();
        for service in SERVICES {
            let listed = config.peers.get(*service).cloned();
            let address = listed.clone().unwrap_or_else(|| format!("http://{local_host}"));
            let invalid = |reason: String| PeerError { service: service.to_string(), address: address.clone(), reason };
            let endpoint = Endpoint::from_shared(address.clone()).map_err(|e| invalid(e.to_string()))?;
            let remote = endpoint
                .user_agent(PEER_USER_AGENT)
                .map_err(|e| invalid(e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .connect_lazy();
            let local = listed.is_none().then(|| Local { server: server.clone(), from: local_host, timeout });
            channels.insert(*service, PeerChannel { remote, local, ready: None });
        }
        Ok(Self { channels, local: server })
    }

    /// The channel to a service by name (one of `SERVICES`).
    pub fn channel(&self, service: &str) -> PeerChannel {
        match self.channels.get(service) {
            Some(channel) => channel.clone(),
            // Names come from our own code; an unknown one is a bug, made
            // visible as a failing call rather than a panic.
            None => PeerChannel::remote(Endpoint::from_static("http://0.0.0.0:1").connect_lazy()),
        }
    }

    /// Where the node sets its stack, for the calls made in process.
    pub fn local(&self) -> &LocalServer {
        &self.local
    }
}

/// A channel to one peer service, for the generated clients: in process
/// when the service is this node's own, over the network otherwise.
pub struct PeerChannel {
    remote: Channel,
    local: Option<Local>,
    /// The way `poll_ready` found ready, which `call` takes.
    ready: Option<Route>,
}

impl PeerChannel {
    /// A channel that always goes over the network.
    pub fn remote(channel: Channel) -> Self {
        Self { remote: channel, local: None, ready: None }
    }
}

impl Clone for PeerChannel {
    /// A clone is not ready: readiness belongs to the channel it was found on.
    fn clone(&self) -> Self {
        Self { remote: self.remote.clone(), local: self.local.clone(), ready: None }
    }
}

enum Route {
    Local(Arc<LocalStack>),
    Remote,
}

#[derive(Clone)]
struct Local {
    server: LocalServer,
    /// The address a call over the node's listener would come from.
    from: SocketAddr,
    timeout: Duration,
}

impl Local {
    /// Made as the node's listener would take it: from the node's own
    /// address, introduced as a peer, and given up after the call timeout
    /// as the remote channel gives it up.
    fn call(&self, stack: &LocalStack, mut request: http::Request<Body>) -> Pending {
        request.headers_mut().insert(http::header::USER_AGENT, HeaderValue::from_static(PEER_USER_AGENT));
        request.extensions_mut().insert(TcpConnectInfo { local_addr: Some(self.from), remote_addr: Some(self.from) });
        let (timeout, call) = (self.timeout, stack.clone().oneshot(request));
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(answer) => answer,
                Err(_) => Err(Box::new(tonic::TimeoutExpired(())) as BoxError),
            }
        })
    }
}

type Pending = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

impl Service<http::Request<Body>> for PeerChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pending;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Some(stack) = self.local.as_ref().and_then(|local| local.server.get()) {
            self.ready = Some(Route::Local(stack));
            return Poll::Ready(Ok(()));
        }
        let ready = self.remote.poll_ready(cx).map_err(BoxError::from);
        if let Poll::Ready(Ok(())) = ready {
            self.ready = Some(Route::Remote);
        }
        ready
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match (self.ready.take(), &self.local) {
            (Some(Route::Local(stack)), Some(local)) => local.call(&stack, request),
            _ => {
                let call = self.remote.call(request);
                Box::pin(async move { call.await.map_err(BoxError::from) })
            }
        }
    }
}

/// A request made on behalf of a caller: carries their token.
pub fn on_behalf_of<T>(caller: &Caller, message: T) -> tonic::Request<T> {
    with_token(&caller.token, message)
}

/// A request carrying a bearer token, and the id and client address of the
/// request being handled, if any.
pub fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    crate::request_context::forward(&mut request);
    request
}

/// Retries an idempotent call while the peer is unavailable: three attempts,
/// with jittered exponential backoff.
pub async fn retry_idempotent<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut delay = Duration::from_millis(25);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable && attempt < 3 => {
                let jitter = Duration::from_micros(u64::from(crate::ids::now_micros().unsigned_abs() as u32 % 25_000));
                tokio::time::sleep(delay + jitter).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// An idempotent call made on a caller's behalf, retried while the peer is
/// unavailable: `call` gets a fresh clone of the client and the request.
pub async fn call_on_behalf<C, T, R, F, Fut>(client: &C, caller: &Caller, message: T, call: F) -> Result<R, Status>
where
    C: Clone,
    T: Clone,
    F: Fn(C, tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    retry_idempotent(|| call(client.clone(), on_behalf_of(caller, message.clone())))
        .await
        .map(tonic::Response::into_inner)
}

/// PERMISSION_DENIED when either the caller or `other` blocks the other:
/// then neither may open or write in a direct message between them.
pub async fn deny_if_blocked(
    users: &UsersServiceClient<PeerChannel>,
    caller: &Caller,
    other: &str,
) -> Result<(), Error> {
    let request =
        CheckBlockedRequest { user_id: caller.user_id.clone(), other_user_id: other.to_string(), ..Default::default() };
    let blocked =
        call_on_behalf(users, caller, request, |mut c, r| async move { c.check_blocked(r).await }).await?.blocked;
    if blocked {
        return Err(Error::denied("you cannot message this user"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use colink_proto::users::v1::GetUserRequest;

    /// A stack that answers every call NOT_FOUND, saying who called from
    /// where; or, when `hang`, never answers.
    fn stack(hang: bool) -> Arc<LocalStack> {
        Arc::new(BoxCloneSyncService::new(tower::service_fn(move |request: http::Request<Body>| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            let agent = request.headers().get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let from = request.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr);
            Ok::<_, BoxError>(Status::not_found(format!("{agent} from {from:?}")).into_http())
        })))
    }

    fn peers(call_timeout_ms: u64) -> Peers {
        // Nothing listens on the discard port: a call over the network fails.
        let config = Config { call_timeout_ms, ..Config::default() };
        Peers::new(&config, SocketAddr::from(([0, 0, 0, 0], 9))).unwrap()
    }

    #[tokio::test]
    async fn a_hosted_service_is_called_in_process_while_the_node_holds_its_stack() {
        let peers = peers(5_000);
        let mut users = UsersServiceClient::new(peers.channel("users"));
        let call = |mut users: UsersServiceClient<PeerChannel>| async move {
            users.get_user(GetUserRequest::default()).await.unwrap_err()
        };
        let before = call(users.clone()).await;
        assert_eq!(before.code(), Code::Unavailable, "no stack yet: over the listener, {before:?}");

        let node = stack(false);
        peers.local().set(&node);
        let answer = call(users.clone()).await;
        assert_eq!(answer.code(), Code::NotFound, "{answer:?}");
        assert_eq!(answer.message(), "colink-peer from Some(127.0.0.1:9)", "as a peer, from the node's address");
        // A client whose channel was readied keeps working call after call.
        assert_eq!(users.get_user(GetUserRequest::default()).await.unwrap_err().code(), Code::NotFound);

        drop(node);
        let after = call(users).await;
        assert_eq!(after.code(), Code::Unavailable, "the node is gone: over the listener again, {after:?}");
    }

    #[tokio::test]
    async fn an_in_process_call_is_given_up_after_the_call_timeout() {
        let peers = peers(50);
        let node = stack(true);
        peers.local().set(&node);
        let mut users = UsersServiceClient::new(peers.channel("users"));
        let status = users.get_user(GetUserRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Cancelled, "as the network channel's timeout: {status:?}");
    }

    #[tokio::test]
    async fn a_service_listed_under_peers_is_always_called_over_the_network() {
        let mut config = Config::default();
        config.peers.insert("users".into(), "http://127.0.0.1:9".into());
        let peers = Peers::new(&config, SocketAddr::from(([0, 0, 0, 0], 9))).unwrap();
        let node = stack(false);
        peers.local().set(&node);
        let mut users = UsersServiceClient::new(peers.channel("users"));
        let status = users.get_user(GetUserRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
}
