//! The admin service: the audit log, fed by every service's domain events,
//! moderation of messages, reports feeding a moderation queue, and account
//! administration (roles, deactivation) through the auth service,
//! sanctions (mutes, workspace bans). Channel bans and setting file
//! retention here are part of the contract but not of this version; those
//! answer UNIMPLEMENTED. Message retention is
//! served by the messaging service (colink.retention.v1).

mod audit;
mod chain;
mod reports;
mod sanctions;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use colink_proto::admin::v1 as pb;
use colink_proto::admin::v1::admin_service_server::{AdminService as AdminRpc, AdminServiceServer};
use colink_proto::auth::v1::auth_service_client::AuthServiceClient;
use colink_proto::auth::v1::{Account, Role as AccountRole, SetAccountRoleRequest, SetAccountStatusRequest};
use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::events::v1::{MessageModerated, event::Payload};
use colink_proto::google_api::HttpBody;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::messaging::v1::{ApplyModerationRequest, ModerationEffect, ReadForModerationRequest};
use colink_runtime::clients::PeerChannel;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::db::Db;
use colink_runtime::error::{Page, Violations};
use colink_runtime::events::{self, AUDIT_EVENTS, EventHandler, Outbox};
use colink_runtime::idempotency::{Keys, key_of};
use colink_runtime::ids::{
    check_idempotency_key, check_text, encode_page_token, idempotency_key, micros_of, new_id, now_micros, parse_id,
    timestamp,
};
use colink_runtime::request_context::RequestContext;
use colink_runtime::{Caller, Error, Result, Role, caller};
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait};
use tonic::{Request, Response, Status};

use crate::audit::Entry;
use crate::store::{audit_log, moderation, report};

/// The chunks of an audit export.
type AuditExport = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<HttpBody, Status>> + Send + 'static>>;

pub struct AdminService {
    db: Db,
    outbox: Outbox,
    messaging: MessagingServiceClient<PeerChannel>,
    auth: AuthServiceClient<PeerChannel>,
    channels: ChannelsServiceClient<PeerChannel>,
    keys: Keys,
}

/// The services the admin service calls.
pub struct Peers {
    pub messaging: PeerChannel,
    pub auth: PeerChannel,
    pub channels: PeerChannel,
}

impl AdminService {
    /// Also chains, in the background, audit entries written before the
    /// chain existed.
    pub fn new(db: Db, outbox: Outbox, peers: Peers) -> Self {
        let sealing = db.clone();
        tokio::spawn(async move {
            match chain::seal_unchained(&sealing).await {
                Ok(0) => {}
                Ok(sealed) => tracing::info!(sealed, "audit entries from before the chain are chained"),
                Err(err) => tracing::error!(error = %err, "cannot chain earlier audit entries"),
            }
        });
        Self {
            outbox,
            messaging: MessagingServiceClient::new(peers.messaging),
            auth: AuthServiceClient::new(peers.auth),
            channels: ChannelsServiceClient::new(peers.channels),
            keys: Keys::new(db.clone()),
            db,
        }
    }

    pub fn into_server(self) -> AdminServiceServer<Self> {
        AdminServiceServer::new(self)
    }

    /// The consumer of `user.events`, `channel.events` and `message.events`
    /// that fills the audit log.
    pub fn audit_recorder(&self) -> Arc<dyn EventHandler> {
        Arc::new(audit::AuditRecorder { db: self.db.clone() })
    }

    async fn list_audit_logs(
        &self,
        caller: &Caller,
        req: &pb::ListAuditLogsRequest,
    ) -> Result<pb::ListAuditLogsResponse> {
        require_admin(caller)?;
        let mut v = Violations::default();
        let actor = v.optional_id("actor_id", &req.actor_id);
        let action = v.check(action_filter(&req.action)).flatten();
        if req.target_type.len() > 32 {
            v.add("target_type", "must be at most 32 characters");
        }
        if req.target_id.len() > 36 {
            v.add("target_id", "must be at most 36 characters");
        }
        let start = req.start_time.as_ref().map(micros_of);
        let end = req.end_time.as_ref().map(micros_of);
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            v.add("end_time", "must be after start_time");
        }
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        let cursor = time_cursor(&mut v, after.as_deref());
        v.finish()?;

