//! One client stream: its subscriptions, cursors and output buffer.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use colink_proto::channels::v1::{GetChannelRequest, ListMyChannelsRequest, MemberRole};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::messaging::v1::{
    ChannelEvent, GetUnreadCountsRequest, ListChannelEventsRequest, ListChannelEventsResponse, MarkDeliveredRequest,
    UnreadCounts,
};
use colink_proto::presence::v1::{HeartbeatRequest, Presence};
use colink_proto::realtime::v1 as pb;
use colink_proto::realtime::v1::connect_request::Frame as ClientFrame;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::users::v1::CheckBlockedRequest;
use colink_runtime::Caller;
use colink_runtime::clients::PeerChannel;
use colink_runtime::clients::{retry_idempotent, with_token};
use colink_runtime::ephemeral::{TYPING_TTL, typing_expires_at, typing_key};
use colink_runtime::error::Violations;
use colink_runtime::ids::{micros_of, now_micros, parse_id, timestamp};
use colink_runtime::pubsub::{self, channel_topic, user_topic};
use prost::Message as _;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{StreamExt, StreamMap};
use tonic::{Code, Status, Streaming};

use crate::Shared;
use crate::counts::{Delta, Unread};
use crate::limits::StreamSlot;
use crate::queue::FrameQueue;
use crate::wire::{EventHead, Outgoing};

/// Why a session ends.
#[derive(Debug)]
pub enum End {
    /// The client went away.
    Gone,
    /// Tell the client to reconnect with its cursors.
    Resume(&'static str),
    /// The session behind the stream's token ended (signed out, revoked,
    /// deactivated): the stream ends with UNAUTHENTICATED.
    SessionEnded,
}

type Flow = Result<(), End>;

// Calls made only now and then (counts, receipts, presence, blocks) are
// boxed where they are awaited: inline, their futures would widen every
// stream's state for the whole life of the stream.

/// Pings count as presence heartbeats at most this often.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);

/// How long acknowledgements gather before they are recorded.
const ACK_DELAY: Duration = Duration::from_millis(250);

/// How long the answer to "may the caller type here" is trusted.
const TYPING_RECHECK: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum TypingRight {
    Allowed,
    NotMember,
    Muted,
}

struct Subscription {
    last_seq: i64,
    /// Whether the caller may type here, and when that was asked: on the
    /// first typing notice, and again once `TYPING_RECHECK` has passed, so
    /// that a mute or a removal stops the notices soon.
    typing: Option<(TypingRight, tokio::time::Instant)>,
    /// The replay reached the caller leaving ("left" or "removed"), and
    /// the log has not been read since.
    leaving: Option<&'static str>,
}

pub struct Session {
    shared: Arc<Shared>,
    user_id: String,
    token: Arc<str>,
    session_id: String,
    expires_at: i64,
    /// Sessions the node learns have ended.
    ended_sessions: broadcast::Receiver<Arc<str>>,
    all_channels: bool,
    subs: HashMap<String, Subscription>,
    live: StreamMap<String, BroadcastStream<Bytes>>,
    user_feed: Option<BroadcastStream<Bytes>>,
    out: Arc<FrameQueue>,
    /// The user's unread counts, on a stream that follows all their
    /// conversations.
    unread: Option<Unread>,
    /// Acknowledged positions not yet recorded, and when to record them.
    acks: HashMap<String, i64>,
    acks_due: Option<tokio::time::Instant>,
    /// Whether a block stands between the user and another person, as far
    /// as asked; forgotten when blocks may have changed.
    blocks: HashMap<String, bool>,
    /// The newest presence update passed on, per person.
    presence_seen: HashMap<String, i64>,
    /// When a ping last counted as a presence heartbeat.
    last_heartbeat: Option<std::time::Instant>,
    /// Counts against the user's open streams until the session ends.
    _slot: StreamSlot,
}

impl Drop for Session {
    /// Lets go of the node's live topics that no other stream needs, and
    /// records the positions acknowledged since the last record: the
    /// session ends, or its client went away and took the stream with it.
    fn drop(&mut self) {
        let acks = std::mem::take(&mut self.acks);
        if !acks.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(record_delivered(self.shared.messaging.clone(), self.token.clone(), acks));
        }
        let channels: Vec<String> = self.live.keys().cloned().collect();
        self.live = StreamMap::new();
        for channel_id in channels {
            self.shared.pubsub.release(&channel_topic(&channel_id));
        }
        if self.user_feed.take().is_some() {
            self.shared.pubsub.release(&user_topic(&self.user_id));
        }
    }
}

