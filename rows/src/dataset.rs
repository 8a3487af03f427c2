//! The description of a dataset: how its files are written, what a valid row looks like and
//! where it goes.
//!
//! Datasets are defined in TOML files ([`crate::definition`]) and looked up by name in the one
//! [`crate::registry::Registry`] that gateway and engine share. Validation ([`crate::validate`])
//! and encoding ([`crate::pgcopy`]) are driven by this description; [`crate::cell`] checks one
//! cell against its column.
//!
//! A file's columns are matched to the dataset's by the names in its header, in any order
//! ([`Dataset::read_header`] gives the [`Layout`]); a file without a header is read in the
//! declared order.

use std::collections::HashSet;

use simd_csv::ZeroCopyReaderBuilder;

use crate::cell::unquote;
use crate::validate::ErrorPolicy;

/// Lineage columns appended to every loaded row, after the dataset's own columns.
pub const LINEAGE_COLUMNS: [&str; 3] = ["upload_id", "chunk_no", "line_no"];

/// A calendar day (year, month 1-12, day 1-31): what a partition column's cell says, and where
/// a partition starts.
pub type Day = (i32, u32, u32);

/// A dataset: how its files are written, its columns, and the table they are loaded into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The name clients give at upload (`transactions`).
    pub name: String,
    /// The table rows are copied into.
    pub table: String,
    /// The columns, in declared order: the order of a file without a header.
    pub columns: Vec<Column>,
    /// Delimiter, quote, header and text encoding of the dataset's files.
    pub format: Format,
    /// What a header naming a column the dataset does not have means.
    pub extra_columns: ExtraColumns,
    /// How the table is partitioned, if it is.
    pub partition: Option<Partitioning>,
    /// Whether text cells that spreadsheets would run as formulas are refused.
    pub reject_formulas: bool,
    /// The error policy of an upload that does not choose one.
    pub on_error: ErrorPolicy,
    /// Columns (indexes into `columns`) whose values identify a row across uploads.
    pub unique_key: Vec<usize>,
    /// What a row whose unique key is already in the table does.
    pub on_conflict: OnConflict,
    /// The XLSX sheet read for this dataset; the first one when `None`.
    pub sheet: Option<String>,
}

/// How a dataset's files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub delimiter: u8,
    pub quote: u8,
    /// Whether files start with a header record. Without one, columns are in declared order.
    pub header: bool,
    pub encoding: TextEncoding,
}

impl Format {
    /// simd-csv set up for these files: records as they come (no header handling, any number
    /// of cells, so the validator can say what is wrong with a record), this delimiter and quote.
    pub fn tokenizer(&self) -> ZeroCopyReaderBuilder {
        let mut builder = ZeroCopyReaderBuilder::new();
        builder
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .quote(self.quote);
        builder
    }
}

/// The text encoding of a dataset's files; everything is UTF-8 once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    /// Windows-1252, which is also what `latin-1` means here (as in browsers and the WHATWG
    /// Encoding standard): the printable ISO-8859-1 characters are the same bytes.
    Windows1252,
}

impl TextEncoding {
    /// The encoding_rs decoder for a non-UTF-8 encoding.
    pub fn decoder(self) -> Option<&'static encoding_rs::Encoding> {
        match self {
            TextEncoding::Utf8 => None,
            TextEncoding::Windows1252 => Some(encoding_rs::WINDOWS_1252),
        }
    }

    /// `text` in this encoding (for what the gateway writes, e.g. an XLSX sheet as CSV); a
    /// character Windows-1252 lacks becomes an HTML reference (`&#321;`), as encoding_rs does.
    pub fn encode(self, text: &str) -> std::borrow::Cow<'_, [u8]> {
        match self.decoder() {
            None => text.as_bytes().into(),
            Some(encoding) => encoding.encode(text).0,
        }
    }

    /// `bytes` as UTF-8: borrowed when they already are (UTF-8 datasets), converted otherwise.
    pub fn decode(self, bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        match self.decoder() {
            None => bytes.into(),
            Some(encoding) => match encoding.decode_without_bom_handling(bytes).0 {
                std::borrow::Cow::Borrowed(text) => text.as_bytes().into(),
                std::borrow::Cow::Owned(text) => text.into_bytes().into(),
            },
        }
    }
}

/// What a header naming a column the dataset does not have means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraColumns {
    /// The column is skipped.
    Ignore,
    /// The header is refused.
    Refuse,
}

