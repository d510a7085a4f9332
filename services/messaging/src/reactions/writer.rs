//! Reaction changes, written in batches. Changes that arrive while a batch
//! is written go into the next one, in one transaction.
//!
//! Each message a batch touched gets one entry in its conversation's log:
//! `reaction_added` or `reaction_removed` when it changed once, otherwise
//! `reactions_changed` with the new counts. After a batch in which some
//! message changed more than once, the next batch waits until
//! [`BUSY_EVERY`] has passed since this one began. A storm of reactions on
//! one message then costs every stream of its channel about five frames a
//! second, however many people react, while a quiet message still gets
//! each change at once and in full.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use colink_proto::events::v1::ReactionChanged as ReactionEvent;
use colink_proto::events::v1::event::Payload;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{ChannelEvent, ReactionChanged, ReactionCount, ReactionsChanged};
use colink_runtime::db::Db;
use colink_runtime::events::{self, NewEvent, Outbox, REACTION_EVENTS};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic};
use colink_runtime::{Error, Result};
use prost::Message as _;
use sea_orm::{ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

use super::store;
use crate::batches::{BatchWrite, Batches};
use crate::log;
use crate::store::{message, reaction, reaction_count, reaction_idempotency};

/// The most changes one transaction takes.
const MAX_BATCH: usize = 512;
/// While some message is busy, batches start at most this often.
pub const BUSY_EVERY: Duration = Duration::from_millis(200);

/// A change asked for, after validation and the access check.
#[derive(Debug, Clone)]
pub enum Change {
    Add {
        row: reaction::Model,
        /// The idempotency key and the request's fingerprint.
        key: Option<(String, String)>,
    },
    Remove {
        message_id: String,
        user_id: String,
        emoji: String,
    },
}

impl Change {
    fn message_id(&self) -> &str {
        match self {
            Change::Add { row, .. } => &row.message_id,
            Change::Remove { message_id, .. } => message_id,
        }
    }

    fn user_id(&self) -> &str {
        match self {
            Change::Add { row, .. } => &row.user_id,
            Change::Remove { user_id, .. } => user_id,
        }
    }

    fn key(&self) -> Option<&str> {
        match self {
            Change::Add { key: Some((key, _)), .. } => Some(key),
            _ => None,
        }
    }
}

/// What became of a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Added,
    /// The idempotency key was used first by another add, perhaps in the
    /// same batch; its original is the answer.
    Repeated,
    /// Whether there was a reaction to remove.
    Removed(bool),
}

/// The queue in front of the task that writes reaction batches.
#[derive(Clone)]
pub struct ReactionWriter {
    batches: Batches<Writer>,
}

impl ReactionWriter {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(db: Db, outbox: Outbox, pubsub: Arc<dyn PubSub>) -> Self {
        Self { batches: Batches::spawn(Writer { db, outbox, pubsub }, MAX_BATCH, "reaction") }
    }

    /// Makes a change and answers once it is committed.
    pub async fn submit(&self, change: Change) -> Result<Done> {
        self.batches.submit(change).await?
    }
}

struct Writer {
    db: Db,
    outbox: Outbox,
    pubsub: Arc<dyn PubSub>,
}

impl BatchWrite for Writer {
    type Item = Change;
    type Output = Result<Done>;

    async fn write(&self, changes: &[Change]) -> Result<Vec<Result<Done>>, DbErr> {
        self.write_changes(changes).await
    }

    fn spacing(&self, changes: &[Change]) -> Option<Duration> {
        some_message_repeats(changes).then_some(BUSY_EVERY)
    }
}

fn some_message_repeats(changes: &[Change]) -> bool {
    let mut seen = BTreeSet::new();
    changes.iter().any(|c| !seen.insert(c.message_id()))
}

/// One change that went through, for its log entry and its domain event.
struct Made {
    added: bool,
    user_id: String,
    emoji: String,
}

