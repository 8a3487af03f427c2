//! Upload sessions and the chunk ledger in PostgreSQL (`uploads`, `chunks`).
//!
//! A chunk's ledger row is inserted only after its file is synced under its final name, and its
//! message is published only after that row is committed: the engine never sees a chunk that is
//! not wholly on disk. A client only ever sees its own uploads.

use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use ingest_contract::chunk::ChunkMessage;

use crate::errors::ApiError;

/// The optional body of `POST /api/upload`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    pub dataset: Option<String>,
    pub expected_chunks: Option<i32>,
    pub total_bytes: Option<i64>,
    pub on_error: Option<String>,
}

/// An upload as its owner sees it.
#[derive(Debug, Clone)]
pub struct Upload {
    pub upload_id: Uuid,
    pub dataset: String,
    pub state: String,
    pub expected_chunks: Option<i32>,
    /// Ended by the settle rule ([`crate::settle`]), not by a declared count or expiry: a
    /// further chunk reopens it.
    pub settled: bool,
}

impl Upload {
    /// Whether a chunk may still be added (a settled upload is reopened by one).
    pub fn accepts_chunks(&self) -> bool {
        matches!(self.state.as_str(), "receiving" | "processing") || self.settled
    }
}

/// Settled: ended without a declared count and without expiring (see [`crate::settle`]).
const SETTLED_SQL: &str =
    "(expected_chunks IS NULL AND state IN ('done', 'failed') AND error IS NULL)";

/// The datasets the engine knows (configurable datasets come later).
pub const DATASETS: &[(&str, &str)] = &[("transactions", "date,content,amount,type")];

/// The header line of a dataset.
pub fn header_of(dataset: &str) -> Option<&'static str> {
    DATASETS
        .iter()
        .find(|(name, _)| *name == dataset)
        .map(|(_, header)| *header)
}

/// Result of recording a stored chunk in the ledger.
#[derive(Debug)]
pub enum Recorded {
    /// A new chunk: publish this message.
    New(ChunkMessage),
    /// The same chunk number with the same content was stored before: publish the original
    /// message again (harmless: the engine loads a chunk once).
    Again(ChunkMessage),
    /// The same chunk number with different content.
    Conflict,
}

/// Upload sessions and their chunks.
#[derive(Clone)]
pub struct Uploads {
    pool: Pool,
    /// `INGEST_UPLOAD_SETTLE_SECS`, shown in statuses.
    settle_after: std::time::Duration,
}

impl Uploads {
    pub fn new(pool: Pool, settle_after: std::time::Duration) -> Self {
        Self { pool, settle_after }
    }

    pub async fn create(&self, client_id: &str, new: NewUpload) -> Result<Upload, ApiError> {
        let dataset = new.dataset.unwrap_or_else(|| "transactions".to_owned());
        if header_of(&dataset).is_none() {
            return Err(ApiError::BadRequest(format!("unknown dataset {dataset:?}")));
        }
        let on_error = new.on_error.unwrap_or_else(|| "reject-rows".to_owned());
        if on_error != "reject-rows" && on_error != "reject-chunk" {
            return Err(ApiError::BadRequest(
                "on_error must be \"reject-rows\" or \"reject-chunk\"".into(),
            ));
        }
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
        let upload_id = Uuid::new_v4();
        let db = self.pool.get().await?;
        db.execute(
            "INSERT INTO uploads (upload_id, client_id, dataset, on_error, expected_chunks, total_bytes)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&upload_id, &client_id, &dataset, &on_error, &new.expected_chunks, &new.total_bytes],
        )
        .await?;
        Ok(Upload {
            upload_id,
            dataset,
            state: "receiving".into(),
            expected_chunks: new.expected_chunks,
            settled: false,
        })
    }

    /// The upload if it exists and belongs to `client_id` (another client's upload is "not found").
    pub async fn find(&self, client_id: &str, upload_id: Uuid) -> Result<Upload, ApiError> {
        let db = self.pool.get().await?;
        let row = db
            .query_opt(
                &format!(
                    "SELECT dataset, state, expected_chunks, {SETTLED_SQL} FROM uploads
                     WHERE upload_id = $1 AND client_id = $2"
                ),
                &[&upload_id, &client_id],
            )
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(Upload {
            upload_id,
            dataset: row.get(0),
            state: row.get(1),
            expected_chunks: row.get(2),
            settled: row.get(3),
        })
    }

