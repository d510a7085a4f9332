//! A Colink node: hosts any subset of the services on one listener (gRPC and
//! gRPC-Web), with health, reflection, the shared auth layer, and the
//! embedded backends. `colink serve` runs one; the tests start several.
//! `colink bench` measures one under load.

mod batched_io;
pub mod bench;
mod files;
mod readiness;
pub mod search_cli;
mod webapp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use colink_admin::AdminService;
use colink_auth::{AuthService, Backends as AuthBackends};
use colink_channels::ChannelsService;
use colink_files::FilesService;
use colink_messaging::{MessagingService, Reactions, Retention, SendLimit, Threads};
use colink_migrations::MigratorTrait;
use colink_presence::PresenceService;
use colink_proto::reactions::v1::reactions_service_server::ReactionsServiceServer;
use colink_proto::retention::v1::retention_service_server::RetentionServiceServer;
use colink_proto::threads::v1::threads_service_server::ThreadsServiceServer;
use colink_realtime::{RealtimeServer, RealtimeService};
use colink_runtime::auth::{AuthLayer, TokenVerifier};
use colink_runtime::clients::{BoxError, LocalStack, Peers};
use colink_runtime::clock::{Clock, SystemClock};
use colink_runtime::config::{AuthMode, Config};
use colink_runtime::db::{self, Db};
use colink_runtime::ephemeral::{Ephemeral, MemoryEphemeral, RedisEphemeral};
use colink_runtime::events::{
    self, CHANNEL_EVENTS, EventLog, FILE_EVENTS, InProcessEventLog, KafkaEventLog, MESSAGE_EVENTS, REACTION_EVENTS,
    TOPICS, USER_EVENTS,
};
use colink_runtime::limits::RequestLimits;
use colink_runtime::metrics::Metrics;
use colink_runtime::oidc::OpenIdProvider;
use colink_runtime::pubsub::{MemoryPubSub, PubSub, RedisPubSub};
use colink_runtime::stack;
use colink_search::SearchService;
use colink_users::UsersService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::batched_io::BatchedIo;

