//! colink.retention.v1: how long conversations keep their messages, and
//! the runs that delete what is older (see `expire` for what deleting
//! does). A run goes through every conversation with a policy, records
//! what it deleted per conversation, and ends with a `retention.run_finished`
//! event for the audit log. One run goes at a time across every node: a
//! run holds the one "running" key of the runs table, and keeps a heartbeat
//! so that a run whose node died can be taken over.

use std::sync::Arc;
use std::time::Duration;

use colink_proto::events::v1::{RetentionPolicyChanged, RetentionRunFinished, event::Payload};
use colink_proto::retention::v1 as pb;
use colink_proto::retention::v1::retention_service_server::{RetentionService as RetentionRpc, RetentionServiceServer};
use colink_runtime::error::{Violations, is_unique_violation};
use colink_runtime::events::{self, MESSAGE_EVENTS};
use colink_runtime::idempotency::key_of;
use colink_runtime::ids::{
    encode_page_token, new_id, now_micros, opt_timestamp, parse_id, parse_optional_id, timestamp,
};
use colink_runtime::{Caller, Error, Result, Role, caller};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::MessagingService;
use crate::store::{channel_head, retention_policy, retention_run, retention_run_channel};

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// The workspace default's row.
const WORKSPACE: &str = "";
/// A running run whose heartbeat is older than this lost its node.
const STALE_AFTER_MICROS: i64 = 120_000_000;
/// Conversations read per query while a run looks for work.
const HEADS_PAGE: u64 = 200;
const RUNNING: &str = "running";

/// The retention service, sharing the messaging service's store.
pub struct Retention(pub(crate) Arc<MessagingService>);

impl Retention {
    pub fn into_server(self) -> RetentionServiceServer<Self> {
        RetentionServiceServer::new(self)
    }

    /// Starts a run by itself whenever the last one started `every` ago or
    /// more, until `shutdown`.
    pub fn schedule(&self, every: Duration, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let shared = self.0.clone();
        // Looking often is cheap (one indexed read), so a run starts soon
        // after it is due whichever node looks first.
        let tick = every.min(Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = shutdown.wait_for(|stopping| *stopping) => return,
                }
                match shared.scheduled_run_due(every).await {
                    Ok(false) => {}
                    Ok(true) => match shared.start_run(pb::RetentionTrigger::Schedule, false, "").await {
                        Ok(_) | Err(Error::FailedPrecondition(_)) => {}
                        Err(err) => tracing::warn!(error = %err, "cannot start the scheduled retention run"),
                    },
                    Err(err) => tracing::warn!(error = %err, "cannot tell whether retention is due"),
                }
            }
        })
    }
}

fn require_admin(caller: &Caller) -> Result<()> {
    if caller.role != Role::Admin {
        return Err(Error::denied("only workspace admins can manage retention"));
    }
    Ok(())
}

fn policy_to_pb(row: &retention_policy::Model) -> pb::MessageRetentionPolicy {
    pb::MessageRetentionPolicy {
        channel_id: row.channel_id.clone(),
        retention_days: row.retention_days,
        updated_by_id: row.updated_by.clone(),
        update_time: (row.updated_at > 0).then(|| timestamp(row.updated_at)),
    }
}

/// The workspace default before any admin set one: keep forever.
fn initial_default() -> retention_policy::Model {
    retention_policy::Model {
        channel_id: WORKSPACE.into(),
        retention_days: 0,
        updated_by: String::new(),
        updated_at: 0,
    }
}

fn run_to_pb(row: &retention_run::Model, channels: Vec<pb::ChannelRetentionReport>) -> pb::MessageRetentionRun {
    let end = row.finished_at.unwrap_or_else(now_micros);
    pb::MessageRetentionRun {
        run_id: row.run_id.clone(),
        trigger: row.trigger,
        dry_run: row.dry_run,
        state: row.state,
        started_by_id: row.started_by.clone(),
        start_time: Some(timestamp(row.started_at)),
        finish_time: opt_timestamp(row.finished_at),
        elapsed_ms: (end - row.started_at).max(0) / 1000,
        message_count: row.message_count,
        channel_count: row.channel_count,
        error: row.error.clone(),
        channels,
    }
}

