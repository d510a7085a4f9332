//! How services reach each other: one lazily connected channel per peer
//! service, with a deadline on every call, the caller's token forwarded, and
//! retries only for idempotent calls.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use colink_proto::users::v1::CheckBlockedRequest;
use colink_proto::users::v1::users_service_client::UsersServiceClient;

use crate::Error;
use crate::auth::Caller;
use crate::config::{Config, SERVICES};

/// How a node's calls to its peers introduce themselves. A node admits
/// such calls beside its limit for clients' calls (`stack::GuardLayer`): a
/// call it has admitted must not fail on its own nested calls.
pub const PEER_USER_AGENT: &str = "colink-peer";

/// Channels to every service, local or remote.
#[derive(Clone)]
pub struct Peers {
    channels: HashMap<&'static str, Channel>,
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
    /// reached on this node's own listener.
    pub fn new(config: &Config, local: SocketAddr) -> Result<Self, PeerError> {
        let local_host =
            if local.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], local.port())) } else { local };
        let timeout = Duration::from_millis(config.call_timeout_ms);
        let mut channels = HashMap::new();
        for service in SERVICES {
            let address = config.peers.get(*service).cloned().unwrap_or_else(|| format!("http://{local_host}"));
            let endpoint = Endpoint::from_shared(address.clone()).map_err(|e| PeerError {
                service: service.to_string(),
                address: address.clone(),
                reason: e.to_string(),
            })?;
            let channel = endpoint
                .user_agent(PEER_USER_AGENT)
                .map_err(|e| PeerError {
                    service: service.to_string(),
                    address: address.clone(),
                    reason: e.to_string(),
                })?
                .connect_timeout(Duration::from_secs(2))
                .timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .connect_lazy();
            channels.insert(*service, channel);
        }
        Ok(Self { channels })
    }

    /// The channel to a service by name (one of `SERVICES`).
    pub fn channel(&self, service: &str) -> Channel {
        match self.channels.get(service) {
            Some(channel) => channel.clone(),
            // Names come from our own code; an unknown one is a bug, made
            // visible as a failing call rather than a panic.
            None => Endpoint::from_static("http://0.0.0.0:1").connect_lazy(),
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
pub async fn deny_if_blocked(users: &UsersServiceClient<Channel>, caller: &Caller, other: &str) -> Result<(), Error> {
    let request =
        CheckBlockedRequest { user_id: caller.user_id.clone(), other_user_id: other.to_string(), ..Default::default() };
    let blocked =
        call_on_behalf(users, caller, request, |mut c, r| async move { c.check_blocked(r).await }).await?.blocked;
    if blocked {
        return Err(Error::denied("you cannot message this user"));
    }
    Ok(())
}