/// Live events buffered per topic and node before a slow stream lags (and
/// then catches up from the store).
const PUBSUB_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{service}: database: {source}")]
    Database { service: &'static str, source: sea_orm::DbErr },
    #[error("{service}: {message}")]
    Start { service: &'static str, message: String },
    #[error(transparent)]
    Peers(#[from] colink_runtime::clients::PeerError),
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A running node.
pub struct Node {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), NodeError>>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
    /// The stack the node's calls to its own services go through. Its
    /// services' peer channels hold it weakly; the node lets go of it last.
    local: Arc<LocalStack>,
}

impl Node {
    /// Binds the listener, opens and migrates each hosted service's database,
    /// and starts serving. Returns once the node accepts connections.
    pub async fn start(config: Config) -> Result<Self, NodeError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like `start`, with the clock that the embedded ephemeral store (TTLs,
    /// expiries, rate windows) reads; tests move it by hand.
    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, NodeError> {
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| NodeError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| NodeError::Bind { addr: config.listen, source })?;
        let config = Arc::new(config);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let peers = Peers::new(&config, addr)?;
        let metrics =
            Arc::new(Metrics::new(&[colink_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET]));
        let pubsub: Arc<dyn PubSub> = if config.pubsub.url.is_empty() {
            Arc::new(MemoryPubSub::new(PUBSUB_CAPACITY))
        } else {
            let redis = RedisPubSub::connect(&config.pubsub.url, PUBSUB_CAPACITY)
                .await
                .map_err(|e| NodeError::Start { service: "pubsub", message: format!("redis: {e}") })?;
            Arc::new(redis)
        };
        let event_log: Arc<dyn EventLog> = if config.events.url.is_empty() {
            check_event_consumers(&config.hosted_services())?;
            Arc::new(InProcessEventLog::gated())
        } else {
            let events = &config.events;
            let kafka = KafkaEventLog::connect(
                &events.url,
                &events.topic_prefix,
                events.partitions,
                TOPICS,
                metrics.clone(),
                shutdown_rx.clone(),
            )
            .map_err(|e| NodeError::Start { service: "events", message: e.to_string() })?;
            Arc::new(kafka)
        };
        let ephemeral: Arc<dyn Ephemeral> = if config.ephemeral.url.is_empty() {
            Arc::new(MemoryEphemeral::with_clock(clock.clone()))
        } else {
            let redis = RedisEphemeral::new(&config.ephemeral.url)
                .map_err(|e| NodeError::Start { service: "ephemeral", message: e.to_string() })?;
            Arc::new(redis)
        };
        // With single sign-on, one provider client per node: its keys serve
        // the node's token checks and the auth service alike.
        let provider = match config.auth.mode {
            AuthMode::Builtin => None,
            AuthMode::Oidc => Some(Arc::new(
                OpenIdProvider::new(config.auth.oidc.clone())
                    .map_err(|e| NodeError::Start { service: "auth", message: e.to_string() })?,
            )),
        };
        let mut verifier =
            TokenVerifier::new(config.auth.issuer.clone(), peers.channel("auth")).with_metrics(metrics.clone());
        if let Some(provider) = &provider {
            verifier = verifier.with_provider(provider.clone());
        }
        let verifier = Arc::new(verifier);
        let limits = Arc::new(RequestLimits::new(
            ephemeral.clone(),
            config.ephemeral.mutations_per_minute,
            config.ephemeral.anonymous_per_address_per_minute,
        ));
        let mut background = vec![tokio::spawn(verifier.clone().listen(pubsub.clone(), shutdown_rx.clone()))];

        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        let mut serving = Vec::new();
        let mut databases = Vec::new();
        let mut blobs = None;
        for service in config.hosted_services() {
            let name = match service {
                "auth" => {
                    let db = open_migrated::<colink_migrations::auth::Migrator>(&config, service).await?;
                    databases.push((service, db.clone()));
                    let (outbox, relay) =
                        events::spawn_relay(service, db.clone(), event_log.clone(), shutdown_rx.clone());
                    background.push(relay);
                    let backends = AuthBackends {
                        ephemeral: ephemeral.clone(),
                        pubsub: pubsub.clone(),
                        provider: provider.clone(),
                    };
                    let svc = AuthService::new(db, outbox, config.auth.clone(), peers.channel("users"), backends)
                        .await
                        .map_err(|e| NodeError::Start { service, message: e.to_string() })?
                        .into_server();
                    routes.add_service(svc);
                    <colink_proto::auth::v1::auth_service_server::AuthServiceServer<AuthService> as NamedService>::NAME
                }
                "users" => {
                    let db = open_migrated::<colink_migrations::users::Migrator>(&config, service).await?;
                    databases.push((service, db.clone()));
                    let (outbox, relay) =
                        events::spawn_relay(service, db.clone(), event_log.clone(), shutdown_rx.clone());
                    background.push(relay);
                    let svc = UsersService::new(db, outbox, pubsub.clone());
                    event_log.subscribe(USER_EVENTS, "users.profiles", svc.profile_creator());
                    routes.add_service(svc.into_server());
                    <colink_proto::users::v1::users_service_server::UsersServiceServer<UsersService> as NamedService>::NAME
                }
                "channels" => {
                    let db = open_migrated::<colink_migrations::channels::Migrator>(&config, service).await?;
                    databases.push((service, db.clone()));
                    let (outbox, relay) =
                        events::spawn_relay(service, db.clone(), event_log.clone(), shutdown_rx.clone());
                    background.push(relay);
                    routes.add_service(ChannelsService::new(db, outbox, peers.channel("users")).into_server());
                    <colink_proto::channels::v1::channels_service_server::ChannelsServiceServer<ChannelsService> as NamedService>::NAME
                }
                "messaging" => {
                    let db = open_migrated::<colink_migrations::messaging::Migrator>(&config, service).await?;
                    databases.push((service, db.clone()));
                    let (outbox, relay) =
                        events::spawn_relay(service, db.clone(), event_log.clone(), shutdown_rx.clone());
                    background.push(relay);
                    let limit =
                        SendLimit { counters: ephemeral.clone(), per_minute: config.ephemeral.sends_per_minute };
                    let svc = MessagingService::new(
                        db,
                        outbox,
                        pubsub.clone(),
                        colink_messaging::Peers {
                            channels: peers.channel("channels"),
                            users: peers.channel("users"),
                            presence: peers.channel("presence"),
                            files: peers.channel("files"),
                        },
                        limit,
                    )
                    .with_clock(clock.clone());
                    event_log.subscribe(CHANNEL_EVENTS, "messaging.channel-log", svc.membership_recorder());
                    event_log.subscribe(FILE_EVENTS, "messaging.attachments", svc.attachment_watcher());
                    event_log.subscribe(USER_EVENTS, "messaging.mutes", svc.mute_recorder());
                    let (messages, threads, reactions, retention) = svc.into_servers();
                    let every = Duration::from_secs(config.messaging.retention_every_secs);
                    background.push(retention.schedule(every, shutdown_rx.clone()));
                    routes.add_service(messages);
                    routes.add_service(threads);
                    routes.add_service(reactions);
                    routes.add_service(retention.into_server());
                    serving.push(<ThreadsServiceServer<Threads> as NamedService>::NAME);
                    serving.push(<ReactionsServiceServer<Reactions> as NamedService>::NAME);
                    serving.push(<RetentionServiceServer<Retention> as NamedService>::NAME);
                    <colink_proto::messaging::v1::messaging_service_server::MessagingServiceServer<MessagingService> as NamedService>::NAME
                }
                "files" => {
                    let db = open_migrated::<colink_migrations::files::Migrator>(&config, service).await?;
                    databases.push((service, db.clone()));
                    let (outbox, relay) =
                        events::spawn_relay(service, db.clone(), event_log.clone(), shutdown_rx.clone());
                    background.push(relay);
                    let storage = files::open(&config, addr).await?;
                    blobs = storage.blobs;
                    let backends = colink_files::Backends {
                        pubsub: pubsub.clone(),
                        objects: storage.objects,
                        scanner: storage.scanner,
                        clock: clock.clone(),
                    };
                    let files_peers =
                        colink_files::Peers { channels: peers.channel("channels"), users: peers.channel("users") };
                    let svc = FilesService::new(db, outbox, backends, files_peers, config.files.clone());
                    svc.start_retention(shutdown_rx.clone());
                    if let Some(scanner) = svc.scanner(shutdown_rx.clone()) {
                        event_log.subscribe(FILE_EVENTS, "files.scanner", scanner);
                    }
                    event_log.subscribe(MESSAGE_EVENTS, "files.attachments", svc.attachment_recorder());
                    routes.add_service(svc.into_server());
                    <colink_proto::files::v1::files_service_server::FilesServiceServer<FilesService> as NamedService>::NAME
                }
                "realtime" => {
                    let svc = RealtimeService::new(
                        pubsub.clone(),
                        ephemeral.clone(),
                        colink_realtime::Peers {
                            messaging: peers.channel("messaging"),
                            channels: peers.channel("channels"),
                            users: peers.channel("users"),
                            presence: peers.channel("presence"),
                        },
                        verifier.clone(),
                        config.realtime.clone(),
                        metrics.clone(),
                        shutdown_rx.clone(),
                    );
                    routes.add_service(svc.into_server());
                    <RealtimeServer as NamedService>::NAME
                }
                "presence" => {
                    let svc = PresenceService::new(
                        ephemeral.clone(),
                        pubsub.clone(),
                        event_log.clone(),
                        peers.channel("channels"),
                        peers.channel("users"),
                    );
                    event_log.subscribe(USER_EVENTS, "presence.deactivations", svc.deactivations());
                    routes.add_service(svc.into_server());
                    <colink_proto::presence::v1::presence_service_server::PresenceServiceServer<PresenceService> as NamedService>::NAME
                }
                "admin" => {
                    let db = open_migrated::<colink_migrations::admin::Migrator>(&config, service).await?;
                    databases.push((service, db.clone()));
                    let (outbox, relay) =
                        events::spawn_relay(service, db.clone(), event_log.clone(), shutdown_rx.clone());
                    background.push(relay);
                    let admin_peers = colink_admin::Peers {
                        messaging: peers.channel("messaging"),
                        auth: peers.channel("auth"),
                        channels: peers.channel("channels"),
                    };
                    let svc = AdminService::new(db, outbox, admin_peers);
                    for topic in [USER_EVENTS, CHANNEL_EVENTS, MESSAGE_EVENTS, REACTION_EVENTS, FILE_EVENTS] {
                        event_log.subscribe(topic, "admin.audit", svc.audit_recorder());
                    }
                    routes.add_service(svc.into_server());
                    <colink_proto::admin::v1::admin_service_server::AdminServiceServer<AdminService> as NamedService>::NAME
                }
                "search" => {
                    let db = open_migrated::<colink_migrations::search::Migrator>(&config, service).await?;
                    databases.push((service, db.clone()));
                    let search = &config.search;
                    let index = colink_search::open_index(&search.url, &search.index_prefix, &config.data_dir)
                        .await
                        .map_err(|e| NodeError::Start { service, message: e.to_string() })?;
                    let svc = SearchService::new(
                        db,
                        index,
                        colink_search::Peers {
                            channels: peers.channel("channels"),
                            messaging: peers.channel("messaging"),
                            users: peers.channel("users"),
                            files: peers.channel("files"),
                        },
                    );
                    event_log.subscribe(MESSAGE_EVENTS, "search.messages", svc.message_indexer());
                    event_log.subscribe(USER_EVENTS, "search.users", svc.user_indexer());
                    event_log.subscribe(FILE_EVENTS, "search.files", svc.file_indexer());
                    background.push(svc.start_indexer(shutdown_rx.clone()));
                    routes.add_service(svc.into_server());
                    <colink_proto::search::v1::search_service_server::SearchServiceServer<SearchService> as NamedService>::NAME
                }
                other => return Err(NodeError::Start { service: "node", message: format!("unknown service {other}") }),
            };
            health.set_service_status(name, ServingStatus::NotServing).await;
            serving.push(name);
        }
        // Events the relays found in the outboxes reach every consumer.
        event_log.all_subscribed();
        // Both reflection versions: many deployed grpcurl builds only speak v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(colink_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error =
            |e: tonic_reflection::server::Error| NodeError::Start { service: "reflection", message: e.to_string() };
        routes.add_service(health_service);
        routes.add_service(reflection().build_v1().map_err(reflection_error)?);
        routes.add_service(reflection().build_v1alpha().map_err(reflection_error)?);

        let mut stop = shutdown_rx.clone();
        // What `/readyz` says: serving from here until shutdown begins.
        let ready = Arc::new(AtomicBool::new(false));
        let admin = admin_listener(&config).await?;
        let exposed = (config.metrics.enabled && admin.is_none()).then(|| metrics.clone());
        let limits_of_calls = stack::Limits {
            max_in_flight: config.server.max_in_flight,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
        };
        let layers = ServiceBuilder::new()
            .layer(stack::ContextLayer::new(config.auth.trust_forwarded_for))
            .layer(stack::trace())
            .layer(stack::cors(&config.server.cors_origins))
            .layer(webapp::WebAppLayer::new(
                blobs,
                ready.clone(),
                exposed,
                colink_proto::auth::v1::auth_service_client::AuthServiceClient::new(peers.channel("auth")),
            ))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(stack::GuardLayer::new(metrics.clone(), &limits_of_calls))
            .layer(AuthLayer::new(verifier, limits, metrics.clone()));
        let routes = routes.routes();
        let local = Arc::new(in_process(layers.clone().service(routes.clone())));
        peers.local().set(&local);
        let server = Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener), async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            });
        let server = tokio::spawn(async move { server.await.map_err(NodeError::from) });
        if let Some(admin) = admin {
            let pages = webapp::WebAppLayer::admin(ready.clone(), metrics.clone());
            background.push(serve_admin(admin, pages, shutdown_rx.clone()));
        }
        for (service, db) in &databases {
            metrics.watch_database(service, db.clone());
        }
        let backends = readiness::Backends { databases, events: event_log.clone() };
        let reporters = readiness::Reporters { health, services: serving, ready };
        background.push(readiness::watch(backends, reporters, shutdown_rx).await);
        tracing::info!(%addr, services = ?config.hosted_services(), "colink node listening");
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        Ok(Self { addr, shutdown, server, background, grace, local })
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls, lets streams end with a resume hint, flushes
    /// the outboxes, and waits (up to the grace period) for all of it.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        let local = self.local;
        let all = async {
            let served = self.server.await;
            for task in self.background {
                let _ = task.await;
            }
            drop(local);
            served
        };
        match tokio::time::timeout(self.grace, all).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(NodeError::Start { service: "node", message: join.to_string() }),
            Err(_) => {
                tracing::warn!("shutdown grace period passed; exiting anyway");
                Ok(())
            }
        }
    }

    /// Serves until the server stops on its own (it only does on error).
    pub async fn wait(&mut self) -> Result<(), NodeError> {
        match (&mut self.server).await {
            Ok(result) => result,
            Err(join) => Err(NodeError::Start { service: "node", message: join.to_string() }),
        }
    }
}

