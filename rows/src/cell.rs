//! One cell checked against its column and written as a COPY field, straight from the
//! tokenizer's bytes. The chunk-level rules (records, header, policies) are in
//! [`crate::validate`]; the values' syntax in [`crate::values`].

use crate::dataset::{Column, ColumnKind, Day};
use crate::pgcopy;
use crate::values::{self, Decimal, Timestamp, TimestampError};

/// Facts known for the whole record or chunk that spare scans of each cell.
#[derive(Debug, Clone, Copy)]
pub struct CellContext {
    /// The dataset's quote character.
    pub quote: u8,
    /// False when the record holds no quote character at all.
    pub may_have_quotes: bool,
    /// True when the whole chunk is known to be valid UTF-8.
    pub utf8_checked: bool,
    /// Whether text cells starting like a spreadsheet formula are refused.
    pub reject_formulas: bool,
}

impl Column {
    /// Checks one cell as the tokenizer gave it (quotes and all) and appends it to `out` as a
    /// COPY field; for a date or timestamp, returns its day (UTC for `timestamptz`). The error
    /// is the problem, without the column name.
    pub fn encode_cell(
        &self,
        raw: &[u8],
        context: CellContext,
        out: &mut Vec<u8>,
    ) -> Result<Option<Day>, String> {
        let cell = if context.may_have_quotes {
            unquote(raw, context.quote)?
        } else {
            Cell {
                value: raw,
                quoted: false,
                escapes: 0,
            }
        };
        let value = cell.value;
        let empty_string = cell.quoted && matches!(self.kind, ColumnKind::Text { .. });
        if value.is_empty() && !empty_string {
            return self.encode_missing(out).map(|()| None);
        }
        match &self.kind {
            ColumnKind::Timestamp { formats } if formats.is_empty() => {
                let ts = Timestamp::parse(value).map_err(|err| {
                    let what = match err {
                        TimestampError::Format => {
                            "is not a timestamp (expected DD/MM/YYYY HH:MM:SS or YYYY-MM-DD HH:MM:SS)"
                        }
                        TimestampError::Date => "is not a valid date",
                        TimestampError::Time => "is not a valid time",
                    };
                    format!("{} {what}", show(value))
                })?;
                pgcopy::write_timestamp(out, ts.pg_micros());
                return Ok(Some((ts.year, ts.month, ts.day)));
            }
            ColumnKind::Numeric { precision, scale } => {
                let decimal = Decimal::parse(value).ok_or("not a decimal")?;
                check_digits(&decimal, *precision, *scale)?;
                pgcopy::write_numeric(out, &decimal);
            }
            ColumnKind::OneOf(options) => {
                if cell.escapes > 0 || !options.iter().any(|o| o.as_bytes() == value) {
                    return Err(format!(
                        "{} is not one of {}",
                        show(value),
                        options.join(", ")
                    ));
                }
                pgcopy::write_text(out, value);
            }
            ColumnKind::Text { max_chars } => {
                if !context.utf8_checked && std::str::from_utf8(value).is_err() {
                    return Err("not valid UTF-8".to_owned());
                }
                if context.reject_formulas && starts_like_formula(value) {
                    return Err("starts with a spreadsheet formula character".to_owned());
                }
                // Bytes bound characters from above: count them only for long cells.
                if value.len() - cell.escapes > *max_chars
                    && count_chars(value) - cell.escapes > *max_chars
                {
                    return Err(format!("longer than {max_chars} characters"));
                }
                if cell.escapes == 0 {
                    pgcopy::write_text(out, value);
                } else {
                    pgcopy::write_text_unescaped(out, value, context.quote);
                }
            }
            other => return encode_typed(other, &unescaped(&cell, context.quote), out),
        }
        Ok(None)
    }

    /// Writes what an empty cell, or a column missing from the file, loads: the default, else
    /// NULL when the column is nullable.
    pub fn encode_missing(&self, out: &mut Vec<u8>) -> Result<(), String> {
        match &self.default {
            Some((_, field)) => out.extend_from_slice(field),
            None if self.nullable => pgcopy::write_null(out),
            None => return Err("missing value".to_owned()),
        }
        Ok(())
    }
}

