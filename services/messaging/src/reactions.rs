//! colink.reactions.v1: emoji reactions on messages. Each change is written
//! with its entry in the conversation's log and its domain event, in one
//! transaction, by the batch writer of `writer.rs`.

pub(crate) mod store;
pub(crate) mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use colink_proto::reactions::v1 as pb;
use colink_proto::reactions::v1::reactions_service_server::{ReactionsService as ReactionsRpc, ReactionsServiceServer};
use colink_runtime::error::{Page, Violations};
use colink_runtime::idempotency::key_of;
use colink_runtime::ids::{
    check_idempotency_key, check_same_request, encode_page_token, idempotency_key, now_micros, parse_id,
    request_fingerprint, timestamp,
};
use colink_runtime::{Caller, Error, Result, caller};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tonic::{Request, Response, Status};

use crate::store::{message, reaction, reaction_idempotency};
use crate::{MessagingService, emoji};
use writer::{Change, Done};

/// The reactions service, sharing the messaging service's store.
pub struct Reactions(pub(crate) Arc<MessagingService>);

impl Reactions {
    pub fn into_server(self) -> ReactionsServiceServer<Self> {
        ReactionsServiceServer::new(self)
    }
}

/// An add that went through, or the original one a retry repeats.
struct Outcome {
    reaction: pb::Reaction,
    message_id: String,
}

