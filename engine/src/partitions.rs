//! Monthly partitions of the target table, created ahead of the rows that need them.
//!
//! A COPY never fails for a missing partition (rows would land in the default partition), but
//! well-formed data must not end up there: the loader checks the months a chunk touched against
//! this cache before committing, and when one is new it rolls back, creates the partition here
//! (outside any open COPY, so no lock waits on our own transaction) and loads the chunk again.
//!
//! Creating a partition takes an ACCESS EXCLUSIVE lock on the parent table, so it waits for every
//! open transaction that COPYs into the table, and while it waits every new COPY queues behind it
//! (measured on PostgreSQL 15: an INSERT waits on a pending `CREATE TABLE ... PARTITION OF`). A
//! COPY of a stopped process (SIGSTOP, a frozen VM) would thus stall loading in the whole group.
//! The DDL waits [`DDL_LOCK_TIMEOUT`] at most, then fails and the load is retried with backoff;
//! the stopped process is fenced when its lease is taken over ([`crate::lease`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio_postgres::Client;

use crate::dataset::Dataset;
use crate::pgcopy::Timestamp;

/// How long partition DDL waits for the COPYs running into the table. A chunk's COPY (8 MiB by
/// default) takes well under a second; every COPY started meanwhile waits behind the DDL, so
/// keep it short.
pub const DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The months (year, month) that have a partition, or can never get one.
#[derive(Default)]
pub struct MonthPartitions {
    known: Mutex<HashSet<(i32, u32)>>,
    /// One creator at a time in this process: DDL on the parent table waits for running COPYs.
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
            let created: bool = created?.get(0);
            if !created {
                // Rows of that month already sit in the default partition: new ones join them.
                tracing::warn!(year, month, "month stays in the default partition");
            } else {
                tracing::info!(year, month, "partition ready");
            }
            self.known
                .lock()
                .expect("partition cache lock should not be poisoned")
                .insert((year, month));
        }
        Ok(())
    }
}

/// The month of the first data row of a chunk, read from its first bytes: creating that month's
/// partition before the COPY spares a rolled-back load in the common case of ordered data.
pub fn first_row_month(head: &[u8], dataset: &Dataset) -> Option<(i32, u32)> {
    let column = dataset.partition_column?;
    let header = dataset.header_line();
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let line = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .find(|line| !line.is_empty() && *line != header.as_bytes())?;
    let cell = line.split(|&b| b == b',').nth(column)?;
    let timestamp = Timestamp::parse(cell).ok()?;
    Some((timestamp.year, timestamp.month))
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
    fn reads_the_month_of_the_first_data_row() {
        let dataset = Dataset::transactions();
        let chunk = b"date,content,amount,type\r\n\r\n03/02/2023 00:00:01,x,1,Deposit\r\n";
        assert_eq!(first_row_month(chunk, &dataset), Some((2023, 2)));
        assert_eq!(
            first_row_month(b"2024-12-31 23:59:59,x,1,Deposit", &dataset),
            Some((2024, 12))
        );
        assert_eq!(first_row_month(b"garbage", &dataset), None);
    }

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
