//! The original system's data generator (`tests/data/generator.py`), reproduced.
//!
//! Every file starts with the header `date,content,amount,type`; lines end with CRLF; nothing is
//! quoted. Row `i` (counted across files) is dated `01/01/2023 00:00:00` + `i` seconds, written
//! day first (`%d/%m/%Y %H:%M:%S`); `content` is always `Any text there`; `amount` is uniform in
//! [-1000, 1000) rounded to 3 decimals; `type` is `Deposit` or `Withdrawal` with equal odds.
//! A new file starts when the next row would take the current one past the file size.
//!
//! Amounts are rendered the way Python's `str(round(x, 3))` renders them (the original wrote
//! floats through the csv module): the shortest decimal form, trailing zeros dropped but at least
//! one decimal kept (`-614.568`, `12.5`, `3.0`, and `-0.0` for tiny negatives). For a float
//! rounded to thousandths below 10^4 that is exactly the thousandths with the zeros stripped.
//!
//! Speed matters (the benchmark generates a million rows before every run): the date text is
//! updated in place digit pair by digit pair instead of going through a calendar library, and
//! rows are formatted into a reused buffer.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The header line every generated file starts with.
pub const HEADER: &[u8] = b"date,content,amount,type\r\n";
/// The original's file size: a new file every 9 MiB.
pub const DEFAULT_FILE_SIZE: u64 = 9 * 1024 * 1024;
/// The original's default row count.
pub const DEFAULT_NUM_RECORDS: u64 = 1_000_000;

const CONTENT: &[u8] = b"Any text there";
const WRITE_BUFFER: usize = 1 << 20;

/// Why generation stopped.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot create the output directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Writes `num_records` rows into `out_dir/data_000.csv`, `data_001.csv`, ... (each at most
/// `file_size` bytes unless a single row is larger) and returns the paths in order.
///
/// The same `seed` always gives the same bytes. No file is written for zero rows. Files of an
/// earlier run beyond the ones written now are left alone: use the returned list.
pub fn generate(
    out_dir: &Path,
    num_records: u64,
    file_size: u64,
    seed: u64,
) -> Result<Vec<PathBuf>, GenerateError> {
    std::fs::create_dir_all(out_dir).map_err(|source| GenerateError::CreateDir {
        path: out_dir.to_owned(),
        source,
    })?;
    let mut rows = RowWriter::new(seed);
    let mut files = Vec::new();
    let mut current: Option<OutFile> = None;
    let mut row = Vec::with_capacity(64);
    for _ in 0..num_records {
        row.clear();
        rows.next_row(&mut row);
        let full = current
            .as_ref()
            .is_some_and(|f| f.rows > 0 && f.len + row.len() as u64 > file_size);
        if full || current.is_none() {
            if let Some(done) = current.take() {
                done.finish()?;
            }
            let path = out_dir.join(format!("data_{:03}.csv", files.len()));
            files.push(path.clone());
            current = Some(OutFile::create(path)?);
        }
        current
            .as_mut()
            .expect("a file should be open after the rollover check")
            .write_row(&row)?;
    }
    if let Some(done) = current {
        done.finish()?;
    }
    Ok(files)
}

/// One output file being written, with its size so far.
struct OutFile {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    rows: u64,
}

impl OutFile {
    fn create(path: PathBuf) -> Result<Self, GenerateError> {
        let opened = File::create(&path).and_then(|file| {
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
            out.write_all(HEADER)?;
            Ok(out)
        });
        match opened {
            Ok(out) => Ok(Self {
                path,
                out,
                len: HEADER.len() as u64,
                rows: 0,
            }),
            Err(source) => Err(GenerateError::Write { path, source }),
        }
    }

