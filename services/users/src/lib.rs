//! The users service: profiles, personal settings, contacts and blocks.
//! Profiles come into being from the auth service's `user.created` events;
//! a changed display name goes out as `user.updated` (for search).

mod store;

use std::collections::HashMap;
use std::sync::Arc;

use colink_proto::events::v1::{Event, UserCreated, event::Payload};
use colink_proto::users::v1 as pb;
use colink_proto::users::v1::users_service_server::{UsersService as UsersRpc, UsersServiceServer};
use colink_runtime::db::Db;
use colink_runtime::error::{FieldError, Page, Violations};
use colink_runtime::events::{self, EventError, EventHandler, Outbox, USER_EVENTS, mark_processed};
use colink_runtime::ids::{check_text, encode_page_token, now_micros, parse_id, parse_id_list, timestamp};
use colink_runtime::pubsub::{BLOCKS_TOPIC, Frame, PubSub, user_topic};
use colink_runtime::{Caller, Error, Result, Role, caller};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};
use tonic::{Request, Response, Status};

use crate::store::{block, contact, profile, settings};

pub struct UsersService {
    db: Db,
    outbox: Outbox,
    pubsub: Arc<dyn PubSub>,
}

impl UsersService {
    pub fn new(db: Db, outbox: Outbox, pubsub: Arc<dyn PubSub>) -> Self {
        Self { db, outbox, pubsub }
    }

    /// A block came or went: both people's streams learn that what they
    /// may see of each other (typing, presence, mentions) changed.
    async fn blocks_changed(&self, a: &str, b: &str) {
        for user_id in [a, b] {
            self.pubsub.publish(&user_topic(user_id), Frame::Counts("all".into()).encode()).await;
            let announcement = Frame::Event(user_id.as_bytes().to_vec().into());
            self.pubsub.publish(BLOCKS_TOPIC, announcement.encode()).await;
        }
    }

    pub fn into_server(self) -> UsersServiceServer<Self> {
        UsersServiceServer::new(self)
    }

    /// The consumer of `user.events` that creates profiles.
    pub fn profile_creator(&self) -> Arc<dyn EventHandler> {
        Arc::new(ProfileRecorder { db: self.db.clone() })
    }

    async fn profile(&self, user_id: &str) -> Result<profile::Model> {
        profile::Entity::find_by_id(user_id.to_string())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {user_id} not found")))
    }

