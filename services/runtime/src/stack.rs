//! The server stack in front of every node's services, outermost first:
//!
//! 1. the request context ([`ContextLayer`]): the request id (the client's
//!    or proxy's `x-request-id`, or a new one, echoed in the answer) and the
//!    client's address, for the handler's task;
//! 2. a span per call (`tower-http`'s trace layer, gRPC-aware): method,
//!    peer and request id, in the caller's trace, closed with the status
//!    code and latency;
//! 3. CORS, for gRPC-Web called straight from a browser page on another
//!    origin (`server.cors_origins`);
//! 4. the node's own web pages, and gRPC-Web (set up by the node);
//! 5. the guard ([`GuardLayer`]): RED metrics per method, a limit on calls
//!    in flight that answers UNAVAILABLE at once beyond it (load shedding),
//!    and a deadline on each call;
//! 6. authentication (`auth::AuthLayer`), then the services.

use std::convert::Infallible;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Semaphore;
use tonic::{Code, Status};
use tower_http::classify::{GrpcErrorsAsFailures, GrpcFailureClass, SharedClassifier};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::clients::PEER_USER_AGENT;
use crate::metrics::{Metrics, Refusal, RpcTimer};
use crate::request_context::{REQUEST_ID_HEADER, RequestContext};

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

/// Paths the guard never sheds: a probe must get its answer from a busy
/// node, or the orchestrator would restart a node that is merely busy.
const NEVER_SHED: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

// ---------------------------------------------------------------------------
// CORS

/// CORS for gRPC and gRPC-Web from the listed origins (`*` for any); none
/// listed, no CORS headers at all, and browsers keep to same-origin calls.
pub fn cors(origins: &[String]) -> CorsLayer {
    let expose = ["grpc-status", "grpc-message", "grpc-status-details-bin", REQUEST_ID_HEADER];
    let allow = [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "idempotency-key",
        REQUEST_ID_HEADER,
        "traceparent",
        "tracestate",
    ];
    let origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
        .allow_headers(allow.map(HeaderName::from_static))
        .expose_headers(expose.map(HeaderName::from_static))
        .max_age(Duration::from_secs(24 * 3600))
}

// ---------------------------------------------------------------------------
// Request context

/// Puts each request's [`RequestContext`] into its extensions and runs the
/// call in it; the answer carries the request id.
#[derive(Clone)]
pub struct ContextLayer {
    trust_forwarded_for: bool,
}

impl ContextLayer {
    pub fn new(trust_forwarded_for: bool) -> Self {
        Self { trust_forwarded_for }
    }
}

impl<S> tower::Layer<S> for ContextLayer {
    type Service = WithContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithContext { inner, trust_forwarded_for: self.trust_forwarded_for }
    }
}

#[derive(Clone)]
pub struct WithContext<S> {
    inner: S,
    trust_forwarded_for: bool,
}

impl<S, B, R> tower::Service<http::Request<B>> for WithContext<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let context = RequestContext::of(&request, self.trust_forwarded_for);
        let request_id = HeaderValue::from_str(&context.request_id).ok();
        request.extensions_mut().insert(context.clone());
        Box::pin(async move {
            let mut response = context.scope(inner.call(request)).await?;
            if let Some(id) = request_id {
                response.headers_mut().insert(REQUEST_ID_HEADER, id);
            }
            Ok(response)
        })
    }
}

// ---------------------------------------------------------------------------
// A span per call

type MakeSpan = fn(&http::Request<tonic::body::Body>) -> Span;
type OnResponse = fn(&http::Response<tonic::body::Body>, Duration, &Span);
type OnEos = fn(Option<&HeaderMap>, Duration, &Span);
type OnFailure = fn(GrpcFailureClass, Duration, &Span);

/// The trace layer: one span per call, named `rpc`, with the method, the
/// client's address and the request id; the status code and latency are
/// logged when the call ends (server-side failures as warnings, the rest at
/// debug level).
pub type RpcTraceLayer =
    TraceLayer<SharedClassifier<GrpcErrorsAsFailures>, MakeSpan, (), OnResponse, (), OnEos, OnFailure>;

pub fn trace() -> RpcTraceLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(rpc_span as MakeSpan)
        .on_request(())
        .on_response(on_response as OnResponse)
        .on_body_chunk(())
        .on_eos(on_eos as OnEos)
        .on_failure(on_failure as OnFailure)
}

fn rpc_span(request: &http::Request<tonic::body::Body>) -> Span {
    let context = request.extensions().get::<RequestContext>();
    let span = tracing::info_span!(
        "rpc",
        rpc = %request.uri().path(),
        peer = context.map_or("", |c| &*c.client_ip),
        request_id = context.map_or("", |c| &*c.request_id),
        grpc.code = tracing::field::Empty,
        otel.kind = "server",
    );
    crate::telemetry::continue_trace(&span, request.headers());
    span
}

fn on_response(response: &http::Response<tonic::body::Body>, latency: Duration, _span: &Span) {
    // A trailers-only answer carries its status here; on_failure or on_eos
    // report the others.
    if response.headers().get("grpc-status").is_some_and(|s| s == "0") {
        tracing::debug!(grpc.code = "OK", latency_ms = latency.as_secs_f64() * 1e3, "rpc finished");
    }
}

fn on_eos(trailers: Option<&HeaderMap>, duration: Duration, span: &Span) {
    let code = trailers.map_or(Code::Ok, status_code);
    if code == Code::Ok {
        span.record("grpc.code", "OK");
        tracing::debug!(grpc.code = "OK", latency_ms = duration.as_secs_f64() * 1e3, "rpc finished");
    }
}

