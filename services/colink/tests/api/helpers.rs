//! Starting nodes, signing users up, and reading streams with deadlines.

use std::sync::Arc;
use std::time::Duration;

use colink::Node;
use colink_proto::admin::v1::admin_service_client::AdminServiceClient;
use colink_proto::auth::v1::auth_service_client::AuthServiceClient;
use colink_proto::auth::v1::{RegisterRequest, TokenPair};
use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::channels::v1::{Channel, ChannelKind, CreateChannelRequest};
use colink_proto::files::v1::files_service_client::FilesServiceClient;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::messaging::v1::{ChannelEvent, Message, SendMessageRequest};
use colink_proto::presence::v1::presence_service_client::PresenceServiceClient;
use colink_proto::reactions::v1::reactions_service_client::ReactionsServiceClient;
use colink_proto::realtime::v1::realtime_service_client::RealtimeServiceClient;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::realtime::v1::{ChannelCursor, ServerFrame, SubscribeRequest, SubscribeResponse};
use colink_proto::retention::v1::retention_service_client::RetentionServiceClient;
use colink_proto::search::v1::search_service_client::SearchServiceClient;
use colink_proto::threads::v1::threads_service_client::ThreadsServiceClient;
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_runtime::clients::with_token;
use colink_runtime::clock::{Clock, SystemClock};
use colink_runtime::config::Config;
use tempfile::TempDir;
use tonic::transport::{Channel as GrpcChannel, Endpoint};
use tonic::{Code, Status, Streaming};

pub const WAIT: Duration = Duration::from_secs(10);

/// When set to a server URL such as `postgres://postgres@127.0.0.1:5432`,
/// every test node keeps its tables in fresh PostgreSQL databases on that
/// server instead of SQLite files: the same suite then covers both engines.
pub const POSTGRES_ENV: &str = "COLINK_TEST_POSTGRES";

/// Creates one empty database per service; returns the URL template.
pub async fn fresh_postgres(server: &str) -> String {
    use sea_orm::ConnectionTrait;

    let server = server.trim_end_matches('/');
    let prefix = format!("colink_test_{}", uuid::Uuid::now_v7().simple());
    let admin = sea_orm::Database::connect(format!("{server}/postgres")).await.expect("PostgreSQL reachable");
    for service in ["auth", "users", "channels", "messaging", "files", "admin", "search"] {
        admin.execute_unprepared(&format!("CREATE DATABASE {prefix}_{service}")).await.expect("create database");
    }
    admin.close().await.expect("close");
    format!("{server}/{prefix}_{{service}}")
}

pub struct TestApp {
    pub node: Option<Node>,
    pub channel: GrpcChannel,
    channel_uri: String,
    /// What the node was started with, for a restart.
    config: Option<Config>,
    _data: TempDir,
}

#[derive(Clone)]
pub struct TestUser {
    pub user_id: String,
    pub tokens: TokenPair,
}

impl TestUser {
    pub fn token(&self) -> &str {
        &self.tokens.access_token
    }

    /// A request carrying this user's access token.
    pub fn req<T>(&self, message: T) -> tonic::Request<T> {
        with_token(self.token(), message)
    }
}

impl TestApp {
    /// A client of a node that runs elsewhere (another process).
    pub fn at(channel: GrpcChannel) -> Self {
        Self { node: None, channel, channel_uri: String::new(), config: None, _data: TempDir::new().expect("temp dir") }
    }

