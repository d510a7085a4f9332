//! colink.threads.v1: replies under a root message, who follows them, and
//! how far each member has read. A reply is a message of its conversation
//! (see `MessagingService::post`); this module adds the thread's view of it.

pub(crate) mod store;

use std::sync::Arc;

use colink_proto::events::v1::ThreadChanged;
use colink_proto::events::v1::event::Payload;
use colink_proto::messaging::v1 as mpb;
use colink_proto::threads::v1 as pb;
use colink_proto::threads::v1::threads_service_server::{ThreadsService as ThreadsRpc, ThreadsServiceServer};
use colink_runtime::error::{Page, Violations};
use colink_runtime::events::{self, THREAD_EVENTS};
use colink_runtime::idempotency::key_of;
use colink_runtime::ids::{
    check_idempotency_key, encode_page_token, idempotency_key, opt_timestamp, parse_id, request_fingerprint, timestamp,
};
use colink_runtime::{Caller, Error, Result, caller};
use sea_orm::{EntityTrait, TransactionTrait};
use tonic::{Request, Response, Status};

use crate::store::{message, thread};
use crate::{Content, MessagingService, Post, SeqCursor, Target, reactions, to_proto};

/// The threads service, sharing the messaging service's store.
pub struct Threads(pub(crate) Arc<MessagingService>);

impl Threads {
    pub fn into_server(self) -> ThreadsServiceServer<Self> {
        ThreadsServiceServer::new(self)
    }
}

