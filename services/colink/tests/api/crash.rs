//! Real `colink` processes killed with SIGKILL under load: nothing
//! acknowledged is lost, and a client that resumes by cursor sees every
//! message once, in order. The topology is the distributed one: a core node
//! (auth, users, channels, messaging, presence, admin) and two realtime
//! nodes, sharing PostgreSQL, Redis and a Kafka-protocol broker.

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colink_proto::channels::v1::ChannelKind;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::messaging::v1::{ListMessagesRequest, SendMessageRequest};
use colink_proto::realtime::v1::realtime_service_client::RealtimeServiceClient;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::realtime::v1::{ChannelCursor, SubscribeRequest};
use colink_runtime::clients::with_token;
use tonic::transport::{Channel, Endpoint};

use crate::helpers::{TestApp, fresh_postgres};
use crate::servers::{Server, free_port};

const MESSAGES: usize = 300;

/// One `colink serve` process; killed (SIGKILL) when dropped.
struct Process {
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    addr: String,
}

impl Process {
    fn spawn(services: &str, port: u16, env: Vec<(String, String)>) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let args = vec!["serve".into(), "--services".into(), services.into(), "--listen".into(), addr.clone()];
        let mut process = Self { args, env, child: None, addr };
        process.start();
        process
    }

    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_colink"))
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .env("COLINK_LOG__LEVEL", "warn")
            .spawn()
            .expect("colink starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL: no shutdown, no flushing
            let _ = child.wait();
        }
    }

    fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy()
    }

    async fn wait_ready(&self) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel());
        for _ in 0..200 {
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if health.check(request).await.is_ok_and(|r| r.into_inner().status == 1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} did not become ready", self.addr);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL, Redis and tansu: set COLINK_TEST_POSTGRES, COLINK_TEST_REDIS and COLINK_TEST_TANSU \
            (the full suite does)"]
async fn killed_nodes_lose_nothing_acknowledged_and_clients_resume_without_gaps() {
    let postgres = std::env::var("COLINK_TEST_POSTGRES").expect("COLINK_TEST_POSTGRES");
    let redis = std::env::var("COLINK_TEST_REDIS").expect("COLINK_TEST_REDIS");
    let broker = Server::kafka().await;
    let data = tempfile::TempDir::new().unwrap();
    let core_port = free_port();
    let core_url = format!("http://127.0.0.1:{core_port}");
    let mut shared = vec![
        ("COLINK_DATABASE__URL".to_string(), fresh_postgres(&postgres).await),
        ("COLINK_PUBSUB__URL".to_string(), redis.clone()),
        ("COLINK_EPHEMERAL__URL".to_string(), redis),
        ("COLINK_EVENTS__URL".to_string(), format!("kafka://127.0.0.1:{}", broker.port)),
        ("COLINK_EVENTS__TOPIC_PREFIX".to_string(), format!("t{}.", uuid::Uuid::now_v7().simple())),
        ("COLINK_DATA_DIR".to_string(), data.path().display().to_string()),
        ("COLINK_AUTH__ARGON2_MEMORY_KIB".to_string(), "64".to_string()),
        ("COLINK_AUTH__ARGON2_ITERATIONS".to_string(), "1".to_string()),
        // Every test registers from this machine's address, into one Redis.
        ("COLINK_AUTH__REGISTRATIONS_PER_ADDRESS_PER_HOUR".to_string(), "0".to_string()),
        ("COLINK_EPHEMERAL__ANONYMOUS_PER_ADDRESS_PER_MINUTE".to_string(), "0".to_string()),
        ("COLINK_EPHEMERAL__MUTATIONS_PER_MINUTE".to_string(), "0".to_string()),
    ];
    for peer in ["auth", "users", "channels", "messaging", "presence", "admin"] {
        shared.push((format!("COLINK_PEERS__{}", peer.to_uppercase()), core_url.clone()));
    }
    let mut core = Process::spawn("auth,users,channels,messaging,presence,admin", core_port, shared.clone());
    let mut realtime_a = Process::spawn("realtime", free_port(), shared.clone());
    let realtime_b = Process::spawn("realtime", free_port(), shared.clone());
    for node in [&core, &realtime_a, &realtime_b] {
        node.wait_ready().await;
    }

    // Accounts and a channel, through the core node.
    let app = TestApp::at(core.channel());
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "crash-test", ChannelKind::Private, &[&bob]).await;

    // Bob reads through whichever realtime node answers, resuming by cursor.
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let reader = {
        let seen = seen.clone();
        let nodes = [realtime_a.channel(), realtime_b.channel()];
        let token = bob.token().to_string();
        let channel_id = room.channel_id.clone();
        tokio::spawn(async move {
            let mut cursor = 0_i64;
            for attempt in 0.. {
                let mut client = RealtimeServiceClient::new(nodes[attempt % 2].clone());
                let request = SubscribeRequest {
                    cursors: vec![ChannelCursor { channel_id: channel_id.clone(), last_seq: Some(cursor) }],
                    all_channels: false,
                };
                if let Ok(response) = client.subscribe(with_token(&token, request)).await {
                    let mut stream = response.into_inner();
                    while let Ok(Some(frame)) = stream.message().await {
                        match frame.frame.and_then(|f| f.frame) {
                            Some(Frame::Event(event)) => {
                                assert_eq!(event.seq, cursor + 1, "events arrive in order, without gaps or repeats");
                                cursor = event.seq;
                                if let Some(Kind::MessageCreated(_)) = event.kind {
                                    seen.lock().unwrap().push(event.seq);
                                }
                            }
                            Some(Frame::ResumeRequired(_)) | None => break,
                            Some(_) => {}
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Alice sends; a failed call is retried with the same idempotency key
    // until it is acknowledged, so every message is sent exactly once.
    let mut acknowledged = BTreeSet::new();
    let mut messaging = MessagingServiceClient::new(core.channel());
    for i in 0..MESSAGES {
        if i == MESSAGES / 3 {
            realtime_a.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            realtime_a.start();
        }
        if i == 2 * MESSAGES / 3 {
            core.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            core.start();
        }
        let request = SendMessageRequest {
            channel_id: room.channel_id.clone(),
            text: format!("message {i}"),
            idempotency_key: format!("crash-test-{i}"),
            ..Default::default()
        };
        let seq = loop {
            match messaging.send_message(alice.req(request.clone())).await {
                Ok(response) => break response.into_inner().message.unwrap().seq,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        acknowledged.insert(seq);
    }
    assert_eq!(acknowledged.len(), MESSAGES);

    // Every acknowledged message reaches Bob, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: BTreeSet<i64> = seen.lock().unwrap().iter().copied().collect();
        if acknowledged.is_subset(&got) {
            assert_eq!(seen.lock().unwrap().len(), got.len(), "no message was delivered twice");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing: {:?}",
            acknowledged.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reader.abort();

    // And the store holds each exactly once.
    let mut stored = 0;
    let mut page_token = String::new();
    loop {
        let request = ListMessagesRequest {
            channel_id: room.channel_id.clone(),
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = messaging.list_messages(alice.req(request)).await.unwrap().into_inner();
        stored += page.messages.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(stored, MESSAGES);
}