/// The admin listener (`metrics.listen`), when it is set and metrics are on.
async fn admin_listener(config: &Config) -> Result<Option<TcpListener>, NodeError> {
    if !config.metrics.enabled || config.metrics.listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = config
        .metrics
        .listen
        .parse()
        .map_err(|_| NodeError::Start { service: "metrics", message: "metrics.listen is not an address".into() })?;
    let listener = TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { addr, source })?;
    Ok(Some(listener))
}

/// Serves the probes and the metrics on the admin listener until shutdown
/// has finished with the main listener's calls.
fn serve_admin(listener: TcpListener, pages: webapp::WebAppLayer, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "metrics and probes listening");
        }
        let served = Server::builder()
            .accept_http1(true)
            .layer(pages)
            .add_routes(RoutesBuilder::default().routes())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
            .await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "the admin listener stopped");
        }
    })
}

/// Accepted connections with Nagle's algorithm off, their writes gathered
/// ([`BatchedIo`]). The server's own `tcp_nodelay` applies only to listeners
/// it binds itself; without this, a response written in several pieces
/// waits for the client's delayed ACK (about 40 ms) between them.
fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<BatchedIo>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot turn Nagle's algorithm off");
        }
        Ok(BatchedIo::new(stream))
    })
}

/// The node's stack as one service, for its own calls to the services it
/// hosts.
fn in_process<S, B>(stack: S) -> LocalStack
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stack = ServiceBuilder::new()
        .map_response(|response: http::Response<B>| response.map(tonic::body::Body::new))
        .map_err(Into::into)
        .service(stack);
    BoxCloneSyncService::new(stack)
}

