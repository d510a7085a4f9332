//! Direct messages and group DMs: the same people always get the same conversation.

use std::collections::HashSet;

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::{ChannelKind, MemberRole};
use colink_runtime::clients::deny_if_blocked;
use colink_runtime::error::{Violations, is_unique_violation};
use colink_runtime::ids::{new_id, now_micros, parse_id_list};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set, TransactionTrait};

use crate::rules::dm_key;
use crate::store::{channel, member};
use crate::{ChannelsService, MAX_DM_OTHERS};

impl ChannelsService {
    pub(crate) async fn open_dm(
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
        if caller.role == Role::Guest {
            self.require_shared_channels(caller, &others).await?;
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

    /// A guest may start a conversation only with people they meet in a
    /// channel they were added to.
    async fn require_shared_channels(&self, caller: &Caller, others: &[String]) -> Result<()> {
        let mine: Vec<String> = member::Entity::find()
            .select_only()
            .column(member::Column::ChannelId)
            .filter(member::Column::UserId.eq(&caller.user_id))
            .into_tuple()
            .all(&self.db.reader)
            .await?;
        let channels: Vec<String> = channel::Entity::find()
            .select_only()
            .column(channel::Column::ChannelId)
            .filter(channel::Column::ChannelId.is_in(mine))
            .filter(channel::Column::Kind.is_in([ChannelKind::Public as i32, ChannelKind::Private as i32]))
            .into_tuple()
            .all(&self.db.reader)
            .await?;
        let met: HashSet<String> = member::Entity::find()
            .select_only()
            .column(member::Column::UserId)
            .filter(member::Column::ChannelId.is_in(channels))
            .filter(member::Column::UserId.is_in(others.iter().map(String::as_str)))
            .into_tuple::<String>()
            .all(&self.db.reader)
            .await?
            .into_iter()
            .collect();
        if others.iter().any(|other| !met.contains(other)) {
            return Err(Error::denied("guests can message only people in the channels they were added to"));
        }
        Ok(())
    }
}