    async fn update_me(&self, caller: &Caller, req: pb::UpdateMeRequest) -> Result<profile::Model> {
        let user = req.user.unwrap_or_default();
        let paths = mask_paths(req.update_mask)?;
        let mut v = Violations::default();
        let mut model = self.profile(&caller.user_id).await?.into_active_model();
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    v.check(check_text("user.display_name", user.display_name.trim(), 1, 64));
                    model.display_name = Set(user.display_name.trim().to_string());
                }
                "avatar_url" => {
                    v.check(check_avatar_url(&user.avatar_url));
                    model.avatar_url = Set(user.avatar_url.clone());
                }
                "bio" => {
                    v.check(check_text("user.bio", &user.bio, 0, 1000));
                    model.bio = Set(user.bio.clone());
                }
                "status_text" => {
                    v.check(check_text("user.status_text", &user.status_text, 0, 100));
                    model.status_text = Set(user.status_text.clone());
                }
                "status_emoji" => {
                    v.check(check_text("user.status_emoji", &user.status_emoji, 0, 32));
                    model.status_emoji = Set(user.status_emoji.clone());
                }
                "time_zone" => {
                    v.check(check_time_zone(&user.time_zone));
                    model.time_zone = Set(user.time_zone.clone());
                }
                other => v.add("update_mask", format!("{other:?} cannot be updated (allowed: display_name, avatar_url, bio, status_text, status_emoji, time_zone)")),
            }
        }
        v.finish()?;
        model.updated_at = Set(now_micros());
        if !paths.iter().any(|p| p == "display_name") {
            return Ok(model.update(&self.db.writer).await?);
        }
        let txn = self.db.writer.begin().await?;
        let updated = model.update(&txn).await?;
        let names = UserCreated {
            user_id: updated.user_id.clone(),
            username: updated.username.clone(),
            display_name: updated.display_name.clone(),
        };
        let event = events::event("user.updated", &caller.user_id, Payload::UserUpdated(names));
        events::enqueue(&txn, USER_EVENTS, &updated.user_id, &event).await?;
        txn.commit().await?;
        self.outbox.notify();
        Ok(updated)
    }

    async fn settings(&self, user_id: &str) -> Result<settings::Model> {
        Ok(settings::Entity::find_by_id(user_id.to_string())
            .one(&self.db.reader)
            .await?
            .unwrap_or_else(|| default_settings(user_id)))
    }

    async fn update_settings(&self, caller: &Caller, req: pb::UpdateSettingsRequest) -> Result<settings::Model> {
        let wanted = req.settings.unwrap_or_default();
        let paths = mask_paths(req.update_mask)?;
        let mut current = self.settings(&caller.user_id).await?;
        let mut v = Violations::default();
        for path in &paths {
            match path.as_str() {
                "language" => {
                    let ok = (2..=16).contains(&wanted.language.len())
                        && wanted.language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !ok {
                        v.add("settings.language", "must be a language tag such as \"en\" or \"pt-BR\"");
                    }
                    current.language = wanted.language.clone();
                }
                "theme" => {
                    if pb::Theme::try_from(wanted.theme).is_err() {
                        v.add("settings.theme", "is not a known theme");
                    }
                    current.theme = wanted.theme;
                }
                "show_last_active" => current.show_last_active = wanted.show_last_active,
                "send_read_receipts" => current.send_read_receipts = wanted.send_read_receipts,
                "direct_message_policy" => {
                    if pb::DirectMessagePolicy::try_from(wanted.direct_message_policy).is_err() {
                        v.add("settings.direct_message_policy", "is not a known policy");
                    }
                    current.direct_message_policy = wanted.direct_message_policy;
                }
                other => v.add("update_mask", format!("{other:?} cannot be updated")),
            }
        }
        v.finish()?;
        current.updated_at = now_micros();
        let mut model = current.clone().into_active_model();
        model.user_id = Set(current.user_id.clone());
        settings::Entity::insert(model.reset_all())
            .on_conflict(
                OnConflict::column(settings::Column::UserId)
                    .update_columns([
                        settings::Column::Language,
                        settings::Column::Theme,
                        settings::Column::ShowLastActive,
                        settings::Column::SendReadReceipts,
                        settings::Column::DirectMessagePolicy,
                        settings::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db.writer)
            .await?;
        Ok(current)
    }

    async fn list_users(&self, req: pb::ListUsersRequest) -> Result<pb::ListUsersResponse> {
        let mut v = Violations::default();
        let prefix = req.username_prefix.trim().to_ascii_lowercase();
        if prefix.len() > 32
            || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            v.add("username_prefix", "must be at most 32 characters of a-z, 0-9, '.', '_' or '-'");
        }
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        v.finish()?;
        // Every username character sorts below '~', so this range is the prefix.
        let mut query = profile::Entity::find()
            .filter(profile::Column::Username.gte(prefix.as_str()))
            .filter(profile::Column::Username.lt(format!("{prefix}~")));
        if let Some(after) = after {
            query = query.filter(profile::Column::Username.gt(after));
        }
        if !req.include_deactivated {
            query = query.filter(profile::Column::Deactivated.eq(false));
        }
        let mut rows = query.order_by_asc(profile::Column::Username).limit(limit + 1).all(&self.db.reader).await?;
        let next_page_token = page_after(&mut rows, limit, |p| p.username.clone());
        Ok(pb::ListUsersResponse { users: rows.iter().map(to_user).collect(), next_page_token })
    }

    async fn other_user(&self, caller: &Caller, field: &str, raw: &str) -> Result<profile::Model> {
        let id = parse_id(field, raw)?;
        if id == caller.user_id {
            return Err(Error::invalid(field, "must not be the caller"));
        }
        self.profile(&id).await
    }

    async fn add_contact(&self, caller: &Caller, req: pb::AddContactRequest) -> Result<pb::Contact> {
        check_text("relationship", &req.relationship, 0, 50)?;
        let other = self.other_user(caller, "user_id", &req.user_id).await?;
        let row = contact::ActiveModel {
            user_id: Set(caller.user_id.clone()),
            contact_id: Set(other.user_id.clone()),
            relationship: Set(req.relationship.clone()),
            created_at: Set(now_micros()),
        };
        // One statement writes and returns the row: a concurrent
        // RemoveContact cannot slip in between a write and a read-back.
        let stored = contact::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([contact::Column::UserId, contact::Column::ContactId])
                    .update_column(contact::Column::Relationship)
                    .to_owned(),
            )
            .exec_with_returning(&self.db.writer)
            .await?;
        Ok(pb::Contact {
            user: Some(to_user(&other)),
            relationship: stored.relationship,
            create_time: Some(timestamp(stored.created_at)),
        })
    }

    async fn list_contacts(&self, caller: &Caller, size: i32, token: &str) -> Result<pb::ListContactsResponse> {
        let mut v = Violations::default();
        let Page { limit, after } = v.page(size, token, 50, 100);
        v.finish()?;
        let mut query = contact::Entity::find().filter(contact::Column::UserId.eq(&caller.user_id));
        if let Some(after) = after {
            query = query.filter(contact::Column::ContactId.gt(after));
        }
        let mut rows = query.order_by_asc(contact::Column::ContactId).limit(limit + 1).all(&self.db.reader).await?;
        let next_page_token = page_after(&mut rows, limit, |c| c.contact_id.clone());
        let profiles = self.profiles(rows.iter().map(|c| c.contact_id.clone()).collect()).await?;
        let contacts = rows
            .into_iter()
            .filter_map(|c| {
                let user = profiles.iter().find(|p| p.user_id == c.contact_id)?;
                Some(pb::Contact {
                    user: Some(to_user(user)),
                    relationship: c.relationship,
                    create_time: Some(timestamp(c.created_at)),
                })
            })
            .collect();
        Ok(pb::ListContactsResponse { contacts, next_page_token })
    }

    async fn list_blocked(&self, caller: &Caller, size: i32, token: &str) -> Result<pb::ListBlockedUsersResponse> {
        let mut v = Violations::default();
        let Page { limit, after } = v.page(size, token, 50, 100);
        v.finish()?;
        let mut query = block::Entity::find().filter(block::Column::UserId.eq(&caller.user_id));
        if let Some(after) = after {
            query = query.filter(block::Column::BlockedId.gt(after));
        }
        let mut rows = query.order_by_asc(block::Column::BlockedId).limit(limit + 1).all(&self.db.reader).await?;
        let next_page_token = page_after(&mut rows, limit, |b| b.blocked_id.clone());
        let users = self.profiles(rows.into_iter().map(|b| b.blocked_id).collect()).await?;
        Ok(pb::ListBlockedUsersResponse { users: users.iter().map(to_user).collect(), next_page_token })
    }

    async fn profiles(&self, ids: Vec<String>) -> Result<Vec<profile::Model>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found =
            profile::Entity::find().filter(profile::Column::UserId.is_in(ids.clone())).all(&self.db.reader).await?;
        // Keep the order of `ids`.
        Ok(ids.iter().filter_map(|id| found.iter().find(|p| &p.user_id == id).cloned()).collect())
    }

    /// What others may learn of these users' privacy settings, as it bears
    /// on the caller; users with the default settings are left out.
    async fn privacy(&self, caller: &Caller, ids: &[String]) -> Result<HashMap<String, pb::User>> {
        let settings = settings::Entity::find()
            .filter(settings::Column::UserId.is_in(ids.iter().cloned()))
            .all(&self.db.reader)
            .await?;
        let contacts_only: Vec<String> = settings
            .iter()
            .filter(|s| s.direct_message_policy == pb::DirectMessagePolicy::Contacts as i32)
            .map(|s| s.user_id.clone())
            .collect();
        let accepted: Vec<String> = if contacts_only.is_empty() {
            Vec::new()
        } else {
            contact::Entity::find()
                .filter(contact::Column::UserId.is_in(contacts_only.clone()))
                .filter(contact::Column::ContactId.eq(&caller.user_id))
                .all(&self.db.reader)
                .await?
                .into_iter()
                .map(|c| c.user_id)
                .collect()
        };
        Ok(settings
            .into_iter()
            .map(|s| {
                let closed = contacts_only.contains(&s.user_id) && !accepted.contains(&s.user_id);
                let private = pb::User {
                    read_receipts_off: !s.send_read_receipts,
                    direct_messages_closed: closed && s.user_id != caller.user_id,
                    last_active_hidden: !s.show_last_active,
                    ..Default::default()
                };
                (s.user_id, private)
            })
            .collect())
    }

    /// Those of `others` with a block either way with `user`.
    async fn blocked_among(&self, user: &str, others: &[String]) -> Result<Vec<String>> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let found = block::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(block::Column::UserId.eq(user).and(block::Column::BlockedId.is_in(others.iter().cloned())))
                    .add(block::Column::BlockedId.eq(user).and(block::Column::UserId.is_in(others.iter().cloned()))),
            )
            .all(&self.db.reader)
            .await?;
        Ok(others.iter().filter(|o| found.iter().any(|b| &b.user_id == *o || &b.blocked_id == *o)).cloned().collect())
    }

    async fn blocked_between(&self, a: &str, b: &str) -> Result<bool> {
        let found = block::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(block::Column::UserId.eq(a).and(block::Column::BlockedId.eq(b)))
                    .add(block::Column::UserId.eq(b).and(block::Column::BlockedId.eq(a))),
            )
            .one(&self.db.reader)
            .await?;
        Ok(found.is_some())
    }
}

