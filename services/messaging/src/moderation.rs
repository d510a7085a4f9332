//! What workspace moderators and admins do to messages in any
//! conversation, private channels and direct messages included: hide,
//! restore, delete, and read a message in its context. The admin service
//! calls these, records the moderation and audits reads of conversations
//! the moderator is not in; here the membership check is replaced by the
//! workspace role.

use colink_proto::messaging::v1 as pb;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_runtime::error::Violations;
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use crate::store::message;
use crate::{MessagingService, deletion_of, is_refusal, to_proto};

fn require_moderator(caller: &Caller) -> Result<()> {
    if !matches!(caller.role, Role::Admin | Role::Moderator) {
        return Err(Error::denied("only workspace moderators and admins can do this"));
    }
    Ok(())
}

impl MessagingService {
    /// Whether the caller is in a conversation; one the channels service
    /// will not show them is one they are not in.
    async fn is_member_of(&self, caller: &Caller, channel_id: &str) -> Result<bool> {
        match self.access(caller, channel_id).await {
            Ok(access) => Ok(access.is_member()),
            Err(err) if is_refusal(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    pub(crate) async fn apply_moderation(
        &self,
        caller: &Caller,
        req: &pb::ApplyModerationRequest,
    ) -> Result<pb::ApplyModerationResponse> {
        require_moderator(caller)?;
        let mut v = Violations::default();
        let message_id = v.id("message_id", &req.message_id);
        let effect = pb::ModerationEffect::try_from(req.effect).unwrap_or(pb::ModerationEffect::Unspecified);
        if effect == pb::ModerationEffect::Unspecified {
            v.add("effect", "must be NONE, HIDE, RESTORE or DELETE");
        }
        v.finish()?;
        let found = self.find(&message_id).await?;
        let caller_is_member = self.is_member_of(caller, &found.channel_id).await?;
        let actor = caller.user_id.as_str();
        let (message, changed) = match effect {
            pb::ModerationEffect::Hide => {
                let hidden = self
                    .commit_change(actor, &message_id, |model, current, now| {
                        if !current.is_live() {
                            return Err(Error::precondition("the message was deleted or recalled"));
                        }
                        if current.hidden_at.is_some() {
                            return Ok(None);
                        }
                        model.hidden_at = Set(Some(now));
                        Ok(Some((Kind::MessageHidden(pb::MessageDeleted::default()), "message.hidden")))
                    })
                    .await?;
                (hidden, found.hidden_at.is_none())
            }
            pb::ModerationEffect::Restore => {
                let shown = self
                    .commit_change(actor, &message_id, |model, current, _| {
                        if !current.is_live() {
                            return Err(Error::precondition("a deleted or recalled message cannot be restored"));
                        }
                        if current.hidden_at.is_none() {
                            return Err(Error::precondition("the message is not hidden"));
                        }
                        model.hidden_at = Set(None);
                        Ok(Some((Kind::MessageRestored(pb::Message::default()), "message.restored")))
                    })
                    .await?;
                (shown, true)
            }
            pb::ModerationEffect::Delete => {
                (self.commit_change(actor, &message_id, deletion_of).await?, found.deleted_at.is_none())
            }
            pb::ModerationEffect::None | pb::ModerationEffect::Unspecified => (to_proto(&found), false),
        };
        Ok(pb::ApplyModerationResponse { message: Some(message), caller_is_member, changed })
    }

    pub(crate) async fn read_for_moderation(
        &self,
        caller: &Caller,
        req: &pb::ReadForModerationRequest,
    ) -> Result<pb::ReadForModerationResponse> {
        require_moderator(caller)?;
        let mut v = Violations::default();
        let message_id = v.id("message_id", &req.message_id);
        for (field, n) in [("before", req.before), ("after", req.after)] {
            if !(0..=50).contains(&n) {
                v.add(field, "must be within 0..=50");
            }
        }
        v.finish()?;
        let found = self.find(&message_id).await?;
        let caller_is_member = self.is_member_of(caller, &found.channel_id).await?;
        // A reply is read among its thread's replies, anything else in the
        // main flow.
        let flow = match &found.thread_id {
            Some(thread_id) if !found.also_in_channel => Condition::all().add(message::Column::ThreadId.eq(thread_id)),
            _ => Condition::any().add(message::Column::ThreadId.is_null()).add(message::Column::AlsoInChannel.eq(true)),
        };
        let around = message::Entity::find()
            .filter(message::Column::ChannelId.eq(&found.channel_id))
            .filter(message::Column::ExpiredAt.is_null())
            .filter(flow);
        let mut older = around
            .clone()
            .filter(message::Column::Seq.lt(found.seq))
            .order_by_desc(message::Column::Seq)
            .limit(req.before as u64)
            .all(&self.db.reader)
            .await?;
        older.reverse();
        let newer = around
            .filter(message::Column::Seq.gt(found.seq))
            .order_by_asc(message::Column::Seq)
            .limit(req.after as u64)
            .all(&self.db.reader)
            .await?;
        let messages = older.iter().chain(std::iter::once(&found)).chain(newer.iter()).map(to_proto).collect();
        Ok(pb::ReadForModerationResponse { messages, caller_is_member })
    }
}