fn trigger_name(trigger: i32) -> &'static str {
    if trigger == pb::RetentionTrigger::Schedule as i32 { "schedule" } else { "manual" }
}

impl MessagingService {
    async fn workspace_default(&self) -> Result<retention_policy::Model> {
        Ok(retention_policy::Entity::find_by_id(WORKSPACE.to_string())
            .one(&self.db.reader)
            .await?
            .unwrap_or_else(initial_default))
    }

    async fn get_policy(
        &self,
        caller: &Caller,
        req: &pb::GetMessageRetentionPolicyRequest,
    ) -> Result<pb::GetMessageRetentionPolicyResponse> {
        let channel_id = parse_optional_id("channel_id", &req.channel_id)?;
        let Some(channel_id) = channel_id else {
            let policy = policy_to_pb(&self.workspace_default().await?);
            return Ok(pb::GetMessageRetentionPolicyResponse { policy: Some(policy), inherited: false });
        };
        if !matches!(caller.role, Role::Admin | Role::Moderator) {
            self.member_access(caller, &channel_id).await?;
        }
        match retention_policy::Entity::find_by_id(channel_id).one(&self.db.reader).await? {
            Some(own) => {
                Ok(pb::GetMessageRetentionPolicyResponse { policy: Some(policy_to_pb(&own)), inherited: false })
            }
            None => {
                let policy = policy_to_pb(&self.workspace_default().await?);
                Ok(pb::GetMessageRetentionPolicyResponse { policy: Some(policy), inherited: true })
            }
        }
    }

