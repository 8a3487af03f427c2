//! The original generator's rows, shared by the examples: header, CRLF, day-first dates one
//! second apart from 01/01/2023 00:00:01, 3-decimal amounts in -1000..1000, Deposit or
//! Withdrawal, split like it into files of ~178,800 rows.

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
