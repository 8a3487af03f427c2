//! Upload sessions: `POST /api/upload` creates one, `GET /api/upload/{folder}` reads its status,
//! `POST /api/upload/{folder}/complete` declares its chunk count. [`Uploads`] validates what the
//! API takes and calls the upload ledger ([`ingest_ledger::uploads`]), which owns every statement
//! on its tables.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use deadpool_postgres::Pool;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use ingest_contract::chunk::ChunkMessage;
use ingest_ledger::completion::{self, Withdrawal};
use ingest_ledger::uploads::{
    self, Created, NewChunk, Recorded, Upload, UploadStatus, UploadSummary,
};
use ingest_ledger::{ErrorPolicy, Partition, UploadState};
use ingest_rows::registry::Registry;
use ingest_rows::values::Timestamp;

use crate::app::{AppState, HttpResponse};
use crate::errors::{json_response, ApiError, ErrorBody};

/// A new upload (or the one an `Idempotency-Key` named before).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUpload {
    /// Where its chunks go: `/api/upload/{folder}`.
    pub folder: Uuid,
    pub dataset: String,
    pub state: UploadState,
    pub expected_chunks: Option<i32>,
}

/// Create an upload.
///
/// The body is optional (the original's client sends none). An `Idempotency-Key` header (1-255
/// visible ASCII) makes retries safe: the same key from the same client answers the same upload
/// (`Idempotent-Replayed: true`); the same key with a different body is 409. Answers 200, not
/// 201: the original did, and its own client test asserts it.
#[utoipa::path(post, path = "/api/upload", tag = "upload", operation_id = "createUpload",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries answer the same upload")),
    request_body(content = Option<NewUpload>, description = "Optional"),
    responses(
        (status = 200, description = "Created (or replayed)", body = CreatedUpload),
        (status = 400, description = "Unknown dataset, bad count or policy", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 409, description = "The idempotency key was used for a different request", body = ErrorBody)))]
pub async fn create(
    state: &AppState,
    client_id: &str,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(request.headers())?;
    let new = read_json::<NewUpload>(request).await?.unwrap_or_default();
    let (upload, replayed) = state.uploads.create(client_id, new, key.as_deref()).await?;
    // 200, not 201: the original answered 200 and its own client test asserts it.
    let created = CreatedUpload {
        folder: upload.upload_id,
        dataset: upload.dataset,
        state: upload.state,
        expected_chunks: upload.expected_chunks,
    };
    let mut response = json_response(StatusCode::OK, &created);
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|key| (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()))
        .map(|key| Some(key.to_owned()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })
}

/// Most uploads one page of `GET /api/uploads` lists (and its default).
const MAX_PAGE: i64 = 500;
const DEFAULT_PAGE: i64 = 50;

/// A page of the caller's uploads.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadPage {
    pub uploads: Vec<UploadSummary>,
    /// The `after` of the next page; `null` on the last one.
    pub next: Option<String>,
}

/// List your uploads, newest first.
///
/// Keyset pages on `(created_at, upload_id)`: each page is one index range, however many came
/// before. Each upload with its counters and, while receiving, `expires_at`.
#[utoipa::path(get, path = "/api/uploads", tag = "upload", operation_id = "listUploads",
    security(("bearer" = [])),
    params(("state" = Option<UploadState>, Query, description = "Only uploads in this state"),
           ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
           ("after" = Option<String>, Query, description = "The `next` cursor of the previous page")),
    responses(
        (status = 200, description = "A page", body = UploadPage),
        (status = 400, description = "Bad parameter", body = ErrorBody)))]
