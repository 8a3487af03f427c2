//! `loadgen intake`: how fast the gateway takes chunks in, against what the disk under it can
//! do, measured in the same run.
//!
//! For each concurrency level: one upload, `chunks` PUTs of the same chunk of original-format
//! rows (about `--chunk-size`, cut at a row) under distinct chunk numbers, `concurrency` in
//! flight; each answered 200 only once the gateway has checked it, written it, `fdatasync`ed
//! it, renamed it into place, synced the directory, recorded it in the ledger and had the
//! broker confirm its message. Timed from the first PUT to the last answer. Then the disk's own
//! figure at the same concurrency, in the directory given (the gateway's upload directory):
//! `concurrency` threads each writing whole files of the same size, each `fdatasync`ed,
//! renamed and its directory synced, as the gateway stores a chunk, and nothing else.
//!
//! Run it against a gateway with no engine (as `scripts/bench` does): an engine would load the
//! same rows once per chunk. The token is fetched and the upload created before each clock.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::procstat::Watch;
use super::report::{load_average, utc_timestamp};
use crate::api::CreateUpload;
use crate::client::{ApiClient, ApiError};
use crate::generate::{generate, GenerateError};
use crate::upload::UploadOptions;

/// Everything one intake run needs.
#[derive(Debug, Clone)]
pub struct IntakeOptions {
    /// The gateway and the client (URL, credentials, retries, request timeout).
    pub upload: UploadOptions,
    /// Largest chunk: the chunk is the generated rows that fit.
    pub chunk_size: u64,
    /// Chunks sent, and files written, per concurrency level.
    pub chunks: u64,
    /// The concurrency levels, in order.
    pub levels: Vec<usize>,
    /// Where the disk's figure is measured: the gateway's upload directory.
    pub disk_dir: PathBuf,
    /// Free text naming the configuration, stored with the results.
    pub label: Option<String>,
    /// The gateway's process, to report the CPU time it used at each level.
    pub gateway_pid: Option<u32>,
}

/// Why an intake run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("generating the chunk: {0}")]
    Generate(#[from] GenerateError),
    #[error("the gateway: {0}")]
    Api(#[from] ApiError),
    #[error("measuring the disk in {path}: {source}")]
    Disk { path: PathBuf, source: io::Error },
    #[error("a blocking task died: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot read /proc for process {pid} (is it running?): {source}")]
    Proc { pid: u32, source: io::Error },
}

/// A rate measured at one concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub secs: f64,
    pub mb_per_sec: f64,
}

impl Rate {
    fn new(bytes: u64, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            secs,
            mb_per_sec: bytes as f64 / 1e6 / secs,
        }
    }
}

/// The gateway and the disk at one concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Level {
    pub concurrency: usize,
    pub gateway: Rate,
    /// CPU seconds the gateway process used while its chunks came in (when its pid is known):
    /// divided by `gateway.secs`, how many cores it kept busy.
    pub gateway_cpu_secs: Option<f64>,
    pub disk: Rate,
}

/// Everything one intake run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeReport {
    pub timestamp: String,
    pub label: Option<String>,
    pub chunk_bytes: u64,
    pub chunks: u64,
    pub cores: usize,
    pub load_before: Option<f64>,
    pub levels: Vec<Level>,
}

/// Runs the measurement (see the module docs); nothing is written but the disk's test files,
/// which are removed again.
pub async fn run_intake(opts: IntakeOptions) -> Result<IntakeReport, IntakeError> {
    let load_before = load_average();
    let body = {
        let chunk_size = opts.chunk_size;
        tokio::task::spawn_blocking(move || one_chunk(chunk_size)).await??
    };
    let sha256 = hex::encode(Sha256::digest(&body));
    let client = ApiClient::new(
        &opts.upload.url,
        opts.upload.credentials.clone(),
        opts.upload.retry,
        opts.upload.request_timeout,
    )?;
    let bytes = body.len() as u64 * opts.chunks;
    let mut levels = Vec::with_capacity(opts.levels.len());
    for &concurrency in &opts.levels {
        let concurrency = concurrency.max(1);
        let folder = client
            .create_upload(&CreateUpload {
                dataset: &opts.upload.dataset,
                expected_chunks: None,
                total_bytes: None,
                on_error: &opts.upload.on_error,
            })
            .await?
            .folder;
        let proc_error = |pid| move |source| IntakeError::Proc { pid, source };
        let watch = opts
            .gateway_pid
            .map(|pid| Watch::start(pid).map_err(proc_error(pid)))
            .transpose()?;
        let started = Instant::now();
        stream::iter(0..opts.chunks)
            .map(|n| client.put_chunk(&folder, n, body.clone(), &sha256))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        let gateway = Rate::new(bytes, started.elapsed());
        let gateway_cpu_secs = match (watch, opts.gateway_pid) {
            (Some(watch), Some(pid)) => Some(watch.stop().map_err(proc_error(pid))?.cpu_secs),
            _ => None,
        };
        let disk = {
            let (dir, body, chunks) = (opts.disk_dir.clone(), body.clone(), opts.chunks);
            tokio::task::spawn_blocking(move || disk_writes(&dir, &body, chunks, concurrency))
                .await??
        };
        tracing::info!(
            concurrency,
            gateway_mb_per_sec = gateway.mb_per_sec,
            disk_mb_per_sec = disk.mb_per_sec,
            "intake level measured"
        );
        levels.push(Level {
            concurrency,
            gateway,
            gateway_cpu_secs,
            disk,
        });
    }
    Ok(IntakeReport {
        timestamp: utc_timestamp(SystemTime::now()),
        label: opts.label,
        chunk_bytes: body.len() as u64,
        chunks: opts.chunks,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_before,
        levels,
    })
}

