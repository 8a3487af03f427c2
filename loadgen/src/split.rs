//! Splitting CSV files into chunks at record boundaries, without reading a file into memory.
//!
//! The splitter scans forward through a buffered reader and only remembers where chunks start.
//! It follows RFC 4180 quoting: a `"` toggles the quoted state (so a `""` escape toggles twice
//! and changes nothing), and only a newline outside quotes ends a record. A quoted field holding
//! CRLF or LF is therefore never cut. A chunk ends after the `\n` of the first record that brings
//! it to at least the chunk size, so every chunk but the last is at least that big and at most
//! one record bigger. [`split_file`] knows the file's size and evens the chunks out: the fewest
//! chunks of at most the chunk size, all about the same size.
//!
//! The first record of a file is its header. It stays in the file's first chunk, together with
//! at least one data row, and no later chunk starts with it. A stray quote in the middle of an
//! unquoted field is treated as opening a quoted field, as CSV tokenizers (simd-csv included) do,
//! so the split agrees with how the engine will read the same bytes.
//!
//! [`plan_files`] numbers the chunks of several files consecutively, the way one upload sends
//! them. The split depends only on the bytes and the chunk size, so a resumed upload plans the
//! very same chunks again.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The chunk size used when none is given: 8 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

const READ_BUFFER: usize = 256 * 1024;

/// A byte range of a file holding whole records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// Where the chunk starts in the file.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Data rows in the chunk (the header of a file's first chunk not counted).
    pub rows: u64,
}

/// One chunk of an upload: which file, which bytes, and its number in the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChunk {
    /// The chunk number sent to the gateway, counted from 0 across all files.
    pub index: u64,
    /// The file the bytes come from.
    pub path: Arc<PathBuf>,
    /// The bytes of the file.
    pub range: ChunkRange,
}

/// Why a file could not be split.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct SplitError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Splits a file into chunks of at most about `chunk_size` bytes, all of about the same size
/// (see [`even_target`] and the module docs).
pub fn split_file(path: &Path, chunk_size: u64) -> Result<Vec<ChunkRange>, SplitError> {
    File::open(path)
        .and_then(|file| {
            let target = even_target(file.metadata()?.len(), chunk_size);
            split_reader(file, target)
        })
        .map_err(|source| SplitError {
            path: path.to_owned(),
            source,
        })
}

/// The chunk size that cuts `file_size` bytes into as few chunks of at most `chunk_size` as
/// possible, all of the same size. A 9 MiB file cut at 8 MiB would be an 8 MiB and a 1 MiB
/// chunk; chunks go round-robin to the partitions, so every other partition would get the big
/// ones and do nearly all the work. Two of 4.5 MiB keep the partitions even.
pub fn even_target(file_size: u64, chunk_size: u64) -> u64 {
    let chunk_size = chunk_size.max(1);
    let chunks = file_size.div_ceil(chunk_size).max(1);
    file_size.div_ceil(chunks).max(1)
}

/// Splits everything `reader` yields into chunks of about `chunk_size` bytes.
pub fn split_reader<R: Read>(reader: R, chunk_size: u64) -> io::Result<Vec<ChunkRange>> {
    split_with_buffer(reader, chunk_size, READ_BUFFER)
}

/// Splits each file in turn and numbers the chunks consecutively across them.
pub fn plan_files(files: &[PathBuf], chunk_size: u64) -> Result<Vec<PlannedChunk>, SplitError> {
    let mut planned = Vec::new();
    for path in files {
        let shared = Arc::new(path.clone());
        for range in split_file(path, chunk_size)? {
            planned.push(PlannedChunk {
                index: planned.len() as u64,
                path: Arc::clone(&shared),
                range,
            });
        }
    }
    Ok(planned)
}

/// [`split_reader`] with the read buffer size as a parameter, so tests can make records and
/// quoted fields straddle reads.
pub(crate) fn split_with_buffer<R: Read>(
    mut reader: R,
    chunk_size: u64,
    buffer_size: usize,
) -> io::Result<Vec<ChunkRange>> {
    let mut scanner = Scanner::new(chunk_size);
    let mut buf = vec![0u8; buffer_size.max(1)];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        scanner.feed(&buf[..n]);
    }
    Ok(scanner.finish())
}

/// The splitter's state between reads.
struct Scanner {
    chunk_size: u64,
    /// Bytes seen so far: the absolute offset of the start of the next buffer.
    pos: u64,
    in_quotes: bool,
    chunk_start: u64,
    /// Complete records in the current chunk, header included.
    records: u64,
    /// Whether the current chunk is the file's first (it holds the header).
    first: bool,
    /// Whether a byte has been seen since the last record end (a record without a newline).
    open_record: bool,
    chunks: Vec<ChunkRange>,
}

