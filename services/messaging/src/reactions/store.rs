//! Reactions, their per-emoji counts and the idempotency keys of adds,
//! changed together in one transaction per batch.

use std::collections::{HashMap, HashSet};

use colink_proto::reactions::v1::ReactionGroup;
use sea_orm::sea_query::{Alias, Cond, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};

use crate::store::{reaction, reaction_count, reaction_idempotency};

/// Distinct emoji one message holds at most.
pub const MAX_EMOJI_PER_MESSAGE: u64 = 50;
/// Reactions one user may put on one message.
pub const MAX_PER_USER: u64 = 20;
/// Users named in each group, for tooltips.
const SAMPLE_USERS: i64 = 5;
/// Up to this many groups, samples are read group by group off the index;
/// beyond, in one pass over the messages' reactions.
const FEW_GROUPS: usize = 20;

/// What a batch of changes starts from, read with the messages locked: the
/// reactions its users hold on its messages, the counts of its messages, and
/// which of its idempotency keys were used before.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (message, user, emoji) of every reaction held.
    pub held: HashSet<(String, String, String)>,
    /// (message, emoji) → (count, first use).
    pub counts: HashMap<(String, String), (i32, i64)>,
    /// (user, key) of keys used before.
    pub keys: HashSet<(String, String)>,
}

pub async fn snapshot<C: ConnectionTrait>(
    conn: &C,
    message_ids: &[&str],
    user_ids: &[&str],
    keys: &[&str],
) -> Result<Snapshot, DbErr> {
    let held = reaction::Entity::find()
        .filter(reaction::Column::MessageId.is_in(message_ids.iter().copied()))
        .filter(reaction::Column::UserId.is_in(user_ids.iter().copied()))
        .all(conn)
        .await?
        .into_iter()
        .map(|r| (r.message_id, r.user_id, r.emoji))
        .collect();
    let counts = reaction_count::Entity::find()
        .filter(reaction_count::Column::MessageId.is_in(message_ids.iter().copied()))
        .all(conn)
        .await?
        .into_iter()
        .map(|c| ((c.message_id, c.emoji), (c.count, c.first_at)))
        .collect();
    let keys = if keys.is_empty() {
        HashSet::new()
    } else {
        reaction_idempotency::Entity::find()
            .select_only()
            .columns([reaction_idempotency::Column::UserId, reaction_idempotency::Column::IdempotencyKey])
            .filter(reaction_idempotency::Column::UserId.is_in(user_ids.iter().copied()))
            .filter(reaction_idempotency::Column::IdempotencyKey.is_in(keys.iter().copied()))
            .into_tuple::<(String, String)>()
            .all(conn)
            .await?
            .into_iter()
            .collect()
    };
    Ok(Snapshot { held, counts, keys })
}

/// Records idempotency keys; answers how many were new.
pub async fn insert_keys<C: ConnectionTrait>(conn: &C, keys: Vec<reaction_idempotency::Model>) -> Result<u64, DbErr> {
    if keys.is_empty() {
        return Ok(0);
    }
    let rows = keys.into_iter().map(|k| reaction_idempotency::ActiveModel {
        user_id: Set(k.user_id),
        idempotency_key: Set(k.idempotency_key),
        message_id: Set(k.message_id),
        emoji: Set(k.emoji),
        created_at: Set(k.created_at),
        request_fingerprint: Set(k.request_fingerprint),
    });
    reaction_idempotency::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([reaction_idempotency::Column::UserId, reaction_idempotency::Column::IdempotencyKey])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await
}

/// What a batch changes, worked out against its snapshot.
#[derive(Debug, Default)]
pub struct Writes {
    pub inserted: Vec<reaction::Model>,
    /// (message, user, emoji)
    pub deleted: Vec<(String, String, String)>,
    /// New counts; a count of 0 removes the group.
    pub counts: Vec<reaction_count::Model>,
}