/// What a row whose unique key is already in the table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// The chunk fails, as a plain COPY would.
    Error,
    /// The row is skipped and counted (`INSERT ... ON CONFLICT DO NOTHING`).
    Skip,
}

/// How a table is partitioned: by range of one date or timestamp column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioning {
    /// Index into [`Dataset::columns`].
    pub column: usize,
    pub by: PartitionBy,
}

/// The width of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionBy {
    Month,
    Day,
}

impl PartitionBy {
    /// The first day of the partition holding `day`.
    pub fn start(self, (year, month, day): Day) -> Day {
        match self {
            PartitionBy::Month => (year, month, 1),
            PartitionBy::Day => (year, month, day),
        }
    }

    /// The partition's table name: `<table>_YYYY_MM` or `<table>_YYYY_MM_DD`.
    pub fn table_name(self, table: &str, (year, month, day): Day) -> String {
        match self {
            PartitionBy::Month => format!("{table}_{year:04}_{month:02}"),
            PartitionBy::Day => format!("{table}_{year:04}_{month:02}_{day:02}"),
        }
    }

    /// The partition's start read back from its table name, if `name` is one of `table`'s.
    pub fn parse_table_name(self, name: &str, table: &str) -> Option<Day> {
        let rest = name.strip_prefix(table)?.strip_prefix('_')?;
        let parts: Vec<&str> = rest.split('_').collect();
        let number = |at: usize, width: usize| {
            parts
                .get(at)
                .filter(|p| p.len() == width && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok())
        };
        let (year, month) = (number(0, 4)?, number(1, 2)?);
        let day = match (self, parts.len()) {
            (PartitionBy::Month, 2) => 1,
            (PartitionBy::Day, 3) => number(2, 2)?,
            _ => return None,
        };
        Some((i32::try_from(year).ok()?, month, day))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PartitionBy::Month => "month",
            PartitionBy::Day => "day",
        }
    }
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name in the table.
    pub name: String,
    /// The header names that mean this column (the table name first), matched ignoring case.
    pub headers: Vec<String>,
    /// What a cell must hold.
    pub kind: ColumnKind,
    /// Whether an empty cell (or a missing column) is accepted, as the default or NULL.
    pub nullable: bool,
    /// The default as written in the definition, and as a ready COPY field: what an empty cell
    /// or a column missing from the file loads.
    pub default: Option<(String, Vec<u8>)>,
}

/// What a column's cells hold, and so how they are checked and encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// `text` of at most `max_chars` characters. An unquoted empty cell is NULL, a quoted one
    /// (`""`) the empty string, as in PostgreSQL's CSV COPY (which the original system used).
    Text { max_chars: usize },
    /// `text` restricted to an exact, case-sensitive set of values.
    OneOf(Vec<String>),
    /// `integer` (32 bits).
    Integer,
    /// `bigint` (64 bits).
    BigInt,
    /// `numeric`: a plain decimal (optional sign, digits, optional `.digits`); no exponent,
    /// `NaN` or `Infinity`. `precision` and `scale` as in PostgreSQL's `numeric(p, s)`; an
    /// unconstrained `numeric` when `precision` is `None` (then `scale` bounds the fraction).
    Numeric { precision: Option<u32>, scale: u32 },
    /// `boolean`, from the accepted spellings (lower case; cells are matched ignoring case).
    Boolean {
        truthy: Vec<String>,
        falsy: Vec<String>,
    },
    /// `date`, in one of `formats` (chrono's `strftime` syntax); ISO `%Y-%m-%d` when empty.
    Date { formats: Vec<String> },
    /// `timestamp` without time zone, in one of `formats`; when empty, `DD/MM/YYYY HH:MM:SS`
    /// (day first) or ISO 8601, read by the fast parser of [`crate::values::Timestamp`].
    Timestamp { formats: Vec<String> },
    /// `timestamptz`, in one of `formats` (each with an offset, `%z` or `%:z`); RFC 3339 when
    /// empty. Stored as the instant; partitioned by its UTC day.
    TimestampTz { formats: Vec<String> },
    /// `uuid`, hyphenated or not.
    Uuid,
    /// `jsonb`: any JSON document.
    Json,
}

