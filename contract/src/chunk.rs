//! The chunk message: one per stored chunk, published by the gateway, consumed by the engine.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A stored, synced chunk waiting to be loaded. Small on purpose: the rows stay on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMessage {
    pub upload_id: Uuid,
    pub chunk_no: i32,
    /// Path of the chunk file relative to the upload directory.
    pub path: String,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub dataset: String,
    /// Whether the chunk starts with the dataset's header line.
    pub has_header: bool,
    /// When the gateway received the chunk, in milliseconds since the Unix epoch.
    pub received_at_ms: i64,
}

/// A message that is not a chunk message.
#[derive(Debug, thiserror::Error)]
#[error("malformed chunk message: {0}")]
pub struct MalformedMessage(#[from] serde_json::Error);

impl ChunkMessage {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a chunk message should always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MalformedMessage> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let msg = ChunkMessage {
            upload_id: Uuid::new_v4(),
            chunk_no: 7,
            path: "a/b.csv".into(),
            bytes: 42,
            sha256: "00".repeat(32),
            dataset: "transactions".into(),
            has_header: true,
            received_at_ms: 1,
        };
        assert_eq!(ChunkMessage::decode(&msg.encode()).unwrap(), msg);
        assert!(ChunkMessage::decode(b"/tmp/x.csv").is_err());
    }
}
