//! Invitations to private channels.

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::{InvitationState, MemberRole};
use colink_runtime::error::{Page, Violations};
use colink_runtime::ids::{encode_page_token, new_id, now_micros, parse_id, timestamp};
use colink_runtime::{Caller, Error, Result};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::rules::{can_add_members, is_direct};
use crate::store::invitation;

use crate::ChannelsService;

impl ChannelsService {
    pub(crate) async fn create_invitation(
        &self,
        caller: &Caller,
        req: pb::CreateInvitationRequest,
    ) -> Result<pb::Invitation> {
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
        self.require_not_banned(&self.db.reader, &channel_id, &invitee, &caller.user_id).await?;
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

    pub(crate) async fn my_invitations(
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

    pub(crate) async fn respond(&self, caller: &Caller, req: pb::RespondToInvitationRequest) -> Result<pb::Invitation> {
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
}

pub(crate) fn to_invitation(i: &invitation::Model, channel_name: &str, now: i64) -> pb::Invitation {
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
