//! The presence service: who is online, away or busy, and who is typing.
//!
//! Presence is ephemeral state: an entry lives 60 seconds unless a heartbeat
//! (due every 30) renews it, and a user without one is offline. Typing
//! notices live 5 seconds and reach streaming members through pub/sub. When
//! the ephemeral store is down, presence answers UNAVAILABLE and typing
//! notices still reach live streams; both recover as soon as it returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::channels::v1::{Channel as Conversation, GetChannelRequest, ListMyChannelsRequest, MemberRole};
use colink_proto::events::v1::PresenceChanged;
use colink_proto::events::v1::event::Payload;
use colink_proto::presence::v1 as pb;
use colink_proto::presence::v1::presence_service_server::{PresenceService as PresenceRpc, PresenceServiceServer};
use colink_proto::realtime::v1::TypingEvent;
use colink_proto::users::v1::BatchGetUsersRequest;
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_runtime::clients::PeerChannel;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::ephemeral::{
    Ephemeral, EphemeralError, TYPING_TTL, last_seen_key, presence_key, typing_expires_at, typing_key,
};
use colink_runtime::error::Violations;
use colink_runtime::events::{self, EventError, EventHandler, EventLog, PRESENCE_EVENTS};
use colink_runtime::ids::{check_text, micros_of, now_micros, parse_id, parse_id_list, timestamp};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic};
use colink_runtime::{Caller, Error, Result, caller};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

/// How long presence lasts without a heartbeat (the seeds' 60 s).
const PRESENCE_TTL: Duration = Duration::from_secs(60);
/// What clients are told to use; two heartbeats fit in one TTL.
const HEARTBEAT_INTERVAL_SECS: i32 = 30;
/// How long "last seen" is remembered after a user goes offline.
const LAST_SEEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
const MAX_BATCH: usize = 100;
/// Presence changes of one user are announced at most this often.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// How often expired presences are looked for, to announce departures.
const DEPARTURE_CHECK: Duration = Duration::from_secs(5);
/// The ephemeral set of users whose presence was announced as present.
const ANNOUNCED: &str = "presence:announced";
/// How long a user's audience is kept after their last change.
const AUDIENCE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Conversations a presence change is announced in, at most.
const MAX_ANNOUNCED_CHANNELS: usize = 1_000;

/// A user's presence as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    status: i32,
    custom_status: String,
    custom_status_emoji: String,
    /// When the custom status ends (microseconds), if it does.
    custom_status_expires: Option<i64>,
    last_seen: i64,
    updated: i64,
}

pub struct PresenceService {
    store: Arc<dyn Ephemeral>,
    pubsub: Arc<dyn PubSub>,
    channels: ChannelsServiceClient<PeerChannel>,
    users: UsersServiceClient<PeerChannel>,
    events: Arc<dyn EventLog>,
    /// When each user's presence was last announced from this node.
    announced: Arc<Mutex<HashMap<String, Instant>>>,
}

impl PresenceService {
    pub fn new(
        store: Arc<dyn Ephemeral>,
        pubsub: Arc<dyn PubSub>,
        events: Arc<dyn EventLog>,
        channels: PeerChannel,
        users: PeerChannel,
    ) -> Self {
        tokio::spawn(announce_departures(store.clone(), pubsub.clone(), events.clone()));
        Self {
            store,
            pubsub,
            channels: ChannelsServiceClient::new(channels),
            users: UsersServiceClient::new(users),
            events,
            announced: Arc::default(),
        }
    }

    /// The consumer of `user.events` that takes deactivated accounts
    /// offline.
    pub fn deactivations(&self) -> Arc<dyn EventHandler> {
        Arc::new(Deactivations {
            store: self.store.clone(),
            pubsub: self.pubsub.clone(),
            events: Arc::downgrade(&self.events),
        })
    }

