//! How long files are kept: a policy per kind of file from the
//! configuration, which a file's owner may shorten and an admin may
//! lengthen or lift, and a periodic run that expires what is past it. An
//! expired file is never served again; its bytes are deleted when the
//! policy says so. Every run records what it expired, in all and per
//! channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use colink_proto::files::v1 as pb;
use colink_runtime::config::RetentionPolicy;
use colink_runtime::error::Violations;
use colink_runtime::ids::{encode_page_token, new_id, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set,
    StatementBuilder, TransactionTrait,
};
use tokio::sync::watch;

use crate::store::file;
use crate::{Shared, bad_token, quota};

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Files looked at per read of a run.
const BATCH: u64 = 500;

fn policy_days(policy: &RetentionPolicy, file_type: i32) -> u32 {
    match pb::FileType::try_from(file_type) {
        Ok(pb::FileType::Image) => policy.image_days,
        Ok(pb::FileType::Video) => policy.video_days,
        Ok(pb::FileType::Audio) => policy.audio_days,
        Ok(pb::FileType::Document) => policy.document_days,
        _ => policy.other_days,
    }
}

/// When a file expires, if ever.
pub(crate) fn expires_at(f: &file::Model, policy: &RetentionPolicy) -> Option<i64> {
    if f.keep_forever {
        return None;
    }
    let days = if f.retention_days > 0 { f.retention_days as u32 } else { policy_days(policy, f.file_type) };
    (days > 0).then(|| f.uploaded_at.unwrap_or(f.created_at) + i64::from(days) * MICROS_PER_DAY)
}

impl Shared {
    pub(crate) async fn update_file_retention(
        &self,
        caller: &Caller,
        req: &pb::UpdateFileRetentionRequest,
    ) -> Result<pb::UpdateFileRetentionResponse> {
        let mut v = Violations::default();
        v.check(parse_id("file_id", &req.file_id));
        if !(0..=36_500).contains(&req.retention_days) {
            v.add("retention_days", "must be within 0..=36500");
        }
        if req.keep_forever && req.retention_days != 0 {
            v.add("keep_forever", "cannot be combined with retention_days");
        }
        v.finish()?;
        let found = self.visible(caller, &req.file_id).await?;
        let admin = caller.role == Role::Admin;
        if found.owner_id != caller.user_id && !admin {
            return Err(Error::denied("only the owner or an admin can change a file's retention"));
        }
        if found.state == pb::FileState::Deleted as i32 || found.state == pb::FileState::Expired as i32 {
            return Err(Error::precondition("the file was deleted"));
        }
        if !admin {
            if req.keep_forever {
                return Err(Error::denied("only admins can keep a file forever"));
            }
            let allowed = policy_days(&self.config.retention, found.file_type);
            if req.retention_days > 0 && allowed > 0 && req.retention_days as u32 > allowed {
                return Err(Error::denied(format!(
                    "the policy keeps this kind of file {allowed} days; only admins can keep it longer"
                )));
            }
        }
        let change = file::ActiveModel {
            file_id: Set(found.file_id.clone()),
            retention_days: Set(req.retention_days),
            keep_forever: Set(req.keep_forever),
            updated_at: Set(self.clock.now_micros()),
            ..Default::default()
        };
        file::Entity::update(change).exec(&self.db.writer).await?;
        Ok(pb::UpdateFileRetentionResponse { file: Some(self.file_proto(&self.find(&found.file_id).await?).await?) })
    }

