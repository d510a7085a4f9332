//! Records membership and archive changes from `channel.events` in the
//! channel log, so that they share the sequence with messages and reach
//! streaming clients in order.

use std::sync::Arc;

use colink_proto::events::v1::{Event, MembershipChanged, event::Payload};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{ChannelStateChanged, MemberChanged};
use colink_runtime::db::Db;
use colink_runtime::events::{EventError, EventHandler, mark_processed};
use colink_runtime::pubsub::{Frame, PubSub, channel_topic, user_topic};
use prost::Message as _;
use sea_orm::TransactionTrait;

use crate::access::{ACCESS_TOPIC, AccessCache};
use crate::log;
use crate::read_states::{self, counts_changed};
use crate::threads::store as threads;

pub struct MembershipRecorder {
    db: Db,
    pubsub: Arc<dyn PubSub>,
    remembered: Arc<AccessCache>,
}

impl MembershipRecorder {
    pub fn new(db: Db, pubsub: Arc<dyn PubSub>, remembered: Arc<AccessCache>) -> Self {
        Self { db, pubsub, remembered }
    }
}

fn member(change: &MembershipChanged) -> MemberChanged {
    MemberChanged { user_id: change.user_id.clone(), role: change.role.clone() }
}

#[async_trait::async_trait]
impl EventHandler for MembershipRecorder {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        let failed = |e: sea_orm::DbErr| EventError::Consumer(e.to_string());
        if let Some(Payload::MemberPreferencesChanged(c)) = &event.payload {
            let txn = self.db.writer.begin().await.map_err(failed)?;
            if mark_processed(&txn, &event.event_id).await.map_err(failed)? {
                read_states::set_muted(&txn, &c.channel_id, &c.user_id, c.muted).await.map_err(failed)?;
                txn.commit().await.map_err(failed)?;
                self.pubsub.publish(&user_topic(&c.user_id), counts_changed(&c.channel_id)).await;
            }
            return Ok(());
        }
        let (channel_id, kind, concerns) = match &event.payload {
            Some(Payload::MemberJoined(c)) => (&c.channel_id, Kind::MemberJoined(member(c)), Some(&c.user_id)),
            Some(Payload::MemberLeft(c)) => (&c.channel_id, Kind::MemberLeft(member(c)), Some(&c.user_id)),
            Some(Payload::ChannelArchived(c)) => (&c.channel_id, Kind::ChannelArchived(ChannelStateChanged {}), None),
            Some(Payload::ChannelUnarchived(c)) => {
                (&c.channel_id, Kind::ChannelUnarchived(ChannelStateChanged {}), None)
            }
            _ => return Ok(()),
        };
        // Before anything else, so that sends stop trusting the old answer
        // as early as possible, here and on every other node.
        self.remembered.forget(channel_id);
        let notice = Frame::Event(bytes::Bytes::copy_from_slice(channel_id.as_bytes())).encode();
        self.pubsub.publish(ACCESS_TOPIC, notice).await;
        let txn = self.db.writer.begin().await.map_err(failed)?;
        if !mark_processed(&txn, &event.event_id).await.map_err(failed)? {
            return Ok(());
        }
        let appended = log::append(&txn, channel_id, &event.actor_id, kind).await.map_err(failed)?;
        match &event.payload {
            Some(Payload::MemberJoined(c)) => {
                // Everything before joining counts as read.
                read_states::join(&txn, &c.channel_id, &c.user_id, appended.seq, c.muted).await.map_err(failed)?;
            }
            Some(Payload::MemberLeft(c)) => {
                // Read state and thread follows go with the membership.
                read_states::leave(&txn, &c.channel_id, &c.user_id).await.map_err(failed)?;
                threads::unfollow_channel(&txn, &c.channel_id, &c.user_id).await.map_err(failed)?;
            }
            _ => {}
        }
        txn.commit().await.map_err(failed)?;
        let bytes = Frame::Event(appended.encode_to_vec().into()).encode();
        self.pubsub.publish(&channel_topic(channel_id), bytes.clone()).await;
        // The member's own streams learn that they gained or lost a channel.
        if let Some(user_id) = concerns {
            self.pubsub.publish(&user_topic(user_id), bytes).await;
        }
        Ok(())
    }
}