    /// The database URL template the node was started with.
    pub fn database_url(&self) -> String {
        self.config.as_ref().map(|c| c.database.url.clone()).unwrap_or_default()
    }

    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a node on 127.0.0.1:0 with a fresh data directory and cheap
    /// password hashing; `adjust` may change anything else.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with_clock(Arc::new(SystemClock), adjust).await
    }

    /// A node whose TTLs, expiries and rate windows follow `clock`.
    pub async fn spawn_with_clock(clock: Arc<dyn Clock>, adjust: impl FnOnce(&mut Config)) -> Self {
        let data = TempDir::new().expect("temp dir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: data.path().to_path_buf(),
            shutdown_grace_secs: 5,
            ..Config::default()
        };
        if let Ok(server) = std::env::var(POSTGRES_ENV) {
            config.database.url = fresh_postgres(&server).await;
            config.database.max_connections = 4;
        }
        config.auth.argon2_memory_kib = 64;
        config.auth.argon2_iterations = 1;
        // Tests register many accounts from this machine's address, some
        // into one shared Redis; the limit's own test sets it.
        config.auth.registrations_per_address_per_hour = 0;
        config.ephemeral.anonymous_per_address_per_minute = 0;
        config.ephemeral.mutations_per_minute = 0;
        adjust(&mut config);
        let node = Node::start_with_clock(config.clone(), clock).await.expect("node starts");
        let channel_uri = format!("http://{}", node.addr());
        let channel = Endpoint::from_shared(channel_uri.clone()).expect("endpoint").timeout(WAIT).connect_lazy();
        Self { node: Some(node), channel, channel_uri, config: Some(config), _data: data }
    }

    /// Stops the node and starts another on the same data and databases,
    /// changed by `adjust`.
    pub async fn restart(mut self, adjust: impl FnOnce(&mut Config)) -> Self {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
        let mut config = self.config.take().expect("a node this test started");
        adjust(&mut config);
        let node = Node::start(config.clone()).await.expect("node restarts");
        let channel_uri = format!("http://{}", node.addr());
        self.channel = Endpoint::from_shared(channel_uri.clone()).expect("endpoint").timeout(WAIT).connect_lazy();
        Self { node: Some(node), channel_uri, config: Some(config), ..self }
    }

    /// What the node was started with.
    pub fn config(&self) -> &Config {
        self.config.as_ref().expect("a node this test started")
    }

    /// The node's URI.
    pub fn uri(&self) -> String {
        self.channel_uri.clone()
    }

    pub fn auth(&self) -> AuthServiceClient<GrpcChannel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn users(&self) -> UsersServiceClient<GrpcChannel> {
        UsersServiceClient::new(self.channel.clone())
    }

    pub fn channels(&self) -> ChannelsServiceClient<GrpcChannel> {
        ChannelsServiceClient::new(self.channel.clone())
    }

    pub fn messaging(&self) -> MessagingServiceClient<GrpcChannel> {
        MessagingServiceClient::new(self.channel.clone())
    }

    pub fn files(&self) -> FilesServiceClient<GrpcChannel> {
        FilesServiceClient::new(self.channel.clone())
    }

    pub fn threads(&self) -> ThreadsServiceClient<GrpcChannel> {
        ThreadsServiceClient::new(self.channel.clone())
    }

    pub fn reactions(&self) -> ReactionsServiceClient<GrpcChannel> {
        ReactionsServiceClient::new(self.channel.clone())
    }

    pub fn realtime(&self) -> RealtimeServiceClient<GrpcChannel> {
        RealtimeServiceClient::new(self.channel.clone())
    }

    pub fn presence(&self) -> PresenceServiceClient<GrpcChannel> {
        PresenceServiceClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> AdminServiceClient<GrpcChannel> {
        AdminServiceClient::new(self.channel.clone())
    }

    pub fn retention(&self) -> RetentionServiceClient<GrpcChannel> {
        RetentionServiceClient::new(self.channel.clone())
    }

    pub fn search(&self) -> SearchServiceClient<GrpcChannel> {
        SearchServiceClient::new(self.channel.clone())
    }

    pub async fn register(&self, username: &str) -> TestUser {
        let response = self
            .auth()
            .register(RegisterRequest {
                username: username.into(),
                email: format!("{username}@example.com"),
                password: "correct horse battery".into(),
                display_name: String::new(),
            })
            .await
            .expect("register")
            .into_inner();
        let account = response.account.expect("account");
        TestUser { user_id: account.user_id, tokens: response.tokens.expect("tokens") }
    }

    pub async fn create_channel(
        &self,
        owner: &TestUser,
        name: &str,
        kind: ChannelKind,
        members: &[&TestUser],
    ) -> Channel {
        let request = CreateChannelRequest {
            name: name.into(),
            kind: kind as i32,
            member_ids: members.iter().map(|m| m.user_id.clone()).collect(),
            ..Default::default()
        };
        self.channels()
            .create_channel(owner.req(request))
            .await
            .expect("create channel")
            .into_inner()
            .channel
            .expect("channel")
    }

    pub async fn send(&self, sender: &TestUser, channel_id: &str, text: &str) -> Message {
        let request = SendMessageRequest { channel_id: channel_id.into(), text: text.into(), ..Default::default() };
        self.messaging().send_message(sender.req(request)).await.expect("send").into_inner().message.expect("message")
    }

    /// A browser-style stream following one channel from a cursor, returned
    /// once the server confirms the subscription (from then on it is live).
    pub async fn subscribe(
        &self,
        user: &TestUser,
        channel_id: &str,
        last_seq: Option<i64>,
    ) -> Streaming<SubscribeResponse> {
        let request = SubscribeRequest {
            cursors: vec![ChannelCursor { channel_id: channel_id.into(), last_seq }],
            all_channels: false,
        };
        let mut stream = self.realtime().subscribe(user.req(request)).await.expect("subscribe").into_inner();
        match frame(&mut stream).await {
            Frame::Subscribed(s) => assert_eq!(s.channel_id, channel_id),
            other => panic!("expected the subscription to be confirmed, got {other:?}"),
        }
        stream
    }
}

