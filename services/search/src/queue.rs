//! The way from the event log into an index. A consumer writes each change
//! to `search_queue` before it acknowledges the event, and one indexer task
//! applies the queue in order and deletes what the index has committed: a
//! restart, or an index that is down, delays indexing and loses nothing.
//! Events of one message arrive in order (they share a partition key), and
//! a redelivery repeats a suffix of them, so applying the queue again ends
//! in the same state.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use colink_proto::events::v1::Event;
use colink_proto::events::v1::event::Payload;
use colink_runtime::db::Db;
use colink_runtime::events::{EventError, EventHandler};
use colink_runtime::ids::{micros_of, now_micros};
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, StatementBuilder};
use tokio::sync::{Notify, watch};

use crate::index::{Change, MessageDoc, SearchIndex, UserDoc};

const TABLE: &str = "search_queue";
/// Changes applied in one index commit at most.
const BATCH: u64 = 4096;
/// The least time between two index commits while changes trickle in: a
/// commit writes a segment (and later merges it), so fewer, larger ones
/// cost the node far less, for a fraction of a second of lag.
const COMMIT_INTERVAL: Duration = Duration::from_millis(250);

/// The queue of changes on their way to an index.
#[derive(Clone)]
pub struct Queue {
    db: Db,
    wake: Arc<Notify>,
    /// The time from an event's commit to its change's index commit, of the
    /// last batch applied, in microseconds.
    lag: Arc<AtomicI64>,
}

#[derive(FromQueryResult)]
struct Row {
    id: i64,
    change: Vec<u8>,
    event_time: i64,
}

#[derive(FromQueryResult)]
struct Scalar {
    value: Option<i64>,
}

impl Queue {
    pub fn new(db: Db) -> Self {
        Self { db, wake: Arc::new(Notify::new()), lag: Arc::new(AtomicI64::new(0)) }
    }

    /// Adds changes, each with the time of its event, durably (in one
    /// statement), and wakes the indexer.
    pub async fn push(&self, changes: &[(Change, i64)]) -> Result<(), DbErr> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = now_micros();
        let mut insert = Query::insert();
        insert.into_table(TABLE).columns(["change", "event_time", "queued_at"]);
        for (change, event_time) in changes {
            let encoded = serde_json::to_vec(change).map_err(|e| DbErr::Custom(e.to_string()))?;
            insert.values_panic([encoded.into(), (*event_time).into(), now.into()]);
        }
        self.db.writer.execute(&insert).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Changes waiting, oldest first.
    async fn peek(&self) -> Result<Vec<Row>, DbErr> {
        let query = Query::select()
            .columns(["id", "change", "event_time"])
            .from(TABLE)
            .order_by("id", sea_orm::Order::Asc)
            .limit(BATCH)
            .to_owned();
        let backend = self.db.writer.get_database_backend();
        Row::find_by_statement(StatementBuilder::build(&query, &backend)).all(&self.db.writer).await
    }

    async fn remove_through(&self, id: i64) -> Result<(), DbErr> {
        let delete = Query::delete().from_table(TABLE).and_where(Expr::col("id").lte(id)).to_owned();
        self.db.writer.execute(&delete).await?;
        Ok(())
    }

    /// How many changes wait.
    pub async fn depth(&self) -> Result<i64, DbErr> {
        let query = Query::select().expr_as(Func::count(Expr::col("id")), "value").from(TABLE).to_owned();
        let backend = self.db.writer.get_database_backend();
        let row = Scalar::find_by_statement(StatementBuilder::build(&query, &backend)).one(&self.db.writer).await?;
        Ok(row.and_then(|r| r.value).unwrap_or(0))
    }

    /// The lag of the last batch the indexer applied.
    pub fn last_lag(&self) -> Duration {
        Duration::from_micros(u64::try_from(self.lag.load(Ordering::Relaxed)).unwrap_or(0))
    }

