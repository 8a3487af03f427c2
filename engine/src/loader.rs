//! Loading one chunk, exactly once, in one PostgreSQL transaction.
//!
//! A load reads the chunk's ledger row (a chunk already loaded or failed is skipped: that is what
//! makes a redelivered or republished message harmless) and checks the partition's lease; then,
//! in a transaction that begins with the first encoded buffer, it COPYs the rows while a blocking
//! thread parses and encodes them, checks that the lease is still this process's (a process
//! that lost it does not commit), moves the ledger row from `stored` to `loaded` or `failed`
//! ([`ingest_ledger::loads::finish`]: `UPDATE ... WHERE state = 'stored'`), records the rejected
//! rows and the upload's counters (marking the upload done with its last chunk), and stores the
//! stream offset. All of it commits together or not at all.
//!
//! Exactly once rests on that ledger update alone: of two transactions loading the same chunk
//! (a redelivery, or a peer that took the partition over from a stopped process), the second to
//! reach the ledger row finds it no longer `stored`, updates nothing, and rolls its rows back.
//! No lock is taken before the COPY: not on the lease row (a heartbeat's renewal or a peer's
//! takeover would wait for the whole load) nor on the ledger row (a peer taking over from a
//! process stopped mid-COPY would wait for that process to run again). The locks a load takes
//! (ledger row, upload row, offset row) are held only from its last statements to its commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_postgres::{Client, GenericClient, Transaction};

use ingest_contract::chunk::ChunkMessage;
use ingest_ledger::loads::{self, ChunkOutcome, Claimed, Finished};
use ingest_ledger::pieces as plans;
use ingest_ledger::{offsets, ChunkState};
use ingest_runtime::chunk_store::{BrokenOff, ChunkReader, ChunkStore, ChunkStoreError};

use crate::cleanup::ChunkFiles;
use crate::dataset::{quote_ident, Dataset, Layout, OnConflict};
use crate::metrics::{self, Outcome as Counted};
use crate::partitions::{self, Partitions};
use crate::pieces::PieceSessions;
use crate::rejected;
use crate::validate::{
    self, ChunkError, ChunkReport, ErrorPolicy, Limits, Lineage, PieceStart, Target,
};
use ingest_rows::partitions::partition_starts;
use ingest_rows::registry::Registry;
use ingest_rows::rejects::{RejectedCopy, RejectedStream};

/// How many encoded buffers (about 1 MiB each) may wait for the COPY.
const COPY_QUEUE: usize = 4;
/// The transaction's own table a dataset with `on_conflict = "skip"` is COPYed into first.
const STAGING_TABLE: &str = "ingest_staging";

/// What a chunk is loaded as: its dataset and where the dataset's columns are in its records
/// (the upload's header, see [`ingest_ledger::uploads::NewChunk::header`]).
#[derive(Debug, Clone)]
pub(crate) struct ChunkTarget {
    pub dataset: Arc<Dataset>,
    pub layout: Layout,
}