    /// Tells the people who share a conversation with the caller that their
    /// presence changed: on each conversation's live topic, at most once per
    /// `ANNOUNCE_EVERY` (a change within it is announced when it ends).
    async fn announce_presence(&self, caller: &Caller) {
        let wait = {
            let Ok(mut announced) = self.announced.lock() else { return };
            let now = Instant::now();
            match announced.get(&caller.user_id) {
                Some(at) if now < *at => return, // a later announcement is already due
                Some(at) if now.duration_since(*at) < ANNOUNCE_EVERY => {
                    let due = *at + ANNOUNCE_EVERY;
                    announced.insert(caller.user_id.clone(), due);
                    Some(due - now)
                }
                _ => {
                    announced.insert(caller.user_id.clone(), now);
                    None
                }
            }
        };
        let Some(wait) = wait else {
            if let Err(err) = self.publish_presence(caller).await {
                tracing::debug!(error = %err, "presence change not announced");
            }
            return;
        };
        let service = self.clone_for_later();
        let caller = caller.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Err(err) = service.publish_presence(&caller).await {
                tracing::debug!(error = %err, "presence change not announced");
            }
        });
    }

    fn clone_for_later(&self) -> Self {
        Self {
            store: self.store.clone(),
            pubsub: self.pubsub.clone(),
            channels: self.channels.clone(),
            users: self.users.clone(),
            events: self.events.clone(),
            announced: self.announced.clone(),
        }
    }

    async fn publish_presence(&self, caller: &Caller) -> Result<()> {
        let mut channel_ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListMyChannelsRequest { page_size: 200, page_token, ..Default::default() };
            let page =
                call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.list_my_channels(r).await })
                    .await?;
            channel_ids.extend(page.channels.into_iter().map(|c| c.channel_id));
            if page.next_page_token.is_empty() || channel_ids.len() >= MAX_ANNOUNCED_CHANNELS {
                break;
            }
            page_token = page.next_page_token;
        }
        let request = BatchGetUsersRequest { user_ids: vec![caller.user_id.clone()], ..Default::default() };
        let hidden = call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.batch_get_users(r).await })
            .await?
            .users
            .first()
            .is_some_and(|u| u.last_active_hidden);
        // Kept so that a departure can be announced without the user.
        let audience = Audience { channel_ids, hide_last_seen: hidden };
        let bytes = Bytes::from(serde_json::to_vec(&audience).map_err(Error::internal)?);
        self.store.put(&audience_key(&caller.user_id), bytes, AUDIENCE_TTL).await.map_err(degraded)?;
        self.store.set_put(ANNOUNCED, &caller.user_id, AUDIENCE_TTL).await.map_err(degraded)?;
        let presence = self.load(std::slice::from_ref(&caller.user_id)).await?.into_iter().next();
        if let Some(presence) = presence {
            record(self.events.as_ref(), &presence).await;
            broadcast(self.pubsub.as_ref(), &audience, presence).await;
        }
        Ok(())
    }

    pub fn into_server(self) -> PresenceServiceServer<Self> {
        PresenceServiceServer::new(self)
    }

    async fn load(&self, user_ids: &[String]) -> Result<Vec<pb::Presence>> {
        let keys: Vec<String> = user_ids.iter().flat_map(|id| [presence_key(id), last_seen_key(id)]).collect();
        let values = self.store.get_many(&keys).await.map_err(degraded)?;
        let now = now_micros();
        Ok(user_ids
            .iter()
            .zip(values.chunks(2))
            .map(|(user_id, pair)| {
                let decode = |v: &Option<Bytes>| v.as_ref().and_then(|b| serde_json::from_slice::<Stored>(b).ok());
                match pair.first().and_then(decode) {
                    Some(stored) => to_pb(user_id, stored, now),
                    None => {
                        let seen = pair.get(1).and_then(decode).map(|s| s.last_seen);
                        pb::Presence {
                            user_id: user_id.clone(),
                            status: pb::PresenceStatus::Offline as i32,
                            last_seen_time: seen.map(timestamp),
                            ..Default::default()
                        }
                    }
                }
            })
            .collect())
    }

    /// Presences as the caller may see them: without the last-seen time of
    /// those who hide it.
    async fn visible(&self, caller: &Caller, mut presences: Vec<pb::Presence>) -> Result<Vec<pb::Presence>> {
        let others: Vec<String> =
            presences.iter().filter(|p| p.user_id != caller.user_id).map(|p| p.user_id.clone()).collect();
        if others.is_empty() {
            return Ok(presences);
        }
        let request = BatchGetUsersRequest { user_ids: others, ..Default::default() };
        let hidden: Vec<String> =
            call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.batch_get_users(r).await })
                .await?
                .users
                .into_iter()
                .filter(|u| u.last_active_hidden)
                .map(|u| u.user_id)
                .collect();
        for presence in &mut presences {
            if hidden.contains(&presence.user_id) {
                presence.last_seen_time = None;
            }
        }
        Ok(presences)
    }

    async fn save(&self, user_id: &str, stored: &Stored) -> Result<()> {
        let bytes = Bytes::from(serde_json::to_vec(stored).map_err(Error::internal)?);
        self.store.put(&presence_key(user_id), bytes.clone(), PRESENCE_TTL).await.map_err(degraded)?;
        self.store.put(&last_seen_key(user_id), bytes, LAST_SEEN_TTL).await.map_err(degraded)
    }

    async fn current(&self, user_id: &str) -> Result<Option<Stored>> {
        let values = self.store.get_many(&[presence_key(user_id)]).await.map_err(degraded)?;
        Ok(values.into_iter().next().flatten().and_then(|b| serde_json::from_slice(&b).ok()))
    }

    async fn set_presence(&self, caller: &Caller, req: &pb::SetPresenceRequest) -> Result<pb::Presence> {
        let paths: Vec<&str> = match &req.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths.iter().map(String::as_str).collect(),
            _ => vec!["status", "custom_status", "custom_status_emoji", "expires_at"],
        };
        let now = now_micros();
        let mut v = Violations::default();
        let mut stored = self
            .current(&caller.user_id)
            .await?
            .unwrap_or_else(|| Stored { status: pb::PresenceStatus::Online as i32, ..Default::default() });
        for path in paths {
            match path {
                "status" => match pb::PresenceStatus::try_from(req.status) {
                    Ok(pb::PresenceStatus::Unspecified) | Err(_) => {
                        v.add("status", "must be ONLINE, AWAY, DND or OFFLINE")
                    }
                    Ok(status) => stored.status = status as i32,
                },
                "custom_status" => {
                    v.check(check_text("custom_status", &req.custom_status, 0, 100));
                    stored.custom_status = req.custom_status.clone();
                }
                "custom_status_emoji" => {
                    v.check(check_text("custom_status_emoji", &req.custom_status_emoji, 0, 32));
                    stored.custom_status_emoji = req.custom_status_emoji.clone();
                }
                "expires_at" => {
                    stored.custom_status_expires = req.expires_at.as_ref().map(micros_of);
                    if stored.custom_status_expires.is_some_and(|at| at <= now) {
                        v.add("expires_at", "must be in the future");
                    }
                }
                other => v.add("update_mask", format!("unknown field {other:?}")),
            }
        }
        v.finish()?;
        stored.last_seen = now;
        stored.updated = now;
        self.save(&caller.user_id, &stored).await?;
        Ok(to_pb(&caller.user_id, stored, now))
    }

    /// Keeps the caller's presence alive. ONLINE and AWAY follow `idle`;
    /// DND and OFFLINE (invisible) were chosen by the user and stay.
    async fn heartbeat(&self, caller: &Caller, idle: bool) -> Result<pb::Presence> {
        let now = now_micros();
        let mut stored = self.current(&caller.user_id).await?.unwrap_or_default();
        let chosen = [pb::PresenceStatus::Dnd as i32, pb::PresenceStatus::Offline as i32];
        if !chosen.contains(&stored.status) {
            let status = if idle { pb::PresenceStatus::Away } else { pb::PresenceStatus::Online };
            if stored.status != status as i32 {
                stored.status = status as i32;
                stored.updated = now;
            }
        }
        stored.last_seen = now;
        self.save(&caller.user_id, &stored).await?;
        Ok(to_pb(&caller.user_id, stored, now))
    }

    /// The channel as the caller sees it; PERMISSION_DENIED or NOT_FOUND
    /// from channels pass through for channels they cannot see.
    async fn channel(&self, caller: &Caller, channel_id: &str) -> Result<Conversation> {
        let request = GetChannelRequest { channel_id: channel_id.to_string() };
        call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.get_channel(r).await })
            .await?
            .channel
            .ok_or_else(|| Error::internal("channels answered without a channel"))
    }

    async fn start_typing(&self, caller: &Caller, req: &pb::StartTypingRequest) -> Result<prost_types::Timestamp> {
        let mut v = Violations::default();
        let channel_id = v.id("channel_id", &req.channel_id);
        v.optional_id("thread_id", &req.thread_id);
        v.finish()?;
        let channel = self.channel(caller, &channel_id).await?;
        if channel.viewer_role == MemberRole::Unspecified as i32 {
            return Err(Error::denied("only members can type in a conversation"));
        }
        if channel.viewer_muted {
            return Err(Error::denied("you are muted in this conversation"));
        }
        // The live notice does not need the store: typing keeps working
        // for streaming members while it is down.
        if let Err(err) = self.store.set_put(&typing_key(&channel_id), &caller.user_id, TYPING_TTL).await {
            tracing::warn!(error = %err, "typing notice not stored");
        }
        let expires = typing_expires_at();
        self.announce(&channel_id, &caller.user_id, expires).await;
        Ok(timestamp(expires))
    }

    async fn stop_typing(&self, caller: &Caller, raw_channel_id: &str) -> Result<()> {
        let channel_id = parse_id("channel_id", raw_channel_id)?;
        if let Err(err) = self.store.set_remove(&typing_key(&channel_id), &caller.user_id).await {
            tracing::warn!(error = %err, "typing notice not removed");
        }
        // An expiry that has passed tells clients to hide the indicator now.
        self.announce(&channel_id, &caller.user_id, now_micros()).await;
        Ok(())
    }

    async fn list_typing(&self, caller: &Caller, raw_channel_id: &str) -> Result<Vec<pb::TypingUser>> {
        let channel_id = parse_id("channel_id", raw_channel_id)?;
        // Seeing the channel is enough; the call fails for outsiders.
        self.channel(caller, &channel_id).await?;
        let members = self.store.set_members(&typing_key(&channel_id)).await.map_err(degraded)?;
        Ok(members
            .into_iter()
            .map(|(user_id, expires)| pb::TypingUser {
                channel_id: channel_id.clone(),
                user_id,
                expire_time: Some(timestamp(expires)),
                thread_id: String::new(),
            })
            .collect())
    }

    async fn announce(&self, channel_id: &str, user_id: &str, expires: i64) {
        let typing = TypingEvent {
            channel_id: channel_id.to_string(),
            user_id: user_id.to_string(),
            expire_time: Some(timestamp(expires)),
        };
        self.pubsub.publish(&channel_topic(channel_id), Frame::Typing(typing.encode_to_vec().into()).encode()).await;
    }
}

