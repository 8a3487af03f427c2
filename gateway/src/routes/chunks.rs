//! Receiving chunks: `PUT /api/upload/{folder}/chunks/{n}` (raw body) and the original's
//! multipart `POST /api/upload/{folder}`.
//!
//! Both check the declared size, type and checksums before the body is polled, stream the body
//! to a temporary file ([`crate::store`]), rename it into place, record it in the ledger, publish
//! its message, and answer 2xx only after the broker confirmed. Any refusal leaves nothing on
//! disk, in the ledger or in the stream.
//!
//! A body must keep coming (`BodyTimer`): each piece within `INGEST_BODY_FRAME_TIMEOUT_MS`
//! of the last, and all of it within `INGEST_BODY_DEADLINE_SECS`, or the answer is 408.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use ingest_contract::chunk::ChunkMessage;
use ingest_runtime::chunk_store::ChunkStoreError;

use crate::app::{AppState, HttpResponse};
use crate::errors::{json_response, ApiError, ErrorBody};
use crate::settings::GatewaySettings;
use crate::store::workbook::{self, WorkbookError, WorkbookSink};
use crate::store::{BodyEncoding, ChunkRules, ChunkSink, StoreError, StoredChunk};
use ingest_ledger::retries::{self, Retried};
use ingest_ledger::uploads::{self, NewChunk, Recorded, Upload};
use ingest_rows::dataset::Dataset;

/// A chunk the gateway holds, as its answers name it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldChunk {
    pub folder: Uuid,
    pub chunk: i32,
    pub bytes: u64,
    /// Hex SHA-256 of the bytes as stored (after any Content-Encoding is undone).
    pub sha256: String,
}

impl HeldChunk {
    fn of(message: ChunkMessage) -> Self {
        Self {
            folder: message.upload_id,
            chunk: message.chunk_no,
            bytes: message.bytes,
            sha256: message.sha256,
        }
    }
}

/// A stored chunk.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkStored {
    #[schema(value_type = String, example = "Chunk stored")]
    pub message: &'static str,
    #[serde(flatten)]
    pub held: HeldChunk,
    /// The same bytes were stored before under this number.
    pub duplicate: bool,
}

/// Send a chunk (raw CSV).
///
/// Chunk numbers start at 0; the first chunk may carry the header line. The body may be gzip or
/// zstd (`Content-Encoding`); `Content-MD5`, `X-MD5-Hash` or `X-Checksum-SHA256` are verified.
/// 200 only once the chunk is on disk (fsync'd) and queued. The same number with the same
/// bytes answers 200 again (`duplicate`); different bytes 409, except for a chunk that failed:
/// new bytes replace it, also on an upload that ended `failed` because of it.
#[utoipa::path(put, path = "/api/upload/{folder}/chunks/{n}", tag = "upload", operation_id = "putChunk",
    security(("bearer" = [])),
    params(("folder" = Uuid, Path, description = "The upload"),
           ("n" = i32, Path, description = "Chunk number, 0 to 999999"),
           ("X-Checksum-SHA256" = Option<String>, Header, description = "Hex SHA-256 of the chunk"),
           ("Content-MD5" = Option<String>, Header, description = "Base64 MD5 of the chunk"),
           ("X-MD5-Hash" = Option<String>, Header, description = "Hex MD5 of the chunk"),
           ("Content-Encoding" = Option<String>, Header, description = "gzip or zstd")),
    request_body(content = Vec<u8>, content_type = "text/csv", description = "The chunk's CSV bytes"),
    responses(
        (status = 200, description = "Stored and queued", body = ChunkStored),
        (status = 400, description = "Bad checksum or number", body = ErrorBody),
        (status = 409, description = "Different bytes under this number, or the upload takes no more", body = ErrorBody),
        (status = 413, description = "Larger than INGEST_MAX_CHUNK_BYTES", body = ErrorBody),
        (status = 415, description = "Not CSV text", body = ErrorBody),
        (status = 503, description = "Broker unavailable, or too many chunks being received at once; nothing stored", body = ErrorBody)))]
