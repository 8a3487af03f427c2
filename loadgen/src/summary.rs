//! What an upload achieved, for people (its `Display`) and for the benchmark (its fields).

use std::fmt;
use std::time::Duration;

use crate::api::{RejectedRow, ReportedState, UploadState};
use crate::progress::thousands;

/// How many rejected rows the printed summary shows.
const SHOWN_REJECTED_ROWS: usize = 10;

/// One chunk this run sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkReport {
    /// The chunk number in the upload.
    pub index: u64,
    /// Bytes in the chunk.
    pub bytes: u64,
    /// Data rows in the chunk.
    pub rows: u64,
    /// Requests it took (1 when nothing was retried).
    pub attempts: u32,
    /// From the first byte sent to the acknowledgement, retries and their waits included.
    pub latency: Duration,
}

/// The outcome of [`crate::upload::run_upload`].
#[derive(Debug, Clone)]
pub struct UploadSummary {
    /// The upload's id at the gateway (give it to `--resume`).
    pub folder: String,
    /// The final state: `Done` or `Failed`.
    pub state: ReportedState,
    /// Chunks in the whole upload.
    pub chunks: u64,
    /// Bytes in the whole upload.
    pub bytes: u64,
    /// Chunks this run sent; fewer than `chunks` after a resume.
    pub chunks_sent: u64,
    /// Bytes this run sent.
    pub bytes_sent: u64,
    /// Rows the engine loaded.
    pub rows_loaded: u64,
    /// Rows the engine refused.
    pub rows_rejected: u64,
    /// The rejected rows the gateway reported (it may report only the first ones).
    pub rejected_rows: Vec<RejectedRow>,
    /// Why the upload failed, when it did.
    pub error: Option<String>,
    /// The chunks this run sent, by chunk number.
    pub chunk_reports: Vec<ChunkReport>,
    /// From the first chunk sent to `complete` acknowledged.
    pub send_time: Duration,
    /// From the start of the run to the final state.
    pub total_time: Duration,
}

impl UploadSummary {
    /// Whether every chunk was loaded.
    pub fn succeeded(&self) -> bool {
        self.state == UploadState::Done
    }

    /// The chunk latency at quantile `q` (0.5 for the median), nearest rank.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self.chunk_reports.iter().map(|c| c.latency).collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        let rank = (q.clamp(0.0, 1.0) * latencies.len() as f64).ceil() as usize;
        Some(latencies[rank.saturating_sub(1).min(latencies.len() - 1)])
    }
}

impl fmt::Display for UploadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "upload {}: {}", self.folder, self.state)?;
        let send_secs = self.send_time.as_secs_f64();
        writeln!(
            f,
            "  sent {} of {} chunks, {:.1} MB in {:.2} s ({:.1} MB/s)",
            self.chunks_sent,
            self.chunks,
            self.bytes_sent as f64 / 1e6,
            send_secs,
            self.bytes_sent as f64 / 1e6 / send_secs.max(1e-6),
        )?;
        if let (Some(p50), Some(p99), Some(max)) = (
            self.latency_quantile(0.5),
            self.latency_quantile(0.99),
            self.latency_quantile(1.0),
        ) {
            let retried = self.chunk_reports.iter().filter(|c| c.attempts > 1).count();
            writeln!(
                f,
                "  chunk latency p50 {} ms, p99 {} ms, max {} ms; {retried} chunks retried",
                p50.as_millis(),
                p99.as_millis(),
                max.as_millis(),
            )?;
        }
        writeln!(
            f,
            "  rows loaded {}, rejected {}, total {:.2} s",
            thousands(self.rows_loaded),
            thousands(self.rows_rejected),
            self.total_time.as_secs_f64(),
        )?;
        if !self.rejected_rows.is_empty() {
            writeln!(f, "  first rejected rows:")?;
            for row in self.rejected_rows.iter().take(SHOWN_REJECTED_ROWS) {
                writeln!(
                    f,
                    "    chunk {} line {}: {}: {}",
                    row.chunk,
                    row.line,
                    row.reason,
                    row.raw.trim_end()
                )?;
            }
        }
        if let Some(error) = &self.error {
            writeln!(f, "  error: {error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(latencies_ms: &[u64]) -> UploadSummary {
        UploadSummary {
            folder: "f".into(),
            state: UploadState::Done.into(),
            chunks: latencies_ms.len() as u64,
            bytes: 0,
            chunks_sent: latencies_ms.len() as u64,
            bytes_sent: 0,
            rows_loaded: 1234,
            rows_rejected: 1,
            rejected_rows: vec![RejectedRow {
                chunk: 2,
                line: 9,
                reason: "bad amount".into(),
                raw: "x,y,z,w\r\n".into(),
            }],
            error: None,
            chunk_reports: latencies_ms
                .iter()
                .enumerate()
                .map(|(i, &ms)| ChunkReport {
                    index: i as u64,
                    bytes: 1,
                    rows: 1,
                    attempts: 1 + u32::from(ms > 50),
                    latency: Duration::from_millis(ms),
                })
                .collect(),
            send_time: Duration::from_secs(1),
            total_time: Duration::from_secs(2),
        }
    }

    #[test]
    fn latency_quantiles_use_nearest_rank() {
        let s = summary(&[40, 10, 30, 20, 100]);
        assert_eq!(s.latency_quantile(0.5), Some(Duration::from_millis(30)));
        assert_eq!(s.latency_quantile(0.99), Some(Duration::from_millis(100)));
        assert_eq!(s.latency_quantile(0.0), Some(Duration::from_millis(10)));
        assert_eq!(summary(&[]).latency_quantile(0.5), None);
    }

    #[test]
    fn the_printed_summary_names_rows_and_rejections() {
        let text = summary(&[10, 100]).to_string();
        assert!(text.starts_with("upload f: done\n"), "{text}");
        assert!(text.contains("rows loaded 1,234, rejected 1"), "{text}");
        assert!(text.contains("1 chunks retried"), "{text}");
        assert!(
            text.contains("chunk 2 line 9: bad amount: x,y,z,w\n"),
            "{text}"
        );
    }
}
