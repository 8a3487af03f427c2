//! The gateway's JSON bodies, as the client sends and reads them.
//!
//! Reading is lenient on purpose: fields the client does not need may be missing or added by
//! newer gateways without breaking older clients, and an unknown upload state is kept as
//! [`ReportedState::Unknown`] instead of failing the poll.

use serde::{Deserialize, Serialize};

/// `POST /api/auth/token` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    /// Seconds the token lives; the original system did not say, and its tokens lived an hour.
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

fn default_expires_in() -> u64 {
    3600
}

/// `POST /api/upload` body.
#[derive(Debug, Clone, Serialize)]
pub struct CreateUpload<'a> {
    pub dataset: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_chunks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    pub on_error: &'a str,
}

/// `POST /api/upload` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadCreated {
    pub folder: String,
}

/// `POST /api/upload/{folder}` (multipart) answer.
#[derive(Debug, Clone, Deserialize)]
pub struct FileStored {
    /// The chunk number the file became, in arrival order.
    pub chunk: u64,
}

/// `POST /api/upload/{folder}/complete` body.
#[derive(Debug, Clone, Serialize)]
pub struct Complete {
    pub chunks: u64,
}

pub use ingest_ledger::UploadState;

/// An upload's state as a gateway reports it: one of the ledger's [`UploadState`]s, or one this
/// client does not know (a newer gateway's), kept instead of failing the poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedState {
    Known(UploadState),
    Unknown,
}

impl ReportedState {
    /// Whether the state can no longer change.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Known(state) if !state.is_open())
    }

    /// Still taking chunks, as far as this client can tell (an unknown state may be).
    pub fn may_receive(self) -> bool {
        matches!(self, Self::Known(UploadState::Receiving) | Self::Unknown)
    }
}

impl From<UploadState> for ReportedState {
    fn from(state: UploadState) -> Self {
        Self::Known(state)
    }
}

impl PartialEq<UploadState> for ReportedState {
    fn eq(&self, other: &UploadState) -> bool {
        *self == Self::Known(*other)
    }
}

impl std::fmt::Display for ReportedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Known(state) => state.fmt(f),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for ReportedState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(UploadState::parse(&text).map_or(Self::Unknown, Self::Known))
    }
}

/// `GET /api/upload/{folder}` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadStatus {
    pub folder: String,
    pub state: ReportedState,
    #[serde(default)]
    pub chunks_received: u64,
    #[serde(default)]
    pub chunks_loaded: u64,
    #[serde(default)]
    pub chunks_failed: u64,
    #[serde(default)]
    pub expected_chunks: Option<u64>,
    #[serde(default)]
    pub rows_loaded: u64,
    #[serde(default)]
    pub rows_rejected: u64,
    #[serde(default)]
    pub bytes_received: u64,
    #[serde(default)]
    pub received_chunks: Vec<u64>,
    #[serde(default)]
    pub rejected_rows: Vec<RejectedRow>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A row the engine refused, as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RejectedRow {
    pub chunk: u64,
    pub line: u64,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub raw: String,
}

/// The gateway's error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_status_parses() {
        let status: UploadStatus = serde_json::from_str(
            r#"{"folder":"7f1c","state":"processing","chunks_received":3,"chunks_loaded":1,
                "chunks_failed":0,"expected_chunks":3,"rows_loaded":1000,"rows_rejected":1,
                "bytes_received":12345,"received_chunks":[0,2,1],
                "rejected_rows":[{"chunk":1,"line":7,"reason":"bad date","raw":"32/01/2023 x"}],
                "error":null}"#,
        )
        .expect("the documented status should parse");
        assert_eq!(status.state, UploadState::Processing);
        assert_eq!(status.received_chunks, vec![0, 2, 1]);
        assert_eq!(status.expected_chunks, Some(3));
        assert_eq!(status.rows_loaded, 1000);
        assert_eq!(status.rejected_rows[0].line, 7);
        assert_eq!(status.rejected_rows[0].reason, "bad date");
        assert_eq!(status.error, None);
    }

    #[test]
    fn a_sparse_status_with_an_unknown_state_parses() {
        let status: UploadStatus =
            serde_json::from_str(r#"{"folder":"f","state":"archived","extra":true}"#)
                .expect("missing and extra fields should be tolerated");
        assert_eq!(status.state, ReportedState::Unknown);
        assert!(!status.state.is_settled());
        assert!(status.received_chunks.is_empty());
        assert_eq!(status.expected_chunks, None);
    }

    #[test]
    fn failed_and_done_are_settled() {
        let failed: UploadStatus =
            serde_json::from_str(r#"{"folder":"f","state":"failed","error":"chunk 3 lost"}"#)
                .expect("a failed status should parse");
        assert!(failed.state.is_settled());
        assert_eq!(failed.error.as_deref(), Some("chunk 3 lost"));
        assert!(ReportedState::from(UploadState::Done).is_settled());
        assert!(!ReportedState::from(UploadState::Receiving).is_settled());
    }

    #[test]
    fn create_upload_omits_unknown_totals() {
        let body = serde_json::to_value(CreateUpload {
            dataset: "transactions",
            expected_chunks: None,
            total_bytes: Some(10),
            on_error: "reject-rows",
        })
        .expect("serializable");
        assert_eq!(
            body,
            serde_json::json!({"dataset":"transactions","total_bytes":10,"on_error":"reject-rows"})
        );
    }

    #[test]
    fn token_lifetime_defaults_to_an_hour() {
        let token: TokenResponse =
            serde_json::from_str(r#"{"token":"abc"}"#).expect("a bare token should parse");
        assert_eq!(token.expires_in, 3600);
    }
}
