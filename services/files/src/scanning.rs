//! The virus scan: a consumer of `file.uploaded` that streams the bytes to
//! clamd and records its verdict. It fails closed: while clamd cannot be
//! reached the event is retried with backoff (by the outbox relay in one
//! process, by the Kafka consumer across nodes) and the file stays PENDING,
//! which nobody can download.

use std::sync::Arc;

use colink_proto::events::v1::Event;
use colink_proto::events::v1::event::Payload;
use colink_proto::files::v1 as pb;
use colink_runtime::events::{EventError, EventHandler};
use colink_runtime::ids::now_micros;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};

use crate::Shared;
use crate::clamd::{Clamd, Verdict};
use crate::store::file;

pub(crate) struct Scanner {
    pub shared: Arc<Shared>,
    pub clamd: Arc<Clamd>,
}

fn failed(err: impl std::fmt::Display) -> EventError {
    EventError::Consumer(err.to_string())
}

#[async_trait::async_trait]
impl EventHandler for Scanner {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        let Some(Payload::FileChanged(changed)) = &event.payload else { return Ok(()) };
        if event.r#type != "file.uploaded" {
            return Ok(());
        }
        let shared = &self.shared;
        let Some(found) =
            file::Entity::find_by_id(changed.file_id.clone()).one(&shared.db.writer).await.map_err(failed)?
        else {
            return Ok(());
        };
        // Scanned already (a repeat of the event), or deleted meanwhile.
        if found.scan_status != pb::ScanStatus::Pending as i32 || found.state != pb::FileState::Ready as i32 {
            return Ok(());
        }
        let mut reader = shared.objects.read(&found.object_key).await.map_err(failed)?;
        let verdict = self.clamd.scan(&mut reader).await.map_err(failed)?;
        drop(reader);
        let (status, signature) = match &verdict {
            Verdict::Clean => (pb::ScanStatus::Clean, String::new()),
            Verdict::Infected(signature) => (pb::ScanStatus::Infected, signature.clone()),
            Verdict::Failed(reason) => (pb::ScanStatus::Failed, reason.clone()),
        };
        let mut object_key = found.object_key.clone();
        if status == pb::ScanStatus::Infected {
            // Moved aside before the verdict is recorded: no URL points there.
            let aside = format!("quarantine/{}", found.file_id);
            shared.objects.rename(&found.object_key, &aside).await.map_err(failed)?;
            object_key = aside;
        }
        let now = now_micros();
        let scanned = file::Model {
            scan_status: status as i32,
            scan_signature: signature,
            scan_time: Some(now),
            object_key,
            updated_at: now,
            ..found.clone()
        };
        let txn = shared.db.writer.begin().await.map_err(failed)?;
        let update = file::Entity::update_many()
            .set(file::ActiveModel {
                scan_status: Set(scanned.scan_status),
                scan_signature: Set(scanned.scan_signature.clone()),
                scan_time: Set(scanned.scan_time),
                object_key: Set(scanned.object_key.clone()),
                updated_at: Set(now),
                ..Default::default()
            })
            .filter(file::Column::FileId.eq(&found.file_id))
            .filter(file::Column::ScanStatus.eq(pb::ScanStatus::Pending as i32))
            .exec(&txn)
            .await
            .map_err(failed)?;
        if update.rows_affected == 1 {
            shared.event(&txn, "file.scanned", "", &scanned).await.map_err(failed)?;
        }
        txn.commit().await.map_err(failed)?;
        if update.rows_affected == 1 {
            match &verdict {
                Verdict::Infected(signature) => {
                    tracing::warn!(file_id = %found.file_id, owner_id = %found.owner_id, %signature, "infected upload quarantined");
                }
                Verdict::Failed(reason) => {
                    tracing::warn!(file_id = %found.file_id, %reason, "the scanner could not scan an upload");
                }
                Verdict::Clean => {}
            }
            shared.outbox.notify();
            shared.tell_owner(&scanned).await;
        }
        Ok(())
    }
}
