//! The channels service: public and private channels, DMs and group DMs,
//! membership with roles, invitations, archiving and per-member preferences.
//! Membership changes go out as `channel.events` through the outbox, in the
//! transaction that makes them.

mod rules;
mod store;

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::channels_service_server::{ChannelsService as ChannelsRpc, ChannelsServiceServer};
use colink_proto::channels::v1::{ChannelKind, InvitationState, MemberRole};
use colink_proto::events::v1::{ChannelChanged, MembershipChanged, event::Payload};
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_proto::users::v1::{BatchGetUsersRequest, User};
use colink_runtime::clients::{call_on_behalf, deny_if_blocked};
use colink_runtime::db::Db;
use colink_runtime::error::{Page, Violations, duplicate_as, is_unique_violation};
use colink_runtime::events::{self, CHANNEL_EVENTS, Outbox};
use colink_runtime::ids::{
    check_idempotency_key, check_same_request, check_text, encode_page_token, idempotency_key, new_id, now_micros,
    parse_id, parse_id_list, request_fingerprint, timestamp,
};
use colink_runtime::{Caller, Error, Result, Role, caller};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use tonic::transport::Channel as GrpcChannel;
use tonic::{Request, Response, Status};

use crate::rules::{
    can_add_members, can_manage, can_view, dm_key, is_direct, kind, kind_name, normalize_name, role, role_name,
};
use crate::store::{channel, idempotency, invitation, member};
use colink_runtime::idempotency::{Keys, key_of};

const MAX_DM_OTHERS: usize = 8;
/// How long a membership change waits for its events to be published.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct ChannelsService {
    db: Db,
    outbox: Outbox,
    users: UsersServiceClient<GrpcChannel>,
    keys: Keys,
}

impl ChannelsService {
    pub fn new(db: Db, outbox: Outbox, users: GrpcChannel) -> Self {
        Self { keys: Keys::new(db.clone()), db, outbox, users: UsersServiceClient::new(users) }
    }

    pub fn into_server(self) -> ChannelsServiceServer<Self> {
        ChannelsServiceServer::new(self)
    }

    // ---- reading -------------------------------------------------------

    async fn find<C: ConnectionTrait>(&self, conn: &C, channel_id: &str) -> Result<channel::Model> {
        channel::Entity::find_by_id(channel_id.to_string())
            .one(conn)
            .await?
            .ok_or_else(|| Error::not_found(format!("channel {channel_id} not found")))
    }

    async fn membership<C: ConnectionTrait>(
        &self,
        conn: &C,
        channel_id: &str,
        user_id: &str,
    ) -> Result<Option<member::Model>> {
        Ok(member::Entity::find_by_id((channel_id.to_string(), user_id.to_string())).one(conn).await?)
    }

    /// The channel and the caller's membership, if the caller may see it.
    async fn viewable<C: ConnectionTrait>(
        &self,
        conn: &C,
        caller: &Caller,
        raw_id: &str,
    ) -> Result<(channel::Model, Option<member::Model>)> {
        let channel_id = parse_id("channel_id", raw_id)?;
        let channel = self.find(conn, &channel_id).await?;
        let membership = self.membership(conn, &channel_id, &caller.user_id).await?;
        // An outsider learns nothing, not even that the conversation exists.
        if !can_view(&channel, membership.as_ref(), caller.role) {
            return Err(Error::not_found(format!("channel {channel_id} not found")));
        }
        Ok((channel, membership))
    }

    async fn to_proto<C: ConnectionTrait>(
        &self,
        conn: &C,
        c: channel::Model,
        membership: Option<&member::Model>,
    ) -> Result<pb::Channel> {
        let participant_ids = if is_direct(&c) {
            member::Entity::find()
                .filter(member::Column::ChannelId.eq(&c.channel_id))
                .order_by_asc(member::Column::UserId)
                .all(conn)
                .await?
                .into_iter()
                .map(|m| m.user_id)
                .collect()
        } else {
            Vec::new()
        };
        Ok(pb::Channel {
            channel_id: c.channel_id,
            kind: c.kind,
            name: c.name.unwrap_or_default(),
            topic: c.topic,
            description: c.description,
            creator_id: c.creator_id,
            archived: c.archived,
            member_count: c.member_count,
            participant_ids,
            create_time: Some(timestamp(c.created_at)),
            update_time: Some(timestamp(c.updated_at)),
            viewer_role: membership.map_or(MemberRole::Unspecified as i32, |m| m.role),
            viewer_preferences: membership.map(to_preferences),
        })
    }

