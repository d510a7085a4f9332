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
use colink_runtime::db::{Db, SqliteWrite, execute_together};
use colink_runtime::events::{self, MESSAGE_EVENTS, Outbox, THREAD_EVENTS};
use colink_runtime::ids::{new_id, now_micros};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic};
use prost::Message as _;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, IntoActiveModel, QueryResult, QueryTrait, Set,
    Statement, StatementBuilder, TransactionTrait,
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
        let two_calls =
            self.db.writer.get_database_backend() == DbBackend::Sqlite && messages.iter().all(|m| m.thread.is_none());
        let written = if two_calls && let Some(written) = self.write_in_two_calls(messages, &ids).await? {
            written
        } else {
            self.write_in_transaction(messages, &ids).await?
        };
        for event in &written.appended {
            let frame = Frame::Event(event.encode_to_vec().into()).encode();
            self.pubsub.publish(&channel_topic(&event.channel_id), frame).await;
        }
        if !written.appended.is_empty() {
            self.outbox.notify();
        }
        Ok(written.results)
    }

    /// On SQLite, a batch without replies in two calls to the writer's
    /// thread: `BEGIN` with the keys claimed and the sequence numbers taken,
    /// then the rows with `COMMIT`. The numbers are taken as if every key
    /// were new; when one was used before, the transaction is undone and
    /// the batch goes the long way (None).
    async fn write_in_two_calls<'a>(
        &self,
        messages: &'a [NewMessage],
        ids: &[String],
    ) -> Result<Option<Layout<'a>>, DbErr> {
        let backend = DbBackend::Sqlite;
        let keys = Keys::of(messages);
        let heads = Heads::wanted(messages, &keys.fresh);
        let claim = keys.claim(messages, ids, backend);
        let claimed = claim.is_some();
        let statements = claim.into_iter().chain(heads.take(backend)).collect();
        let (write, results) = SqliteWrite::begin(&self.db.writer, statements).await?;
        let mut results = results.into_iter();
        let mut fresh = keys.fresh.clone();
        if claimed {
            keys.settle(messages, &mut fresh, &results.next().unwrap_or_default())?;
        }
        if fresh != keys.fresh {
            write.rollback().await?;
            return Ok(None);
        }
        let mut next = heads.firsts(&results.next().unwrap_or_default())?;
        let mut layout = Layout::of(messages, ids, &fresh, &mut next, now_micros())?;
        write.commit(layout.statements(backend)).await?;
        Ok(Some(layout))
    }

    /// A batch in a transaction, a statement or a few at a time.
    async fn write_in_transaction<'a>(&self, messages: &'a [NewMessage], ids: &[String]) -> Result<Layout<'a>, DbErr> {
        let txn = self.db.writer.begin().await?;
        let backend = txn.get_database_backend();
        let keys = Keys::of(messages);
        let mut fresh = keys.fresh.clone();
        if let Some(claim) = keys.claim(messages, ids, backend) {
            keys.settle(messages, &mut fresh, &txn.query_all_raw(claim).await?)?;
        }
        let heads = Heads::wanted(messages, &fresh);
        let mut next = match heads.take(backend) {
            Some(take) => heads.firsts(&txn.query_all_raw(take).await?)?,
            None => BTreeMap::new(),
        };
        let now = now_micros();
        let mut layout = Layout::of(messages, ids, &fresh, &mut next, now)?;
        layout.record_replies(&txn, now).await?;
        execute_together(&txn, layout.statements(backend)).await?;
        txn.commit().await?;
        Ok(layout)
    }
}

/// A batch laid out as rows, log entries, events and answers.
#[derive(Default)]
struct Layout<'a> {
    results: Vec<Stored>,
    rows: Vec<message::Model>,
    /// The channel log's new entries, published live once committed.
    appended: Vec<pb::ChannelEvent>,
    outgoing: Vec<events::NewEvent>,
    mentions: Vec<mention::ActiveModel>,
    broadcasts: Vec<broadcast::ActiveModel>,
    attached: Vec<crate::attachments::Attached>,
    /// Sending marks the conversation read up to the message, for its sender.
    read_up_to: BTreeMap<(String, String), (i64, i64)>,
    /// Replies whose thread is still to update.
    replies: Vec<PendingReply<'a>>,
}

