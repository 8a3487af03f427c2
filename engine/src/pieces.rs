//! A big chunk loaded as several pieces at once, so one large file keeps every COPY connection
//! busy instead of one.
//!
//! A chunk file bigger than `INGEST_PIECE_BYTES` is cut at record boundaries
//! ([`ingest_rows::pieces::cut`]) and the plan is written to `chunk_pieces` before any piece
//! loads (under the chunk row's lock, once: whoever loads the chunk later, a retry or a peer
//! after a takeover, reads the same plan). Each piece then loads like a small chunk, on its own
//! session and COPY slot, its months made before its COPY (a read of its own bytes, the pieces'
//! reads one after another ahead of the COPYs, see [`MonthsLane`]): its rows, its rejected rows
//! and its move from `stored` to `loaded` in `chunk_pieces` (`UPDATE ... WHERE state =
//! 'stored'`) commit together or not at all, so every piece is loaded exactly once whoever races
//! for it. When every piece is loaded, one transaction
//! moves the chunk's own ledger row to `loaded` with the pieces' counts, commits the stream
//! offset and deletes the plan: the upload's accounting sees the chunk once, whole.
//!
//! What differs from a chunk loaded whole:
//! - its rows become visible piece by piece, before the chunk is `loaded`;
//! - a chunk-level error found in one piece (binary content, the file gone) fails the whole chunk
//!   in one transaction that also deletes the rows and rejected rows its loaded pieces committed
//!   (by the lineage columns; a scan of the table, on this rare path only), so "a failed chunk
//!   loaded nothing" still holds;
//! - the "more than 10% invalid UTF-8" test applies per piece;
//! - the cap on the partitions one chunk may make counts what all its pieces make in one load
//!   (pieces loaded before a restart are not counted again), and a chunk past it fails whole;
//! - chunks of `reject-chunk` uploads are never cut: one bad row must keep all of them out.

use std::sync::Mutex;
use std::time::Instant;

use tokio_postgres::Client;

use ingest_contract::chunk::ChunkMessage;
use ingest_ledger::loads::{ChunkOutcome, Claimed};
use ingest_ledger::pieces::{self as plans, PlannedPiece as Planned};
use ingest_ledger::ChunkState;
use ingest_rows::pieces::cut;
use ingest_runtime::db::DbError;

use crate::dataset::OnConflict;
use crate::loader::{
    claim, record_metrics, record_outcome, refused_rows, skipped, still_owner, ChunkTarget,
    LoadError, Loader, Outcome, Position,
};
use crate::metrics::{self, Outcome as Counted};
use crate::partitions::{in_the_way, Allowance};
use crate::rejected;
use crate::session::Sessions;
use crate::validate::{ChunkError, ChunkReport, ErrorPolicy};

/// Sessions pieces are loaded over, kept between chunks (at most one per COPY slot).
pub struct PieceSessions {
    sessions: Sessions,
    idle: Mutex<Vec<Client>>,
    keep: usize,
}

impl PieceSessions {
    pub fn new(sessions: Sessions, copy_connections: u16) -> Self {
        Self {
            sessions,
            idle: Mutex::new(Vec::new()),
            keep: usize::from(copy_connections),
        }
    }

    async fn take(&self) -> Result<Client, DbError> {
        loop {
            let idle = self.idle.lock().expect("piece sessions lock").pop();
            match idle {
                // A fenced process finds its sessions closed here.
                Some(client) if !client.is_closed() => return Ok(client),
                Some(_) => continue,
                None => return self.sessions.loader().await,
            }
        }
    }

    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().expect("piece sessions lock");
        if !client.is_closed() && idle.len() < self.keep {
            idle.push(client);
        }
    }
}

/// The chunk being loaded in pieces: its dataset, its name in the store and the attempt that
/// was claimed.
struct Source<'a> {
    target: &'a ChunkTarget,
    relative: &'a str,
    attempt: i32,
    /// What this load of the chunk may still make, by any piece: a chunk may make at most
    /// [`crate::partitions::MAX_NEW_PER_CHUNK`] partitions, however it is cut.
    allowance: Allowance,
}

