//! When an upload ends. Three rules, each written once:
//!
//! - **Declared count** ([`end_if_done`]): an open upload whose declared chunks are all received
//!   and all loaded or failed ends `done` (or `failed` if a chunk failed). Applied in the same
//!   transaction as every change that can satisfy it: a chunk's outcome, and the declaration.
//! - **Settle** ([`settle_idle`]), for uploads that never declare a count (the original's flow):
//!   at least one chunk received, none still `stored`, and none arrived for the idle period. A
//!   settled upload stays open to its client: a later chunk reopens it
//!   ([`crate::uploads::record_chunk`]), and it may still declare its count.
//! - **Expiry** ([`expire`]): an upload still `receiving` with no activity for the TTL fails with
//!   error `expired`, unless it lost nothing (it settles instead); its unloaded chunks fail with it.

use std::time::Duration;

use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use ingest_rows::dataset::quote_ident;

use crate::files::ChunkFile;
use crate::hooks::HOOK_AFRESH;
use crate::states::UploadState;
use crate::LedgerError;

/// Ended by the settle rule: without a declared count and without expiring.
pub(crate) const SETTLED: &str =
    "(expected_chunks IS NULL AND state IN ('done', 'failed') AND error IS NULL)";

/// Ended because chunks failed (not expired, aborted or undone): its failed chunks may still be
/// retried or replaced ([`crate::retries`]), which opens it again.
pub(crate) const RETRYABLE: &str = "(state = 'failed' AND error IS NULL AND chunks_failed > 0)";

/// No chunk body of upload `u` was seen arriving for `$1` seconds (see [`crate::uploads::body_arriving`]).
const NO_BODY_ARRIVING: &str =
    "(u.body_seen_at IS NULL OR u.body_seen_at < now() - make_interval(secs => $1))";

/// The "done" rule for a declared count, over the upload's own columns.
const DECLARED_DONE: &str = "expected_chunks IS NOT NULL
    AND chunks_received >= expected_chunks
    AND chunks_loaded + chunks_failed >= expected_chunks";

/// Ends the upload if the declared-count rule holds; returns its end state if it ended now.
pub(crate) async fn end_if_done(
    client: &impl GenericClient,
    upload_id: Uuid,
) -> Result<Option<UploadState>, LedgerError> {
    // clock_timestamp(), not now(): now() is the transaction's start, before a chunk's COPY.
    let ended = client
        .query_opt(
            &format!(
                "UPDATE uploads SET state = CASE WHEN chunks_failed > 0 THEN 'failed' ELSE 'done' END,
                        completed_at = coalesce(completed_at, clock_timestamp())
                 WHERE upload_id = $1 AND state IN ('receiving', 'processing') AND {DECLARED_DONE}
                 RETURNING state"
            ),
            &[&upload_id],
        )
        .await?;
    ended.map(|row| UploadState::parse(row.get(0))).transpose()
}

/// Ends every undeclared upload idle for `idle` whose received chunks are all loaded or failed;
/// returns how many. Idle: no chunk recorded and no chunk body seen arriving for `idle` (a slow
/// body is not the end of the upload). Each upload is settled by one atomic `UPDATE`, and a
/// chunk recorded at the same moment either sees the upload settled (and reopens it) or makes
/// it no longer eligible, because both take the upload's row lock.
pub async fn settle_idle(client: &Client, idle: Duration) -> Result<u64, LedgerError> {
    Ok(client
        .execute(
            &format!(
                "UPDATE uploads u
                 SET state = CASE WHEN u.chunks_failed > 0 THEN 'failed' ELSE 'done' END,
                     completed_at = clock_timestamp()
                 WHERE u.state = 'receiving' AND u.expected_chunks IS NULL
                   AND u.chunks_received > 0
                   AND u.chunks_loaded + u.chunks_failed >= u.chunks_received
                   AND {NO_BODY_ARRIVING}
                   AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.upload_id = u.upload_id
                                   AND (c.state = 'stored'
                                        OR c.received_at >= now() - make_interval(secs => $1)))"
            ),
            &[&idle.as_secs_f64()],
        )
        .await?)
}

