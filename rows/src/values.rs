//! Values read from the text of a cell, beside the column types that use them
//! ([`crate::dataset::ColumnKind`]): timestamps, dates, decimals. Stricter than PostgreSQL's own
//! input functions: no exponents, no `NaN` or `Infinity`, real calendar dates only, and a time
//! zone only where the column has one. [`crate::pgcopy`] encodes what these read.
//!
//! The default `timestamp` syntax has a hand-written parser (it is the hot path of the
//! original's dataset); formats a definition names are read with chrono.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};

use crate::dataset::Day;

/// Microseconds per day.
const DAY_MICROS: i64 = 86_400_000_000;
/// Days from 1970-01-01 (the civil-date algorithm's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i64 = 10_957;
/// More digits than any sane decimal; keeps `dscale` and the weight well inside `i16`.
const MAX_DECIMAL_DIGITS: usize = 1000;

/// Why a timestamp's text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampError {
    /// Neither `DD/MM/YYYY HH:MM:SS` nor `YYYY-MM-DD HH:MM:SS`.
    Format,
    /// Well-formed, but no such day (31/02, 13th month, year 0).
    Date,
    /// Well-formed, but no such time of day (25:00:00, 10:61:00).
    Time,
}

/// A timestamp without time zone, as read from a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl Timestamp {
    /// Reads `DD/MM/YYYY HH:MM:SS` (day first, like the original generator) or ISO 8601
    /// `YYYY-MM-DD HH:MM:SS` / `YYYY-MM-DDTHH:MM:SS`; both take an optional `.f` to `.ffffff`.
    /// Every number has its full width: `1/2/2023` is refused rather than guessed at.
    pub fn parse(text: &[u8]) -> Result<Timestamp, TimestampError> {
        if text.len() < 19 {
            return Err(TimestampError::Format);
        }
        let (year, month, day) = match (text[2], text[4], text[10]) {
            (b'/', _, b' ') if text[5] == b'/' => (
                digits(text, 6, 4)?,
                digits(text, 3, 2)?,
                digits(text, 0, 2)?,
            ),
            (_, b'-', b' ' | b'T') if text[7] == b'-' => (
                digits(text, 0, 4)?,
                digits(text, 5, 2)?,
                digits(text, 8, 2)?,
            ),
            _ => return Err(TimestampError::Format),
        };
        if text[13] != b':' || text[16] != b':' {
            return Err(TimestampError::Format);
        }
        let (hour, minute, second) = (
            digits(text, 11, 2)?,
            digits(text, 14, 2)?,
            digits(text, 17, 2)?,
        );
        let micros = fraction_micros(&text[19..])?;
        let year = i32::try_from(year).map_err(|_| TimestampError::Format)?;
        if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(TimestampError::Date);
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(TimestampError::Time);
        }
        Ok(Timestamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        })
    }

    /// Microseconds since 2000-01-01 00:00:00, PostgreSQL's binary `timestamp`.
    pub fn pg_micros(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day) - PG_EPOCH_DAYS;
        let secs = i64::from(self.hour * 3600 + self.minute * 60 + self.second);
        days * DAY_MICROS + secs * 1_000_000 + i64::from(self.micros)
    }
}

/// Reads `width` ASCII digits at `at`.
fn digits(text: &[u8], at: usize, width: usize) -> Result<u32, TimestampError> {
    let field = text.get(at..at + width).ok_or(TimestampError::Format)?;
    field.iter().try_fold(0u32, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + u32::from(b - b'0'))
        } else {
            Err(TimestampError::Format)
        }
    })
}

/// Reads an optional `.` followed by 1 to 6 digits.
fn fraction_micros(rest: &[u8]) -> Result<u32, TimestampError> {
    let Some((&b'.', frac)) = rest.split_first() else {
        return if rest.is_empty() {
            Ok(0)
        } else {
            Err(TimestampError::Format)
        };
    };
    if frac.is_empty() || frac.len() > 6 {
        return Err(TimestampError::Format);
    }
    let value = digits(frac, 0, frac.len())?;
    Ok(value * 10u32.pow(6 - frac.len() as u32))
}

