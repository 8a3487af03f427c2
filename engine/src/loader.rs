//! Loading one chunk, exactly once, in one PostgreSQL transaction.
//!
//! The transaction locks the chunk's ledger row (a chunk already loaded or failed is skipped:
//! that is what makes a redelivered or republished message harmless), checks that this process
//! still holds the partition's lease (a process that lost it cannot commit), COPYs the rows while
//! a blocking thread parses and encodes them, records the rejected rows, updates the ledger and
//! the upload's counters (marking the upload done with its last chunk), and stores the stream
//! offset. All of it commits together or not at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Transaction};

use ingest_contract::chunk::ChunkMessage;

use crate::cleanup::ChunkFiles;
use crate::dataset::Dataset;
use crate::partitions::{first_row_month, MonthPartitions};
use crate::rejected;
use crate::validate::{self, ChunkError, ChunkReport, ErrorPolicy, Limits, Lineage};
use ingest_rows::rejects::{RejectedCopy, RejectedStream};

/// How many encoded buffers (about 1 MiB each) may wait for the COPY.
const COPY_QUEUE: usize = 4;

/// Where a message sits: its partition stream and offset, and who must own the partition.
#[derive(Debug, Clone)]
pub struct Position {
    pub stream: String,
    pub partition: i32,
    pub offset: u64,
    pub group: String,
    pub owner: String,
}

/// What happened to a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Loaded {
        rows: u64,
        rejected: u64,
    },
    Failed {
        reason: String,
    },
    /// Loaded or failed before (a redelivery), or unknown to the ledger.
    Skipped,
}

/// Why a chunk could not be committed (the message will be retried).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this engine no longer owns partition {0}")]
    LeaseLost(i32),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("chunk parser stopped: {0}")]
    Parser(String),
}

/// Loads chunks for one partition processor.
pub struct Loader {
    pub upload_dir: PathBuf,
    pub archive_dir: Option<PathBuf>,
    pub limits: Limits,
    pub partitions: Arc<MonthPartitions>,
}

struct ChunkRow {
    stored_path: String,
    on_error: String,
    dataset: String,
}

impl Loader {
    /// Loads `message` at `position` over `client`, committing everything in one transaction.
    pub async fn load(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
    ) -> Result<Outcome, LoadError> {
        let started = Instant::now();
        self.prepare_first_month(client, message).await?;
        // A new month means: roll back, create its partition, load again (at most once per month).
        for _attempt in 0..3 {
            let tx = client.transaction().await?;
            let Some(row) = claim(&tx, message, position).await? else {
                commit_offset(&tx, position).await?;
                tx.commit().await?;
                return Ok(Outcome::Skipped);
            };
            let dataset = Dataset::builtin(&row.dataset);
            let policy = ErrorPolicy::parse(&row.on_error).unwrap_or(ErrorPolicy::RejectRows);
            let path = self.upload_dir.join(&row.stored_path);
            let parsed = match dataset {
                None => Err(ChunkError::NotCsv(format!(
                    "unknown dataset {:?}",
                    row.dataset
                ))),
                Some(ref dataset) => self.copy(&tx, &path, dataset, message, policy).await?,
            };
            let (report, rejects) = match parsed {
                Ok(parsed) => parsed,
                Err(err) => {
                    drop(tx);
                    let reason = self
                        .failure_reason(err, &path, dataset.as_ref(), message)
                        .await;
                    let outcome = self.fail(client, message, position, reason).await?;
                    // The reason and the bad rows are recorded: the file has served its purpose.
                    self.remove_file(client, message, &path).await;
                    return Ok(outcome);
                }
            };
            let missing = self.partitions.missing(&report.months);
            if !missing.is_empty() {
                drop(tx); // Rolls back; the partitions are created outside it.
                self.partitions.create(client, &missing).await?;
                continue;
            }
            if let Some(rejects) = rejects {
                rejected::copy(&tx, rejects).await?;
            }
            let rejected = report.rows_rejected;
            finish_chunk(&tx, message, "loaded", report.rows_loaded, rejected, None).await?;
            commit_offset(&tx, position).await?;
            tx.commit().await?;
            self.remove_file(client, message, &path).await;
            record_metrics(message, &report, started);
            return Ok(Outcome::Loaded {
                rows: report.rows_loaded,
                rejected,
            });
        }
        Err(LoadError::Parser(
            "partitions kept changing under the chunk".into(),
        ))
    }