pub async fn receive_chunk(
    state: &AppState,
    upload: &Upload,
    chunk_no: i32,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    accepting(upload, Some(chunk_no))?;
    if !upload.accepts_chunks() {
        // An upload ended by failed chunks: only those take new bytes; say so before the body.
        let db = state.pool.get().await?;
        if !retries::is_failed(&**db, upload.upload_id, chunk_no).await? {
            return Err(crate::routes::uploads::closed(upload.state));
        }
    }
    let headers = request.headers();
    check_declared_length(headers, state.settings.max_chunk_bytes)?;
    let kind = check_content_type(headers)?;
    let rules = ChunkRules {
        encoding: content_encoding(headers)?,
        max_bytes: state.settings.max_chunk_bytes,
        dataset: dataset_of(state, upload)?,
        require_header: false,
        expect_md5: expected_md5(headers)?,
        expect_sha256: expected_sha256(headers)?,
    };
    let started = Instant::now();
    let mut body = request.into_body();
    let timer = BodyTimer::start(&state.settings);
    if kind == BodyKind::Workbook && rules.encoding != BodyEncoding::Identity {
        return Err(ApiError::BadRequest(
            "an XLSX workbook is compressed already; send it without Content-Encoding".into(),
        ));
    }
    let _arriving = body_arriving(state, upload);
    let sink = BodySink::start(state, kind, upload_dir(state, upload), rules).await?;
    let stored = pump(&mut body, sink, timer).await?;
    let (message, duplicate) = commit(state, upload, Some(chunk_no), stored).await?;
    metrics::histogram!(crate::metrics::CHUNK_STORE).record(started.elapsed().as_secs_f64());
    let stored = ChunkStored {
        message: "Chunk stored",
        held: HeldChunk::of(message),
        duplicate,
    };
    Ok(json_response(StatusCode::OK, &stored))
}

/// A file received through the original's multipart route.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileUploaded {
    #[schema(value_type = String, example = "File uploaded successfully")]
    pub message: &'static str,
    pub folder: Uuid,
    /// Its chunk number: files are numbered in arrival order.
    pub chunk: i32,
    pub bytes: u64,
    pub duplicate: bool,
}

/// The form of the original's multipart route.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Read by multer field by field; this type only documents the form.
pub struct FileForm {
    /// The CSV file (with its header line).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Send a file (the original's multipart upload).
///
/// One `file` field holding a CSV with its header line, numbered in arrival order;
/// `X-MD5-Hash` (hex) is verified. 200 only once it is on disk and queued.
#[utoipa::path(post, path = "/api/upload/{folder}", tag = "upload", operation_id = "uploadFile",
    security(("bearer" = [])),
    params(("folder" = Uuid, Path, description = "The upload"),
           ("X-MD5-Hash" = Option<String>, Header, description = "Hex MD5 of the file")),
    request_body(content = FileForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored and queued", body = FileUploaded),
        (status = 400, description = "Bad checksum, extension or content", body = ErrorBody),
        (status = 404, description = "No such upload of this client", body = ErrorBody),
        (status = 409, description = "The upload takes no more files: it ended, or has all its declared chunks", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Not CSV", body = ErrorBody),
        (status = 422, description = "No `file` field", body = ErrorBody),
        (status = 503, description = "Broker unavailable, or too many chunks being received at once; nothing stored", body = ErrorBody)))]
