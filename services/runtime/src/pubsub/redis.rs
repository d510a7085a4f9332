//! Pub/sub across nodes through Redis. Each node keeps one publishing
//! connection and one subscribing connection; local receivers of a topic
//! share one Redis subscription, as with the in-process implementation.
//!
//! When the subscribing connection drops, publishes made meanwhile are gone:
//! after reconnecting, every local topic gets a `Frame::Resync`, and streams
//! catch up from the store. Sending and reading messages never depend on
//! Redis being up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;

use super::{Frame, PubSub};

const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed publish, later ones are dropped for this long instead of
/// each waiting on a broken connection.
const PUBLISH_PAUSE: Duration = Duration::from_secs(1);
/// Publishes waiting for the publisher task; beyond this they are dropped.
const PUBLISH_QUEUE: usize = 16_384;
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<Bytes>>>>;

enum Command {
    Subscribe(String),
    Unsubscribe(String),
}

pub struct RedisPubSub {
    outgoing: mpsc::Sender<(String, Bytes)>,
    topics: Topics,
    commands: mpsc::UnboundedSender<Command>,
    capacity: usize,
}

impl RedisPubSub {
    /// Connects the publisher (failing fast if Redis is unreachable at
    /// start-up) and starts the subscriber, which reconnects by itself.
    pub async fn connect(url: &str, capacity: usize) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let connection = client.get_connection_manager().await?;
        let topics: Topics = Arc::default();
        let (outgoing, queue) = mpsc::channel(PUBLISH_QUEUE);
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(publisher(connection, queue));
        tokio::spawn(subscriber(client, topics.clone(), receiver));
        tokio::spawn(sweeper(topics.clone(), commands.clone()));
        Ok(Self { outgoing, topics, commands, capacity })
    }
}

#[async_trait::async_trait]
impl PubSub for RedisPubSub {
    /// Queues the publish and returns at once: a slow or absent Redis never
    /// delays the request that committed the change.
    async fn publish(&self, topic: &str, payload: Bytes) {
        if self.outgoing.try_send((topic.to_string(), payload)).is_err() {
            tracing::warn!(topic, "redis publish queue full; streams will replay from the store");
        }
    }

    async fn subscribe(&self, topic: &str) -> broadcast::Receiver<Bytes> {
        let Ok(mut topics) = self.topics.lock() else { return broadcast::channel(1).1 };
        if let Some(sender) = topics.get(topic) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(self.capacity);
        topics.insert(topic.to_string(), sender);
        let _ = self.commands.send(Command::Subscribe(topic.to_string()));
        receiver
    }

    fn release(&self, topic: &str) {
        if let Ok(mut topics) = self.topics.lock() {
            forget_if_idle(&mut topics, topic, &self.commands);
        }
    }
}

/// Drops an idle topic and its Redis subscription. Called with the topics
/// locked, so that the command cannot overtake a SUBSCRIBE for the same
/// topic issued by `subscribe` right after.
fn forget_if_idle(
    topics: &mut HashMap<String, broadcast::Sender<Bytes>>,
    topic: &str,
    commands: &mpsc::UnboundedSender<Command>,
) {
    if topics.get(topic).is_some_and(|s| s.receiver_count() == 0) {
        topics.remove(topic);
        let _ = commands.send(Command::Unsubscribe(topic.to_string()));
    }
}

/// Publishes in order; after a failure, drops publishes for a short pause
/// (subscribers catch up from the store) rather than stall behind it.
async fn publisher(mut connection: ConnectionManager, mut queue: mpsc::Receiver<(String, Bytes)>) {
    let mut paused_until = tokio::time::Instant::now();
    while let Some((topic, payload)) = queue.recv().await {
        if tokio::time::Instant::now() < paused_until {
            continue;
        }
        let sent =
            tokio::time::timeout(PUBLISH_TIMEOUT, connection.publish::<_, _, i64>(&topic, payload.as_ref())).await;
        let failure = match sent {
            Ok(Ok(_)) => continue,
            Ok(Err(err)) => err.to_string(),
            Err(_) => "timed out".to_string(),
        };
        tracing::warn!(topic, error = %failure, "redis publish failed; pausing live fan-out briefly");
        paused_until = tokio::time::Instant::now() + PUBLISH_PAUSE;
    }
}

