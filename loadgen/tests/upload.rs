//! `run_upload` against a fake gateway that follows the API contract: chunking across files,
//! retries, resume, token renewal, and the fatal cases.

mod fake_gateway;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fake_gateway::{Behaviour, FakeGateway, CLIENT_ID, CLIENT_SECRET};
use ingest_contract::settings::Secret;
use loadgen::api::UploadState;
use loadgen::client::{ApiError, Credentials};
use loadgen::generate::{generate, HEADER};
use loadgen::retry::RetryPolicy;
use loadgen::split::plan_files;
use loadgen::upload::{run_upload, UploadError, UploadOptions};

const CHUNK_SIZE: u64 = 64 * 1024;

fn data(rows: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Small files so that several files and many chunks make one upload.
    let files = generate(dir.path(), rows, 200_000, 11).expect("generate");
    (dir, files)
}

fn options(gateway: &FakeGateway, files: Vec<PathBuf>) -> UploadOptions {
    let credentials = Credentials {
        client_id: CLIENT_ID.to_owned(),
        client_secret: Secret::new(CLIENT_SECRET),
    };
    let mut opts = UploadOptions::new(&gateway.url, credentials, files);
    opts.chunk_size = CHUNK_SIZE;
    opts.concurrency = 4;
    opts.poll_interval = Duration::from_millis(10);
    opts.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        max_throttle_waits: 5,
    };
    opts
}

fn concat(files: &[PathBuf]) -> Vec<u8> {
    files
        .iter()
        .flat_map(|f| std::fs::read(f).expect("read"))
        .collect()
}

#[tokio::test]
async fn files_arrive_whole_in_numbered_chunks_despite_503_and_429() {
    let behaviour = Behaviour {
        fail_first_put: [(1, 503), (2, 429), (5, 500)].into(),
        ..Behaviour::default()
    };
    let gateway = FakeGateway::start(behaviour).await;
    let (_dir, files) = data(20_000);
    assert!(files.len() >= 3);
    let summary = run_upload(options(&gateway, files.clone()))
        .await
        .expect("the upload should succeed");

    assert_eq!(summary.state, UploadState::Done);
    assert!(summary.succeeded());
    assert_eq!(summary.rows_loaded, 20_000);
    assert_eq!(summary.rows_rejected, 0);
    let plan = plan_files(&files, CHUNK_SIZE).expect("split");
    assert_eq!(summary.chunks, plan.len() as u64);
    assert_eq!(summary.chunks_sent, summary.chunks);
    assert_eq!(summary.bytes_sent, concat(&files).len() as u64);
    let indexes: Vec<u64> = summary.chunk_reports.iter().map(|c| c.index).collect();
    assert_eq!(indexes, (0..summary.chunks).collect::<Vec<_>>());
    for report in &summary.chunk_reports {
        let retried = [1, 2, 5].contains(&report.index);
        assert_eq!(
            report.attempts,
            1 + u32::from(retried),
            "chunk {}",
            report.index
        );
    }

    let state = gateway.state();
    assert_eq!(state.tokens_issued, 1, "one token serves the whole upload");
    let upload = state
        .uploads
        .get(&summary.folder)
        .expect("the upload exists");
    assert_eq!(upload.expected, Some(summary.chunks));
    assert_eq!(upload.completed, Some(summary.chunks));
    let received: Vec<u8> = upload.chunks.values().flat_map(|c| c.to_vec()).collect();
    assert_eq!(
        received,
        concat(&files),
        "the chunks are the files, in order"
    );
    let headers = upload
        .chunks
        .values()
        .filter(|c| c.starts_with(HEADER))
        .count();
    assert_eq!(
        headers,
        files.len(),
        "each file's first chunk keeps its header"
    );
}

#[tokio::test]
async fn resume_sends_only_the_missing_chunks() {
    let gateway = FakeGateway::start(Behaviour::default()).await;
    let (_dir, files) = data(12_000);
    let plan = plan_files(&files, CHUNK_SIZE).expect("split");
    assert!(plan.len() > 4);
    // A previous run got chunks 0, 1 and 3 through.
    let held: BTreeMap<u64, Bytes> = [0, 1, 3]
        .into_iter()
        .map(|i| {
            let chunk = &plan[i as usize];
            let data = std::fs::read(chunk.path.as_path()).expect("read");
            let range =
                chunk.range.offset as usize..(chunk.range.offset + chunk.range.len) as usize;
            (i, Bytes::copy_from_slice(&data[range]))
        })
        .collect();
    gateway.insert_upload("previous-run", plan.len() as u64, held);

    let mut opts = options(&gateway, files.clone());
    opts.resume = Some("previous-run".to_owned());
    let summary = run_upload(opts)
        .await
        .expect("the resumed upload should succeed");

    assert_eq!(summary.folder, "previous-run");
    assert_eq!(summary.state, UploadState::Done);
    assert_eq!(summary.rows_loaded, 12_000);
    assert_eq!(summary.chunks_sent, plan.len() as u64 - 3);
    let mut puts = gateway.state().puts.clone();
    puts.sort_unstable();
    let missing: Vec<u64> = (0..plan.len() as u64)
        .filter(|i| ![0, 1, 3].contains(i))
        .collect();
    assert_eq!(puts, missing);
    let state = gateway.state();
    let received: Vec<u8> = state.uploads["previous-run"]
        .chunks
        .values()
        .flat_map(|c| c.to_vec())
        .collect();
    assert_eq!(received, concat(&files));
}

