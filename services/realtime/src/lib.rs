//! The realtime gateway: streams conversation events to connected clients.
//!
//! A stream subscribes to a channel's live topic first, then replays what the
//! client missed from the messaging service's event log, and from then on
//! forwards live events, dropping any whose sequence it has already sent. A
//! live event that skips ahead (a publish was lost) or a receiver that lagged
//! makes it replay the gap from the log, so delivery is exactly once and in
//! order per channel whatever happens to pub/sub.

mod session;

use std::pin::Pin;
use std::sync::Arc;

use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::realtime::v1 as pb;
use colink_proto::realtime::v1::realtime_service_server::{RealtimeService as RealtimeRpc, RealtimeServiceServer};
use colink_runtime::auth::TokenVerifier;
use colink_runtime::config::RealtimeConfig;
use colink_runtime::ephemeral::Ephemeral;
use colink_runtime::error::Violations;
use colink_runtime::pubsub::PubSub;
use colink_runtime::{Caller, caller};
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel as GrpcChannel;
use tonic::{Request, Response, Status, Streaming};

use crate::session::{Session, validate_cursors};

/// What every stream of this node shares.
pub(crate) struct Shared {
    pub pubsub: Arc<dyn PubSub>,
    pub ephemeral: Arc<dyn Ephemeral>,
    pub messaging: MessagingServiceClient<GrpcChannel>,
    pub channels: ChannelsServiceClient<GrpcChannel>,
    pub verifier: Arc<TokenVerifier>,
    pub config: RealtimeConfig,
    pub shutdown: watch::Receiver<bool>,
}

pub struct RealtimeService {
    shared: Arc<Shared>,
}

impl RealtimeService {
    pub fn new(
        pubsub: Arc<dyn PubSub>,
        ephemeral: Arc<dyn Ephemeral>,
        messaging: GrpcChannel,
        channels: GrpcChannel,
        verifier: Arc<TokenVerifier>,
        config: RealtimeConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let shared = Shared {
            pubsub,
            ephemeral,
            messaging: MessagingServiceClient::new(messaging),
            channels: ChannelsServiceClient::new(channels),
            verifier,
            config,
            shutdown,
        };
        Self { shared: Arc::new(shared) }
    }

    pub fn into_server(self) -> RealtimeServiceServer<Self> {
        RealtimeServiceServer::new(self)
    }

    /// A session and the frames it produces: its bounded buffer, then its
    /// last word (a resume hint or an error), if it has one.
    fn open(&self, caller: Caller) -> (Session, impl Stream<Item = Result<pb::ServerFrame, Status>> + Send + 'static) {
        let (tx, rx) = mpsc::channel(self.shared.config.stream_buffer);
        let (last_tx, last_rx) = oneshot::channel();
        let session = Session::new(self.shared.clone(), caller, tx, last_tx);
        let last = futures_util::stream::once(last_rx).filter_map(Result::ok);
        (session, ReceiverStream::new(rx).chain(last))
    }
}

type FrameStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RealtimeRpc for RealtimeService {
    type ConnectStream = FrameStream<pb::ConnectResponse>;
    type SubscribeStream = FrameStream<pb::SubscribeResponse>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let caller = caller(&request)?.clone();
        let (session, frames) = self.open(caller);
        tokio::spawn(session.run(Some(request.into_inner()), None));
        let frames = frames.map(|frame| frame.map(|f| pb::ConnectResponse { frame: Some(f) }));
        Ok(Response::new(Box::pin(frames)))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = caller(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::default();
        validate_cursors(&request.cursors, self.shared.config.max_channels_per_stream, &mut v);
        v.finish()?;
        let (session, frames) = self.open(caller);
        let initial = pb::SubscribeFrame { cursors: request.cursors, all_channels: request.all_channels };
        tokio::spawn(session.run(None, Some(initial)));
        let frames = frames.map(|frame| frame.map(|f| pb::SubscribeResponse { frame: Some(f) }));
        Ok(Response::new(Box::pin(frames)))
    }
}
