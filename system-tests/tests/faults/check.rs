//! Driving the real upload client, watching progress, and the invariants every fault test
//! ends with.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ingest_runtime::settings::Secret;
use ingest_testkit::{files_under, wait_for};
use loadgen::api::UploadState;
use loadgen::client::Credentials;
use loadgen::retry::RetryPolicy;
use loadgen::summary::UploadSummary;
use loadgen::upload::UploadOptions;
use uuid::Uuid;

use super::data::Expected;
use super::stack::{Stack, CLIENT_ID, CLIENT_SECRET};

/// Rows per test: `FAULTS_ROWS` (the long mode sets a million), 150,000 by default.
pub fn rows() -> u64 {
    env_number("FAULTS_ROWS", 150_000)
}

/// Target chunk size: `FAULTS_CHUNK_BYTES`, 64 KiB by default (small: many chunks in flight).
pub fn chunk_bytes() -> u64 {
    env_number("FAULTS_CHUNK_BYTES", 64 * 1024)
}

/// How long an ingest may take, faults included: generous, and growing with the rows.
pub fn ingest_deadline() -> Duration {
    Duration::from_secs(90 + rows() / 4000)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// A retry policy that rides out an outage of a good many seconds.
pub fn patient() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 60,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(1000),
        max_throttle_waits: 200,
    }
}

/// The loadgen client's options for the stack's gateway, with `concurrency` chunks in flight.
pub fn upload_options(
    stack: &Stack,
    files: &[PathBuf],
    retry: RetryPolicy,
    concurrency: usize,
) -> UploadOptions {
    let credentials = Credentials {
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET),
    };
    let mut opts = UploadOptions::new(stack.gateway_url(), credentials, files.to_vec());
    opts.chunk_size = chunk_bytes();
    opts.concurrency = concurrency;
    opts.retry = retry;
    opts.request_timeout = Duration::from_secs(30);
    opts.poll_interval = Duration::from_millis(100);
    opts.wait_timeout = ingest_deadline();
    opts
}

/// The number of chunks the client will cut the files into.
pub fn planned_chunks(files: &[PathBuf]) -> u64 {
    loadgen::split::plan_files(files, chunk_bytes())
        .expect("the data files should split")
        .len() as u64
}

/// Where the (only) upload of a stack is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub received: i64,
    pub loaded: i64,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} received, {} loaded", self.received, self.loaded)
    }
}

/// Reads the progress of the stack's upload; `None` while the database is unreachable.
pub async fn progress(stack: &Stack) -> Option<Progress> {
    let client = ingest_runtime::db::connect(&stack.database_url)
        .await
        .ok()?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(chunks_received), 0)::int8, coalesce(sum(chunks_loaded), 0)::int8
             FROM uploads",
            &[],
        )
        .await
        .ok()?;
    Some(Progress {
        received: row.get(0),
        loaded: row.get(1),
    })
}

/// Waits until the upload's progress satisfies `reached`; returns the progress then.
pub async fn wait_progress(
    stack: &Stack,
    what: &str,
    reached: impl Fn(Progress) -> bool,
) -> Progress {
    wait_for(what, ingest_deadline(), || async {
        progress(stack).await.filter(|p| reached(*p))
    })
    .await
}

