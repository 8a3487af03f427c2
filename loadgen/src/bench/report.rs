//! The benchmark's report: the printed table, the JSON file and the Markdown results row.
//!
//! Every run writes `<results>/<UTC timestamp>-<scenario>-<rows>.json` (what `loadgen plot`
//! reads) and appends one row to `<results>/README.md`, creating it with its introduction when
//! missing and starting a new table in it when the columns changed since its last one.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::checks::{Check, Latency};
use super::procstat::ProcUsage;
use super::scenario::Scenario;
use crate::progress::thousands;

/// One measured way of loading the rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub secs: f64,
    pub rows_per_sec: f64,
    pub mb_per_sec: f64,
}

impl Phase {
    /// The phase that loaded `rows` rows of `bytes` bytes in `elapsed`.
    pub fn new(rows: u64, bytes: u64, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            secs,
            rows_per_sec: rows as f64 / secs,
            mb_per_sec: bytes as f64 / 1e6 / secs,
        }
    }
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// When the run ended, UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub timestamp: String,
    /// Free text naming the configuration (e.g. `copy-connections=3`).
    pub label: Option<String>,
    /// How the pipeline got the rows.
    pub scenario: Scenario,
    /// Months the rows are spread over.
    pub months: u32,
    pub rows: u64,
    pub bytes: u64,
    pub files: usize,
    pub chunks: u64,
    pub chunk_size: u64,
    pub concurrency: usize,
    pub cores: usize,
    /// The machine's 1-minute load average when the run started: other work on the machine
    /// makes timings noisy, and this says how much there was.
    pub load_before: Option<f64>,
    pub upload_id: String,
    /// One `psql \copy`-like session loading every file.
    pub baseline: Phase,
    /// `parallel_sessions` such sessions at once, each with its share of the files.
    pub parallel_baseline: Phase,
    pub parallel_sessions: usize,
    pub pipeline: Phase,
    /// Pipeline time / baseline time (below 1 means the pipeline was faster).
    pub ratio: f64,
    /// Pipeline time / parallel baseline time.
    pub parallel_ratio: f64,
    pub chunk_latency: Option<Latency>,
    pub gateway: Option<ProcUsage>,
    pub engine: Option<ProcUsage>,
    pub checks: Vec<Check>,
}

impl BenchReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// Writes `<dir>/<timestamp>-<rows>.json` and returns its path.
    pub fn write_json(&self, dir: &Path) -> io::Result<PathBuf> {
        let name = format!("{}-{}", self.scenario, self.rows);
        write_json(self, dir, &self.timestamp, &name)
    }

    /// Appends this run's row to `<dir>/README.md`, writing the introduction first if the file
    /// is new and the table's header if the file has none with these columns.
    pub fn append_markdown(&self, dir: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("README.md");
        let existing = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        match existing {
            None => {
                file.write_all(MARKDOWN_INTRO.as_bytes())?;
                file.write_all(MARKDOWN_TABLE.as_bytes())?;
            }
            Some(text) if !text.contains(MARKDOWN_COLUMNS) => {
                let gap = if text.ends_with('\n') { "\n" } else { "\n\n" };
                file.write_all(gap.as_bytes())?;
                file.write_all(MARKDOWN_TABLE.as_bytes())?;
            }
            Some(_) => {}
        }
        file.write_all(self.markdown_row().as_bytes())?;
        Ok(path)
    }

    /// One line for a summary of several runs: the scenario and its three times.
    pub fn summary_line(&self) -> String {
        format!(
            "summary: {:<15} {} rows over {} months: pipeline {:.2} s, baseline {:.2} s (ratio {:.2}), {} parallel sessions {:.2} s (ratio {:.2}), checks {}",
            self.scenario.name(),
            thousands(self.rows),
            self.months,
            self.pipeline.secs,
            self.baseline.secs,
            self.ratio,
            self.parallel_sessions,
            self.parallel_baseline.secs,
            self.parallel_ratio,
            if self.passed() { "pass" } else { "FAIL" },
        )
    }

    fn markdown_row(&self) -> String {
        let usage = |u: &Option<ProcUsage>| match u {
            Some(u) => format!("{:.2} | {:.0}", u.cpu_secs, u.peak_rss_mib),
            None => "- | -".to_owned(),
        };
        let (p50, p99) = match self.chunk_latency {
            Some(l) => (format!("{:.0}", l.p50_ms), format!("{:.0}", l.p99_ms)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {p50} | {p99} | {} | {} | {} |\n",
            self.timestamp,
            self.label.as_deref().unwrap_or("").replace('|', "/"),
            self.load_before.map_or_else(|| "-".to_owned(), |l| format!("{l:.1}")),
            self.scenario,
            self.months,
            thousands(self.rows),
            self.bytes as f64 / 1e6,
            self.chunks,
            self.pipeline.secs,
            thousands(self.pipeline.rows_per_sec as u64),
            self.baseline.secs,
            self.ratio,
            self.parallel_baseline.secs,
            self.parallel_ratio,
            usage(&self.gateway),
            usage(&self.engine),
            if self.passed() { "pass" } else { "FAIL" },
        )
    }
}