fn to_pb(user_id: &str, mut stored: Stored, now: i64) -> pb::Presence {
    if stored.custom_status_expires.is_some_and(|at| at <= now) {
        stored.custom_status.clear();
        stored.custom_status_emoji.clear();
        stored.custom_status_expires = None;
    }
    pb::Presence {
        user_id: user_id.to_string(),
        status: stored.status,
        custom_status: stored.custom_status,
        custom_status_emoji: stored.custom_status_emoji,
        expires_at: stored.custom_status_expires.map(timestamp),
        last_seen_time: Some(timestamp(stored.last_seen)),
        update_time: Some(timestamp(stored.updated)),
    }
}

/// Whether others should hear of a change: the status or custom status
/// they see is different.
fn changed(before: Option<&pb::Presence>, after: &pb::Presence) -> bool {
    before.is_none_or(|b| {
        b.status != after.status
            || b.custom_status != after.custom_status
            || b.custom_status_emoji != after.custom_status_emoji
    })
}

/// Where a user's presence changes go, kept for announcing their departure.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Audience {
    channel_ids: Vec<String>,
    hide_last_seen: bool,
}

fn audience_key(user_id: &str) -> String {
    format!("presence:audience:{user_id}")
}

async fn broadcast(pubsub: &dyn PubSub, audience: &Audience, mut presence: pb::Presence) {
    if audience.hide_last_seen {
        presence.last_seen_time = None;
    }
    let frame = Frame::Presence(presence.encode_to_vec().into()).encode();
    for channel_id in &audience.channel_ids {
        pubsub.publish(&channel_topic(channel_id), frame.clone()).await;
    }
}