    /// Creates the partition of the chunk's first row before its transaction starts.
    async fn prepare_first_month(
        &self,
        client: &Client,
        message: &ChunkMessage,
    ) -> Result<(), LoadError> {
        let Some(dataset) = Dataset::builtin(&message.dataset) else {
            return Ok(());
        };
        let relative = std::path::Path::new(&message.path);
        if !relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Ok(()); // Never read outside the upload directory on a message's word.
        }
        let path = self.upload_dir.join(relative);
        let head = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut head = Vec::with_capacity(64 * 1024);
            std::fs::File::open(path)
                .and_then(|file| file.take(64 * 1024).read_to_end(&mut head))
                .map(|_| head)
        })
        .await
        .map_err(|err| LoadError::Parser(err.to_string()))?;
        // The message's path is only a hint here: a missing or odd file is dealt with later,
        // from the ledger's own path.
        let Ok(head) = head else {
            return Ok(());
        };
        if let Some(month) = first_row_month(&head, &dataset) {
            let missing = self
                .partitions
                .missing(&std::collections::BTreeSet::from([month]));
            if !missing.is_empty() {
                self.partitions.create(client, &missing).await?;
            }
        }
        Ok(())
    }

    /// Streams the chunk through the parser into `COPY ... FROM STDIN (FORMAT binary)`.
    async fn copy(
        &self,
        tx: &Transaction<'_>,
        path: &Path,
        dataset: &Dataset,
        message: &ChunkMessage,
        policy: ErrorPolicy,
    ) -> Result<Result<(ChunkReport, Option<RejectedStream>), ChunkError>, LoadError> {
        let (sender, mut buffers) = mpsc::channel::<Bytes>(COPY_QUEUE);
        let parser = {
            let path = path.to_owned();
            let dataset = dataset.clone();
            let limits = self.limits.clone();
            let lineage = lineage(message);
            let upload_dir = self.upload_dir.clone();
            tokio::task::spawn_blocking(move || {
                validate_file(
                    &path,
                    &dataset,
                    lineage,
                    policy,
                    &limits,
                    &upload_dir,
                    &mut |b| sender.blocking_send(b).is_ok(),
                )
            })
        };
        // COPY starts with the first buffer: a chunk with no loadable row sends nothing.
        let copy_started = Instant::now();
        let mut copied = None;
        if let Some(first) = buffers.recv().await {
            let mut sink = Box::pin(tx.copy_in(&dataset.copy_statement()).await?);
            sink.send(first).await?;
            while let Some(buffer) = buffers.recv().await {
                sink.send(buffer).await?;
            }
            copied = Some(sink);
        }
        let parsed = parser
            .await
            .map_err(|err| LoadError::Parser(err.to_string()))?;
        if let (Ok(_), Some(mut sink)) = (&parsed, copied) {
            sink.as_mut().finish().await?;
            metrics::histogram!("ingest_copy_duration_seconds")
                .record(copy_started.elapsed().as_secs_f64());
        }
        // On a parse error the sink is dropped unfinished: PostgreSQL aborts the COPY and the
        // transaction is rolled back by the caller.
        Ok(parsed)
    }

    async fn failure_reason(
        &self,
        err: ChunkError,
        path: &Path,
        dataset: Option<&Dataset>,
        message: &ChunkMessage,
    ) -> Failure {
        match err {
            ChunkError::RejectedChunk(first) => {
                // Count and keep the chunk's bad rows, so loaded + rejected = data rows holds.
                let counted = match dataset {
                    Some(dataset) => {
                        count_rows(path, dataset, message, &self.limits, &self.upload_dir).await
                    }
                    None => None,
                };
                let (data_rows, rejected) = match counted {
                    Some(counted) => counted,
                    None => (0, self.only(&first, message)),
                };
                Failure {
                    reason: format!("line {}: {}", first.line_no, first.reason),
                    rows_rejected: data_rows,
                    rejected,
                }
            }
            ChunkError::Io(err) if err.kind() == std::io::ErrorKind::NotFound => Failure {
                reason: "chunk file is missing".into(),
                rows_rejected: 0,
                rejected: None,
            },
            other => Failure {
                reason: other.to_string(),
                rows_rejected: 0,
                rejected: None,
            },
        }
    }

    /// Marks the chunk failed (nothing of it loaded) in a transaction of its own.
    async fn fail(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
        failure: Failure,
    ) -> Result<Outcome, LoadError> {
        let tx = client.transaction().await?;
        if claim(&tx, message, position).await?.is_none() {
            commit_offset(&tx, position).await?;
            tx.commit().await?;
            return Ok(Outcome::Skipped);
        }
        if let Some(rejects) = failure.rejected {
            rejected::copy(&tx, rejects).await?;
        }
        finish_chunk(
            &tx,
            message,
            "failed",
            0,
            failure.rows_rejected,
            Some(&failure.reason),
        )
        .await?;
        commit_offset(&tx, position).await?;
        tx.commit().await?;
        metrics::counter!("ingest_chunks_total", "outcome" => "failed").increment(1);
        tracing::warn!(upload_id = %message.upload_id, chunk = message.chunk_no, reason = %failure.reason, "chunk failed");
        Ok(Outcome::Failed {
            reason: failure.reason,
        })
    }

    /// `row` alone as the chunk's rejected rows (when the chunk could not be read again).
    fn only(&self, row: &validate::RejectedRow, message: &ChunkMessage) -> Option<RejectedStream> {
        let mut rejects: RejectedCopy = rejected::collector(&self.upload_dir, lineage(message));
        rejects.push(row).ok()?;
        rejects.finish().ok().flatten()
    }

    async fn remove_file(&self, client: &Client, message: &ChunkMessage, path: &Path) {
        let files = ChunkFiles {
            archive_dir: self.archive_dir.as_deref(),
        };
        files
            .remove(client, message.upload_id, message.chunk_no, path)
            .await;
    }
}

