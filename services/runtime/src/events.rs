//! Domain events through a transactional outbox.
//!
//! A service writes its events to its `outbox` table in the same transaction
//! as the change they describe. A relay task publishes them to the event log
//! in order and deletes them once the log has accepted them, so a crash or a
//! broker outage delays events but never loses one. Consumers may see an
//! event more than once and drop repeats by event id (`mark_processed`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use colink_proto::events::v1::Event;
use prost::Message;
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, StatementBuilder};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::db::Db;
use crate::ids::now_micros;

pub mod kafka;

pub use kafka::KafkaEventLog;

pub const USER_EVENTS: &str = "user.events";
pub const CHANNEL_EVENTS: &str = "channel.events";
pub const MESSAGE_EVENTS: &str = "message.events";
pub const THREAD_EVENTS: &str = "thread.events";
pub const REACTION_EVENTS: &str = "reaction.events";
pub const PRESENCE_EVENTS: &str = "presence.events";
pub const FILE_EVENTS: &str = "file.events";
pub const AUDIT_EVENTS: &str = "audit.events";
/// Every topic a Colink deployment uses.
pub const TOPICS: &[&str] = &[
    USER_EVENTS,
    CHANNEL_EVENTS,
    MESSAGE_EVENTS,
    THREAD_EVENTS,
    REACTION_EVENTS,
    PRESENCE_EVENTS,
    FILE_EVENTS,
    AUDIT_EVENTS,
];

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event could not be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("consumer failed: {0}")]
    Consumer(String),
}

/// Applies events of one topic. Must be idempotent by event id.
#[async_trait::async_trait]
pub trait EventHandler: Send + Sync + 'static {
    async fn handle(&self, event: &Event) -> Result<(), EventError>;

    /// Applies several events of the topic, in order. A consumer that can
    /// write them at once (one transaction for many) says so here.
    async fn handle_batch(&self, events: &[Event]) -> Result<(), EventError> {
        for event in events {
            self.handle(event).await?;
        }
        Ok(())
    }
}

/// Where committed events go: Kafka in the distributed deployment, direct
/// dispatch to in-process consumers in the embedded one.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Accepts an encoded `Event`; Ok means it will reach every consumer.
    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<(), EventError>;
    /// Publishes events in order; returns how many were accepted (a prefix
    /// of the batch) and the error that stopped the rest, if any.
    async fn publish_batch(&self, events: &[Outgoing]) -> (usize, Option<EventError>) {
        for (done, event) in events.iter().enumerate() {
            if let Err(err) = self.publish(&event.topic, &event.key, event.payload.clone()).await {
                return (done, Some(err));
            }
        }
        (events.len(), None)
    }
    /// Starts delivering the topic's events to a consumer group.
    fn subscribe(&self, topic: &str, group: &str, handler: Arc<dyn EventHandler>);
    /// Whether the log answers within `patience` (the in-process one
    /// always does).
    async fn reachable(&self, _patience: Duration) -> Result<(), EventError> {
        Ok(())
    }
    /// Every consumer this node hosts has subscribed. A log that keeps
    /// events for consumers yet to come (Kafka) has nothing to do here.
    fn all_subscribed(&self) {}
}

/// One event on its way from an outbox to the log.
pub struct Outgoing {
    pub topic: String,
    pub key: String,
    pub payload: Bytes,
    /// The trace context its consumers continue (the relay's span), empty
    /// when traces are off.
    pub traceparent: String,
}

/// The embedded event log: publishing hands the event to every consumer of
/// the topic in this process and succeeds once they have all applied it.
///
/// It keeps nothing, so an event published before its consumers subscribe
/// would reach none of them. A node's relays start with its services, one
/// by one, and find events a previous run left in the outboxes; a node's
/// log is therefore [`InProcessEventLog::gated`]: publishing waits until
/// the node has subscribed every consumer.
pub struct InProcessEventLog {
    handlers: RwLock<HashMap<String, Vec<Arc<dyn EventHandler>>>>,
    subscribed: watch::Sender<bool>,
}

