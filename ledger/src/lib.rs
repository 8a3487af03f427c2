//! The upload ledger: the one owner of `uploads`, `chunks`, `chunk_pieces` and `stream_offsets`.
//!
//! Every statement on those tables is here, so the state machine of an upload and its chunks
//! reads in one place. The gateway and the engine call these functions over their own
//! connections (a pooled client, a loader session, a transaction); neither writes that SQL
//! itself (`tests/ownership.rs` holds it).
//!
//! - [`states`]: [`UploadState`], [`ChunkState`], [`Partition`] and the error policy, typed.
//! - [`uploads`]: what the gateway does with an upload: create, find, record a chunk (or take it
//!   back), declare the chunk count, read its status.
//! - [`completion`]: when an upload ends — the "done" rule for a declared count (written once,
//!   applied after every change that can end one), the settle rule for undeclared uploads, and
//!   expiry.
//! - [`loads`]: what the engine does with a chunk: claim it, record its outcome.
//! - [`pieces`]: the plan of a big chunk loaded in pieces, and each piece's outcome.
//! - [`offsets`]: the partition streams' committed offsets.
//! - [`files`]: chunk files in the ledger's eyes: announced or not, still on disk or removed.
//! - [`hooks`]: completion hooks due, claimed and acknowledged.
//! - [`backlog`]: the waiting chunks per partition.
//! - [`rejects`]: an upload's rejected rows, a page at a time, for a download.
//! - [`retries`]: a failed chunk loaded again, as it is or with new bytes.
//! - [`report`]: what the benchmark reads back about one upload.

pub mod backlog;
pub mod completion;
pub mod files;
pub mod hooks;
pub mod loads;
pub mod offsets;
pub mod pieces;
pub mod rejects;
pub mod report;
pub mod retries;
pub mod states;
pub mod uploads;

pub use states::{ChunkState, ErrorPolicy, Partition, UploadState};

/// Why a ledger statement failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// A value the schema's CHECK constraints should have kept out.
    #[error("ledger holds an unknown {what} {value:?}")]
    Unknown { what: &'static str, value: String },
}
