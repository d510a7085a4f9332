//! Workspace roles: an admin sets another account's role; tokens issued
//! from then on carry it.

use colink_proto::auth::v1 as pb;
use colink_proto::events::v1::{UserRoleChanged, event::Payload};
use colink_runtime::error::Violations;
use colink_runtime::events::{self, USER_EVENTS};
use colink_runtime::ids::{check_text, now_micros, parse_id};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set, TransactionTrait,
};

use crate::store::credential;
use crate::{AuthService, role_name, to_account};

impl AuthService {
    pub(crate) async fn set_account_role(
        &self,
        caller: &Caller,
        req: &pb::SetAccountRoleRequest,
    ) -> Result<pb::SetAccountRoleResponse> {
        let mut v = Violations::default();
        let user_id = v.check(parse_id("user_id", &req.user_id));
        let role = match pb::Role::try_from(req.role) {
            Ok(pb::Role::Unspecified) | Err(_) => {
                v.add("role", "must be admin, moderator, member or guest");
                pb::Role::Unspecified
            }
            Ok(role) => role,
        };
        v.check(check_text("reason", &req.reason, 0, 1000));
        v.finish()?;
        let user_id = user_id.unwrap_or_default();
        if caller.role != Role::Admin {
            return Err(Error::denied("only admins can change workspace roles"));
        }
        if user_id == caller.user_id {
            return Err(Error::precondition("admins cannot change their own role"));
        }
        let txn = self.db.writer.begin().await?;
        let account = credential::Entity::find_by_id(user_id.clone())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user_id} not found")))?;
        if account.role == role as i32 {
            let second_factor = self.second_factor_enabled(&txn, &account.user_id).await?;
            return Ok(pb::SetAccountRoleResponse { account: Some(to_account(&account, second_factor)) });
        }
        if account.deactivated {
            return Err(Error::precondition("the account is deactivated"));
        }
        if is_last_active_admin(&txn, &account).await? {
            return Err(Error::precondition("the workspace would have no admin left"));
        }
        let previous_role = role_name(account.role);
        let mut change: credential::ActiveModel = account.into();
        change.role = Set(role as i32);
        change.updated_at = Set(now_micros());
        let account = change.update(&txn).await?;
        let event = events::event(
            "user.role_changed",
            &caller.user_id,
            Payload::UserRoleChanged(UserRoleChanged {
                user_id: account.user_id.clone(),
                username: account.username.clone(),
                role: role_name(account.role).to_string(),
                previous_role: previous_role.to_string(),
                reason: req.reason.clone(),
            }),
        );
        events::enqueue(&txn, USER_EVENTS, &account.user_id, &event).await?;
        let second_factor = self.second_factor_enabled(&txn, &account.user_id).await?;
        txn.commit().await?;
        self.outbox.notify();
        tracing::info!(user_id = %account.user_id, role = role_name(account.role), by = %caller.user_id, "role changed");
        Ok(pb::SetAccountRoleResponse { account: Some(to_account(&account, second_factor)) })
    }
}

/// Whether the account is an active admin and no other is: then it must
/// stay one.
pub(crate) async fn is_last_active_admin<C: ConnectionTrait>(conn: &C, account: &credential::Model) -> Result<bool> {
    if account.role != pb::Role::Admin as i32 || account.deactivated {
        return Ok(false);
    }
    let others = credential::Entity::find()
        .filter(credential::Column::Role.eq(pb::Role::Admin as i32))
        .filter(credential::Column::Deactivated.eq(false))
        .filter(credential::Column::UserId.ne(account.user_id.as_str()))
        .count(conn)
        .await?;
    Ok(others == 0)
}
