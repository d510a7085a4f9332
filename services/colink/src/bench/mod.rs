//! `colink bench`: drives a real node (a `colink serve` child process) with
//! the standard scenarios and reports throughput, send→deliver latency, loss,
//! duplicates, and the node's CPU time and peak memory.
//!
//! Every run is bounded in count and time and stops by itself; it prints its
//! progress to stderr, a table to stdout, and one JSON line per scenario.

mod conversation;
mod files;
mod frames;
pub mod http;
mod load;
mod retention;
mod search;
mod server;
mod traces;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use self::load::{Pool, Received, Receiver, SendPlan, Speakers, User, Watch};
use self::server::{CpuSample, Server};
pub use self::traces::{TraceTarget, Traces};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("server: {0}")]
    Server(String),
    #[error("call failed: {0}")]
    Call(#[from] tonic::Status),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("database: {0}")]
    Database(String),
    #[error("{0} message(s) lost or duplicated")]
    Integrity(u64),
}

/// Where the generated part of the Markdown page ends.
const ANALYSIS_MARKER: &str = "<!-- analysis: kept when the page is regenerated -->";

pub const SCENARIOS: &[&str] = &[
    "ingest",
    "small-channels",
    "fan-out",
    "big-channel",
    "idle",
    "reconnect",
    "history",
    "reaction-storm",
    "unread-at-scale",
    "files",
    "search-index",
    "search",
    "retention",
    "room",
];

/// The `room` scenario: `users` people in one channel, `streams` of them
/// streaming it, and `senders` of them talking at once, each with one
/// request in flight, at `rate` messages a second in all (0: as fast as
/// the acknowledgements come). Streamers and senders are the room's first
/// people, so a sender with a stream sees its own messages, as in a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub users: usize,
    pub streams: usize,
    pub senders: usize,
    pub rate: u32,
}

impl Default for Room {
    fn default() -> Self {
        Self { users: 50, streams: 10, senders: 5, rate: 0 }
    }
}

impl std::str::FromStr for Room {
    type Err = String;

    /// `USERS,STREAMS,SENDERS[,RATE]`, e.g. `50,10,5` or `2000,1000,20,500`.
    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(format!("expected USERS,STREAMS,SENDERS[,RATE], got {text:?}"));
        }
        let number = |i: usize, name: &str| -> Result<usize, String> {
            parts
                .get(i)
                .map_or(Ok(0), |part| part.parse().map_err(|_| format!("{name} must be a whole number, got {part:?}")))
        };
        let rate = u32::try_from(number(3, "RATE")?).map_err(|_| "RATE is too large".to_string())?;
        let room =
            Room { users: number(0, "USERS")?, streams: number(1, "STREAMS")?, senders: number(2, "SENDERS")?, rate };
        if room.users == 0 || room.senders == 0 {
            return Err("USERS and SENDERS must be at least 1".into());
        }
        if room.users > 100_000 {
            return Err("USERS must be at most 100000".into());
        }
        if room.streams > room.users || room.senders > room.users {
            return Err("STREAMS and SENDERS are people of the room: each at most USERS".into());
        }
        Ok(room)
    }
}

impl std::fmt::Display for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} people, {} streaming, {} sending", self.users, self.streams, self.senders)?;
        if self.rate > 0 { write!(f, " at {} msg/s", self.rate) } else { write!(f, " as fast as answered") }
    }
}

