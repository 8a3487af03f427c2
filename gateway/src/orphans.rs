//! What killed or cancelled requests leave behind, found and dealt with periodically.
//!
//! A chunk is written to `<upload>/.<nonce>.part`, renamed to `<upload>/<nonce>.csv`, recorded
//! in the ledger, then announced (published, and `announced_at` set once the broker confirmed).
//! A gateway killed between those steps (or a request dropped there) leaves:
//!
//! - a temporary file: removed once untouched for twice the body frame deadline, since a live
//!   writer gets a frame, or fails and removes its file, within one deadline (removing one being
//!   renamed right now only fails that request, which the client retries);
//! - a chunk file no live ledger row names: removed once ten frame deadlines old (the rename
//!   and the ledger row are milliseconds apart unless PostgreSQL stalls that long); this also
//!   takes a file whose removal failed after the ledger let go of it;
//! - a stored chunk never announced: no engine would ever load it, and a resuming client does
//!   not send it again since the gateway has it. It is published once it is twice the publish
//!   deadline old; a live request that is that slow gets its message sent twice, which the
//!   engine's ledger makes harmless.
//!
//! Every gateway sweeps: a file already gone is not an error, a message sent twice is harmless.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use ingest_ledger::files::{self, FileUse};
use ingest_runtime::chunk_store::ChunkStore;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use crate::app::AppState;
use crate::publish::{PublishError, Publisher};
use crate::sweeps;

/// How long an object of an existing upload may wait to be recorded before the bucket sweep
/// takes it for left behind.
const PENDING_AT_MOST: Duration = Duration::from_secs(3600);