    /// Applies the queue to `index` until shutdown, in order; a failing
    /// index is retried with backoff, the changes kept.
    pub fn spawn_indexer(
        &self,
        index: Arc<dyn SearchIndex>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let queue = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let started = tokio::time::Instant::now();
                match queue.apply_batch(index.as_ref()).await {
                    Ok(true) => {
                        backoff = Duration::from_millis(100);
                        // Let the next batch gather, unless shutting down.
                        tokio::select! {
                            _ = tokio::time::sleep_until(started + COMMIT_INTERVAL) => {}
                            _ = shutdown.changed() => {}
                        }
                        continue;
                    }
                    Ok(false) => backoff = Duration::from_millis(100),
                    Err(err) => {
                        tracing::warn!(error = %err, "search indexing failed; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
                if *shutdown.borrow() {
                    break;
                }
                tokio::select! {
                    _ = queue.wake.notified() => {}
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
            }
        })
    }

    /// Applies one batch; false when the queue was empty.
    async fn apply_batch(&self, index: &dyn SearchIndex) -> Result<bool, String> {
        let rows = self.peek().await.map_err(|e| e.to_string())?;
        let Some(last) = rows.last() else { return Ok(false) };
        let last_id = last.id;
        let oldest_event = rows.iter().map(|r| r.event_time).min().unwrap_or(0);
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_slice::<Change>(&row.change) {
                Ok(change) => changes.push(change),
                // Written by this code, so only a newer version's change can
                // fail here: skipped rather than blocking the queue forever.
                Err(err) => tracing::error!(id = row.id, error = %err, "unreadable search change skipped"),
            }
        }
        index.apply(changes).await.map_err(|e| e.to_string())?;
        self.remove_through(last_id).await.map_err(|e| e.to_string())?;
        self.lag.store(now_micros() - oldest_event, Ordering::Relaxed);
        Ok(true)
    }
}

/// The time an event was committed, in microseconds.
fn event_time(event: &Event) -> i64 {
    event.occur_time.as_ref().map_or_else(now_micros, micros_of)
}

/// Queues what a batch of events changes, in one statement; at most 1,000
/// rows a statement, within both engines' limits on bound parameters.
async fn push_all(queue: &Queue, events: &[Event], change: fn(&Event) -> Option<Change>) -> Result<(), EventError> {
    let changes: Vec<(Change, i64)> = events.iter().filter_map(|e| change(e).map(|c| (c, event_time(e)))).collect();
    for chunk in changes.chunks(1_000) {
        queue.push(chunk).await.map_err(|e| EventError::Consumer(e.to_string()))?;
    }
    Ok(())
}

/// Consumes `message.events` into the queue.
pub struct MessageIndexer(pub Queue);

fn message_change(event: &Event) -> Option<Change> {
    let Some(Payload::MessageChanged(m)) = &event.payload else { return None };
    match event.r#type.as_str() {
        "message.created" | "message.updated" => Some(Change::Message(MessageDoc {
            message_id: m.message_id.clone(),
            channel_id: m.channel_id.clone(),
            sender_id: m.sender_id.clone(),
            thread_id: m.thread_id.clone(),
            text: m.text.clone(),
            has_file: !m.file_ids.is_empty(),
        })),
        "message.deleted" | "message.recalled" => Some(Change::RemoveMessage(m.message_id.clone())),
        _ => None,
    }
}

#[async_trait::async_trait]
impl EventHandler for MessageIndexer {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        push_all(&self.0, std::slice::from_ref(event), message_change).await
    }

    async fn handle_batch(&self, events: &[Event]) -> Result<(), EventError> {
        push_all(&self.0, events, message_change).await
    }
}

/// Consumes `user.events` into the queue: names as they are registered and
/// changed.
pub struct UserIndexer(pub Queue);

fn user_change(event: &Event) -> Option<Change> {
    match &event.payload {
        Some(Payload::UserCreated(u) | Payload::UserUpdated(u)) => Some(Change::User(UserDoc {
            user_id: u.user_id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
        })),
        _ => None,
    }
}

#[async_trait::async_trait]
impl EventHandler for UserIndexer {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        push_all(&self.0, std::slice::from_ref(event), user_change).await
    }

    async fn handle_batch(&self, events: &[Event]) -> Result<(), EventError> {
        push_all(&self.0, events, user_change).await
    }
}
