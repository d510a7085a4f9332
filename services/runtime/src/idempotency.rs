//! Idempotency keys for any call that changes something. The first request
//! with a key runs; a retry with the same key and the same request gets the
//! first answer back and changes nothing; the same key with a different
//! request is refused. Keys are the caller's own, and live in the service's
//! `idempotency_keys` table (so every node honours them) for at least
//! `KEPT`.
//!
//! A key is claimed before the call runs and answered after: a retry that
//! arrives while the first request is still running is told to retry
//! (ABORTED), and a claim whose request failed is let go, so that a
//! corrected request can use the key.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbErr};

use crate::db::Db;
use crate::error::{Error, FieldError, Result};
use crate::ids::{check_idempotency_key, check_same_request, idempotency_key, now_micros, request_fingerprint};

/// How long a key is honoured, at least.
pub const KEPT: Duration = Duration::from_secs(24 * 3600);
/// A claim this old whose request never answered was abandoned (its node
/// stopped): a retry may take it over.
const ABANDONED: Duration = Duration::from_secs(60);
/// How often a node clears out expired keys.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

const TABLE: &str = "idempotency_keys";

/// The idempotency keys of one service's database.
pub struct Keys {
    db: Db,
    last_sweep: AtomicI64,
}

/// The validated key of a request: the body field, or else the
/// `Idempotency-Key` header.
pub fn key_of<T>(request: &tonic::Request<T>, field: &str) -> std::result::Result<Option<String>, FieldError> {
    check_idempotency_key("idempotency_key", &idempotency_key(field, request))
}

enum Claim {
    Ours,
    Answered(Vec<u8>),
}

impl Keys {
    pub fn new(db: Db) -> Self {
        Self { db, last_sweep: AtomicI64::new(0) }
    }

    /// Runs `call` once per key. `request` is what the call asks for, with
    /// its key field cleared; `method` tells calls apart.
    pub async fn once<Req, Resp, F, Fut>(
        &self,
        user_id: &str,
        key: Option<String>,
        method: &str,
        request: &Req,
        call: F,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Resp>>,
    {
        let Some(key) = key else { return call().await };
        let mut asked = method.as_bytes().to_vec();
        asked.push(0);
        asked.extend(request.encode_to_vec());
        let fingerprint = request_fingerprint(&asked);
        match self.claim(user_id, &key, &fingerprint).await? {
            Claim::Answered(bytes) => return Resp::decode(bytes.as_slice()).map_err(Error::internal),
            Claim::Ours => {}
        }
        let result = call().await;
        let settled = match &result {
            Ok(response) => self.answer(user_id, &key, response.encode_to_vec()).await,
            Err(_) => self.release(user_id, &key).await,
        };
        if let Err(err) = settled {
            tracing::warn!(error = %err, "idempotency key not settled");
        }
        self.sweep().await;
        result
    }

    async fn claim(&self, user_id: &str, key: &str, fingerprint: &str) -> Result<Claim> {
        let now = now_micros();
        let insert = Query::insert()
            .into_table(TABLE)
            .columns(["user_id", "idempotency_key", "request_fingerprint", "created_at"])
            .values_panic([user_id.into(), key.into(), fingerprint.into(), now.into()])
            .on_conflict(OnConflict::columns(["user_id", "idempotency_key"]).do_nothing().to_owned())
            .to_owned();
        if self.db.writer.execute(&insert).await?.rows_affected() == 1 {
            return Ok(Claim::Ours);
        }
        let select = Query::select()
            .columns(["request_fingerprint", "response", "created_at"])
            .from(TABLE)
            .and_where(Expr::col("user_id").eq(user_id))
            .and_where(Expr::col("idempotency_key").eq(key))
            .to_owned();
        let Some(row) = self.db.writer.query_one(&select).await? else {
            // Swept in between: claim it again.
            return Box::pin(self.claim(user_id, key, fingerprint)).await;
        };
        let stored: Option<String> = row.try_get_by_index(0)?;
        check_same_request(stored.as_deref(), fingerprint)?;
        if let Some(response) = row.try_get_by_index::<Option<Vec<u8>>>(1)? {
            return Ok(Claim::Answered(response));
        }
        let claimed_at: i64 = row.try_get_by_index(2)?;
        let abandoned = now - claimed_at > micros(ABANDONED);
        if abandoned && self.take_over(user_id, key, claimed_at, now).await? {
            return Ok(Claim::Ours);
        }
        Err(Error::Aborted("a request with this idempotency key is still running; retry in a moment".into()))
    }

    async fn take_over(&self, user_id: &str, key: &str, claimed_at: i64, now: i64) -> Result<bool, DbErr> {
        let update = Query::update()
            .table(TABLE)
            .value("created_at", now)
            .and_where(Expr::col("user_id").eq(user_id))
            .and_where(Expr::col("idempotency_key").eq(key))
            .and_where(Expr::col("created_at").eq(claimed_at))
            .and_where(Expr::col("response").is_null())
            .to_owned();
        Ok(self.db.writer.execute(&update).await?.rows_affected() == 1)
    }

    async fn answer(&self, user_id: &str, key: &str, response: Vec<u8>) -> Result<(), DbErr> {
        let update = Query::update()
            .table(TABLE)
            .value("response", response)
            .and_where(Expr::col("user_id").eq(user_id))
            .and_where(Expr::col("idempotency_key").eq(key))
            .to_owned();
        self.db.writer.execute(&update).await.map(drop)
    }

    async fn release(&self, user_id: &str, key: &str) -> Result<(), DbErr> {
        let delete = Query::delete()
            .from_table(TABLE)
            .and_where(Expr::col("user_id").eq(user_id))
            .and_where(Expr::col("idempotency_key").eq(key))
            .and_where(Expr::col("response").is_null())
            .to_owned();
        self.db.writer.execute(&delete).await.map(drop)
    }

    /// Deletes keys older than `KEPT`, at most once per `SWEEP_EVERY` on
    /// this node.
    async fn sweep(&self) {
        let now = now_micros();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now - last < micros(SWEEP_EVERY)
            || self.last_sweep.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        let delete =
            Query::delete().from_table(TABLE).and_where(Expr::col("created_at").lt(now - micros(KEPT))).to_owned();
        if let Err(err) = self.db.writer.execute(&delete).await {
            tracing::warn!(error = %err, "expired idempotency keys not cleared");
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
