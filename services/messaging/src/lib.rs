//! The messaging service: messages, their edit history, pins, read state,
//! and each channel's event log with gap-free sequence numbers. Live
//! delivery is a best-effort publish after commit; the log is the truth.

mod access;
mod attachments;
mod batches;
mod blocks;
pub mod commit;
mod consumer;
mod emoji;
mod expire;
mod handlers;
mod log;
mod mentions;
mod moderation;
mod mutes;
mod reactions;
mod read_states;
mod retention;
mod store;
mod threads;
mod unread;

pub use reactions::Reactions;
pub use retention::Retention;
pub use threads::Threads;

use std::collections::HashMap;
use std::sync::Arc;

use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::channels::v1::{Channel, ChannelKind, GetChannelRequest, MemberRole, OpenDirectMessageRequest};
use colink_proto::events::v1::{MessageChanged, event::Payload};
use colink_proto::files::v1::files_service_client::FilesServiceClient;
use colink_proto::files::v1::{CheckAttachmentsRequest, GetFileRequest, ScanStatus};
use colink_proto::messaging::v1 as pb;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::messaging_service_server::MessagingServiceServer;
use colink_proto::presence::v1::presence_service_client::PresenceServiceClient;
use colink_proto::reactions::v1::reactions_service_server::ReactionsServiceServer;
use colink_proto::threads::v1::threads_service_server::ThreadsServiceServer;
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_runtime::clients::{call_on_behalf, deny_if_blocked, on_behalf_of};
use colink_runtime::clock::{Clock, SystemClock};
use colink_runtime::db::Db;
use colink_runtime::ephemeral::{Ephemeral, within_budget};
use colink_runtime::error::{Page, Violations};
use colink_runtime::events::{self, EventHandler, MESSAGE_EVENTS, Outbox};
use colink_runtime::idempotency::Keys;
use colink_runtime::ids::{
    check_idempotency_key, check_same_request, check_text, encode_page_token, now_micros, opt_timestamp, page_size,
    parse_id, parse_id_list, request_fingerprint, timestamp,
};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic};
use colink_runtime::{Caller, Error, Result, Role};
use futures_util::StreamExt;
use prost::Message as _;

use colink_runtime::clients::PeerChannel;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};

use crate::access::{ACCESS_TOPIC, ACCESS_TTL, AccessCache};
use crate::commit::{GroupCommit, NewMessage, Stored, ThreadReply};
use crate::store::{channel_event, channel_head, idempotency, message, message_edit, removed_message};

pub const MAX_TEXT: usize = 40_000;
const MAX_FILES: usize = 10;
/// How long after sending a message its sender may recall it.
const RECALL_WINDOW_MICROS: i64 = 2 * 60 * 1_000_000;

pub struct MessagingService {
    db: Db,
    outbox: Outbox,
    pubsub: Arc<dyn PubSub>,
    channels: ChannelsServiceClient<PeerChannel>,
    files: FilesServiceClient<PeerChannel>,
    users: UsersServiceClient<PeerChannel>,
    presence: PresenceServiceClient<PeerChannel>,
    limit: SendLimit,
    writer: GroupCommit,
    reaction_writer: reactions::writer::ReactionWriter,
    /// Whom each caller blocked, for counts and mentions.
    blocks: blocks::BlockCache,
    remembered: Arc<AccessCache>,
    keys: Keys,
    /// What retention takes for now.
    clock: Arc<dyn Clock>,
    mutes: mutes::MuteList,
}

/// The services messaging calls.
pub struct Peers {
    pub channels: PeerChannel,
    pub users: PeerChannel,
    pub presence: PeerChannel,
    pub files: PeerChannel,
}

/// How many messages one user may send per minute, counted in ephemeral
/// state shared by every node; 0 means no limit.
pub struct SendLimit {
    pub counters: Arc<dyn Ephemeral>,
    pub per_minute: u32,
}

/// The text and attachments of a message, validated.
struct Content {
    text: String,
    file_ids: Vec<String>,
}

impl Content {
    fn parse(v: &mut Violations, text: &str, file_ids: &[String]) -> Self {
        // A file may go without words, as a photo without a caption.
        let min = if file_ids.is_empty() { 1 } else { 0 };
        v.check(check_text("text", text, min, MAX_TEXT));
        if file_ids.len() > MAX_FILES {
            v.add("file_ids", format!("must list at most {MAX_FILES} files"));
        }
        Self { text: text.to_string(), file_ids: parse_id_list(v, "file_ids", file_ids) }
    }
}

/// Where a message goes.
enum Target {
    Channel(String),
    /// The direct message with this user, opened if needed.
    Recipient(String),
}

/// A message or reply that passed validation.
struct Post {
    target: Target,
    thread_id: Option<String>,
    also_in_channel: bool,
    content: Content,
    key: Option<String>,
    fingerprint: Option<String>,
}

/// Where a post may go, once admitted.
struct Admitted {
    channel_id: String,
    /// For a reply: the thread's root message.
    root: Option<message::Model>,
    /// The attached files still being scanned.
    scanning_file_ids: Vec<String>,
}

/// What the caller may do in a conversation, as the channels service says.
struct Access {
    channel: Channel,
}