impl Scanner {
    fn new(chunk_size: u64) -> Self {
        Self {
            chunk_size: chunk_size.max(1),
            pos: 0,
            in_quotes: false,
            chunk_start: 0,
            records: 0,
            first: true,
            open_record: false,
            chunks: Vec::new(),
        }
    }

    fn feed(&mut self, buf: &[u8]) {
        let mut last_end = 0;
        for i in memchr::memchr2_iter(b'"', b'\n', buf) {
            if buf[i] == b'"' {
                self.in_quotes = !self.in_quotes;
            } else if !self.in_quotes {
                last_end = i + 1;
                self.record_end(self.pos + i as u64 + 1);
            }
        }
        if last_end < buf.len() {
            self.open_record = true;
        } else if last_end > 0 {
            self.open_record = false;
        }
        self.pos += buf.len() as u64;
    }

    /// A record ends just before `end`: cut here if the chunk is big enough.
    fn record_end(&mut self, end: u64) {
        self.records += 1;
        // The header alone is not a chunk: the first chunk also needs a data row.
        let min_records = if self.first { 2 } else { 1 };
        if end - self.chunk_start >= self.chunk_size && self.records >= min_records {
            self.cut(end, self.records);
        }
    }

    fn cut(&mut self, end: u64, records: u64) {
        let header = u64::from(self.first);
        self.chunks.push(ChunkRange {
            offset: self.chunk_start,
            len: end - self.chunk_start,
            rows: records.saturating_sub(header),
        });
        self.chunk_start = end;
        self.records = 0;
        self.first = false;
    }

    fn finish(mut self) -> Vec<ChunkRange> {
        if self.pos > self.chunk_start {
            // Bytes after the last newline are a record too.
            let records = self.records + u64::from(self.open_record);
            self.cut(self.pos, records);
        }
        self.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(data: &[u8], chunk_size: u64) -> Vec<(u64, u64, u64)> {
        split_with_buffer(data, chunk_size, 5)
            .expect("reading a slice should not fail")
            .into_iter()
            .map(|c| (c.offset, c.len, c.rows))
            .collect()
    }

    #[test]
    fn cuts_after_the_record_that_reaches_the_chunk_size() {
        let data = b"h\r\naa\r\nbb\r\ncc\r\n";
        // "h\r\naa\r\n" is 7 bytes: the first cut needs a data row anyway.
        assert_eq!(split(data, 1), vec![(0, 7, 1), (7, 4, 1), (11, 4, 1)]);
        assert_eq!(split(data, 8), vec![(0, 11, 2), (11, 4, 1)]);
        assert_eq!(split(data, 1000), vec![(0, 15, 3)]);
    }

    #[test]
    fn never_cuts_inside_a_quoted_newline() {
        let data = b"h\na,\"x\r\ny\ny\"\"\nz\"\nb\n";
        let chunks = split(data, 1);
        assert_eq!(chunks, vec![(0, 17, 1), (17, 2, 1)]);
    }

    #[test]
    fn files_are_cut_into_even_chunks() {
        const MIB: u64 = 1 << 20;
        assert_eq!(even_target(9 * MIB, 8 * MIB), 9 * MIB / 2);
        assert_eq!(even_target(8 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(even_target(17 * MIB, 8 * MIB), 17 * MIB / 3 + 1);
        assert_eq!(even_target(10, 8 * MIB), 10);
        assert_eq!(even_target(0, 8 * MIB), 1);

        let dir = std::env::temp_dir().join(format!("split-even-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nine.csv");
        let row = "01/01/2023 00:00:00,text,1.000,Deposit\r\n";
        let mut data = String::from("date,content,amount,type\r\n");
        while data.len() < 9 * MIB as usize {
            data.push_str(row);
        }
        std::fs::write(&path, &data).unwrap();
        let chunks = split_file(&path, 8 * MIB).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(chunks.len(), 2);
        let (a, b) = (chunks[0].len, chunks[1].len);
        assert!(a.abs_diff(b) <= 2 * row.len() as u64, "{a} vs {b}");
        assert_eq!(a + b, data.len() as u64);
    }

    #[test]
    fn a_last_record_without_newline_is_counted() {
        assert_eq!(split(b"h\nab\ncd", 1), vec![(0, 5, 1), (5, 2, 1)]);
        assert_eq!(split(b"h\nab", 1), vec![(0, 4, 1)]);
        assert_eq!(split(b"h\n", 1), vec![(0, 2, 0)]);
        assert!(split(b"", 1).is_empty());
    }
}