impl ColumnKind {
    /// The PostgreSQL type of the table column.
    pub fn sql_type(&self) -> String {
        match self {
            ColumnKind::Text { .. } | ColumnKind::OneOf(_) => "text".to_owned(),
            ColumnKind::Integer => "integer".to_owned(),
            ColumnKind::BigInt => "bigint".to_owned(),
            ColumnKind::Numeric {
                precision: Some(precision),
                scale,
            } => format!("numeric({precision},{scale})"),
            ColumnKind::Numeric { .. } => "numeric".to_owned(),
            ColumnKind::Boolean { .. } => "boolean".to_owned(),
            ColumnKind::Date { .. } => "date".to_owned(),
            ColumnKind::Timestamp { .. } => "timestamp without time zone".to_owned(),
            ColumnKind::TimestampTz { .. } => "timestamp with time zone".to_owned(),
            ColumnKind::Uuid => "uuid".to_owned(),
            ColumnKind::Json => "jsonb".to_owned(),
        }
    }

    /// The name a definition file gives this type.
    pub fn type_name(&self) -> &'static str {
        match self {
            ColumnKind::Text { .. } | ColumnKind::OneOf(_) => "text",
            ColumnKind::Integer => "integer",
            ColumnKind::BigInt => "bigint",
            ColumnKind::Numeric { .. } => "numeric",
            ColumnKind::Boolean { .. } => "boolean",
            ColumnKind::Date { .. } => "date",
            ColumnKind::Timestamp { .. } => "timestamp",
            ColumnKind::TimestampTz { .. } => "timestamptz",
            ColumnKind::Uuid => "uuid",
            ColumnKind::Json => "json",
        }
    }

    /// Whether a table can be partitioned by a column of this type.
    pub fn is_temporal(&self) -> bool {
        matches!(
            self,
            ColumnKind::Date { .. } | ColumnKind::Timestamp { .. } | ColumnKind::TimestampTz { .. }
        )
    }
}

/// Where each of a dataset's columns is in the records of a file: read from its header, or
/// the declared order for a file without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// How many cells a record has.
    pub cells: usize,
    /// The columns in the order they are written to COPY: those in the file, in file order,
    /// then those it lacks (written as their default or NULL). Indexes into `columns`.
    pub order: Vec<usize>,
    /// For each entry of `order`, the record cell holding it (`None`: not in the file).
    pub cell_of: Vec<Option<usize>>,
}

/// Why a record that names the dataset's columns cannot be its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the header names column {0:?} twice")]
    Duplicate(String),
    #[error("the header names {0:?}, which is not a column of this dataset")]
    Unknown(String),
    #[error("the header lacks the required column {0:?}")]
    Missing(String),
    #[error("the first record is longer than the {0} bytes read to find the header")]
    TooLong(usize),
}

impl Dataset {
    /// The original system's dataset (`datasets/transactions.toml`, built in).
    pub fn transactions() -> Dataset {
        let registry = crate::registry::Registry::builtin();
        let transactions = registry.get("transactions").expect("built in");
        Dataset::clone(&transactions)
    }

    /// The header line of a file in declared order: `date,content,amount,type`.
    pub fn header_line(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        names.join(&char::from(self.format.delimiter).to_string())
    }

    /// The layout of a file without a header: every column, in declared order.
    pub fn declared_layout(&self) -> Layout {
        let all: Vec<usize> = (0..self.columns.len()).collect();
        Layout {
            cells: all.len(),
            cell_of: all.iter().map(|&i| Some(i)).collect(),
            order: all,
        }
    }

