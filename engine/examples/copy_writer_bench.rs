//! Our binary COPY encoder against tokio-postgres's `BinaryCopyInWriter`, on the same rows into
//! the same table, one connection, end to end (CSV bytes in memory -> rows in PostgreSQL).
//!
//! - **ours**: `load_chunk` (tokenize, validate, encode into ~1 MiB buffers) on a blocking
//!   thread, the buffers sent through `copy_in` as they come, as the engine does.
//! - **BinaryCopyInWriter**: the same tokenizer and value parsers, no validation (so it does
//!   less), each row's values handed to `BinaryCopyInWriter::write` (one await per row). The
//!   numeric is encoded by our `write_numeric` behind a `ToSql` (tokio-postgres has no numeric
//!   type of its own): what differs is how rows reach the connection.
//!
//! Each round loads the original's 1,000,000 rows (6 files, one COPY each) into a fresh table
//! shaped like `transactions` (not partitioned), alternating the two, and prints both medians
//! and their ratio. The file copy made for the parser thread is inside the timing (a memcpy of
//! 9.6 MB per file, what reading the chunk file costs the engine anyway).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1/ingest_copy_bench cargo run --release -p engine --example copy_writer_bench [rows] [rounds]`

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{pin_mut, SinkExt};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};

use engine::dataset::Dataset;
use engine::pgcopy::write_numeric;
use engine::validate::{load_chunk, ErrorPolicy, Limits, Lineage};
use ingest_rows::values::{Decimal, Timestamp};

use ingest_testkit::rows::original_files;

const TABLE: &str = "CREATE TABLE copy_bench (
    date timestamp NOT NULL, content text, amount numeric NOT NULL, type text NOT NULL,
    upload_id uuid, chunk_no integer, line_no integer)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = ingest_testkit::next_arg(&mut args, 1_000_000)?;
    let rounds: usize = ingest_testkit::next_arg(&mut args, 5)?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/ingest_copy_bench".into());
    ingest_runtime::db::prepare(&url).await?; // Creates the database when missing.
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    let files = original_files(rows as u64);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        fresh_table(&client).await?;
        let took = load_ours(&client, &files).await?;
        check(&client, rows).await?;
        fresh_table(&client).await?;
        let took_writer = load_with_writer(&client, &files).await?;
        check(&client, rows).await?;
        println!(
            "round {round}: ours {:.3} s, BinaryCopyInWriter {:.3} s",
            took.as_secs_f64(),
            took_writer.as_secs_f64()
        );
        ours.push(took);
        theirs.push(took_writer);
    }
    client.batch_execute("DROP TABLE copy_bench").await?;
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    println!(
        "{rows} rows: ours {ours:.3} s ({:.2} M rows/s), BinaryCopyInWriter {theirs:.3} s ({:.2} M rows/s): ours takes {:.2}x its time",
        rows as f64 / ours / 1e6,
        rows as f64 / theirs / 1e6,
        ours / theirs
    );
    Ok(())
}

async fn fresh_table(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS copy_bench; {TABLE}"))
        .await?;
    Ok(())
}

async fn check(client: &Client, rows: usize) -> anyhow::Result<()> {
    let count: i64 = client
        .query_one("SELECT count(*) FROM copy_bench", &[])
        .await?
        .get(0);
    anyhow::ensure!(count as usize == rows, "loaded {count} of {rows} rows");
    Ok(())
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

/// The engine's way: validated and encoded into big buffers on a blocking thread, sent as they
/// come (a queue of 4, as the engine's `COPY_QUEUE`), so parsing and PostgreSQL overlap.
async fn load_ours(client: &Client, files: &[Vec<u8>]) -> anyhow::Result<Duration> {
    let dataset = std::sync::Arc::new(Dataset::transactions());
    let statement = dataset
        .copy_statement(&dataset.declared_layout())
        .replace("\"transactions\"", "copy_bench");
    let started = Instant::now();
    for (chunk_no, file) in files.iter().enumerate() {
        let (sender, mut buffers) = tokio::sync::mpsc::channel::<Bytes>(4);
        let (file, dataset) = (file.clone(), std::sync::Arc::clone(&dataset));
        let parser = tokio::task::spawn_blocking(move || {
            let lineage = Lineage {
                upload_id: uuid::Uuid::new_v4(),
                chunk_no: chunk_no as i32,
            };
            load_chunk(
                file.as_slice(),
                &dataset,
                &dataset.declared_layout(),
                lineage,
                ErrorPolicy::RejectRows,
                &Limits::default(),
                &mut |buffer| sender.blocking_send(buffer).is_ok(),
            )
        });
        let sink = client.copy_in::<_, Bytes>(&statement).await?;
        pin_mut!(sink);
        while let Some(buffer) = buffers.recv().await {
            sink.send(buffer).await?;
        }
        parser.await??;
        sink.finish().await?;
    }
    Ok(started.elapsed())
}

/// A numeric for `BinaryCopyInWriter`, encoded by our `write_numeric` (without its length).
#[derive(Debug)]
struct Numeric<'a>(Decimal<'a>);

impl ToSql for Numeric<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mut field = Vec::with_capacity(24);
        write_numeric(&mut field, &self.0);
        out.put_slice(&field[4..]);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

/// tokio-postgres's way: typed values, one `write` per row.
async fn load_with_writer(client: &Client, files: &[Vec<u8>]) -> anyhow::Result<Duration> {
    let types = [
        Type::TIMESTAMP,
        Type::TEXT,
        Type::NUMERIC,
        Type::TEXT,
        Type::UUID,
        Type::INT4,
        Type::INT4,
    ];
    let started = Instant::now();
    for (chunk_no, file) in files.iter().enumerate() {
        let upload_id = uuid::Uuid::new_v4();
        let chunk_no = chunk_no as i32;
        let sink = client
            .copy_in("COPY copy_bench FROM STDIN (FORMAT binary)")
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        let mut reader = simd_csv::ZeroCopyReaderBuilder::new()
            .has_headers(true)
            .from_reader(file.as_slice());
        let mut line_no = 1i32;
        while let Some(record) = reader.read_byte_record()? {
            line_no += 1;
            let cell = |i: usize| record.get(i).unwrap_or_default();
            let ts = Timestamp::parse(cell(0)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let date =
                UNIX_EPOCH + Duration::from_micros((ts.pg_micros() + 946_684_800_000_000) as u64);
            let content = std::str::from_utf8(cell(1))?;
            let amount = Numeric(Decimal::parse(cell(2)).ok_or_else(|| anyhow::anyhow!("amount"))?);
            let kind = std::str::from_utf8(cell(3).strip_suffix(b"\r").unwrap_or(cell(3)))?;
            let values: [&(dyn ToSql + Sync); 7] = [
                &date as &SystemTime,
                &content,
                &amount,
                &kind,
                &upload_id,
                &chunk_no,
                &line_no,
            ];
            writer.as_mut().write(&values).await?;
        }
        writer.finish().await?;
    }
    Ok(started.elapsed())
}
