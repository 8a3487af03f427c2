//! `run_upload` against the real gateway and engine (started in-process by the engine's harness,
//! each test with its own database, streams and upload directory): exact counts in PostgreSQL
//! after a full upload, after a resume of a killed client, and under a tiny rate limit; and the
//! original's client flow (`run_original`), which the benchmark's `original-client` scenario
//! times.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ingest_runtime::settings::Secret;
use ingest_testkit::wait_for;
use loadgen::api::UploadState;
use loadgen::bench::checks;
use loadgen::bench::scenario::Ending;
use loadgen::client::{ApiError, Credentials};
use loadgen::generate::generate;
use loadgen::original::run_original;
use loadgen::retry::RetryPolicy;
use loadgen::split::plan_files;
use loadgen::upload::{run_upload, UploadError, UploadOptions};
use uuid::Uuid;

use crate::support::{connect, start_engine, start_gateway, table_counts, Running, TestEnv};

const ROWS: u64 = 20_000;

/// `rows` generated rows in files of about 200 kB, so one upload spans several files.
fn data(rows: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = generate(dir.path(), rows, 200_000, 23).expect("generate");
    (dir, files)
}

fn options(gateway: &Running, files: Vec<PathBuf>, chunk_size: u64) -> UploadOptions {
    let credentials = Credentials {
        client_id: crate::support::CLIENT_ID.to_owned(),
        client_secret: Secret::new(crate::support::CLIENT_SECRET),
    };
    let mut opts = UploadOptions::new(format!("http://{}", gateway.addr), credentials, files);
    opts.chunk_size = chunk_size;
    opts.concurrency = 4;
    opts.poll_interval = Duration::from_millis(50);
    opts.wait_timeout = Duration::from_secs(120);
    opts.retry = RetryPolicy {
        base_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    opts
}

/// Stops what the test started (the streams go with the `TestEnv`).
async fn finish(gateway: Running, engine: Option<Running>) {
    if let Some(engine) = engine {
        engine.stop().await;
    }
    gateway.stop().await;
}

/// Rows per planned chunk: what the table must hold, chunk by chunk.
fn planned_rows(files: &[PathBuf], chunk_size: u64) -> Vec<u64> {
    plan_files(files, chunk_size)
        .expect("split")
        .iter()
        .map(|c| c.range.rows)
        .collect()
}

/// The sum of the files' amounts in thousandths, read independently of the engine.
fn amount_thousandths(files: &[PathBuf]) -> i64 {
    let mut sum = 0;
    for file in files {
        let text = std::fs::read_to_string(file).expect("read");
        for line in text.lines().skip(1) {
            let amount = line.split(',').nth(2).expect("an amount column");
            let (units, fraction) = amount.split_once('.').unwrap_or((amount, ""));
            let negative = units.starts_with('-');
            let units: i64 = units.trim_start_matches('-').parse().expect("units");
            let fraction: i64 = format!("{fraction:0<3}").parse().expect("thousandths");
            let value = units * 1000 + fraction;
            sum += if negative { -value } else { value };
        }
    }
    sum
}

/// Asserts that the upload's rows in PostgreSQL are exactly the files' rows.
async fn assert_exact(env: &TestEnv, folder: &str, files: &[PathBuf], chunk_size: u64) {
    let planned = planned_rows(files, chunk_size);
    let total: u64 = planned.iter().sum();
    assert_eq!(table_counts(&env.db, folder).await, (total as i64, 0));
    let client = env.db.client().await.expect("connect");
    let upload = Uuid::parse_str(folder).expect("a uuid folder");
    let found = checks::lineage(&client, upload, &planned, Ending::Declared)
        .await
        .expect("lineage queries");
    assert!(found.iter().all(|c| c.ok), "{found:#?}");
    let row = client
        .query_one(
            "SELECT (sum(amount) * 1000)::bigint, min(date)::text, max(date)::text
             FROM transactions WHERE upload_id = $1",
            &[&upload],
        )
        .await
        .expect("sums");
    let (sum, first, last): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        sum,
        amount_thousandths(files),
        "the amounts arrive unchanged"
    );
    // Day-first dates read as such, and neither the first nor the last row is lost.
    assert_eq!(first, "2023-01-01 00:00:00");
    let last_second = total - 1;
    let expected_last = format!(
        "2023-01-01 {:02}:{:02}:{:02}",
        last_second / 3600,
        last_second / 60 % 60,
        last_second % 60
    );
    assert_eq!(last, expected_last);
}

