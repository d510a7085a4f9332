//! The REST API of the seeds, through a real Envoy in front of a node:
//! gRPC-JSON transcoding from gen/colink.binpb, camelCase JSON, HTTP status
//! codes, the Idempotency-Key header and CORS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::TestApp;

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
        let binary = std::env::var("COLINK_TEST_ENVOY").expect("COLINK_TEST_ENVOY must name the envoy binary");
        let node_port = node.uri().rsplit(':').next().unwrap().to_string();
        let port = free_port();
        let config = std::fs::read_to_string(repo().join("envoy/envoy.yaml"))
            .unwrap()
            .replace("port_value: 8080", &format!("port_value: {port}"))
            .replace("port_value: 7700", &format!("port_value: {node_port}"))
            .replace("port_value: 9901", &format!("port_value: {}", free_port()))
            .replace("\"gen/colink.binpb\"", &format!("{:?}", repo().join("gen/colink.binpb")));
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary)
            .args(["-c", path.to_str().unwrap(), "--log-level", "warn", "--use-dynamic-base-id"])
            .spawn()
            .expect("envoy starts");
        let envoy = Self { child, port, _dir: dir };
        // Ready when Envoy answers and sees the node healthy.
        for _ in 0..150 {
            if let Ok((200, _, _)) = envoy.try_call("GET", "/.well-known/jwks.json", None, &[]).await {
                return envoy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("envoy did not become ready");
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
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
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
        let mut raw = Vec::new();
        tokio::time::timeout(crate::helpers::WAIT, socket.read_to_end(&mut raw)).await??;
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
