//! The ledger's typed values. The database stores them as text (with CHECK constraints); they
//! are parsed once, here, and an unknown value is an error, never a silent default.

use std::fmt;

use serde::Serialize;

pub use ingest_rows::validate::ErrorPolicy;

use crate::LedgerError;

/// Where an upload is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Taking chunks.
    Receiving,
    /// Every declared chunk received; some still loading.
    Processing,
    /// Ended with every chunk loaded.
    Done,
    /// Ended with a failed chunk, or expired.
    Failed,
    /// Ended by its client: chunks not loaded by then never will be.
    Aborted,
    /// Its client undid the import: its rows were deleted.
    Undone,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiving => "receiving",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
            Self::Undone => "undone",
        }
    }

    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        Ok(match text {
            "receiving" => Self::Receiving,
            "processing" => Self::Processing,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "aborted" => Self::Aborted,
            "undone" => Self::Undone,
            _ => return Err(unknown("upload state", text)),
        })
    }

    /// Not ended yet.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Receiving | Self::Processing)
    }
}

impl fmt::Display for UploadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a chunk (or a piece of one) is: `stored` until exactly one transaction moves it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChunkState {
    Stored,
    Loaded,
    Failed,
}

impl ChunkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Loaded => "loaded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        Ok(match text {
            "stored" => Self::Stored,
            "loaded" => Self::Loaded,
            "failed" => Self::Failed,
            _ => return Err(unknown("chunk state", text)),
        })
    }
}

impl fmt::Display for ChunkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A partition stream's number: which engine loads a chunk, and in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition(pub i32);

impl From<u16> for Partition {
    fn from(partition: u16) -> Self {
        Self(i32::from(partition))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The error policy stored in `uploads.on_error`.
pub(crate) fn parse_policy(text: &str) -> Result<ErrorPolicy, LedgerError> {
    ErrorPolicy::parse(text).ok_or_else(|| unknown("error policy", text))
}

fn unknown(what: &'static str, value: &str) -> LedgerError {
    LedgerError::Unknown {
        what,
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_what_they_write_and_refuse_the_rest() {
        for state in [
            UploadState::Receiving,
            UploadState::Processing,
            UploadState::Done,
            UploadState::Failed,
            UploadState::Aborted,
            UploadState::Undone,
        ] {
            assert_eq!(UploadState::parse(state.as_str()).unwrap(), state);
        }
        for state in [ChunkState::Stored, ChunkState::Loaded, ChunkState::Failed] {
            assert_eq!(ChunkState::parse(state.as_str()).unwrap(), state);
        }
        assert!(UploadState::parse("cancelled").is_err());
        assert!(ChunkState::parse("").is_err());
        assert!(parse_policy("ignore").is_err());
        assert_eq!(
            parse_policy("reject-chunk").unwrap(),
            ErrorPolicy::RejectChunk
        );
    }
}
