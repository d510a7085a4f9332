//! The distributed event log: Kafka through librdkafka.
//!
//! Publishing goes through an idempotent producer (`acks=all`, no duplicates
//! from the producer's own retries, order kept per partition), and the outbox
//! relay deletes a row only after the broker acknowledged it. Consumers commit
//! an offset only after their handler applied the event, so a crash replays
//! events rather than dropping them; handlers drop the repeats by event id.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use colink_proto::events::v1::Event;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::watch;
use tracing::Instrument;

use super::{EventError, EventHandler, EventLog, Outgoing};
use crate::metrics::{ConsumerLag, Metrics};
use crate::telemetry::TRACEPARENT_HEADER;

/// How long the producer keeps trying one event before the relay sees the
/// failure and tries again later from the outbox.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a consumer's client reports its lag.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

pub struct KafkaEventLog {
    brokers: String,
    prefix: String,
    producer: FutureProducer,
    topics_ready: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

impl KafkaEventLog {
    /// Creates the producer and starts making sure `topics` exist (with
    /// `partitions` partitions); neither waits for the broker, so a node
    /// starts while Kafka is down and its events wait in the outboxes.
    pub fn connect(
        url: &str,
        prefix: &str,
        partitions: i32,
        topics: &[&str],
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, EventError> {
        let brokers = url.strip_prefix("kafka://").unwrap_or(url).trim_end_matches('/').to_string();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("client.id", "colink")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(unavailable)?;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().map_err(unavailable)?;
        let names: Vec<String> = topics.iter().map(|t| format!("{prefix}{t}")).collect();
        let (ready_tx, topics_ready) = watch::channel(false);
        tokio::spawn(ensure_topics(admin, names, partitions, ready_tx, shutdown.clone()));
        Ok(Self { brokers, prefix: prefix.to_string(), producer, topics_ready, shutdown, metrics })
    }

    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

#[async_trait::async_trait]
impl EventLog for KafkaEventLog {
    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<(), EventError> {
        let traceparent = crate::telemetry::current_traceparent();
        let outgoing = [Outgoing { topic: topic.to_string(), key: key.to_string(), payload, traceparent }];
        match self.publish_batch(&outgoing).await {
            (1, _) => Ok(()),
            (_, err) => Err(err.unwrap_or_else(|| EventError::Unavailable("event not acknowledged".into()))),
        }
    }

    /// Hands the whole batch to the producer before waiting, so one round
    /// trip carries many events; counts the acknowledged prefix.
    async fn publish_batch(&self, events: &[Outgoing]) -> (usize, Option<EventError>) {
        if !*self.topics_ready.borrow() {
            return (0, Some(EventError::Unavailable("topics are not created yet".into())));
        }
        let topics: Vec<String> = events.iter().map(|e| self.topic(&e.topic)).collect();
        let mut pending = Vec::with_capacity(events.len());
        for (event, topic) in events.iter().zip(&topics) {
            let mut record = FutureRecord::to(topic).key(event.key.as_str()).payload(event.payload.as_ref());
            if !event.traceparent.is_empty() {
                let header = Header { key: TRACEPARENT_HEADER, value: Some(event.traceparent.as_str()) };
                record = record.headers(OwnedHeaders::new_with_capacity(1).insert(header));
            }
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(delivery),
                // The local queue is full: send what was queued and come back.
                Err((err, _)) => {
                    if pending.is_empty() {
                        return (0, Some(unavailable(err)));
                    }
                    break;
                }
            }
        }
        let mut acknowledged = 0;
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => acknowledged += 1,
                Ok(Err((err, _))) => return (acknowledged, Some(unavailable(err))),
                Err(_) => return (acknowledged, Some(EventError::Unavailable("producer closed".into()))),
            }
        }
        (acknowledged, None)
    }

    /// Asks a broker for the cluster's metadata (on a thread of its own:
    /// librdkafka blocks while it waits).
    async fn reachable(&self, patience: Duration) -> Result<(), EventError> {
        let producer = self.producer.clone();
        let asked = tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, patience).map(|_| ()));
        match asked.await {
            Ok(answer) => answer.map_err(unavailable),
            Err(err) => Err(EventError::Unavailable(err.to_string())),
        }
    }

    fn subscribe(&self, topic: &str, group: &str, handler: Arc<dyn EventHandler>) {
        // A group per topic: a consumer of several topics rebalances each
        // on its own.
        let group_id = format!("{}{group}.{topic}", self.prefix);
        let lag = ConsumerLag { topic: topic.to_string(), group: group.to_string(), lag: Arc::new(AtomicI64::new(0)) };
        self.metrics.watch_consumer(lag.clone());
        let reporter = LagReporter { topic: self.topic(topic), lag: lag.lag };
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group_id)
            .set("client.id", "colink")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string())
            .create_with_context::<_, StreamConsumer<LagReporter>>(reporter);
        let topic = self.topic(topic);
        match consumer {
            Ok(consumer) => {
                tokio::spawn(consume(consumer, topic, handler, self.topics_ready.clone(), self.shutdown.clone()));
            }
            Err(err) => tracing::error!(%topic, group, error = %err, "cannot create Kafka consumer"),
        }
    }
}

