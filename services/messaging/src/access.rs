//! Who may post in and read which conversation, remembered for a moment.
//!
//! Every send needs the sender's membership and the channel's state, and
//! asking the channels service costs a gRPC round trip and two reads each
//! time. Positive answers (a member of a live channel) are kept for a few
//! seconds, and a channel's answers are forgotten as soon as a membership
//! or archive change for it is seen: on the node that records the change in
//! the channel log, directly, and on every other node through a pub/sub
//! notice. A removed member or an archived channel is refused within
//! milliseconds, and within the time-to-live should notices be lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use colink_proto::channels::v1::Channel;

/// The pub/sub topic on which messaging nodes tell each other to forget a
/// channel's remembered access; the payload is the channel id.
pub const ACCESS_TOPIC: &str = "messaging.access";

/// How long a remembered answer is trusted without a notice.
pub const ACCESS_TTL: Duration = Duration::from_secs(5);

/// Answers remembered at most; beyond this the memory starts over.
const CAPACITY: usize = 65_536;

pub struct AccessCache {
    ttl: Duration,
    remembered: Mutex<Remembered>,
    /// Moves on every forget: an answer fetched before a forget is stale.
    epoch: AtomicU64,
}

#[derive(Default)]
struct Remembered {
    /// Channel id → user id → the channel as that user saw it, and when.
    channels: HashMap<String, HashMap<String, (Channel, Instant)>>,
    len: usize,
}

impl AccessCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, remembered: Mutex::new(Remembered::default()), epoch: AtomicU64::new(0) }
    }

    /// Read before asking the channels service; pass it to `remember`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The channel as the user last saw it, if that is recent and no change
    /// to the channel has been seen since.
    pub fn get(&self, channel_id: &str, user_id: &str) -> Option<Channel> {
        let remembered = self.remembered.lock().ok()?;
        let (channel, at) = remembered.channels.get(channel_id)?.get(user_id)?;
        (at.elapsed() < self.ttl).then(|| channel.clone())
    }

    /// Keeps an answer unless a change was seen while it was being fetched.
    pub fn remember(&self, epoch: u64, user_id: &str, channel: &Channel) {
        let Ok(mut remembered) = self.remembered.lock() else { return };
        // Checked under the lock, which `forget` also takes: no forget can
        // fall between this check and the insert.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if remembered.len >= CAPACITY {
            *remembered = Remembered::default();
        }
        let users = remembered.channels.entry(channel.channel_id.clone()).or_default();
        if users.insert(user_id.to_string(), (channel.clone(), Instant::now())).is_none() {
            remembered.len += 1;
        }
    }

    /// Forgets every answer about a channel.
    pub fn forget(&self, channel_id: &str) {
        let Ok(mut remembered) = self.remembered.lock() else { return };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(users) = remembered.channels.remove(channel_id) {
            remembered.len -= users.len();
        }
    }

    /// Forgets everything, when notices may have been missed.
    pub fn clear(&self) {
        let Ok(mut remembered) = self.remembered.lock() else { return };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        *remembered = Remembered::default();
    }

    /// Applies a notice from `ACCESS_TOPIC`.
    pub fn on_notice(&self, payload: &Bytes) {
        match std::str::from_utf8(payload) {
            Ok(channel_id) => self.forget(channel_id),
            Err(_) => self.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str) -> Channel {
        Channel { channel_id: id.into(), ..Default::default() }
    }

    #[test]
    fn remembers_until_the_channel_changes() {
        let cache = AccessCache::new(Duration::from_secs(60));
        cache.remember(cache.epoch(), "u1", &channel("c1"));
        cache.remember(cache.epoch(), "u1", &channel("c2"));
        assert!(cache.get("c1", "u1").is_some());
        assert!(cache.get("c1", "u2").is_none());
        cache.forget("c1");
        assert!(cache.get("c1", "u1").is_none());
        assert!(cache.get("c2", "u1").is_some());
        cache.on_notice(&Bytes::from_static(&[0xff]));
        assert!(cache.get("c2", "u1").is_none());
    }

    #[test]
    fn an_answer_fetched_across_a_change_is_not_kept() {
        let cache = AccessCache::new(Duration::from_secs(60));
        let before = cache.epoch();
        cache.forget("c1");
        cache.remember(before, "u1", &channel("c1"));
        assert!(cache.get("c1", "u1").is_none());
    }

    #[test]
    fn answers_expire() {
        let cache = AccessCache::new(Duration::ZERO);
        cache.remember(cache.epoch(), "u1", &channel("c1"));
        assert!(cache.get("c1", "u1").is_none());
    }
}
