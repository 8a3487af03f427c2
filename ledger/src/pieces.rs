//! The plan of a big chunk loaded in pieces (`chunk_pieces`), and each piece's outcome.
//!
//! The plan is written once, under the chunk row's lock, before any piece loads: whoever loads
//! the chunk later (a retry, or a peer after a takeover) reads the same plan. A piece moves from
//! `stored` to `loaded` in the transaction that holds its rows, like a chunk does
//! ([`crate::loads::finish`]); the chunk itself is finished once every piece is, and the plan
//! deleted with it.

use tokio_postgres::{Client, GenericClient, Transaction};
use uuid::Uuid;

use ingest_rows::dataset::quote_ident;
use ingest_rows::pieces::Piece;

use crate::LedgerError;

/// One piece of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedPiece {
    pub piece_no: i32,
    pub piece: Piece,
    pub loaded: bool,
}

/// The chunk's plan, empty if it has none.
pub async fn plan(
    client: &impl GenericClient,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<Vec<PlannedPiece>, LedgerError> {
    let rows = client
        .query(
            "SELECT piece_no, byte_start, byte_end, first_line, state = 'loaded'
             FROM chunk_pieces WHERE upload_id = $1 AND chunk_no = $2 ORDER BY piece_no",
            &[&upload_id, &chunk_no],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| PlannedPiece {
            piece_no: row.get(0),
            piece: Piece {
                start: row.get::<_, i64>(1) as u64,
                end: row.get::<_, i64>(2) as u64,
                first_line: row.get(3),
            },
            loaded: row.get(4),
        })
        .collect())
}

/// Writes `pieces` as the chunk's plan, under the chunk row's lock; returns the plan in force:
/// a racing engine's if it wrote one first (its cut could differ if its piece size does), empty
/// if the chunk is no longer `stored` or no longer at `attempt` (its bytes may have changed).
pub async fn write_plan(
    client: &mut Client,
    upload_id: Uuid,
    chunk_no: i32,
    attempt: i32,
    pieces: &[Piece],
) -> Result<Vec<PlannedPiece>, LedgerError> {
    let tx = client.transaction().await?;
    let stored = tx
        .query_opt(
            "SELECT 1 FROM chunks WHERE upload_id = $1 AND chunk_no = $2 AND state = 'stored'
               AND attempt = $3
             FOR NO KEY UPDATE",
            &[&upload_id, &chunk_no, &attempt],
        )
        .await?;
    if stored.is_none() {
        return Ok(Vec::new());
    }
    let raced = plan(&tx, upload_id, chunk_no).await?;
    if !raced.is_empty() {
        tx.commit().await?;
        return Ok(raced);
    }
    let numbers: Vec<i32> = (0..pieces.len() as i32).collect();
    let starts: Vec<i64> = pieces.iter().map(|p| p.start as i64).collect();
    let ends: Vec<i64> = pieces.iter().map(|p| p.end as i64).collect();
    let lines: Vec<i32> = pieces.iter().map(|p| p.first_line).collect();
    tx.execute(
        "INSERT INTO chunk_pieces (upload_id, chunk_no, piece_no, byte_start, byte_end, first_line)
         SELECT $1, $2, * FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::int[])",
        &[&upload_id, &chunk_no, &numbers, &starts, &ends, &lines],
    )
    .await?;
    tx.commit().await?;
    Ok(pieces
        .iter()
        .zip(numbers)
        .map(|(&piece, piece_no)| PlannedPiece {
            piece_no,
            piece,
            loaded: false,
        })
        .collect())
}

/// Moves a piece from `stored` to `loaded` with its counts; `false` when a peer got there first
/// or the chunk itself is no longer `stored` at `attempt` (expired, failed or retried meanwhile).
/// The chunk row is share-locked until the piece commits, so whatever fails the chunk waits for
/// the pieces in flight and every later piece sees it failed and rolls back.
pub async fn finish_piece(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
    attempt: i32,
    piece_no: i32,
    rows_loaded: u64,
    rows_rejected: u64,
) -> Result<bool, LedgerError> {
    let chunk_stored = tx
        .query_opt(
            "SELECT 1 FROM chunks WHERE upload_id = $1 AND chunk_no = $2 AND state = 'stored'
               AND attempt = $3
             FOR SHARE",
            &[&upload_id, &chunk_no, &attempt],
        )
        .await?;
    if chunk_stored.is_none() {
        return Ok(false);
    }
    let moved = tx
        .execute(
            "UPDATE chunk_pieces SET state = 'loaded', rows_loaded = $4, rows_rejected = $5
             WHERE upload_id = $1 AND chunk_no = $2 AND piece_no = $3 AND state = 'stored'",
            &[
                &upload_id,
                &chunk_no,
                &piece_no,
                &(rows_loaded as i64),
                &(rows_rejected as i64),
            ],
        )
        .await?;
    Ok(moved == 1)
}

/// What a chunk's pieces add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceTotals {
    /// Pieces not loaded yet.
    pub pending: i64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
}

pub async fn totals(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<PieceTotals, LedgerError> {
    let row = tx
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'stored'),
                    coalesce(sum(rows_loaded), 0)::bigint, coalesce(sum(rows_rejected), 0)::bigint
             FROM chunk_pieces WHERE upload_id = $1 AND chunk_no = $2",
            &[&upload_id, &chunk_no],
        )
        .await?;
    Ok(PieceTotals {
        pending: row.get(0),
        rows_loaded: row.get::<_, i64>(1) as u64,
        rows_rejected: row.get::<_, i64>(2) as u64,
    })
}

/// Undoes a failing chunk's pieces: deletes what its loaded pieces committed (rows in its
/// upload's table, rejected rows) and its plan; returns the rows deleted. Called after the
/// chunk's row moved to `failed`: that update waited for pieces still committing (they
/// share-lock the row), so this sees their rows, and no piece commits after it.
pub async fn undo_plan(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<u64, LedgerError> {
    let table: Option<String> = tx
        .query_one(
            "SELECT target_table FROM uploads WHERE upload_id = $1",
            &[&upload_id],
        )
        .await?
        .get(0);
    let undone = match table {
        Some(table) => undo_chunk_rows(tx, &table, upload_id, chunk_no).await?,
        None => 0, // Uploads from before 0013 were all `transactions`, which 0013 filled in.
    };
    delete_plan(tx, upload_id, chunk_no).await?;
    Ok(undone)
}

/// Deletes the plan, with the chunk's own outcome.
pub async fn delete_plan(
    tx: &Transaction<'_>,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<(), LedgerError> {
    tx.execute(
        "DELETE FROM chunk_pieces WHERE upload_id = $1 AND chunk_no = $2",
        &[&upload_id, &chunk_no],
    )
    .await?;
    Ok(())
}

/// Deletes the rows and rejected rows that loaded pieces of a chunk committed, by their lineage
/// (a scan of `table`: only on the rare path of a chunk failing after some pieces loaded);
/// returns how many rows. What keeps "a failed chunk loaded nothing" true for chunks in pieces.
pub async fn undo_chunk_rows(
    tx: &Transaction<'_>,
    table: &str,
    upload_id: Uuid,
    chunk_no: i32,
) -> Result<u64, LedgerError> {
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&upload_id, &chunk_no];
    let undone = tx
        .execute(
            &format!(
                "DELETE FROM {} WHERE upload_id = $1 AND chunk_no = $2",
                quote_ident(table)
            ),
            &key,
        )
        .await?;
    tx.execute(
        "DELETE FROM rejected_rows WHERE upload_id = $1 AND chunk_no = $2",
        &key,
    )
    .await?;
    Ok(undone)
}
