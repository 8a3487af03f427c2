//! What the gateway does with an upload: create it, find it for its owner, record a stored chunk
//! (or take one back the broker never confirmed), declare the chunk count, read its status.
//!
//! A chunk's row is inserted only after its file is synced under its final name, and its message
//! is published only after that row is committed: the engine never sees a chunk that is not
//! wholly stored. A client only ever sees its own uploads.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;
use uuid::Uuid;

use ingest_contract::chunk::ChunkMessage;

use crate::completion::{end_if_done, RETRYABLE, SETTLED};
use crate::hooks::HOOK_AFRESH;
use crate::retries::{self, Replaced};
use crate::states::{parse_policy, ErrorPolicy, Partition, UploadState};
use crate::LedgerError;

/// A new upload, already validated by the caller.
#[derive(Debug, Clone)]
pub struct NewUpload<'a> {
    pub client_id: &'a str,
    pub dataset: &'a str,
    /// The dataset's table, where the upload's rows go (and are undone from).
    pub table: &'a str,
    pub on_error: ErrorPolicy,
    pub expected_chunks: Option<i32>,
    pub total_bytes: Option<i64>,
    /// The client's `Idempotency-Key`: the same key names the same upload.
    pub idempotency_key: Option<&'a str>,
    /// Where its completion hook goes, if anywhere.
    pub callback_url: Option<&'a str>,
}

/// What [`create`] did.
#[derive(Debug)]
pub enum Created {
    New(Upload),
    /// The client created an upload with this idempotency key before, with the same request.
    Existing(Upload),
    /// The key was used before for a different request (another dataset, count or policy).
    KeyReused,
}

/// An upload as its owner sees it.
#[derive(Debug, Clone)]
pub struct Upload {
    pub upload_id: Uuid,
    pub dataset: String,
    pub state: UploadState,
    pub expected_chunks: Option<i32>,
    /// Ended by the settle rule ([`crate::completion`]), not by a declared count or expiry: a
    /// further chunk reopens it.
    pub settled: bool,
    /// Ended by failed chunks, which may still be retried or replaced ([`crate::retries`]).
    pub retryable: bool,
}

impl Upload {
    /// Whether a chunk may still be added (a settled upload is reopened by one).
    pub fn accepts_chunks(&self) -> bool {
        self.state.is_open() || self.settled
    }
}

/// Creates the upload, or finds the one this client created before with the same idempotency
/// key. A race between two creates with one key is settled by the unique index: the loser
/// finds the winner's upload.
pub async fn create(client: &Client, new: &NewUpload<'_>) -> Result<Created, LedgerError> {
    let upload_id = Uuid::new_v4();
    let inserted = client
        .execute(
            "INSERT INTO uploads (upload_id, client_id, dataset, on_error, expected_chunks,
                                  total_bytes, idempotency_key, callback_url, target_table)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL
             DO NOTHING",
            &[
                &upload_id,
                &new.client_id,
                &new.dataset,
                &new.on_error.as_str(),
                &new.expected_chunks,
                &new.total_bytes,
                &new.idempotency_key,
                &new.callback_url,
                &new.table,
            ],
        )
        .await?;
    if inserted == 1 {
        return Ok(Created::New(Upload {
            upload_id,
            dataset: new.dataset.to_owned(),
            state: UploadState::Receiving,
            expected_chunks: new.expected_chunks,
            settled: false,
            retryable: false,
        }));
    }
    let row = client
        .query_one(
            &format!(
                "SELECT upload_id, dataset, state, expected_chunks, {SETTLED}, on_error, total_bytes,
                        {RETRYABLE}
                 FROM uploads WHERE client_id = $1 AND idempotency_key = $2"
            ),
            &[&new.client_id, &new.idempotency_key],
        )
        .await?;
    let same_request = row.get::<_, &str>(1) == new.dataset
        && parse_policy(row.get(5))? == new.on_error
        && row.get::<_, Option<i64>>(6) == new.total_bytes;
    // A count declared later (by `/complete`) does not make a retry a different request.
    let declared: Option<i32> = row.get(3);
    if !same_request || (new.expected_chunks.is_some() && declared != new.expected_chunks) {
        return Ok(Created::KeyReused);
    }
    Ok(Created::Existing(Upload {
        upload_id: row.get(0),
        dataset: row.get(1),
        state: UploadState::parse(row.get(2))?,
        expected_chunks: declared,
        settled: row.get(4),
        retryable: row.get(7),
    }))
}