const MARKDOWN_INTRO: &str = "# Benchmark results\n\n\
One row per `loadgen bench` run (appended by the run; JSON beside this file).\n";

/// The current table's column line: a file without it gets a new table.
const MARKDOWN_COLUMNS: &str =
    "| when (UTC) | label | load | scenario | months | rows | MB | chunks \
| pipeline s | pipeline rows/s | baseline s | ratio | parallel baseline s | parallel ratio \
| chunk p50 ms | chunk p99 ms | gateway CPU s | gateway RSS MiB | engine CPU s | engine RSS MiB \
| checks |\n";

const MARKDOWN_TABLE: &str = concat!(
    "\n## Scenarios against one and two `psql \\copy` sessions\n\n\
Times in seconds. The pipeline's partitions are made by the pipeline (none exist before its \
clock); the baselines' partitions are made before their clocks. baseline = one session COPYing \
every file; parallel baseline = two sessions at once, each COPYing every other file; ratio = \
pipeline time / baseline time. chunk latency = `committed_at - received_at` of the upload's \
chunks in the ledger; CPU = seconds used during the pipeline run; RSS = peak resident MiB; load \
= the machine's 1-minute load average at the start (other work makes timings noisy).\n\n",
    "| when (UTC) | label | load | scenario | months | rows | MB | chunks \
| pipeline s | pipeline rows/s | baseline s | ratio | parallel baseline s | parallel ratio \
| chunk p50 ms | chunk p99 ms | gateway CPU s | gateway RSS MiB | engine CPU s | engine RSS MiB \
| checks |\n",
    "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: \
| ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
);

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = self.bytes as f64 / 1e6;
        writeln!(
            f,
            "loadgen bench, scenario {}: {} rows over {} months, {mb:.1} MB in {} files, {} chunks of at most {:.1} MiB, concurrency {}, {} cores, load {}{}",
            self.scenario,
            thousands(self.rows),
            self.months,
            self.files,
            self.chunks,
            self.chunk_size as f64 / f64::from(1 << 20),
            self.concurrency,
            self.cores,
            self.load_before
                .map_or_else(|| "?".to_owned(), |l| format!("{l:.2}")),
            self.label
                .as_deref()
                .map(|l| format!(", {l}"))
                .unwrap_or_default(),
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<22} {:>12} {:>8} {:>9} {:>12} {:>8} {:>8}",
            "", "rows", "MB", "seconds", "rows/s", "MB/s", "ratio"
        )?;
        let parallel = format!("baseline, {} sessions", self.parallel_sessions);
        for (name, phase) in [
            ("pipeline", self.pipeline),
            ("baseline, 1 session", self.baseline),
            (parallel.as_str(), self.parallel_baseline),
        ] {
            writeln!(
                f,
                "{name:<22} {:>12} {mb:>8.1} {:>9.3} {:>12} {:>8.1} {:>8.2}",
                thousands(self.rows),
                phase.secs,
                thousands(phase.rows_per_sec as u64),
                phase.mb_per_sec,
                self.pipeline.secs / phase.secs,
            )?;
        }
        writeln!(
            f,
            "ratio pipeline/baseline time: {:.2} (1 session), {:.2} ({} sessions)",
            self.ratio, self.parallel_ratio, self.parallel_sessions
        )?;
        match self.chunk_latency {
            Some(l) => writeln!(
                f,
                "chunk latency (ledger committed_at - received_at): p50 {:.0} ms, p99 {:.0} ms",
                l.p50_ms, l.p99_ms
            )?,
            None => writeln!(f, "chunk latency: no committed chunks")?,
        }
        writeln!(f)?;
        writeln!(f, "{:<10} {:>8} {:>14}", "", "CPU s", "peak RSS MiB")?;
        for (name, usage) in [("gateway", self.gateway), ("engine", self.engine)] {
            match usage {
                Some(u) => writeln!(f, "{name:<10} {:>8.2} {:>14.1}", u.cpu_secs, u.peak_rss_mib)?,
                None => writeln!(f, "{name:<10} {:>8} {:>14}", "-", "-")?,
            }
        }
        writeln!(f)?;
        for check in &self.checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            writeln!(f, "{mark} {}: {}", check.name, check.detail)?;
        }
        Ok(())
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = ingest_rows::values::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Writes `value` as `<dir>/<timestamp without colons>-<name>.json` and returns its path.
pub(crate) fn write_json(
    value: &impl Serialize,
    dir: &Path,
    timestamp: &str,
    name: &str,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp: String = timestamp.chars().filter(|c| *c != ':').collect();
    let path = dir.join(format!("{stamp}-{name}.json"));
    let text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
    }

    fn report() -> BenchReport {
        BenchReport {
            timestamp: "2025-01-02T03:04:05Z".into(),
            label: Some("copy-connections=3".into()),
            scenario: Scenario::OriginalClient,
            months: 12,
            rows: 1_000_000,
            bytes: 54_000_000,
            files: 6,
            chunks: 6,
            chunk_size: 8 << 20,
            concurrency: 1,
            cores: 2,
            load_before: Some(0.5),
            upload_id: "u".into(),
            baseline: Phase::new(1_000_000, 54_000_000, Duration::from_secs(2)),
            parallel_baseline: Phase::new(1_000_000, 54_000_000, Duration::from_millis(1250)),
            parallel_sessions: 2,
            pipeline: Phase::new(1_000_000, 54_000_000, Duration::from_millis(1500)),
            ratio: 0.75,
            parallel_ratio: 1.2,
            chunk_latency: Some(Latency {
                p50_ms: 400.0,
                p99_ms: 900.0,
            }),
            gateway: None,
            engine: Some(ProcUsage {
                cpu_secs: 1.5,
                peak_rss_mib: 80.0,
            }),
            checks: vec![Check {
                name: "rows".into(),
                ok: true,
                detail: "1000000".into(),
            }],
        }
    }

    #[test]
    fn the_table_and_the_markdown_row_carry_the_numbers() {
        let report = report();
        let table = report.to_string();
        assert!(
            table.contains("scenario original-client: 1,000,000 rows over 12 months"),
            "{table}"
        );
        assert!(
            table.contains(
                "pipeline                  1,000,000     54.0     1.500      666,666     36.0     1.00"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "baseline, 1 session       1,000,000     54.0     2.000      500,000     27.0     0.75"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "baseline, 2 sessions      1,000,000     54.0     1.250      800,000     43.2     1.20"
            ),
            "{table}"
        );
        assert!(
            table.contains("ratio pipeline/baseline time: 0.75 (1 session), 1.20 (2 sessions)"),
            "{table}"
        );
        assert!(table.contains("p50 400 ms, p99 900 ms"), "{table}");
        assert!(
            table.contains("engine         1.50           80.0"),
            "{table}"
        );
        let row = report.markdown_row();
        assert!(row.starts_with("| 2025-01-02T03:04:05Z | copy-connections=3 | 0.5 | original-client | 12 | 1,000,000 | 54.0 | 6 | 1.50 | 666,666 | 2.00 | 0.75 | 1.25 | 1.20 | 400 | 900 | - | - | 1.50 | 80 | pass |"), "{row}");
        assert!(MARKDOWN_TABLE.contains(MARKDOWN_COLUMNS));
        assert_eq!(
            MARKDOWN_COLUMNS.matches('|').count(),
            row.matches('|').count()
        );
        let summary = report.summary_line();
        assert_eq!(summary, "summary: original-client 1,000,000 rows over 12 months: pipeline 1.50 s, baseline 2.00 s (ratio 0.75), 2 parallel sessions 1.25 s (ratio 1.20), checks pass");
    }

    #[test]
    fn results_are_written_and_rows_appended() {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = report();
        let json = report.write_json(dir.path()).expect("json");
        assert!(
            json.ends_with("2025-01-02T030405Z-original-client-1000000.json"),
            "{json:?}"
        );
        let parsed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(json).expect("read")).expect("json");
        assert_eq!(parsed["pipeline"]["rows_per_sec"], 1_000_000.0 / 1.5);
        assert_eq!(parsed["scenario"], "original-client");
        assert_eq!(parsed["parallel_baseline"]["secs"], 1.25);
        report.append_markdown(dir.path()).expect("md");
        report.append_markdown(dir.path()).expect("md");
        let md = std::fs::read_to_string(dir.path().join("README.md")).expect("read");
        assert_eq!(md.matches("# Benchmark results").count(), 1);
        assert_eq!(md.matches(MARKDOWN_COLUMNS).count(), 1);
        assert_eq!(md.matches("| 2025-01-02T03:04:05Z").count(), 2);
    }

    #[test]
    fn a_table_with_other_columns_is_followed_by_a_new_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = "# Benchmark results\n\n| when (UTC) | label |\n| --- | --- |\n| x | y |\n";
        std::fs::write(dir.path().join("README.md"), old).expect("write");
        report().append_markdown(dir.path()).expect("md");
        report().append_markdown(dir.path()).expect("md");
        let md = std::fs::read_to_string(dir.path().join("README.md")).expect("read");
        assert!(md.starts_with(old), "the old table stays: {md}");
        assert_eq!(md.matches("# Benchmark results").count(), 1);
        assert_eq!(md.matches(MARKDOWN_COLUMNS).count(), 1, "{md}");
        let (_, new_table) = md.split_once(MARKDOWN_COLUMNS).expect("the new header");
        assert_eq!(new_table.matches("| 2025-01-02T03:04:05Z").count(), 2);
    }
}