        let mut query = audit_log::Entity::find();
        if let Some(actor) = actor {
            query = query.filter(audit_log::Column::ActorId.eq(actor));
        }
        query = match action {
            Some(ActionFilter::Exact(name)) => query.filter(audit_log::Column::Action.eq(name)),
            Some(ActionFilter::Family(prefix)) => query.filter(Expr::col(audit_log::Column::Action).like(prefix)),
            None => query,
        };
        if !req.target_type.is_empty() {
            query = query.filter(audit_log::Column::TargetType.eq(req.target_type.as_str()));
        }
        if !req.target_id.is_empty() {
            query = query.filter(audit_log::Column::TargetId.eq(req.target_id.as_str()));
        }
        if let Some(start) = start {
            query = query.filter(audit_log::Column::CreatedAt.gte(start));
        }
        if let Some(end) = end {
            query = query.filter(audit_log::Column::CreatedAt.lt(end));
        }
        if let Some((at, id)) = cursor {
            query = query.filter(Condition::any().add(audit_log::Column::CreatedAt.lt(at)).add(
                Condition::all().add(audit_log::Column::CreatedAt.eq(at)).add(audit_log::Column::AuditLogId.lt(id)),
            ));
        }
        let mut rows = query
            .order_by_desc(audit_log::Column::CreatedAt)
            .order_by_desc(audit_log::Column::AuditLogId)
            .limit(limit + 1)
            .all(&self.db.reader)
            .await?;
        let next_page_token = page_end(&mut rows, limit, |r| (r.created_at, r.audit_log_id.as_str()));
        Ok(pb::ListAuditLogsResponse { audit_logs: rows.into_iter().map(audit::to_pb).collect(), next_page_token })
    }

    async fn verify_audit_chain(&self, caller: &Caller) -> Result<pb::VerifyAuditChainResponse> {
        require_admin(caller)?;
        Ok(chain::verify(&self.db.reader).await?)
    }

    /// Streams the entries of a time range as JSON Lines, a page a chunk.
    fn export_audit_logs(&self, caller: &Caller, req: &pb::ExportAuditLogsRequest) -> Result<AuditExport> {
        let start = req.start_time.as_ref().map(micros_of);
        let end = req.end_time.as_ref().map(micros_of);
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        require_admin(caller)?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let db = self.db.clone();
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let rows = match chain::page(&db.reader, start, end, after).await {
                    Ok(rows) if rows.is_empty() => return,
                    Ok(rows) => rows,
                    Err(err) => {
                        let _ = tx.send(Err(Status::from(Error::from(err)))).await;
                        return;
                    }
                };
                after = rows.last().and_then(|r| r.chain_position).unwrap_or(i64::MAX);
                let data: String = rows.iter().map(chain::json_line).collect();
                let chunk =
                    HttpBody { content_type: "application/x-ndjson".into(), data: data.into(), extensions: vec![] };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn get_audit_log(&self, caller: &Caller, raw_id: &str) -> Result<pb::AuditLog> {
        require_admin(caller)?;
        let id = colink_runtime::ids::parse_id("audit_log_id", raw_id)?;
        let row = audit_log::Entity::find_by_id(id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("audit log entry {id} not found")))?;
        Ok(audit::to_pb(row))
    }

    /// Applies a moderation action through the messaging service, then
    /// records it, its audit entry and its `message.moderated` event in one
    /// transaction. A retry with the same idempotency key returns the record.
    async fn moderate_message(
        &self,
        caller: &Caller,
        req: &pb::ModerateMessageRequest,
        key: &str,
    ) -> Result<pb::ModerationRecord> {
        if !matches!(caller.role, Role::Admin | Role::Moderator) {
            return Err(Error::denied("only workspace admins and moderators can moderate messages"));
        }
        let mut v = Violations::default();
        let message_id = v.id("message_id", &req.message_id);
        let action = pb::ModerationAction::try_from(req.action).unwrap_or(pb::ModerationAction::Unspecified);
        let (action_name, effect) = match action {
            pb::ModerationAction::Delete => ("delete", ModerationEffect::Delete),
            pb::ModerationAction::Hide => ("hide", ModerationEffect::Hide),
            pb::ModerationAction::Restore => ("restore", ModerationEffect::Restore),
            pb::ModerationAction::Warn => ("warn", ModerationEffect::None),
            pb::ModerationAction::Unspecified => {
                v.add("action", "must be DELETE, HIDE, RESTORE or WARN");
                ("", ModerationEffect::Unspecified)
            }
        };
        let needed = if action == pb::ModerationAction::Restore { 0 } else { 1 };
        v.check(check_text("reason", req.reason.trim(), needed, 1000));
        let report_id = v.optional_id("report_id", &req.report_id);
        let key = v.check(check_idempotency_key("idempotency_key", key)).flatten();
        v.finish()?;
        if let Some(report_id) = &report_id {
            let about = report::Entity::find_by_id(report_id.clone()).one(&self.db.reader).await?;
            if about.is_none_or(|r| r.message_id != message_id) {
                return Err(Error::invalid("report_id", "must name a report about this message"));
            }
        }

        if let Some(key) = &key
            && let Some(done) = moderation_by_key(&self.db.reader, &caller.user_id, key, &message_id).await?
        {
            return repeated(done, action, req.reason.trim());
        }

        // Messaging applies it in any conversation, one the moderator is not
        // in included; applying it twice changes nothing.
        let request = ApplyModerationRequest { message_id: message_id.clone(), effect: effect as i32 };
        let applied =
            call_on_behalf(&self.messaging, caller, request, |mut c, r| async move { c.apply_moderation(r).await })
                .await?;
        let message = applied.message.ok_or_else(|| Error::internal("messaging answered without a message"))?;
        if !applied.changed && action != pb::ModerationAction::Warn {
            let earlier = moderation::Entity::find()
                .filter(moderation::Column::MessageId.eq(&message_id))
                .filter(moderation::Column::Action.eq(action as i32))
                .order_by_desc(moderation::Column::CreatedAt)
                .one(&self.db.reader)
                .await?;
            if let Some(earlier) = earlier {
                return Ok(moderation_to_pb(earlier));
            }
        }

        let now = now_micros();
        let record = moderation::Model {
            moderation_id: new_id(),
            message_id: message.message_id.clone(),
            channel_id: message.channel_id.clone(),
            sender_id: message.sender_id.clone(),
            action: action as i32,
            reason: req.reason.trim().to_string(),
            actor_id: caller.user_id.clone(),
            report_id: report_id.unwrap_or_default(),
            idempotency_key: key,
            created_at: now,
        };
        let event = events::event(
            "message.moderated",
            &caller.user_id,
            Payload::MessageModerated(MessageModerated {
                moderation_id: record.moderation_id.clone(),
                message_id: record.message_id.clone(),
                channel_id: record.channel_id.clone(),
                sender_id: record.sender_id.clone(),
                action: action_name.to_string(),
                reason: record.reason.clone(),
            }),
        );
        let context = RequestContext::current().unwrap_or_default();
        let entry = Entry {
            id: event.event_id.clone(),
            actor_id: caller.user_id.clone(),
            actor_role: caller.role.as_str().to_string(),
            action: "message.moderated".into(),
            target_type: "message",
            target_id: record.message_id.clone(),
            reason: record.reason.clone(),
            metadata: moderation_metadata(&record, action_name, applied.caller_is_member),
            request_id: context.request_id.to_string(),
            client_ip: context.client_ip.to_string(),
            created_at: now,
        };
        let txn = self.db.writer.begin().await?;
        let inserted = moderation::Entity::insert(to_active(&record)).exec(&txn).await;
        if let Err(err) = inserted {
            // A concurrent retry with the same key got there first.
            if let Some(key) = &record.idempotency_key
                && colink_runtime::error::is_unique_violation(&err)
            {
                drop(txn);
                let done = moderation_by_key(&self.db.writer, &caller.user_id, key, &record.message_id)
                    .await?
                    .ok_or_else(|| Error::internal("moderation vanished after a duplicate key"))?;
                return repeated(done, action, &record.reason);
            }
            return Err(err.into());
        }
        audit::record(&txn, entry).await?;
        events::enqueue(&txn, AUDIT_EVENTS, &record.message_id, &event).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(moderation_to_pb(record))
    }
}

