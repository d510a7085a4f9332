//! The virus scan. `file.uploaded` hands a file to a pool of workers that
//! stream its bytes to clamd, several at a time, and record the verdict.
//!
//! It fails closed: while clamd cannot be reached, a worker retries with
//! backoff and the file stays PENDING, which nobody can download. Nothing
//! is lost when a node stops: every node with a scanner looks for files
//! left PENDING when it starts and every minute after, and scans them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colink_proto::events::v1::Event;
use colink_proto::events::v1::event::Payload;
use colink_proto::files::v1 as pb;
use colink_runtime::events::{EventError, EventHandler};
use colink_runtime::ids::now_micros;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set, TransactionTrait};
use tokio::sync::{mpsc, watch};

use crate::Shared;
use crate::clamd::{Clamd, Unavailable, Verdict};
use crate::store::file;
use crate::thumbnails;

/// Files waiting for a worker, at most; past that, new uploads wait.
const QUEUE: usize = 1024;
/// How often left-over PENDING files are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A file PENDING this long after its upload was probably dropped by a
/// node that stopped; a younger one is likely in some worker's hands.
const LEFT_OVER_AFTER: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The workers, and the files queued or in their hands.
#[derive(Clone)]
pub(crate) struct ScanPool {
    queue: mpsc::Sender<String>,
    taken: Arc<Mutex<HashSet<String>>>,
}

impl ScanPool {
    /// Starts `workers` scanning tasks and the sweep, until `shutdown`.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        clamd: Arc<Clamd>,
        workers: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let pool = Self { queue, taken: Arc::default() };
        for _ in 0..workers {
            let (shared, clamd, receiver, taken) =
                (shared.clone(), clamd.clone(), receiver.clone(), pool.taken.clone());
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        next = async { receiver.lock().await.recv().await } => next,
                        _ = shutdown.wait_for(|stopping| *stopping) => None,
                    };
                    let Some(file_id) = next else { return };
                    // A file cut off by shutdown stays PENDING for the sweep.
                    tokio::select! {
                        _ = scan_until_done(&shared, &clamd, &file_id) => {}
                        _ = shutdown.wait_for(|stopping| *stopping) => return,
                    }
                    if let Ok(mut taken) = taken.lock() {
                        taken.remove(&file_id);
                    }
                }
            });
        }
        let sweeper = pool.clone();
        let mut shutdown = shutdown;
        tokio::spawn(async move {
            // At start, everything left PENDING; later, only what is old.
            let mut older_than = Duration::ZERO;
            loop {
                if let Err(err) = sweeper.sweep(&shared, older_than).await {
                    tracing::warn!(error = %err, "could not look for files waiting for a scan");
                }
                older_than = LEFT_OVER_AFTER;
                tokio::select! {
                    _ = tokio::time::sleep(SWEEP_EVERY) => {}
                    _ = shutdown.wait_for(|stopping| *stopping) => return,
                }
            }
        });
        pool
    }

    /// Queues a file unless it is queued or being scanned already.
    async fn submit(&self, file_id: String) {
        let fresh = self.taken.lock().map(|mut taken| taken.insert(file_id.clone())).unwrap_or(true);
        if fresh && self.queue.send(file_id).await.is_err() {
            tracing::warn!("the scan workers are gone");
        }
    }

    async fn sweep(&self, shared: &Shared, older_than: Duration) -> Result<(), sea_orm::DbErr> {
        let before = now_micros() - older_than.as_micros() as i64;
        let waiting: Vec<String> = file::Entity::find()
            .select_only()
            .column(file::Column::FileId)
            .filter(file::Column::State.eq(pb::FileState::Ready as i32))
            .filter(file::Column::ScanStatus.eq(pb::ScanStatus::Pending as i32))
            .filter(file::Column::UploadedAt.lte(before))
            .limit(QUEUE as u64)
            .into_tuple()
            .all(&shared.db.reader)
            .await?;
        for file_id in waiting {
            self.submit(file_id).await;
        }
        Ok(())
    }
}

