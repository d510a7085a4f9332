//! Group commit for new messages. Sends that arrive while a transaction is
//! being written queue up and go into the next one together: a burst of N
//! sends costs a handful of statements and one commit (one fsync) instead of
//! five statements and a commit each. A send is answered only after the
//! transaction holding it committed, and a batch's events are published in
//! sequence order, so live subscribers see no gaps to fill from the log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use colink_proto::events::v1::ThreadChanged;
use colink_proto::events::v1::event::Payload;
use colink_proto::messaging::v1 as pb;
use colink_proto::messaging::v1::MessageMentions;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_runtime::db::{Db, execute_together};
use colink_runtime::events::{self, MESSAGE_EVENTS, Outbox, THREAD_EVENTS};
use colink_runtime::ids::{new_id, now_micros};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic};
use prost::Message as _;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryTrait, Set, TransactionTrait,
};

use crate::batches::{BatchWrite, Batches};
use crate::log;
use crate::read_states;
use crate::store::{broadcast, channel_event, mention, message};
use crate::threads::store as threads;

/// The most sends one transaction takes; it keeps every multi-row statement
/// well under SQLite's and PostgreSQL's limits on bound parameters.
pub const MAX_BATCH: usize = 256;

/// A message that passed validation and access checks, waiting to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender_id: String,
    pub channel_id: String,
    pub text: String,
    /// For a reply: its thread.
    pub thread: Option<ThreadReply>,
    /// Who the text mentions, resolved.
    pub mentions: MessageMentions,
    pub file_ids: Vec<String>,
    /// The attached files whose virus scan had not ended when the send was
    /// admitted: the message waits to hear how it ends.
    pub scanning_file_ids: Vec<String>,
    pub idempotency_key: Option<String>,
    /// What the request asked for, kept with its idempotency key.
    pub request_fingerprint: Option<String>,
    /// The request and trace that sent it, for its events: the writer
    /// task builds them outside the request.
    pub origin: events::Origin,
}

impl NewMessage {
    /// Top level, or a reply also sent to the channel: it counts as unread
    /// in the conversation.
    fn in_main_flow(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.also_in_channel)
    }
}

/// The thread a reply goes into.
#[derive(Debug, Clone)]
pub struct ThreadReply {
    /// The root message, which names the thread.
    pub root_id: String,
    /// Who wrote the root: they follow the thread from its first reply.
    pub root_sender_id: String,
    /// Also post the reply to the channel's main flow.
    pub also_in_channel: bool,
}

/// What became of a send.
#[derive(Debug)]
pub enum Stored {
    /// Stored now; for a reply, whether it created its thread.
    Created { message: Box<pb::Message>, thread_created: bool },
    /// The sender used this idempotency key before (perhaps in the same
    /// batch); the original is the answer.
    Repeated,
}

/// The queue in front of the task that writes batches of messages.
#[derive(Clone)]
pub struct GroupCommit {
    batches: Batches<Writer>,
}

impl GroupCommit {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(db: Db, outbox: Outbox, pubsub: Arc<dyn PubSub>) -> Self {
        Self { batches: Batches::spawn(Writer { db, outbox, pubsub }, MAX_BATCH, "message") }
    }

    /// Stores a message and returns it once committed.
    pub async fn store(&self, message: NewMessage) -> Result<Stored, DbErr> {
        self.batches.submit(message).await
    }
}

struct Writer {
    db: Db,
    outbox: Outbox,
    pubsub: Arc<dyn PubSub>,
}

impl BatchWrite for Writer {
    type Item = NewMessage;
    type Output = Stored;

    async fn write(&self, messages: &[NewMessage]) -> Result<Vec<Stored>, DbErr> {
        self.write_messages(messages).await
    }
}

