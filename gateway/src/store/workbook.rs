//! XLSX workbooks, as the original accepted them: a workbook is spooled to a temporary file,
//! checked against decompression bombs, and its first sheet converted to CSV text, which then
//! goes through the same store, validation and binary COPY as any CSV chunk. Read with calamine
//! (a maintained crate), cell by cell from the sheet's XML stream, so the sheet is never held
//! whole; what calamine does hold whole is the shared-strings table, capped below.
//!
//! Limits, all from `INGEST_MAX_CHUNK_BYTES` (64 MiB by default): the workbook as sent, the CSV
//! it converts to, and its shared-strings table once decompressed are each capped by it; all its
//! members together may expand to [`EXPANSION`] times it (real workbooks are XML compressed
//! about 10x; a zip bomb expands a thousandfold). Memory per conversion: the shared strings (at
//! most the cap of XML, about as much again as strings) plus small buffers; at most
//! [`CONVERSIONS_AT_ONCE`] run per gateway.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use calamine::{DataRef, Reader, Xlsx};

use ingest_rows::dataset::{Dataset, Format};

use super::{ChunkRules, ChunkSink, StoreError, StoredChunk};

/// The content type of an XLSX workbook.
pub const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
/// Workbooks converted at once per gateway (each holds its shared strings in memory).
pub const CONVERSIONS_AT_ONCE: usize = 2;
/// What all the workbook's members may expand to, in multiples of the size cap.
const EXPANSION: u64 = 32;
/// Members of a workbook: a few per sheet.
const MAX_MEMBERS: usize = 10_000;
/// The date format written for date cells: the builtin `transactions` dataset's (day first).
const DATE_FORMAT: &str = "%d/%m/%Y %H:%M:%S";

/// Why a workbook was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkbookError {
    #[error("not an XLSX workbook: {0}")]
    NotWorkbook(String),
    #[error("the workbook is too large once decompressed: {0}")]
    TooLarge(String),
    #[error("the workbook has no sheet")]
    NoSheet,
    #[error("the workbook has no sheet named {0:?} (the dataset's `sheet`)")]
    NoSheetNamed(String),
    #[error("the sheet is larger than {0} bytes as CSV")]
    CsvTooLarge(u64),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Converts the dataset's sheet of workbook `xlsx` (the one it names, else the first) to CSV in
/// `csv`, written as the dataset's files are (delimiter, quote, encoding; rows as `\n`-ended
/// records, the first row being the header), refusing more than `max_csv_bytes` of it. Returns
/// the rows. The workbook is an open file, not a path: one that waited long for a conversion
/// slot may have been unlinked by the orphan sweep meanwhile, and is read all the same.
pub fn to_csv(
    xlsx: File,
    csv: &Path,
    max_csv_bytes: u64,
    dataset: &Dataset,
) -> Result<u64, WorkbookError> {
    // Both readers seek before they read (a zip is read from its end), so sharing the offset
    // of one open file is safe.
    check_expansion(xlsx.try_clone()?, max_csv_bytes)?;
    let mut workbook: Xlsx<_> = Xlsx::new(BufReader::new(xlsx))
        .map_err(|err| WorkbookError::NotWorkbook(err.to_string()))?;
    let names = workbook.sheet_names();
    let sheet = match &dataset.sheet {
        Some(wanted) => names
            .iter()
            .find(|name| *name == wanted)
            .cloned()
            .ok_or_else(|| WorkbookError::NoSheetNamed(wanted.clone()))?,
        None => names.first().cloned().ok_or(WorkbookError::NoSheet)?,
    };
    let mut cells = workbook
        .worksheet_cells_reader(&sheet)
        .map_err(|err| WorkbookError::NotWorkbook(err.to_string()))?;
    let mut out = CappedWriter {
        inner: BufWriter::new(File::create(csv)?),
        written: 0,
        max: max_csv_bytes,
        format: dataset.format,
    };
    let mut row: Option<u32> = None;
    let mut fields: Vec<String> = Vec::new();
    // The row is held until it is complete: its size counts against the cap as it grows, so
    // cells repeating one long shared string cannot build a huge row in memory.
    let mut row_bytes = 0u64;
    let mut rows = 0;
    while let Some(cell) = cells
        .next_cell()
        .map_err(|err| WorkbookError::NotWorkbook(err.to_string()))?
    {
        let (at_row, column) = cell.get_position();
        if row != Some(at_row) {
            if row.is_some() {
                record(&mut out, &fields)?;
                rows += 1;
            }
            row = Some(at_row);
            fields.clear();
            row_bytes = 0;
        }
        let column = column as usize;
        if column >= fields.len() {
            if column > 16_384 {
                return Err(WorkbookError::NotWorkbook(format!(
                    "column {column} is past Excel's last"
                )));
            }
            fields.resize(column + 1, String::new());
        }
        let value = text(cell.get_value());
        row_bytes += value.len() as u64 + 1;
        if out.written + row_bytes > max_csv_bytes {
            return Err(WorkbookError::CsvTooLarge(max_csv_bytes));
        }
        fields[column] = value;
    }
    if row.is_some() {
        record(&mut out, &fields)?;
        rows += 1;
    }
    out.inner.flush()?;
    out.inner.get_ref().sync_all()?;
    Ok(rows)
}

