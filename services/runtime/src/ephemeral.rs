//! Short-lived state that may be lost without harm: presence, typing
//! notices and rate-limit counters. In one process it lives in memory; with
//! several nodes, in Redis, where every key expires by itself.
//!
//! Nothing durable depends on it. When the store is unreachable its calls
//! fail quickly with `EphemeralError`, callers degrade (presence is reported
//! unavailable, rate limits let requests through), and the next call after
//! the store returns works again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::clock::{Clock, SystemClock};
use crate::ids::now_micros;

pub mod redis;

pub use self::redis::RedisEphemeral;

#[derive(Debug, thiserror::Error)]
#[error("ephemeral store unavailable: {0}")]
pub struct EphemeralError(pub String);

#[async_trait::async_trait]
pub trait Ephemeral: Send + Sync + 'static {
    /// Sets a value that disappears after `ttl`.
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), EphemeralError>;
    /// Removes a value before its time.
    async fn remove(&self, key: &str) -> Result<(), EphemeralError>;
    /// The live values of `keys`, in order.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, EphemeralError>;
    /// Adds or renews a member of an expiring set; each member expires
    /// `ttl` after its last renewal.
    async fn set_put(&self, set: &str, member: &str, ttl: Duration) -> Result<(), EphemeralError>;
    async fn set_remove(&self, set: &str, member: &str) -> Result<(), EphemeralError>;
    /// Live members with their expiry time (microseconds since the epoch).
    async fn set_members(&self, set: &str) -> Result<Vec<(String, i64)>, EphemeralError>;
    /// Counts one hit in the current fixed window of `window` for `key` and
    /// returns the hits in that window so far, this one included.
    async fn hit(&self, key: &str, window: Duration) -> Result<u64, EphemeralError>;
}

/// How long a typing notice shows without renewal (the seeds' 5 s).
pub const TYPING_TTL: Duration = Duration::from_secs(5);

/// When a typing notice given now stops showing, in microseconds.
pub fn typing_expires_at() -> i64 {
    expiry(now_micros(), TYPING_TTL)
}

/// Presence of a user.
pub fn presence_key(user_id: &str) -> String {
    format!("presence:user:{user_id}")
}

/// When a user was last seen, kept longer than their presence.
pub fn last_seen_key(user_id: &str) -> String {
    format!("presence:seen:{user_id}")
}

/// Who is typing in a channel.
pub fn typing_key(channel_id: &str) -> String {
    format!("typing:{channel_id}")
}

/// The fixed window a hit at `now_micros` falls in, as a key suffix.
fn window_start(now: i64, window: Duration) -> i64 {
    let width = i64::try_from(window.as_micros()).unwrap_or(i64::MAX).max(1);
    now - now.rem_euclid(width)
}

fn expiry(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX))
}

/// The embedded store: one process, swept as it is used.
pub struct MemoryEphemeral {
    state: Mutex<MemoryState>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryEphemeral {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

#[derive(Default)]
struct MemoryState {
    values: HashMap<String, (Bytes, i64)>,
    sets: HashMap<String, HashMap<String, i64>>,
    counters: HashMap<String, (i64, u64)>,
    /// Operations since the last sweep of expired entries.
    since_sweep: u32,
}

impl MemoryState {
    fn sweep_now_and_then(&mut self, now: i64) {
        self.since_sweep += 1;
        if self.since_sweep < 4096 {
            return;
        }
        self.since_sweep = 0;
        self.values.retain(|_, (_, expires)| *expires > now);
        for members in self.sets.values_mut() {
            members.retain(|_, expires| *expires > now);
        }
        self.sets.retain(|_, members| !members.is_empty());
        self.counters.retain(|_, (ends, _)| *ends > now);
    }
}

impl MemoryEphemeral {
    /// A store whose entries expire by `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self { state: Mutex::default(), clock }
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState, i64) -> T) -> Result<T, EphemeralError> {
        let mut state = self.state.lock().map_err(|_| EphemeralError("memory store poisoned".into()))?;
        let now = self.clock.now_micros();
        state.sweep_now_and_then(now);
        Ok(f(&mut state, now))
    }
}

