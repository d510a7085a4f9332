//! Mentions: `@username`, `@channel`, `@all` and `@here`, found in a
//! message's text and resolved to the members they reach.

use colink_proto::messaging::v1::MessageMentions;
use colink_proto::presence::v1::{BatchGetPresenceRequest, PresenceStatus};
use colink_proto::users::v1::{BatchGetUsersRequest, CheckBlockedRequest};
use colink_runtime::clients::call_on_behalf;
use colink_runtime::{Caller, Result};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::MessagingService;
use crate::read_states::Sql;
use crate::store::{broadcast, mention, message, read_state};

/// Distinct names looked up per message; further ones mention no one.
const MAX_NAMES: usize = 50;
/// Ids per call to the users and presence services.
const BATCH: usize = 100;

/// What a text asks for, before resolving.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Lowercased usernames, in order of first appearance.
    pub names: Vec<String>,
    /// `@channel` or `@all`.
    pub channel: bool,
    /// `@here`.
    pub here: bool,
}

impl Parsed {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.channel && !self.here
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Finds the mentions in a text. An `@` counts at the start or after a
/// character that cannot be part of a name (so `ann@example.com` mentions
/// no one); a trailing '.' ends a sentence, not the name.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut previous: Option<char> = None;
    for (i, c) in text.char_indices() {
        let starts = c == '@' && !previous.is_some_and(|p| is_name_char(p) || p == '@');
        previous = Some(c);
        if !starts {
            continue;
        }
        let tail = &text[i + 1..];
        let len = tail.find(|c: char| !is_name_char(c)).unwrap_or(tail.len());
        let name = tail[..len].trim_end_matches('.').to_ascii_lowercase();
        match name.as_str() {
            "" => {}
            "channel" | "all" => parsed.channel = true,
            "here" => parsed.here = true,
            _ if name.len() <= 32 && !parsed.names.contains(&name) && parsed.names.len() < MAX_NAMES => {
                parsed.names.push(name)
            }
            _ => {}
        }
    }
    parsed
}

/// A page of the messages that mention a member in conversations they are
/// in, newest first, after `after` (time and message id); and whether more
/// follow. Broadcasts by `ignored` senders are left out.
pub async fn page(
    db: &sea_orm::DatabaseConnection,
    user_id: &str,
    ignored: &[String],
    after: Option<(i64, String)>,
    limit: u64,
) -> Result<(Vec<message::Model>, bool), sea_orm::DbErr> {
    let q = Sql { backend: db.get_database_backend() };
    let ignore = q.not_in("b.sender_id", ignored);
    let (after_sql, after_values): (&str, Vec<sea_orm::Value>) = match after {
        Some((at, id)) => (
            " WHERE x.created_at < ? OR (x.created_at = ? AND x.message_id < ?)",
            vec![at.into(), at.into(), id.into()],
        ),
        None => ("", Vec::new()),
    };
    let sql = format!(
        "SELECT x.message_id FROM (\
         SELECT m.message_id, m.created_at FROM mentions m \
         JOIN read_states r ON r.channel_id = m.channel_id AND r.user_id = m.user_id WHERE m.user_id = ? \
         UNION \
         SELECT b.message_id, b.created_at FROM broadcasts b \
         JOIN read_states r ON r.channel_id = b.channel_id WHERE r.user_id = ? AND b.sender_id <> ?{} \
         ) x{after_sql} ORDER BY x.created_at DESC, x.message_id DESC LIMIT ?",
        ignore.0
    );
    let limit_value = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let values =
        [vec![user_id.into(), user_id.into(), user_id.into()], ignore.1, after_values, vec![limit_value.into()]]
            .concat();
    let mut ids = Vec::new();
    for row in db.query_all_raw(q.statement(&sql, values)).await? {
        ids.push(row.try_get_by_index::<String>(0)?);
    }
    let more = ids.len() as u64 > limit;
    ids.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let found = message::Entity::find().filter(message::Column::MessageId.is_in(ids.clone())).all(db).await?;
    let rows = ids.iter().filter_map(|id| found.iter().find(|m| &m.message_id == id).cloned()).collect();
    Ok((rows, more))
}

