//! Reports: anyone who can read a message may report it to the moderators;
//! reports wait in a queue, oldest first, until a moderator dismisses them
//! or acts on them, moderating the message in the same step. The report
//! keeps the message's text as it was when reported, so a later deletion
//! does not erase the evidence. Filing and resolving are audited.

use std::collections::BTreeMap;

use colink_proto::admin::v1 as pb;
use colink_proto::messaging::v1::GetMessageRequest;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::error::{Page, Violations, duplicate_as};
use colink_runtime::ids::{check_text, new_id, now_micros, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use crate::audit::{self, Entry};
use crate::store::{moderation, report};
use crate::{AdminService, moderation_to_pb, page_end, time_cursor};

impl AdminService {
    pub(crate) async fn report_message(&self, caller: &Caller, req: &pb::ReportMessageRequest) -> Result<pb::Report> {
        let mut v = Violations::default();
        let message_id = v.check(parse_id("message_id", &req.message_id)).unwrap_or_default();
        let reason = pb::ReportReason::try_from(req.reason).unwrap_or(pb::ReportReason::Unspecified);
        if reason == pb::ReportReason::Unspecified {
            v.add("reason", "must be SPAM, HARASSMENT, HATE, INAPPROPRIATE, MALICIOUS or OTHER");
        }
        let details = req.details.trim();
        let needed = if reason == pb::ReportReason::Other { 1 } else { 0 };
        v.check(check_text("details", details, needed, 1000));
        v.finish()?;
        // Only someone who can read the message may report it: messaging
        // answers NOT_FOUND or PERMISSION_DENIED for anyone else.
        let request = GetMessageRequest { message_id: message_id.clone() };
        let message =
            call_on_behalf(&self.messaging, caller, request, |mut c, r| async move { c.get_message(r).await })
                .await?
                .message
                .ok_or_else(|| Error::internal("messaging answered without a message"))?;
        if message.sender_id == caller.user_id {
            return Err(Error::precondition("you cannot report your own message"));
        }
        let now = now_micros();
        let row = report::Model {
            report_id: new_id(),
            message_id: message.message_id.clone(),
            channel_id: message.channel_id.clone(),
            reported_user_id: message.sender_id.clone(),
            reporter_id: caller.user_id.clone(),
            reason: reason as i32,
            details: details.to_string(),
            message_text_snapshot: message.text.clone(),
            status: pb::ReportStatus::Open as i32,
            open_key: Some(format!("{}:{}", caller.user_id, message.message_id)),
            resolution_note: String::new(),
            resolved_by: String::new(),
            moderation_id: String::new(),
            created_at: now,
            resolved_at: None,
        };
        let txn = self.db.writer.begin().await?;
        let row = report::ActiveModel::from(row)
            .insert(&txn)
            .await
            .map_err(duplicate_as("you already have an open report on this message"))?;
        let entry =
            report_entry(caller, &row, "report.created", details, BTreeMap::from([("reason", reason_name(reason))]));
        audit::record(&txn, entry).await?;
        txn.commit().await?;
        Ok(self.report_as_seen(caller, row, None))
    }

    pub(crate) async fn list_reports(
        &self,
        caller: &Caller,
        req: &pb::ListReportsRequest,
    ) -> Result<pb::ListReportsResponse> {
        let mut v = Violations::default();
        let status = match pb::ReportStatus::try_from(req.status) {
            Ok(pb::ReportStatus::Unspecified) => pb::ReportStatus::Open,
            Ok(status) => status,
            Err(_) => {
                v.add("status", "must be OPEN, ACTIONED or DISMISSED");
                pb::ReportStatus::Open
            }
        };
        let channel = v.optional_id("channel_id", &req.channel_id);
        let reported = v.optional_id("reported_user_id", &req.reported_user_id);
        let message = v.optional_id("message_id", &req.message_id);
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        let cursor = time_cursor(&mut v, after.as_deref());
        v.finish()?;
        require_moderator(caller)?;
        let mut query = report::Entity::find().filter(report::Column::Status.eq(status as i32));
        if let Some(id) = channel {
            query = query.filter(report::Column::ChannelId.eq(id));
        }
        if let Some(id) = reported {
            query = query.filter(report::Column::ReportedUserId.eq(id));
        }
        if let Some(id) = message {
            query = query.filter(report::Column::MessageId.eq(id));
        }
        if let Some((at, id)) = cursor {
            query = query.filter(
                Condition::any()
                    .add(report::Column::CreatedAt.gt(at))
                    .add(Condition::all().add(report::Column::CreatedAt.eq(at)).add(report::Column::ReportId.gt(id))),
            );
        }
        let mut rows = query
            .order_by_asc(report::Column::CreatedAt)
            .order_by_asc(report::Column::ReportId)
            .limit(limit + 1)
            .all(&self.db.reader)
            .await?;
        let next_page_token = page_end(&mut rows, limit, |r| (r.created_at, r.report_id.as_str()));
        let mut reports = Vec::with_capacity(rows.len());
        for row in rows {
            let moderation = self.moderation_of(&row).await?;
            reports.push(self.report_as_seen(caller, row, moderation));
        }
        Ok(pb::ListReportsResponse { reports, next_page_token })
    }

    pub(crate) async fn get_report(&self, caller: &Caller, raw_id: &str) -> Result<pb::Report> {
        let id = parse_id("report_id", raw_id)?;
        let row = report::Entity::find_by_id(id.clone()).one(&self.db.reader).await?;
        let moderates = matches!(caller.role, Role::Admin | Role::Moderator);
        // To anyone else, someone else's report does not exist.
        let row = row
            .filter(|r| moderates || r.reporter_id == caller.user_id)
            .ok_or_else(|| Error::not_found(format!("report {id} not found")))?;
        let moderation = self.moderation_of(&row).await?;
        Ok(self.report_as_seen(caller, row, moderation))
    }

    /// Closes an open report, moderating its message first when asked to;
    /// the moderation takes a key made from the report, so a retry never
    /// moderates twice.
    pub(crate) async fn resolve_report(&self, caller: &Caller, req: &pb::ResolveReportRequest) -> Result<pb::Report> {
        let mut v = Violations::default();
        let id = v.check(parse_id("report_id", &req.report_id)).unwrap_or_default();
        let resolution = pb::ReportStatus::try_from(req.resolution).unwrap_or(pb::ReportStatus::Unspecified);
        if !matches!(resolution, pb::ReportStatus::Actioned | pb::ReportStatus::Dismissed) {
            v.add("resolution", "must be ACTIONED or DISMISSED");
        }
        let action = pb::ModerationAction::try_from(req.action).unwrap_or(pb::ModerationAction::Unspecified);
        if action != pb::ModerationAction::Unspecified && resolution != pb::ReportStatus::Actioned {
            v.add("action", "may be given only with ACTIONED");
        }
        let note = req.note.trim();
        let needed = if action == pb::ModerationAction::Unspecified { 0 } else { 1 };
        v.check(check_text("note", note, needed, 1000));
        v.finish()?;
        require_moderator(caller)?;
        let row = report::Entity::find_by_id(id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("report {id} not found")))?;
        if row.status != pb::ReportStatus::Open as i32 {
            return Err(Error::precondition("the report is already resolved"));
        }
        let moderation = if action == pb::ModerationAction::Unspecified {
            None
        } else {
            let request = pb::ModerateMessageRequest {
                message_id: row.message_id.clone(),
                action: action as i32,
                reason: note.to_string(),
                report_id: row.report_id.clone(),
                idempotency_key: String::new(),
            };
            Some(self.moderate_message(caller, &request, &format!("report-{}", row.report_id)).await?)
        };
        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        let mut change: report::ActiveModel = row.clone().into();
        change.status = Set(resolution as i32);
        change.open_key = Set(None);
        change.resolution_note = Set(note.to_string());
        change.resolved_by = Set(caller.user_id.clone());
        change.moderation_id = Set(moderation.as_ref().map(|m| m.moderation_id.clone()).unwrap_or_default());
        change.resolved_at = Set(Some(now));
        // Only one moderator closes it: the update finds it open or nothing.
        let closed = report::Entity::update_many()
            .set(change)
            .filter(report::Column::ReportId.eq(row.report_id.as_str()))
            .filter(report::Column::Status.eq(pb::ReportStatus::Open as i32))
            .exec(&txn)
            .await?;
        if closed.rows_affected != 1 {
            return Err(Error::precondition("the report is already resolved"));
        }
        let resolved = report::Entity::find_by_id(row.report_id.clone())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::internal("a resolved report vanished"))?;
        let outcome = if resolution == pb::ReportStatus::Actioned { "actioned" } else { "dismissed" };
        let entry = report_entry(caller, &resolved, "report.resolved", note, BTreeMap::from([("resolution", outcome)]));
        audit::record(&txn, entry).await?;
        txn.commit().await?;
        Ok(self.report_as_seen(caller, resolved, moderation))
    }

    async fn moderation_of(&self, row: &report::Model) -> Result<Option<pb::ModerationRecord>> {
        if row.moderation_id.is_empty() {
            return Ok(None);
        }
        let found = moderation::Entity::find_by_id(row.moderation_id.clone()).one(&self.db.reader).await?;
        Ok(found.map(moderation_to_pb))
    }

    /// A report as the caller may see it: the reporter does not see the
    /// text snapshot.
    fn report_as_seen(
        &self,
        caller: &Caller,
        r: report::Model,
        moderation: Option<pb::ModerationRecord>,
    ) -> pb::Report {
        let moderates = matches!(caller.role, Role::Admin | Role::Moderator);
        pb::Report {
            report_id: r.report_id,
            message_id: r.message_id,
            channel_id: r.channel_id,
            reported_user_id: r.reported_user_id,
            reporter_id: r.reporter_id,
            reason: r.reason,
            details: r.details,
            message_text_snapshot: if moderates { r.message_text_snapshot } else { String::new() },
            status: r.status,
            resolution_note: r.resolution_note,
            resolved_by_id: r.resolved_by,
            moderation,
            create_time: Some(timestamp(r.created_at)),
            resolve_time: r.resolved_at.map(timestamp),
        }
    }
}

fn require_moderator(caller: &Caller) -> Result<()> {
    if matches!(caller.role, Role::Admin | Role::Moderator) {
        Ok(())
    } else {
        Err(Error::denied("only workspace moderators and admins review reports"))
    }
}

fn reason_name(reason: pb::ReportReason) -> String {
    reason.as_str_name().trim_start_matches("REPORT_REASON_").to_lowercase()
}

fn report_entry(
    caller: &Caller,
    row: &report::Model,
    action: &str,
    reason: &str,
    extra: BTreeMap<&'static str, impl Into<String>>,
) -> Entry {
    let mut metadata: BTreeMap<&'static str, String> = extra.into_iter().map(|(k, v)| (k, v.into())).collect();
    metadata.insert("message_id", row.message_id.clone());
    metadata.insert("channel_id", row.channel_id.clone());
    metadata.insert("reported_user_id", row.reported_user_id.clone());
    Entry::by(caller, action, ("report", &row.report_id), reason, metadata)
}