impl AdminService {
    /// A message in its context as moderators see it; reading a
    /// conversation the caller is not in is audited before it is answered.
    async fn get_message_context(
        &self,
        caller: &Caller,
        req: &pb::GetMessageContextRequest,
    ) -> Result<pb::GetMessageContextResponse> {
        if !matches!(caller.role, Role::Admin | Role::Moderator) {
            return Err(Error::denied("only workspace admins and moderators can read messages for moderation"));
        }
        let request =
            ReadForModerationRequest { message_id: req.message_id.clone(), before: req.before, after: req.after };
        let read =
            call_on_behalf(&self.messaging, caller, request, |mut c, r| async move { c.read_for_moderation(r).await })
                .await?;
        let audited = !read.caller_is_member;
        if audited {
            let asked = read.messages.iter().find(|m| m.message_id == req.message_id);
            let metadata = BTreeMap::from([
                ("channel_id", asked.map(|m| m.channel_id.clone()).unwrap_or_default()),
                ("sender_id", asked.map(|m| m.sender_id.clone()).unwrap_or_default()),
                ("messages_read", read.messages.len().to_string()),
            ]);
            let entry = Entry::by(caller, "moderation.private_read", ("message", &req.message_id), "", metadata);
            let txn = self.db.writer.begin().await?;
            audit::record(&txn, entry).await?;
            txn.commit().await?;
        }
        Ok(pb::GetMessageContextResponse { messages: read.messages, audited })
    }
}