pub async fn list(
    state: &AppState,
    client_id: &str,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let mut query = uploads::ListQuery {
        client_id,
        state: None,
        after: None,
        limit: DEFAULT_PAGE,
        ttl: Duration::from_secs(state.settings.upload_ttl_secs),
    };
    let pairs = url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes());
    for (name, value) in pairs {
        match name.as_ref() {
            "state" => {
                query.state = Some(UploadState::parse(&value).map_err(|_| {
                    ApiError::BadRequest(
                        "state must be receiving, processing, done, failed, aborted or undone"
                            .into(),
                    )
                })?)
            }
            "limit" => {
                query.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to {MAX_PAGE}")))?
            }
            "after" => query.after = Some(read_cursor(&value)?),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {other:?}; use state, limit or after"
                )))
            }
        }
    }
    let db = state.pool.get().await?;
    let page = uploads::list(&db, &query).await?;
    let next = match page.last() {
        Some(last) if page.len() as i64 == query.limit => {
            Some(write_cursor(&last.created_at, last.folder))
        }
        _ => None,
    };
    Ok(json_response(
        StatusCode::OK,
        &UploadPage {
            uploads: page,
            next,
        },
    ))
}

/// The opaque cursor of a page: the keyset of its last upload.
fn write_cursor(created_at: &str, folder: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}|{folder}"))
}

fn read_cursor(cursor: &str) -> Result<(String, Uuid), ApiError> {
    let bad = || ApiError::BadRequest("after is not a cursor this API gave".into());
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (created_at, folder) = text.rsplit_once('|').ok_or_else(bad)?;
    let folder = Uuid::parse_str(folder).map_err(|_| bad())?;
    // Only a timestamp as PostgreSQL writes one (`2026-12-06 18:40:01.123456+00`) is passed on
    // to be cast, so a forged cursor is a 400, not a database error.
    if !created_at.is_ascii() {
        return Err(bad());
    }
    let zone_at = created_at.get(19..).and_then(|tail| tail.rfind(['+', '-']));
    let (local, zone) = match zone_at {
        Some(at) => created_at.split_at(19 + at),
        None => return Err(bad()),
    };
    // ISO dates only (the parser also takes day-first ones, which PostgreSQL would read
    // month-first), and a real offset: hours to 15, minutes to 59.
    let number = |text: &str, max: u32| text.parse::<u32>().is_ok_and(|n| n <= max);
    let zone_ok = matches!(zone.len(), 3 | 6)
        && zone[1..3].bytes().all(|b| b.is_ascii_digit())
        && number(&zone[1..3], 15)
        && (zone.len() == 3
            || (&zone[3..4] == ":"
                && zone[4..].bytes().all(|b| b.is_ascii_digit())
                && number(&zone[4..], 59)));
    let iso = local.as_bytes().get(4) == Some(&b'-');
    if !zone_ok || !iso || Timestamp::parse(local.as_bytes()).is_err() {
        return Err(bad());
    }
    Ok((created_at.to_owned(), folder))
}

/// An upload's status.
///
/// State (`receiving`, `processing`, `done`, `failed`, `aborted`, `undone`), counters, how it
/// ends (a declared count or the settle rule), the chunk numbers received and the first 100
/// rejected rows (all of them: `/rejected`).
#[utoipa::path(get, path = "/api/upload/{folder}", tag = "upload", operation_id = "uploadStatus",
    security(("bearer" = [])),
    params(("folder" = Uuid, Path, description = "The upload")),
    responses(
        (status = 200, description = "Its status", body = UploadStatus),
        (status = 404, description = "No such upload of this client", body = ErrorBody)))]
pub async fn status(state: &AppState, upload: &Upload) -> Result<HttpResponse, ApiError> {
    let status = state.uploads.status(upload).await?;
    Ok(json_response(StatusCode::OK, &status))
}

/// The body of `POST /api/upload/{folder}/complete`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareChunks {
    /// How many chunks the upload has (numbered from 0).
    pub chunks: i32,
}

/// What `/complete` declared.
#[derive(Debug, Serialize, ToSchema)]
pub struct Declared {
    pub folder: Uuid,
    pub state: UploadState,
    pub expected_chunks: i32,
}