impl MessagingService {
    /// A thread and the caller's access to its conversation.
    async fn thread_of(&self, caller: &Caller, raw_id: &str) -> Result<(thread::Model, crate::Access)> {
        let id = parse_id("thread_id", raw_id)?;
        let found = thread::Entity::find_by_id(id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("thread {id} not found")))?;
        let access = self.access(caller, &found.channel_id).await?;
        Ok((found, access))
    }

    /// Posts a reply and answers with the thread and the reply.
    async fn reply(&self, caller: &Caller, post: Post) -> Result<(pb::Thread, pb::Reply, bool)> {
        let (posted, created) = self.post(caller, post).await?;
        let thread_id = posted.thread_id.clone();
        let thread = thread::Entity::find_by_id(thread_id.clone())
            .one(&self.db.writer)
            .await?
            .ok_or_else(|| Error::internal(format!("thread {thread_id} vanished")))?;
        let view = self.thread_views(caller, vec![thread]).await?.pop();
        let reply = self.replies(caller, vec![posted]).await?.pop();
        match (view, reply) {
            (Some(view), Some(reply)) => Ok((view, reply, created)),
            _ => Err(Error::internal("a posted reply has no thread")),
        }
    }

    /// Threads as the caller sees them, in the order given.
    async fn thread_views(&self, caller: &Caller, threads: Vec<thread::Model>) -> Result<Vec<pb::Thread>> {
        let ids: Vec<String> = threads.iter().map(|t| t.thread_id.clone()).collect();
        let followers = store::followers_of(&self.db.reader, &caller.user_id, &ids).await?;
        let positions: Vec<(String, i64)> = threads
            .iter()
            .map(|t| (t.thread_id.clone(), followers.get(&t.thread_id).map_or(0, |f| f.last_read_seq)))
            .filter(|(id, seq)| threads.iter().any(|t| t.thread_id == *id && t.last_reply_seq > *seq))
            .collect();
        let unread = store::unread_counts(&self.db.reader, &caller.user_id, &positions).await?;
        let mut summaries = store::summarize(&self.db.reader, threads.clone()).await?;
        Ok(threads
            .into_iter()
            .map(|t| {
                let summary = summaries.remove(&t.thread_id).unwrap_or_default();
                let follower = followers.get(&t.thread_id);
                pb::Thread {
                    thread_id: t.thread_id.clone(),
                    parent_message_id: t.thread_id.clone(),
                    channel_id: t.channel_id,
                    creator_id: t.creator_id,
                    reply_count: t.reply_count,
                    recent_participant_ids: summary.recent_participant_ids,
                    participant_count: summary.participant_count,
                    last_reply_message_id: t.last_reply_id.unwrap_or_default(),
                    last_reply_time: opt_timestamp(t.last_reply_at),
                    create_time: Some(timestamp(t.created_at)),
                    viewer_state: Some(pb::ThreadViewerState {
                        following: follower.is_some_and(|f| f.following),
                        last_read_message_id: follower.and_then(|f| f.last_read_id.clone()).unwrap_or_default(),
                        unread_count: unread.get(&t.thread_id).copied().unwrap_or(0),
                        unread_mention_count: 0,
                    }),
                }
            })
            .collect())
    }

    /// Replies with their reactions for the caller.
    async fn replies(&self, caller: &Caller, messages: Vec<mpb::Message>) -> Result<Vec<pb::Reply>> {
        let ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
        let mut groups = reactions::store::groups(&self.db.reader, &ids, &caller.user_id).await?;
        Ok(messages
            .into_iter()
            .map(|mut m| {
                let gone = m.deleted || m.recalled;
                let withheld = m.hidden && !crate::sees_hidden(caller, &m.sender_id);
                if withheld {
                    crate::withheld(&mut m);
                }
                pb::Reply {
                    hidden: m.hidden,
                    reactions: if gone || withheld {
                        Vec::new()
                    } else {
                        groups.remove(&m.message_id).unwrap_or_default()
                    },
                    message_id: m.message_id,
                    thread_id: m.thread_id,
                    channel_id: m.channel_id,
                    seq: m.seq,
                    sender_id: m.sender_id,
                    text: m.text,
                    file_ids: m.file_ids,
                    create_time: m.create_time,
                    edit_time: m.edit_time,
                    deleted: gone,
                    also_sent_to_channel: m.also_sent_to_channel,
                }
            })
            .collect())
    }

    /// Records a follow change with its domain event.
    async fn set_following(&self, caller: &Caller, thread: &thread::Model, following: bool) -> Result<()> {
        let txn = self.db.writer.begin().await?;
        if following {
            let newest = thread.last_reply_id.as_deref().map(|id| (thread.last_reply_seq, Some(id)));
            store::follow(&txn, &thread.thread_id, &thread.channel_id, &caller.user_id, newest, false).await?;
        } else {
            store::unfollow(&txn, &thread.thread_id, &caller.user_id).await?;
        }
        let changed = ThreadChanged {
            thread_id: thread.thread_id.clone(),
            channel_id: thread.channel_id.clone(),
            user_id: caller.user_id.clone(),
            root_sender_id: thread.root_sender_id.clone(),
            ..Default::default()
        };
        let kind = if following { "thread.followed" } else { "thread.unfollowed" };
        let event = events::event(kind, &caller.user_id, Payload::ThreadChanged(changed));
        events::enqueue(&txn, THREAD_EVENTS, &thread.thread_id, &event).await?;
        txn.commit().await?;
        self.outbox.notify();
        let notice = crate::read_states::thread_counts_changed(&thread.thread_id);
        self.pubsub.publish(&colink_runtime::pubsub::user_topic(&caller.user_id), notice).await;
        Ok(())
    }

    /// The caller's view of one thread after a change.
    async fn thread_view(&self, caller: &Caller, thread_id: &str) -> Result<pb::Thread> {
        let thread = thread::Entity::find_by_id(thread_id.to_string())
            .one(&self.db.writer)
            .await?
            .ok_or_else(|| Error::not_found(format!("thread {thread_id} not found")))?;
        self.thread_views(caller, vec![thread]).await?.pop().ok_or_else(|| Error::internal("no thread view"))
    }

    /// Moves the caller's read position in a thread forward.
    async fn read_thread(
        &self,
        caller: &Caller,
        req: &pb::MarkThreadReadRequest,
    ) -> Result<pb::MarkThreadReadResponse> {
        let mut v = Violations::default();
        let thread_id = v.id("thread_id", &req.thread_id);
        let read_id = v.id("last_read_message_id", &req.last_read_message_id);
        v.finish()?;
        let (found, access) = self.thread_of(caller, &thread_id).await?;
        if !access.is_member() {
            return Err(Error::denied("only members have a read position"));
        }
        let read = match message::Entity::find_by_id(read_id).one(&self.db.reader).await? {
            Some(m) if m.thread_id.as_deref() == Some(found.thread_id.as_str()) => m,
            _ => return Err(Error::invalid("last_read_message_id", "must be a reply of this thread")),
        };
        let txn = self.db.writer.begin().await?;
        store::mark_read(&txn, &found.thread_id, &found.channel_id, &caller.user_id, read.seq, &read.message_id)
            .await?;
        self.read_event(&txn, "thread.read", &found.channel_id, &found.thread_id, &caller.user_id, read.seq).await?;
        txn.commit().await?;
        self.outbox.notify();
        let notice = crate::read_states::thread_counts_changed(&found.thread_id);
        self.pubsub.publish(&colink_runtime::pubsub::user_topic(&caller.user_id), notice).await;
        let thread = self.thread_view(caller, &found.thread_id).await?;
        Ok(pb::MarkThreadReadResponse { viewer_state: thread.viewer_state })
    }

    /// A page of threads, most recent reply first.
    async fn thread_page(
        &self,
        caller: &Caller,
        scope: store::Scope<'_>,
        page: Page,
    ) -> Result<(Vec<pb::Thread>, String)> {
        let after = match &page.after {
            Some(token) => Some(
                token
                    .split_once(':')
                    .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, parse_id("page_token", id).ok()?)))
                    .ok_or_else(|| Error::invalid("page_token", "is not a valid page token for this list"))?,
            ),
            None => None,
        };
        let mut rows = store::page(&self.db.reader, scope, after, page.limit + 1).await?;
        let more = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let next = match rows.last() {
            Some(last) if more => {
                encode_page_token(&format!("{}:{}", last.last_reply_at.unwrap_or_default(), last.thread_id))
            }
            _ => String::new(),
        };
        Ok((self.thread_views(caller, rows).await?, next))
    }
}