/// The upload if it exists and belongs to `client_id` (another client's upload is not found).
pub async fn find(
    client: &Client,
    client_id: &str,
    upload_id: Uuid,
) -> Result<Option<Upload>, LedgerError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT dataset, state, expected_chunks, {SETTLED}, {RETRYABLE} FROM uploads
                 WHERE upload_id = $1 AND client_id = $2"
            ),
            &[&upload_id, &client_id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(Upload {
        upload_id,
        dataset: row.get(0),
        state: UploadState::parse(row.get(1))?,
        expected_chunks: row.get(2),
        settled: row.get(3),
        retryable: row.get(4),
    }))
}

/// What the store knows of a chunk it just persisted.
#[derive(Debug)]
pub struct NewChunk {
    /// Relative to the upload directory.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub has_header: bool,
    /// The column names its records are read with, in file order: its header's, or the
    /// dataset's declared order when it has none. It sets the upload's
    /// ([`Recorded::HeaderDiffers`]) when the upload has none yet and it may: it has a header,
    /// or it is chunk 0 (a file without one), or the dataset's files have no header.
    pub header: Vec<String>,
    /// Whether the dataset's files start with a header: then a chunk without one that comes
    /// before chunk 0 leaves the upload's header unset, and the engine parks it until chunk 0
    /// is stored ([`crate::loads::Claimed::parked`]).
    pub header_expected: bool,
}

/// Result of recording a stored chunk.
#[derive(Debug)]
pub enum Recorded {
    /// A new chunk: publish this message.
    New(ChunkMessage),
    /// The same chunk number with the same content was stored before: publish the original
    /// message again (harmless: the engine loads a chunk once).
    Again(ChunkMessage),
    /// The same chunk number, failed before, with new content: publish the new message and
    /// remove the replaced file.
    Replaced(Replaced),
    /// The same chunk number with different content.
    Conflict,
    /// The chunk's header names the columns in another order than the upload's first one:
    /// its chunks would not all read alike. The upload's header is given.
    HeaderDiffers(Vec<String>),
    /// The upload ended (or expired) meanwhile and takes no more chunks.
    Closed(UploadState),
    /// The chunk's number is not below the upload's declared count (given): checked under
    /// the upload's lock, so a chunk racing the declaration cannot slip past it.
    Beyond(i32),
}

