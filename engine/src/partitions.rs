//! Partitions of the datasets' tables (by month or by day), created ahead of the rows that
//! need them.
//!
//! A COPY never fails for a missing partition (rows would land in the default partition), but
//! well-formed data must not end up there. The loader reads a chunk's partitions before its
//! COPY ([`ingest_rows::partitions`]) and creates the missing ones here first; it still checks
//! the partitions the validator found before committing, and for one the first look missed it
//! rolls back, creates the partition and loads the chunk again.
//!
//! Each partition is made in a short transaction of its own, one at a time per table across all
//! engines (an advisory lock in `ensure_partition`, migration 0014): the table is created
//! apart and then attached, which needs only SHARE UPDATE EXCLUSIVE on the parent table, so
//! running COPYs into other months neither hold it up nor wait for it. Rows of that month
//! already in the default partition are moved into the new partition in the same transaction.
//! The attach does lock the default partition: a COPY that routed rows there (a month with no
//! partition yet) holds it up, for [`DDL_LOCK_TIMEOUT`] at most; then the DDL fails and the load
//! is retried with backoff (a stopped process's COPY is fenced when its lease is taken over,
//! [`crate::lease`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ingest_rows::dataset::{ColumnKind, Dataset, Day, PartitionBy};
use ingest_rows::registry::Registry;
use ingest_rows::values::days_in_month;
use tokio_postgres::{Client, GenericClient};

use crate::metrics;

/// How long partition DDL waits for its locks (the advisory lock held by another engine's DDL,
/// the default partition held by a COPY that routed rows there). COPYs routing rows to the
/// default partition wait behind it meanwhile, so keep it short.
pub const DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The most partitions one chunk may make: a year of days. More is far more likely a mistake
/// (dates scattered over centuries) than data, and each is a table; the chunk fails instead.
pub const MAX_NEW_PER_CHUNK: usize = 366;

/// Why a chunk is refused if, after making `made` partitions already, it needs `missing` more.
fn too_many(made: usize, missing: &[Day]) -> Option<String> {
    let needed = made + missing.len();
    (needed > MAX_NEW_PER_CHUNK).then(|| {
        format!(
            "the rows need {needed} new partitions, more than the {MAX_NEW_PER_CHUNK} one chunk may make"
        )
    })
}

/// The partitions one load of a chunk may still make, shared by its look ahead, its reloads
/// and all its pieces. Room is reserved before a partition is made, in one atomic step, so
/// pieces that find months at the same time cannot together pass [`MAX_NEW_PER_CHUNK`].
#[derive(Debug, Default)]
pub struct Allowance {
    reserved: AtomicUsize,
}

impl Allowance {
    /// Reserves room for the `missing` partitions, or says why the chunk is refused. Room
    /// stays taken if making them then fails (that load is retried with a new allowance),
    /// unless the look ahead gives it back ([`Allowance::release`]).
    pub fn reserve(&self, missing: &[Day]) -> Result<(), String> {
        let mut refused = None;
        let reserved = self
            .reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |made| {
                refused = too_many(made, missing);
                refused.is_none().then_some(made + missing.len())
            });
        match (reserved, refused) {
            (Ok(_), _) => Ok(()),
            (Err(_), Some(reason)) => Err(reason),
            (Err(made), None) => unreachable!("refused at {made} without a reason"),
        }
    }

    /// Gives back the room of `unmade` partitions reserved and then not made, so that the
    /// load reserving them again does not count them twice.
    pub fn release(&self, unmade: usize) {
        self.reserved.fetch_sub(unmade, Ordering::AcqRel);
    }
}

/// Why a partition cannot be made, when trying again would meet the same obstacle: a relation
/// of its name that is not a partition of the table (`ensure_partition` raises, migration
/// 0014). The chunk that needs it fails with the reason instead of holding up its stream
/// partition until an operator moves the relation away.
pub fn in_the_way(err: &tokio_postgres::Error) -> Option<String> {
    let raised = err.as_db_error().filter(|db| db.code().code() == "P0001")?;
    Some(format!("a partition cannot be made: {}", raised.message()))
}

/// The partitions (table, first day) known to exist.
#[derive(Default)]
pub struct Partitions {
    known: Mutex<HashSet<(String, Day)>>,
    /// One creator at a time in this process (the database's advisory lock serializes engines),
    /// so processors needing the same partition make it once.
    creating: tokio::sync::Mutex<()>,
}

