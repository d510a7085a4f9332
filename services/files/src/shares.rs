//! A file's owner changing it: its name, description and access, and
//! shares with single users (to view, or also to download), which expire
//! when the owner says.

use colink_proto::files::v1 as pb;
use colink_proto::users::v1::GetUserRequest;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::error::Violations;
use colink_runtime::ids::{check_text, micros_of, now_micros, opt_timestamp, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use tonic::Code;

use crate::store::{file, share};
use crate::{Shared, page_after, page_token_after};

fn share_proto(s: &share::Model) -> pb::FileShare {
    pb::FileShare {
        file_id: s.file_id.clone(),
        user_id: s.user_id.clone(),
        permission: s.permission,
        shared_by_id: s.shared_by_id.clone(),
        create_time: Some(timestamp(s.created_at)),
        expire_time: opt_timestamp(s.expires_at),
    }
}

/// The users a file is shared with now (unexpired shares), as `conn` sees
/// them.
pub(crate) async fn recipients<C: ConnectionTrait>(conn: &C, file_id: &str) -> Result<Vec<String>> {
    let rows = share::Entity::find()
        .filter(share::Column::FileId.eq(file_id))
        .filter(Condition::any().add(share::Column::ExpiresAt.is_null()).add(share::Column::ExpiresAt.gt(now_micros())))
        .order_by_asc(share::Column::UserId)
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|s| s.user_id).collect())
}

impl Shared {
    /// The caller's unexpired share of a file, if any.
    pub(crate) async fn share_of(&self, file_id: &str, user_id: &str) -> Result<Option<share::Model>> {
        let found = share::Entity::find_by_id((file_id.to_string(), user_id.to_string())).one(&self.db.reader).await?;
        Ok(found.filter(|s| s.expires_at.is_none_or(|at| at > now_micros())))
    }

    /// A file its owner is changing; refused for anyone else and for a
    /// deleted file.
    async fn owned(&self, caller: &Caller, raw_id: &str) -> Result<file::Model> {
        let found = self.visible(caller, raw_id).await?;
        if found.owner_id != caller.user_id {
            return Err(Error::denied("only the file's owner can change it"));
        }
        if found.state == pb::FileState::Deleted as i32 || found.state == pb::FileState::Expired as i32 {
            return Err(Error::precondition("the file was deleted"));
        }
        Ok(found)
    }

