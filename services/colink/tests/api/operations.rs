//! What an operator relies on: a request id that joins the logs of every
//! call a request causes, metrics a real Prometheus scrapes, load shedding,
//! deadlines, CORS for browsers on another origin, and readiness that
//! follows the backends.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use colink_proto::auth::v1::RegisterRequest;
use colink_proto::channels::v1::{ChannelKind, CreateChannelRequest};
use colink_proto::messaging::v1::SendMessageRequest;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{TestApp, WAIT, http};
use crate::servers::{eventually, free_port};

/// `colink serve` in a process of its own, logging JSON (with each call's
/// span) to a file.
struct NodeProcess {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl NodeProcess {
    async fn start(env: &[(&str, &str)]) -> Self {
        let data = tempfile::TempDir::new().unwrap();
        let log = data.path().join("node.log");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_colink"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data.path())
            .env("COLINK_AUTH__ARGON2_MEMORY_KIB", "64")
            .env("COLINK_LOG__FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let node = Self { child, port, log, _data: data };
        let uri = node.uri();
        eventually(Duration::from_secs(30), "the node to serve", || {
            let uri = uri.clone();
            async move {
                let channel = Endpoint::from_shared(uri).ok()?.connect().await.ok()?;
                let answer = HealthClient::new(channel).check(HealthCheckRequest::default()).await.ok()?;
                (answer.into_inner().status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
        node
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the node (SIGTERM) and returns its log, a JSON value a line.
    fn stop(mut self) -> Vec<serde_json::Value> {
        let stopped = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(stopped.success());
        assert!(self.child.wait().unwrap().success(), "the node stops cleanly");
        let log = std::fs::read_to_string(&self.log).unwrap();
        log.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
    }
}

impl Drop for NodeProcess {
    /// A test that fails midway leaves no node behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request id given by the client comes back on the answer, and every
/// call the request causes inside the node, to other services, logs under
/// the same id: one search of the logs finds all of it.
#[tokio::test]
async fn a_request_id_comes_back_and_joins_the_logs_of_every_call_it_causes() {
    let node = NodeProcess::start(&[("COLINK_LOG__LEVEL", "info,colink_runtime::stack=debug")]).await;
    let app = TestApp::at(Endpoint::from_shared(node.uri()).unwrap().timeout(WAIT).connect_lazy());
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "ops", ChannelKind::Public, &[]).await;
    let mut request = ann.req(SendMessageRequest {
        channel_id: channel.channel_id.clone(),
        text: "traced".into(),
        idempotency_key: "ops-1".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("x-request-id", "ops-request-42".parse().unwrap());
    let answer = app.messaging().send_message(request).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "ops-request-42");
    let made =
        app.auth().get_sign_in_options(colink_proto::auth::v1::GetSignInOptionsRequest::default()).await.unwrap();
    let id = made.metadata().get("x-request-id").expect("a request id made by the node");
    assert_eq!(id.len(), 36, "a new UUID: {id:?}");

    let lines = node.stop();
    let calls: Vec<&str> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "ops-request-42" && l["fields"]["message"] == "rpc finished")
        .filter_map(|l| l["span"]["rpc"].as_str())
        .collect();
    assert!(calls.contains(&"/colink.messaging.v1.MessagingService/SendMessage"), "{calls:?}");
    assert!(
        calls.iter().any(|rpc| !rpc.starts_with("/colink.messaging.")),
        "the calls messaging made to other services carry the id: {calls:?}"
    );
    let finished = lines.iter().find(|l| l["span"]["request_id"] == "ops-request-42").unwrap();
    assert_eq!(finished["span"]["peer"], "127.0.0.1", "{finished}");
    assert!(finished["fields"]["latency_ms"].as_f64().is_some(), "{finished}");
}

/// `/metrics`: RED metrics per method and code, with no ids in any label.
#[tokio::test]
async fn metrics_count_calls_by_method_and_code_and_name_no_user() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let bad = app.channels().create_channel(ann.req(CreateChannelRequest::default())).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let answer = http("GET", &format!("{}/metrics", app.uri()), &[], b"").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = String::from_utf8(answer.body).unwrap();
    for expected in [
        "colink_rpc_handled_total{grpc_service=\"colink.auth.v1.AuthService\",grpc_method=\"Register\",grpc_code=\"OK\"} 1",
        "grpc_method=\"CreateChannel\",grpc_code=\"InvalidArgument\"} 1",
        "colink_rpc_duration_seconds_count{grpc_service=\"colink.auth.v1.AuthService\",grpc_method=\"Register\"} 1",
        "colink_db_connections{service=\"messaging\",",
        "colink_outbox_events{service=\"auth\"}",
        "colink_token_cache_lookups_total{result=\"miss\"}",
        "colink_streams_open{grpc_service=\"colink.realtime.v1.RealtimeService\",grpc_method=\"Connect\"} 0",
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    assert!(!text.contains(&ann.user_id), "no user id in a label");
}

/// A registration: slow with costly password hashing, so a call that stays
/// in flight for a while.
fn registration(username: &str) -> RegisterRequest {
    RegisterRequest {
        username: username.into(),
        password: "correct horse battery".into(),
        email: format!("{username}@example.com"),
        ..Default::default()
    }
}

/// Past `server.max_in_flight`, calls are refused at once with UNAVAILABLE
/// (and counted), while health checks still get their answer.
#[tokio::test]
async fn calls_past_the_in_flight_limit_are_shed_and_health_still_answers() {
    let app = TestApp::spawn_with(|c| {
        c.server.max_in_flight = 1;
        // Slow hashing keeps a registration in flight for a while.
        c.auth.argon2_memory_kib = 16 * 1024;
        c.auth.argon2_iterations = 2;
    })
    .await;
    let calls = (0..12).map(|i| {
        let mut auth = app.auth();
        async move { auth.register(registration(&format!("shed{i}"))).await }
    });
    let health = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        HealthClient::new(app.channel.clone()).check(HealthCheckRequest::default()).await
    };
    let (answers, health) = tokio::join!(futures_util::future::join_all(calls), health);
    assert_eq!(health.unwrap().into_inner().status, ServingStatus::Serving as i32);
    let shed: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(answers.iter().any(Result::is_ok), "one call at a time is served");
    assert!(!shed.is_empty(), "the others are refused");
    for status in &shed {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("limit of calls in flight"), "{status:?}");
    }
    let text = String::from_utf8(http("GET", &format!("{}/metrics", app.uri()), &[], b"").await.body).unwrap();
    let refused = format!("colink_rate_limit_refusals_total{{limit=\"overload\"}} {}", shed.len());
    assert!(text.contains(&refused), "{refused} in\n{text}");
}

/// A call that runs past the node's deadline (`server.request_timeout_ms`)
/// ends with DEADLINE_EXCEEDED from the node, which says so.
#[tokio::test]
async fn a_call_past_its_deadline_ends_deadline_exceeded() {
    let app = TestApp::spawn_with(|c| {
        c.server.request_timeout_ms = 100;
        c.auth.argon2_memory_kib = 64 * 1024;
        c.auth.argon2_iterations = 4;
    })
    .await;
    let status = app.auth().register(registration("late")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("did not finish within its deadline (100 ms)"), "{status:?}");
}

/// With `server.cors_origins`, a page on a listed origin may call the
/// node's gRPC-Web and read the status headers; any other origin gets no
/// CORS permission.
#[tokio::test]
async fn cors_lets_only_listed_origins_call_from_a_browser() {
    let app = TestApp::spawn_with(|c| c.server.cors_origins = vec!["https://chat.example.com".into()]).await;
    let url = format!("{}/colink.auth.v1.AuthService/GetSignInOptions", app.uri());
    let preflight = |origin: &'static str| {
        let url = url.clone();
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type,x-grpc-web,authorization"),
            ];
            http("OPTIONS", &url, &headers, b"").await
        }
    };
    let allowed = preflight("https://chat.example.com").await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://chat.example.com"));
    let methods = allowed.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{:?}", allowed.headers);
    let headers = allowed.header("access-control-allow-headers").unwrap_or_default();
    assert!(headers.contains("x-grpc-web") && headers.contains("authorization"), "{:?}", allowed.headers);
    let other = preflight("https://evil.example.net").await;
    assert_eq!(other.header("access-control-allow-origin"), None, "{:?}", other.headers);

    // The call itself, as gRPC-Web: its status is readable by the page.
    let headers =
        [("origin", "https://chat.example.com"), ("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")];
    let answer = http("POST", &url, &headers, &[0, 0, 0, 0, 0]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://chat.example.com"));
    let exposed = answer.header("access-control-expose-headers").unwrap_or_default();
    assert!(exposed.contains("grpc-status") && exposed.contains("x-request-id"), "{:?}", answer.headers);
}

/// A real Prometheus scrapes a node's admin listener (`metrics.listen`),
/// and `promtool` finds nothing to say about the exposition.
#[tokio::test]
#[ignore = "needs Prometheus: set COLINK_TEST_PROMETHEUS"]
async fn prometheus_scrapes_the_admin_listener_and_promtool_accepts_the_exposition() {
    let admin = format!("127.0.0.1:{}", free_port());
    let app = TestApp::spawn_with(|c| c.metrics.listen = admin.clone()).await;
    let ann = app.register("ann").await;
    app.create_channel(&ann, "scraped", ChannelKind::Public, &[]).await;

    let exposition = http("GET", &format!("http://{admin}/metrics"), &[], b"").await;
    assert_eq!(exposition.status, 200);
    let on_main = http("GET", &format!("{}/metrics", app.uri()), &[], b"").await;
    assert_ne!(on_main.header("content-type"), exposition.header("content-type"), "metrics leave the main listener");
    assert_eq!(http("GET", &format!("http://{admin}/readyz"), &[], b"").await.status, 200);
    assert_eq!(http("GET", &format!("http://{admin}/"), &[], b"").await.status, 404, "no app on the admin listener");

    let prometheus = std::path::PathBuf::from(std::env::var("COLINK_TEST_PROMETHEUS").unwrap());
    let promtool = prometheus.with_file_name("promtool");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), &exposition.body).unwrap();
    let checked = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");

