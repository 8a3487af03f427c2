//! Fault injection: an upload through the real gateway with the real client (loadgen's
//! `run_upload`), loaded by real engine processes, while something breaks:
//!
//! - the engine is SIGKILLed three times at random moments and restarted;
//! - RabbitMQ is stopped and started again during one upload, SIGKILLed and started again
//!   during the next (a private node);
//! - PostgreSQL crashes and starts again (a private cluster, `-m immediate`);
//! - Redis is killed for a while and started again (a private server);
//! - the gateway is SIGKILLed with chunks in flight and restarted: the client retries; or the
//!   client gives up and resumes the upload once the gateway is back.
//!
//! After each: every valid row is in `transactions` exactly once (count, no repeated
//! (upload, chunk, line), the sum of the amounts), every invalid row is rejected exactly once,
//! the upload's status and chunk ledger agree with the tables, and no chunk file is left.
//!
//! Short mode (CI) uploads 150,000 rows in 64 KiB chunks. The long mode (`bench/faults`) runs
//! the same tests on release builds with `FAULTS_ROWS=1000000` (`FAULTS_CHUNK_BYTES` sets the
//! chunk size). Fault moments are random; each test prints its seed, and `FAULTS_SEED` replays
//! one. `FAULTS_RABBITMQ_STREAM_URL` points the tests that do not restart a broker of their own
//! at another one than the shared broker; `FAULTS_LOG` is the children's `RUST_LOG` (`warn`).
//! A failed test keeps its process logs and names their directory.

