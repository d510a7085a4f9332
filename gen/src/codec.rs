//! The codec of every Colink call: protobuf through prost, except that a
//! message that does not decode is the sender's fault. prost's own codec
//! answers INTERNAL for it, which blames the server, shows up as a server
//! error in logs and metrics, and tells a client nothing it can fix.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// `application/grpc+proto` with INVALID_ARGUMENT for undecodable messages.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder::new(BufferSettings::default())
    }
}

/// Decodes one message of type `U`; bytes that are not one are
/// INVALID_ARGUMENT, with prost's account of what was wrong.
#[derive(Debug, Clone)]
pub struct MessageDecoder<U> {
    buffer_settings: BufferSettings,
    _message: PhantomData<U>,
}

impl<U> MessageDecoder<U> {
    pub fn new(buffer_settings: BufferSettings) -> Self {
        Self { buffer_settings, _message: PhantomData }
    }
}

impl<U: Message + Default> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|err| Status::invalid_argument(format!("the message does not decode: {err}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer_settings
    }
}
