//! The rejected rows of a chunk, encoded for `COPY rejected_rows ... (FORMAT binary)` as they are
//! found: in memory up to a budget, then in a spill file.
//!
//! A chunk can be millions of bad rows (64 MiB of `x\n` is 33 million). Kept as a `Vec` of
//! strings that is gigabytes of memory, and a chunk that kills its engine is retried forever by
//! the next one. Encoded at once and spilled to disk past the budget, it costs a few bytes of
//! disk per row and a bounded amount of memory whatever the chunk holds.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use crate::pgcopy;
use crate::validate::{Lineage, RejectedRow};

/// The statement [`RejectedCopy::finish`]'s stream is meant for.
pub const COPY_REJECTED: &str = "COPY rejected_rows (upload_id, chunk_no, line_no, reason, raw_line) FROM STDIN (FORMAT binary)";

/// Rejected rows of one chunk as a binary COPY stream under construction.
pub struct RejectedCopy {
    lineage: Lineage,
    rows: u64,
    /// Tuples not yet spilled (the stream header first, until the first spill).
    buffer: Vec<u8>,
    memory_budget: usize,
    spill: Option<File>,
    spill_dir: std::path::PathBuf,
}

impl RejectedCopy {
    /// Keeps at most about `memory_budget` bytes of encoded rows in memory; the rest goes to an
    /// unnamed file in `spill_dir`.
    pub fn new(lineage: Lineage, spill_dir: &Path, memory_budget: usize) -> Self {
        let mut buffer = Vec::new();
        pgcopy::write_header(&mut buffer);
        Self {
            lineage,
            rows: 0,
            buffer,
            memory_budget,
            spill: None,
            spill_dir: spill_dir.to_owned(),
        }
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends one row's tuple.
    pub fn push(&mut self, row: &RejectedRow) -> io::Result<()> {
        pgcopy::begin_row(&mut self.buffer, 5);
        pgcopy::write_uuid(&mut self.buffer, &self.lineage.upload_id);
        pgcopy::write_int4(&mut self.buffer, self.lineage.chunk_no);
        pgcopy::write_int4(&mut self.buffer, row.line_no);
        write_text_without_nul(&mut self.buffer, &row.reason);
        write_text_without_nul(&mut self.buffer, &row.raw);
        self.rows += 1;
        if self.buffer.len() >= self.memory_budget {
            self.spill_buffer()?;
        }
        Ok(())
    }

    fn spill_buffer(&mut self) -> io::Result<()> {
        let file = match &mut self.spill {
            Some(file) => file,
            None => self.spill.insert(unnamed_file(&self.spill_dir)?),
        };
        file.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// The whole COPY stream (header, tuples, trailer), or `None` when no row was rejected.
    pub fn finish(mut self) -> io::Result<Option<RejectedStream>> {
        if self.rows == 0 {
            return Ok(None);
        }
        pgcopy::write_trailer(&mut self.buffer);
        let spilled = match self.spill.take() {
            Some(mut file) => {
                file.flush()?;
                file.rewind()?;
                Some(file)
            }
            None => None,
        };
        Ok(Some(RejectedStream {
            spilled,
            tail: io::Cursor::new(self.buffer),
        }))
    }
}

/// Reads a finished [`RejectedCopy`]: the spilled part, then what stayed in memory.
pub struct RejectedStream {
    spilled: Option<File>,
    tail: io::Cursor<Vec<u8>>,
}

impl Read for RejectedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(file) = &mut self.spilled {
            let read = file.read(buf)?;
            if read > 0 {
                return Ok(read);
            }
            self.spilled = None;
        }
        self.tail.read(buf)
    }
}

/// PostgreSQL text cannot hold NUL; the text is for people, so NUL shows as `\0`.
fn write_text_without_nul(out: &mut Vec<u8>, text: &str) {
    if text.contains('\0') {
        pgcopy::write_text(out, text.replace('\0', "\\0").as_bytes());
    } else {
        pgcopy::write_text(out, text.as_bytes());
    }
}

/// A file in `dir` that is unlinked at once: it disappears with its handle, even on a crash.
fn unnamed_file(dir: &Path) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(".rejected-{}", uuid::Uuid::new_v4()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line_no: i32, raw: &str) -> RejectedRow {
        RejectedRow {
            line_no,
            reason: "bad".to_owned(),
            raw: raw.to_owned(),
        }
    }

    fn stream_of(copy: RejectedCopy) -> Vec<u8> {
        let mut bytes = Vec::new();
        copy.finish()
            .unwrap()
            .expect("rows were pushed")
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }

    #[test]
    fn spilling_changes_nothing_in_the_stream() {
        let lineage = Lineage {
            upload_id: uuid::Uuid::new_v4(),
            chunk_no: 7,
        };
        let dir = std::env::temp_dir();
        let mut in_memory = RejectedCopy::new(lineage, &dir, usize::MAX);
        let mut spilled = RejectedCopy::new(lineage, &dir, 64);
        for n in 0..1000 {
            let raw = format!("line {n} with a NUL \0 in it");
            in_memory.push(&row(n, &raw)).unwrap();
            spilled.push(&row(n, &raw)).unwrap();
        }
        assert!(spilled.spill.is_some());
        assert!(spilled.buffer.len() < 64);
        let (a, b) = (stream_of(in_memory), stream_of(spilled));
        assert_eq!(a, b);
        assert!(a.starts_with(pgcopy::SIGNATURE));
        assert!(a.ends_with(&(-1i16).to_be_bytes()));
        assert!(!a.windows(3).any(|w| w == b"\0 i"), "NUL is escaped");
    }

    #[test]
    fn nothing_rejected_means_no_stream() {
        let lineage = Lineage {
            upload_id: uuid::Uuid::new_v4(),
            chunk_no: 0,
        };
        let copy = RejectedCopy::new(lineage, &std::env::temp_dir(), 1024);
        assert!(copy.finish().unwrap().is_none());
    }
}