pub async fn receive_multipart(
    state: &AppState,
    upload: &Upload,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    accepting(upload, None)?;
    let headers = request.headers();
    // Multipart framing adds a little to the file itself.
    check_declared_length(headers, state.settings.max_chunk_bytes + 64 * 1024)?;
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| {
            ApiError::Unprocessable("multipart/form-data with a `file` field is required".into())
        })?;
    let expect_md5 = expected_md5(headers)?;
    let dataset = dataset_of(state, upload)?;
    let timer = BodyTimer::start(&state.settings);
    let frames =
        http_body_util::BodyStream::new(request.into_body()).filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(err) => Some(Err(err)),
            }
        });
    let frames = with_body_timer(frames, timer);
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new().whole_stream(state.settings.max_chunk_bytes + 64 * 1024),
    );
    let mut multipart = multer::Multipart::with_constraints(frames, boundary, constraints);
    let _arriving = body_arriving(state, upload);
    let started = Instant::now();
    let mut stored: Option<StoredChunk> = None;
    let outcome = async {
        while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
            if field.name() != Some("file") {
                // Other form fields are read and ignored, as the original did.
                while field.chunk().await.map_err(multipart_error)?.is_some() {}
                continue;
            }
            if stored.is_some() {
                return Err(ApiError::BadRequest(
                    "exactly one `file` field is allowed".into(),
                ));
            }
            let kind = file_kind(field.file_name())?;
            let rules = ChunkRules {
                encoding: BodyEncoding::Identity,
                max_bytes: state.settings.max_chunk_bytes,
                dataset: dataset.clone(),
                require_header: true,
                expect_md5,
                expect_sha256: None,
            };
            let mut sink = BodySink::start(state, kind, upload_dir(state, upload), rules).await?;
            let mut failed = None;
            loop {
                match field.chunk().await {
                    Ok(Some(data)) => {
                        if !sink.push(data).await {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        failed = Some(multipart_error(err));
                        break;
                    }
                }
            }
            if let Some(err) = failed {
                sink.abort().await;
                return Err(err);
            }
            stored = Some(sink.finish().await?);
        }
        Ok(())
    }
    .await;
    let stored = match (outcome, stored) {
        (Ok(()), Some(stored)) => stored,
        (Ok(()), None) => {
            return Err(ApiError::Unprocessable(
                "multipart field `file` is required".into(),
            ))
        }
        (Err(err), stored) => {
            if let Some(stored) = stored {
                stored.discard().await;
            }
            return Err(err);
        }
    };
    let (message, duplicate) = commit(state, upload, None, stored).await?;
    metrics::histogram!(crate::metrics::CHUNK_STORE).record(started.elapsed().as_secs_f64());
    let uploaded = FileUploaded {
        message: "File uploaded successfully",
        folder: upload.upload_id,
        chunk: message.chunk_no,
        bytes: message.bytes,
        duplicate,
    };
    Ok(json_response(StatusCode::OK, &uploaded))
}