#[tokio::test]
async fn a_generated_upload_is_loaded_exactly() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let (_dir, files) = data(ROWS);
    assert!(files.len() >= 4, "several files: {}", files.len());
    let chunk_size = 64 * 1024;

    let summary = run_upload(options(&gateway, files.clone(), chunk_size))
        .await
        .expect("the upload should finish");

    assert_eq!(summary.state, UploadState::Done, "{summary}");
    assert!(summary.chunks >= 16, "many chunks: {}", summary.chunks);
    assert_eq!(summary.chunks_sent, summary.chunks);
    assert_eq!((summary.rows_loaded, summary.rows_rejected), (ROWS, 0));
    assert!(summary.chunk_reports.iter().all(|c| c.attempts == 1));
    assert_exact(&env, &summary.folder, &files, chunk_size).await;
    env.wait_no_files().await;
    finish(gateway, Some(engine)).await;
}

/// The upload the gateway holds (the test's database has only this one) once it has received
/// at least `chunks` chunks.
async fn upload_with_chunks(env: &TestEnv, chunks: i32) -> (String, i32) {
    let client = env.db.client().await.expect("connect");
    wait_for("chunks to arrive", Duration::from_secs(60), || async {
        let row = client
            .query_opt("SELECT upload_id, chunks_received FROM uploads", &[])
            .await
            .expect("query uploads")?;
        let (id, received): (Uuid, i32) = (row.get(0), row.get(1));
        (received >= chunks).then(|| (id.to_string(), received))
    })
    .await
}

#[tokio::test]
async fn the_original_client_flow_is_loaded_exactly_before_the_upload_settles() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let (_dir, files) = data(ROWS);
    assert!(files.len() >= 4, "several files: {}", files.len());

    let summary = run_original(options(&gateway, files.clone(), 64 * 1024))
        .await
        .expect("the original flow should finish");

    // Whole files, one chunk each, numbered in the order sent; no count declared, so the
    // upload waits for the settle rule while every row is already in.
    assert_eq!(summary.files, files.len() as u64);
    let status = &summary.status;
    assert_eq!(status.expected_chunks, None);
    assert_eq!(status.chunks_received, files.len() as u64);
    assert_eq!(
        (status.chunks_loaded, status.chunks_failed),
        (files.len() as u64, 0)
    );
    assert_eq!((status.rows_loaded, status.rows_rejected), (ROWS, 0));
    assert_eq!(
        status.state,
        UploadState::Receiving,
        "settles only after 10 s idle"
    );
    let whole_files = u64::MAX;
    assert_eq!(planned_rows(&files, whole_files).len(), files.len());
    let client = env.db.client().await.expect("connect");
    let upload = Uuid::parse_str(&summary.folder).expect("a uuid folder");
    let found = checks::lineage(
        &client,
        upload,
        &planned_rows(&files, whole_files),
        Ending::Settle,
    )
    .await
    .expect("lineage queries");
    assert!(found.iter().all(|c| c.ok), "{found:#?}");
    finish(gateway, Some(engine)).await;
}

#[tokio::test]
async fn resume_after_the_client_is_killed_finishes_with_exact_counts() {
    let env = TestEnv::new(2).await;
    // A modest rate limit keeps the first client mid-way long enough to be killed there.
    let gateway = start_gateway(&env, &["--rate-limit-per-sec=20", "--rate-limit-burst=5"]).await;
    let engine = start_engine(&env, &[]).await;
    let (_dir, files) = data(ROWS);
    let chunk_size = 16 * 1024;
    let total = planned_rows(&files, chunk_size).len();
    assert!(total >= 60, "{total} chunks");

    let first = tokio::spawn(run_upload(options(&gateway, files.clone(), chunk_size)));
    let (folder, _) = upload_with_chunks(&env, 5).await;
    assert!(
        !first.is_finished(),
        "the first client should still be sending"
    );
    first.abort();
    assert!(first.await.expect_err("aborted").is_cancelled());
    let api = connect(&gateway).await;
    let before = api.status(&folder).await;
    let received = before["chunks_received"].as_u64().expect("chunks_received");
    assert!(
        (5..total as u64).contains(&received),
        "killed mid-way: {before}"
    );

    let mut opts = options(&gateway, files.clone(), chunk_size);
    opts.resume = Some(folder.clone());
    let summary = run_upload(opts).await.expect("the resume should finish");

    assert_eq!(summary.folder, folder);
    assert_eq!(summary.state, UploadState::Done, "{summary}");
    assert_eq!(summary.chunks, total as u64);
    assert!(
        summary.chunks_sent <= summary.chunks - received,
        "only missing chunks are sent: {} of {}, {received} were held",
        summary.chunks_sent,
        summary.chunks
    );
    assert_eq!((summary.rows_loaded, summary.rows_rejected), (ROWS, 0));
    assert_exact(&env, &folder, &files, chunk_size).await;
    finish(gateway, Some(engine)).await;
}