/// Validates what CreateThread and ReplyToThread share.
fn parse_reply(v: &mut Violations, text: &str, file_ids: &[String], key: &str) -> (Content, Option<String>) {
    let content = Content::parse(v, text, file_ids);
    let key = v.check(check_idempotency_key("idempotency_key", key)).flatten();
    (content, key)
}

#[tonic::async_trait]
impl ThreadsRpc for Threads {
    async fn create_thread(
        &self,
        request: Request<pb::CreateThreadRequest>,
    ) -> Result<Response<pb::CreateThreadResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = idempotency_key(&request.get_ref().idempotency_key, &request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let root_id = v.id("parent_message_id", &req.parent_message_id);
        let (content, key) = parse_reply(&mut v, &req.text, &req.file_ids, &key);
        v.finish()?;
        let fingerprint = key
            .as_ref()
            .map(|_| request_fingerprint(&pb::CreateThreadRequest { idempotency_key: String::new(), ..req.clone() }));
        let root = self.0.find(&root_id).await?;
        let post = Post {
            target: Target::Channel(root.channel_id),
            thread_id: Some(root_id),
            also_in_channel: req.also_send_to_channel,
            content,
            key,
            fingerprint,
        };
        let (thread, reply, thread_created) = self.0.reply(&caller, post).await?;
        Ok(Response::new(pb::CreateThreadResponse { thread: Some(thread), reply: Some(reply), thread_created }))
    }

    async fn get_thread(
        &self,
        request: Request<pb::GetThreadRequest>,
    ) -> Result<Response<pb::GetThreadResponse>, Status> {
        let caller = caller(&request)?;
        let (found, _) = self.0.thread_of(caller, &request.get_ref().thread_id).await?;
        let root = self.0.find(&found.thread_id).await?;
        let parent = pb::ParentMessage {
            message_id: root.message_id.clone(),
            channel_id: root.channel_id.clone(),
            sender_id: root.sender_id.clone(),
            text: root.text.clone(),
            create_time: Some(timestamp(root.created_at)),
            deleted: !root.is_live(),
        };
        let thread = self.0.thread_views(caller, vec![found]).await?.pop();
        Ok(Response::new(pb::GetThreadResponse { thread, parent: Some(parent) }))
    }

