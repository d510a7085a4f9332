//! How long files are kept: a policy per kind of file, set by an admin or
//! else taken from the configuration, which a file's owner may shorten and
//! an admin may lengthen or lift for one file; and runs, periodic or on
//! demand (also dry), that expire what is past it. An expired file is never
//! served again; its bytes are deleted when its type's policy says so.
//! Every run records what it expired, in all and per channel, and ends with
//! a `retention.run_finished` event for the audit log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use colink_proto::events::v1::{FileRetentionPolicyChanged, RetentionRunFinished, event::Payload};
use colink_proto::files::v1 as pb;
use colink_runtime::config::RetentionPolicy;
use colink_runtime::error::Violations;
use colink_runtime::events::{self, FILE_EVENTS};
use colink_runtime::ids::{encode_page_token, new_id, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set,
    StatementBuilder, TransactionTrait,
};
use tokio::sync::watch;

use crate::store::{file, retention_policy};
use crate::{Shared, bad_token, quota};

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Files looked at per read of a run.
const BATCH: u64 = 500;

/// The file types, in the order policies are listed.
const FILE_TYPES: [pb::FileType; 5] =
    [pb::FileType::Image, pb::FileType::Video, pb::FileType::Audio, pb::FileType::Document, pb::FileType::Other];

/// The retention policy in force for each file type.
pub(crate) struct Policies(Vec<pb::FileRetentionPolicy>);

impl Policies {
    /// The configuration's, before any admin set one.
    fn configured(config: &RetentionPolicy) -> Self {
        Self(
            FILE_TYPES
                .iter()
                .map(|&file_type| {
                    let days = match file_type {
                        pb::FileType::Image => config.image_days,
                        pb::FileType::Video => config.video_days,
                        pb::FileType::Audio => config.audio_days,
                        pb::FileType::Document => config.document_days,
                        _ => config.other_days,
                    };
                    pb::FileRetentionPolicy {
                        file_type: file_type as i32,
                        retention_days: i32::try_from(days).unwrap_or(i32::MAX),
                        auto_delete: config.auto_delete,
                        ..Default::default()
                    }
                })
                .collect(),
        )
    }

    /// The policy of a file type; an unknown one counts as "other".
    pub(crate) fn of(&self, file_type: i32) -> &pb::FileRetentionPolicy {
        let other = pb::FileType::Other as i32;
        let wanted = if FILE_TYPES.iter().any(|t| *t as i32 == file_type) { file_type } else { other };
        // Every type has an entry (`configured` makes one each).
        self.0.iter().find(|p| p.file_type == wanted).unwrap_or(&self.0[self.0.len() - 1])
    }
}

fn policy_of(row: &retention_policy::Model) -> pb::FileRetentionPolicy {
    pb::FileRetentionPolicy {
        file_type: row.file_type,
        retention_days: row.retention_days,
        auto_delete: row.auto_delete,
        updated_by_id: row.updated_by.clone(),
        update_time: Some(timestamp(row.updated_at)),
    }
}

/// When a file expires, if ever.
pub(crate) fn expires_at(f: &file::Model, policies: &Policies) -> Option<i64> {
    if f.keep_forever {
        return None;
    }
    let days = if f.retention_days > 0 { f.retention_days } else { policies.of(f.file_type).retention_days };
    (days > 0).then(|| f.uploaded_at.unwrap_or(f.created_at) + i64::from(days) * MICROS_PER_DAY)
}

impl Shared {
    /// The policies in force now, read on every use: an admin's change
    /// holds on every node at once.
    pub(crate) async fn policies(&self) -> Result<Policies> {
        let mut policies = Policies::configured(&self.config.retention);
        for row in retention_policy::Entity::find().all(&self.db.reader).await? {
            if let Some(slot) = policies.0.iter_mut().find(|p| p.file_type == row.file_type) {
                *slot = policy_of(&row);
            }
        }
        Ok(policies)
    }

