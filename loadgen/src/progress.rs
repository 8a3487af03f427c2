//! The progress line: bytes sent, throughput, ETA, then loading progress once all is sent.
//!
//! The upload only bumps atomic [`Counters`]; a background task reads them and draws. On a
//! terminal the line is redrawn in place several times a second; otherwise (CI logs, files) a
//! plain line is printed every couple of seconds so logs stay readable. Rendering is a pure
//! function of a [`Snapshot`] so it can be tested.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::UploadStatus;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing (library callers, benchmarks).
    Off,
    /// A line every couple of seconds.
    Plain,
    /// One line redrawn in place.
    Terminal,
}

impl ProgressMode {
    /// [`ProgressMode::Terminal`] when stdout is a terminal, [`ProgressMode::Plain`] otherwise.
    pub fn for_stdout() -> Self {
        if std::io::stdout().is_terminal() {
            Self::Terminal
        } else {
            Self::Plain
        }
    }

    fn interval(self) -> Duration {
        match self {
            Self::Terminal => Duration::from_millis(250),
            _ => Duration::from_secs(2),
        }
    }
}

/// What this run has to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub bytes: u64,
    pub chunks: u64,
}

/// Counters the upload updates as it goes.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_sent: AtomicU64,
    chunks_sent: AtomicU64,
    rows_sent: AtomicU64,
    loading: AtomicBool,
    chunks_loaded: AtomicU64,
    rows_loaded: AtomicU64,
    rows_rejected: AtomicU64,
}

impl Counters {
    /// A chunk was acknowledged.
    pub fn chunk_sent(&self, bytes: u64, rows: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        self.rows_sent.fetch_add(rows, Ordering::Relaxed);
        self.chunks_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A status poll answered while the engine loads.
    pub fn loading(&self, status: &UploadStatus) {
        self.chunks_loaded
            .store(status.chunks_loaded, Ordering::Relaxed);
        self.rows_loaded
            .store(status.rows_loaded, Ordering::Relaxed);
        self.rows_rejected
            .store(status.rows_rejected, Ordering::Relaxed);
        self.loading.store(true, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            chunks_sent: self.chunks_sent.load(Ordering::Relaxed),
            rows_sent: self.rows_sent.load(Ordering::Relaxed),
            loading: self.loading.load(Ordering::Relaxed),
            chunks_loaded: self.chunks_loaded.load(Ordering::Relaxed),
            rows_loaded: self.rows_loaded.load(Ordering::Relaxed),
            rows_rejected: self.rows_rejected.load(Ordering::Relaxed),
        }
    }
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes_sent: u64,
    pub chunks_sent: u64,
    pub rows_sent: u64,
    pub loading: bool,
    pub chunks_loaded: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
}

/// The progress display of one upload; [`Progress::finish`] draws the last line.
#[derive(Debug)]
pub struct Progress {
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing (unless `mode` is off) for an upload of `totals`.
    pub fn start(mode: ProgressMode, totals: Totals, upload_chunks: u64) -> Self {
        let counters = Arc::new(Counters::default());
        if mode == ProgressMode::Off {
            return Self {
                counters,
                stop: None,
                task: None,
            };
        }
        let (stop, mut stopped) = oneshot::channel();
        let shared = Arc::clone(&counters);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(mode.interval());
            ticks.tick().await;
            loop {
                let last = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = &mut stopped => true,
                };
                let line = render(
                    &shared.snapshot(),
                    &totals,
                    upload_chunks,
                    started.elapsed(),
                );
                draw(mode, &line, last);
                if last {
                    return;
                }
            }
        });
        Self {
            counters,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The counters to update.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Draws the final line and stops.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn draw(mode: ProgressMode, line: &str, last: bool) {
    let mut out = std::io::stdout().lock();
    // A progress line that cannot be written is not worth failing the upload over.
    let _ = match (mode, last) {
        (ProgressMode::Terminal, false) => write!(out, "\r\x1b[2K{line}"),
        (ProgressMode::Terminal, true) => writeln!(out, "\r\x1b[2K{line}"),
        _ => writeln!(out, "{line}"),
    };
    let _ = out.flush();
}

/// The progress line for `snapshot`, `elapsed` after the start.
pub fn render(
    snapshot: &Snapshot,
    totals: &Totals,
    upload_chunks: u64,
    elapsed: Duration,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    if snapshot.loading {
        return format!(
            "loading: {}/{} chunks, {} rows loaded, {} rejected, {:.1} s",
            snapshot.chunks_loaded,
            upload_chunks,
            thousands(snapshot.rows_loaded),
            thousands(snapshot.rows_rejected),
            secs,
        );
    }
    let rate = snapshot.bytes_sent as f64 / secs;
    let percent = if totals.bytes == 0 {
        100.0
    } else {
        snapshot.bytes_sent as f64 * 100.0 / totals.bytes as f64
    };
    let eta = if snapshot.bytes_sent >= totals.bytes {
        "0s".to_owned()
    } else if rate > 0.0 {
        duration_text((totals.bytes - snapshot.bytes_sent) as f64 / rate)
    } else {
        "?".to_owned()
    };
    format!(
        "sent {}/{} MB ({percent:.0}%), chunks {}/{}, {:.1} MB/s, {} rows/s, ETA {eta}",
        megabytes(snapshot.bytes_sent),
        megabytes(totals.bytes),
        snapshot.chunks_sent,
        totals.chunks,
        rate / 1e6,
        thousands((snapshot.rows_sent as f64 / secs) as u64),
    )
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn duration_text(secs: f64) -> String {
    let secs = secs.ceil() as u64;
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_line_shows_progress_rate_and_eta() {
        let totals = Totals {
            bytes: 40_000_000,
            chunks: 5,
        };
        let snapshot = Snapshot {
            bytes_sent: 10_000_000,
            chunks_sent: 1,
            rows_sent: 200_000,
            ..Snapshot::default()
        };
        let line = render(&snapshot, &totals, 5, Duration::from_secs(2));
        assert_eq!(
            line,
            "sent 10.0/40.0 MB (25%), chunks 1/5, 5.0 MB/s, 100,000 rows/s, ETA 6s"
        );
        let idle = render(&Snapshot::default(), &totals, 5, Duration::from_secs(1));
        assert!(idle.ends_with("ETA ?"), "{idle}");
    }

    #[test]
    fn the_loading_line_shows_rows_loaded() {
        let snapshot = Snapshot {
            loading: true,
            chunks_loaded: 3,
            rows_loaded: 1_000_000,
            rows_rejected: 2,
            ..Snapshot::default()
        };
        let line = render(
            &snapshot,
            &Totals::default(),
            7,
            Duration::from_millis(1500),
        );
        assert_eq!(
            line,
            "loading: 3/7 chunks, 1,000,000 rows loaded, 2 rejected, 1.5 s"
        );
    }

    #[test]
    fn helpers_format_numbers_and_durations() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(duration_text(0.2), "1s");
        assert_eq!(duration_text(125.0), "2m05s");
    }
}
