//! `run_upload` against a fake gateway, only for what the real gateway cannot produce on demand:
//! injected 503 and 500 answers, a signing-key rotation in the middle of an upload (401 to a
//! token that was valid), and a 409 conflict (the real gateway answers it only when a chunk
//! number is re-sent with other bytes, which a correct client never does). Everything the real
//! gateway can do (full uploads, resume after a kill, 429 under a tiny limit, resume mismatch,
//! wrong credentials, rejected rows, failed loads) is tested against it in `system-tests/tests/loadgen_e2e.rs`.

use std::path::PathBuf;
use std::time::Duration;

use crate::fake_gateway::{Behaviour, FakeGateway, CLIENT_ID, CLIENT_SECRET};
use ingest_runtime::settings::Secret;
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

fn options(url: &str, files: Vec<PathBuf>) -> UploadOptions {
    let credentials = Credentials {
        client_id: CLIENT_ID.to_owned(),
        client_secret: Secret::new(CLIENT_SECRET),
    };
    let mut opts = UploadOptions::new(url, credentials, files);
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
async fn files_arrive_whole_in_numbered_chunks_despite_503_and_500() {
    let behaviour = Behaviour {
        fail_first_put: [(1, 503), (2, 500), (5, 503)].into(),
        ..Behaviour::default()
    };
    let gateway = FakeGateway::start(behaviour).await;
    let (_dir, files) = data(20_000);
    assert!(files.len() >= 3);
    let summary = run_upload(options(&gateway.url, files.clone()))
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
async fn a_conflicting_chunk_stops_the_upload_with_the_gateway_message() {
    let behaviour = Behaviour {
        conflict_on: Some(2),
        ..Behaviour::default()
    };
    let gateway = FakeGateway::start(behaviour).await;
    let (_dir, files) = data(5_000);
    let err = run_upload(options(&gateway.url, files))
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
    let summary = run_upload(options(&gateway.url, files))
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
async fn an_unreachable_gateway_is_retried_then_reported() {
    // A port nothing listens on: bind one, then let it go.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let (_dir, files) = data(100);
    let opts = options(&url, files);
    let err = run_upload(opts).await.expect_err("nobody answers");
    match err {
        UploadError::Api(ApiError::GaveUp { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("unexpected error: {other}"),
    }
}
