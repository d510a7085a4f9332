//! The node's Prometheus metrics, in the text exposition format (0.0.4).
//!
//! Every series a node can export is known when it starts: RPCs by method
//! (taken from the contracts, with anything else counted as `unknown`) and
//! gRPC status code, streams, rate-limit refusals and caches by a fixed set
//! of names, and per hosted service the database pools and the outbox. No
//! label ever holds a user, channel or other id, so the number of series
//! stays bounded however the node is used.
//!
//! Counting is lock-free: the hot paths touch a few relaxed atomics. What a
//! node can read more cheaply when asked (pool use, outbox depth, consumer
//! lag) is read at scrape time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sea_orm::sea_query::{Expr, Func, Query};
use sea_orm::{DatabaseConnection, DbBackend, FromQueryResult, StatementBuilder};
use tonic::Code;

use crate::db::Db;
use crate::ids::now_micros;

/// Upper bounds of the RPC latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Every gRPC status code, by its number.
const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// Why a stream was told to reconnect and resume from its cursors.
pub const RESUME_REASONS: &[&str] = &["slow_consumer", "shutdown", "token_expired", "unavailable"];

/// Which request budget refused a call.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// A public RPC over the per-address budget.
    Anonymous = 0,
    /// A signed-in caller over their budget of changes.
    SignedIn = 1,
    /// The node's in-flight limit (load shedding).
    Overload = 2,
}
const REFUSALS: [&str; 3] = ["anonymous", "signed_in", "overload"];

