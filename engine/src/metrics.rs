//! The engine's metrics, declared once: name, type, help text and every label value.
//!
//! [`register`] describes each family and creates each series at zero when the engine starts,
//! so `/metrics` lists all of them from the first scrape: dashboards show 0 rather than "No data"
//! and `rate()` sees the first increment. The rest of the engine records through the functions
//! here and never names a metric itself (a test below checks the sources).
//!
//! The per-partition backlog gauges are the exception: they exist exactly while this process owns
//! a partition and are rendered by [`crate::lag`].

use std::time::Duration;

use ::metrics::{counter, gauge, histogram};

pub use ingest_runtime::telemetry::{Family, Kind, Label};

const ROWS_LOADED: &str = "ingest_rows_loaded_total";
const ROWS_REJECTED: &str = "ingest_rows_rejected_total";
const BYTES_LOADED: &str = "ingest_bytes_loaded_total";
const CHUNKS: &str = "ingest_chunks_total";
const ENGINE_ERRORS: &str = "ingest_engine_errors_total";
const COPY_DURATION: &str = "ingest_copy_duration_seconds";
const CHUNK_LATENCY: &str = "ingest_chunk_latency_seconds";
const PARTITIONS_OWNED: &str = "ingest_partitions_owned";
const MONTHS_SCAN: &str = "ingest_months_scan_seconds";
const PARTITION_DDL: &str = "ingest_partition_ddl_seconds";
const PARTITION_RELOADS: &str = "ingest_partition_reloads_total";

/// Every family the engine exports through the recorder.
pub const FAMILIES: &[Family] = &[
    Family {
        name: ROWS_LOADED,
        kind: Kind::Counter,
        help: "Rows loaded into the target table (committed).",
        labels: &[],
    },
    Family {
        name: ROWS_REJECTED,
        kind: Kind::Counter,
        help: "Rows rejected by validation and kept in rejected_rows.",
        labels: &[],
    },
    Family {
        name: BYTES_LOADED,
        kind: Kind::Counter,
        help: "Bytes of chunk files loaded (committed).",
        labels: &[],
    },
    Family {
        name: CHUNKS,
        kind: Kind::Counter,
        help: "Chunks by outcome: loaded, failed (nothing of it loaded), skipped (already \
               loaded or failed, e.g. a redelivery or a peer that got there first).",
        labels: &[Label {
            name: "outcome",
            values: &Outcome::LABELS,
        }],
    },
    Family {
        name: ENGINE_ERRORS,
        kind: Kind::Counter,
        help: "Engine errors by stage (each is retried or skipped; see the logs).",
        labels: &[Label {
            name: "stage",
            values: &Stage::LABELS,
        }],
    },
    Family {
        name: COPY_DURATION,
        kind: Kind::Histogram,
        help: "Time of one chunk's COPY into PostgreSQL.",
        labels: &[],
    },
    Family {
        name: CHUNK_LATENCY,
        kind: Kind::Histogram,
        help: "Time from a chunk's receipt by a gateway to its commit.",
        labels: &[],
    },
    Family {
        name: PARTITIONS_OWNED,
        kind: Kind::Gauge,
        help: "Partition processors running in this engine process.",
        labels: &[],
    },
    Family {
        name: MONTHS_SCAN,
        kind: Kind::Histogram,
        help: "Time to read a chunk's partition column for the months it needs, before its COPY.",
        labels: &[],
    },
    Family {
        name: PARTITION_DDL,
        kind: Kind::Histogram,
        help: "Time of one partition's creation (its own transaction: lock wait, moving rows \
               out of the default partition, attach).",
        labels: &[],
    },
    Family {
        name: PARTITION_RELOADS,
        kind: Kind::Counter,
        help: "COPYs of a chunk or piece rolled back and run again because their rows needed a \
               partition that did not exist yet: a month or day the read before the COPY missed.",
        labels: &[],
    },
];

