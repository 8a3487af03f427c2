//! The waiting chunks of each partition: stored in the ledger and not yet loaded or failed.
//! Every engine of a group shares the ledger, so any owner of a partition reads the same truth.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::states::Partition;
use crate::LedgerError;

/// The waiting chunks of one partition.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Chunks stored and neither loaded nor failed.
    pub chunks: i64,
    /// Age of the oldest of them, in seconds (0 when there are none).
    pub oldest_waiting_seconds: f64,
}

/// The backlog of each of `partitions` (zero for those with none). The partial index
/// `chunks_backlog` holds exactly the waiting chunks, so this stays cheap.
pub async fn of(
    client: &Client,
    partitions: &[Partition],
) -> Result<BTreeMap<Partition, Backlog>, LedgerError> {
    let mut found: BTreeMap<Partition, Backlog> = partitions
        .iter()
        .map(|&p| (p, Backlog::default()))
        .collect();
    let numbers: Vec<i32> = partitions.iter().map(|p| p.0).collect();
    let rows = client
        .query(
            "SELECT partition, count(*),
                    greatest(extract(epoch FROM now() - min(received_at)), 0)::float8
             FROM chunks WHERE state = 'stored' AND partition = ANY($1)
             GROUP BY partition",
            &[&numbers],
        )
        .await?;
    for row in rows {
        found.insert(
            Partition(row.get(0)),
            Backlog {
                chunks: row.get(1),
                oldest_waiting_seconds: row.get(2),
            },
        );
    }
    Ok(found)
}