    /// Checks that every id names an existing account.
    async fn require_users(&self, caller: &Caller, field: &str, ids: &[String]) -> Result<Vec<User>> {
        let mut users = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let request = BatchGetUsersRequest { user_ids: chunk.to_vec(), ..Default::default() };
            let found =
                call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.batch_get_users(r).await })
                    .await?
                    .users;
            if let Some(missing) = chunk.iter().find(|id| !found.iter().any(|u| &u.user_id == *id)) {
                return Err(Error::not_found(format!("{field}: user {missing} not found")));
            }
            users.extend(found);
        }
        Ok(users)
    }

    // ---- membership changes (always inside a transaction) ---------------

    async fn add_member(
        &self,
        txn: &DatabaseTransaction,
        channel_id: &str,
        user_id: &str,
        member_role: MemberRole,
        by: &str,
    ) -> Result<member::Model> {
        let now = now_micros();
        let row = member::ActiveModel {
            channel_id: Set(channel_id.to_string()),
            user_id: Set(user_id.to_string()),
            role: Set(member_role as i32),
            muted: Set(false),
            hidden: Set(false),
            starred: Set(false),
            joined_at: Set(now),
        }
        .insert(txn)
        .await?;
        self.bump_member_count(txn, channel_id, 1).await?;
        self.membership_event(txn, "channel.member_joined", channel_id, user_id, member_role, by).await?;
        Ok(row)
    }

    async fn remove_member(&self, txn: &DatabaseTransaction, channel_id: &str, user_id: &str, by: &str) -> Result<()> {
        let deleted = member::Entity::delete_by_id((channel_id.to_string(), user_id.to_string())).exec(txn).await?;
        if deleted.rows_affected == 0 {
            return Err(Error::not_found("not a member of this conversation"));
        }
        self.bump_member_count(txn, channel_id, -1).await?;
        self.membership_event(txn, "channel.member_left", channel_id, user_id, MemberRole::Unspecified, by).await
    }

    async fn bump_member_count(&self, txn: &DatabaseTransaction, channel_id: &str, delta: i32) -> Result<()> {
        channel::Entity::update_many()
            .col_expr(channel::Column::MemberCount, Expr::col(channel::Column::MemberCount).add(delta))
            .col_expr(channel::Column::UpdatedAt, Expr::value(now_micros()))
            .filter(channel::Column::ChannelId.eq(channel_id))
            .exec(txn)
            .await?;
        Ok(())
    }

    async fn membership_event(
        &self,
        txn: &DatabaseTransaction,
        kind: &str,
        channel_id: &str,
        user_id: &str,
        member_role: MemberRole,
        by: &str,
    ) -> Result<()> {
        let change = MembershipChanged {
            channel_id: channel_id.to_string(),
            user_id: user_id.to_string(),
            role: role_name(member_role).to_string(),
            by_user_id: if by == user_id { String::new() } else { by.to_string() },
            muted: false,
        };
        let payload = match kind {
            "channel.member_joined" => Payload::MemberJoined(change),
            "channel.member_left" => Payload::MemberLeft(change),
            _ => Payload::MemberRoleChanged(change),
        };
        events::enqueue(txn, CHANNEL_EVENTS, channel_id, &events::event(kind, by, payload)).await?;
        Ok(())
    }

    async fn channel_event(&self, txn: &DatabaseTransaction, kind_: &str, c: &channel::Model, by: &str) -> Result<()> {
        let change = ChannelChanged {
            channel_id: c.channel_id.clone(),
            name: c.name.clone().unwrap_or_default(),
            kind: kind_name(kind(c)).to_string(),
        };
        let payload = match kind_ {
            "channel.created" => Payload::ChannelCreated(change),
            "channel.archived" => Payload::ChannelArchived(change),
            "channel.unarchived" => Payload::ChannelUnarchived(change),
            _ => Payload::ChannelUpdated(change),
        };
        events::enqueue(txn, CHANNEL_EVENTS, &c.channel_id, &events::event(kind_, by, payload)).await?;
        Ok(())
    }

    /// After a commit: waits (briefly) until its events are published, so
    /// that the caller's next read of the channel log already shows them.
    async fn published(&self) {
        if !self.outbox.flush(&self.db, FLUSH_WAIT).await.unwrap_or(false) {
            tracing::warn!("channel events not yet published; they follow shortly");
        }
    }

    // ---- operations ----------------------------------------------------

    async fn create_channel(&self, caller: &Caller, req: pb::CreateChannelRequest) -> Result<pb::Channel> {
        if caller.role == Role::Guest {
            return Err(Error::denied("guests cannot create channels"));
        }
        let mut v = Violations::default();
        let name = v.check(normalize_name("name", &req.name)).unwrap_or_default();
        let channel_kind = ChannelKind::try_from(req.kind).unwrap_or(ChannelKind::Unspecified);
        if !matches!(channel_kind, ChannelKind::Public | ChannelKind::Private) {
            v.add("kind", "must be CHANNEL_KIND_PUBLIC or CHANNEL_KIND_PRIVATE (open DMs with OpenDirectMessage)");
        }
        v.check(check_text("topic", &req.topic, 0, 250));
        v.check(check_text("description", &req.description, 0, 1000));
        let key = v.check(check_idempotency_key("idempotency_key", &req.idempotency_key)).flatten();
        if req.member_ids.len() > 100 {
            v.add("member_ids", "must list at most 100 users");
        }
        let mut member_ids = parse_id_list(&mut v, "member_ids", &req.member_ids);
        member_ids.retain(|id| *id != caller.user_id);
        v.finish()?;
        let fingerprint =
            request_fingerprint(&pb::CreateChannelRequest { idempotency_key: String::new(), ..req.clone() });
        if let Some(key) = &key
            && let Some(existing) = self.replayed_creation(caller, key, &fingerprint).await?
        {
            return Ok(existing);
        }
        self.require_users(caller, "member_ids", &member_ids).await?;

        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        let created = channel::ActiveModel {
            channel_id: Set(new_id()),
            kind: Set(channel_kind as i32),
            name: Set(Some(name.clone())),
            topic: Set(req.topic.trim().to_string()),
            description: Set(req.description.trim().to_string()),
            creator_id: Set(caller.user_id.clone()),
            archived: Set(false),
            dm_key: Set(None),
            member_count: Set(0),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(duplicate_as(format!("a channel named {name:?} already exists")))?;
        if let Some(key) = key {
            idempotency::ActiveModel {
                creator_id: Set(caller.user_id.clone()),
                idempotency_key: Set(key),
                channel_id: Set(created.channel_id.clone()),
                created_at: Set(now),
                request_fingerprint: Set(Some(fingerprint)),
            }
            .insert(&txn)
            .await?;
        }
        self.channel_event(&txn, "channel.created", &created, &caller.user_id).await?;
        let owner =
            self.add_member(&txn, &created.channel_id, &caller.user_id, MemberRole::Owner, &caller.user_id).await?;
        for id in &member_ids {
            self.add_member(&txn, &created.channel_id, id, MemberRole::Member, &caller.user_id).await?;
        }
        let stored = self.find(&txn, &created.channel_id).await?;
        let result = self.to_proto(&txn, stored, Some(&owner)).await?;
        txn.commit().await.map_err(duplicate_as("this request was already applied"))?;
        self.published().await;
        tracing::info!(channel_id = %result.channel_id, name = %result.name, "channel created");
        Ok(result)
    }

    /// The channel first created with the key, if any; an error if the key
    /// was first sent with a different request.
    async fn replayed_creation(&self, caller: &Caller, key: &str, fingerprint: &str) -> Result<Option<pb::Channel>> {
        let Some(seen) =
            idempotency::Entity::find_by_id((caller.user_id.clone(), key.to_string())).one(&self.db.writer).await?
        else {
            return Ok(None);
        };
        check_same_request(seen.request_fingerprint.as_deref(), fingerprint)?;
        let channel = self.find(&self.db.writer, &seen.channel_id).await?;
        let membership = self.membership(&self.db.writer, &seen.channel_id, &caller.user_id).await?;
        Ok(Some(self.to_proto(&self.db.writer, channel, membership.as_ref()).await?))
    }

    async fn update_channel(&self, caller: &Caller, req: pb::UpdateChannelRequest) -> Result<pb::Channel> {
        let txn = self.db.writer.begin().await?;
        let (channel, membership) = self.viewable(&txn, caller, &req.channel_id).await?;
        if !can_manage(membership.as_ref(), caller.role) {
            return Err(Error::denied("only owners and admins can change this channel"));
        }
        let wanted = req.channel.unwrap_or_default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::default();
        if paths.is_empty() {
            v.add("update_mask", "must name at least one field");
        }
        let mut model = channel.clone().into_active_model();
        for path in &paths {
            match path.as_str() {
                "name" if is_direct(&channel) => v.add("update_mask", "direct messages have no name"),
                "name" => model.name = Set(v.check(normalize_name("channel.name", &wanted.name))),
                "topic" => {
                    v.check(check_text("channel.topic", &wanted.topic, 0, 250));
                    model.topic = Set(wanted.topic.trim().to_string());
                }
                "description" => {
                    v.check(check_text("channel.description", &wanted.description, 0, 1000));
                    model.description = Set(wanted.description.trim().to_string());
                }
                other => {
                    v.add("update_mask", format!("{other:?} cannot be updated (allowed: name, topic, description)"))
                }
            }
        }
        v.finish()?;
        model.updated_at = Set(now_micros());
        let updated = model.update(&txn).await.map_err(duplicate_as("a channel with that name already exists"))?;
        self.channel_event(&txn, "channel.updated", &updated, &caller.user_id).await?;
        let result = self.to_proto(&txn, updated, membership.as_ref()).await?;
        txn.commit().await?;
        self.published().await;
        Ok(result)
    }

    async fn list_my_channels(
        &self,
        caller: &Caller,
        req: pb::ListMyChannelsRequest,
    ) -> Result<pb::ListMyChannelsResponse> {
        let mut v = Violations::default();
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 100, 200);
        let filter = pb::ChannelFilter::try_from(req.filter).unwrap_or_else(|_| {
            v.add("filter", "is not a known filter");
            pb::ChannelFilter::Unspecified
        });
        v.finish()?;
        // Page through memberships by (joined_at desc, channel_id desc).
        let mut query = member::Entity::find().filter(member::Column::UserId.eq(&caller.user_id));
        if let Some(after) = after {
            let (joined, id) =
                parse_cursor(&after).ok_or_else(|| Error::invalid("page_token", "is not a valid page token"))?;
            query = query.filter(
                Condition::any()
                    .add(member::Column::JoinedAt.lt(joined))
                    .add(member::Column::JoinedAt.eq(joined).and(member::Column::ChannelId.lt(id))),
            );
        }
        let memberships = query
            .order_by_desc(member::Column::JoinedAt)
            .order_by_desc(member::Column::ChannelId)
            .all(&self.db.reader)
            .await?;
        let ids: Vec<String> = memberships.iter().map(|m| m.channel_id.clone()).collect();
        let channels = if ids.is_empty() {
            Vec::new()
        } else {
            channel::Entity::find().filter(channel::Column::ChannelId.is_in(ids)).all(&self.db.reader).await?
        };
        let mut out = Vec::new();
        let mut last_included: Option<&member::Model> = None;
        let mut next_page_token = String::new();
        for m in &memberships {
            let Some(c) = channels.iter().find(|c| c.channel_id == m.channel_id) else { continue };
            let wanted = match filter {
                pb::ChannelFilter::Channels => !is_direct(c),
                pb::ChannelFilter::DirectMessages => is_direct(c),
                pb::ChannelFilter::Unspecified => true,
            };
            if !wanted || (c.archived && !req.include_archived) {
                continue;
            }
            if out.len() as u64 == limit {
                if let Some(last) = last_included {
                    next_page_token = encode_page_token(&format!("{}:{}", last.joined_at, last.channel_id));
                }
                break;
            }
            out.push(self.to_proto(&self.db.reader, c.clone(), Some(m)).await?);
            last_included = Some(m);
        }
        Ok(pb::ListMyChannelsResponse { channels: out, next_page_token })
    }

    async fn browse(&self, caller: &Caller, req: pb::BrowseChannelsRequest) -> Result<pb::BrowseChannelsResponse> {
        if caller.role == Role::Guest {
            return Err(Error::denied("guests cannot browse channels"));
        }
        let mut v = Violations::default();
        let prefix = req.name_prefix.trim().to_lowercase();
        if prefix.len() > 80
            || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            v.add("name_prefix", "must be at most 80 characters of a-z, 0-9, '-' or '_'");
        }
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        v.finish()?;
        // Every name character sorts below '~', so this range is the prefix.
        let mut query = channel::Entity::find()
            .filter(channel::Column::Kind.eq(ChannelKind::Public as i32))
            .filter(channel::Column::Name.gte(prefix.as_str()))
            .filter(channel::Column::Name.lt(format!("{prefix}~")));
        if let Some(after) = after {
            query = query.filter(channel::Column::Name.gt(after));
        }
        if !req.include_archived {
            query = query.filter(channel::Column::Archived.eq(false));
        }
        let mut rows = query.order_by_asc(channel::Column::Name).limit(limit + 1).all(&self.db.reader).await?;
        let next_page_token = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().and_then(|c| c.name.clone()).map(|n| encode_page_token(&n)).unwrap_or_default()
        } else {
            String::new()
        };
        let mut channels = Vec::with_capacity(rows.len());
        for c in rows {
            let membership = self.membership(&self.db.reader, &c.channel_id, &caller.user_id).await?;
            channels.push(self.to_proto(&self.db.reader, c, membership.as_ref()).await?);
        }
        Ok(pb::BrowseChannelsResponse { channels, next_page_token })
    }

    async fn join(&self, caller: &Caller, raw_id: &str) -> Result<pb::Channel> {
        let txn = self.db.writer.begin().await?;
        let (channel, membership) = self.viewable(&txn, caller, raw_id).await?;
        if kind(&channel) != ChannelKind::Public {
            return Err(Error::denied("only public channels can be joined; ask a member to add you"));
        }
        if caller.role == Role::Guest {
            return Err(Error::denied("guests join channels only when added"));
        }
        if channel.archived {
            return Err(Error::precondition("the channel is archived"));
        }
        let membership = match membership {
            Some(m) => m,
            None => {
                self.add_member(&txn, &channel.channel_id, &caller.user_id, MemberRole::Member, &caller.user_id).await?
            }
        };
        let channel = self.find(&txn, &channel.channel_id).await?;
        let result = self.to_proto(&txn, channel, Some(&membership)).await?;
        txn.commit().await?;
        self.published().await;
        Ok(result)
    }

    async fn leave(&self, caller: &Caller, raw_id: &str) -> Result<()> {
        let txn = self.db.writer.begin().await?;
        let (channel, membership) = self.viewable(&txn, caller, raw_id).await?;
        let Some(membership) = membership else {
            return Err(Error::precondition("you are not a member of this channel"));
        };
        if kind(&channel) == ChannelKind::Direct {
            return Err(Error::precondition("a direct message cannot be left"));
        }
        if role(&membership) == MemberRole::Owner
            && channel.member_count > 1
            && self.owner_count(&txn, &channel.channel_id).await? == 1
        {
            return Err(Error::precondition("you are the last owner: make another member owner first"));
        }
        self.remove_member(&txn, &channel.channel_id, &caller.user_id, &caller.user_id).await?;
        txn.commit().await?;
        self.published().await;
        Ok(())
    }

    async fn owner_count(&self, txn: &DatabaseTransaction, channel_id: &str) -> Result<usize> {
        Ok(member::Entity::find()
            .filter(member::Column::ChannelId.eq(channel_id))
            .filter(member::Column::Role.eq(MemberRole::Owner as i32))
            .all(txn)
            .await?
            .len())
    }

    async fn add_members(&self, caller: &Caller, req: pb::AddMembersRequest) -> Result<Vec<pb::Member>> {
        let mut v = Violations::default();
        if req.user_ids.is_empty() || req.user_ids.len() > 100 {
            v.add("user_ids", "must list 1 to 100 users");
        }
        let ids = parse_id_list(&mut v, "user_ids", &req.user_ids);
        let new_role = match MemberRole::try_from(req.role) {
            Ok(MemberRole::Unspecified) | Ok(MemberRole::Member) => MemberRole::Member,
            Ok(MemberRole::Admin) => MemberRole::Admin,
            _ => {
                v.add("role", "must be MEMBER_ROLE_MEMBER or MEMBER_ROLE_ADMIN");
                MemberRole::Member
            }
        };
        let channel_id = v.id("channel_id", &req.channel_id);
        v.finish()?;
        // Authorize before asking another service about the users.
        let (channel, membership) = self.viewable(&self.db.reader, caller, &channel_id).await?;
        if !can_add_members(&channel, membership.as_ref(), caller.role) {
            return Err(if is_direct(&channel) {
                Error::precondition("members of a direct message are fixed; open a new one instead")
            } else {
                Error::denied("only owners and admins can add members to a private channel")
            });
        }
        if new_role == MemberRole::Admin && !can_manage(membership.as_ref(), caller.role) {
            return Err(Error::denied("only owners and admins can add admins"));
        }
        if channel.archived {
            return Err(Error::precondition("the channel is archived"));
        }
        self.require_users(caller, "user_ids", &ids).await?;
        let txn = self.db.writer.begin().await?;
        let mut added = Vec::new();
        for id in &ids {
            if self.membership(&txn, &channel_id, id).await?.is_none() {
                let m = self.add_member(&txn, &channel_id, id, new_role, &caller.user_id).await?;
                added.push(to_member(&m));
            }
        }
        txn.commit().await?;
        self.published().await;
        Ok(added)
    }

    async fn remove(&self, caller: &Caller, req: pb::RemoveMemberRequest) -> Result<()> {
        let mut v = Violations::default();
        let channel_id = v.id("channel_id", &req.channel_id);
        let user_id = v.id("user_id", &req.user_id);
        v.finish()?;
        if user_id == caller.user_id {
            return Err(Error::invalid("user_id", "use LeaveChannel to leave"));
        }
        let txn = self.db.writer.begin().await?;
        let (channel, membership) = self.viewable(&txn, caller, &channel_id).await?;
        if is_direct(&channel) {
            return Err(Error::precondition("members of a direct message are fixed"));
        }
        if !can_manage(membership.as_ref(), caller.role) {
            return Err(Error::denied("only owners and admins can remove members"));
        }
        let target =
            self.membership(&txn, &channel_id, &user_id).await?.ok_or_else(|| Error::not_found("not a member"))?;
        let caller_is_owner = membership.as_ref().is_some_and(|m| role(m) == MemberRole::Owner);
        if role(&target) == MemberRole::Owner && !caller_is_owner && caller.role != Role::Admin {
            return Err(Error::denied("only an owner can remove an owner"));
        }
        self.remove_member(&txn, &channel_id, &user_id, &caller.user_id).await?;
        txn.commit().await?;
        self.published().await;
        Ok(())
    }

    async fn list_members(&self, caller: &Caller, req: pb::ListMembersRequest) -> Result<pb::ListMembersResponse> {
        let mut v = Violations::default();
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 100, 1000);
        v.finish()?;
        let (channel, _) = self.viewable(&self.db.reader, caller, &req.channel_id).await?;
        let mut query = member::Entity::find().filter(member::Column::ChannelId.eq(&channel.channel_id));
        if let Some(after) = after {
            let (joined, id) =
                parse_cursor(&after).ok_or_else(|| Error::invalid("page_token", "is not a valid page token"))?;
            query = query.filter(
                Condition::any()
                    .add(member::Column::JoinedAt.gt(joined))
                    .add(member::Column::JoinedAt.eq(joined).and(member::Column::UserId.gt(id))),
            );
        }
        let mut rows = query
            .order_by_asc(member::Column::JoinedAt)
            .order_by_asc(member::Column::UserId)
            .limit(limit + 1)
            .all(&self.db.reader)
            .await?;
        let next_page_token = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|m| encode_page_token(&format!("{}:{}", m.joined_at, m.user_id))).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListMembersResponse { members: rows.iter().map(to_member).collect(), next_page_token })
    }

    async fn update_member_role(&self, caller: &Caller, req: pb::UpdateMemberRoleRequest) -> Result<pb::Member> {
        let mut v = Violations::default();
        let channel_id = v.id("channel_id", &req.channel_id);
        let user_id = v.id("user_id", &req.user_id);
        let new_role = match MemberRole::try_from(req.role) {
            Ok(role) if role != MemberRole::Unspecified => role,
            _ => {
                v.add("role", "must be MEMBER_ROLE_OWNER, MEMBER_ROLE_ADMIN or MEMBER_ROLE_MEMBER");
                MemberRole::Unspecified
            }
        };
        v.finish()?;
        let txn = self.db.writer.begin().await?;
        let (channel, membership) = self.viewable(&txn, caller, &channel_id).await?;
        if is_direct(&channel) {
            return Err(Error::precondition("direct messages have no roles"));
        }
        let caller_is_owner = membership.as_ref().is_some_and(|m| role(m) == MemberRole::Owner);
        if !caller_is_owner && caller.role != Role::Admin {
            return Err(Error::denied("only owners can change roles"));
        }
        let target =
            self.membership(&txn, &channel_id, &user_id).await?.ok_or_else(|| Error::not_found("not a member"))?;
        if role(&target) == MemberRole::Owner
            && new_role != MemberRole::Owner
            && self.owner_count(&txn, &channel_id).await? == 1
        {
            return Err(Error::precondition("a channel needs at least one owner"));
        }
        let mut model = target.into_active_model();
        model.role = Set(new_role as i32);
        let updated = model.update(&txn).await?;
        self.membership_event(&txn, "channel.member_role_changed", &channel_id, &user_id, new_role, &caller.user_id)
            .await?;
        txn.commit().await?;
        self.published().await;
        Ok(to_member(&updated))
    }

    async fn set_archived(&self, caller: &Caller, raw_id: &str, archived: bool) -> Result<pb::Channel> {
        let txn = self.db.writer.begin().await?;
        let (channel, membership) = self.viewable(&txn, caller, raw_id).await?;
        if is_direct(&channel) {
            return Err(Error::precondition("direct messages cannot be archived; hide them instead"));
        }
        if !can_manage(membership.as_ref(), caller.role) {
            return Err(Error::denied("only owners and admins can archive a channel"));
        }
        let result = if channel.archived == archived {
            channel
        } else {
            let mut model = channel.into_active_model();
            model.archived = Set(archived);
            model.updated_at = Set(now_micros());
            let updated = model.update(&txn).await?;
            let kind_ = if archived { "channel.archived" } else { "channel.unarchived" };
            self.channel_event(&txn, kind_, &updated, &caller.user_id).await?;
            updated
        };
        let result = self.to_proto(&txn, result, membership.as_ref()).await?;
        txn.commit().await?;
        self.published().await;
        Ok(result)
    }

    async fn open_dm(
        &self,
        caller: &Caller,
        req: pb::OpenDirectMessageRequest,
    ) -> Result<pb::OpenDirectMessageResponse> {
        let mut v = Violations::default();
        let mut others = parse_id_list(&mut v, "user_ids", &req.user_ids);
        others.retain(|id| *id != caller.user_id);
        if v.is_empty() && (others.is_empty() || others.len() > MAX_DM_OTHERS) {
            v.add("user_ids", format!("must name 1 to {MAX_DM_OTHERS} other users"));
        }
        v.finish()?;
        let mut participants = others.clone();
        participants.push(caller.user_id.clone());
        let key = dm_key(&participants);
        // A block closes a direct message between two people, new or old.
        if let [other] = others.as_slice() {
            deny_if_blocked(&self.users, caller, other).await?;
        }
        if let Some(existing) =
            channel::Entity::find().filter(channel::Column::DmKey.eq(&key)).one(&self.db.reader).await?
        {
            let membership = self.membership(&self.db.reader, &existing.channel_id, &caller.user_id).await?;
            return Ok(pb::OpenDirectMessageResponse {
                channel: Some(self.to_proto(&self.db.reader, existing, membership.as_ref()).await?),
                created: false,
            });
        }
        let users = self.require_users(caller, "user_ids", &others).await?;
        // A new conversation needs everyone's consent to be contacted.
        if let Some(closed) = users.iter().find(|u| u.direct_messages_closed) {
            return Err(Error::denied(format!("{} accepts direct messages only from their contacts", closed.username)));
        }
        let channel_kind = if others.len() == 1 { ChannelKind::Direct } else { ChannelKind::GroupDirect };
        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        let inserted = channel::ActiveModel {
            channel_id: Set(new_id()),
            kind: Set(channel_kind as i32),
            name: Set(None),
            topic: Set(String::new()),
            description: Set(String::new()),
            creator_id: Set(caller.user_id.clone()),
            archived: Set(false),
            dm_key: Set(Some(key.clone())),
            member_count: Set(0),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await;
        let created = match inserted {
            Ok(c) => c,
            // Someone opened the same DM at the same moment: theirs wins.
            Err(e) if is_unique_violation(&e) => {
                drop(txn);
                return Box::pin(
                    self.open_dm(caller, pb::OpenDirectMessageRequest { user_ids: others, ..Default::default() }),
                )
                .await;
            }
            Err(e) => return Err(e.into()),
        };
        self.channel_event(&txn, "channel.created", &created, &caller.user_id).await?;
        let mut mine = None;
        for id in &participants {
            let m = self.add_member(&txn, &created.channel_id, id, MemberRole::Member, &caller.user_id).await?;
            if *id == caller.user_id {
                mine = Some(m);
            }
        }
        let stored = self.find(&txn, &created.channel_id).await?;
        let channel = self.to_proto(&txn, stored, mine.as_ref()).await?;
        txn.commit().await?;
        self.published().await;
        Ok(pb::OpenDirectMessageResponse { channel: Some(channel), created: true })
    }

    async fn create_invitation(&self, caller: &Caller, req: pb::CreateInvitationRequest) -> Result<pb::Invitation> {
        let mut v = Violations::default();
        let channel_id = v.id("channel_id", &req.channel_id);
        let invitee = v.id("invitee_id", &req.invitee_id);
        let ttl_hours = match req.ttl_hours {
            0 => 168,
            h @ 1..=720 => h,
            _ => {
                v.add("ttl_hours", "must be within 1..=720");
                0
            }
        };
        v.finish()?;
        let (channel, membership) = self.viewable(&self.db.reader, caller, &channel_id).await?;
        if !can_add_members(&channel, membership.as_ref(), caller.role) {
            return Err(if is_direct(&channel) {
                Error::precondition("nobody can be invited to a direct message")
            } else {
                Error::denied("only owners and admins can invite to a private channel")
            });
        }
        if channel.archived {
            return Err(Error::precondition("the channel is archived"));
        }
        if self.membership(&self.db.reader, &channel_id, &invitee).await?.is_some() {
            return Err(Error::AlreadyExists("that user is already a member".into()));
        }
        self.require_users(caller, "invitee_id", std::slice::from_ref(&invitee)).await?;
        let now = now_micros();
        let row = invitation::ActiveModel {
            invitation_id: Set(new_id()),
            channel_id: Set(channel_id),
            inviter_id: Set(caller.user_id.clone()),
            invitee_id: Set(invitee),
            state: Set(InvitationState::Pending as i32),
            created_at: Set(now),
            expires_at: Set(now + i64::from(ttl_hours) * 3_600_000_000),
            responded_at: Set(None),
        }
        .insert(&self.db.writer)
        .await?;
        Ok(to_invitation(&row, channel.name.as_deref().unwrap_or_default(), now))
    }

    async fn my_invitations(
        &self,
        caller: &Caller,
        req: pb::ListMyInvitationsRequest,
    ) -> Result<pb::ListMyInvitationsResponse> {
        let mut v = Violations::default();
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        v.finish()?;
        let now = now_micros();
        let mut query = invitation::Entity::find()
            .filter(invitation::Column::InviteeId.eq(&caller.user_id))
            .filter(invitation::Column::State.eq(InvitationState::Pending as i32))
            .filter(invitation::Column::ExpiresAt.gt(now));
        if let Some(after) = after {
            query = query.filter(invitation::Column::InvitationId.gt(after));
        }
        let mut rows =
            query.order_by_asc(invitation::Column::InvitationId).limit(limit + 1).all(&self.db.reader).await?;
        let next_page_token = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|i| encode_page_token(&i.invitation_id)).unwrap_or_default()
        } else {
            String::new()
        };
        let mut invitations = Vec::with_capacity(rows.len());
        for row in rows {
            let name = self.find(&self.db.reader, &row.channel_id).await.ok().and_then(|c| c.name).unwrap_or_default();
            invitations.push(to_invitation(&row, &name, now));
        }
        Ok(pb::ListMyInvitationsResponse { invitations, next_page_token })
    }

    async fn respond(&self, caller: &Caller, req: pb::RespondToInvitationRequest) -> Result<pb::Invitation> {
        let id = parse_id("invitation_id", &req.invitation_id)?;
        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        let found = invitation::Entity::find_by_id(id).one(&txn).await?;
        let Some(found) = found.filter(|i| i.invitee_id == caller.user_id) else {
            return Err(Error::not_found("no such invitation"));
        };
        if found.state != InvitationState::Pending as i32 || found.expires_at <= now {
            return Err(Error::precondition("the invitation is no longer pending"));
        }
        let channel = self.find(&txn, &found.channel_id).await?;
        if req.accept {
            if channel.archived {
                return Err(Error::precondition("the channel is archived"));
            }
            if self.membership(&txn, &channel.channel_id, &caller.user_id).await?.is_none() {
                self.add_member(&txn, &channel.channel_id, &caller.user_id, MemberRole::Member, &found.inviter_id)
                    .await?;
            }
        }
        let mut model = found.into_active_model();
        model.state = Set(if req.accept { InvitationState::Accepted } else { InvitationState::Declined } as i32);
        model.responded_at = Set(Some(now));
        let updated = model.update(&txn).await?;
        txn.commit().await?;
        self.published().await;
        Ok(to_invitation(&updated, channel.name.as_deref().unwrap_or_default(), now))
    }

    async fn update_preferences(
        &self,
        caller: &Caller,
        req: pb::UpdateChannelPreferencesRequest,
    ) -> Result<pb::ChannelPreferences> {
        let channel_id = parse_id("channel_id", &req.channel_id)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(Error::invalid("update_mask", "must name at least one field"));
        }
        let wanted = req.preferences.unwrap_or_default();
        let membership = self
            .membership(&self.db.writer, &channel_id, &caller.user_id)
            .await?
            .ok_or_else(|| Error::denied("you are not a member of this conversation"))?;
        let membership_muted = membership.muted;
        let mut model = membership.into_active_model();
        let mut v = Violations::default();
        for path in &paths {
            match path.as_str() {
                "muted" => model.muted = Set(wanted.muted),
                "hidden" => model.hidden = Set(wanted.hidden),
                "starred" => model.starred = Set(wanted.starred),
                other => v.add("update_mask", format!("{other:?} cannot be updated (allowed: muted, hidden, starred)")),
            }
        }
        v.finish()?;
        let txn = self.db.writer.begin().await?;
        let updated = model.update(&txn).await?;
        if updated.muted != membership_muted {
            // Unread counts live with the messages: the messaging service
            // learns of the change from this event.
            let change = MembershipChanged {
                channel_id: channel_id.clone(),
                user_id: caller.user_id.clone(),
                role: role_name(MemberRole::try_from(updated.role).unwrap_or(MemberRole::Member)).to_string(),
                by_user_id: String::new(),
                muted: updated.muted,
            };
            let event = events::event(
                "channel.member_preferences_changed",
                &caller.user_id,
                Payload::MemberPreferencesChanged(change),
            );
            events::enqueue(&txn, CHANNEL_EVENTS, &channel_id, &event).await?;
        }
        txn.commit().await?;
        self.published().await;
        Ok(to_preferences(&updated))
    }
}

