//! The tests' one generator of rows in the original's format (`date,content,amount,type`,
//! day-first dates, CRLF), deterministic so that expected sums can be computed from the same
//! rows. (`loadgen generate` is the production generator: the original's random files on disk.)

/// The original's header, without its line end.
pub const HEADER: &str = "date,content,amount,type";

/// `rows` original-format rows starting at second `start` of January 2023 (row `i` is
/// `start + i` seconds after 01/01/2023 00:00:00), with or without the header, CRLF. Amounts
/// are 3-decimal numbers in (-1000, 1000) and a third of the rows are withdrawals.
pub fn original_rows(start: u64, rows: u64, header: bool) -> Vec<u8> {
    let mut out = String::new();
    if header {
        out.push_str(HEADER);
        out.push_str("\r\n");
    }
    for i in start..start + rows {
        let (day, rest) = (i / 86_400, i % 86_400);
        let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
        let amount = (i as i64 * 7919 % 2_000_000) - 1_000_000;
        let kind = if i % 3 == 0 { "Withdrawal" } else { "Deposit" };
        let sign = if amount < 0 { "-" } else { "" };
        let (units, millis) = (amount.abs() / 1000, amount.abs() % 1000);
        out.push_str(&format!(
            "{:02}/01/2023 {h:02}:{m:02}:{s:02},Any text there,{sign}{units}.{millis:03},{kind}\r\n",
            day + 1
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
