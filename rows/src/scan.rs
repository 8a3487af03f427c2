//! The bytes under the tokenizer. [`Tap`] reads the chunk for simd-csv and, as the bytes pass,
//! keeps the window the current record lies in (line numbers need the bytes simd-csv skips) and
//! checks that the chunk is text at all, so a chunk never has to be in memory whole.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

/// A UTF-8 byte order mark, skipped.
pub const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";
/// Window bytes before the current record are dropped once there are this many (dropping is a
/// copy of what was read ahead, so not after every record).
const RELEASE_AT: usize = 1 << 20;
/// The first bytes that say what a file is.
const HEAD: usize = 8;
/// Binary formats people upload by mistake, by their first bytes.
const MAGIC: &[(&[u8], &str)] = &[
    (b"\x7fELF", "an ELF executable"),
    (b"\x89PNG", "a PNG image"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook?)"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"GIF8", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\xd0\xcf\x11\xe0", "an OLE document (an .xls workbook?)"),
];

/// What the [`Tap`] has seen of the chunk so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// The chunk's bytes from offset `base` up to `read`.
    window: Vec<u8>,
    base: u64,
    /// Bytes read so far (the whole chunk once `eof`).
    pub read: u64,
    pub eof: bool,
    /// Bytes that are not UTF-8, among those checked.
    invalid_utf8: u64,
    /// Bytes before this offset are checked for UTF-8; the rest may be the start of a
    /// character still being read.
    checked: u64,
    /// Why the chunk is not CSV text, once known; the tap then reads no further.
    pub not_csv: Option<String>,
}

impl Seen {
    /// The chunk's bytes from `from` (not yet released) to what was read.
    pub fn since(&self, from: u64) -> &[u8] {
        &self.window[usize::try_from(from - self.base).expect("the window is in memory")..]
    }

    /// Every byte read so far is UTF-8 (the fast path skips per-cell checks).
    pub fn all_utf8(&self) -> bool {
        self.invalid_utf8 == 0 && self.checked == self.read
    }

    /// Bytes before `offset` will not be asked for again.
    pub fn release(&mut self, offset: u64) {
        let offset = offset.min(self.checked);
        let done = usize::try_from(offset - self.base).expect("the window is in memory");
        if done >= RELEASE_AT {
            self.window.drain(..done);
            self.base = offset;
        }
    }

    /// At the end of the chunk: fails it when too much of it is not UTF-8.
    pub fn finish(&mut self) {
        if self.not_csv.is_none() && self.invalid_utf8 * 10 > self.read {
            self.not_csv = Some(format!(
                "not UTF-8 text ({} of {} bytes invalid)",
                self.invalid_utf8, self.read
            ));
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        let before = self.read;
        self.window.extend_from_slice(bytes);
        self.read += bytes.len() as u64;
        if self.read >= i32::MAX as u64 {
            self.not_csv = Some("larger than 2 GiB".to_owned());
        }
        // What the first bytes say comes first (a UTF-16 text is full of NULs, say).
        if before < HEAD as u64 {
            self.check_head();
        }
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            let offset = before + at as u64;
            self.not_csv
                .get_or_insert(format!("NUL byte at offset {offset}: binary data"));
        }
        self.check_utf8();
    }

    fn check_head(&mut self) {
        let head = self.since(0);
        let why = if head.starts_with(b"\xff\xfe") || head.starts_with(b"\xfe\xff") {
            Some("UTF-16 text (byte order mark); expected UTF-8".to_owned())
        } else {
            let body = head.strip_prefix(UTF8_BOM).unwrap_or(head);
            MAGIC
                .iter()
                .find(|(magic, _)| body.starts_with(magic))
                .map(|(_, what)| format!("looks like {what}"))
        };
        if let Some(why) = why {
            self.not_csv.get_or_insert(why);
        }
    }

    /// Checks the bytes not checked yet; an incomplete character at the end waits for more
    /// (at the end of the chunk it is invalid).
    fn check_utf8(&mut self) {
        let from = self.since(self.checked);
        let mut rest = from;
        let mut invalid = 0;
        let mut waiting = 0;
        while let Err(err) = std::str::from_utf8(rest) {
            let Some(bad) = err.error_len() else {
                let tail = rest.len() - err.valid_up_to();
                if self.eof {
                    invalid += tail;
                } else {
                    waiting = tail;
                }
                break;
            };
            invalid += bad;
            rest = &rest[err.valid_up_to() + bad..];
        }
        self.invalid_utf8 += invalid as u64;
        self.checked = self.read - waiting as u64;
    }
}

/// Reads the chunk for simd-csv and records what passes in the shared [`Seen`].
pub struct Tap<R> {
    inner: R,
    seen: Rc<RefCell<Seen>>,
}

impl<R: Read> Tap<R> {
    pub fn new(inner: R) -> (Self, Rc<RefCell<Seen>>) {
        let seen = Rc::new(RefCell::new(Seen::default()));
        let tap = Self {
            inner,
            seen: Rc::clone(&seen),
        };
        (tap, seen)
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut seen = self.seen.borrow_mut();
        if seen.not_csv.is_some() || seen.eof {
            // No point tokenizing binary data: end the chunk here, the caller fails it.
            return Ok(0);
        }
        let read = self.inner.read(buf)?;
        if read == 0 && !buf.is_empty() {
            seen.eof = true;
        }
        seen.take(&buf[..read]);
        Ok(read)
    }
}