/// With the in-process event log, an event reaches only consumers in the
/// same process: a node that produces events whose consumer it does not host
/// would drop them. Such a split needs Kafka (`events.url`). Profiles and the
/// channel log depend on their events, so such a node refuses to start; the
/// audit log only misses entries, so that is a warning.
fn check_event_consumers(hosted: &[&'static str]) -> Result<(), NodeError> {
    const REQUIRED: &[(&str, &str, &str)] =
        &[("auth", "users", USER_EVENTS), ("channels", "messaging", CHANNEL_EVENTS)];
    const AUDITED: &[(&str, &str)] = &[
        ("auth", USER_EVENTS),
        ("channels", CHANNEL_EVENTS),
        ("messaging", MESSAGE_EVENTS),
        ("messaging", REACTION_EVENTS),
        ("files", FILE_EVENTS),
    ];
    for (producer, consumer, topic) in REQUIRED {
        if hosted.contains(producer) && !hosted.contains(consumer) {
            return Err(NodeError::Start {
                service: "node",
                message: format!(
                    "{producer} publishes {topic}, which {consumer} consumes: with the in-process event log \
                     they must run on the same node"
                ),
            });
        }
    }
    for (producer, topic) in AUDITED {
        if hosted.contains(producer) && !hosted.contains(&"admin") {
            tracing::warn!(
                "{producer} publishes {topic} but admin is not on this node: without Kafka the audit log misses them"
            );
        }
    }
    if hosted.contains(&"messaging") && !hosted.contains(&"search") {
        tracing::warn!(
            "messaging publishes message.events but search is not on this node: without Kafka new messages are not \
             searchable"
        );
    }
    // Attachments: files learns where a file is attached from messaging's
    // events, and messaging learns of scan results from files' events.
    if hosted.contains(&"files") != hosted.contains(&"messaging") {
        tracing::warn!(
            "files and messaging are on different nodes without Kafka: attached files are neither shown to the \
             conversation's members nor updated when their scan ends"
        );
    }
    Ok(())
}

/// Opens a service's database and brings its schema up to date.
async fn open_migrated<M: MigratorTrait>(config: &Config, service: &'static str) -> Result<Db, NodeError> {
    let db = db::connect(&config.database, &config.data_dir, service)
        .await
        .map_err(|source| NodeError::Database { service, source })?;
    M::up(&db.writer, None).await.map_err(|source| NodeError::Database { service, source })?;
    Ok(db)
}

/// Applies every hosted service's migrations without serving.
pub async fn migrate(config: &Config) -> Result<(), NodeError> {
    for service in config.hosted_services() {
        match service {
            "auth" => open_migrated::<colink_migrations::auth::Migrator>(config, service).await?,
            "users" => open_migrated::<colink_migrations::users::Migrator>(config, service).await?,
            "channels" => open_migrated::<colink_migrations::channels::Migrator>(config, service).await?,
            "messaging" => open_migrated::<colink_migrations::messaging::Migrator>(config, service).await?,
            "files" => open_migrated::<colink_migrations::files::Migrator>(config, service).await?,
            "admin" => open_migrated::<colink_migrations::admin::Migrator>(config, service).await?,
            "search" => open_migrated::<colink_migrations::search::Migrator>(config, service).await?,
            // The realtime gateway and presence keep no tables.
            _ => continue,
        };
        tracing::info!(service, "migrations applied");
    }
    Ok(())
}