/// Whether `year` has a 29th of February (proleptic Gregorian calendar, as PostgreSQL).
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1-12) of `year`.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`): the inverse of
/// [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = i32::try_from(yoe + era * 400 + i64::from(month <= 2))
        .expect("a day count within i32 years");
    (year, month, day)
}

/// Days since 2000-01-01, PostgreSQL's binary `date`.
pub fn pg_days((year, month, day): Day) -> i32 {
    i32::try_from(days_from_civil(year, month, day) - PG_EPOCH_DAYS)
        .expect("chrono's dates are within +-262,000 years")
}

/// A date in one of `formats` (ISO `%Y-%m-%d` when there are none).
pub fn parse_date(text: &str, formats: &[String]) -> Option<Day> {
    let date = if formats.is_empty() {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
    } else {
        formats
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(text, f).ok())
    }?;
    day_of(date)
}

/// A timestamp without time zone in one of `formats` (the fast default syntax when there are
/// none): its day and PostgreSQL microseconds.
pub fn parse_timestamp(text: &str, formats: &[String]) -> Option<(Day, i64)> {
    if formats.is_empty() {
        let ts = Timestamp::parse(text.as_bytes()).ok()?;
        return Some(((ts.year, ts.month, ts.day), ts.pg_micros()));
    }
    let at = formats
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())?;
    instant(at)
}

/// A timestamp with a time zone offset in one of `formats` (RFC 3339 when there are none):
/// its UTC day and PostgreSQL microseconds (UTC, as `timestamptz` is stored).
pub fn parse_timestamptz(text: &str, formats: &[String]) -> Option<(Day, i64)> {
    let at = if formats.is_empty() {
        DateTime::parse_from_rfc3339(text).ok()
    } else {
        formats
            .iter()
            .find_map(|f| DateTime::parse_from_str(text, f).ok())
    }?;
    instant(at.naive_utc())
}

/// Years 1 to 9999 only, as the fast parser: PostgreSQL has no year 0, partition bounds and
/// names need four digits, and a far year would only be a typo.
fn day_of(date: NaiveDate) -> Option<Day> {
    (1..=9999)
        .contains(&date.year())
        .then(|| (date.year(), date.month(), date.day()))
}

fn instant(at: NaiveDateTime) -> Option<(Day, i64)> {
    let day = day_of(at.date())?;
    let days = days_from_civil(day.0, day.1, day.2) - PG_EPOCH_DAYS;
    // A leap second (`:60`, which chrono keeps as a nanosecond overflow) counts as :59.999999.
    let micros = i64::from(at.nanosecond().min(999_999_999) / 1000);
    let secs = i64::from(at.num_seconds_from_midnight());
    Some((day, days * DAY_MICROS + secs * 1_000_000 + micros))
}

/// A plain decimal as read from a cell: `[+-]digits[.digits]`, borrowed from the cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal<'a> {
    pub negative: bool,
    /// Digits before the point, leading zeros removed (empty for `0.5`).
    pub integer: &'a [u8],
    /// Digits after the point as written, trailing zeros kept: they set the scale, as in
    /// PostgreSQL (`1.50` stays `1.50`).
    pub fraction: &'a [u8],
}

impl<'a> Decimal<'a> {
    /// Reads a plain decimal. Refuses exponents, `NaN`, `Infinity`, spaces, `.5` and `5.`,
    /// and numbers with more than 1000 digits on either side of the point.
    pub fn parse(text: &'a [u8]) -> Option<Decimal<'a>> {
        let (negative, unsigned) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            Some((b'+', rest)) => (false, rest),
            _ => (false, text),
        };
        let (integer, fraction) = match unsigned.iter().position(|&b| b == b'.') {
            Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
            None => (unsigned, &[][..]),
        };
        let has_dot = integer.len() < unsigned.len();
        if integer.is_empty()
            || (has_dot && fraction.is_empty())
            || !integer.iter().all(u8::is_ascii_digit)
            || !fraction.iter().all(u8::is_ascii_digit)
            || integer.len() > MAX_DECIMAL_DIGITS
            || fraction.len() > MAX_DECIMAL_DIGITS
        {
            return None;
        }
        let first_significant = integer
            .iter()
            .position(|&b| b != b'0')
            .unwrap_or(integer.len());
        Some(Decimal {
            negative,
            integer: &integer[first_significant..],
            fraction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_in_named_formats() {
        let iso = |f: &str| vec![f.to_owned()];
        assert_eq!(parse_date("2024-02-29", &[]), Some((2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29", &[]), None);
        assert_eq!(pg_days((2000, 1, 2)), 1);
        assert_eq!(
            parse_date("29.02.2024", &iso("%d.%m.%Y")),
            Some((2024, 2, 29))
        );
        let fast = parse_timestamp("01/02/2023 10:11:12", &[]).expect("valid");
        let named = parse_timestamp("2023/02/01 10.11.12", &iso("%Y/%m/%d %H.%M.%S"));
        assert_eq!(named, Some(fast));
        let utc = parse_timestamptz("2023-02-01T10:11:12Z", &[]).expect("valid");
        assert_eq!(utc, fast);
        let east = parse_timestamptz("2023-02-01T11:11:12+01:00", &[]).expect("valid");
        assert_eq!(east, fast);
        // Just after midnight in Paris is still the day before in UTC.
        let (day, _) = parse_timestamptz("2023-02-01T00:30:00+01:00", &[]).expect("valid");
        assert_eq!(day, (2023, 1, 31));
        assert_eq!(parse_timestamptz("2023-02-01T10:11:12", &[]), None);
        // Years 1 to 9999, also once in UTC.
        assert_eq!(parse_date("0000-06-15", &[]), None);
        assert_eq!(parse_date("+12345-06-15", &[]), None);
        assert_eq!(parse_timestamptz("0001-01-01T00:30:00+01:00", &[]), None);
        assert_eq!(parse_timestamptz("9999-12-31T23:30:00-01:00", &[]), None);
        // `%#z` (chrono: parsing only) takes `Z` as well as an offset.
        let permissive = iso("%Y-%m-%d %H:%M:%S%#z");
        assert_eq!(
            parse_timestamptz("2023-02-01 10:11:12Z", &permissive),
            Some(utc)
        );
        assert_eq!(
            parse_timestamptz("2023-02-01 11:11:12+01:00", &permissive),
            Some(east)
        );
        assert_eq!(
            parse_timestamptz("2023-02-01 11:11:12 +0100", &iso("%Y-%m-%d %H:%M:%S %z"))
                .map(|(_, micros)| micros),
            Some(east.1)
        );
    }

    #[test]
    fn decimal_syntax_is_strict() {
        for bad in [
            "", "-", "+", ".5", "5.", "1e5", "NaN", "inf", " 1", "1 ", "1.2.3", "--1", "1,5",
        ] {
            assert_eq!(Decimal::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_days_and_epoch() {
        for days in [-719_468, -1, 0, 10_957, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), PG_EPOCH_DAYS);
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28),
            1
        );
        let t = Timestamp::parse(b"01/01/2023 00:00:01").expect("valid");
        assert_eq!(t.pg_micros(), (8401 * 86_400 + 1) * 1_000_000);
    }

    #[test]
    fn timestamps_are_day_first_or_iso() {
        let dmy = Timestamp::parse(b"01/02/2023 10:11:12").expect("valid");
        assert_eq!((dmy.year, dmy.month, dmy.day), (2023, 2, 1));
        let iso = Timestamp::parse(b"2023-02-01T10:11:12.5").expect("valid");
        assert_eq!(iso.pg_micros(), dmy.pg_micros() + 500_000);
        assert_eq!(
            Timestamp::parse(b"29/02/2024 00:00:00").map(|t| t.day),
            Ok(29)
        );
        assert_eq!(
            Timestamp::parse(b"29/02/2023 00:00:00"),
            Err(TimestampError::Date)
        );
        assert_eq!(
            Timestamp::parse(b"02/13/2023 00:00:00"),
            Err(TimestampError::Date)
        );
        assert_eq!(
            Timestamp::parse(b"01/01/2023 24:00:00"),
            Err(TimestampError::Time)
        );
        assert_eq!(
            Timestamp::parse(b"2023-01-01 00:00:00+01"),
            Err(TimestampError::Format)
        );
        assert_eq!(
            Timestamp::parse(b"1/1/2023 00:00:00"),
            Err(TimestampError::Format)
        );
    }
}
