//! Retention: messages sent before their conversation's cutoff expire. An
//! expired message keeps its row, so sequences, ordinals and thread counts
//! stay consistent, but loses everything it said; it leaves history and
//! search, and the conversation's log loses every entry up to it. Each
//! conversation remembers how far it has expired, so a daily run reads
//! only what is new since the last.

use std::collections::{BTreeSet, HashMap};

use colink_proto::events::v1::{MessagesExpired as ExpiredEvent, event::Payload};
use colink_proto::messaging::v1 as pb;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_runtime::events::{self, MESSAGE_EVENTS};
use colink_runtime::ids::{now_micros, timestamp};
use colink_runtime::{Caller, Result};
use prost::Message as _;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use crate::store::{
    broadcast, channel_event, channel_head, mention, message, message_edit, reaction, reaction_count, removed_message,
};
use crate::{MessagingService, log, read_states, sees_hidden, threads, to_proto, withheld};

/// Messages expired in one transaction: small enough that a send, which
/// waits for the writer while a batch commits, waits only briefly.
const BATCH: u64 = 100;
/// Ids per `IN (...)` list, within both engines' limits on parameters.
const IDS_PER_STATEMENT: usize = 500;

/// What a run has expired (or would) in one conversation.
#[derive(Default)]
pub(crate) struct Tally {
    pub count: i64,
    pub oldest: i64,
    pub newest: i64,
}

impl Tally {
    fn add(&mut self, rows: &[message::Model]) {
        for m in rows {
            self.oldest = if self.count == 0 { m.created_at } else { self.oldest.min(m.created_at) };
            self.newest = self.newest.max(m.created_at);
            self.count += 1;
        }
    }
}

impl MessagingService {
    /// Expires one conversation's messages sent before `cutoff`, from
    /// where the last run stopped, beating the run's heart after each batch.
    pub(crate) async fn expire_channel(
        &self,
        channel_id: &str,
        cutoff: i64,
        dry_run: bool,
        actor: &str,
        run_id: &str,
    ) -> Result<Tally> {
        let mut from = channel_head::Entity::find_by_id(channel_id.to_string())
            .one(&self.db.reader)
            .await?
            .map_or(0, |h| h.expired_through_seq);
        let mut tally = Tally::default();
        loop {
            // Sequences follow sending time, so what expires is a prefix.
            let rows = message::Entity::find()
                .filter(message::Column::ChannelId.eq(channel_id))
                .filter(message::Column::Seq.gt(from))
                .order_by_asc(message::Column::Seq)
                .limit(BATCH)
                .all(&self.db.reader)
                .await?;
            let fetched = rows.len();
            let expiring: Vec<message::Model> = rows.into_iter().take_while(|m| m.created_at < cutoff).collect();
            let Some(last) = expiring.last() else { return Ok(tally) };
            from = last.seq;
            if !dry_run {
                let began = tokio::time::Instant::now();
                self.expire_batch(channel_id, cutoff, &expiring, actor).await?;
                // Rest as long as the batch worked: the sends arriving
                // meanwhile get the writer at least half of the time.
                tokio::time::sleep(began.elapsed()).await;
            }
            tally.add(&expiring);
            self.beat(run_id).await?;
            if expiring.len() < fetched || (fetched as u64) < BATCH {
                return Ok(tally);
            }
        }
    }

