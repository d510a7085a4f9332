//! Read state and unread counts. A member's row is written when they join
//! (from `channel.events`), when they read, and when they send; never when
//! someone else sends. Counts come from counters instead: every message of
//! a conversation's main flow takes the next ordinal, so the messages after
//! a read position number `message_count - read_ordinal`, less those since
//! deleted or recalled. Sending therefore costs the same in a channel of ten
//! members as in one of ten thousand.

use std::collections::{BTreeMap, HashMap};

use colink_proto::messaging::v1::{ChannelUnread, ThreadUnread, UnreadCounts};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
    TransactionTrait, Value,
};

use crate::store::{message, read_state};
use colink_runtime::ids::now_micros;
use colink_runtime::pubsub::Frame;

/// A member joined at `seq` (their membership event in the log): they start
/// with everything before it read.
pub async fn join<C: ConnectionTrait>(
    conn: &C,
    channel_id: &str,
    user_id: &str,
    seq: i64,
    muted: bool,
) -> Result<(), DbErr> {
    let ordinal = ordinal_at(conn, channel_id, seq).await?;
    let row = read_state::ActiveModel {
        channel_id: Set(channel_id.to_string()),
        user_id: Set(user_id.to_string()),
        last_read_seq: Set(seq),
        updated_at: Set(now_micros()),
        muted: Set(muted),
        delivered_seq: Set(seq),
        read_ordinal: Set(ordinal),
    };
    // A row that exists already was made by a read of a member who joined
    // before this service kept read states: it stays as it is.
    read_state::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([read_state::Column::ChannelId, read_state::Column::UserId]).do_nothing().to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// A member left: their read state goes with their membership.
pub async fn leave<C: ConnectionTrait>(conn: &C, channel_id: &str, user_id: &str) -> Result<(), DbErr> {
    read_state::Entity::delete_by_id((channel_id.to_string(), user_id.to_string())).exec(conn).await?;
    Ok(())
}

/// A member muted or unmuted the conversation.
pub async fn set_muted<C: ConnectionTrait>(
    conn: &C,
    channel_id: &str,
    user_id: &str,
    muted: bool,
) -> Result<(), DbErr> {
    read_state::Entity::update_many()
        .col_expr(read_state::Column::Muted, Expr::val(muted))
        .filter(read_state::Column::ChannelId.eq(channel_id))
        .filter(read_state::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Moves the read positions of senders forward to their messages, in one
/// statement for a whole batch: `(channel, user) -> (seq, ordinal)`. Only
/// members' rows move; none is created here.
pub fn advance_senders(backend: DbBackend, positions: &BTreeMap<(String, String), (i64, i64)>) -> Option<Statement> {
    if positions.is_empty() {
        return None;
    }
    let rows = vec!["(?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT))"; positions.len()].join(", ");
    let sql = format!(
        "WITH v(channel_id, user_id, seq, ordinal) AS (VALUES {rows}) \
         UPDATE read_states SET last_read_seq = v.seq, read_ordinal = v.ordinal, updated_at = CAST(? AS BIGINT), \
         delivered_seq = CASE WHEN read_states.delivered_seq < v.seq THEN v.seq ELSE read_states.delivered_seq END \
         FROM v WHERE read_states.channel_id = v.channel_id AND read_states.user_id = v.user_id \
         AND read_states.last_read_seq < v.seq"
    );
    let mut values: Vec<Value> = Vec::with_capacity(positions.len() * 4 + 1);
    for ((channel_id, user_id), (seq, ordinal)) in positions {
        values.extend([channel_id.clone().into(), user_id.clone().into(), (*seq).into(), (*ordinal).into()]);
    }
    values.push(now_micros().into());
    Some(Sql { backend }.statement(&sql, values))
}

/// Moves a member's read position forward to `seq`, whose main-flow
/// ordinal is `ordinal`; an older position changes nothing. Returns whether
/// it moved.
pub async fn advance<C: ConnectionTrait>(
    conn: &C,
    channel_id: &str,
    user_id: &str,
    seq: i64,
    ordinal: i64,
) -> Result<bool, DbErr> {
    let moved = move_forward(seq, ordinal)
        .filter(read_state::Column::ChannelId.eq(channel_id))
        .filter(read_state::Column::UserId.eq(user_id))
        .filter(read_state::Column::LastReadSeq.lt(seq))
        .exec(conn)
        .await?;
    Ok(moved.rows_affected > 0)
}

/// Moves every member's read position in a conversation forward to `seq`,
/// past messages that are gone.
pub async fn advance_everyone<C: ConnectionTrait>(conn: &C, channel_id: &str, seq: i64) -> Result<(), DbErr> {
    let ordinal = ordinal_at(conn, channel_id, seq).await?;
    move_forward(seq, ordinal)
        .filter(read_state::Column::ChannelId.eq(channel_id))
        .filter(read_state::Column::LastReadSeq.lt(seq))
        .exec(conn)
        .await?;
    Ok(())
}

/// The update that puts a read position at `seq`, delivery at least there.
fn move_forward(seq: i64, ordinal: i64) -> sea_orm::UpdateMany<read_state::Entity> {
    read_state::Entity::update_many()
        .col_expr(read_state::Column::LastReadSeq, Expr::val(seq))
        .col_expr(read_state::Column::ReadOrdinal, Expr::val(ordinal))
        .col_expr(read_state::Column::UpdatedAt, Expr::val(now_micros()))
        .col_expr(
            read_state::Column::DeliveredSeq,
            Expr::case(Expr::col(read_state::Column::DeliveredSeq).lt(seq), Expr::val(seq))
                .finally(Expr::col(read_state::Column::DeliveredSeq))
                .into(),
        )
}

/// Marks a conversation read up to `seq` for a member, creating the row of
/// a member who joined before read states were kept. Returns whether the
/// position moved.
pub async fn mark_read<C: ConnectionTrait>(conn: &C, channel_id: &str, user_id: &str, seq: i64) -> Result<bool, DbErr> {
    let ordinal = ordinal_at(conn, channel_id, seq).await?;
    if advance(conn, channel_id, user_id, seq, ordinal).await? {
        return Ok(true);
    }
    let row = read_state::ActiveModel {
        channel_id: Set(channel_id.to_string()),
        user_id: Set(user_id.to_string()),
        last_read_seq: Set(seq),
        updated_at: Set(now_micros()),
        muted: Set(false),
        delivered_seq: Set(seq),
        read_ordinal: Set(ordinal),
    };
    let inserted = read_state::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([read_state::Column::ChannelId, read_state::Column::UserId]).do_nothing().to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(inserted == 1)
}

/// Moves a member's delivered position forward (what their clients have
/// received). Returns whether it moved.
pub async fn mark_delivered<C: ConnectionTrait>(
    conn: &C,
    channel_id: &str,
    user_id: &str,
    seq: i64,
) -> Result<bool, DbErr> {
    let moved = read_state::Entity::update_many()
        .col_expr(read_state::Column::DeliveredSeq, Expr::val(seq))
        .filter(read_state::Column::ChannelId.eq(channel_id))
        .filter(read_state::Column::UserId.eq(user_id))
        .filter(read_state::Column::DeliveredSeq.lt(seq))
        .exec(conn)
        .await?;
    Ok(moved.rows_affected > 0)
}

/// How many main-flow messages the conversation had up to `seq`.
async fn ordinal_at<C: ConnectionTrait>(conn: &C, channel_id: &str, seq: i64) -> Result<i64, DbErr> {
    let last: Option<Option<i64>> = message::Entity::find()
        .select_only()
        .column(message::Column::Ordinal)
        .filter(message::Column::ChannelId.eq(channel_id))
        .filter(message::Column::Seq.lte(seq))
        .filter(message::Column::Ordinal.is_not_null())
        .order_by_desc(message::Column::Seq)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(last.flatten().unwrap_or(0))
}

/// Which counts to take.
#[derive(Default)]
pub struct Only {
    /// These conversations only, or all of them when both lists are empty.
    pub channel_ids: Vec<String>,
    /// These threads only.
    pub thread_ids: Vec<String>,
}

impl Only {
    fn all(&self) -> bool {
        self.channel_ids.is_empty() && self.thread_ids.is_empty()
    }
}

/// A member's unread counts, taken in one read transaction so that they
/// agree with each other and with `as_of_seq`. Broadcast mentions by users
/// in `ignored` (those the member blocked) do not count.
pub async fn counts(
    db: &sea_orm::DatabaseConnection,
    user_id: &str,
    ignored: &[String],
    only: &Only,
) -> Result<UnreadCounts, DbErr> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let q = Sql { backend };
    let mut channels = Vec::new();
    if only.all() || !only.channel_ids.is_empty() {
        // One statement: each count is an index range after the read
        // position, looked at only when the conversation moved past it.
        let scope = q.scope("r.channel_id", &only.channel_ids, only.all());
        let ignore = q.not_in("b.sender_id", ignored);
        let rows = txn
            .query_all_raw(q.statement(
                &format!(
                    "SELECT r.channel_id, r.last_read_seq, r.read_ordinal, r.muted, \
                     COALESCE(h.last_seq, 0), COALESCE(h.message_count, 0), \
                     CASE WHEN h.last_seq > r.last_read_seq THEN \
                     (SELECT COUNT(*) FROM removed_messages x \
                      WHERE x.channel_id = r.channel_id AND x.seq > r.last_read_seq) ELSE 0 END, \
                     CASE WHEN h.last_seq > r.last_read_seq THEN \
                     (SELECT COUNT(*) FROM mentions m WHERE m.user_id = r.user_id \
                      AND m.channel_id = r.channel_id AND m.seq > r.last_read_seq AND m.in_channel = ?) ELSE 0 END, \
                     CASE WHEN h.last_seq > r.last_read_seq THEN \
                     (SELECT COUNT(*) FROM broadcasts b WHERE b.channel_id = r.channel_id \
                      AND b.seq > r.last_read_seq AND b.in_channel = ? AND b.sender_id <> r.user_id{}) ELSE 0 END \
                     FROM read_states r LEFT JOIN channel_heads h ON h.channel_id = r.channel_id \
                     WHERE r.user_id = ?{}",
                    ignore.0, scope.0
                ),
                [vec![true.into(), true.into()], ignore.1, vec![user_id.into()], scope.1].concat(),
            ))
            .await?;
        for row in rows {
            let channel_id = row.try_get_by_index::<String>(0)?;
            let last_read_seq = row.try_get_by_index::<i64>(1)?;
            let read_ordinal = row.try_get_by_index::<i64>(2)?;
            let muted = row.try_get_by_index::<bool>(3)?;
            let as_of_seq = row.try_get_by_index::<i64>(4)?;
            let message_count = row.try_get_by_index::<i64>(5)?;
            let removed = row.try_get_by_index::<i64>(6)?;
            let mention_count = row.try_get_by_index::<i64>(7)? + row.try_get_by_index::<i64>(8)?;
            let unread = std::cmp::max(message_count - read_ordinal - removed, 0);
            channels.push(ChannelUnread {
                unread_count: if muted { 0 } else { unread },
                mention_count,
                muted,
                last_read_seq,
                as_of_seq,
                channel_id,
            });
        }
    }
    let mut threads = Vec::new();
    if only.all() || !only.thread_ids.is_empty() {
        let scope = q.scope("f.thread_id", &only.thread_ids, only.all());
        let followed = txn
            .query_all_raw(q.statement(
                &format!(
                    "SELECT f.thread_id, f.channel_id, f.last_read_seq, COALESCE(h.last_seq, 0) \
                     FROM thread_followers f JOIN threads t ON t.thread_id = f.thread_id \
                     LEFT JOIN channel_heads h ON h.channel_id = f.channel_id \
                     WHERE f.user_id = ? AND f.following = ? AND t.reply_count > 0{}",
                    scope.0
                ),
                [vec![user_id.into(), true.into()], scope.1.clone()].concat(),
            ))
            .await?;
        if followed.is_empty() {
            txn.commit().await?;
            return Ok(with_totals(channels, threads));
        }
        let replies = q
            .grouped(
                &txn,
                &format!(
                    "SELECT m.thread_id, COUNT(*) FROM messages m \
                     JOIN thread_followers f ON f.thread_id = m.thread_id \
                     WHERE f.user_id = ? AND f.following = ? AND m.seq > f.last_read_seq AND m.sender_id <> ? \
                     AND m.deleted_at IS NULL AND m.recalled = ?{} GROUP BY m.thread_id",
                    scope.0
                ),
                [vec![user_id.into(), true.into(), user_id.into(), false.into()], scope.1.clone()].concat(),
            )
            .await?;
        let named = q
            .grouped(
                &txn,
                &format!(
                    "SELECT m.thread_id, COUNT(*) FROM mentions m \
                     JOIN thread_followers f ON f.thread_id = m.thread_id AND f.user_id = m.user_id \
                     WHERE m.user_id = ? AND f.following = ? AND m.seq > f.last_read_seq{} GROUP BY m.thread_id",
                    scope.0
                ),
                [vec![user_id.into(), true.into()], scope.1.clone()].concat(),
            )
            .await?;
        let ignore = q.not_in("b.sender_id", ignored);
        let everyone = q
            .grouped(
                &txn,
                &format!(
                    "SELECT b.thread_id, COUNT(*) FROM broadcasts b \
                     JOIN thread_followers f ON f.thread_id = b.thread_id \
                     WHERE f.user_id = ? AND f.following = ? AND b.seq > f.last_read_seq AND b.sender_id <> ?{}{} \
                     GROUP BY b.thread_id",
                    ignore.0, scope.0
                ),
                [vec![user_id.into(), true.into(), user_id.into()], ignore.1, scope.1].concat(),
            )
            .await?;
        for row in followed {
            let thread_id = row.try_get_by_index::<String>(0)?;
            threads.push(ThreadUnread {
                unread_count: replies.get(&thread_id).copied().unwrap_or(0),
                mention_count: named.get(&thread_id).copied().unwrap_or(0)
                    + everyone.get(&thread_id).copied().unwrap_or(0),
                channel_id: row.try_get_by_index::<String>(1)?,
                last_read_seq: row.try_get_by_index::<i64>(2)?,
                as_of_seq: row.try_get_by_index::<i64>(3)?,
                thread_id,
            });
        }
    }
    txn.commit().await?;
    Ok(with_totals(channels, threads))
}

/// Counts with their totals.
pub fn with_totals(channels: Vec<ChannelUnread>, threads: Vec<ThreadUnread>) -> UnreadCounts {
    UnreadCounts {
        total_unread_count: channels.iter().map(|c| c.unread_count).sum(),
        total_mention_count: channels.iter().map(|c| c.mention_count).sum(),
        total_thread_unread_count: threads.iter().map(|t| t.unread_count).sum(),
        total_thread_mention_count: threads.iter().map(|t| t.mention_count).sum(),
        channels,
        threads,
    }
}

/// Plain SQL for the few queries the query builder cannot express well
/// (grouped counts over joins), with placeholders for either engine.
pub(crate) struct Sql {
    pub backend: DbBackend,
}

impl Sql {
    /// `?` placeholders become `$1, $2, ...` on PostgreSQL.
    pub fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        let text = match self.backend {
            DbBackend::Postgres => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push_str(&format!("${n}"));
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            _ => sql.to_string(),
        };
        Statement::from_sql_and_values(self.backend, text, values)
    }

    /// `id -> count` from a query selecting `(id, COUNT(*))`.
    async fn grouped<C: ConnectionTrait>(
        &self,
        conn: &C,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<HashMap<String, i64>, DbErr> {
        let mut counts = HashMap::new();
        for row in conn.query_all_raw(self.statement(sql, values)).await? {
            counts.insert(row.try_get_by_index::<String>(0)?, row.try_get_by_index::<i64>(1)?);
        }
        Ok(counts)
    }

    /// ` AND column IN (?, ...)` unless everything is asked for.
    fn scope(&self, column: &str, ids: &[String], all: bool) -> (String, Vec<Value>) {
        if all {
            return (String::new(), Vec::new());
        }
        if ids.is_empty() {
            return (" AND 1 = 0".to_string(), Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        (format!(" AND {column} IN ({marks})"), ids.iter().map(|id| id.clone().into()).collect())
    }

    /// ` AND column NOT IN (?, ...)`, or nothing for an empty list.
    pub fn not_in(&self, column: &str, ids: &[String]) -> (String, Vec<Value>) {
        if ids.is_empty() {
            return (String::new(), Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        (format!(" AND {column} NOT IN ({marks})"), ids.iter().map(|id| id.clone().into()).collect())
    }
}

/// The user-topic notice that a member's counts in a conversation changed.
pub fn counts_changed(channel_id: &str) -> bytes::Bytes {
    Frame::Counts(format!("channel:{channel_id}").into()).encode()
}

/// The user-topic notice that a member's counts in a thread changed.
pub fn thread_counts_changed(thread_id: &str) -> bytes::Bytes {
    Frame::Counts(format!("thread:{thread_id}").into()).encode()
}