    async fn list_thread_replies(
        &self,
        request: Request<pb::ListThreadRepliesRequest>,
    ) -> Result<Response<pb::ListThreadRepliesResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let thread_id = v.id("thread_id", &req.thread_id);
        let Page { limit, after: token } = v.page(req.page_size, &req.page_token, 50, 100);
        let direction = pb::PageDirection::try_from(req.direction).unwrap_or_else(|_| {
            v.add("direction", "is not a known direction");
            pb::PageDirection::Unspecified
        });
        let anchor = v.optional_id("anchor_message_id", &req.anchor_message_id);
        v.finish()?;
        let (found, _) = self.0.thread_of(caller, &thread_id).await?;
        let anchor_seq = match anchor {
            Some(id) => match message::Entity::find_by_id(id).one(&self.0.db.reader).await.map_err(Error::from)? {
                Some(m) if m.thread_id.as_deref() == Some(found.thread_id.as_str()) => m.seq,
                _ => return Err(Error::invalid("anchor_message_id", "must be a reply of this thread").into()),
            },
            None => 0,
        };
        let mut v = Violations::default();
        let forward = direction != pb::PageDirection::Backward;
        let cursor = SeqCursor::parse(&mut v, token.as_deref(), &found.thread_id, forward, anchor_seq);
        v.finish()?;
        let query = sea_orm::QueryFilter::filter(
            message::Entity::find(),
            sea_orm::Condition::all()
                .add(sea_orm::ColumnTrait::eq(&message::Column::ThreadId, &found.thread_id))
                .add(sea_orm::ColumnTrait::is_null(&message::Column::ExpiredAt)),
        );
        let page = self.0.seq_page(query, &cursor, limit).await?;
        let replies = self.0.replies(caller, page.rows.iter().map(to_proto).collect()).await?;
        Ok(Response::new(pb::ListThreadRepliesResponse {
            replies,
            next_page_token: page.next_page_token,
            prev_page_token: page.prev_page_token,
        }))
    }

    async fn reply_to_thread(
        &self,
        request: Request<pb::ReplyToThreadRequest>,
    ) -> Result<Response<pb::ReplyToThreadResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = idempotency_key(&request.get_ref().idempotency_key, &request);
        let req = request.into_inner();
        let mut v = Violations::default();
        let thread_id = v.id("thread_id", &req.thread_id);
        let (content, key) = parse_reply(&mut v, &req.text, &req.file_ids, &key);
        v.finish()?;
        let fingerprint = key
            .as_ref()
            .map(|_| request_fingerprint(&pb::ReplyToThreadRequest { idempotency_key: String::new(), ..req.clone() }));
        let found = thread::Entity::find_by_id(thread_id.clone())
            .one(&self.0.db.reader)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::not_found(format!("thread {thread_id} not found")))?;
        let post = Post {
            target: Target::Channel(found.channel_id),
            thread_id: Some(thread_id),
            also_in_channel: req.also_send_to_channel,
            content,
            key,
            fingerprint,
        };
        let (thread, reply, _) = self.0.reply(&caller, post).await?;
        Ok(Response::new(pb::ReplyToThreadResponse { thread: Some(thread), reply: Some(reply) }))
    }

    async fn follow_thread(
        &self,
        request: Request<pb::FollowThreadRequest>,
    ) -> Result<Response<pb::FollowThreadResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::FollowThreadRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let response = self
            .0
            .keys
            .once(&caller.user_id, key, "FollowThread", &req, || async {
                let (found, _) = self.0.thread_of(caller, &req.thread_id).await?;
                self.0.set_following(caller, &found, true).await?;
                let thread = self.0.thread_view(caller, &found.thread_id).await?;
                Ok(pb::FollowThreadResponse { thread: Some(thread) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn unfollow_thread(
        &self,
        request: Request<pb::UnfollowThreadRequest>,
    ) -> Result<Response<pb::UnfollowThreadResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UnfollowThreadRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let response = self
            .0
            .keys
            .once(&caller.user_id, key, "UnfollowThread", &req, || async {
                let (found, _) = self.0.thread_of(caller, &req.thread_id).await?;
                self.0.set_following(caller, &found, false).await?;
                let thread = self.0.thread_view(caller, &found.thread_id).await?;
                Ok(pb::UnfollowThreadResponse { thread: Some(thread) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_followed_threads(
        &self,
        request: Request<pb::ListFollowedThreadsRequest>,
    ) -> Result<Response<pb::ListFollowedThreadsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let page = v.page(req.page_size, &req.page_token, 50, 100);
        v.finish()?;
        let scope = store::Scope::FollowedBy { user_id: &caller.user_id, unread_only: req.unread_only };
        let (threads, next_page_token) = self.0.thread_page(caller, scope, page).await?;
        Ok(Response::new(pb::ListFollowedThreadsResponse { threads, next_page_token }))
    }

    async fn list_channel_threads(
        &self,
        request: Request<pb::ListChannelThreadsRequest>,
    ) -> Result<Response<pb::ListChannelThreadsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let channel_id = v.id("channel_id", &req.channel_id);
        let page = v.page(req.page_size, &req.page_token, 50, 100);
        v.finish()?;
        if !self.0.access(caller, &channel_id).await?.is_member() {
            return Err(Error::denied("join the conversation to list its threads").into());
        }
        let (threads, next_page_token) = self.0.thread_page(caller, store::Scope::Channel(&channel_id), page).await?;
        Ok(Response::new(pb::ListChannelThreadsResponse { threads, next_page_token }))
    }

    async fn mark_thread_read(
        &self,
        request: Request<pb::MarkThreadReadRequest>,
    ) -> Result<Response<pb::MarkThreadReadResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::MarkThreadReadRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let response =
            self.0.keys.once(&caller.user_id, key, "MarkThreadRead", &req, || self.0.read_thread(caller, &req)).await?;
        Ok(Response::new(response))
    }
}
