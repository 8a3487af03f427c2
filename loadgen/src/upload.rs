//! One upload from start to finish: plan, open (or resume), send, complete, wait.
//!
//! The files are split once into numbered chunks ([`crate::split::plan_files`]). A new upload
//! declares the chunk count and byte total up front; a resumed one asks the gateway which chunks
//! it already holds and sends only the others, which works because the split is deterministic.
//! Up to `concurrency` chunks are in flight at once over the client's keep-alive pool; each is
//! read from disk by its byte range just before it is sent (never a whole file in memory) and
//! hashed off the async threads. Chunk sends are idempotent at the gateway, so retries are safe.
//! The first fatal error stops the run; the folder it reports can be resumed.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::api::{CreateUpload, ReportedState, UploadStatus};
use crate::client::{ApiClient, ApiError, Credentials};
use crate::progress::{Counters, Progress, ProgressMode, Totals};
use crate::retry::RetryPolicy;
use crate::split::{plan_files, PlannedChunk, SplitError, DEFAULT_CHUNK_SIZE};
use crate::summary::{ChunkReport, UploadSummary};

/// Everything one upload needs; [`UploadOptions::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The gateway, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    pub credentials: Credentials,
    /// Files sent as one upload, in this order.
    pub files: Vec<PathBuf>,
    /// Target chunk size in bytes.
    pub chunk_size: u64,
    /// Chunks in flight at once.
    pub concurrency: usize,
    /// Continue this upload instead of starting one.
    pub resume: Option<String>,
    pub retry: RetryPolicy,
    /// Deadline of one HTTP request.
    pub request_timeout: Duration,
    /// Pause between status polls while the engine loads.
    pub poll_interval: Duration,
    /// How long to wait for the engine before giving up (the upload goes on without us).
    pub wait_timeout: Duration,
    pub dataset: String,
    /// What the engine does with bad rows (`reject-rows`).
    pub on_error: String,
    pub progress: ProgressMode,
}

impl UploadOptions {
    /// Options with the defaults: 8 MiB chunks, 8 in flight, 200 ms polls, no progress output.
    pub fn new(url: impl Into<String>, credentials: Credentials, files: Vec<PathBuf>) -> Self {
        Self {
            url: url.into(),
            credentials,
            files,
            chunk_size: DEFAULT_CHUNK_SIZE,
            concurrency: 8,
            resume: None,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(200),
            wait_timeout: Duration::from_secs(30 * 60),
            dataset: "transactions".to_owned(),
            on_error: "reject-rows".to_owned(),
            progress: ProgressMode::Off,
        }
    }
}

