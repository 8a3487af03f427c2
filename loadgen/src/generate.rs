//! The original system's data generator (`tests/data/generator.py`), reproduced.
//!
//! Every file starts with the header `date,content,amount,type`; lines end with CRLF; nothing is
//! quoted. Row `i` (counted across files) is dated `01/01/2023 00:00:00` + `i` seconds, written
//! day first (`%d/%m/%Y %H:%M:%S`); `content` is always `Any text there`; `amount` is uniform in
//! [-1000, 1000) rounded to 3 decimals; `type` is `Deposit` or `Withdrawal` with equal odds.
//! A new file starts when the next row would take the current one past the file size.
//!
//! The original's dates put a million rows into twelve days of one month. Users' files span
//! months, and a monthly partitioned table pays for every month it meets, so
//! [`DateSpread::Months`] spreads the same rows evenly over consecutive months instead (the other
//! columns, and so the random draws, are unchanged).
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

/// The first month of the generated dates, as (year, month): where the original started.
pub const FIRST_MONTH: (i32, u32) = (2023, 1);

/// How the rows' dates advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSpread {
    /// One second per row from `01/01/2023 00:00:00`, as the original generator did.
    EverySecond,
    /// The rows divided evenly over this many consecutive months from January 2023 (month `m`
    /// holds rows `m * rows / months` up to `(m + 1) * rows / months`, so the counts differ by
    /// at most one), and within its month each row `j` of `n` at `j * month_seconds / n`
    /// seconds after midnight of the 1st. Dates still only go forward.
    Months(u32),
}

/// Writes `num_records` rows into `out_dir/data_000.csv`, `data_001.csv`, ... (each at most
/// `file_size` bytes unless a single row is larger) and returns the paths in order; one second
/// per row, as the original did ([`generate_spread`] spreads them over months).
///
/// The same `seed` always gives the same bytes. No file is written for zero rows. Files of an
/// earlier run beyond the ones written now are left alone: use the returned list.
pub fn generate(
    out_dir: &Path,
    num_records: u64,
    file_size: u64,
    seed: u64,
) -> Result<Vec<PathBuf>, GenerateError> {
    generate_spread(
        out_dir,
        num_records,
        file_size,
        seed,
        DateSpread::EverySecond,
    )
}