    fn write_row(&mut self, row: &[u8]) -> Result<(), GenerateError> {
        self.out
            .write_all(row)
            .map_err(|source| self.error(source))?;
        self.len += row.len() as u64;
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<(), GenerateError> {
        self.out.flush().map_err(|source| self.error(source))
    }

    fn error(&self, source: io::Error) -> GenerateError {
        GenerateError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// Produces the rows in order: the clock and the random source.
struct RowWriter {
    clock: Clock,
    rng: StdRng,
}

impl RowWriter {
    fn new(seed: u64) -> Self {
        Self {
            clock: Clock::start(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Appends the next row, CRLF included, and moves the clock on by a second.
    fn next_row(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.clock.text());
        out.push(b',');
        out.extend_from_slice(CONTENT);
        out.push(b',');
        // Python: round(random.uniform(-1000, 1000), 3). Ties cannot be told apart from
        // Python's correctly rounded result at this precision.
        let x: f64 = self.rng.gen_range(-1000.0..1000.0);
        let thousandths = (x * 1000.0).round();
        write_amount(
            out,
            thousandths.is_sign_negative(),
            thousandths.abs() as u32,
        );
        out.push(b',');
        out.extend_from_slice(if self.rng.gen::<bool>() {
            b"Deposit"
        } else {
            b"Withdrawal"
        });
        out.extend_from_slice(b"\r\n");
        self.clock.tick();
    }
}

/// Writes `thousandths / 1000` like Python's `str(float)`: `-12.5`, `3.0`, `0.007`, `-0.0`.
pub fn write_amount(out: &mut Vec<u8>, negative: bool, thousandths: u32) {
    if negative {
        out.push(b'-');
    }
    let whole = thousandths / 1000;
    let mut digits = [0u8; 10];
    let mut n = whole;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
    out.push(b'.');
    let frac = thousandths % 1000;
    let (d1, d2, d3) = (frac / 100, frac / 10 % 10, frac % 10);
    out.push(b'0' + d1 as u8);
    if d3 != 0 {
        out.extend_from_slice(&[b'0' + d2 as u8, b'0' + d3 as u8]);
    } else if d2 != 0 {
        out.push(b'0' + d2 as u8);
    }
}

/// The date text `DD/MM/YYYY HH:MM:SS`, advanced a second at a time by rewriting only the
/// digit pairs that change.
struct Clock {
    text: [u8; 19],
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

// Byte offsets of the fields inside the date text.
const DAY: usize = 0;
const MONTH: usize = 3;
const YEAR: usize = 6;
const HOUR: usize = 11;
const MINUTE: usize = 14;
const SECOND: usize = 17;

impl Clock {
    /// 01/01/2023 00:00:00, where the original started.
    fn start() -> Self {
        Self {
            text: *b"01/01/2023 00:00:00",
            year: 2023,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        }
    }

    fn text(&self) -> &[u8; 19] {
        &self.text
    }

    fn tick(&mut self) {
        self.second += 1;
        if self.second < 60 {
            return self.put2(SECOND, self.second);
        }
        self.second = 0;
        self.put2(SECOND, 0);
        self.minute += 1;
        if self.minute < 60 {
            return self.put2(MINUTE, self.minute);
        }
        self.minute = 0;
        self.put2(MINUTE, 0);
        self.hour += 1;
        if self.hour < 24 {
            return self.put2(HOUR, self.hour);
        }
        self.hour = 0;
        self.put2(HOUR, 0);
        self.day += 1;
        if self.day <= days_in_month(self.year, self.month) {
            return self.put2(DAY, self.day);
        }
        self.day = 1;
        self.put2(DAY, 1);
        self.month += 1;
        if self.month <= 12 {
            return self.put2(MONTH, self.month);
        }
        self.month = 1;
        self.put2(MONTH, 1);
        self.year += 1;
        let y = self.year % 10_000;
        self.put2(YEAR, y / 100);
        self.put2(YEAR + 2, y % 100);
    }

    fn put2(&mut self, at: usize, value: u32) {
        self.text[at] = b'0' + (value / 10) as u8;
        self.text[at + 1] = b'0' + (value % 10) as u8;
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(negative: bool, thousandths: u32) -> String {
        let mut out = Vec::new();
        write_amount(&mut out, negative, thousandths);
        String::from_utf8(out).expect("amounts should be ASCII")
    }

    #[test]
    fn amounts_render_like_python_str_of_a_rounded_float() {
        assert_eq!(amount(true, 614_568), "-614.568");
        assert_eq!(amount(false, 12_500), "12.5");
        assert_eq!(amount(false, 12_050), "12.05");
        assert_eq!(amount(false, 3_000), "3.0");
        assert_eq!(amount(false, 7), "0.007");
        assert_eq!(amount(false, 0), "0.0");
        assert_eq!(amount(true, 0), "-0.0");
        assert_eq!(amount(false, 1_000_000), "1000.0");
        assert_eq!(amount(true, 999_999), "-999.999");
    }

    #[test]
    fn the_clock_rolls_over_minutes_hours_days_months_and_years() {
        let mut clock = Clock::start();
        let text = |c: &Clock| String::from_utf8(c.text().to_vec()).expect("ASCII");
        assert_eq!(text(&clock), "01/01/2023 00:00:00");
        for _ in 0..59 {
            clock.tick();
        }
        assert_eq!(text(&clock), "01/01/2023 00:00:59");
        clock.tick();
        assert_eq!(text(&clock), "01/01/2023 00:01:00");
        // To the last second of January, then over into February.
        for _ in 0..(31 * 86_400 - 61) {
            clock.tick();
        }
        assert_eq!(text(&clock), "31/01/2023 23:59:59");
        clock.tick();
        assert_eq!(text(&clock), "01/02/2023 00:00:00");
        // 2023 is not a leap year: 28 February is followed by 1 March.
        for _ in 0..(28 * 86_400) {
            clock.tick();
        }
        assert_eq!(text(&clock), "01/03/2023 00:00:00");
        let mut clock = Clock {
            text: *b"31/12/2023 23:59:59",
            year: 2023,
            month: 12,
            day: 31,
            hour: 23,
            minute: 59,
            second: 59,
        };
        clock.tick();
        assert_eq!(text(&clock), "01/01/2024 00:00:00");
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }
}