    /// Whether `cells` (as the tokenizer gives them, quotes and all) are a header record, and
    /// if so where each column is. `Ok(None)`: a data record. A record is a header when each
    /// of its cells names a column (ignoring case and surrounding spaces), or when the dataset
    /// has required columns and it names all of them; such a header that names a column twice,
    /// an unknown one (extra columns refused) or lacks a required one is an error.
    pub fn read_header<'c>(
        &self,
        cells: impl Iterator<Item = &'c [u8]>,
    ) -> Result<Option<Layout>, HeaderError> {
        let mut names = Vec::new();
        for cell in cells {
            let Ok(cell) = unquote(cell, self.format.quote) else {
                return Ok(None);
            };
            names.push(String::from_utf8_lossy(cell.value).trim().to_lowercase());
        }
        let found: Vec<Option<usize>> = names.iter().map(|n| self.column_named(n)).collect();
        let required_named = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.nullable && c.default.is_none())
            .all(|(i, _)| found.contains(&Some(i)));
        // Every cell a column name, or every required column named (when there are some): a
        // data row naming a column by chance is not taken for a header.
        let all_named = found.iter().all(Option::is_some);
        let has_required = self
            .columns
            .iter()
            .any(|c| !c.nullable && c.default.is_none());
        if !(all_named || (has_required && required_named)) {
            return Ok(None);
        }
        let ignoring = self.extra_columns == ExtraColumns::Ignore;
        let mut seen = HashSet::new();
        for (name, column) in names.iter().zip(&found) {
            match column {
                Some(i) if !seen.insert(*i) => {
                    return Err(HeaderError::Duplicate(self.columns[*i].name.clone()))
                }
                None if !ignoring => return Err(HeaderError::Unknown(name.clone())),
                _ => {}
            }
        }
        if let Some(missing) = self
            .columns
            .iter()
            .enumerate()
            .find(|(i, c)| !c.nullable && c.default.is_none() && !seen.contains(i))
        {
            return Err(HeaderError::Missing(missing.1.name.clone()));
        }
        let mut order = Vec::with_capacity(self.columns.len());
        let mut cell_of = Vec::with_capacity(self.columns.len());
        for (cell, column) in found.iter().enumerate() {
            if let Some(i) = column {
                order.push(*i);
                cell_of.push(Some(cell));
            }
        }
        for i in (0..self.columns.len()).filter(|i| !seen.contains(i)) {
            order.push(i);
            cell_of.push(None);
        }
        Ok(Some(Layout {
            cells: names.len(),
            order,
            cell_of,
        }))
    }

    /// The layout an upload's recorded header names give (see [`Dataset::header_names`]).
    pub fn layout_of_names(&self, names: &[String]) -> Result<Layout, HeaderError> {
        let cells = names.iter().map(|n| n.as_bytes());
        match self.read_header(cells)? {
            Some(layout) => Ok(layout),
            None => Err(HeaderError::Missing(self.header_line())),
        }
    }

    /// The header names of `layout`, as recorded for an upload: the column's table name for
    /// each cell, an empty name for a cell the layout ignores.
    pub fn header_names(&self, layout: &Layout) -> Vec<String> {
        let mut names = vec![String::new(); layout.cells];
        for (column, cell) in layout.order.iter().zip(&layout.cell_of) {
            if let Some(cell) = cell {
                names[*cell] = self.columns[*column].name.clone();
            }
        }
        names
    }

    fn column_named(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.headers.iter().any(|h| h == name))
    }

    /// The layout of the header a file whose first bytes are `head` starts with, read by the
    /// same tokenizer as validation (so a UTF-8 BOM, CRLF and quoted names count alike), or
    /// `None` when it starts with data. `head` is in the dataset's encoding; `whole` says it is
    /// the whole file, otherwise a first record running to its end may be cut: an error rather
    /// than a guess from part of a header.
    pub fn header_of(&self, head: &[u8], whole: bool) -> Result<Option<Layout>, HeaderError> {
        if !self.format.header {
            return Ok(None);
        }
        let head = self.format.encoding.decode(head);
        let mut reader = self.format.tokenizer().from_reader(&head[..]);
        let cells: Vec<Vec<u8>> = match reader.read_byte_record() {
            Ok(Some(record)) => (0..record.len())
                .map(|i| record.get(i).unwrap_or_default().to_vec())
                .collect(),
            _ => return Ok(None),
        };
        // Ended by a line break inside `head`, or `head` is all there is.
        let end = usize::try_from(reader.position()).unwrap_or(usize::MAX);
        if !whole && end >= head.len() && !head.ends_with(b"\n") {
            return Err(HeaderError::TooLong(head.len()));
        }
        let last = cells.len().saturating_sub(1);
        let cells = cells.iter().enumerate().map(|(i, cell)| {
            // A bare CR where the file ends (a line cut between CR and LF) is a line ending too.
            if i == last {
                cell.strip_suffix(b"\r").unwrap_or(cell)
            } else {
                cell.as_slice()
            }
        });
        self.read_header(cells)
    }

    /// `COPY <table> (<columns in layout order>, upload_id, chunk_no, line_no) FROM STDIN
    /// (FORMAT binary)`, the statement the stream of [`crate::validate::load_chunk`] is for.
    pub fn copy_statement(&self, layout: &Layout) -> String {
        self.copy_statement_into(&self.table, layout)
    }

    /// [`Dataset::copy_statement`] into another table with the same columns (a staging table).
    pub fn copy_statement_into(&self, table: &str, layout: &Layout) -> String {
        let columns: Vec<String> = layout
            .order
            .iter()
            .map(|&i| quote_ident(&self.columns[i].name))
            .chain(LINEAGE_COLUMNS.iter().map(|c| quote_ident(c)))
            .collect();
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            quote_ident(table),
            columns.join(", ")
        )
    }

    /// Number of fields of each COPY tuple: the dataset's columns plus the lineage columns.
    pub fn copy_field_count(&self) -> i16 {
        i16::try_from(self.columns.len() + LINEAGE_COLUMNS.len())
            .expect("a dataset should have fewer than 32,000 columns")
    }

    /// The partition column's name, if the table is partitioned.
    pub fn partition_column(&self) -> Option<&Column> {
        self.partition.map(|p| &self.columns[p.column])
    }
}