impl Default for InProcessEventLog {
    /// A log that publishes at once, to the consumers subscribed so far.
    fn default() -> Self {
        Self { handlers: RwLock::default(), subscribed: watch::Sender::new(true) }
    }
}

impl InProcessEventLog {
    /// A log that holds every publish until [`EventLog::all_subscribed`].
    pub fn gated() -> Self {
        Self { subscribed: watch::Sender::new(false), ..Self::default() }
    }

    async fn consumers_subscribed(&self) {
        if *self.subscribed.borrow() {
            return;
        }
        // The sender lives as long as the log, so the wait ends only when
        // the gate opens.
        let _ = self.subscribed.subscribe().wait_for(|subscribed| *subscribed).await;
    }

    fn handlers(&self, topic: &str) -> Result<Vec<Arc<dyn EventHandler>>, EventError> {
        match self.handlers.read() {
            Ok(map) => Ok(map.get(topic).cloned().unwrap_or_default()),
            Err(_) => Err(EventError::Unavailable("handler registry poisoned".into())),
        }
    }
}

#[async_trait::async_trait]
impl EventLog for InProcessEventLog {
    async fn publish(&self, topic: &str, _key: &str, payload: Bytes) -> Result<(), EventError> {
        self.consumers_subscribed().await;
        let handlers = self.handlers(topic)?;
        if handlers.is_empty() {
            return Ok(());
        }
        let event = Event::decode(payload)?;
        for handler in handlers {
            handler.handle(&event).await?;
        }
        Ok(())
    }

    /// Hands each consumer the batch's events of its topic at once, in
    /// order. All or nothing: on a failure the whole batch is published
    /// again, which consumers, idempotent by event id, take in their stride.
    async fn publish_batch(&self, events: &[Outgoing]) -> (usize, Option<EventError>) {
        self.consumers_subscribed().await;
        let mut by_topic: Vec<(&str, Vec<Event>)> = Vec::new();
        for outgoing in events {
            let event = match Event::decode(outgoing.payload.clone()) {
                Ok(event) => event,
                Err(err) => return (0, Some(err.into())),
            };
            match by_topic.iter_mut().find(|(topic, _)| *topic == outgoing.topic) {
                Some((_, list)) => list.push(event),
                None => by_topic.push((&outgoing.topic, vec![event])),
            }
        }
        for (topic, list) in &by_topic {
            let handlers = match self.handlers(topic) {
                Ok(handlers) => handlers,
                Err(err) => return (0, Some(err)),
            };
            // A batch is applied at once: its span continues the trace of
            // its first event.
            let parent = events.iter().find(|e| e.topic == *topic).map_or("", |e| e.traceparent.as_str());
            let span = consumer_span(topic, parent);
            for handler in handlers {
                if let Err(err) = handler.handle_batch(list).instrument(span.clone()).await {
                    return (0, Some(err));
                }
            }
        }
        (events.len(), None)
    }

    fn subscribe(&self, topic: &str, _group: &str, handler: Arc<dyn EventHandler>) {
        if let Ok(mut map) = self.handlers.write() {
            map.entry(topic.to_string()).or_default().push(handler);
        }
    }

    fn all_subscribed(&self) {
        self.subscribed.send_replace(true);
    }
}

/// The span of a consumer applying events of `topic`, in the trace that
/// `traceparent` names (none when traces are off).
pub fn consumer_span(topic: &str, traceparent: &str) -> tracing::Span {
    if !crate::telemetry::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("event.consume", topic, otel.kind = "consumer");
    crate::telemetry::continue_trace_from(&span, traceparent);
    span
}

/// Where a change came from: the request (id and client address) and the
/// trace that made it. Taken in the handler when another task (a batch
/// writer) builds the change's events.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    request_id: String,
    client_ip: String,
    traceparent: String,
}

impl Origin {
    /// The request being handled, and its trace.
    pub fn current() -> Self {
        let context = crate::request_context::RequestContext::current().unwrap_or_default();
        Self {
            request_id: context.request_id.to_string(),
            client_ip: context.client_ip.to_string(),
            traceparent: crate::telemetry::current_traceparent(),
        }
    }
}