/// Puts the stored file into the chunk store, records it, publishes its message.
async fn commit(
    state: &AppState,
    upload: &Upload,
    chunk_no: Option<i32>,
    stored: StoredChunk,
) -> Result<(ChunkMessage, bool), ApiError> {
    let relative = format!("{}/{}.csv", upload.upload_id, stored.nonce.simple());
    if let Err(err) = state.chunks.put_file(&stored.temp_path, &relative).await {
        stored.discard().await;
        return Err(match err {
            ChunkStoreError::Object { .. } => {
                ApiError::Unavailable(format!("{err}; nothing was stored, retry later"))
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("storing chunk")),
        });
    }
    let forget_file = || crate::expiry::remove_chunk(&state.chunks, &relative);
    let dataset = dataset_of(state, upload)?;
    let has_header = stored.header.is_some();
    let header = match stored.header {
        Some(names) => names,
        None => dataset.header_names(&dataset.declared_layout()),
    };
    let facts = NewChunk {
        path: relative.clone(),
        bytes: stored.bytes,
        sha256: stored.sha256_hex.clone(),
        has_header,
        header,
        header_expected: dataset.format.header,
    };
    let publisher = state.publisher.clone();
    let partitions = state.settings.shared.partitions;
    let recorded = state
        .uploads
        .record_chunk(upload, chunk_no, facts, |n| {
            ingest_contract::streams::partition_for(upload.upload_id, n, partitions)
        })
        .await;
    let (message, duplicate) = match recorded {
        Ok(Recorded::New(message)) => (message, false),
        Ok(Recorded::Replaced(replaced)) => {
            crate::expiry::remove_chunk(&state.chunks, &replaced.old_path).await;
            // A replacement is recorded for good (the failed bytes are gone): if the broker does
            // not confirm, the announce sweep publishes it later.
            return announce(state, replaced.message).await.map(|m| (m, false));
        }
        Ok(Recorded::Again(message)) => {
            forget_file().await;
            (message, true)
        }
        Ok(Recorded::Conflict) => {
            forget_file().await;
            return Err(ApiError::Conflict(
                "this chunk number was already stored with different content".into(),
            ));
        }
        Ok(Recorded::HeaderDiffers(first)) => {
            forget_file().await;
            return Err(ApiError::Conflict(format!(
                "this chunk's header orders the columns differently from the upload's first \
                 chunk ({}): every chunk of an upload is read alike; send the header chunk first \
                 or keep one column order",
                first.join(",")
            )));
        }
        Ok(Recorded::Closed(state)) => {
            forget_file().await;
            return Err(crate::routes::uploads::closed(state));
        }
        Ok(Recorded::Beyond(expected)) => {
            forget_file().await;
            return Err(match chunk_no {
                Some(n) => beyond(n, expected),
                None => ApiError::Conflict(format!(
                    "the upload declared {expected} chunks and has received them all"
                )),
            });
        }
        Err(err) => {
            forget_file().await;
            return Err(err);
        }
    };
    metrics::counter!(crate::metrics::BYTES_RECEIVED).increment(message.bytes);
    if let Err(err) = publisher.publish(&message).await {
        tracing::warn!(error = %err, upload_id = %message.upload_id, chunk = message.chunk_no, "publish failed");
        if !duplicate && state.uploads.forget_chunk(&message).await? {
            forget_file().await;
        } else if !duplicate {
            // The engine loaded it already: the publish did happen.
            return Ok((message, false));
        }
        return Err(ApiError::Unavailable(format!(
            "{err}; nothing was stored, retry later"
        )));
    }
    if !state.uploads.mark_announced(&message).await {
        // Sent twice at once, and the other request's publish failed: it took the chunk back.
        return Err(ApiError::Unavailable(
            "the same chunk sent at the same time could not be queued; send it again".into(),
        ));
    }
    if !duplicate && (has_header || message.chunk_no == 0) {
        // This chunk may have set the upload's header: chunks that came before it waited for
        // it (the engine parked them); publish them again now rather than at the next sweep.
        state.uploads.announce_waiting(&publisher, &message).await;
    }
    Ok((message, duplicate))
}

/// A failed chunk queued to load again.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkQueued {
    #[schema(value_type = String, example = "Chunk queued to load again")]
    pub message: &'static str,
    #[serde(flatten)]
    pub held: HeldChunk,
}

/// Load a failed chunk again.
///
/// From the file it has, kept for `INGEST_UPLOAD_TTL_SECS` after the failure (or until the
/// upload is aborted). The failure's counters and rejected rows are taken out of the upload,
/// which opens again if it had ended; a load of the earlier attempt still running records
/// nothing.
#[utoipa::path(post, path = "/api/upload/{folder}/chunks/{n}/retry", tag = "upload", operation_id = "retryChunk",
    security(("bearer" = [])),
    params(("folder" = Uuid, Path, description = "The upload"),
           ("n" = i32, Path, description = "The failed chunk's number")),
    responses(
        (status = 202, description = "Queued to load again", body = ChunkQueued),
        (status = 409, description = "Not a failed chunk, never received, its file no longer kept, or the upload takes nothing more", body = ErrorBody),
        (status = 503, description = "Broker unavailable; the chunk is recorded and queued later", body = ErrorBody)))]
pub async fn retry(
    state: &AppState,
    upload: &Upload,
    chunk_no: i32,
) -> Result<HttpResponse, ApiError> {
    let mut db = state.pool.get().await?;
    let retried = retries::retry(&mut db, upload.upload_id, chunk_no).await?;
    drop(db);
    let message = match retried {
        Retried::Queued(message) => message,
        Retried::NoChunk => {
            return Err(ApiError::Conflict(format!(
                "chunk {chunk_no} was never received"
            )))
        }
        Retried::NotFailed(chunk) => {
            return Err(ApiError::Conflict(format!(
                "chunk {chunk_no} is {chunk}: only a failed chunk is retried"
            )))
        }
        Retried::FileGone => {
            return Err(ApiError::Conflict(format!(
                "chunk {chunk_no}'s file is no longer kept; PUT its bytes again to replace it"
            )))
        }
        Retried::Closed(ended) => return Err(crate::routes::uploads::closed(ended)),
    };
    let message = announce(state, message).await?;
    let queued = ChunkQueued {
        message: "Chunk queued to load again",
        held: HeldChunk::of(message),
    };
    Ok(json_response(StatusCode::ACCEPTED, &queued))
}

