//! The original system's client, as its test script (`tests/original/test_api.py`) drives the
//! API: one request at a time over one connection, a token, `POST /api/upload` without a body,
//! then each file in turn, whole, as a multipart `POST /api/upload/{folder}` (part `file`, the
//! file name a relative path like `./tests/data/dummy_<uuid>.csv`, header `X-MD5-Hash`).
//!
//! The original declares no chunk count and has no `/complete`: the gateway ends such an upload
//! `done` by its settle rule, after `INGEST_UPLOAD_SETTLE_SECS` without a new file. Waiting for
//! that would time the idle period, not the load, so [`run_original`] stops as soon as every
//! file it sent is accounted for: the status says as many chunks received as files sent, and
//! each of them loaded or failed (a chunk's rows, its ledger state and the upload's counters
//! commit in one transaction, so then every row is committed).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::time::Instant;

use crate::api::UploadStatus;
use crate::client::{ApiClient, Connections};
use crate::upload::{poll_status, UploadError, UploadOptions};

/// What an original-style upload achieved.
#[derive(Debug, Clone)]
pub struct OriginalSummary {
    pub folder: String,
    /// Files sent, each one chunk.
    pub files: u64,
    pub bytes: u64,
    /// The status that showed every file loaded or failed.
    pub status: UploadStatus,
    /// From the token request to the last file's answer.
    pub send_time: Duration,
    /// From the token request to the status that showed every file accounted for.
    pub total_time: Duration,
}

/// Sends `opts.files` the original's way and waits until the engine has loaded them (see the
/// module docs). Of the options, the URL, credentials, retry policy, request timeout, poll
/// interval and wait timeout apply; chunk size, concurrency, resume, dataset and `on_error` do
/// not (the original sent whole files, one at a time, with the gateway's defaults).
pub async fn run_original(opts: UploadOptions) -> Result<OriginalSummary, UploadError> {
    let started = Instant::now();
    if opts.files.is_empty() {
        return Err(UploadError::NoFiles);
    }
    let client = ApiClient::with_connections(
        &opts.url,
        opts.credentials.clone(),
        opts.retry,
        opts.request_timeout,
        Connections::One,
    )?;
    let folder = client.create_bare_upload().await?.folder;
    tracing::info!(folder = %folder, files = opts.files.len(), "original client: upload open");
    let mut bytes = 0;
    for (index, path) in opts.files.iter().enumerate() {
        let (body, md5) = read_file(index as u64, path.clone()).await?;
        bytes += body.len() as u64;
        let name = format!("./tests/data/dummy_{}.csv", uuid::Uuid::new_v4());
        let (chunk, _attempts) = client.post_file(&folder, &name, body, &md5).await?;
        tracing::debug!(file = %path.display(), chunk, "original client: file stored");
    }
    let send_time = started.elapsed();
    let files = opts.files.len() as u64;
    let status = wait_until_loaded(&client, &folder, files, &opts).await?;
    Ok(OriginalSummary {
        folder,
        files,
        bytes,
        status,
        send_time,
        total_time: started.elapsed(),
    })
}

/// The whole file and its MD5 (hex), read and hashed off the async threads, as the original
/// read each file whole before sending it.
async fn read_file(index: u64, path: PathBuf) -> Result<(Bytes, String), UploadError> {
    tokio::task::spawn_blocking(move || match std::fs::read(&path) {
        Ok(body) => {
            let md5 = hex::encode(Md5::digest(&body));
            Ok((Bytes::from(body), md5))
        }
        Err(source) => Err(UploadError::ReadChunk {
            index,
            path,
            source,
        }),
    })
    .await?
}

/// Whether `status` shows `files` files received and none of them still waiting for an engine.
pub fn all_accounted_for(status: &UploadStatus, files: u64) -> bool {
    status.chunks_received >= files
        && status.chunks_loaded + status.chunks_failed >= status.chunks_received
}

async fn wait_until_loaded(
    client: &ApiClient,
    folder: &str,
    files: u64,
    opts: &UploadOptions,
) -> Result<UploadStatus, UploadError> {
    poll_status(client, folder, opts, |status| {
        all_accounted_for(status, files)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(received: u64, loaded: u64, failed: u64) -> UploadStatus {
        serde_json::from_value(serde_json::json!({
            "folder": "f", "state": "receiving", "chunks_received": received,
            "chunks_loaded": loaded, "chunks_failed": failed,
        }))
        .expect("a status")
    }

    #[test]
    fn every_file_sent_must_be_received_and_no_longer_pending() {
        assert!(!all_accounted_for(&status(5, 5, 0), 6), "one not received");
        assert!(!all_accounted_for(&status(6, 5, 0), 6), "one still pending");
        assert!(all_accounted_for(&status(6, 6, 0), 6));
        assert!(
            all_accounted_for(&status(6, 5, 1), 6),
            "failed counts as ended"
        );
    }
}
