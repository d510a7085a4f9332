//! The channels service: public and private channels, DMs and group DMs,
//! membership with roles, invitations, archiving and per-member preferences.
//! Membership changes go out as `channel.events` through the outbox, in the
//! transaction that makes them.

mod conversations;
mod direct;
mod handlers;
mod invitations;
mod membership;
mod restrictions;
mod rules;
mod store;

use std::collections::HashMap;

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::MemberRole;
use colink_proto::channels::v1::channels_service_server::ChannelsServiceServer;
use colink_proto::events::v1::{ChannelChanged, MembershipChanged, event::Payload};
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_proto::users::v1::{BatchGetUsersRequest, User};
use colink_runtime::clients::PeerChannel;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::db::Db;
use colink_runtime::events::{self, CHANNEL_EVENTS, Outbox};
use colink_runtime::ids::{now_micros, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, Set,
};

use crate::rules::{can_view, is_direct, kind, kind_name, role_name};
use crate::store::{channel, member};
use colink_runtime::idempotency::Keys;

const MAX_DM_OTHERS: usize = 8;
/// How long a membership change waits for its events to be published.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct ChannelsService {
    db: Db,
    outbox: Outbox,
    users: UsersServiceClient<PeerChannel>,
    keys: Keys,
}

impl ChannelsService {
    pub fn new(db: Db, outbox: Outbox, users: PeerChannel) -> Self {
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
            participants(conn, std::slice::from_ref(&c.channel_id)).await?.remove(&c.channel_id).unwrap_or_default()
        } else {
            Vec::new()
        };
        let mute = match membership {
            Some(m) => restrictions::mute_in(&self.mutes_of(conn, &m.user_id).await?, &c.channel_id),
            None => None,
        };
        Ok(channel_proto(c, membership, participant_ids, mute))
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
        self.require_not_banned(txn, channel_id, user_id, by).await?;
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
}

pub(crate) fn parse_cursor(raw: &str) -> Option<(i64, String)> {
    let (joined, id) = raw.split_once(':')?;
    Some((joined.parse().ok()?, id.to_string()))
}

pub(crate) fn to_member(m: &member::Model) -> pb::Member {
    pb::Member { user_id: m.user_id.clone(), role: m.role, join_time: Some(timestamp(m.joined_at)) }
}

pub(crate) fn to_preferences(m: &member::Model) -> pb::ChannelPreferences {
    pb::ChannelPreferences { muted: m.muted, hidden: m.hidden, starred: m.starred }
}

/// The members of direct conversations, by channel, each list in user id
/// order: the participants a DM shows.
async fn participants<C: ConnectionTrait>(conn: &C, channel_ids: &[String]) -> Result<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if channel_ids.is_empty() {
        return Ok(out);
    }
    let rows = member::Entity::find()
        .filter(member::Column::ChannelId.is_in(channel_ids.to_vec()))
        .order_by_asc(member::Column::UserId)
        .all(conn)
        .await?;
    for m in rows {
        out.entry(m.channel_id).or_default().push(m.user_id);
    }
    Ok(out)
}

/// A channel as the contract shows it to a viewer, with the viewer's mute
/// there if one holds.
fn channel_proto(
    c: channel::Model,
    membership: Option<&member::Model>,
    participant_ids: Vec<String>,
    mute: Option<restrictions::Mute>,
) -> pb::Channel {
    pb::Channel {
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
        viewer_muted: mute.is_some(),
        viewer_muted_until: mute.flatten().map(timestamp),
    }
}
