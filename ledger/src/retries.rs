//! Loading a failed chunk again: retried as it is ([`retry`]) or replaced by new bytes (a re-PUT,
//! through [`crate::uploads::record_chunk`]).
//!
//! A failed chunk loaded nothing (a chunk in pieces undoes its pieces when it fails), so it may
//! go back to `stored` as long as its upload was ended by failed chunks alone (not expired,
//! aborted or undone) and its file is still kept (see [`crate::files::claim_failed_past_retention`]).
//! It goes back with its counters taken out of the upload's, its rejected rows and any plan
//! deleted, and a new `attempt`: a load of the earlier attempt that is still running records
//! nothing ([`crate::loads::finish`] and [`crate::pieces`] match the attempt they claimed). An
//! ended upload opens again, and its next end is announced again by its completion hook.

use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use ingest_contract::chunk::ChunkMessage;

use crate::completion::RETRYABLE;
use crate::hooks::HOOK_AFRESH;
use crate::states::{ChunkState, UploadState};
use crate::uploads::NewChunk;
use crate::LedgerError;

/// What a retry did.
#[derive(Debug)]
pub enum Retried {
    /// The chunk waits to be loaded again: publish this message.
    Queued(ChunkMessage),
    /// The upload has no such chunk.
    NoChunk,
    /// The chunk did not fail: there is nothing to retry.
    NotFailed(ChunkState),
    /// Its file is no longer kept: only new bytes (a re-PUT) can replace it.
    FileGone,
    /// The upload ended otherwise (expired, aborted, undone) and takes nothing more.
    Closed(UploadState),
}