/// Checks subscription cursors, naming each bad one.
pub fn validate_cursors(cursors: &[pb::ChannelCursor], max: usize, v: &mut Violations) {
    if cursors.len() > max {
        v.add("cursors", format!("must list at most {max} channels"));
    }
    for (i, cursor) in cursors.iter().enumerate() {
        v.check(parse_id(&format!("cursors[{i}].channel_id"), &cursor.channel_id));
        if cursor.last_seq.is_some_and(|s| s < 0) {
            v.add(&format!("cursors[{i}].last_seq"), "must not be negative");
        }
    }
}

impl Session {
    pub fn new(shared: Arc<Shared>, caller: Caller, out: Arc<FrameQueue>, slot: StreamSlot) -> Self {
        let ended_sessions = shared.verifier.ended_sessions();
        Self {
            shared,
            user_id: caller.user_id,
            token: caller.token,
            session_id: caller.session_id,
            expires_at: caller.expires_at,
            ended_sessions,
            all_channels: false,
            subs: HashMap::new(),
            live: StreamMap::new(),
            user_feed: None,
            out,
            unread: None,
            acks: HashMap::new(),
            acks_due: None,
            blocks: HashMap::new(),
            presence_seen: HashMap::new(),
            last_heartbeat: None,
            _slot: slot,
        }
    }

    /// Serves the stream until the client leaves, its token expires, it is
    /// too slow, or the node shuts down.
    pub async fn run(mut self, mut client: Option<Streaming<pb::ConnectRequest>>, initial: Option<pb::SubscribeFrame>) {
        // The waits that outlive one turn of the loop are made once: making
        // them anew each turn would register a timer and a waiter on the
        // node-wide shutdown signal for every event delivered.
        let mut shutdown_signal = self.shared.shutdown.clone();
        let mut shutdown = std::pin::pin!(async move {
            let _ = shutdown_signal.changed().await;
        });
        let mut expires_at = self.expires_at;
        let mut expiry = std::pin::pin!(tokio::time::sleep_until(deadline_of(expires_at)));
        let mut end = match initial {
            Some(frame) => self.subscribe(frame).await.err(),
            None => None,
        };
        while end.is_none() {
            if self.out.take_stalled() {
                end = Some(End::Resume("slow_consumer"));
                break;
            }
            if self.expires_at != expires_at {
                expires_at = self.expires_at;
                expiry.as_mut().reset(deadline_of(expires_at));
            }
            let flow = tokio::select! {
                frame = next_client_frame(&mut client) => match frame {
                    Some(Ok(frame)) => self.on_client_frame(frame).await,
                    // A frame that does not decode ends the client's half:
                    // say why before closing.
                    Some(Err(status)) if status.code() == Code::InvalidArgument => {
                        self.error_frame(Code::InvalidArgument, status.message(), "").await.and(Err(End::Gone))
                    }
                    Some(Err(_)) => Err(End::Gone),
                    // The client closed its half; it may still be listening.
                    None => { client = None; Ok(()) }
                },
                Some((channel_id, item)) = self.live.next(), if !self.live.is_empty() => self.on_live(channel_id, item).await,
                item = next_feed(&mut self.user_feed) => self.on_user_feed(item).await,
                _ = sleep_until(self.acks_due) => Box::pin(self.record_acks()).await,
                ended = self.ended_sessions.recv() => Box::pin(self.on_session_ended(ended)).await,
                _ = expiry.as_mut() => Err(End::Resume("token_expired")),
                _ = shutdown.as_mut() => Err(End::Resume("shutdown")),
            };
            end = flow.err();
        }
        if let Some(end) = end {
            self.finish(end);
        }
    }

    /// Ends the stream: a client that is still there is told to reconnect
    /// and resume from the cursors it has reached.
    fn finish(&mut self, end: End) {
        let reason = match end {
            End::Gone => return,
            End::Resume(reason) => reason,
            End::SessionEnded => {
                self.out.set_last_word(Err(Status::unauthenticated(
                    "the session has ended (signed out, revoked, or the account was deactivated)",
                )));
                return;
            }
        };
        let cursors = self
            .subs
            .iter()
            .map(|(id, s)| pb::ChannelCursor { channel_id: id.clone(), last_seq: Some(s.last_seq) })
            .collect();
        self.shared.metrics.streams.resume_hint(reason);
        let last = Outgoing::frame(Frame::ResumeRequired(pb::ResumeRequiredFrame { reason: reason.into(), cursors }));
        self.out.set_last_word(Ok(last));
    }