/// One expiry transaction's work.
#[derive(Debug, Default)]
pub struct Expired {
    /// Uploads failed as expired.
    pub uploads: Vec<Uuid>,
    /// Their chunks no engine loaded, failed with them: their files are to be removed.
    pub chunks: Vec<ChunkFile>,
}

/// Fails up to `batch` uploads still `receiving` with no activity (creation, last chunk, or a
/// chunk body seen arriving) for `ttl`, except those that lost nothing (settled by [`settle_idle`] instead), and their chunks
/// that no engine loaded, in one transaction. `FOR UPDATE SKIP LOCKED` lets several gateways
/// share the sweep. Failed chunks get a `committed_at`, so the engine's cleanup sweep also
/// finds their files.
pub async fn expire(
    client: &mut Client,
    ttl: Duration,
    batch: i64,
) -> Result<Expired, LedgerError> {
    let tx = client.transaction().await?;
    let uploads: Vec<Uuid> = tx
        .query(
            &format!(
                "WITH stale AS (
                     SELECT u.upload_id FROM uploads u
                     WHERE u.state = 'receiving'
                       AND u.created_at < now() - make_interval(secs => $1)
                       AND NOT (u.expected_chunks IS NULL AND u.chunks_received > 0
                                AND u.chunks_loaded + u.chunks_failed >= u.chunks_received)
                       AND {NO_BODY_ARRIVING}
                       AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.upload_id = u.upload_id
                                       AND c.received_at >= now() - make_interval(secs => $1))
                     ORDER BY u.created_at
                     LIMIT $2
                     FOR UPDATE OF u SKIP LOCKED)
                 UPDATE uploads u SET state = 'failed', error = 'expired', completed_at = now()
                 FROM stale WHERE u.upload_id = stale.upload_id
                 RETURNING u.upload_id"
            ),
            &[&ttl.as_secs_f64(), &batch],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if uploads.is_empty() {
        return Ok(Expired::default());
    }
    let chunks =
        fail_stored_chunks(&tx, &uploads, "upload expired before this chunk was loaded").await?;
    undo_loaded_pieces(&tx, &uploads).await?;
    tx.commit().await?;
    Ok(Expired { uploads, chunks })
}

/// A chunk loaded in pieces that failed before all of them were ([`crate::pieces`]) keeps none of
/// its rows: those its loaded pieces committed are deleted by their lineage (a scan of the table,
/// on this rare path only), with their rejected rows and the plan.
async fn undo_loaded_pieces(
    tx: &tokio_postgres::Transaction<'_>,
    uploads: &[Uuid],
) -> Result<(), LedgerError> {
    let partial = tx
        .query(
            "SELECT DISTINCT p.upload_id, p.chunk_no, u.target_table
             FROM chunk_pieces p JOIN uploads u ON u.upload_id = p.upload_id
             WHERE p.upload_id = ANY($1) AND p.state = 'loaded'",
            &[&uploads],
        )
        .await?;
    for row in &partial {
        let (upload_id, chunk_no, table): (Uuid, i32, Option<&str>) =
            (row.get(0), row.get(1), row.get(2));
        let Some(table) = table else {
            continue; // Uploads made before they named their table were all `transactions`.
        };
        crate::pieces::undo_chunk_rows(tx, table, upload_id, chunk_no).await?;
    }
    tx.execute(
        "DELETE FROM chunk_pieces WHERE upload_id = ANY($1)",
        &[&uploads],
    )
    .await?;
    Ok(())
}

