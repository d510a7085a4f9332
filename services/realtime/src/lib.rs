//! The realtime gateway: streams conversation events to connected clients.
//!
//! A stream subscribes to a channel's live topic first, then replays what the
//! client missed from the messaging service's event log, and from then on
//! forwards live events, dropping any whose sequence it has already sent. A
//! live event that skips ahead (a publish was lost) or a receiver that lagged
//! makes it replay the gap from the log, so delivery is exactly once and in
//! order per channel whatever happens to pub/sub.

mod counts;
mod limits;
mod queue;
mod session;
pub mod wire;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::presence::v1::presence_service_client::PresenceServiceClient;
use colink_proto::realtime::v1 as pb;
use colink_proto::realtime::v1::realtime_service_server;
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_runtime::auth::TokenVerifier;
use colink_runtime::clients::PeerChannel;
use colink_runtime::config::RealtimeConfig;
use colink_runtime::ephemeral::Ephemeral;
use colink_runtime::error::Violations;
use colink_runtime::metrics::Metrics;
use colink_runtime::pubsub::PubSub;
use colink_runtime::{Caller, caller};
use futures_util::Stream;
use tokio::sync::watch;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status, Streaming};
use tower::service_fn;

use crate::limits::StreamCounts;
use crate::queue::{FrameQueue, SessionStream};
use crate::session::{Session, validate_cursors};
use crate::wire::{FrameCodec, Outgoing};

/// What every stream of this node shares.
pub(crate) struct Shared {
    pub pubsub: Arc<dyn PubSub>,
    pub ephemeral: Arc<dyn Ephemeral>,
    pub messaging: MessagingServiceClient<PeerChannel>,
    pub channels: ChannelsServiceClient<PeerChannel>,
    pub users: UsersServiceClient<PeerChannel>,
    pub presence: PresenceServiceClient<PeerChannel>,
    pub verifier: Arc<TokenVerifier>,
    pub config: RealtimeConfig,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
}

/// The services the gateway calls on behalf of its streams.
pub struct Peers {
    pub messaging: PeerChannel,
    pub channels: PeerChannel,
    pub users: PeerChannel,
    pub presence: PeerChannel,
}

pub struct RealtimeService {
    shared: Arc<Shared>,
    streams: Arc<StreamCounts>,
}

impl RealtimeService {
    pub fn new(
        pubsub: Arc<dyn PubSub>,
        ephemeral: Arc<dyn Ephemeral>,
        peers: Peers,
        verifier: Arc<TokenVerifier>,
        config: RealtimeConfig,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let shared = Shared {
            pubsub,
            ephemeral,
            messaging: MessagingServiceClient::new(peers.messaging),
            channels: ChannelsServiceClient::new(peers.channels),
            users: UsersServiceClient::new(peers.users),
            presence: PresenceServiceClient::new(peers.presence),
            verifier,
            config,
            metrics,
            shutdown,
        };
        let streams = StreamCounts::new(shared.config.max_streams_per_user);
        Self { shared: Arc::new(shared), streams }
    }

    pub fn into_server(self) -> RealtimeServer {
        RealtimeServer { service: Arc::new(self) }
    }

    /// A session and the queue of frames it produces. Refused when the user
    /// already holds as many streams as a user may.
    fn open(&self, caller: Caller) -> Result<(Session, Arc<FrameQueue>), Status> {
        let slot = self.streams.take(&caller.user_id)?;
        let queue = Arc::new(FrameQueue::new(self.shared.config.stream_buffer));
        let session = Session::new(self.shared.clone(), caller, queue.clone(), slot);
        Ok((session, queue))
    }

    /// The response body that runs the session as the client reads.
    fn stream(
        &self,
        session: Session,
        queue: Arc<FrameQueue>,
        client: Option<Streaming<pb::ConnectRequest>>,
        initial: Option<pb::SubscribeFrame>,
    ) -> Response<FrameStream> {
        let run = Box::pin(session.run(client, initial));
        let grace = Duration::from_millis(self.shared.config.slow_client_grace_ms);
        Response::new(Box::pin(SessionStream::new(run, queue, grace, self.shared.metrics.clone())))
    }

    fn connect(&self, request: Request<Streaming<pb::ConnectRequest>>) -> Result<Response<FrameStream>, Status> {
        let caller = caller(&request)?.clone();
        let (session, queue) = self.open(caller)?;
        Ok(self.stream(session, queue, Some(request.into_inner()), None))
    }

    fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Result<Response<FrameStream>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::default();
        validate_cursors(&request.cursors, self.shared.config.max_channels_per_stream, &mut v);
        v.finish()?;
        let (session, queue) = self.open(caller)?;
        let initial = pb::SubscribeFrame { cursors: request.cursors, all_channels: request.all_channels };
        Ok(self.stream(session, queue, None, Some(initial)))
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send + 'static>>;

const CONNECT_PATH: &str = "/colink.realtime.v1.RealtimeService/Connect";
const SUBSCRIBE_PATH: &str = "/colink.realtime.v1.RealtimeService/Subscribe";

/// The `colink.realtime.v1.RealtimeService` endpoint.
///
/// Wired by hand rather than through the generated server so that its calls
/// use [`FrameCodec`]: events go out as the bytes they were published as,
/// and per-stream buffers start small. On the wire it is the same contract;
/// the generated clients talk to it.
#[derive(Clone)]
pub struct RealtimeServer {
    service: Arc<RealtimeService>,
}

impl NamedService for RealtimeServer {
    const NAME: &'static str = realtime_service_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for RealtimeServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        match request.uri().path() {
            CONNECT_PATH => Box::pin(async move {
                let method =
                    service_fn(move |r: Request<Streaming<pb::ConnectRequest>>| std::future::ready(service.connect(r)));
                Ok(Grpc::new(FrameCodec::default()).streaming(method, request).await)
            }),
            SUBSCRIBE_PATH => Box::pin(async move {
                let method =
                    service_fn(move |r: Request<pb::SubscribeRequest>| std::future::ready(service.subscribe(r)));
                Ok(Grpc::new(FrameCodec::default()).server_streaming(method, request).await)
            }),
            // What a generated server answers too: the path names no method of this service.
            other => {
                let status = Status::unimplemented(format!("{other} is not a method of {}", Self::NAME));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