struct Failure {
    reason: String,
    rows_rejected: u64,
    rejected: Option<RejectedStream>,
}

/// Locks the chunk's ledger row if it still waits to be loaded, after checking the lease.
async fn claim(
    tx: &Transaction<'_>,
    message: &ChunkMessage,
    position: &Position,
) -> Result<Option<ChunkRow>, LoadError> {
    // FOR SHARE on our lease row: a takeover's UPDATE waits for this transaction to end.
    let leased = tx
        .query_opt(
            "SELECT 1 FROM partition_leases
             WHERE consumer_group = $1 AND partition = $2 AND owner = $3 AND expires_at > now()
             FOR SHARE",
            &[&position.group, &position.partition, &position.owner],
        )
        .await?;
    if leased.is_none() {
        return Err(LoadError::LeaseLost(position.partition));
    }
    let row = tx
        .query_opt(
            "SELECT c.stored_path, u.on_error, u.dataset FROM chunks c
             JOIN uploads u ON u.upload_id = c.upload_id
             WHERE c.upload_id = $1 AND c.chunk_no = $2 AND c.state = 'stored'
             FOR UPDATE OF c",
            &[&message.upload_id, &message.chunk_no],
        )
        .await?;
    Ok(row.map(|row| ChunkRow {
        stored_path: row.get(0),
        on_error: row.get(1),
        dataset: row.get(2),
    }))
}

async fn finish_chunk(
    tx: &Transaction<'_>,
    message: &ChunkMessage,
    state: &str,
    rows: u64,
    rejected: u64,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let (rows, rejected) = (rows as i64, rejected as i64);
    // clock_timestamp(), not now(): now() is the transaction's start, before the COPY, and would
    // make chunk latencies and the benchmark's end time look better than they are.
    tx.execute(
        "UPDATE chunks SET state = $3, rows_loaded = $4, rows_rejected = $5, error = $6,
                committed_at = clock_timestamp()
         WHERE upload_id = $1 AND chunk_no = $2",
        &[
            &message.upload_id,
            &message.chunk_no,
            &state,
            &rows,
            &rejected,
            &error,
        ],
    )
    .await?;
    let failed = i32::from(state == "failed");
    let loaded = 1 - failed;
    // The upload is done with its last expected chunk, in this same transaction.
    tx.execute(
        "UPDATE uploads SET
            chunks_loaded = chunks_loaded + $2,
            chunks_failed = chunks_failed + $3,
            rows_loaded = rows_loaded + $4,
            rows_rejected = rows_rejected + $5,
            state = CASE
                WHEN expected_chunks IS NOT NULL
                     AND chunks_loaded + $2 + chunks_failed + $3 >= expected_chunks
                     AND chunks_received >= expected_chunks
                    THEN CASE WHEN chunks_failed + $3 > 0 THEN 'failed' ELSE 'done' END
                ELSE state END,
            completed_at = CASE
                WHEN expected_chunks IS NOT NULL
                     AND chunks_loaded + $2 + chunks_failed + $3 >= expected_chunks
                    THEN coalesce(completed_at, clock_timestamp())
                ELSE completed_at END
         WHERE upload_id = $1",
        &[&message.upload_id, &loaded, &failed, &rows, &rejected],
    )
    .await?;
    Ok(())
}