/// What an audit entry of a moderation says besides its reason.
fn moderation_metadata(
    record: &moderation::Model,
    action_name: &str,
    caller_is_member: bool,
) -> BTreeMap<&'static str, String> {
    let mut metadata = BTreeMap::from([
        ("moderation_id", record.moderation_id.clone()),
        ("moderation_action", action_name.to_string()),
        ("channel_id", record.channel_id.clone()),
        ("sender_id", record.sender_id.clone()),
    ]);
    if !caller_is_member {
        metadata.insert("outside_conversation", "true".into());
    }
    metadata
}

/// The answer to a retried moderation: the record it made, if the retry
/// asks for the same action with the same reason.
fn repeated(done: moderation::Model, action: pb::ModerationAction, reason: &str) -> Result<pb::ModerationRecord> {
    if done.action != action as i32 || done.reason != reason {
        return Err(Error::invalid(
            "idempotency_key",
            "was already used to moderate this message differently; a new action needs a new key",
        ));
    }
    Ok(moderation_to_pb(done))
}

/// The moderation an actor made of a message with an idempotency key.
async fn moderation_by_key<C: sea_orm::ConnectionTrait>(
    conn: &C,
    actor_id: &str,
    key: &str,
    message_id: &str,
) -> Result<Option<moderation::Model>> {
    Ok(moderation::Entity::find()
        .filter(moderation::Column::ActorId.eq(actor_id))
        .filter(moderation::Column::IdempotencyKey.eq(key))
        .filter(moderation::Column::MessageId.eq(message_id))
        .one(conn)
        .await?)
}

/// Reads a page token of the form `<micros>:<id>`, naming a bad one.
fn time_cursor(v: &mut Violations, token: Option<&str>) -> Option<(i64, String)> {
    let token = token?;
    let cursor = token.split_once(':').and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())));
    if cursor.is_none() {
        v.add("page_token", "is not a valid page token");
    }
    cursor
}