impl Access {
    fn is_member(&self) -> bool {
        self.channel.viewer_role != MemberRole::Unspecified as i32
    }

    fn can_moderate(&self, caller: &Caller) -> bool {
        matches!(caller.role, Role::Admin | Role::Moderator)
            || self.channel.viewer_role == MemberRole::Owner as i32
            || self.channel.viewer_role == MemberRole::Admin as i32
    }

    /// Posting and changing content needs membership in a live channel.
    fn require_writable(&self) -> Result<()> {
        if !self.is_member() {
            return Err(Error::denied("join the conversation to post in it"));
        }
        if self.channel.archived {
            return Err(Error::precondition("the channel is archived"));
        }
        Ok(())
    }
}

impl MessagingService {
    pub fn new(db: Db, outbox: Outbox, pubsub: Arc<dyn PubSub>, peers: Peers, limit: SendLimit) -> Self {
        let writer = GroupCommit::spawn(db.clone(), outbox.clone(), pubsub.clone());
        let reaction_writer = reactions::writer::ReactionWriter::spawn(db.clone(), outbox.clone(), pubsub.clone());
        let blocks = blocks::BlockCache::new(pubsub.clone());
        let db_for_keys = db.clone();
        let (db_for_mutes, pubsub_for_mutes) = (db.clone(), pubsub.clone());
        let remembered = Arc::new(AccessCache::new(ACCESS_TTL));
        tokio::spawn(forget_on_notice(pubsub.clone(), remembered.clone()));
        Self {
            db,
            outbox,
            pubsub,
            channels: ChannelsServiceClient::new(peers.channels),
            files: FilesServiceClient::new(peers.files),
            users: UsersServiceClient::new(peers.users),
            presence: PresenceServiceClient::new(peers.presence),
            limit,
            writer,
            reaction_writer,
            blocks,
            remembered,
            keys: Keys::new(db_for_keys),
            clock: Arc::new(SystemClock),
            mutes: mutes::MuteList::new(db_for_mutes, pubsub_for_mutes),
        }
    }

    /// Retention goes by `clock` instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The gRPC services served from this store: messages, threads,
    /// reactions, and retention (which also runs on a schedule).
    pub fn into_servers(
        self,
    ) -> (MessagingServiceServer<Self>, ThreadsServiceServer<Threads>, ReactionsServiceServer<Reactions>, Retention)
    {
        let shared = Arc::new(self);
        (
            MessagingServiceServer::from_arc(shared.clone()),
            Threads(shared.clone()).into_server(),
            Reactions(shared.clone()).into_server(),
            Retention(shared),
        )
    }

    /// The consumer of `file.events` that tells conversations when an
    /// attached file's scan ends, and takes infected files off messages.
    pub fn attachment_watcher(&self) -> Arc<dyn EventHandler> {
        Arc::new(attachments::ScanWatcher(self.announcer()))
    }

    fn announcer(&self) -> attachments::Announcer {
        attachments::Announcer { db: self.db.clone(), pubsub: self.pubsub.clone() }
    }

    /// The consumer of `user.events` that records mutes.
    pub fn mute_recorder(&self) -> Arc<dyn EventHandler> {
        Arc::new(mutes::MuteRecorder { db: self.db.clone(), pubsub: self.pubsub.clone() })
    }

    /// The consumer of `channel.events` that records membership and archive
    /// changes in the channel log.
    pub fn membership_recorder(&self) -> Arc<dyn EventHandler> {
        Arc::new(consumer::MembershipRecorder::new(self.db.clone(), self.pubsub.clone(), self.remembered.clone()))
    }