/// Declare the number of chunks.
///
/// The upload is `done` once that many chunks are loaded (at once if they are already).
#[utoipa::path(post, path = "/api/upload/{folder}/complete", tag = "upload", operation_id = "completeUpload",
    security(("bearer" = [])),
    params(("folder" = Uuid, Path, description = "The upload")),
    request_body = DeclareChunks,
    responses(
        (status = 200, description = "Declared", body = Declared),
        (status = 409, description = "A different count was declared, or a chunk numbered at or above it was received", body = ErrorBody)))]
pub async fn complete(
    state: &AppState,
    upload: &Upload,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<DeclareChunks>(request)
        .await?
        .ok_or_else(|| ApiError::BadRequest("body {\"chunks\": N} is required".into()))?;
    let new_state = state.uploads.complete(upload, body.chunks).await?;
    let declared = Declared {
        folder: upload.upload_id,
        state: new_state,
        expected_chunks: body.chunks,
    };
    Ok(json_response(StatusCode::OK, &declared))
}

/// What `DELETE /api/upload/{folder}` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Withdrawn {
    pub folder: Uuid,
    /// `aborted`, or `undone` with `?rows=true`.
    pub state: UploadState,
    /// Its chunks not loaded yet, which never will be now.
    pub chunks_failed: usize,
    /// With `?rows=true`: how many rows were deleted.
    pub rows_deleted: Option<u64>,
}

/// Abort an upload, or undo its import.
///
/// Aborts the upload: chunks not loaded yet never will be, their files go, and it takes no
/// more. With `?rows=true` also deletes every row it loaded (by its lineage, in the same
/// transaction), also on an upload that ended: loads racing it either commit before and are
/// deleted, or roll back. 409 when there is nothing left to do.
#[utoipa::path(delete, path = "/api/upload/{folder}", tag = "upload", operation_id = "withdrawUpload",
    security(("bearer" = [])),
    params(("folder" = Uuid, Path, description = "The upload"),
           ("rows" = Option<bool>, Query, description = "true: also delete every row it loaded")),
    responses(
        (status = 200, description = "Aborted or undone", body = Withdrawn),
        (status = 404, description = "No such upload of this client", body = ErrorBody),
        (status = 409, description = "Nothing left to do", body = ErrorBody)))]
pub async fn withdraw(
    state: &AppState,
    upload: &Upload,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let mut undo_rows = false;
    let query = request.uri().query().unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        undo_rows = match (name.as_ref(), value.as_ref()) {
            ("rows", "true") => true,
            ("rows", "false") => false,
            ("rows", _) => return Err(ApiError::BadRequest("rows must be true or false".into())),
            (other, _) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {other:?}; use rows"
                )))
            }
        };
    }
    let mut db = state.pool.get().await?;
    let withdrawal = completion::withdraw(&mut db, upload.upload_id, undo_rows).await?;
    let (ended, chunks_failed, chunks, rows_deleted) = match withdrawal {
        Withdrawal::Ended {
            state,
            chunks_failed,
            chunks,
            rows_deleted,
        } => (state, chunks_failed, chunks, rows_deleted),
        Withdrawal::AlreadyEnded(UploadState::Undone) => {
            return Err(ApiError::Conflict("its rows were undone already".into()))
        }
        Withdrawal::AlreadyEnded(ended) => {
            return Err(ApiError::Conflict(format!(
                "upload is {ended}; DELETE with ?rows=true undoes its rows"
            )))
        }
    };
    for chunk in &chunks {
        crate::expiry::remove_chunk(&state.chunks, &chunk.stored_path).await;
        // If this fails, the engine's sweep removes the file again (harmlessly) later.
        let _ = ingest_ledger::files::mark_removed(&db, chunk.upload_id, chunk.chunk_no).await;
    }
    crate::expiry::remove_temporary_files(&state.chunks, upload.upload_id).await;
    let withdrawn = Withdrawn {
        folder: upload.upload_id,
        state: ended,
        chunks_failed,
        rows_deleted,
    };
    Ok(json_response(StatusCode::OK, &withdrawn))
}

