//! The audit log's hash chain. Every entry has a place in one chain and
//! carries the hash of the entry before it; its own hash covers all its
//! fields and that link. An entry edited, removed or slipped in through the
//! database afterwards no longer fits, and `verify` says where. The head
//! (newest position and hash) lives in a row of its own that each append
//! locks, so appends from every node form one chain, and dropping the
//! newest entries shows too.

use std::collections::BTreeMap;

use colink_proto::admin::v1 as pb;
use colink_runtime::db::Db;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use sha2::{Digest, Sha256};

use crate::store::{audit_chain_head, audit_log};

const HEAD: i32 = 1;
/// Entries read or sealed at a time.
const BATCH: u64 = 1_000;

/// The hash of an entry at its place in the chain: SHA-256, in hex, over
/// every field, each preceded by its length, so that no two entries can
/// be written the same way.
pub(crate) fn entry_hash(row: &audit_log::Model, position: i64, previous_hash: &str) -> String {
    let mut hasher = Sha256::new();
    let position = position.to_string();
    let created_at = row.created_at.to_string();
    for field in [
        "colink.audit.v1",
        position.as_str(),
        previous_hash,
        &row.audit_log_id,
        &row.actor_id,
        &row.actor_role,
        &row.action,
        &row.target_type,
        &row.target_id,
        &row.reason,
        &row.metadata,
        &row.request_id,
        &row.client_ip,
        created_at.as_str(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes the chain's head for the rest of `txn`.
async fn lock_head(txn: &DatabaseTransaction) -> Result<audit_chain_head::Model, DbErr> {
    audit_chain_head::Entity::find_by_id(HEAD)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("the audit chain head is missing".into()))
}

async fn move_head(txn: &DatabaseTransaction, position: i64, hash: &str) -> Result<(), DbErr> {
    audit_chain_head::Entity::update_many()
        .col_expr(audit_chain_head::Column::Position, Expr::value(position))
        .col_expr(audit_chain_head::Column::Hash, Expr::value(hash))
        .filter(audit_chain_head::Column::ChainId.eq(HEAD))
        .exec(txn)
        .await?;
    Ok(())
}

/// Appends an entry at the head of the chain, inside `txn`. An entry with
/// the same id already there (a redelivered event) changes nothing.
pub(crate) async fn append(txn: &DatabaseTransaction, mut row: audit_log::Model) -> Result<(), DbErr> {
    let head = lock_head(txn).await?;
    if audit_log::Entity::find_by_id(row.audit_log_id.clone()).one(txn).await?.is_some() {
        return Ok(());
    }
    let position = head.position + 1;
    row.entry_hash = entry_hash(&row, position, &head.hash);
    row.previous_hash = head.hash;
    row.chain_position = Some(position);
    let hash = row.entry_hash.clone();
    audit_log::ActiveModel::from(row).insert(txn).await?;
    move_head(txn, position, &hash).await
}

/// Chains the entries written before the chain existed, oldest first.
pub(crate) async fn seal_unchained(db: &Db) -> Result<u64, DbErr> {
    let mut sealed = 0;
    loop {
        let txn = db.writer.begin().await?;
        let mut head = lock_head(&txn).await?;
        let rows = audit_log::Entity::find()
            .filter(audit_log::Column::ChainPosition.is_null())
            .order_by_asc(audit_log::Column::CreatedAt)
            .order_by_asc(audit_log::Column::AuditLogId)
            .limit(BATCH)
            .all(&txn)
            .await?;
        if rows.is_empty() {
            return Ok(sealed);
        }
        for row in rows {
            let position = head.position + 1;
            let hash = entry_hash(&row, position, &head.hash);
            audit_log::Entity::update_many()
                .col_expr(audit_log::Column::ChainPosition, Expr::value(position))
                .col_expr(audit_log::Column::PreviousHash, Expr::value(head.hash.as_str()))
                .col_expr(audit_log::Column::EntryHash, Expr::value(hash.as_str()))
                .filter(audit_log::Column::AuditLogId.eq(row.audit_log_id.as_str()))
                .exec(&txn)
                .await?;
            head = audit_chain_head::Model { chain_id: HEAD, position, hash };
            sealed += 1;
        }
        move_head(&txn, head.position, &head.hash).await?;
        txn.commit().await?;
    }
}

/// Walks the chain from its first entry and reports the first broken link.
pub(crate) async fn verify<C: ConnectionTrait>(conn: &C) -> Result<pb::VerifyAuditChainResponse, DbErr> {
    let head = audit_chain_head::Entity::find_by_id(HEAD)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("the audit chain head is missing".into()))?;
    let mut report = pb::VerifyAuditChainResponse {
        intact: true,
        head_hash: head.hash.clone(),
        head_position: head.position,
        ..Default::default()
    };
    let mut previous_hash = String::new();
    let mut expected = 1_i64;
    loop {
        // Entries appended since the head was read are left for next time.
        let rows = audit_log::Entity::find()
            .filter(audit_log::Column::ChainPosition.gte(expected))
            .filter(audit_log::Column::ChainPosition.lte(head.position))
            .order_by_asc(audit_log::Column::ChainPosition)
            .limit(BATCH)
            .all(conn)
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let position = row.chain_position.unwrap_or_default();
            let problem = if position != expected {
                Some(format!("the entry at position {expected} is missing"))
            } else if row.previous_hash != previous_hash {
                Some("its link to the entry before it does not match: that entry was replaced".to_string())
            } else if entry_hash(&row, position, &previous_hash) != row.entry_hash {
                Some("it was changed after it was written".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Ok(broken(report, &row.audit_log_id, expected, problem));
            }
            report.entries_checked += 1;
            previous_hash = row.entry_hash;
            expected += 1;
        }
    }
    let newest = expected - 1;
    if newest != head.position || previous_hash != head.hash {
        let problem = if newest < head.position {
            format!("the newest entries, from position {expected} to {}, are missing", head.position)
        } else {
            "the chain does not end where its head says".to_string()
        };
        return Ok(broken(report, "", expected.min(head.position.max(1)), problem));
    }
    Ok(report)
}

fn broken(
    report: pb::VerifyAuditChainResponse,
    audit_log_id: &str,
    position: i64,
    problem: String,
) -> pb::VerifyAuditChainResponse {
    pb::VerifyAuditChainResponse {
        intact: false,
        first_broken_audit_log_id: audit_log_id.to_string(),
        first_broken_position: position,
        problem,
        ..report
    }
}

/// One page of entries in a time range, oldest first by chain position,
/// after `after`.
pub(crate) async fn page<C: ConnectionTrait>(
    conn: &C,
    start: Option<i64>,
    end: Option<i64>,
    after: i64,
) -> Result<Vec<audit_log::Model>, DbErr> {
    let mut query = audit_log::Entity::find().filter(audit_log::Column::ChainPosition.gt(after));
    if let Some(start) = start {
        query = query.filter(audit_log::Column::CreatedAt.gte(start));
    }
    if let Some(end) = end {
        query = query.filter(audit_log::Column::CreatedAt.lt(end));
    }
    query.order_by_asc(audit_log::Column::ChainPosition).limit(BATCH).all(conn).await
}

/// An entry as one line of the JSON Lines export.
pub(crate) fn json_line(row: &audit_log::Model) -> String {
    let metadata: BTreeMap<String, String> = serde_json::from_str(&row.metadata).unwrap_or_default();
    let line = serde_json::json!({
        "audit_log_id": row.audit_log_id,
        "chain_position": row.chain_position,
        "actor_id": row.actor_id,
        "actor_role": row.actor_role,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        "reason": row.reason,
        "metadata": metadata,
        "request_id": row.request_id,
        "client_ip": row.client_ip,
        // RFC 3339, as prost writes timestamps.
        "create_time": colink_runtime::ids::timestamp(row.created_at).to_string(),
        "previous_hash": row.previous_hash,
        "hash": row.entry_hash,
    });
    let mut text = line.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use colink_migrations::MigratorTrait;
    use colink_runtime::config::DatabaseConfig;
    use sea_orm::ActiveModelTrait;

    use super::*;

    fn unchained(id: &str, created_at: i64) -> audit_log::Model {
        audit_log::Model {
            audit_log_id: id.into(),
            actor_id: "u".into(),
            actor_role: String::new(),
            action: "channel.created".into(),
            target_type: "channel".into(),
            target_id: "c".into(),
            reason: String::new(),
            metadata: "{}".into(),
            request_id: String::new(),
            client_ip: String::new(),
            created_at,
            chain_position: None,
            previous_hash: String::new(),
            entry_hash: String::new(),
        }
    }

    #[tokio::test]
    async fn entries_from_before_the_chain_are_chained_oldest_first_then_new_ones_follow() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = colink_runtime::db::connect(&DatabaseConfig::default(), dir.path(), "admin").await.unwrap();
        colink_migrations::admin::Migrator::up(&db.writer, None).await.unwrap();
        for (id, at) in [("b", 2), ("a", 1), ("c", 3)] {
            audit_log::ActiveModel::from(unchained(id, at)).insert(&db.writer).await.unwrap();
        }
        assert_eq!(seal_unchained(&db).await.unwrap(), 3);
        assert_eq!(seal_unchained(&db).await.unwrap(), 0, "once");
        let txn = db.writer.begin().await.unwrap();
        append(&txn, unchained("d", 4)).await.unwrap();
        append(&txn, unchained("d", 4)).await.unwrap();
        txn.commit().await.unwrap();

        let report = verify(&db.reader).await.unwrap();
        assert!(report.intact, "{report:?}");
        assert_eq!((report.entries_checked, report.head_position), (4, 4));
        let order: Vec<String> =
            page(&db.reader, None, None, 0).await.unwrap().into_iter().map(|r| r.audit_log_id).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        // Dropping the newest entry shows too.
        audit_log::Entity::delete_by_id("d").exec(&db.writer).await.unwrap();
        let report = verify(&db.reader).await.unwrap();
        assert!(!report.intact);
        assert_eq!(report.first_broken_position, 4);
        assert!(report.problem.contains("newest"), "{}", report.problem);
    }
}