fn parse_cursor(raw: &str) -> Option<(i64, String)> {
    let (joined, id) = raw.split_once(':')?;
    Some((joined.parse().ok()?, id.to_string()))
}

fn to_member(m: &member::Model) -> pb::Member {
    pb::Member { user_id: m.user_id.clone(), role: m.role, join_time: Some(timestamp(m.joined_at)) }
}

fn to_preferences(m: &member::Model) -> pb::ChannelPreferences {
    pb::ChannelPreferences { muted: m.muted, hidden: m.hidden, starred: m.starred }
}

fn to_invitation(i: &invitation::Model, channel_name: &str, now: i64) -> pb::Invitation {
    let state = if i.state == InvitationState::Pending as i32 && i.expires_at <= now {
        InvitationState::Expired as i32
    } else {
        i.state
    };
    pb::Invitation {
        invitation_id: i.invitation_id.clone(),
        channel_id: i.channel_id.clone(),
        channel_name: channel_name.to_string(),
        inviter_id: i.inviter_id.clone(),
        invitee_id: i.invitee_id.clone(),
        state,
        create_time: Some(timestamp(i.created_at)),
        expire_time: Some(timestamp(i.expires_at)),
    }
}

#[tonic::async_trait]
impl ChannelsRpc for ChannelsService {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let idempotency_key = idempotency_key(&request.get_ref().idempotency_key, &request);
        let request = pb::CreateChannelRequest { idempotency_key, ..request.into_inner() };
        let channel = ChannelsService::create_channel(self, &caller, request).await?;
        Ok(Response::new(pb::CreateChannelResponse { channel: Some(channel) }))
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::GetChannelResponse>, Status> {
        let caller = caller(&request)?;
        let (channel, membership) = self.viewable(&self.db.reader, caller, &request.get_ref().channel_id).await?;
        let channel = self.to_proto(&self.db.reader, channel, membership.as_ref()).await?;
        Ok(Response::new(pb::GetChannelResponse { channel: Some(channel) }))
    }