    /// Queues a frame. A conversation frame waits for room; if the client
    /// took longer than the slow-client grace to make room, it is told to
    /// resume from its cursors instead. Typing and presence notices are
    /// simply dropped when the queue is full.
    async fn send(&self, f: Frame) -> Flow {
        if matches!(f, Frame::Typing(_) | Frame::Presence(_)) {
            if self.out.try_push(Outgoing::frame(f)).is_ok() {
                self.shared.metrics.streams.queued();
            }
            return Ok(());
        }
        self.queue(Outgoing::frame(f)).await
    }

    async fn queue(&self, out: Outgoing) -> Flow {
        // Most frames find room at once: no clock read for those.
        let out = match self.out.try_push(out) {
            Ok(()) => {
                self.shared.metrics.streams.queued();
                return Ok(());
            }
            Err(out) => out,
        };
        let full_since = tokio::time::Instant::now();
        // The body polls the session again once it has taken every queued
        // frame (see the `queue` module), so this wait needs no waker.
        std::future::poll_fn(|_| if self.out.has_room() { Poll::Ready(()) } else { Poll::Pending }).await;
        if full_since.elapsed() > Duration::from_millis(self.shared.config.slow_client_grace_ms) {
            return Err(End::Resume("slow_consumer"));
        }
        match self.out.try_push(out) {
            Ok(()) => {
                self.shared.metrics.streams.queued();
                Ok(())
            }
            Err(_) => Err(End::Resume("slow_consumer")),
        }
    }

    /// A session ended somewhere. If it is this stream's, or if the node's
    /// notices went too fast to follow, the stream's token is checked again.
    async fn on_session_ended(&mut self, ended: Result<Arc<str>, broadcast::error::RecvError>) -> Flow {
        match ended {
            Ok(session_id) if *session_id != *self.session_id => Ok(()),
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => match self.shared.verifier.verify(&self.token).await
            {
                Err(status) if status.code() == Code::Unauthenticated => Err(End::SessionEnded),
                _ => Ok(()),
            },
            // Only a node going away drops the sender.
            Err(broadcast::error::RecvError::Closed) => Err(End::Resume("shutdown")),
        }
    }

    async fn error_frame(&self, code: Code, message: impl Into<String>, channel_id: &str) -> Flow {
        self.send(Frame::Error(pb::ErrorFrame {
            code: code_name(code),
            message: message.into(),
            channel_id: channel_id.to_string(),
        }))
        .await
    }

    async fn on_client_frame(&mut self, request: pb::ConnectRequest) -> Flow {
        match request.frame {
            Some(ClientFrame::Subscribe(frame)) => {
                let mut v = Violations::default();
                validate_cursors(&frame.cursors, self.shared.config.max_channels_per_stream, &mut v);
                match v.finish() {
                    Ok(()) => self.subscribe(frame).await,
                    Err(err) => self.error_frame(Code::InvalidArgument, err.to_string(), "").await,
                }
            }
            Some(ClientFrame::Unsubscribe(frame)) => {
                for channel_id in frame.channel_ids {
                    if self.drop_channel(&channel_id) {
                        self.send(Frame::Unsubscribed(pb::UnsubscribedFrame {
                            channel_id,
                            reason: "requested".into(),
                        }))
                        .await?;
                    }
                }
                Ok(())
            }
            // Acknowledgements move the delivered position (for receipts);
            // replay is still driven by the client's cursors.
            Some(ClientFrame::Ack(ack)) => self.on_ack(ack).await,
            Some(ClientFrame::Typing(frame)) => self.on_typing(frame.channel_id, frame.stopped).await,
            Some(ClientFrame::Ping(ping)) => {
                self.send(Frame::Pong(pb::PongFrame { nonce: ping.nonce, server_time: Some(timestamp(now_micros())) }))
                    .await?;
                Box::pin(self.renew_presence()).await;
                Ok(())
            }
            Some(ClientFrame::Reauthenticate(frame)) => match self.shared.verifier.verify(&frame.access_token).await {
                Ok(caller) if caller.user_id == self.user_id => {
                    self.token = caller.token;
                    self.session_id = caller.session_id;
                    self.expires_at = caller.expires_at;
                    Ok(())
                }
                Ok(_) => self.error_frame(Code::PermissionDenied, "the new token belongs to another user", "").await,
                Err(status) => self.error_frame(Code::Unauthenticated, status.message(), "").await,
            },
            None => self.error_frame(Code::InvalidArgument, "frame: empty client frame", "").await,
        }
    }

