//! The original generator's rows, shared by the examples: header, CRLF, day-first dates one
//! second apart from 01/01/2023 00:00:01, 3-decimal amounts in -1000..1000, Deposit or
//! Withdrawal, split like it into files of ~178,800 rows.

use ingest_rows::values::civil_from_days;
use rand::Rng;

const ROWS_PER_FILE: usize = 178_800;

/// `rows` rows as the original's files.
pub fn generate(rows: usize) -> Vec<Vec<u8>> {
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
