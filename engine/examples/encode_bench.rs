//! Single-core parse + validate + encode speed of `load_chunk` on the original format.
//!
//! Generates 1,000,000 rows the way the original generator did (header, CRLF, day-first dates
//! one second apart from 01/01/2023 00:00:01, 3-decimal amounts in -1000..1000, Deposit or
//! Withdrawal), split like it into 6 files of ~178,800 rows, then times `load_chunk` over all
//! six in memory, with a sink that only counts bytes (no PostgreSQL).
//!
//! `cargo run --release -p engine --example encode_bench [rows] [rounds]`

use std::time::{Duration, Instant};

use engine::dataset::Dataset;
use engine::validate::{load_chunk, ErrorPolicy, Limits, Lineage};
use rand::Rng;

const ROWS_PER_FILE: usize = 178_800;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(7);

    let files = generate(rows);
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

fn generate(rows: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::thread_rng();
    let mut files = Vec::new();
    let start = 1_672_531_200i64; // 2023-01-01 00:00:00
    for first in (0..rows).step_by(ROWS_PER_FILE) {
        let mut csv = String::from("date,content,amount,type\r\n");
        for i in first..(first + ROWS_PER_FILE).min(rows) {
            let secs = start + 1 + i as i64;
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let tod = secs.rem_euclid(86_400);
            let milli = rng.gen_range(-1_000_000..=1_000_000i64);
            let sign = if milli < 0 { "-" } else { "" };
            let kind = if rng.gen::<bool>() {
                "Deposit"
            } else {
                "Withdrawal"
            };
            csv.push_str(&format!(
                "{d:02}/{m:02}/{y} {:02}:{:02}:{:02},Any text there,{sign}{}.{:03},{kind}\r\n",
                tod / 3600,
                tod / 60 % 60,
                tod % 60,
                milli.abs() / 1000,
                milli.abs() % 1000,
            ));
        }
        files.push(csv.into_bytes());
    }
    files
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}