/// Announces, for as long as the node runs, that users whose presence
/// expired (no heartbeat, no stream) are now offline.
async fn announce_departures(store: Arc<dyn Ephemeral>, pubsub: Arc<dyn PubSub>, events: Arc<dyn EventLog>) {
    let mut tick = tokio::time::interval(DEPARTURE_CHECK);
    loop {
        tick.tick().await;
        let Ok(announced) = store.set_members(ANNOUNCED).await else { continue };
        let users: Vec<String> = announced.into_iter().map(|(user, _)| user).collect();
        for chunk in users.chunks(MAX_BATCH) {
            let keys: Vec<String> = chunk.iter().map(|u| presence_key(u)).collect();
            let Ok(present) = store.get_many(&keys).await else { continue };
            for (user_id, value) in chunk.iter().zip(present) {
                if value.is_none() {
                    depart(store.as_ref(), pubsub.as_ref(), events.as_ref(), user_id).await;
                }
            }
        }
    }
}

/// Announces once, to those who share a conversation with the user, that
/// they are offline now.
async fn depart(store: &dyn Ephemeral, pubsub: &dyn PubSub, events: &dyn EventLog, user_id: &str) {
    // Announced once: whoever removes the user announces.
    if store.set_remove(ANNOUNCED, user_id).await.is_err() {
        return;
    }
    let Ok(values) = store.get_many(&[audience_key(user_id), last_seen_key(user_id)]).await else {
        return;
    };
    let audience: Audience = values[0].as_ref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
    let last_seen = values
        .get(1)
        .and_then(|v| v.as_ref())
        .and_then(|b| serde_json::from_slice::<Stored>(b).ok())
        .map(|s| s.last_seen);
    let presence = pb::Presence {
        user_id: user_id.to_string(),
        status: pb::PresenceStatus::Offline as i32,
        last_seen_time: last_seen.map(timestamp),
        update_time: Some(timestamp(now_micros())),
        ..Default::default()
    };
    record(events, &presence).await;
    broadcast(pubsub, &audience, presence).await;
}

