//! The description of a dataset's columns: what a valid row looks like, where it goes.
//!
//! Validation ([`crate::validate`]) and encoding ([`crate::pgcopy`]) are driven by this
//! description rather than hard-coded for `transactions`, so a new dataset is a new
//! constructor here plus its table in a migration. [`Column::encode_cell`] is where one cell
//! is checked against its column and written as a COPY field, straight from the tokenizer's
//! bytes; the chunk-level rules (records, header, policies) live in [`crate::validate`].

use simd_csv::ZeroCopyReaderBuilder;

use crate::pgcopy;
use crate::values::{Decimal, Timestamp, TimestampError};

/// Lineage columns appended to every loaded row, after the dataset's own columns.
pub const LINEAGE_COLUMNS: [&str; 3] = ["upload_id", "chunk_no", "line_no"];

/// A dataset: its CSV columns, in file order, and the table they are loaded into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The name clients give at upload (`transactions`).
    pub name: String,
    /// The table rows are copied into.
    pub table: String,
    /// The columns, in the order of the CSV file and of the table's COPY column list.
    pub columns: Vec<Column>,
    /// Index of the timestamp column the table is partitioned by (monthly).
    pub partition_column: Option<usize>,
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name, both in the CSV header and in the table.
    pub name: String,
    /// What a cell must hold.
    pub kind: ColumnKind,
    /// Whether an empty cell is accepted (as NULL); otherwise it is a "missing value".
    pub nullable: bool,
}

/// What a column's cells hold, and so how they are checked and encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// `timestamp`: `DD/MM/YYYY HH:MM:SS` (day first) or ISO 8601 `YYYY-MM-DD[T ]HH:MM:SS`,
    /// optional `.ffffff`, no time zone. See [`crate::values::Timestamp::parse`].
    Timestamp,
    /// `text`: valid UTF-8 of at most `max_chars` characters, no spreadsheet formula prefix.
    /// An unquoted empty cell is NULL, a quoted one (`""`) the empty string, as in
    /// PostgreSQL's CSV COPY (which the original system used).
    Text { max_chars: usize },
    /// `numeric`: a plain decimal (optional sign, digits, optional `.digits`); no exponent,
    /// `NaN` or `Infinity`.
    Decimal {
        max_integer_digits: u32,
        max_scale: u32,
    },
    /// `text` restricted to an exact, case-sensitive set of values.
    OneOf(Vec<String>),
}

impl Column {
    fn new(name: &str, kind: ColumnKind, nullable: bool) -> Column {
        Column {
            name: name.to_owned(),
            kind,
            nullable,
        }
    }

    /// Checks one cell as the tokenizer gave it (quotes and all) and appends it to `out` as a
    /// COPY field; for a timestamp, returns its (year, month). The error is the problem,
    /// without the column name. Two facts known for the whole record or chunk spare scans:
    /// `may_have_quotes` is false when the record holds no `"`, `utf8_checked` is true when the
    /// whole chunk is known to be valid UTF-8.
    pub fn encode_cell(
        &self,
        raw: &[u8],
        may_have_quotes: bool,
        utf8_checked: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<(i32, u32)>, String> {
        let cell = if may_have_quotes {
            unquote(raw)?
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
            if self.nullable {
                pgcopy::write_null(out);
                return Ok(None);
            }
            return Err("missing value".to_owned());
        }
        match &self.kind {
            ColumnKind::Timestamp => {
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
                return Ok(Some((ts.year, ts.month)));
            }
            ColumnKind::Decimal {
                max_integer_digits,
                max_scale,
            } => {
                let decimal = Decimal::parse(value).ok_or("not a decimal")?;
                if decimal.integer.len() > *max_integer_digits as usize {
                    return Err(format!(
                        "more than {max_integer_digits} digits before the decimal point"
                    ));
                }
                if decimal.fraction.len() > *max_scale as usize {
                    return Err(format!(
                        "more than {max_scale} digits after the decimal point"
                    ));
                }
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
                if !utf8_checked && std::str::from_utf8(value).is_err() {
                    return Err("not valid UTF-8".to_owned());
                }
                if starts_like_formula(value) {
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
                    pgcopy::write_text_unescaped(out, value);
                }
            }
        }
        Ok(None)
    }
}

impl Dataset {
    /// The original system's dataset: `date,content,amount,type`, into table `transactions`.
    ///
    /// `content` is nullable (the original table had `content text`): an unquoted empty cell
    /// loads as NULL, a quoted empty cell (`""`) as the empty string.
    pub fn transactions() -> Dataset {
        Dataset {
            name: "transactions".to_owned(),
            table: "transactions".to_owned(),
            columns: vec![
                Column::new("date", ColumnKind::Timestamp, false),
                Column::new("content", ColumnKind::Text { max_chars: 1000 }, true),
                Column::new(
                    "amount",
                    ColumnKind::Decimal {
                        max_integer_digits: 15,
                        max_scale: 6,
                    },
                    false,
                ),
                Column::new(
                    "type",
                    ColumnKind::OneOf(vec!["Deposit".to_owned(), "Withdrawal".to_owned()]),
                    false,
                ),
            ],
            partition_column: Some(0),
        }
    }

    /// The names of the datasets built in, for listing them.
    pub const BUILTIN: &'static [&'static str] = &["transactions"];