impl Writer {
    /// Writes a batch in one transaction and publishes its log entries; the
    /// results are in the order of `changes`. An error fails the whole batch
    /// and changes nothing.
    async fn write_changes(&self, changes: &[Change]) -> Result<Vec<Result<Done>>, DbErr> {
        let txn = self.db.writer.begin().await?;
        // Changes to one message take turns on its row (PostgreSQL locks it;
        // SQLite has one writer), in one order on every node, so the limits
        // hold however many nodes write.
        let mut messages = HashMap::new();
        for id in changes.iter().map(Change::message_id).collect::<BTreeSet<_>>() {
            if let Some(m) = message::Entity::find_by_id(id.to_string()).lock_exclusive().one(&txn).await? {
                messages.insert(id.to_string(), m);
            }
        }
        let snapshot = {
            let message_ids: Vec<&str> = messages.keys().map(String::as_str).collect();
            let user_ids: Vec<&str> =
                changes.iter().map(Change::user_id).collect::<BTreeSet<_>>().into_iter().collect();
            let keys: Vec<&str> = changes.iter().filter_map(Change::key).collect::<BTreeSet<_>>().into_iter().collect();
            store::snapshot(&txn, &message_ids, &user_ids, &keys).await?
        };
        let mut batch = Batch::new(snapshot);
        let results: Vec<Result<Done>> = changes
            .iter()
            .map(|change| match messages.get(change.message_id()) {
                Some(m) if m.is_live() => batch.apply(change),
                _ => Err(Error::precondition("deleted and recalled messages take no reactions")),
            })
            .collect();
        let (writes, keys, made) = batch.finish();
        let expected = keys.len() as u64;
        if store::insert_keys(&txn, keys).await? < expected {
            // Another node took a key of this batch meanwhile.
            return match changes {
                [_] => Ok(vec![Ok(Done::Repeated)]),
                _ => Err(DbErr::Custom("an idempotency key was taken meanwhile".into())),
            };
        }
        store::apply(&txn, writes).await?;
        let mut entries = Vec::with_capacity(made.len());
        let mut domain_events = Vec::new();
        for (message_id, made) in made {
            let Some(m) = messages.get(&message_id) else { continue };
            let entry = append_entry(&txn, m, &made).await?;
            domain_events.extend(made.iter().map(|change| domain_event(m, change, entry.seq)));
            entries.push(entry);
        }
        events::enqueue_many(&txn, &domain_events).await?;
        txn.commit().await?;
        for entry in &entries {
            let frame = Frame::Event(entry.encode_to_vec().into()).encode();
            self.pubsub.publish(&channel_topic(&entry.channel_id), frame).await;
        }
        if !domain_events.is_empty() {
            self.outbox.notify();
        }
        Ok(results)
    }
}

type Held = (String, String, String);

/// A batch worked out in memory, change by change, from its snapshot; the
/// limits apply to each change in order, as if each were written alone.
struct Batch {
    held: HashSet<Held>,
    held_before: HashSet<Held>,
    counts: HashMap<(String, String), (i32, i64)>,
    counts_before: HashMap<(String, String), (i32, i64)>,
    used_keys: HashSet<(String, String)>,
    /// (message, user) → how many reactions the user holds on it.
    per_user: HashMap<(String, String), u64>,
    /// Rows of the reactions added in the batch.
    rows: HashMap<Held, reaction::Model>,
    new_keys: Vec<reaction_idempotency::Model>,
    made: BTreeMap<String, Vec<Made>>,
}

impl Batch {
    fn new(snapshot: store::Snapshot) -> Self {
        let mut per_user: HashMap<(String, String), u64> = HashMap::new();
        for (m, u, _) in &snapshot.held {
            *per_user.entry((m.clone(), u.clone())).or_default() += 1;
        }
        Self {
            per_user,
            held_before: snapshot.held.clone(),
            held: snapshot.held,
            counts_before: snapshot.counts.clone(),
            counts: snapshot.counts,
            used_keys: snapshot.keys,
            rows: HashMap::new(),
            new_keys: Vec::new(),
            made: BTreeMap::new(),
        }
    }

    fn apply(&mut self, change: &Change) -> Result<Done> {
        match change {
            Change::Add { row, key } => self.add(row, key.as_ref()),
            Change::Remove { message_id, user_id, emoji } => {
                let held = (message_id.clone(), user_id.clone(), emoji.clone());
                if !self.held.remove(&held) {
                    return Ok(Done::Removed(false));
                }
                self.rows.remove(&held);
                if let Some(of_user) = self.per_user.get_mut(&(message_id.clone(), user_id.clone())) {
                    *of_user = of_user.saturating_sub(1);
                }
                if let Some((count, _)) = self.counts.get_mut(&(message_id.clone(), emoji.clone())) {
                    *count -= 1;
                }
                let made = Made { added: false, user_id: user_id.clone(), emoji: emoji.clone() };
                self.made.entry(message_id.clone()).or_default().push(made);
                Ok(Done::Removed(true))
            }
        }
    }

