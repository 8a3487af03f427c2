//! Real clients against the real gateway and engine: the original system's own client tests
//! (`tests/original/test_api.py` with Python `requests`, `tests/original/test.sh` with curl),
//! uploads that never declare a chunk count (settled `done`, reopened by a later file, never
//! failed by expiry when nothing is lost), hundreds of tiny chunks racing the engine's
//! removal of the upload directory, and a person in a browser: the upload console (`/console`)
//! driven in headless Chromium by Playwright (`browser/console.mjs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::support::*;

/// The repository root (the original's scripts live in `tests/original/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the system-tests crate sits in the workspace")
        .to_owned()
}

/// A working directory holding `tests/data/dummy_<uuid>.csv` files of the original's format
/// (its generator's ~9 MiB files), as the original's client tests expect. Returns the directory
/// and the number of data rows.
fn original_data(rows: u64, file_size: u64) -> (tempfile::TempDir, u64) {
    let cwd = tempfile::tempdir().expect("temp dir");
    let data = cwd.path().join("tests/data");
    let files = loadgen::generate::generate(&data, rows, file_size, 7).expect("generate");
    for file in files {
        let named = data.join(format!("dummy_{}.csv", uuid::Uuid::new_v4()));
        std::fs::rename(file, named).expect("rename");
    }
    (cwd, rows)
}

/// Runs one of the original's client scripts against `gateway`; returns the folder it printed.
/// Awaited, not blocking: the gateway and engine run on this test's own (single-threaded)
/// runtime, so a blocking wait would leave the script's requests unanswered forever.
async fn run_original(command: &mut Command, cwd: &Path, gateway: &Running) -> String {
    command
        .current_dir(cwd)
        .env(
            "INGEST_ORIGINAL_BASE",
            format!("http://{}/api/", gateway.addr),
        )
        .env("INGEST_CLIENT_ID", CLIENT_ID)
        .env("INGEST_CLIENT_SECRET", CLIENT_SECRET)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the client script should finish within 5 minutes")
        .expect("the client script should start");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "client failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .last()
        .expect("the script prints the folder")
        .trim()
        .to_owned()
}

/// Python with `requests`, as the original's test uses (installed from PyPI when missing).
async fn python_with_requests() -> Command {
    let has = Command::new("python3")
        .args(["-c", "import requests"])
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !has {
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "requests"])
            .status()
            .await
            .expect("pip should run");
        assert!(installed.success(), "cannot install requests from PyPI");
    }
    Command::new("python3")
}

async fn wait_done(api: &Api, folder: &str) -> serde_json::Value {
    let status = api.wait_finished(folder, Duration::from_secs(180)).await;
    assert_eq!(status["state"], "done", "{status}");
    status
}