/// Creates the topics that are missing, retrying until the broker answers.
async fn ensure_topics(
    admin: AdminClient<DefaultClientContext>,
    names: Vec<String>,
    partitions: i32,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut backoff = Duration::from_millis(200);
    loop {
        let wanted: Vec<NewTopic<'_>> =
            names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
        match admin.create_topics(&wanted, &options).await {
            Ok(results) => {
                let failed: Vec<String> = results
                    .into_iter()
                    .filter_map(|r| match r {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                        Err((name, code)) => Some(format!("{name}: {code}")),
                    })
                    .collect();
                if failed.is_empty() {
                    ready.send_replace(true);
                    tracing::info!(topics = ?names, "Kafka topics ready");
                    return;
                }
                tracing::warn!(?failed, "cannot create Kafka topics; retrying");
            }
            Err(err) => tracing::warn!(error = %err, "Kafka unreachable; retrying topic creation"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}

/// Applies a topic's events in order. An event is committed only once its
/// handler succeeded; a failing handler is retried, holding back the events
/// behind it in the partition rather than skipping any.
/// Keeps a consumer group's lag on its topic, from its client's statistics:
/// the sum over the partitions it holds of the events between its position
/// and the end.
struct LagReporter {
    topic: String,
    lag: Arc<AtomicI64>,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        // Partition -1 is librdkafka's own bookkeeping; -1 lag is unknown.
        let lag: i64 = topic.partitions.iter().filter(|(id, _)| **id >= 0).map(|(_, p)| p.consumer_lag.max(0)).sum();
        self.lag.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for LagReporter {}

async fn consume(
    consumer: StreamConsumer<LagReporter>,
    topic: String,
    handler: Arc<dyn EventHandler>,
    mut topics_ready: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let closing = CloseAside(Some(consumer));
    let Some(consumer) = closing.0.as_ref() else { return };
    tokio::select! {
        ready = topics_ready.wait_for(|r| *r) => if ready.is_err() { return },
        _ = shutdown.wait_for(|s| *s) => return,
    }
    if let Err(err) = consumer.subscribe(&[&topic]) {
        tracing::error!(%topic, error = %err, "cannot subscribe to Kafka topic");
        return;
    }
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(%topic, error = %err, "Kafka consumer error");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        };
        match Event::decode(message.payload().unwrap_or_default()) {
            Ok(event) => {
                let span = super::consumer_span(&topic, traceparent_of(&message).unwrap_or(&event.traceparent));
                let mut backoff = Duration::from_millis(100);
                while let Err(err) = handler.handle(&event).instrument(span.clone()).await {
                    tracing::warn!(%topic, event_id = %event.event_id, error = %err, "event handler failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
            // Nothing will ever decode it; holding the partition forever
            // would stop every later event.
            Err(err) => tracing::error!(
                %topic,
                partition = message.partition(),
                offset = message.offset(),
                error = %err,
                "skipping an event that does not decode"
            ),
        }
        if let Err(err) = consumer.commit_message(&message, CommitMode::Async) {
            tracing::warn!(%topic, error = %err, "cannot commit Kafka offset; the event may be applied again");
        }
    }
}

/// Drops a consumer on a thread of its own, however its task ends (returned,
/// or dropped with the runtime). Dropping one leaves its group, and
/// librdkafka waits for the broker to answer that, forever while the broker
/// is down: on the runtime's thread, that would hang the node's shutdown.
struct CloseAside(Option<StreamConsumer<LagReporter>>);

impl Drop for CloseAside {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let closing = std::thread::Builder::new().name("kafka-close".into()).spawn(move || drop(consumer));
            if let Err(err) = closing {
                tracing::warn!(error = %err, "cannot close the Kafka consumer aside; closing it here");
            }
        }
    }
}

/// The trace context a record carries in its headers.
fn traceparent_of<'a>(message: &'a BorrowedMessage<'_>) -> Option<&'a str> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == TRACEPARENT_HEADER).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

fn unavailable(err: KafkaError) -> EventError {
    EventError::Unavailable(err.to_string())
}