/// Cuts `rows` (fetched one longer than `limit`) to the page, and returns
/// the token of the next page, empty at the end.
fn page_end<T>(rows: &mut Vec<T>, limit: u64, key: impl Fn(&T) -> (i64, &str)) -> String {
    if rows.len() as u64 <= limit {
        return String::new();
    }
    rows.truncate(limit as usize);
    rows.last().map(key).map(|(at, id)| encode_page_token(&format!("{at}:{id}"))).unwrap_or_default()
}

fn require_admin(caller: &Caller) -> Result<()> {
    if caller.role == Role::Admin { Ok(()) } else { Err(Error::denied("only workspace admins can read the audit log")) }
}

enum ActionFilter {
    Exact(String),
    /// A LIKE pattern matching every action that starts with a prefix.
    Family(LikeExpr),
}

/// `user.deactivated`, or a family such as `user.*`; empty for any.
fn action_filter(raw: &str) -> Result<Option<ActionFilter>, colink_runtime::error::FieldError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let name = raw.strip_suffix('*').unwrap_or(raw);
    let well_formed = raw.len() <= 64
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if !well_formed || (name.len() != raw.len() && !name.ends_with('.')) {
        return Err(colink_runtime::error::FieldError::new(
            "action",
            "must be an action such as \"channel.member_joined\" or a family such as \"channel.*\"",
        ));
    }
    if name.len() == raw.len() {
        return Ok(Some(ActionFilter::Exact(name.to_string())));
    }
    // `_` is a LIKE wildcard: escape it so the prefix matches literally.
    let escaped = name.replace('_', "\\_");
    Ok(Some(ActionFilter::Family(LikeExpr::new(format!("{escaped}%")).escape('\\'))))
}

fn to_active(m: &moderation::Model) -> moderation::ActiveModel {
    moderation::ActiveModel {
        moderation_id: Set(m.moderation_id.clone()),
        message_id: Set(m.message_id.clone()),
        channel_id: Set(m.channel_id.clone()),
        sender_id: Set(m.sender_id.clone()),
        action: Set(m.action),
        reason: Set(m.reason.clone()),
        actor_id: Set(m.actor_id.clone()),
        report_id: Set(m.report_id.clone()),
        idempotency_key: Set(m.idempotency_key.clone()),
        created_at: Set(m.created_at),
    }
}

fn moderation_to_pb(m: moderation::Model) -> pb::ModerationRecord {
    pb::ModerationRecord {
        moderation_id: m.moderation_id,
        message_id: m.message_id,
        channel_id: m.channel_id,
        sender_id: m.sender_id,
        action: m.action,
        reason: m.reason,
        actor_id: m.actor_id,
        report_id: m.report_id,
        create_time: Some(timestamp(m.created_at)),
    }
}

impl AdminService {
    /// Sets a workspace role through the auth service, which owns accounts;
    /// its `user.role_changed` event becomes the audit entry.
    async fn set_user_role(&self, caller: &Caller, req: &pb::SetUserRoleRequest) -> Result<pb::UserAccountState> {
        let mut v = Violations::default();
        v.check(parse_id("user_id", &req.user_id));
        let role = match pb::UserRole::try_from(req.role) {
            Ok(pb::UserRole::Admin) => AccountRole::Admin,
            Ok(pb::UserRole::Moderator) => AccountRole::Moderator,
            Ok(pb::UserRole::Member) => AccountRole::Member,
            Ok(pb::UserRole::Guest) => AccountRole::Guest,
            Ok(pb::UserRole::Unspecified) | Err(_) => {
                v.add("role", "must be admin, moderator, member or guest");
                AccountRole::Unspecified
            }
        };
        v.check(check_text("reason", &req.reason, 0, 1000));
        v.finish()?;
        require_admin(caller)?;
        let request =
            SetAccountRoleRequest { user_id: req.user_id.clone(), role: role as i32, reason: req.reason.clone() };
        let account =
            call_on_behalf(&self.auth, caller, request, |mut c, r| async move { c.set_account_role(r).await })
                .await?
                .account
                .unwrap_or_default();
        Ok(account_state(account))
    }