/// Trims a page fetched with `limit + 1` rows and returns the next page token.
fn page_after<T>(rows: &mut Vec<T>, limit: u64, key: impl Fn(&T) -> String) -> String {
    if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_page_token(&key(r))).unwrap_or_default()
    } else {
        String::new()
    }
}

fn mask_paths(mask: Option<prost_types::FieldMask>) -> Result<Vec<String>> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid("update_mask", "must name at least one field"));
    }
    Ok(paths)
}

fn check_avatar_url(url: &str) -> std::result::Result<(), FieldError> {
    if url.is_empty() {
        return Ok(());
    }
    if url.len() > 512 || !url.starts_with("https://") || url.chars().any(char::is_whitespace) {
        return Err(FieldError::new("user.avatar_url", "must be an https URL of at most 512 characters"));
    }
    Ok(())
}

fn check_time_zone(tz: &str) -> std::result::Result<(), FieldError> {
    let ok = tz.len() <= 64 && tz.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new("user.time_zone", "must be an IANA time zone name such as \"Europe/Paris\""))
    }
}

fn default_settings(user_id: &str) -> settings::Model {
    settings::Model {
        user_id: user_id.to_string(),
        language: "en".into(),
        theme: pb::Theme::Unspecified as i32,
        show_last_active: true,
        send_read_receipts: true,
        direct_message_policy: pb::DirectMessagePolicy::Everyone as i32,
        updated_at: 0,
    }
}