/// The cell's value with its doubled quotes made single (only the typed columns need it:
/// their values rarely hold quotes at all).
fn unescaped<'c>(cell: &Cell<'c>, quote: u8) -> std::borrow::Cow<'c, [u8]> {
    if cell.escapes == 0 {
        return cell.value.into();
    }
    let mut out = Vec::with_capacity(cell.value.len());
    let mut rest = cell.value;
    while let Some(at) = rest.iter().position(|&b| b == quote) {
        out.extend_from_slice(&rest[..=at]);
        rest = rest.get(at + 2..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    out.into()
}

/// The types read by [`crate::values`] other than the hot ones above.
fn encode_typed(kind: &ColumnKind, value: &[u8], out: &mut Vec<u8>) -> Result<Option<Day>, String> {
    let text = std::str::from_utf8(value).map_err(|_| "not valid UTF-8".to_owned())?;
    let refused = |what: &str| format!("{} is not {what}", show(value));
    match kind {
        ColumnKind::Integer => {
            let number: i32 = text.parse().map_err(|_| refused("an integer"))?;
            pgcopy::write_int4(out, number);
        }
        ColumnKind::BigInt => {
            let number: i64 = text.parse().map_err(|_| refused("an integer"))?;
            pgcopy::write_int8(out, number);
        }
        ColumnKind::Boolean { truthy, falsy } => {
            let lower = text.to_lowercase();
            let truth = if truthy.contains(&lower) {
                true
            } else if falsy.contains(&lower) {
                false
            } else {
                return Err(format!(
                    "{} is not one of {}",
                    show(value),
                    truthy
                        .iter()
                        .chain(falsy)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            pgcopy::write_bool(out, truth);
        }
        ColumnKind::Date { formats } => {
            let date = values::parse_date(text, formats).ok_or_else(|| refused("a valid date"))?;
            pgcopy::write_date(out, values::pg_days(date));
            return Ok(Some(date));
        }
        ColumnKind::Timestamp { formats } => {
            let (day, micros) = values::parse_timestamp(text, formats)
                .ok_or_else(|| refused("a valid timestamp"))?;
            pgcopy::write_timestamp(out, micros);
            return Ok(Some(day));
        }
        ColumnKind::TimestampTz { formats } => {
            let (day, micros) = values::parse_timestamptz(text, formats)
                .ok_or_else(|| refused("a valid timestamp with a time zone offset"))?;
            pgcopy::write_timestamp(out, micros);
            return Ok(Some(day));
        }
        ColumnKind::Uuid => {
            let uuid = uuid::Uuid::try_parse(text).map_err(|_| refused("a UUID"))?;
            pgcopy::write_uuid(out, &uuid);
        }
        ColumnKind::Json => {
            // Parsed whole (not skimmed) so what jsonb refuses is refused here, with the row:
            // lone surrogates, numbers beyond a double, and NUL characters.
            let document: serde_json::Value =
                serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
            if holds_nul(&document) {
                return Err("JSON text holding \\u0000, which jsonb cannot store".to_owned());
            }
            pgcopy::write_jsonb(out, text.as_bytes());
        }
        ColumnKind::Text { .. } | ColumnKind::OneOf(_) | ColumnKind::Numeric { .. } => {
            unreachable!("encoded by Column::encode_cell")
        }
    }
    Ok(None)
}

/// Whether a string or key anywhere in `value` holds a NUL character.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(members) => members
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// Checks a decimal against `numeric(precision, scale)`.
fn check_digits(decimal: &Decimal, precision: Option<u32>, scale: u32) -> Result<(), String> {
    if let Some(precision) = precision {
        let integer_digits = precision - scale;
        if decimal.integer.len() > integer_digits as usize {
            return Err(format!(
                "more than {integer_digits} digits before the decimal point"
            ));
        }
    }
    if decimal.fraction.len() > scale as usize {
        return Err(format!("more than {scale} digits after the decimal point"));
    }
    Ok(())
}

/// A cell without its quotes: `value` still has its doubled quotes (`escapes` of them).
pub(crate) struct Cell<'c> {
    pub(crate) value: &'c [u8],
    pub(crate) quoted: bool,
    pub(crate) escapes: usize,
}

/// Checks a cell's RFC 4180 quoting (simd-csv does not) and strips its quotes.
pub(crate) fn unquote(cell: &[u8], quote: u8) -> Result<Cell<'_>, &'static str> {
    let Some((&first, rest)) = cell.split_first().filter(|(&b, _)| b == quote) else {
        if cell.contains(&quote) {
            return Err("stray quote in an unquoted field");
        }
        return Ok(Cell {
            value: cell,
            quoted: false,
            escapes: 0,
        });
    };
    debug_assert_eq!(first, quote);
    // In a quoted cell, a doubled quote is a quote; the first lone one closes the cell and must
    // end it.
    let (mut escapes, mut at) = (0, 0);
    loop {
        let Some(found) = rest[at..].iter().position(|&b| b == quote) else {
            return Err("unterminated quoted field");
        };
        let end = at + found;
        if rest.get(end + 1) == Some(&quote) {
            escapes += 1;
            at = end + 2;
        } else if end + 1 == rest.len() {
            return Ok(Cell {
                value: &rest[..end],
                quoted: true,
                escapes,
            });
        } else {
            return Err("text after the closing quote");
        }
    }
}

/// The formula-injection rule (see the policies in [`crate::validate`]).
pub fn starts_like_formula(text: &[u8]) -> bool {
    match text {
        [b'=' | b'+' | b'@' | b'\t' | b'\r', ..] => true,
        // `-2+3+cmd|' /C calc'!A0` (DDE) and `-1+HYPERLINK(...)`: a formula after a minus needs a
        // pipe or a call; plain text such as `-5 apples` or `- note` has neither.
        [b'-', rest @ ..] if rest.iter().any(|b| matches!(b, b'|' | b'(')) => true,
        [b'-', next, ..] if next.is_ascii() => next.is_ascii_alphabetic(),
        [b'-', rest @ ..] => std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.chars().next())
            .is_some_and(char::is_alphabetic),
        _ => false,
    }
}

/// Characters of valid UTF-8: every byte but continuation bytes starts one.
fn count_chars(utf8: &[u8]) -> usize {
    utf8.iter().filter(|&&b| (b as i8) >= -0x40).count()
}

/// A cell quoted for a reason, cut to 64 characters.
fn show(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("\"{}...\"", &text[..cut]),
        None => format!("\"{text}\""),
    }
}
