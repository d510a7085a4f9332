//! The way from the event log into an index. A consumer writes each change
//! to `search_queue` before it acknowledges the event, and one indexer task
//! applies the queue in order and deletes what the index has committed: a
//! restart, or an index that is down, delays indexing and loses nothing.
//! Events of one message arrive in order (they share a partition key), and
//! a redelivery repeats a suffix of them, so applying the queue again ends
//! in the same state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use colink_proto::events::v1::Event;
use colink_proto::events::v1::event::Payload;
use colink_runtime::db::Db;
use colink_runtime::events::{EventError, EventHandler};
use colink_runtime::ids::{micros_of, now_micros};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func, Query};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, StatementBuilder};
use tokio::sync::{Mutex, Notify, watch};

use crate::index::{Change, FileDoc, FileFacts, MessageDoc, SearchIndex, UserDoc};

const TABLE: &str = "search_queue";
/// Changes applied in one index commit at most.
pub(crate) const BATCH: u64 = 4096;
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
    /// Held while a batch goes into the live index, so that a rebuilt index
    /// takes over between two batches.
    applying: Arc<Mutex<()>>,
    /// A rebuild runs: applied changes stay until it has them too.
    retaining: Arc<AtomicBool>,
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

fn decode(rows: Vec<Row>) -> Vec<Change> {
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        match serde_json::from_slice::<Change>(&row.change) {
            Ok(change) => changes.push(change),
            // Written by this code, so only a newer version's change can
            // fail here: skipped rather than blocking the queue forever.
            Err(err) => tracing::error!(id = row.id, error = %err, "unreadable search change skipped"),
        }
    }
    changes
}