    /// Deactivates or reactivates an account through the auth service, which
    /// ends its sessions everywhere; its `user.deactivated` or
    /// `user.reactivated` event becomes the audit entry.
    async fn set_user_status(
        &self,
        caller: &Caller,
        user_id: &str,
        reason: &str,
        deactivated: bool,
    ) -> Result<pb::UserAccountState> {
        let mut v = Violations::default();
        v.check(parse_id("user_id", user_id));
        v.check(check_text("reason", reason, 1, 1000));
        v.finish()?;
        require_admin(caller)?;
        let request = SetAccountStatusRequest { user_id: user_id.to_string(), deactivated, reason: reason.to_string() };
        let account =
            call_on_behalf(&self.auth, caller, request, |mut c, r| async move { c.set_account_status(r).await })
                .await?
                .account
                .unwrap_or_default();
        Ok(account_state(account))
    }
}

/// What DeactivateUser and ReactivateUser ask, alike.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusAsk {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    reason: String,
    #[prost(string, tag = "3")]
    idempotency_key: String,
}

impl AdminService {
    /// Deactivates or reactivates once per idempotency key (the body's, or
    /// the `Idempotency-Key` header).
    async fn set_user_status_once<T>(
        &self,
        request: &Request<T>,
        method: &str,
        mut asked: StatusAsk,
        deactivated: bool,
    ) -> Result<pb::UserAccountState, Status> {
        let caller = caller(request)?;
        let key = key_of(request, &asked.idempotency_key).map_err(Error::from)?;
        asked.idempotency_key.clear();
        let answer = self
            .keys
            .once(&caller.user_id, key, method, &asked, || {
                self.set_user_status(caller, &asked.user_id, &asked.reason, deactivated)
            })
            .await?;
        Ok(answer)
    }
}

/// An account as the admin service shows it.
fn account_state(account: Account) -> pb::UserAccountState {
    pb::UserAccountState {
        user_id: account.user_id,
        role: match AccountRole::try_from(account.role) {
            Ok(AccountRole::Admin) => pb::UserRole::Admin,
            Ok(AccountRole::Moderator) => pb::UserRole::Moderator,
            Ok(AccountRole::Member) => pb::UserRole::Member,
            Ok(AccountRole::Guest) => pb::UserRole::Guest,
            _ => pb::UserRole::Unspecified,
        } as i32,
        deactivated: account.deactivated,
        deactivate_time: account.deactivate_time,
        deactivated_by_id: account.deactivated_by_id,
        deactivation_reason: account.deactivation_reason,
    }
}