fn to_user(p: &profile::Model) -> pb::User {
    pb::User {
        user_id: p.user_id.clone(),
        username: p.username.clone(),
        display_name: p.display_name.clone(),
        avatar_url: p.avatar_url.clone(),
        bio: p.bio.clone(),
        status_text: p.status_text.clone(),
        status_emoji: p.status_emoji.clone(),
        time_zone: p.time_zone.clone(),
        deactivated: p.deactivated,
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.updated_at)),
        read_receipts_off: false,
        direct_messages_closed: false,
        last_active_hidden: false,
    }
}

fn to_settings(s: &settings::Model) -> pb::Settings {
    pb::Settings {
        language: s.language.clone(),
        theme: s.theme,
        show_last_active: s.show_last_active,
        send_read_receipts: s.send_read_receipts,
        direct_message_policy: s.direct_message_policy,
        update_time: (s.updated_at > 0).then(|| timestamp(s.updated_at)),
    }
}

/// Creates a profile for every new account, and marks it deactivated or
/// active again as an admin decides; once per event.
struct ProfileRecorder {
    db: Db,
}

#[async_trait::async_trait]
impl EventHandler for ProfileRecorder {
    async fn handle(&self, event: &Event) -> std::result::Result<(), EventError> {
        let apply = async {
            let txn = self.db.writer.begin().await?;
            if mark_processed(&txn, &event.event_id).await? {
                match &event.payload {
                    Some(Payload::UserCreated(created)) => create_profile(&txn, created).await?,
                    Some(Payload::UserStatusChanged(status)) => {
                        profile::Entity::update_many()
                            .col_expr(profile::Column::Deactivated, Expr::value(status.deactivated))
                            .col_expr(profile::Column::UpdatedAt, Expr::value(now_micros()))
                            .filter(profile::Column::UserId.eq(&status.user_id))
                            .exec(&txn)
                            .await?;
                    }
                    _ => {}
                }
            }
            txn.commit().await
        };
        apply.await.map_err(|e: sea_orm::DbErr| EventError::Consumer(e.to_string()))
    }
}