    fn add(&mut self, row: &reaction::Model, key: Option<&(String, String)>) -> Result<Done> {
        if let Some((key, _)) = key
            && self.used_keys.contains(&(row.user_id.clone(), key.clone()))
        {
            return Ok(Done::Repeated);
        }
        let held = (row.message_id.clone(), row.user_id.clone(), row.emoji.clone());
        if self.held.contains(&held) {
            return Err(Error::AlreadyExists(format!("you already reacted with {} to this message", row.emoji)));
        }
        let group = (row.message_id.clone(), row.emoji.clone());
        let emoji_is_new = self.counts.get(&group).is_none_or(|(count, _)| *count <= 0);
        let emoji_on_message =
            self.counts.iter().filter(|((m, _), (count, _))| *m == row.message_id && *count > 0).count() as u64;
        if emoji_is_new && emoji_on_message >= store::MAX_EMOJI_PER_MESSAGE {
            return Err(Error::precondition(format!(
                "a message holds at most {} different emoji",
                store::MAX_EMOJI_PER_MESSAGE
            )));
        }
        let of_user = self.per_user.entry((row.message_id.clone(), row.user_id.clone())).or_default();
        if *of_user >= store::MAX_PER_USER {
            return Err(Error::precondition(format!(
                "one person can add at most {} reactions to a message",
                store::MAX_PER_USER
            )));
        }
        let counted = self.counts.entry(group).or_insert((0, row.created_at));
        if counted.0 <= 0 {
            *counted = (0, row.created_at);
        }
        counted.0 += 1;
        if let Some(of_user) = self.per_user.get_mut(&(row.message_id.clone(), row.user_id.clone())) {
            *of_user += 1;
        }
        if let Some((key, fingerprint)) = key {
            self.used_keys.insert((row.user_id.clone(), key.clone()));
            self.new_keys.push(reaction_idempotency::Model {
                user_id: row.user_id.clone(),
                idempotency_key: key.clone(),
                message_id: row.message_id.clone(),
                emoji: row.emoji.clone(),
                created_at: row.created_at,
                request_fingerprint: Some(fingerprint.clone()),
            });
        }
        self.held.insert(held.clone());
        self.rows.insert(held, row.clone());
        let made = Made { added: true, user_id: row.user_id.clone(), emoji: row.emoji.clone() };
        self.made.entry(row.message_id.clone()).or_default().push(made);
        Ok(Done::Added)
    }

    /// What to write: the rows and counts that differ from the snapshot,
    /// the new keys, and each message's changes in order.
    fn finish(self) -> (store::Writes, Vec<reaction_idempotency::Model>, BTreeMap<String, Vec<Made>>) {
        let Batch { held, held_before, counts, counts_before, mut rows, new_keys, made, .. } = self;
        let inserted = held.difference(&held_before).filter_map(|h| rows.remove(h)).collect();
        let deleted = held_before.difference(&held).cloned().collect();
        let counts = counts
            .into_iter()
            .filter(|(group, now)| match counts_before.get(group) {
                Some(before) => before != now,
                // A group that came and went within the batch.
                None => now.0 > 0,
            })
            .map(|((message_id, emoji), (count, first_at))| reaction_count::Model {
                message_id,
                emoji,
                count: count.max(0),
                first_at,
            })
            .collect();
        (store::Writes { inserted, deleted, counts }, new_keys, made)
    }
}

/// The log entry of a message's changes in this batch.
async fn append_entry(txn: &DatabaseTransaction, m: &message::Model, made: &[Made]) -> Result<ChannelEvent, DbErr> {
    let emoji: BTreeSet<&str> = made.iter().map(|c| c.emoji.as_str()).collect();
    let now: HashMap<String, i32> = reaction_count::Entity::find()
        .select_only()
        .columns([reaction_count::Column::Emoji, reaction_count::Column::Count])
        .filter(reaction_count::Column::MessageId.eq(&m.message_id))
        .filter(reaction_count::Column::Emoji.is_in(emoji.iter().copied()))
        .into_tuple::<(String, i32)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let count_of = |emoji: &str| now.get(emoji).copied().unwrap_or(0);
    let (kind, actor) = match made {
        [one] => {
            let change = ReactionChanged {
                message_id: m.message_id.clone(),
                user_id: one.user_id.clone(),
                emoji: one.emoji.clone(),
                count: count_of(&one.emoji),
            };
            let kind = if one.added { Kind::ReactionAdded(change) } else { Kind::ReactionRemoved(change) };
            (kind, one.user_id.as_str())
        }
        _ => {
            let counts = emoji.iter().map(|e| ReactionCount { emoji: (*e).to_string(), count: count_of(e) }).collect();
            let changes = i32::try_from(made.len()).unwrap_or(i32::MAX);
            let kind = Kind::ReactionsChanged(ReactionsChanged { message_id: m.message_id.clone(), counts, changes });
            // The entry names whoever changed last.
            (kind, made.last().map_or("", |c| c.user_id.as_str()))
        }
    };
    log::append(txn, &m.channel_id, actor, kind).await
}