/// Decompresses every member once, measuring (declared sizes can lie), before calamine reads
/// any, and refuses what would make calamine allocate beyond the caps:
/// - a shared-strings table (calamine reads it whole; any member so named, as calamine finds it
///   through the package's relationships) past `cap`, or one whose `count`/`uniqueCount` claims
///   more strings than its bytes can hold (calamine reserves room for that many up front);
/// - a text node (a cell's text, which calamine allocates whole) longer than `cap`;
/// - all members together past [`EXPANSION`] times `cap`.
fn check_expansion(file: File, cap: u64) -> Result<(), WorkbookError> {
    let max_expanded = cap.saturating_mul(EXPANSION);
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|err| WorkbookError::NotWorkbook(err.to_string()))?;
    if archive.len() > MAX_MEMBERS {
        return Err(WorkbookError::NotWorkbook(format!(
            "{} members",
            archive.len()
        )));
    }
    let mut total = 0u64;
    for index in 0..archive.len() {
        let member = archive
            .by_index(index)
            .map_err(|err| WorkbookError::NotWorkbook(err.to_string()))?;
        let name = member
            .name()
            .map_err(|err| WorkbookError::NotWorkbook(err.to_string()))?
            .into_owned();
        let shared_strings = name
            .replace('\\', "/")
            .to_ascii_lowercase()
            .ends_with("sharedstrings.xml");
        let left = max_expanded.saturating_sub(total);
        let limit = if shared_strings { cap.min(left) } else { left };
        let mut measure = Measure::default();
        io::copy(&mut member.take(limit + 1), &mut measure)
            .map_err(|err| WorkbookError::NotWorkbook(format!("{name}: {err}")))?;
        if measure.bytes > limit {
            return Err(WorkbookError::TooLarge(format!(
                "{name} expands beyond the {limit} bytes allowed"
            )));
        }
        if measure.longest_text > cap {
            return Err(WorkbookError::TooLarge(format!(
                "{name} holds a text of more than {cap} bytes"
            )));
        }
        if shared_strings {
            check_string_count(&name, &measure.head, measure.bytes)?;
        }
        total += measure.bytes;
    }
    Ok(())
}

/// The `count` and `uniqueCount` of a shared-strings table's `<sst>` tag must fit its size: each
/// string takes at least `<si></si>` (9 bytes).
fn check_string_count(name: &str, head: &[u8], bytes: u64) -> Result<(), WorkbookError> {
    let head = String::from_utf8_lossy(head);
    let Some(tag) = head.find("<sst").map(|at| &head[at..]) else {
        return Ok(());
    };
    let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
    for attribute in ["count=\"", "uniqueCount=\""] {
        let claimed = tag
            .match_indices(attribute)
            .filter(|(at, _)| tag[..*at].ends_with(' '))
            .filter_map(|(at, found)| {
                let value = &tag[at + found.len()..];
                value[..value.find('"')?].trim().parse::<u64>().ok()
            })
            .max();
        if claimed.is_some_and(|n| n > bytes / 9 + 1) {
            return Err(WorkbookError::NotWorkbook(format!(
                "{name} claims more strings than it holds"
            )));
        }
    }
    Ok(())
}

/// A sink that measures what it is given: its size, its first bytes and its longest run without
/// a `<` (the longest text node or attribute).
#[derive(Default)]
struct Measure {
    bytes: u64,
    head: Vec<u8>,
    run: u64,
    longest_text: u64,
}