impl Partitions {
    /// Loads the existing partitions of every partitioned dataset's table.
    pub async fn load(client: &Client, registry: &Registry) -> Result<Self, tokio_postgres::Error> {
        let mut known = HashSet::new();
        for dataset in registry.iter() {
            known.extend(existing(client, dataset).await?);
        }
        Ok(Self {
            known: Mutex::new(known),
            creating: tokio::sync::Mutex::new(()),
        })
    }

    /// The partitions of `starts` that `dataset`'s table lacks, with room reserved for them in
    /// the chunk's `allowance`, or why the chunk is refused. Before refusing, the catalog is read
    /// again: partitions other engines made since this one started are not new.
    pub async fn reserve_missing(
        &self,
        client: &impl GenericClient,
        dataset: &Dataset,
        starts: &BTreeSet<Day>,
        allowance: &Allowance,
    ) -> Result<Result<Vec<Day>, String>, tokio_postgres::Error> {
        let missing = self.missing(dataset, starts);
        if allowance.reserve(&missing).is_ok() {
            return Ok(Ok(missing));
        }
        let made_elsewhere = existing(client, dataset).await?;
        self.known
            .lock()
            .expect("partition cache lock should not be poisoned")
            .extend(made_elsewhere);
        let missing = self.missing(dataset, starts);
        Ok(allowance.reserve(&missing).map(|()| missing))
    }

    /// How many of `starts` `dataset`'s table still lacks, as far as this process knows.
    pub fn unmade(&self, dataset: &Dataset, starts: &[Day]) -> usize {
        let starts = starts.iter().copied().collect();
        self.missing(dataset, &starts).len()
    }

    /// The partitions of `starts` that `dataset`'s table does not have yet, as far as this
    /// process knows.
    fn missing(&self, dataset: &Dataset, starts: &BTreeSet<Day>) -> Vec<Day> {
        let known = self
            .known
            .lock()
            .expect("partition cache lock should not be poisoned");
        starts
            .iter()
            .filter(|&&start| !known.contains(&(dataset.table.clone(), start)))
            .copied()
            .collect()
    }

    /// Creates the partitions of `dataset`'s table starting at `starts` (idempotent, safe when
    /// several engines race).
    pub async fn create(
        &self,
        client: &Client,
        dataset: &Dataset,
        starts: &[Day],
    ) -> Result<(), tokio_postgres::Error> {
        let Some(partitioning) = dataset.partition else {
            return Ok(());
        };
        let key = &dataset.columns[partitioning.column];
        let _creating = self.creating.lock().await;
        for &start in starts {
            if self.missing(dataset, &BTreeSet::from([start])).is_empty() {
                continue; // Another processor of ours just made it.
            }
            let name = partitioning.by.table_name(&dataset.table, start);
            let (first, next) = bounds(partitioning.by, start, &key.kind);
            let started = std::time::Instant::now();
            client
                .batch_execute(&format!(
                    "SET lock_timeout = {}",
                    DDL_LOCK_TIMEOUT.as_millis()
                ))
                .await?;
            let created = client
                .query_one(
                    "SELECT ensure_partition($1, $2, $3, $4, $5)",
                    &[&dataset.table, &name, &key.name, &first, &next],
                )
                .await;
            // Back to the session's own lock timeout (set at connect: `RESET` returns to it).
            client.batch_execute("RESET lock_timeout").await?;
            created?;
            metrics::partition_ddl_duration(started.elapsed());
            tracing::info!(partition = %name, took = ?started.elapsed(), "partition ready");
            self.known
                .lock()
                .expect("partition cache lock should not be poisoned")
                .insert((dataset.table.clone(), start));
        }
        Ok(())
    }
}

/// The partitions `dataset`'s table has, by (table, first day), read from the catalog.
async fn existing(
    client: &impl GenericClient,
    dataset: &Dataset,
) -> Result<Vec<(String, Day)>, tokio_postgres::Error> {
    let Some(partitioning) = dataset.partition else {
        return Ok(Vec::new());
    };
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass",
            &[&ingest_rows::dataset::quote_ident(&dataset.table)],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let start = partitioning
                .by
                .parse_table_name(row.get(0), &dataset.table)?;
            Some((dataset.table.clone(), start))
        })
        .collect())
}