/// Where the pieces of a chunk read their months and make the partitions they need: one piece
/// at a time (in plan order, as the pieces ask), on the chunk's own session, outside the COPY
/// slots, so the reads run ahead of the COPYs on one core instead of holding slots idle.
struct MonthsLane<'a> {
    client: &'a Client,
    turn: tokio::sync::Mutex<()>,
}

/// What became of one piece.
enum PieceOutcome {
    Loaded(ChunkReport),
    /// A peer loaded it first (or it was loaded before).
    Skipped,
    /// The chunk cannot be loaded at all (it must fail whole).
    ChunkFailed(ChunkError),
}

impl Loader {
    /// Loads the chunk (`row`, `target`: the claim [`Loader::load`] made) in pieces if it has
    /// a plan or is big enough to get one; `None` when it is to be loaded whole.
    pub(crate) async fn load_in_pieces(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
        started: Instant,
        row: &Claimed,
        target: &ChunkTarget,
    ) -> Result<Option<Outcome>, LoadError> {
        // All or none of the rows (reject-chunk), or a staged insert that counts the skipped
        // rows of the whole chunk (on_conflict = "skip"): loaded whole.
        if row.on_error != ErrorPolicy::RejectRows || target.dataset.on_conflict == OnConflict::Skip
        {
            return Ok(None);
        }
        let attempt = row.attempt;
        let relative = row.stored_path.as_str();
        let plan = self
            .plan(
                client,
                message,
                attempt,
                relative,
                target.dataset.format.quote,
            )
            .await?;
        if plan.is_empty() {
            return Ok(None);
        }
        let source = Source {
            target,
            relative,
            attempt,
            allowance: Allowance::default(),
        };
        let months = MonthsLane {
            client: &*client,
            turn: tokio::sync::Mutex::new(()),
        };
        let loads = plan
            .iter()
            .filter(|planned| !planned.loaded)
            .map(|planned| self.load_piece(message, position, &source, &months, planned));
        let mut report = ChunkReport::default();
        let mut failed = None;
        for outcome in futures_util::future::join_all(loads).await {
            match outcome? {
                PieceOutcome::Loaded(piece) => {
                    report.bytes += piece.bytes;
                    report.rows_loaded += piece.rows_loaded;
                    report.rows_rejected += piece.rows_rejected;
                }
                PieceOutcome::Skipped => {}
                PieceOutcome::ChunkFailed(err) => failed = Some(err),
            }
        }
        let outcome = match failed {
            Some(err) => {
                self.fail_whole(client, message, position, &source, err)
                    .await?
            }
            None => self.finish(client, message, position, attempt).await?,
        };
        // A failed chunk's file stays for a retry (see `Loader::load`).
        if let Outcome::Loaded { .. } = outcome {
            self.remove_file(client, message, &row.stored_path).await;
            record_metrics(message, &report, started);
        }
        Ok(Some(outcome))
    }