/// A reply stored in the batch, and the sequence number its thread's new
/// summary takes.
struct PendingReply<'a> {
    result: usize,
    stored: message::Model,
    message: &'a NewMessage,
    reply: &'a ThreadReply,
    summary_seq: i64,
}

impl<'a> Layout<'a> {
    /// Gives each new send its id, sequence number and ordinal, and lays
    /// out what it writes.
    fn of(
        messages: &'a [NewMessage],
        ids: &[String],
        fresh: &[bool],
        next: &mut BTreeMap<&str, Next>,
        now: i64,
    ) -> Result<Self, DbErr> {
        let mut layout = Layout { results: Vec::with_capacity(messages.len()), ..Default::default() };
        for ((m, id), fresh) in messages.iter().zip(ids).zip(fresh) {
            if !fresh {
                layout.results.push(Stored::Repeated);
                continue;
            }
            let Some(at) = next.get_mut(m.channel_id.as_str()) else {
                return Err(DbErr::Custom(format!("no sequence taken for channel {}", m.channel_id)));
            };
            let ordinal = m.in_main_flow().then(|| {
                at.ordinal += 1;
                at.ordinal - 1
            });
            let stored = model(m, id.clone(), at.seq, ordinal, now);
            at.seq += 1;
            if let Some(ordinal) = ordinal {
                layout.read_up_to.insert((stored.channel_id.clone(), stored.sender_id.clone()), (stored.seq, ordinal));
            }
            layout.mentions.extend(mention_rows(&stored, &m.mentions));
            layout.attached.extend(m.file_ids.iter().map(|file_id| crate::attachments::Attached {
                file_id: file_id.clone(),
                message_id: stored.message_id.clone(),
                channel_id: stored.channel_id.clone(),
                settled: !m.scanning_file_ids.contains(file_id),
            }));
            if m.mentions.channel {
                layout.broadcasts.push(broadcast_row(&stored));
            }
            let created = crate::to_proto(&stored);
            layout.appended.push(log::event(
                &stored.channel_id,
                stored.seq,
                &stored.sender_id,
                Kind::MessageCreated(created.clone()),
                now,
            ));
            layout.outgoing.push(domain_event(&stored, &m.origin));
            if let Some(reply) = &m.thread {
                layout.replies.push(PendingReply {
                    result: layout.results.len(),
                    stored: stored.clone(),
                    message: m,
                    reply,
                    summary_seq: at.seq,
                });
                at.seq += 1;
            }
            layout.rows.push(stored);
            layout.results.push(Stored::Created { message: Box::new(created), thread_created: false });
        }
        Ok(layout)
    }

    /// Updates the threads the batch's replies went to, in the order sent,
    /// and logs each thread's new summary.
    async fn record_replies<C: ConnectionTrait>(&mut self, txn: &C, now: i64) -> Result<(), DbErr> {
        if self.replies.is_empty() {
            return Ok(());
        }
        for pending in std::mem::take(&mut self.replies) {
            let (stored, reply) = (&pending.stored, pending.reply);
            threads::record_reply(txn, stored, &reply.root_sender_id, &pending.message.mentions.user_ids).await?;
            let created = threads::created_by(txn, stored).await?;
            let summary = threads::summary(txn, &reply.root_id).await?;
            self.appended.push(log::event(
                &stored.channel_id,
                pending.summary_seq,
                &stored.sender_id,
                Kind::ThreadUpdated(summary),
                now,
            ));
            self.outgoing.push(thread_event(stored, reply, created, &pending.message.origin));
            if let Some(Stored::Created { thread_created, .. }) = self.results.get_mut(pending.result) {
                *thread_created = created;
            }
        }
        // Live subscribers get each channel's entries in sequence order.
        self.appended.sort_by_key(|event| event.seq);
        Ok(())
    }

    /// The statements that write the batch's rows.
    fn statements(&mut self, backend: DbBackend) -> Vec<Statement> {
        if self.rows.is_empty() {
            return Vec::new();
        }
        let now = self.rows[0].created_at;
        // Every column is written: `reset_all` marks them all as set.
        let rows = std::mem::take(&mut self.rows).into_iter().map(|m| m.into_active_model().reset_all());
        let mut statements = vec![message::Entity::insert_many(rows).build(backend)];
        let entries = self.appended.iter().map(|e| log::row(e, now));
        statements.push(channel_event::Entity::insert_many(entries).build(backend));
        statements.extend(events::enqueue_statement(backend, &self.outgoing));
        if !self.mentions.is_empty() {
            statements.push(mention::Entity::insert_many(std::mem::take(&mut self.mentions)).build(backend));
        }
        if !self.broadcasts.is_empty() {
            statements.push(broadcast::Entity::insert_many(std::mem::take(&mut self.broadcasts)).build(backend));
        }
        statements.extend(crate::attachments::record(backend, &self.attached));
        statements.extend(read_states::advance_senders(backend, &self.read_up_to));
        statements
    }
}