/// The consumer of `user.events` that takes a deactivated account offline
/// at once, instead of when its last heartbeat runs out.
pub struct Deactivations {
    store: Arc<dyn Ephemeral>,
    pubsub: Arc<dyn PubSub>,
    /// Weak: the log holds this consumer, and a strong reference back would
    /// keep the log, and every consumer's database pool, alive for ever.
    events: Weak<dyn EventLog>,
}

#[async_trait::async_trait]
impl EventHandler for Deactivations {
    async fn handle(&self, event: &colink_proto::events::v1::Event) -> std::result::Result<(), EventError> {
        let Some(Payload::UserStatusChanged(changed)) = &event.payload else { return Ok(()) };
        if !changed.deactivated {
            return Ok(());
        }
        self.store
            .remove(&presence_key(&changed.user_id))
            .await
            .map_err(|e| EventError::Consumer(format!("cannot take {} offline: {}", changed.user_id, e.0)))?;
        // Without the log the node is stopping: nobody is left to tell.
        if let Some(events) = self.events.upgrade() {
            depart(self.store.as_ref(), self.pubsub.as_ref(), events.as_ref(), &changed.user_id).await;
        }
        Ok(())
    }
}

/// Publishes a `presence.updated` domain event, best effort: presence is
/// ephemeral, and the next change says the same again.
async fn record(log: &dyn EventLog, presence: &pb::Presence) {
    let status = match pb::PresenceStatus::try_from(presence.status) {
        Ok(pb::PresenceStatus::Online) => "online",
        Ok(pb::PresenceStatus::Away) => "away",
        Ok(pb::PresenceStatus::Dnd) => "dnd",
        _ => "offline",
    };
    let changed = PresenceChanged {
        user_id: presence.user_id.clone(),
        status: status.to_string(),
        custom_status: presence.custom_status.clone(),
    };
    let event = events::event("presence.updated", &presence.user_id, Payload::PresenceUpdated(changed));
    if let Err(err) = log.publish(PRESENCE_EVENTS, &presence.user_id, event.encode_to_vec().into()).await {
        tracing::debug!(error = %err, "presence event not published");
    }
}