/// Puts a failed chunk back to be loaded from the file it has.
pub async fn retry(
    client: &mut Client,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<Retried, LedgerError> {
    let tx = client.transaction().await?;
    let upload = tx
        .query_one(
            &format!(
                "SELECT state, {RETRYABLE}, dataset FROM uploads WHERE upload_id = $1 FOR UPDATE"
            ),
            &[&upload_id],
        )
        .await?;
    let (state, retryable) = (UploadState::parse(upload.get(0))?, upload.get::<_, bool>(1));
    if !state.is_open() && !retryable {
        return Ok(Retried::Closed(state));
    }
    let chunk = tx
        .query_opt(
            "SELECT state, file_removed FROM chunks WHERE upload_id = $1 AND chunk_no = $2
             FOR UPDATE",
            &[&upload_id, &chunk_no],
        )
        .await?;
    let Some(chunk) = chunk else {
        return Ok(Retried::NoChunk);
    };
    let chunk_state = ChunkState::parse(chunk.get(0))?;
    if chunk_state != ChunkState::Failed {
        return Ok(Retried::NotFailed(chunk_state));
    }
    if chunk.get::<_, bool>(1) {
        return Ok(Retried::FileGone);
    }
    let message = reopen(&tx, upload_id, chunk_no, upload.get(2), None).await?;
    tx.commit().await?;
    Ok(Retried::Queued(message))
}

/// Whether chunk `chunk_no` of the upload failed: what an upload that ended `failed` still takes
/// new bytes for. A cheap look before a body is read; [`replace`] decides under the locks.
pub async fn is_failed(
    client: &impl tokio_postgres::GenericClient,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<bool, LedgerError> {
    let row = client
        .query_opt(
            "SELECT 1 FROM chunks WHERE upload_id = $1 AND chunk_no = $2 AND state = 'failed'",
            &[&upload_id, &chunk_no],
        )
        .await?;
    Ok(row.is_some())
}

/// A replaced chunk: its new message, and the file of the bytes it replaced (to remove, if it is
/// still there).
#[derive(Debug)]
pub struct Replaced {
    pub message: ChunkMessage,
    pub old_path: String,
}

/// Replaces failed chunk `chunk_no`'s bytes by `stored` (whether its old file is still kept or
/// not); `None` if it is not a failed chunk. The upload's row must be locked by the caller.
pub(crate) async fn replace(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
    dataset: &str,
    stored: &NewChunk,
) -> Result<Option<Replaced>, LedgerError> {
    let old = tx
        .query_opt(
            "SELECT stored_path FROM chunks
             WHERE upload_id = $1 AND chunk_no = $2 AND state = 'failed'
             FOR UPDATE",
            &[&upload_id, &chunk_no],
        )
        .await?;
    let Some(old) = old else {
        return Ok(None);
    };
    let message = reopen(tx, upload_id, chunk_no, dataset, Some(stored)).await?;
    Ok(Some(Replaced {
        message,
        old_path: old.get(0),
    }))
}

/// Moves the (locked, failed) chunk back to `stored` as a new attempt, with new bytes if given,
/// and takes its outcome out of its upload, which opens again if it had ended.
async fn reopen(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
    dataset: &str,
    replacement: Option<&NewChunk>,
) -> Result<ChunkMessage, LedgerError> {
    let before = tx
        .query_one(
            "SELECT rows_loaded, rows_rejected, bytes FROM chunks
             WHERE upload_id = $1 AND chunk_no = $2",
            &[&upload_id, &chunk_no],
        )
        .await?;
    let (rows_loaded, rows_rejected, old_bytes): (i64, i64, i64) =
        (before.get(0), before.get(1), before.get(2));
    let (path, bytes, sha256, has_header) = match replacement {
        Some(new) => (
            Some(new.path.as_str()),
            Some(new.bytes as i64),
            Some(new.sha256.as_str()),
            Some(new.has_header),
        ),
        None => (None, None, None, None),
    };
    let replaced = i32::from(replacement.is_some());
    // received_at moves to now: the retry is the chunk's latest activity, so neither expiry nor
    // the settle rule ends its upload before an engine had its chance.
    let row = tx
        .query_one(
            "UPDATE chunks SET state = 'stored', rows_loaded = 0, rows_rejected = 0, error = NULL,
                    committed_at = NULL, announced_at = NULL, received_at = now(),
                    file_removed = false,
                    attempt = attempt + 1, retries = retries + 1 - $3,
                    replacements = replacements + $3,
                    stored_path = coalesce($4, stored_path), bytes = coalesce($5, bytes),
                    sha256 = coalesce($6, sha256), has_header = coalesce($7, has_header)
             WHERE upload_id = $1 AND chunk_no = $2
             RETURNING stored_path, bytes, sha256, has_header,
                       (extract(epoch FROM received_at) * 1000)::int8",
            &[
                &upload_id,
                &chunk_no,
                &replaced,
                &path,
                &bytes,
                &sha256,
                &has_header,
            ],
        )
        .await?;
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&upload_id, &chunk_no];
    tx.execute(
        "DELETE FROM rejected_rows WHERE upload_id = $1 AND chunk_no = $2",
        &key,
    )
    .await?;
    tx.execute(
        "DELETE FROM chunk_pieces WHERE upload_id = $1 AND chunk_no = $2",
        &key,
    )
    .await?;
    let new_bytes: i64 = row.get(1);
    tx.execute(
        &format!(
            "UPDATE uploads SET chunks_failed = chunks_failed - 1,
                rows_loaded = rows_loaded - $2, rows_rejected = rows_rejected - $3,
                bytes_received = bytes_received + $4,
                state = CASE WHEN state IN ('receiving', 'processing') THEN state
                             WHEN expected_chunks IS NOT NULL AND chunks_received >= expected_chunks
                             THEN 'processing' ELSE 'receiving' END,
                completed_at = NULL, notified_state = NULL, {HOOK_AFRESH}
         WHERE upload_id = $1"
        ),
        &[
            &upload_id,
            &rows_loaded,
            &rows_rejected,
            &(new_bytes - old_bytes),
        ],
    )
    .await?;
    Ok(ChunkMessage {
        upload_id,
        chunk_no,
        path: row.get(0),
        bytes: new_bytes as u64,
        sha256: row.get(2),
        dataset: dataset.to_owned(),
        has_header: row.get(3),
        received_at_ms: row.get(4),
    })
}