pub async fn apply<C: ConnectionTrait>(conn: &C, writes: Writes) -> Result<(), DbErr> {
    if !writes.deleted.is_empty() {
        let any = writes.deleted.iter().fold(Cond::any(), |any, (m, u, e)| {
            any.add(
                Cond::all()
                    .add(reaction::Column::MessageId.eq(m.as_str()))
                    .add(reaction::Column::UserId.eq(u.as_str()))
                    .add(reaction::Column::Emoji.eq(e.as_str())),
            )
        });
        reaction::Entity::delete_many().filter(any).exec(conn).await?;
    }
    if !writes.inserted.is_empty() {
        let rows = writes.inserted.into_iter().map(|r| reaction::ActiveModel {
            message_id: Set(r.message_id),
            user_id: Set(r.user_id),
            emoji: Set(r.emoji),
            channel_id: Set(r.channel_id),
            created_at: Set(r.created_at),
        });
        reaction::Entity::insert_many(rows).exec_without_returning(conn).await?;
    }
    let (kept, gone): (Vec<_>, Vec<_>) = writes.counts.into_iter().partition(|c| c.count > 0);
    if !gone.is_empty() {
        let any = gone.iter().fold(Cond::any(), |any, c| {
            any.add(
                Cond::all()
                    .add(reaction_count::Column::MessageId.eq(c.message_id.as_str()))
                    .add(reaction_count::Column::Emoji.eq(c.emoji.as_str())),
            )
        });
        reaction_count::Entity::delete_many().filter(any).exec(conn).await?;
    }
    if !kept.is_empty() {
        let rows = kept.into_iter().map(|c| reaction_count::ActiveModel {
            message_id: Set(c.message_id),
            emoji: Set(c.emoji),
            count: Set(c.count),
            first_at: Set(c.first_at),
        });
        reaction_count::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([reaction_count::Column::MessageId, reaction_count::Column::Emoji])
                    .update_column(reaction_count::Column::Count)
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// The reaction groups of some messages as `viewer` sees them, in the order
/// each emoji was first used; messages without reactions are left out.
pub async fn groups<C: ConnectionTrait>(
    conn: &C,
    message_ids: &[String],
    viewer: &str,
) -> Result<HashMap<String, Vec<ReactionGroup>>, DbErr> {
    if message_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let counts = reaction_count::Entity::find()
        .filter(reaction_count::Column::MessageId.is_in(message_ids.iter().cloned()))
        .order_by_asc(reaction_count::Column::FirstAt)
        .order_by_asc(reaction_count::Column::Emoji)
        .all(conn)
        .await?;
    if counts.is_empty() {
        return Ok(HashMap::new());
    }
    let mine: HashSet<(String, String)> = reaction::Entity::find()
        .filter(reaction::Column::MessageId.is_in(message_ids.iter().cloned()))
        .filter(reaction::Column::UserId.eq(viewer))
        .all(conn)
        .await?
        .into_iter()
        .map(|r| (r.message_id, r.emoji))
        .collect();
    let mut samples = if counts.len() <= FEW_GROUPS {
        // Few groups: each reads its first users off the index.
        let mut samples = HashMap::new();
        for c in &counts {
            let users: Vec<String> = reaction::Entity::find()
                .select_only()
                .column(reaction::Column::UserId)
                .filter(reaction::Column::MessageId.eq(&c.message_id))
                .filter(reaction::Column::Emoji.eq(&c.emoji))
                .order_by_asc(reaction::Column::CreatedAt)
                .order_by_asc(reaction::Column::UserId)
                .limit(SAMPLE_USERS as u64)
                .into_tuple()
                .all(conn)
                .await?;
            samples.insert((c.message_id.clone(), c.emoji.clone()), users);
        }
        samples
    } else {
        samples(conn, message_ids).await?
    };
    let mut groups: HashMap<String, Vec<ReactionGroup>> = HashMap::new();
    for c in counts {
        let key = (c.message_id, c.emoji);
        let group = ReactionGroup {
            count: c.count,
            reacted_by_viewer: mine.contains(&key),
            sample_user_ids: samples.remove(&key).unwrap_or_default(),
            emoji: key.1,
        };
        groups.entry(key.0).or_default().push(group);
    }
    Ok(groups)
}

/// The first few users of each (message, emoji), earliest first.
async fn samples<C: ConnectionTrait>(
    conn: &C,
    message_ids: &[String],
) -> Result<HashMap<(String, String), Vec<String>>, DbErr> {
    let ranked = Query::select()
        .columns([reaction::Column::MessageId, reaction::Column::Emoji, reaction::Column::UserId])
        .expr_as(
            Expr::cust("ROW_NUMBER() OVER (PARTITION BY message_id, emoji ORDER BY created_at, user_id)"),
            Alias::new("rank"),
        )
        .from(reaction::Entity)
        .and_where(Expr::col(reaction::Column::MessageId).is_in(message_ids.iter().cloned()))
        .to_owned();
    let query = Query::select()
        .columns([Alias::new("message_id"), Alias::new("emoji"), Alias::new("user_id")])
        .from_subquery(ranked, Alias::new("ranked"))
        .and_where(Expr::col(Alias::new("rank")).lte(SAMPLE_USERS))
        .order_by(Alias::new("rank"), sea_orm::Order::Asc)
        .to_owned();
    let mut samples: HashMap<(String, String), Vec<String>> = HashMap::new();
    for row in conn.query_all(&query).await? {
        let key = (row.try_get_by_index::<String>(0)?, row.try_get_by_index::<String>(1)?);
        samples.entry(key).or_default().push(row.try_get_by_index::<String>(2)?);
    }
    Ok(samples)
}

/// A page of the users who reacted with one emoji, earliest first, and how
/// many they are in all.
pub async fn users<C: ConnectionTrait>(
    conn: &C,
    message_id: &str,
    emoji: &str,
    after: Option<(i64, String)>,
    limit: u64,
) -> Result<(Vec<reaction::Model>, i32), DbErr> {
    let mut query = reaction::Entity::find()
        .filter(reaction::Column::MessageId.eq(message_id))
        .filter(reaction::Column::Emoji.eq(emoji));
    if let Some((at, user)) = after {
        query = query.filter(
            Cond::any()
                .add(reaction::Column::CreatedAt.gt(at))
                .add(reaction::Column::CreatedAt.eq(at).and(reaction::Column::UserId.gt(user))),
        );
    }
    let rows = query
        .order_by_asc(reaction::Column::CreatedAt)
        .order_by_asc(reaction::Column::UserId)
        .limit(limit)
        .all(conn)
        .await?;
    let total = reaction_count::Entity::find_by_id((message_id.to_string(), emoji.to_string()))
        .one(conn)
        .await?
        .map_or(0, |c| c.count);
    Ok((rows, total))
}