fn degraded(err: EphemeralError) -> Error {
    tracing::warn!(error = %err, "presence store unavailable");
    Error::Unavailable("presence is temporarily unavailable; retry shortly".into())
}

#[tonic::async_trait]
impl PresenceRpc for PresenceService {
    async fn set_presence(
        &self,
        request: Request<pb::SetPresenceRequest>,
    ) -> Result<Response<pb::SetPresenceResponse>, Status> {
        let caller = caller(&request)?;
        let before = self.load(std::slice::from_ref(&caller.user_id)).await?.into_iter().next();
        let presence = PresenceService::set_presence(self, caller, request.get_ref()).await?;
        if changed(before.as_ref(), &presence) {
            self.announce_presence(caller).await;
        }
        Ok(Response::new(pb::SetPresenceResponse { presence: Some(presence) }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        if req.device_id.len() > 128 {
            return Err(Error::invalid("device_id", "must be at most 128 characters").into());
        }
        let before = self.load(std::slice::from_ref(&caller.user_id)).await?.into_iter().next();
        let presence = PresenceService::heartbeat(self, caller, req.idle).await?;
        if changed(before.as_ref(), &presence) {
            self.announce_presence(caller).await;
        }
        Ok(Response::new(pb::HeartbeatResponse {
            presence: Some(presence),
            next_heartbeat_seconds: HEARTBEAT_INTERVAL_SECS,
        }))
    }

    async fn get_presence(
        &self,
        request: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::GetPresenceResponse>, Status> {
        let caller = caller(&request)?;
        let user_id = parse_id("user_id", &request.get_ref().user_id).map_err(Error::from)?;
        let presence = self.visible(caller, self.load(&[user_id]).await?).await?.into_iter().next();
        Ok(Response::new(pb::GetPresenceResponse { presence }))
    }

    async fn batch_get_presence(
        &self,
        request: Request<pb::BatchGetPresenceRequest>,
    ) -> Result<Response<pb::BatchGetPresenceResponse>, Status> {
        let caller = caller(&request)?;
        let raw = &request.get_ref().user_ids;
        let mut v = Violations::default();
        if raw.is_empty() || raw.len() > MAX_BATCH {
            v.add("user_ids", format!("must list 1..={MAX_BATCH} users"));
        }
        let user_ids = parse_id_list(&mut v, "user_ids", raw);
        v.finish()?;
        let presences = self.visible(caller, self.load(&user_ids).await?).await?;
        Ok(Response::new(pb::BatchGetPresenceResponse { presences }))
    }

    async fn start_typing(
        &self,
        request: Request<pb::StartTypingRequest>,
    ) -> Result<Response<pb::StartTypingResponse>, Status> {
        let caller = caller(&request)?;
        let expire_time = PresenceService::start_typing(self, caller, request.get_ref()).await?;
        Ok(Response::new(pb::StartTypingResponse { expire_time: Some(expire_time) }))
    }

    async fn stop_typing(
        &self,
        request: Request<pb::StopTypingRequest>,
    ) -> Result<Response<pb::StopTypingResponse>, Status> {
        let caller = caller(&request)?;
        PresenceService::stop_typing(self, caller, &request.get_ref().channel_id).await?;
        Ok(Response::new(pb::StopTypingResponse {}))
    }

    async fn list_typing_users(
        &self,
        request: Request<pb::ListTypingUsersRequest>,
    ) -> Result<Response<pb::ListTypingUsersResponse>, Status> {
        let caller = caller(&request)?;
        let typing_users = self.list_typing(caller, &request.get_ref().channel_id).await?;
        Ok(Response::new(pb::ListTypingUsersResponse { typing_users }))
    }
}