#[tokio::test]
async fn the_originals_own_client_tests_pass_unchanged() {
    let env = TestEnv::new(4).await;
    let gateway = start_gateway(&env, &["--upload-settle-secs=1"]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;

    // test_api.py: the original generator's 9 MiB files (two here), requests' multipart.
    let (cwd, rows) = original_data(250_000, 9 * 1024 * 1024);
    let mut python = python_with_requests().await;
    python.arg(repo().join("tests/original/test_api.py"));
    let folder = run_original(&mut python, cwd.path(), &gateway).await;
    let status = wait_done(&api, &folder).await;
    assert_eq!(status["rows_loaded"], rows, "{status}");
    assert_eq!(status["rows_rejected"], 0, "{status}");
    assert_eq!(status["completion"]["rule"], "settle", "{status}");
    assert_eq!(table_counts(&env.db, &folder).await, (rows as i64, 0));

    // test.sh: curl with `--form file=@...` and `POST /api/upload/` with the trailing slash.
    let (cwd, rows_sh) = original_data(30_000, 400_000);
    let mut bash = Command::new("bash");
    bash.arg(repo().join("tests/original/test.sh"));
    let folder_sh = run_original(&mut bash, cwd.path(), &gateway).await;
    let status = wait_done(&api, &folder_sh).await;
    assert_eq!(status["rows_loaded"], rows_sh, "{status}");
    assert_eq!(table_counts(&env.db, &folder_sh).await, (rows_sh as i64, 0));

    let client = env.db.client().await.unwrap();
    let total: i64 = client
        .query_one("SELECT count(*) FROM transactions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, (rows + rows_sh) as i64, "exactly the rows sent");
    engine.stop().await;
    gateway.stop().await;
}

/// The original's multipart upload of one small file.
async fn post_file(api: &Api, folder: &str, body: Vec<u8>) -> u16 {
    let part = reqwest::multipart::Part::bytes(body).file_name("./tests/data/part.csv");
    api.http
        .post(format!("{}/api/upload/{folder}", api.url))
        .bearer_auth(&api.token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn upload_row(env: &TestEnv, folder: &str) -> (String, Option<String>) {
    let client = env.db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(folder).unwrap();
    let row = client
        .query_one(
            "SELECT state, error FROM uploads WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn an_undeclared_upload_settles_done_and_a_later_file_reopens_it() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &["--upload-settle-secs=2"]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    assert_eq!(
        post_file(&api, &folder, original_rows(0, 300, true)).await,
        200
    );
    let status = api.status(&folder).await;
    assert_eq!(status["state"], "receiving", "not done before it settles");
    assert_eq!(status["completion"]["rule"], "settle", "{status}");
    assert_eq!(status["completion"]["idle_secs"], 2, "{status}");
    assert!(status["completion"]["settles_at"].is_string(), "{status}");
    let status = wait_done(&api, &folder).await;
    assert_eq!(status["rows_loaded"], 300);
    assert!(status["completed_at"].is_string());

    // The original's client may send another file later: the upload takes it and settles again.
    assert_eq!(
        post_file(&api, &folder, original_rows(300, 200, true)).await,
        200
    );
    assert_eq!(upload_row(&env, &folder).await.0, "receiving");
    let status = wait_done(&api, &folder).await;
    assert_eq!(status["rows_loaded"], 500);
    assert_eq!(status["chunks_received"], 2);
    assert_eq!(table_counts(&env.db, &folder).await, (500, 0));
    engine.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn expiry_never_fails_an_upload_that_lost_nothing() {
    let env = TestEnv::new(2).await;
    // A short TTL and a settle period far beyond it: expiry reaches the upload first.
    let gateway = start_gateway(&env, &["--upload-ttl-secs=2", "--upload-settle-secs=3600"]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    let loaded = api.create(serde_json::json!({})).await;
    let empty = api.create(serde_json::json!({})).await;
    let missing = api.create(serde_json::json!({"expected_chunks": 2})).await;
    assert_eq!(
        post_file(&api, &loaded, original_rows(0, 100, true)).await,
        200
    );
    assert_eq!(api.put(&missing, 0, original_rows(0, 50, true)).await, 200);

    let status = api.wait_finished(&loaded, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["error"], serde_json::Value::Null, "{status}");
    assert_eq!(status["rows_loaded"], 100);
    // What expiry is for: nothing ever arrived, or a declared chunk never did.
    let empty_status = api.wait_finished(&empty, Duration::from_secs(60)).await;
    assert_eq!(empty_status["state"], "failed");
    assert_eq!(empty_status["error"], "expired");
    let missing_status = api.wait_finished(&missing, Duration::from_secs(60)).await;
    assert_eq!(missing_status["state"], "failed");
    assert_eq!(missing_status["error"], "expired");
    // An expired upload takes no more files; a settled one would.
    assert_eq!(
        post_file(&api, &empty, original_rows(0, 10, true)).await,
        409
    );
    assert_eq!(upload_row(&env, &loaded).await, ("done".to_owned(), None));
    engine.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn hundreds_of_tiny_chunks_race_the_engine_without_a_single_error() {
    let env = TestEnv::new(2).await;
    // The race with the engine's cleanup is the subject, not the rate limit: 600 requests from
    // one IP outrun 100 r/s + 200 burst whenever the machine is quick enough (seen in CI).
    let gateway = start_gateway(&env, &["--rate-limit-per-sec=100000"]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    // Two clients, each sending its chunks one after another while the engine keeps up and
    // removes each loaded file (and the upload's directory whenever it is empty).
    let chunks = 300;
    let mut folders = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let folder = api
            .create(serde_json::json!({"expected_chunks": chunks}))
            .await;
        folders.push(folder.clone());
        let api = Api {
            url: api.url.clone(),
            http: api.http.clone(),
            token: api.token.clone(),
        };
        senders.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for n in 0..chunks {
                let status = api
                    .put(&folder, n, original_rows(n as u64, 1, n == 0))
                    .await;
                if status != 200 {
                    refused.push((n, status));
                }
            }
            refused
        }));
    }
    for sender in senders {
        let refused = sender.await.unwrap();
        assert!(refused.is_empty(), "chunks refused: {refused:?}");
    }
    for folder in &folders {
        let status = wait_done(&api, folder).await;
        assert_eq!(status["rows_loaded"], chunks, "{status}");
        assert_eq!(table_counts(&env.db, folder).await, (chunks as i64, 0));
    }
    env.wait_no_files().await;
    engine.stop().await;
    gateway.stop().await;
}

/// The console in a real browser: sign in, a 100,000-row file through the file input (cut into
/// chunks in the page, sent in parallel with checksums), a file with bad rows by drag and drop,
/// an XLSX workbook (sent whole, its first sheet converted by the gateway); the page shows each
/// loaded and the bad rows, and PostgreSQL holds exactly the good rows.
/// `INGEST_UPDATE_SCREENSHOTS=1` (or a missing file) keeps the screenshot as `docs/console.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_uploads_files_from_a_browser_end_to_end() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.csv");
    std::fs::write(&good, original_rows(0, 100_000, true)).unwrap();
    let mut bad_rows = original_rows(0, 40, true);
    for n in 0..3 {
        bad_rows.extend_from_slice(
            format!("31/02/2023 10:00:0{n},Not a day,1.000,Deposit\r\n").as_bytes(),
        );
    }
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, bad_rows).unwrap();
    let workbook = dir.path().join("statement.xlsx");
    std::fs::write(&workbook, ingest_testkit::xlsx::original_workbook(0, 2_000)).unwrap();
    let shot = dir.path().join("console.png");
    let driver_env = [
        ("CONSOLE_URL", format!("http://{}/console", gateway.addr)),
        ("CLIENT_ID", CLIENT_ID.to_owned()),
        ("CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("GOOD_CSV", good.display().to_string()),
        ("BAD_CSV", bad.display().to_string()),
        ("GOOD_XLSX", workbook.display().to_string()),
        ("SCREENSHOT", shot.display().to_string()),
        // 100,000 rows are ~5 MB: 1 MiB chunks make the page cut and send several at once.
        ("CHUNK_BYTES", "1048576".to_owned()),
    ];
    let shown =
        ingest_testkit::browser::run_driver("console.mjs", &driver_env, Duration::from_secs(300))
            .await;
    assert_eq!(
        shown["datasets_offered"],
        serde_json::json!(["transactions (date,content,amount,type)"]),
        "the picker lists GET /api/datasets"
    );
    assert_eq!(shown["good_state"], "done", "{shown}");
    assert_eq!(shown["good_rows_loaded"], 100_000, "{shown}");
    assert_eq!(shown["bad_state"], "done", "{shown}");
    assert_eq!(shown["bad_rows_rejected"], 3, "{shown}");
    assert_eq!(shown["bad_rejected_shown"], 3, "{shown}");
    let good_folder = shown["good_folder"].as_str().unwrap();
    let bad_folder = shown["bad_folder"].as_str().unwrap();
    assert_eq!(table_counts(&env.db, good_folder).await, (100_000, 0));
    assert_eq!(table_counts(&env.db, bad_folder).await, (40, 0));
    assert_eq!(shown["xlsx_state"], "done", "{shown}");
    assert_eq!(shown["xlsx_rows_loaded"], 2_000, "{shown}");
    let xlsx_folder = shown["xlsx_folder"].as_str().unwrap();
    assert_eq!(table_counts(&env.db, xlsx_folder).await, (2_000, 0));
    let client = env.db.client().await.unwrap();
    let chunks: i64 = client
        .query_one(
            "SELECT count(*) FROM chunks WHERE upload_id = $1::text::uuid AND state = 'loaded'",
            &[&good_folder],
        )
        .await
        .unwrap()
        .get(0);
    assert!(chunks >= 5, "the page cut the file into chunks: {chunks}");

    let kept = repo().join("docs/console.png");
    if std::env::var_os("INGEST_UPDATE_SCREENSHOTS").is_some() || !kept.exists() {
        std::fs::copy(&shot, &kept).expect("docs/ should be writable");
    }
    engine.stop().await;
    gateway.stop().await;
}