/// The partition's range `[first, next)` as literals of the key's type: UTC midnights for a
/// `timestamptz` key (the engine partitions instants by their UTC day).
fn bounds(by: PartitionBy, start: Day, key: &ColumnKind) -> (String, String) {
    let (year, month, day) = start;
    let next = match by {
        PartitionBy::Month if month == 12 => (year + 1, 1, 1),
        PartitionBy::Month => (year, month + 1, 1),
        PartitionBy::Day if day == days_in_month(year, month) && month == 12 => (year + 1, 1, 1),
        PartitionBy::Day if day == days_in_month(year, month) => (year, month + 1, 1),
        PartitionBy::Day => (year, month, day + 1),
    };
    let zone = if matches!(key, ColumnKind::TimestampTz { .. }) {
        " 00:00:00+00"
    } else {
        ""
    };
    let literal = |(y, m, d): Day| format!("{y:04}-{m:02}-{d:02}{zone}");
    (literal(start), literal(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_may_make_a_year_of_day_partitions() {
        let days: Vec<Day> = (0..=MAX_NEW_PER_CHUNK as u32)
            .map(|d| (2024, 1, d))
            .collect();
        assert_eq!(
            Allowance::default().reserve(&days[..MAX_NEW_PER_CHUNK]),
            Ok(())
        );
        assert_eq!(
            Allowance::default().reserve(&days),
            Err("the rows need 367 new partitions, more than the 366 one chunk may make".into())
        );
        // Pieces of one chunk share the allowance; a refusal takes nothing.
        let shared = Allowance::default();
        assert_eq!(shared.reserve(&days[..300]), Ok(()));
        assert!(shared.reserve(&days[..67]).is_err());
        assert_eq!(shared.reserve(&days[..66]), Ok(()));
        assert!(shared.reserve(&days[..1]).is_err());
    }

    #[test]
    fn pieces_reserving_at_once_never_pass_the_cap_together() {
        let days: Vec<Day> = (0..100).map(|d| (2024, 1, d)).collect();
        for _round in 0..1000 {
            let shared = Allowance::default();
            let start = std::sync::Barrier::new(8);
            let granted = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            shared.reserve(&days).is_ok()
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|racer| racer.join().expect("racer panicked"))
                    .filter(|&granted| granted)
                    .count()
            });
            assert_eq!(granted, 3, "366 leaves room for three sets of 100");
        }
    }

    #[tokio::test]
    async fn a_relation_in_the_way_of_a_partition_is_named() {
        let db = ingest_testkit::TestDb::new()
            .await
            .expect("a test database");
        let client = db.client().await.expect("a session");
        client
            .batch_execute("CREATE TABLE transactions_2150_01 (x int)")
            .await
            .expect("a plain table named like a partition");
        let err = client
            .query_one(
                "SELECT ensure_partition('transactions', 'transactions_2150_01', 'date',
                                         '2150-01-01', '2150-02-01')",
                &[],
            )
            .await
            .expect_err("refused");
        let reason = in_the_way(&err).expect("a reason");
        assert!(
            reason.contains("transactions_2150_01 exists and is not a partition"),
            "{reason}"
        );
        let other = client
            .batch_execute("SELECT 1/0")
            .await
            .expect_err("refused");
        assert_eq!(in_the_way(&other), None);
    }

    #[test]
    fn bounds_cover_one_month_or_one_day() {
        let plain = ColumnKind::Date { formats: vec![] };
        assert_eq!(
            bounds(PartitionBy::Month, (2023, 12, 1), &plain),
            ("2023-12-01".into(), "2024-01-01".into())
        );
        assert_eq!(
            bounds(PartitionBy::Day, (2024, 2, 29), &plain),
            ("2024-02-29".into(), "2024-03-01".into())
        );
        assert_eq!(
            bounds(PartitionBy::Day, (2024, 12, 31), &plain),
            ("2024-12-31".into(), "2025-01-01".into())
        );
        let zoned = ColumnKind::TimestampTz { formats: vec![] };
        assert_eq!(
            bounds(PartitionBy::Day, (2024, 3, 1), &zoned),
            (
                "2024-03-01 00:00:00+00".into(),
                "2024-03-02 00:00:00+00".into()
            )
        );
    }
}