/// Quotes an SQL identifier, so column names like `type` or `date` can never clash with
/// keywords.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use crate::registry::Registry;

    use super::*;

    fn transactions() -> std::sync::Arc<Dataset> {
        Registry::builtin()
            .get("transactions")
            .expect("transactions is built in")
    }

    #[test]
    fn a_file_starts_with_the_header_as_the_tokenizer_reads_it() {
        let dataset = transactions();
        for head in [
            &b"date,content,amount,type\n01/01/2023 00:00:00,a,1,Deposit\n"[..],
            b"date,content,amount,type",
            b"\xEF\xBB\xBFdate,content,amount,type\r\nx",
            b"\"date\",\"content\",amount,\"type\"\n",
            b"date,content,amount,type\r",
            b"Date, CONTENT ,amount,type\n",
        ] {
            let layout = dataset.header_of(head, true).expect("a header");
            assert_eq!(layout, Some(dataset.declared_layout()), "{head:?}");
        }
        for head in [
            &b"01/01/2023 00:00:00,a,1,Deposit\n"[..],
            b"date,content,amo",
            b"",
        ] {
            assert_eq!(dataset.header_of(head, true), Ok(None), "{head:?}");
        }
        assert_eq!(
            dataset.header_of(b"date,content,amount\n", true),
            Err(HeaderError::Missing("type".into()))
        );
        assert_eq!(
            dataset.header_of(b"date,content,amount,type,extra\n", true),
            Err(HeaderError::Unknown("extra".into()))
        );
        assert_eq!(
            dataset.header_of(b"date,date,amount,type\n", true),
            Err(HeaderError::Duplicate("date".into()))
        );
        // Part of a file: a first record running to the end of what was read may go on.
        assert_eq!(
            dataset.header_of(b"date,content,amo", false),
            Err(HeaderError::TooLong(16))
        );
        assert!(dataset
            .header_of(b"date,content,amount,type\n01/0", false)
            .is_ok_and(|h| h.is_some()));
    }

    #[test]
    fn a_reordered_header_gives_its_layout_and_statement() {
        let dataset = transactions();
        let layout = dataset
            .header_of(b"type,amount,date\n", true)
            .expect("valid")
            .expect("a header");
        assert_eq!(layout.cells, 3);
        assert_eq!(layout.order, vec![3, 2, 0, 1]);
        assert_eq!(layout.cell_of, vec![Some(0), Some(1), Some(2), None]);
        assert_eq!(
            dataset.copy_statement(&layout),
            "COPY \"transactions\" (\"type\", \"amount\", \"date\", \"content\", \
             \"upload_id\", \"chunk_no\", \"line_no\") FROM STDIN (FORMAT binary)"
        );
        let names = dataset.header_names(&layout);
        assert_eq!(names, ["type", "amount", "date"]);
        assert_eq!(dataset.layout_of_names(&names), Ok(layout));
    }

    #[test]
    fn partition_names_round_trip() {
        for by in [PartitionBy::Month, PartitionBy::Day] {
            let start = by.start((2024, 2, 29));
            let name = by.table_name("t", start);
            assert_eq!(by.parse_table_name(&name, "t"), Some(start), "{name}");
        }
        assert_eq!(
            PartitionBy::Month.table_name("t", (2024, 2, 1)),
            "t_2024_02"
        );
        assert_eq!(PartitionBy::Month.parse_table_name("t_default", "t"), None);
        assert_eq!(
            PartitionBy::Month.parse_table_name("t_2024_02_01", "t"),
            None
        );
        assert_eq!(PartitionBy::Day.parse_table_name("t_2024_02", "t"), None);
        assert_eq!(PartitionBy::Month.parse_table_name("tx_2024_02", "t"), None);
    }
}