/// Records a stored chunk. `chunk_no` None numbers it in arrival order (multipart uploads).
pub async fn record_chunk(
    client: &mut Client,
    upload: &Upload,
    chunk_no: Option<i32>,
    stored: NewChunk,
    partition_of: impl Fn(i32) -> Partition,
) -> Result<Recorded, LedgerError> {
    let tx = client.transaction().await?;
    // The upload's row lock orders this against the settle and expiry sweeps: a chunk is never
    // added to an upload that expired meanwhile, and one added to an upload that settled
    // meanwhile reopens it (below).
    let current = tx
        .query_one(
            &format!(
                "SELECT state, {SETTLED}, {RETRYABLE}, header, expected_chunks FROM uploads
                 WHERE upload_id = $1 FOR UPDATE"
            ),
            &[&upload.upload_id],
        )
        .await?;
    let (state, settled, retryable) = (
        UploadState::parse(current.get(0))?,
        current.get::<_, bool>(1),
        current.get::<_, bool>(2),
    );
    let (header, expected) = (
        current.get::<_, Option<Vec<String>>>(3),
        current.get::<_, Option<i32>>(4),
    );
    // Every chunk of an upload is read with one header: new bytes for a failed chunk too.
    let differs = header
        .as_ref()
        .filter(|header| stored.has_header && **header != stored.header)
        .map(|header| Recorded::HeaderDiffers(header.clone()));
    if !state.is_open() && !settled {
        // An upload ended by failed chunks takes new bytes for one of them, and nothing else.
        if let (true, Some(n)) = (retryable, chunk_no) {
            if let Some(differs) = differs {
                return Ok(differs);
            }
            if let Some(replaced) = replace(&tx, upload, n, &stored).await? {
                tx.commit().await?;
                return Ok(Recorded::Replaced(replaced));
            }
        }
        return Ok(Recorded::Closed(state));
    }
    let chunk_no = match chunk_no {
        Some(n) => n,
        None => tx
            .query_one(
                "UPDATE uploads SET next_chunk_no = next_chunk_no + 1
                 WHERE upload_id = $1 RETURNING next_chunk_no - 1",
                &[&upload.upload_id],
            )
            .await?
            .get(0),
    };
    if let Some(expected) = expected.filter(|&expected| chunk_no >= expected) {
        return Ok(Recorded::Beyond(expected)); // Rolls the arrival counter back too.
    }
    if let Some(differs) = differs {
        return Ok(differs);
    }
    // The first chunk that can say how every chunk of the upload is read sets it: one with a
    // header, the file's start (chunk 0), or any when files have no header. A headerless chunk
    // before that waits (the engine parks it); once the header is set, the waiting chunks are
    // marked unannounced so they are published again (by the request that set it, else by the
    // announce sweep) and loaded with it.
    match header {
        Some(_) => {}
        None if !stored.has_header && stored.header_expected && chunk_no != 0 => {}
        None => {
            tx.execute(
                "UPDATE uploads SET header = $2 WHERE upload_id = $1",
                &[&upload.upload_id, &stored.header],
            )
            .await?;
            tx.execute(
                "UPDATE chunks SET announced_at = NULL WHERE upload_id = $1 AND state = 'stored'",
                &[&upload.upload_id],
            )
            .await?;
        }
    }
    let partition = partition_of(chunk_no).0;
    let inserted = tx
        .execute(
            "INSERT INTO chunks (upload_id, chunk_no, stored_path, bytes, sha256, has_header, partition)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (upload_id, chunk_no) DO NOTHING",
            &[
                &upload.upload_id,
                &chunk_no,
                &stored.path,
                &(stored.bytes as i64),
                &stored.sha256,
                &stored.has_header,
                &partition,
            ],
        )
        .await?;
    if inserted == 0 {
        let row = tx
            .query_one(
                "SELECT stored_path, bytes, sha256, has_header,
                        (extract(epoch FROM received_at) * 1000)::int8
                 FROM chunks WHERE upload_id = $1 AND chunk_no = $2",
                &[&upload.upload_id, &chunk_no],
            )
            .await?;
        let sha256: String = row.get(2);
        if sha256 != stored.sha256 {
            return Ok(match replace(&tx, upload, chunk_no, &stored).await? {
                Some(replaced) => {
                    tx.commit().await?;
                    Recorded::Replaced(replaced)
                }
                None => Recorded::Conflict,
            });
        }
        return Ok(Recorded::Again(ChunkMessage {
            upload_id: upload.upload_id,
            chunk_no,
            path: row.get(0),
            bytes: row.get::<_, i64>(1) as u64,
            sha256,
            dataset: upload.dataset.clone(),
            has_header: row.get(3),
            received_at_ms: row.get(4),
        }));
    }
    // Chunks declared by number move the arrival counter past them, so a multipart chunk sent
    // later never takes a number already used. A settled upload is reopened, and its next end
    // is announced again by its completion hook.
    tx.execute(
        &format!(
            "UPDATE uploads SET chunks_received = chunks_received + 1,
                bytes_received = bytes_received + $2,
                next_chunk_no = greatest(next_chunk_no, $3 + 1),
                state = CASE WHEN {SETTLED} THEN 'receiving'
                             WHEN state = 'receiving' AND expected_chunks = chunks_received + 1
                             THEN 'processing' ELSE state END,
                completed_at = CASE WHEN {SETTLED} THEN NULL ELSE completed_at END,
                notified_state = CASE WHEN {SETTLED} THEN NULL ELSE notified_state END,
                {HOOK_AFRESH}
             WHERE upload_id = $1"
        ),
        &[&upload.upload_id, &(stored.bytes as i64), &chunk_no],
    )
    .await?;
    tx.commit().await?;
    Ok(Recorded::New(ChunkMessage {
        upload_id: upload.upload_id,
        chunk_no,
        path: stored.path,
        bytes: stored.bytes,
        sha256: stored.sha256,
        dataset: upload.dataset.clone(),
        has_header: stored.has_header,
        received_at_ms: now_ms(),
    }))
}

/// New bytes for a failed chunk ([`retries::replace`]), unless they are the bytes it has.
async fn replace(
    tx: &tokio_postgres::Transaction<'_>,
    upload: &Upload,
    chunk_no: i32,
    stored: &NewChunk,
) -> Result<Option<Replaced>, LedgerError> {
    let same = tx
        .query_opt(
            "SELECT 1 FROM chunks WHERE upload_id = $1 AND chunk_no = $2 AND sha256 = $3",
            &[&upload.upload_id, &chunk_no, &stored.sha256],
        )
        .await?;
    if same.is_some() {
        return Ok(None);
    }
    retries::replace(tx, upload.upload_id, chunk_no, &upload.dataset, stored).await
}