impl Writer {
    /// Writes a batch in one transaction and publishes its events; the
    /// results are in the order of `messages`.
    async fn write_messages(&self, messages: &[NewMessage]) -> Result<Vec<Stored>, DbErr> {
        let ids: Vec<String> = messages.iter().map(|_| new_id()).collect();
        let txn = self.db.writer.begin().await?;
        let fresh = claim_keys(&txn, messages, &ids).await?;
        // A reply takes two sequences: its own, and its thread's new summary.
        let wants = messages.iter().zip(&fresh).filter(|(_, f)| **f).map(|(m, _)| Want {
            channel_id: &m.channel_id,
            seqs: if m.thread.is_some() { 2 } else { 1 },
            counted: i64::from(m.in_main_flow()),
        });
        let mut next = take_seqs(&txn, wants).await?;
        let now = now_micros();
        let mut rows = Vec::new();
        let mut appended = Vec::new();
        let mut outgoing = Vec::new();
        let mut mentions = Vec::new();
        let mut broadcasts = Vec::new();
        let mut attached = Vec::new();
        // Sending marks the conversation read up to the message, for its sender.
        let mut read_up_to: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        let mut results = Vec::with_capacity(messages.len());
        for ((m, id), fresh) in messages.iter().zip(ids).zip(fresh) {
            if !fresh {
                results.push(Stored::Repeated);
                continue;
            }
            let Some(at) = next.get_mut(m.channel_id.as_str()) else {
                return Err(DbErr::Custom(format!("no sequence taken for channel {}", m.channel_id)));
            };
            let ordinal = m.in_main_flow().then(|| {
                at.ordinal += 1;
                at.ordinal - 1
            });
            let stored = model(m, id, at.seq, ordinal, now);
            at.seq += 1;
            if let Some(ordinal) = ordinal {
                read_up_to.insert((stored.channel_id.clone(), stored.sender_id.clone()), (stored.seq, ordinal));
            }
            mentions.extend(mention_rows(&stored, &m.mentions));
            attached.extend(m.file_ids.iter().map(|file_id| crate::attachments::Attached {
                file_id: file_id.clone(),
                message_id: stored.message_id.clone(),
                channel_id: stored.channel_id.clone(),
                settled: !m.scanning_file_ids.contains(file_id),
            }));
            if m.mentions.channel {
                broadcasts.push(broadcast_row(&stored));
            }
            let created = crate::to_proto(&stored);
            let event = log::event(
                &stored.channel_id,
                stored.seq,
                &stored.sender_id,
                Kind::MessageCreated(created.clone()),
                now,
            );
            outgoing.push(domain_event(&stored, &m.origin));
            appended.push(event);
            let mut thread_created = false;
            if let Some(reply) = &m.thread {
                let summary_seq = at.seq;
                at.seq += 1;
                threads::record_reply(&txn, &stored, &reply.root_sender_id, &m.mentions.user_ids).await?;
                thread_created = threads::created_by(&txn, &stored).await?;
                let summary = threads::summary(&txn, &reply.root_id).await?;
                appended.push(log::event(
                    &stored.channel_id,
                    summary_seq,
                    &stored.sender_id,
                    Kind::ThreadUpdated(summary),
                    now,
                ));
                outgoing.push(thread_event(&stored, reply, thread_created, &m.origin));
            }
            rows.push(stored);
            results.push(Stored::Created { message: Box::new(created), thread_created });
        }
        if !rows.is_empty() {
            let backend = txn.get_database_backend();
            // Every column is written: `reset_all` marks them all as set.
            let rows = rows.into_iter().map(|m| m.into_active_model().reset_all());
            let mut statements = vec![message::Entity::insert_many(rows).build(backend)];
            let entries = appended.iter().map(|e| log::row(e, now));
            statements.push(channel_event::Entity::insert_many(entries).build(backend));
            statements.extend(events::enqueue_statement(backend, &outgoing));
            if !mentions.is_empty() {
                statements.push(mention::Entity::insert_many(mentions).build(backend));
            }
            if !broadcasts.is_empty() {
                statements.push(broadcast::Entity::insert_many(broadcasts).build(backend));
            }
            statements.extend(crate::attachments::record(backend, &attached));
            statements.extend(read_states::advance_senders(backend, &read_up_to));
            execute_together(&txn, statements).await?;
        }
        txn.commit().await?;
        for event in &appended {
            let frame = Frame::Event(event.encode_to_vec().into()).encode();
            self.pubsub.publish(&channel_topic(&event.channel_id), frame).await;
        }
        if !appended.is_empty() {
            self.outbox.notify();
        }
        Ok(results)
    }
}

