//! Moderators' restrictions on one user. A ban removes them from a channel
//! and keeps them out; a mute, in one conversation or in all of them, lets
//! them read but not post. AdminService's sanctions set and lift both; this
//! service enforces bans and tells members whether they are muted, so that
//! every service that lets people post (uploads, typing) can refuse them.

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::RestrictionKind;
use colink_runtime::error::Violations;
use colink_runtime::ids::{micros_of, now_micros, rfc3339};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, TransactionTrait};

use crate::ChannelsService;
use crate::rules::is_direct;
use crate::store::restriction;

/// A mute in force: until when, or `None` for good.
pub(crate) type Mute = Option<i64>;

impl ChannelsService {
    pub(crate) async fn set_restriction(
        &self,
        caller: &Caller,
        req: &pb::SetMemberRestrictionRequest,
    ) -> Result<pb::SetMemberRestrictionResponse> {
        let mut v = Violations::default();
        let user_id = v.id("user_id", &req.user_id);
        let channel_id = v.optional_id("channel_id", &req.channel_id).unwrap_or_default();
        let kind = RestrictionKind::try_from(req.kind).unwrap_or(RestrictionKind::Unspecified);
        if kind == RestrictionKind::Unspecified {
            v.add("kind", "must be RESTRICTION_KIND_MUTE or RESTRICTION_KIND_BAN");
        }
        let now = now_micros();
        let expire_at = req.expire_time.as_ref().map(micros_of);
        if !req.lift && expire_at.is_some_and(|at| at <= now) {
            v.add("expire_time", "must be in the future");
        }
        v.finish()?;
        if !matches!(caller.role, Role::Admin | Role::Moderator) {
            return Err(Error::denied("only workspace moderators and admins can restrict users"));
        }
        if kind == RestrictionKind::Ban && channel_id.is_empty() {
            return Err(Error::precondition("a ban needs a channel_id; a workspace ban suspends the account instead"));
        }
        if !channel_id.is_empty() {
            let channel = self.find(&self.db.reader, &channel_id).await?;
            if kind == RestrictionKind::Ban && is_direct(&channel) {
                return Err(Error::precondition("nobody can be banned from a direct message"));
            }
        }
        if req.validate_only {
            return Ok(pb::SetMemberRestrictionResponse::default());
        }
        let key = (user_id.clone(), channel_id.clone(), kind as i32);
        let txn = self.db.writer.begin().await?;
        if req.lift {
            restriction::Entity::delete_by_id(key).exec(&txn).await?;
            txn.commit().await?;
            return Ok(pb::SetMemberRestrictionResponse::default());
        }
        let row = restriction::ActiveModel {
            user_id: Set(user_id.clone()),
            channel_id: Set(channel_id.clone()),
            kind: Set(kind as i32),
            expire_at: Set(expire_at),
            created_at: Set(now),
        };
        restriction::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    restriction::Column::UserId,
                    restriction::Column::ChannelId,
                    restriction::Column::Kind,
                ])
                .update_columns([restriction::Column::ExpireAt, restriction::Column::CreatedAt])
                .to_owned(),
            )
            .exec(&txn)
            .await?;
        let removed = kind == RestrictionKind::Ban && self.membership(&txn, &channel_id, &user_id).await?.is_some();
        if removed {
            self.remove_member(&txn, &channel_id, &user_id, &caller.user_id).await?;
        }
        txn.commit().await?;
        if removed {
            self.published().await;
        }
        Ok(pb::SetMemberRestrictionResponse { removed })
    }

    /// The user's mutes in force, in any conversation or in all of them.
    pub(crate) async fn mutes_of<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
    ) -> Result<Vec<restriction::Model>> {
        let now = now_micros();
        let rows = restriction::Entity::find()
            .filter(restriction::Column::UserId.eq(user_id))
            .filter(restriction::Column::Kind.eq(RestrictionKind::Mute as i32))
            .all(conn)
            .await?;
        Ok(rows.into_iter().filter(|r| r.in_force(now)).collect())
    }

    /// Refuses to let a banned user into the channel: the user themself
    /// (joining, accepting an invitation) is denied, others adding them
    /// are told why.
    pub(crate) async fn require_not_banned<C: ConnectionTrait>(
        &self,
        conn: &C,
        channel_id: &str,
        user_id: &str,
        by: &str,
    ) -> Result<()> {
        let key = (user_id.to_string(), channel_id.to_string(), RestrictionKind::Ban as i32);
        let Some(ban) = restriction::Entity::find_by_id(key).one(conn).await? else { return Ok(()) };
        if !ban.in_force(now_micros()) {
            return Ok(());
        }
        let until = ban.expire_at.map(|at| format!(" until {}", rfc3339(at))).unwrap_or_default();
        Err(if user_id == by {
            Error::denied(format!("you are banned from this channel{until}"))
        } else {
            Error::precondition(format!("user {user_id} is banned from this channel{until}"))
        })
    }
}

/// The mute that holds in one conversation: the longer of the channel's
/// own and the workspace's.
pub(crate) fn mute_in(mutes: &[restriction::Model], channel_id: &str) -> Option<Mute> {
    mutes.iter().filter(|m| m.channel_id.is_empty() || m.channel_id == channel_id).map(|m| m.expire_at).reduce(
        |a, b| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        },
    )
}