async fn create_profile<C: ConnectionTrait>(
    conn: &C,
    created: &UserCreated,
) -> std::result::Result<(), sea_orm::DbErr> {
    let now = now_micros();
    let row = profile::ActiveModel {
        user_id: Set(created.user_id.clone()),
        username: Set(created.username.clone()),
        display_name: Set(created.display_name.clone()),
        avatar_url: Set(String::new()),
        bio: Set(String::new()),
        status_text: Set(String::new()),
        status_emoji: Set(String::new()),
        time_zone: Set(String::new()),
        deactivated: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    };
    profile::Entity::insert(row).on_conflict_do_nothing_on([profile::Column::UserId]).exec(conn).await?;
    Ok(())
}

#[tonic::async_trait]
impl UsersRpc for UsersService {
    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::GetMeResponse>, Status> {
        let caller = caller(&request)?;
        let user = self.profile(&caller.user_id).await?;
        Ok(Response::new(pb::GetMeResponse { user: Some(to_user(&user)) }))
    }

    async fn update_me(&self, request: Request<pb::UpdateMeRequest>) -> Result<Response<pb::UpdateMeResponse>, Status> {
        let caller = caller(&request)?.clone();
        let user = UsersService::update_me(self, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateMeResponse { user: Some(to_user(&user)) }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(Error::from)?;
        let user = self.profile(&id).await?;
        Ok(Response::new(pb::GetUserResponse { user: Some(to_user(&user)) }))
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let req = request.get_ref();
        if !req.usernames.is_empty() {
            if !req.user_ids.is_empty() {
                return Err(Error::invalid("usernames", "give either user_ids or usernames, not both").into());
            }
            if req.usernames.len() > 100 {
                return Err(Error::invalid("usernames", "must list 1 to 100 usernames").into());
            }
            let names: Vec<String> = req.usernames.iter().map(|n| n.trim().to_ascii_lowercase()).collect();
            let found = profile::Entity::find()
                .filter(profile::Column::Username.is_in(names.clone()))
                .all(&self.db.reader)
                .await
                .map_err(Error::from)?;
            let users = names.iter().filter_map(|n| found.iter().find(|p| &p.username == n)).map(to_user).collect();
            return Ok(Response::new(pb::BatchGetUsersResponse { users }));
        }
        let raw = &req.user_ids;
        if raw.is_empty() || raw.len() > 100 {
            return Err(Error::invalid("user_ids", "must list 1 to 100 ids").into());
        }
        let ids = raw
            .iter()
            .enumerate()
            .map(|(i, id)| parse_id(&format!("user_ids[{i}]"), id))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::from)?;
        let caller = caller(&request)?;
        let users = self.profiles(ids.clone()).await?;
        let privacy = self.privacy(caller, &ids).await?;
        let users = users
            .iter()
            .map(|p| {
                let mut user = to_user(p);
                if let Some(private) = privacy.get(&p.user_id) {
                    user.read_receipts_off = private.read_receipts_off;
                    user.direct_messages_closed = private.direct_messages_closed;
                    user.last_active_hidden = private.last_active_hidden;
                }
                user
            })
            .collect();
        Ok(Response::new(pb::BatchGetUsersResponse { users }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Ok(Response::new(UsersService::list_users(self, request.into_inner()).await?))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let caller = caller(&request)?;
        let settings = self.settings(&caller.user_id).await?;
        Ok(Response::new(pb::GetSettingsResponse { settings: Some(to_settings(&settings)) }))
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::UpdateSettingsResponse>, Status> {
        let caller = caller(&request)?.clone();
        let settings = UsersService::update_settings(self, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateSettingsResponse { settings: Some(to_settings(&settings)) }))
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        Ok(Response::new(UsersService::list_contacts(self, caller, req.page_size, &req.page_token).await?))
    }

    async fn add_contact(
        &self,
        request: Request<pb::AddContactRequest>,
    ) -> Result<Response<pb::AddContactResponse>, Status> {
        let caller = caller(&request)?.clone();
        let contact = UsersService::add_contact(self, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::AddContactResponse { contact: Some(contact) }))
    }

    async fn remove_contact(
        &self,
        request: Request<pb::RemoveContactRequest>,
    ) -> Result<Response<pb::RemoveContactResponse>, Status> {
        let caller = caller(&request)?;
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(Error::from)?;
        let deleted = contact::Entity::delete_by_id((caller.user_id.clone(), id))
            .exec(&self.db.writer)
            .await
            .map_err(Error::from)?;
        if deleted.rows_affected == 0 {
            return Err(Error::not_found("not a contact").into());
        }
        Ok(Response::new(pb::RemoveContactResponse {}))
    }

    async fn block_user(
        &self,
        request: Request<pb::BlockUserRequest>,
    ) -> Result<Response<pb::BlockUserResponse>, Status> {
        let caller = caller(&request)?.clone();
        let other = self.other_user(&caller, "user_id", &request.get_ref().user_id).await?;
        let row = block::ActiveModel {
            user_id: Set(caller.user_id.clone()),
            blocked_id: Set(other.user_id.clone()),
            created_at: Set(now_micros()),
        };
        let blocked_id = other.user_id;
        block::Entity::insert(row)
            .on_conflict_do_nothing_on([block::Column::UserId, block::Column::BlockedId])
            .exec(&self.db.writer)
            .await
            .map_err(Error::from)?;
        self.blocks_changed(&caller.user_id, &blocked_id).await;
        Ok(Response::new(pb::BlockUserResponse {}))
    }

    async fn unblock_user(
        &self,
        request: Request<pb::UnblockUserRequest>,
    ) -> Result<Response<pb::UnblockUserResponse>, Status> {
        let caller = caller(&request)?;
        let id = parse_id("user_id", &request.get_ref().user_id).map_err(Error::from)?;
        let deleted = block::Entity::delete_by_id((caller.user_id.clone(), id.clone()))
            .exec(&self.db.writer)
            .await
            .map_err(Error::from)?;
        if deleted.rows_affected == 0 {
            return Err(Error::not_found("that user is not blocked").into());
        }
        self.blocks_changed(&caller.user_id, &id).await;
        Ok(Response::new(pb::UnblockUserResponse {}))
    }

    async fn list_blocked_users(
        &self,
        request: Request<pb::ListBlockedUsersRequest>,
    ) -> Result<Response<pb::ListBlockedUsersResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        Ok(Response::new(UsersService::list_blocked(self, caller, req.page_size, &req.page_token).await?))
    }

