//! Chunk files after their load: removed (or archived), and leftovers swept.
//!
//! A file is removed right after its chunk is loaded, then marked `file_removed`. A process
//! killed between the two leaves a loaded chunk whose file is still on disk; [`sweep`] finds
//! those by the ledger (never by listing the shared directory) and removes them. A failed chunk's
//! file is kept for a retry; the gateways' expiry sweep removes it later.

use std::path::Path;

use tokio_postgres::Client;
use uuid::Uuid;

use ingest_ledger::{files, LedgerError, Partition};
use ingest_runtime::chunk_store::ChunkStore;

/// Where loaded chunk files go.
pub struct ChunkFiles<'a> {
    pub chunks: &'a ChunkStore,
    pub archive_dir: Option<&'a Path>,
}

impl ChunkFiles<'_> {
    /// Removes or archives one committed chunk's file and records that it is gone.
    pub async fn remove(&self, client: &Client, upload_id: Uuid, chunk_no: i32, relative: &str) {
        let result = match self.archive_dir {
            Some(archive) => {
                let name = format!("{upload_id}-{chunk_no:08}.csv");
                self.chunks.archive(relative, archive, &name).await
            }
            None => self.chunks.remove(relative).await,
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, chunk = relative, "could not remove chunk file");
            return;
        }
        if let Err(err) = files::mark_removed(client, upload_id, chunk_no).await {
            // The sweep will find it again and retry; removing twice is harmless.
            tracing::debug!(error = %err, "could not mark a chunk file removed");
        }
    }
}

/// Removes the files of chunks committed a while ago whose removal was interrupted.
pub async fn sweep(
    client: &Client,
    chunks: &ChunkStore,
    archive_dir: Option<&Path>,
    partitions: &[i32],
) -> Result<usize, LedgerError> {
    if partitions.is_empty() {
        return Ok(0);
    }
    let partitions: Vec<Partition> = partitions.iter().map(|&p| Partition(p)).collect();
    let rows = files::left_behind(client, &partitions, 500).await?;
    let chunk_files = ChunkFiles {
        chunks,
        archive_dir,
    };
    for row in &rows {
        chunk_files
            .remove(client, row.upload_id, row.chunk_no, &row.stored_path)
            .await;
    }
    if !rows.is_empty() {
        tracing::info!(
            files = rows.len(),
            "swept chunk files left by an interrupted engine"
        );
    }
    Ok(rows.len())
}