/// A node's metrics. One per node: tests run several nodes in a process.
pub struct Metrics {
    methods: HashMap<String, usize>,
    rpcs: Vec<RpcSeries>,
    in_flight: AtomicI64,
    refusals: [AtomicU64; REFUSALS.len()],
    token_cache: [AtomicU64; 2],
    pub streams: StreamMetrics,
    databases: RwLock<Vec<(&'static str, Db)>>,
    consumers: RwLock<Vec<ConsumerLag>>,
}

/// Counters of one RPC method (or of every unknown path together).
struct RpcSeries {
    service: Arc<str>,
    method: String,
    streaming: bool,
    codes: [AtomicU64; CODES.len()],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    open_streams: AtomicI64,
}

/// The realtime gateway's share: frames waiting in the streams' buffers,
/// and resume hints by reason.
#[derive(Default)]
pub struct StreamMetrics {
    queued: AtomicI64,
    resume_hints: [AtomicU64; RESUME_REASONS.len()],
}

/// How far one consumer group is behind on one topic, as its client last
/// reported it.
#[derive(Clone)]
pub struct ConsumerLag {
    pub topic: String,
    pub group: String,
    pub lag: Arc<AtomicI64>,
}

/// The handle the server stack keeps for one call, from its start to its
/// end: the method's series and when it began.
pub struct RpcTimer {
    series: usize,
    started: std::time::Instant,
}

impl Metrics {
    /// Metrics for the methods of `descriptor_sets` (encoded
    /// `FileDescriptorSet`s): every method any contract names, hosted here
    /// or not.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut rpcs = Vec::new();
        let mut methods = HashMap::new();
        for set in descriptor_sets {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(*set) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name: Arc<str> = format!("{package}.{}", service.name.unwrap_or_default()).into();
                    for method in service.method {
                        let name = method.name.unwrap_or_default();
                        let path = format!("/{service_name}/{name}");
                        let streaming =
                            method.client_streaming.unwrap_or(false) || method.server_streaming.unwrap_or(false);
                        if methods.insert(path, rpcs.len()).is_none() {
                            rpcs.push(RpcSeries::new(service_name.clone(), name, streaming));
                        }
                    }
                }
            }
        }
        rpcs.push(RpcSeries::new("unknown".into(), "unknown".into(), false));
        Self {
            methods,
            rpcs,
            in_flight: AtomicI64::new(0),
            refusals: Default::default(),
            token_cache: Default::default(),
            streams: StreamMetrics::default(),
            databases: RwLock::new(Vec::new()),
            consumers: RwLock::new(Vec::new()),
        }
    }

    /// A call to `path` begins.
    pub fn rpc_started(&self, path: &str) -> RpcTimer {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let series = self.methods.get(path).copied().unwrap_or(self.rpcs.len() - 1);
        RpcTimer { series, started: std::time::Instant::now() }
    }

    /// The handler of a call answered (headers sent): it is no longer in
    /// flight. A streaming call stays open until `rpc_finished`.
    pub fn rpc_answered(&self, timer: &RpcTimer) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(series) = self.rpcs.get(timer.series)
            && series.streaming
        {
            series.open_streams.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A call ended with `code`; `answered` says whether `rpc_answered` ran.
    pub fn rpc_finished(&self, timer: &RpcTimer, code: Code, answered: bool) {
        let Some(series) = self.rpcs.get(timer.series) else { return };
        if !answered {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        } else if series.streaming {
            series.open_streams.fetch_sub(1, Ordering::Relaxed);
        }
        let index = code as usize;
        if let Some(counter) = series.codes.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let elapsed = timer.started.elapsed();
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            series.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        series.count.fetch_add(1, Ordering::Relaxed);
        series.sum_micros.fetch_add(elapsed.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// Whether `path` names a streaming method.
    pub fn is_streaming(&self, path: &str) -> bool {
        self.methods.get(path).and_then(|i| self.rpcs.get(*i)).is_some_and(|s| s.streaming)
    }

    pub fn refused(&self, refusal: Refusal) {
        self.refusals[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A remembered-token lookup: found (`hit`) or not.
    pub fn token_cache_lookup(&self, hit: bool) {
        self.token_cache[usize::from(hit)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a hosted service's database: its pools and its outbox are read
    /// at every scrape.
    pub fn watch_database(&self, service: &'static str, db: Db) {
        if let Ok(mut databases) = self.databases.write() {
            databases.push((service, db));
        }
    }

    /// Adds a consumer group whose lag its client keeps up to date.
    pub fn watch_consumer(&self, lag: ConsumerLag) {
        if let Ok(mut consumers) = self.consumers.write() {
            consumers.push(lag);
        }
    }

    /// The exposition, read now.
    pub async fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_rpcs(&mut out);
        self.render_streams(&mut out);
        family(&mut out, "colink_rate_limit_refusals_total", "counter", "Calls refused by a request budget.");
        for (name, count) in REFUSALS.iter().zip(&self.refusals) {
            sample(&mut out, "colink_rate_limit_refusals_total", &[("limit", name)], count.load(Ordering::Relaxed));
        }
        family(
            &mut out,
            "colink_token_cache_lookups_total",
            "counter",
            "Access token checks, by whether the node remembered the answer.",
        );
        for (result, count) in ["miss", "hit"].iter().zip(&self.token_cache) {
            sample(&mut out, "colink_token_cache_lookups_total", &[("result", result)], count.load(Ordering::Relaxed));
        }
        self.render_databases(&mut out).await;
        self.render_consumers(&mut out);
        out
    }

    fn render_rpcs(&self, out: &mut String) {
        let used: Vec<&RpcSeries> = self.rpcs.iter().filter(|s| s.count.load(Ordering::Relaxed) > 0).collect();
        family(out, "colink_rpc_in_flight", "gauge", "Calls being handled now (streams count until they answer).");
        sample(out, "colink_rpc_in_flight", &[], self.in_flight.load(Ordering::Relaxed));
        family(out, "colink_rpc_handled_total", "counter", "Calls completed, by method and gRPC status code.");
        for series in &used {
            for (code, count) in CODES.iter().zip(&series.codes) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let labels = [
                        ("grpc_service", &*series.service),
                        ("grpc_method", series.method.as_str()),
                        ("grpc_code", code_name(*code)),
                    ];
                    sample(out, "colink_rpc_handled_total", &labels, count);
                }
            }
        }
        family(
            out,
            "colink_rpc_duration_seconds",
            "histogram",
            "Time from a call's request to its last byte, by method.",
        );
        for series in &used {
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(&series.buckets) {
                cumulative += count.load(Ordering::Relaxed);
                let le = bound.to_string();
                let labels =
                    [("grpc_service", &*series.service), ("grpc_method", series.method.as_str()), ("le", le.as_str())];
                sample(out, "colink_rpc_duration_seconds_bucket", &labels, cumulative);
            }
            let labels = [("grpc_service", &*series.service), ("grpc_method", series.method.as_str())];
            let count = series.count.load(Ordering::Relaxed);
            let inf = [labels[0], labels[1], ("le", "+Inf")];
            sample(out, "colink_rpc_duration_seconds_bucket", &inf, count);
            let sum = Duration::from_micros(series.sum_micros.load(Ordering::Relaxed)).as_secs_f64();
            sample(out, "colink_rpc_duration_seconds_sum", &labels, sum);
            sample(out, "colink_rpc_duration_seconds_count", &labels, count);
        }
    }

    fn render_streams(&self, out: &mut String) {
        family(out, "colink_streams_open", "gauge", "Streaming calls open now, by method.");
        for series in self.rpcs.iter().filter(|s| s.streaming) {
            let labels = [("grpc_service", &*series.service), ("grpc_method", series.method.as_str())];
            sample(out, "colink_streams_open", &labels, series.open_streams.load(Ordering::Relaxed));
        }
        family(
            out,
            "colink_stream_frames_queued",
            "gauge",
            "Frames waiting in the realtime streams' buffers for their clients (the fan-out queue).",
        );
        sample(out, "colink_stream_frames_queued", &[], i64::max(self.streams.queued.load(Ordering::Relaxed), 0));
        family(
            out,
            "colink_stream_resume_hints_total",
            "counter",
            "Streams ended with a hint to resume from their cursors, by reason.",
        );
        for (reason, count) in RESUME_REASONS.iter().zip(&self.streams.resume_hints) {
            sample(out, "colink_stream_resume_hints_total", &[("reason", reason)], count.load(Ordering::Relaxed));
        }
    }

    async fn render_databases(&self, out: &mut String) {
        let databases = self.databases.read().map(|d| d.clone()).unwrap_or_default();
        family(out, "colink_db_connections", "gauge", "Open database connections, by service, pool and state.");
        for (service, db) in &databases {
            for (pool, conn) in pools(db) {
                let (open, idle) = pool_use(conn);
                sample(out, "colink_db_connections", &[("service", service), ("pool", pool), ("state", "idle")], idle);
                sample(
                    out,
                    "colink_db_connections",
                    &[("service", service), ("pool", pool), ("state", "busy")],
                    open.saturating_sub(idle),
                );
            }
        }
        family(out, "colink_db_connections_max", "gauge", "The most connections a pool opens, by service and pool.");
        for (service, db) in &databases {
            for (pool, conn) in pools(db) {
                sample(out, "colink_db_connections_max", &[("service", service), ("pool", pool)], pool_max(conn));
            }
        }
        let mut outboxes = Vec::with_capacity(databases.len());
        for (service, db) in &databases {
            outboxes.push((*service, outbox_backlog(db).await));
        }
        family(out, "colink_outbox_events", "gauge", "Committed events not yet accepted by the event log, by service.");
        for (service, backlog) in &outboxes {
            if let Some((events, _)) = backlog {
                sample(out, "colink_outbox_events", &[("service", service)], *events);
            }
        }
        family(
            out,
            "colink_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest event waiting in the outbox (0 when empty), by service.",
        );
        for (service, backlog) in &outboxes {
            if let Some((_, age)) = backlog {
                sample(out, "colink_outbox_oldest_age_seconds", &[("service", service)], *age);
            }
        }
    }

    fn render_consumers(&self, out: &mut String) {
        let consumers = self.consumers.read().map(|c| c.clone()).unwrap_or_default();
        if consumers.is_empty() {
            return;
        }
        family(
            out,
            "colink_event_consumer_lag",
            "gauge",
            "Events a consumer group has yet to apply, by topic and group (Kafka).",
        );
        for consumer in &consumers {
            let labels = [("topic", consumer.topic.as_str()), ("group", consumer.group.as_str())];
            sample(out, "colink_event_consumer_lag", &labels, i64::max(consumer.lag.load(Ordering::Relaxed), 0));
        }
    }
}

impl RpcSeries {
    fn new(service: Arc<str>, method: String, streaming: bool) -> Self {
        Self {
            service,
            method,
            streaming,
            codes: Default::default(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            open_streams: AtomicI64::new(0),
        }
    }
}

impl StreamMetrics {
    /// A frame went into a stream's buffer.
    pub fn queued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame left a stream's buffer (sent, or dropped with the stream).
    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn resume_hint(&self, reason: &str) {
        if let Some(index) = RESUME_REASONS.iter().position(|r| *r == reason) {
            self.resume_hints[index].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The name Prometheus users know a code by (as `grpc-go` labels it).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A service's pools by name: SQLite has a writer and readers, PostgreSQL
/// one pool for both.
fn pools(db: &Db) -> Vec<(&'static str, &DatabaseConnection)> {
    match db.writer.get_database_backend() {
        DbBackend::Sqlite => vec![("writer", &db.writer), ("reader", &db.reader)],
        _ => vec![("shared", &db.writer)],
    }
}

/// Open and idle connections of a pool.
fn pool_use(conn: &DatabaseConnection) -> (u32, u32) {
    match conn.get_database_backend() {
        DbBackend::Sqlite => {
            let pool = conn.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle() as u32)
        }
        DbBackend::Postgres => {
            let pool = conn.get_postgres_connection_pool();
            (pool.size(), pool.num_idle() as u32)
        }
        _ => (0, 0),
    }
}

fn pool_max(conn: &DatabaseConnection) -> u32 {
    match conn.get_database_backend() {
        DbBackend::Sqlite => conn.get_sqlite_connection_pool().options().get_max_connections(),
        DbBackend::Postgres => conn.get_postgres_connection_pool().options().get_max_connections(),
        _ => 0,
    }
}

/// Events waiting in a service's outbox and the age of the oldest, in
/// seconds; None when the database does not answer.
async fn outbox_backlog(db: &Db) -> Option<(i64, f64)> {
    use sea_orm::sea_query::ExprTrait;

    #[derive(FromQueryResult)]
    struct Backlog {
        events: i64,
        oldest: Option<i64>,
    }
    // On SQLite published rows stay a while, to be deleted in bulk.
    let relayed = db.relayed.load(Ordering::Relaxed);
    let query = Query::select()
        .expr_as(Expr::col("id").count(), "events")
        .expr_as(Func::min(Expr::col("created_at")), "oldest")
        .from("outbox")
        .and_where(Expr::col("id").gt(relayed))
        .to_owned();
    let conn = &db.reader;
    let statement = StatementBuilder::build(&query, &conn.get_database_backend());
    let backlog = Backlog::find_by_statement(statement).one(conn).await.ok()??;
    let age = backlog.oldest.map_or(0.0, |oldest| Ord::max(now_micros() - oldest, 0) as f64 / 1e6);
    Some((backlog.events, age))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Label values here are names from the contracts and the code;
            // escape anyway, as the format asks.
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(out, "{key}=\"{escaped}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_counted_by_method_and_code_and_unknown_paths_share_one_series() {
        let metrics = Metrics::new(&[colink_proto::FILE_DESCRIPTOR_SET]);
        let send = "/colink.messaging.v1.MessagingService/SendMessage";
        for code in [Code::Ok, Code::Ok, Code::InvalidArgument] {
            let timer = metrics.rpc_started(send);
            metrics.rpc_answered(&timer);
            metrics.rpc_finished(&timer, code, true);
        }
        for path in ["/evil/1", "/evil/2"] {
            let timer = metrics.rpc_started(path);
            metrics.rpc_finished(&timer, Code::Unimplemented, false);
        }
        let text = metrics.render().await;
        let send_ok = "colink_rpc_handled_total{grpc_service=\"colink.messaging.v1.MessagingService\",\
                       grpc_method=\"SendMessage\",grpc_code=\"OK\"} 2";
        assert!(text.contains(send_ok), "{text}");
        assert!(text.contains("grpc_method=\"SendMessage\",grpc_code=\"InvalidArgument\"} 1"));
        assert!(text.contains("grpc_service=\"unknown\",grpc_method=\"unknown\",grpc_code=\"Unimplemented\"} 2"));
        assert!(!text.contains("evil"));
        assert!(text.contains("grpc_method=\"SendMessage\",le=\"+Inf\"} 3"));
        assert!(text.contains("colink_rpc_in_flight 0"));
    }

    #[test]
    fn a_stream_counts_as_open_from_its_answer_to_its_end() {
        let metrics = Metrics::new(&[colink_proto::FILE_DESCRIPTOR_SET]);
        let connect = "/colink.realtime.v1.RealtimeService/Connect";
        assert!(metrics.is_streaming(connect));
        let timer = metrics.rpc_started(connect);
        metrics.rpc_answered(&timer);
        let open = |m: &Metrics| m.rpcs[m.methods[connect]].open_streams.load(Ordering::Relaxed);
        assert_eq!(open(&metrics), 1);
        assert_eq!(metrics.in_flight.load(Ordering::Relaxed), 0);
        metrics.rpc_finished(&timer, Code::Ok, true);
        assert_eq!(open(&metrics), 0);
    }
}
