//! Validating a CSV chunk against its [`Dataset`] and encoding the good rows for binary COPY.
//!
//! [`load_chunk`] streams the chunk (memory is the tokenizer's read-ahead and a window of about
//! 1 MiB, whatever the chunk's size), checks that it is text at all as the bytes pass, tokenizes
//! it with simd-csv's `ZeroCopyReader`, validates each record and encodes it straight from the
//! tokenizer's byte slices into ~1 MiB COPY buffers.
//!
//! # Policies
//!
//! - **Records.** RFC 4180 quoting; LF, CRLF and mixed line endings; empty lines are skipped and
//!   are not data rows; a last line without a newline is a row. `line_no` is the physical line
//!   (1-based, header included) where the record starts. simd-csv is a tokenizer, not a
//!   validator, so every cell's quoting is checked here: a quote inside an unquoted cell, or a
//!   quoted cell that does not close, rejects the record (an unterminated quote may have merged
//!   the following lines into it: they are reported as that one rejected record).
//! - **Header.** Columns are found by the header names, in any order ([`Dataset::read_header`]);
//!   every chunk of an upload is read with the upload's [`Layout`] (its first header, which the
//!   gateway makes every chunk's header agree with). A first record that is a header is checked
//!   against that layout and skipped; one that names the columns wrongly (twice, unknown, a
//!   required one missing) is rejected with the reason. A different first line is a data row
//!   like any other (so it is rejected, never silently dropped), and a header anywhere else is
//!   rejected as `header line repeated`.
//! - **Encodings.** A Windows-1252 (`latin-1`) dataset's bytes are converted to UTF-8 as they
//!   are read, before the tokenizer; everything below sees UTF-8.
//! - **Empty cells.** An unquoted empty cell is NULL (allowed only in nullable columns), a quoted
//!   empty cell (`""`) is the empty string, as with PostgreSQL's CSV COPY the original used.
//! - **Formula injection.** A text cell starting with `=`, `+`, `@`, a tab or a carriage return,
//!   with `-` followed by a letter, or with `-` and holding a `|` or `(` (`-2+3+cmd|...`), is
//!   rejected (`content: starts with a spreadsheet formula character`): spreadsheets would run
//!   it as a formula when the data is exported and opened, and silently escaping it would change
//!   the data. Numbers such as `-614.568` are decimals,
//!   not text, and are not affected; neither is `- note` or `-5 apples`.
//! - **Not CSV at all.** NUL bytes, a UTF-16 byte order mark, the magic number of a known binary
//!   format (ELF, PNG, ZIP/xlsx, PDF, gzip...), or more than 10% of bytes that are not UTF-8 fail
//!   the chunk with [`ChunkError::NotCsv`]: binary data as soon as its bytes are read (the rows
//!   read so far go with it, nothing of the chunk loads), too much invalid UTF-8 at the end. A
//!   UTF-8 BOM is skipped.
//!   Isolated invalid UTF-8 only rejects the rows it appears in.
//! - **Nothing to load.** When no row passes (empty chunk, header only, every row rejected),
//!   nothing at all goes through the sink: the caller runs COPY only if `rows_loaded > 0`.
//!
//! # Errors
//!
//! Bad rows are data, reported in [`ChunkReport::rejected`]; [`ChunkError`] is for a chunk that
//! cannot be loaded at all. On any error, buffers already sent must be discarded: the caller
//! aborts its COPY (drops the sink) and rolls back.

use std::collections::BTreeSet;
use std::io::{self, Read};

use bytes::Bytes;
use simd_csv::ZeroCopyByteRecord;

use crate::cell::{unquote, CellContext};
use crate::dataset::{Dataset, Day, Layout};
use crate::pgcopy;
use crate::scan::{Tap, UTF8_BOM};

/// A buffer is sent once it holds this much.
const FLUSH_AT: usize = 1 << 20;
/// Room for one more row after `FLUSH_AT`, so buffers never reallocate.
const BUFFER_CAPACITY: usize = FLUSH_AT + (128 << 10);
/// The first buffer's starting size; it grows like any `Vec` if the chunk is bigger.
const FIRST_BUFFER_CAPACITY: usize = 64 << 10;
/// simd-csv's read buffer: how far the tokenizer reads ahead.
const READ_BUFFER: usize = 256 << 10;