    /// The dataset built into the engine under `name`, if any.
    pub fn builtin(name: &str) -> Option<Dataset> {
        match name {
            "transactions" => Some(Dataset::transactions()),
            _ => None,
        }
    }

    /// The header line a file of this dataset may start with: `date,content,amount,type`.
    pub fn header_line(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        names.join(",")
    }

    /// Whether `cells`, as the tokenizer gives them (quotes and all), are this dataset's column
    /// names in order: its header record. The one comparison behind every header check.
    pub fn is_header_record<'c>(
        &self,
        cells: impl ExactSizeIterator<Item = &'c [u8]>,
        ignore_case: bool,
    ) -> bool {
        cells.len() == self.columns.len()
            && cells.zip(&self.columns).all(|(cell, column)| {
                unquote(cell).is_ok_and(|cell| {
                    let name = column.name.as_bytes();
                    cell.value == name || (ignore_case && cell.value.eq_ignore_ascii_case(name))
                })
            })
    }

    /// Whether a file whose first bytes are `head` starts with the header record, read by the
    /// same tokenizer as validation (so a UTF-8 BOM, CRLF and quoted names count alike): what
    /// the gateway records as a chunk's `has_header`. `head` must hold the whole first record.
    pub fn starts_with_header(&self, head: &[u8]) -> bool {
        let mut reader = ZeroCopyReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(head);
        let Ok(Some(record)) = reader.read_byte_record() else {
            return false;
        };
        let last = record.len().saturating_sub(1);
        let cells = (0..record.len()).map(|i| {
            let cell = record.get(i).unwrap_or_default();
            // A bare CR where `head` ends (a line cut between CR and LF) is a line ending too.
            if i == last {
                cell.strip_suffix(b"\r").unwrap_or(cell)
            } else {
                cell
            }
        });
        self.is_header_record(cells, false)
    }

    /// `COPY <table> (<columns>, upload_id, chunk_no, line_no) FROM STDIN (FORMAT binary)`,
    /// the statement the stream written by [`crate::validate::load_chunk`] is meant for.
    pub fn copy_statement(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .chain(LINEAGE_COLUMNS.iter().map(|c| quote_ident(c)))
            .collect();
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            quote_ident(&self.table),
            columns.join(", ")
        )
    }

    /// Number of fields of each COPY tuple: the dataset's columns plus the lineage columns.
    pub fn copy_field_count(&self) -> i16 {
        i16::try_from(self.columns.len() + LINEAGE_COLUMNS.len())
            .expect("a dataset should have fewer than 32,000 columns")
    }
}

/// Quotes an SQL identifier, so column names like `type` or `date` can never clash with
/// keywords.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A cell without its quotes: `value` still has its `""` pairs (`escapes` of them).
pub(crate) struct Cell<'c> {
    pub(crate) value: &'c [u8],
    pub(crate) quoted: bool,
    pub(crate) escapes: usize,
}

/// Checks a cell's RFC 4180 quoting (simd-csv does not) and strips its quotes.
pub(crate) fn unquote(cell: &[u8]) -> Result<Cell<'_>, &'static str> {
    let Some((b'"', rest)) = cell.split_first() else {
        if cell.contains(&b'"') {
            return Err("stray quote in an unquoted field");
        }
        return Ok(Cell {
            value: cell,
            quoted: false,
            escapes: 0,
        });
    };
    // In a quoted cell, `""` is a quote; the first lone quote closes the cell and must end it.
    let (mut escapes, mut at) = (0, 0);
    loop {
        let Some(found) = rest[at..].iter().position(|&b| b == b'"') else {
            return Err("unterminated quoted field");
        };
        let quote = at + found;
        if rest.get(quote + 1) == Some(&b'"') {
            escapes += 1;
            at = quote + 2;
        } else if quote + 1 == rest.len() {
            return Ok(Cell {
                value: &rest[..quote],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_starts_with_the_header_as_the_tokenizer_reads_it() {
        let dataset = Dataset::transactions();
        for head in [
            &b"date,content,amount,type\n01/01/2023 00:00:00,a,1,Deposit\n"[..],
            b"date,content,amount,type",
            b"\xEF\xBB\xBFdate,content,amount,type\r\nx",
            b"\"date\",\"content\",amount,\"type\"\n",
            b"date,content,amount,type\r",
        ] {
            assert!(dataset.starts_with_header(head), "{head:?}");
        }
        for head in [
            &b"01/01/2023 00:00:00,a,1,Deposit\n"[..],
            b"Date,content,amount,type\n",
            b"date,content,amount\n",
            b"date,content,amount,type,extra\n",
            b"date,content,amo",
            b"",
        ] {
            assert!(!dataset.starts_with_header(head), "{head:?}");
        }
    }

    #[test]
    fn transactions_statements() {
        let dataset = Dataset::builtin("transactions").expect("builtin");
        assert_eq!(dataset.header_line(), "date,content,amount,type");
        assert_eq!(
            dataset.copy_statement(),
            "COPY \"transactions\" (\"date\", \"content\", \"amount\", \"type\", \
             \"upload_id\", \"chunk_no\", \"line_no\") FROM STDIN (FORMAT binary)"
        );
        assert_eq!(dataset.copy_field_count(), 7);
        assert!(Dataset::builtin("nope").is_none());
    }
}