// The harness: private service instances (`services`), the system as processes that can be
// killed (`stack`), the uploaded data and its expected outcome (`data`), and the client,
// progress and invariant checks (`check`).
mod check;
mod data;
mod services;
mod stack;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use loadgen::client::ApiError;
use loadgen::retry::RetryPolicy;
use loadgen::upload::{run_upload, UploadError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::block_in_place;

use crate::support::Api;
use check::*;
use data::Expected;
use ingest_testkit::proxy::CuttableProxy;
use services::{PrivatePostgres, PrivateRabbit, PrivateRedis};
use stack::Stack;

/// Not a test: the gateway child process the fault tests start and SIGKILL (`faults/stack.rs`).
#[test]
#[ignore = "entry point of the gateway child process the fault tests start"]
fn gateway_child_process() {
    if let Ok(args) = std::env::var(stack::GATEWAY_ARGS_ENV) {
        stack::gateway_child_main(&args);
    }
}

/// Chunks in flight while a service restarts: few, so the ingest outlasts the outage.
const SLOW: usize = 2;

/// A random source for fault moments, from `FAULTS_SEED` or fresh (and printed).
fn rng(test: &str) -> (StdRng, u64) {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: FAULTS_SEED={seed}");
    (StdRng::seed_from_u64(seed), seed)
}

/// The test's data: rows in two files, one in 997 invalid.
fn data(stack: &Stack) -> (Vec<std::path::PathBuf>, Expected, u64) {
    data_of(stack, "data", rows())
}

fn data_of(stack: &Stack, dir: &str, rows: u64) -> (Vec<std::path::PathBuf>, Expected, u64) {
    let (files, expected) = data::write_files(&stack.work.join(dir), rows, 2, 997);
    let chunks = planned_chunks(&files);
    (files, expected, chunks)
}

/// A moment between `from` and `to` (fractions of the chunks), as a chunk count.
fn moment(rng: &mut StdRng, chunks: u64, from: f64, to: f64) -> i64 {
    let (lo, hi) = ((chunks as f64 * from) as i64, (chunks as f64 * to) as i64);
    rng.gen_range(lo.max(1)..hi.max(lo.max(1) + 1))
}

/// How long a fault is held: a random while, longer in the long mode.
fn hold(rng: &mut StdRng, min_ms: u64, max_ms: u64) -> Duration {
    let scale = (rows() / 150_000).clamp(1, 4);
    Duration::from_millis(rng.gen_range(min_ms..max_ms) * scale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sigkilled_three_times_during_an_upload() {
    let started = Instant::now();
    let (mut rng, seed) = rng("engine_sigkilled_three_times");
    let stack = Stack::shared(4).await;
    let (files, expected, chunks) = data(&stack);
    let _gateway = stack.spawn_gateway("gateway").await;
    let mut engine = stack.spawn_engine("engine-0");
    let upload = tokio::spawn(run_upload(upload_options(&stack, &files, patient(), 8)));

    let mut moments: Vec<i64> = (0..3)
        .map(|_| moment(&mut rng, chunks, 0.05, 0.9))
        .collect();
    moments.sort_unstable();
    let mut notes = vec![format!("seed {seed}")];
    let mut last = 0;
    for (round, at) in moments.into_iter().enumerate() {
        // Each engine loads at least one chunk before it dies.
        let at = at.max(last + 1).min(chunks as i64);
        let now = wait_progress(&stack, "the engine to load more chunks", |p| p.loaded >= at).await;
        last = now.loaded;
        assert!(engine.is_running(), "{} exited on its own", engine.name);
        engine.kill();
        notes.push(format!("kill at {} loaded", now.loaded));
        tokio::time::sleep(hold(&mut rng, 0, 800)).await;
        engine = stack.spawn_engine(&format!("engine-{}", round + 1));
    }

    let summary = upload.await.unwrap().expect("the upload should finish");
    assert_summary(&summary, expected);
    let sent: u64 = summary.chunk_reports.iter().map(|c| c.rows).sum();
    assert_eq!(sent, expected.rows, "rows sent by the client");
    let upload = summary.folder.parse().unwrap();
    assert_exactly_once(&stack, upload, expected, chunks).await;
    report(
        "engine SIGKILL x3",
        expected,
        chunks,
        started,
        &summary,
        &notes.join("; "),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_then_crashed_during_uploads() {
    let started = Instant::now();
    let (mut rng, seed) = rng("rabbitmq_restarted_then_crashed");
    let starting = tokio::task::spawn_blocking(PrivateRabbit::start);
    let mut stack = Stack::shared(4).await;
    let (files_a, expected_a, chunks_a) = data_of(&stack, "data-a", rows() / 2);
    let (files_b, expected_b, chunks_b) = data_of(&stack, "data-b", rows() / 2);
    let mut rabbit = starting.await.unwrap();
    stack.broker_url = rabbit.url();
    let mut gateway = stack.spawn_gateway("gateway").await;
    let mut engine = stack.spawn_engine("engine");

    // Upload A: an orderly restart (the broker keeps confirming while it shuts down, so how
    // much of the upload it catches varies) ...
    let upload = tokio::spawn(run_upload(upload_options(
        &stack,
        &files_a,
        patient(),
        SLOW,
    )));
    let at = moment(&mut rng, chunks_a, 0.1, 0.3);
    let stopped = wait_progress(&stack, "chunks to arrive", |p| p.received >= at).await;
    let down = Instant::now();
    block_in_place(|| rabbit.stop());
    tokio::time::sleep(hold(&mut rng, 500, 2000)).await;
    block_in_place(|| rabbit.up());
    let stop_outage = down.elapsed();
    let summary_a = upload.await.unwrap().expect("upload A should finish");
    assert_summary(&summary_a, expected_a);
    let upload_a = summary_a.folder.parse().unwrap();
    assert_exactly_once(&stack, upload_a, expected_a, chunks_a).await;

    // ... upload B: a crash (SIGKILL: every connection drops at once) while chunks are sent.
    // (After the orderly restart: RabbitMQ 3.10's stream coordinator may not recover from a
    // crash a few seconds after the node's first start.)
    let upload = tokio::spawn(run_upload(upload_options(
        &stack,
        &files_b,
        patient(),
        SLOW,
    )));
    let at = chunks_a as i64 + moment(&mut rng, chunks_b, 0.1, 0.5);
    let crashed = wait_progress(&stack, "chunks to arrive", |p| p.received >= at).await;
    let down = Instant::now();
    block_in_place(|| rabbit.crash());
    tokio::time::sleep(hold(&mut rng, 500, 2000)).await;
    block_in_place(|| rabbit.up());
    let crash_outage = down.elapsed();
    let summary = upload.await.unwrap().expect("upload B should finish");

    assert!(
        gateway.is_running() && engine.is_running(),
        "nobody crashed"
    );
    assert_summary(&summary, expected_b);
    let retried = summary
        .chunk_reports
        .iter()
        .filter(|c| c.attempts > 1)
        .count();
    assert!(retried > 0, "the crash hit chunks being sent");
    let upload_b = summary.folder.parse().unwrap();
    assert_exactly_once(&stack, upload_b, expected_b, chunks_b).await;
    let notes = format!(
        "seed {seed}; upload A: broker stopped at {stopped}, back after {:.1} s; \
         upload B: SIGKILLed at {crashed} (both uploads), back after {:.1} s, {retried} chunks retried",
        stop_outage.as_secs_f64(),
        crash_outage.as_secs_f64()
    );
    let both = Expected {
        rows: expected_a.rows + expected_b.rows,
        rejected: expected_a.rejected + expected_b.rejected,
        amount_thousandths: 0,
    };
    let chunks = chunks_a + chunks_b;
    report(
        "RabbitMQ restart, then crash",
        both,
        chunks,
        started,
        &summary,
        &notes,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_and_restarted_during_an_upload() {
    let started = Instant::now();
    let (mut rng, seed) = rng("postgres_crashed");
    let postgres = block_in_place(PrivatePostgres::start);
    let stack = Stack::on_database(postgres.url("ingest_faults"), 4);
    let (files, expected, chunks) = data(&stack);
    let mut gateway = stack.spawn_gateway("gateway").await;
    let mut engine = stack.spawn_engine("engine");
    let upload = tokio::spawn(run_upload(upload_options(&stack, &files, patient(), SLOW)));

    let at = moment(&mut rng, chunks, 0.2, 0.5);
    let before = wait_progress(&stack, "chunks to arrive", |p| p.received >= at).await;
    let down = Instant::now();
    block_in_place(|| postgres.crash());
    tokio::time::sleep(hold(&mut rng, 500, 2000)).await;
    block_in_place(|| postgres.up());
    let outage = down.elapsed();

    let summary = upload.await.unwrap().expect("the upload should finish");
    assert!(
        before.loaded < chunks as i64,
        "PostgreSQL crashed during the ingest"
    );
    assert!(
        gateway.is_running() && engine.is_running(),
        "nobody crashed"
    );
    assert_summary(&summary, expected);
    let retried = summary
        .chunk_reports
        .iter()
        .filter(|c| c.attempts > 1)
        .count();
    assert!(retried > 0, "the outage hit chunks being sent");
    let upload = summary.folder.parse().unwrap();
    assert_exactly_once(&stack, upload, expected, chunks).await;
    let notes = format!(
        "seed {seed}; crashed at {before}, back after {:.1} s; {retried} chunks retried",
        outage.as_secs_f64()
    );
    report(
        "PostgreSQL crash + restart",
        expected,
        chunks,
        started,
        &summary,
        &notes,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_for_a_while_during_an_upload() {
    let started = Instant::now();
    let (mut rng, seed) = rng("redis_down");
    let mut redis = block_in_place(PrivateRedis::start);
    let mut stack = Stack::shared(4).await;
    stack.redis_url = redis.url();
    let (files, expected, chunks) = data(&stack);
    let mut gateway = stack.spawn_gateway("gateway").await;
    let _engine = stack.spawn_engine("engine");
    let upload = tokio::spawn(run_upload(upload_options(&stack, &files, patient(), SLOW)));

    let at = moment(&mut rng, chunks, 0.1, 0.3);
    let before = wait_progress(&stack, "chunks to arrive", |p| p.received >= at).await;
    assert!(
        block_in_place(|| redis.script_calls()) > 0,
        "the gateway used Redis before"
    );
    block_in_place(|| redis.kill());
    tokio::time::sleep(hold(&mut rng, 1500, 3000)).await;
    let during = progress(&stack).await.expect("the database is up");
    block_in_place(|| redis.up());
    // The rate limiter goes back to Redis (its script is loaded again on the new server).
    let http = reqwest::Client::new();
    let token_url = format!("{}/api/auth/token", stack.gateway_url());
    wait_for_redis_use(&redis, || async {
        let _ = http
            .post(&token_url)
            .basic_auth(stack::CLIENT_ID, Some(stack::CLIENT_SECRET))
            .send()
            .await;
    })
    .await;

    let summary = upload.await.unwrap().expect("the upload should finish");
    assert!(
        during.received > before.received,
        "chunks kept arriving while Redis was down ({before} -> {during})"
    );
    assert!(gateway.is_running(), "the gateway did not crash");
    let fallbacks = gateway_metric(&stack, "ingest_ratelimit_fallback_total", |_| true).await;
    assert!(fallbacks > 0.0, "the in-process limiter stood in for Redis");
    let refused = gateway_metric(&stack, "ingest_http_requests_total", |labels| {
        labels.contains("status=\"5") || labels.contains("status=\"429\"")
    })
    .await;
    assert_eq!(refused, 0.0, "Redis down cost no request a 5xx or 429");
    assert_summary(&summary, expected);
    let upload = summary.folder.parse().unwrap();
    assert_exactly_once(&stack, upload, expected, chunks).await;
    let notes = format!(
        "seed {seed}; Redis killed at {before}; {during} when it came back; \
         {fallbacks} checks answered in process; no 5xx or 429"
    );
    report("Redis down", expected, chunks, started, &summary, &notes);
}

async fn wait_for_redis_use<F, Fut>(redis: &PrivateRedis, mut poke: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    ingest_testkit::wait_for(
        "the rate limiter to use Redis again",
        Duration::from_secs(20),
        || {
            let poked = poke();
            async move {
                poked.await;
                (block_in_place(|| redis.script_calls()) > 0).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sigkilled_with_chunks_in_flight_and_the_client_retries() {
    let started = Instant::now();
    let (mut rng, seed) = rng("gateway_sigkilled_client_retries");
    let stack = Stack::shared(4).await;
    let (files, expected, chunks) = data(&stack);
    let mut gateway = stack.spawn_gateway("gateway-0").await;
    let _engine = stack.spawn_engine("engine");
    let upload = tokio::spawn(run_upload(upload_options(&stack, &files, patient(), 8)));

    let at = moment(&mut rng, chunks, 0.2, 0.6);
    let before = wait_progress(&stack, "chunks to arrive", |p| p.received >= at).await;
    gateway.kill();
    tokio::time::sleep(hold(&mut rng, 0, 1000)).await;
    let _gateway = stack.spawn_gateway("gateway-1").await;

    let summary = upload.await.unwrap().expect("the upload should finish");
    let retried = summary
        .chunk_reports
        .iter()
        .filter(|c| c.attempts > 1)
        .count();
    assert!(retried > 0, "the kill hit chunks in flight");
    assert_summary(&summary, expected);
    let upload = summary.folder.parse().unwrap();
    assert_exactly_once(&stack, upload, expected, chunks).await;
    let notes = format!("seed {seed}; killed at {before}; {retried} chunks retried");
    report(
        "gateway SIGKILL, client retries",
        expected,
        chunks,
        started,
        &summary,
        &notes,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sigkilled_and_the_client_resumes_the_upload() {
    let started = Instant::now();
    let (mut rng, seed) = rng("gateway_sigkilled_client_resumes");
    let stack = Stack::shared(4).await;
    let (files, expected, chunks) = data(&stack);
    let mut gateway = stack.spawn_gateway("gateway-0").await;
    let _engine = stack.spawn_engine("engine");
    let impatient = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        max_throttle_waits: 10,
    };
    let upload = tokio::spawn(run_upload(upload_options(&stack, &files, impatient, 8)));

    let at = moment(&mut rng, chunks, 0.2, 0.6);
    let before = wait_progress(&stack, "chunks to arrive", |p| p.received >= at).await;
    gateway.kill();
    let gave_up = upload
        .await
        .unwrap()
        .expect_err("the client gives up on a dead gateway");
    assert!(
        matches!(gave_up, UploadError::Api(ApiError::GaveUp { .. })),
        "{gave_up}"
    );
    let _gateway = stack.spawn_gateway("gateway-1").await;
    let folder = only_upload(&stack).await;
    let mut opts = upload_options(&stack, &files, patient(), 8);
    opts.resume = Some(folder.to_string());
    let summary = run_upload(opts)
        .await
        .expect("the resumed upload should finish");

    assert!(
        summary.chunks_sent < chunks,
        "the resumed run sends only what the gateway lacks ({} of {chunks})",
        summary.chunks_sent
    );
    assert_summary(&summary, expected);
    assert_exactly_once(&stack, folder, expected, chunks).await;
    // Chunks recorded but never announced when the gateway died are not sent again by the
    // resuming client (the gateway has them): the gateway's sweep publishes them.
    let late: i64 = stack
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM chunks WHERE upload_id = $1
             AND announced_at > received_at + interval '5 seconds'",
            &[&folder],
        )
        .await
        .unwrap()
        .get(0);
    let notes = format!(
        "seed {seed}; killed at {before}; client gave up; resume sent {} chunks; \
         {late} chunks announced by the gateway's sweep",
        summary.chunks_sent
    );
    report(
        "gateway SIGKILL, client resumes",
        expected,
        chunks,
        started,
        &summary,
        &notes,
    );
}

/// A client of a stack's gateway at `url`.
async fn api_at(url: String) -> Api {
    Api::at(url, stack::CLIENT_ID, stack::CLIENT_SECRET).await
}

/// One original-format row with its header.
const ONE_ROW: &[u8] =
    b"date,content,amount,type\r\n01/01/2023 00:00:01,Any text there,1.500,Deposit\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_cut_during_upload_is_a_clean_503_and_during_load_a_retry() {
    let started = Instant::now();
    let target = ingest_testkit::s3_address();
    let proxy = CuttableProxy::start(target).await;
    let stack = Stack::shared(4).await.with_bucket(Some(proxy.url())).await;
    let (files, expected, chunks) = data(&stack);
    let _gateway = stack.spawn_gateway("gateway").await;
    // A chunk a gateway stored and died before recording: the orphan sweep removes it from the
    // bucket (after 10 body-frame timeouts); `assert_exactly_once` waits for an empty bucket.
    let bucket = stack.bucket.as_ref().unwrap();
    let orphan = stack.work.join("orphan.csv");
    std::fs::write(&orphan, "date,content,amount,type\r\n").unwrap();
    let store = bucket.store();
    let orphan_name = format!(
        "{}/{}.csv",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4().simple()
    );
    store.put_file(&orphan, &orphan_name).await.unwrap();

    // The store cut while a chunk arrives: 503, and nothing of it in the ledger, the bucket or
    // the gateway's spool.
    let api = api_at(stack.gateway_url()).await;
    let folder = api.create(serde_json::json!({})).await;
    proxy.cut();
    assert_eq!(api.put(&folder, 0, ONE_ROW.to_vec()).await, 503);
    let db = stack.db().await;
    let recorded: i64 = db
        .query_one("SELECT count(*) FROM chunks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recorded, 0,
        "a chunk the store did not take is not recorded"
    );
    proxy.restore();
    assert_eq!(
        bucket.chunks().await,
        vec![orphan_name],
        "nothing but the orphan in the bucket"
    );
    let spooled = ingest_testkit::files_under(&stack.upload_dir);
    assert!(spooled.is_empty(), "nothing left in the spool: {spooled:?}");

    // A chunk number stored once is never overwritten in the bucket: the same bytes again are
    // the same chunk (200), other bytes a 409, and the bucket keeps the first object alone.
    let folder = api.create(serde_json::json!({})).await;
    assert_eq!(api.put(&folder, 0, ONE_ROW.to_vec()).await, 200);
    let of_folder = || async {
        let chunks = bucket.chunks().await;
        chunks
            .into_iter()
            .filter(|c| c.starts_with(&folder))
            .collect::<Vec<_>>()
    };
    let first = of_folder().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(api.put(&folder, 0, ONE_ROW.to_vec()).await, 200);
    let other = ONE_ROW.to_vec().repeat(2);
    assert_eq!(api.put(&folder, 0, other).await, 409);
    assert_eq!(of_folder().await, first, "the first object alone");
    db.execute("DELETE FROM uploads", &[]).await.unwrap();

    // Every chunk stored, then the store cut before any engine loads: the engine retries (it
    // does not fail the chunks) and loads each exactly once when the store is back.
    let upload = tokio::spawn(run_upload(upload_options(&stack, &files, patient(), 4)));
    wait_progress(&stack, "every chunk to be stored", |p| {
        p.received == chunks as i64
    })
    .await;
    proxy.cut();
    let mut engine = stack.spawn_engine("engine");
    let engine_log = stack.work.join("engine.log");
    ingest_testkit::wait_for(
        "the engine to meet the outage",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&engine_log).unwrap_or_default();
            let met = log.contains("load failed; retrying") && log.contains("chunk store");
            async move { met.then_some(()) }
        },
    )
    .await;
    let during = progress(&stack).await.unwrap();
    proxy.restore();
    let summary = upload.await.unwrap().expect("the upload should finish");
    assert_summary(&summary, expected);
    let upload = summary.folder.parse().unwrap();
    assert_exactly_once(&stack, upload, expected, chunks).await;

    // An object that is really gone (not a store that does not answer) fails its chunk, with
    // the reason, and nothing else waits on it.
    engine.kill();
    let folder = api.create(serde_json::json!({})).await;
    assert_eq!(api.put(&folder, 0, ONE_ROW.to_vec()).await, 200);
    let folder: uuid::Uuid = folder.parse().unwrap();
    let stored: String = db
        .query_one(
            "SELECT stored_path FROM chunks WHERE upload_id = $1",
            &[&folder],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        store.remove(&stored).await.unwrap(),
        "the chunk's object was there"
    );
    let _engine = stack.spawn_engine("engine-again");
    let failed = ingest_testkit::wait_for("the chunk to fail", Duration::from_secs(30), || async {
        let row = db
            .query_one(
                "SELECT state, error FROM chunks WHERE upload_id = $1",
                &[&folder],
            )
            .await
            .ok()?;
        let (state, error): (String, Option<String>) = (row.get(0), row.get(1));
        (state == "failed").then_some(error)
    })
    .await;
    assert_eq!(failed.as_deref(), Some("chunk file is missing"));
    report(
        "S3 store cut during upload and load",
        expected,
        chunks,
        started,
        &summary,
        &format!("{during} while the store was cut"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_body_broken_off_mid_load_is_retried_and_loaded_once() {
    s3_body_interrupted_mid_load(Interruption::Cut).await;
}

/// The store stops answering mid-body (as a SIGSTOPped server does), connections left open: the
/// load's read gives up after 60 s without a byte (object_store's read timeout, set for loads
/// in `ingest_runtime::chunk_store`), and the load is retried, not left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_body_stalled_mid_load_times_out_and_is_retried_and_loaded_once() {
    s3_body_interrupted_mid_load(Interruption::Stall).await;
}

/// What happens to the store's answers half-way through the load's read.
#[derive(Clone, Copy, PartialEq)]
enum Interruption {
    /// Every connection dropped.
    Cut,
    /// No byte moves, connections open.
    Stall,
}

async fn s3_body_interrupted_mid_load(how: Interruption) {
    let started = Instant::now();
    let target = ingest_testkit::s3_address();
    // 1 MiB a second: the engine reads the chunk for seconds, so the cut lands mid-body.
    let proxy = CuttableProxy::throttled(target, 1 << 20).await;
    let stack = Stack::shared(4).await.with_bucket(Some(proxy.url())).await;
    // One file sent as one chunk of about 2.4 MB (below the piece size: loaded whole).
    let (files, expected) = data::write_files(&stack.work.join("broken-off"), 60_000, 1, 997);
    let size = std::fs::metadata(&files[0]).unwrap().len();
    let _gateway = stack.spawn_gateway("gateway").await;
    let mut options = upload_options(&stack, &files, patient(), 1);
    options.chunk_size = size + 1;
    let upload = tokio::spawn(run_upload(options));
    wait_progress(&stack, "the chunk to be stored", |p| p.received == 1).await;

    // The engine reads the object twice: the partition pre-scan, then the load, whose body is
    // interrupted half-way through (the encoded rows already flowing into the COPY).
    let before = proxy.answered();
    let _engine = stack.spawn_engine("engine");
    ingest_testkit::wait_for("the load's read to be half-way", ingest_deadline(), || {
        let half_way = proxy.answered() >= before + size + size / 2;
        async move { half_way.then_some(()) }
    })
    .await;
    let (patience, what) = match how {
        Interruption::Cut => {
            proxy.cut();
            (
                Duration::from_secs(30),
                "cut half-way through the load's read",
            )
        }
        Interruption::Stall => {
            proxy.freeze();
            (
                Duration::from_secs(120),
                "stalled half-way through the load's read",
            )
        }
    };
    let interrupted = Instant::now();
    let engine_log = stack.work.join("engine.log");
    ingest_testkit::wait_for("the engine to retry", patience, || {
        let log = std::fs::read_to_string(&engine_log).unwrap_or_default();
        let met = log.contains("load failed; retrying") && log.contains("body broke off");
        async move { met.then_some(()) }
    })
    .await;
    if how == Interruption::Stall {
        // Not sooner: what ended the wait is the 60 s read timeout, nothing shorter.
        let waited = interrupted.elapsed();
        assert!(
            waited >= Duration::from_secs(55),
            "gave up after {waited:?} without a byte, before the read timeout"
        );
    }
    proxy.restore();
    proxy.thaw();
    let summary = upload.await.unwrap().expect("the upload should finish");
    assert_summary(&summary, expected);
    let upload = summary.folder.parse().unwrap();
    // Also: the upload's one chunk loaded, none failed.
    assert_exactly_once(&stack, upload, expected, 1).await;
    let name = match how {
        Interruption::Cut => "S3 body broken off mid-load",
        Interruption::Stall => "S3 body stalled mid-load",
    };
    report(name, expected, 1, started, &summary, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_two_gateways_three_engines_on_s3_with_an_engine_sigkilled() {
    let started = Instant::now();
    let stack = Stack::shared(6).await.with_bucket(None).await;
    // A million rows (FAULTS_ROWS when larger), in 1 MiB chunks: about 50.
    let rows = rows().max(1_000_000);
    let (files, expected) = data::write_files(&stack.work.join("data"), rows, 6, 997);
    let plan = loadgen::split::plan_files(&files, 1 << 20).unwrap();
    let chunks = plan.len() as u64;
    let ports = [stack.gateway_port, services::free_port()];
    let _gateways = [
        stack.spawn_gateway_on("gateway-a", ports[0]).await,
        stack.spawn_gateway_on("gateway-b", ports[1]).await,
    ];
    let mut engines: Vec<_> = (0..3)
        .map(|n| stack.spawn_engine(&format!("engine-{n}")))
        .collect();

    // One upload, its chunks sent alternately to either gateway (a load balancer would).
    let urls = ports.map(|port| format!("http://127.0.0.1:{port}"));
    let apis = Arc::new([api_at(urls[0].clone()).await, api_at(urls[1].clone()).await]);
    let folder = apis[0].create(serde_json::json!({})).await;
    let sending = {
        let (apis, folder) = (Arc::clone(&apis), folder.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(plan)
                .map(|chunk| {
                    let (apis, folder) = (Arc::clone(&apis), folder.clone());
                    async move {
                        let n = chunk.index;
                        let (body, _sha256) = tokio::task::spawn_blocking(move || {
                            loadgen::upload::read_chunk(&chunk)
                        })
                        .await
                        .unwrap()
                        .unwrap();
                        let status = apis[n as usize % 2].put(&folder, n as i32, body.to_vec());
                        assert_eq!(status.await, 200, "chunk {n}");
                    }
                })
                .buffer_unordered(4)
                .collect::<Vec<()>>()
                .await;
        })
    };
    let busy = wait_progress(&stack, "the engines to load a third", |p| {
        p.loaded >= chunks as i64 / 3
    })
    .await;
    let connections_before = connections(&stack).await;
    engines[1].kill();
    sending.await.unwrap();
    apis[1].complete(&folder, chunks as i32).await;
    wait_progress(&stack, "every chunk to be loaded", |p| {
        p.loaded == chunks as i64
    })
    .await;
    // The killed engine's spool went with its host: copies it was loading stay there.
    let _ = std::fs::remove_dir_all(stack.upload_dir.join("engine-1"));
    let upload = folder.parse().unwrap();
    assert_exactly_once(&stack, upload, expected, chunks).await;

    // The killed engine's partitions are owned by the two left, and the database connections
    // did not grow with the takeover.
    let db = stack.db().await;
    let owners: Vec<String> = db
        .query(
            "SELECT DISTINCT owner FROM partition_leases WHERE expires_at > now()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let owned: i64 = db
        .query_one(
            "SELECT count(*) FROM partition_leases WHERE expires_at > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 6, "every partition owned: {owners:?}");
    assert!(
        owners.iter().all(|o| !o.contains("engine-1")),
        "the killed engine owns nothing: {owners:?}"
    );
    let connections_after = connections(&stack).await;
    assert!(
        connections_after <= connections_before,
        "connections {connections_before} before the kill, {connections_after} after"
    );
    assert!(engines[0].is_running() && engines[2].is_running());
    eprintln!(
        "scale-out: {rows} rows, {chunks} chunks over 2 gateways and 3 engines (one killed at \
         {busy}), in {:.1} s; connections {connections_before} -> {connections_after}",
        started.elapsed().as_secs_f64()
    );
}

/// Sessions open on the stack's database.
async fn connections(stack: &Stack) -> i64 {
    let db = stack.db().await;
    let name = stack
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}