/// The caller's upload named by `folder`; anything but a UUID is simply not found (never a path).
pub async fn find(state: &AppState, client_id: &str, folder: &str) -> Result<Upload, ApiError> {
    let upload_id = Uuid::parse_str(folder).map_err(|_| ApiError::NotFound)?;
    state.uploads.find(client_id, upload_id).await
}

/// The optional body of `POST /api/upload`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    /// Default `transactions`.
    #[schema(example = "transactions")]
    pub dataset: Option<String>,
    /// How many chunks it will have; or declare it later with `/complete`.
    pub expected_chunks: Option<i32>,
    pub total_bytes: Option<i64>,
    /// `reject-rows` (default: load the good rows, report the bad) or `reject-chunk` (a chunk
    /// with a bad row loads nothing).
    #[schema(example = "reject-rows")]
    pub on_error: Option<String>,
    /// Where this upload's completion hook goes (instead of `INGEST_WEBHOOK_URL`).
    pub callback_url: Option<String>,
}

/// Upload sessions and their chunks.
#[derive(Clone)]
pub struct Uploads {
    pool: Pool,
    /// `INGEST_UPLOAD_SETTLE_SECS`, shown in statuses.
    settle_after: Duration,
    /// `INGEST_UPLOAD_TTL_SECS`, for `expires_at`.
    ttl: Duration,
    /// Whether completion hooks can be signed (`INGEST_WEBHOOK_SECRET` is set).
    hooks_on: bool,
    /// `INGEST_WEBHOOK_URL`: where hooks of uploads that name no `callback_url` go.
    default_callback: Option<String>,
    datasets: Arc<Registry>,
}

impl Uploads {
    pub fn new(
        pool: Pool,
        settings: &crate::settings::GatewaySettings,
        datasets: Arc<Registry>,
    ) -> Self {
        let hooks_on = settings.webhook_secret.is_some();
        Self {
            pool,
            settle_after: Duration::from_secs(settings.upload_settle_secs),
            ttl: Duration::from_secs(settings.upload_ttl_secs),
            hooks_on,
            default_callback: settings.webhook_url.clone().filter(|_| hooks_on),
            datasets,
        }
    }

    /// Creates the upload, or finds the one `idempotency_key` named before; `true` when found.
    pub async fn create(
        &self,
        client_id: &str,
        new: NewUpload,
        idempotency_key: Option<&str>,
    ) -> Result<(Upload, bool), ApiError> {
        let name = new.dataset.unwrap_or_else(|| "transactions".to_owned());
        let Some(dataset) = self.datasets.get(&name) else {
            return Err(ApiError::BadRequest(format!("unknown dataset {name:?}")));
        };
        let on_error = match new.on_error.as_deref() {
            None => dataset.on_error,
            Some(text) => ErrorPolicy::parse(text).ok_or_else(|| {
                ApiError::BadRequest("on_error must be \"reject-rows\" or \"reject-chunk\"".into())
            })?,
        };
        if new
            .expected_chunks
            .is_some_and(|n| !(1..=1_000_000).contains(&n))
        {
            return Err(ApiError::BadRequest(
                "expected_chunks must be 1 to 1000000".into(),
            ));
        }
        if new.total_bytes.is_some_and(|n| n < 0) {
            return Err(ApiError::BadRequest(
                "total_bytes must not be negative".into(),
            ));
        }
        let callback_url = match new.callback_url {
            Some(_) if !self.hooks_on => {
                return Err(ApiError::BadRequest(
                    "completion hooks are off on this gateway (no INGEST_WEBHOOK_SECRET)".into(),
                ))
            }
            Some(url) => Some(
                crate::settings::parse_callback_url(&url)
                    .map_err(|err| ApiError::BadRequest(format!("callback_url: {err}")))?,
            ),
            None => self.default_callback.clone(),
        };
        let new = uploads::NewUpload {
            client_id,
            dataset: &dataset.name,
            table: &dataset.table,
            on_error,
            expected_chunks: new.expected_chunks,
            total_bytes: new.total_bytes,
            idempotency_key,
            callback_url: callback_url.as_deref(),
        };
        let db = self.pool.get().await?;
        match uploads::create(&db, &new).await? {
            Created::New(upload) => Ok((upload, false)),
            Created::Existing(upload) => Ok((upload, true)),
            Created::KeyReused => Err(ApiError::Conflict(
                "this Idempotency-Key was used for a different upload request".into(),
            )),
        }
    }

