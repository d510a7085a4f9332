//! Files attached to messages: which files a sender may attach, and the
//! record of where each is attached, kept from `message.events`, which
//! lets the members of those conversations see it.

use std::sync::Arc;

use colink_proto::events::v1::Event;
use colink_proto::events::v1::event::Payload;
use colink_proto::files::v1 as pb;
use colink_runtime::error::Violations;
use colink_runtime::events::{EventError, EventHandler};
use colink_runtime::ids::{now_micros, parse_id, parse_id_list};
use colink_runtime::{Caller, Error, Result};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, EntityTrait, FromQueryResult, StatementBuilder, TransactionTrait};

use crate::Shared;
use crate::store::file;

/// Files one message may carry (the messaging service's limit too).
const MAX_FILES: usize = 10;
const TABLE: &str = "file_attachments";

impl Shared {
    pub(crate) async fn check_attachments(
        &self,
        caller: &Caller,
        req: &pb::CheckAttachmentsRequest,
    ) -> Result<pb::CheckAttachmentsResponse> {
        let mut v = Violations::default();
        if req.file_ids.len() > MAX_FILES {
            v.add("file_ids", format!("must list at most {MAX_FILES} files"));
        }
        let ids = parse_id_list(&mut v, "file_ids", &req.file_ids);
        v.check(parse_id("channel_id", &req.channel_id));
        v.finish()?;
        let mut files = Vec::with_capacity(ids.len());
        for id in &ids {
            let found = self.find(id).await?;
            let gone = found.state == pb::FileState::Deleted as i32 || found.state == pb::FileState::Expired as i32;
            if gone {
                return Err(Error::not_found(format!("file {id} not found")));
            }
            if found.owner_id != caller.user_id {
                return Err(Error::denied(format!("file {id} is not yours to attach")));
            }
            if found.state == pb::FileState::PendingUpload as i32 {
                return Err(Error::precondition(format!("file {id} is not confirmed yet")));
            }
            if matches!(
                pb::ScanStatus::try_from(found.scan_status),
                Ok(pb::ScanStatus::Infected | pb::ScanStatus::Failed)
            ) {
                return Err(Error::precondition(format!("file {id} failed its virus scan and cannot be attached")));
            }
            files.push(found);
        }
        Ok(pb::CheckAttachmentsResponse { files: self.files_proto(&files).await? })
    }

    /// The conversations a file is attached to a message in.
    pub(crate) async fn attached_in(&self, file_id: &str) -> Result<Vec<String>> {
        channels_of(&self.db.reader, file_id).await
    }
}

/// The conversations a file is attached to a message in, as `conn` sees them.
pub(crate) async fn channels_of<C: ConnectionTrait>(conn: &C, file_id: &str) -> Result<Vec<String>> {
    #[derive(FromQueryResult)]
    struct Row {
        channel_id: String,
    }
    let query = Query::select()
        .distinct()
        .column("channel_id")
        .from(TABLE)
        .and_where(Expr::col("file_id").eq(file_id))
        .order_by("channel_id", sea_orm::Order::Asc)
        .to_owned();
    let backend = conn.get_database_backend();
    let rows = Row::find_by_statement(StatementBuilder::build(&query, &backend)).all(conn).await?;
    Ok(rows.into_iter().map(|r| r.channel_id).collect())
}

/// The files of some messages' attachment rows.
async fn files_of<C: ConnectionTrait>(conn: &C, message_ids: &[String]) -> Result<Vec<String>> {
    #[derive(FromQueryResult)]
    struct Row {
        file_id: String,
    }
    let query = Query::select()
        .column("file_id")
        .from(TABLE)
        .and_where(Expr::col("message_id").is_in(message_ids.iter().map(String::as_str)))
        .to_owned();
    let backend = conn.get_database_backend();
    let rows = Row::find_by_statement(StatementBuilder::build(&query, &backend)).all(conn).await?;
    Ok(rows.into_iter().map(|r| r.file_id).collect())
}

/// Keeps `file_attachments` from `message.events`: a new message with
/// files adds rows, a deleted or recalled one takes its rows away. Both
/// are idempotent, so a repeated event changes nothing.
pub(crate) struct AttachmentRecorder {
    pub shared: Arc<Shared>,
}

fn failed(err: impl std::fmt::Display) -> EventError {
    EventError::Consumer(err.to_string())
}

#[async_trait::async_trait]
impl EventHandler for AttachmentRecorder {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        // Nearly every message has no files (the event lists those of a
        // deleted or recalled message too): those cost nothing here.
        let removed: &[String] = match &event.payload {
            Some(Payload::MessageChanged(m))
                if m.file_ids.is_empty()
                    || !matches!(event.r#type.as_str(), "message.created" | "message.deleted" | "message.recalled") =>
            {
                return Ok(());
            }
            Some(Payload::MessageChanged(m)) if event.r#type != "message.created" => {
                std::slice::from_ref(&m.message_id)
            }
            Some(Payload::MessageChanged(_)) => &[],
            // Retention lists the expired messages, not their files.
            Some(Payload::MessagesExpired(expired)) if !expired.message_ids.is_empty() => &expired.message_ids,
            _ => return Ok(()),
        };
        let shared = &self.shared;
        let txn = shared.db.writer.begin().await.map_err(failed)?;
        // The files whose conversations change, told in `file.*` events.
        let (kind, changed) = match &event.payload {
            Some(Payload::MessageChanged(m)) if removed.is_empty() => {
                let mut insert = Query::insert();
                insert.into_table(TABLE).columns(["file_id", "message_id", "channel_id", "created_at"]);
                for file_id in &m.file_ids {
                    insert.values_panic([
                        file_id.as_str().into(),
                        m.message_id.as_str().into(),
                        m.channel_id.as_str().into(),
                        now_micros().into(),
                    ]);
                }
                insert.on_conflict(OnConflict::columns(["file_id", "message_id"]).do_nothing().to_owned());
                let added = txn.execute(&insert).await.map_err(failed)?.rows_affected();
                ("file.attached", if added > 0 { m.file_ids.clone() } else { Vec::new() })
            }
            _ => {
                let mut attached = Vec::new();
                for chunk in removed.chunks(500) {
                    attached.extend(files_of(&txn, chunk).await.map_err(failed)?);
                    let delete = Query::delete()
                        .from_table(TABLE)
                        .and_where(Expr::col("message_id").is_in(chunk.iter().map(String::as_str)))
                        .to_owned();
                    txn.execute(&delete).await.map_err(failed)?;
                }
                attached.sort_unstable();
                attached.dedup();
                ("file.detached", attached)
            }
        };
        for file_id in &changed {
            let found = file::Entity::find_by_id(file_id.clone()).one(&txn).await.map_err(failed)?;
            if let Some(found) = found {
                shared.event(&txn, kind, &event.actor_id, &found).await.map_err(failed)?;
            }
        }
        txn.commit().await.map_err(failed)?;
        if !changed.is_empty() {
            shared.outbox.notify();
        }
        Ok(())
    }
}
