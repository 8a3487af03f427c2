//! The engine's memory does not grow with the data: chunks near the gateway's size limit, as many
//! at once as the engine COPYs, plus a chunk of two million bad rows, all under 256 MiB of RSS.
//! Whole chunks in memory (4 x 60 MiB) or the bad rows kept as strings (about 250 MB) would each
//! break the bound.

use std::time::Duration;

use crate::support::*;

const ENGINE: &str = env!("CARGO_BIN_EXE_system-engine");
const BIG_CHUNK: usize = 60 << 20;
const BIG_CHUNKS: i32 = 4;
const BAD_ROWS: u64 = 2_000_000;

/// Rows with 900-character contents up to about `bytes`: big chunks of few rows, so the test
/// spends its time on bytes, not on row count. Returns the rows and their count.
fn wide_rows(bytes: usize) -> (Vec<u8>, u64) {
    let content = "wide ".repeat(180);
    let mut out = Vec::with_capacity(bytes + 1024);
    let mut rows = 0u64;
    while out.len() < bytes {
        let second = rows % 86_400;
        let line = format!(
            "02/03/2023 {:02}:{:02}:{:02},{content},{}.25,Deposit\r\n",
            second / 3600,
            second / 60 % 60,
            second % 60,
            rows % 1000,
        );
        out.extend_from_slice(line.as_bytes());
        rows += 1;
    }
    (out, rows)
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

#[tokio::test]
async fn engine_rss_stays_under_256_mib_whatever_the_chunks_hold() {
    let env = TestEnv::new(4).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    // Stored before the engine starts: it finds a big chunk waiting on every partition.
    let mut expected_rows = 0;
    for n in 0..BIG_CHUNKS {
        let (body, rows) = wide_rows(BIG_CHUNK);
        expected_rows += rows;
        assert_eq!(api.put(&folder, n, body).await, 200);
    }
    let bad = "x\n".repeat(BAD_ROWS as usize).into_bytes();
    assert_eq!(api.put(&folder, BIG_CHUNKS, bad).await, 200);
    api.complete(&folder, BIG_CHUNKS + 1).await;

    let engine = EngineProcess::spawn(ENGINE.as_ref(), &env, "memory", &["--copy-connections=4"]);
    let status = api.wait_finished(&folder, Duration::from_secs(300)).await;
    let peak = peak_rss_mib(engine.child.id());
    eprintln!("engine peak RSS: {peak} MiB");
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_loaded"], expected_rows, "{status}");
    assert_eq!(status["rows_rejected"], BAD_ROWS, "{status}");
    let client = env.db.client().await.unwrap();
    let listed: i64 = client
        .query_one("SELECT count(*) FROM rejected_rows", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(listed as u64, BAD_ROWS, "every bad row is listed");
    assert!(peak < 256, "engine peak RSS {peak} MiB");
    env.wait_no_files().await;
}