/// What to do with a chunk that has bad rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Load the good rows, report the bad ones.
    RejectRows,
    /// Load nothing from a chunk with a bad row.
    RejectChunk,
}

impl ErrorPolicy {
    /// Reads `reject-rows` or `reject-chunk` (the `uploads.on_error` values).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reject-rows" => Some(Self::RejectRows),
            "reject-chunk" => Some(Self::RejectChunk),
            _ => None,
        }
    }

    /// The name [`ErrorPolicy::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RejectRows => "reject-rows",
            Self::RejectChunk => "reject-chunk",
        }
    }
}

/// Size limits applied while validating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest record accepted, in bytes, without its line ending.
    pub max_line_bytes: usize,
    /// How much of a rejected record's text is kept in its [`RejectedRow`].
    pub max_raw_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: 64 << 10,
            max_raw_bytes: 1 << 10,
        }
    }
}

/// Where a chunk comes from; written into every loaded row with its line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lineage {
    pub upload_id: uuid::Uuid,
    pub chunk_no: i32,
}

/// A record that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// Physical line (1-based) where the record starts in the chunk.
    pub line_no: i32,
    /// Why, e.g. `date: "31/02/2023 00:00:00" is not a valid date`.
    pub reason: String,
    /// The record's text, cut at `Limits::max_raw_bytes`, invalid UTF-8 replaced.
    pub raw: String,
}

/// What [`load_chunk`] did with a chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkReport {
    /// Records other than a leading header; `rows_loaded + rows_rejected` under `RejectRows`.
    pub data_rows: u64,
    /// Rows encoded and sent.
    pub rows_loaded: u64,
    /// Rows refused, in line order ([`load_chunk`]; [`load_chunk_into`] hands them out instead).
    pub rejected: Vec<RejectedRow>,
    /// How many rows were refused.
    pub rows_rejected: u64,
    /// Valid rows the table skipped because their unique key was taken: set by the loader of
    /// a dataset with `on_conflict = "skip"` after its insert (they are not in `rows_loaded`).
    pub rows_skipped: u64,
    /// The first day of the partition of each loaded row (empty when not partitioned).
    pub partitions: BTreeSet<Day>,
    /// Size of the chunk read, in bytes.
    pub bytes: u64,
}

/// Why a chunk could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The chunk is not CSV text (binary data, NUL bytes, not UTF-8).
    #[error("not a CSV chunk: {0}")]
    NotCsv(String),
    /// Under `RejectChunk`, the first bad row.
    #[error("chunk rejected: line {}: {}", .0.line_no, .0.reason)]
    RejectedChunk(RejectedRow),
    /// Reading the chunk failed.
    #[error("reading the chunk: {0}")]
    Io(#[from] io::Error),
    /// The sink's receiver went away.
    #[error("the COPY stream was closed by its receiver")]
    SinkClosed,
    /// The rows cannot go where they belong (the database refuses them, or they need more
    /// partitions than a chunk may make): found by the loader, the same for every attempt.
    #[error("{0}")]
    Refused(String),
    /// The rejected rows could not be kept.
    #[error("keeping the rejected rows: {0}")]
    Rejects(io::Error),
}

/// Tokenizes `input` with simd-csv, validates every record against `dataset` with the columns
/// where `layout` says, and sends the rows that pass as PostgreSQL binary COPY data (signature
/// and header first, trailer last), in buffers of about 1 MiB, through `sink`, for
/// [`Dataset::copy_statement`] of the same layout. `sink` returns false
/// when its receiver is gone. Sends nothing when no row passes. Runs synchronously: call it on
/// a blocking thread. The rejected rows are collected in [`ChunkReport::rejected`].
pub fn load_chunk<R: Read>(
    input: R,
    dataset: &Dataset,
    layout: &Layout,
    lineage: Lineage,
    policy: ErrorPolicy,
    limits: &Limits,
    sink: &mut dyn FnMut(Bytes) -> bool,
) -> Result<ChunkReport, ChunkError> {
    let mut rejected = Vec::new();
    let table = Target { dataset, layout };
    let mut report = load_chunk_into(input, table, lineage, policy, limits, sink, &mut |row| {
        rejected.push(row);
        Ok(())
    })?;
    report.rejected = rejected;
    Ok(report)
}

