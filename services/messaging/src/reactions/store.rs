//! Reactions and their per-emoji counts, changed together in one
//! transaction.

use std::collections::{HashMap, HashSet};

use colink_proto::reactions::v1::ReactionGroup;
use sea_orm::sea_query::{Alias, Cond, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use crate::store::{reaction, reaction_count};

/// Distinct emoji one message holds at most.
pub const MAX_EMOJI_PER_MESSAGE: u64 = 50;
/// Reactions one user may put on one message.
pub const MAX_PER_USER: u64 = 20;
/// Users named in each group, for tooltips.
const SAMPLE_USERS: i64 = 5;
/// Up to this many groups, samples are read group by group off the index;
/// beyond, in one pass over the messages' reactions.
const FEW_GROUPS: usize = 20;

/// What became of an add.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    Stored,
    /// The user already reacted with this emoji.
    AlreadyThere,
    TooManyEmoji,
    TooManyOfUser,
}

/// Adds a reaction, within the limits. Call with the message row locked,
/// so that concurrent adds cannot both take the last free place.
pub async fn add<C: ConnectionTrait>(txn: &C, row: &reaction::Model) -> Result<Added, DbErr> {
    let exists = reaction::Entity::find_by_id((row.message_id.clone(), row.user_id.clone(), row.emoji.clone()))
        .one(txn)
        .await?
        .is_some();
    if exists {
        return Ok(Added::AlreadyThere);
    }
    let of_message = reaction_count::Entity::find().filter(reaction_count::Column::MessageId.eq(&row.message_id));
    let emoji_is_new =
        of_message.clone().filter(reaction_count::Column::Emoji.eq(&row.emoji)).one(txn).await?.is_none();
    if emoji_is_new && of_message.count(txn).await? >= MAX_EMOJI_PER_MESSAGE {
        return Ok(Added::TooManyEmoji);
    }
    let of_user = reaction::Entity::find()
        .filter(reaction::Column::MessageId.eq(&row.message_id))
        .filter(reaction::Column::UserId.eq(&row.user_id))
        .count(txn)
        .await?;
    if of_user >= MAX_PER_USER {
        return Ok(Added::TooManyOfUser);
    }
    reaction::Entity::insert(reaction::ActiveModel {
        message_id: Set(row.message_id.clone()),
        user_id: Set(row.user_id.clone()),
        emoji: Set(row.emoji.clone()),
        channel_id: Set(row.channel_id.clone()),
        created_at: Set(row.created_at),
    })
    .exec_without_returning(txn)
    .await?;
    reaction_count::Entity::insert(reaction_count::ActiveModel {
        message_id: Set(row.message_id.clone()),
        emoji: Set(row.emoji.clone()),
        count: Set(1),
        first_at: Set(row.created_at),
    })
    .on_conflict(
        OnConflict::columns([reaction_count::Column::MessageId, reaction_count::Column::Emoji])
            .value(
                reaction_count::Column::Count,
                Expr::col((Alias::new("reaction_counts"), reaction_count::Column::Count)).add(1),
            )
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(Added::Stored)
}

/// Removes a reaction; false when there was none.
pub async fn remove<C: ConnectionTrait>(txn: &C, message_id: &str, user_id: &str, emoji: &str) -> Result<bool, DbErr> {
    let removed = reaction::Entity::delete_by_id((message_id.to_string(), user_id.to_string(), emoji.to_string()))
        .exec(txn)
        .await?
        .rows_affected
        == 1;
    if removed {
        let group = || {
            Cond::all()
                .add(reaction_count::Column::MessageId.eq(message_id))
                .add(reaction_count::Column::Emoji.eq(emoji))
        };
        reaction_count::Entity::update_many()
            .col_expr(reaction_count::Column::Count, Expr::col(reaction_count::Column::Count).sub(1))
            .filter(group())
            .exec(txn)
            .await?;
        reaction_count::Entity::delete_many()
            .filter(group())
            .filter(reaction_count::Column::Count.lte(0))
            .exec(txn)
            .await?;
    }
    Ok(removed)
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
