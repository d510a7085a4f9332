//! What the bench's receivers read of the frames they get: the few fields
//! they count, decoded without the rest. The load generator shares the
//! machine with the node it measures, so every microsecond it spends per
//! delivery is one the node does not get.
//!
//! The tags are those of `colink.realtime.v1.SubscribeResponse`,
//! `ServerFrame` and `colink.messaging.v1.ChannelEvent`; a oneof is a set
//! of fields on the wire, so each case read is an optional field here. A
//! test checks these against the generated types.

use prost::Message;

/// `SubscribeResponse` (and `ConnectResponse`).
#[derive(Clone, PartialEq, Message)]
pub struct ResponseHead {
    #[prost(message, optional, tag = "1")]
    pub frame: Option<FrameHead>,
}

/// `ServerFrame`: an event, or the confirmation of a subscription.
#[derive(Clone, PartialEq, Message)]
pub struct FrameHead {
    #[prost(message, optional, tag = "1")]
    pub event: Option<EventHead>,
    #[prost(message, optional, tag = "2")]
    pub subscribed: Option<Present>,
}

/// A frame whose content does not matter, only that it came.
#[derive(Clone, PartialEq, Message)]
pub struct Present {}

/// `ChannelEvent`: its sequence and the kinds the bench counts.
#[derive(Clone, PartialEq, Message)]
pub struct EventHead {
    #[prost(int64, tag = "2")]
    pub seq: i64,
    #[prost(message, optional, tag = "10")]
    pub message_created: Option<TextHead>,
    #[prost(message, optional, tag = "18")]
    pub reaction_added: Option<ReactionHead>,
    #[prost(message, optional, tag = "19")]
    pub reaction_removed: Option<ReactionHead>,
    #[prost(message, optional, tag = "23")]
    pub reactions_changed: Option<CountsHead>,
}

/// `Message.text`.
#[derive(Clone, PartialEq, Message)]
pub struct TextHead {
    #[prost(string, tag = "5")]
    pub text: String,
}

/// `ReactionChanged`: the emoji and its new count.
#[derive(Clone, PartialEq, Message)]
pub struct ReactionHead {
    #[prost(string, tag = "3")]
    pub emoji: String,
    #[prost(int32, tag = "4")]
    pub count: i32,
}

/// `ReactionsChanged.counts`.
#[derive(Clone, PartialEq, Message)]
pub struct CountsHead {
    #[prost(message, repeated, tag = "2")]
    pub counts: Vec<CountHead>,
}

/// `ReactionCount`.
#[derive(Clone, PartialEq, Message)]
pub struct CountHead {
    #[prost(string, tag = "1")]
    pub emoji: String,
    #[prost(int32, tag = "2")]
    pub count: i32,
}

#[cfg(test)]
mod tests {
    use colink_proto::messaging::v1::channel_event::Kind;
    use colink_proto::messaging::v1::{
        ChannelEvent, Message as ChatMessage, ReactionChanged, ReactionCount, ReactionsChanged,
    };
    use colink_proto::realtime::v1::server_frame::Frame;
    use colink_proto::realtime::v1::{ServerFrame, SubscribeResponse, SubscribedFrame};

    use super::*;

    fn head_of(frame: Frame) -> FrameHead {
        let response = SubscribeResponse { frame: Some(ServerFrame { frame: Some(frame) }) };
        ResponseHead::decode(response.encode_to_vec().as_slice()).expect("decodes").frame.expect("has a frame")
    }

    fn event(seq: i64, kind: Kind) -> Frame {
        Frame::Event(ChannelEvent {
            channel_id: "c".into(),
            seq,
            actor_id: "a".into(),
            kind: Some(kind),
            ..Default::default()
        })
    }

    #[test]
    fn the_heads_read_what_the_generated_types_wrote() {
        let subscribed = head_of(Frame::Subscribed(SubscribedFrame { channel_id: "c".into(), head_seq: 4 }));
        assert!(subscribed.subscribed.is_some() && subscribed.event.is_none());

        let text = "17 1790000000000000".to_string();
        let created = head_of(event(5, Kind::MessageCreated(ChatMessage { text: text.clone(), ..Default::default() })));
        let created = created.event.expect("an event");
        assert_eq!((created.seq, created.message_created.map(|m| m.text)), (5, Some(text)));

        let change = ReactionChanged { message_id: "m".into(), user_id: "u".into(), emoji: "+1".into(), count: 3 };
        let added = head_of(event(6, Kind::ReactionAdded(change.clone()))).event.expect("an event");
        assert_eq!(added.reaction_added, Some(ReactionHead { emoji: "+1".into(), count: 3 }));
        let removed = head_of(event(7, Kind::ReactionRemoved(change))).event.expect("an event");
        assert_eq!(removed.reaction_removed, Some(ReactionHead { emoji: "+1".into(), count: 3 }));

        let counts = vec![ReactionCount { emoji: "+1".into(), count: 9 }];
        let batched = ReactionsChanged { message_id: "m".into(), counts, changes: 4 };
        let changed = head_of(event(8, Kind::ReactionsChanged(batched))).event.expect("an event");
        let counts = changed.reactions_changed.expect("counts").counts;
        assert_eq!(counts, vec![CountHead { emoji: "+1".into(), count: 9 }]);
    }
}
