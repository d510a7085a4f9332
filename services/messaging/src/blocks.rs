//! Whom each user blocked, remembered between calls.
//!
//! Unread counts and the mentions list leave out what blocked people wrote,
//! and asking the users service on every call costs a gRPC round trip. A
//! user's list is kept for a minute and forgotten as soon as the users
//! service announces a block or an unblock by or of them on [`BLOCKS_TOPIC`].
//! Announcements are read before every look-up, so on the node that made the
//! change the next call already sees it; other nodes see it as soon as the
//! pub/sub delivers it, and within the minute should it be lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_runtime::pubsub::{BLOCKS_TOPIC, Frame, PubSub};
use tokio::sync::OnceCell;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// How long a remembered list is trusted without an announcement.
const TTL: Duration = Duration::from_secs(60);
/// Lists remembered at most; beyond this the memory starts over.
const CAPACITY: usize = 65_536;

pub struct BlockCache {
    pubsub: Arc<dyn PubSub>,
    state: OnceCell<Mutex<State>>,
}

struct State {
    announcements: broadcast::Receiver<Bytes>,
    /// User id → whom they blocked, and when that was read.
    lists: HashMap<String, (Arc<[String]>, Instant)>,
    /// Moves on every forget: a list read before a forget is stale.
    epoch: u64,
}

impl State {
    /// Applies the announcements that arrived since the last look-up.
    fn catch_up(&mut self) {
        loop {
            match self.announcements.try_recv() {
                Ok(payload) => match Frame::decode(payload) {
                    Some(Frame::Event(user_id)) => {
                        let forgotten = std::str::from_utf8(&user_id).map(|id| self.lists.remove(id));
                        if forgotten.is_err() {
                            self.lists.clear();
                        }
                        self.epoch += 1;
                    }
                    // Announcements may have been lost.
                    _ => self.forget_all(),
                },
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(_)) => self.forget_all(),
                Err(TryRecvError::Closed) => {
                    self.forget_all();
                    return;
                }
            }
        }
    }

    fn forget_all(&mut self) {
        self.lists.clear();
        self.epoch += 1;
    }
}

impl BlockCache {
    pub fn new(pubsub: Arc<dyn PubSub>) -> Self {
        Self { pubsub, state: OnceCell::new() }
    }

    async fn state(&self) -> &Mutex<State> {
        self.state
            .get_or_init(|| async {
                let announcements = self.pubsub.subscribe(BLOCKS_TOPIC).await;
                Mutex::new(State { announcements, lists: HashMap::new(), epoch: 0 })
            })
            .await
    }

    /// The user's list if remembered, or the epoch to pass to `remember`
    /// with the list read instead.
    pub async fn get(&self, user_id: &str) -> Result<Arc<[String]>, u64> {
        let Ok(mut state) = self.state().await.lock() else { return Err(u64::MAX) };
        state.catch_up();
        match state.lists.get(user_id) {
            Some((list, at)) if at.elapsed() < TTL => Ok(list.clone()),
            _ => Err(state.epoch),
        }
    }

    /// Keeps a list read from the users service, unless a block or an
    /// unblock was announced while it was being read.
    pub async fn remember(&self, epoch: u64, user_id: &str, list: Arc<[String]>) {
        let Ok(mut state) = self.state().await.lock() else { return };
        state.catch_up();
        if state.epoch != epoch {
            return;
        }
        if state.lists.len() >= CAPACITY {
            state.lists.clear();
        }
        state.lists.insert(user_id.to_string(), (list, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use colink_runtime::pubsub::MemoryPubSub;

    use super::*;

    fn list(ids: &[&str]) -> Arc<[String]> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    async fn announce(pubsub: &MemoryPubSub, user_id: &str) {
        pubsub.publish(BLOCKS_TOPIC, Frame::Event(Bytes::copy_from_slice(user_id.as_bytes())).encode()).await;
    }

    #[tokio::test]
    async fn a_list_is_kept_until_a_block_of_its_user_is_announced() {
        let pubsub = Arc::new(MemoryPubSub::new(16));
        let cache = BlockCache::new(pubsub.clone());
        let epoch = cache.get("ann").await.expect_err("nothing yet");
        cache.remember(epoch, "ann", list(&["bob"])).await;
        let epoch = cache.get("cy").await.expect_err("nothing yet");
        cache.remember(epoch, "cy", list(&[])).await;
        assert_eq!(cache.get("ann").await.ok(), Some(list(&["bob"])));
        announce(&pubsub, "ann").await;
        assert!(cache.get("ann").await.is_err(), "forgotten at once");
        assert_eq!(cache.get("cy").await.ok(), Some(list(&[])), "others are kept");
        pubsub.publish(BLOCKS_TOPIC, Frame::Resync.encode()).await;
        assert!(cache.get("cy").await.is_err(), "lost announcements forget everything");
    }

    #[tokio::test]
    async fn a_list_read_across_an_announcement_is_not_kept() {
        let pubsub = Arc::new(MemoryPubSub::new(16));
        let cache = BlockCache::new(pubsub.clone());
        let epoch = cache.get("ann").await.expect_err("nothing yet");
        announce(&pubsub, "bob").await;
        cache.remember(epoch, "ann", list(&[])).await;
        assert!(cache.get("ann").await.is_err());
    }
}