    pub(crate) async fn list_retention_runs(
        &self,
        caller: &Caller,
        req: &pb::ListRetentionRunsRequest,
    ) -> Result<pb::ListRetentionRunsResponse> {
        let mut v = Violations::default();
        let page = v.page(req.page_size, &req.page_token, 20, 100);
        v.finish()?;
        if caller.role != Role::Admin {
            return Err(Error::denied("only admins can read retention runs"));
        }
        #[derive(FromQueryResult)]
        struct Row {
            run_id: String,
            started_at: i64,
            finished_at: i64,
            files_deleted: i64,
            bytes_deleted: i64,
            per_channel: String,
        }
        let mut query = Query::select()
            .columns(["run_id", "started_at", "finished_at", "files_deleted", "bytes_deleted", "per_channel"])
            .from("retention_runs")
            .order_by("run_id", sea_orm::Order::Desc)
            .limit(page.limit + 1)
            .to_owned();
        if let Some(after) = &page.after {
            if after.len() != 36 {
                return Err(bad_token());
            }
            query.and_where(Expr::col("run_id").lt(after.as_str()));
        }
        let backend = self.db.reader.get_database_backend();
        let rows = Row::find_by_statement(StatementBuilder::build(&query, &backend)).all(&self.db.reader).await?;
        let more = rows.len() as u64 > page.limit;
        let runs = rows
            .iter()
            .take(page.limit as usize)
            .map(|r| {
                let per_channel: BTreeMap<String, (i64, i64)> =
                    serde_json::from_str(&r.per_channel).unwrap_or_default();
                pb::RetentionRun {
                    run_id: r.run_id.clone(),
                    start_time: Some(timestamp(r.started_at)),
                    finish_time: Some(timestamp(r.finished_at)),
                    files_expired: r.files_deleted,
                    bytes_deleted: r.bytes_deleted,
                    channels: per_channel
                        .into_iter()
                        .map(|(channel_id, (files_expired, bytes_deleted))| pb::ChannelRetention {
                            channel_id,
                            files_expired,
                            bytes_deleted,
                        })
                        .collect(),
                }
            })
            .collect();
        let next_page_token = match (more, rows.get(page.limit as usize - 1)) {
            (true, Some(last)) => encode_page_token(&last.run_id),
            _ => String::new(),
        };
        Ok(pb::ListRetentionRunsResponse { runs, next_page_token })
    }
}

/// Runs retention every `sweep_secs` until `shutdown`.
pub(crate) fn spawn(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(shared.config.retention.sweep_secs);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
            if let Err(err) = run(&shared).await {
                tracing::warn!(error = %err, "retention run failed; retrying at the next");
            }
        }
    });
}

/// One run: expires every file past its time, and records what it did.
pub(crate) async fn run(shared: &Shared) -> Result<()> {
    let policy = &shared.config.retention;
    let started = shared.clock.now_micros();
    let mut per_channel: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let (mut files, mut bytes) = (0_i64, 0_i64);
    let mut after = String::new();
    loop {
        let batch = file::Entity::find()
            .filter(file::Column::State.eq(pb::FileState::Ready as i32))
            .filter(file::Column::KeepForever.eq(false))
            .filter(file::Column::FileId.gt(after.as_str()))
            .order_by_asc(file::Column::FileId)
            .limit(BATCH)
            .all(&shared.db.reader)
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.file_id.clone();
        for found in batch {
            if expires_at(&found, policy).is_none_or(|at| at > started) {
                continue;
            }
            if !expire(shared, &found).await? {
                continue;
            }
            let freed = if policy.auto_delete { found.size_bytes } else { 0 };
            let entry = per_channel.entry(found.channel_id.clone()).or_default();
            entry.0 += 1;
            entry.1 += freed;
            files += 1;
            bytes += freed;
        }
    }
    let finished = shared.clock.now_micros();
    let per_channel_json = serde_json::to_string(&per_channel).map_err(Error::internal)?;
    let insert = Query::insert()
        .into_table("retention_runs")
        .columns(["run_id", "started_at", "finished_at", "files_deleted", "bytes_deleted", "per_channel"])
        .values_panic([
            new_id().into(),
            started.into(),
            finished.into(),
            files.into(),
            bytes.into(),
            per_channel_json.into(),
        ])
        .to_owned();
    shared.db.writer.execute(&insert).await?;
    if files > 0 {
        tracing::info!(files, bytes, channels = per_channel.len(), "retention run expired files");
    }
    Ok(())
}

/// Expires one file; false when another node did first.
async fn expire(shared: &Shared, found: &file::Model) -> Result<bool> {
    let now = shared.clock.now_micros();
    let txn = shared.db.writer.begin().await?;
    let (ready, expired) = (pb::FileState::Ready as i32, pb::FileState::Expired as i32);
    if !file::retire(&txn, &found.file_id, ready, expired, now).await? {
        return Ok(false);
    }
    quota::adjust(&txn, &found.owner_id, quota::Delta { used: -found.size_bytes, files: -1, ..Default::default() })
        .await?;
    let expired = file::Model { state: pb::FileState::Expired as i32, deleted_at: Some(now), ..found.clone() };
    shared.event(&txn, "file.expired", "", &expired).await?;
    txn.commit().await?;
    shared.outbox.notify();
    if shared.config.retention.auto_delete
        && let Err(err) = shared.objects.delete(&found.object_key).await
    {
        tracing::warn!(file_id = %found.file_id, error = %err, "could not delete an expired file's bytes");
    }
    if shared.config.retention.auto_delete {
        crate::thumbnails::remove(shared, &found.file_id).await;
    }
    Ok(true)
}
