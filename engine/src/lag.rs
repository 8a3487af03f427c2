//! Per-partition backlog of the partitions this process owns, for `/metrics`:
//! `ingest_partition_backlog_chunks{partition}` (chunks stored in the ledger and not yet loaded or
//! failed) and `ingest_partition_oldest_waiting_seconds{partition}` (how long the oldest of them
//! has waited, 0 when none).
//!
//! The numbers come from the chunk ledger, which every engine of the group shares, so any owner
//! of a partition reports the same truth. They are refreshed on each lease heartbeat, right after
//! the leases are renewed, for the partitions owned at that beat.
//!
//! They do not go through the `metrics` facade: its Prometheus exporter cannot delete a series,
//! so a partition handed to another engine would keep its last value here for the life of the
//! process, and a zero in its place would read as "caught up" while the new owner says otherwise.
//! Instead each heartbeat replaces a snapshot that `/metrics` renders: a partition's series exist
//! exactly while this process owns it and disappear when it does not (Prometheus then marks them
//! stale). A snapshot older than the lease TTL is not rendered, since the leases it was taken
//! under have expired, and a failed refresh clears it: unknown is shown as absent, never as old
//! numbers.
//!
//! The stream lag (a partition stream's tail offset minus the offset committed in
//! `stream_offsets`) is not exported: rabbitmq-stream-client 0.4.4 cannot ask a stream for its
//! last offset (it has no StreamStats command, which the broker itself only offers from RabbitMQ
//! 3.11), and reading the tail by subscribing to each stream on every beat is neither cheap nor
//! exact. The ledger backlog counts the same chunks, announced or not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

pub use ingest_ledger::backlog::Backlog;
use ingest_ledger::{LedgerError, Partition};

use crate::metrics::{self, Family, Stage};

/// An exported gauge family (declared in [`crate::metrics`]) and its value for one partition.
type Gauge = (Family, fn(&Backlog) -> f64);

const GAUGES: [Gauge; 2] = [
    (metrics::PARTITION_BACKLOG, |b| b.chunks as f64),
    (metrics::PARTITION_OLDEST_WAITING, |b| {
        b.oldest_waiting_seconds
    }),
];

/// The backlog of the owned partitions as of the last heartbeat.
pub struct PartitionLag {
    max_age: Duration,
    snapshot: Mutex<Option<Snapshot>>,
}

struct Snapshot {
    taken: Instant,
    partitions: BTreeMap<i32, Backlog>,
}

impl PartitionLag {
    /// Snapshots older than `max_age` (the lease TTL) are not rendered.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            snapshot: Mutex::new(None),
        }
    }

    /// Replaces the snapshot with the backlog of `owned`; clears it when the query fails.
    pub async fn refresh(&self, client: &Client, owned: &BTreeSet<i32>) {
        let partitions: Vec<i32> = owned.iter().copied().collect();
        let snapshot = match backlog(client, &partitions).await {
            Ok(partitions) => Some(Snapshot {
                taken: Instant::now(),
                partitions,
            }),
            Err(err) => {
                metrics::error(Stage::Backlog);
                tracing::warn!(error = %err, "partition backlog query failed");
                None
            }
        };
        *self.lock() = snapshot;
    }

    /// The backlog per owned partition, if the snapshot is fresh.
    pub fn current(&self) -> Option<BTreeMap<i32, Backlog>> {
        self.lock()
            .as_ref()
            .filter(|s| s.taken.elapsed() <= self.max_age)
            .map(|s| s.partitions.clone())
    }

    /// Appends the gauges, in Prometheus text format, to `out`.
    pub fn render(&self, out: &mut String) {
        let Some(partitions) = self.current().filter(|p| !p.is_empty()) else {
            return;
        };
        for (Family { name, help, .. }, value) in GAUGES {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (partition, backlog) in &partitions {
                let _ = writeln!(
                    out,
                    "{name}{{partition=\"{partition}\"}} {}",
                    value(backlog)
                );
            }
            out.push('\n');
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        // The guarded value is replaced whole: a panic elsewhere cannot leave it half written.
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The backlog of each of `partitions` (zero for those with none), from the ledger.
pub async fn backlog(
    client: &Client,
    partitions: &[i32],
) -> Result<BTreeMap<i32, Backlog>, LedgerError> {
    let partitions: Vec<Partition> = partitions.iter().map(|&p| Partition(p)).collect();
    let found = ingest_ledger::backlog::of(client, &partitions).await?;
    Ok(found.into_iter().map(|(p, b)| (p.0, b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lag whose snapshot of `partitions` was taken `age` ago, rendered for a second.
    fn with(partitions: &[(i32, i64, f64)], age: Duration) -> PartitionLag {
        let lag = PartitionLag::new(Duration::from_secs(1));
        *lag.lock() = Some(Snapshot {
            taken: Instant::now()
                .checked_sub(age)
                .expect("the monotonic clock should be past the age"),
            partitions: partitions
                .iter()
                .map(|&(p, chunks, oldest)| {
                    (
                        p,
                        Backlog {
                            chunks,
                            oldest_waiting_seconds: oldest,
                        },
                    )
                })
                .collect(),
        });
        lag
    }

    #[test]
    fn renders_one_series_per_owned_partition() {
        let lag = with(&[(0, 3, 1.5), (2, 0, 0.0)], Duration::ZERO);
        let mut out = String::new();
        lag.render(&mut out);
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "ingest_partition_backlog_chunks{partition=\"0\"} 3",
                "ingest_partition_backlog_chunks{partition=\"2\"} 0",
                "",
                "ingest_partition_oldest_waiting_seconds{partition=\"0\"} 1.5",
                "ingest_partition_oldest_waiting_seconds{partition=\"2\"} 0",
                "",
            ]
        );
        assert!(out.contains("# TYPE ingest_partition_backlog_chunks gauge\n"));
    }

    #[test]
    fn renders_nothing_without_a_fresh_snapshot() {
        let mut out = String::new();
        PartitionLag::new(Duration::from_secs(60)).render(&mut out);
        assert_eq!(out, "");
        // Older than the lease TTL: the leases it was taken under have expired.
        with(&[(0, 3, 1.5)], Duration::from_secs(2)).render(&mut out);
        assert_eq!(out, "");
        // Owning nothing: no series at all, not empty families.
        with(&[], Duration::ZERO).render(&mut out);
        assert_eq!(out, "");
    }
}