    /// The chunk's plan: the one written before, or a new one if the file is big enough.
    async fn plan(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        attempt: i32,
        relative: &str,
        quote: u8,
    ) -> Result<Vec<Planned>, LoadError> {
        let existing = plans::plan(&*client, message.upload_id, message.chunk_no).await?;
        if !existing.is_empty() {
            return Ok(existing);
        }
        let len = match self.chunks.size(relative).await {
            Ok(len) => len,
            // The whole-chunk path says what is wrong with the file.
            Err(err) if err.is_missing() || err.is_outside() => return Ok(Vec::new()),
            Err(err) => return Err(LoadError::Store(err)),
        };
        if len <= self.piece_bytes {
            return Ok(Vec::new());
        }
        let Some(input) = self.open(relative, None).await? else {
            return Ok(Vec::new());
        };
        let (broken, max) = (input.broken_off(), self.piece_bytes);
        let pieces = tokio::task::spawn_blocking(move || {
            cut(std::io::BufReader::new(input), len, max, quote)
        })
        .await
        .map_err(|err| LoadError::Parser(err.to_string()))?;
        if let Some(err) = broken.take() {
            return Err(LoadError::Store(err));
        }
        let Ok(pieces) = pieces else {
            return Ok(Vec::new());
        };
        if pieces.len() < 2 {
            return Ok(Vec::new());
        }
        // Written once: a racing engine's plan wins over this one (see `write_plan`).
        let (upload_id, chunk_no) = (message.upload_id, message.chunk_no);
        let plan = plans::write_plan(client, upload_id, chunk_no, attempt, &pieces).await?;
        tracing::debug!(upload_id = %message.upload_id, chunk = message.chunk_no, pieces = plan.len(), "chunk cut into pieces");
        Ok(plan)
    }

    /// Loads one piece on a session and COPY slot of its own, once its months are made.
    async fn load_piece(
        &self,
        message: &ChunkMessage,
        position: &Position,
        source: &Source<'_>,
        months: &MonthsLane<'_>,
        planned: &Planned,
    ) -> Result<PieceOutcome, LoadError> {
        let piece = planned.piece;
        let turn = months.turn.lock().await;
        let range = Some(piece.start..piece.end);
        let (relative, target) = (source.relative, source.target);
        self.prepare_partitions(months.client, relative, range, target, &source.allowance)
            .await?;
        drop(turn);
        let _slot = self.copy_slot().await;
        let mut client = self.piece_sessions.take().await?;
        let outcome = self
            .copy_piece(&mut client, message, position, source, planned)
            .await;
        let outcome = match outcome {
            // Rows refused for the unique keys a peer's committed copy of this very piece took.
            Ok(PieceOutcome::ChunkFailed(ChunkError::Refused(reason))) => {
                match loaded_by_peer(&client, message, planned).await {
                    Ok(true) => Ok(PieceOutcome::Skipped),
                    Ok(false) => Ok(PieceOutcome::ChunkFailed(ChunkError::Refused(reason))),
                    Err(err) => Err(err),
                }
            }
            other => other,
        };
        self.piece_sessions.give_back(client);
        outcome
    }

    async fn copy_piece(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
        source: &Source<'_>,
        planned: &Planned,
    ) -> Result<PieceOutcome, LoadError> {
        let target = source.target;
        let piece = planned.piece;
        // A month the first look missed means: roll back, create its partition, load again.
        for _attempt in 0..3 {
            let policy = ErrorPolicy::RejectRows;
            let range = Some(piece.start..piece.end);
            let Some(input) = self.open(source.relative, range).await? else {
                let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
                return Ok(PieceOutcome::ChunkFailed(ChunkError::Io(missing)));
            };
            let (tx, parsed) = match self
                .copy(client, input, piece.first_line, target, message, policy)
                .await
            {
                Ok(copied) => copied,
                Err(err) => match refused_rows(&err) {
                    Some(reason) => {
                        return Ok(PieceOutcome::ChunkFailed(ChunkError::Refused(reason)))
                    }
                    None => return Err(err),
                },
            };
            let (report, rejects) = match parsed {
                Ok(parsed) => parsed,
                Err(err) => return Ok(PieceOutcome::ChunkFailed(err)),
            };
            let (dataset, months) = (&target.dataset, &report.partitions);
            let reserved = self
                .partitions
                .reserve_missing(&tx, dataset, months, &source.allowance)
                .await?;
            let missing = match reserved {
                Ok(missing) => missing,
                Err(reason) => return Ok(PieceOutcome::ChunkFailed(ChunkError::Refused(reason))),
            };
            if !missing.is_empty() {
                drop(tx);
                metrics::partition_reload();
                let created = self.partitions.create(client, dataset, &missing).await;
                if let Some(reason) = created.as_ref().err().and_then(in_the_way) {
                    return Ok(PieceOutcome::ChunkFailed(ChunkError::Refused(reason)));
                }
                created?;
                continue;
            }
            still_owner(&tx, position).await?;
            let moved = plans::finish_piece(
                &tx,
                message.upload_id,
                message.chunk_no,
                source.attempt,
                planned.piece_no,
                report.rows_loaded,
                report.rows_rejected,
            )
            .await?;
            if !moved {
                return Ok(PieceOutcome::Skipped); // Dropping `tx` rolls the rows back.
            }
            if let Some(rejects) = rejects {
                rejected::copy(&tx, rejects).await?;
            }
            tx.commit().await?;
            return Ok(PieceOutcome::Loaded(report));
        }
        Err(LoadError::Parser(
            "partitions kept changing under the piece".into(),
        ))
    }