/// Why an upload stopped before reaching a final state.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no files to upload")]
    NoFiles,
    #[error("the files hold no bytes to upload")]
    Empty,
    #[error("{0:?} is not an upload folder id")]
    BadFolder(String),
    #[error(transparent)]
    Split(#[from] SplitError),
    #[error("cannot read chunk {index} from {path}: {source}")]
    ReadChunk {
        index: u64,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("cannot resume upload {folder}: {detail}; give the same files and chunk size")]
    ResumeMismatch { folder: String, detail: String },
    #[error("upload {folder} is still {state} after {waited:?}; check it later with --resume")]
    WaitTimeout {
        folder: String,
        state: ReportedState,
        waited: Duration,
    },
    #[error("an upload task died: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs one upload (see the module docs) and reports how it ended.
///
/// Returns `Ok` once the upload is `done` or `failed` (check [`UploadSummary::succeeded`]);
/// errors are the cases where it could not get that far.
pub async fn run_upload(opts: UploadOptions) -> Result<UploadSummary, UploadError> {
    let started = Instant::now();
    if opts.files.is_empty() {
        return Err(UploadError::NoFiles);
    }
    let plan = {
        let (files, chunk_size) = (opts.files.clone(), opts.chunk_size);
        tokio::task::spawn_blocking(move || plan_files(&files, chunk_size)).await??
    };
    if plan.is_empty() {
        return Err(UploadError::Empty);
    }
    let chunks = plan.len() as u64;
    let bytes = plan.iter().map(|c| c.range.len).sum();
    let client = ApiClient::new(
        &opts.url,
        opts.credentials.clone(),
        opts.retry,
        opts.request_timeout,
    )?;
    let opened = open(&client, &opts, plan, bytes).await?;
    let folder = opened.folder;
    tracing::info!(folder = %folder, chunks, to_send = opened.pending.len(), "upload open");

    let totals = Totals {
        bytes: opened.pending.iter().map(|c| c.range.len).sum(),
        chunks: opened.pending.len() as u64,
    };
    let progress = Progress::start(opts.progress, totals, chunks);
    let send_started = Instant::now();
    let sent = send_chunks(
        &client,
        &folder,
        opened.pending,
        opts.concurrency,
        progress.counters(),
    )
    .await;
    let settled = match sent {
        Ok(reports) => {
            let counters = progress.counters();
            finish(
                &client,
                &folder,
                &opts,
                opened.needs_complete,
                chunks,
                counters,
            )
            .await
            .map(|(status, completed)| (reports, status, completed - send_started))
        }
        Err(err) => Err(err),
    };
    progress.finish().await;
    let (chunk_reports, status, send_time) = settled?;
    Ok(UploadSummary {
        folder,
        state: status.state,
        chunks,
        bytes,
        chunks_sent: chunk_reports.len() as u64,
        bytes_sent: chunk_reports.iter().map(|c| c.bytes).sum(),
        rows_loaded: status.rows_loaded,
        rows_rejected: status.rows_rejected,
        rejected_rows: status.rejected_rows,
        error: status.error,
        chunk_reports,
        send_time,
        total_time: started.elapsed(),
    })
}

/// An upload ready to receive chunks.
struct Opened {
    folder: String,
    pending: Vec<PlannedChunk>,
    /// Whether `complete` is still to be sent (not when a resumed upload is past receiving).
    needs_complete: bool,
}

async fn open(
    client: &ApiClient,
    opts: &UploadOptions,
    plan: Vec<PlannedChunk>,
    bytes: u64,
) -> Result<Opened, UploadError> {
    let Some(folder) = &opts.resume else {
        let created = client
            .create_upload(&CreateUpload {
                dataset: &opts.dataset,
                expected_chunks: Some(plan.len() as u64),
                total_bytes: Some(bytes),
                on_error: &opts.on_error,
            })
            .await?;
        check_folder(&created.folder)?;
        return Ok(Opened {
            folder: created.folder,
            pending: plan,
            needs_complete: true,
        });
    };
    check_folder(folder)?;
    let status = client.status(folder).await?;
    let pending = pending_after(&status, plan)?;
    let receiving = status.state.may_receive();
    Ok(Opened {
        folder: folder.clone(),
        // Past receiving the gateway takes no more chunks: all there is left is to wait.
        pending: if receiving { pending } else { Vec::new() },
        needs_complete: receiving,
    })
}

/// The chunks of `plan` the gateway does not have yet, after checking the plan fits the upload.
pub fn pending_after(
    status: &UploadStatus,
    plan: Vec<PlannedChunk>,
) -> Result<Vec<PlannedChunk>, UploadError> {
    let planned = plan.len() as u64;
    let mismatch = |detail: String| UploadError::ResumeMismatch {
        folder: status.folder.clone(),
        detail,
    };
    if let Some(expected) = status.expected_chunks {
        if expected != planned {
            return Err(mismatch(format!(
                "it expects {expected} chunks but the files make {planned}"
            )));
        }
    }
    if let Some(&beyond) = status.received_chunks.iter().find(|&&n| n >= planned) {
        return Err(mismatch(format!(
            "it holds chunk {beyond} but the files make only {planned}"
        )));
    }
    let received: HashSet<u64> = status.received_chunks.iter().copied().collect();
    Ok(plan
        .into_iter()
        .filter(|c| !received.contains(&c.index))
        .collect())
}

/// Folder ids go into URL paths: only plain ids (UUIDs and the like) are accepted.
fn check_folder(folder: &str) -> Result<(), UploadError> {
    let plain = !folder.is_empty()
        && folder.len() <= 128
        && folder
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(UploadError::BadFolder(folder.to_owned()))
    }
}