/// Builds an event envelope for a change the current request made.
pub fn event(kind: &str, actor_id: &str, payload: colink_proto::events::v1::event::Payload) -> Event {
    event_from(&Origin::current(), kind, actor_id, payload)
}

/// Builds an event envelope for a change `origin` made.
pub fn event_from(
    origin: &Origin,
    kind: &str,
    actor_id: &str,
    payload: colink_proto::events::v1::event::Payload,
) -> Event {
    Event {
        event_id: crate::ids::new_id(),
        r#type: kind.to_string(),
        occur_time: Some(crate::ids::timestamp(now_micros())),
        actor_id: actor_id.to_string(),
        request_id: origin.request_id.clone(),
        client_ip: origin.client_ip.clone(),
        traceparent: origin.traceparent.clone(),
        payload: Some(payload),
    }
}

/// Writes an event to the outbox; call inside the transaction of the change.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, topic: &str, key: &str, event: &Event) -> Result<(), DbErr> {
    insert_outbox(conn, [(topic, key, event)]).await
}

/// An event for `enqueue_many`.
pub struct NewEvent {
    pub topic: &'static str,
    pub key: String,
    pub event: Event,
}

/// Writes several events to the outbox in one statement, in order.
pub async fn enqueue_many<C: ConnectionTrait>(conn: &C, events: &[NewEvent]) -> Result<(), DbErr> {
    insert_outbox(conn, events.iter().map(|e| (e.topic, e.key.as_str(), &e.event))).await
}

/// The statement `enqueue_many` runs, to run with others; None for no events.
pub fn enqueue_statement(backend: sea_orm::DbBackend, events: &[NewEvent]) -> Option<sea_orm::Statement> {
    build_outbox_insert(events.iter().map(|e| (e.topic, e.key.as_str(), &e.event)))
        .map(|insert| StatementBuilder::build(&insert, &backend))
}

async fn insert_outbox<'a, C: ConnectionTrait>(
    conn: &C,
    events: impl IntoIterator<Item = (&'a str, &'a str, &'a Event)>,
) -> Result<(), DbErr> {
    if let Some(insert) = build_outbox_insert(events) {
        conn.execute(&insert).await?;
    }
    Ok(())
}

/// The outbox insert of `events`, in order; None for no events.
fn build_outbox_insert<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a str, &'a Event)>,
) -> Option<sea_orm::sea_query::InsertStatement> {
    let now = now_micros();
    let mut insert = Query::insert();
    insert.into_table("outbox").columns(["topic", "event_key", "payload", "created_at"]);
    let mut empty = true;
    for (topic, key, event) in events {
        insert.values_panic([topic.into(), key.into(), event.encode_to_vec().into(), now.into()]);
        empty = false;
    }
    (!empty).then_some(insert)
}

/// Records that a consumer applied an event; false if it already had. Call
/// inside the consumer's transaction so the mark and the effect commit together.
pub async fn mark_processed<C: ConnectionTrait>(conn: &C, event_id: &str) -> Result<bool, DbErr> {
    let insert = Query::insert()
        .into_table("processed_events")
        .columns(["event_id", "processed_at"])
        .values_panic([event_id.into(), now_micros().into()])
        .on_conflict(OnConflict::column("event_id").do_nothing().to_owned())
        .to_owned();
    let result = conn.execute(&insert).await?;
    Ok(result.rows_affected() == 1)
}

#[derive(FromQueryResult)]
struct OutboxRow {
    id: i64,
    topic: String,
    event_key: String,
    payload: Vec<u8>,
}

/// The least time from the start of one relay batch to the start of the
/// next while events trickle in. Each batch costs a read, a call to every
/// consumer (each with a transaction of its own) and a delete, so a lone
/// sender's events would otherwise cost all of that each; a few
/// milliseconds of gathering lets them share it. Live subscribers do not
/// wait for the relay: they get a conversation's events at commit.
const RELAY_SPACING: Duration = Duration::from_millis(5);