    /// The upload if it exists and belongs to `client_id` (another client's upload is "not found").
    pub async fn find(&self, client_id: &str, upload_id: Uuid) -> Result<Upload, ApiError> {
        let db = self.pool.get().await?;
        uploads::find(&db, client_id, upload_id)
            .await?
            .ok_or(ApiError::NotFound)
    }

    /// Records a stored chunk. `chunk_no` None numbers it in arrival order (multipart uploads).
    pub async fn record_chunk(
        &self,
        upload: &Upload,
        chunk_no: Option<i32>,
        stored: NewChunk,
        partition_of: impl Fn(i32) -> u16,
    ) -> Result<Recorded, ApiError> {
        let mut db = self.pool.get().await?;
        let recorded = uploads::record_chunk(&mut db, upload, chunk_no, stored, |n| {
            Partition::from(partition_of(n))
        })
        .await?;
        Ok(recorded)
    }

    /// Takes back a chunk whose message the broker did not confirm, unless the engine already
    /// loaded it (then the publish did happen). Returns whether it was taken back.
    pub async fn forget_chunk(&self, message: &ChunkMessage) -> Result<bool, ApiError> {
        let mut db = self.pool.get().await?;
        Ok(uploads::forget_chunk(&mut db, message).await?)
    }

    /// Records that the broker confirmed the chunk's message; returns whether the chunk is
    /// still recorded (a concurrent request whose publish failed may have taken it back), and
    /// `true` when that is not known. Chunks a killed gateway never announced are published
    /// again by [`crate::orphans`]; if this update fails, that sweep publishes the chunk once
    /// more, which the engine's ledger makes harmless.
    pub async fn mark_announced(&self, message: &ChunkMessage) -> bool {
        let marked = async {
            let db = self.pool.get().await?;
            let (upload_id, chunk_no) = (message.upload_id, message.chunk_no);
            Ok::<_, ApiError>(ingest_ledger::files::mark_announced(&db, upload_id, chunk_no).await?)
        }
        .await;
        marked.unwrap_or_else(|err| {
            tracing::debug!(error = %err, "could not mark a chunk announced");
            true
        })
    }

    /// Publishes the upload's chunks that may have waited for its header, after `message`'s
    /// chunk set it ([`ingest_ledger::files::may_have_waited`]). Best effort: what fails here
    /// is marked unannounced, and the gateways' announce sweep publishes it later.
    pub async fn announce_waiting(
        &self,
        publisher: &crate::publish::Publisher,
        message: &ChunkMessage,
    ) {
        let announced = async {
            let db = self.pool.get().await?;
            let waiting =
                ingest_ledger::files::may_have_waited(&db, message.upload_id, message.chunk_no)
                    .await?;
            for (at, chunk) in waiting.iter().enumerate() {
                if let Err(err) = publisher.publish(chunk).await {
                    let left: Vec<i32> = waiting[at..].iter().map(|c| c.chunk_no).collect();
                    ingest_ledger::files::announce_later(&db, message.upload_id, &left).await?;
                    return Err(ApiError::Unavailable(err.to_string()));
                }
                ingest_ledger::files::mark_announced(&db, chunk.upload_id, chunk.chunk_no).await?;
            }
            Ok::<_, ApiError>(())
        }
        .await;
        if let Err(err) = announced {
            tracing::warn!(error = %err, upload_id = %message.upload_id, "could not publish the chunks that waited for the header; the announce sweep will");
        }
    }

