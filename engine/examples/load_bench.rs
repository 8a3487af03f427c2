//! The engine alone against PostgreSQL's own CSV COPY, measured in the same run.
//!
//! Stores N original-format rows as chunk files with their ledger rows (as the gateway would),
//! then measures, on a fresh database:
//! - baseline: `COPY ... FROM STDIN (FORMAT csv, HEADER)` of the same chunks, one connection,
//!   into a table shaped like `transactions` (what `psql \copy` does);
//! - engine: from publishing the chunk messages to the upload being `done`, with an engine
//!   process (in this process) that already owns its partitions.
//!
//! `cargo run --release -p engine --example load_bench -- [rows] [rows_per_chunk] [copy_connections]`

use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::SinkExt;
use ingest_contract::chunk::ChunkMessage;
use ingest_contract::streams::{partition_for, stream_name};
use ingest_runtime::db;
use ingest_testkit as testkit;
use ingest_testkit::rows::original_rows;
use rabbitmq_stream_client::types::Message;

const PARTITIONS: u16 = 4;

#[derive(Parser)]
struct EngineArgs {
    #[command(flatten)]
    settings: engine::EngineSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = ingest_testkit::next_arg(&mut args, 1_000_000)?;
    let per_chunk: u64 = ingest_testkit::next_arg(&mut args, 150_000)?;
    let copy_connections: u16 = ingest_testkit::next_arg(&mut args, 3)?;

    let test_db = testkit::TestDb::new().await?;
    let client = test_db.client().await?;
    let dir = std::env::temp_dir().join(testkit::random_name("ingest-load-bench-"));
    let upload = uuid::Uuid::new_v4();
    std::fs::create_dir_all(dir.join(upload.to_string()))?;
    let chunks = rows.div_ceil(per_chunk) as i32;
    client
        .batch_execute("INSERT INTO api_clients (client_id, secret_hash) VALUES ('bench', 'x')")
        .await?;
    client
        .execute(
            "INSERT INTO uploads (upload_id, client_id, expected_chunks, state) VALUES ($1, 'bench', $2, 'processing')",
            &[&upload, &chunks],
        )
        .await?;
    let mut messages = Vec::new();
    let mut total_bytes = 0u64;
    for n in 0..chunks {
        let first = n as u64 * per_chunk;
        let body = original_rows(first, per_chunk.min(rows - first), true);
        let path = format!("{upload}/{n:08}.csv");
        std::fs::write(dir.join(&path), &body)?;
        total_bytes += body.len() as u64;
        let partition = i32::from(partition_for(upload, n, PARTITIONS));
        client
            .execute(
                "INSERT INTO chunks (upload_id, chunk_no, stored_path, bytes, sha256, has_header, partition)
                 VALUES ($1, $2, $3, $4, '', true, $5)",
                &[&upload, &n, &path, &(body.len() as i64), &partition],
            )
            .await?;
        messages.push(ChunkMessage {
            upload_id: upload,
            chunk_no: n,
            path,
            bytes: body.len() as u64,
            sha256: String::new(),
            dataset: "transactions".into(),
            has_header: true,
            received_at_ms: 0,
        });
    }
    client
        .execute(
            "UPDATE uploads SET chunks_received = $2 WHERE upload_id = $1",
            &[&upload, &chunks],
        )
        .await?;
    println!(
        "{rows} rows in {chunks} chunks, {:.1} MB",
        total_bytes as f64 / 1e6
    );

    let baseline = copy_csv_baseline(&test_db.url, &dir, &messages).await?;
    println!(
        "baseline COPY csv, 1 connection: {:.3} s",
        baseline.as_secs_f64()
    );

    let streams = testkit::TestStreams::new("load-bench-", PARTITIONS);
    let prefix = streams.prefix.clone();
    let settings = EngineArgs::parse_from([
        "engine".to_owned(),
        format!("--database-url={}", test_db.url),
        format!("--upload-dir={}", dir.display()),
        format!("--stream-prefix={prefix}"),
        format!("--partitions={PARTITIONS}"),
        "--addr=127.0.0.1:0".to_owned(),
        format!("--copy-connections={copy_connections}"),
    ])
    .settings;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(engine::run(listener, settings, async {
        let _ = stopped.await;
    }));
    testkit::wait_for(
        "the engine to own its partitions",
        Duration::from_secs(30),
        || async {
            let owned: i64 = client
                .query_one("SELECT count(*) FROM partition_leases", &[])
                .await
                .ok()?
                .get(0);
            (owned == i64::from(PARTITIONS)).then_some(())
        },
    )
    .await;