/// Original-format rows filling at most `chunk_size` bytes (header included).
fn one_chunk(chunk_size: u64) -> Result<Bytes, IntakeError> {
    let dir = tempfile_dir()?;
    // About 56 bytes a row: enough rows to fill the first file.
    let files = generate(&dir, chunk_size / 40 + 1, chunk_size, 1)?;
    let first = files.first().cloned().unwrap_or_else(|| dir.join("none"));
    let body = std::fs::read(&first).map_err(|source| IntakeError::Disk {
        path: first.clone(),
        source,
    });
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Bytes::from(body?))
}

fn tempfile_dir() -> Result<PathBuf, IntakeError> {
    let dir = std::env::temp_dir().join(format!("loadgen-intake-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|source| IntakeError::Disk {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Writes `chunks` files of `body` into a fresh directory under `dir` from `concurrency`
/// threads, each file synced, renamed and its directory synced, and times it; then removes
/// them.
fn disk_writes(
    dir: &Path,
    body: &[u8],
    chunks: u64,
    concurrency: usize,
) -> Result<Rate, IntakeError> {
    let target = dir.join(format!("intake-disk-{}", uuid::Uuid::new_v4().simple()));
    let failed = |source| IntakeError::Disk {
        path: target.clone(),
        source,
    };
    std::fs::create_dir_all(&target).map_err(failed)?;
    let started = Instant::now();
    let written: io::Result<()> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency as u64)
            .map(|worker| {
                let target = &target;
                scope.spawn(move || -> io::Result<()> {
                    for n in (worker..chunks).step_by(concurrency) {
                        store_file(target, n, body)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("a disk writer panicked")))
        })
    });
    let elapsed = started.elapsed();
    let removed = std::fs::remove_dir_all(&target);
    written.map_err(failed)?;
    removed.map_err(failed)?;
    Ok(Rate::new(body.len() as u64 * chunks, elapsed))
}

/// What the gateway does to store a chunk, without the checks: write, `fdatasync`, rename,
/// sync the directory.
fn store_file(dir: &Path, n: u64, body: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!("{n}.tmp"));
    let mut file = File::create(&temp)?;
    file.write_all(body)?;
    file.sync_data()?;
    std::fs::rename(&temp, dir.join(format!("{n}.csv")))?;
    File::open(dir)?.sync_all()
}

impl Level {
    /// Cores the gateway kept busy while its chunks came in.
    pub fn busy_cores(&self) -> Option<f64> {
        self.gateway_cpu_secs.map(|cpu| cpu / self.gateway.secs)
    }

    /// [`Self::busy_cores`] for the tables: `-` when the gateway's pid was not given.
    fn busy_cores_text(&self) -> String {
        self.busy_cores()
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"))
    }
}

impl IntakeReport {
    /// Writes `<dir>/<timestamp>-intake.json` and returns its path.
    pub fn write_json(&self, dir: &Path) -> io::Result<PathBuf> {
        super::report::write_json(self, dir, &self.timestamp, "intake")
    }

    /// Appends a row per level to `<dir>/README.md`, writing its header first if it is new.
    pub fn append_markdown(&self, dir: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("README.md");
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if new {
            file.write_all(INTAKE_HEADER.as_bytes())?;
        }
        for row in self.markdown_rows() {
            file.write_all(row.as_bytes())?;
        }
        Ok(path)
    }

