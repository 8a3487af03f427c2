//! What the engine does with a chunk: claim it (read its row while it waits to be loaded) and
//! record its outcome.
//!
//! Exactly once rests on [`finish`]: it moves the chunk's row out of `stored`
//! (`UPDATE ... WHERE state = 'stored'`) in the transaction that holds the chunk's rows. Of two
//! transactions loading the same chunk, the second to reach the row finds it no longer `stored`,
//! updates nothing, and rolls its rows back. [`claim`] locks nothing, so a peer taking over from
//! a process stopped mid-COPY never waits for it.

use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use crate::completion::end_if_done;
use crate::states::{parse_policy, ChunkState, ErrorPolicy};
use crate::LedgerError;

/// A chunk that waits to be loaded.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Relative to the upload directory.
    pub stored_path: String,
    pub on_error: ErrorPolicy,
    pub dataset: String,
}

/// The chunk's row if it is still `stored`.
pub async fn claim(
    client: &impl GenericClient,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<Option<Claimed>, LedgerError> {
    let row = client
        .query_opt(
            "SELECT c.stored_path, u.on_error, u.dataset FROM chunks c
             JOIN uploads u ON u.upload_id = c.upload_id
             WHERE c.upload_id = $1 AND c.chunk_no = $2 AND c.state = 'stored'",
            &[&upload_id, &chunk_no],
        )
        .await?;
    row.map(|row| {
        Ok(Claimed {
            stored_path: row.get(0),
            on_error: parse_policy(row.get(1))?,
            dataset: row.get(2),
        })
    })
    .transpose()
}

/// How a chunk ended.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOutcome<'a> {
    /// [`ChunkState::Loaded`] or [`ChunkState::Failed`].
    pub state: ChunkState,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub error: Option<&'a str>,
}

/// Moves the chunk's row from `stored` to its outcome, counts it in the upload and ends the
/// upload if that was its last chunk ([`crate::completion`]); `false` (nothing updated) when the
/// row was not `stored` any more: a peer got there first, and the caller rolls back.
pub async fn finish(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
    outcome: ChunkOutcome<'_>,
) -> Result<bool, LedgerError> {
    debug_assert!(outcome.state != ChunkState::Stored);
    let (rows, rejected) = (outcome.rows_loaded as i64, outcome.rows_rejected as i64);
    // clock_timestamp(), not now(): now() is the transaction's start, before the COPY, and would
    // make chunk latencies and the benchmark's end time look better than they are.
    // `state = 'stored'`: waits for a peer's uncommitted update of the row, then sees its result.
    let moved = tx
        .execute(
            "UPDATE chunks SET state = $3, rows_loaded = $4, rows_rejected = $5, error = $6,
                committed_at = clock_timestamp()
             WHERE upload_id = $1 AND chunk_no = $2 AND state = 'stored'",
            &[
                &upload_id,
                &chunk_no,
                &outcome.state.as_str(),
                &rows,
                &rejected,
                &outcome.error,
            ],
        )
        .await?;
    if moved == 0 {
        return Ok(false);
    }
    let failed = i32::from(outcome.state == ChunkState::Failed);
    tx.execute(
        "UPDATE uploads SET
            chunks_loaded = chunks_loaded + $2,
            chunks_failed = chunks_failed + $3,
            rows_loaded = rows_loaded + $4,
            rows_rejected = rows_rejected + $5
         WHERE upload_id = $1",
        &[&upload_id, &(1 - failed), &failed, &rows, &rejected],
    )
    .await?;
    end_if_done(tx, upload_id).await?;
    Ok(true)
}
