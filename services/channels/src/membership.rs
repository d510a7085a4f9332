//! Joining, leaving, members and their roles, and each member's own preferences.

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::{ChannelKind, MemberRole};
use colink_proto::events::v1::{MembershipChanged, event::Payload};
use colink_runtime::error::{Page, Violations};
use colink_runtime::events::{self, CHANNEL_EVENTS};
use colink_runtime::ids::{encode_page_token, parse_id, parse_id_list};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::sea_query::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};

use crate::rules::{can_add_members, can_manage, is_direct, kind, role, role_name};
use crate::store::member;
use crate::{ChannelsService, parse_cursor, to_member, to_preferences};

impl ChannelsService {
    pub(crate) async fn join(&self, caller: &Caller, raw_id: &str) -> Result<pb::Channel> {
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

    pub(crate) async fn leave(&self, caller: &Caller, raw_id: &str) -> Result<()> {
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

    pub(crate) async fn owner_count(&self, txn: &DatabaseTransaction, channel_id: &str) -> Result<usize> {
        Ok(member::Entity::find()
            .filter(member::Column::ChannelId.eq(channel_id))
            .filter(member::Column::Role.eq(MemberRole::Owner as i32))
            .all(txn)
            .await?
            .len())
    }

    pub(crate) async fn add_members(&self, caller: &Caller, req: pb::AddMembersRequest) -> Result<Vec<pb::Member>> {
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

    pub(crate) async fn remove(&self, caller: &Caller, req: pb::RemoveMemberRequest) -> Result<()> {
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

    pub(crate) async fn list_members(
        &self,
        caller: &Caller,
        req: pb::ListMembersRequest,
    ) -> Result<pb::ListMembersResponse> {
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

    pub(crate) async fn update_member_role(
        &self,
        caller: &Caller,
        req: pb::UpdateMemberRoleRequest,
    ) -> Result<pb::Member> {
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

    pub(crate) async fn update_preferences(
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