/// Publishes a chunk that is recorded for good (a retry or a replacement); 503 if the broker does
/// not confirm, though the announce sweep ([`crate::orphans`]) publishes it later anyway.
async fn announce(state: &AppState, message: ChunkMessage) -> Result<ChunkMessage, ApiError> {
    if let Err(err) = state.publisher.publish(&message).await {
        tracing::warn!(error = %err, upload_id = %message.upload_id, chunk = message.chunk_no, "publish failed");
        return Err(ApiError::Unavailable(format!(
            "{err}; the chunk is recorded and will be queued later"
        )));
    }
    state.uploads.mark_announced(&message).await;
    Ok(message)
}

/// How long a body may take: each frame within the idle timeout, all of them before the deadline.
/// The deadline is what stops a client that trickles a byte just inside every frame timeout.
#[derive(Debug, Clone, Copy)]
struct BodyTimer {
    frame_timeout: Duration,
    deadline: tokio::time::Instant,
}

impl BodyTimer {
    /// Starts the body's clock now.
    fn start(settings: &GatewaySettings) -> Self {
        Self {
            frame_timeout: settings.body_frame_timeout,
            deadline: tokio::time::Instant::now()
                + Duration::from_secs(settings.body_deadline_secs),
        }
    }

    /// Waits for the next frame until the frame timeout or the deadline, whichever comes first.
    async fn next<F: Future>(&self, frame: F) -> Result<F::Output, tokio::time::error::Elapsed> {
        let by = (tokio::time::Instant::now() + self.frame_timeout).min(self.deadline);
        tokio::time::timeout_at(by, frame).await
    }
}

/// Where a body goes: straight to the CSV store, or spooled as a workbook to be converted.
enum BodySink {
    Csv(ChunkSink),
    // Boxed: it holds its hashers' state, far larger than a channel end.
    Workbook(Box<WorkbookSink>),
}

impl BodySink {
    async fn start(
        state: &AppState,
        kind: BodyKind,
        dir: std::path::PathBuf,
        rules: ChunkRules,
    ) -> Result<Self, ApiError> {
        Ok(match kind {
            BodyKind::Csv => {
                let slot = state.bodies.clone().try_acquire_owned().map_err(|_| {
                    ApiError::Unavailable(
                        "too many chunks are being received by this gateway; retry in a moment"
                            .into(),
                    )
                })?;
                let sink = ChunkSink::start(dir, rules, Some(slot)).await;
                Self::Csv(sink.map_err(store_error)?)
            }
            BodyKind::Workbook => Self::Workbook(Box::new(
                WorkbookSink::start(dir, rules).await.map_err(store_error)?,
            )),
        })
    }

    /// `false` once the sink refused the body; [`Self::finish`] says why.
    async fn push(&mut self, data: Bytes) -> bool {
        match self {
            Self::Csv(sink) => sink.push(data).await,
            Self::Workbook(sink) => sink.push(&data).await,
        }
    }

    async fn finish(self) -> Result<StoredChunk, ApiError> {
        match self {
            Self::Csv(sink) => sink.finish().await,
            Self::Workbook(sink) => sink.finish().await,
        }
        .map_err(store_error)
    }

    async fn abort(self) {
        match self {
            Self::Csv(sink) => sink.abort().await,
            Self::Workbook(sink) => sink.abort().await,
        }
    }
}

