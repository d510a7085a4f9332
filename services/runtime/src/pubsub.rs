//! Live fan-out between the service that commits a change and the realtime
//! nodes that deliver it. Best-effort by design: correctness comes from the
//! per-channel sequence numbers, so a lost publish costs latency, not data.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::broadcast;

mod redis;

pub use self::redis::RedisPubSub;

/// Topic carrying a channel's events (encoded `ChannelEvent`s).
pub fn channel_topic(channel_id: &str) -> String {
    format!("channel.{channel_id}")
}

/// Topic carrying events addressed to one user (e.g. "you joined a channel").
pub fn user_topic(user_id: &str) -> String {
    format!("user.{user_id}")
}

/// Topic on which the users service announces that someone blocked or
/// unblocked someone: a `Frame::Event` with each of the two user ids.
pub const BLOCKS_TOPIC: &str = "users.blocks";

/// Topic on which the auth service announces ended sessions (signed out,
/// revoked, ended by a password change or a deactivation): a
/// `Frame::Event` of session ids, one per line.
pub const SESSIONS_ENDED_TOPIC: &str = "auth.sessions_ended";

/// What travels on a channel or user topic: a one-byte tag, then the
/// encoded protobuf. Sequenced conversation events and ephemeral typing
/// notices share a topic, so a node needs one subscription per channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An encoded `colink.messaging.v1.ChannelEvent`.
    Event(Bytes),
    /// An encoded `colink.realtime.v1.TypingEvent`.
    Typing(Bytes),
    /// On a user topic: the user's unread counts changed in a way their
    /// streams cannot see in conversation events (a read on another device,
    /// a mute, a follow, a block). The payload names what to count again:
    /// `channel:<id>`, `thread:<id>`, or `all`.
    Counts(Bytes),
    /// On a channel topic: an encoded `colink.presence.v1.Presence` of a
    /// member who changed presence.
    Presence(Bytes),
    /// On a user topic: an encoded `colink.files.v1.File` of the user's
    /// own whose scan status changed.
    File(Bytes),
    /// Made locally, never sent: publishes may have been missed (the
    /// connection to the broker was lost), so catch up from the store.
    Resync,
}

impl Frame {
    const EVENT: u8 = 0;
    const TYPING: u8 = 1;
    const RESYNC: u8 = 2;
    const COUNTS: u8 = 3;
    const PRESENCE: u8 = 4;
    const FILE: u8 = 5;

    pub fn encode(&self) -> Bytes {
        let empty = Bytes::new();
        let (tag, body) = match self {
            Frame::Event(b) => (Self::EVENT, b),
            Frame::Typing(b) => (Self::TYPING, b),
            Frame::Resync => (Self::RESYNC, &empty),
            Frame::Counts(b) => (Self::COUNTS, b),
            Frame::Presence(b) => (Self::PRESENCE, b),
            Frame::File(b) => (Self::FILE, b),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(body);
        out.into()
    }

    pub fn decode(mut bytes: Bytes) -> Option<Self> {
        if bytes.is_empty() {
            return None;
        }
        let tag = bytes.split_to(1)[0];
        match tag {
            Self::EVENT => Some(Frame::Event(bytes)),
            Self::TYPING => Some(Frame::Typing(bytes)),
            Self::RESYNC => Some(Frame::Resync),
            Self::COUNTS => Some(Frame::Counts(bytes)),
            Self::PRESENCE => Some(Frame::Presence(bytes)),
            Self::FILE => Some(Frame::File(bytes)),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// Delivers to current subscribers of the topic, on every node.
    async fn publish(&self, topic: &str, payload: Bytes);
    /// Receives what is published to the topic from now on. A receiver that
    /// falls behind sees `RecvError::Lagged` and must catch up from the store.
    async fn subscribe(&self, topic: &str) -> broadcast::Receiver<Bytes>;
    /// Frees what the node holds for a topic once its last receiver is
    /// gone; subscribers call it after dropping theirs. A topic that still
    /// has receivers is left alone.
    fn release(&self, topic: &str);
}

/// In-process pub/sub for a single node.
pub struct MemoryPubSub {
    topics: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    capacity: usize,
}

impl MemoryPubSub {
    pub fn new(capacity: usize) -> Self {
        Self { topics: Mutex::new(HashMap::new()), capacity }
    }

    /// Topics that currently have a sender (for tests and metrics).
    pub fn topic_count(&self) -> usize {
        self.topics.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl PubSub for MemoryPubSub {
    async fn publish(&self, topic: &str, payload: Bytes) {
        let Ok(mut topics) = self.topics.lock() else { return };
        // Nobody listens any more: forget the topic.
        if let Some(sender) = topics.get(topic)
            && sender.send(payload).is_err()
        {
            topics.remove(topic);
        }
    }

    async fn subscribe(&self, topic: &str) -> broadcast::Receiver<Bytes> {
        match self.topics.lock() {
            Ok(mut topics) => {
                topics.entry(topic.to_string()).or_insert_with(|| broadcast::channel(self.capacity).0).subscribe()
            }
            // A poisoned lock means a panic elsewhere; hand out a closed receiver.
            Err(_) => broadcast::channel(1).1,
        }
    }

    fn release(&self, topic: &str) {
        if let Ok(mut topics) = self.topics.lock()
            && topics.get(topic).is_some_and(|s| s.receiver_count() == 0)
        {
            topics.remove(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for frame in [Frame::Event(Bytes::from_static(b"e")), Frame::Typing(Bytes::new()), Frame::Resync] {
            assert_eq!(Frame::decode(frame.encode()), Some(frame));
        }
        assert_eq!(Frame::decode(Bytes::new()), None);
        assert_eq!(Frame::decode(Bytes::from_static(&[9, 1])), None);
    }

    #[tokio::test]
    async fn delivers_to_subscribers_and_forgets_idle_topics() {
        let pubsub = MemoryPubSub::new(8);
        let mut rx = pubsub.subscribe("t").await;
        pubsub.publish("t", Bytes::from_static(b"a")).await;
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"a"));
        drop(rx);
        pubsub.publish("t", Bytes::from_static(b"b")).await;
        assert_eq!(pubsub.topic_count(), 0);
    }

    #[tokio::test]
    async fn a_released_topic_is_freed_only_once_nobody_listens() {
        let pubsub = MemoryPubSub::new(8);
        let first = pubsub.subscribe("t").await;
        let second = pubsub.subscribe("t").await;
        drop(first);
        pubsub.release("t");
        assert_eq!(pubsub.topic_count(), 1, "one receiver is left");
        drop(second);
        pubsub.release("t");
        assert_eq!(pubsub.topic_count(), 0);
    }
}