/// The per-partition backlog gauges: they exist exactly while this process owns a partition, so
/// [`crate::lag`] renders them from its last heartbeat's snapshot instead of the recorder.
pub const PARTITION_BACKLOG: Family = Family {
    name: "ingest_partition_backlog_chunks",
    kind: Kind::Gauge,
    help: "Chunks of the partition stored and not yet loaded or failed.",
    labels: &[Label {
        name: "partition",
        values: &[],
    }],
};
pub const PARTITION_OLDEST_WAITING: Family = Family {
    name: "ingest_partition_oldest_waiting_seconds",
    kind: Kind::Gauge,
    help: "Age of the partition's oldest waiting chunk (0 when none).",
    labels: &[Label {
        name: "partition",
        values: &[],
    }],
};

/// The engine's whole catalogue: what the recorder exports and what [`crate::lag`] renders.
pub fn catalogue() -> Vec<Family> {
    let mut all = FAMILIES.to_vec();
    all.extend([PARTITION_BACKLOG, PARTITION_OLDEST_WAITING]);
    all
}

/// What became of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Loaded,
    Failed,
    Skipped,
}

impl Outcome {
    const LABELS: [&'static str; 3] = ["loaded", "failed", "skipped"];

    fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// Where an engine error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A delivery error from the broker.
    Consume,
    /// A message that is no chunk message.
    Decode,
    /// A chunk load that failed and is retried.
    Load,
    /// The partition backlog query.
    Backlog,
    /// A lease heartbeat that failed, or a takeover skipped for a lock timeout.
    Lease,
    /// Ending a lapsed peer's sessions was refused or failed.
    Fence,
    /// A gap in a partition stream's offsets: messages aged out before they were read (their
    /// chunks are announced again).
    StreamGap,
}

impl Stage {
    const LABELS: [&'static str; 7] = [
        "consume",
        "decode",
        "load",
        "backlog",
        "lease",
        "fence",
        "stream_gap",
    ];

    fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// Describes every family and creates every series at zero. Call once the recorder is installed.
pub fn register() {
    ingest_runtime::telemetry::register(FAMILIES);
}

/// Counts a chunk by outcome.
pub fn chunk(outcome: Outcome) {
    counter!(CHUNKS, "outcome" => outcome.label()).increment(1);
}

/// Counts an engine error at `stage`.
pub fn error(stage: Stage) {
    counter!(ENGINE_ERRORS, "stage" => stage.label()).increment(1);
}

/// Counts a committed chunk's rows and bytes, and its latency since the gateway received it.
pub fn loaded(rows: u64, rejected: u64, bytes: u64, latency: Duration) {
    counter!(ROWS_LOADED).increment(rows);
    counter!(ROWS_REJECTED).increment(rejected);
    counter!(BYTES_LOADED).increment(bytes);
    chunk(Outcome::Loaded);
    histogram!(CHUNK_LATENCY).record(latency.as_secs_f64());
}

/// Records how long one chunk's COPY took.
pub fn copy_duration(took: Duration) {
    histogram!(COPY_DURATION).record(took.as_secs_f64());
}

/// Records how long the read of a chunk's months took.
pub fn months_scan_duration(took: Duration) {
    histogram!(MONTHS_SCAN).record(took.as_secs_f64());
}

/// Records how long one partition's DDL transaction took.
pub fn partition_ddl_duration(took: Duration) {
    histogram!(PARTITION_DDL).record(took.as_secs_f64());
}

/// Counts a COPY rolled back to create a partition the read before it missed.
pub fn partition_reload() {
    counter!(PARTITION_RELOADS).increment(1);
}

/// A partition processor started (`true`) or stopped (`false`).
pub fn partition_owned(started: bool) {
    let gauge = gauge!(PARTITIONS_OWNED);
    if started {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_match_their_enums() {
        assert_eq!(Outcome::Skipped.label(), "skipped");
        assert_eq!(Stage::Fence.label(), "fence");
        assert_eq!(Stage::Consume.label(), "consume");
    }

    /// Every metric the engine records is declared here: no other source file names one.
    #[test]
    fn no_metric_is_recorded_outside_the_catalogue() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        for entry in std::fs::read_dir(&src).expect("engine/src should be readable") {
            let path = entry.expect("a directory entry").path();
            if path.file_name() == Some("metrics.rs".as_ref()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            for needle in ["counter!(", "gauge!(", "histogram!("] {
                if text.contains(needle) {
                    offenders.push(format!("{} uses {needle}", path.display()));
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:?}");
    }
}