/// Keeps one Redis subscription per local topic, reconnecting with backoff.
async fn subscriber(client: redis::Client, topics: Topics, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(err) => {
                tracing::warn!(error = %err, "redis subscriber cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let (mut sink, mut stream) = pubsub.split();
        let current: Vec<String> = topics.lock().map(|t| t.keys().cloned().collect()).unwrap_or_default();
        let mut healthy = true;
        for topic in &current {
            healthy &= sink.subscribe(topic).await.is_ok();
        }
        if connected_before {
            tracing::info!(topics = current.len(), "redis subscriber reconnected; streams resync from the store");
            resync(&topics);
        }
        connected_before = true;
        while healthy {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Subscribe(topic)) => healthy = sink.subscribe(&topic).await.is_ok(),
                    Some(Command::Unsubscribe(topic)) => healthy = sink.unsubscribe(&topic).await.is_ok(),
                    None => return,
                },
                message = stream.next() => match message {
                    Some(message) => deliver(&topics, message.get_channel_name(), message.get_payload_bytes()),
                    None => healthy = false,
                },
            }
        }
        tracing::warn!("redis subscriber connection lost; reconnecting");
    }
}

fn deliver(topics: &Topics, topic: &str, payload: &[u8]) {
    if let Ok(topics) = topics.lock()
        && let Some(sender) = topics.get(topic)
    {
        let _ = sender.send(Bytes::copy_from_slice(payload));
    }
}

fn resync(topics: &Topics) {
    if let Ok(topics) = topics.lock() {
        let frame = Frame::Resync.encode();
        for sender in topics.values() {
            let _ = sender.send(frame.clone());
        }
    }
}

/// Drops Redis subscriptions that no local receiver needs any more, for
/// receivers dropped without a `release`.
async fn sweeper(topics: Topics, commands: mpsc::UnboundedSender<Command>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Ok(mut topics) = topics.lock() else { return };
        let idle: Vec<String> =
            topics.iter().filter(|(_, s)| s.receiver_count() == 0).map(|(t, _)| t.clone()).collect();
        for topic in idle {
            forget_if_idle(&mut topics, &topic, &commands);
        }
        if commands.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Redis server the backend tests use, e.g. redis://127.0.0.1:6379.
    fn server() -> String {
        std::env::var("COLINK_TEST_REDIS").expect("COLINK_TEST_REDIS names the Redis server for this test")
    }

    async fn recv(rx: &mut broadcast::Receiver<Bytes>) -> Bytes {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("delivered in time").expect("open")
    }

    /// One test, so that cutting connections cannot disturb a sibling test.
    #[tokio::test]
    #[ignore = "needs a Redis server: set COLINK_TEST_REDIS (the full suite does)"]
    async fn fans_out_between_nodes_and_resyncs_after_a_lost_connection() {
        let url = server();
        let topic = format!("test.{}", crate::ids::new_id());
        let node_a = RedisPubSub::connect(&url, 16).await.unwrap();
        let node_b = RedisPubSub::connect(&url, 16).await.unwrap();
        let mut first = node_a.subscribe(&topic).await;
        let mut second = node_a.subscribe(&topic).await;
        // Publish probes until node A's SUBSCRIBE has landed.
        let probe = format!("{topic}.probe");
        let mut ready = node_a.subscribe(&probe).await;
        loop {
            node_b.publish(&probe, Bytes::from_static(b"?")).await;
            if tokio::time::timeout(Duration::from_millis(100), ready.recv()).await.is_ok() {
                break;
            }
        }
        node_b.publish(&topic, Bytes::from_static(b"hello")).await;
        assert_eq!(recv(&mut first).await, Bytes::from_static(b"hello"));
        assert_eq!(recv(&mut second).await, Bytes::from_static(b"hello"));

        // The broker drops the subscribers: local receivers are told to resync,
        // and delivery resumes on the new connection.
        let mut admin = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut admin).await.unwrap();
        assert_eq!(Frame::decode(recv(&mut first).await), Some(Frame::Resync));
        while tokio::time::timeout(Duration::from_millis(100), ready.recv()).await.is_ok() {}
        loop {
            node_b.publish(&probe, Bytes::from_static(b"?")).await;
            if tokio::time::timeout(Duration::from_millis(100), ready.recv()).await.is_ok() {
                break;
            }
        }
        node_b.publish(&topic, Bytes::from_static(b"again")).await;
        loop {
            let got = recv(&mut second).await;
            if got != Frame::Resync.encode() {
                assert_eq!(got, Bytes::from_static(b"again"));
                break;
            }
        }
    }
}
