//! Streaming decompression of gzip and zstd bodies into the checked output.
//!
//! Decoded bytes pass through [`super::Output`], whose size cap stops a decompression bomb as
//! soon as it exceeds the chunk limit.

use std::io::{self, Write};

use super::{BodyEncoding, Output, StoreError};

/// Where body bytes go: straight to the output, or through a decoder that owns it.
pub(super) enum Decoder {
    Identity(Output),
    // Boxed: flate2's decoder state is large, and one decoder per chunk can afford the box.
    Gzip(Box<flate2::write::GzDecoder<Output>>),
    Zstd(zstd::stream::write::Decoder<'static, Output>),
}

/// The largest zstd window a body may need, as a power of two (8 MiB: what zstd's levels up to
/// 19 use). A frame may ask for up to 2 GiB, which the decoder would hold for the whole body;
/// one needing more than this is refused (400) rather than allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The output's own refusals (too large, not text) travel inside io errors: unwrap them.
pub(super) fn unwrap_error(kind: &'static str, err: io::Error) -> StoreError {
    match err.downcast::<StoreError>() {
        Ok(store) => store,
        Err(err) => StoreError::Decode(kind, err.to_string()),
    }
}

impl Decoder {
    pub(super) fn new(encoding: BodyEncoding, output: Output) -> Result<Self, StoreError> {
        Ok(match encoding {
            BodyEncoding::Identity => Self::Identity(output),
            BodyEncoding::Gzip => Self::Gzip(Box::new(flate2::write::GzDecoder::new(output))),
            BodyEncoding::Zstd => {
                let mut decoder = zstd::stream::write::Decoder::new(output)?;
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Self::Zstd(decoder)
            }
        })
    }

    /// Decodes one compressed frame into the output.
    pub(super) fn write_compressed(&mut self, frame: &[u8]) -> Result<(), StoreError> {
        match self {
            Self::Identity(_) => unreachable!("identity bodies are written directly"),
            Self::Gzip(decoder) => decoder
                .write_all(frame)
                .map_err(|e| unwrap_error("gzip", e)),
            Self::Zstd(decoder) => decoder
                .write_all(frame)
                .map_err(|e| unwrap_error("zstd", e)),
        }
    }

    /// Ends the stream (a truncated compressed stream is an error) and returns the output.
    pub(super) fn finish(self) -> Result<Output, StoreError> {
        match self {
            Self::Identity(output) => Ok(output),
            Self::Gzip(decoder) => decoder.finish().map_err(|e| unwrap_error("gzip", e)),
            // `finish`, not `flush`: only it fails a stream that stops inside a frame.
            Self::Zstd(decoder) => decoder.finish().map_err(|e| unwrap_error("zstd", e)),
        }
    }
}
