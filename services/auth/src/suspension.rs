//! Suspension: a workspace ban for a time. A suspended account cannot sign
//! in or refresh until then, and its sessions end at once everywhere; the
//! suspension ends by itself or when an admin lifts it.

use colink_proto::auth::v1 as pb;
use colink_runtime::auth::provider_session_id;
use colink_runtime::error::Violations;
use colink_runtime::ids::{micros_of, now_micros, parse_id};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::{ActiveModelTrait, EntityTrait, Set, TransactionTrait};

use crate::sessions::Which;
use crate::store::credential;
use crate::{AuthService, to_account};

impl AuthService {
    pub(crate) async fn set_account_suspension(
        &self,
        caller: &Caller,
        req: &pb::SetAccountSuspensionRequest,
    ) -> Result<pb::SetAccountSuspensionResponse> {
        let mut v = Violations::default();
        let user_id = v.check(parse_id("user_id", &req.user_id)).unwrap_or_default();
        let now = now_micros();
        let until = req.suspended_until.as_ref().map(micros_of);
        if until.is_some_and(|until| until <= now) {
            v.add("suspended_until", "must be in the future");
        }
        v.finish()?;
        if caller.role != Role::Admin {
            return Err(Error::denied("only admins can suspend accounts"));
        }
        if user_id == caller.user_id {
            return Err(Error::precondition("admins cannot suspend their own account"));
        }
        let txn = self.db.writer.begin().await?;
        let account = credential::Entity::find_by_id(user_id.clone())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user_id} not found")))?;
        if account.role == pb::Role::Admin as i32 {
            return Err(Error::precondition("admins cannot be suspended"));
        }
        let mut change: credential::ActiveModel = account.into();
        change.suspended_until = Set(until);
        change.updated_at = Set(now);
        let account = change.update(&txn).await?;
        let mut ended =
            if until.is_some() { self.end_sessions(&txn, &account.user_id, Which::All).await? } else { vec![] };
        if until.is_some() {
            // The provider's access tokens too, on every node.
            ended.push(provider_session_id(&account.user_id));
        }
        let second_factor = self.second_factor_enabled(&txn, &account.user_id).await?;
        txn.commit().await?;
        self.announce_ended(&ended).await;
        tracing::info!(user_id = %account.user_id, by = %caller.user_id, ?until, sessions_ended = ended.len(), "suspension set");
        Ok(pb::SetAccountSuspensionResponse { account: Some(to_account(&account, second_factor)) })
    }

    pub(crate) async fn get_account(&self, caller: &Caller, raw_id: &str) -> Result<pb::GetAccountResponse> {
        let user_id = parse_id("user_id", raw_id)?;
        if !matches!(caller.role, Role::Admin | Role::Moderator) {
            return Err(Error::denied("only moderators and admins can read accounts"));
        }
        let account = credential::Entity::find_by_id(user_id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user_id} not found")))?;
        let second_factor = self.second_factor_enabled(&self.db.reader, &account.user_id).await?;
        Ok(pb::GetAccountResponse { account: Some(to_account(&account, second_factor)) })
    }
}