impl Write for Measure {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.head.len() < 4096 {
            let take = (4096 - self.head.len()).min(buf.len());
            self.head.extend_from_slice(&buf[..take]);
        }
        let mut rest = buf;
        while let Some(at) = memchr::memchr(b'<', rest) {
            self.longest_text = self.longest_text.max(self.run + at as u64);
            self.run = 0;
            rest = &rest[at + 1..];
        }
        self.run += rest.len() as u64;
        self.longest_text = self.longest_text.max(self.run);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A cell as CSV text. Dates in the builtin dataset's format; numbers as Rust prints them
/// (shortest exact form, integers without a fraction); errors as Excel shows them (`#DIV/0!`),
/// which validation then rejects with the row.
fn text(value: &DataRef<'_>) -> String {
    match value {
        DataRef::Empty => String::new(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_owned(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(date) => match date.as_datetime() {
            Some(at) => at.format(DATE_FORMAT).to_string(),
            None => date.as_f64().to_string(),
        },
        DataRef::Error(err) => format!("#{err}"),
    }
}

/// Writes one record, the cap's refusal as [`WorkbookError::CsvTooLarge`].
fn record<W: Write>(out: &mut CappedWriter<W>, fields: &[String]) -> Result<(), WorkbookError> {
    let (max, format) = (out.max, out.format);
    write_record(out, fields, format).map_err(|err| match err.kind() {
        io::ErrorKind::FileTooLarge => WorkbookError::CsvTooLarge(max),
        _ => WorkbookError::Io(err),
    })
}

/// Writes `fields` as one CSV record in `format`, quoting what needs it (RFC 4180). In a
/// Windows-1252 dataset each field is encoded first (a character that encoding lacks becomes an
/// HTML reference, `&#321;`, as encoding_rs writes it) and quoted by what it holds then: the `;`
/// of such a reference must not split the cell.
fn write_record(out: &mut impl Write, fields: &[String], format: Format) -> io::Result<()> {
    let (delimiter, quote) = (format.delimiter, format.quote);
    let mut line = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(delimiter);
        }
        let field = format.encoding.encode(field);
        if field
            .iter()
            .any(|&b| [delimiter, quote, b'\n', b'\r'].contains(&b))
        {
            line.push(quote);
            for &b in field.iter() {
                line.push(b);
                if b == quote {
                    line.push(quote);
                }
            }
            line.push(quote);
        } else {
            line.extend_from_slice(&field);
        }
    }
    line.push(b'\n');
    out.write_all(&line)
}

/// A writer that fails once more than `max` bytes went through it.
struct CappedWriter<W> {
    inner: W,
    written: u64,
    max: u64,
    /// How the dataset's files are written.
    format: Format,
}

impl<W: Write> Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.max {
            // Told apart from other write errors by its kind (see `write_record`'s caller).
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "CSV cap"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A workbook body being spooled to `<dir>/.<nonce>.xlsx.part`, hashed as it comes. Used like
/// [`ChunkSink`]: frames are pushed until one is refused, and [`Self::finish`] says why.
pub struct WorkbookSink {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    file: tokio::fs::File,
    bytes: u64,
    /// What the converted CSV must satisfy; its checksums are of the workbook as sent.
    rules: ChunkRules,
    md5: md5::Md5,
    sha256: sha2::Sha256,
    refused: Option<StoreError>,
}

impl WorkbookSink {
    pub async fn start(dir: std::path::PathBuf, rules: ChunkRules) -> Result<Self, StoreError> {
        use sha2::Digest;
        let path = dir.join(format!(".{}.xlsx.part", uuid::Uuid::new_v4().simple()));
        let file = super::create_in_upload_dir(&dir, &path).await?;
        Ok(Self {
            dir,
            path,
            file: tokio::fs::File::from_std(file),
            bytes: 0,
            rules,
            md5: md5::Md5::new(),
            sha256: sha2::Sha256::new(),
            refused: None,
        })
    }

    /// Appends one body frame; `false` once the workbook is refused (past
    /// `INGEST_MAX_CHUNK_BYTES`, or the disk failed): [`Self::finish`] then says why.
    pub async fn push(&mut self, frame: &[u8]) -> bool {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        if self.refused.is_some() {
            return false;
        }
        self.bytes += frame.len() as u64;
        if self.bytes > self.rules.max_bytes {
            self.refused = Some(StoreError::TooLarge(self.rules.max_bytes));
            return false;
        }
        self.md5.update(frame);
        self.sha256.update(frame);
        if let Err(err) = self.file.write_all(frame).await {
            self.refused = Some(err.into());
            return false;
        }
        true
    }