    fn markdown_rows(&self) -> Vec<String> {
        self.levels
            .iter()
            .map(|level| {
                format!(
                    "| {} | {} | {} | {:.2} | {} | {} | {:.0} | {} | {:.0} | {:.2} |\n",
                    self.timestamp,
                    self.label.as_deref().unwrap_or("").replace('|', "/"),
                    self.load_before
                        .map_or_else(|| "-".to_owned(), |l| format!("{l:.1}")),
                    self.chunk_bytes as f64 / f64::from(1 << 20),
                    self.chunks,
                    level.concurrency,
                    level.gateway.mb_per_sec,
                    level.busy_cores_text(),
                    level.disk.mb_per_sec,
                    level.gateway.mb_per_sec / level.disk.mb_per_sec,
                )
            })
            .collect()
    }
}

const INTAKE_HEADER: &str = "# Gateway intake\n\n\
One row per concurrency level of a `loadgen intake` run (appended by the run; JSON beside this \
file). gateway = MB/s of PUT chunks answered 200 (checked, written, fdatasync'd, renamed, \
recorded, broker-confirmed), no engine running; disk = MB/s of the same bytes written as files \
by as many threads, each fdatasync'd, renamed and its directory synced, in the gateway's upload \
directory, right after. gateway cores = the gateway's CPU seconds over that time (how many of \
the cores it kept busy). MB = 10^6 bytes.\n\n\
| when (UTC) | label | load | chunk MiB | chunks | concurrency | gateway MB/s | gateway cores \
| disk MB/s | gateway/disk |\n\
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";

impl std::fmt::Display for IntakeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "loadgen intake: {} chunks of {:.2} MiB per level, {} cores, load {}",
            self.chunks,
            self.chunk_bytes as f64 / f64::from(1 << 20),
            self.cores,
            self.load_before
                .map_or_else(|| "?".to_owned(), |l| format!("{l:.2}")),
        )?;
        writeln!(
            f,
            "{:>11} {:>13} {:>14} {:>10} {:>13}",
            "concurrency", "gateway MB/s", "gateway cores", "disk MB/s", "gateway/disk"
        )?;
        for level in &self.levels {
            writeln!(
                f,
                "{:>11} {:>13.0} {:>14} {:>10.0} {:>13.2}",
                level.concurrency,
                level.gateway.mb_per_sec,
                level.busy_cores_text(),
                level.disk.mb_per_sec,
                level.gateway.mb_per_sec / level.disk.mb_per_sec,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunk_is_whole_rows_within_the_size() {
        let body = one_chunk(1 << 20).expect("a chunk");
        assert!(body.len() <= 1 << 20 && body.len() > (1 << 20) - 100);
        assert!(body.starts_with(crate::generate::HEADER));
        assert!(body.ends_with(b"\r\n"));
    }

    #[test]
    fn disk_writes_leave_nothing_behind_and_count_every_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rate = disk_writes(dir.path(), &[b'x'; 4096], 10, 4).expect("disk");
        assert!(rate.secs > 0.0 && rate.mb_per_sec > 0.0);
        let left = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(left, 0);
    }

    #[test]
    fn the_table_and_rows_carry_each_level() {
        let level = |concurrency, gateway, disk| Level {
            concurrency,
            gateway: Rate {
                secs: 2.0,
                mb_per_sec: gateway,
            },
            gateway_cpu_secs: (concurrency > 1).then_some(3.0),
            disk: Rate {
                secs: 1.0,
                mb_per_sec: disk,
            },
        };
        let report = IntakeReport {
            timestamp: "2025-01-02T03:04:05Z".into(),
            label: None,
            chunk_bytes: 8 << 20,
            chunks: 48,
            cores: 2,
            load_before: Some(1.0),
            levels: vec![level(1, 150.0, 300.0), level(4, 240.0, 600.0)],
        };
        let table = report.to_string();
        assert!(
            table.contains("          4           240           1.50        600          0.40"),
            "{table}"
        );
        let rows = report.markdown_rows();
        assert_eq!(
            rows[0],
            "| 2025-01-02T03:04:05Z |  | 1.0 | 8.00 | 48 | 1 | 150 | - | 300 | 0.50 |\n"
        );
        assert!(
            rows[1].contains("| 4 | 240 | 1.50 | 600 | 0.40 |"),
            "{}",
            rows[1]
        );
        let columns = INTAKE_HEADER
            .lines()
            .rev()
            .nth(1)
            .map(|l| l.matches('|').count());
        assert_eq!(columns, Some(rows[0].matches('|').count()));
    }
}
