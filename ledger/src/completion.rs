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

use ingest_rows::dataset::{quote_ident, Dataset};

use crate::files::ChunkFile;
use crate::states::UploadState;
use crate::LedgerError;

/// Ended by the settle rule: without a declared count and without expiring.
pub(crate) const SETTLED: &str =
    "(expected_chunks IS NULL AND state IN ('done', 'failed') AND error IS NULL)";

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
/// returns how many. Each upload is settled by one atomic `UPDATE`, and a chunk recorded at the
/// same moment either sees the upload settled (and reopens it) or makes it no longer eligible,
/// because both take the upload's row lock.
pub async fn settle_idle(client: &Client, idle: Duration) -> Result<u64, LedgerError> {
    Ok(client
        .execute(
            "UPDATE uploads u
             SET state = CASE WHEN u.chunks_failed > 0 THEN 'failed' ELSE 'done' END,
                 completed_at = clock_timestamp()
             WHERE u.state = 'receiving' AND u.expected_chunks IS NULL AND u.chunks_received > 0
               AND u.chunks_loaded + u.chunks_failed >= u.chunks_received
               AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.upload_id = u.upload_id
                               AND (c.state = 'stored'
                                    OR c.received_at >= now() - make_interval(secs => $1)))",
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

/// Fails up to `batch` uploads still `receiving` with no activity (creation or last chunk) for
/// `ttl`, except those that lost nothing (settled by [`settle_idle`] instead), and their chunks
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
            "WITH stale AS (
                 SELECT u.upload_id FROM uploads u
                 WHERE u.state = 'receiving'
                   AND u.created_at < now() - make_interval(secs => $1)
                   AND NOT (u.expected_chunks IS NULL AND u.chunks_received > 0
                            AND u.chunks_loaded + u.chunks_failed >= u.chunks_received)
                   AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.upload_id = u.upload_id
                                   AND c.received_at >= now() - make_interval(secs => $1))
                 ORDER BY u.created_at
                 LIMIT $2
                 FOR UPDATE OF u SKIP LOCKED)
             UPDATE uploads u SET state = 'failed', error = 'expired', completed_at = now()
             FROM stale WHERE u.upload_id = stale.upload_id
             RETURNING u.upload_id",
            &[&ttl.as_secs_f64(), &batch],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if uploads.is_empty() {
        return Ok(Expired::default());
    }
    // A chunk an engine is loading right now is locked: this waits for its commit, after which
    // it is `loaded` and stays so.
    let chunks = tx
        .query(
            "WITH failed AS (
                 UPDATE chunks SET state = 'failed', committed_at = now(),
                        error = 'upload expired before this chunk was loaded'
                 WHERE upload_id = ANY($1) AND state = 'stored'
                 RETURNING upload_id, chunk_no, stored_path),
             counted AS (
                 UPDATE uploads u SET chunks_failed = u.chunks_failed + f.n
                 FROM (SELECT upload_id, count(*)::int4 AS n FROM failed GROUP BY 1) f
                 WHERE u.upload_id = f.upload_id)
             SELECT upload_id, chunk_no, stored_path FROM failed",
            &[&uploads],
        )
        .await?
        .iter()
        .map(ChunkFile::from_row)
        .collect();
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
            "SELECT DISTINCT p.upload_id, p.chunk_no, u.dataset
             FROM chunk_pieces p JOIN uploads u ON u.upload_id = p.upload_id
             WHERE p.upload_id = ANY($1) AND p.state = 'loaded'",
            &[&uploads],
        )
        .await?;
    for row in &partial {
        let (upload_id, chunk_no, dataset): (Uuid, i32, &str) =
            (row.get(0), row.get(1), row.get(2));
        let Some(dataset) = Dataset::builtin(dataset) else {
            continue; // A dataset no engine knows has no rows to undo.
        };
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&upload_id, &chunk_no];
        tx.execute(
            &format!(
                "DELETE FROM {} WHERE upload_id = $1 AND chunk_no = $2",
                quote_ident(&dataset.table)
            ),
            &key,
        )
        .await?;
        tx.execute(
            "DELETE FROM rejected_rows WHERE upload_id = $1 AND chunk_no = $2",
            &key,
        )
        .await?;
    }
    tx.execute(
        "DELETE FROM chunk_pieces WHERE upload_id = ANY($1)",
        &[&uploads],
    )
    .await?;
    Ok(())
}