#[tonic::async_trait]
impl AdminRpc for AdminService {
    async fn list_audit_logs(
        &self,
        request: Request<pb::ListAuditLogsRequest>,
    ) -> Result<Response<pb::ListAuditLogsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AdminService::list_audit_logs(self, caller, request.get_ref()).await?))
    }

    async fn get_audit_log(
        &self,
        request: Request<pb::GetAuditLogRequest>,
    ) -> Result<Response<pb::GetAuditLogResponse>, Status> {
        let caller = caller(&request)?;
        let audit_log = AdminService::get_audit_log(self, caller, &request.get_ref().audit_log_id).await?;
        Ok(Response::new(pb::GetAuditLogResponse { audit_log: Some(audit_log) }))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AdminService::verify_audit_chain(self, caller).await?))
    }

    type ExportAuditLogsStream = AuditExport;

    async fn export_audit_logs(
        &self,
        request: Request<pb::ExportAuditLogsRequest>,
    ) -> Result<Response<AuditExport>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AdminService::export_audit_logs(self, caller, request.get_ref())?))
    }

    async fn moderate_message(
        &self,
        request: Request<pb::ModerateMessageRequest>,
    ) -> Result<Response<pb::ModerateMessageResponse>, Status> {
        let caller = caller(&request)?;
        let key = idempotency_key(&request.get_ref().idempotency_key, &request);
        let moderation = AdminService::moderate_message(self, caller, request.get_ref(), &key).await?;
        Ok(Response::new(pb::ModerateMessageResponse { moderation: Some(moderation) }))
    }

    async fn get_message_context(
        &self,
        request: Request<pb::GetMessageContextRequest>,
    ) -> Result<Response<pb::GetMessageContextResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AdminService::get_message_context(self, caller, request.get_ref()).await?))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let asked = |r: &pb::DeactivateUserRequest| StatusAsk {
            user_id: r.user_id.clone(),
            reason: r.reason.clone(),
            idempotency_key: r.idempotency_key.clone(),
        };
        let state = self.set_user_status_once(&request, "DeactivateUser", asked(request.get_ref()), true).await?;
        Ok(Response::new(pb::DeactivateUserResponse { state: Some(state) }))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::ReactivateUserResponse>, Status> {
        let asked = |r: &pb::ReactivateUserRequest| StatusAsk {
            user_id: r.user_id.clone(),
            reason: r.reason.clone(),
            idempotency_key: r.idempotency_key.clone(),
        };
        let state = self.set_user_status_once(&request, "ReactivateUser", asked(request.get_ref()), false).await?;
        Ok(Response::new(pb::ReactivateUserResponse { state: Some(state) }))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        let caller = caller(&request)?;
        let state = AdminService::set_user_role(self, caller, request.get_ref()).await?;
        Ok(Response::new(pb::SetUserRoleResponse { state: Some(state) }))
    }

    async fn report_message(
        &self,
        request: Request<pb::ReportMessageRequest>,
    ) -> Result<Response<pb::ReportMessageResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let asked = pb::ReportMessageRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let report = self
            .keys
            .once(&caller.user_id, key, "ReportMessage", &asked, || async {
                Ok(pb::ReportMessageResponse { report: Some(self.report_message(caller, &asked).await?) })
            })
            .await?;
        Ok(Response::new(report))
    }

    async fn list_reports(
        &self,
        request: Request<pb::ListReportsRequest>,
    ) -> Result<Response<pb::ListReportsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AdminService::list_reports(self, caller, request.get_ref()).await?))
    }

    async fn get_report(
        &self,
        request: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::GetReportResponse>, Status> {
        let caller = caller(&request)?;
        let report = AdminService::get_report(self, caller, &request.get_ref().report_id).await?;
        Ok(Response::new(pb::GetReportResponse { report: Some(report) }))
    }

    async fn resolve_report(
        &self,
        request: Request<pb::ResolveReportRequest>,
    ) -> Result<Response<pb::ResolveReportResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let asked = pb::ResolveReportRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let resolved = self
            .keys
            .once(&caller.user_id, key, "ResolveReport", &asked, || async {
                Ok(pb::ResolveReportResponse { report: Some(self.resolve_report(caller, &asked).await?) })
            })
            .await?;
        Ok(Response::new(resolved))
    }

    async fn create_sanction(
        &self,
        request: Request<pb::CreateSanctionRequest>,
    ) -> Result<Response<pb::CreateSanctionResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let asked = pb::CreateSanctionRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let created = self
            .keys
            .once(&caller.user_id, key, "CreateSanction", &asked, || async {
                Ok(pb::CreateSanctionResponse { sanction: Some(self.create_sanction(caller, &asked).await?) })
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn list_sanctions(
        &self,
        request: Request<pb::ListSanctionsRequest>,
    ) -> Result<Response<pb::ListSanctionsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AdminService::list_sanctions(self, caller, request.get_ref()).await?))
    }

    async fn lift_sanction(
        &self,
        request: Request<pb::LiftSanctionRequest>,
    ) -> Result<Response<pb::LiftSanctionResponse>, Status> {
        let caller = caller(&request)?;
        let sanction = AdminService::lift_sanction(self, caller, request.get_ref()).await?;
        Ok(Response::new(pb::LiftSanctionResponse { sanction: Some(sanction) }))
    }
}