    async fn set_policy(
        &self,
        caller: &Caller,
        req: &pb::SetMessageRetentionPolicyRequest,
    ) -> Result<pb::MessageRetentionPolicy> {
        require_admin(caller)?;
        let mut v = Violations::default();
        let channel_id = v.optional_id("channel_id", &req.channel_id).unwrap_or_default();
        if !(0..=36_500).contains(&req.retention_days) {
            v.add("retention_days", "must be 0 (keep forever) or within 1..=36500");
        }
        v.finish()?;
        if !channel_id.is_empty() {
            self.require_known_channel(&channel_id).await?;
        }
        let row = retention_policy::Model {
            channel_id: channel_id.clone(),
            retention_days: req.retention_days,
            updated_by: caller.user_id.clone(),
            updated_at: now_micros(),
        };
        let txn = self.db.writer.begin().await?;
        let previous = retention_policy::Entity::find_by_id(channel_id.clone()).one(&txn).await?;
        if let Some(same) = previous.as_ref().filter(|p| p.retention_days == req.retention_days) {
            return Ok(policy_to_pb(same));
        }
        let previous_days = match &previous {
            Some(p) => p.retention_days,
            None if channel_id.is_empty() => 0,
            None => -1,
        };
        let active: retention_policy::ActiveModel = row.clone().into();
        retention_policy::Entity::insert(active)
            .on_conflict(
                OnConflict::column(retention_policy::Column::ChannelId)
                    .update_columns([
                        retention_policy::Column::RetentionDays,
                        retention_policy::Column::UpdatedBy,
                        retention_policy::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        self.policy_event(&txn, &caller.user_id, &channel_id, req.retention_days, previous_days).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(policy_to_pb(&row))
    }

    async fn policy_event(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        actor: &str,
        channel_id: &str,
        retention_days: i32,
        previous_days: i32,
    ) -> Result<()> {
        let key = if channel_id.is_empty() { "workspace" } else { channel_id };
        let changed = RetentionPolicyChanged { channel_id: channel_id.to_string(), retention_days, previous_days };
        let event = events::event("retention.policy_updated", actor, Payload::RetentionPolicyUpdated(changed));
        events::enqueue(txn, MESSAGE_EVENTS, key, &event).await?;
        Ok(())
    }

    /// A conversation this service has a log for; NOT_FOUND otherwise.
    async fn require_known_channel(&self, channel_id: &str) -> Result<()> {
        match channel_head::Entity::find_by_id(channel_id.to_string()).one(&self.db.reader).await? {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!("channel {channel_id} not found"))),
        }
    }

    async fn list_policies(
        &self,
        caller: &Caller,
        req: &pb::ListMessageRetentionPoliciesRequest,
    ) -> Result<pb::ListMessageRetentionPoliciesResponse> {
        require_admin(caller)?;
        let mut v = Violations::default();
        let page = v.page(req.page_size, &req.page_token, 50, 100);
        let after = page.after.as_deref().and_then(|token| {
            let parsed = token.split_once('/').and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())));
            if parsed.is_none() {
                v.add("page_token", "is not a token of this list");
            }
            parsed
        });
        v.finish()?;
        let mut query = retention_policy::Entity::find()
            .filter(retention_policy::Column::ChannelId.ne(WORKSPACE))
            .order_by_desc(retention_policy::Column::UpdatedAt)
            .order_by_desc(retention_policy::Column::ChannelId)
            .limit(page.limit + 1);
        if let Some((at, id)) = after {
            query = query.filter(
                Condition::any().add(retention_policy::Column::UpdatedAt.lt(at)).add(
                    Condition::all()
                        .add(retention_policy::Column::UpdatedAt.eq(at))
                        .add(retention_policy::Column::ChannelId.lt(id)),
                ),
            );
        }
        let mut rows = query.all(&self.db.reader).await?;
        let more = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => encode_page_token(&format!("{}/{}", last.updated_at, last.channel_id)),
            _ => String::new(),
        };
        Ok(pb::ListMessageRetentionPoliciesResponse {
            policies: rows.iter().map(policy_to_pb).collect(),
            workspace_default: Some(policy_to_pb(&self.workspace_default().await?)),
            next_page_token,
        })
    }

    async fn delete_policy(&self, caller: &Caller, raw_channel_id: &str) -> Result<pb::MessageRetentionPolicy> {
        require_admin(caller)?;
        let channel_id = parse_id("channel_id", raw_channel_id)?;
        let txn = self.db.writer.begin().await?;
        if let Some(previous) = retention_policy::Entity::find_by_id(channel_id.clone()).one(&txn).await? {
            retention_policy::Entity::delete_by_id(channel_id.clone()).exec(&txn).await?;
            self.policy_event(&txn, &caller.user_id, &channel_id, -1, previous.retention_days).await?;
        }
        txn.commit().await?;
        self.outbox.notify();
        Ok(policy_to_pb(&self.workspace_default().await?))
    }

    /// Whether the schedule should start a run: none started within `every`.
    async fn scheduled_run_due(&self, every: Duration) -> Result<bool> {
        let since = self.clock.now_micros() - i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
        let recent = retention_run::Entity::find()
            .filter(retention_run::Column::DryRun.eq(false))
            .filter(retention_run::Column::StartedAt.gte(since))
            .one(&self.db.reader)
            .await?;
        if recent.is_some() {
            return Ok(false);
        }
        // Nothing to do while every policy keeps messages forever.
        let any = retention_policy::Entity::find()
            .filter(retention_policy::Column::RetentionDays.gt(0))
            .one(&self.db.reader)
            .await?;
        Ok(any.is_some())
    }

    /// Records a new run and starts it in the background. FAILED_PRECONDITION
    /// while another is running.
    async fn start_run(
        self: &Arc<Self>,
        trigger: pb::RetentionTrigger,
        dry_run: bool,
        started_by: &str,
    ) -> Result<retention_run::Model> {
        self.take_over_stale_run(now_micros()).await?;
        let now = self.clock.now_micros();
        let row = retention_run::Model {
            run_id: new_id(),
            trigger: trigger as i32,
            dry_run,
            state: pb::RetentionRunState::Running as i32,
            started_by: started_by.to_string(),
            running_key: Some(RUNNING.into()),
            started_at: now,
            heartbeat_at: now_micros(),
            finished_at: None,
            message_count: 0,
            channel_count: 0,
            error: String::new(),
        };
        let active: retention_run::ActiveModel = row.clone().into();
        if let Err(err) = active.insert(&self.db.writer).await {
            if is_unique_violation(&err) {
                return Err(Error::precondition("a retention run is in progress; wait for it to finish"));
            }
            return Err(err.into());
        }
        let shared = self.clone();
        let run = row.clone();
        tokio::spawn(async move { shared.finish_run(run).await });
        Ok(row)
    }

    /// Fails a run whose node stopped beating, freeing the running key.
    async fn take_over_stale_run(&self, now: i64) -> Result<()> {
        retention_run::Entity::update_many()
            .col_expr(retention_run::Column::State, Expr::val(pb::RetentionRunState::Failed as i32))
            .col_expr(retention_run::Column::RunningKey, Expr::val(Option::<String>::None))
            .col_expr(retention_run::Column::FinishedAt, Expr::val(now))
            .col_expr(retention_run::Column::Error, Expr::val("the node running it stopped"))
            .filter(retention_run::Column::RunningKey.eq(RUNNING))
            .filter(retention_run::Column::HeartbeatAt.lt(now - STALE_AFTER_MICROS))
            .exec(&self.db.writer)
            .await?;
        Ok(())
    }

    /// Runs to the end, then records how it ended.
    async fn finish_run(&self, mut run: retention_run::Model) {
        let result = self.run(&mut run).await;
        let (state, error) = match &result {
            Ok(()) => (pb::RetentionRunState::Succeeded, String::new()),
            Err(err) => {
                tracing::warn!(run_id = %run.run_id, error = %err, "retention run failed");
                (pb::RetentionRunState::Failed, err.to_string())
            }
        };
        if let Err(err) = self.record_end(&run, state, error).await {
            tracing::error!(run_id = %run.run_id, error = %err, "cannot record the end of a retention run");
        }
    }

    async fn record_end(&self, run: &retention_run::Model, state: pb::RetentionRunState, error: String) -> Result<()> {
        let now = self.clock.now_micros();
        let txn = self.db.writer.begin().await?;
        retention_run::Entity::update_many()
            .col_expr(retention_run::Column::State, Expr::val(state as i32))
            .col_expr(retention_run::Column::RunningKey, Expr::val(Option::<String>::None))
            .col_expr(retention_run::Column::FinishedAt, Expr::val(now))
            .col_expr(retention_run::Column::HeartbeatAt, Expr::val(now_micros()))
            .col_expr(retention_run::Column::MessageCount, Expr::val(run.message_count))
            .col_expr(retention_run::Column::ChannelCount, Expr::val(run.channel_count))
            .col_expr(retention_run::Column::Error, Expr::val(error.clone()))
            .filter(retention_run::Column::RunId.eq(&run.run_id))
            .exec(&txn)
            .await?;
        let finished = RetentionRunFinished {
            run_id: run.run_id.clone(),
            trigger: trigger_name(run.trigger).into(),
            dry_run: run.dry_run,
            state: if state == pb::RetentionRunState::Succeeded { "succeeded" } else { "failed" }.into(),
            message_count: run.message_count,
            channel_count: run.channel_count,
            elapsed_ms: (now - run.started_at) / 1000,
            error,
            subject: "messages".into(),
            ..Default::default()
        };
        let event = events::event("retention.run_finished", &run.started_by, Payload::RetentionRunFinished(finished));
        events::enqueue(&txn, MESSAGE_EVENTS, "workspace", &event).await?;
        txn.commit().await?;
        self.outbox.notify();
        if run.message_count > 0 {
            tracing::info!(
                run_id = %run.run_id,
                dry_run = run.dry_run,
                messages = run.message_count,
                channels = run.channel_count,
                elapsed_ms = (now - run.started_at) / 1000,
                "retention run finished"
            );
        }
        Ok(())
    }

    /// Goes through every conversation, in id order, that a policy applies
    /// to, and records what it deleted in each.
    async fn run(&self, run: &mut retention_run::Model) -> Result<()> {
        let now = run.started_at;
        let default_days = self.workspace_default().await?.retention_days;
        let own: std::collections::HashMap<String, i32> = retention_policy::Entity::find()
            .filter(retention_policy::Column::ChannelId.ne(WORKSPACE))
            .all(&self.db.reader)
            .await?
            .into_iter()
            .map(|p| (p.channel_id, p.retention_days))
            .collect();
        let mut after = String::new();
        loop {
            let heads = channel_head::Entity::find()
                .select_only()
                .column(channel_head::Column::ChannelId)
                .filter(channel_head::Column::ChannelId.gt(after.as_str()))
                .order_by_asc(channel_head::Column::ChannelId)
                .limit(HEADS_PAGE)
                .into_tuple::<String>()
                .all(&self.db.reader)
                .await?;
            let Some(last) = heads.last() else { return Ok(()) };
            after = last.clone();
            for channel_id in heads {
                let days = own.get(&channel_id).copied().unwrap_or(default_days);
                if days <= 0 {
                    continue;
                }
                let cutoff = now - i64::from(days) * MICROS_PER_DAY;
                let tally = self.expire_channel(&channel_id, cutoff, run.dry_run, &run.started_by, &run.run_id).await?;
                if tally.count == 0 {
                    continue;
                }
                run.message_count += tally.count;
                run.channel_count += 1;
                let line = retention_run_channel::Model {
                    run_id: run.run_id.clone(),
                    channel_id: channel_id.clone(),
                    retention_days: days,
                    message_count: tally.count,
                    oldest_at: tally.oldest,
                    newest_at: tally.newest,
                };
                let txn = self.db.writer.begin().await?;
                retention_run_channel::ActiveModel::from(line).insert(&txn).await?;
                retention_run::Entity::update_many()
                    .col_expr(retention_run::Column::MessageCount, Expr::val(run.message_count))
                    .col_expr(retention_run::Column::ChannelCount, Expr::val(run.channel_count))
                    .col_expr(retention_run::Column::HeartbeatAt, Expr::val(now_micros()))
                    .filter(retention_run::Column::RunId.eq(&run.run_id))
                    .exec(&txn)
                    .await?;
                txn.commit().await?;
            }
        }
    }

    /// Tells other nodes this run is alive.
    pub(crate) async fn beat(&self, run_id: &str) -> Result<()> {
        retention_run::Entity::update_many()
            .col_expr(retention_run::Column::HeartbeatAt, Expr::val(now_micros()))
            .filter(retention_run::Column::RunId.eq(run_id))
            .exec(&self.db.writer)
            .await?;
        Ok(())
    }

    async fn get_run(&self, caller: &Caller, raw_id: &str) -> Result<pb::MessageRetentionRun> {
        require_admin(caller)?;
        let run_id = parse_id("run_id", raw_id)?;
        let run = retention_run::Entity::find_by_id(run_id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("retention run {run_id} not found")))?;
        let lines = retention_run_channel::Entity::find()
            .filter(retention_run_channel::Column::RunId.eq(&run_id))
            .order_by_asc(retention_run_channel::Column::ChannelId)
            .all(&self.db.reader)
            .await?;
        let channels = lines
            .into_iter()
            .map(|l| pb::ChannelRetentionReport {
                channel_id: l.channel_id,
                retention_days: l.retention_days,
                message_count: l.message_count,
                oldest_time: Some(timestamp(l.oldest_at)),
                newest_time: Some(timestamp(l.newest_at)),
            })
            .collect();
        Ok(run_to_pb(&run, channels))
    }

    async fn list_runs(
        &self,
        caller: &Caller,
        req: &pb::ListMessageRetentionRunsRequest,
    ) -> Result<pb::ListMessageRetentionRunsResponse> {
        require_admin(caller)?;
        let mut v = Violations::default();
        let page = v.page(req.page_size, &req.page_token, 20, 100);
        let after = page.after.as_deref().and_then(|raw| v.check(parse_id("page_token", raw)));
        v.finish()?;
        let mut query = retention_run::Entity::find().order_by_desc(retention_run::Column::RunId).limit(page.limit + 1);
        if let Some(after) = after {
            query = query.filter(retention_run::Column::RunId.lt(after));
        }
        let mut rows = query.all(&self.db.reader).await?;
        let more = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => encode_page_token(&last.run_id),
            _ => String::new(),
        };
        Ok(pb::ListMessageRetentionRunsResponse {
            runs: rows.iter().map(|r| run_to_pb(r, Vec::new())).collect(),
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl RetentionRpc for Retention {
    async fn get_message_retention_policy(
        &self,
        request: Request<pb::GetMessageRetentionPolicyRequest>,
    ) -> Result<Response<pb::GetMessageRetentionPolicyResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.0.get_policy(caller, request.get_ref()).await?))
    }

    async fn set_message_retention_policy(
        &self,
        request: Request<pb::SetMessageRetentionPolicyRequest>,
    ) -> Result<Response<pb::SetMessageRetentionPolicyResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let asked =
            pb::SetMessageRetentionPolicyRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let answer = self
            .0
            .keys
            .once(&caller.user_id, key, "SetMessageRetentionPolicy", &asked, || async {
                Ok(pb::SetMessageRetentionPolicyResponse { policy: Some(self.0.set_policy(caller, &asked).await?) })
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn list_message_retention_policies(
        &self,
        request: Request<pb::ListMessageRetentionPoliciesRequest>,
    ) -> Result<Response<pb::ListMessageRetentionPoliciesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.0.list_policies(caller, request.get_ref()).await?))
    }

    async fn delete_message_retention_policy(
        &self,
        request: Request<pb::DeleteMessageRetentionPolicyRequest>,
    ) -> Result<Response<pb::DeleteMessageRetentionPolicyResponse>, Status> {
        let caller = caller(&request)?;
        let policy = self.0.delete_policy(caller, &request.get_ref().channel_id).await?;
        Ok(Response::new(pb::DeleteMessageRetentionPolicyResponse { policy: Some(policy) }))
    }

    async fn run_message_retention(
        &self,
        request: Request<pb::RunMessageRetentionRequest>,
    ) -> Result<Response<pb::RunMessageRetentionResponse>, Status> {
        let caller = caller(&request)?;
        require_admin(caller)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let asked = pb::RunMessageRetentionRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let answer = self
            .0
            .keys
            .once(&caller.user_id, key, "RunMessageRetention", &asked, || async {
                let run = self.0.start_run(pb::RetentionTrigger::Manual, asked.dry_run, &caller.user_id).await?;
                Ok(pb::RunMessageRetentionResponse { run: Some(run_to_pb(&run, Vec::new())) })
            })
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_message_retention_run(
        &self,
        request: Request<pb::GetMessageRetentionRunRequest>,
    ) -> Result<Response<pb::GetMessageRetentionRunResponse>, Status> {
        let caller = caller(&request)?;
        let run = self.0.get_run(caller, &request.get_ref().run_id).await?;
        Ok(Response::new(pb::GetMessageRetentionRunResponse { run: Some(run) }))
    }

    async fn list_message_retention_runs(
        &self,
        request: Request<pb::ListMessageRetentionRunsRequest>,
    ) -> Result<Response<pb::ListMessageRetentionRunsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.0.list_runs(caller, request.get_ref()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reports_its_elapsed_time_while_running() {
        let started = now_micros() - 2_000_000;
        let row = retention_run::Model {
            run_id: new_id(),
            trigger: pb::RetentionTrigger::Manual as i32,
            dry_run: true,
            state: pb::RetentionRunState::Running as i32,
            started_by: String::new(),
            running_key: Some(RUNNING.into()),
            started_at: started,
            heartbeat_at: started,
            finished_at: None,
            message_count: 0,
            channel_count: 0,
            error: String::new(),
        };
        let shown = run_to_pb(&row, Vec::new());
        assert!(shown.elapsed_ms >= 2_000, "{}", shown.elapsed_ms);
        assert!(shown.finish_time.is_none());
        assert_eq!(trigger_name(row.trigger), "manual");
    }
}
