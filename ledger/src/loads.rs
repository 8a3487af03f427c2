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
    /// Which load of the chunk this is ([`crate::retries`]): its outcome is recorded only for
    /// this attempt.
    pub attempt: i32,
    /// The column names its records are read with ([`crate::uploads::NewChunk::header`]);
    /// `None` while no chunk has set it, and for uploads recorded before uploads kept it
    /// (read in declared order).
    pub header: Option<Vec<String>>,
    /// Whether the upload's chunk 0 is stored: with no header set, a later chunk must wait
    /// for it ([`Claimed::parked`]); with it stored, no header means an upload from before
    /// headers were kept.
    pub start_stored: bool,
}

impl Claimed {
    /// Whether this chunk (number `chunk_no`, of a dataset whose files start with a header
    /// when `header_expected`) must wait for its upload's chunk 0 to say how it is read: it is
    /// then published again once that is stored ([`crate::uploads::record_chunk`]).
    pub fn parked(&self, chunk_no: i32, header_expected: bool) -> bool {
        self.header.is_none() && header_expected && chunk_no != 0 && !self.start_stored
    }
}

/// The chunk's row if it is still `stored`.
pub async fn claim(
    client: &impl GenericClient,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<Option<Claimed>, LedgerError> {
    let row = client
        .query_opt(
            "SELECT c.stored_path, u.on_error, u.dataset, c.attempt, u.header,
                    EXISTS (SELECT 1 FROM chunks z WHERE z.upload_id = c.upload_id AND z.chunk_no = 0)
             FROM chunks c JOIN uploads u ON u.upload_id = c.upload_id
             WHERE c.upload_id = $1 AND c.chunk_no = $2 AND c.state = 'stored'",
            &[&upload_id, &chunk_no],
        )
        .await?;
    row.map(|row| {
        Ok(Claimed {
            stored_path: row.get(0),
            on_error: parse_policy(row.get(1))?,
            dataset: row.get(2),
            attempt: row.get(3),
            header: row.get(4),
            start_stored: row.get(5),
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
    /// Valid rows whose unique key was in the table already (`on_conflict = "skip"`).
    pub rows_skipped: u64,
    pub error: Option<&'a str>,
    /// Whether the chunk was loaded in pieces ([`crate::pieces`]). A chunk loaded whole must have
    /// no plan: otherwise a peer may be loading (or have loaded) its pieces.
    pub in_pieces: bool,
    /// The attempt the load claimed ([`Claimed::attempt`]).
    pub attempt: i32,
}

/// What [`finish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The chunk's outcome is recorded: commit.
    Recorded,
    /// It was not `stored` any more (a peer got there first), or it is a later attempt (a retry
    /// of a chunk that failed meanwhile): roll back.
    Gone,
    /// A chunk loaded whole that has a plan meanwhile (a peer cut it into pieces): roll back and
    /// load it again, in pieces.
    Planned,
}

/// Moves the chunk's row from `stored` to its outcome, counts it in the upload and ends the
/// upload if that was its last chunk ([`crate::completion`]); see [`Finished`] for when it does
/// not.
pub async fn finish(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
    outcome: ChunkOutcome<'_>,
) -> Result<Finished, LedgerError> {
    debug_assert!(outcome.state != ChunkState::Stored);
    let (rows, rejected) = (outcome.rows_loaded as i64, outcome.rows_rejected as i64);
    // The upload's row first, as everything else that changes both takes them (record, expire,
    // abort): the same order everywhere, so a load and an abort never deadlock.
    tx.execute(
        "SELECT 1 FROM uploads WHERE upload_id = $1 FOR NO KEY UPDATE",
        &[&upload_id],
    )
    .await?;
    // clock_timestamp(), not now(): now() is the transaction's start, before the COPY, and would
    // make chunk latencies and the benchmark's end time look better than they are.
    // `state = 'stored'`: waits for a peer's uncommitted update of the row, then sees its result.
    let moved = tx
        .execute(
            "UPDATE chunks SET state = $3, rows_loaded = $4, rows_rejected = $5, error = $6,
                rows_skipped = $9, committed_at = clock_timestamp()
             WHERE upload_id = $1 AND chunk_no = $2 AND state = 'stored' AND attempt = $8
               AND ($7 OR NOT EXISTS (SELECT 1 FROM chunk_pieces p
                                      WHERE p.upload_id = $1 AND p.chunk_no = $2))",
            &[
                &upload_id,
                &chunk_no,
                &outcome.state.as_str(),
                &rows,
                &rejected,
                &outcome.error,
                &outcome.in_pieces,
                &outcome.attempt,
                &(outcome.rows_skipped as i64),
            ],
        )
        .await?;
    if moved == 0 {
        let planned = !outcome.in_pieces
            && tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM chunk_pieces WHERE upload_id = $1 AND chunk_no = $2)",
                    &[&upload_id, &chunk_no],
                )
                .await?
                .get::<_, bool>(0);
        return Ok(if planned {
            Finished::Planned
        } else {
            Finished::Gone
        });
    }
    let failed = i32::from(outcome.state == ChunkState::Failed);
    tx.execute(
        "UPDATE uploads SET
            chunks_loaded = chunks_loaded + $2,
            chunks_failed = chunks_failed + $3,
            rows_loaded = rows_loaded + $4,
            rows_rejected = rows_rejected + $5,
            rows_skipped = rows_skipped + $6
         WHERE upload_id = $1",
        &[
            &upload_id,
            &(1 - failed),
            &failed,
            &rows,
            &rejected,
            &(outcome.rows_skipped as i64),
        ],
    )
    .await?;
    end_if_done(tx, upload_id).await?;
    Ok(Finished::Recorded)
}