impl Room {
    fn shape(&self, size: Size) -> Shape {
        let standard = size == Size::Standard;
        // Every stream gets every message, and the load generator keeps
        // what each one saw: bound the deliveries, not only the sends.
        let full = if self.rate > 0 { u64::from(self.rate) * 30 } else { 300_000 };
        let messages = full.min(10_000_000 / self.streams.max(1) as u64).max(100);
        Shape {
            channels: 1,
            members: self.users,
            streams_per_member: 0,
            senders: self.senders,
            rate: self.rate,
            messages: if standard { messages } else { messages.min(200) },
            max_secs: if standard { 30 } else { 10 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// A few users and messages: proves the tool and the paths work.
    Smoke,
    /// The sizes the published figures are measured at.
    Standard,
}

/// What a scenario does and at what size.
#[derive(Debug, Clone)]
pub(super) struct Shape {
    channels: usize,
    members: usize,
    /// Every member streams its channel (one stream each), or for `idle`,
    /// this many streams per channel owner.
    streams_per_member: usize,
    senders: usize,
    /// Messages per second in all; 0 as fast as acknowledgements come.
    rate: u32,
    messages: u64,
    max_secs: u64,
}

fn shape(scenario: &str, size: Size) -> Shape {
    let standard = size == Size::Standard;
    let pick = |smoke: usize, full: usize| if standard { full } else { smoke };
    let base =
        Shape { channels: 1, members: 1, streams_per_member: 0, senders: 16, rate: 0, messages: 0, max_secs: 30 };
    match scenario {
        "ingest" => Shape { channels: pick(4, 100), senders: pick(4, 64), messages: pick(200, 200_000) as u64, ..base },
        "small-channels" => Shape {
            channels: pick(10, 1_000),
            members: pick(3, 10),
            streams_per_member: 1,
            rate: if standard { 1_000 } else { 100 },
            messages: pick(100, 10_000) as u64,
            ..base
        },
        "fan-out" => Shape {
            channels: pick(4, 100),
            members: pick(5, 100),
            streams_per_member: 1,
            rate: if standard { 1_000 } else { 100 },
            messages: pick(100, 10_000) as u64,
            ..base
        },
        "big-channel" => Shape {
            members: pick(20, 10_000),
            streams_per_member: 1,
            senders: 1,
            rate: 10,
            messages: pick(20, 100) as u64,
            ..base
        },
        "idle" => Shape { channels: pick(10, 1_000), streams_per_member: pick(10, 100), ..base },
        "reconnect" => Shape { channels: pick(10, 1_000), members: pick(3, 10), streams_per_member: 1, ..base },
        "history" => Shape { senders: 32, messages: pick(500, 1_000_000) as u64, max_secs: 300, ..base },
        // `messages` counts reactions, one per member. A reaction is
        // answered once its batch is committed, so the rate needs many in
        // flight, as it has with many people reacting at once.
        "reaction-storm" => Shape {
            members: pick(20, 10_000),
            streams_per_member: 1,
            senders: pick(4, 512),
            rate: if standard { 1_000 } else { 100 },
            messages: pick(20, 10_000) as u64,
            max_secs: 60,
            ..base
        },
        // Every member is in every channel. Setting up 500 channels of
        // 1,000 members takes long on a small machine, and GetUnreadCounts
        // costs by the reader's channels, not their size: BENCH_UNREAD_MEMBERS
        // may set fewer members for a quicker run.
        "unread-at-scale" => Shape {
            channels: pick(5, 500),
            members: pick(
                10,
                std::env::var("BENCH_UNREAD_MEMBERS").ok().and_then(|m| m.parse().ok()).unwrap_or(1_000).max(2),
            ),
            senders: pick(4, 32),
            rate: if standard { 1_000 } else { 100 },
            messages: pick(100, 10_000) as u64,
            max_secs: 60,
            ..base
        },
        // `messages` counts files of 1 MiB; `senders` uploads run at once.
        "files" => Shape { members: 4, senders: 4, messages: pick(8, 400) as u64, max_secs: 120, ..base },
        // A reader and three writers in 500 channels; `messages` is the
        // corpus sent before the lag and search measurements.
        "search" => Shape {
            channels: pick(5, search::CHANNELS),
            members: 4,
            senders: 32,
            rate: if standard { 1_000 } else { 100 },
            // BENCH_SEARCH_MESSAGES may set a smaller corpus for a quicker run.
            messages: std::env::var("BENCH_SEARCH_MESSAGES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(pick(2_000, 1_000_000) as u64),
            max_secs: 1_200,
            ..base
        },
        // A corpus in 100 channels deleted by one run, while 10 other
        // channels send 500 messages a second.
        "retention" => Shape {
            channels: pick(5, 100),
            members: 4,
            senders: 32,
            rate: 500,
            messages: std::env::var("BENCH_RETENTION_MESSAGES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(pick(2_000, 1_000_000) as u64),
            max_secs: 1_800,
            ..base
        },
        _ => base,
    }
}

/// Counts progress for the line printed every second.
#[derive(Clone, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
}

impl Progress {
    pub fn tick(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Prints `phase: done/total` every second until dropped.
    fn show(&self, phase: &'static str, total: u64) -> ProgressLine {
        self.done.store(0, Ordering::Relaxed);
        let done = self.done.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!("  {phase}: {n}/{total} ({:.0} s)", started.elapsed().as_secs_f64());
            }
        });
        ProgressLine(task)
    }
}

struct ProgressLine(tokio::task::JoinHandle<()>);

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Options {
    pub scenarios: Vec<String>,
    pub size: Size,
    /// A PostgreSQL server: each scenario then also runs with the node's
    /// tables in fresh databases there, after its SQLite run.
    pub postgres: Option<String>,
    /// Rewrites this Markdown file with the results.
    pub markdown: Option<PathBuf>,
    /// The command line, recorded in the Markdown file.
    pub command: String,
    /// Who the `room` scenario puts in its channel.
    pub room: Room,
    /// Have the node export traces while it is measured.
    pub traces: Option<Traces>,
}

/// Runs the scenarios one after another, each against a fresh node.
pub async fn run(options: Options) -> Result<(), BenchError> {
    let mut results = Vec::new();
    let mut broken = 0;
    let databases = [None, options.postgres.as_deref()];
    for scenario in &options.scenarios {
        for database in databases.iter().take(if options.postgres.is_some() { 2 } else { 1 }) {
            eprintln!("scenario {scenario} ({:?}, {})", options.size, database.map_or("sqlite", |_| "postgresql"));
            let report = if scenario == "search-index" {
                // The index alone, in this process: no node, no database.
                if database.is_some() {
                    continue;
                }
                let mut report = Report {
                    scenario: scenario.clone(),
                    size: format!("{:?}", options.size).to_lowercase(),
                    database: "tantivy, in process".into(),
                    ..Default::default()
                };
                let started = Instant::now();
                search::index_only(options.size, &mut report).await?;
                report.elapsed_s = started.elapsed().as_secs_f64();
                report
            } else {
                run_one(scenario, &options, *database).await?
            };
            broken += report.lost + report.duplicated;
            print_report(&report);
            println!("{}", report.json());
            results.push(report);
        }
    }
    if let Some(path) = &options.markdown {
        // The analysis below the marker is written by people: keep it.
        let kept = std::fs::read_to_string(path)
            .ok()
            .and_then(|old| old.find(ANALYSIS_MARKER).map(|at| old[at..].to_string()))
            .unwrap_or_else(|| format!("{ANALYSIS_MARKER}\n"));
        let page = format!("{}\n{kept}", markdown(&results, &options));
        std::fs::write(path, page).map_err(|e| BenchError::Server(e.to_string()))?;
        eprintln!("wrote {}", path.display());
    }
    if broken > 0 { Err(BenchError::Integrity(broken)) } else { Ok(()) }
}

#[derive(Debug, Default)]
pub(super) struct Report {
    scenario: String,
    size: String,
    database: String,
    streams: usize,
    sends: u64,
    send_failures: u64,
    sends_per_s: f64,
    deliveries: u64,
    deliveries_per_s: f64,
    latency_ms: Percentiles,
    ack_ms: Percentiles,
    lost: u64,
    duplicated: u64,
    /// Reconnect storm: from the first resume to the last receiver caught up.
    catch_up_s: Option<f64>,
    /// History: time per page of 50.
    page_ms: Option<Percentiles>,
    /// Idle: memory the streams added, per stream.
    rss_per_stream_kib: Option<f64>,
    /// Unread at scale: GetUnreadCounts latency under traffic.
    counts_ms: Option<Percentiles>,
    /// Files: GetDownloadUrl latency.
    download_url_ms: Option<Percentiles>,
    /// Search: SearchMessages latency, typical one- and two-word queries,
    /// one at a time.
    search_ms: Option<Percentiles>,
    /// Search: the same with this many at a time.
    search_concurrent_ms: Option<(u64, Percentiles)>,
    /// Search: how many messages a search matched, on average.
    hits_per_search: Option<f64>,
    /// Search: from a send's acknowledgement to its message being found.
    index_lag_ms: Option<Percentiles>,
    /// Search: messages indexed per second.
    indexed_per_s: Option<f64>,
    /// Search: the index's size on disk per message.
    index_bytes_per_message: Option<f64>,
    /// Search: messages per second a rebuild of the index read and indexed.
    reindexed_per_s: Option<f64>,
    /// Files: clamd scanning the same kind of bytes by itself.
    scan_alone_ms: Option<Percentiles>,
    scan_alone_per_s: Option<f64>,
    /// Retention: send acknowledgements with no run going (`ack_ms` is
    /// during the run).
    ack_baseline_ms: Option<Percentiles>,
    /// Retention: messages the run deleted, and the seconds it took.
    retention: Option<(u64, f64)>,
    /// Room: who was in it.
    room: Option<Room>,
    /// Traces: where they went, and what a sink of ours received.
    traces: Option<(String, Option<traces::Totals>)>,
    server_cpu_s: f64,
    /// CPU microseconds per delivery while messages flowed: the node's and
    /// the load generator's, so that a reader can tell which ran out. In
    /// the reconnect storm, per event replayed, reopening the streams
    /// included.
    cpu_per_delivery_us: Option<(f64, f64)>,
    server_peak_rss_mib: f64,
    elapsed_s: f64,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    pub(super) fn of_micros(mut samples: Vec<u32>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| f64::from(samples[((samples.len() - 1) as f64 * q).round() as usize]) / 1000.0;
        Self { p50: at(0.50), p95: at(0.95), p99: at(0.99), max: at(1.0) }
    }

    fn json(&self) -> serde_json::Value {
        json!({ "p50": round(self.p50), "p95": round(self.p95), "p99": round(self.p99), "max": round(self.max) })
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Report {
    fn json(&self) -> String {
        json!({
            "scenario": self.scenario,
            "size": self.size,
            "database": self.database,
            "streams": self.streams,
            "sends": self.sends,
            "send_failures": self.send_failures,
            "sends_per_s": round(self.sends_per_s),
            "deliveries": self.deliveries,
            "deliveries_per_s": round(self.deliveries_per_s),
            "latency_ms": self.latency_ms.json(),
            "ack_ms": self.ack_ms.json(),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "catch_up_s": self.catch_up_s.map(round),
            "page_ms": self.page_ms.map(|p| p.json()),
            "rss_per_stream_kib": self.rss_per_stream_kib.map(round),
            "counts_ms": self.counts_ms.map(|p| p.json()),
            "download_url_ms": self.download_url_ms.map(|p| p.json()),
            "scan_alone_ms": self.scan_alone_ms.map(|p| p.json()),
            "scan_alone_per_s": self.scan_alone_per_s.map(round),
            "search_ms": self.search_ms.map(|p| p.json()),
            "search_concurrent": self.search_concurrent_ms.map(|(n, p)| json!({ "searchers": n, "ms": p.json() })),
            "hits_per_search": self.hits_per_search.map(round),
            "index_lag_ms": self.index_lag_ms.map(|p| p.json()),
            "indexed_per_s": self.indexed_per_s.map(round),
            "index_bytes_per_message": self.index_bytes_per_message.map(round),
            "reindexed_per_s": self.reindexed_per_s.map(round),
            "ack_baseline_ms": self.ack_baseline_ms.map(|p| p.json()),
            "retention_deleted": self.retention.map(|r| r.0),
            "retention_s": self.retention.map(|r| round(r.1)),
            "room": self.room.map(|r| json!({ "users": r.users, "streams": r.streams, "senders": r.senders, "rate": r.rate })),
            "traces": self.traces.as_ref().map(|(target, received)| json!({
                "target": target,
                "exports": received.map(|r| r.exports),
                "spans": received.map(|r| r.spans),
                "span_bytes": received.map(|r| r.bytes),
            })),
            "server_cpu_s": round(self.server_cpu_s),
            "node_cpu_us_per_delivery": self.cpu_per_delivery_us.map(|c| round(c.0)),
            "generator_cpu_us_per_delivery": self.cpu_per_delivery_us.map(|c| round(c.1)),
            "server_peak_rss_mib": round(self.server_peak_rss_mib),
            "elapsed_s": round(self.elapsed_s),
        })
        .to_string()
    }
}

fn print_report(r: &Report) {
    let p = |x: &Percentiles| format!("p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}", x.p50, x.p95, x.p99, x.max);
    println!("{} ({}, {})", r.scenario, r.size, r.database);
    if let Some(room) = r.room {
        println!("  room                 {room}");
    }
    if let Some(line) = traces_line(r) {
        println!("  traces               {line}");
    }
    println!("  streams              {}", r.streams);
    println!("  sends acknowledged   {} ({} failed), {:.0}/s", r.sends, r.send_failures, r.sends_per_s);
    println!("  ack latency ms       {}", p(&r.ack_ms));
    println!("  deliveries           {}, {:.0}/s", r.deliveries, r.deliveries_per_s);
    println!("  send→deliver ms      {}", p(&r.latency_ms));
    println!("  lost / duplicated    {} / {}", r.lost, r.duplicated);
    if let Some(s) = r.catch_up_s {
        println!("  all caught up in     {s:.2} s");
    }
    if let Some(page) = &r.page_ms {
        println!("  page of 50 ms        {}", p(page));
    }
    if let Some(kib) = r.rss_per_stream_kib {
        println!("  memory per stream    {kib:.1} KiB");
    }
    if let Some(counts) = &r.counts_ms {
        println!("  GetUnreadCounts ms   {}", p(counts));
    }
    if let Some(urls) = &r.download_url_ms {
        println!("  GetDownloadUrl ms    {}", p(urls));
    }
    if let (Some(alone), Some(per_s)) = (&r.scan_alone_ms, r.scan_alone_per_s) {
        println!("  clamd alone          {per_s:.1} files/s; scan ms {}", p(alone));
    }
    if let Some(per_s) = r.indexed_per_s {
        println!("  indexed              {} messages, {per_s:.0}/s", r.sends);
    }
    if let Some(bytes) = r.index_bytes_per_message {
        println!("  index size           {bytes:.0} bytes per message");
    }
    if let Some(per_s) = r.reindexed_per_s {
        println!("  rebuilt              {per_s:.0} messages/s");
    }
    if let Some(lag) = &r.index_lag_ms {
        println!("  send→searchable ms   {}", p(lag));
    }
    if let (Some(search), Some(hits)) = (&r.search_ms, r.hits_per_search) {
        println!("  SearchMessages ms    {} ({hits:.0} matches on average)", p(search));
    }
    if let Some((n, search)) = &r.search_concurrent_ms {
        println!("  … {n} at a time ms   {}", p(search));
    }
    if let Some((deleted, secs)) = r.retention {
        println!(
            "  retention run        {deleted} messages deleted in {secs:.1} s ({:.0}/s)",
            deleted as f64 / secs.max(1e-9)
        );
    }
    if let Some(baseline) = &r.ack_baseline_ms {
        println!("  ack with no run ms   {}", p(baseline));
    }
    println!("  server CPU           {:.1} s, peak RSS {:.0} MiB", r.server_cpu_s, r.server_peak_rss_mib);
    if let Some((node, generator)) = r.cpu_per_delivery_us {
        println!("  CPU per delivery     node {node:.2} µs, load generator {generator:.2} µs");
    }
    println!("  elapsed              {:.1} s", r.elapsed_s);
}

/// Where traces went in a run, and what reached the sink.
fn traces_line(r: &Report) -> Option<String> {
    let (target, received) = r.traces.as_ref()?;
    Some(match received {
        Some(r) => {
            let mib = r.bytes as f64 / (1024.0 * 1024.0);
            format!("{target}: {} spans ({mib:.1} MiB) in {} exports", r.spans, r.exports)
        }
        None => target.clone(),
    })
}

async fn run_one(scenario: &str, options: &Options, postgres: Option<&str>) -> Result<Report, BenchError> {
    let size = options.size;
    let shape = if scenario == "room" { options.room.shape(size) } else { shape(scenario, size) };
    let data = std::env::temp_dir().join(format!("colink-bench-{}", uuid::Uuid::now_v7().simple()));
    let prefix = format!("colink_bench_{}", uuid::Uuid::now_v7().simple());
    let database_url = match postgres {
        Some(server) => Some(databases(server, &prefix, false).await?),
        None => None,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| BenchError::Server(e.to_string()))?
        .port();
    let sink = match options.traces.as_ref().map(|t| &t.target) {
        Some(TraceTarget::Sink) => Some(traces::Sink::start().await?),
        _ => None,
    };
    let exporting = options.traces.as_ref().map(|traces| match &traces.target {
        TraceTarget::Collector(url) => (url.clone(), traces.sample_ratio),
        TraceTarget::Sink => (sink.as_ref().map(|s| s.endpoint.clone()).unwrap_or_default(), traces.sample_ratio),
    });
    let addr = format!("127.0.0.1:{port}");
    let server = Server::start(&addr, &data, database_url.as_deref(), exporting.as_ref()).await?;
    let started = Instant::now();
    let connections = (shape.channels * shape.members * shape.streams_per_member / 200).clamp(4, 512);
    let pool = Pool::new((0..connections).map(|_| server.connect()).collect::<Result<_, _>>()?, server.pid());
    let progress = Progress::default();

    // Unread at scale puts the same users in every channel.
    let shared = matches!(scenario, "unread-at-scale" | "search" | "retention");
    let user_count = if shared { shape.members } else { shape.channels * shape.members };
    let users = {
        let _line = progress.show("registering users", user_count as u64);
        load::register_users(&pool, user_count, &progress).await?
    };
    let channel_ids = if shared {
        Vec::new()
    } else {
        let _line = progress.show("creating channels", shape.channels as u64);
        load::create_channels(&pool, &users, shape.channels, shape.members, &progress).await?
    };
    let owners: Vec<User> = (0..channel_ids.len()).map(|c| users[c * shape.members].clone()).collect();
    let cpu_before = server.cpu_seconds();
    let mut report = Report {
        scenario: scenario.to_string(),
        size: format!("{size:?}").to_lowercase(),
        database: match (postgres.is_some(), files::s3s_binary().is_some()) {
            (false, false) => "sqlite".into(),
            (true, false) => "postgresql".into(),
            (false, true) => "sqlite, s3s-fs".into(),
            (true, true) => "postgresql, s3s-fs".into(),
        },
        ..Default::default()
    };
    match scenario {
        "idle" => idle(&pool, &server, &owners, &channel_ids, &shape, &progress, &mut report).await?,
        "reconnect" => reconnect(&pool, &users, &owners, &channel_ids, &shape, &progress, &mut report).await?,
        "history" => history(&pool, &owners, &channel_ids, &shape, &progress, &mut report).await?,
        "reaction-storm" => {
            conversation::reaction_storm(&pool, &users, &owners, &channel_ids, &shape, &progress, &mut report).await?
        }
        "unread-at-scale" => conversation::unread_at_scale(&pool, &users, &shape, &progress, &mut report).await?,
        "files" => files::uploads(&pool, &users, &shape, &progress, &mut report).await?,
        "search" => search::through_node(&pool, &users, &shape, &progress, &mut report, &data).await?,
        "retention" => {
            let url = database_url.as_deref();
            retention::run_over_corpus(&pool, &users, &shape, &progress, &mut report, &data, url).await?
        }
        "room" => {
            let room = options.room;
            report.room = Some(room);
            // The first people stream the room, and the first people talk.
            let streams = Shape { members: room.streams, streams_per_member: usize::from(room.streams > 0), ..shape };
            let talkers = Speakers::People(&users[..room.senders]);
            traffic(&pool, &users, talkers, &channel_ids, &streams, &progress, &mut report).await?
        }
        _ => traffic(&pool, &users, Speakers::Owners(&owners), &channel_ids, &shape, &progress, &mut report).await?,
    }
    report.server_cpu_s = server.cpu_seconds() - cpu_before;
    report.server_peak_rss_mib = server.memory().1 as f64 / (1024.0 * 1024.0);
    report.elapsed_s = started.elapsed().as_secs_f64();
    if let Some(traces) = &options.traces {
        // The node exports its spans in batches: the last ones leave as it stops.
        drop(pool);
        server.stop(Duration::from_secs(30)).await;
        let target = match &traces.target {
            TraceTarget::Collector(url) => url.clone(),
            TraceTarget::Sink => "a counting sink".into(),
        };
        let received = sink.as_ref().map(traces::Sink::totals);
        report.traces = Some((format!("{:.0}% of traces to {target}", traces.sample_ratio * 100.0), received));
    } else {
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(data.with_extension("s3"));
    if let Some(server) = postgres {
        databases(server, &prefix, true).await?;
    }
    Ok(report)
}

/// Opens one stream per member of every channel.
pub(super) async fn open_receivers(
    pool: &Pool,
    users: &[User],
    channel_ids: &[String],
    shape: &Shape,
    cursors: Option<&[Arc<std::sync::Mutex<Received>>]>,
    watch: &Watch,
    progress: &Progress,
) -> Result<Vec<Receiver>, BenchError> {
    use futures_util::StreamExt;

    let total = channel_ids.len() * shape.members;
    let _line = progress.show("opening streams", total as u64);
    let opened: Vec<Result<Receiver, BenchError>> = futures_util::stream::iter(0..total)
        .map(|i| {
            let channel = i / shape.members;
            let seen = cursors.map_or_else(Arc::default, |c| c[i].clone());
            let cursor = cursors.map(|_| seen.lock().map(|s| s.last_seq).unwrap_or(0));
            let (pool, user, channel_id) = (pool.clone(), users[i].clone(), channel_ids[channel].clone());
            let (progress, watch) = (progress.clone(), *watch);
            async move {
                let receiver = Receiver::open(&pool, &user, channel, &channel_id, cursor, seen, watch).await;
                progress.tick();
                receiver
            }
        })
        .buffered(256)
        .collect()
        .await;
    opened.into_iter().collect()
}

/// Scenarios 1 to 4 and the room: senders at a rate, every member
/// streaming (or none).
async fn traffic(
    pool: &Pool,
    users: &[User],
    speakers: Speakers<'_>,
    channel_ids: &[String],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    let receivers = if shape.streams_per_member > 0 {
        open_receivers(pool, users, channel_ids, shape, None, &Watch::Messages, progress).await?
    } else {
        Vec::new()
    };
    let cpu = CpuSample::take(pool.node_pid);
    let send_started = Instant::now();
    let sent = {
        let _line = progress.show("sending", shape.messages);
        let deadline = Instant::now() + Duration::from_secs(shape.max_secs);
        let plan = SendPlan { senders: shape.senders, rate: shape.rate, first_id: 0, total: shape.messages, deadline };
        load::send(pool, speakers, channel_ids, plan, progress).await
    };
    let send_secs = send_started.elapsed().as_secs_f64();
    let delivered_until = drain(&receivers, &sent).await;
    tally(report, &receivers, &sent, send_secs, delivered_until.duration_since(send_started).as_secs_f64());
    if !receivers.is_empty() {
        report.cpu_per_delivery_us = cpu.per_delivery(pool.node_pid, report.deliveries);
    }
    Ok(())
}

/// Waits until every receiver has every message sent to its channel, or
/// ten seconds without progress; returns when the last one arrived.
pub(super) async fn drain(receivers: &[Receiver], sent: &load::Sent) -> Instant {
    let expected: Vec<usize> =
        sent.ids_by_channel.iter().map(|ids| ids.lock().map(|ids| ids.len()).unwrap_or(0)).collect();
    let count = || -> (usize, usize) {
        receivers.iter().fold((0, 0), |(have, want), r| {
            let got = r.seen.lock().map(|s| s.ids.len()).unwrap_or(0);
            (have + got, want + expected[r.channel])
        })
    };
    let mut last = count();
    let mut last_change = Instant::now();
    while last.0 < last.1 && last_change.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = count();
        if now.0 != last.0 {
            last = now;
            last_change = Instant::now();
        }
    }
    last_change
}

pub(super) fn tally(report: &mut Report, receivers: &[Receiver], sent: &load::Sent, send_secs: f64, deliver_secs: f64) {
    report.streams = receivers.len();
    report.sends = sent.ids_by_channel.iter().map(|ids| ids.lock().map(|i| i.len() as u64).unwrap_or(0)).sum();
    report.send_failures = sent.failed.load(Ordering::Relaxed);
    report.sends_per_s = report.sends as f64 / send_secs.max(1e-9);
    report.ack_ms = Percentiles::of_micros(sent.ack_latencies_us.lock().map(|a| a.clone()).unwrap_or_default());
    let mut latencies = Vec::new();
    for receiver in receivers {
        let Ok(seen) = receiver.seen.lock() else { continue };
        let Ok(expected) = sent.ids_by_channel[receiver.channel].lock() else { continue };
        report.lost += expected.iter().filter(|id| !seen.ids.contains(id)).count() as u64;
        report.duplicated += seen.duplicates;
        report.deliveries += seen.ids.len() as u64;
        latencies.extend_from_slice(&seen.latencies_us);
    }
    report.deliveries_per_s = report.deliveries as f64 / deliver_secs.max(1e-9);
    report.latency_ms = Percentiles::of_micros(latencies);
}

/// Scenario 5: many connected streams doing nothing; memory per stream.
async fn idle(
    pool: &Pool,
    server: &Server,
    owners: &[User],
    channel_ids: &[String],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = server.memory();
    let users: Vec<User> =
        owners.iter().flat_map(|o| std::iter::repeat_n(o.clone(), shape.streams_per_member)).collect();
    let per_channel = Shape { members: shape.streams_per_member, ..shape.clone() };
    let receivers = open_receivers(pool, &users, channel_ids, &per_channel, None, &Watch::Messages, progress).await?;
    // Held open past one HTTP/2 keep-alive round (30 s) in the standard size.
    let hold = if receivers.len() >= 10_000 { 35 } else { 2 };
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let (after, _) = server.memory();
    report.streams = receivers.len();
    report.rss_per_stream_kib = Some(after.saturating_sub(before) as f64 / 1024.0 / receivers.len().max(1) as f64);
    Ok(())
}

/// Scenario 6: every client drops, misses messages, and resumes at once.
async fn reconnect(
    pool: &Pool,
    users: &[User],
    owners: &[User],
    channel_ids: &[String],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    const MISSED: u64 = 10;
    let receivers = open_receivers(pool, users, channel_ids, shape, None, &Watch::Messages, progress).await?;
    let far = Instant::now() + Duration::from_secs(600);
    let channels = channel_ids.len() as u64;
    // One message each so that every client has a cursor, then all drop.
    let plan = |first_id, total| SendPlan { senders: shape.senders, rate: 0, first_id, total, deadline: far };
    let warm_up = load::send(pool, Speakers::Owners(owners), channel_ids, plan(0, channels), progress).await;
    drain(&receivers, &warm_up).await;
    let seen: Vec<_> = receivers.into_iter().map(Receiver::close).collect();
    let missed = {
        let _line = progress.show("sending while disconnected", channels * MISSED);
        load::send(pool, Speakers::Owners(owners), channel_ids, plan(channels, channels * MISSED), progress).await
    };
    // Both batches count: each receiver must end with all of them, once.
    for (c, ids) in missed.ids_by_channel.iter().enumerate() {
        let (Ok(mut all), Ok(more)) = (warm_up.ids_by_channel[c].lock(), ids.lock()) else { continue };
        all.extend(more.iter().copied());
    }
    // The resume's CPU, streams reopened included, per event replayed.
    let delivered_before: u64 = seen.iter().map(|s| s.lock().map_or(0, |s| s.ids.len() as u64)).sum();
    let cpu = CpuSample::take(pool.node_pid);
    let resumed_at = Instant::now();
    let receivers = open_receivers(pool, users, channel_ids, shape, Some(&seen), &Watch::Messages, progress).await?;
    let caught_up = drain(&receivers, &warm_up).await;
    let catch_up = caught_up.duration_since(resumed_at).as_secs_f64();
    report.catch_up_s = Some(catch_up);
    tally(report, &receivers, &warm_up, catch_up, catch_up);
    report.cpu_per_delivery_us = cpu.per_delivery(pool.node_pid, report.deliveries.saturating_sub(delivered_before));
    Ok(())
}

/// Scenario 7: one long channel, paged back from the newest message.
async fn history(
    pool: &Pool,
    owners: &[User],
    channel_ids: &[String],
    shape: &Shape,
    progress: &Progress,
    report: &mut Report,
) -> Result<(), BenchError> {
    let send_started = Instant::now();
    let sent = {
        let _line = progress.show("filling the channel", shape.messages);
        let deadline = Instant::now() + Duration::from_secs(shape.max_secs);
        let plan = SendPlan { senders: shape.senders, rate: 0, first_id: 0, total: shape.messages, deadline };
        load::send(pool, Speakers::Owners(owners), channel_ids, plan, progress).await
    };
    tally(report, &[], &sent, send_started.elapsed().as_secs_f64(), 1.0);
    let pages = (shape.messages / 50) as usize;
    let latencies = load::page_back(pool, &owners[0], &channel_ids[0], 50, pages).await?;
    report.page_ms = Some(Percentiles::of_micros(latencies));
    Ok(())
}

const DATABASES: &[&str] = &["auth", "users", "channels", "messaging", "files", "admin", "search"];

/// Creates (or, with `drop`, removes) one database per service named after
/// `prefix`; returns the URL template.
async fn databases(server: &str, prefix: &str, drop: bool) -> Result<String, BenchError> {
    use sea_orm::ConnectionTrait;

    let server = server.trim_end_matches('/');
    let failed = |e: sea_orm::DbErr| BenchError::Database(e.to_string());
    let admin = sea_orm::Database::connect(format!("{server}/postgres")).await.map_err(failed)?;
    for service in DATABASES {
        let statement = if drop {
            format!("DROP DATABASE IF EXISTS {prefix}_{service} WITH (FORCE)")
        } else {
            format!("CREATE DATABASE {prefix}_{service}")
        };
        admin.execute_unprepared(&statement).await.map_err(failed)?;
    }
    Ok(format!("{server}/{prefix}_{{service}}"))
}

/// The results as a Markdown page: machine, date, command, and a table.
fn markdown(results: &[Report], options: &Options) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut out = format!(
        "# Benchmarks\n\nMeasured by `colink bench` against a `colink serve` child process on the same machine.\n\n\
         - machine: {cores} cores, {cpu}\n- date: {}\n- command: `{}`\n\n\
         | scenario | db | streams | sends/s | deliveries/s | send→deliver p50 / p99 / max ms | ack p99 ms | lost | dup | other | server CPU s | peak RSS MiB | goal |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        today(),
        options.command
    );
    for r in results {
        let mut other = Vec::new();
        if let Some(room) = r.room {
            other.push(format!("{room}; ack p50 {:.2} ms", r.ack_ms.p50));
        }
        other.extend(traces_line(r));
        if let Some(s) = r.catch_up_s {
            other.push(format!("caught up in {s:.2} s"));
        }
        if let Some(p) = &r.page_ms {
            other.push(format!("{} messages; page of 50: p50 {:.2} / p99 {:.2} ms", r.sends, p.p50, p.p99));
        }
        if let Some(k) = r.rss_per_stream_kib {
            other.push(format!("{k:.1} KiB per stream"));
        }
        if let Some(p) = &r.counts_ms {
            other.push(format!("GetUnreadCounts p50 {:.2} / p99 {:.2} ms", p.p50, p.p99));
        }
        if let Some(p) = &r.download_url_ms {
            other.push(format!("GetDownloadUrl p50 {:.2} / p99 {:.2} ms", p.p50, p.p99));
        }
        if let (Some(p), Some(per_s)) = (&r.scan_alone_ms, r.scan_alone_per_s) {
            other.push(format!("clamd alone {per_s:.1} files/s, scan p50 {:.2} / p99 {:.2} ms", p.p50, p.p99));
        }
        if let Some(per_s) = r.indexed_per_s {
            other.push(format!("{} messages indexed, {per_s:.0}/s", r.sends));
        }
        if let Some(bytes) = r.index_bytes_per_message {
            other.push(format!("index {bytes:.0} bytes per message"));
        }
        if let Some(per_s) = r.reindexed_per_s {
            other.push(format!("rebuilt at {per_s:.0} messages/s"));
        }
        if let Some(p) = &r.index_lag_ms {
            other.push(format!("send→searchable p50 {:.0} / p99 {:.0} ms", p.p50, p.p99));
        }
        if let Some(p) = &r.search_ms {
            other.push(format!("search p50 {:.2} / p95 {:.2} / p99 {:.2} ms", p.p50, p.p95, p.p99));
        }
        if let Some((n, p)) = &r.search_concurrent_ms {
            other.push(format!("{n} at a time: p50 {:.2} / p95 {:.2} / p99 {:.2} ms", p.p50, p.p95, p.p99));
        }
        if let (Some((deleted, secs)), Some(p)) = (r.retention, &r.ack_baseline_ms) {
            other.push(format!(
                "run deleted {deleted} messages in {secs:.1} s ({:.0}/s); 500 sends/s alongside: ack p99 {:.2} ms, {:.2} ms with no run",
                deleted as f64 / secs.max(1e-9),
                r.ack_ms.p99,
                p.p99
            ));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} | {} | {} | {} | {:.1} | {:.0} | {} |\n",
            r.scenario,
            r.database,
            r.streams,
            r.sends_per_s,
            r.deliveries_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.ack_ms.p99,
            r.lost,
            r.duplicated,
            other.join("; "),
            r.server_cpu_s,
            r.server_peak_rss_mib,
            goal(r)
        ));
    }
    out
}

/// The figure a scenario must reach on a 2-core machine, and whether this
/// run reached it. Smoke runs are too small to say.
fn goal(r: &Report) -> String {
    let postgres = r.database == "postgresql";
    let (text, met) = match r.scenario.as_str() {
        "ingest" if postgres => {
            ("≥ 10,000 sends/s, ack p99 ≤ 20 ms", r.sends_per_s >= 10_000.0 && r.ack_ms.p99 <= 20.0)
        }
        "ingest" => ("≥ 20,000 sends/s, ack p99 ≤ 20 ms", r.sends_per_s >= 20_000.0 && r.ack_ms.p99 <= 20.0),
        "small-channels" => ("1,000 msg/s, p99 ≤ 10 ms", r.sends_per_s >= 990.0 && r.latency_ms.p99 <= 10.0),
        "fan-out" => ("1,000 msg/s, p99 ≤ 50 ms", r.sends_per_s >= 990.0 && r.latency_ms.p99 <= 50.0),
        "big-channel" => ("10 msg/s, p99 ≤ 100 ms", r.latency_ms.p99 <= 100.0),
        "idle" => ("≤ 12 KiB per stream", r.rss_per_stream_kib.is_some_and(|k| k <= 12.0)),
        "reconnect" => ("all caught up < 2 s", r.catch_up_s.is_some_and(|s| s < 2.0)),
        "history" => ("page p99 ≤ 5 ms", r.page_ms.is_some_and(|p| p.p99 <= 5.0)),
        "reaction-storm" => ("1,000 reactions/s, p99 ≤ 100 ms", r.sends_per_s >= 990.0 && r.latency_ms.p99 <= 100.0),
        "unread-at-scale" => ("GetUnreadCounts p99 ≤ 5 ms", r.counts_ms.is_some_and(|p| p.p99 <= 5.0)),
        // The pipeline keeps up with clamd itself, and hands out URLs fast.
        "files" => (
            "≥ 80% of clamd's files/s, GetDownloadUrl p99 ≤ 5 ms",
            r.scan_alone_per_s.is_some_and(|alone| r.sends_per_s >= 0.8 * alone)
                && r.download_url_ms.is_some_and(|p| p.p99 <= 5.0),
        ),
        "search-index" => ("≥ 10,000 messages/s indexed", r.indexed_per_s.is_some_and(|n| n >= 10_000.0)),
        "search" => (
            "search p95 ≤ 50 ms and p99 ≤ 100 ms in 500 channels; searchable p99 ≤ 1 s at 1,000 msg/s",
            r.search_ms.is_some_and(|p| p.p95 <= 50.0 && p.p99 <= 100.0)
                && r.index_lag_ms.is_some_and(|p| p.p99 <= 1_000.0),
        ),
        "room" => match r.room {
            Some(Room { senders: 1, streams: 0, rate: 0, .. }) => {
                ("one sender: ack p50 ≤ 0.6 ms, p99 ≤ 2 ms", r.ack_ms.p50 <= 0.6 && r.ack_ms.p99 <= 2.0)
            }
            Some(Room { users: 50, streams: 10, senders: 5, rate: 0 }) if postgres => {
                ("≥ 5,000 sends/s, delivery p99 ≤ 10 ms", r.sends_per_s >= 5_000.0 && r.latency_ms.p99 <= 10.0)
            }
            Some(Room { users: 50, streams: 10, senders: 5, rate: 0 }) => {
                ("≥ 8,000 sends/s, delivery p99 ≤ 10 ms", r.sends_per_s >= 8_000.0 && r.latency_ms.p99 <= 10.0)
            }
            _ => ("no goal at this size of room; figures reported", r.send_failures == 0),
        },
        "retention" => (
            "run time and send ack p99 alongside reported",
            r.retention.is_some_and(|(deleted, _)| deleted == r.sends) && r.send_failures == 0,
        ),
        _ => ("", false),
    };
    let integrity = r.lost == 0 && r.duplicated == 0;
    match (r.size.as_str(), met && integrity) {
        ("smoke", _) => format!("{text} (smoke: not judged)"),
        (_, true) => format!("{text}: **met**"),
        (_, false) => format!("{text}: **missed**"),
    }
}

/// Today's date (UTC) as YYYY-MM-DD.
fn today() -> String {
    let days = colink_runtime::ids::now_micros().div_euclid(86_400_000_000);
    let (year, month, day) = colink_runtime::ids::civil_date(days);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_off_the_sorted_samples() {
        let p = Percentiles::of_micros((1..=1000).rev().map(|ms| ms * 1000).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max), (501.0, 950.0, 990.0, 1000.0));
        assert_eq!(Percentiles::of_micros(Vec::new()).max, 0.0);
    }

