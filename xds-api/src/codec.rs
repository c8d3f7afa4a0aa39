//! The protobuf codec of the generated xDS client and server: tonic-prost's, with small
//! per-stream buffers. tonic keeps a stream's encode buffer for the stream's life at the size it
//! once grew to, and by default it coalesces messages up to 32 KiB before writing; with 2,000
//! idle proxy streams that was ~95 MiB of pilot's heap (bench/pilot-load). Here each message is
//! written as soon as it is encoded, the buffers start at 1 KiB, and the encode buffer grows
//! to the message's exact size (prost writes through `BufMut`, which would double it past the
//! message: a 16 KiB response left a 32 KiB buffer behind).

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// Initial capacity of a stream's encode and decode buffers (they grow to the largest message).
pub const BUFFER_BYTES: usize = 1024;
/// Write every message at once instead of coalescing (tonic's default is 32 KiB).
pub const YIELD_THRESHOLD: usize = 1;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// `tonic_prost::ProstCodec` with [`BUFFER_BYTES`] and [`YIELD_THRESHOLD`].
#[derive(Debug)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ExactEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ExactEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

/// tonic-prost's encoder, reserving the message's encoded length before writing it.
#[derive(Debug)]
pub struct ExactEncoder<T>(PhantomData<T>);

impl<T: prost::Message> Encoder for ExactEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        encode_reserved(&item, buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        settings()
    }
}

/// A buffer that can be grown ahead of a write (tonic's `EncodeBuf`, or a `BytesMut` in tests).
trait Reserve: bytes::BufMut {
    fn reserve_for(&mut self, additional: usize);
}

impl Reserve for EncodeBuf<'_> {
    fn reserve_for(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl Reserve for bytes::BytesMut {
    fn reserve_for(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// Reserves the encoded length, then writes: `encode_raw`, as `Message::encode` would compute
/// the length a second time to check a capacity that the reserve has just made.
fn encode_reserved<T: prost::Message>(item: &T, buf: &mut impl Reserve) {
    buf.reserve_for(item.encoded_len());
    item.encode_raw(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tonic::codec::Decoder as _;

    use crate::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};

    type Endpoints = crate::outrigger::v1alpha1::Endpoints;

    #[test]
    fn encoder_and_decoder_use_the_small_buffers() {
        let mut codec = SmallBufferCodec::<Endpoints, Endpoints>::default();
        for settings in [
            format!("{:?}", codec.encoder().buffer_settings()),
            format!("{:?}", codec.decoder().buffer_settings()),
        ] {
            assert!(settings.contains("buffer_size: 1024"), "{settings}");
            assert!(settings.contains("yield_threshold: 1 "), "{settings}");
        }
    }

    #[test]
    fn the_encode_buffer_grows_to_the_message_not_past_it() {
        // A response of many small resources, as pilot sends: prost writes it field by field.
        let message = DeltaDiscoveryResponse {
            resources: (0..100)
                .map(|i| Resource {
                    name: format!("outbound|80||service-{i}.shop.svc.cluster.local"),
                    version: format!("{i:016x}"),
                    resource: Some(prost_types::Any {
                        type_url: "type.outrigger.dev/outrigger.v1alpha1.Endpoints".into(),
                        value: vec![b'x'; 64],
                    }),
                    ..Default::default()
                })
                .collect(),
            nonce: "1".into(),
            ..Default::default()
        };
        assert!(prost::Message::encoded_len(&message) > 16 * 1024);
        let mut exact = BytesMut::with_capacity(BUFFER_BYTES);
        encode_reserved(&message, &mut exact);
        assert_eq!(exact.len(), prost::Message::encoded_len(&message));
        assert_eq!(exact.capacity(), exact.len());
        let decoded: DeltaDiscoveryResponse =
            prost::Message::decode(exact.freeze()).expect("decodes");
        assert_eq!(decoded, message);
        // What prost alone does from the same start: the buffer doubles past the message.
        let mut doubled = BytesMut::with_capacity(BUFFER_BYTES);
        prost::Message::encode(&message, &mut doubled).expect("encodes");
        assert!(
            doubled.capacity() >= 32 * 1024,
            "capacity {}",
            doubled.capacity()
        );
    }
}