    async fn update_channel(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<Response<pb::UpdateChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UpdateChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UpdateChannel", &req, || async {
                Ok(pb::UpdateChannelResponse {
                    channel: Some(ChannelsService::update_channel(self, &caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_my_channels(
        &self,
        request: Request<pb::ListMyChannelsRequest>,
    ) -> Result<Response<pb::ListMyChannelsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(ChannelsService::list_my_channels(self, &caller, request.into_inner()).await?))
    }

    async fn browse_channels(
        &self,
        request: Request<pb::BrowseChannelsRequest>,
    ) -> Result<Response<pb::BrowseChannelsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.browse(&caller, request.into_inner()).await?))
    }

    async fn join_channel(
        &self,
        request: Request<pb::JoinChannelRequest>,
    ) -> Result<Response<pb::JoinChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::JoinChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "JoinChannel", &req, || async {
                Ok(pb::JoinChannelResponse { channel: Some(self.join(&caller, &req.channel_id).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn leave_channel(
        &self,
        request: Request<pb::LeaveChannelRequest>,
    ) -> Result<Response<pb::LeaveChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::LeaveChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "LeaveChannel", &req, || async {
                self.leave(&caller, &req.channel_id).await?;
                Ok(pb::LeaveChannelResponse {})
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::AddMembersRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "AddMembers", &req, || async {
                Ok(pb::AddMembersResponse { added: ChannelsService::add_members(self, &caller, req.clone()).await? })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::RemoveMemberRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "RemoveMember", &req, || async {
                self.remove(&caller, req.clone()).await?;
                Ok(pb::RemoveMemberResponse {})
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(ChannelsService::list_members(self, &caller, request.into_inner()).await?))
    }

    async fn update_member_role(
        &self,
        request: Request<pb::UpdateMemberRoleRequest>,
    ) -> Result<Response<pb::UpdateMemberRoleResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UpdateMemberRoleRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UpdateMemberRole", &req, || async {
                Ok(pb::UpdateMemberRoleResponse {
                    member: Some(ChannelsService::update_member_role(self, &caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn archive_channel(
        &self,
        request: Request<pb::ArchiveChannelRequest>,
    ) -> Result<Response<pb::ArchiveChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::ArchiveChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "ArchiveChannel", &req, || async {
                Ok(pb::ArchiveChannelResponse {
                    channel: Some(self.set_archived(&caller, &req.channel_id, true).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn unarchive_channel(
        &self,
        request: Request<pb::UnarchiveChannelRequest>,
    ) -> Result<Response<pb::UnarchiveChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UnarchiveChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UnarchiveChannel", &req, || async {
                Ok(pb::UnarchiveChannelResponse {
                    channel: Some(self.set_archived(&caller, &req.channel_id, false).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn open_direct_message(
        &self,
        request: Request<pb::OpenDirectMessageRequest>,
    ) -> Result<Response<pb::OpenDirectMessageResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::OpenDirectMessageRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "OpenDirectMessage", &req, || async {
                self.open_dm(&caller, req.clone()).await
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::CreateInvitationRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "CreateInvitation", &req, || async {
                Ok(pb::CreateInvitationResponse {
                    invitation: Some(ChannelsService::create_invitation(self, &caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_my_invitations(
        &self,
        request: Request<pb::ListMyInvitationsRequest>,
    ) -> Result<Response<pb::ListMyInvitationsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.my_invitations(&caller, request.into_inner()).await?))
    }

    async fn respond_to_invitation(
        &self,
        request: Request<pb::RespondToInvitationRequest>,
    ) -> Result<Response<pb::RespondToInvitationResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::RespondToInvitationRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "RespondToInvitation", &req, || async {
                Ok(pb::RespondToInvitationResponse { invitation: Some(self.respond(&caller, req.clone()).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn update_channel_preferences(
        &self,
        request: Request<pb::UpdateChannelPreferencesRequest>,
    ) -> Result<Response<pb::UpdateChannelPreferencesResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UpdateChannelPreferencesRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UpdateChannelPreferences", &req, || async {
                Ok(pb::UpdateChannelPreferencesResponse {
                    preferences: Some(self.update_preferences(&caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }
}