async fn commit_offset(
    tx: &Transaction<'_>,
    position: &Position,
) -> Result<(), tokio_postgres::Error> {
    let offset = position.offset as i64;
    tx.execute(
        "INSERT INTO stream_offsets (stream, consumer_group, \"offset\") VALUES ($1, $2, $3)
         ON CONFLICT (stream, consumer_group) DO UPDATE
         SET \"offset\" = greatest(stream_offsets.\"offset\", excluded.\"offset\"), updated_at = now()",
        &[&position.stream, &position.group, &offset],
    )
    .await?;
    Ok(())
}

/// Re-reads a rejected chunk with the reject-rows policy, only to count and collect its bad rows.
async fn count_rows(
    path: &Path,
    dataset: &Dataset,
    message: &ChunkMessage,
    limits: &Limits,
    upload_dir: &Path,
) -> Option<(u64, Option<RejectedStream>)> {
    let (path, dataset, limits) = (path.to_owned(), dataset.clone(), limits.clone());
    let (lineage, upload_dir) = (lineage(message), upload_dir.to_owned());
    tokio::task::spawn_blocking(move || {
        let policy = ErrorPolicy::RejectRows;
        validate_file(
            &path,
            &dataset,
            lineage,
            policy,
            &limits,
            &upload_dir,
            &mut |_| true,
        )
        .ok()
        .map(|(report, rejects)| (report.data_rows, rejects))
    })
    .await
    .ok()
    .flatten()
}

/// Validates the chunk file at `path`, sending the COPY buffers to `sink` and keeping the
/// rejected rows as a COPY stream of their own. Blocking.
fn validate_file(
    path: &Path,
    dataset: &Dataset,
    lineage: Lineage,
    policy: ErrorPolicy,
    limits: &Limits,
    upload_dir: &Path,
    sink: &mut dyn FnMut(Bytes) -> bool,
) -> Result<(ChunkReport, Option<RejectedStream>), ChunkError> {
    let file = std::fs::File::open(path)?;
    let input = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut rejects = rejected::collector(upload_dir, lineage);
    let report =
        validate::load_chunk_into(input, dataset, lineage, policy, limits, sink, &mut |row| {
            rejects.push(&row)
        })?;
    let rejects = rejects.finish().map_err(ChunkError::Rejects)?;
    Ok((report, rejects))
}

fn lineage(message: &ChunkMessage) -> Lineage {
    Lineage {
        upload_id: message.upload_id,
        chunk_no: message.chunk_no,
    }
}

fn record_metrics(message: &ChunkMessage, report: &ChunkReport, started: Instant) {
    metrics::counter!("ingest_rows_loaded_total").increment(report.rows_loaded);
    metrics::counter!("ingest_rows_rejected_total").increment(report.rows_rejected);
    metrics::counter!("ingest_bytes_loaded_total").increment(report.bytes);
    metrics::counter!("ingest_chunks_total", "outcome" => "loaded").increment(1);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let latency = Duration::from_millis((now_ms - message.received_at_ms).max(0) as u64);
    metrics::histogram!("ingest_chunk_latency_seconds").record(latency.as_secs_f64());
    tracing::debug!(
        upload_id = %message.upload_id,
        chunk = message.chunk_no,
        rows = report.rows_loaded,
        rejected = report.rows_rejected,
        took_ms = started.elapsed().as_millis() as u64,
        "chunk loaded"
    );
}
