//! Logs and traces: one subscriber for the whole process.
//!
//! Logs are text on a terminal and JSON otherwise; every line logged while
//! a call is handled carries the call's span (method, peer, request id).
//! Traces go to an OTLP collector when `tracing.otlp_endpoint` is set: the
//! spans of `tracing` become OpenTelemetry spans, and the W3C trace context
//! (`traceparent`) travels with every call between services, every event
//! through the outbox and every Kafka record, so that one request is one
//! trace across the nodes it touches.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, TracingConfig};

pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Whether spans are exported: only then is trace context read and written.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// What `init` set up; `shutdown` sends the spans still buffered.
#[must_use = "shut down to flush the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends what is buffered, waiting for the collector at most a few
    /// seconds. Call it outside the async runtime's worker threads.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("colink: traces: {err}");
        }
    }
}

/// Installs the global subscriber. Calling it again is harmless (tests start
/// several nodes in one process); only the first call's settings count.
/// With an OTLP endpoint, call it inside the async runtime: the exporter's
/// connection lives there.
pub fn init(log: &LogConfig, traces: &TracingConfig) -> Telemetry {
    let filter: Targets = log.level.parse().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    // A person at a terminal reads text; a file or a log collector gets
    // JSON, unless told otherwise. Colours only ever reach a terminal.
    let terminal = std::io::stdout().is_terminal();
    let json = log.format == "json" || (log.format == "auto" && !terminal);
    let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = if json {
        tracing_subscriber::fmt::layer().json().with_current_span(true).with_span_list(false).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(true).with_ansi(colour).boxed()
    };
    let provider = if traces.otlp_endpoint.is_empty() { None } else { tracer_provider(traces) };
    // Spans are traced whatever the log level: a node that logs only
    // warnings still exports every call's span.
    let traced = Targets::new().with_default(tracing::Level::INFO);
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("colink"))
            // A stream's span is entered each time its body is polled, once
            // per delivered frame: keep entering a span free of clock reads
            // and context switches. Trace context travels through the
            // spans themselves (`current_traceparent`), not an active context.
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(traced)
    });
    let installed = tracing_subscriber::registry().with(logs.with_filter(filter)).with(otel).try_init().is_ok();
    if installed && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = %traces.otlp_endpoint, sample_ratio = traces.sample_ratio, "exporting traces over OTLP");
    }
    Telemetry { provider: provider.filter(|_| installed) }
}

fn tracer_provider(traces: &TracingConfig) -> Option<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(traces.otlp_endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(5))
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("colink: traces: cannot set up the OTLP exporter: {err}");
            return None;
        }
    };
    // A sampled caller's trace is always kept whole; new traces are
    // sampled at the configured ratio.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(traces.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(traces.service_name.clone()).build();
    // Exported from the async runtime: the exporter's calls need it.
    let batches = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    Some(
        SdkTracerProvider::builder().with_span_processor(batches).with_sampler(sampler).with_resource(resource).build(),
    )
}

/// Whether trace context is being propagated.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `span` a child of the trace named in `headers`, if any.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    if exporting() && headers.contains_key(TRACEPARENT_HEADER) {
        let parent = TraceContextPropagator::new().extract(&HeaderReader(headers));
        let _ = span.set_parent(parent);
    }
}

/// Makes `span` a child of the trace a `traceparent` value names (an
/// event's, carried through the outbox and the event log).
pub fn continue_trace_from(span: &Span, traceparent: &str) {
    if exporting() && !traceparent.is_empty() {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = traceparent.parse() {
            headers.insert(TRACEPARENT_HEADER, value);
        }
        continue_trace(span, &headers);
    }
}

/// The current span's trace context as a `traceparent` value; empty when
/// traces are off.
pub fn current_traceparent() -> String {
    if !exporting() {
        return String::new();
    }
    let mut carrier = Carrier(None);
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.0.unwrap_or_default()
}

/// Adds the current trace context to an outgoing call.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let traceparent = current_traceparent();
    if !traceparent.is_empty()
        && let Ok(value) = traceparent.parse()
    {
        metadata.insert(TRACEPARENT_HEADER, value);
    }
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Takes the `traceparent` a propagator writes (`tracestate` is not kept).
struct Carrier(Option<String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT_HEADER {
            self.0 = Some(value);
        }
    }
}