    #[test]
    fn dates_are_civil() {
        let date = today();
        assert_eq!(date.len(), 10);
        assert!(date.as_str() >= "2025-01-01", "{date}");
    }

    #[test]
    fn every_scenario_has_a_bounded_shape() {
        for scenario in SCENARIOS {
            for size in [Size::Smoke, Size::Standard] {
                let s = shape(scenario, size);
                assert!(s.channels >= 1 && s.members >= 1 && s.max_secs > 0, "{scenario}");
            }
        }
        assert!(shape("fan-out", Size::Standard).channels * shape("fan-out", Size::Standard).members == 10_000);
    }

    #[test]
    fn a_room_is_read_from_its_numbers_and_checked() {
        let room: Room = "2000, 1000, 20".parse().unwrap();
        assert_eq!(room, Room { users: 2_000, streams: 1_000, senders: 20, rate: 0 });
        assert_eq!("50,10,5,500".parse::<Room>().unwrap().rate, 500);
        for (text, names) in [
            ("50,10", "USERS,STREAMS,SENDERS"),
            ("50,ten,5", "STREAMS"),
            ("0,0,1", "USERS and SENDERS"),
            ("5,10,1", "at most USERS"),
            ("5,1,6", "at most USERS"),
            ("50,10,5,-1", "RATE"),
        ] {
            let err = text.parse::<Room>().unwrap_err();
            assert!(err.contains(names), "{text}: {err}");
        }
        // The deliveries a run keeps track of stay bounded.
        let big = room.shape(Size::Standard);
        assert!(big.messages * room.streams as u64 <= 10_000_000, "{big:?}");
        assert_eq!(Room::default().shape(Size::Smoke).messages, 200);
    }
}