    /// Asks the channels service what the caller may do in a channel; it
    /// answers NOT_FOUND for conversations the caller cannot see.
    async fn access(&self, caller: &Caller, channel_id: &str) -> Result<Access> {
        let request = GetChannelRequest { channel_id: channel_id.to_string() };
        let channel = call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.get_channel(r).await })
            .await?
            .channel
            .ok_or_else(|| Error::internal("channels answered without a channel"))?;
        Ok(Access { channel })
    }

    /// The caller's access for posting and reading, from memory when it was
    /// a member of the live channel a moment ago (see `access.rs`).
    async fn member_access(&self, caller: &Caller, channel_id: &str) -> Result<Access> {
        if let Some(channel) = self.remembered.get(channel_id, &caller.user_id) {
            return Ok(Access { channel });
        }
        let epoch = self.remembered.epoch();
        let access = self.access(caller, channel_id).await?;
        if access.is_member() && !access.channel.archived {
            self.remembered.remember(epoch, &caller.user_id, &access.channel);
        }
        Ok(access)
    }

    async fn find(&self, message_id: &str) -> Result<message::Model> {
        message::Entity::find_by_id(message_id.to_string())
            .one(&self.db.reader)
            .await?
            // An expired message is gone, as if it had never been.
            .filter(|m| m.expired_at.is_none())
            .ok_or_else(|| Error::not_found(format!("message {message_id} not found")))
    }

    /// A message and the caller's access to its conversation.
    async fn visible_message(&self, caller: &Caller, raw_id: &str) -> Result<(message::Model, Access)> {
        let id = parse_id("message_id", raw_id)?;
        let found = self.find(&id).await?;
        let access = self.access(caller, &found.channel_id).await?;
        Ok((found, access))
    }

    /// Publishes committed events to live subscribers, after commit.
    async fn publish(&self, events: &[pb::ChannelEvent]) {
        for event in events {
            self.pubsub
                .publish(&channel_topic(&event.channel_id), Frame::Event(event.encode_to_vec().into()).encode())
                .await;
        }
        self.outbox.notify();
    }

    async fn domain_event(
        &self,
        txn: &DatabaseTransaction,
        kind: &str,
        m: &message::Model,
        seq: i64,
        actor: &str,
    ) -> Result<()> {
        events::enqueue(txn, MESSAGE_EVENTS, &m.channel_id, &events::event(kind, actor, message_changed(m, seq)))
            .await?;
        Ok(())
    }

    async fn send(&self, caller: &Caller, req: pb::SendMessageRequest) -> Result<pb::Message> {
        let mut v = Violations::default();
        let channel_id = v.optional_id("channel_id", &req.channel_id);
        let recipient_id = v.optional_id("recipient_id", &req.recipient_id);
        if req.channel_id.is_empty() == req.recipient_id.is_empty() {
            v.add("channel_id", "exactly one of channel_id and recipient_id is required");
        }
        if recipient_id.as_deref() == Some(caller.user_id.as_str()) {
            v.add("recipient_id", "must not be the sender");
        }
        let thread_id = v.optional_id("thread_id", &req.thread_id);
        if req.also_send_to_channel && req.thread_id.is_empty() {
            v.add("also_send_to_channel", "applies to replies only: set thread_id too");
        }
        let content = Content::parse(&mut v, &req.text, &req.file_ids);
        let key = v.check(check_idempotency_key("idempotency_key", &req.idempotency_key)).flatten();
        v.finish()?;
        let fingerprint = key
            .as_ref()
            .map(|_| request_fingerprint(&pb::SendMessageRequest { idempotency_key: String::new(), ..req.clone() }));
        let target = match (channel_id, recipient_id) {
            (Some(channel_id), _) => Target::Channel(channel_id),
            (None, Some(recipient)) => Target::Recipient(recipient),
            (None, None) => return Err(Error::invalid("channel_id", "is required")),
        };
        let post = Post { target, thread_id, also_in_channel: req.also_send_to_channel, content, key, fingerprint };
        Ok(self.post(caller, post).await?.0)
    }

    /// Stores a validated message or reply once the caller may post it, or
    /// answers a retry with the original. Also says whether a reply created
    /// its thread.
    async fn post(&self, caller: &Caller, post: Post) -> Result<(pb::Message, bool)> {
        let Post { target, thread_id, also_in_channel, content, key, fingerprint } = post;
        let admitted = match self.admit(caller, target, thread_id.as_deref(), &content.file_ids).await {
            Ok(admitted) => admitted,
            Err(err) => {
                // A retry of a send that went through gets the original, even
                // if the sender has since lost access, used up its budget, or
                // a file it attached turned out infected.
                if let (Some(key), Some(fingerprint)) = (&key, &fingerprint)
                    && let Some(original) = self.replayed(caller, key, fingerprint).await?
                {
                    return Ok(original);
                }
                return Err(err);
            }
        };
        let mentions = self.resolve_mentions(caller, &admitted.channel_id, &content.text).await?;
        let message = NewMessage {
            sender_id: caller.user_id.clone(),
            mentions,
            channel_id: admitted.channel_id,
            text: content.text,
            thread: admitted.root.map(|root| ThreadReply {
                root_id: root.message_id,
                root_sender_id: root.sender_id,
                also_in_channel,
            }),
            file_ids: content.file_ids,
            scanning_file_ids: admitted.scanning_file_ids.clone(),
            idempotency_key: key.clone(),
            request_fingerprint: fingerprint.clone(),
            origin: events::Origin::current(),
        };
        match self.writer.store(message).await? {
            Stored::Created { message, thread_created } => {
                self.settle_scanned(caller, &message.message_id, &admitted.scanning_file_ids).await;
                Ok((*message, thread_created))
            }
            // The key was used before, or by a concurrent retry that committed first.
            Stored::Repeated => self
                .replayed(caller, key.as_deref().unwrap_or_default(), fingerprint.as_deref().unwrap_or_default())
                .await?
                .ok_or_else(|| Error::internal("idempotent original vanished")),
        }
    }

    /// Checks that the caller may post now, in the conversation it named
    /// (opening the direct message to a recipient), in the thread if one is
    /// named, and with the files it attaches; returns the conversation and
    /// the thread's root.
    async fn admit(
        &self,
        caller: &Caller,
        target: Target,
        thread_id: Option<&str>,
        file_ids: &[String],
    ) -> Result<Admitted> {
        let budget_key = format!("ratelimit:send:{}", caller.user_id);
        if !within_budget(self.limit.counters.as_ref(), &budget_key, self.limit.per_minute).await {
            return Err(Error::ResourceExhausted(format!(
                "more than {} messages in a minute; wait a moment and send again",
                self.limit.per_minute
            )));
        }
        let channel_id = match target {
            Target::Channel(id) => id,
            Target::Recipient(recipient) => self.open_dm(caller, recipient).await?,
        };
        let access = self.member_access(caller, &channel_id).await?;
        access.require_writable()?;
        self.require_unblocked(caller, &access).await?;
        let root = match thread_id {
            Some(thread) => {
                let root =
                    self.find(thread).await.map_err(|_| Error::not_found(format!("thread {thread} not found")))?;
                if root.channel_id != channel_id {
                    return Err(Error::invalid("thread_id", "must be a top-level message of the same conversation"));
                }
                if let Some(parent) = &root.thread_id {
                    return Err(Error::precondition(format!(
                        "message {thread} is itself a reply; reply in its thread {parent} instead"
                    )));
                }
                if !root.is_live() {
                    return Err(Error::precondition("the thread's root message was deleted or recalled"));
                }
                Some(root)
            }
            None => None,
        };
        let mut scanning_file_ids = Vec::new();
        if !file_ids.is_empty() {
            let request = CheckAttachmentsRequest { file_ids: file_ids.to_vec(), channel_id: channel_id.clone() };
            let checked =
                call_on_behalf(&self.files, caller, request, |mut c, r| async move { c.check_attachments(r).await })
                    .await?;
            scanning_file_ids = checked
                .files
                .into_iter()
                .filter(|f| f.scan_status == ScanStatus::Pending as i32)
                .map(|f| f.file_id)
                .collect();
        }
        Ok(Admitted { channel_id, root, scanning_file_ids })
    }

    /// A scan that ended after the send was admitted but before the message
    /// was stored found no message to tell: the message asks how it ended
    /// now. (One that ends later reaches it through `file.scanned`.) The
    /// message is stored either way, so a failure here is only logged; the
    /// file's own status stays right for anyone who reads it.
    async fn settle_scanned(&self, caller: &Caller, message_id: &str, scanning_file_ids: &[String]) {
        for file_id in scanning_file_ids {
            let request = GetFileRequest { file_id: file_id.clone() };
            let status = match call_on_behalf(
                &self.files,
                caller,
                request,
                |mut c, r| async move { c.get_file(r).await },
            )
            .await
            {
                Ok(found) => found.file.map(|f| f.scan_status).unwrap_or_default(),
                Err(err) => {
                    tracing::warn!(file_id, message_id, error = %err, "could not ask how an attached file's scan ended");
                    continue;
                }
            };
            let Some(verdict) = ScanStatus::try_from(status).ok().and_then(attachments::Verdict::of) else {
                continue;
            };
            if let Err(err) = self.announcer().settle(file_id, verdict, &caller.user_id, Some(message_id), None).await {
                tracing::warn!(file_id, message_id, error = %err, "could not settle an attached file's scan");
            }
        }
    }

    /// In a direct message between two people, either may block the other,
    /// and then neither can write in it. Asked at every write, never
    /// remembered, so that a block takes effect at once.
    /// PERMISSION_DENIED while the caller is muted there, or, in a direct
    /// message, when either person blocks the other.
    async fn require_unblocked(&self, caller: &Caller, access: &Access) -> Result<()> {
        self.mutes.require_unmuted(&caller.user_id, &access.channel.channel_id).await?;
        if access.channel.kind != ChannelKind::Direct as i32 {
            return Ok(());
        }
        let Some(other) = access.channel.participant_ids.iter().find(|id| **id != caller.user_id) else {
            return Ok(());
        };
        deny_if_blocked(&self.users, caller, other).await
    }

    /// The message first sent with the key, if any; an error if the key
    /// was first sent with a different request.
    async fn replayed(&self, caller: &Caller, key: &str, fingerprint: &str) -> Result<Option<(pb::Message, bool)>> {
        let seen =
            idempotency::Entity::find_by_id((caller.user_id.clone(), key.to_string())).one(&self.db.writer).await?;
        match seen {
            Some(seen) => {
                check_same_request(seen.request_fingerprint.as_deref(), fingerprint)?;
                let original = self.find(&seen.message_id).await?;
                let created = threads::store::created_by(&self.db.reader, &original).await?;
                Ok(Some((to_proto(&original), created)))
            }
            None => Ok(None),
        }
    }

    async fn open_dm(&self, caller: &Caller, recipient: String) -> Result<String> {
        let request =
            on_behalf_of(caller, OpenDirectMessageRequest { user_ids: vec![recipient], ..Default::default() });
        let response = self.channels.clone().open_direct_message(request).await?;
        response
            .into_inner()
            .channel
            .map(|c| c.channel_id)
            .ok_or_else(|| Error::internal("channels answered without a channel"))
    }

    /// Applies a change to a message the caller may change, in one
    /// transaction with its log entry, then publishes it.
    async fn change(
        &self,
        caller: &Caller,
        raw_id: &str,
        writes_content: bool,
        authorize: impl FnOnce(&message::Model, &Access) -> Result<()>,
        apply: impl FnOnce(&mut message::ActiveModel, &message::Model, i64) -> Result<Option<(Kind, &'static str)>>,
    ) -> Result<pb::Message> {
        let (found, access) = self.visible_message(caller, raw_id).await?;
        authorize(&found, &access)?;
        if writes_content {
            self.require_unblocked(caller, &access).await?;
        }
        self.commit_change(&caller.user_id, &found.message_id, apply).await
    }

    /// Applies a change to a message, with its log entry and domain event,
    /// in one transaction; `apply` says what changed, or nothing.
    async fn commit_change(
        &self,
        actor_id: &str,
        message_id: &str,
        apply: impl FnOnce(&mut message::ActiveModel, &message::Model, i64) -> Result<Option<(Kind, &'static str)>>,
    ) -> Result<pb::Message> {
        let txn = self.db.writer.begin().await?;
        // Re-read inside the transaction: the change must apply to the latest version.
        let current = message::Entity::find_by_id(message_id.to_string())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::not_found("message not found"))?;
        let now = now_micros();
        let mut model = current.clone().into_active_model();
        let Some((kind, name)) = apply(&mut model, &current, now)? else {
            return Ok(to_proto(&current));
        };
        if name == "message.updated" {
            message_edit::ActiveModel {
                message_id: Set(current.message_id.clone()),
                version: Set(current.version),
                text: Set(current.text.clone()),
                editor_id: Set(actor_id.to_string()),
                edited_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
        let updated = model.update(&txn).await?;
        let removed = current.is_live() && !updated.is_live();
        let kind = match kind {
            Kind::MessageEdited(_) => Kind::MessageEdited(to_proto(&updated)),
            Kind::MessageDeleted(_) => Kind::MessageDeleted(deletion(&current)),
            Kind::MessageRecalled(_) => Kind::MessageRecalled(deletion(&current)),
            Kind::MessageHidden(_) => Kind::MessageHidden(deletion(&current)),
            Kind::MessageRestored(_) => Kind::MessageRestored(to_proto(&updated)),
            other => other,
        };
        if matches!(name, "message.updated" | "message.deleted" | "message.recalled") {
            mentions::sync(&txn, &updated).await?;
        }
        if removed && updated.ordinal.is_some() {
            // It no longer counts as unread for those who had not read it.
            removed_message::Entity::insert(removed_message::ActiveModel {
                channel_id: Set(updated.channel_id.clone()),
                seq: Set(updated.seq),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        let event = log::append(&txn, &updated.channel_id, actor_id, kind).await?;
        self.domain_event(&txn, name, &updated, event.seq, actor_id).await?;
        let mut appended = vec![event];
        // A reply that is gone no longer counts in its thread.
        if let Some(thread_id) = updated.thread_id.as_deref().filter(|_| removed) {
            threads::store::record_removal(&txn, &updated).await?;
            let summary = threads::store::summary(&txn, thread_id).await?;
            appended.push(log::append(&txn, &updated.channel_id, actor_id, Kind::ThreadUpdated(summary)).await?);
        }
        txn.commit().await?;
        self.publish(&appended).await;
        Ok(to_proto(&updated))
    }

    async fn edit(&self, caller: &Caller, req: pb::EditMessageRequest) -> Result<pb::Message> {
        check_text("text", &req.text, 1, MAX_TEXT)?;
        if req.expected_version < 0 {
            return Err(Error::invalid("expected_version", "must not be negative"));
        }
        // Edited text is searched for mentions again.
        let channel_id = self.find(&parse_id("message_id", &req.message_id)?).await?.channel_id;
        let mentions = self.resolve_mentions(caller, &channel_id, &req.text).await?;
        let user_id = caller.user_id.clone();
        self.change(
            caller,
            &req.message_id,
            true,
            |m, access| {
                access.require_writable()?;
                if m.sender_id != user_id {
                    return Err(Error::denied("only the sender can edit a message"));
                }
                Ok(())
            },
            |model, current, now| {
                if current.deleted_at.is_some() || current.recalled {
                    return Err(Error::precondition("the message was deleted or recalled"));
                }
                if req.expected_version > 0 && current.version != req.expected_version {
                    return Err(Error::precondition(format!(
                        "the message is at version {}, not {}: it changed since you read it",
                        current.version, req.expected_version
                    )));
                }
                if current.text == req.text {
                    return Ok(None);
                }
                model.text = Set(req.text.clone());
                model.version = Set(current.version + 1);
                model.edited_at = Set(Some(now));
                model.mentioned_ids = Set(mentions.user_ids.join(","));
                model.mentions_channel = Set(mentions.channel);
                model.mentions_here = Set(mentions.here);
                Ok(Some((Kind::MessageEdited(pb::Message::default()), "message.updated")))
            },
        )
        .await
    }

    async fn delete(&self, caller: &Caller, raw_id: &str) -> Result<pb::Message> {
        let user_id = caller.user_id.clone();
        let moderator = caller.clone();
        self.change(
            caller,
            raw_id,
            false,
            |m, access| {
                if m.sender_id == user_id || access.can_moderate(&moderator) {
                    Ok(())
                } else {
                    Err(Error::denied("only the sender or a channel admin can delete a message"))
                }
            },
            deletion_of,
        )
        .await
    }

    async fn recall(&self, caller: &Caller, raw_id: &str) -> Result<pb::Message> {
        let user_id = caller.user_id.clone();
        let now = now_micros();
        self.change(
            caller,
            raw_id,
            false,
            |m, _| {
                if m.sender_id != user_id {
                    return Err(Error::denied("only the sender can recall a message"));
                }
                if m.deleted_at.is_none() && !m.recalled && now - m.created_at > RECALL_WINDOW_MICROS {
                    return Err(Error::precondition("messages can only be recalled within two minutes of sending"));
                }
                Ok(())
            },
            |model, current, _| {
                if current.recalled || current.deleted_at.is_some() {
                    return Ok(None);
                }
                model.recalled = Set(true);
                model.text = Set(String::new());
                model.pinned_at = Set(None);
                model.pinned_by = Set(None);
                Ok(Some((Kind::MessageRecalled(pb::MessageDeleted::default()), "message.recalled")))
            },
        )
        .await
    }

    async fn set_pinned(&self, caller: &Caller, raw_id: &str, pinned: bool) -> Result<pb::Message> {
        let user_id = caller.user_id.clone();
        self.change(
            caller,
            raw_id,
            false,
            |_, access| access.require_writable(),
            |model, current, now| {
                if current.deleted_at.is_some() || current.recalled {
                    return Err(Error::precondition("the message was deleted or recalled"));
                }
                if current.pinned_at.is_some() == pinned {
                    return Ok(None);
                }
                let change = pb::PinChanged { message_id: current.message_id.clone() };
                if pinned {
                    model.pinned_at = Set(Some(now));
                    model.pinned_by = Set(Some(user_id.clone()));
                    Ok(Some((Kind::MessagePinned(change), "message.pinned")))
                } else {
                    model.pinned_at = Set(None);
                    model.pinned_by = Set(None);
                    Ok(Some((Kind::MessageUnpinned(change), "message.unpinned")))
                }
            },
        )
        .await
    }

    async fn list(&self, caller: &Caller, req: pb::ListMessagesRequest) -> Result<pb::ListMessagesResponse> {
        let mut v = Violations::default();
        let channel_id = v.id("channel_id", &req.channel_id);
        let Page { limit, after: token } = v.page(req.page_size, &req.page_token, 50, 100);
        let thread_id = v.optional_id("thread_id", &req.thread_id);
        let direction = pb::Direction::try_from(req.direction).unwrap_or_else(|_| {
            v.add("direction", "is not a known direction");
            pb::Direction::Unspecified
        });
        if req.anchor_seq < 0 {
            v.add("anchor_seq", "must not be negative");
        }
        let cursor =
            SeqCursor::parse(&mut v, token.as_deref(), "", direction == pb::Direction::Forward, req.anchor_seq);
        v.finish()?;
        self.member_access(caller, &channel_id).await?;
        let mut query = message::Entity::find()
            .filter(message::Column::ChannelId.eq(&channel_id))
            .filter(message::Column::ExpiredAt.is_null());
        query = match &thread_id {
            Some(thread) => query.filter(message::Column::ThreadId.eq(thread)),
            None => query.filter(
                sea_orm::Condition::any()
                    .add(message::Column::ThreadId.is_null())
                    .add(message::Column::AlsoInChannel.eq(true)),
            ),
        };
        let page = self.seq_page(query, &cursor, limit).await?;
        let messages = self.decorate(caller, page.rows.iter().map(to_proto).collect()).await?;
        Ok(pb::ListMessagesResponse {
            messages,
            next_page_token: page.next_page_token,
            prev_page_token: page.prev_page_token,
        })
    }

    /// One page of a list ordered by sequence, in the cursor's direction.
    async fn seq_page(
        &self,
        query: sea_orm::Select<message::Entity>,
        cursor: &SeqCursor,
        limit: u64,
    ) -> Result<SeqPage<message::Model>> {
        let query = if cursor.forward {
            query.filter(message::Column::Seq.gt(cursor.from)).order_by_asc(message::Column::Seq)
        } else {
            query.filter(message::Column::Seq.lt(cursor.from)).order_by_desc(message::Column::Seq)
        };
        let mut rows = query.limit(limit + 1).all(&self.db.reader).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Ok(SeqPage {
            next_page_token: match rows.last() {
                Some(last) if more => cursor.token(cursor.forward, last.seq),
                _ => String::new(),
            },
            prev_page_token: match rows.first() {
                Some(first) if cursor.started_inside => cursor.token(!cursor.forward, first.seq),
                _ => String::new(),
            },
            rows,
        })
    }

    /// Adds what depends on the reader or on other rows: thread summaries
    /// of root messages, and reactions.
    /// The listed messages the caller can read, as they are now, in the
    /// order asked (see `BatchGetMessages`).
    async fn batch_get(&self, caller: &Caller, req: &pb::BatchGetMessagesRequest) -> Result<Vec<pb::Message>> {
        let mut v = Violations::default();
        if req.message_ids.is_empty() || req.message_ids.len() > 100 {
            v.add("message_ids", "must list 1 to 100 message ids");
        }
        let ids = parse_id_list(&mut v, "message_ids", &req.message_ids);
        v.finish()?;
        let found = message::Entity::find()
            .filter(message::Column::MessageId.is_in(ids.clone()))
            .filter(message::Column::ExpiredAt.is_null())
            .all(&self.db.reader)
            .await?;
        // Each conversation asked about once, several at a time.
        let mut distinct: Vec<String> = found.iter().map(|m| m.channel_id.clone()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let asks = distinct.into_iter().map(|channel_id| async move {
            let answer = self.member_access(caller, &channel_id).await;
            (channel_id, answer)
        });
        let answers: Vec<(String, Result<Access>)> =
            futures_util::stream::iter(asks).buffer_unordered(16).collect().await;
        let mut readable: HashMap<String, bool> = HashMap::new();
        for (channel_id, answer) in answers {
            let can_read = match answer {
                Ok(_) => true,
                Err(err) if is_refusal(&err) => false,
                Err(err) => return Err(err),
            };
            readable.insert(channel_id, can_read);
        }
        let mut by_id: HashMap<String, message::Model> = found
            .into_iter()
            .filter(|m| readable.get(&m.channel_id).copied().unwrap_or(false))
            .map(|m| (m.message_id.clone(), m))
            .collect();
        let ordered = ids.iter().filter_map(|id| by_id.remove(id)).map(|m| to_proto(&m)).collect();
        self.decorate(caller, ordered).await
    }

    /// A page of every message neither deleted nor recalled, in id order:
    /// what a search index is rebuilt from. Admins only.
    async fn export(&self, caller: &Caller, req: &pb::ExportMessagesRequest) -> Result<pb::ExportMessagesResponse> {
        if caller.role != Role::Admin {
            return Err(Error::denied("only admins can export messages"));
        }
        let mut v = Violations::default();
        let page = v.page(req.page_size, &req.page_token, 500, 1000);
        let after = page.after.as_deref().map(|raw| v.check(parse_id("page_token", raw))).unwrap_or(None);
        v.finish()?;
        let mut query = message::Entity::find()
            .filter(message::Column::DeletedAt.is_null())
            .filter(message::Column::Recalled.eq(false));
        if let Some(after) = after {
            query = query.filter(message::Column::MessageId.gt(after));
        }
        let rows = query.order_by_asc(message::Column::MessageId).limit(page.limit + 1).all(&self.db.reader).await?;
        let more = rows.len() as u64 > page.limit;
        let messages: Vec<pb::ExportedMessage> = rows
            .into_iter()
            .take(page.limit as usize)
            .map(|m| pb::ExportedMessage {
                has_files: !m.file_ids.is_empty(),
                thread_id: m.thread_id.unwrap_or_default(),
                message_id: m.message_id,
                channel_id: m.channel_id,
                sender_id: m.sender_id,
                text: m.text,
            })
            .collect();
        let next_page_token = match messages.last() {
            Some(last) if more => encode_page_token(&last.message_id),
            _ => String::new(),
        };
        Ok(pb::ExportMessagesResponse { messages, next_page_token })
    }

    async fn decorate(&self, caller: &Caller, mut messages: Vec<pb::Message>) -> Result<Vec<pb::Message>> {
        let ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
        let mut summaries = threads::store::summaries(&self.db.reader, &ids).await?;
        let mut groups = reactions::store::groups(&self.db.reader, &ids, &caller.user_id).await?;
        for m in &mut messages {
            m.thread = summaries.remove(&m.message_id);
            if !m.deleted && !m.recalled {
                m.reactions = groups.remove(&m.message_id).unwrap_or_default();
            }
            if m.hidden && !sees_hidden(caller, &m.sender_id) {
                withheld(m);
            }
        }
        Ok(messages)
    }

    async fn head_seq(&self, channel_id: &str) -> Result<i64> {
        Ok(channel_head::Entity::find_by_id(channel_id.to_string())
            .one(&self.db.reader)
            .await?
            .map_or(0, |h| h.last_seq))
    }

    async fn channel_events(
        &self,
        caller: &Caller,
        req: pb::ListChannelEventsRequest,
    ) -> Result<pb::ListChannelEventsResponse> {
        let mut v = Violations::default();
        let channel_id = v.id("channel_id", &req.channel_id);
        let limit = v.check(page_size("page_size", req.page_size, 500, 1000)).unwrap_or(500);
        if req.after_seq < 0 {
            v.add("after_seq", "must not be negative");
        }
        v.finish()?;
        self.member_access(caller, &channel_id).await?;
        let head_seq = self.head_seq(&channel_id).await?;
        let rows = channel_event::Entity::find()
            .filter(channel_event::Column::ChannelId.eq(&channel_id))
            .filter(channel_event::Column::Seq.gt(req.after_seq))
            .order_by_asc(channel_event::Column::Seq)
            .limit(limit)
            .all(&self.db.reader)
            .await?;
        let events = rows
            .iter()
            .map(|row| pb::ChannelEvent::decode(row.payload.as_slice()).map_err(Error::internal))
            .collect::<Result<Vec<_>>>()?;
        let mut events = events;
        self.redact_removed(caller, &mut events).await?;
        Ok(pb::ListChannelEventsResponse { events, head_seq })
    }
}

/// Where a page of a sequence-ordered list starts. Page tokens are
/// "<scope>/f:<seq>" (newer than seq) or "<scope>/b:<seq>" (older), where the
/// scope names what is listed (empty for a channel's messages, which keeps
/// their tokens in the older "f:<seq>" form).
struct SeqCursor {
    scope: String,
    forward: bool,
    from: i64,
    /// The page starts after a token or an anchor, not at an end.
    started_inside: bool,
}

impl SeqCursor {
    fn parse(v: &mut Violations, token: Option<&str>, scope: &str, forward: bool, anchor: i64) -> Self {
        let mut cursor = Self { scope: scope.to_string(), forward, from: 0, started_inside: true };
        match token {
            Some(t) => {
                let body = if scope.is_empty() { Some(t) } else { t.strip_prefix(&format!("{scope}/")) };
                match body.and_then(|b| b.split_once(':')).and_then(|(d, s)| Some((d, s.parse::<i64>().ok()?))) {
                    Some((d, seq)) if d == "f" || d == "b" => {
                        cursor.forward = d == "f";
                        cursor.from = seq;
                    }
                    _ => v.add("page_token", "is not a valid page token for this list"),
                }
            }
            None if anchor > 0 => cursor.from = anchor,
            None => {
                cursor.started_inside = false;
                cursor.from = if forward { 0 } else { i64::MAX };
            }
        }
        cursor
    }

    fn token(&self, forward: bool, seq: i64) -> String {
        let dir = if forward { "f" } else { "b" };
        if self.scope.is_empty() {
            encode_page_token(&format!("{dir}:{seq}"))
        } else {
            encode_page_token(&format!("{}/{dir}:{seq}", self.scope))
        }
    }
}

/// A page of rows with the tokens that continue it either way.
struct SeqPage<T> {
    rows: Vec<T>,
    next_page_token: String,
    prev_page_token: String,
}

/// Applies other nodes' notices that a channel's access changed, for as long
/// as the node runs.
async fn forget_on_notice(pubsub: Arc<dyn PubSub>, remembered: Arc<AccessCache>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut notices = pubsub.subscribe(ACCESS_TOPIC).await;
    loop {
        match notices.recv().await {
            Ok(payload) => match Frame::decode(payload) {
                Some(Frame::Event(channel_id)) => remembered.on_notice(&channel_id),
                // Notices may have been missed.
                _ => remembered.clear(),
            },
            Err(RecvError::Lagged(_)) => remembered.clear(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// The `message.events` payload describing a message at a sequence.
fn message_changed(m: &message::Model, seq: i64) -> Payload {
    Payload::MessageChanged(MessageChanged {
        message_id: m.message_id.clone(),
        channel_id: m.channel_id.clone(),
        sender_id: m.sender_id.clone(),
        seq,
        text: m.text.clone(),
        thread_id: m.thread_id.clone().unwrap_or_default(),
        mentioned_user_ids: m.mentioned_ids.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        mentions_channel: m.mentions_channel,
        file_ids: m.file_ids.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
    })
}

/// Deletes a message: it keeps its place without its text. Deleting twice
/// changes nothing.
fn deletion_of(
    model: &mut message::ActiveModel,
    current: &message::Model,
    now: i64,
) -> Result<Option<(Kind, &'static str)>> {
    if current.deleted_at.is_some() {
        return Ok(None);
    }
    model.deleted_at = Set(Some(now));
    model.text = Set(String::new());
    model.pinned_at = Set(None);
    model.pinned_by = Set(None);
    Ok(Some((Kind::MessageDeleted(pb::MessageDeleted::default()), "message.deleted")))
}

/// What a deletion or recall event says of the message that was removed.
fn deletion(m: &message::Model) -> pb::MessageDeleted {
    pb::MessageDeleted {
        message_id: m.message_id.clone(),
        message_seq: m.seq,
        sender_id: m.sender_id.clone(),
        thread_id: m.thread_id.clone().unwrap_or_default(),
        in_channel: m.ordinal.is_some(),
        mentions: to_proto(m).mentions,
    }
}

fn to_proto(m: &message::Model) -> pb::Message {
    pb::Message {
        message_id: m.message_id.clone(),
        channel_id: m.channel_id.clone(),
        seq: m.seq,
        sender_id: m.sender_id.clone(),
        text: m.text.clone(),
        thread_id: m.thread_id.clone().unwrap_or_default(),
        file_ids: m.file_ids.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        version: m.version,
        create_time: Some(timestamp(m.created_at)),
        edit_time: opt_timestamp(m.edited_at),
        deleted: m.deleted_at.is_some(),
        delete_time: opt_timestamp(m.deleted_at),
        recalled: m.recalled,
        pinned: m.pinned_at.is_some(),
        thread: None,
        also_sent_to_channel: m.also_in_channel,
        reactions: Vec::new(),
        mentions: Some(pb::MessageMentions {
            user_ids: m.mentioned_ids.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            channel: m.mentions_channel,
            here: m.mentions_here,
        }),
        hidden: m.hidden_at.is_some(),
    }
}

/// Whether a caller sees a hidden message as it is: its sender, moderators
/// and admins do.
fn sees_hidden(caller: &Caller, sender_id: &str) -> bool {
    matches!(caller.role, Role::Admin | Role::Moderator) || caller.user_id == sender_id
}

/// A hidden message as everyone else sees it: in its place, without what
/// it says.
fn withheld(m: &mut pb::Message) {
    m.text.clear();
    m.file_ids.clear();
    m.reactions.clear();
    m.mentions = None;
}

/// The channels service refused to show the conversation to the caller.
fn is_refusal(err: &Error) -> bool {
    match err {
        Error::NotFound(_) | Error::PermissionDenied(_) => true,
        Error::Upstream(status) => matches!(status.code(), tonic::Code::NotFound | tonic::Code::PermissionDenied),
        _ => false,
    }
}