/// [`load_chunk`] handing each rejected row to `reject` instead of keeping it: a chunk can hold
/// millions of them (see [`crate::rejects`]).
pub fn load_chunk_into<R: Read>(
    input: R,
    table: Target,
    lineage: Lineage,
    policy: ErrorPolicy,
    limits: &Limits,
    sink: &mut dyn FnMut(Bytes) -> bool,
    reject: &mut dyn FnMut(RejectedRow) -> io::Result<()>,
) -> Result<ChunkReport, ChunkError> {
    let piece = PieceStart { first_line: 1 };
    load_piece_into(input, table, lineage, piece, policy, limits, sink, reject)
}

/// What a chunk is validated against and loaded into: its dataset, and where the dataset's
/// columns are in the chunk's records.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub dataset: &'a Dataset,
    pub layout: &'a Layout,
}

/// `input` as UTF-8: converted while read for a dataset in another encoding.
pub fn decoded<R: Read>(input: R, dataset: &Dataset) -> Decoded<R> {
    match dataset.format.encoding.decoder() {
        None => Decoded::Utf8(input),
        Some(encoding) => Decoded::Converted(
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding))
                .bom_sniffing(false)
                .build(input),
        ),
    }
}

/// What [`decoded`] reads.
pub enum Decoded<R: Read> {
    Utf8(R),
    Converted(encoding_rs_io::DecodeReaderBytes<R, Vec<u8>>),
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Utf8(input) => input.read(buf),
            Decoded::Converted(input) => input.read(buf),
        }
    }
}

/// Where a piece of a chunk ([`crate::pieces`]) starts: the chunk's physical line its first
/// byte is on (1 for a whole chunk). Only a piece starting on line 1 may begin with the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceStart {
    pub first_line: i32,
}

/// [`load_chunk_into`] for the piece of a chunk that `input` holds: lines are numbered from
/// `piece.first_line`, and a header is only optional on line 1.
#[allow(clippy::too_many_arguments)] // load_chunk_into's, plus where the piece starts
pub fn load_piece_into<R: Read>(
    input: R,
    table: Target,
    lineage: Lineage,
    piece: PieceStart,
    policy: ErrorPolicy,
    limits: &Limits,
    sink: &mut dyn FnMut(Bytes) -> bool,
    reject: &mut dyn FnMut(RejectedRow) -> io::Result<()>,
) -> Result<ChunkReport, ChunkError> {
    let lines_before = usize::try_from(piece.first_line - 1).expect("lines start at 1");
    let Target { dataset, layout } = table;
    let (tap, seen) = Tap::new(decoded(input, dataset));
    // Small at first: most chunks in tests and many real ones are far below one buffer, and the
    // full size is reserved once the first buffer fills.
    let mut out = Vec::with_capacity(FIRST_BUFFER_CAPACITY);
    pgcopy::write_header(&mut out);
    let mut loader = Loader {
        dataset,
        layout,
        lineage,
        policy,
        limits,
        sink,
        reject,
        all_utf8: false,
        out,
        report: ChunkReport::default(),
        last_partition: None,
    };

    let mut reader = dataset
        .format
        .tokenizer()
        .buffer_capacity(READ_BUFFER)
        .from_reader(tap);
    let (mut prev_end, mut newlines) = (0u64, 0usize);
    loop {
        let record = reader.read_byte_record().map_err(io::Error::from)?;
        let mut seen = seen.borrow_mut();
        if let Some(why) = &seen.not_csv {
            return Err(ChunkError::NotCsv(why.clone()));
        }
        let Some(record) = record else {
            seen.finish();
            if let Some(why) = seen.not_csv.take() {
                return Err(ChunkError::NotCsv(why));
            }
            loader.report.bytes = seen.read;
            break;
        };
        // simd-csv skips a BOM and empty lines before a record without saying so: find where
        // the record really starts to number its line.
        let window = seen.since(prev_end);
        let skipped = record_start(window, prev_end == 0);
        let start = prev_end + skipped as u64;
        debug_assert!(window[skipped..].starts_with(record.as_slice()));
        newlines += count_newlines(&window[..skipped]);
        let line_no =
            i32::try_from(lines_before + newlines + 1).expect("the tap bounds the chunk size");
        let len = record.as_slice().len();
        // A chunk cut between CR and LF ends in a bare CR: treat it as a line ending.
        let at_eof = seen.eof && start + len as u64 == seen.read;
        let row = Row {
            record: &record,
            trailing_cr: at_eof && record.as_slice().ends_with(b"\r"),
            // One scan per record instead of one per cell: most records have no quotes at all.
            has_quotes: record.as_slice().contains(&dataset.format.quote),
        };
        let has_quotes = row.has_quotes;
        let first = prev_end == 0 && lines_before == 0;
        loader.all_utf8 = seen.all_utf8();
        // A first record that is a header is the optional header, not a data row.
        match first && dataset.format.header {
            true => loader.first_row(&row, line_no)?,
            false => loader.row(&row, line_no)?,
        }
        let end = reader.position();
        let consumed = usize::try_from(end - prev_end).expect("the record is in the window");
        // Without quotes a record holds no newline but its terminator's.
        let counted_from = if has_quotes { skipped } else { skipped + len };
        newlines += count_newlines(&window[counted_from..consumed]);
        seen.release(end);
        prev_end = end;
    }
    loader.finish()
}

