//! Deactivation: an admin stops an account from signing in and ends its
//! sessions everywhere; reactivation lets it back in with the role it had.

use colink_proto::auth::v1 as pb;
use colink_proto::events::v1::{UserStatusChanged, event::Payload};
use colink_runtime::auth::provider_session_id;
use colink_runtime::error::Violations;
use colink_runtime::events::{self, USER_EVENTS};
use colink_runtime::ids::{check_text, now_micros, parse_id};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::{ActiveModelTrait, EntityTrait, Set, TransactionTrait};

use crate::roles::is_last_active_admin;
use crate::sessions::Which;
use crate::store::credential;
use crate::{AuthService, to_account};

impl AuthService {
    pub(crate) async fn set_account_status(
        &self,
        caller: &Caller,
        req: &pb::SetAccountStatusRequest,
    ) -> Result<pb::SetAccountStatusResponse> {
        let mut v = Violations::default();
        let user_id = v.check(parse_id("user_id", &req.user_id)).unwrap_or_default();
        v.check(check_text("reason", &req.reason, 1, 1000));
        v.finish()?;
        if caller.role != Role::Admin {
            return Err(Error::denied("only admins can deactivate or reactivate accounts"));
        }
        if user_id == caller.user_id {
            return Err(Error::precondition("admins cannot deactivate or reactivate their own account"));
        }
        let txn = self.db.writer.begin().await?;
        let account = credential::Entity::find_by_id(user_id.clone())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user_id} not found")))?;
        if account.deactivated == req.deactivated {
            let second_factor = self.second_factor_enabled(&txn, &account.user_id).await?;
            return Ok(pb::SetAccountStatusResponse { account: Some(to_account(&account, second_factor)) });
        }
        if req.deactivated && is_last_active_admin(&txn, &account).await? {
            return Err(Error::precondition("the workspace would have no active admin left"));
        }
        let now = now_micros();
        let mut change: credential::ActiveModel = account.into();
        change.deactivated = Set(req.deactivated);
        change.updated_at = Set(now);
        if req.deactivated {
            change.deactivated_at = Set(Some(now));
            change.deactivated_by = Set(caller.user_id.clone());
            change.deactivation_reason = Set(req.reason.clone());
        }
        let account = change.update(&txn).await?;
        let mut ended =
            if req.deactivated { self.end_sessions(&txn, &account.user_id, Which::All).await? } else { vec![] };
        if req.deactivated {
            // The provider's access tokens too, on every node.
            ended.push(provider_session_id(&account.user_id));
        }
        let kind = if req.deactivated { "user.deactivated" } else { "user.reactivated" };
        let event = events::event(
            kind,
            &caller.user_id,
            Payload::UserStatusChanged(UserStatusChanged {
                user_id: account.user_id.clone(),
                username: account.username.clone(),
                deactivated: account.deactivated,
                reason: req.reason.clone(),
            }),
        );
        events::enqueue(&txn, USER_EVENTS, &account.user_id, &event).await?;
        let second_factor = self.second_factor_enabled(&txn, &account.user_id).await?;
        txn.commit().await?;
        self.announce_ended(&ended).await;
        self.outbox.notify();
        tracing::info!(user_id = %account.user_id, by = %caller.user_id, sessions_ended = ended.len(), "{kind}");
        Ok(pb::SetAccountStatusResponse { account: Some(to_account(&account, second_factor)) })
    }
}
