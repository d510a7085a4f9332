//! Storage quotas: bytes reserved by uploads in flight and used by
//! confirmed files, per user and for the whole workspace. Every change is
//! one conditional `UPDATE`, so concurrent uploads on any number of nodes
//! can never reserve past a limit together.

use colink_runtime::ids::now_micros;
use colink_runtime::{Error, Result};
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict, Query};
use sea_orm::{ConnectionTrait, EntityTrait};

use crate::store::quota::{self, WORKSPACE};

const TABLE: &str = "storage_quotas";

/// The limits that apply where no admin set one.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub user_bytes: i64,
    /// 0: no workspace limit.
    pub workspace_bytes: i64,
}

/// A change to the counters of one user (and the workspace with them).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delta {
    pub reserved: i64,
    pub used: i64,
    pub files: i64,
}

async fn ensure_rows<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<()> {
    let now = now_micros();
    let mut insert = Query::insert();
    insert.into_table(TABLE).columns(["user_id", "used_bytes", "reserved_bytes", "file_count", "updated_at"]);
    for id in [user_id, WORKSPACE] {
        insert.values_panic([id.into(), 0_i64.into(), 0_i64.into(), 0_i64.into(), now.into()]);
    }
    insert.on_conflict(OnConflict::column("user_id").do_nothing().to_owned());
    conn.execute(&insert).await?;
    Ok(())
}

/// Reserves `size` bytes for an upload, or refuses with the numbers.
pub async fn reserve<C: ConnectionTrait>(conn: &C, user_id: &str, size: i64, defaults: Defaults) -> Result<()> {
    ensure_rows(conn, user_id).await?;
    let now = now_micros();
    let reserve_within = |id: &str, limit: Option<i64>| {
        let mut update = Query::update();
        update
            .table(TABLE)
            .value("reserved_bytes", Expr::col("reserved_bytes").add(size))
            .value("updated_at", now)
            .and_where(Expr::col("user_id").eq(id));
        let projected = Expr::col("used_bytes").add(Expr::col("reserved_bytes")).add(size);
        match limit {
            Some(limit) => update.and_where(projected.lte(limit)),
            None => update
                .and_where(projected.lte(Func::coalesce([Expr::col("quota_bytes"), Expr::val(defaults.user_bytes)]))),
        };
        update
    };
    if conn.execute(&reserve_within(user_id, None)).await?.rows_affected() == 0 {
        let row = read(conn, user_id).await?;
        let limit = row.quota_bytes.unwrap_or(defaults.user_bytes);
        return Err(Error::ResourceExhausted(format!(
            "storage quota exceeded: {} bytes used and {} reserved of {limit}; this upload needs {size} more",
            row.used_bytes, row.reserved_bytes
        )));
    }
    // Without a workspace limit the row still counts, for GetQuota.
    let workspace_limit = if defaults.workspace_bytes > 0 { defaults.workspace_bytes } else { i64::MAX };
    if conn.execute(&reserve_within(WORKSPACE, Some(workspace_limit))).await?.rows_affected() == 0 {
        let row = read(conn, WORKSPACE).await?;
        return Err(Error::ResourceExhausted(format!(
            "the workspace's storage is full: {} bytes used and {} reserved of {}; this upload needs {size} more",
            row.used_bytes, row.reserved_bytes, defaults.workspace_bytes
        )));
    }
    Ok(())
}

/// Applies a change to a user's counters and the workspace's. The user's
/// row is always written before the workspace's, as in `reserve`: two
/// transactions that lock them in opposite orders would deadlock on
/// PostgreSQL.
pub async fn adjust<C: ConnectionTrait>(conn: &C, user_id: &str, delta: Delta) -> Result<()> {
    ensure_rows(conn, user_id).await?;
    let now = now_micros();
    for id in [user_id, WORKSPACE] {
        let update = Query::update()
            .table(TABLE)
            .value("reserved_bytes", Expr::col("reserved_bytes").add(delta.reserved))
            .value("used_bytes", Expr::col("used_bytes").add(delta.used))
            .value("file_count", Expr::col("file_count").add(delta.files))
            .value("updated_at", now)
            .and_where(Expr::col("user_id").eq(id))
            .to_owned();
        conn.execute(&update).await?;
    }
    Ok(())
}

/// Sets a user's limit.
pub async fn set_limit<C: ConnectionTrait>(conn: &C, user_id: &str, bytes: i64) -> Result<()> {
    ensure_rows(conn, user_id).await?;
    let update = Query::update()
        .table(TABLE)
        .value("quota_bytes", bytes)
        .value("updated_at", now_micros())
        .and_where(Expr::col("user_id").eq(user_id))
        .to_owned();
    conn.execute(&update).await?;
    Ok(())
}

/// A user's row as stored, or zeros when they never uploaded.
pub async fn read<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<quota::Model> {
    Ok(quota::Entity::find_by_id(user_id.to_string()).one(conn).await?.unwrap_or(quota::Model {
        user_id: user_id.to_string(),
        quota_bytes: None,
        used_bytes: 0,
        reserved_bytes: 0,
        file_count: 0,
        updated_at: 0,
    }))
}
