//! Read positions, mentions and unread counts as the caller sees them.

use std::sync::Arc;

use colink_proto::messaging::v1 as pb;
use colink_proto::users::v1::{BatchGetUsersRequest, ListBlockedUsersRequest};
use colink_runtime::clients::call_on_behalf;
use colink_runtime::error::{Page, Violations};
use colink_runtime::ids::{encode_page_token, parse_id};
use colink_runtime::pubsub::user_topic;
use colink_runtime::{Caller, Error, Result};

use colink_proto::events::v1::ReadStateChanged;
use colink_proto::events::v1::event::Payload;
use colink_runtime::events::{self, MESSAGE_EVENTS};
use sea_orm::{DatabaseTransaction, TransactionTrait};

use crate::{MessagingService, mentions, read_states, to_proto};

impl MessagingService {
    pub(crate) async fn read_state(&self, caller: &Caller, channel_id: &str) -> Result<pb::ReadState> {
        let only = read_states::Only { channel_ids: vec![channel_id.to_string()], thread_ids: Vec::new() };
        let counts = self.unread_counts(caller, &only).await?;
        let unread = counts.channels.into_iter().next().unwrap_or_default();
        Ok(pb::ReadState {
            channel_id: channel_id.to_string(),
            last_read_seq: unread.last_read_seq,
            head_seq: self.head_seq(channel_id).await?,
            unread_count: unread.unread_count,
        })
    }

    /// The caller's unread counts, leaving out what people they blocked
    /// addressed to everyone.
    pub(crate) async fn unread_counts(&self, caller: &Caller, only: &read_states::Only) -> Result<pb::UnreadCounts> {
        let blocked = self.blocked_by(caller).await?;
        Ok(read_states::counts(&self.db.reader, &caller.user_id, &blocked, only).await?)
    }

    /// Those of `ids` who turned read receipts off.
    pub(crate) async fn receipts_off(&self, caller: &Caller, ids: &[String]) -> Result<Vec<String>> {
        let mut silent = Vec::new();
        for chunk in ids.chunks(100) {
            let request = BatchGetUsersRequest { user_ids: chunk.to_vec(), usernames: Vec::new() };
            let users =
                call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.batch_get_users(r).await })
                    .await?
                    .users;
            silent.extend(users.into_iter().filter(|u| u.read_receipts_off).map(|u| u.user_id));
        }
        Ok(silent)
    }

    /// The users the caller blocked.
    pub(crate) async fn blocked_by(&self, caller: &Caller) -> Result<Arc<[String]>> {
        let epoch = match self.blocks.get(&caller.user_id).await {
            Ok(remembered) => return Ok(remembered),
            Err(epoch) => epoch,
        };
        let blocked: Arc<[String]> = self.ask_blocked_by(caller).await?.into();
        self.blocks.remember(epoch, &caller.user_id, blocked.clone()).await;
        Ok(blocked)
    }

    async fn ask_blocked_by(&self, caller: &Caller) -> Result<Vec<String>> {
        let mut blocked = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListBlockedUsersRequest { page_size: 100, page_token };
            let page =
                call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.list_blocked_users(r).await })
                    .await?;
            blocked.extend(page.users.into_iter().map(|u| u.user_id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(blocked)
    }

    pub(crate) async fn mark_read(&self, caller: &Caller, req: pb::MarkReadRequest) -> Result<pb::ReadState> {
        let channel_id = parse_id("channel_id", &req.channel_id)?;
        if req.seq < 0 {
            return Err(Error::invalid("seq", "must not be negative"));
        }
        if !self.access(caller, &channel_id).await?.is_member() {
            return Err(Error::denied("only members have a read position"));
        }
        let seq = std::cmp::min(req.seq, self.head_seq(&channel_id).await?);
        let txn = self.db.writer.begin().await?;
        if read_states::mark_read(&txn, &channel_id, &caller.user_id, seq).await? {
            self.read_event(&txn, "message.read", &channel_id, "", &caller.user_id, seq).await?;
            txn.commit().await?;
            self.outbox.notify();
            // The reader's other devices update their badges.
            self.pubsub.publish(&user_topic(&caller.user_id), read_states::counts_changed(&channel_id)).await;
        }
        self.read_state(caller, &channel_id).await
    }

    /// Enqueues a read-state change, for the services that act on reads
    /// (clearing notifications on other devices).
    pub(crate) async fn read_event(
        &self,
        txn: &DatabaseTransaction,
        kind: &str,
        channel_id: &str,
        thread_id: &str,
        user_id: &str,
        seq: i64,
    ) -> Result<()> {
        let changed = ReadStateChanged {
            channel_id: channel_id.to_string(),
            thread_id: thread_id.to_string(),
            user_id: user_id.to_string(),
            last_read_seq: seq,
        };
        let event = events::event(kind, user_id, Payload::ReadStateChanged(changed));
        events::enqueue(txn, MESSAGE_EVENTS, channel_id, &event).await?;
        Ok(())
    }

    pub(crate) async fn list_mentions(
        &self,
        caller: &Caller,
        req: pb::ListMentionsRequest,
    ) -> Result<pb::ListMentionsResponse> {
        let mut v = Violations::default();
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        let after = after.map(|t| {
            t.split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, parse_id("page_token", id).ok()?)))
                .unwrap_or_else(|| {
                    v.add("page_token", "is not a valid page token for this list");
                    (0, String::new())
                })
        });
        v.finish()?;
        let blocked = self.blocked_by(caller).await?;
        let (rows, more) = mentions::page(&self.db.reader, &caller.user_id, &blocked, after, limit).await?;
        let next_page_token = match rows.last() {
            Some(last) if more => encode_page_token(&format!("{}:{}", last.created_at, last.message_id)),
            _ => String::new(),
        };
        let messages = self.decorate(caller, rows.iter().map(to_proto).collect()).await?;
        Ok(pb::ListMentionsResponse { messages, next_page_token })
    }
}
