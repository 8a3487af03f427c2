//! Expiry of stale uploads (the rule and its statements are [`ingest_ledger::completion::expire`]): an upload still `receiving` with no activity (its creation or its
//! last chunk) for `INGEST_UPLOAD_TTL_SECS` is failed with error `expired` — unless it lost
//! nothing: an upload without a declared count whose received chunks are all loaded is settled
//! `done` instead ([`crate::settle`]), whatever the settle period. What expires is an upload
//! that received no chunk at all, one still missing declared chunks, or one whose chunks still
//! wait for an engine after the whole TTL.
//!
//! Its chunks that no engine loaded yet are failed in the same transaction (so an engine that
//! gets their messages later skips them), then their files are removed, with any temporary
//! `.part` file a killed gateway left in the upload's directory. The ledger changes before any
//! file goes, and failed chunks get a `committed_at`: files a gateway killed in between leaves
//! behind are found by the engine's cleanup sweep, which goes by the ledger.
//!
//! A failed chunk's file is kept so the chunk can be retried
//! (`POST /api/upload/{folder}/chunks/{n}/retry`) for `INGEST_UPLOAD_TTL_SECS` after it failed,
//! or until its upload can no longer be retried (expired, aborted, undone); the sweep then
//! removes it ([`ingest_ledger::files::claim_failed_past_retention`]).
//!
//! Every gateway runs the sweep; `FOR UPDATE SKIP LOCKED` lets several share it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use ingest_runtime::chunk_store::ChunkStore;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use crate::app::AppState;
use crate::sweeps::{self, SweepError};

/// How many uploads one sweep transaction expires.
const BATCH: i64 = 1000;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Uploads failed as expired.
    pub uploads: u64,
    /// Chunks of theirs that were never loaded, failed with them.
    pub chunks: u64,
    /// Files removed (chunk files and temporary files).
    pub files: u64,
}

/// Starts a running gateway's periodic sweep; it stops when the handle is dropped.
pub fn spawn(state: &AppState) -> AbortOnDropHandle<()> {
    Expiry::new(
        state.pool.clone(),
        Arc::clone(&state.chunks),
        Duration::from_secs(state.settings.upload_ttl_secs),
    )
    .run_periodically()
}

/// Finds and expires stale uploads.
#[derive(Clone)]
pub struct Expiry {
    pool: Pool,
    chunks: Arc<ChunkStore>,
    ttl: Duration,
}

impl Expiry {
    pub fn new(pool: Pool, chunks: Arc<ChunkStore>, ttl: Duration) -> Self {
        Self { pool, chunks, ttl }
    }

    /// How often the periodic sweep runs: a tenth of the lifetime, between 0.2 s and 5 min.
    pub fn interval(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(300))
    }

    /// Runs [`Self::sweep`] every [`Self::interval`] until the returned handle is dropped.
    pub fn run_periodically(self) -> AbortOnDropHandle<()> {
        sweeps::every(self.interval(), move || {
            let expiry = self.clone();
            async move {
                match expiry.sweep().await {
                    Ok(done) if done.uploads > 0 => tracing::info!(
                        uploads = done.uploads,
                        chunks = done.chunks,
                        files = done.files,
                        "expired stale uploads"
                    ),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "upload expiry sweep failed"),
                }
            }
        })
    }

    /// Expires every stale upload, a batch per transaction, and removes their unloaded files.
    pub async fn sweep(&self) -> Result<Expired, SweepError> {
        let mut total = Expired::default();
        loop {
            let batch = self.expire_batch().await?;
            total.uploads += batch.uploads;
            total.chunks += batch.chunks;
            total.files += batch.files;
            if batch.uploads < BATCH as u64 {
                metrics::counter!(crate::metrics::UPLOADS_EXPIRED).increment(total.uploads);
                return Ok(total);
            }
        }
    }

    async fn expire_batch(&self) -> Result<Expired, SweepError> {
        let mut db = self.pool.get().await?;
        crate::settle::settle_idle(&db, self.ttl).await?;
        let expired = ingest_ledger::completion::expire(&mut db, self.ttl, BATCH).await?;
        let mut files = 0;
        for chunk in &expired.chunks {
            if remove_chunk(&self.chunks, &chunk.stored_path).await {
                files += 1;
            }
            // If this fails, the engine's sweep removes the file again (harmlessly) later.
            let _ = ingest_ledger::files::mark_removed(&db, chunk.upload_id, chunk.chunk_no).await;
        }
        for upload_id in &expired.uploads {
            files += remove_temporary_files(&self.chunks, *upload_id).await;
        }
        // Failed chunks' files, kept for a retry until then.
        // Marked removed before they go (see the ledger's function): a retry never loses its file.
        let kept = ingest_ledger::files::claim_failed_past_retention(&db, self.ttl, BATCH).await?;
        for chunk in &kept {
            if remove_chunk(&self.chunks, &chunk.stored_path).await {
                files += 1;
            }
        }
        Ok(Expired {
            uploads: expired.uploads.len() as u64,
            chunks: expired.chunks.len() as u64,
            files,
        })
    }
}

/// Removes a stored chunk; true if it was there. A failure is logged; the ledger may already
/// have let go of the file, and then the gateways' orphan sweep (`orphans.rs`, directory or
/// bucket) removes it later.
pub(crate) async fn remove_chunk(chunks: &ChunkStore, relative: &str) -> bool {
    match chunks.remove(relative).await {
        Ok(removed) => removed,
        Err(err) => {
            tracing::warn!(error = %err, chunk = relative, "could not remove a chunk file");
            false
        }
    }
}

/// Removes a local file; true if it was there.
pub(crate) async fn remove(path: &Path) -> bool {
    match tokio::fs::remove_file(path).await {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => {
            tracing::warn!(error = %err, path = %path.display(), "could not remove an expired chunk file");
            false
        }
    }
}

/// Removes the `.part` files of an expired upload's spool directory, then the directory if
/// empty.
pub(crate) async fn remove_temporary_files(chunks: &ChunkStore, upload_id: Uuid) -> u64 {
    let dir = chunks.spool().join(upload_id.to_string());
    let dir = dir.as_path();
    let mut removed = 0;
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".part") && remove(&entry.path()).await {
                removed += 1;
            }
        }
    }
    // Fails harmlessly while loaded chunk files still wait for the engine to remove them.
    let _ = tokio::fs::remove_dir(dir).await;
    removed
}