    let server = crate::servers::Server::prometheus(&admin).await;
    let query = |q: &'static str| {
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={q}", server.port);
        async move {
            let answer = http("GET", &url, &[], b"").await;
            let body: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
            let value = body["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
            Some(value)
        }
    };
    let up =
        eventually(Duration::from_secs(30), "Prometheus to scrape the node", || query("up%7Bjob%3D%22colink%22%7D"))
            .await;
    assert_eq!(up, 1.0);
    let created = eventually(Duration::from_secs(30), "the scraped call count", || {
        query("colink_rpc_handled_total%7Bgrpc_method%3D%22CreateChannel%22%2Cgrpc_code%3D%22OK%22%7D")
    })
    .await;
    assert_eq!(created, 1.0);
}

/// Whether the node says it serves, through gRPC health and `/readyz`.
async fn serving(app: &TestApp) -> Option<bool> {
    let health = HealthClient::new(app.channel.clone()).check(HealthCheckRequest::default()).await.ok()?;
    let grpc = health.into_inner().status == ServingStatus::Serving as i32;
    let service = HealthCheckRequest { service: "colink.messaging.v1.MessagingService".into() };
    let messaging = HealthClient::new(app.channel.clone()).check(service).await.ok()?;
    let http = http("GET", &format!("{}/readyz", app.uri()), &[], b"").await.status == 200;
    let messaging = messaging.into_inner().status == ServingStatus::Serving as i32;
    (grpc == http && grpc == messaging).then_some(grpc)
}

async fn until_serving(app: &TestApp, expected: bool, what: &str) {
    eventually(Duration::from_secs(30), what, || async { (serving(app).await? == expected).then_some(()) }).await;
}

/// PostgreSQL out of reach (a partition, cut at a proxy): the node says it
/// is not serving, and serves again once the database is back.
#[tokio::test]
#[ignore = "needs PostgreSQL: set COLINK_TEST_POSTGRES"]
async fn readiness_follows_the_database() {
    let server = std::env::var(crate::helpers::POSTGRES_ENV).unwrap();
    let database = crate::helpers::fresh_postgres(&server).await;
    let mut proxy = crate::servers::Proxy::start("127.0.0.1:5432").await;
    let through_proxy = database.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(through_proxy, database, "the test server is at 127.0.0.1:5432");
    let app = TestApp::spawn_with(|c| c.database.url = through_proxy).await;
    assert_eq!(serving(&app).await, Some(true));
    proxy.cut();
    until_serving(&app, false, "NOT_SERVING without the database").await;
    proxy.restore().await;
    until_serving(&app, true, "SERVING with the database back").await;
    app.register("back").await;
}

/// The same for Kafka, when the node publishes there: a frozen broker
/// makes the node not ready, a thawed one ready again.
#[tokio::test]
#[ignore = "needs the tansu broker: set COLINK_TEST_TANSU"]
async fn readiness_follows_kafka() {
    let broker = crate::servers::Server::kafka().await;
    let prefix = format!("r{}.", uuid::Uuid::now_v7().simple());
    let app = TestApp::spawn_with(|c| {
        c.events.url = format!("kafka://127.0.0.1:{}", broker.port);
        c.events.topic_prefix = prefix;
        c.events.partitions = 1;
    })
    .await;
    until_serving(&app, true, "SERVING with the broker").await;
    broker.freeze();
    until_serving(&app, false, "NOT_SERVING with the broker frozen").await;
    broker.thaw();
    until_serving(&app, true, "SERVING with the broker back").await;
}

/// An OTLP receiver: keeps every span exported to it.
#[derive(Clone, Default)]
struct SpanSink {
    spans: std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for SpanSink {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// With traces on, one send is one trace: the client's trace continues
/// through the call, the calls it makes to other services, the commit, the
/// outbox relay and the event consumers, all exported over OTLP.
// Two threads: the receiver keeps answering while the test waits for the
// node to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_is_one_trace_from_the_client_to_the_event_consumers() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;

    let sink = SpanSink::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", receiver.local_addr().unwrap());
    let service = TraceServiceServer::new(sink.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(receiver)),
    );
    // Tracing does not hang on the log level: this node logs only warnings.
    let node =
        NodeProcess::start(&[("COLINK_TRACING__OTLP_ENDPOINT", endpoint.as_str()), ("COLINK_LOG__LEVEL", "warn")])
            .await;
    let app = TestApp::at(Endpoint::from_shared(node.uri()).unwrap().timeout(WAIT).connect_lazy());
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "traced", ChannelKind::Public, &[]).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = ann.req(SendMessageRequest {
        channel_id: channel.channel_id.clone(),
        text: "one trace".into(),
        idempotency_key: "trace-1".into(),
        ..Default::default()
    });
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    app.messaging().send_message(request).await.unwrap();
    // Stopping flushes what the node still holds.
    node.stop();