/// Tells the ledger that a chunk body of `upload` is arriving, at once and every few seconds
/// until the returned handle is dropped: the upload is not idle meanwhile, so it neither
/// settles `done` nor expires under a body that is still coming
/// ([`ingest_ledger::uploads::body_arriving`]).
fn body_arriving(state: &AppState, upload: &Upload) -> tokio_util::task::AbortOnDropHandle<()> {
    // A third of the settle period: the last sign is never as old as the period.
    let every = (Duration::from_secs(state.settings.upload_settle_secs) / 3)
        .clamp(Duration::from_millis(200), Duration::from_secs(5));
    let (pool, upload_id) = (state.pool.clone(), upload.upload_id);
    crate::sweeps::every(every, move || {
        let pool = pool.clone();
        async move {
            let touched = match pool.get().await {
                Ok(mut db) => uploads::body_arriving(&mut db, upload_id, every / 2)
                    .await
                    .map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(error) = touched {
                tracing::warn!(%upload_id, %error, "cannot mark a chunk body as arriving");
            }
        }
    })
}

/// Forwards body frames to the sink, within the body's timer.
async fn pump(
    body: &mut Incoming,
    mut sink: BodySink,
    timer: BodyTimer,
) -> Result<StoredChunk, ApiError> {
    loop {
        match timer.next(body.frame()).await {
            Err(_) => {
                sink.abort().await;
                return Err(ApiError::Timeout);
            }
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                sink.abort().await;
                return Err(ApiError::BadRequest(format!(
                    "body could not be read: {err}"
                )));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !sink.push(data).await {
                        break; // The writer refused; finish() says why.
                    }
                }
            }
        }
    }
    sink.finish().await
}

/// The body frames multer reads, within the body's timer (a timeout ends the stream with an error).
fn with_body_timer<S>(
    frames: S,
    timer: BodyTimer,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<Bytes, hyper::Error>> + Send + 'static,
{
    futures_util::stream::unfold(Box::pin(frames), move |mut frames| async move {
        match timer.next(frames.next()).await {
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "body timed out",
                )),
                frames,
            )),
            Ok(None) => None,
            Ok(Some(item)) => Some((item.map_err(std::io::Error::other), frames)),
        }
    })
}

fn accepting(upload: &Upload, chunk_no: Option<i32>) -> Result<(), ApiError> {
    // An upload ended by failed chunks takes new bytes for one of them by number (the ledger
    // refuses any other chunk).
    let replacing = upload.retryable && chunk_no.is_some();
    if !upload.accepts_chunks() && !replacing {
        return Err(crate::routes::uploads::closed(upload.state));
    }
    if let (Some(n), Some(expected)) = (chunk_no, upload.expected_chunks) {
        if n >= expected {
            return Err(beyond(n, expected));
        }
    }
    Ok(())
}

/// Chunk `n` of an upload that declared `expected` chunks, when `n` is not below it.
fn beyond(n: i32, expected: i32) -> ApiError {
    ApiError::BadRequest(format!(
        "chunk {n} is beyond the declared {expected} chunks (numbered from 0)"
    ))
}

fn upload_dir(state: &AppState, upload: &Upload) -> std::path::PathBuf {
    state.chunks.spool().join(upload.upload_id.to_string())
}

/// The upload's dataset, from the one dataset registry.
fn dataset_of(state: &AppState, upload: &Upload) -> Result<Arc<Dataset>, ApiError> {
    state.datasets.get(&upload.dataset).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "dataset {:?} is not defined on this gateway (INGEST_DATASETS_DIR)",
            upload.dataset
        ))
    })
}

fn check_declared_length(headers: &HeaderMap, max: u64) -> Result<(), ApiError> {
    if let Some(value) = headers.get(header::CONTENT_LENGTH) {
        let length = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ApiError::BadRequest("invalid Content-Length".into()))?;
        if length > max {
            return Err(ApiError::PayloadTooLarge(format!(
                "chunk is larger than {max} bytes"
            )));
        }
    }
    Ok(())
}

fn check_content_type(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Csv);
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "text/csv" | "text/plain" | "application/csv" | "application/octet-stream" => {
            Ok(BodyKind::Csv)
        }
        workbook::CONTENT_TYPE => Ok(BodyKind::Workbook),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type {other:?} is not accepted; send text/csv (or an XLSX workbook as {})",
            workbook::CONTENT_TYPE
        ))),
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<BodyEncoding, ApiError> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => Ok(BodyEncoding::Identity),
        Some(e) if e == "identity" => Ok(BodyEncoding::Identity),
        Some(e) if e == "gzip" => Ok(BodyEncoding::Gzip),
        Some(e) if e == "zstd" => Ok(BodyEncoding::Zstd),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "content encoding {other:?} is not accepted; use gzip or zstd"
        ))),
    }
}

