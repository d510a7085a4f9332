//! Mutes: a muted user reads but cannot post, edit or react, in the whole
//! workspace or in one conversation, until the mute ends or is lifted. The
//! admin service announces sanctions as `user.sanctioned` and
//! `user.sanction_lifted` events; one node records them in `mutes` and
//! tells every node on [`MUTES_TOPIC`] to read the list again. Each node
//! keeps the list in memory, so checking a send costs a map look-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use colink_proto::events::v1::{Event, event::Payload};
use colink_runtime::db::Db;
use colink_runtime::events::{EventError, EventHandler};
use colink_runtime::ids::{now_micros, rfc3339};
use colink_runtime::pubsub::{Frame, PubSub};
use colink_runtime::{Error, Result};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};
use tokio::sync::OnceCell;
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::store::mute;

/// Where a changed mute list is announced.
pub const MUTES_TOPIC: &str = "messaging.mutes";

/// Active mutes by user: (channel, or empty for everywhere; when it ends).
type Muted = HashMap<String, Vec<(String, Option<i64>)>>;

pub struct MuteList {
    db: Db,
    pubsub: Arc<dyn PubSub>,
    state: OnceCell<Mutex<State>>,
}

struct State {
    notices: broadcast::Receiver<Bytes>,
    /// None until read, and again after a notice.
    muted: Option<Arc<Muted>>,
    /// Moves on every notice: a list read before one is stale.
    epoch: u64,
}

impl MuteList {
    pub fn new(db: Db, pubsub: Arc<dyn PubSub>) -> Self {
        Self { db, pubsub, state: OnceCell::new() }
    }

    async fn state(&self) -> &Mutex<State> {
        self.state
            .get_or_init(|| async {
                let notices = self.pubsub.subscribe(MUTES_TOPIC).await;
                Mutex::new(State { notices, muted: None, epoch: 0 })
            })
            .await
    }

    /// PERMISSION_DENIED while the user is muted in the conversation.
    pub async fn require_unmuted(&self, user_id: &str, channel_id: &str) -> Result<()> {
        let state = self.state().await;
        let (known, epoch) = {
            let mut s = state.lock().map_err(|_| Error::internal("the mute list is poisoned"))?;
            // A notice, or notices lost: read the list again.
            while let Ok(_) | Err(TryRecvError::Lagged(_)) = s.notices.try_recv() {
                s.muted = None;
                s.epoch += 1;
            }
            (s.muted.clone(), s.epoch)
        };
        let muted = match known {
            Some(muted) => muted,
            None => {
                let read = Arc::new(self.read().await?);
                let mut s = state.lock().map_err(|_| Error::internal("the mute list is poisoned"))?;
                if s.epoch == epoch {
                    s.muted = Some(read.clone());
                }
                read
            }
        };
        let now = now_micros();
        let until = muted.get(user_id).and_then(|mutes| {
            mutes
                .iter()
                .filter(|(scope, ends)| (scope.is_empty() || scope == channel_id) && ends.is_none_or(|at| at > now))
                .map(|(_, ends)| *ends)
                .max_by_key(|ends| ends.unwrap_or(i64::MAX))
        });
        match until {
            None => Ok(()),
            Some(None) => Err(Error::denied("you are muted: you can read, but not post or react")),
            Some(Some(at)) => {
                Err(Error::denied(format!("you are muted until {}: you can read, but not post or react", rfc3339(at))))
            }
        }
    }

    async fn read(&self) -> Result<Muted> {
        let rows = mute::Entity::find()
            .filter(Condition::any().add(mute::Column::ExpireAt.is_null()).add(mute::Column::ExpireAt.gt(now_micros())))
            .all(&self.db.reader)
            .await?;
        let mut muted = Muted::new();
        for row in rows {
            muted.entry(row.user_id).or_default().push((row.channel_id, row.expire_at));
        }
        Ok(muted)
    }
}

/// The consumer of `user.events` that records mutes and tells every node.
pub struct MuteRecorder {
    pub db: Db,
    pub pubsub: Arc<dyn PubSub>,
}

fn failed(err: impl std::fmt::Display) -> EventError {
    EventError::Consumer(err.to_string())
}

#[async_trait::async_trait]
impl EventHandler for MuteRecorder {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        let Some(Payload::UserSanctionChanged(s)) = &event.payload else { return Ok(()) };
        if s.kind != "mute" {
            return Ok(());
        }
        // Both are idempotent: a redelivered event changes nothing.
        if s.active {
            let row = mute::ActiveModel::from(mute::Model {
                sanction_id: s.sanction_id.clone(),
                user_id: s.user_id.clone(),
                channel_id: s.channel_id.clone(),
                expire_at: (s.expire_micros > 0).then_some(s.expire_micros),
            });
            mute::Entity::insert(row)
                .on_conflict(OnConflict::column(mute::Column::SanctionId).do_nothing().to_owned())
                .exec_without_returning(&self.db.writer)
                .await
                .map_err(failed)?;
        } else {
            mute::Entity::delete_by_id(s.sanction_id.clone()).exec(&self.db.writer).await.map_err(failed)?;
        }
        self.pubsub.publish(MUTES_TOPIC, Frame::Event(Bytes::from(s.user_id.clone())).encode()).await;
        Ok(())
    }
}
