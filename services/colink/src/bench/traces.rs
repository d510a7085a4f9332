//! A trace collector for measuring what tracing costs the node: it takes
//! OTLP exports and counts them without decoding the spans. The collector
//! runs in the load generator's process, on the node's machine, so it
//! must cost next to nothing, or it would slow the node it measures.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic_prost::ProstCodec;

use super::BenchError;
use super::frames::Present;

/// Where the node sends its traces during a run.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceTarget {
    /// A collector of the operator's, at this URL.
    Collector(String),
    /// A counting collector in this process, started for each run.
    Sink,
}

/// Traces on, and where to; with the share of new traces kept.
#[derive(Debug, Clone)]
pub struct Traces {
    pub target: TraceTarget,
    pub sample_ratio: f64,
}

/// `ExportTraceServiceRequest` down to its spans, each left as bytes:
/// a field not declared here is skipped by its length, not parsed.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportHead {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpansHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpansHead {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpansHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpansHead {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<bytes::Bytes>,
}

/// What the sink received.
#[derive(Debug, Default)]
pub struct Received {
    pub exports: AtomicU64,
    pub spans: AtomicU64,
    pub bytes: AtomicU64,
}

/// Exports, spans and the spans' bytes a sink received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub exports: u64,
    pub spans: u64,
    pub bytes: u64,
}

/// A running sink; it stops when dropped.
pub struct Sink {
    pub endpoint: String,
    pub received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Result<Self, BenchError> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| BenchError::Server(e.to_string()))?;
        let endpoint = format!("http://{}", listener.local_addr().map_err(|e| BenchError::Server(e.to_string()))?);
        let received = Arc::new(Received::default());
        let service = Collector(received.clone());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            if let Err(err) =
                tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await
            {
                eprintln!("  trace sink stopped: {err}");
            }
        });
        Ok(Self { endpoint, received, task })
    }

    /// What was received so far.
    pub fn totals(&self) -> Totals {
        let r = &self.received;
        Totals {
            exports: r.exports.load(Ordering::Relaxed),
            spans: r.spans.load(Ordering::Relaxed),
            bytes: r.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Collector(Arc<Received>);

impl NamedService for Collector {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl Service<http::Request<tonic::body::Body>> for Collector {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let received = self.0.clone();
        Box::pin(async move {
            if request.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
                return Ok(tonic::Status::unimplemented("only Export is served").into_http());
            }
            let codec: ProstCodec<Present, ExportHead> = ProstCodec::default();
            // An exporter sends batches of up to 512 spans; a large span
            // set can pass the default 4 MiB.
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(Some(64 << 20), None);
            Ok(grpc.unary(Export(received), request).await)
        })
    }
}

struct Export(Arc<Received>);

impl UnaryService<ExportHead> for Export {
    type Response = Present;
    type Future = std::future::Ready<Result<tonic::Response<Present>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportHead>) -> Self::Future {
        let spans = request.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans);
        let (count, bytes) = spans.fold((0, 0), |(count, bytes), span| (count + 1, bytes + span.len() as u64));
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        self.0.spans.fetch_add(count, Ordering::Relaxed);
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(Present {})))
    }
}