/// [`generate`], with the dates spread as `spread` says.
pub fn generate_spread(
    out_dir: &Path,
    num_records: u64,
    file_size: u64,
    seed: u64,
    spread: DateSpread,
) -> Result<Vec<PathBuf>, GenerateError> {
    std::fs::create_dir_all(out_dir).map_err(|source| GenerateError::CreateDir {
        path: out_dir.to_owned(),
        source,
    })?;
    let mut rows = RowWriter::new(seed, Dates::new(spread, num_records));
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

/// The months holding at least one of `rows` rows spread as `spread` says, in order, as
/// (year, month): the partitions the rows need.
pub fn months_covered(rows: u64, spread: DateSpread) -> Vec<(i32, u32)> {
    if rows == 0 {
        return Vec::new();
    }
    let (mut year, mut month) = FIRST_MONTH;
    let mut covered = Vec::new();
    match spread {
        DateSpread::EverySecond => {
            // Whole seconds before the last row's date, month by month.
            let mut left = rows - 1;
            loop {
                covered.push((year, month));
                let month_secs = u64::from(days_in_month(year as u32, month)) * 86_400;
                if left < month_secs {
                    return covered;
                }
                left -= month_secs;
                (year, month) = next_month(year, month);
            }
        }
        DateSpread::Months(months) => {
            for m in 0..u64::from(months) {
                if month_start_row(m + 1, rows, months) > month_start_row(m, rows, months) {
                    covered.push((year, month));
                }
                (year, month) = next_month(year, month);
            }
            covered
        }
    }
}

/// The first row of month number `m` (from 0) when `rows` rows are spread over `months`.
fn month_start_row(m: u64, rows: u64, months: u32) -> u64 {
    (u128::from(m) * u128::from(rows) / u128::from(months.max(1))) as u64
}

fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// The date of each row in turn.
enum Dates {
    /// A clock ticking a second per row.
    EverySecond(Clock),
    /// Rows spread over months (see [`DateSpread::Months`]).
    Months(MonthSpread),
}

impl Dates {
    fn new(spread: DateSpread, rows: u64) -> Self {
        match spread {
            DateSpread::EverySecond => Self::EverySecond(Clock::start()),
            DateSpread::Months(months) => Self::Months(MonthSpread::new(rows, months.max(1))),
        }
    }

    /// Appends the next row's date text.
    fn write_next(&mut self, out: &mut Vec<u8>) {
        match self {
            Self::EverySecond(clock) => {
                out.extend_from_slice(clock.text());
                clock.tick();
            }
            Self::Months(spread) => spread.write_next(out),
        }
    }
}

/// Where the spread is: the current month and the row's place in it.
struct MonthSpread {
    rows: u64,
    months: u32,
    /// The current month's number (from 0), calendar month, and its rows and seconds.
    m: u64,
    year: i32,
    month: u32,
    in_month: u64,
    month_secs: u64,
    /// The next row's place in its month.
    j: u64,
    text: [u8; 19],
}

impl MonthSpread {
    fn new(rows: u64, months: u32) -> Self {
        let (year, month) = FIRST_MONTH;
        let mut spread = Self {
            rows,
            months,
            m: 0,
            year,
            month,
            in_month: 0,
            month_secs: 0,
            j: 0,
            text: *b"01/01/2023 00:00:00",
        };
        spread.enter_month();
        spread
    }

    /// Sets the row count and length of month `m` (skipping none: an empty month just has no
    /// rows, and the next call moves past it).
    fn enter_month(&mut self) {
        self.in_month = month_start_row(self.m + 1, self.rows, self.months)
            - month_start_row(self.m, self.rows, self.months);
        self.month_secs = u64::from(days_in_month(self.year as u32, self.month)) * 86_400;
        self.j = 0;
    }

    fn write_next(&mut self, out: &mut Vec<u8>) {
        // Past the last month (more rows asked for than spread): stay in the last one.
        while self.j >= self.in_month && self.m + 1 < u64::from(self.months) {
            self.m += 1;
            (self.year, self.month) = next_month(self.year, self.month);
            self.enter_month();
        }
        let offset = (u128::from(self.j) * u128::from(self.month_secs)
            / u128::from(self.in_month.max(1))) as u64;
        self.j += 1;
        write_date(&mut self.text, self.year, self.month, offset);
        out.extend_from_slice(&self.text);
    }
}

/// Writes `DD/MM/YYYY HH:MM:SS` for `offset` seconds after midnight of the 1st of the month.
fn write_date(text: &mut [u8; 19], year: i32, month: u32, offset: u64) {
    let put2 = |text: &mut [u8; 19], at: usize, value: u64| {
        text[at] = b'0' + (value / 10 % 10) as u8;
        text[at + 1] = b'0' + (value % 10) as u8;
    };
    let y = year.rem_euclid(10_000) as u64;
    put2(text, DAY, 1 + offset / 86_400);
    put2(text, MONTH, u64::from(month));
    put2(text, YEAR, y / 100);
    put2(text, YEAR + 2, y % 100);
    put2(text, HOUR, offset % 86_400 / 3600);
    put2(text, MINUTE, offset % 3600 / 60);
    put2(text, SECOND, offset % 60);
}

/// Produces the rows in order: the dates and the random source.
struct RowWriter {
    dates: Dates,
    rng: StdRng,
}

impl RowWriter {
    fn new(seed: u64, dates: Dates) -> Self {
        Self {
            dates,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Appends the next row, CRLF included.
    fn next_row(&mut self, out: &mut Vec<u8>) {
        self.dates.write_next(out);
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

    /// The dates of `rows` rows spread as `spread` says, as text.
    fn dates(rows: u64, spread: DateSpread) -> Vec<String> {
        let mut dates = Dates::new(spread, rows);
        (0..rows)
            .map(|_| {
                let mut out = Vec::new();
                dates.write_next(&mut out);
                String::from_utf8(out).expect("ASCII")
            })
            .collect()
    }

    /// (year, month) of a `DD/MM/YYYY ...` date.
    fn month_of(date: &str) -> (i32, u32) {
        (
            date[6..10].parse().expect("year"),
            date[3..5].parse().expect("month"),
        )
    }

    /// A `DD/MM/YYYY HH:MM:SS` date as sortable `YYYYMMDDHHMMSS`.
    fn sortable(date: &str) -> String {
        format!(
            "{}{}{}{}",
            &date[6..10],
            &date[3..5],
            &date[..2],
            date[11..].replace(':', "")
        )
    }

    #[test]
    fn months_get_equal_shares_of_the_rows_spread_over_each_month() {
        let all = dates(12_000, DateSpread::Months(12));
        assert_eq!(all[0], "01/01/2023 00:00:00");
        let mut per_month = std::collections::BTreeMap::<(i32, u32), Vec<&str>>::new();
        for date in &all {
            per_month.entry(month_of(date)).or_default().push(date);
        }
        let months: Vec<_> = per_month.keys().copied().collect();
        assert_eq!(months, months_covered(12_000, DateSpread::Months(12)));
        assert_eq!(months.len(), 12);
        assert_eq!(months[11], (2023, 12));
        for (month, rows) in &per_month {
            assert_eq!(rows.len(), 1_000, "{month:?}");
            // Each month starts at its first second and its rows reach into its last day.
            assert!(rows[0].starts_with("01/"), "{month:?}: {}", rows[0]);
            assert!(rows[0].ends_with(" 00:00:00"), "{month:?}: {}", rows[0]);
            let last_day: u32 = rows[999][..2].parse().expect("day");
            assert_eq!(
                last_day,
                days_in_month(month.0 as u32, month.1),
                "{month:?}"
            );
        }
        // Evenly spaced: February's 1,000 rows are 2,419.2 s apart, so 2,419 or 2,420.
        let feb = &per_month[&(2023, 2)];
        assert_eq!(feb[1], "01/02/2023 00:40:19");
        assert_eq!(feb[2], "01/02/2023 01:20:38");
        let sorted: Vec<String> = all.iter().map(|d| sortable(d)).collect();
        assert!(
            sorted.windows(2).all(|w| w[0] < w[1]),
            "dates only go forward"
        );
    }

    #[test]
    fn uneven_counts_differ_by_one_and_leap_years_are_respected() {
        // 10 rows over 3 months: rows 0..3, 3..6, 6..10.
        let counts = |rows: u64, months: u32| {
            let mut counts = std::collections::BTreeMap::<(i32, u32), u64>::new();
            for date in dates(rows, DateSpread::Months(months)) {
                *counts.entry(month_of(&date)).or_default() += 1;
            }
            counts.into_values().collect::<Vec<_>>()
        };
        assert_eq!(counts(10, 3), vec![3, 3, 4]);
        assert_eq!(counts(1_000_000, 15).iter().max(), Some(&66_667));
        assert_eq!(counts(1_000_000, 15).iter().min(), Some(&66_666));
        // Fewer rows than months: some months get none.
        assert_eq!(counts(5, 12), vec![1, 1, 1, 1, 1]);
        assert_eq!(
            months_covered(5, DateSpread::Months(12)),
            vec![(2023, 3), (2023, 5), (2023, 8), (2023, 10), (2023, 12)]
        );
        // Fourteen months reach February 2024, which has 29 days.
        let all = dates(14 * 29 * 24, DateSpread::Months(14));
        let feb: Vec<&String> = all.iter().filter(|d| month_of(d) == (2024, 2)).collect();
        assert_eq!(feb.len(), 29 * 24);
        assert_eq!(feb[feb.len() - 1].as_str(), "29/02/2024 23:00:00");
    }

    #[test]
    fn one_second_per_row_covers_the_months_its_seconds_reach() {
        let january = 31 * 86_400;
        assert_eq!(
            months_covered(1_000_000, DateSpread::EverySecond),
            vec![(2023, 1)]
        );
        assert_eq!(
            months_covered(january, DateSpread::EverySecond),
            vec![(2023, 1)]
        );
        assert_eq!(
            months_covered(january + 1, DateSpread::EverySecond),
            vec![(2023, 1), (2023, 2)]
        );
        assert!(months_covered(0, DateSpread::Months(12)).is_empty());
        let mut every = Dates::new(DateSpread::EverySecond, 3);
        let mut out = Vec::new();
        for _ in 0..3 {
            every.write_next(&mut out);
        }
        assert_eq!(
            out,
            b"01/01/2023 00:00:0001/01/2023 00:00:0101/01/2023 00:00:02"
        );
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
