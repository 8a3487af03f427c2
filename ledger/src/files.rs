//! Chunk files as the ledger sees them: announced to the engines or not, still on disk or
//! removed. The file operations themselves belong to the services; the ledger is what their
//! sweeps go by (never by listing a shared directory alone).

use std::time::Duration;

use tokio_postgres::{Client, Row};
use uuid::Uuid;

use ingest_contract::chunk::ChunkMessage;

use crate::states::Partition;
use crate::LedgerError;

/// A chunk's file, by the ledger's name for it (relative to the upload directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFile {
    pub upload_id: Uuid,
    pub chunk_no: i32,
    pub stored_path: String,
}

impl ChunkFile {
    pub(crate) fn from_row(row: &Row) -> Self {
        Self {
            upload_id: row.get(0),
            chunk_no: row.get(1),
            stored_path: row.get(2),
        }
    }
}

/// Records that the broker confirmed the chunk's message (the first confirm's time stays);
/// returns whether the chunk is still recorded: a request whose publish failed may have taken
/// it back meanwhile ([`crate::uploads::forget_chunk`]).
pub async fn mark_announced(
    client: &Client,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<bool, LedgerError> {
    let marked = client
        .execute(
            "UPDATE chunks SET announced_at = coalesce(announced_at, now())
             WHERE upload_id = $1 AND chunk_no = $2",
            &[&upload_id, &chunk_no],
        )
        .await?;
    Ok(marked == 1)
}

/// Marks chunks `chunk_nos` of an upload as not announced, so the announce sweep publishes
/// them: their message (published again after the upload's header was set) was not confirmed.
pub async fn announce_later(
    client: &Client,
    upload_id: Uuid,
    chunk_nos: &[i32],
) -> Result<(), LedgerError> {
    client
        .execute(
            "UPDATE chunks SET announced_at = NULL
             WHERE upload_id = $1 AND chunk_no = ANY($2) AND state = 'stored'",
            &[&upload_id, &chunk_nos],
        )
        .await?;
    Ok(())
}

/// Stored chunks whose message was never confirmed, received more than `older_than` ago, oldest
/// first: the messages to publish again.
pub async fn unannounced(
    client: &Client,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<ChunkMessage>, LedgerError> {
    messages(
        client,
        "c.state = 'stored' AND c.announced_at IS NULL
           AND c.received_at < now() - make_interval(secs => $1)
         ORDER BY c.received_at LIMIT $2",
        &[&older_than.as_secs_f64(), &limit],
    )
    .await
}

/// The stored chunks of one upload, other than `except`, without a header of their own: those
/// that may have waited for the upload's header (the engine parks them), to publish again once
/// a chunk set it ([`crate::uploads::record_chunk`]). Whether their first message was confirmed
/// does not matter: a confirm that lands after the header was set marks a message the engine
/// parked, and would otherwise hide the chunk from this and from the announce sweep. A chunk
/// that did not wait is only delivered twice, which the ledger makes harmless.
pub async fn may_have_waited(
    client: &Client,
    upload_id: Uuid,
    except: i32,
) -> Result<Vec<ChunkMessage>, LedgerError> {
    messages(
        client,
        "c.upload_id = $1 AND c.chunk_no <> $2 AND c.state = 'stored' AND NOT c.has_header
         ORDER BY c.chunk_no",
        &[&upload_id, &except],
    )
    .await
}

/// The chunk messages of the chunks `filter` (a WHERE clause on [`MESSAGES`], with any ORDER
/// BY and LIMIT after it; fixed text, so no value is ever pasted into the SQL) selects.
async fn messages(
    client: &Client,
    filter: &'static str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<ChunkMessage>, LedgerError> {
    let rows = client
        .query(&format!("{MESSAGES} WHERE {filter}"), params)
        .await?;
    Ok(rows.iter().map(message_of).collect())
}

/// The chunk messages' columns, from `chunks c` and its upload `u`, read by [`message_of`].
const MESSAGES: &str = "SELECT c.upload_id, c.chunk_no, c.stored_path, c.bytes, c.sha256,
    c.has_header, u.dataset, (extract(epoch FROM c.received_at) * 1000)::int8
    FROM chunks c JOIN uploads u ON u.upload_id = c.upload_id";

/// A chunk message from the columns of [`MESSAGES`].
fn message_of(row: &tokio_postgres::Row) -> ChunkMessage {
    ChunkMessage {
        upload_id: row.get(0),
        chunk_no: row.get(1),
        path: row.get(2),
        bytes: row.get::<_, i64>(3) as u64,
        sha256: row.get(4),
        has_header: row.get(5),
        dataset: row.get(6),
        received_at_ms: row.get(7),
    }
}

/// Marks every waiting chunk of `partition` as not announced, so the gateways' announce sweep
/// publishes each again ([`unannounced`]): what an engine does when messages of its stream aged
/// out before it read them. Returns how many. A chunk whose message is still in the stream is
/// then delivered twice, which the ledger makes harmless.
pub async fn announce_again(client: &Client, partition: Partition) -> Result<u64, LedgerError> {
    Ok(client
        .execute(
            "UPDATE chunks SET announced_at = NULL
             WHERE partition = $1 AND state = 'stored' AND announced_at IS NOT NULL",
            &[&partition.0],
        )
        .await?)
}

/// What the ledger says of a file a store holds, for the gateways' orphan sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileUse {
    /// A chunk row names it and it is not marked removed: loading, or kept for a retry.
    Wanted,
    /// No live chunk row names it, but its upload exists: a gateway may still be between
    /// storing it and recording it (or its removal failed after the ledger let go of it).
    UploadExists,
    /// Neither: nothing will ever want it.
    Unknown,
}

/// [`FileUse`] of the file `stored_path` of upload `upload_id`.
pub async fn file_use(
    client: &Client,
    upload_id: Uuid,
    stored_path: &str,
) -> Result<FileUse, LedgerError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM chunks
                             WHERE upload_id = $1 AND stored_path = $2 AND NOT file_removed),
                    EXISTS (SELECT 1 FROM uploads WHERE upload_id = $1)",
            &[&upload_id, &stored_path],
        )
        .await?;
    Ok(match (row.get(0), row.get(1)) {
        (true, _) => FileUse::Wanted,
        (false, true) => FileUse::UploadExists,
        (false, false) => FileUse::Unknown,
    })
}