    /// Expires a run of consecutive messages of one conversation in one
    /// transaction, with its log entry and the event search consumes.
    async fn expire_batch(&self, channel_id: &str, cutoff: i64, rows: &[message::Model], actor: &str) -> Result<()> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(()) };
        let (first_seq, through) = (first.seq, last.seq);
        let ids: Vec<String> = rows.iter().map(|m| m.message_id.clone()).collect();
        let live: Vec<String> = rows.iter().filter(|m| m.is_live()).map(|m| m.message_id.clone()).collect();
        let threads: BTreeSet<String> =
            rows.iter().filter(|m| m.is_live()).filter_map(|m| m.thread_id.clone()).collect();
        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        message::Entity::update_many()
            .col_expr(message::Column::Text, Expr::val(""))
            .col_expr(message::Column::FileIds, Expr::val(""))
            .col_expr(message::Column::MentionedIds, Expr::val(""))
            .col_expr(message::Column::MentionsChannel, Expr::val(false))
            .col_expr(message::Column::MentionsHere, Expr::val(false))
            .col_expr(message::Column::PinnedAt, Expr::val(Option::<i64>::None))
            .col_expr(message::Column::PinnedBy, Expr::val(Option::<String>::None))
            .col_expr(
                message::Column::DeletedAt,
                Expr::case(message::Column::DeletedAt.is_null(), Expr::val(now))
                    .finally(Expr::col(message::Column::DeletedAt))
                    .into(),
            )
            .col_expr(message::Column::ExpiredAt, Expr::val(now))
            .filter(message::Column::ChannelId.eq(channel_id))
            .filter(message::Column::Seq.gte(first_seq))
            .filter(message::Column::Seq.lte(through))
            .exec(&txn)
            .await?;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let chunk = chunk.to_vec();
            message_edit::Entity::delete_many()
                .filter(message_edit::Column::MessageId.is_in(chunk.clone()))
                .exec(&txn)
                .await?;
            reaction::Entity::delete_many().filter(reaction::Column::MessageId.is_in(chunk.clone())).exec(&txn).await?;
            reaction_count::Entity::delete_many()
                .filter(reaction_count::Column::MessageId.is_in(chunk.clone()))
                .exec(&txn)
                .await?;
            mention::Entity::delete_many().filter(mention::Column::MessageId.is_in(chunk.clone())).exec(&txn).await?;
            use sea_orm::sea_query::ExprTrait as _;
            let files = Query::delete()
                .from_table(crate::attachments::TABLE)
                .and_where(Expr::col("message_id").is_in(chunk))
                .to_owned();
            txn.execute(&files).await?;
        }
        broadcast::Entity::delete_many()
            .filter(broadcast::Column::ChannelId.eq(channel_id))
            .filter(broadcast::Column::Seq.lte(through))
            .exec(&txn)
            .await?;
        // Members' read positions move past what expired, so it no longer
        // counts as unread; removals before that position no longer matter.
        read_states::advance_everyone(&txn, channel_id, through).await?;
        removed_message::Entity::delete_many()
            .filter(removed_message::Column::ChannelId.eq(channel_id))
            .filter(removed_message::Column::Seq.lte(through))
            .exec(&txn)
            .await?;
        channel_event::Entity::delete_many()
            .filter(channel_event::Column::ChannelId.eq(channel_id))
            .filter(channel_event::Column::Seq.lte(through))
            .exec(&txn)
            .await?;
        scrub_later_edits(&txn, channel_id, through, rows).await?;
        channel_head::Entity::update_many()
            .col_expr(channel_head::Column::ExpiredThroughSeq, Expr::val(through))
            .filter(channel_head::Column::ChannelId.eq(channel_id))
            .filter(channel_head::Column::ExpiredThroughSeq.lt(through))
            .exec(&txn)
            .await?;
        let expired = pb::MessagesExpired {
            through_seq: through,
            cutoff_time: Some(timestamp(cutoff)),
            message_count: rows.len() as i64,
        };
        let mut appended = vec![log::append(&txn, channel_id, actor, Kind::MessagesExpired(expired)).await?];
        for thread_id in &threads {
            threads::store::recount(&txn, thread_id).await?;
            if threads::store::exists(&txn, thread_id).await? {
                let summary = threads::store::summary(&txn, thread_id).await?;
                appended.push(log::append(&txn, channel_id, actor, Kind::ThreadUpdated(summary)).await?);
            }
        }
        let event = events::event(
            "messages.expired",
            actor,
            Payload::MessagesExpired(ExpiredEvent {
                channel_id: channel_id.to_string(),
                message_ids: live,
                through_seq: through,
            }),
        );
        events::enqueue(&txn, MESSAGE_EVENTS, channel_id, &event).await?;
        txn.commit().await?;
        self.publish(&appended).await;
        Ok(())
    }

    /// Shows, in a page read from the log, the messages deleted, recalled,
    /// expired or hidden since as they are now: without their text (a
    /// hidden one keeps it for those who may see it).
    pub(crate) async fn redact_removed(&self, caller: &Caller, events: &mut [pb::ChannelEvent]) -> Result<()> {
        let carried: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::MessageCreated(m) | Kind::MessageEdited(m)) if !m.deleted && !m.recalled => {
                    Some(m.message_id.clone())
                }
                _ => None,
            })
            .collect();
        if carried.is_empty() {
            return Ok(());
        }
        let changed: HashMap<String, message::Model> = message::Entity::find()
            .filter(message::Column::MessageId.is_in(carried))
            .filter(
                sea_orm::Condition::any()
                    .add(message::Column::DeletedAt.is_not_null())
                    .add(message::Column::Recalled.eq(true))
                    .add(message::Column::HiddenAt.is_not_null()),
            )
            .all(&self.db.reader)
            .await?
            .into_iter()
            .map(|m| (m.message_id.clone(), m))
            .collect();
        for event in events {
            let Some(Kind::MessageCreated(m) | Kind::MessageEdited(m)) = &mut event.kind else { continue };
            let Some(now) = changed.get(&m.message_id) else { continue };
            if now.is_live() {
                if !sees_hidden(caller, &now.sender_id) {
                    withheld(m);
                    m.hidden = true;
                }
            } else {
                *m = to_proto(now);
            }
        }
        Ok(())
    }
}

/// An expired message edited after the log was cut still has its edits'
/// text in the log: those entries keep their place but lose the text.
async fn scrub_later_edits<C: ConnectionTrait>(
    txn: &C,
    channel_id: &str,
    through: i64,
    rows: &[message::Model],
) -> Result<(), DbErr> {
    let edited: HashMap<&str, &message::Model> =
        rows.iter().filter(|m| m.edited_at.is_some()).map(|m| (m.message_id.as_str(), m)).collect();
    let Some(since) = edited.values().filter_map(|m| m.edited_at).min() else { return Ok(()) };
    let later = channel_event::Entity::find()
        .filter(channel_event::Column::ChannelId.eq(channel_id))
        .filter(channel_event::Column::Seq.gt(through))
        .filter(channel_event::Column::CreatedAt.gte(since))
        .all(txn)
        .await?;
    for row in later {
        let Ok(mut event) = pb::ChannelEvent::decode(row.payload.as_slice()) else { continue };
        let Some(Kind::MessageEdited(m)) = &mut event.kind else { continue };
        if !edited.contains_key(m.message_id.as_str()) {
            continue;
        }
        m.text.clear();
        m.file_ids.clear();
        m.deleted = true;
        m.mentions = None;
        channel_event::Entity::update_many()
            .col_expr(channel_event::Column::Payload, Expr::val(event.encode_to_vec()))
            .filter(channel_event::Column::ChannelId.eq(channel_id))
            .filter(channel_event::Column::Seq.eq(row.seq))
            .exec(txn)
            .await?;
    }
    Ok(())
}