/// Records the idempotency keys of a batch; true for each send that is new,
/// false for one whose key its sender used before.
async fn claim_keys<C: ConnectionTrait>(txn: &C, messages: &[NewMessage], ids: &[String]) -> Result<Vec<bool>, DbErr> {
    let mut seen = HashSet::new();
    let mut fresh: Vec<bool> = messages
        .iter()
        .map(|m| m.idempotency_key.as_ref().is_none_or(|k| seen.insert((m.sender_id.as_str(), k.as_str()))))
        .collect();
    let keyed: Vec<usize> =
        (0..messages.len()).filter(|&i| fresh[i] && messages[i].idempotency_key.is_some()).collect();
    if keyed.is_empty() {
        return Ok(fresh);
    }
    let now = now_micros();
    let mut insert = Query::insert();
    insert.into_table("message_idempotency").columns([
        "sender_id",
        "idempotency_key",
        "message_id",
        "created_at",
        "request_fingerprint",
    ]);
    for &i in &keyed {
        let m = &messages[i];
        let key = m.idempotency_key.clone().unwrap_or_default();
        let fingerprint = m.request_fingerprint.clone();
        insert.values_panic([
            m.sender_id.clone().into(),
            key.into(),
            ids[i].clone().into(),
            now.into(),
            fingerprint.into(),
        ]);
    }
    insert
        .on_conflict(OnConflict::columns(["sender_id", "idempotency_key"]).do_nothing().to_owned())
        .returning(Query::returning().columns(["sender_id", "idempotency_key"]));
    let claimed: HashSet<(String, String)> = txn
        .query_all(&insert)
        .await?
        .into_iter()
        .map(|row| Ok((row.try_get_by_index::<String>(0)?, row.try_get_by_index::<String>(1)?)))
        .collect::<Result<_, DbErr>>()?;
    for &i in &keyed {
        let m = &messages[i];
        let key = (m.sender_id.clone(), m.idempotency_key.clone().unwrap_or_default());
        fresh[i] = claimed.contains(&key);
    }
    Ok(fresh)
}

/// What one send takes from its conversation's head.
struct Want<'a> {
    channel_id: &'a str,
    /// Sequence numbers.
    seqs: i64,
    /// 1 for a message of the main flow, which counts as unread.
    counted: i64,
}

/// The next sequence number and message ordinal to hand out in a channel.
struct Next {
    seq: i64,
    ordinal: i64,
}

/// Takes consecutive sequence numbers (and message ordinals) for every
/// channel of a batch in one statement, and returns the first ones taken per
/// channel. Channels are locked in id order, so concurrent batches on other
/// nodes cannot deadlock.
async fn take_seqs<'a, C: ConnectionTrait>(
    txn: &C,
    wants: impl Iterator<Item = Want<'a>>,
) -> Result<BTreeMap<&'a str, Next>, DbErr> {
    let mut counts: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for want in wants {
        let entry = counts.entry(want.channel_id).or_default();
        entry.0 += want.seqs;
        entry.1 += want.counted;
    }
    let mut firsts = BTreeMap::new();
    if counts.is_empty() {
        return Ok(firsts);
    }
    let mut upsert = Query::insert();
    upsert.into_table("channel_heads").columns(["channel_id", "last_seq", "message_count"]);
    for (channel_id, (seqs, counted)) in &counts {
        upsert.values_panic([(*channel_id).into(), (*seqs).into(), (*counted).into()]);
    }
    upsert
        .on_conflict(
            OnConflict::column("channel_id")
                .value("last_seq", Expr::cust("channel_heads.last_seq + excluded.last_seq"))
                .value("message_count", Expr::cust("channel_heads.message_count + excluded.message_count"))
                .to_owned(),
        )
        .returning(Query::returning().columns(["channel_id", "last_seq", "message_count"]));
    for row in txn.query_all(&upsert).await? {
        let channel_id = row.try_get_by_index::<String>(0)?;
        let last = row.try_get_by_index::<i64>(1)?;
        let count = row.try_get_by_index::<i64>(2)?;
        if let Some((key, (seqs, counted))) = counts.get_key_value(channel_id.as_str()) {
            firsts.insert(*key, Next { seq: last - seqs + 1, ordinal: count - counted + 1 });
        }
    }
    Ok(firsts)
}