#[tokio::test]
async fn a_tiny_rate_limit_is_waited_out() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &["--rate-limit-per-sec=5", "--rate-limit-burst=2"]).await;
    let engine = start_engine(&env, &[]).await;
    let rows = 5_000;
    let (_dir, files) = data(rows);
    let chunk_size = 32 * 1024;
    let mut opts = options(&gateway, files.clone(), chunk_size);
    opts.poll_interval = Duration::from_millis(250);
    // 429 must not use up the (few) attempts allowed for real failures.
    opts.retry.max_attempts = 2;

    let summary = run_upload(opts)
        .await
        .expect("throttled requests should be retried");

    assert_eq!(summary.state, UploadState::Done, "{summary}");
    assert_eq!((summary.rows_loaded, summary.rows_rejected), (rows, 0));
    let retried = summary
        .chunk_reports
        .iter()
        .filter(|c| c.attempts > 1)
        .count();
    assert!(retried > 0, "the limit should have answered 429: {summary}");
    assert_exact(&env, &summary.folder, &files, chunk_size).await;
    finish(gateway, Some(engine)).await;
}

#[tokio::test]
async fn resume_refuses_files_that_split_differently() {
    let env = TestEnv::new(1).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api
        .create(serde_json::json!({"expected_chunks": 999}))
        .await;
    let (_dir, files) = data(2_000);
    let mut opts = options(&gateway, files, 64 * 1024);
    opts.resume = Some(folder.clone());
    let err = run_upload(opts).await.expect_err("the plan does not match");
    assert!(matches!(err, UploadError::ResumeMismatch { .. }), "{err}");
    let status = api.status(&folder).await;
    assert_eq!(status["chunks_received"], 0, "nothing was sent: {status}");
    finish(gateway, None).await;
}

#[tokio::test]
async fn wrong_credentials_are_fatal() {
    let env = TestEnv::new(1).await;
    let gateway = start_gateway(&env, &[]).await;
    let (_dir, files) = data(100);
    let mut opts = options(&gateway, files, 64 * 1024);
    opts.credentials.client_secret = Secret::new("wrong");
    let err = run_upload(opts)
        .await
        .expect_err("401 on the token is fatal");
    assert!(
        matches!(err, UploadError::Api(ApiError::BadCredentials)),
        "{err}"
    );
    finish(gateway, None).await;
}

/// Appends a row with an impossible date (the 32nd) to the last file.
fn append_bad_row(files: &[PathBuf]) {
    let last: &Path = files.last().expect("a file");
    let mut text = std::fs::read(last).expect("read");
    text.extend_from_slice(b"32/01/2023 00:00:00,Any text there,1.5,Deposit\r\n");
    std::fs::write(last, text).expect("write");
}

#[tokio::test]
async fn rejected_rows_are_reported_and_reject_chunk_fails_the_upload() {
    let env = TestEnv::new(1).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let (_dir, files) = data(1_000);
    append_bad_row(&files);

    let summary = run_upload(options(&gateway, files.clone(), 64 * 1024))
        .await
        .expect("an upload with a bad row still finishes");
    assert_eq!(summary.state, UploadState::Done, "{summary}");
    assert_eq!((summary.rows_loaded, summary.rows_rejected), (1_000, 1));
    let rejected = &summary.rejected_rows[0];
    assert!(rejected.raw.contains("32/01/2023"), "{rejected:?}");
    assert!(summary.to_string().contains("first rejected rows"));

    let mut strict = options(&gateway, files, 64 * 1024);
    strict.on_error = "reject-chunk".to_owned();
    let summary = run_upload(strict)
        .await
        .expect("a failed load still ends the run normally");
    assert_eq!(summary.state, UploadState::Failed, "{summary}");
    assert!(!summary.succeeded());
    assert!(summary.to_string().contains("failed"), "{summary}");
    finish(gateway, Some(engine)).await;
}