#[tokio::test]
async fn resume_refuses_files_that_split_differently() {
    let gateway = FakeGateway::start(Behaviour::default()).await;
    let (_dir, files) = data(5_000);
    gateway.insert_upload("other", 999, BTreeMap::new());
    let mut opts = options(&gateway, files);
    opts.resume = Some("other".to_owned());
    let err = run_upload(opts).await.expect_err("the plan does not match");
    assert!(matches!(err, UploadError::ResumeMismatch { .. }), "{err}");
    assert!(gateway.state().puts.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_conflicting_chunk_stops_the_upload_with_the_gateway_message() {
    let behaviour = Behaviour {
        conflict_on: Some(2),
        ..Behaviour::default()
    };
    let gateway = FakeGateway::start(behaviour).await;
    let (_dir, files) = data(5_000);
    let err = run_upload(options(&gateway, files))
        .await
        .expect_err("409 is fatal");
    match &err {
        UploadError::Api(ApiError::Rejected { status, code, .. }) => {
            assert_eq!((*status, code.as_str()), (409, "chunk_conflict"));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("chunk 2"), "{err}");
    let state = gateway.state();
    assert_eq!(
        state.puts.iter().filter(|&&n| n == 2).count(),
        1,
        "409 is not retried"
    );
    assert!(state.uploads.values().all(|u| u.completed.is_none()));
}

#[tokio::test]
async fn a_refused_token_is_renewed_and_the_request_repeated() {
    let behaviour = Behaviour {
        rotate_key_after: Some(4),
        ..Behaviour::default()
    };
    let gateway = FakeGateway::start(behaviour).await;
    let (_dir, files) = data(8_000);
    let summary = run_upload(options(&gateway, files))
        .await
        .expect("renewed tokens should carry the upload");
    assert_eq!(summary.state, UploadState::Done);
    assert_eq!(summary.rows_loaded, 8_000);
    assert_eq!(
        gateway.state().tokens_issued,
        2,
        "one renewal, shared by all senders"
    );
}

#[tokio::test]
async fn wrong_credentials_are_fatal() {
    let gateway = FakeGateway::start(Behaviour::default()).await;
    let (_dir, files) = data(100);
    let mut opts = options(&gateway, files);
    opts.credentials.client_secret = Secret::new("wrong");
    let err = run_upload(opts)
        .await
        .expect_err("401 on the token is fatal");
    assert!(
        matches!(err, UploadError::Api(ApiError::BadCredentials)),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_load_is_reported_with_its_rejected_rows() {
    let behaviour = Behaviour {
        fail_load: true,
        ..Behaviour::default()
    };
    let gateway = FakeGateway::start(behaviour).await;
    let (_dir, files) = data(1_000);
    let summary = run_upload(options(&gateway, files))
        .await
        .expect("a failed load still ends the run normally");
    assert_eq!(summary.state, UploadState::Failed);
    assert!(!summary.succeeded());
    assert_eq!(
        summary.error.as_deref(),
        Some("chunk 0 could not be loaded")
    );
    assert_eq!(summary.rows_rejected, 1);
    assert_eq!(summary.rejected_rows[0].reason, "bad date");
    let printed = summary.to_string();
    assert!(printed.contains("failed") && printed.contains("chunk 0 line 2: bad date"));
}

#[tokio::test]
async fn an_unreachable_gateway_is_retried_then_reported() {
    // A port nothing listens on: bind one, then let it go.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let (_dir, files) = data(100);
    let gateway = FakeGateway::start(Behaviour::default()).await;
    let mut opts = options(&gateway, files);
    opts.url = url;
    let err = run_upload(opts).await.expect_err("nobody answers");
    match err {
        UploadError::Api(ApiError::GaveUp { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("unexpected error: {other}"),
    }
}