    pub(crate) async fn list_retention_policies(
        &self,
        caller: &Caller,
    ) -> Result<pb::ListFileRetentionPoliciesResponse> {
        require_admin(caller)?;
        Ok(pb::ListFileRetentionPoliciesResponse { policies: self.policies().await?.0 })
    }

    pub(crate) async fn set_retention_policy(
        &self,
        caller: &Caller,
        req: &pb::SetFileRetentionPolicyRequest,
    ) -> Result<pb::SetFileRetentionPolicyResponse> {
        let mut v = Violations::default();
        let file_type = pb::FileType::try_from(req.file_type).unwrap_or(pb::FileType::Unspecified);
        if file_type == pb::FileType::Unspecified {
            v.add("file_type", "must be FILE_TYPE_IMAGE, _VIDEO, _AUDIO, _DOCUMENT or _OTHER");
        }
        if !(0..=36_500).contains(&req.retention_days) {
            v.add("retention_days", "must be within 0..=36500");
        }
        v.finish()?;
        require_admin(caller)?;
        let previous = self.policies().await?.of(file_type as i32).retention_days;
        let row = retention_policy::Model {
            file_type: file_type as i32,
            retention_days: req.retention_days,
            auto_delete: req.auto_delete,
            updated_by: caller.user_id.clone(),
            updated_at: self.clock.now_micros(),
        };
        let upsert = OnConflict::column(retention_policy::Column::FileType)
            .update_columns([
                retention_policy::Column::RetentionDays,
                retention_policy::Column::AutoDelete,
                retention_policy::Column::UpdatedBy,
                retention_policy::Column::UpdatedAt,
            ])
            .to_owned();
        let txn = self.db.writer.begin().await?;
        retention_policy::Entity::insert(retention_policy::ActiveModel::from(row.clone()))
            .on_conflict(upsert)
            .exec(&txn)
            .await?;
        let changed = FileRetentionPolicyChanged {
            file_type: file_type.as_str_name().trim_start_matches("FILE_TYPE_").to_ascii_lowercase(),
            retention_days: row.retention_days,
            previous_days: previous,
            auto_delete: row.auto_delete,
        };
        let event = events::event(
            "file_retention.policy_updated",
            &caller.user_id,
            Payload::FileRetentionPolicyUpdated(changed),
        );
        events::enqueue(&txn, FILE_EVENTS, "retention", &event).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(pb::SetFileRetentionPolicyResponse { policy: Some(policy_of(&row)) })
    }

    /// A run started by an admin, answered with its report.
    pub(crate) async fn run_retention_now(
        &self,
        caller: &Caller,
        req: &pb::RunFileRetentionRequest,
    ) -> Result<pb::RunFileRetentionResponse> {
        require_admin(caller)?;
        Ok(pb::RunFileRetentionResponse { run: Some(run(self, req.dry_run, &caller.user_id).await?) })
    }
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
            let allowed = self.policies().await?.of(found.file_type).retention_days;
            if req.retention_days > 0 && allowed > 0 && req.retention_days > allowed {
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
        require_admin(caller)?;
        #[derive(FromQueryResult)]
        struct Row {
            run_id: String,
            started_at: i64,
            finished_at: i64,
            files_deleted: i64,
            bytes_deleted: i64,
            per_channel: String,
            dry_run: bool,
            started_by: String,
        }
        let mut query = Query::select()
            .columns(RUN_COLUMNS)
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
                run_proto(
                    &r.run_id,
                    (r.started_at, r.finished_at),
                    (r.files_deleted, r.bytes_deleted),
                    &per_channel,
                    (r.dry_run, &r.started_by),
                )
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
            if let Err(err) = run(&shared, false, "").await {
                tracing::warn!(error = %err, "retention run failed; retrying at the next");
            }
        }
    });
}