fn on_failure(failure: GrpcFailureClass, latency: Duration, span: &Span) {
    let latency_ms = latency.as_secs_f64() * 1e3;
    match failure {
        GrpcFailureClass::Status(status) => {
            let code = Code::from_i32(status.code_raw());
            let name = crate::metrics::code_name(code);
            span.record("grpc.code", name);
            let message = status.message().unwrap_or_default();
            if is_server_fault(code) {
                tracing::warn!(grpc.code = name, latency_ms, message, "rpc failed");
            } else {
                tracing::debug!(grpc.code = name, latency_ms, message, "rpc refused");
            }
        }
        GrpcFailureClass::Error(error) => tracing::warn!(latency_ms, error, "rpc failed"),
        _ => {}
    }
}

/// Codes that say the node, not the caller, is at fault.
fn is_server_fault(code: Code) -> bool {
    matches!(code, Code::Unknown | Code::Internal | Code::DataLoss | Code::Unavailable | Code::DeadlineExceeded)
}

// ---------------------------------------------------------------------------
// The guard: metrics, load shedding, deadlines

/// Peers' calls in flight at least, whatever the clients' limit: room for
/// the nested calls of the clients' calls admitted.
const MIN_PEER_PERMITS: usize = 256;

/// What the guard holds each call to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Calls handled at once; beyond, a call is answered UNAVAILABLE.
    pub max_in_flight: usize,
    /// The longest a handler may take to answer; a shorter `grpc-timeout`
    /// from the client wins.
    pub request_timeout: Duration,
}

/// Clients' calls and the calls of other nodes (or of this one to itself)
/// have a limit each: a call the node admitted makes nested calls, some
/// nested in turn, and those must not be shed because clients fill the
/// node. A client that claims to be a peer only gets the peers' share, so
/// the node stays up.
#[derive(Clone)]
pub struct GuardLayer {
    metrics: Arc<Metrics>,
    clients: Arc<Semaphore>,
    peers: Arc<Semaphore>,
    request_timeout: Duration,
}

impl GuardLayer {
    pub fn new(metrics: Arc<Metrics>, limits: &Limits) -> Self {
        let permits = limits.max_in_flight.min(Semaphore::MAX_PERMITS);
        Self {
            metrics,
            clients: Arc::new(Semaphore::new(permits)),
            peers: Arc::new(Semaphore::new(permits.max(MIN_PEER_PERMITS))),
            request_timeout: limits.request_timeout,
        }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

impl<S> tower::Service<HttpRequest> for Guard<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // The node's web pages and files are not calls.
        if !is_grpc(request.headers()) {
            return Box::pin(inner.call(request));
        }
        let layer = self.layer.clone();
        let path = request.uri().path();
        let timer = layer.metrics.rpc_started(path);
        let sheddable = !NEVER_SHED.iter().any(|prefix| path.starts_with(prefix));
        let deadline =
            client_deadline(request.headers()).map_or(layer.request_timeout, |d| d.min(layer.request_timeout));
        let from_peer = request
            .headers()
            .get(http::header::USER_AGENT)
            .is_some_and(|agent| agent.as_bytes().starts_with(PEER_USER_AGENT.as_bytes()));
        let permits = if from_peer { layer.peers.clone() } else { layer.clients.clone() };
        Box::pin(async move {
            let _permit = match permits.try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) if sheddable => {
                    layer.metrics.refused(Refusal::Overload);
                    layer.metrics.rpc_finished(&timer, Code::Unavailable, false);
                    let status = Status::unavailable("the node is at its limit of calls in flight; retry shortly");
                    return Ok(status.into_http());
                }
                Err(_) => None,
            };
            let response = match tokio::time::timeout(deadline, inner.call(request)).await {
                Ok(Ok(response)) => response,
                Err(_) => {
                    layer.metrics.rpc_finished(&timer, Code::DeadlineExceeded, false);
                    let status = Status::deadline_exceeded(format!(
                        "the call did not finish within its deadline ({} ms)",
                        deadline.as_millis()
                    ));
                    return Ok(status.into_http());
                }
            };
            // An error answered at once (trailers-only) ends the call here;
            // otherwise it ends with the body's trailers.
            if let Some(code) = response.headers().get("grpc-status").map(|_| status_code(response.headers())) {
                layer.metrics.rpc_finished(&timer, code, false);
                return Ok(response);
            }
            layer.metrics.rpc_answered(&timer);
            let (parts, body) = response.into_parts();
            let body = Measured { inner: body, metrics: layer.metrics.clone(), timer: Some(timer) };
            Ok(http::Response::from_parts(parts, tonic::body::Body::new(body)))
        })
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

/// The status code in a header map (`grpc-status`), OK when there is none.
fn status_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| i32::from_str(v).ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// The client's `grpc-timeout`: digits and a unit (H, M, S, m, u, n).
fn client_deadline(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A response body that reports its call's end to the metrics: the status
/// in its trailers, or CANCELLED when it is dropped before them (the client
/// went away).
struct Measured {
    inner: tonic::body::Body,
    metrics: Arc<Metrics>,
    timer: Option<RpcTimer>,
}

impl Measured {
    fn finish(&mut self, code: Code) {
        if let Some(timer) = self.timer.take() {
            self.metrics.rpc_finished(&timer, code, true);
        }
    }
}

impl HttpBody for Measured {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_code(trailers);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Code::Internal),
            Poll::Ready(None) => self.finish(Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_deadline_is_read_in_every_unit_and_nonsense_is_ignored() {
        let deadline = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            client_deadline(&headers)
        };
        assert_eq!(deadline("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline("250m"), Some(Duration::from_millis(250)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(deadline("10u"), Some(Duration::from_micros(10)));
        for bad in ["S", "12", "1x", "1234567890S", "-1S"] {
            assert_eq!(deadline(bad), None, "{bad}");
        }
    }
}