    async fn subscribe(&mut self, frame: pb::SubscribeFrame) -> Flow {
        for cursor in frame.cursors {
            self.follow(&cursor.channel_id, cursor.last_seq).await?;
        }
        if frame.all_channels && !self.all_channels {
            self.all_channels = true;
            // Subscribe to joins before listing, so none falls in between.
            self.user_feed = Some(BroadcastStream::new(self.shared.pubsub.subscribe(&user_topic(&self.user_id)).await));
            for channel_id in self.my_channels().await? {
                if !self.subs.contains_key(&channel_id) {
                    self.follow(&channel_id, None).await?;
                }
            }
            Box::pin(self.count_all()).await?;
        }
        Ok(())
    }

    /// Takes every unread count afresh and sends them as a snapshot.
    async fn count_all(&mut self) -> Flow {
        let counts = self.unread_counts(Vec::new(), Vec::new()).await?;
        let unread = Unread::new(&self.user_id, counts);
        let snapshot = unread.snapshot();
        self.unread = Some(unread);
        self.send(Frame::UnreadCounts(snapshot)).await
    }

    async fn unread_counts(&self, channel_ids: Vec<String>, thread_ids: Vec<String>) -> Result<UnreadCounts, End> {
        let request = GetUnreadCountsRequest { channel_ids, thread_ids };
        let response = retry_idempotent(|| {
            let mut client = self.shared.messaging.clone();
            let request = with_token(&self.token, request.clone());
            async move { client.get_unread_counts(request).await }
        })
        .await
        .map_err(upstream_end)?;
        Ok(response.into_inner().counts.unwrap_or_default())
    }

    /// Applies a delta to the counts (counting again what it asks for) and
    /// tells the client what changed.
    async fn settle(&mut self, mut delta: Delta) -> Flow {
        if delta.needs_recount() {
            let (channels, threads) =
                (std::mem::take(&mut delta.recount_channels), std::mem::take(&mut delta.recount_threads));
            let counts = self.unread_counts(channels.clone(), threads.clone()).await?;
            if let Some(unread) = self.unread.as_mut() {
                let recounted = unread.merge(counts, &channels, &threads);
                delta.channels.extend(recounted.channels);
                delta.threads.extend(recounted.threads);
                delta.removed_channels.extend(recounted.removed_channels);
                delta.removed_threads.extend(recounted.removed_threads);
            }
        }
        if delta.is_empty() {
            return Ok(());
        }
        let Some(frame) = self.unread.as_ref().map(|u| u.frame(delta)) else { return Ok(()) };
        self.send(Frame::UnreadCounts(frame)).await
    }

    /// A notice that counts changed where events do not show it.
    async fn on_counts_notice(&mut self, body: &[u8]) -> Flow {
        let notice = std::str::from_utf8(body).unwrap_or("all");
        if notice == "all" {
            // Blocks may have changed.
            self.blocks.clear();
        }
        if self.unread.is_none() {
            return Ok(());
        }
        let mut delta = Delta::default();
        match notice.split_once(':') {
            Some(("channel", id)) => delta.recount_channels.push(id.to_string()),
            Some(("thread", id)) => delta.recount_threads.push(id.to_string()),
            _ => return Box::pin(self.count_all()).await,
        }
        Box::pin(self.settle(delta)).await
    }

    /// Passes on a co-member's presence, once per update, unless a block
    /// stands between them.
    async fn on_presence(&mut self, presence: Presence) -> Flow {
        let updated = presence.update_time.as_ref().map_or(0, micros_of);
        if self.presence_seen.get(&presence.user_id).is_some_and(|seen| *seen >= updated) {
            return Ok(());
        }
        if Box::pin(self.blocked_with(&presence.user_id)).await {
            return Ok(());
        }
        self.presence_seen.insert(presence.user_id.clone(), updated);
        self.send(Frame::Presence(presence)).await
    }

    /// Whether either of the user and `other` blocked the other; asked once
    /// per person until blocks change. When the users service cannot say,
    /// the notice is held back.
    async fn blocked_with(&mut self, other: &str) -> bool {
        if let Some(blocked) = self.blocks.get(other) {
            return *blocked;
        }
        let request = CheckBlockedRequest {
            user_id: self.user_id.clone(),
            other_user_id: other.to_string(),
            ..Default::default()
        };
        let blocked = match self.shared.users.clone().check_blocked(with_token(&self.token, request)).await {
            Ok(answer) => answer.into_inner().blocked,
            Err(_) => return true,
        };
        self.blocks.insert(other.to_string(), blocked);
        blocked
    }

    /// A ping keeps the user online, as a presence heartbeat does.
    async fn renew_presence(&mut self) {
        if self.last_heartbeat.is_some_and(|at| at.elapsed() < HEARTBEAT_EVERY) {
            return;
        }
        self.last_heartbeat = Some(std::time::Instant::now());
        let request = with_token(&self.token, HeartbeatRequest { idle: false, device_id: String::new() });
        if let Err(status) = self.shared.presence.clone().heartbeat(request).await {
            tracing::debug!(%status, "presence not renewed");
        }
    }

