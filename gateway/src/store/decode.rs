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
            BodyEncoding::Zstd => Self::Zstd(zstd::stream::write::Decoder::new(output)?),
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