/// The id of the stack's only upload.
pub async fn only_upload(stack: &Stack) -> Uuid {
    let client = stack.db().await;
    let rows = client
        .query("SELECT upload_id FROM uploads", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one upload in the test's database");
    rows[0].get(0)
}

/// The promise, checked after a fault: every valid row loaded exactly once, every invalid one
/// rejected exactly once, the upload's status and ledger agreeing with the tables, and no chunk
/// file (temporary ones included) left on disk.
pub async fn assert_exactly_once(stack: &Stack, upload: Uuid, expected: Expected, chunks: u64) {
    let client = stack.db().await;
    let one = |sql: &'static str| {
        let client = &client;
        async move {
            let row = client.query_one(sql, &[&upload]).await.unwrap();
            row.get::<_, i64>(0)
        }
    };
    let loaded = one("SELECT count(*) FROM transactions WHERE upload_id = $1").await;
    assert_eq!(loaded as u64, expected.loaded(), "rows in transactions");
    let repeated = one(
        "SELECT count(*) FROM (SELECT 1 FROM transactions WHERE upload_id = $1
         GROUP BY chunk_no, line_no HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(
        repeated, 0,
        "(upload, chunk, line) repeated in transactions"
    );
    let sum =
        one("SELECT coalesce(sum(amount) * 1000, 0)::int8 FROM transactions WHERE upload_id = $1")
            .await;
    assert_eq!(sum, expected.amount_thousandths, "sum of loaded amounts");
    let rejected = one("SELECT count(*) FROM rejected_rows WHERE upload_id = $1").await;
    assert_eq!(rejected as u64, expected.rejected, "rejected rows recorded");
    let both = one("SELECT count(*) FROM rejected_rows r JOIN transactions t
         ON t.upload_id = r.upload_id AND t.chunk_no = r.chunk_no AND t.line_no = r.line_no
         WHERE r.upload_id = $1")
    .await;
    assert_eq!(both, 0, "no line is both loaded and rejected");

    let status = client
        .query_one(
            "SELECT state, expected_chunks::int8, chunks_received::int8, chunks_loaded::int8,
                    chunks_failed::int8, rows_loaded, rows_rejected
             FROM uploads WHERE upload_id = $1",
            &[&upload],
        )
        .await
        .unwrap();
    let state: String = status.get(0);
    let counters: Vec<i64> = (1..7).map(|i| status.get(i)).collect();
    let chunks = chunks as i64;
    assert_eq!(
        (state.as_str(), counters),
        (
            "done",
            vec![
                chunks,
                chunks,
                chunks,
                0,
                expected.loaded() as i64,
                expected.rejected as i64
            ]
        ),
        "upload status (state, expected, received, loaded, failed, rows loaded, rows rejected)"
    );
    let ledger = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE state = 'loaded'),
                    coalesce(sum(rows_loaded), 0)::int8, coalesce(sum(rows_rejected), 0)::int8
             FROM chunks WHERE upload_id = $1",
            &[&upload],
        )
        .await
        .unwrap();
    let ledger: Vec<i64> = (0..4).map(|i| ledger.get(i)).collect();
    assert_eq!(
        ledger,
        vec![
            chunks,
            chunks,
            expected.loaded() as i64,
            expected.rejected as i64
        ],
        "chunk ledger (chunks, loaded, rows loaded, rows rejected)"
    );
    wait_no_files(stack).await;
}

/// Waits until nothing is left under the upload directory (every spool) but empty directories,
/// nor in the stack's bucket.
pub async fn wait_no_files(stack: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut left = files_under(&stack.upload_dir);
        if let Some(bucket) = &stack.bucket {
            left.extend(bucket.chunks().await.into_iter().map(PathBuf::from));
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "orphan chunk files remain: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of a gateway's Prometheus samples named `name` whose labels satisfy `labels`.
pub async fn gateway_metric(stack: &Stack, name: &str, labels: impl Fn(&str) -> bool) -> f64 {
    let text = reqwest::get(format!("{}/metrics", stack.gateway_url()))
        .await
        .expect("the gateway's metrics")
        .text()
        .await
        .expect("the gateway's metrics");
    text.lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels(rest)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The client's view agrees with the database's.
pub fn assert_summary(summary: &UploadSummary, expected: Expected) {
    assert_eq!(summary.state, UploadState::Done, "{summary}");
    assert_eq!(summary.rows_loaded, expected.loaded(), "{summary}");
    assert_eq!(summary.rows_rejected, expected.rejected, "{summary}");
}

/// One line of the fault report (a Markdown table row), collected by `bench/faults`.
pub fn report(
    test: &str,
    expected: Expected,
    chunks: u64,
    started: Instant,
    summary: &UploadSummary,
    notes: &str,
) {
    let ms = |q| summary.latency_quantile(q).unwrap_or_default().as_millis();
    eprintln!(
        "FAULTS-REPORT | {test} | {} | {} | {} | {chunks} | {:.1} | {} / {} | {notes} |",
        expected.rows,
        expected.loaded(),
        expected.rejected,
        started.elapsed().as_secs_f64(),
        ms(0.5),
        ms(0.99),
    );
}