/// The idempotency keys of a batch.
struct Keys {
    /// Per send: false for a key already used earlier in the batch.
    fresh: Vec<bool>,
    /// The sends with a key to claim.
    keyed: Vec<usize>,
}

impl Keys {
    fn of(messages: &[NewMessage]) -> Self {
        let mut seen = HashSet::new();
        let fresh: Vec<bool> = messages
            .iter()
            .map(|m| m.idempotency_key.as_ref().is_none_or(|k| seen.insert((m.sender_id.as_str(), k.as_str()))))
            .collect();
        let keyed = (0..messages.len()).filter(|&i| fresh[i] && messages[i].idempotency_key.is_some()).collect();
        Self { fresh, keyed }
    }

    /// Records the keys; returns each one that was new. None without keys.
    fn claim(&self, messages: &[NewMessage], ids: &[String], backend: DbBackend) -> Option<Statement> {
        if self.keyed.is_empty() {
            return None;
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
        for &i in &self.keyed {
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
        Some(StatementBuilder::build(&insert, &backend))
    }

    /// Marks as repeated each keyed send whose key the claim did not return.
    fn settle(&self, messages: &[NewMessage], fresh: &mut [bool], claimed: &[QueryResult]) -> Result<(), DbErr> {
        let claimed: HashSet<(String, String)> = claimed
            .iter()
            .map(|row| Ok((row.try_get_by_index::<String>(0)?, row.try_get_by_index::<String>(1)?)))
            .collect::<Result<_, DbErr>>()?;
        for &i in &self.keyed {
            let m = &messages[i];
            let key = (m.sender_id.clone(), m.idempotency_key.clone().unwrap_or_default());
            fresh[i] = claimed.contains(&key);
        }
        Ok(())
    }
}

/// The next sequence number and message ordinal to hand out in a channel.
struct Next {
    seq: i64,
    ordinal: i64,
}

/// What a batch takes from each conversation's head: sequence numbers (a
/// reply takes two: its own, and its thread's new summary) and ordinals
/// (one per message of the main flow, which counts as unread).
struct Heads<'a>(BTreeMap<&'a str, (i64, i64)>);

impl<'a> Heads<'a> {
    fn wanted(messages: &'a [NewMessage], fresh: &[bool]) -> Self {
        let mut counts: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for (m, _) in messages.iter().zip(fresh).filter(|(_, fresh)| **fresh) {
            let entry = counts.entry(m.channel_id.as_str()).or_default();
            entry.0 += if m.thread.is_some() { 2 } else { 1 };
            entry.1 += i64::from(m.in_main_flow());
        }
        Self(counts)
    }

    /// Takes consecutive numbers for every channel in one statement. Rows
    /// are locked in channel id order, so concurrent batches on other nodes
    /// cannot deadlock. None when nothing is wanted.
    fn take(&self, backend: DbBackend) -> Option<Statement> {
        if self.0.is_empty() {
            return None;
        }
        let mut upsert = Query::insert();
        upsert.into_table("channel_heads").columns(["channel_id", "last_seq", "message_count"]);
        for (channel_id, (seqs, counted)) in &self.0 {
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
        Some(StatementBuilder::build(&upsert, &backend))
    }

    /// The first numbers taken per channel, from what `take` returned.
    fn firsts(&self, taken: &[QueryResult]) -> Result<BTreeMap<&'a str, Next>, DbErr> {
        let mut firsts = BTreeMap::new();
        for row in taken {
            let channel_id = row.try_get_by_index::<String>(0)?;
            let last = row.try_get_by_index::<i64>(1)?;
            let count = row.try_get_by_index::<i64>(2)?;
            if let Some((key, (seqs, counted))) = self.0.get_key_value(channel_id.as_str()) {
                firsts.insert(*key, Next { seq: last - seqs + 1, ordinal: count - counted + 1 });
            }
        }
        Ok(firsts)
    }
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
