//! The protobuf codec of the generated xDS client and server: tonic-prost's, with small
//! per-stream buffers. tonic keeps a stream's encode buffer for the stream's life at the size it
//! once grew to, and by default it coalesces messages up to 32 KiB before writing; with 2,000
//! idle proxy streams that was ~95 MiB of pilot's heap (bench/pilot-load). Here each message is
//! written as soon as it is encoded, and the buffers start at 1 KiB.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

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
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codec::{Decoder as _, Encoder as _};

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
}