impl MessagingService {
    /// The reactions of one message for the caller; empty when it is gone.
    async fn message_reactions(&self, caller: &Caller, m: &message::Model) -> Result<pb::MessageReactions> {
        let groups = if m.is_live() {
            store::groups(&self.db.reader, std::slice::from_ref(&m.message_id), &caller.user_id)
                .await?
                .remove(&m.message_id)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(pb::MessageReactions { message_id: m.message_id.clone(), groups })
    }

    /// A message the caller may react to now: live, in a conversation the
    /// caller may post in.
    async fn reactable(&self, caller: &Caller, message_id: &str) -> Result<message::Model> {
        let found = self.find(&parse_id("message_id", message_id)?).await?;
        // Remembered for a moment, as for sends: reacting is as frequent.
        let access = self.member_access(caller, &found.channel_id).await?;
        access.require_writable()?;
        self.require_unblocked(caller, &access).await?;
        if !found.is_live() {
            return Err(Error::precondition("deleted and recalled messages take no reactions"));
        }
        Ok(found)
    }

    /// Adds a reaction, or answers a retry with the original. Keys are
    /// checked by the batch writer, so a first attempt costs no look-up;
    /// a retry that can no longer react (the message went, or the caller's
    /// access) still gets its original. Also returns the message as the
    /// add found it, when it went through.
    async fn add_reaction(
        &self,
        caller: &Caller,
        message_id: &str,
        emoji: &str,
        key: Option<(String, String)>,
    ) -> Result<(Outcome, Option<message::Model>)> {
        let found = match self.reactable(caller, message_id).await {
            Ok(found) => found,
            Err(err) => {
                if let Some((key, fingerprint)) = &key
                    && let Some(original) = self.original_reaction(caller, key, fingerprint).await?
                {
                    return Ok((original, None));
                }
                return Err(err);
            }
        };
        let row = reaction::Model {
            message_id: found.message_id.clone(),
            user_id: caller.user_id.clone(),
            emoji: emoji.to_string(),
            channel_id: found.channel_id.clone(),
            created_at: now_micros(),
        };
        match self.reaction_writer.submit(Change::Add { row: row.clone(), key: key.clone() }).await? {
            Done::Added => Ok((Outcome { reaction: to_reaction(&row), message_id: row.message_id }, Some(found))),
            // The key was used before, or by a concurrent call that got there first.
            Done::Repeated | Done::Removed(_) => {
                let (key, fingerprint) = key.ok_or_else(|| Error::internal("a repeat without a key"))?;
                let original = self
                    .original_reaction(caller, &key, &fingerprint)
                    .await?
                    .ok_or_else(|| Error::internal("idempotent original vanished"))?;
                Ok((original, None))
            }
        }
    }

    /// The reaction first added with an idempotency key, if any. Read from
    /// a reader: a key is looked up after its batch committed, and the one
    /// writer stays free for the batches.
    async fn original_reaction(&self, caller: &Caller, key: &str, fingerprint: &str) -> Result<Option<Outcome>> {
        let Some(seen) = reaction_idempotency::Entity::find_by_id((caller.user_id.clone(), key.to_string()))
            .one(&self.db.reader)
            .await?
        else {
            return Ok(None);
        };
        check_same_request(seen.request_fingerprint.as_deref(), fingerprint)?;
        let reaction = pb::Reaction {
            message_id: seen.message_id.clone(),
            user_id: seen.user_id,
            emoji: seen.emoji,
            create_time: Some(timestamp(seen.created_at)),
        };
        Ok(Some(Outcome { reaction, message_id: seen.message_id }))
    }

    async fn remove_reaction(&self, caller: &Caller, message_id: &str, emoji: &str) -> Result<(bool, message::Model)> {
        let found = self.reactable(caller, message_id).await?;
        let change = Change::Remove {
            message_id: found.message_id.clone(),
            user_id: caller.user_id.clone(),
            emoji: emoji.to_string(),
        };
        let removed = self.reaction_writer.submit(change).await? == Done::Removed(true);
        Ok((removed, found))
    }
}

fn to_reaction(r: &reaction::Model) -> pb::Reaction {
    pb::Reaction {
        message_id: r.message_id.clone(),
        user_id: r.user_id.clone(),
        emoji: r.emoji.clone(),
        create_time: Some(timestamp(r.created_at)),
    }
}

/// A message id and an emoji, validated together.
fn parse_target(message_id: &str, raw_emoji: &str) -> Result<(String, String)> {
    let mut v = Violations::default();
    let id = v.id("message_id", message_id);
    let emoji = match emoji::parse(raw_emoji) {
        Ok(emoji) => emoji,
        Err(why) => {
            v.add("emoji", why);
            String::new()
        }
    };
    v.finish()?;
    Ok((id, emoji))
}

#[tonic::async_trait]
impl ReactionsRpc for Reactions {
    async fn add_reaction(
        &self,
        request: Request<pb::AddReactionRequest>,
    ) -> Result<Response<pb::AddReactionResponse>, Status> {
        let caller = caller(&request)?.clone();
        let raw_key = idempotency_key(&request.get_ref().idempotency_key, &request);
        let req = request.into_inner();
        let (message_id, emoji) = parse_target(&req.message_id, &req.emoji)?;
        let key = check_idempotency_key("idempotency_key", &raw_key).map_err(Error::from)?;
        let key = key.map(|key| {
            let asked = pb::AddReactionRequest {
                message_id: message_id.clone(),
                emoji: emoji.clone(),
                idempotency_key: String::new(),
            };
            (key, request_fingerprint(&asked))
        });
        let (outcome, found) = self.0.add_reaction(&caller, &message_id, &emoji, key).await?;
        let current = match found {
            Some(found) => found,
            None => self.0.find(&outcome.message_id).await?,
        };
        let reactions = self.0.message_reactions(&caller, &current).await?;
        Ok(Response::new(pb::AddReactionResponse { reaction: Some(outcome.reaction), reactions: Some(reactions) }))
    }