    /// Every piece is loaded: the chunk is, with their counts, in one transaction.
    async fn finish(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
        attempt: i32,
    ) -> Result<Outcome, LoadError> {
        let tx = client.transaction().await?;
        let totals = plans::totals(&tx, message.upload_id, message.chunk_no).await?;
        if totals.pending > 0 {
            // A piece this engine saw loaded by a peer whose commit is still to come: retried.
            let pending = totals.pending;
            return Err(LoadError::Parser(format!("{pending} pieces still loading")));
        }
        let (rows, rejected) = (totals.rows_loaded, totals.rows_rejected);
        let outcome = ChunkOutcome {
            state: ChunkState::Loaded,
            rows_loaded: rows,
            rows_rejected: rejected,
            rows_skipped: 0,
            error: None,
            in_pieces: true,
            attempt,
        };
        if !record_outcome(&tx, message, position, outcome, None).await? {
            drop(tx);
            return skipped(client, message, position).await;
        }
        plans::delete_plan(&tx, message.upload_id, message.chunk_no).await?;
        tx.commit().await?;
        Ok(Outcome::Loaded { rows, rejected })
    }

    /// A piece found the chunk unloadable: the chunk fails whole, and what its other pieces
    /// committed is deleted in the same transaction.
    async fn fail_whole(
        &self,
        client: &mut Client,
        message: &ChunkMessage,
        position: &Position,
        source: &Source<'_>,
        err: ChunkError,
    ) -> Result<Outcome, LoadError> {
        let reason = match err {
            ChunkError::Io(err) if err.kind() == std::io::ErrorKind::NotFound => {
                "chunk file is missing".to_owned()
            }
            other => other.to_string(),
        };
        let tx = client.transaction().await?;
        if claim(&tx, message, position).await?.is_none() {
            drop(tx);
            return skipped(client, message, position).await;
        }
        let outcome = ChunkOutcome {
            state: ChunkState::Failed,
            rows_loaded: 0,
            rows_rejected: 0,
            rows_skipped: 0,
            error: Some(reason.as_str()),
            in_pieces: true,
            attempt: source.attempt,
        };
        if !record_outcome(&tx, message, position, outcome, None).await? {
            drop(tx);
            return skipped(client, message, position).await;
        }
        // After the chunk row moved (see `undo_plan`).
        let undone = plans::undo_plan(&tx, message.upload_id, message.chunk_no).await?;
        tx.commit().await?;
        metrics::chunk(Counted::Failed);
        tracing::warn!(upload_id = %message.upload_id, chunk = message.chunk_no, %reason, undone, "chunk failed; rows its loaded pieces committed were deleted");
        Ok(Outcome::Failed { reason })
    }
}

/// Whether a peer (or an earlier load) committed the piece, as the chunk's plan says now.
async fn loaded_by_peer(
    client: &Client,
    message: &ChunkMessage,
    planned: &Planned,
) -> Result<bool, LoadError> {
    let plan = plans::plan(client, message.upload_id, message.chunk_no).await?;
    Ok(plan
        .iter()
        .any(|piece| piece.piece_no == planned.piece_no && piece.loaded))
}
