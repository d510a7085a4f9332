//! What a stream writes on the wire, and the codec that writes it.
//!
//! A conversation event reaches this node already encoded, and the same
//! bytes go to every stream that follows the channel. A stream reads only the
//! few fields it acts on ([`EventHead`]) and queues the encoded event as it
//! came ([`Outgoing::Event`]); the codec wraps it in the response frame with
//! a few bytes of header. Nothing is decoded and re-encoded per stream.
//!
//! `ConnectResponse` and `SubscribeResponse` are the same on the wire (field
//! 1 holds the `ServerFrame`), so one codec serves both calls.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use colink_proto::codec::MessageDecoder;
use colink_proto::realtime::v1 as pb;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

/// `ConnectResponse.frame` and `SubscribeResponse.frame`.
const RESPONSE_FRAME_FIELD: u32 = 1;
/// `ServerFrame.event`.
const SERVER_FRAME_EVENT_FIELD: u32 = 1;

/// Per-call buffers start small: a node holds one encoder (and, for Connect,
/// one decoder) per open stream, and most frames are a few hundred bytes.
/// They grow when a frame needs more.
const BUFFER_START: usize = 512;
/// Frames ready together are written together up to this size.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_START, YIELD_THRESHOLD)
}

/// One frame queued for a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A frame built on this node.
    Frame(Box<pb::ServerFrame>),
    /// An encoded `colink.messaging.v1.ChannelEvent`, as published.
    Event(Bytes),
}

impl Outgoing {
    pub fn frame(frame: pb::server_frame::Frame) -> Self {
        Outgoing::Frame(Box::new(pb::ServerFrame { frame: Some(frame) }))
    }

    /// Writes the frame as a `ConnectResponse` (or `SubscribeResponse`).
    pub fn write(&self, buf: &mut impl BufMut) {
        match self {
            Outgoing::Frame(frame) => prost::encoding::message::encode(RESPONSE_FRAME_FIELD, frame.as_ref(), buf),
            Outgoing::Event(event) => {
                let event_len = event.len();
                let frame_len = key_len(SERVER_FRAME_EVENT_FIELD) + encoded_len_varint(event_len as u64) + event_len;
                encode_key(RESPONSE_FRAME_FIELD, WireType::LengthDelimited, buf);
                encode_varint(frame_len as u64, buf);
                encode_key(SERVER_FRAME_EVENT_FIELD, WireType::LengthDelimited, buf);
                encode_varint(event_len as u64, buf);
                buf.put_slice(event);
            }
        }
    }
}

/// The fields of an encoded `ChannelEvent` that a stream acts on; decoding
/// into it skips the rest (the message body above all) without allocating.
#[derive(Clone, PartialEq, Message)]
pub struct EventHead {
    /// `ChannelEvent.seq`.
    #[prost(int64, tag = "2")]
    pub seq: i64,
    /// `ChannelEvent.actor_id`.
    #[prost(bytes = "bytes", tag = "4")]
    pub actor_id: Bytes,
    /// `ChannelEvent.member_left`.
    #[prost(message, optional, tag = "15")]
    pub member_left: Option<MemberHead>,
}

/// `MemberChanged`, as far as a stream needs it.
#[derive(Clone, PartialEq, Message)]
pub struct MemberHead {
    /// `MemberChanged.user_id`.
    #[prost(bytes = "bytes", tag = "1")]
    pub user_id: Bytes,
}

/// Encodes [`Outgoing`] frames and decodes requests of type `R`, with small
/// per-call buffers.
pub struct FrameCodec<R>(PhantomData<R>);

impl<R> Default for FrameCodec<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for FrameCodec<R> {
    type Encode = Outgoing;
    type Decode = R;
    type Encoder = FrameEncoder;
    type Decoder = MessageDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder::new(buffer_settings())
    }
}

pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use colink_proto::messaging::v1::channel_event::Kind;
    use colink_proto::messaging::v1::{ChannelEvent, MemberChanged, Message as ChatMessage};
    use pb::server_frame::Frame;

    use super::*;

    fn written(item: &Outgoing) -> Vec<u8> {
        let mut buf = Vec::new();
        item.write(&mut buf);
        buf
    }

    fn message_event() -> ChannelEvent {
        ChannelEvent {
            channel_id: "0190f1a2-0000-7000-8000-000000000001".into(),
            seq: 300,
            occur_time: Some(prost_types::Timestamp { seconds: 1_790_000_000, nanos: 5 }),
            actor_id: "0190f1a2-0000-7000-8000-0000000000aa".into(),
            kind: Some(Kind::MessageCreated(ChatMessage { text: "x".repeat(200), ..Default::default() })),
        }
    }

    #[test]
    fn a_queued_event_is_written_exactly_as_the_typed_response() {
        let event = message_event();
        let typed = pb::ServerFrame { frame: Some(Frame::Event(event.clone())) };
        let connect = pb::ConnectResponse { frame: Some(typed.clone()) }.encode_to_vec();
        let subscribe = pb::SubscribeResponse { frame: Some(typed) }.encode_to_vec();
        let raw = written(&Outgoing::Event(event.encode_to_vec().into()));
        assert_eq!(raw, connect);
        assert_eq!(raw, subscribe);
        let decoded = pb::ConnectResponse::decode(raw.as_slice()).expect("decodes");
        assert_eq!(decoded.frame.and_then(|f| f.frame), Some(Frame::Event(event)));
    }

    #[test]
    fn a_built_frame_is_written_as_the_typed_response() {
        let frame = Frame::CaughtUp(pb::CaughtUpFrame { channel_id: "c".into(), seq: 7 });
        let typed = pb::ConnectResponse { frame: Some(pb::ServerFrame { frame: Some(frame.clone()) }) };
        assert_eq!(written(&Outgoing::frame(frame)), typed.encode_to_vec());
    }

    #[test]
    fn the_head_reads_sequence_actor_and_who_left() {
        let message = message_event();
        let head = EventHead::decode(message.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(head.seq, 300);
        assert_eq!(head.actor_id, message.actor_id.as_bytes());
        assert_eq!(head.member_left, None);

        let left = ChannelEvent {
            seq: 9,
            actor_id: "admin".into(),
            kind: Some(Kind::MemberLeft(MemberChanged { user_id: "bob".into(), role: String::new() })),
            ..message_event()
        };
        let head = EventHead::decode(left.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(head.seq, 9);
        assert_eq!(head.member_left.map(|m| m.user_id), Some(Bytes::from_static(b"bob")));

        let joined = ChannelEvent {
            kind: Some(Kind::MemberJoined(MemberChanged { user_id: "bob".into(), role: "member".into() })),
            ..message_event()
        };
        let head = EventHead::decode(joined.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(head.member_left, None);
    }
}