    async fn on_ack(&mut self, ack: pb::AckFrame) -> Flow {
        let Ok(channel_id) = parse_id("channel_id", &ack.channel_id) else {
            return self.error_frame(Code::InvalidArgument, "channel_id: must be a UUID", &ack.channel_id).await;
        };
        let Some(delivered) = self.subs.get(&channel_id).map(|s| s.last_seq) else {
            return self.error_frame(Code::FailedPrecondition, "subscribe to the channel first", &channel_id).await;
        };
        if ack.seq < 0 || ack.seq > delivered {
            let message = format!("seq: {} is not between 0 and the last event delivered ({delivered})", ack.seq);
            return self.error_frame(Code::OutOfRange, message, &channel_id).await;
        }
        let pending = self.acks.entry(channel_id).or_default();
        *pending = (*pending).max(ack.seq);
        // Recorded a moment later, so a burst of acks costs one write.
        self.acks_due.get_or_insert_with(|| tokio::time::Instant::now() + ACK_DELAY);
        Ok(())
    }

    async fn record_acks(&mut self) -> Flow {
        self.acks_due = None;
        record_delivered(self.shared.messaging.clone(), self.token.clone(), std::mem::take(&mut self.acks)).await;
        Ok(())
    }

    async fn my_channels(&self) -> Result<Vec<String>, End> {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request =
                ListMyChannelsRequest { page_size: 200, page_token: page_token.clone(), ..Default::default() };
            let response = retry_idempotent(|| {
                let mut client = self.shared.channels.clone();
                let request = with_token(&self.token, request.clone());
                async move { client.list_my_channels(request).await }
            })
            .await
            .map_err(upstream_end)?
            .into_inner();
            ids.extend(response.channels.into_iter().map(|c| c.channel_id));
            if response.next_page_token.is_empty() || ids.len() >= self.shared.config.max_channels_per_stream {
                ids.truncate(self.shared.config.max_channels_per_stream);
                return Ok(ids);
            }
            page_token = response.next_page_token;
        }
    }

    /// Starts following a channel: live first, so that nothing committed
    /// after the first read of its log can be missed, then the replay from
    /// the cursor. That read checks access: a topic taken for a channel the
    /// caller may not read is let go at once, so a stream never holds more
    /// than the one it is checking.
    async fn follow(&mut self, raw_id: &str, cursor: Option<i64>) -> Flow {
        let Ok(channel_id) = parse_id("channel_id", raw_id) else {
            return self.error_frame(Code::InvalidArgument, "channel_id: must be a UUID", raw_id).await;
        };
        if self.subs.contains_key(&channel_id) {
            return Ok(());
        }
        if self.subs.len() >= self.shared.config.max_channels_per_stream {
            let message = format!(
                "this stream follows {} channels, the most it may; unsubscribe from one first",
                self.subs.len()
            );
            return self.error_frame(Code::ResourceExhausted, message, &channel_id).await;
        }
        let topic = channel_topic(&channel_id);
        let receiver = self.shared.pubsub.subscribe(&topic).await;
        // With a cursor, the first page of the replay; without, an empty one.
        let (after, page_size) = match cursor {
            Some(seq) => (seq, self.shared.config.replay_page_size),
            None => (i64::MAX, 1),
        };
        let page = match self.fetch(&channel_id, after, page_size).await {
            Ok(page) => page,
            Err(status) => {
                drop(receiver);
                self.shared.pubsub.release(&topic);
                return self.refused(&channel_id, status).await;
            }
        };
        let head = page.head_seq;
        let start = cursor.map_or(head, |seq| seq.min(head));
        self.subs.insert(channel_id.clone(), Subscription { last_seq: start, typing: None, leaving: None });
        self.live.insert(channel_id.clone(), BroadcastStream::new(receiver));
        self.send(Frame::Subscribed(pb::SubscribedFrame { channel_id: channel_id.clone(), head_seq: head })).await?;
        let more = if let Some(seq) = cursor.filter(|&seq| seq > head) {
            // A cursor from the future is corrupt or from another deployment:
            // say so, and follow from the head rather than wait for it.
            let message = format!(
                "last_seq: {seq} is beyond the channel's newest event ({head}); following from the newest event"
            );
            self.error_frame(Code::OutOfRange, message, &channel_id).await?;
            false
        } else if cursor.is_some() {
            self.replay(&channel_id, page).await?
        } else {
            false
        };
        if more {
            self.catch_up(&channel_id).await?;
        }
        if cursor.is_some()
            && let Some(sub) = self.subs.get(&channel_id)
        {
            let seq = sub.last_seq;
            self.send(Frame::CaughtUp(pb::CaughtUpFrame { channel_id, seq })).await?;
        }
        Ok(())
    }

    /// A channel the caller may not (or no longer) follow.
    async fn refused(&mut self, channel_id: &str, status: Status) -> Flow {
        let leaving = self.subs.get(channel_id).and_then(|s| s.leaving);
        let reason = match status.code() {
            // Still out: say how they left if the replay showed it.
            Code::PermissionDenied | Code::NotFound => leaving.unwrap_or("not_found"),
            Code::Unauthenticated => return Err(End::Resume("token_expired")),
            _ => return Err(End::Resume("unavailable")),
        };
        self.drop_channel(channel_id);
        self.send(Frame::Unsubscribed(pb::UnsubscribedFrame {
            channel_id: channel_id.to_string(),
            reason: reason.into(),
        }))
        .await
    }

    fn drop_channel(&mut self, channel_id: &str) -> bool {
        if self.live.remove(channel_id).is_some() {
            self.shared.pubsub.release(&channel_topic(channel_id));
        }
        self.subs.remove(channel_id).is_some()
    }

    async fn fetch(
        &self,
        channel_id: &str,
        after_seq: i64,
        page_size: i32,
    ) -> Result<ListChannelEventsResponse, Status> {
        let request = ListChannelEventsRequest { channel_id: channel_id.to_string(), after_seq, page_size };
        retry_idempotent(|| {
            let mut client = self.shared.messaging.clone();
            let request = with_token(&self.token, request.clone());
            async move { client.list_channel_events(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
    }

    /// Replays everything after the channel's cursor from the log.
    async fn catch_up(&mut self, channel_id: &str) -> Flow {
        loop {
            let Some(after) = self.subs.get(channel_id).map(|s| s.last_seq) else { return Ok(()) };
            let page = match self.fetch(channel_id, after, self.shared.config.replay_page_size).await {
                Ok(page) => page,
                Err(status) => return self.refused(channel_id, status).await,
            };
            if !self.replay(channel_id, page).await? {
                return Ok(());
            }
        }
    }

    /// Delivers a page read from the log; tells whether more may follow.
    async fn replay(&mut self, channel_id: &str, page: ListChannelEventsResponse) -> Result<bool, End> {
        let full = page.events.len() >= self.shared.config.replay_page_size as usize;
        if let Some(sub) = self.subs.get_mut(channel_id) {
            // The log could be read, so the caller is a member now.
            sub.leaving = None;
        }
        for event in page.events {
            if let Some(reason) = self.deliver_logged(channel_id, event).await? {
                // History shows the caller leaving here, but they may have
                // come back since: the next read of the log tells, and is
                // refused if they are still out.
                if let Some(sub) = self.subs.get_mut(channel_id) {
                    sub.leaving = Some(reason);
                }
                return Ok(true);
            }
        }
        let last = self.subs.get(channel_id).map_or(0, |s| s.last_seq);
        Ok(full && last < page.head_seq)
    }

    /// Sends an event read from the log; tells whether it is the caller
    /// leaving the channel, and how.
    async fn deliver_logged(&mut self, channel_id: &str, event: ChannelEvent) -> Result<Option<&'static str>, End> {
        let left_user = match &event.kind {
            Some(Kind::MemberLeft(m)) => Some(m.user_id.as_bytes()),
            _ => None,
        };
        let left = self.leaving(event.actor_id.as_bytes(), left_user);
        let seq = event.seq;
        let delivered = self.deliver(channel_id, seq, None, Outgoing::frame(Frame::Event(event))).await?;
        Ok(left.filter(|_| delivered))
    }

    /// Why the caller stops following a channel after an event, if it does:
    /// they left it, or were removed from it.
    fn leaving(&self, actor_id: &[u8], left_user: Option<&[u8]>) -> Option<&'static str> {
        let me = self.user_id.as_bytes();
        (left_user == Some(me)).then_some(if actor_id == me { "left" } else { "removed" })
    }

    /// Sends the next event of a channel and moves its cursor; tells
    /// whether it was new. A live event that shows the caller leaving ends
    /// the subscription (`left`).
    async fn deliver(
        &mut self,
        channel_id: &str,
        seq: i64,
        left: Option<&'static str>,
        event: Outgoing,
    ) -> Result<bool, End> {
        let Some(last_seq) = self.subs.get(channel_id).map(|s| s.last_seq) else { return Ok(false) };
        if seq <= last_seq {
            return Ok(false);
        }
        let counted = self.unread.as_ref().and_then(|_| match &event {
            Outgoing::Event(bytes) => ChannelEvent::decode(bytes.clone()).ok(),
            Outgoing::Frame(frame) => match &frame.frame {
                Some(Frame::Event(e)) => Some(e.clone()),
                _ => None,
            },
        });
        self.queue(event).await?;
        // Only a queued event moves the cursor: a resume must not skip one.
        if let Some(sub) = self.subs.get_mut(channel_id) {
            sub.last_seq = seq;
        }
        if let Some(event) = counted
            && let Some(unread) = self.unread.as_mut()
        {
            let delta = unread.apply(&event);
            Box::pin(self.settle(delta)).await?;
        }
        if let Some(reason) = left {
            self.drop_channel(channel_id);
            self.send(Frame::Unsubscribed(pb::UnsubscribedFrame {
                channel_id: channel_id.to_string(),
                reason: reason.into(),
            }))
            .await?;
        }
        Ok(true)
    }

    async fn on_live(&mut self, channel_id: String, item: Result<Bytes, BroadcastStreamRecvError>) -> Flow {
        let bytes = match item {
            Ok(bytes) => bytes,
            // This node's buffer for the channel overflowed: the log has it all.
            Err(BroadcastStreamRecvError::Lagged(_)) => return self.catch_up(&channel_id).await,
        };
        match pubsub::Frame::decode(bytes) {
            Some(pubsub::Frame::Event(body)) => {
                let Ok(head) = EventHead::decode(body.clone()) else { return Ok(()) };
                let Some(last) = self.subs.get(&channel_id).map(|s| s.last_seq) else { return Ok(()) };
                if head.seq > last + 1 {
                    // A publish went missing; fill the gap (this event included).
                    self.catch_up(&channel_id).await
                } else {
                    let left = self.leaving(&head.actor_id, head.member_left.as_ref().map(|m| m.user_id.as_ref()));
                    self.deliver(&channel_id, head.seq, left, Outgoing::Event(body)).await.map(drop)
                }
            }
            Some(pubsub::Frame::Typing(body)) => match pb::TypingEvent::decode(body) {
                Ok(typing) if typing.user_id != self.user_id && !Box::pin(self.blocked_with(&typing.user_id)).await => {
                    self.send(Frame::Typing(typing)).await
                }
                _ => Ok(()),
            },
            Some(pubsub::Frame::Presence(body)) => match Presence::decode(body) {
                Ok(presence) if presence.user_id != self.user_id => Box::pin(self.on_presence(presence)).await,
                _ => Ok(()),
            },
            // Publishes may have been lost: the log has them.
            Some(pubsub::Frame::Resync) => self.catch_up(&channel_id).await,
            Some(pubsub::Frame::Counts(_) | pubsub::Frame::File(_)) | None => Ok(()),
        }
    }

    async fn on_user_feed(&mut self, item: Option<Result<Bytes, BroadcastStreamRecvError>>) -> Flow {
        match item {
            Some(Ok(bytes)) => {
                let body = match pubsub::Frame::decode(bytes) {
                    Some(pubsub::Frame::Event(body)) => body,
                    Some(pubsub::Frame::Counts(body)) => return Box::pin(self.on_counts_notice(&body)).await,
                    Some(pubsub::Frame::File(body)) => {
                        return match colink_proto::files::v1::File::decode(body) {
                            Ok(file) if file.owner_id == self.user_id => self.send(Frame::File(file)).await,
                            _ => Ok(()),
                        };
                    }
                    // Notices may have been missed too.
                    Some(pubsub::Frame::Resync) => {
                        self.follow_new_channels().await?;
                        return if self.unread.is_some() { Box::pin(self.count_all()).await } else { Ok(()) };
                    }
                    _ => return Ok(()),
                };
                let Ok(event) = ChannelEvent::decode(body) else { return Ok(()) };
                let joined_me = matches!(&event.kind, Some(Kind::MemberJoined(m)) if m.user_id == self.user_id);
                if joined_me && !self.subs.contains_key(&event.channel_id) {
                    // Start just before the join, so the join itself is delivered.
                    self.follow(&event.channel_id.clone(), Some(event.seq - 1)).await?;
                }
                Ok(())
            }
            Some(Err(BroadcastStreamRecvError::Lagged(_))) => {
                self.follow_new_channels().await?;
                if self.unread.is_some() { Box::pin(self.count_all()).await } else { Ok(()) }
            }
            None => {
                self.user_feed = None;
                Ok(())
            }
        }
    }

    /// Joins may have been missed: look at the membership list again and
    /// follow new conversations from their start.
    async fn follow_new_channels(&mut self) -> Flow {
        for channel_id in self.my_channels().await? {
            if !self.subs.contains_key(&channel_id) {
                self.follow(&channel_id, Some(0)).await?;
            }
        }
        Ok(())
    }

    async fn on_typing(&mut self, raw_id: String, stopped: bool) -> Flow {
        let Ok(channel_id) = parse_id("channel_id", &raw_id) else {
            return self.error_frame(Code::InvalidArgument, "channel_id: must be a UUID", &raw_id).await;
        };
        let now = tokio::time::Instant::now();
        let right = match self.subs.get(&channel_id).map(|s| s.typing) {
            None => {
                return self.error_frame(Code::FailedPrecondition, "subscribe to the channel first", &channel_id).await;
            }
            Some(Some((right, asked))) if now.duration_since(asked) < TYPING_RECHECK => right,
            Some(_) => {
                let request = GetChannelRequest { channel_id: channel_id.clone() };
                let channel = self
                    .shared
                    .channels
                    .clone()
                    .get_channel(with_token(&self.token, request))
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().channel);
                let right = match channel {
                    Some(c) if c.viewer_role == MemberRole::Unspecified as i32 => TypingRight::NotMember,
                    Some(c) if c.viewer_muted => TypingRight::Muted,
                    Some(_) => TypingRight::Allowed,
                    None => TypingRight::NotMember,
                };
                if let Some(sub) = self.subs.get_mut(&channel_id) {
                    sub.typing = Some((right, now));
                }
                right
            }
        };
        match right {
            TypingRight::Allowed => {}
            TypingRight::NotMember => {
                return self
                    .error_frame(Code::PermissionDenied, "only members can type in a conversation", &channel_id)
                    .await;
            }
            TypingRight::Muted => {
                return self
                    .error_frame(Code::PermissionDenied, "you are muted in this conversation", &channel_id)
                    .await;
            }
        }
        // Stored for ListTypingUsers; the live notice does not depend on it.
        let stored = if stopped {
            self.shared.ephemeral.set_remove(&typing_key(&channel_id), &self.user_id).await
        } else {
            self.shared.ephemeral.set_put(&typing_key(&channel_id), &self.user_id, TYPING_TTL).await
        };
        if let Err(err) = stored {
            tracing::debug!(error = %err, "typing notice not stored");
        }
        // A notice that has already expired says the typing stopped.
        let expires = if stopped { now_micros() } else { typing_expires_at() };
        let typing = pb::TypingEvent {
            channel_id: channel_id.clone(),
            user_id: self.user_id.clone(),
            expire_time: Some(timestamp(expires)),
        };
        let frame = pubsub::Frame::Typing(typing.encode_to_vec().into()).encode();
        self.shared.pubsub.publish(&channel_topic(&channel_id), frame).await;
        Ok(())
    }
}

