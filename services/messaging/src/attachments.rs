//! Files on messages. The files service decides who may attach what (asked
//! at every send); this side remembers which messages carry which file, so
//! that when a file's scan ends every conversation showing it hears so: a
//! clean file becomes downloadable, an infected one leaves the message.

use std::sync::Arc;

use colink_proto::events::v1::Event;
use colink_proto::events::v1::event::Payload;
use colink_proto::files::v1::ScanStatus;
use colink_proto::messaging::v1::AttachmentChanged;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_runtime::db::Db;
use colink_runtime::events::{EventError, EventHandler, mark_processed};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic};
use prost::Message as _;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, Set, StatementBuilder, TransactionTrait,
};

use crate::log;
use crate::store::message;

const TABLE: &str = "message_files";

/// Remembers (file, message, conversation) triples of new messages.
pub(crate) async fn record<C: ConnectionTrait>(conn: &C, attached: &[(String, String, String)]) -> Result<(), DbErr> {
    if attached.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert.into_table(TABLE).columns(["file_id", "message_id", "channel_id"]);
    for (file_id, message_id, channel_id) in attached {
        insert.values_panic([file_id.as_str().into(), message_id.as_str().into(), channel_id.as_str().into()]);
    }
    insert.on_conflict(OnConflict::columns(["file_id", "message_id"]).do_nothing().to_owned());
    conn.execute(&insert).await?;
    Ok(())
}

#[derive(FromQueryResult)]
struct Carrier {
    message_id: String,
}

/// Consumes `file.scanned`: each live message carrying the file gets an
/// `attachment_changed` entry in its conversation's log, and loses the file
/// when it was found infected or could not be scanned.
pub(crate) struct ScanWatcher {
    pub db: Db,
    pub pubsub: Arc<dyn PubSub>,
}

#[async_trait::async_trait]
impl EventHandler for ScanWatcher {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        let failed = |e: DbErr| EventError::Consumer(e.to_string());
        let Some(Payload::FileChanged(file)) = &event.payload else { return Ok(()) };
        if event.r#type != "file.scanned" {
            return Ok(());
        }
        let (status, removed) = match file.scan_status.as_str() {
            "clean" => (ScanStatus::Clean, false),
            "infected" => (ScanStatus::Infected, true),
            "failed" => (ScanStatus::Failed, true),
            _ => return Ok(()),
        };
        let query = Query::select()
            .column("message_id")
            .from(TABLE)
            .and_where(Expr::col("file_id").eq(file.file_id.as_str()))
            .to_owned();
        let backend = self.db.writer.get_database_backend();
        let carriers = Carrier::find_by_statement(StatementBuilder::build(&query, &backend))
            .all(&self.db.writer)
            .await
            .map_err(failed)?;
        if carriers.is_empty() {
            return Ok(());
        }
        let txn = self.db.writer.begin().await.map_err(failed)?;
        if !mark_processed(&txn, &event.event_id).await.map_err(failed)? {
            return Ok(());
        }
        let mut appended = Vec::new();
        for carrier in carriers {
            let Some(found) =
                message::Entity::find_by_id(carrier.message_id.clone()).one(&txn).await.map_err(failed)?
            else {
                continue;
            };
            if found.deleted_at.is_some() || found.recalled {
                continue;
            }
            if removed {
                let kept: Vec<&str> =
                    found.file_ids.split(',').filter(|id| !id.is_empty() && *id != file.file_id).collect();
                let mut change: message::ActiveModel = found.clone().into();
                change.file_ids = Set(kept.join(","));
                change.update(&txn).await.map_err(failed)?;
                let delete = Query::delete()
                    .from_table(TABLE)
                    .and_where(Expr::col("file_id").eq(file.file_id.as_str()))
                    .and_where(Expr::col("message_id").eq(found.message_id.as_str()))
                    .to_owned();
                txn.execute(&delete).await.map_err(failed)?;
            }
            let kind = Kind::AttachmentChanged(AttachmentChanged {
                message_id: found.message_id.clone(),
                thread_id: found.thread_id.clone().unwrap_or_default(),
                file_id: file.file_id.clone(),
                scan_status: status as i32,
                removed,
            });
            appended.push(log::append(&txn, &found.channel_id, &event.actor_id, kind).await.map_err(failed)?);
        }
        txn.commit().await.map_err(failed)?;
        for entry in appended {
            let frame = Frame::Event(entry.encode_to_vec().into()).encode();
            self.pubsub.publish(&channel_topic(&entry.channel_id), frame).await;
        }
        Ok(())
    }
}