    /// Declares the number of chunks; the upload is done at once if they are all loaded already.
    pub async fn complete(&self, upload: &Upload, chunks: i32) -> Result<UploadState, ApiError> {
        if !(0..=1_000_000).contains(&chunks) {
            return Err(ApiError::BadRequest("chunks must be 0 to 1000000".into()));
        }
        let mut db = self.pool.get().await?;
        match uploads::declare_chunks(&mut db, upload.upload_id, chunks).await? {
            uploads::Declared::Now(state) => Ok(state),
            uploads::Declared::Fewer { highest } => Err(ApiError::Conflict(format!(
                "chunk {highest} was received already: the upload has at least {} chunks",
                highest + 1
            ))),
            uploads::Declared::Refused if upload.expected_chunks == Some(chunks) => {
                Ok(upload.state)
            }
            uploads::Declared::Refused => Err(ApiError::Conflict(format!(
                "upload already declared {} chunks",
                upload
                    .expected_chunks
                    .map_or("a different number of".into(), |n| n.to_string())
            ))),
        }
    }

    /// The upload's state, counters, received chunk numbers and first rejected rows.
    pub async fn status(&self, upload: &Upload) -> Result<UploadStatus, ApiError> {
        let db = self.pool.get().await?;
        Ok(uploads::status(&db, upload.upload_id, self.ttl, self.settle_after).await?)
    }
}

/// An upload that takes no more chunks.
pub fn closed(state: UploadState) -> ApiError {
    if state == UploadState::Failed {
        // Unless it expired, a failed upload's failed chunks can still be loaded again.
        return ApiError::Conflict(
            "upload is failed; it takes no more chunks, but a failed chunk can be retried \
             (POST .../chunks/{n}/retry) or given new bytes (PUT), unless the upload expired"
                .into(),
        );
    }
    ApiError::Conflict(format!("upload is {state}; it takes no more chunks"))
}

/// Reads a small JSON body (at most 64 KiB); an empty body is `None`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<Option<T>, ApiError> {
    const MAX: usize = 64 * 1024;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX as u64) {
        return Err(ApiError::PayloadTooLarge(
            "JSON body larger than 64 KiB".into(),
        ));
    }
    let body = tokio::time::timeout(
        Duration::from_secs(30),
        Limited::new(request.into_body(), MAX).collect(),
    )
    .await
    .map_err(|_| ApiError::Timeout)?
    .map_err(|err| {
        // A body without Content-Length can still be too large: same answer as with one.
        if err.is::<http_body_util::LengthLimitError>() {
            ApiError::PayloadTooLarge("JSON body larger than 64 KiB".into())
        } else {
            ApiError::BadRequest(format!("cannot read body: {err}"))
        }
    })?
    .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|err| ApiError::BadRequest(format!("invalid JSON body: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_was_written_and_nothing_else() {
        let folder = Uuid::new_v4();
        for created_at in [
            "2026-12-06 18:40:01.123456+00",
            "2026-12-06 18:40:01+05:30",
            "1999-01-31 00:00:00.5-08",
        ] {
            let cursor = write_cursor(created_at, folder);
            assert_eq!(
                read_cursor(&cursor).unwrap(),
                (created_at.to_owned(), folder)
            );
        }
        for forged in [
            "2026-12-06 18:40:01.123456",
            "2026-02-30 18:40:01+00",
            "2026-12-06 18:40:01+0",
            "now()|",
            "2026-12-06 18:40:01+é0",
            "06/12/2026 18:40:01+00",
            "2026-12-06 18:40:01+99",
            "2026-12-06 18:40:01+05:75",
        ] {
            let cursor = write_cursor(forged, folder);
            assert!(read_cursor(&cursor).is_err(), "{forged}");
        }
        assert!(read_cursor("not base64 !").is_err());
    }
}