/// Hands each confirmed file to the pool.
pub(crate) struct Scanner {
    pub pool: ScanPool,
}

#[async_trait::async_trait]
impl EventHandler for Scanner {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        if let Some(Payload::FileChanged(changed)) = &event.payload
            && event.r#type == "file.uploaded"
        {
            self.pool.submit(changed.file_id.clone()).await;
        }
        Ok(())
    }
}

/// Scans a file, retrying while clamd or the database cannot be reached.
async fn scan_until_done(shared: &Shared, clamd: &Clamd, file_id: &str) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match scan(shared, clamd, file_id).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(%file_id, error = %err, "scan failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error(transparent)]
    Clamd(#[from] Unavailable),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Store(#[from] crate::objects::StoreError),
}

async fn scan(shared: &Shared, clamd: &Clamd, file_id: &str) -> Result<(), ScanError> {
    let Some(found) = file::Entity::find_by_id(file_id.to_string()).one(&shared.db.writer).await? else {
        return Ok(());
    };
    // Scanned already (a repeat), or deleted meanwhile.
    if found.scan_status != pb::ScanStatus::Pending as i32 || found.state != pb::FileState::Ready as i32 {
        return Ok(());
    }
    let mut reader = shared.objects.read(&found.object_key).await?;
    let verdict = clamd.scan(&mut reader).await?;
    drop(reader);
    let (status, signature) = match &verdict {
        Verdict::Clean => (pb::ScanStatus::Clean, String::new()),
        Verdict::Infected(signature) => (pb::ScanStatus::Infected, signature.clone()),
        Verdict::Failed(reason) => (pb::ScanStatus::Failed, reason.clone()),
    };
    // Thumbnails exist before the verdict is recorded, so that a clean file
    // is shown with them at once.
    let made = match status {
        pb::ScanStatus::Clean => thumbnails::make(shared, &found).await?,
        _ => None,
    };
    let (width, height) = made.as_ref().map_or((found.width, found.height), |m| (m.width, m.height));
    let mut object_key = found.object_key.clone();
    if status == pb::ScanStatus::Infected {
        // Moved aside before the verdict is recorded: no URL points there.
        let aside = format!("quarantine/{}", found.file_id);
        shared.objects.rename(&found.object_key, &aside).await?;
        object_key = aside;
    }
    let now = now_micros();
    let scanned = file::Model {
        scan_status: status as i32,
        scan_signature: signature,
        scan_time: Some(now),
        object_key,
        width,
        height,
        updated_at: now,
        ..found.clone()
    };
    let txn = shared.db.writer.begin().await?;
    let update = file::Entity::update_many()
        .set(file::ActiveModel {
            scan_status: Set(scanned.scan_status),
            scan_signature: Set(scanned.scan_signature.clone()),
            scan_time: Set(scanned.scan_time),
            object_key: Set(scanned.object_key.clone()),
            width: Set(width),
            height: Set(height),
            updated_at: Set(now),
            ..Default::default()
        })
        .filter(file::Column::FileId.eq(&found.file_id))
        .filter(file::Column::ScanStatus.eq(pb::ScanStatus::Pending as i32))
        .exec(&txn)
        .await?;
    // A file deleted while it was scanned keeps its verdict (an infected
    // upload is still audited) but not its thumbnails.
    let still_ready = update.rows_affected == 1
        && file::Entity::find_by_id(found.file_id.clone())
            .one(&txn)
            .await?
            .is_some_and(|f| f.state == pb::FileState::Ready as i32);
    if update.rows_affected == 1 {
        if let Some(made) = made.as_ref().filter(|_| still_ready) {
            thumbnails::record(&txn, made).await?;
        }
        shared.event(&txn, "file.scanned", "", &scanned).await.map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    }
    txn.commit().await?;
    if made.is_some() && update.rows_affected == 1 && !still_ready {
        thumbnails::remove(shared, &found.file_id).await;
    }
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
