//! Thread summaries, participants and followers. Every change runs in the
//! transaction of the reply (or deletion) that causes it, so a thread's
//! counts always match its replies.

use std::collections::HashMap;

use colink_proto::messaging::v1::ThreadSummary;
use colink_runtime::ids::{now_micros, opt_timestamp};
use sea_orm::sea_query::{Alias, Cond, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::store::{message, read_state, thread, thread_follower, thread_participant};

/// Shown on a root message and in `thread_updated` events.
const RECENT_PARTICIPANTS: usize = 10;

/// Records a new reply: creates the thread with its first reply, counts the
/// reply and its author, and makes the replier (and, the first time, the
/// root's author) follow the thread, with the replier's read position at
/// their own reply.
pub async fn record_reply<C: ConnectionTrait>(
    txn: &C,
    reply: &message::Model,
    root_sender_id: &str,
    mentioned: &[String],
) -> Result<(), DbErr> {
    let thread_id = reply.thread_id.clone().unwrap_or_default();
    let created = thread::Entity::insert(thread::ActiveModel {
        thread_id: Set(thread_id.clone()),
        channel_id: Set(reply.channel_id.clone()),
        creator_id: Set(reply.sender_id.clone()),
        root_sender_id: Set(root_sender_id.to_string()),
        first_reply_id: Set(reply.message_id.clone()),
        reply_count: Set(1),
        last_reply_id: Set(Some(reply.message_id.clone())),
        last_reply_seq: Set(reply.seq),
        last_reply_at: Set(Some(reply.created_at)),
        created_at: Set(reply.created_at),
    })
    .on_conflict(OnConflict::column(thread::Column::ThreadId).do_nothing().to_owned())
    .exec_without_returning(txn)
    .await?
        == 1;
    if !created {
        thread::Entity::update_many()
            .col_expr(thread::Column::ReplyCount, Expr::col(thread::Column::ReplyCount).add(1))
            .col_expr(thread::Column::LastReplyId, Expr::val(reply.message_id.clone()))
            .col_expr(thread::Column::LastReplySeq, Expr::val(reply.seq))
            .col_expr(thread::Column::LastReplyAt, Expr::val(reply.created_at))
            .filter(thread::Column::ThreadId.eq(&thread_id))
            .exec(txn)
            .await?;
    }
    thread_participant::Entity::insert(thread_participant::ActiveModel {
        thread_id: Set(thread_id.clone()),
        user_id: Set(reply.sender_id.clone()),
        reply_count: Set(1),
        last_reply_at: Set(reply.created_at),
    })
    .on_conflict(
        OnConflict::columns([thread_participant::Column::ThreadId, thread_participant::Column::UserId])
            .value(
                thread_participant::Column::ReplyCount,
                Expr::col((Alias::new("thread_participants"), thread_participant::Column::ReplyCount)).add(1),
            )
            .update_column(thread_participant::Column::LastReplyAt)
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    follow(txn, &thread_id, &reply.channel_id, &reply.sender_id, Some((reply.seq, Some(&reply.message_id))), true)
        .await?;
    let root_author_is_member = read_state::Entity::find_by_id((reply.channel_id.clone(), root_sender_id.to_string()))
        .one(txn)
        .await?
        .is_some();
    if root_sender_id != reply.sender_id && root_author_is_member {
        // Only the first time: a root author who unfollowed stays away.
        thread_follower::Entity::insert(follower(&thread_id, &reply.channel_id, root_sender_id, true, 0, None))
            .on_conflict(
                OnConflict::columns([thread_follower::Column::ThreadId, thread_follower::Column::UserId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    // Those mentioned follow from the reply that mentions them, which is
    // then unread for them.
    for user_id in mentioned {
        let just_before = (reply.seq - 1, None);
        follow(txn, &thread_id, &reply.channel_id, user_id, Some(just_before), false).await?;
    }
    Ok(())
}

/// Whether `reply` created its thread.
pub async fn created_by<C: ConnectionTrait>(conn: &C, reply: &message::Model) -> Result<bool, DbErr> {
    let Some(thread_id) = &reply.thread_id else { return Ok(false) };
    Ok(thread::Entity::find_by_id(thread_id.clone())
        .one(conn)
        .await?
        .is_some_and(|t| t.first_reply_id == reply.message_id))
}

/// Uncounts a reply that was just deleted or recalled: the thread's count,
/// its newest live reply, and its author's participation.
pub async fn record_removal<C: ConnectionTrait>(txn: &C, reply: &message::Model) -> Result<(), DbErr> {
    let Some(thread_id) = &reply.thread_id else { return Ok(()) };
    settle(txn, thread_id, Expr::col(thread::Column::ReplyCount).sub(1)).await?;
    recount_participant(txn, thread_id, &reply.sender_id).await
}

/// Sets a thread's reply count, and its last reply to its newest live one.
async fn settle<C: ConnectionTrait>(txn: &C, thread_id: &str, count: Expr) -> Result<(), DbErr> {
    let newest = live_replies(thread_id).order_by_desc(message::Column::Seq).one(txn).await?;
    thread::Entity::update_many()
        .col_expr(thread::Column::ReplyCount, count)
        .col_expr(thread::Column::LastReplyId, Expr::val(newest.as_ref().map(|m| m.message_id.clone())))
        .col_expr(thread::Column::LastReplySeq, Expr::val(newest.as_ref().map_or(0, |m| m.seq)))
        .col_expr(thread::Column::LastReplyAt, Expr::val(newest.as_ref().map(|m| m.created_at)))
        .filter(thread::Column::ThreadId.eq(thread_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Counts one author's live replies in a thread again; one with none left
/// no longer participates.
async fn recount_participant<C: ConnectionTrait>(txn: &C, thread_id: &str, user_id: &str) -> Result<(), DbErr> {
    let theirs = live_replies(thread_id).filter(message::Column::SenderId.eq(user_id));
    let latest = theirs.clone().order_by_desc(message::Column::Seq).one(txn).await?;
    let key = (thread_id.to_string(), user_id.to_string());
    match latest {
        Some(latest) => {
            let count = i32::try_from(theirs.count(txn).await?).unwrap_or(i32::MAX);
            thread_participant::ActiveModel {
                thread_id: Set(key.0),
                user_id: Set(key.1),
                reply_count: Set(count),
                last_reply_at: Set(latest.created_at),
            }
            .update(txn)
            .await?;
        }
        None => {
            thread_participant::Entity::delete_by_id(key).exec(txn).await?;
        }
    }
    Ok(())
}

/// Counts a thread's replies again after many of them went at once: its
/// count, its newest live reply, and each author's participation.
pub async fn recount<C: ConnectionTrait>(txn: &C, thread_id: &str) -> Result<(), DbErr> {
    let count = i32::try_from(live_replies(thread_id).count(txn).await?).unwrap_or(i32::MAX);
    settle(txn, thread_id, Expr::val(count)).await?;
    let participants =
        thread_participant::Entity::find().filter(thread_participant::Column::ThreadId.eq(thread_id)).all(txn).await?;
    for participant in participants {
        recount_participant(txn, thread_id, &participant.user_id).await?;
    }
    Ok(())
}

/// Whether the thread has a summary row.
pub async fn exists<C: ConnectionTrait>(conn: &C, thread_id: &str) -> Result<bool, DbErr> {
    Ok(thread::Entity::find_by_id(thread_id.to_string()).one(conn).await?.is_some())
}

fn live_replies(thread_id: &str) -> sea_orm::Select<message::Entity> {
    message::Entity::find()
        .filter(message::Column::ThreadId.eq(thread_id))
        .filter(message::Column::DeletedAt.is_null())
        .filter(message::Column::Recalled.eq(false))
}

fn follower(
    thread_id: &str,
    channel_id: &str,
    user_id: &str,
    following: bool,
    last_read_seq: i64,
    last_read_id: Option<String>,
) -> thread_follower::ActiveModel {
    thread_follower::ActiveModel {
        thread_id: Set(thread_id.to_string()),
        user_id: Set(user_id.to_string()),
        channel_id: Set(channel_id.to_string()),
        following: Set(following),
        last_read_seq: Set(last_read_seq),
        last_read_id: Set(last_read_id),
        updated_at: Set(now_micros()),
    }
}

/// Follows a thread. A new follower's read position starts at `position`
/// (a reply's sequence and id, or the start); with `advance`, an existing
/// follower's position also moves forward to it.
pub async fn follow<C: ConnectionTrait>(
    conn: &C,
    thread_id: &str,
    channel_id: &str,
    user_id: &str,
    position: Option<(i64, Option<&str>)>,
    advance: bool,
) -> Result<(), DbErr> {
    let (seq, id) = position.map_or((0, None), |(seq, id)| (seq, id.map(str::to_string)));
    let mut upsert = OnConflict::columns([thread_follower::Column::ThreadId, thread_follower::Column::UserId]);
    upsert.update_columns([thread_follower::Column::Following, thread_follower::Column::UpdatedAt]);
    if advance {
        forward_only(&mut upsert, seq);
    }
    thread_follower::Entity::insert(follower(thread_id, channel_id, user_id, true, seq, id))
        .on_conflict(upsert.to_owned())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Stops following; the read position stays.
pub async fn unfollow<C: ConnectionTrait>(conn: &C, thread_id: &str, user_id: &str) -> Result<(), DbErr> {
    thread_follower::Entity::update_many()
        .col_expr(thread_follower::Column::Following, Expr::val(false))
        .col_expr(thread_follower::Column::UpdatedAt, Expr::val(now_micros()))
        .filter(thread_follower::Column::ThreadId.eq(thread_id))
        .filter(thread_follower::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// A member left a conversation: they stop following its threads.
pub async fn unfollow_channel<C: ConnectionTrait>(conn: &C, channel_id: &str, user_id: &str) -> Result<(), DbErr> {
    thread_follower::Entity::update_many()
        .col_expr(thread_follower::Column::Following, Expr::val(false))
        .filter(thread_follower::Column::UserId.eq(user_id))
        .filter(thread_follower::Column::ChannelId.eq(channel_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Moves a member's read position in a thread forward to a reply, without
/// changing whether they follow it.
pub async fn mark_read<C: ConnectionTrait>(
    conn: &C,
    thread_id: &str,
    channel_id: &str,
    user_id: &str,
    seq: i64,
    reply_id: &str,
) -> Result<(), DbErr> {
    let mut upsert = OnConflict::columns([thread_follower::Column::ThreadId, thread_follower::Column::UserId]);
    forward_only(&mut upsert, seq);
    thread_follower::Entity::insert(follower(thread_id, channel_id, user_id, false, seq, Some(reply_id.to_string())))
        .on_conflict(upsert.to_owned())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// On conflict, the read position moves to `seq` only if that is further on.
fn forward_only(upsert: &mut OnConflict, seq: i64) {
    let current = |c: thread_follower::Column| Expr::col((Alias::new("thread_followers"), c));
    let further = current(thread_follower::Column::LastReadSeq).lt(seq);
    upsert
        .value(
            thread_follower::Column::LastReadId,
            Expr::case(further.clone(), Expr::col((Alias::new("excluded"), thread_follower::Column::LastReadId)))
                .finally(current(thread_follower::Column::LastReadId)),
        )
        .value(
            thread_follower::Column::LastReadSeq,
            Expr::case(further, Expr::val(seq)).finally(current(thread_follower::Column::LastReadSeq)),
        );
}

/// The summaries of the threads under some root messages; roots without a
/// thread (or whose replies are all gone) are left out.
pub async fn summaries<C: ConnectionTrait>(conn: &C, ids: &[String]) -> Result<HashMap<String, ThreadSummary>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let threads = thread::Entity::find()
        .filter(thread::Column::ThreadId.is_in(ids.iter().cloned()))
        .filter(thread::Column::ReplyCount.gt(0))
        .all(conn)
        .await?;
    summarize(conn, threads).await
}

/// Summaries of thread rows, keyed by thread id.
pub async fn summarize<C: ConnectionTrait>(
    conn: &C,
    threads: Vec<thread::Model>,
) -> Result<HashMap<String, ThreadSummary>, DbErr> {
    if threads.is_empty() {
        return Ok(HashMap::new());
    }
    let mut participants = thread_participant::Entity::find()
        .filter(thread_participant::Column::ThreadId.is_in(threads.iter().map(|t| t.thread_id.clone())))
        .all(conn)
        .await?;
    participants.sort_by(|a, b| b.last_reply_at.cmp(&a.last_reply_at).then_with(|| a.user_id.cmp(&b.user_id)));
    let mut by_thread: HashMap<String, Vec<String>> = HashMap::new();
    for p in participants {
        by_thread.entry(p.thread_id).or_default().push(p.user_id);
    }
    Ok(threads
        .into_iter()
        .map(|t| {
            let who = by_thread.remove(&t.thread_id).unwrap_or_default();
            let summary = ThreadSummary {
                thread_id: t.thread_id.clone(),
                reply_count: t.reply_count,
                last_reply_message_id: t.last_reply_id.clone().unwrap_or_default(),
                last_reply_time: opt_timestamp(t.last_reply_at),
                participant_count: i32::try_from(who.len()).unwrap_or(i32::MAX),
                root_sender_id: t.root_sender_id.clone(),
                recent_participant_ids: who.into_iter().take(RECENT_PARTICIPANTS).collect(),
            };
            (t.thread_id, summary)
        })
        .collect())
}

/// A thread's summary as it stands in `conn`.
pub async fn summary<C: ConnectionTrait>(conn: &C, thread_id: &str) -> Result<ThreadSummary, DbErr> {
    let thread = thread::Entity::find_by_id(thread_id.to_string())
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("thread {thread_id}")))?;
    let mut all = summarize(conn, vec![thread]).await?;
    all.remove(thread_id).ok_or_else(|| DbErr::RecordNotFound(format!("thread {thread_id}")))
}

/// One member's follow and read state in threads, keyed by thread id.
pub async fn followers_of<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    thread_ids: &[String],
) -> Result<HashMap<String, thread_follower::Model>, DbErr> {
    if thread_ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(thread_follower::Entity::find()
        .filter(thread_follower::Column::UserId.eq(user_id))
        .filter(thread_follower::Column::ThreadId.is_in(thread_ids.iter().cloned()))
        .all(conn)
        .await?
        .into_iter()
        .map(|f| (f.thread_id.clone(), f))
        .collect())
}

/// Live replies by others after a read position, per thread, in one query.
pub async fn unread_counts<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    read_positions: &[(String, i64)],
) -> Result<HashMap<String, i32>, DbErr> {
    if read_positions.is_empty() {
        return Ok(HashMap::new());
    }
    let mut after = Cond::any();
    for (thread_id, seq) in read_positions {
        after =
            after.add(Expr::col(message::Column::ThreadId).eq(thread_id).and(Expr::col(message::Column::Seq).gt(*seq)));
    }
    let query = Query::select()
        .column(message::Column::ThreadId)
        .expr(Expr::col(message::Column::MessageId).count())
        .from(message::Entity)
        .cond_where(after)
        .and_where(Expr::col(message::Column::SenderId).ne(user_id))
        .and_where(Expr::col(message::Column::DeletedAt).is_null())
        .and_where(Expr::col(message::Column::Recalled).eq(false))
        .group_by_col(message::Column::ThreadId)
        .to_owned();
    let mut counts = HashMap::new();
    for row in conn.query_all(&query).await? {
        let thread_id = row.try_get_by_index::<String>(0)?;
        let count = row.try_get_by_index::<i64>(1)?;
        counts.insert(thread_id, i32::try_from(count).unwrap_or(i32::MAX));
    }
    Ok(counts)
}

/// A page of threads, most recent reply first: those a member follows, or
/// those of one channel. `after` is where the previous page ended.
pub async fn page<C: ConnectionTrait>(
    conn: &C,
    scope: Scope<'_>,
    after: Option<(i64, String)>,
    limit: u64,
) -> Result<Vec<thread::Model>, DbErr> {
    let mut query = thread::Entity::find().filter(thread::Column::ReplyCount.gt(0));
    query = match scope {
        Scope::Channel(channel_id) => query.filter(thread::Column::ChannelId.eq(channel_id)),
        Scope::FollowedBy { user_id, unread_only } => {
            let mut followed = Query::select()
                .column(thread_follower::Column::ThreadId)
                .from(thread_follower::Entity)
                .and_where(Expr::col(thread_follower::Column::UserId).eq(user_id))
                .and_where(Expr::col(thread_follower::Column::Following).eq(true))
                .to_owned();
            if unread_only {
                // The newest live reply is never the reader's own past their
                // read position (replying moves it), so this is exact.
                followed.and_where(
                    Expr::col((thread_follower::Entity, thread_follower::Column::LastReadSeq))
                        .lt(Expr::col((thread::Entity, thread::Column::LastReplySeq))),
                );
                followed.and_where(
                    Expr::col((thread_follower::Entity, thread_follower::Column::ThreadId))
                        .equals((thread::Entity, thread::Column::ThreadId)),
                );
            }
            query.filter(thread::Column::ThreadId.in_subquery(followed))
        }
    };
    if let Some((at, id)) = after {
        query = query.filter(
            Cond::any()
                .add(thread::Column::LastReplyAt.lt(at))
                .add(thread::Column::LastReplyAt.eq(at).and(thread::Column::ThreadId.lt(id))),
        );
    }
    query
        .order_by_desc(thread::Column::LastReplyAt)
        .order_by_desc(thread::Column::ThreadId)
        .limit(limit)
        .all(conn)
        .await
}

/// Which threads a page lists.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    Channel(&'a str),
    FollowedBy { user_id: &'a str, unread_only: bool },
}