/// The canonical name of a status code, e.g. "INVALID_ARGUMENT".
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Records how far a stream delivered each channel. A failure is only
/// logged: the client's next acknowledgement moves the position again.
async fn record_delivered(
    mut messaging: MessagingServiceClient<PeerChannel>,
    token: Arc<str>,
    acks: HashMap<String, i64>,
) {
    for (channel_id, seq) in acks {
        let request = with_token(&token, MarkDeliveredRequest { channel_id, seq });
        if let Err(status) = messaging.mark_delivered(request).await {
            tracing::debug!(%status, "delivered position not recorded");
        }
    }
}

fn upstream_end(status: Status) -> End {
    match status.code() {
        Code::Unauthenticated => End::Resume("token_expired"),
        _ => End::Resume("unavailable"),
    }
}

async fn next_client_frame(
    client: &mut Option<Streaming<pb::ConnectRequest>>,
) -> Option<Result<pb::ConnectRequest, Status>> {
    match client {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// When a token that expires at `expires_at` (Unix seconds) runs out.
fn deadline_of(expires_at: i64) -> tokio::time::Instant {
    let left = u64::try_from(expires_at.saturating_mul(1_000_000).saturating_sub(now_micros())).unwrap_or(0);
    let now = tokio::time::Instant::now();
    now.checked_add(Duration::from_micros(left)).unwrap_or(now + Duration::from_secs(86_400 * 365))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_feed(feed: &mut Option<BroadcastStream<Bytes>>) -> Option<Result<Bytes, BroadcastStreamRecvError>> {
    match feed {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_use_their_canonical_names() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }
}