    async fn check_blocked(
        &self,
        request: Request<pb::CheckBlockedRequest>,
    ) -> Result<Response<pb::CheckBlockedResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let mut v = Violations::default();
        let a = v.id("user_id", &req.user_id);
        if !req.other_user_ids.is_empty() {
            if !req.other_user_id.is_empty() {
                v.add("other_user_ids", "give either other_user_id or other_user_ids, not both");
            }
            if req.other_user_ids.len() > 100 {
                v.add("other_user_ids", "must list at most 100 ids");
            }
            let others = parse_id_list(&mut v, "other_user_ids", &req.other_user_ids);
            v.finish()?;
            if a != caller.user_id && caller.role != Role::Admin {
                return Err(Error::denied("only admins may ask about other people's blocks").into());
            }
            let blocked_user_ids = self.blocked_among(&a, &others).await?;
            return Ok(Response::new(pb::CheckBlockedResponse { blocked: false, blocked_user_ids }));
        }
        let b = v.id("other_user_id", &req.other_user_id);
        v.finish()?;
        if a != caller.user_id && b != caller.user_id && caller.role != Role::Admin {
            return Err(Error::denied("only admins may ask about other people's blocks").into());
        }
        Ok(Response::new(pb::CheckBlockedResponse {
            blocked: self.blocked_between(&a, &b).await?,
            ..Default::default()
        }))
    }
}