/// What a multipart file is, by its name's extension (the original accepted .csv and .xlsx).
fn file_kind(name: Option<&str>) -> Result<BodyKind, ApiError> {
    // The name is only looked at, never used: stored files are named by UUID.
    let extension = name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("csv") => Ok(BodyKind::Csv),
        Some("xlsx") => Ok(BodyKind::Workbook),
        _ => Err(ApiError::BadRequest(
            "only .csv and .xlsx files are accepted".into(),
        )),
    }
}

/// CSV text, or an XLSX workbook whose first sheet is converted to CSV ([`workbook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Csv,
    Workbook,
}

fn expected_md5(headers: &HeaderMap) -> Result<Option<[u8; 16]>, ApiError> {
    let bad = |name: &str| ApiError::BadRequest(format!("{name} is not a valid MD5"));
    let from_hex = match headers.get("x-md5-hash") {
        Some(v) => {
            let bytes = hex::decode(v.to_str().map_err(|_| bad("X-MD5-Hash"))?.trim())
                .map_err(|_| bad("X-MD5-Hash"))?;
            Some(<[u8; 16]>::try_from(bytes).map_err(|_| bad("X-MD5-Hash"))?)
        }
        None => None,
    };
    let from_b64 = match headers.get("content-md5") {
        Some(v) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.to_str().map_err(|_| bad("Content-MD5"))?.trim())
                .map_err(|_| bad("Content-MD5"))?;
            Some(<[u8; 16]>::try_from(bytes).map_err(|_| bad("Content-MD5"))?)
        }
        None => None,
    };
    match (from_hex, from_b64) {
        (Some(a), Some(b)) if a != b => Err(ApiError::BadRequest(
            "X-MD5-Hash and Content-MD5 disagree".into(),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn expected_sha256(headers: &HeaderMap) -> Result<Option<[u8; 32]>, ApiError> {
    let Some(value) = headers.get("x-checksum-sha256") else {
        return Ok(None);
    };
    let bad = || ApiError::BadRequest("X-Checksum-SHA256 is not a hex SHA-256".into());
    let bytes = hex::decode(value.to_str().map_err(|_| bad())?.trim()).map_err(|_| bad())?;
    Ok(Some(<[u8; 32]>::try_from(bytes).map_err(|_| bad())?))
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::TooLarge(max) => {
            ApiError::PayloadTooLarge(format!("chunk is larger than {max} bytes"))
        }
        StoreError::ChecksumMismatch(_) | StoreError::MissingHeader(_) | StoreError::Decode(..) => {
            ApiError::BadRequest(err.to_string())
        }
        StoreError::BadHeader(_) => ApiError::Unprocessable(err.to_string()),
        StoreError::NotText(_) => ApiError::UnsupportedMediaType(err.to_string()),
        StoreError::Workbook(WorkbookError::TooLarge(_) | WorkbookError::CsvTooLarge(_)) => {
            ApiError::PayloadTooLarge(err.to_string())
        }
        StoreError::Workbook(WorkbookError::NoSheet | WorkbookError::NoSheetNamed(_)) => {
            ApiError::Unprocessable(err.to_string())
        }
        StoreError::Workbook(WorkbookError::NotWorkbook(_)) => {
            ApiError::UnsupportedMediaType(err.to_string())
        }
        StoreError::Workbook(WorkbookError::Io(io)) | StoreError::Io(io) => {
            ApiError::Internal(anyhow::Error::new(io).context("storing chunk"))
        }
    }
}

fn multipart_error(err: multer::Error) -> ApiError {
    match err {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            ApiError::PayloadTooLarge("file is too large".into())
        }
        multer::Error::StreamReadFailed(inner) if inner.to_string().contains("timed out") => {
            ApiError::Timeout
        }
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    }
}
