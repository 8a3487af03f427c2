//! The tests' one generator of rows in the original's format (`date,content,amount,type`,
//! day-first dates, CRLF), deterministic so that expected sums can be computed from the same
//! rows. (`loadgen generate` is the production generator: the original's random files on disk.)

use ingest_rows::values::civil_from_days;

/// 2023-01-01, in days since 1970-01-01.
const FIRST_DAY: i64 = 19_358;

/// The original's header, without its line end.
pub const HEADER: &str = "date,content,amount,type";

/// `rows` original-format rows starting at second `start` (row `i` is `start + i` seconds after
/// 01/01/2023 00:00:00), with or without the header, CRLF. Amounts are 3-decimal numbers in
/// [-1000, 1000) and a third of the rows are withdrawals.
pub fn original_rows(start: u64, rows: u64, header: bool) -> Vec<u8> {
    let mut out = String::new();
    if header {
        out.push_str(HEADER);
        out.push_str("\r\n");
    }
    for i in start..start + rows {
        let (days, rest) = (i / 86_400, i % 86_400);
        let (year, month, day) = civil_from_days(FIRST_DAY + days as i64);
        let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
        let amount = (i as i64 * 7919 % 2_000_000) - 1_000_000;
        let kind = if i % 3 == 0 { "Withdrawal" } else { "Deposit" };
        let sign = if amount < 0 { "-" } else { "" };
        let (units, millis) = (amount.abs() / 1000, amount.abs() % 1000);
        out.push_str(&format!(
            "{day:02}/{month:02}/{year} {h:02}:{m:02}:{s:02},Any text there,{sign}{units}.{millis:03},{kind}\r\n"
        ));
    }
    out.into_bytes()
}

/// The original's row count per file (its 9 MiB files held about this many).
pub const ROWS_PER_FILE: u64 = 178_800;

/// `rows` rows of [`original_rows`] split like the original's files: [`ROWS_PER_FILE`] rows
/// each, every file with the header.
pub fn original_files(rows: u64) -> Vec<Vec<u8>> {
    (0..rows)
        .step_by(ROWS_PER_FILE as usize)
        .map(|first| original_rows(first, ROWS_PER_FILE.min(rows - first), true))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_seconds_from_new_year_across_months() {
        let first = String::from_utf8(original_rows(0, 1, true)).unwrap();
        assert_eq!(
            first,
            "date,content,amount,type\r\n01/01/2023 00:00:00,Any text there,-1000.000,Withdrawal\r\n"
        );
        let february = String::from_utf8(original_rows(31 * 86_400 + 61, 1, false)).unwrap();
        assert!(february.starts_with("01/02/2023 00:01:01,"), "{february}");
    }
}