    pub(crate) async fn update_file(
        &self,
        caller: &Caller,
        req: &pb::UpdateFileRequest,
    ) -> Result<pb::UpdateFileResponse> {
        let mut v = Violations::default();
        v.check(parse_id("file_id", &req.file_id));
        let paths = req.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "must name at least one of filename, description, access");
        }
        let given = req.file.clone().unwrap_or_default();
        for path in &paths {
            match path.as_str() {
                "filename" => {
                    v.check(
                        crate::uploads::check_filename(&given.filename)
                            .map_err(|e| colink_runtime::error::FieldError::new("file.filename", e.description)),
                    );
                }
                "description" => {
                    v.check(check_text("file.description", &given.description, 0, 1000));
                }
                "access" => match pb::FileAccess::try_from(given.access) {
                    Ok(pb::FileAccess::Unspecified) | Err(_) => v.add("file.access", "must be a known access"),
                    Ok(pb::FileAccess::Workspace) if caller.role == Role::Guest => {
                        v.add("file.access", "guests cannot share a file with the whole workspace");
                    }
                    Ok(_) => {}
                },
                other => v.add("update_mask", format!("{other:?} cannot be changed")),
            }
        }
        v.finish()?;
        let found = self.owned(caller, &req.file_id).await?;
        if paths.iter().any(|p| p == "access")
            && given.access == pb::FileAccess::Channel as i32
            && found.channel_id.is_empty()
        {
            return Err(Error::invalid("file.access", "FILE_ACCESS_CHANNEL needs a file uploaded to a channel"));
        }
        let mut change = file::ActiveModel { file_id: Set(found.file_id.clone()), ..Default::default() };
        for path in &paths {
            match path.as_str() {
                "filename" => change.filename = Set(given.filename.clone()),
                "description" => change.description = Set(given.description.clone()),
                _ => change.access = Set(given.access),
            }
        }
        change.updated_at = Set(now_micros());
        let txn = self.db.writer.begin().await?;
        let updated = file::Entity::update(change).exec(&txn).await?;
        self.event(&txn, "file.updated", &caller.user_id, &updated).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(pb::UpdateFileResponse { file: Some(self.file_proto(&updated).await?) })
    }

    pub(crate) async fn share_file(
        &self,
        caller: &Caller,
        req: &pb::ShareFileRequest,
    ) -> Result<pb::ShareFileResponse> {
        let mut v = Violations::default();
        v.check(parse_id("file_id", &req.file_id));
        let user_id = v.id("user_id", &req.user_id);
        let permission = pb::SharePermission::try_from(req.permission).unwrap_or(pb::SharePermission::Unspecified);
        if permission == pb::SharePermission::Unspecified {
            v.add("permission", "must be VIEW or DOWNLOAD");
        }
        let now = now_micros();
        let expires_at = req.expire_time.as_ref().map(micros_of);
        if expires_at.is_some_and(|at| at <= now) {
            v.add("expire_time", "must be in the future");
        }
        v.finish()?;
        if caller.role == Role::Guest {
            return Err(Error::denied("guests cannot share files"));
        }
        let found = self.owned(caller, &req.file_id).await?;
        if user_id == caller.user_id {
            return Err(Error::invalid("user_id", "is the file's owner"));
        }
        if found.state == pb::FileState::PendingUpload as i32 {
            return Err(Error::precondition("the upload is not confirmed yet"));
        }
        if found.scan_status == pb::ScanStatus::Infected as i32 {
            return Err(Error::precondition("the file is infected and cannot be shared"));
        }
        let request = GetUserRequest { user_id: user_id.clone() };
        match call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.get_user(r).await }).await {
            Ok(answer) if answer.user.as_ref().is_some_and(|u| !u.deactivated) => {}
            Ok(_) => return Err(Error::invalid("user_id", "is deactivated")),
            Err(status) if status.code() == Code::NotFound => return Err(Error::invalid("user_id", "no such user")),
            Err(status) => return Err(status.into()),
        }
        let row = share::Model {
            file_id: found.file_id.clone(),
            user_id,
            permission: permission as i32,
            shared_by_id: caller.user_id.clone(),
            created_at: now,
            expires_at,
        };
        let upsert = OnConflict::columns([share::Column::FileId, share::Column::UserId])
            .update_columns([
                share::Column::Permission,
                share::Column::SharedById,
                share::Column::CreatedAt,
                share::Column::ExpiresAt,
            ])
            .to_owned();
        let txn = self.db.writer.begin().await?;
        share::Entity::insert(share::ActiveModel::from(row.clone()))
            .on_conflict(upsert)
            .exec_without_returning(&txn)
            .await?;
        self.event(&txn, "file.shared", &caller.user_id, &found).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(pb::ShareFileResponse { share: Some(share_proto(&row)) })
    }

    pub(crate) async fn list_file_shares(
        &self,
        caller: &Caller,
        req: &pb::ListFileSharesRequest,
    ) -> Result<pb::ListFileSharesResponse> {
        let mut v = Violations::default();
        v.check(parse_id("file_id", &req.file_id));
        let page = v.page(req.page_size, &req.page_token, 50, 100);
        v.finish()?;
        let found = self.visible(caller, &req.file_id).await?;
        if found.owner_id != caller.user_id && caller.role != Role::Admin {
            return Err(Error::denied("only the owner and admins can list a file's shares"));
        }
        let after = page_after(&page)?;
        let mut query = share::Entity::find().filter(share::Column::FileId.eq(&found.file_id));
        if !req.include_expired {
            query = query.filter(
                Condition::any().add(share::Column::ExpiresAt.is_null()).add(share::Column::ExpiresAt.gt(now_micros())),
            );
        }
        if let Some((at, user)) = &after {
            query = query.filter(
                Condition::any()
                    .add(share::Column::CreatedAt.lt(*at))
                    .add(Condition::all().add(share::Column::CreatedAt.eq(*at)).add(share::Column::UserId.lt(user))),
            );
        }
        let rows = query
            .order_by_desc(share::Column::CreatedAt)
            .order_by_desc(share::Column::UserId)
            .limit(page.limit + 1)
            .all(&self.db.reader)
            .await?;
        let more = rows.len() as u64 > page.limit;
        let shares = rows.iter().take(page.limit as usize).map(share_proto).collect();
        let last = rows.get(page.limit as usize - 1).filter(|_| more).map(|s| (s.created_at, s.user_id.as_str()));
        Ok(pb::ListFileSharesResponse { shares, next_page_token: page_token_after(last) })
    }

    pub(crate) async fn revoke_file_share(
        &self,
        caller: &Caller,
        req: &pb::RevokeFileShareRequest,
    ) -> Result<pb::RevokeFileShareResponse> {
        let mut v = Violations::default();
        v.check(parse_id("file_id", &req.file_id));
        let user_id = v.id("user_id", &req.user_id);
        v.finish()?;
        let found = self.find(&req.file_id).await?;
        let allowed = found.owner_id == caller.user_id || caller.role == Role::Admin || user_id == caller.user_id;
        if !allowed {
            // Whether the file exists is not for outsiders to learn.
            self.visible(caller, &req.file_id).await?;
            return Err(Error::denied("only the owner, an admin or the recipient can revoke a share"));
        }
        let txn = self.db.writer.begin().await?;
        let deleted = share::Entity::delete_many()
            .filter(share::Column::FileId.eq(&found.file_id))
            .filter(share::Column::UserId.eq(&user_id))
            .exec(&txn)
            .await?;
        let revoked = deleted.rows_affected > 0;
        if revoked {
            self.event(&txn, "file.unshared", &caller.user_id, &found).await?;
        }
        txn.commit().await?;
        if revoked {
            self.outbox.notify();
        }
        Ok(pb::RevokeFileShareResponse { revoked })
    }
}