/// One run: expires every file past its time (or, dry, only counts them),
/// records what it did, and tells the audit log.
pub(crate) async fn run(shared: &Shared, dry_run: bool, started_by: &str) -> Result<pb::RetentionRun> {
    let policies = shared.policies().await?;
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
            if expires_at(&found, &policies).is_none_or(|at| at > started) {
                continue;
            }
            let auto_delete = policies.of(found.file_type).auto_delete;
            if !dry_run && !expire(shared, &found, auto_delete).await? {
                continue;
            }
            let freed = if auto_delete { found.size_bytes } else { 0 };
            let entry = per_channel.entry(found.channel_id.clone()).or_default();
            entry.0 += 1;
            entry.1 += freed;
            files += 1;
            bytes += freed;
        }
    }
    let finished = shared.clock.now_micros();
    let per_channel_json = serde_json::to_string(&per_channel).map_err(Error::internal)?;
    let run_id = new_id();
    let insert = Query::insert()
        .into_table("retention_runs")
        .columns(RUN_COLUMNS)
        .values_panic([
            run_id.clone().into(),
            started.into(),
            finished.into(),
            files.into(),
            bytes.into(),
            per_channel_json.into(),
            dry_run.into(),
            started_by.into(),
        ])
        .to_owned();
    let txn = shared.db.writer.begin().await?;
    txn.execute(&insert).await?;
    // The periodic runs that found nothing are not worth an audit entry each.
    if files > 0 || !started_by.is_empty() {
        let finished_event = RetentionRunFinished {
            run_id: run_id.clone(),
            trigger: if started_by.is_empty() { "schedule" } else { "manual" }.into(),
            dry_run,
            state: "succeeded".into(),
            channel_count: per_channel.len() as i64,
            elapsed_ms: (finished - started) / 1000,
            subject: "files".into(),
            file_count: files,
            bytes_deleted: bytes,
            ..Default::default()
        };
        let event = events::event("retention.run_finished", started_by, Payload::RetentionRunFinished(finished_event));
        events::enqueue(&txn, FILE_EVENTS, "retention", &event).await?;
    }
    txn.commit().await?;
    shared.outbox.notify();
    if files > 0 && !dry_run {
        tracing::info!(files, bytes, channels = per_channel.len(), "retention run expired files");
    }
    Ok(run_proto(&run_id, (started, finished), (files, bytes), &per_channel, (dry_run, started_by)))
}

const RUN_COLUMNS: [&str; 8] =
    ["run_id", "started_at", "finished_at", "files_deleted", "bytes_deleted", "per_channel", "dry_run", "started_by"];

fn run_proto(
    run_id: &str,
    (started, finished): (i64, i64),
    (files, bytes): (i64, i64),
    per_channel: &BTreeMap<String, (i64, i64)>,
    (dry_run, started_by): (bool, &str),
) -> pb::RetentionRun {
    pb::RetentionRun {
        run_id: run_id.to_string(),
        start_time: Some(timestamp(started)),
        finish_time: Some(timestamp(finished)),
        files_expired: files,
        bytes_deleted: bytes,
        channels: per_channel
            .iter()
            .map(|(channel_id, &(files_expired, bytes_deleted))| pb::ChannelRetention {
                channel_id: channel_id.clone(),
                files_expired,
                bytes_deleted,
            })
            .collect(),
        dry_run,
        started_by_id: started_by.to_string(),
    }
}

fn require_admin(caller: &Caller) -> Result<()> {
    if caller.role != Role::Admin {
        return Err(Error::denied("only admins manage file retention"));
    }
    Ok(())
}

/// Expires one file; false when another node did first.
async fn expire(shared: &Shared, found: &file::Model, auto_delete: bool) -> Result<bool> {
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
    if auto_delete {
        if let Err(err) = shared.objects.delete(&found.object_key).await {
            tracing::warn!(file_id = %found.file_id, error = %err, "could not delete an expired file's bytes");
        }
        crate::thumbnails::remove(shared, &found.file_id).await;
    }
    Ok(true)
}