    /// Checks the workbook's checksums (of the bytes as sent), converts its first sheet to CSV
    /// and stores that as the chunk, under the rules (the header, the size cap). Removes every
    /// temporary file but the stored chunk's.
    pub async fn finish(self) -> Result<StoredChunk, StoreError> {
        use sha2::Digest;
        let Self {
            dir,
            path,
            file,
            mut rules,
            md5,
            sha256,
            refused,
            ..
        } = self;
        if let Some(err) = refused {
            drop(file);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(err);
        }
        let (expect_md5, expect_sha256) = (rules.expect_md5, rules.expect_sha256);
        // tokio's File hands writes to a blocking thread: the last one may still be in flight
        // until flushed, and the converter would read a truncated workbook (seen under load).
        let mut file = file;
        let flushed = {
            use tokio::io::AsyncWriteExt;
            file.flush().await
        };
        drop(file);
        if let Err(err) = flushed {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(err.into());
        }
        let csv = dir.join(format!(".{}.csv.part", uuid::Uuid::new_v4().simple()));
        let stored = async {
            if expect_md5.is_some_and(|want| md5.finalize()[..] != want[..]) {
                return Err(StoreError::ChecksumMismatch("MD5"));
            }
            if expect_sha256.is_some_and(|want| sha256.finalize()[..] != want[..]) {
                return Err(StoreError::ChecksumMismatch("SHA-256"));
            }
            // Opened before the wait: a file untouched that long is one the orphan sweep
            // removes, and an open file stays readable.
            let workbook = tokio::fs::File::open(&path).await?.into_std().await;
            let _permit = permits()
                .acquire()
                .await
                .expect("the conversion semaphore is never closed");
            let (to, max) = (csv.clone(), rules.max_bytes);
            let dataset = Arc::clone(&rules.dataset);
            tokio::task::spawn_blocking(move || to_csv(workbook, &to, max, &dataset))
                .await
                .map_err(io::Error::other)??;
            // The CSV goes through the same checks as a CSV body (text, header, size).
            rules.expect_md5 = None;
            rules.expect_sha256 = None;
            rules.encoding = super::BodyEncoding::Identity;
            let sink = ChunkSink::start(dir.clone(), rules, None).await?;
            let mut reader = tokio::fs::File::open(&csv).await?;
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                use tokio::io::AsyncReadExt;
                let read = reader.read(&mut buffer).await?;
                if read == 0
                    || !sink
                        .push(bytes::Bytes::copy_from_slice(&buffer[..read]))
                        .await
                {
                    break;
                }
            }
            sink.finish().await
        }
        .await;
        let _ = tokio::fs::remove_file(&path).await;
        let _ = tokio::fs::remove_file(&csv).await;
        stored
    }

    /// Abandons the body: its file goes.
    pub async fn abort(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

fn permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(CONVERSIONS_AT_ONCE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_testkit::xlsx::{workbook, Cell};

    /// A workbook whose file the orphan sweep removed while it waited for a conversion slot is
    /// converted all the same: the conversion reads the file opened before the wait.
    #[test]
    fn a_workbook_unlinked_while_it_waited_is_converted() {
        let dir = std::env::temp_dir().join(ingest_testkit::random_name("ingest-workbook-"));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (xlsx, csv) = (dir.join(".w.xlsx.part"), dir.join("w.csv"));
        let rows = [
            ["date", "content", "amount", "type"]
                .map(Cell::Text)
                .to_vec(),
            vec![
                Cell::Text("01/02/2023 00:00:01"),
                Cell::Text("a"),
                Cell::Number(1.5),
                Cell::Text("Deposit"),
            ],
        ];
        std::fs::write(&xlsx, workbook(&rows, &[])).expect("written");
        let opened = File::open(&xlsx).expect("opened");
        std::fs::remove_file(&xlsx).expect("unlinked, as the sweep does");
        let dataset = ingest_rows::registry::Registry::builtin()
            .get("transactions")
            .expect("built in");
        assert_eq!(
            to_csv(opened, &csv, 1 << 20, &dataset).expect("converted"),
            2
        );
        let text = std::fs::read_to_string(&csv).expect("the CSV");
        assert!(text.starts_with("date,content,amount,type\n"), "{text}");
        assert!(text.contains("Deposit"), "{text}");
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