/// Something that yields server frames.
pub trait FrameSource {
    fn next_frame(&mut self) -> impl std::future::Future<Output = Option<ServerFrame>>;
}

impl FrameSource for Streaming<SubscribeResponse> {
    async fn next_frame(&mut self) -> Option<ServerFrame> {
        self.message().await.expect("stream ok").and_then(|r| r.frame)
    }
}

impl FrameSource for Streaming<colink_proto::realtime::v1::ConnectResponse> {
    async fn next_frame(&mut self) -> Option<ServerFrame> {
        self.message().await.expect("stream ok").and_then(|r| r.frame)
    }
}

/// The next frame, or a failure after `WAIT`.
pub async fn frame(stream: &mut impl FrameSource) -> Frame {
    tokio::time::timeout(WAIT, stream.next_frame())
        .await
        .expect("a frame within the deadline")
        .and_then(|f| f.frame)
        .expect("stream still open")
}

/// The next conversation event, skipping control frames.
pub async fn event(stream: &mut impl FrameSource) -> ChannelEvent {
    loop {
        if let Frame::Event(event) = frame(stream).await {
            return event;
        }
    }
}

/// `n` conversation events.
pub async fn events(stream: &mut impl FrameSource, n: usize) -> Vec<ChannelEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(event(stream).await);
    }
    out
}

/// Asserts the stream ends with UNAUTHENTICATED within a second, skipping
/// frames sent before.
pub async fn assert_ends_unauthenticated(stream: &mut Streaming<SubscribeResponse>) {
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends within a second");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
}

/// Asserts no conversation event arrives for a short while.
pub async fn assert_quiet(stream: &mut impl FrameSource) {
    let waited = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(ServerFrame { frame: Some(Frame::Event(e)) }) = stream.next_frame().await {
                return e;
            }
        }
    })
    .await;
    assert!(waited.is_err(), "unexpected event: {waited:?}");
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "wrong code: {status:?}");
            status
        }
        Ok(value) => panic!("expected {code:?}, got {value:?}"),
    }
}

/// Asserts INVALID_ARGUMENT with a field violation naming `field`.
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    use tonic_types::StatusExt;
    let status = assert_code(result, Code::InvalidArgument);
    let violations = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
    assert!(
        violations.iter().any(|v| v.field == field),
        "expected a violation for {field:?}, got {violations:?} ({})",
        status.message()
    );
}

/// One HTTP/1.1 request, as a browser or curl would send it to a signed
/// file URL.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> colink::bench::http::HttpAnswer {
    colink::bench::http::request(method, url, headers, body, WAIT).await.expect("an HTTP answer")
}
