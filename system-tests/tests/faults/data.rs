//! The data a fault test uploads, and what must be in the database afterwards.
//!
//! Original-format files (header on top, CRLF, day-first dates), a minute apart from
//! `01/01/2023 00:00`, so a long run crosses many months and the engine creates monthly
//! partitions while faults happen. Every `bad_every`-th row is invalid (an amount `NaN` or the
//! date `31/02/2023`, alternately): the engine must reject exactly those. Amounts are
//! deterministic, so the sum of the loaded amounts proves the right rows landed.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ingest_rows::values::{civil_from_days, days_from_civil};

/// What the uploaded files hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Data rows sent (headers not counted).
    pub rows: u64,
    /// Rows the engine must reject.
    pub rejected: u64,
    /// Sum of the valid rows' amounts, in thousandths.
    pub amount_thousandths: i64,
}

impl Expected {
    /// Rows that must end up in `transactions`.
    pub fn loaded(&self) -> u64 {
        self.rows - self.rejected
    }
}

/// Writes `rows` rows into `files` files under `dir`.
pub fn write_files(dir: &Path, rows: u64, files: u64, bad_every: u64) -> (Vec<PathBuf>, Expected) {
    std::fs::create_dir_all(dir).expect("data directory");
    let mut expected = Expected {
        rows,
        rejected: 0,
        amount_thousandths: 0,
    };
    let per_file = rows.div_ceil(files.max(1));
    let mut paths = Vec::new();
    let mut line = Vec::with_capacity(64);
    for (n, start) in (0..rows).step_by(per_file as usize).enumerate() {
        let path = dir.join(format!("data_{n:03}.csv"));
        let mut out = BufWriter::new(std::fs::File::create(&path).expect("data file"));
        out.write_all(b"date,content,amount,type\r\n").unwrap();
        for i in start..(start + per_file).min(rows) {
            line.clear();
            let bad = bad_every > 0 && i % bad_every == bad_every - 1;
            let amount = amount_thousandths(i);
            if bad && (i / bad_every).is_multiple_of(2) {
                line.extend_from_slice(date(i).as_bytes());
                line.extend_from_slice(b",Any text there,NaN,Deposit\r\n");
            } else if bad {
                line.extend_from_slice(b"31/02/2023 10:00:00,Any text there,");
                line.extend_from_slice(format_amount(amount).as_bytes());
                line.extend_from_slice(b",Deposit\r\n");
            } else {
                let kind = if i % 2 == 0 { "Deposit" } else { "Withdrawal" };
                let row = format!(
                    "{},Any text there,{},{kind}\r\n",
                    date(i),
                    format_amount(amount)
                );
                line.extend_from_slice(row.as_bytes());
                expected.amount_thousandths += amount;
            }
            expected.rejected += u64::from(bad);
            out.write_all(&line).unwrap();
        }
        out.flush().unwrap();
        paths.push(path);
    }
    (paths, expected)
}

/// A deterministic amount in [-1000.000, 1000.000], in thousandths.
fn amount_thousandths(i: u64) -> i64 {
    (i.wrapping_mul(7919) % 2_000_001) as i64 - 1_000_000
}

fn format_amount(thousandths: i64) -> String {
    let sign = if thousandths < 0 { "-" } else { "" };
    let abs = thousandths.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// Row `i`'s date: `i` minutes after 2023-01-01 00:00, day first.
fn date(i: u64) -> String {
    let (days, minute) = (i / 1440, i % 1440);
    let (year, month, day) = civil_from_days(days as i64 + days_from_civil(2023, 1, 1));
    format!(
        "{day:02}/{month:02}/{year} {:02}:{:02}:00",
        minute / 60,
        minute % 60
    )
}

#[test]
fn dates_walk_the_calendar() {
    assert_eq!(date(0), "01/01/2023 00:00:00");
    assert_eq!(date(61), "01/01/2023 01:01:00");
    assert_eq!(date(31 * 1440), "01/02/2023 00:00:00");
    assert_eq!(date(365 * 1440 + 59 * 1440), "29/02/2024 00:00:00");
    assert_eq!(format_amount(-1), "-0.001");
    assert_eq!(format_amount(1_000_000), "1000.000");
}