/// Takes back a chunk whose message the broker did not confirm, unless the publish may have
/// happened after all: the engine loaded the chunk or some of its pieces (a confirm lost or
/// late; its rows must not be loaded again under a new record), or another request or the
/// announce sweep had it confirmed. Returns whether it was taken back.
pub async fn forget_chunk(
    client: &mut Client,
    message: &ChunkMessage,
) -> Result<bool, LedgerError> {
    let tx = client.transaction().await?;
    // The upload's row first: the lock order of every change to both (see `loads::finish`).
    tx.execute(
        "SELECT 1 FROM uploads WHERE upload_id = $1 FOR UPDATE",
        &[&message.upload_id],
    )
    .await?;
    // Then the chunk's: a piece commits holding it share-locked, so this waits for pieces in
    // flight, and the next statement (a new snapshot) sees what they committed.
    let (upload_id, chunk_no) = (&message.upload_id, &message.chunk_no);
    let unannounced = tx
        .query_opt(
            "SELECT 1 FROM chunks WHERE upload_id = $1 AND chunk_no = $2 AND state = 'stored'
               AND announced_at IS NULL
             FOR UPDATE",
            &[upload_id, chunk_no],
        )
        .await?;
    if unannounced.is_none() {
        return Ok(false);
    }
    let deleted = tx
        .execute(
            "DELETE FROM chunks c WHERE upload_id = $1 AND chunk_no = $2
               AND NOT EXISTS (SELECT 1 FROM chunk_pieces p
                               WHERE p.upload_id = c.upload_id AND p.chunk_no = c.chunk_no
                                 AND p.state = 'loaded')",
            &[upload_id, chunk_no],
        )
        .await?;
    if deleted == 1 {
        tx.execute(
            "UPDATE uploads SET chunks_received = chunks_received - 1,
                    bytes_received = bytes_received - $2,
                    state = CASE WHEN state = 'processing' AND completed_at IS NULL
                                 AND expected_chunks IS NOT NULL THEN 'receiving' ELSE state END
             WHERE upload_id = $1",
            &[&message.upload_id, &(message.bytes as i64)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(deleted == 1)
}

/// A chunk body of the upload is on its way: the upload is not idle (see
/// [`crate::completion::settle_idle`] and [`crate::completion::expire`]) while the gateway
/// receiving it calls this every few seconds. Written only if no body was seen for `fresh_for`
/// (the bodies of one upload arriving side by side write once a period, not each), and without
/// waiting for the WAL flush: a mark lost in a crash is only one period's, and the upload's row
/// is the one every chunk of it updates.
pub async fn body_arriving(
    client: &mut Client,
    upload_id: Uuid,
    fresh_for: Duration,
) -> Result<(), LedgerError> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    tx.execute(
        "UPDATE uploads SET body_seen_at = now()
         WHERE upload_id = $1
           AND (body_seen_at IS NULL OR body_seen_at < now() - make_interval(secs => $2))",
        &[&upload_id, &fresh_for.as_secs_f64()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What declaring an upload's number of chunks did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// Declared (now or before, the same number): the upload's state.
    Now(UploadState),
    /// Another number was declared before, or the upload takes no more chunks.
    Refused,
    /// Chunk `highest` was received already: an upload of fewer chunks would end without it.
    Fewer { highest: i32 },
}

/// Declares the upload's number of chunks (`chunks`); the upload is done at once if they are
/// all loaded already.
pub async fn declare_chunks(
    client: &mut Client,
    upload_id: Uuid,
    chunks: i32,
) -> Result<Declared, LedgerError> {
    let tx = client.transaction().await?;
    // The upload's row first, as `record_chunk` does: a chunk recorded meanwhile is counted
    // below, and one recorded after sees the number.
    tx.execute(
        "SELECT 1 FROM uploads WHERE upload_id = $1 FOR UPDATE",
        &[&upload_id],
    )
    .await?;
    let highest: Option<i32> = tx
        .query_one(
            "SELECT max(chunk_no) FROM chunks WHERE upload_id = $1",
            &[&upload_id],
        )
        .await?
        .get(0);
    if let Some(highest) = highest.filter(|&highest| highest >= chunks) {
        return Ok(Declared::Fewer { highest });
    }
    // A settled upload may still declare its count (the done rule then ends it the same way).
    // `processing` once every declared chunk is here; until then it is `receiving`, which
    // expiry fails if the missing chunks never come.
    let declared = tx
        .query_opt(
            &format!(
                "UPDATE uploads SET expected_chunks = $2,
                        state = CASE WHEN chunks_received >= $2 THEN 'processing'
                                     ELSE 'receiving' END,
                        completed_at = CASE WHEN {SETTLED} THEN NULL ELSE completed_at END,
                        notified_state = CASE WHEN {SETTLED} THEN NULL ELSE notified_state END,
                        {HOOK_AFRESH}
                 WHERE upload_id = $1 AND (expected_chunks IS NULL OR expected_chunks = $2)
                   AND (state IN ('receiving', 'processing') OR {SETTLED})
                 RETURNING state"
            ),
            &[&upload_id, &chunks],
        )
        .await?;
    let Some(declared) = declared else {
        return Ok(Declared::Refused);
    };
    let declared = UploadState::parse(declared.get(0))?;
    // A settled upload declaring more chunks than it has is open again (its end and its
    // completion time were cleared above); one with all of them ends anew.
    let state = end_if_done(&tx, upload_id).await?.unwrap_or(declared);
    tx.commit().await?;
    Ok(Declared::Now(state))
}

/// The upload's state, counters, received chunk numbers and first rejected rows.
/// `ttl` is `INGEST_UPLOAD_TTL_SECS` (for `expires_at`), `settle_after`
/// `INGEST_UPLOAD_SETTLE_SECS` (for `settles_at`).
pub async fn status(
    client: &Client,
    upload_id: Uuid,
    ttl: Duration,
    settle_after: Duration,
) -> Result<UploadStatus, LedgerError> {
    let row = client
        .query_one(
            &format!(
                "SELECT {}, CASE WHEN u.expected_chunks IS NULL AND u.state = 'receiving'
                         THEN (greatest((SELECT max(received_at) FROM chunks c
                                         WHERE c.upload_id = u.upload_id), u.body_seen_at)
                               + make_interval(secs => $3))::text END
                 FROM uploads u WHERE u.upload_id = $1",
                summary_columns("$2")
            ),
            &[&upload_id, &ttl.as_secs_f64(), &settle_after.as_secs_f64()],
        )
        .await?;
    let chunks = client
        .query(
            "SELECT chunk_no, error, state = 'failed' FROM chunks WHERE upload_id = $1
             ORDER BY chunk_no",
            &[&upload_id],
        )
        .await?;
    let rejected = client
        .query(
            "SELECT chunk_no, line_no, reason, raw_line FROM rejected_rows
             WHERE upload_id = $1 ORDER BY chunk_no, line_no LIMIT 100",
            &[&upload_id],
        )
        .await?;
    let mut summary = UploadSummary::from_row(&row)?;
    if summary.error.is_none() {
        summary.error = chunks.iter().find_map(|c| {
            c.get::<_, Option<String>>(1)
                .map(|e| format!("chunk {}: {e}", c.get::<_, i32>(0)))
        });
    }
    Ok(UploadStatus {
        completion: match summary.expected_chunks {
            Some(_) => Completion::Declared,
            None => Completion::Settle {
                idle_secs: settle_after.as_secs(),
                settles_at: row.get(SUMMARY_WIDTH),
            },
        },
        summary,
        received_chunks: chunks.iter().map(|c| c.get(0)).collect(),
        failed_chunks: chunks
            .iter()
            .filter(|c| c.get::<_, bool>(2))
            .map(|c| c.get(0))
            .collect(),
        rejected_rows: rejected.iter().map(RejectedRow::from_row).collect(),
    })
}

/// The columns [`UploadSummary::from_row`] reads, from `uploads u`; `ttl` is the placeholder of
/// the expiry TTL in seconds.
fn summary_columns(ttl: &str) -> String {
    format!(
        "u.upload_id, u.dataset, u.state, u.on_error, u.expected_chunks, u.chunks_received,
         u.chunks_loaded, u.chunks_failed, u.bytes_received, u.rows_loaded, u.rows_rejected,
         u.rows_undone, u.error, u.created_at::text, u.completed_at::text,
         CASE WHEN u.state = 'receiving'
              THEN (greatest(u.created_at, u.body_seen_at,
                             (SELECT max(received_at) FROM chunks c
                              WHERE c.upload_id = u.upload_id))
                    + make_interval(secs => {ttl}))::text END,
         u.rows_skipped"
    )
}

/// How many columns [`summary_columns`] holds.
const SUMMARY_WIDTH: usize = 17;

impl UploadSummary {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, LedgerError> {
        Ok(Self {
            folder: row.get(0),
            dataset: row.get(1),
            state: UploadState::parse(row.get(2))?,
            on_error: parse_policy(row.get(3))?.as_str(),
            expected_chunks: row.get(4),
            chunks_received: row.get(5),
            chunks_loaded: row.get(6),
            chunks_failed: row.get(7),
            bytes_received: row.get(8),
            rows_loaded: row.get(9),
            rows_rejected: row.get(10),
            rows_undone: row.get(11),
            error: row.get(12),
            created_at: row.get(13),
            completed_at: row.get(14),
            expires_at: row.get(15),
            rows_skipped: row.get(16),
        })
    }
}

impl RejectedRow {
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Self {
        Self {
            chunk: row.get(0),
            line: row.get(1),
            reason: row.get(2),
            raw: row.get(3),
        }
    }
}

/// Which of a client's uploads to list: newest first, after `after` (the keyset of the last one
/// of the previous page), in state `state` if given.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    pub client_id: &'a str,
    pub state: Option<UploadState>,
    /// `(created_at as text, upload_id)` of the previous page's last upload.
    pub after: Option<(String, Uuid)>,
    pub limit: i64,
    /// `INGEST_UPLOAD_TTL_SECS`, for `expires_at`.
    pub ttl: Duration,
}

/// One upload in a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadSummary {
    pub folder: Uuid,
    pub dataset: String,
    pub state: UploadState,
    /// `reject-rows` or `reject-chunk`.
    #[schema(value_type = String, example = "reject-rows")]
    pub on_error: &'static str,
    pub expected_chunks: Option<i32>,
    pub chunks_received: i32,
    pub chunks_loaded: i32,
    pub chunks_failed: i32,
    pub bytes_received: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    /// Valid rows not loaded because their unique key was in the table already (datasets with
    /// `on_conflict = "skip"`).
    pub rows_skipped: i64,
    pub rows_undone: i64,
    pub error: Option<String>,
    /// Exact (microseconds, with its offset): the keyset of the next page starts from it.
    pub created_at: String,
    pub completed_at: Option<String>,
    /// While receiving: when expiry fails it if nothing more arrives (its last activity, a chunk
    /// or a chunk body seen arriving, plus the TTL). An upload without a declared count whose chunks are all loaded settles `done`
    /// instead ([`crate::completion`]).
    pub expires_at: Option<String>,
}

/// The client's uploads as `query` asks, newest first. The keyset `(created_at, upload_id)`
/// makes each page one index range, however many uploads came before.
pub async fn list(
    client: &Client,
    query: &ListQuery<'_>,
) -> Result<Vec<UploadSummary>, LedgerError> {
    let state = query.state.map(UploadState::as_str);
    let (after_created, after_id) = match &query.after {
        Some((created_at, upload_id)) => (Some(created_at.as_str()), Some(*upload_id)),
        None => (None, None),
    };
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM uploads u
                 WHERE u.client_id = $1 AND ($2::text IS NULL OR u.state = $2::text)
                   AND ($3::text IS NULL
                        OR (u.created_at, u.upload_id) < ($3::text::timestamptz, $4::uuid))
                 ORDER BY u.created_at DESC, u.upload_id DESC
                 LIMIT $5",
                summary_columns("$6")
            ),
            &[
                &query.client_id,
                &state,
                &after_created,
                &after_id,
                &query.limit,
                &query.ttl.as_secs_f64(),
            ],
        )
        .await?;
    rows.iter().map(UploadSummary::from_row).collect()
}

/// `GET /api/upload/{folder}`: its summary (as listed), how it ends, and its chunks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadStatus {
    #[serde(flatten)]
    pub summary: UploadSummary,
    /// How this upload ends.
    pub completion: Completion,
    pub received_chunks: Vec<i32>,
    /// The chunks that failed: what `POST .../chunks/{n}/retry` (or a new PUT) can load again.
    pub failed_chunks: Vec<i32>,
    pub rejected_rows: Vec<RejectedRow>,
}

/// How an upload ends, as its status shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Completion {
    /// `done` when the declared number of chunks is loaded (`/complete` or `expected_chunks`).
    Declared,
    /// No count declared: `done` once every received chunk is loaded and none arrived for
    /// `idle_secs` ([`crate::completion::settle_idle`]); `settles_at` is the earliest moment,
    /// while receiving with nothing pending.
    Settle {
        idle_secs: u64,
        settles_at: Option<String>,
    },
}

/// One rejected row in a status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RejectedRow {
    pub chunk: i32,
    pub line: i32,
    pub reason: String,
    pub raw: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