async fn send_chunks(
    client: &ApiClient,
    folder: &str,
    pending: Vec<PlannedChunk>,
    concurrency: usize,
    counters: &Counters,
) -> Result<Vec<ChunkReport>, UploadError> {
    let mut reports = Vec::new();
    let mut pending = pending.into_iter().peekable();
    // The header chunk goes alone first: it says how every chunk of the upload is read, and a
    // chunk that arrives before it waits (the engine parks it until chunk 0 is stored).
    if let Some(first) = pending.next_if(|c| c.index == 0) {
        let report = send_chunk(client, folder, first).await?;
        counters.chunk_sent(report.bytes, report.rows);
        reports.push(report);
    }
    let mut sends = stream::iter(pending)
        .map(|chunk| send_chunk(client, folder, chunk))
        .buffer_unordered(concurrency.max(1));
    // Returning early drops the stream, which cancels the chunks still in flight.
    while let Some(report) = sends.next().await {
        let report = report?;
        counters.chunk_sent(report.bytes, report.rows);
        reports.push(report);
    }
    reports.sort_by_key(|r| r.index);
    Ok(reports)
}

async fn send_chunk(
    client: &ApiClient,
    folder: &str,
    chunk: PlannedChunk,
) -> Result<ChunkReport, UploadError> {
    let (index, range) = (chunk.index, chunk.range);
    let (body, sha256) = tokio::task::spawn_blocking(move || {
        read_chunk(&chunk).map_err(|source| UploadError::ReadChunk {
            index: chunk.index,
            path: chunk.path.to_path_buf(),
            source,
        })
    })
    .await??;
    let sent = Instant::now();
    let attempts = client.put_chunk(folder, index, body, &sha256).await?;
    Ok(ChunkReport {
        index,
        bytes: range.len,
        rows: range.rows,
        attempts,
        latency: sent.elapsed(),
    })
}

/// The chunk's bytes and their SHA-256 (hex) for `X-Checksum-SHA256`. SHA-256, not MD5: the
/// gateway hashes the stored bytes with SHA-256 anyway and checks against that, and with the
/// CPU's SHA extensions it is several times faster than MD5 on both sides.
pub fn read_chunk(chunk: &PlannedChunk) -> io::Result<(Bytes, String)> {
    let mut file = File::open(chunk.path.as_path())?;
    file.seek(SeekFrom::Start(chunk.range.offset))?;
    let len = usize::try_from(chunk.range.len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?;
    let mut body = vec![0u8; len];
    // A file that shrank since it was split fails here instead of sending a short chunk.
    file.read_exact(&mut body)?;
    let sha256 = hex::encode(Sha256::digest(&body));
    Ok((Bytes::from(body), sha256))
}

/// Declares the chunk count (unless already done) and waits for a final state. Returns the
/// final status and when `complete` was acknowledged.
async fn finish(
    client: &ApiClient,
    folder: &str,
    opts: &UploadOptions,
    needs_complete: bool,
    chunks: u64,
    counters: &Counters,
) -> Result<(UploadStatus, Instant), UploadError> {
    if needs_complete {
        client.complete(folder, chunks).await?;
    }
    let completed = Instant::now();
    let status = wait_until_settled(client, folder, opts, counters).await?;
    Ok((status, completed))
}

async fn wait_until_settled(
    client: &ApiClient,
    folder: &str,
    opts: &UploadOptions,
    counters: &Counters,
) -> Result<UploadStatus, UploadError> {
    poll_status(client, folder, opts, |status| {
        counters.loading(status);
        status.state.is_settled()
    })
    .await
}

/// Polls the upload's status every `opts.poll_interval` until `done` says so, for
/// `opts.wait_timeout` at most.
pub(crate) async fn poll_status(
    client: &ApiClient,
    folder: &str,
    opts: &UploadOptions,
    mut done: impl FnMut(&UploadStatus) -> bool,
) -> Result<UploadStatus, UploadError> {
    let started = Instant::now();
    loop {
        let status = client.status(folder).await?;
        if done(&status) {
            return Ok(status);
        }
        if started.elapsed() >= opts.wait_timeout {
            return Err(UploadError::WaitTimeout {
                folder: folder.to_owned(),
                state: status.state,
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}