/// Rows for the members a message mentions by name (or by being online).
pub(crate) fn mention_rows(m: &message::Model, mentions: &MessageMentions) -> Vec<mention::ActiveModel> {
    mentions
        .user_ids
        .iter()
        .map(|user_id| mention::ActiveModel {
            user_id: Set(user_id.clone()),
            message_id: Set(m.message_id.clone()),
            channel_id: Set(m.channel_id.clone()),
            seq: Set(m.seq),
            thread_id: Set(m.thread_id.clone()),
            in_channel: Set(m.ordinal.is_some()),
            sender_id: Set(m.sender_id.clone()),
            created_at: Set(m.created_at),
        })
        .collect()
}

/// The row of a message that mentions every member.
pub(crate) fn broadcast_row(m: &message::Model) -> broadcast::ActiveModel {
    broadcast::ActiveModel {
        message_id: Set(m.message_id.clone()),
        channel_id: Set(m.channel_id.clone()),
        seq: Set(m.seq),
        thread_id: Set(m.thread_id.clone()),
        in_channel: Set(m.ordinal.is_some()),
        sender_id: Set(m.sender_id.clone()),
        created_at: Set(m.created_at),
    }
}

fn model(m: &NewMessage, message_id: String, seq: i64, ordinal: Option<i64>, now: i64) -> message::Model {
    message::Model {
        message_id,
        channel_id: m.channel_id.clone(),
        seq,
        sender_id: m.sender_id.clone(),
        text: m.text.clone(),
        thread_id: m.thread.as_ref().map(|t| t.root_id.clone()),
        file_ids: m.file_ids.join(","),
        version: 1,
        created_at: now,
        edited_at: None,
        deleted_at: None,
        recalled: false,
        pinned_at: None,
        pinned_by: None,
        also_in_channel: m.thread.as_ref().is_some_and(|t| t.also_in_channel),
        ordinal,
        mentioned_ids: m.mentions.user_ids.join(","),
        mentions_channel: m.mentions.channel,
        mentions_here: m.mentions.here,
        expired_at: None,
        hidden_at: None,
    }
}

/// `thread.created` for a thread's first reply, else `reply.created`.
fn thread_event(m: &message::Model, reply: &ThreadReply, created: bool, origin: &events::Origin) -> events::NewEvent {
    let kind = if created { "thread.created" } else { "reply.created" };
    let changed = ThreadChanged {
        thread_id: reply.root_id.clone(),
        channel_id: m.channel_id.clone(),
        user_id: m.sender_id.clone(),
        reply_message_id: m.message_id.clone(),
        seq: m.seq,
        root_sender_id: reply.root_sender_id.clone(),
    };
    events::NewEvent {
        topic: THREAD_EVENTS,
        key: reply.root_id.clone(),
        event: events::event_from(origin, kind, &m.sender_id, Payload::ThreadChanged(changed)),
    }
}

fn domain_event(m: &message::Model, origin: &events::Origin) -> events::NewEvent {
    events::NewEvent {
        topic: MESSAGE_EVENTS,
        key: m.channel_id.clone(),
        event: events::event_from(origin, "message.created", &m.sender_id, crate::message_changed(m, m.seq)),
    }
}
