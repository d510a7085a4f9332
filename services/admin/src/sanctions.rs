//! Sanctions: a mute (the user reads but cannot post, react, upload or
//! type) or a ban, in the whole workspace or in one channel, until an
//! expiry or for good. A workspace ban suspends the account in the auth
//! service, which ends its sessions at once. Mutes and channel bans are
//! restrictions the channels service keeps (a channel ban takes the user
//! out of the channel and keeps them out); mutes also reach the messaging
//! service as `user.sanctioned` events. Moderators may mute anyone but
//! admins and ban from a channel; workspace bans and permanent sanctions
//! need an admin. Everything is audited.

use std::collections::BTreeMap;

use colink_proto::admin::v1 as pb;
use colink_proto::auth::v1::{GetAccountRequest, Role as AccountRole, SetAccountSuspensionRequest};
use colink_proto::channels::v1::{RestrictionKind, SetMemberRestrictionRequest};
use colink_proto::events::v1::{UserSanctionChanged, event::Payload};
use colink_runtime::clients::call_on_behalf;
use colink_runtime::error::{Page, Violations, is_unique_violation};
use colink_runtime::events::{self, USER_EVENTS};
use colink_runtime::ids::{check_text, micros_of, new_id, now_micros, opt_timestamp, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use crate::audit::{self, Entry};
use crate::store::sanction;
use crate::{AdminService, page_end, time_cursor};

const MAX_MICROS: i64 = 10 * 366 * 86_400_000_000;

fn kind_name(kind: i32) -> &'static str {
    if kind == pb::SanctionKind::Ban as i32 { "ban" } else { "mute" }
}

fn to_pb(row: &sanction::Model, now: i64) -> pb::Sanction {
    pb::Sanction {
        sanction_id: row.sanction_id.clone(),
        user_id: row.user_id.clone(),
        kind: row.kind,
        channel_id: row.channel_id.clone(),
        reason: row.reason.clone(),
        created_by_id: row.created_by.clone(),
        create_time: Some(timestamp(row.created_at)),
        expire_time: opt_timestamp(row.expire_at),
        lift_time: opt_timestamp(row.lifted_at),
        lifted_by_id: row.lifted_by.clone(),
        lift_reason: row.lift_reason.clone(),
        active: row.active(now),
    }
}