/// A service's outbox: wake the relay after committing events.
#[derive(Clone)]
pub struct Outbox {
    wake: Arc<Notify>,
    /// Wakes the relay without waiting out the spacing, for a flush.
    hurry: Arc<Notify>,
    /// Last outbox id the relay published; a change wakes waiting flushes.
    published: watch::Receiver<i64>,
}

impl Outbox {
    /// Tells the relay there is something to publish.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Waits until everything committed so far has been published, or the
    /// timeout passes. For read-your-writes across services where it matters.
    pub async fn flush(&self, db: &Db, timeout: Duration) -> Result<bool, DbErr> {
        #[derive(FromQueryResult)]
        struct Scalar {
            value: Option<i64>,
        }
        let backend = db.writer.get_database_backend();
        let query = Query::select().expr_as(Func::max(Expr::col("id")), "value").from("outbox").to_owned();
        let row = Scalar::find_by_statement(StatementBuilder::build(&query, &backend)).one(&db.writer).await?;
        let Some(target) = row.and_then(|r| r.value) else { return Ok(true) };
        self.notify();
        self.hurry.notify_one();
        let mut published = self.published.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = if backend == DbBackend::Sqlite {
                // One writer: ids commit in order, and the relay's mark says
                // how far it has published (rows stay a while after that).
                *published.borrow() >= target
            } else {
                // Counting rows rather than comparing with the relay's last
                // id: on PostgreSQL ids commit out of order, and another
                // node's relay may have published these rows already.
                let pending = Query::select()
                    .expr_as(Expr::col("id").count(), "value")
                    .from("outbox")
                    .and_where(Expr::col("id").lte(target))
                    .to_owned();
                let left =
                    Scalar::find_by_statement(StatementBuilder::build(&pending, &backend)).one(&db.writer).await?;
                left.and_then(|r| r.value).unwrap_or(0) == 0
            };
            if done {
                return Ok(true);
            }
            let wait = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    _ = published.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                }
            });
            if wait.await.is_err() {
                return Ok(false);
            }
        }
    }
}