    /// Records a stored chunk. `chunk_no` None numbers it in arrival order (multipart uploads).
    pub async fn record_chunk(
        &self,
        upload: &Upload,
        chunk_no: Option<i32>,
        stored: StoredFacts,
        partition_of: impl Fn(i32) -> u16,
    ) -> Result<Recorded, ApiError> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        // The upload's row lock orders this against the settle and expiry sweeps: a chunk is
        // never added to an upload that expired meanwhile, and one added to an upload that
        // settled meanwhile reopens it (below).
        let current = tx
            .query_one(
                &format!(
                    "SELECT state, {SETTLED_SQL} FROM uploads WHERE upload_id = $1 FOR UPDATE"
                ),
                &[&upload.upload_id],
            )
            .await?;
        let (state, settled): (String, bool) = (current.get(0), current.get(1));
        if !matches!(state.as_str(), "receiving" | "processing") && !settled {
            return Err(ApiError::Conflict(format!(
                "upload is {state}; it takes no more chunks"
            )));
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
        let partition = i32::from(partition_of(chunk_no));
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
                    "SELECT stored_path, bytes, sha256, has_header, extract(epoch FROM received_at)::float8
                     FROM chunks WHERE upload_id = $1 AND chunk_no = $2",
                    &[&upload.upload_id, &chunk_no],
                )
                .await?;
            let sha256: String = row.get(2);
            if sha256 != stored.sha256 {
                return Ok(Recorded::Conflict);
            }
            let bytes: i64 = row.get(1);
            let received: f64 = row.get(4);
            return Ok(Recorded::Again(ChunkMessage {
                upload_id: upload.upload_id,
                chunk_no,
                path: row.get(0),
                bytes: bytes as u64,
                sha256,
                dataset: upload.dataset.clone(),
                has_header: row.get(3),
                received_at_ms: (received * 1000.0) as i64,
            }));
        }
        // Chunks declared by number move the arrival counter past them, so a multipart chunk
        // sent later never takes a number already used. A settled upload is reopened.
        tx.execute(
            &format!(
                "UPDATE uploads SET chunks_received = chunks_received + 1,
                    bytes_received = bytes_received + $2,
                    next_chunk_no = greatest(next_chunk_no, $3 + 1),
                    state = CASE WHEN {SETTLED_SQL} THEN 'receiving'
                                 WHEN state = 'receiving' AND expected_chunks = chunks_received + 1
                                 THEN 'processing' ELSE state END,
                    completed_at = CASE WHEN {SETTLED_SQL} THEN NULL ELSE completed_at END
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

    /// Takes back a chunk whose message the broker did not confirm, unless the engine already
    /// loaded it (then the publish did happen). Returns whether it was taken back.
    pub async fn forget_chunk(&self, message: &ChunkMessage) -> Result<bool, ApiError> {
        let mut db = self.pool.get().await?;
        let tx = db.transaction().await?;
        let deleted = tx
            .execute(
                "DELETE FROM chunks WHERE upload_id = $1 AND chunk_no = $2 AND state = 'stored'",
                &[&message.upload_id, &message.chunk_no],
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

    /// Records that the broker confirmed the chunk's message. Chunks a killed gateway never
    /// announced are published again by [`crate::orphans`]; if this update fails, that sweep
    /// publishes the chunk once more, which the engine's ledger makes harmless.
    pub async fn mark_announced(&self, message: &ChunkMessage) {
        let marked = async {
            let db = self.pool.get().await?;
            db.execute(
                "UPDATE chunks SET announced_at = now()
                 WHERE upload_id = $1 AND chunk_no = $2 AND announced_at IS NULL",
                &[&message.upload_id, &message.chunk_no],
            )
            .await?;
            Ok::<_, ApiError>(())
        }
        .await;
        if let Err(err) = marked {
            tracing::debug!(error = %err, "could not mark a chunk announced");
        }
    }

    /// Declares the number of chunks; the upload is done at once if they are all loaded already.
    pub async fn complete(&self, upload: &Upload, chunks: i32) -> Result<String, ApiError> {
        if !(0..=1_000_000).contains(&chunks) {
            return Err(ApiError::BadRequest("chunks must be 0 to 1000000".into()));
        }
        let db = self.pool.get().await?;
        // A settled upload may still declare its count (the rule below ends it the same way).
        let row = db
            .query_opt(
                &format!(
                    "UPDATE uploads SET expected_chunks = $2,
                    state = CASE
                        WHEN chunks_loaded + chunks_failed >= $2
                            THEN CASE WHEN chunks_failed > 0 THEN 'failed' ELSE 'done' END
                        ELSE 'processing' END,
                    completed_at = CASE WHEN chunks_loaded + chunks_failed >= $2
                                        THEN coalesce(completed_at, now()) END
                 WHERE upload_id = $1 AND (expected_chunks IS NULL OR expected_chunks = $2)
                   AND (state IN ('receiving', 'processing') OR {SETTLED_SQL})
                 RETURNING state"
                ),
                &[&upload.upload_id, &chunks],
            )
            .await?;
        match row {
            Some(row) => Ok(row.get(0)),
            None if upload.expected_chunks == Some(chunks) => Ok(upload.state.clone()),
            None => Err(ApiError::Conflict(format!(
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
        let row = db
            .query_one(
                "SELECT state, dataset, on_error, expected_chunks, chunks_received, chunks_loaded,
                        chunks_failed, bytes_received, rows_loaded, rows_rejected, error,
                        created_at::text, completed_at::text,
                        CASE WHEN expected_chunks IS NULL AND state = 'receiving'
                             THEN ((SELECT max(received_at) FROM chunks c
                                    WHERE c.upload_id = uploads.upload_id)
                                   + make_interval(secs => $2))::text END
                 FROM uploads WHERE upload_id = $1",
                &[&upload.upload_id, &self.settle_after.as_secs_f64()],
            )
            .await?;
        let chunks = db
            .query(
                "SELECT chunk_no, state, error FROM chunks WHERE upload_id = $1 ORDER BY chunk_no",
                &[&upload.upload_id],
            )
            .await?;
        let rejected = db
            .query(
                "SELECT chunk_no, line_no, reason, raw_line FROM rejected_rows
                 WHERE upload_id = $1 ORDER BY chunk_no, line_no LIMIT 100",
                &[&upload.upload_id],
            )
            .await?;
        let error: Option<String> = row.get(10);
        let first_chunk_error = chunks.iter().find_map(|c| {
            c.get::<_, Option<String>>(2)
                .map(|e| format!("chunk {}: {e}", c.get::<_, i32>(0)))
        });
        Ok(UploadStatus {
            folder: upload.upload_id,
            state: row.get(0),
            dataset: row.get(1),
            on_error: row.get(2),
            expected_chunks: row.get(3),
            chunks_received: row.get(4),
            chunks_loaded: row.get(5),
            chunks_failed: row.get(6),
            bytes_received: row.get(7),
            rows_loaded: row.get(8),
            rows_rejected: row.get(9),
            error: error.or(first_chunk_error),
            created_at: row.get(11),
            completed_at: row.get(12),
            completion: if row.get::<_, Option<i32>>(3).is_some() {
                Completion::Declared
            } else {
                Completion::Settle {
                    idle_secs: self.settle_after.as_secs(),
                    settles_at: row.get(13),
                }
            },
            received_chunks: chunks.iter().map(|c| c.get(0)).collect(),
            rejected_rows: rejected
                .iter()
                .map(|r| RejectedRow {
                    chunk: r.get(0),
                    line: r.get(1),
                    reason: r.get(2),
                    raw: r.get(3),
                })
                .collect(),
        })
    }
}

/// What the store knows of a chunk it just persisted.
#[derive(Debug)]
pub struct StoredFacts {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub has_header: bool,
}

/// `GET /api/upload/{folder}`.
#[derive(Debug, Serialize)]
pub struct UploadStatus {
    pub folder: Uuid,
    pub state: String,
    pub dataset: String,
    pub on_error: String,
    pub expected_chunks: Option<i32>,
    pub chunks_received: i32,
    pub chunks_loaded: i32,
    pub chunks_failed: i32,
    pub bytes_received: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub error: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// How this upload ends.
    pub completion: Completion,
    pub received_chunks: Vec<i32>,
    pub rejected_rows: Vec<RejectedRow>,
}

/// How an upload ends, as its status shows it.
#[derive(Debug, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Completion {
    /// `done` when the declared number of chunks is loaded (`/complete` or `expected_chunks`).
    Declared,
    /// No count declared: `done` once every received chunk is loaded and none arrived for
    /// `idle_secs` ([`crate::settle`]); `settles_at` is the earliest moment, while receiving
    /// with nothing pending.
    Settle {
        idle_secs: u64,
        settles_at: Option<String>,
    },
}

/// One rejected row in a status.
#[derive(Debug, Serialize)]
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
