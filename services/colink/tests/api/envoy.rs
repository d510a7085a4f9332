//! The REST API of the seeds, through a real Envoy in front of a node:
//! gRPC-JSON transcoding from gen/colink.binpb, camelCase JSON, HTTP status
//! codes, JSON error bodies (Envoy's own answers included), the
//! Idempotency-Key header and CORS.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use colink_proto::auth::v1::RegisterRequest;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Endpoint;

use crate::helpers::{TestApp, assert_invalid};

/// Envoy with our configuration, pointed at one node; stopped on drop.
struct Envoy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Envoy {
    async fn start(node: &TestApp) -> Self {
        Self::start_before(&[node]).await
    }

    /// Envoy in front of `nodes`: all of them serve the `colink` cluster,
    /// the first the realtime one.
    async fn start_before(nodes: &[&TestApp]) -> Self {
        let port = free_port();
        let config = configure("envoy/envoy.yaml", nodes, "port_value: 8080", port);
        let envoy = Self::run(config, port);
        // Ready when Envoy answers and sees the node healthy.
        for _ in 0..150 {
            if let Ok((200, _, _)) = envoy.try_call("GET", "/.well-known/jwks.json", None, &[]).await {
                return envoy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("envoy did not become ready");
    }

    fn run(config: String, port: u16) -> Self {
        let binary = std::env::var("COLINK_TEST_ENVOY").expect("COLINK_TEST_ENVOY must name the envoy binary");
        let dir = tempfile::TempDir::new().unwrap();
        if config.contains("/etc/envoy/tls/") {
            self_signed_certificate(dir.path());
        }
        let config = config.replace("/etc/envoy/tls/", &format!("{}/", dir.path().display()));
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let access_log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let child = Command::new(binary)
            .args(["-c", path.to_str().unwrap(), "--log-level", "warn", "--use-dynamic-base-id"])
            .stdout(access_log)
            .spawn()
            .expect("envoy starts");
        Self { child, port, _dir: dir }
    }

    /// The access log's entries so far, one JSON object per request.
    fn access_log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// A gRPC client of the node through Envoy.
    fn grpc(&self) -> TestApp {
        let uri = format!("http://127.0.0.1:{}", self.port);
        TestApp::at(Endpoint::from_shared(uri).expect("endpoint").timeout(crate::helpers::WAIT).connect_lazy())
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> (u16, Value) {
        let (status, _, body) = self.try_call(method, path, body, headers).await.expect("http exchange");
        let json = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        (status, json)
    }

    /// One HTTP/1.1 exchange on a fresh connection.
    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
        self.try_call_from([127, 0, 0, 1], method, path, body, headers).await
    }

    /// The same from another client address (of 127.0.0.0/8).
    async fn try_call_from(
        &self,
        source: [u8; 4],
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
        let client = tokio::net::TcpSocket::new_v4()?;
        client.bind((std::net::Ipv4Addr::from(source), 0).into())?;
        let mut socket = client.connect(([127, 0, 0, 1], self.port).into()).await?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: colink\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        socket.write_all(request.as_bytes()).await?;
        // Read until the response is whole rather than until the socket
        // closes: after a reply of its own, Envoy lingers a second before
        // closing the connection.
        let mut raw = Vec::new();
        tokio::time::timeout(crate::helpers::WAIT, async {
            let mut chunk = [0_u8; 8192];
            while !response_complete(&raw) {
                match socket.read(&mut chunk).await? {
                    0 => break,
                    n => raw.extend_from_slice(&chunk[..n]),
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await??;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
            .collect();
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked { dechunk(rest) } else { rest.to_string() };
        Ok((status, headers, body))
    }
}

/// tls.crt and tls.key in `dir`: a certificate for localhost, as a TLS
/// Secret would hold one.
fn self_signed_certificate(dir: &Path) {
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(made.success(), "openssl made a certificate");
}

/// An Envoy configuration of the repository pointed at `nodes`, listening
/// (where `listener` says) on `port`, with the descriptor set of the tree.
fn configure(file: &str, nodes: &[&TestApp], listener: &str, port: u16) -> String {
    let port_of = |node: &TestApp| node.uri().rsplit(':').next().unwrap().to_string();
    let node_port = port_of(nodes[0]);
    let mut config = std::fs::read_to_string(repo().join(file)).unwrap();
    let endpoint = "              - endpoint:\n                  address:\n                    \
                    socket_address: { address: 127.0.0.1, port_value: 7700 }\n";
    let core = config.find("        cluster_name: colink\n").unwrap();
    let at = core + config[core..].find(endpoint).unwrap();
    let endpoints: String = nodes
        .iter()
        .map(|node| endpoint.replace("port_value: 7700", &format!("port_value: {}", port_of(node))))
        .collect();
    config.replace_range(at..at + endpoint.len(), &endpoints);
    config
        .replace(listener, &format!("port_value: {port}"))
        .replace("port_value: 7700", &format!("port_value: {node_port}"))
        .replace("port_value: 9901", &format!("port_value: {}", free_port()))
        .replace("\"gen/colink.binpb\"", &format!("{:?}", repo().join("gen/colink.binpb")))
}

/// Whether `raw` holds a whole HTTP/1.1 response: its head, and a body as
/// long as Content-Length says, or chunks up to the last one.
fn response_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= length;
    }
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return body.ends_with("0\r\n\r\n");
    }
    false
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn the_rest_api_of_the_seeds_works_through_envoy() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;

    let (status, registered) = envoy
        .call(
            "POST",
            "/v1/auth/register",
            Some(json!({"username": "alice", "email": "alice@example.com", "password": "correct horse battery"})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(registered["account"]["username"], "alice");
    // The seeds' unversioned sign-in path.
    let (status, login) = envoy
        .call("POST", "/auth/login", Some(json!({"login": "alice", "password": "correct horse battery"})), &[])
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["tokens"]["accessToken"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, wrong) =
        envoy.call("POST", "/auth/login", Some(json!({"login": "alice", "password": "nope nope"})), &[]).await;
    assert_eq!(status, 401, "{wrong}");

    let (status, created) = envoy
        .call("POST", "/v1/channels", Some(json!({"name": "general", "kind": "CHANNEL_KIND_PUBLIC"})), &auth)
        .await;
    assert_eq!(status, 200, "{created}");
    let channel_id = created["channel"]["channelId"].as_str().unwrap().to_string();

    // A retry with the same Idempotency-Key returns the same message.
    let with_key = [("Authorization", bearer.as_str()), ("Idempotency-Key", "7c9e6679-7425-40de-944b-e07fc1f90ae7")];
    let send = json!({"channelId": channel_id, "text": "Hello team! 👋", "fileIds": []});
    let (status, first) = envoy.call("POST", "/v1/messages", Some(send.clone()), &with_key).await;
    assert_eq!(status, 200, "{first}");
    let (_, retry) = envoy.call("POST", "/v1/messages", Some(send), &with_key).await;
    assert_eq!(first["message"]["messageId"], retry["message"]["messageId"]);
    assert_eq!(first["message"]["text"], "Hello team! 👋");

    let (status, listed) = envoy.call("GET", &format!("/v1/messages?channelId={channel_id}"), None, &auth).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1);
    let (status, members) = envoy.call("GET", &format!("/v1/channels/{channel_id}/members"), None, &auth).await;
    assert_eq!((status, members["members"].as_array().unwrap().len()), (200, 1));

    let message_id = first["message"]["messageId"].as_str().unwrap();
    let (status, edited) =
        envoy.call("PATCH", &format!("/v1/messages/{message_id}"), Some(json!({"text": "Hello, team!"})), &auth).await;
    assert_eq!((status, edited["message"]["version"].as_i64()), (200, Some(2)), "{edited}");
    let (status, deleted) = envoy.call("DELETE", &format!("/v1/messages/{message_id}"), None, &auth).await;
    assert_eq!((status, deleted["message"]["deleted"].as_bool()), (200, Some(true)), "{deleted}");

    // Errors become HTTP status codes.
    let (status, _) =
        envoy.call("POST", "/v1/messages", Some(json!({"channelId": channel_id, "text": ""})), &auth).await;
    assert_eq!(status, 400);
    let (status, _) = envoy.call("GET", "/v1/users/me", None, &[]).await;
    assert_eq!(status, 401);
    let (status, _) = envoy.call("GET", &format!("/v1/channels/{}", uuid::Uuid::now_v7()), None, &auth).await;
    assert_eq!(status, 404);

    // Browsers: CORS preflight, and the key set at its conventional path.
    let preflight = [("Origin", "https://chat.example.com"), ("Access-Control-Request-Method", "POST")];
    let (status, headers, _) = envoy.try_call("OPTIONS", "/v1/messages", None, &preflight).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        headers.iter().any(|(k, v)| k == "access-control-allow-origin" && v == "https://chat.example.com"),
        "{headers:?}"
    );
    let (status, jwks) = envoy.call("GET", "/.well-known/jwks.json", None, &[]).await;
    assert_eq!((status, jwks["keys"][0]["alg"].as_str()), (200, Some("EdDSA")));
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn threads_and_reactions_over_rest() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;
    let alice = node.register("alice").await;
    let room = node.create_channel(&alice, "room", colink_proto::channels::v1::ChannelKind::Public, &[]).await;
    let root = node.send(&alice, &room.channel_id, "root").await;
    let bearer = format!("Bearer {}", alice.token());
    let auth = [("Authorization", bearer.as_str())];

    let keyed = [("Authorization", bearer.as_str()), ("Idempotency-Key", "thread-1")];
    let body = json!({"parentMessageId": root.message_id, "text": "first reply"});
    let (status, created) = envoy.call("POST", "/v1/threads", Some(body.clone()), &keyed).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        (created["threadCreated"].as_bool(), created["thread"]["threadId"].as_str()),
        (Some(true), Some(root.message_id.as_str()))
    );
    let (_, retry) = envoy.call("POST", "/v1/threads", Some(body), &keyed).await;
    assert_eq!(retry["reply"]["messageId"], created["reply"]["messageId"]);
    let path = format!("/v1/threads/{}/replies", root.message_id);
    let (status, replied) = envoy.call("POST", &path, Some(json!({"text": "second"})), &auth).await;
    assert_eq!((status, replied["thread"]["replyCount"].as_i64()), (200, Some(2)), "{replied}");
    let (status, page) =
        envoy.call("GET", &format!("{path}?pageSize=1&direction=PAGE_DIRECTION_BACKWARD"), None, &auth).await;
    assert_eq!((status, page["replies"][0]["text"].as_str()), (200, Some("second")), "{page}");
    let (status, followed) = envoy.call("GET", "/v1/threads:followed", None, &auth).await;
    assert_eq!((status, followed["threads"].as_array().map(Vec::len)), (200, Some(1)), "{followed}");

    let reactions = format!("/v1/messages/{}/reactions", root.message_id);
    let (status, added) = envoy.call("POST", &reactions, Some(json!({"emoji": "👍"})), &auth).await;
    assert_eq!((status, added["reactions"]["groups"][0]["count"].as_i64()), (200, Some(1)), "{added}");
    let (status, again) = envoy.call("POST", &reactions, Some(json!({"emoji": "👍"})), &auth).await;
    assert_eq!(status, 409, "{again}");
    let (status, bad) = envoy.call("POST", &reactions, Some(json!({"emoji": "not one"})), &auth).await;
    assert_eq!((status, violated_fields(&bad)), (400, vec!["emoji".to_string()]), "{bad}");
    // The emoji travels URL-encoded in the path.
    let (status, users) = envoy.call("GET", &format!("{reactions}/%F0%9F%91%8D/users"), None, &auth).await;
    assert_eq!((status, users["totalCount"].as_i64()), (200, Some(1)), "{users}");
    let (status, removed) = envoy.call("DELETE", &format!("{reactions}/%F0%9F%91%8D"), None, &auth).await;
    assert_eq!((status, removed["removed"].as_bool()), (200, Some(true)), "{removed}");
    let (status, message) = envoy.call("GET", &format!("/v1/messages/{}", root.message_id), None, &auth).await;
    assert_eq!((status, message["message"]["thread"]["replyCount"].as_i64()), (200, Some(2)), "{message}");
}

/// An answer that must be JSON: its status, its `Allow` header and its body.
async fn json_answer(
    envoy: &Envoy,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let (status, response_headers, text) = envoy.try_call(method, path, body, headers).await.expect("http exchange");
    let header = |name: &str| response_headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("content-type").as_deref(), Some("application/json"), "{method} {path}: {status} {text}");
    let json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {status} {text:?} is not JSON: {e}"));
    (status, header("allow"), json)
}

/// The fields that a JSON error's `google.rpc.BadRequest` details name.
fn violated_fields(error: &Value) -> Vec<String> {
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|detail| detail["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .flat_map(|detail| detail["fieldViolations"].as_array().into_iter().flatten())
        .filter_map(|violation| violation["field"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn field_violations_come_back_as_json_naming_the_fields() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;

    let bad = json!({"username": "a", "email": "x", "password": "a"});
    let (status, _, error) = json_answer(&envoy, "POST", "/v1/auth/register", Some(bad), &[]).await;
    assert_eq!((status, error["code"].as_i64()), (400, Some(3)), "{error}");
    let fields = violated_fields(&error);
    for field in ["username", "email", "password"] {
        assert!(fields.iter().any(|f| f == field), "no violation for {field}: {error}");
    }

    let user = envoy.grpc().register("alice").await;
    let bearer = format!("Bearer {}", user.token());
    let auth = [("Authorization", bearer.as_str())];
    // A bad query parameter, after the transcoder has parsed it.
    let (status, _, error) = json_answer(&envoy, "GET", "/v1/messages?pageSize=-5", None, &auth).await;
    assert_eq!((status, error["code"].as_i64()), (400, Some(3)), "{error}");
    assert!(violated_fields(&error).iter().any(|f| f == "page_size"), "{error}");
    // One the transcoder rejects itself.
    let (status, _, error) = json_answer(&envoy, "GET", "/v1/messages?bogus=1", None, &auth).await;
    assert_eq!((status, error["code"].as_i64()), (400, Some(3)), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("bogus")), "{error}");

    // gRPC clients still find the violations in the status.
    let bad = RegisterRequest { username: "a".into(), email: "x".into(), password: "a".into(), ..Default::default() };
    assert_invalid(envoy.grpc().auth().register(bad).await, "username");
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn unknown_paths_are_404_and_wrong_methods_405_in_json() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;
    let user = envoy.grpc().register("alice").await;
    let bearer = format!("Bearer {}", user.token());
    let auth = [("Authorization", bearer.as_str())];

    let (status, allow, error) = json_answer(&envoy, "GET", "/v1/nope", None, &auth).await;
    assert_eq!((status, allow, error["code"].as_i64()), (404, None, Some(5)), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    // A gRPC method's path is no REST route.
    let (status, _, error) =
        json_answer(&envoy, "POST", "/colink.auth.v1.AuthService/Login", Some(json!({})), &[]).await;
    assert_eq!(status, 404, "{error}");

    let (status, allow, error) = json_answer(&envoy, "DELETE", "/v1/auth/login", None, &[]).await;
    assert_eq!((status, allow.as_deref(), error["code"].as_i64()), (405, Some("POST"), Some(12)), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| m.contains("POST")), "{error}");
    // /v1/users/me is also a /v1/users/{user_id}: both paths' methods count.
    let (status, allow, error) = json_answer(&envoy, "PUT", "/v1/users/me", None, &auth).await;
    assert_eq!((status, allow.as_deref(), error["code"].as_i64()), (405, Some("GET, PATCH"), Some(12)), "{error}");
    let (status, me) = envoy.call("GET", "/v1/users/me", None, &auth).await;
    assert_eq!((status, me["user"]["userId"].as_str()), (200, Some(user.user_id.as_str())), "{me}");

    // Browsers may read these answers, and a preflight still gets its own.
    let origin = [("Origin", "https://chat.example.com")];
    let (status, headers, _) = envoy.try_call("GET", "/v1/nope", None, &origin).await.unwrap();
    assert_eq!(status, 404);
    assert!(headers.iter().any(|(k, v)| k == "access-control-allow-origin" && v == origin[0].1), "{headers:?}");
    let preflight = [origin[0], ("Access-Control-Request-Method", "POST")];
    let (status, headers, _) = envoy.try_call("OPTIONS", "/v1/nope", None, &preflight).await.unwrap();
    assert_eq!(status, 200, "{headers:?}");

    // gRPC-Web is not REST: it reaches the node, which answers in gRPC-Web
    // (here that the request has no message).
    let grpc_web = [("Content-Type", "application/grpc-web+proto"), ("X-Grpc-Web", "1")];
    let (status, headers, _) = envoy.try_call("POST", "/grpc.health.v1.Health/Check", None, &grpc_web).await.unwrap();
    assert_eq!(status, 200, "{headers:?}");
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/grpc-web")), "{headers:?}");
    assert!(headers.iter().any(|(k, _)| k == "grpc-status"), "{headers:?}");
}

/// Every REST path answers 405 to each method none of its HTTP rules takes,
/// naming the ones they do, and passes those on to the node. Envoy's routes
/// for this are generated; this notices when they lag behind the protos.
#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn every_rest_path_tells_a_wrong_method_from_an_unknown_path() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;
    let bindings = http_bindings();
    assert!(bindings.len() > 100, "{bindings:?}");

    let templates: BTreeSet<&str> = bindings.iter().map(|(_, template)| template.as_str()).collect();
    for template in templates {
        let path = example_path(template);
        let takes: BTreeSet<&str> =
            bindings.iter().filter(|(_, t)| template_matches(t, &path)).map(|(m, _)| m.as_str()).collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let (status, headers, body) = envoy.try_call(method, &path, None, &[]).await.expect("http exchange");
            if takes.contains(method) {
                // The node's own 404s are fine; Envoy's are not.
                let from_node = headers.iter().any(|(k, _)| k == "x-envoy-upstream-service-time");
                assert!(status != 405 && (status != 404 || from_node), "{method} {path}: {status} {body}");
            } else {
                let allow: BTreeSet<&str> =
                    headers.iter().filter(|(k, _)| k == "allow").flat_map(|(_, v)| v.split(", ")).collect();
                assert_eq!((status, allow), (405, takes.clone()), "{method} {path}: {body}");
            }
        }
    }
}

/// A path that `template` matches: each variable, one segment in every
/// Colink template, becomes `x`.
fn example_path(template: &str) -> String {
    template.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
}

fn template_matches(template: &str, path: &str) -> bool {
    let (template, path): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    template.len() == path.len()
        && template.iter().zip(&path).all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// Every (method, path template) of the HTTP rules in the descriptor set
/// that Envoy transcodes from.
fn http_bindings() -> Vec<(String, String)> {
    use prost::Message;

    // Just enough of descriptor.proto and google/api/http.proto: prost_types
    // drops the `google.api.http` method option.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileSet {
        #[prost(message, repeated, tag = "1")]
        file: Vec<File>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct File {
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Service {
        #[prost(message, repeated, tag = "2")]
        method: Vec<Method>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Method {
        #[prost(message, optional, tag = "4")]
        options: Option<MethodOptions>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct MethodOptions {
        #[prost(message, optional, tag = "72295728")]
        http: Option<HttpRule>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct HttpRule {
        #[prost(string, optional, tag = "2")]
        get: Option<String>,
        #[prost(string, optional, tag = "3")]
        put: Option<String>,
        #[prost(string, optional, tag = "4")]
        post: Option<String>,
        #[prost(string, optional, tag = "5")]
        delete: Option<String>,
        #[prost(string, optional, tag = "6")]
        patch: Option<String>,
        #[prost(message, repeated, tag = "11")]
        additional_bindings: Vec<HttpRule>,
    }

    fn collect(rule: &HttpRule, out: &mut Vec<(String, String)>) {
        let verbs = [
            ("GET", &rule.get),
            ("PUT", &rule.put),
            ("POST", &rule.post),
            ("DELETE", &rule.delete),
            ("PATCH", &rule.patch),
        ];
        for (verb, path) in verbs {
            if let Some(path) = path {
                out.push((verb.to_string(), path.clone()));
            }
        }
        for extra in &rule.additional_bindings {
            collect(extra, out);
        }
    }

    let set = FileSet::decode(colink_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut bindings = Vec::new();
    for method in set.file.iter().flat_map(|f| &f.service).flat_map(|s| &s.method) {
        if let Some(rule) = method.options.as_ref().and_then(|o| o.http.as_ref()) {
            collect(rule, &mut bindings);
        }
    }
    bindings
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn throttled_logins_are_429_with_when_to_retry() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;
    let wrong = json!({"login": "nobody", "password": "wrong password"});
    for _ in 0..5 {
        let (status, _) = envoy.call("POST", "/v1/auth/login", Some(wrong.clone()), &[]).await;
        assert_eq!(status, 401);
    }
    let (status, body) = envoy.call("POST", "/v1/auth/login", Some(wrong), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], 8, "{body}");
    let retry = body["details"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"))
        .unwrap_or_else(|| panic!("retry information in {body}"));
    assert!(retry["retryDelay"].as_str().is_some_and(|d| d.ends_with('s')), "{body}");
}

/// Each client address has its own budget at the edge: the seeds' 100 a
/// minute for the calls that sign in. One address over it gets 429
/// (RESOURCE_EXHAUSTED) from Envoy itself, another still gets through.
/// The nodes' metrics are never served at the edge.
#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn each_client_address_has_its_own_budget_at_the_edge() {
    let app = TestApp::spawn().await;
    let envoy = Envoy::start(&app).await;
    let verify = |source: [u8; 4]| {
        let envoy = &envoy;
        async move {
            let body = json!({ "challengeId": "nonsense", "code": "123456" });
            envoy.try_call_from(source, "POST", "/v1/auth/login/verify", Some(body), &[]).await.unwrap()
        }
    };
    // The bucket refills continuously (100 a minute): a few more calls get
    // through while the first hundred are made.
    let mut served = 0;
    let body = loop {
        let (status, _, body) = verify([127, 0, 0, 1]).await;
        if status != 400 {
            assert_eq!(status, 429, "{body}");
            break body;
        }
        served += 1;
        assert!(served <= 120, "no limit after {served} calls");
    };
    assert!(served >= 100, "refused after only {served} calls");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 8, "RESOURCE_EXHAUSTED: {body}");
    assert_eq!(body["message"], "local_rate_limited", "Envoy's own answer: {body}");
    let (status, _, _) = verify([127, 0, 0, 2]).await;
    assert_eq!(status, 400, "another address has its own budget");
    let (status, _) = envoy.call("GET", "/v1/users/me", None, &[]).await;
    assert_eq!(status, 401, "other calls have a budget of their own");

    assert_eq!(envoy.call("GET", "/metrics", None, &[]).await.0, 404);
    let direct = crate::helpers::http("GET", &format!("{}/metrics", app.uri()), &[], b"").await;
    assert_eq!(direct.status, 200, "the node itself serves them");
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn the_web_client_is_served_through_envoy_too() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;
    let header = |headers: &[(String, String)], name: &str| {
        headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let (status, headers, page) = envoy.try_call("GET", "/", None, &[]).await.unwrap();
    assert_eq!((status, header(&headers, "content-type").as_str()), (200, "text/html; charset=utf-8"), "{page}");
    let script =
        page.split('"').find(|p| p.starts_with("/assets/") && p.ends_with(".js")).expect("a script").to_string();
    let (status, headers, _) = envoy.try_call("GET", &script, None, &[]).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cache-control"), "public, max-age=31536000, immutable");
    // The app's own routes reach it; the REST namespaces keep their 404s.
    let (status, _, deep) = envoy.try_call("GET", "/channels/general", None, &[]).await.unwrap();
    assert!(status == 200 && deep.contains("<div id=\"app\">"), "{status} {deep}");
    // So does the identity provider's way back, and the page asks how to sign in.
    let (status, _, back) = envoy.try_call("GET", "/sso/callback?code=c&state=s", None, &[]).await.unwrap();
    assert!(status == 200 && back.contains("<div id=\"app\">"), "{status} {back}");
    let (status, options) =
        envoy.call("GET", "/v1/auth/sign-in-options", None, &[("x-request-id", "0b6c6a5e-access-log-test")]).await;
    assert_eq!((status, options["password"].as_bool()), (200, Some(true)), "{options}");
    assert_eq!((options["passkeys"].as_bool(), options["passkeyRpId"].as_str()), (Some(true), Some("localhost")));
    // A passkey sign-in begins over REST too, without a token.
    let (status, begun) = envoy.call("POST", "/v1/auth/passkeys/sign-in/begin", Some(serde_json::json!({})), &[]).await;
    let request: serde_json::Value =
        serde_json::from_str(begun["requestOptionsJson"].as_str().unwrap_or("null")).unwrap();
    assert!(status == 200 && begun["signInId"].is_string() && request["publicKey"]["challenge"].is_string(), "{begun}");
    let (status, rest) = envoy.call("GET", "/v1/nope", None, &[]).await;
    assert_eq!((status, rest["code"].as_i64()), (404, Some(5)), "{rest}");
    let (status, rest) = envoy.call("GET", "/auth/nope", None, &[]).await;
    assert_eq!(status, 404, "{rest}");

    // Each request is a JSON line in Envoy's access log, with the request
    // id the node logs too. Envoy writes the log out every 10 s.
    crate::servers::eventually(Duration::from_secs(20), "the access log entry", || async {
        let entries = envoy.access_log();
        let entry = entries.iter().find(|e| e["request_id"] == "0b6c6a5e-access-log-test")?.clone();
        // The path the client asked for, and the call it became.
        assert_eq!((entry["path"].as_str(), entry["status"].as_i64()), (Some("/v1/auth/sign-in-options"), Some(200)));
        assert_eq!(entry["rpc"], "/colink.auth.v1.AuthService/GetSignInOptions", "{entry}");
        assert!(
            entry["duration_ms"].is_number() && entry["upstream"].as_str().is_some_and(|u| !u.is_empty()),
            "{entry}"
        );
        assert!(entries.iter().any(|e| e["path"] == "/auth/nope" && e["status"] == 404), "{entries:?}");
        Some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn a_call_goes_to_another_node_when_one_is_gone() {
    let mut gone = TestApp::spawn().await;
    let staying = TestApp::spawn().await;
    let envoy = Envoy::start_before(&[&gone, &staying]).await;
    for _ in 0..4 {
        assert_eq!(envoy.call("GET", "/v1/auth/sign-in-options", None, &[]).await.0, 200);
    }
    // One node stops: its connections close and its port refuses. Before
    // health checks notice (seconds), Envoy still picks it for about half
    // the calls, and sends each of those to the other node instead.
    gone.node.take().unwrap().shutdown().await.unwrap();
    for _ in 0..20 {
        let (status, body) = envoy.call("GET", "/v1/auth/sign-in-options", None, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn a_file_goes_up_and_down_over_rest() {
    let node = TestApp::spawn().await;
    let envoy = Envoy::start(&node).await;
    // The first account is the admin, who still sees deleted files.
    node.register("root").await;
    let alice = node.register("alice").await;
    let bearer = format!("Bearer {}", alice.token());
    let auth = [("Authorization", bearer.as_str())];
    let keyed = [("Authorization", bearer.as_str()), ("Idempotency-Key", "upload-1")];
    let body = json!({"filename": "notes.txt", "sizeBytes": "11", "mimeType": "text/plain"});
    let (status, started) = envoy.call("POST", "/v1/files/upload-url", Some(body.clone()), &keyed).await;
    assert_eq!((status, started["uploadMethod"].as_str()), (200, Some("PUT")), "{started}");
    let (_, retried) = envoy.call("POST", "/v1/files/upload-url", Some(body), &keyed).await;
    assert_eq!(retried["file"]["fileId"], started["file"]["fileId"]);
    let file_id = started["file"]["fileId"].as_str().unwrap().to_string();
    let upload_url = started["uploadUrl"].as_str().unwrap();
    let headers: Vec<(String, String)> = started["uploadHeaders"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(crate::helpers::http("PUT", upload_url, &headers, b"hello files").await.status, 200);
    let (status, confirmed) = envoy.call("POST", &format!("/v1/files/{file_id}/confirm"), Some(json!({})), &auth).await;
    assert_eq!(
        (status, confirmed["file"]["state"].as_str(), confirmed["file"]["scanStatus"].as_str()),
        (200, Some("FILE_STATE_READY"), Some("SCAN_STATUS_UNSCANNED")),
        "{confirmed}"
    );
    let (status, download) = envoy.call("GET", &format!("/v1/files/{file_id}/download-url"), None, &auth).await;
    assert_eq!(status, 200, "{download}");
    let got = crate::helpers::http("GET", download["url"].as_str().unwrap(), &[], b"").await;
    assert_eq!(got.body, b"hello files");
    let (status, quota) = envoy.call("GET", "/v1/files/quota", None, &auth).await;
    assert_eq!((status, quota["quota"]["usedBytes"].as_str()), (200, Some("11")), "{quota}");
    let bad = json!({"filename": "x.txt", "sizeBytes": "0", "mimeType": "text/plain"});
    let (status, refused) = envoy.call("POST", "/v1/files/upload-url", Some(bad), &auth).await;
    assert_eq!((status, violated_fields(&refused)), (400, vec!["size_bytes".to_string()]), "{refused}");
    let (status, deleted) = envoy.call("DELETE", &format!("/v1/files/{file_id}"), None, &auth).await;
    assert_eq!((status, deleted["file"]["state"].as_str()), (200, Some("FILE_STATE_DELETED")), "{deleted}");
    let (status, _) = envoy.call("GET", &format!("/v1/files/{file_id}"), None, &auth).await;
    assert_eq!(status, 404);
}

/// A node stopped as Kubernetes stops a pod (SIGTERM: `Node::shutdown`)
/// while clients send through Envoy: no idempotent call fails (calls in
/// flight finish, later ones go to the other node), nothing acknowledged
/// is lost, and a stream on the stopping node gets its resume hint, from
/// which it resumes on the other node without a gap or a repeat.
#[tokio::test]
#[ignore = "needs Envoy, PostgreSQL and Redis: set COLINK_TEST_ENVOY, COLINK_TEST_POSTGRES and COLINK_TEST_REDIS"]
async fn a_node_drains_under_load_and_no_client_sees_a_failed_call() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use colink_proto::channels::v1::ChannelKind;
    use colink_proto::messaging::v1::SendMessageRequest;
    use colink_proto::messaging::v1::channel_event::Kind;
    use colink_proto::realtime::v1::server_frame::Frame;

    // The load is paced: unpaced, a fast machine takes one person past
    // the edge's budget per address (1,200 calls a minute) and the node's
    // budget of sends (1,000 a minute), and those refusals are not what
    // this test is about.
    let (mut stopping, staying) = crate::cluster::two_nodes_with(|c| c.ephemeral.sends_per_minute = 0).await;
    let envoy = Envoy::start_before(&[&stopping, &staying]).await;
    let edge = envoy.grpc();
    let ann = edge.register("ann").await;
    let room = edge.create_channel(&ann, "drain", ChannelKind::Public, &[]).await;
    // Streams go to the stopping node (the realtime cluster's only one).
    let mut stream = edge.subscribe(&ann, &room.channel_id, Some(0)).await;

    let running = Arc::new(AtomicBool::new(true));
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (messaging, request) = (edge.messaging(), ann.clone());
            let (channel_id, running) = (room.channel_id.clone(), running.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut failed = Vec::new();
                let mut i = 0;
                while running.load(Ordering::Relaxed) {
                    let send = SendMessageRequest {
                        channel_id: channel_id.clone(),
                        text: format!("{sender}-{i}"),
                        idempotency_key: format!("drain-{sender}-{i}"),
                        ..Default::default()
                    };
                    match messaging.clone().send_message(request.req(send)).await {
                        Ok(answer) => acknowledged.push(answer.into_inner().message.unwrap().message_id),
                        Err(status) => failed.push(status),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                (acknowledged, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stopping.node.take().unwrap().shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.store(false, Ordering::Relaxed);
    let mut acknowledged = BTreeSet::new();
    for sender in senders {
        let (ok, failed) = sender.await.unwrap();
        assert!(failed.is_empty(), "failed calls: {failed:?}");
        acknowledged.extend(ok);
    }
    assert!(acknowledged.len() > 20, "the load ran: {}", acknowledged.len());

    // The stream: events, then the hint with where it got to.
    let mut seen = Vec::new();
    let cursor = loop {
        match crate::helpers::frame(&mut stream).await {
            Frame::Event(event) => {
                if let Some(Kind::MessageCreated(m)) = &event.kind {
                    seen.push(m.message_id.clone());
                }
            }
            Frame::ResumeRequired(hint) => {
                assert_eq!(hint.reason, "shutdown");
                break hint.cursors[0].last_seq.unwrap();
            }
            _ => {}
        }
    };
    // Resumed on the other node from the hint's cursor: the rest, once.
    let mut resumed = staying.subscribe(&ann, &room.channel_id, Some(cursor)).await;
    while seen.len() < acknowledged.len() {
        if let Kind::MessageCreated(m) = crate::helpers::event(&mut resumed).await.kind.unwrap() {
            seen.push(m.message_id);
        }
    }
    let distinct: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), seen.len(), "no message twice");
    assert_eq!(distinct, acknowledged, "every acknowledged message, and only those");
}

/// envoy/envoy-tls.yaml: the edge over TLS, checking access tokens against
/// the keys the node publishes before a call reaches it. Signing in needs
/// no token; any other call without a valid one is refused by Envoy.
#[tokio::test]
#[ignore = "needs Envoy: set COLINK_TEST_ENVOY to its binary (the full suite does)"]
async fn the_tls_edge_checks_tokens_before_calls_reach_a_node() {
    let app = TestApp::spawn().await;
    let port = free_port();
    let config = configure("envoy/envoy-tls.yaml", &[&app], "port_value: 8443", port);
    let envoy = Envoy::run(config, port);
    let certificate = std::fs::read(envoy._dir.path().join("tls.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&certificate).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let registered = crate::servers::eventually(Duration::from_secs(20), "the TLS listener", || async {
        let body = json!({ "username": "tess", "email": "tess@example.com", "password": "correct horse battery" });
        let answer = client.post(url("/v1/auth/register")).json(&body).send().await.ok()?;
        (answer.status() == 200).then_some(answer)
    })
    .await;
    let tokens: Value = registered.json().await.unwrap();
    let token = tokens["tokens"]["accessToken"].as_str().unwrap().to_string();

    let me = |token: Option<String>| {
        let request = client.get(url("/v1/users/me"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let answer = request.send().await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    let (status, body) = me(Some(token.clone())).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = me(None).await;
    assert_eq!((status, body.contains("Jwt is missing")), (401, true), "Envoy refuses: {body}");
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let (status, body) = me(Some(forged)).await;
    assert_eq!((status, body.contains("Jwt verification fails")), (401, true), "Envoy refuses: {body}");
    // gRPC-Web from a browser needs the token just the same.
    let grpc_web = client
        .post(url("/colink.users.v1.UsersService/GetMe"))
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0_u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(grpc_web.status(), 401);
    // What needs no token still gets through.
    let options = client.get(url("/v1/auth/sign-in-options")).send().await.unwrap();
    assert_eq!(options.status(), 200);
    let page = client.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
}