/// Starts the relay of a service's outbox; it runs until `shutdown` fires,
/// then publishes what is left (bounded by the caller's grace period).
pub fn spawn_relay(
    service: &'static str,
    db: Db,
    log: Arc<dyn EventLog>,
    mut shutdown: watch::Receiver<bool>,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let wake = Arc::new(Notify::new());
    let hurry = Arc::new(Notify::new());
    let (published_tx, published_rx) = watch::channel(0_i64);
    let outbox = Outbox { wake: wake.clone(), hurry: hurry.clone(), published: published_rx };
    let task = tokio::spawn(async move {
        let mut relay = Relay::new(db, log);
        let mut backoff = Duration::from_millis(50);
        loop {
            let began = tokio::time::Instant::now();
            match relay.publish_next().await {
                Ok(Some(last_id)) => {
                    backoff = Duration::from_millis(50);
                    published_tx.send_replace(last_id);
                    if let Err(err) = relay.tidy(false).await {
                        tracing::warn!(service, error = %err, "published events not deleted from the outbox");
                    }
                    // Let the next events gather, unless a flush waits or
                    // the node stops.
                    tokio::select! {
                        _ = tokio::time::sleep_until(began + RELAY_SPACING) => {}
                        _ = hurry.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Ok(None) => {
                    backoff = Duration::from_millis(50);
                    if let Err(err) = relay.tidy(true).await {
                        tracing::warn!(service, error = %err, "published events not deleted from the outbox");
                    }
                }
                Err(err) => {
                    tracing::warn!(service, error = %err, "outbox relay failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
        }
    });
    (outbox, task)
}

/// How long published rows may wait in a SQLite outbox while events keep
/// coming. Deleting them is a transaction (and an fsync) of its own on the
/// one writer connection, which the service's next write waits for: once per
/// relay batch, that was once every few sends.
const TIDY_EVERY: Duration = Duration::from_millis(250);

/// The relay's position in its outbox.
struct Relay {
    db: Db,
    log: Arc<dyn EventLog>,
    /// SQLite: rows are read past the published mark and deleted later in
    /// bulk. PostgreSQL, where ids commit out of order and other nodes'
    /// relays read the same table: each batch's rows are deleted at once.
    deletes_later: bool,
    published_through: i64,
    deleted_through: i64,
    tidied_at: tokio::time::Instant,
}

impl Relay {
    fn new(db: Db, log: Arc<dyn EventLog>) -> Self {
        let deletes_later = db.writer.get_database_backend() == DbBackend::Sqlite;
        Self {
            db,
            log,
            deletes_later,
            published_through: 0,
            deleted_through: 0,
            tidied_at: tokio::time::Instant::now(),
        }
    }

    /// Publishes the next batch; returns the last published id, or None
    /// when nothing waited.
    async fn publish_next(&mut self) -> Result<Option<i64>, String> {
        let after = self.deletes_later.then_some(self.published_through);
        let last = relay_batch(&self.db, self.log.as_ref(), after).await?;
        if let Some(last) = last.filter(|_| self.deletes_later) {
            self.published_through = last;
            self.db.relayed.store(last, Ordering::Relaxed);
        }
        Ok(last)
    }

    /// Deletes the published rows that are still there, when the outbox
    /// went quiet (`idle`) or they have waited long enough.
    async fn tidy(&mut self, idle: bool) -> Result<(), String> {
        if self.deleted_through >= self.published_through || !(idle || self.tidied_at.elapsed() >= TIDY_EVERY) {
            return Ok(());
        }
        let through = self.published_through;
        let delete = Query::delete().from_table("outbox").and_where(Expr::col("id").lte(through)).to_owned();
        self.db.writer.execute(&delete).await.map_err(|e| e.to_string())?;
        self.deleted_through = through;
        self.tidied_at = tokio::time::Instant::now();
        Ok(())
    }
}

/// Opens a relay span per event that names a trace, and hands the span's
/// context on to the event's consumers.
fn relay_spans(batch: &mut [Outgoing]) -> Vec<tracing::Span> {
    if !crate::telemetry::exporting() {
        return Vec::new();
    }
    let mut spans = Vec::new();
    for outgoing in batch {
        let Ok(event) = Event::decode(outgoing.payload.clone()) else { continue };
        if event.traceparent.is_empty() {
            continue;
        }
        let span =
            tracing::info_span!("outbox.relay", topic = %outgoing.topic, event = %event.r#type, otel.kind = "producer");
        crate::telemetry::continue_trace_from(&span, &event.traceparent);
        outgoing.traceparent = span.in_scope(crate::telemetry::current_traceparent);
        spans.push(span);
    }
    spans
}

/// Publishes one batch in order, of the rows past `after` if given; returns
/// the last published id, or None when there was nothing to publish. Without
/// `after`, the published rows are deleted at once.
async fn relay_batch(db: &Db, log: &dyn EventLog, after: Option<i64>) -> Result<Option<i64>, String> {
    let mut query = Query::select()
        .columns(["id", "topic", "event_key", "payload"])
        .from("outbox")
        .order_by("id", sea_orm::Order::Asc)
        .limit(256)
        .to_owned();
    if let Some(after) = after {
        query.and_where(Expr::col("id").gt(after));
    }
    // Read beside the writer: on SQLite the writer connection is the one
    // the service's own transactions wait for.
    let backend = db.reader.get_database_backend();
    let rows = OutboxRow::find_by_statement(StatementBuilder::build(&query, &backend))
        .all(&db.reader)
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut batch: Vec<Outgoing> = rows
        .into_iter()
        .map(|r| Outgoing {
            topic: r.topic,
            key: r.event_key,
            payload: Bytes::from(r.payload),
            traceparent: String::new(),
        })
        .collect();
    // With traces on, each event's relay is a span in the trace of the
    // request that made it, open until the log accepts the event.
    let _relay_spans = relay_spans(&mut batch);
    let (published, failure) = log.publish_batch(&batch).await;
    let failure = failure.map(|e| e.to_string());
    let last = published.checked_sub(1).and_then(|i| ids.get(i)).copied();
    if last.is_some() && after.is_none() {
        // Exactly the rows sent: a lower id may have committed after the read.
        let sent = ids.iter().take(published).copied();
        let delete = Query::delete().from_table("outbox").and_where(Expr::col("id").is_in(sent)).to_owned();
        db.writer.execute(&delete).await.map_err(|e| e.to_string())?;
    }
    match failure {
        Some(err) if last.is_none() => Err(err),
        _ => Ok(last),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use colink_proto::events::v1::UserCreated;
    use colink_proto::events::v1::event::Payload;
    use sea_orm::Database;

    use super::*;

    /// Keeps the ids of the events it is handed.
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl EventHandler for Recorder {
        async fn handle(&self, event: &Event) -> Result<(), EventError> {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(event.event_id.clone());
            }
            Ok(())
        }
    }

    async fn outbox_rows(db: &Db) -> i64 {
        let rows = db
            .reader
            .query_all_raw(sea_orm::Statement::from_string(DbBackend::Sqlite, "SELECT count(*) FROM outbox"))
            .await
            .expect("counts");
        rows.first().and_then(|row| row.try_get_by_index::<i64>(0).ok()).unwrap_or(-1)
    }

    #[tokio::test]
    async fn a_gated_log_holds_events_until_every_consumer_has_subscribed() {
        let log = Arc::new(InProcessEventLog::gated());
        let event = event("user.created", "u", Payload::UserCreated(UserCreated::default()));
        let payload = Bytes::from(event.encode_to_vec());
        let publishing = tokio::spawn({
            let log = log.clone();
            async move { log.publish(USER_EVENTS, "u", payload).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publishing.is_finished(), "no consumer has subscribed yet");
        // A relay at start finds an event before the consumers are wired.
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        log.subscribe(USER_EVENTS, "test", recorder.clone());
        log.all_subscribed();
        publishing.await.expect("joins").expect("publishes");
        let seen = recorder.0.lock().map(|seen| seen.clone()).unwrap_or_default();
        assert_eq!(seen, [event.event_id], "the consumer subscribed after the publish began has it");
    }

    #[tokio::test]
    async fn on_sqlite_each_event_is_published_once_and_deleted_when_the_outbox_goes_quiet() {
        let conn = Database::connect("sqlite::memory:").await.expect("opens");
        conn.execute_unprepared(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, \
             event_key TEXT NOT NULL, payload BLOB NOT NULL, created_at INTEGER NOT NULL)",
        )
        .await
        .expect("creates");
        let db = Db::new(conn.clone(), conn);
        let log = Arc::new(InProcessEventLog::default());
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        log.subscribe(USER_EVENTS, "test", recorder.clone());
        let (stop, stopped) = watch::channel(false);
        let (outbox, relay) = spawn_relay("test", db.clone(), log, stopped);

        let mut enqueued = Vec::new();
        for round in 0..3 {
            for _ in 0..4 {
                let event = event("user.created", "u", Payload::UserCreated(UserCreated::default()));
                enqueue(&db.writer, USER_EVENTS, "u", &event).await.expect("enqueues");
                enqueued.push(event.event_id);
            }
            outbox.notify();
            assert!(outbox.flush(&db, Duration::from_secs(5)).await.expect("flushes"), "round {round}");
        }
        let seen = recorder.0.lock().map(|seen| seen.clone()).unwrap_or_default();
        assert_eq!(seen, enqueued, "every event once, in order");

        // With nothing more to publish, the published rows go.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while outbox_rows(&db).await != 0 {
            assert!(tokio::time::Instant::now() < deadline, "the outbox still holds published rows");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(db.relayed.load(Ordering::Relaxed), 12);
        stop.send_replace(true);
        relay.await.expect("the relay ends");
    }
}