/// Whether the caller may create (or lift) a sanction of this kind and
/// scope, lasting until `expire_at`.
fn require_may_sanction(caller: &Caller, kind: i32, channel_id: &str, expire_at: Option<i64>) -> Result<()> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Moderator if kind == pb::SanctionKind::Ban as i32 && channel_id.is_empty() => {
            Err(Error::denied("only admins can ban from the workspace"))
        }
        Role::Moderator if expire_at.is_none() => Err(Error::denied("only admins can sanction for good")),
        Role::Moderator => Ok(()),
        _ => Err(Error::denied("only workspace moderators and admins can sanction users")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Restrict {
    Apply,
    Lift,
    Check,
}

fn is_workspace_ban(row: &sanction::Model) -> bool {
    row.kind == pb::SanctionKind::Ban as i32 && row.channel_id.is_empty()
}

impl AdminService {
    pub(crate) async fn create_sanction(
        &self,
        caller: &Caller,
        req: &pb::CreateSanctionRequest,
    ) -> Result<pb::Sanction> {
        let mut v = Violations::default();
        let user_id = v.id("user_id", &req.user_id);
        let kind = pb::SanctionKind::try_from(req.kind).unwrap_or(pb::SanctionKind::Unspecified);
        if kind == pb::SanctionKind::Unspecified {
            v.add("kind", "must be BAN or MUTE");
        }
        let channel_id = v.optional_id("channel_id", &req.channel_id).unwrap_or_default();
        let reason = req.reason.trim();
        v.check(check_text("reason", reason, 1, 1000));
        let now = now_micros();
        let expire_at = req.expire_time.as_ref().map(micros_of);
        if let Some(at) = expire_at
            && (at <= now || at > now + MAX_MICROS)
        {
            v.add("expire_time", "must be in the future and within 10 years");
        }
        v.finish()?;
        require_may_sanction(caller, kind as i32, &channel_id, expire_at)?;
        if user_id == caller.user_id {
            return Err(Error::precondition("you cannot sanction yourself"));
        }
        let active_key = format!("{user_id}:{}:{channel_id}", kind as i32);
        let row = sanction::Model {
            sanction_id: new_id(),
            user_id: user_id.clone(),
            kind: kind as i32,
            channel_id: channel_id.clone(),
            reason: reason.to_string(),
            created_by: caller.user_id.clone(),
            created_at: now,
            expire_at,
            lifted_at: None,
            lifted_by: String::new(),
            lift_reason: String::new(),
            active_key: Some(active_key.clone()),
        };
        if !channel_id.is_empty() {
            // The channel exists and can take this sanction, before anything changes.
            self.restrict(caller, &row, Restrict::Check).await?;
        }
        let request = GetAccountRequest { user_id: user_id.clone() };
        let account = call_on_behalf(&self.auth, caller, request, |mut c, r| async move { c.get_account(r).await })
            .await?
            .account
            .ok_or_else(|| Error::internal("auth answered without an account"))?;
        if account.role == AccountRole::Admin as i32 {
            return Err(Error::precondition("admins cannot be sanctioned"));
        }
        // A sanction of the same scope that ran out no longer holds its key.
        sanction::Entity::update_many()
            .col_expr(sanction::Column::ActiveKey, Expr::val(Option::<String>::None))
            .filter(sanction::Column::ActiveKey.eq(&active_key))
            .filter(sanction::Column::ExpireAt.lte(now))
            .exec(&self.db.writer)
            .await?;
        let held =
            sanction::Entity::find().filter(sanction::Column::ActiveKey.eq(&active_key)).one(&self.db.reader).await?;
        if held.is_some() {
            return Err(Error::AlreadyExists("an active sanction of this kind and scope exists; lift it first".into()));
        }
        if is_workspace_ban(&row) {
            // Permanent bans suspend until a date no one reaches.
            let until = expire_at.unwrap_or(now + 100 * MAX_MICROS);
            self.suspend(caller, &user_id, Some(until)).await?;
        } else {
            self.restrict(caller, &row, Restrict::Apply).await?;
        }
        let txn = self.db.writer.begin().await?;
        if let Err(err) = sanction::ActiveModel::from(row.clone()).insert(&txn).await {
            if is_unique_violation(&err) {
                return Err(Error::AlreadyExists(
                    "an active sanction of this kind and scope exists; lift it first".into(),
                ));
            }
            return Err(err.into());
        }
        self.record_change(&txn, caller, &row, "sanction.created", "user.sanctioned", reason).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(to_pb(&row, now))
    }

    /// Puts a mute or channel ban in force in the channels service, lifts
    /// it, or only checks that its channel can take it.
    async fn restrict(&self, caller: &Caller, row: &sanction::Model, what: Restrict) -> Result<()> {
        let kind = if row.kind == pb::SanctionKind::Ban as i32 { RestrictionKind::Ban } else { RestrictionKind::Mute };
        let request = SetMemberRestrictionRequest {
            user_id: row.user_id.clone(),
            channel_id: row.channel_id.clone(),
            kind: kind as i32,
            expire_time: row.expire_at.map(timestamp),
            lift: what == Restrict::Lift,
            validate_only: what == Restrict::Check,
        };
        call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.set_member_restriction(r).await })
            .await?;
        Ok(())
    }

    async fn suspend(&self, caller: &Caller, user_id: &str, until: Option<i64>) -> Result<()> {
        let request =
            SetAccountSuspensionRequest { user_id: user_id.to_string(), suspended_until: until.map(timestamp) };
        call_on_behalf(&self.auth, caller, request, |mut c, r| async move { c.set_account_suspension(r).await })
            .await?;
        Ok(())
    }

    /// The audit entry and the `user.*` event of a sanction's change.
    async fn record_change(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        caller: &Caller,
        row: &sanction::Model,
        action: &str,
        event_type: &str,
        reason: &str,
    ) -> Result<()> {
        let mut metadata = BTreeMap::from([
            ("user_id", row.user_id.clone()),
            ("kind", kind_name(row.kind).to_string()),
            ("expire_at", row.expire_at.map(colink_runtime::ids::rfc3339).unwrap_or_else(|| "never".into())),
        ]);
        if !row.channel_id.is_empty() {
            metadata.insert("channel_id", row.channel_id.clone());
        }
        audit::record(txn, Entry::by(caller, action, ("sanction", &row.sanction_id), reason, metadata)).await?;
        let changed = UserSanctionChanged {
            sanction_id: row.sanction_id.clone(),
            user_id: row.user_id.clone(),
            kind: kind_name(row.kind).into(),
            channel_id: row.channel_id.clone(),
            expire_micros: row.expire_at.unwrap_or(0),
            active: row.lifted_at.is_none(),
            reason: reason.to_string(),
        };
        let event = events::event(event_type, &caller.user_id, Payload::UserSanctionChanged(changed));
        events::enqueue(txn, USER_EVENTS, &row.user_id, &event).await?;
        Ok(())
    }

    pub(crate) async fn list_sanctions(
        &self,
        caller: &Caller,
        req: &pb::ListSanctionsRequest,
    ) -> Result<pb::ListSanctionsResponse> {
        let mut v = Violations::default();
        let user_id = v.optional_id("user_id", &req.user_id);
        let channel_id = v.optional_id("channel_id", &req.channel_id);
        let kind = pb::SanctionKind::try_from(req.kind).ok();
        if kind.is_none() {
            v.add("kind", "is not a known kind");
        }
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        let cursor = time_cursor(&mut v, after.as_deref());
        v.finish()?;
        let moderator = matches!(caller.role, Role::Admin | Role::Moderator);
        let user_id = match user_id {
            Some(other) if !moderator && other != caller.user_id => {
                return Err(Error::denied("you can only list your own sanctions"));
            }
            None if !moderator => Some(caller.user_id.clone()),
            given => given,
        };
        let now = now_micros();
        let mut query = sanction::Entity::find();
        if let Some(user_id) = &user_id {
            query = query.filter(sanction::Column::UserId.eq(user_id));
        }
        if let Some(channel_id) = &channel_id {
            query = query.filter(sanction::Column::ChannelId.eq(channel_id));
        }
        if let Some(kind) = kind.filter(|k| *k != pb::SanctionKind::Unspecified) {
            query = query.filter(sanction::Column::Kind.eq(kind as i32));
        }
        if !req.include_inactive {
            query = query.filter(sanction::Column::LiftedAt.is_null()).filter(
                Condition::any().add(sanction::Column::ExpireAt.is_null()).add(sanction::Column::ExpireAt.gt(now)),
            );
        }
        if let Some((at, id)) = cursor {
            query = query.filter(Condition::any().add(sanction::Column::CreatedAt.lt(at)).add(
                Condition::all().add(sanction::Column::CreatedAt.eq(at)).add(sanction::Column::SanctionId.lt(id)),
            ));
        }
        let mut rows = query
            .order_by_desc(sanction::Column::CreatedAt)
            .order_by_desc(sanction::Column::SanctionId)
            .limit(limit + 1)
            .all(&self.db.reader)
            .await?;
        let next_page_token = page_end(&mut rows, limit, |r| (r.created_at, r.sanction_id.as_str()));
        Ok(pb::ListSanctionsResponse { sanctions: rows.iter().map(|r| to_pb(r, now)).collect(), next_page_token })
    }

    pub(crate) async fn lift_sanction(&self, caller: &Caller, req: &pb::LiftSanctionRequest) -> Result<pb::Sanction> {
        let mut v = Violations::default();
        let sanction_id = v.check(parse_id("sanction_id", &req.sanction_id)).unwrap_or_default();
        let reason = req.reason.trim();
        v.check(check_text("reason", reason, 0, 1000));
        v.finish()?;
        let found = sanction::Entity::find_by_id(sanction_id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("sanction {sanction_id} not found")))?;
        require_may_sanction(caller, found.kind, &found.channel_id, found.expire_at)?;
        let now = now_micros();
        if !found.active(now) {
            return Err(Error::precondition("the sanction already ended"));
        }
        if is_workspace_ban(&found) {
            self.suspend(caller, &found.user_id, None).await?;
        } else {
            self.restrict(caller, &found, Restrict::Lift).await?;
        }
        let lifted = sanction::Model {
            lifted_at: Some(now),
            lifted_by: caller.user_id.clone(),
            lift_reason: reason.to_string(),
            active_key: None,
            ..found.clone()
        };
        let txn = self.db.writer.begin().await?;
        let changed = sanction::Entity::update_many()
            .col_expr(sanction::Column::LiftedAt, Expr::val(now))
            .col_expr(sanction::Column::LiftedBy, Expr::val(caller.user_id.clone()))
            .col_expr(sanction::Column::LiftReason, Expr::val(reason))
            .col_expr(sanction::Column::ActiveKey, Expr::val(Option::<String>::None))
            .filter(sanction::Column::SanctionId.eq(&sanction_id))
            .filter(sanction::Column::LiftedAt.is_null())
            .exec(&txn)
            .await?;
        if changed.rows_affected == 0 {
            return Err(Error::precondition("the sanction already ended"));
        }
        self.record_change(&txn, caller, &lifted, "sanction.lifted", "user.sanction_lifted", reason).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(to_pb(&lifted, now))
    }
}