    async fn remove_reaction(
        &self,
        request: Request<pb::RemoveReactionRequest>,
    ) -> Result<Response<pb::RemoveReactionResponse>, Status> {
        let caller = caller(&request)?;
        let (message_id, emoji) = parse_target(&request.get_ref().message_id, &request.get_ref().emoji)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::RemoveReactionRequest { message_id, emoji, idempotency_key: String::new() };
        let response = self
            .0
            .keys
            .once(&caller.user_id, key, "RemoveReaction", &req, || async {
                let (removed, found) = self.0.remove_reaction(caller, &req.message_id, &req.emoji).await?;
                let reactions = self.0.message_reactions(caller, &found).await?;
                Ok(pb::RemoveReactionResponse { removed, reactions: Some(reactions) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_reactions(
        &self,
        request: Request<pb::ListReactionsRequest>,
    ) -> Result<Response<pb::ListReactionsResponse>, Status> {
        let caller = caller(&request)?;
        let (found, _) = self.0.visible_message(caller, &request.get_ref().message_id).await?;
        let reactions = self.0.message_reactions(caller, &found).await?;
        Ok(Response::new(pb::ListReactionsResponse { reactions: Some(reactions) }))
    }

    async fn batch_get_reactions(
        &self,
        request: Request<pb::BatchGetReactionsRequest>,
    ) -> Result<Response<pb::BatchGetReactionsResponse>, Status> {
        let caller = caller(&request)?;
        let raw = &request.get_ref().message_ids;
        let mut v = Violations::default();
        if raw.is_empty() || raw.len() > 100 {
            v.add("message_ids", format!("must list 1 to 100 message ids (got {})", raw.len()));
        }
        let mut ids = Vec::with_capacity(raw.len());
        for (i, id) in raw.iter().enumerate() {
            if let Some(id) = v.check(parse_id(&format!("message_ids[{i}]"), id)) {
                if ids.contains(&id) {
                    v.add(&format!("message_ids[{i}]"), "repeats an earlier id");
                }
                ids.push(id);
            }
        }
        v.finish()?;
        let found = message::Entity::find()
            .filter(message::Column::MessageId.is_in(ids.clone()))
            .all(&self.0.db.reader)
            .await
            .map_err(Error::from)?;
        // One access check per conversation, not per message.
        let mut readable: HashMap<String, bool> = HashMap::new();
        for m in &found {
            if !readable.contains_key(&m.channel_id) {
                let ok = match self.0.access(caller, &m.channel_id).await {
                    Ok(_) => true,
                    Err(Error::Upstream(status))
                        if matches!(status.code(), tonic::Code::NotFound | tonic::Code::PermissionDenied) =>
                    {
                        false
                    }
                    Err(err) => return Err(err.into()),
                };
                readable.insert(m.channel_id.clone(), ok);
            }
        }
        let live: Vec<String> = found
            .iter()
            .filter(|m| m.is_live() && readable.get(&m.channel_id).copied().unwrap_or(false))
            .map(|m| m.message_id.clone())
            .collect();
        let mut groups = store::groups(&self.0.db.reader, &live, &caller.user_id).await.map_err(Error::from)?;
        let shown: HashMap<&str, bool> = found
            .iter()
            .map(|m| (m.message_id.as_str(), readable.get(&m.channel_id).copied().unwrap_or(false)))
            .collect();
        let reactions = ids
            .iter()
            .filter(|id| shown.get(id.as_str()).copied().unwrap_or(false))
            .map(|id| pb::MessageReactions { message_id: id.clone(), groups: groups.remove(id).unwrap_or_default() })
            .collect();
        Ok(Response::new(pb::BatchGetReactionsResponse { reactions }))
    }

    async fn list_reaction_users(
        &self,
        request: Request<pb::ListReactionUsersRequest>,
    ) -> Result<Response<pb::ListReactionUsersResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let (message_id, emoji) = parse_target(&req.message_id, &req.emoji)?;
        let mut v = Violations::default();
        let Page { limit, after } = v.page(req.page_size, &req.page_token, 50, 100);
        let after = after.map(|token| {
            token
                .split_once(':')
                .and_then(|(at, user)| Some((at.parse::<i64>().ok()?, parse_id("page_token", user).ok()?)))
                .unwrap_or_else(|| {
                    v.add("page_token", "is not a valid page token for this list");
                    (0, String::new())
                })
        });
        v.finish()?;
        let (found, _) = self.0.visible_message(caller, &message_id).await?;
        if !found.is_live() {
            return Ok(Response::new(pb::ListReactionUsersResponse::default()));
        }
        let (mut rows, total_count) =
            store::users(&self.0.db.reader, &found.message_id, &emoji, after, limit + 1).await.map_err(Error::from)?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => encode_page_token(&format!("{}:{}", last.created_at, last.user_id)),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListReactionUsersResponse {
            reactions: rows.iter().map(to_reaction).collect(),
            total_count,
            next_page_token,
        }))
    }
}