impl Queue {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            wake: Arc::new(Notify::new()),
            lag: Arc::new(AtomicI64::new(0)),
            applying: Arc::new(Mutex::new(())),
            retaining: Arc::new(AtomicBool::new(false)),
        }
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

    /// Up to a batch of the changes `wanted` picks, oldest first.
    async fn peek(&self, wanted: Condition) -> Result<Vec<Row>, DbErr> {
        let query = Query::select()
            .columns(["id", "change", "event_time"])
            .from(TABLE)
            .cond_where(wanted)
            .order_by("id", sea_orm::Order::Asc)
            .limit(BATCH)
            .to_owned();
        let backend = self.db.writer.get_database_backend();
        Row::find_by_statement(StatementBuilder::build(&query, &backend)).all(&self.db.writer).await
    }

    /// Sets `flag` on these changes, and removes those that no index needs
    /// any more. Exactly these ids: on PostgreSQL a change with a smaller id
    /// may commit after a larger one was read.
    async fn mark(&self, ids: &[i64], flag: &'static str) -> Result<(), DbErr> {
        for chunk in ids.chunks(1_000) {
            let chunk = chunk.to_vec();
            if self.retaining.load(Ordering::SeqCst) {
                let update = Query::update()
                    .table(TABLE)
                    .value(flag, true)
                    .and_where(Expr::col("id").is_in(chunk.clone()))
                    .to_owned();
                self.db.writer.execute(&update).await?;
                let done = Query::delete()
                    .from_table(TABLE)
                    .and_where(Expr::col("id").is_in(chunk))
                    .and_where(Expr::col("applied").eq(true))
                    .and_where(Expr::col("replayed").eq(true))
                    .to_owned();
                self.db.writer.execute(&done).await?;
            } else {
                let delete = Query::delete().from_table(TABLE).and_where(Expr::col("id").is_in(chunk)).to_owned();
                self.db.writer.execute(&delete).await?;
            }
        }
        Ok(())
    }

    /// How many changes wait for the live index.
    pub async fn depth(&self) -> Result<i64, DbErr> {
        let query = Query::select()
            .expr_as(Func::count(Expr::col("id")), "value")
            .from(TABLE)
            .and_where(Expr::col("applied").eq(false))
            .to_owned();
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
            // Kept for a rebuild this node no longer runs.
            if let Err(err) = queue.stop_retaining().await {
                tracing::warn!(error = %err, "could not clear changes kept for an interrupted rebuild");
            }
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

    /// Applies one batch to the live index; false when none waited.
    async fn apply_batch(&self, index: &dyn SearchIndex) -> Result<bool, String> {
        let _applying = self.applying.lock().await;
        let rows = self.peek(Condition::all().add(Expr::col("applied").eq(false))).await.map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(false);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let oldest_event = rows.iter().map(|r| r.event_time).min().unwrap_or(0);
        index.apply(decode(rows)).await.map_err(|e| e.to_string())?;
        self.mark(&ids, "applied").await.map_err(|e| e.to_string())?;
        self.lag.store(now_micros() - oldest_event, Ordering::Relaxed);
        Ok(true)
    }

    /// From now on, applied changes stay until `replay` has given them to
    /// the index being rebuilt; every change waiting now will be replayed.
    pub(crate) async fn start_retaining(&self) -> Result<(), DbErr> {
        let _applying = self.applying.lock().await;
        let reset = Query::update().table(TABLE).value("replayed", false).to_owned();
        self.db.writer.execute(&reset).await?;
        self.retaining.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Applies up to a batch of the changes kept to the index being
    /// rebuilt; returns how many.
    pub(crate) async fn replay(&self, index: &dyn SearchIndex) -> Result<usize, String> {
        self.replay_where(index, Condition::all().add(Expr::col("replayed").eq(false))).await
    }

    async fn replay_where(&self, index: &dyn SearchIndex, wanted: Condition) -> Result<usize, String> {
        let rows = self.peek(wanted).await.map_err(|e| e.to_string())?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        if !ids.is_empty() {
            index.apply_rebuilt(decode(rows)).await.map_err(|e| e.to_string())?;
            self.mark(&ids, "replayed").await.map_err(|e| e.to_string())?;
        }
        Ok(ids.len())
    }

    /// Makes the rebuilt index the live one between two batches of the
    /// live indexer, once it has every change the live one has; returns
    /// how many changes that took. Changes the live index does not have
    /// yet need not wait: the live indexer applies them to the rebuilt
    /// index next. So this ends however fast changes arrive.
    pub(crate) async fn take_over(&self, index: &dyn SearchIndex) -> Result<usize, String> {
        let _applying = self.applying.lock().await;
        let missing = || Condition::all().add(Expr::col("applied").eq(true)).add(Expr::col("replayed").eq(false));
        let mut replayed = 0;
        loop {
            let n = self.replay_where(index, missing()).await?;
            replayed += n;
            if n == 0 {
                break;
            }
        }
        index.finish_rebuild().await.map_err(|e| e.to_string())?;
        self.forget_kept().await.map_err(|e| e.to_string())?;
        Ok(replayed)
    }

    /// Ends retaining without a rebuilt index, and drops what was kept.
    pub(crate) async fn stop_retaining(&self) -> Result<(), DbErr> {
        let _applying = self.applying.lock().await;
        self.forget_kept().await
    }

    async fn forget_kept(&self) -> Result<(), DbErr> {
        self.retaining.store(false, Ordering::SeqCst);
        let kept = Query::delete().from_table(TABLE).and_where(Expr::col("applied").eq(true)).to_owned();
        self.db.writer.execute(&kept).await?;
        Ok(())
    }
}

/// The time an event was committed, in microseconds.
fn event_time(event: &Event) -> i64 {
    event.occur_time.as_ref().map_or_else(now_micros, micros_of)
}

/// Queues what a batch of events changes, in one statement; at most 1,000
/// rows a statement, within both engines' limits on bound parameters.
async fn push_all<I: IntoIterator<Item = Change>>(
    queue: &Queue,
    events: &[Event],
    change: fn(&Event) -> I,
) -> Result<(), EventError> {
    let changes: Vec<(Change, i64)> =
        events.iter().flat_map(|e| change(e).into_iter().map(move |c| (c, event_time(e)))).collect();
    for chunk in changes.chunks(1_000) {
        queue.push(chunk).await.map_err(|e| EventError::Consumer(e.to_string()))?;
    }
    Ok(())
}

/// Consumes `message.events` into the queue.
pub struct MessageIndexer(pub Queue);

fn message_change(event: &Event) -> Vec<Change> {
    if let Some(Payload::MessagesExpired(expired)) = &event.payload {
        return expired.message_ids.iter().map(|id| Change::RemoveMessage(id.clone())).collect();
    }
    let Some(Payload::MessageChanged(m)) = &event.payload else { return Vec::new() };
    let change = match event.r#type.as_str() {
        "message.created" | "message.updated" | "message.restored" => Some(Change::Message(MessageDoc {
            message_id: m.message_id.clone(),
            channel_id: m.channel_id.clone(),
            sender_id: m.sender_id.clone(),
            thread_id: m.thread_id.clone(),
            text: m.text.clone(),
            has_file: !m.file_ids.is_empty(),
        })),
        "message.deleted" | "message.recalled" | "message.hidden" => Some(Change::RemoveMessage(m.message_id.clone())),
        _ => None,
    };
    change.into_iter().collect()
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

/// Consumes `file.events` into the queue: a file is searchable while it is
/// confirmed, not gone, and clean (or unscanned where nothing scans), each
/// event carrying who may see it then.
pub struct FileIndexer(pub Queue);

fn file_change(event: &Event) -> Option<Change> {
    let Some(Payload::FileChanged(f)) = &event.payload else { return None };
    let showable = f.state == "ready" && matches!(f.scan_status.as_str(), "clean" | "unscanned");
    if !showable {
        return Some(Change::RemoveFile(f.file_id.clone()));
    }
    Some(Change::File(FileDoc::from_facts(FileFacts {
        file_id: &f.file_id,
        owner_id: &f.owner_id,
        channel_id: &f.channel_id,
        access: &f.access,
        filename: &f.filename,
        description: &f.description,
        file_type: &f.file_type,
        attached_channel_ids: &f.attached_channel_ids,
        shared_with_user_ids: &f.shared_with_user_ids,
    })))
}

#[async_trait::async_trait]
impl EventHandler for FileIndexer {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        push_all(&self.0, std::slice::from_ref(event), file_change).await
    }

    async fn handle_batch(&self, events: &[Event]) -> Result<(), EventError> {
        push_all(&self.0, events, file_change).await
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

#[cfg(test)]
mod tests {
    use sea_orm::Database;
    use sea_orm_migration::MigratorTrait;

    use super::*;
    use crate::embedded::EmbeddedIndex;
    use crate::index::{MessageSearch, Order};
    use crate::query::parse;

    async fn queue() -> Queue {
        let conn = Database::connect("sqlite::memory:").await.expect("opens");
        colink_migrations::search::Migrator::up(&conn, None).await.expect("migrates");
        Queue::new(Db::new(conn.clone(), conn))
    }

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("colink-queue-test-{}", uuid::Uuid::now_v7().simple()))
    }

    fn message(id: &str, text: &str) -> (Change, i64) {
        let doc = MessageDoc {
            message_id: id.into(),
            channel_id: "c".into(),
            sender_id: "u".into(),
            thread_id: String::new(),
            text: text.into(),
            has_file: false,
        };
        (Change::Message(doc), now_micros())
    }

    async fn found(index: &EmbeddedIndex, word: &str) -> Vec<String> {
        let search = MessageSearch {
            query: parse(word, true).expect("parses"),
            channel_ids: vec!["c".into()],
            sender_ids: Vec::new(),
            thread_id: None,
            has_file: false,
            has_link: false,
            is_thread: false,
            after_ms: None,
            before_ms: None,
            order: Order::Oldest,
            after_key: None,
            limit: 10,
            stats: None,
        };
        index.search_messages(search).await.expect("searches").hits.into_iter().map(|h| h.id).collect()
    }

    async fn rows(queue: &Queue) -> i64 {
        let query = Query::select().expr_as(Func::count(Expr::col("id")), "value").from(TABLE).to_owned();
        let backend = queue.db.writer.get_database_backend();
        let row = Scalar::find_by_statement(StatementBuilder::build(&query, &backend)).one(&queue.db.writer).await;
        row.expect("counts").and_then(|r| r.value).unwrap_or(0)
    }

    #[tokio::test]
    async fn a_rebuilt_index_has_every_change_the_live_one_had_when_it_takes_over() {
        let queue = queue().await;
        let dir = temp_dir();
        let index = EmbeddedIndex::open(&dir).expect("opens");
        let [a, b, c] = [(); 3].map(|_| uuid::Uuid::now_v7().to_string());
        queue.push(&[message(&a, "apple")]).await.expect("queues");
        assert!(queue.apply_batch(&index).await.expect("applies"));

        index.begin_rebuild().await.expect("begins");
        queue.start_retaining().await.expect("retains");
        // While the rebuild reads, `a` is edited and `b` sent, and the live
        // index takes both; the rebuild read `a` before its edit.
        queue.push(&[message(&a, "apricot"), message(&b, "banana")]).await.expect("queues");
        assert!(queue.apply_batch(&index).await.expect("applies"));
        assert_eq!(found(&index, "apricot").await, std::slice::from_ref(&a));
        index.apply_rebuilt(vec![message(&a, "apple").0]).await.expect("applies to the rebuild");
        // Sent just before the take-over: the live index does not have it yet.
        queue.push(&[message(&c, "cherry")]).await.expect("queues");

        assert_eq!(queue.take_over(&index).await.expect("takes over"), 2);
        assert_eq!(found(&index, "apricot").await, std::slice::from_ref(&a));
        assert!(found(&index, "apple").await.is_empty());
        assert_eq!(found(&index, "banana").await, std::slice::from_ref(&b));
        assert!(found(&index, "cherry").await.is_empty());
        assert!(queue.apply_batch(&index).await.expect("applies"));
        assert_eq!(found(&index, "cherry").await, std::slice::from_ref(&c));
        assert_eq!(rows(&queue).await, 0, "nothing is kept once the rebuilt index is live");

        drop(index);
        let reopened = EmbeddedIndex::open(&dir).expect("reopens");
        assert_eq!(found(&reopened, "apricot").await, [a]);
        assert!(!dir.join("messages-v1").exists(), "the old generation is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_abandoned_rebuild_leaves_the_live_index_and_keeps_nothing() {
        let queue = queue().await;
        let dir = temp_dir();
        let index = EmbeddedIndex::open(&dir).expect("opens");
        let a = uuid::Uuid::now_v7().to_string();
        index.begin_rebuild().await.expect("begins");
        queue.start_retaining().await.expect("retains");
        queue.push(&[message(&a, "apple")]).await.expect("queues");
        assert!(queue.apply_batch(&index).await.expect("applies"));
        assert_eq!(rows(&queue).await, 1, "kept for the rebuild");
        index.abandon_rebuild().await.expect("abandons");
        queue.stop_retaining().await.expect("stops");
        assert_eq!(rows(&queue).await, 0);
        assert_eq!(found(&index, "apple").await, [a]);
        assert!(!dir.join("g1").exists());
        assert!(index.apply_rebuilt(Vec::new()).await.is_err(), "no rebuild to apply to");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