#[async_trait::async_trait]
impl Ephemeral for MemoryEphemeral {
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), EphemeralError> {
        self.with(|s, now| {
            s.values.insert(key.to_string(), (value, expiry(now, ttl)));
        })
    }

    async fn remove(&self, key: &str) -> Result<(), EphemeralError> {
        self.with(|s, _| {
            s.values.remove(key);
        })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, EphemeralError> {
        self.with(|s, now| {
            keys.iter().map(|k| s.values.get(k).filter(|(_, expires)| *expires > now).map(|(v, _)| v.clone())).collect()
        })
    }

    async fn set_put(&self, set: &str, member: &str, ttl: Duration) -> Result<(), EphemeralError> {
        self.with(|s, now| {
            s.sets.entry(set.to_string()).or_default().insert(member.to_string(), expiry(now, ttl));
        })
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<(), EphemeralError> {
        self.with(|s, _| {
            if let Some(members) = s.sets.get_mut(set) {
                members.remove(member);
            }
        })
    }

    async fn set_members(&self, set: &str) -> Result<Vec<(String, i64)>, EphemeralError> {
        self.with(|s, now| {
            let mut live: Vec<(String, i64)> = s
                .sets
                .get(set)
                .map(|m| m.iter().filter(|(_, e)| **e > now).map(|(k, e)| (k.clone(), *e)).collect())
                .unwrap_or_default();
            live.sort();
            live
        })
    }

    async fn hit(&self, key: &str, window: Duration) -> Result<u64, EphemeralError> {
        self.with(|s, now| {
            let start = window_start(now, window);
            let ends = expiry(start, window);
            let counter = s.counters.entry(key.to_string()).or_insert((ends, 0));
            if counter.0 != ends {
                *counter = (ends, 0);
            }
            counter.1 += 1;
            counter.1
        })
    }
}

/// Counts a request against a per-minute budget. Over budget is an error;
/// an unreachable store lets the request through, so that an outage of
/// ephemeral state never stops messaging.
pub async fn within_budget(store: &dyn Ephemeral, key: &str, per_minute: u32) -> bool {
    if per_minute == 0 {
        return true;
    }
    match store.hit(key, Duration::from_secs(60)).await {
        Ok(count) => count <= u64::from(per_minute),
        Err(err) => {
            tracing::warn!(error = %err, "rate limit not checked");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn values_sets_and_counters_expire() {
        // The start of a minute, so that one rate window spans the test.
        let clock = Arc::new(ManualClock::at(1_800_000_000_000_000));
        let store = MemoryEphemeral::with_clock(clock.clone());
        store.put("k", Bytes::from_static(b"v"), Duration::from_millis(30)).await.unwrap();
        store.set_put("s", "a", Duration::from_millis(30)).await.unwrap();
        store.set_put("s", "b", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get_many(&["k".into(), "x".into()]).await.unwrap()[0].as_deref(), Some(&b"v"[..]));
        assert_eq!(store.hit("c", Duration::from_secs(60)).await.unwrap(), 1);
        assert_eq!(store.hit("c", Duration::from_secs(60)).await.unwrap(), 2);
        clock.advance(Duration::from_millis(40));
        assert_eq!(store.get_many(&["k".into()]).await.unwrap(), vec![None]);
        let members: Vec<String> = store.set_members("s").await.unwrap().into_iter().map(|(m, _)| m).collect();
        assert_eq!(members, vec!["b".to_string()]);
        store.set_remove("s", "b").await.unwrap();
        assert!(store.set_members("s").await.unwrap().is_empty());
        assert_eq!(store.hit("c", Duration::from_secs(60)).await.unwrap(), 3, "the same window");
        clock.advance(Duration::from_secs(60));
        assert_eq!(store.hit("c", Duration::from_secs(60)).await.unwrap(), 1, "the next window");
    }

    #[tokio::test]
    async fn budget_counts_per_key() {
        let store = MemoryEphemeral::default();
        assert!(within_budget(&store, "u1", 2).await);
        assert!(within_budget(&store, "u1", 2).await);
        assert!(!within_budget(&store, "u1", 2).await);
        assert!(within_budget(&store, "u2", 2).await);
        assert!(within_budget(&store, "u1", 0).await);
    }
}