    let spans = sink.spans.lock().unwrap().clone();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let joined: Vec<_> = spans.iter().filter(|s| hex(&s.trace_id) == trace_id).collect();
    let attribute = |span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).map(|v| format!("{v:?}"))
    };
    let rpcs: Vec<String> = joined.iter().filter(|s| s.name == "rpc").filter_map(|s| attribute(s, "rpc")).collect();
    assert!(rpcs.iter().any(|r| r.contains("MessagingService/SendMessage")), "{rpcs:?}");
    assert!(rpcs.iter().any(|r| !r.contains("MessagingService")), "calls to other services join: {rpcs:?}");
    let names: Vec<&str> = joined.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"outbox.relay"), "{names:?}");
    assert!(names.contains(&"event.consume"), "{names:?}");
    // Every span but the client's hangs from another span of the trace.
    let ids: Vec<&Vec<u8>> = joined.iter().map(|s| &s.span_id).collect();
    for span in &joined {
        let parent = hex(&span.parent_span_id);
        assert!(parent == "00f067aa0ba902b7" || ids.contains(&&span.parent_span_id), "{} is an orphan", span.name);
    }
    let other = spans.iter().filter(|s| hex(&s.trace_id) != trace_id && s.name == "event.consume").count();
    assert!(other > 0, "the calls before the send are traces of their own");
}
