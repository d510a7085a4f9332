//! Where a request came from: its id (the client's or proxy's
//! `x-request-id`, or a new one) and the client's address. The auth layer
//! sets both for the handler's task; domain events and the audit log record
//! them, and calls made on the caller's behalf carry them on to the next
//! service, so a change made two hops away still names the request and
//! address that caused it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tonic::transport::server::TcpConnectInfo;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";
/// The longest request id taken from a client; a longer one is replaced.
const MAX_REQUEST_ID: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub client_ip: Arc<str>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

impl RequestContext {
    /// The context of an incoming HTTP request. `X-Forwarded-For` is
    /// believed from a trusted proxy (`trust_forwarded_for`) and from this
    /// host (another service of the node, or a proxy beside it); otherwise
    /// the client's address is the peer's.
    pub fn of<B>(request: &http::Request<B>, trust_forwarded_for: bool) -> Self {
        let headers = request.headers();
        let request_id = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| Arc::from(crate::ids::new_id()), Arc::from);
        let peer: Option<SocketAddr> = request.extensions().get::<TcpConnectInfo>().and_then(|info| info.remote_addr());
        let trusted = trust_forwarded_for || peer.is_some_and(|p| p.ip().is_loopback());
        let forwarded = headers
            .get(FORWARDED_FOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|list| list.rsplit(',').next())
            .map(str::trim)
            .and_then(|last| last.parse::<IpAddr>().ok())
            .filter(|_| trusted);
        let client_ip = match (forwarded, peer) {
            (Some(ip), _) => Arc::from(ip.to_string()),
            (None, Some(peer)) => Arc::from(peer.ip().to_string()),
            (None, None) => Arc::from(""),
        };
        Self { request_id, client_ip }
    }

    /// Runs `future` with this context as the current one.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// The context of the request being handled, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

/// Adds the current request's id, client address and trace context to an
/// outgoing call.
pub fn forward<T>(request: &mut tonic::Request<T>) {
    crate::telemetry::inject(request.metadata_mut());
    let Some(context) = RequestContext::current() else { return };
    let metadata = request.metadata_mut();
    if let Ok(value) = context.request_id.parse() {
        metadata.insert(REQUEST_ID_HEADER, value);
    }
    if !context.client_ip.is_empty()
        && let Ok(value) = context.client_ip.parse()
    {
        metadata.insert(FORWARDED_FOR_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], peer: &str) -> http::Request<()> {
        let mut builder = http::Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(TcpConnectInfo { local_addr: None, remote_addr: Some(peer) });
        request
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_hops() {
        let forwarded = [("x-forwarded-for", "198.51.100.7, 203.0.113.9")];
        assert_eq!(&*RequestContext::of(&request(&forwarded, "192.0.2.1:5000"), false).client_ip, "192.0.2.1");
        assert_eq!(&*RequestContext::of(&request(&forwarded, "192.0.2.1:5000"), true).client_ip, "203.0.113.9");
        assert_eq!(&*RequestContext::of(&request(&forwarded, "127.0.0.1:5000"), false).client_ip, "203.0.113.9");
        let garbage = [("x-forwarded-for", "not an address")];
        assert_eq!(&*RequestContext::of(&request(&garbage, "127.0.0.1:5000"), true).client_ip, "127.0.0.1");
    }

    #[test]
    fn a_usable_request_id_is_kept_and_any_other_replaced() {
        let kept = RequestContext::of(&request(&[("x-request-id", "abc-123")], "127.0.0.1:1"), false);
        assert_eq!(&*kept.request_id, "abc-123");
        let long = "x".repeat(65);
        for bad in ["", long.as_str(), "has space"] {
            let replaced = RequestContext::of(&request(&[("x-request-id", bad)], "127.0.0.1:1"), false);
            assert_ne!(&*replaced.request_id, bad);
            assert_eq!(replaced.request_id.len(), 36, "a new UUID");
        }
    }
}