fn domain_event(m: &message::Model, change: &Made, seq: i64) -> NewEvent {
    let payload = ReactionEvent {
        message_id: m.message_id.clone(),
        channel_id: m.channel_id.clone(),
        user_id: change.user_id.clone(),
        emoji: change.emoji.clone(),
        message_sender_id: m.sender_id.clone(),
        seq,
    };
    let name = if change.added { "reaction.added" } else { "reaction.removed" };
    NewEvent {
        topic: REACTION_EVENTS,
        key: m.message_id.clone(),
        event: events::event(name, &change.user_id, Payload::ReactionChanged(payload)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(user: &str, emoji: &str, key: Option<&str>) -> Change {
        let row = reaction::Model {
            message_id: "m".into(),
            user_id: user.into(),
            emoji: emoji.into(),
            channel_id: "c".into(),
            created_at: 7,
        };
        Change::Add { row, key: key.map(|k| (k.to_string(), "fingerprint".to_string())) }
    }

    fn remove(user: &str, emoji: &str) -> Change {
        Change::Remove { message_id: "m".into(), user_id: user.into(), emoji: emoji.into() }
    }

    fn held(user: &str, emoji: &str) -> Held {
        ("m".into(), user.into(), emoji.into())
    }

    #[test]
    fn a_batch_applies_each_change_in_order_and_writes_only_the_difference() {
        let snapshot = store::Snapshot {
            held: [held("ann", "👍")].into(),
            counts: [(("m".into(), "👍".into()), (3, 1))].into(),
            keys: [("bob".into(), "used".into())].into(),
        };
        let mut batch = Batch::new(snapshot);
        let done: Vec<Result<Done>> = [
            add("bob", "🎉", Some("k1")),
            add("bob", "🎉", None),
            add("bob", "👀", Some("k1")),
            add("bob", "🚀", Some("used")),
            remove("ann", "👍"),
            remove("ann", "👍"),
            add("cy", "👀", None),
            remove("cy", "👀"),
        ]
        .iter()
        .map(|c| batch.apply(c))
        .collect();
        let codes: Vec<_> = done.iter().map(|d| d.as_ref().map_err(|e| matches!(e, Error::AlreadyExists(_)))).collect();
        assert_eq!(
            codes,
            [
                Ok(&Done::Added),
                Err(true),
                Ok(&Done::Repeated),
                Ok(&Done::Repeated),
                Ok(&Done::Removed(true)),
                Ok(&Done::Removed(false)),
                Ok(&Done::Added),
                Ok(&Done::Removed(true)),
            ]
        );
        let (writes, keys, made) = batch.finish();
        assert_eq!(
            writes.inserted.iter().map(|r| (r.user_id.as_str(), r.emoji.as_str())).collect::<Vec<_>>(),
            [("bob", "🎉")]
        );
        assert_eq!(writes.deleted, [held("ann", "👍")], "an add undone in the same batch writes nothing");
        let mut counts: Vec<_> = writes.counts.iter().map(|c| (c.emoji.as_str(), c.count, c.first_at)).collect();
        counts.sort();
        assert_eq!(counts, [("🎉", 1, 7), ("👍", 2, 1)], "a group that came and went is not written");
        assert_eq!(keys.iter().map(|k| k.idempotency_key.as_str()).collect::<Vec<_>>(), ["k1"]);
        assert_eq!(made["m"].len(), 4, "two adds and two removals went through");
    }

    #[test]
    fn the_limits_count_what_the_batch_added_before() {
        let mut batch = Batch::new(store::Snapshot::default());
        for i in 0..store::MAX_PER_USER {
            assert_eq!(batch.apply(&add("ann", &format!("e{i}"), None)).ok(), Some(Done::Added));
        }
        assert!(matches!(batch.apply(&add("ann", "one more", None)), Err(Error::FailedPrecondition(_))));
        let crowd = store::MAX_EMOJI_PER_MESSAGE - store::MAX_PER_USER;
        for i in 0..crowd {
            assert_eq!(batch.apply(&add(&format!("u{i}"), &format!("x{i}"), None)).ok(), Some(Done::Added));
        }
        assert!(matches!(batch.apply(&add("zed", "new", None)), Err(Error::FailedPrecondition(_))));
        assert_eq!(batch.apply(&add("zed", "e0", None)).ok(), Some(Done::Added), "an emoji already there");
    }

    #[test]
    fn a_storm_on_one_message_is_busy() {
        assert!(some_message_repeats(&[add("a", "x", None), add("b", "x", None)]));
        assert!(!some_message_repeats(&[add("a", "x", None)]));
    }
}