    // Producers are made before the clock starts (a producer is a broker connection and a
    // declaration, ~100 ms): the clock times the engine, as the gateway makes its own at start.
    let env = testkit::broker().connect().await?;
    let mut producers = Vec::new();
    for partition in 0..PARTITIONS {
        let stream = stream_name(&prefix, partition);
        producers.push((partition, env.producer().build(&stream).await?));
    }
    let started = Instant::now();
    let sends = producers.iter().map(|(partition, producer)| {
        let mine: Vec<&ChunkMessage> = messages
            .iter()
            .filter(|m| partition_for(upload, m.chunk_no, PARTITIONS) == *partition)
            .collect();
        async move {
            for message in mine {
                producer
                    .send_with_confirm(Message::builder().body(message.encode()).build())
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    for sent in futures_util::future::join_all(sends).await {
        sent?;
    }
    testkit::wait_for(
        "the upload to be done",
        Duration::from_secs(600),
        || async {
            let state: String = client
                .query_one("SELECT state FROM uploads WHERE upload_id = $1", &[&upload])
                .await
                .ok()?
                .get(0);
            (state == "done").then_some(())
        },
    )
    .await;
    let engine_time = started.elapsed();
    for (_, producer) in producers {
        producer.close().await?;
    }
    // When each chunk committed, by partition: shows whether the partitions shared the work.
    let commits = client
        .query(
            "SELECT partition, chunk_no,
                    extract(epoch FROM committed_at - min(committed_at) OVER ())::float8
             FROM chunks WHERE upload_id = $1 ORDER BY committed_at",
            &[&upload],
        )
        .await?;
    for row in &commits {
        let (partition, chunk, at): (i32, i32, f64) = (row.get(0), row.get(1), row.get(2));
        println!("  chunk {chunk} on partition {partition} committed at +{at:.3} s");
    }
    let loaded: i64 = client
        .query_one(
            "SELECT count(*) FROM transactions WHERE upload_id = $1",
            &[&upload],
        )
        .await?
        .get(0);
    assert_eq!(loaded as u64, rows, "every row loaded once");
    println!(
        "engine ({copy_connections} COPY connections): {:.3} s  = {:.0} rows/s; baseline {:.0} rows/s; engine/baseline time {:.2}",
        engine_time.as_secs_f64(),
        rows as f64 / engine_time.as_secs_f64(),
        rows as f64 / baseline.as_secs_f64(),
        engine_time.as_secs_f64() / baseline.as_secs_f64()
    );
    let _ = stop.send(());
    engine.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `COPY ... (FORMAT csv, HEADER)` of every chunk, one connection, day-first dates.
async fn copy_csv_baseline(
    url: &str,
    dir: &std::path::Path,
    messages: &[ChunkMessage],
) -> anyhow::Result<Duration> {
    let client = db::connect(url).await?;
    client
        .batch_execute(
            "SET datestyle = 'ISO, DMY';
             CREATE TABLE baseline (LIKE transactions INCLUDING DEFAULTS INCLUDING IDENTITY) PARTITION BY RANGE (date);
             CREATE TABLE baseline_2023_01 PARTITION OF baseline FOR VALUES FROM ('2023-01-01') TO ('2023-02-01');
             CREATE TABLE baseline_default PARTITION OF baseline DEFAULT;",
        )
        .await?;
    let bodies: Vec<bytes::Bytes> = messages
        .iter()
        .map(|m| std::fs::read(dir.join(&m.path)).map(bytes::Bytes::from))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for body in bodies {
        let sink = client
            .copy_in(
                "COPY baseline (date, content, amount, type) FROM STDIN (FORMAT csv, HEADER true)",
            )
            .await?;
        let mut sink = Box::pin(sink);
        for piece in body.chunks(1 << 20) {
            sink.send(body.slice_ref(piece)).await?;
        }
        sink.as_mut().finish().await?;
    }
    Ok(started.elapsed())
}
