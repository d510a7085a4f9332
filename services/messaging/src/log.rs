//! The per-channel event log: the next sequence number and the appended
//! event are written in the caller's transaction, so a change and its place
//! in the log commit together or not at all.

use colink_proto::messaging::v1::{ChannelEvent, channel_event::Kind};
use colink_runtime::ids::{now_micros, timestamp};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};

use crate::store::channel_event;

/// Takes the next sequence number of a channel. Concurrent writers to one
/// channel serialise on its head row, which keeps sequences gap-free.
pub async fn next_seq<C: ConnectionTrait>(txn: &C, channel_id: &str) -> Result<i64, DbErr> {
    let upsert = Query::insert()
        .into_table("channel_heads")
        .columns(["channel_id", "last_seq"])
        .values_panic([channel_id.into(), 1_i64.into()])
        .on_conflict(
            OnConflict::column("channel_id")
                .value("last_seq", Expr::col(("channel_heads", "last_seq")).add(1))
                .to_owned(),
        )
        .returning_col("last_seq")
        .to_owned();
    let row = txn.query_one(&upsert).await?.ok_or_else(|| DbErr::Custom("sequence upsert returned nothing".into()))?;
    row.try_get_by_index::<i64>(0)
}

/// Appends an event with the next sequence and returns it.
pub async fn append<C: ConnectionTrait>(
    txn: &C,
    channel_id: &str,
    actor_id: &str,
    kind: Kind,
) -> Result<ChannelEvent, DbErr> {
    let seq = next_seq(txn, channel_id).await?;
    append_at(txn, channel_id, seq, actor_id, kind).await
}

/// Appends an event at a sequence already taken with `next_seq`.
pub async fn append_at<C: ConnectionTrait>(
    txn: &C,
    channel_id: &str,
    seq: i64,
    actor_id: &str,
    kind: Kind,
) -> Result<ChannelEvent, DbErr> {
    let now = now_micros();
    let event = event(channel_id, seq, actor_id, kind, now);
    row(&event, now).insert(txn).await?;
    Ok(event)
}

/// A log entry at a sequence already taken.
pub fn event(channel_id: &str, seq: i64, actor_id: &str, kind: Kind, now: i64) -> ChannelEvent {
    ChannelEvent {
        channel_id: channel_id.to_string(),
        seq,
        occur_time: Some(timestamp(now)),
        actor_id: actor_id.to_string(),
        kind: Some(kind),
    }
}

/// The stored row of a log entry.
pub fn row(event: &ChannelEvent, now: i64) -> channel_event::ActiveModel {
    channel_event::ActiveModel {
        channel_id: Set(event.channel_id.clone()),
        seq: Set(event.seq),
        payload: Set(prost::Message::encode_to_vec(event)),
        created_at: Set(now),
    }
}
