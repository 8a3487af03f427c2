//! What PostgreSQL holds after an upload, checked against what was sent.
//!
//! The rows of an upload carry their lineage (`upload_id`, `chunk_no`, `line_no`), so exactness
//! can be proved from the table alone: the row count matches the generated rows, every planned
//! chunk is there with exactly its rows, no (chunk, line) pair repeats, and each chunk's line
//! numbers are contiguous. Content is compared with the baseline table in both directions with
//! `EXCEPT ALL`, which counts duplicates, so any lost, doubled or altered row shows.

use serde::Serialize;
use tokio_postgres::Client;
use uuid::Uuid;

use ingest_ledger::{LedgerError, UploadState};

use super::scenario::Ending;
use super::BenchError;

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found (and expected, when it differs).
    pub detail: String,
}

impl Check {
    fn equal<T: PartialEq + std::fmt::Display>(name: &str, actual: T, expected: T) -> Self {
        let ok = actual == expected;
        let detail = if ok {
            actual.to_string()
        } else {
            format!("{actual}, expected {expected}")
        };
        Self {
            name: name.to_owned(),
            ok,
            detail,
        }
    }
}

/// Chunk latency from the ledger (`committed_at - received_at`), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Checks the upload's rows: `planned_rows[n]` is how many data rows chunk `n` holds; `ending`
/// says what its ledger row should show.
pub async fn lineage(
    client: &Client,
    upload: Uuid,
    planned_rows: &[u64],
    ending: Ending,
) -> Result<Vec<Check>, BenchError> {
    let expected_rows: u64 = planned_rows.iter().sum();
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (chunk_no, line_no)) FROM transactions
             WHERE upload_id = $1",
            &[&upload],
        )
        .await?;
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    let per_chunk = client
        .query(
            "SELECT chunk_no, count(*), min(line_no), max(line_no) FROM transactions
             WHERE upload_id = $1 GROUP BY chunk_no ORDER BY chunk_no",
            &[&upload],
        )
        .await?;
    let mut wrong_counts = Vec::new();
    let mut gaps = Vec::new();
    for chunk in &per_chunk {
        let (no, count, min, max): (i32, i64, i32, i32) =
            (chunk.get(0), chunk.get(1), chunk.get(2), chunk.get(3));
        let planned = usize::try_from(no)
            .ok()
            .and_then(|n| planned_rows.get(n).copied());
        if planned != Some(count as u64) {
            wrong_counts.push(no);
        }
        if i64::from(max) - i64::from(min) + 1 != count {
            gaps.push(no);
        }
    }
    let with_rows = planned_rows.iter().filter(|&&r| r > 0).count();
    let ledger = ingest_ledger::report::totals(client, upload).await?;
    let (state, loaded, rejected) = (ledger.state, ledger.rows_loaded, ledger.rows_rejected);
    let (chunks_loaded, chunks_failed) = (ledger.chunks_loaded, ledger.chunks_failed);
    let ended = match ending {
        Ending::Declared => Check::equal("upload state", state, UploadState::Done),
        // No count declared: `done` only after the settle period, which nobody waited for.
        Ending::Settle => Check {
            name: "upload state (settle rule)".to_owned(),
            ok: matches!(state, UploadState::Receiving | UploadState::Done),
            detail: format!("{state}, expected receiving or done"),
        },
    };
    Ok(vec![
        ended,
        Check::equal("chunks loaded", chunks_loaded as usize, planned_rows.len()),
        Check::equal("chunks failed", chunks_failed, 0),
        Check::equal("rows in transactions", rows as u64, expected_rows),
        Check::equal("rows_loaded", loaded as u64, expected_rows),
        Check::equal("rows_rejected", rejected, 0),
        Check::equal("duplicate (chunk, line)", rows - distinct, 0),
        Check::equal("chunks with rows", per_chunk.len(), with_rows),
        Check::equal(
            "chunks with wrong row count",
            describe(&wrong_counts),
            describe(&[]),
        ),
        Check::equal("chunks with line gaps", describe(&gaps), describe(&[])),
    ])
}

/// Compares the upload's rows with the baseline table, both ways.
pub async fn same_content(
    client: &Client,
    upload: Uuid,
    baseline_table: &str,
) -> Result<Vec<Check>, tokio_postgres::Error> {
    let pipeline = "SELECT date, content, amount, type FROM transactions WHERE upload_id = $1";
    let baseline = format!("SELECT date, content, amount, type FROM {baseline_table}");
    let only_pipeline: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM ({pipeline} EXCEPT ALL {baseline}) d"),
            &[&upload],
        )
        .await?
        .get(0);
    let only_baseline: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM ({baseline} EXCEPT ALL {pipeline}) d"),
            &[&upload],
        )
        .await?
        .get(0);
    Ok(vec![
        Check::equal("pipeline EXCEPT ALL baseline", only_pipeline, 0),
        Check::equal("baseline EXCEPT ALL pipeline", only_baseline, 0),
    ])
}

/// The monthly partitions of `transactions` among `months` (year, month) that exist: none
/// should before the pipeline's clock starts, so the pipeline makes its own.
pub async fn existing_partitions(
    client: &Client,
    months: &[(i32, u32)],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let names: Vec<String> = months
        .iter()
        .map(|(year, month)| format!("transactions_{year:04}_{month:02}"))
        .collect();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'transactions'::regclass AND c.relname::text = ANY($1)
             ORDER BY 1",
            &[&names],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// After the pipeline: every month of the data has its partition and none of the upload's
/// rows sits in the default partition.
pub async fn partitions(
    client: &Client,
    upload: Uuid,
    months: &[(i32, u32)],
) -> Result<Vec<Check>, tokio_postgres::Error> {
    let made = existing_partitions(client, months).await?;
    let in_default: i64 = client
        .query_one(
            "SELECT count(*) FROM transactions_default WHERE upload_id = $1",
            &[&upload],
        )
        .await?
        .get(0);
    Ok(vec![
        Check::equal("data months with a partition", made.len(), months.len()),
        Check::equal("upload rows in transactions_default", in_default, 0),
    ])
}

/// The p50 and p99 of `committed_at - received_at` over the upload's chunks.
pub async fn chunk_latency(client: &Client, upload: Uuid) -> Result<Option<Latency>, LedgerError> {
    let quantiles = ingest_ledger::report::chunk_latency_quantiles(client, upload).await?;
    Ok(quantiles.map(|(p50, p99)| Latency {
        p50_ms: p50 * 1e3,
        p99_ms: p99 * 1e3,
    }))
}

/// A short list of chunk numbers, `none` when empty.
fn describe(chunks: &[i32]) -> String {
    match chunks {
        [] => "none".to_owned(),
        [a, b, c, d, ..] if chunks.len() > 4 => {
            format!("{a}, {b}, {c}, {d} and {} more", chunks.len() - 4)
        }
        _ => chunks
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_say_what_differs() {
        let ok = Check::equal("rows", 5, 5);
        assert!(ok.ok);
        assert_eq!(ok.detail, "5");
        let bad = Check::equal("rows", 4, 5);
        assert!(!bad.ok);
        assert_eq!(bad.detail, "4, expected 5");
        assert_eq!(describe(&[]), "none");
        assert_eq!(describe(&[3, 7]), "3, 7");
        assert_eq!(describe(&[1, 2, 3, 4, 5, 6]), "1, 2, 3, 4 and 2 more");
    }
}
