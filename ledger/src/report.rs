//! What the benchmark reads back about one upload once it is loaded.

use tokio_postgres::Client;
use uuid::Uuid;

use crate::states::UploadState;
use crate::LedgerError;

/// An upload's end state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTotals {
    pub state: UploadState,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub chunks_loaded: i32,
    pub chunks_failed: i32,
}

pub async fn totals(client: &Client, upload_id: Uuid) -> Result<UploadTotals, LedgerError> {
    let row = client
        .query_one(
            "SELECT state, rows_loaded, rows_rejected, chunks_loaded, chunks_failed
             FROM uploads WHERE upload_id = $1",
            &[&upload_id],
        )
        .await?;
    Ok(UploadTotals {
        state: UploadState::parse(row.get(0))?,
        rows_loaded: row.get(1),
        rows_rejected: row.get(2),
        chunks_loaded: row.get(3),
        chunks_failed: row.get(4),
    })
}

/// The p50 and p99, in seconds, of `committed_at - received_at` over the upload's chunks; `None`
/// before any committed.
pub async fn chunk_latency_quantiles(
    client: &Client,
    upload_id: Uuid,
) -> Result<Option<(f64, f64)>, LedgerError> {
    let row = client
        .query_one(
            "SELECT percentile_disc(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP
                 (ORDER BY extract(epoch FROM committed_at - received_at)::float8)
             FROM chunks WHERE upload_id = $1 AND committed_at IS NOT NULL",
            &[&upload_id],
        )
        .await?;
    let quantiles: Option<Vec<f64>> = row.get(0);
    Ok(match quantiles.as_deref() {
        Some(&[p50, p99]) => Some((p50, p99)),
        _ => None,
    })
}