/// Fails the chunks of `uploads` that no engine loaded, counting them in their uploads, and
/// undoes what pieces of them had loaded; returns their files, to remove. A chunk an engine is
/// committing right now is locked (a piece share-locks it): this waits for that commit, after
/// which the chunk is `loaded` and stays so, and every later load of one of these chunks rolls
/// back.
async fn fail_stored_chunks(
    tx: &tokio_postgres::Transaction<'_>,
    uploads: &[Uuid],
    reason: &str,
) -> Result<Vec<ChunkFile>, LedgerError> {
    let chunks = tx
        .query(
            "WITH failed AS (
                 UPDATE chunks SET state = 'failed', committed_at = now(), error = $2
                 WHERE upload_id = ANY($1) AND state = 'stored'
                 RETURNING upload_id, chunk_no, stored_path),
             counted AS (
                 UPDATE uploads u SET chunks_failed = u.chunks_failed + f.n
                 FROM (SELECT upload_id, count(*)::int4 AS n FROM failed GROUP BY 1) f
                 WHERE u.upload_id = f.upload_id)
             SELECT upload_id, chunk_no, stored_path FROM failed",
            &[&uploads, &reason],
        )
        .await?
        .iter()
        .map(ChunkFile::from_row)
        .collect();
    undo_loaded_pieces(tx, uploads).await?;
    Ok(chunks)
}

/// What a client's `DELETE` of its upload did.
#[derive(Debug)]
pub enum Withdrawal {
    /// Aborted (or undone): its chunks not loaded yet failed; their files, and those of chunks
    /// that failed before, are to be removed;
    /// with an undo, how many rows were deleted.
    Ended {
        state: UploadState,
        /// Chunks not loaded yet, failed now.
        chunks_failed: usize,
        chunks: Vec<ChunkFile>,
        rows_deleted: Option<u64>,
    },
    /// Nothing to do: the upload ended before (only its rows can still be undone), or its rows
    /// were undone already.
    AlreadyEnded(UploadState),
}

/// Aborts the upload, and with `undo_rows` also deletes every row it loaded, in one transaction.
///
/// Chunks still `stored` fail (waiting for loads being committed right now, see
/// [`fail_stored_chunks`]); the rows are deleted by a statement that starts after that, so it
/// sees every chunk that was loaded and no load commits after it: nothing is left half-deleted.
/// The rows go by their lineage column `upload_id` (a scan of the dataset's table).
pub async fn withdraw(
    client: &mut Client,
    upload_id: Uuid,
    undo_rows: bool,
) -> Result<Withdrawal, LedgerError> {
    let tx = client.transaction().await?;
    let row = tx
        .query_one(
            &format!(
                "SELECT state, target_table, {SETTLED} FROM uploads WHERE upload_id = $1 FOR UPDATE"
            ),
            &[&upload_id],
        )
        .await?;
    let (state, table, settled) = (
        UploadState::parse(row.get(0))?,
        row.get::<_, Option<String>>(1),
        row.get::<_, bool>(2),
    );
    let abortable = state.is_open() || settled;
    if state == UploadState::Undone || (!undo_rows && !abortable) {
        return Ok(Withdrawal::AlreadyEnded(state));
    }
    let chunks_failed = fail_stored_chunks(
        &tx,
        &[upload_id],
        "upload aborted before this chunk was loaded",
    )
    .await?
    .len();
    // Those just failed, and those kept for a retry that will not come now.
    let chunks = tx
        .query(
            "SELECT upload_id, chunk_no, stored_path FROM chunks
             WHERE upload_id = $1 AND state = 'failed' AND NOT file_removed",
            &[&upload_id],
        )
        .await?
        .iter()
        .map(ChunkFile::from_row)
        .collect();
    let rows_deleted = match (undo_rows, table) {
        (false, _) => None,
        (true, None) => Some(0),
        (true, Some(table)) => Some(
            tx.execute(
                &format!("DELETE FROM {} WHERE upload_id = $1", quote_ident(&table)),
                &[&upload_id],
            )
            .await?,
        ),
    };
    let ended = if undo_rows {
        UploadState::Undone
    } else {
        UploadState::Aborted
    };
    // An upload that had ended on its own keeps its error and completion time.
    let error = abortable.then_some("aborted by its client");
    tx.execute(
        &format!(
            "UPDATE uploads SET state = $2, rows_undone = rows_undone + $3,
                    error = coalesce(error, $4), completed_at = coalesce(completed_at, now()),
                    {HOOK_AFRESH}
             WHERE upload_id = $1"
        ),
        &[
            &upload_id,
            &ended.as_str(),
            &(rows_deleted.unwrap_or(0) as i64),
            &error,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Withdrawal::Ended {
        state: ended,
        chunks_failed,
        chunks,
        rows_deleted,
    })
}