/// How many unannounced chunks one sweep publishes.
const ANNOUNCE_BATCH: i64 = 500;

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    #[error(transparent)]
    Ledger(#[from] ingest_ledger::LedgerError),
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("listing the upload directory: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] ingest_runtime::chunk_store::ChunkStoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Starts a running gateway's periodic sweep; it stops when the handle is dropped.
pub fn spawn(state: &AppState) -> AbortOnDropHandle<()> {
    let orphans = Orphans {
        pool: state.pool.clone(),
        publisher: state.publisher.clone(),
        chunks: Arc::clone(&state.chunks),
        frame_timeout: state.settings.body_frame_timeout,
        publish_timeout: state.settings.publish_timeout,
    };
    let orphans = Arc::new(orphans);
    let interval = orphans.frame_timeout.max(Duration::from_millis(100));
    sweeps::every(interval, move || {
        let orphans = orphans.clone();
        async move {
            match orphans.announce().await {
                Ok(0) => {}
                Ok(chunks) => tracing::info!(chunks, "announced chunks a killed request had not"),
                Err(err) => tracing::warn!(error = %err, "announcing stored chunks failed"),
            }
            match orphans.sweep().await {
                Ok(0) => {}
                Ok(files) => tracing::info!(files, "removed files of killed requests"),
                Err(err) => tracing::warn!(error = %err, "orphan file sweep failed"),
            }
        }
    })
}

/// Finds what killed requests left behind.
pub struct Orphans {
    pub pool: Pool,
    pub publisher: Arc<Publisher>,
    /// Its spool is walked for temporary files (and, a directory store, chunk files); a
    /// bucket is listed.
    pub chunks: Arc<ChunkStore>,
    pub frame_timeout: Duration,
    pub publish_timeout: Duration,
}

/// An old file in an upload's directory.
struct Candidate {
    upload_id: Uuid,
    path: PathBuf,
    /// `<upload>/<name>`, as the ledger's `stored_path` names chunk files.
    relative: String,
    temporary: bool,
}

impl Orphans {
    /// Publishes stored chunks whose message was never confirmed; returns how many.
    pub async fn announce(&self) -> Result<u64, OrphanError> {
        let db = self.pool.get().await?;
        let messages =
            ingest_ledger::files::unannounced(&db, self.publish_timeout * 2, ANNOUNCE_BATCH)
                .await?;
        for message in &messages {
            // The broker being down stops the sweep; the next one tries again.
            self.publisher.publish(message).await?;
            ingest_ledger::files::mark_announced(&db, message.upload_id, message.chunk_no).await?;
        }
        Ok(messages.len() as u64)
    }

    /// One sweep of the spool directory and the bucket; returns how many files it removed.
    pub async fn sweep(&self) -> Result<u64, OrphanError> {
        let (dir, part_age, chunk_age) = (
            self.chunks.spool().to_owned(),
            self.frame_timeout * 2,
            self.frame_timeout * 10,
        );
        let candidates = tokio::task::spawn_blocking(move || old_files(&dir, part_age, chunk_age))
            .await
            .map_err(std::io::Error::other)??;
        let mut removed = self.sweep_bucket(chunk_age).await?;
        let mut chunks: Vec<&Candidate> = Vec::new();
        for candidate in &candidates {
            if candidate.temporary {
                removed += u64::from(remove(&candidate.path).await);
            } else {
                chunks.push(candidate);
            }
        }
        if chunks.is_empty() {
            return Ok(removed);
        }
        let db = self.pool.get().await?;
        for candidate in chunks {
            // A file no live chunk row names: never recorded (a gateway stopped between
            // storing and recording it), or its removal failed after the ledger let go of it.
            let used = files::file_use(&db, candidate.upload_id, &candidate.relative).await?;
            if used != FileUse::Wanted {
                removed += u64::from(remove(&candidate.path).await);
            }
        }
        Ok(removed)
    }

    /// Removes the bucket's objects nothing wants: those of no upload once older than
    /// `chunk_age` (a gateway killed between storing a chunk and recording it), those of an
    /// existing upload that no live chunk row names once older than [`PENDING_AT_MOST`] (a
    /// removal that failed after the ledger let go of the file). S3 dates a multipart object
    /// from the start of its upload, so a slow upload can look old the moment it lands: only
    /// objects of uploads that do not exist are taken at the short age.
    async fn sweep_bucket(&self, chunk_age: Duration) -> Result<u64, OrphanError> {
        let Some(listed) = self.chunks.list().await else {
            return Ok(0);
        };
        let now = SystemTime::now();
        let old: Vec<_> = listed?
            .into_iter()
            .filter(|file| now.duration_since(file.modified).unwrap_or_default() > chunk_age)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let db = self.pool.get().await?;
        let mut removed = 0;
        for file in old {
            let upload_id = file
                .relative
                .split('/')
                .next()
                .and_then(|u| Uuid::parse_str(u).ok());
            let Some(upload_id) = upload_id else {
                continue;
            };
            let age = now.duration_since(file.modified).unwrap_or_default();
            let unwanted = match files::file_use(&db, upload_id, &file.relative).await? {
                FileUse::Wanted => false,
                FileUse::UploadExists => age > PENDING_AT_MOST,
                FileUse::Unknown => true,
            };
            if unwanted {
                removed +=
                    u64::from(crate::expiry::remove_chunk(&self.chunks, &file.relative).await);
            }
        }
        Ok(removed)
    }
}

/// Temporary files older than `part_age` and chunk files older than `chunk_age`.
fn old_files(
    upload_dir: &Path,
    part_age: Duration,
    chunk_age: Duration,
) -> std::io::Result<Vec<Candidate>> {
    let mut found = Vec::new();
    let uploads = match std::fs::read_dir(upload_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    let now = SystemTime::now();
    for upload in uploads.flatten() {
        let name = upload.file_name();
        let Some(upload_id) = name.to_str().and_then(|n| Uuid::parse_str(n).ok()) else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(upload.path()) else {
            continue;
        };
        for file in files.flatten() {
            let file_name = file.file_name().to_string_lossy().into_owned();
            let temporary = file_name.starts_with('.') && file_name.ends_with(".part");
            let chunk = !file_name.starts_with('.') && file_name.ends_with(".csv");
            let age = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .unwrap_or_default();
            if (temporary && age > part_age) || (chunk && age > chunk_age) {
                found.push(Candidate {
                    upload_id,
                    path: file.path(),
                    relative: format!("{upload_id}/{file_name}"),
                    temporary,
                });
            }
        }
    }
    Ok(found)
}

/// Removes a file, then its directory if that was the last file; true if the file was there.
async fn remove(path: &Path) -> bool {
    let removed = match tokio::fs::remove_file(path).await {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => {
            tracing::warn!(error = %err, path = %path.display(), "could not remove an orphan file");
            false
        }
    };
    if let Some(dir) = path.parent() {
        // Fails harmlessly while the upload still has files.
        let _ = tokio::fs::remove_dir(dir).await;
    }
    removed
}