/// Where the record simd-csv returned after `prev_end` starts: after a BOM at the start and
/// after the CRs and LFs it skips (empty lines, and the leading CR it trims from records).
fn record_start(window: &[u8], at_start: bool) -> usize {
    let bom = if at_start && window.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    bom + window[bom..]
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count()
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// A record as validated: simd-csv's cells, minus a bare CR ending the chunk.
struct Row<'r, 'd> {
    record: &'r ZeroCopyByteRecord<'d>,
    trailing_cr: bool,
    has_quotes: bool,
}

impl Row<'_, '_> {
    fn raw(&self) -> &[u8] {
        let raw = self.record.as_slice();
        &raw[..raw.len() - usize::from(self.trailing_cr)]
    }

    fn cell(&self, i: usize) -> &[u8] {
        let cell = self.record.get(i).unwrap_or_default();
        if self.trailing_cr && i + 1 == self.record.len() {
            &cell[..cell.len().saturating_sub(1)]
        } else {
            cell
        }
    }

    fn header(&self, dataset: &Dataset) -> Result<Option<Layout>, crate::dataset::HeaderError> {
        dataset.read_header((0..self.record.len()).map(|i| self.cell(i)))
    }

    /// The first quoting problem of any cell, to explain a record that came out misshapen.
    fn quoting_problem(&self, quote: u8) -> Option<&'static str> {
        (0..self.record.len()).find_map(|i| unquote(self.cell(i), quote).err())
    }
}

/// The state of one [`load_chunk`] call.
struct Loader<'a> {
    dataset: &'a Dataset,
    layout: &'a Layout,
    lineage: Lineage,
    policy: ErrorPolicy,
    limits: &'a Limits,
    sink: &'a mut dyn FnMut(Bytes) -> bool,
    reject: &'a mut dyn FnMut(RejectedRow) -> io::Result<()>,
    all_utf8: bool,
    out: Vec<u8>,
    report: ChunkReport,
    last_partition: Option<Day>,
}

