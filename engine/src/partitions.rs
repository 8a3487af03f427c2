//! Monthly partitions of the target table, created ahead of the rows that need them.
//!
//! A COPY never fails for a missing partition (rows would land in the default partition), but
//! well-formed data must not end up there. The loader reads a chunk's months before its COPY
//! ([`ingest_rows::months`]) and creates the missing partitions here first; it still checks the
//! months the validator found before committing, and for a month the first look missed it rolls
//! back, creates the partition and loads the chunk again.
//!
//! Each partition is made in a short transaction of its own, one at a time across all engines
//! (an advisory lock in `ensure_transactions_partition`, migration 0006): the table is created
//! apart and then attached, which needs only SHARE UPDATE EXCLUSIVE on the parent table, so
//! running COPYs into other months neither hold it up nor wait for it. Rows of that month
//! already in the default partition are moved into the new partition in the same transaction.
//! The attach does lock the default partition: a COPY that routed rows there (a month with no
//! partition yet) holds it up, for [`DDL_LOCK_TIMEOUT`] at most; then the DDL fails and the load
//! is retried with backoff (a stopped process's COPY is fenced when its lease is taken over,
//! [`crate::lease`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio_postgres::Client;

use crate::metrics;

/// How long partition DDL waits for its locks (the advisory lock held by another engine's DDL,
/// the default partition held by a COPY that routed rows there). COPYs routing rows to the
/// default partition wait behind it meanwhile, so keep it short.
pub const DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The months (year, month) known to have a partition.
#[derive(Default)]
pub struct MonthPartitions {
    known: Mutex<HashSet<(i32, u32)>>,
    /// One creator at a time in this process (the database's advisory lock serializes engines),
    /// so processors needing the same month make it once.
    creating: tokio::sync::Mutex<()>,
}

impl MonthPartitions {
    /// Loads the existing `<table>_YYYY_MM` partitions.
    pub async fn load(client: &Client, table: &str) -> Result<Self, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = $1::text::regclass",
                &[&table],
            )
            .await?;
        let known = rows
            .iter()
            .filter_map(|row| parse_partition_name(row.get(0), table))
            .collect();
        Ok(Self {
            known: Mutex::new(known),
            creating: tokio::sync::Mutex::new(()),
        })
    }

    /// The months of `months` without a partition yet.
    pub fn missing(&self, months: &BTreeSet<(i32, u32)>) -> Vec<(i32, u32)> {
        let known = self
            .known
            .lock()
            .expect("partition cache lock should not be poisoned");
        months
            .iter()
            .filter(|m| !known.contains(m))
            .copied()
            .collect()
    }

    /// Creates the partitions of `months` (idempotent, safe when several engines race).
    pub async fn create(
        &self,
        client: &Client,
        months: &[(i32, u32)],
    ) -> Result<(), tokio_postgres::Error> {
        let _creating = self.creating.lock().await;
        for &(year, month) in months {
            if self.missing(&BTreeSet::from([(year, month)])).is_empty() {
                continue; // Another processor of ours just made it.
            }
            let first_day = format!("{year:04}-{month:02}-01");
            let started = std::time::Instant::now();
            client
                .batch_execute(&format!(
                    "SET lock_timeout = {}",
                    DDL_LOCK_TIMEOUT.as_millis()
                ))
                .await?;
            let created = client
                .query_one(
                    "SELECT ensure_transactions_partition($1::text::date)",
                    &[&first_day],
                )
                .await;
            // Back to the session's own lock timeout (set at connect: `RESET` returns to it).
            client.batch_execute("RESET lock_timeout").await?;
            created?;
            metrics::partition_ddl_duration(started.elapsed());
            tracing::info!(year, month, took = ?started.elapsed(), "partition ready");
            self.known
                .lock()
                .expect("partition cache lock should not be poisoned")
                .insert((year, month));
        }
        Ok(())
    }
}

fn parse_partition_name(name: &str, table: &str) -> Option<(i32, u32)> {
    let rest = name.strip_prefix(table)?.strip_prefix('_')?;
    let (year, month) = rest.split_once('_')?;
    Some((year.parse().ok()?, month.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_monthly_partition_names_only() {
        assert_eq!(
            parse_partition_name("transactions_2023_01", "transactions"),
            Some((2023, 1))
        );
        assert_eq!(
            parse_partition_name("transactions_default", "transactions"),
            None
        );
    }
}
