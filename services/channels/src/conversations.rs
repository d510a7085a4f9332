//! Creating, changing, listing and archiving channels.

use std::collections::HashMap;

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::{ChannelKind, MemberRole};
use colink_runtime::error::{Page, Violations, duplicate_as};
use colink_runtime::ids::{
    check_idempotency_key, check_same_request, check_text, encode_page_token, new_id, now_micros, parse_id_list,
    request_fingerprint,
};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::sea_query::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::rules::{can_manage, is_direct, normalize_name};
use crate::store::{channel, idempotency, member};
use crate::{ChannelsService, parse_cursor};

impl ChannelsService {
    pub(crate) async fn create_channel(&self, caller: &Caller, req: pb::CreateChannelRequest) -> Result<pb::Channel> {
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
    pub(crate) async fn replayed_creation(
        &self,
        caller: &Caller,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<pb::Channel>> {
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

    pub(crate) async fn update_channel(&self, caller: &Caller, req: pb::UpdateChannelRequest) -> Result<pb::Channel> {
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

    pub(crate) async fn list_my_channels(
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
        // One page of memberships (and one more, to know whether another
        // page follows); a page shows fewer conversations than its size when
        // the filter leaves some out.
        let mut memberships = query
            .order_by_desc(member::Column::JoinedAt)
            .order_by_desc(member::Column::ChannelId)
            .limit(limit + 1)
            .all(&self.db.reader)
            .await?;
        let more = memberships.len() as u64 > limit;
        memberships.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let ids: Vec<String> = memberships.iter().map(|m| m.channel_id.clone()).collect();
        let mut channels: HashMap<String, channel::Model> = if ids.is_empty() {
            HashMap::new()
        } else {
            channel::Entity::find()
                .filter(channel::Column::ChannelId.is_in(ids))
                .all(&self.db.reader)
                .await?
                .into_iter()
                .map(|c| (c.channel_id.clone(), c))
                .collect()
        };
        let direct: Vec<String> = channels.values().filter(|c| is_direct(c)).map(|c| c.channel_id.clone()).collect();
        let mut participants = crate::participants(&self.db.reader, &direct).await?;
        let mutes = self.mutes_of(&self.db.reader, &caller.user_id).await?;
        let mut out = Vec::with_capacity(memberships.len());
        for m in &memberships {
            let Some(c) = channels.remove(&m.channel_id) else { continue };
            let wanted = match filter {
                pb::ChannelFilter::Channels => !is_direct(&c),
                pb::ChannelFilter::DirectMessages => is_direct(&c),
                pb::ChannelFilter::Unspecified => true,
            };
            if !wanted || (c.archived && !req.include_archived) {
                continue;
            }
            let people = participants.remove(&c.channel_id).unwrap_or_default();
            let mute = crate::restrictions::mute_in(&mutes, &c.channel_id);
            out.push(crate::channel_proto(c, Some(m), people, mute));
        }
        let next_page_token = match (more, memberships.last()) {
            (true, Some(last)) => encode_page_token(&format!("{}:{}", last.joined_at, last.channel_id)),
            _ => String::new(),
        };
        Ok(pb::ListMyChannelsResponse { channels: out, next_page_token })
    }

    pub(crate) async fn browse(
        &self,
        caller: &Caller,
        req: pb::BrowseChannelsRequest,
    ) -> Result<pb::BrowseChannelsResponse> {
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

    pub(crate) async fn set_archived(&self, caller: &Caller, raw_id: &str, archived: bool) -> Result<pb::Channel> {
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
}