impl Loader<'_> {
    /// The first record of a chunk whose dataset has a header: skipped when it is the header.
    fn first_row(&mut self, row: &Row, line_no: i32) -> Result<(), ChunkError> {
        match row.header(self.dataset) {
            Ok(None) => self.row(row, line_no),
            Ok(Some(layout)) if layout == *self.layout => Ok(()),
            Ok(Some(_)) => {
                self.report.data_rows += 1;
                let expected = self.dataset.header_names(self.layout).join(",");
                let reason = format!("header differs from the upload's first header ({expected})");
                self.reject(line_no, reason, row.raw())
            }
            Err(problem) => {
                self.report.data_rows += 1;
                self.reject(line_no, problem.to_string(), row.raw())
            }
        }
    }

    fn row(&mut self, row: &Row, line_no: i32) -> Result<(), ChunkError> {
        self.report.data_rows += 1;
        let row_start = self.out.len();
        match self.encode_row(row, line_no) {
            Ok(day) => {
                self.report.rows_loaded += 1;
                if let (Some(day), Some(partitioning)) = (day, self.dataset.partition) {
                    let start = partitioning.by.start(day);
                    if self.last_partition != Some(start) {
                        self.report.partitions.insert(start);
                        self.last_partition = Some(start);
                    }
                }
                if self.out.len() >= FLUSH_AT {
                    self.send()?;
                }
                Ok(())
            }
            Err(reason) => {
                self.out.truncate(row_start);
                let reason = match row.header(self.dataset) {
                    Ok(Some(_)) if self.dataset.format.header => "header line repeated".to_owned(),
                    _ => reason,
                };
                self.reject(line_no, reason, row.raw())
            }
        }
    }

    /// Appends the row's COPY tuple, or says why it is invalid (the caller then truncates the
    /// partial tuple). Returns the day of the partition column.
    fn encode_row(&mut self, row: &Row, line_no: i32) -> Result<Option<Day>, String> {
        let dataset = self.dataset;
        let expected = self.layout.cells;
        if row.raw().len() > self.limits.max_line_bytes || row.record.len() != expected {
            let shape = if row.raw().len() > self.limits.max_line_bytes {
                format!("record longer than {} bytes", self.limits.max_line_bytes)
            } else {
                format!("expected {expected} columns, found {}", row.record.len())
            };
            return Err(match row.quoting_problem(dataset.format.quote) {
                Some(problem) => format!("{problem} ({shape})"),
                None => shape,
            });
        }
        pgcopy::begin_row(&mut self.out, dataset.copy_field_count());
        let context = CellContext {
            quote: dataset.format.quote,
            may_have_quotes: row.has_quotes,
            utf8_checked: self.all_utf8,
            reject_formulas: dataset.reject_formulas,
        };
        let partition_column = dataset.partition.map(|p| p.column);
        let mut partition_day = None;
        for (&i, cell) in self.layout.order.iter().zip(&self.layout.cell_of) {
            let column = &dataset.columns[i];
            let day = match cell {
                Some(cell) => column.encode_cell(row.cell(*cell), context, &mut self.out),
                None => column.encode_missing(&mut self.out).map(|()| None),
            }
            .map_err(|problem| format!("{}: {problem}", column.name))?;
            if partition_column == Some(i) {
                partition_day = day;
            }
        }
        pgcopy::write_uuid(&mut self.out, &self.lineage.upload_id);
        pgcopy::write_int4(&mut self.out, self.lineage.chunk_no);
        pgcopy::write_int4(&mut self.out, line_no);
        Ok(partition_day)
    }

    fn reject(&mut self, line_no: i32, reason: String, raw: &[u8]) -> Result<(), ChunkError> {
        let row = RejectedRow {
            line_no,
            reason,
            raw: truncated_text(raw, self.limits.max_raw_bytes),
        };
        match self.policy {
            ErrorPolicy::RejectChunk => Err(ChunkError::RejectedChunk(row)),
            ErrorPolicy::RejectRows => {
                self.report.rows_rejected += 1;
                (self.reject)(row).map_err(ChunkError::Rejects)
            }
        }
    }

    fn send(&mut self) -> Result<(), ChunkError> {
        let full = std::mem::replace(&mut self.out, Vec::with_capacity(BUFFER_CAPACITY));
        if (self.sink)(Bytes::from(full)) {
            Ok(())
        } else {
            Err(ChunkError::SinkClosed)
        }
    }

    fn finish(mut self) -> Result<ChunkReport, ChunkError> {
        if self.report.rows_loaded > 0 {
            pgcopy::write_trailer(&mut self.out);
            self.send()?;
        }
        Ok(self.report)
    }
}

/// `raw` as text of at most `max` bytes, cut on a character boundary.
fn truncated_text(raw: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(&raw[..raw.len().min(max)]).into_owned();
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}
