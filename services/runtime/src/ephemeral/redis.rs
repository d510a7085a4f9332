//! Ephemeral state in Redis: values with `SET PX`, expiring sets as sorted
//! sets scored by expiry, counters with `INCR` in a key per window.
//!
//! The connection is made on first use and remade after Redis comes back;
//! every call is bounded by a short timeout so that an unreachable Redis
//! degrades callers at once instead of stalling them.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::{Ephemeral, EphemeralError, expiry, window_start};
use crate::ids::now_micros;

const CALL_TIMEOUT: Duration = Duration::from_millis(300);

pub struct RedisEphemeral {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
}

impl RedisEphemeral {
    /// Checks the URL; connects lazily, so a node starts while Redis is down.
    pub fn new(url: &str) -> Result<Self, EphemeralError> {
        let client = redis::Client::open(url).map_err(failed)?;
        Ok(Self { client, connection: Mutex::new(None) })
    }

    async fn connection(&self) -> Result<ConnectionManager, EphemeralError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(CALL_TIMEOUT, self.client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| EphemeralError("redis: connect timed out".into()))?
            .map_err(failed)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, EphemeralError> {
        let mut connection = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<T>(&mut connection)).await {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(EphemeralError("redis: call timed out".into())),
        }
    }
}

#[async_trait::async_trait]
impl Ephemeral for RedisEphemeral {
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), EphemeralError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(key).arg(value.as_ref()).arg("PX").arg(millis(ttl)).ignore();
        self.run::<()>(&pipe).await
    }

    async fn remove(&self, key: &str) -> Result<(), EphemeralError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(key).ignore();
        self.run::<()>(&pipe).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, EphemeralError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(keys);
        let (values,): (Vec<Option<Vec<u8>>>,) = self.run(&pipe).await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    async fn set_put(&self, set: &str, member: &str, ttl: Duration) -> Result<(), EphemeralError> {
        let expires = expiry(now_micros(), ttl);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(set)
            .arg(expires)
            .arg(member)
            .ignore()
            // The set itself outlives its newest member by nothing.
            .cmd("PEXPIRE")
            .arg(set)
            .arg(millis(ttl))
            .arg("GT")
            .ignore()
            .cmd("PEXPIRE")
            .arg(set)
            .arg(millis(ttl))
            .arg("NX")
            .ignore();
        self.run::<()>(&pipe).await
    }

    async fn set_remove(&self, set: &str, member: &str) -> Result<(), EphemeralError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(set).arg(member).ignore();
        self.run::<()>(&pipe).await
    }

    async fn set_members(&self, set: &str) -> Result<Vec<(String, i64)>, EphemeralError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(set)
            .arg("-inf")
            .arg(now_micros())
            .ignore()
            .cmd("ZRANGE")
            .arg(set)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        let (members,): (Vec<(String, f64)>,) = self.run(&pipe).await?;
        // Scores are microseconds, below 2^53, so the float is exact.
        Ok(members.into_iter().map(|(member, expires)| (member, expires as i64)).collect())
    }

    async fn hit(&self, key: &str, window: Duration) -> Result<u64, EphemeralError> {
        let windowed = format!("{key}:{}", window_start(now_micros(), window));
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("INCR").arg(&windowed).cmd("PEXPIRE").arg(&windowed).arg(millis(window)).arg("NX").ignore();
        let (count,): (u64,) = self.run(&pipe).await?;
        Ok(count)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn failed(err: redis::RedisError) -> EphemeralError {
    EphemeralError(format!("redis: {err}"))
}
