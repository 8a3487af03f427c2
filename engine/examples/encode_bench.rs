//! Single-core parse + validate + encode speed of `load_chunk` on the original format.
//!
//! Generates 1,000,000 original-format rows (`ingest_testkit::rows::original_files`: header,
//! CRLF, day-first dates one second apart, 3-decimal amounts in -1000..1000, Deposit or
//! Withdrawal), split like the original's into 6 files of 178,800 rows, then times `load_chunk` over all
//! six in memory, with a sink that only counts bytes (no PostgreSQL).
//!
//! `cargo run --release -p engine --example encode_bench [rows] [rounds]`

use std::time::{Duration, Instant};

use engine::dataset::Dataset;
use engine::validate::{load_chunk, ErrorPolicy, Limits, Lineage};

use ingest_testkit::rows::original_files;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = ingest_testkit::next_arg(&mut args, 1_000_000)?;
    let rounds: usize = ingest_testkit::next_arg(&mut args, 7)?;

    let files = original_files(rows as u64);
    let total_bytes: usize = files.iter().map(Vec::len).sum();
    let dataset = Dataset::transactions();
    let limits = Limits::default();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let (mut sent, mut loaded) = (0usize, 0u64);
        let started = Instant::now();
        for (chunk_no, file) in files.iter().enumerate() {
            let lineage = Lineage {
                upload_id: uuid::Uuid::new_v4(),
                chunk_no: chunk_no as i32,
            };
            let mut sink = |buf: bytes::Bytes| {
                sent += buf.len();
                true
            };
            let report = load_chunk(
                file.as_slice(),
                &dataset,
                &dataset.declared_layout(),
                lineage,
                ErrorPolicy::RejectRows,
                &limits,
                &mut sink,
            )?;
            loaded += report.rows_loaded;
        }
        times.push(started.elapsed());
        assert_eq!(loaded as usize, rows, "every row should load");
        println!(
            "{rows} rows, {:.1} MB CSV -> {:.1} MB COPY in {:.3} s",
            total_bytes as f64 / 1e6,
            sent as f64 / 1e6,
            times.last().map_or(0.0, Duration::as_secs_f64)
        );
    }
    times.sort();
    let median = times[times.len() / 2].as_secs_f64();
    println!(
        "min {:.3} s, median {median:.3} s ({:.2} M rows/s, {:.0} MB/s of CSV)",
        times[0].as_secs_f64(),
        rows as f64 / median / 1e6,
        total_bytes as f64 / median / 1e6
    );
    Ok(())
}
