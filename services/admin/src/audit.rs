//! The audit log: who did what to which target, and why. Entries come from
//! the domain events of every service (membership and channel changes,
//! message edits, deletions, recalls and pins, new accounts, reactions on
//! moderated messages) and from the
//! admin service's own actions, written in the same transaction as them.

use std::collections::BTreeMap;

use colink_proto::admin::v1 as pb;
use colink_proto::events::v1::{Event, event::Payload};
use colink_runtime::Caller;
use colink_runtime::db::Db;
use colink_runtime::events::{EventError, EventHandler};
use colink_runtime::ids::{micros_of, new_id, now_micros, timestamp};
use colink_runtime::request_context::RequestContext;
use sea_orm::{ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, TransactionTrait};

use crate::chain;
use crate::store::{audit_log, moderation};

/// One entry before it is stored.
pub(crate) struct Entry {
    pub id: String,
    pub actor_id: String,
    pub actor_role: String,
    pub action: String,
    pub target_type: &'static str,
    pub target_id: String,
    pub reason: String,
    pub metadata: BTreeMap<&'static str, String>,
    pub request_id: String,
    pub client_ip: String,
    pub created_at: i64,
}

impl Entry {
    /// An entry of something the caller is doing in the request being
    /// handled: its id and client address are taken from the request.
    pub(crate) fn by(
        caller: &Caller,
        action: &str,
        target: (&'static str, &str),
        reason: &str,
        metadata: BTreeMap<&'static str, String>,
    ) -> Self {
        let context = RequestContext::current().unwrap_or_default();
        Self {
            id: new_id(),
            actor_id: caller.user_id.clone(),
            actor_role: caller.role.as_str().to_string(),
            action: action.to_string(),
            target_type: target.0,
            target_id: target.1.to_string(),
            reason: reason.to_string(),
            metadata,
            request_id: context.request_id.to_string(),
            client_ip: context.client_ip.to_string(),
            created_at: now_micros(),
        }
    }
}

/// Stores an entry at the head of the audit chain, inside `txn`; storing
/// one with the same id again changes nothing.
pub(crate) async fn record(txn: &DatabaseTransaction, entry: Entry) -> Result<(), DbErr> {
    let metadata = serde_json::to_string(&entry.metadata).map_err(|e| DbErr::Custom(e.to_string()))?;
    let row = audit_log::Model {
        audit_log_id: entry.id,
        actor_id: entry.actor_id,
        actor_role: entry.actor_role,
        action: entry.action,
        target_type: entry.target_type.to_string(),
        target_id: entry.target_id,
        reason: entry.reason,
        metadata,
        request_id: entry.request_id.chars().take(64).collect(),
        client_ip: entry.client_ip.chars().take(64).collect(),
        created_at: entry.created_at,
        chain_position: None,
        previous_hash: String::new(),
        entry_hash: String::new(),
    };
    chain::append(txn, row).await
}

/// The audit entry an event makes, if it is one the audit log keeps. New
/// messages are not audited: they are the content, not changes to it.
fn entry_for(event: &Event) -> Option<Entry> {
    let (target_type, target_id, metadata): (&'static str, String, BTreeMap<&'static str, String>) =
        match event.payload.as_ref()? {
            Payload::UserCreated(u) => ("user", u.user_id.clone(), BTreeMap::from([("username", u.username.clone())])),
            Payload::UserUpdated(u) => (
                "user",
                u.user_id.clone(),
                BTreeMap::from([("username", u.username.clone()), ("display_name", u.display_name.clone())]),
            ),
            Payload::UserRoleChanged(r) => (
                "user",
                r.user_id.clone(),
                BTreeMap::from([
                    ("username", r.username.clone()),
                    ("role", r.role.clone()),
                    ("previous_role", r.previous_role.clone()),
                ]),
            ),
            Payload::UserStatusChanged(u) => {
                ("user", u.user_id.clone(), BTreeMap::from([("username", u.username.clone())]))
            }
            Payload::ChannelCreated(c)
            | Payload::ChannelUpdated(c)
            | Payload::ChannelArchived(c)
            | Payload::ChannelUnarchived(c) => {
                ("channel", c.channel_id.clone(), BTreeMap::from([("name", c.name.clone()), ("kind", c.kind.clone())]))
            }
            Payload::MemberJoined(m) | Payload::MemberLeft(m) | Payload::MemberRoleChanged(m) => {
                let mut metadata = BTreeMap::from([("user_id", m.user_id.clone())]);
                if !m.role.is_empty() {
                    metadata.insert("role", m.role.clone());
                }
                ("channel", m.channel_id.clone(), metadata)
            }
            Payload::MessageChanged(_) if event.r#type == "message.created" => return None,
            Payload::MessageChanged(m) => (
                "message",
                m.message_id.clone(),
                BTreeMap::from([
                    ("channel_id", m.channel_id.clone()),
                    ("sender_id", m.sender_id.clone()),
                    ("seq", m.seq.to_string()),
                ]),
            ),
            // Written by the admin service itself, with the moderation or
            // the sanction.
            Payload::MessageModerated(_) | Payload::UserSanctionChanged(_) => return None,
            // A run's deletions are audited once, when it finishes.
            Payload::MessagesExpired(_) => return None,
            Payload::RetentionPolicyUpdated(p) => (
                "retention_policy",
                if p.channel_id.is_empty() { "workspace".to_string() } else { p.channel_id.clone() },
                BTreeMap::from([
                    ("retention_days", p.retention_days.to_string()),
                    ("previous_days", p.previous_days.to_string()),
                ]),
            ),
            Payload::RetentionRunFinished(r) => {
                let mut metadata = BTreeMap::from([
                    ("trigger", r.trigger.clone()),
                    ("dry_run", r.dry_run.to_string()),
                    ("state", r.state.clone()),
                    ("channel_count", r.channel_count.to_string()),
                    ("elapsed_ms", r.elapsed_ms.to_string()),
                ]);
                if r.subject == "files" {
                    metadata.insert("subject", r.subject.clone());
                    metadata.insert("file_count", r.file_count.to_string());
                    metadata.insert("bytes_deleted", r.bytes_deleted.to_string());
                } else {
                    metadata.insert("message_count", r.message_count.to_string());
                }
                ("retention_run", r.run_id.clone(), metadata)
            }
            Payload::FileRetentionPolicyUpdated(p) => (
                "file_retention_policy",
                p.file_type.clone(),
                BTreeMap::from([
                    ("retention_days", p.retention_days.to_string()),
                    ("previous_days", p.previous_days.to_string()),
                    ("auto_delete", p.auto_delete.to_string()),
                ]),
            ),
            // Kept only for moderated messages; see `AuditRecorder::handle`.
            Payload::ReactionChanged(r) => (
                "message",
                r.message_id.clone(),
                BTreeMap::from([
                    ("channel_id", r.channel_id.clone()),
                    ("sender_id", r.message_sender_id.clone()),
                    ("emoji", r.emoji.clone()),
                    ("seq", r.seq.to_string()),
                ]),
            ),
            // Deletions and what the virus scanner caught; uploads and
            // clean scans are content.
            Payload::FileChanged(f)
                if event.r#type == "file.deleted"
                    || (event.r#type == "file.scanned" && matches!(f.scan_status.as_str(), "infected" | "failed")) =>
            {
                let mut metadata = BTreeMap::from([
                    ("owner_id", f.owner_id.clone()),
                    ("scan_status", f.scan_status.clone()),
                    ("size_bytes", f.size_bytes.to_string()),
                ]);
                if !f.channel_id.is_empty() {
                    metadata.insert("channel_id", f.channel_id.clone());
                }
                if !f.signature.is_empty() {
                    metadata.insert("signature", f.signature.clone());
                }
                ("file", f.file_id.clone(), metadata)
            }
            Payload::FileChanged(_) => return None,
            // Replies are content; following and muting are personal.
            Payload::ThreadChanged(_)
            | Payload::MemberPreferencesChanged(_)
            | Payload::ReadStateChanged(_)
            | Payload::PresenceUpdated(_) => return None,
        };
    let created_at = event.occur_time.as_ref().map_or_else(now_micros, micros_of);
    let reason = match &event.payload {
        Some(Payload::UserRoleChanged(r)) => r.reason.clone(),
        Some(Payload::UserStatusChanged(u)) => u.reason.clone(),
        Some(Payload::RetentionRunFinished(r)) => r.error.clone(),
        _ => String::new(),
    };
    Some(Entry {
        id: event.event_id.clone(),
        actor_id: event.actor_id.clone(),
        actor_role: String::new(),
        action: event.r#type.clone(),
        target_type,
        target_id,
        reason,
        metadata,
        request_id: event.request_id.clone(),
        client_ip: event.client_ip.clone(),
        created_at,
    })
}

/// Consumes `user.events`, `channel.events` and `message.events` into the
/// audit log. An entry takes its event's id, so redelivery adds nothing.
pub(crate) struct AuditRecorder {
    pub db: Db,
}

#[async_trait::async_trait]
impl EventHandler for AuditRecorder {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        let failed = |e: DbErr| EventError::Consumer(e.to_string());
        let Some(entry) = entry_for(event) else { return Ok(()) };
        // Reactions are everyday chatter; on a moderated message they are
        // part of what a moderator may need to review.
        if let Some(Payload::ReactionChanged(r)) = &event.payload {
            let moderated = moderation::Entity::find()
                .filter(moderation::Column::MessageId.eq(&r.message_id))
                .one(&self.db.reader)
                .await
                .map_err(failed)?
                .is_some();
            if !moderated {
                return Ok(());
            }
        }
        let txn = self.db.writer.begin().await.map_err(failed)?;
        record(&txn, entry).await.map_err(failed)?;
        txn.commit().await.map_err(failed)
    }
}

pub(crate) fn to_pb(row: audit_log::Model) -> pb::AuditLog {
    let metadata = serde_json::from_str::<std::collections::HashMap<String, String>>(&row.metadata).unwrap_or_default();
    let actor_role = match row.actor_role.as_str() {
        "admin" => pb::UserRole::Admin,
        "moderator" => pb::UserRole::Moderator,
        "member" => pb::UserRole::Member,
        "guest" => pb::UserRole::Guest,
        _ => pb::UserRole::Unspecified,
    };
    pb::AuditLog {
        audit_log_id: row.audit_log_id,
        actor_id: row.actor_id,
        actor_role: actor_role as i32,
        action: row.action,
        target_type: row.target_type,
        target_id: row.target_id,
        reason: row.reason,
        metadata,
        request_id: row.request_id,
        client_ip: row.client_ip,
        create_time: Some(timestamp(row.created_at)),
        chain_position: row.chain_position.unwrap_or_default(),
        previous_hash: row.previous_hash,
        hash: row.entry_hash,
    }
}

#[cfg(test)]
mod tests {
    use colink_migrations::MigratorTrait;
    use colink_proto::events::v1::MessageChanged;
    use colink_runtime::config::DatabaseConfig;
    use colink_runtime::events::event;

    use super::*;

    #[tokio::test]
    async fn a_redelivered_event_makes_one_entry_and_new_messages_none() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = colink_runtime::db::connect(&DatabaseConfig::default(), dir.path(), "admin").await.unwrap();
        colink_migrations::admin::Migrator::up(&db.writer, None).await.unwrap();
        let recorder = AuditRecorder { db: db.clone() };
        let change = MessageChanged { message_id: "m".into(), channel_id: "c".into(), ..Default::default() };
        let edited = event("message.updated", "u", Payload::MessageChanged(change.clone()));
        let created = event("message.created", "u", Payload::MessageChanged(change));
        for delivery in [&edited, &edited, &created] {
            recorder.handle(delivery).await.unwrap();
        }
        let rows = audit_log::Entity::find().all(&db.reader).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].audit_log_id.as_str(), rows[0].action.as_str()),
            (edited.event_id.as_str(), "message.updated")
        );
    }
}