impl ChunkTarget {
    pub(crate) fn as_target(&self) -> Target<'_> {
        Target {
            dataset: &self.dataset,
            layout: &self.layout,
        }
    }
}

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
    #[error(transparent)]
    Ledger(#[from] ingest_ledger::LedgerError),
    #[error("{0}")]
    Session(#[from] ingest_runtime::db::DbError),
    #[error("chunk parser stopped: {0}")]
    Parser(String),
    #[error(transparent)]
    Store(#[from] ChunkStoreError),
}

/// The failure reason of a chunk whose file is gone.
const MISSING: &str = "chunk file is missing";

/// Loads chunks for the partition processors of this process.
pub struct Loader {
    /// Where chunk files are (`INGEST_CHUNK_STORE`); its spool holds rejected rows spilled to
    /// disk.
    pub chunks: Arc<ChunkStore>,
    pub archive_dir: Option<PathBuf>,
    pub limits: Limits,
    /// The datasets, as gateways know them (`INGEST_DATASETS_DIR`).
    pub registry: Arc<Registry>,
    pub partitions: Arc<Partitions>,
    /// Caps the COPYs running at once in this process (`INGEST_COPY_CONNECTIONS`): a chunk
    /// loaded whole takes one, each piece of a cut chunk one.
    pub copy_slots: Semaphore,
    /// Chunk files bigger than this are loaded in pieces (`INGEST_PIECE_BYTES`).
    pub piece_bytes: u64,
    /// The sessions pieces are loaded over.
    pub piece_sessions: PieceSessions,
}

/// A parsed chunk: its report and rejected rows, or why it cannot be loaded.
pub(crate) type Parsed = Result<(ChunkReport, Option<RejectedStream>), ChunkError>;

impl Loader {
    /// Loads `message` at `position` over `client`, committing everything in one transaction.
    pub async fn load(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
    ) -> Result<Outcome, LoadError> {
        let started = Instant::now();
        let (mut row, mut target) = match self.claim_target(client, message, position).await? {
            Ok(claimed) => claimed,
            Err(settled) => return Ok(settled),
        };
        // A chunk loaded in pieces reads the months of each piece ahead of its COPY (see
        // `pieces`): a whole-chunk read first would keep every COPY slot idle meanwhile.
        if let Some(outcome) = self
            .load_in_pieces(client, message, position, started, &row, &target)
            .await?
        {
            return Ok(outcome);
        }
        let allowance = partitions::Allowance::default();
        self.prepare_partitions(client, &row.stored_path, None, &target, &allowance)
            .await?;
        let _slot = self.copy_slot().await;
        // The claim above may be stale by now (the slot can take a while): `record_outcome`
        // decides at the end, so a chunk settled meanwhile costs a rolled-back COPY, no more.
        // A month the first look missed means: roll back, create its partition, claim and
        // load again.
        for _attempt in 0..3 {
            let policy = row.on_error;
            let Some(input) = self.open(&row.stored_path, None).await? else {
                let failure = Failure::of_chunk(MISSING.into());
                return self
                    .fail(client, message, position, row.attempt, failure)
                    .await;
            };
            let (tx, parsed) = match self.copy(client, input, 1, &target, message, policy).await {
                Ok((tx, parsed)) => (Some(tx), parsed),
                Err(err) => match refused_rows(&err) {
                    Some(reason) => (None, Err(ChunkError::Refused(reason))),
                    None => return Err(err),
                },
            };
            let (report, rejects) = match parsed {
                Ok(parsed) => parsed,
                Err(err) => {
                    drop(tx);
                    let reason = self
                        .failure_reason(err, &row.stored_path, &target, message)
                        .await?;
                    // The file stays: the chunk may be retried (`ingest_ledger::retries`) until
                    // the gateways' retention sweep removes it.
                    return self
                        .fail(client, message, position, row.attempt, reason)
                        .await;
                }
            };
            let tx = tx.expect("parsed rows come with their transaction");
            let (dataset, months) = (&target.dataset, &report.partitions);
            let reserved = self
                .partitions
                .reserve_missing(&tx, dataset, months, &allowance)
                .await?;
            let missing = match reserved {
                Ok(missing) => missing,
                Err(reason) => {
                    drop(tx);
                    let failure = Failure::of_chunk(reason);
                    return self
                        .fail(client, message, position, row.attempt, failure)
                        .await;
                }
            };
            if !missing.is_empty() {
                drop(tx); // Rolls back; the partitions are created outside it.
                metrics::partition_reload();
                let created = self.partitions.create(client, dataset, &missing).await;
                if let Some(reason) = created.as_ref().err().and_then(partitions::in_the_way) {
                    let failure = Failure::of_chunk(reason);
                    return self
                        .fail(client, message, position, row.attempt, failure)
                        .await;
                }
                created?;
                (row, target) = match self.claim_target(client, message, position).await? {
                    Ok(claimed) => claimed,
                    Err(settled) => return Ok(settled),
                };
                continue;
            }
            let rejected = report.rows_rejected;
            let outcome = ChunkOutcome {
                state: ChunkState::Loaded,
                rows_loaded: report.rows_loaded,
                rows_rejected: rejected,
                rows_skipped: report.rows_skipped,
                error: None,
                in_pieces: false,
                attempt: row.attempt,
            };
            if !record_outcome(&tx, message, position, outcome, rejects).await? {
                drop(tx); // Rolls the rows back: a peer loaded or failed this chunk meanwhile.
                return skipped(client, message, position).await;
            }
            tx.commit().await?;
            self.remove_file(client, message, &row.stored_path).await;
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

    /// The chunk's ledger row (if it still waits to be loaded, under our lease) and how it is
    /// read; otherwise how the chunk is settled for this engine: skipped (loaded or failed
    /// already, or parked until its upload's chunk 0 arrives) or failed with the reason.
    async fn claim_target(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
    ) -> Result<Result<(Claimed, ChunkTarget), Outcome>, LoadError> {
        let Some(row) = claim(&*client, message, position).await? else {
            commit_offset(&*client, position).await?;
            metrics::chunk(Counted::Skipped);
            return Ok(Err(Outcome::Skipped));
        };
        match self.target(&row, message.chunk_no) {
            Ok(Some(target)) => Ok(Ok((row, target))),
            Ok(None) => {
                // Parked: published again once chunk 0 says how it is read.
                commit_offset(&*client, position).await?;
                metrics::chunk(Counted::Skipped);
                tracing::info!(upload_id = %message.upload_id, chunk = message.chunk_no, "chunk waits for its upload's chunk 0 (the header)");
                Ok(Err(Outcome::Skipped))
            }
            Err(reason) => {
                let failure = Failure::of_chunk(reason);
                let settled = self
                    .fail(client, message, position, row.attempt, failure)
                    .await?;
                Ok(Err(settled))
            }
        }
    }

    /// The chunk's dataset and layout, or why it cannot be loaded at all; `None` while it
    /// waits for its upload's chunk 0 to say how it is read ([`Claimed::parked`]).
    pub(crate) fn target(
        &self,
        row: &Claimed,
        chunk_no: i32,
    ) -> Result<Option<ChunkTarget>, String> {
        let dataset = self
            .registry
            .get(&row.dataset)
            .ok_or_else(|| format!("unknown dataset {:?}", row.dataset))?;
        if row.parked(chunk_no, dataset.format.header) {
            return Ok(None);
        }
        let layout = match &row.header {
            None => dataset.declared_layout(),
            Some(names) => dataset.layout_of_names(names).map_err(|err| {
                format!(
                    "the upload's header no longer fits dataset {:?}: {err}",
                    dataset.name
                )
            })?,
        };
        Ok(Some(ChunkTarget { dataset, layout }))
    }

    /// Creates every partition the rows of the chunk (or of its `range` of bytes, a piece)
    /// need before their transaction starts, unless the chunk's `allowance` has no room for
    /// them ([`partitions::MAX_NEW_PER_CHUNK`]), from a read of the partition column
    /// ([`ingest_rows::partitions`]) in the upload's own layout (its header's column order, for
    /// headerless chunks too): a new month or day then never costs a rolled-back COPY and a
    /// second load. Only a hint: a chunk gone or unreadable, a record it cannot read or a read
    /// that breaks off is left to the load, whose validator finds any month missed here (and
    /// rolls back, creates, loads again) and fails a chunk that needs too many.
    pub(crate) async fn prepare_partitions(
        &self,
        client: &Client,
        relative: &str,
        range: Option<std::ops::Range<u64>>,
        target: &ChunkTarget,
        allowance: &partitions::Allowance,
    ) -> Result<(), LoadError> {
        let dataset = &target.dataset;
        if dataset.partition.is_none() {
            return Ok(());
        }
        let Ok(Some(input)) = self.open(relative, range).await else {
            return Ok(());
        };
        let started = Instant::now();
        let (scanned, layout) = (Arc::clone(dataset), target.layout.clone());
        let starts = tokio::task::spawn_blocking(move || {
            partition_starts(std::io::BufReader::new(input), &scanned, &layout)
        })
        .await
        .map_err(|err| LoadError::Parser(err.to_string()))?;
        metrics::months_scan_duration(started.elapsed());
        let Ok(starts) = starts else {
            return Ok(());
        };
        let reserved = self
            .partitions
            .reserve_missing(client, dataset, &starts, allowance)
            .await?;
        // Too many: the load fails the chunk once the validator has confirmed them.
        let Ok(missing) = reserved else {
            return Ok(());
        };
        if missing.is_empty() {
            return Ok(());
        }
        match self.partitions.create(client, dataset, &missing).await {
            // Left to the load, which fails the chunk with the reason after reserving the
            // months again: a relation in the way is not a reason to count them twice.
            Err(err) if partitions::in_the_way(&err).is_some() => {
                allowance.release(self.partitions.unmade(dataset, &missing));
                Ok(())
            }
            created => Ok(created?),
        }
    }

    /// One of the `INGEST_COPY_CONNECTIONS` COPY slots, held while a COPY runs.
    pub(crate) async fn copy_slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.copy_slots
            .acquire()
            .await
            .expect("the COPY semaphore is never closed")
    }

    /// Streams the chunk (or piece: `input`, whose first record is line `first_line` of the
    /// chunk) through the parser into `COPY ... FROM STDIN (FORMAT binary)`, in a transaction
    /// that begins with the first encoded buffer and is returned open (to commit with the
    /// rest, or to roll back). A store whose body broke off mid-way is an error (the load is
    /// retried), not a chunk failure. A dataset with `on_conflict = "skip"` is COPYed
    /// into a staging table of the transaction, then inserted skipping the rows whose unique key
    /// is taken ([`ChunkReport::rows_skipped`]).
    pub(crate) async fn copy<'c>(
        &self,
        client: &'c mut Client,
        input: ChunkReader,
        first_line: i32,
        target: &ChunkTarget,
        message: &ChunkMessage,
        policy: ErrorPolicy,
    ) -> Result<(Transaction<'c>, Parsed), LoadError> {
        let (sender, mut buffers) = mpsc::channel::<Bytes>(COPY_QUEUE);
        let dataset = &target.dataset;
        let staged = dataset.on_conflict == OnConflict::Skip;
        let broken = input.broken_off();
        let parser = spawn_validation(
            ChunkInput::new(input, first_line),
            target,
            message,
            policy,
            &self.limits,
            self.chunks.spool(),
            move |b| sender.blocking_send(b).is_ok(),
        );
        // The transaction begins once the first buffer is ready: a transaction is never idle
        // while rows are parsed (a chunk with no loadable row is read to its end first), so an
        // `idle_in_transaction_session_timeout` (see `session`) only ever ends stopped ones.
        let copy_started = Instant::now();
        let first = buffers.recv().await;
        let tx = client.transaction().await?;
        let mut copied = None;
        if let Some(first) = first {
            let statement = if staged {
                tx.batch_execute(&staging_statement(dataset)).await?;
                dataset.copy_statement_into(STAGING_TABLE, &target.layout)
            } else {
                dataset.copy_statement(&target.layout)
            };
            let mut sink = Box::pin(tx.copy_in(&statement).await?);
            sink.send(first).await?;
            while let Some(buffer) = buffers.recv().await {
                sink.send(buffer).await?;
            }
            copied = Some(sink);
        }
        let mut parsed = parser
            .await
            .map_err(|err| LoadError::Parser(err.to_string()))?;
        if parsed.is_err() {
            broke_off(&broken)?;
        }
        match (&mut parsed, copied) {
            (Ok((report, _)), Some(mut sink)) => {
                sink.as_mut().finish().await?;
                if staged {
                    let inserted = tx.execute(&insert_staged(dataset), &[]).await?;
                    report.rows_skipped = report.rows_loaded - inserted;
                    report.rows_loaded = inserted;
                }
                metrics::copy_duration(copy_started.elapsed());
            }
            // On a parse error the sink is dropped unfinished: PostgreSQL aborts the COPY and
            // the caller rolls the transaction back.
            (_, copied) => drop(copied),
        }
        Ok((tx, parsed))
    }

    async fn failure_reason(
        &self,
        err: ChunkError,
        relative: &str,
        target: &ChunkTarget,
        message: &ChunkMessage,
    ) -> Result<Failure, LoadError> {
        Ok(match err {
            ChunkError::RejectedChunk(first) => {
                // Count and keep the chunk's bad rows, so loaded + rejected = data rows holds.
                let counted = match self.open(relative, None).await? {
                    Some(input) => self.count_rows(input, target, message).await?,
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
            ChunkError::Io(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Failure::of_chunk(MISSING.into())
            }
            other => Failure::of_chunk(other.to_string()),
        })
    }

    /// Re-reads a rejected chunk with the reject-rows policy, only to count and collect its bad
    /// rows; `None` when it cannot be read as such.
    async fn count_rows(
        &self,
        input: ChunkReader,
        target: &ChunkTarget,
        message: &ChunkMessage,
    ) -> Result<Option<(u64, Option<RejectedStream>)>, LoadError> {
        let broken = input.broken_off();
        let policy = ErrorPolicy::RejectRows;
        let (limits, spool) = (&self.limits, self.chunks.spool());
        let input = ChunkInput::new(input, 1);
        let counted = spawn_validation(input, target, message, policy, limits, spool, |_| true)
            .await
            .map_err(|err| LoadError::Parser(err.to_string()))?;
        if counted.is_err() {
            broke_off(&broken)?;
        }
        Ok(counted
            .ok()
            .map(|(report, rejects)| (report.data_rows, rejects)))
    }

    /// Marks the chunk failed (nothing of it loaded) in a transaction of its own.
    async fn fail(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
        attempt: i32,
        failure: Failure,
    ) -> Result<Outcome, LoadError> {
        let tx = client.transaction().await?;
        if claim(&tx, message, position).await?.is_none() {
            commit_offset(&tx, position).await?;
            tx.commit().await?;
            metrics::chunk(Counted::Skipped);
            return Ok(Outcome::Skipped);
        }
        // A chunk cut into pieces before (this is not the pieces' path: its dataset or header
        // stopped fitting since) fails whole too: what its loaded pieces committed goes.
        let (upload_id, chunk_no) = (message.upload_id, message.chunk_no);
        let planned = !plans::plan(&tx, upload_id, chunk_no).await?.is_empty();
        let outcome = ChunkOutcome {
            state: ChunkState::Failed,
            rows_loaded: 0,
            rows_rejected: failure.rows_rejected,
            rows_skipped: 0,
            error: Some(failure.reason.as_str()),
            in_pieces: planned,
            attempt,
        };
        if !record_outcome(&tx, message, position, outcome, failure.rejected).await? {
            drop(tx);
            return skipped(client, message, position).await;
        }
        if planned {
            let undone = plans::undo_plan(&tx, upload_id, chunk_no).await?;
            tracing::warn!(%upload_id, chunk = chunk_no, undone, "rows the failed chunk's pieces committed were deleted");
        }
        tx.commit().await?;
        metrics::chunk(Counted::Failed);
        tracing::warn!(upload_id = %message.upload_id, chunk = message.chunk_no, reason = %failure.reason, "chunk failed");
        Ok(Outcome::Failed {
            reason: failure.reason,
        })
    }

    /// `row` alone as the chunk's rejected rows (when the chunk could not be read again).
    fn only(&self, row: &validate::RejectedRow, message: &ChunkMessage) -> Option<RejectedStream> {
        let mut rejects: RejectedCopy = rejected::collector(self.chunks.spool(), lineage(message));
        rejects.push(row).ok()?;
        rejects.finish().ok().flatten()
    }

    pub(crate) async fn remove_file(
        &self,
        client: &Client,
        message: &ChunkMessage,
        relative: &str,
    ) {
        let files = ChunkFiles {
            chunks: &self.chunks,
            archive_dir: self.archive_dir.as_deref(),
        };
        files
            .remove(client, message.upload_id, message.chunk_no, relative)
            .await;
    }

    /// The chunk `relative` (only `range` of it when given) to read as it arrives; `None`
    /// when the store does not have it (or the name points outside the store). A store that
    /// does not answer is an error: the load is retried, the chunk not failed.
    pub(crate) async fn open(
        &self,
        relative: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Option<ChunkReader>, LoadError> {
        match self.chunks.reader(relative, range).await {
            Ok(input) => Ok(Some(input)),
            Err(err) if err.is_missing() || err.is_outside() => Ok(None),
            Err(err) => Err(LoadError::Store(err)),
        }
    }
}

/// The store's error if a body `broken` watched broke off: a parse that failed on it says
/// nothing of the chunk.
fn broke_off(broken: &BrokenOff) -> Result<(), LoadError> {
    match broken.take() {
        Some(err) => Err(LoadError::Store(err)),
        None => Ok(()),
    }
}

struct Failure {
    reason: String,
    rows_rejected: u64,
    rejected: Option<RejectedStream>,
}

impl Failure {
    /// A failure of the chunk as a whole, not of its rows (none is counted as rejected).
    fn of_chunk(reason: String) -> Failure {
        Failure {
            reason,
            rows_rejected: 0,
            rejected: None,
        }
    }
}

/// Reads the chunk's ledger row if it still waits to be loaded, after checking the lease. Locks
/// nothing: [`record_outcome`] decides, at the end, whether this transaction is the one that
/// loads it.
pub(crate) async fn claim(
    client: &impl GenericClient,
    message: &ChunkMessage,
    position: &Position,
) -> Result<Option<Claimed>, LoadError> {
    let leased = client
        .query_opt(
            "SELECT 1 FROM partition_leases
             WHERE consumer_group = $1 AND partition = $2 AND owner = $3 AND expires_at > now()",
            &[&position.group, &position.partition, &position.owner],
        )
        .await?;
    if leased.is_none() {
        return Err(LoadError::LeaseLost(position.partition));
    }
    Ok(loads::claim(client, message.upload_id, message.chunk_no).await?)
}

/// The end of a load, after its COPY: checks that the lease is still ours, moves the ledger row
/// out of `stored` ([`loads::finish`]), then records the rejected rows and the stream offset.
/// `false` (nothing written; roll back) when the chunk is no longer `stored` at the claimed
/// attempt: a peer got there first, or it failed and was retried meanwhile.
pub(crate) async fn record_outcome(
    tx: &Transaction<'_>,
    message: &ChunkMessage,
    position: &Position,
    outcome: ChunkOutcome<'_>,
    rejects: Option<RejectedStream>,
) -> Result<bool, LoadError> {
    still_owner(tx, position).await?;
    match loads::finish(tx, message.upload_id, message.chunk_no, outcome).await? {
        Finished::Recorded => {}
        Finished::Gone => return Ok(false),
        // Retried: the next attempt finds the plan and loads the pieces.
        Finished::Planned => {
            return Err(LoadError::Parser(
                "a peer cut the chunk into pieces meanwhile".into(),
            ))
        }
    }
    // After the ledger row: only the transaction that moved it writes the chunk's rejected rows,
    // so a peer never waits on another's uncommitted rows of the same chunk (their primary key).
    if let Some(rejects) = rejects {
        rejected::copy(tx, rejects).await?;
    }
    commit_offset(tx, position).await?;
    Ok(true)
}

/// Fails with [`LoadError::LeaseLost`] unless this process still owns the partition. Owner
/// only, not expiry: a late heartbeat is no reason to throw the work away, a takeover is (the
/// peer is loading this partition now). The ledger update is what keeps it exact.
pub(crate) async fn still_owner(
    tx: &Transaction<'_>,
    position: &Position,
) -> Result<(), LoadError> {
    let ours = tx
        .query_opt(
            "SELECT 1 FROM partition_leases
             WHERE consumer_group = $1 AND partition = $2 AND owner = $3",
            &[&position.group, &position.partition, &position.owner],
        )
        .await?;
    match ours {
        Some(_) => Ok(()),
        None => Err(LoadError::LeaseLost(position.partition)),
    }
}

/// After losing the race for a chunk: its offset is committed (by whoever won, or now).
pub(crate) async fn skipped(
    client: &Client,
    message: &ChunkMessage,
    position: &Position,
) -> Result<Outcome, LoadError> {
    commit_offset(client, position).await?;
    metrics::chunk(Counted::Skipped);
    tracing::info!(upload_id = %message.upload_id, chunk = message.chunk_no, "chunk settled by a peer; rolled back");
    Ok(Outcome::Skipped)
}

/// Stores the partition's stream offset (never backwards), in `client`'s transaction if any.
pub(crate) async fn commit_offset(
    client: &impl GenericClient,
    position: &Position,
) -> Result<(), LoadError> {
    offsets::commit(client, &position.stream, &position.group, position.offset).await?;
    Ok(())
}

/// Runs [`validate_file`] on a blocking thread.
fn spawn_validation(
    input: ChunkInput,
    target: &ChunkTarget,
    message: &ChunkMessage,
    policy: ErrorPolicy,
    limits: &Limits,
    spool: &std::path::Path,
    mut sink: impl FnMut(Bytes) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Result<(ChunkReport, Option<RejectedStream>), ChunkError>> {
    let (target, limits, spool) = (target.clone(), limits.clone(), spool.to_owned());
    let lineage = lineage(message);
    tokio::task::spawn_blocking(move || {
        let target = target.as_target();
        validate_file(input, target, lineage, policy, &limits, &spool, &mut sink)
    })
}

/// A chunk, or one piece of it, to read.
struct ChunkInput {
    reader: ChunkReader,
    start: PieceStart,
}

impl ChunkInput {
    /// `reader`'s bytes, whose first record is line `first_line` of the chunk.
    fn new(reader: ChunkReader, first_line: i32) -> Self {
        Self {
            reader,
            start: PieceStart { first_line },
        }
    }
}

/// Validates the chunk (or piece) `input`, sending the COPY buffers to `sink` and keeping the
/// rejected rows as a COPY stream of their own. Blocking.
fn validate_file(
    input: ChunkInput,
    target: Target,
    lineage: Lineage,
    policy: ErrorPolicy,
    limits: &Limits,
    upload_dir: &std::path::Path,
    sink: &mut dyn FnMut(Bytes) -> bool,
) -> Result<(ChunkReport, Option<RejectedStream>), ChunkError> {
    let reader = std::io::BufReader::with_capacity(256 * 1024, input.reader);
    let mut rejects = rejected::collector(upload_dir, lineage);
    let report = validate::load_piece_into(
        reader,
        target,
        lineage,
        input.start,
        policy,
        limits,
        sink,
        &mut |row| rejects.push(&row),
    )?;
    let rejects = rejects.finish().map_err(ChunkError::Rejects)?;
    Ok((report, rejects))
}

/// Why the database refused a chunk's rows, when loading them again would meet the same
/// refusal: a data exception (SQLSTATE class 22: a value it will not store) or an integrity
/// constraint the rows break (class 23: a unique key taken, a NULL in a NOT NULL column). The
/// chunk then fails with the reason (and may be retried by its client) instead of being
/// retried forever, holding up its stream partition.
///
/// A value PostgreSQL cannot index (54000: a key over the btree's row size) is refused too.
///
/// Not a refusal: a row routed to the default partition while another engine attached that
/// month's partition breaks the default's new bound (23514 naming no constraint, where a
/// dataset's CHECK names its own); loaded again, the row goes to the new partition.
pub(crate) fn refused_rows(err: &LoadError) -> Option<String> {
    let LoadError::Db(db) = err else {
        return None;
    };
    let code = db.code()?.code();
    if !(code.starts_with("22") || code.starts_with("23") || code == "54000") {
        return None;
    }
    let partition_bound = code == "23514"
        && db
            .as_db_error()
            .is_some_and(|refusal| refusal.constraint().is_none());
    if partition_bound {
        return None;
    }
    let why = match db.as_db_error() {
        Some(refusal) => match refusal.detail() {
            Some(detail) => format!("{} ({detail})", refusal.message()),
            None => refusal.message().to_owned(),
        },
        None => db.to_string(),
    };
    Some(format!("the database refused the rows: {why}"))
}

/// `CREATE TEMP TABLE ingest_staging ...`: the dataset's columns, dropped at commit.
fn staging_statement(dataset: &Dataset) -> String {
    format!(
        "CREATE TEMP TABLE {STAGING_TABLE} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
        staged_columns(dataset),
        quote_ident(&dataset.table)
    )
}

/// Moves the staged rows into the table in line order, skipping those whose unique key is taken
/// (also by an earlier row of the same chunk: the first one wins).
fn insert_staged(dataset: &Dataset) -> String {
    let columns = staged_columns(dataset);
    format!(
        "INSERT INTO {} ({columns}) SELECT {columns} FROM {STAGING_TABLE} ORDER BY line_no \
         ON CONFLICT DO NOTHING",
        quote_ident(&dataset.table)
    )
}

fn staged_columns(dataset: &Dataset) -> String {
    let names: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .chain(
            crate::dataset::LINEAGE_COLUMNS
                .iter()
                .map(|c| quote_ident(c)),
        )
        .collect();
    names.join(", ")
}

pub(crate) fn lineage(message: &ChunkMessage) -> Lineage {
    Lineage {
        upload_id: message.upload_id,
        chunk_no: message.chunk_no,
    }
}

pub(crate) fn record_metrics(message: &ChunkMessage, report: &ChunkReport, started: Instant) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let latency = Duration::from_millis((now_ms - message.received_at_ms).max(0) as u64);
    metrics::loaded(
        report.rows_loaded,
        report.rows_rejected,
        report.bytes,
        latency,
    );
    tracing::debug!(
        upload_id = %message.upload_id,
        chunk = message.chunk_no,
        rows = report.rows_loaded,
        rejected = report.rows_rejected,
        took_ms = started.elapsed().as_millis() as u64,
        "chunk loaded"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_testkit::TestDb;

    /// The load error of `sql` run on a fresh database after `setup`.
    async fn error_of(setup: &str, sql: &str) -> LoadError {
        let db = TestDb::new().await.expect("a test database");
        let client = db.client().await.expect("a session");
        client.batch_execute(setup).await.expect("setup");
        LoadError::Db(client.batch_execute(sql).await.expect_err("refused"))
    }

    #[tokio::test]
    async fn a_row_past_the_default_partitions_new_bound_is_loaded_again() {
        let err = error_of(
            "CREATE TABLE p (d date) PARTITION BY RANGE (d);
             CREATE TABLE p_default PARTITION OF p DEFAULT;
             CREATE TABLE p_2024 PARTITION OF p FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');",
            "INSERT INTO p_default VALUES ('2024-05-01')",
        )
        .await;
        let LoadError::Db(db) = &err else {
            unreachable!("made as a database error")
        };
        let message = db.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("partition constraint")),
            "{message:?}"
        );
        assert_eq!(refused_rows(&err), None);
    }

    #[tokio::test]
    async fn a_key_too_big_to_index_is_refused_for_good() {
        let err = error_of(
            "CREATE TABLE k (key text UNIQUE)",
            "INSERT INTO k SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1000) i",
        )
        .await;
        let refused = refused_rows(&err).expect("a refusal");
        assert!(refused.contains("index row"), "{refused}");
    }

    #[tokio::test]
    async fn a_row_breaking_a_check_is_refused_for_good() {
        let err = error_of(
            "CREATE TABLE c (x int CONSTRAINT positive CHECK (x > 0))",
            "INSERT INTO c VALUES (-1)",
        )
        .await;
        let refused = refused_rows(&err).expect("a refusal");
        assert!(refused.contains("positive"), "{refused}");
    }
}