/// Rewrites a message's mention rows from its columns: none once it is
/// deleted or recalled.
pub async fn sync<C: ConnectionTrait>(txn: &C, m: &message::Model) -> Result<(), sea_orm::DbErr> {
    mention::Entity::delete_many().filter(mention::Column::MessageId.eq(&m.message_id)).exec(txn).await?;
    broadcast::Entity::delete_by_id(m.message_id.clone()).exec(txn).await?;
    if !m.is_live() {
        return Ok(());
    }
    let mentions = crate::to_proto(m).mentions.unwrap_or_default();
    mention::Entity::insert_many(crate::commit::mention_rows(m, &mentions)).exec_without_returning(txn).await?;
    if mentions.channel {
        broadcast::Entity::insert(crate::commit::broadcast_row(m)).exec_without_returning(txn).await?;
    }
    Ok(())
}

impl MessagingService {
    /// Resolves the mentions of a text sent by `caller` in a conversation:
    /// to members only, never the sender, and not those with a block
    /// between them and the sender.
    pub(crate) async fn resolve_mentions(
        &self,
        caller: &Caller,
        channel_id: &str,
        text: &str,
    ) -> Result<MessageMentions> {
        let parsed = parse(text);
        if parsed.is_empty() {
            return Ok(MessageMentions::default());
        }
        let mut candidates: Vec<String> = Vec::new();
        if !parsed.names.is_empty() {
            let request = BatchGetUsersRequest { user_ids: Vec::new(), usernames: parsed.names.clone() };
            let users =
                call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.batch_get_users(r).await })
                    .await?
                    .users;
            candidates.extend(users.into_iter().map(|u| u.user_id));
        }
        if parsed.here {
            candidates.extend(self.online_members(caller, channel_id).await?);
        }
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|id| *id != caller.user_id && seen.insert(id.clone()));
        let members = self.members_among(channel_id, &candidates).await?;
        let mut user_ids: Vec<String> = candidates.into_iter().filter(|id| members.contains(id)).collect();
        let mut blocked = Vec::new();
        for chunk in user_ids.chunks(BATCH) {
            let request = CheckBlockedRequest {
                user_id: caller.user_id.clone(),
                other_user_id: String::new(),
                other_user_ids: chunk.to_vec(),
            };
            let answer =
                call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.check_blocked(r).await })
                    .await?;
            blocked.extend(answer.blocked_user_ids);
        }
        user_ids.retain(|id| !blocked.contains(id));
        Ok(MessageMentions { user_ids, channel: parsed.channel, here: parsed.here })
    }

    /// Those of `ids` who are members of the conversation, as far as this
    /// service has recorded their joining.
    async fn members_among(&self, channel_id: &str, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut members = Vec::new();
        for chunk in ids.chunks(BATCH) {
            let found: Vec<String> = read_state::Entity::find()
                .select_only()
                .column(read_state::Column::UserId)
                .filter(read_state::Column::ChannelId.eq(channel_id))
                .filter(read_state::Column::UserId.is_in(chunk.iter().cloned()))
                .into_tuple()
                .all(&self.db.reader)
                .await?;
            members.extend(found);
        }
        Ok(members)
    }

    /// The conversation's members who are online now.
    async fn online_members(&self, caller: &Caller, channel_id: &str) -> Result<Vec<String>> {
        let members: Vec<String> = read_state::Entity::find()
            .select_only()
            .column(read_state::Column::UserId)
            .filter(read_state::Column::ChannelId.eq(channel_id))
            .into_tuple()
            .all(&self.db.reader)
            .await?;
        let mut online = Vec::new();
        for chunk in members.chunks(BATCH) {
            let request = BatchGetPresenceRequest { user_ids: chunk.to_vec() };
            let presences =
                call_on_behalf(
                    &self.presence,
                    caller,
                    request,
                    |mut c, r| async move { c.batch_get_presence(r).await },
                )
                .await?
                .presences;
            online
                .extend(presences.into_iter().filter(|p| p.status == PresenceStatus::Online as i32).map(|p| p.user_id));
        }
        Ok(online)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_and_broadcasts() {
        let parsed = parse("@Bob, can you and @carol.smith look? cc @channel. Thanks @bob.");
        assert_eq!(parsed.names, ["bob", "carol.smith"]);
        assert!(parsed.channel && !parsed.here);
        let parsed = parse("@here @all");
        assert!(parsed.here && parsed.channel && parsed.names.is_empty());
    }

    #[test]
    fn ignores_what_is_not_a_mention() {
        assert!(parse("mail ann@example.com or @ alone, @@x").is_empty());
        assert!(parse("no mentions here").is_empty());
        assert_eq!(parse("(@dave)").names, ["dave"]);
        assert_eq!(parse(&"@a ".repeat(3)).names, ["a"]);
    }
}