/// Records that a committed chunk's file is gone.
pub async fn mark_removed(
    client: &Client,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<(), LedgerError> {
    client
        .execute(
            "UPDATE chunks SET file_removed = true WHERE upload_id = $1 AND chunk_no = $2",
            &[&upload_id, &chunk_no],
        )
        .await?;
    Ok(())
}

/// Files of `partitions`' chunks loaded more than a few seconds ago whose removal was
/// interrupted (a process killed between its commit and [`mark_removed`]). A failed chunk's file
/// is kept for a retry ([`crate::retries`]) and goes by [`claim_failed_past_retention`].
pub async fn left_behind(
    client: &Client,
    partitions: &[Partition],
    limit: i64,
) -> Result<Vec<ChunkFile>, LedgerError> {
    let partitions: Vec<i32> = partitions.iter().map(|p| p.0).collect();
    let rows = client
        .query(
            "SELECT upload_id, chunk_no, stored_path FROM chunks
             WHERE state = 'loaded' AND NOT file_removed AND partition = ANY($1)
               AND committed_at < now() - interval '5 seconds'
             LIMIT $2",
            &[&partitions, &limit],
        )
        .await?;
    Ok(rows.iter().map(ChunkFile::from_row).collect())
}

/// Files of failed chunks kept for a retry that failed more than `retention` ago, or whose
/// upload can no longer be retried (expired, aborted or undone): marked removed here, in the
/// same statement that finds them, and returned for the caller to delete. Marking first is what
/// keeps a retry safe: one that locked the chunk first makes this skip it (it is `stored` again),
/// and one that comes after finds it removed (409, "file no longer kept"), so a file is never
/// deleted under a chunk queued to load from it.
pub async fn claim_failed_past_retention(
    client: &Client,
    retention: Duration,
    limit: i64,
) -> Result<Vec<ChunkFile>, LedgerError> {
    let rows = client
        .query(
            "UPDATE chunks SET file_removed = true
             WHERE (upload_id, chunk_no) IN (
                 SELECT c.upload_id, c.chunk_no FROM chunks c
                 JOIN uploads u ON u.upload_id = c.upload_id
                 WHERE c.state = 'failed' AND NOT c.file_removed
                   AND (c.committed_at < now() - make_interval(secs => $1)
                        OR ((u.state IN ('aborted', 'undone')
                             OR (u.state = 'failed' AND u.error IS NOT NULL))
                            AND c.committed_at < now() - interval '5 seconds'))
                 ORDER BY c.committed_at LIMIT $2
                 FOR UPDATE OF c SKIP LOCKED)
               AND state = 'failed' AND NOT file_removed
             RETURNING upload_id, chunk_no, stored_path",
            &[&retention.as_secs_f64(), &limit],
        )
        .await?;
    Ok(rows.iter().map(ChunkFile::from_row).collect())
}
