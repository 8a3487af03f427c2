//! Chunk storage: a request body goes straight to a temporary file as it arrives.
//!
//! The async side only forwards hyper's `Bytes` frames through a bounded channel; one blocking
//! writer thread per chunk hashes them, checks them (size cap, NUL bytes, UTF-8 start, the header
//! line), decompresses gzip or zstd when asked, and writes them with vectored writes: identity
//! bodies are never copied into a second buffer and a chunk is never held whole in memory. The
//! bounded channel gives backpressure: hyper reads more from the socket only when the writer
//! keeps up. On any failure the temporary file is removed; on success it is synced, and the
//! caller renames it into place ([`StoredChunk::persist`]).

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use uuid::Uuid;

use ingest_rows::dataset::{Dataset, HeaderError, TextEncoding};

/// How many body frames may wait for the writer.
const QUEUE_FRAMES: usize = 16;
/// How many leading bytes are kept to read the header: as many as the longest record the
/// engine accepts by default (`INGEST_MAX_LINE_BYTES`), so a header is never judged from part
/// of it.
const SNIFF_BYTES: usize = 64 << 10;
/// How many leading bytes must be text (further on, invalid UTF-8 only rejects its rows).
const TEXT_BYTES: usize = 4096;

/// How the body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Gzip,
    Zstd,
}

/// What the stored bytes must satisfy, and the checksums the client sent (of the bytes as sent).
#[derive(Debug, Clone)]
pub struct ChunkRules {
    pub encoding: BodyEncoding,
    pub max_bytes: u64,
    /// The upload's dataset: whether the bytes start with its header record, in its encoding.
    pub dataset: Arc<Dataset>,
    /// Multipart files must start with the header line, as every file of the original's does.
    pub require_header: bool,
    pub expect_md5: Option<[u8; 16]>,
    pub expect_sha256: Option<[u8; 32]>,
}

/// Why a chunk was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk is larger than {0} bytes")]
    TooLarge(u64),
    #[error("{0} checksum does not match the body")]
    ChecksumMismatch(&'static str),
    #[error("not CSV text: {0}")]
    NotText(&'static str),
    #[error("file does not start with the header line {0:?}")]
    MissingHeader(String),
    #[error("{0}")]
    BadHeader(#[from] HeaderError),
    #[error("cannot decode the {0} body: {1}")]
    Decode(&'static str, String),
    #[error(transparent)]
    Workbook(#[from] workbook::WorkbookError),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

/// A chunk written and synced under its temporary name.
#[derive(Debug)]
pub struct StoredChunk {
    pub temp_path: PathBuf,
    pub nonce: Uuid,
    pub bytes: u64,
    pub sha256_hex: String,
    /// The column names of the header it starts with (see [`Dataset::header_names`]), if any.
    pub header: Option<Vec<String>>,
}

impl StoredChunk {
    /// Removes the temporary file (a refused chunk leaves nothing behind).
    pub async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.temp_path).await;
    }
}

/// Creates `path` inside the upload directory `dir`, making the directory if needed.
///
/// Engines and the expiry sweep remove an upload's directory when its last file is gone, so the
/// directory can vanish between `create_dir_all` and the file's creation (ENOENT), or during
/// `create_dir_all` itself (EEXIST from a directory that is no longer there). Both are retried:
/// once the file exists the directory is not empty, and `remove_dir` leaves it alone.
pub(crate) async fn create_in_upload_dir(dir: &Path, path: &Path) -> io::Result<File> {
    const ATTEMPTS: usize = 20;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        if let Err(err) = tokio::fs::create_dir_all(dir).await {
            if err.kind() != io::ErrorKind::AlreadyExists {
                return Err(err);
            }
            last_error = Some(err);
            continue;
        }
        let created = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await;
        match created {
            Ok(file) => return Ok(file.into_std().await),
            Err(err) if err.kind() == io::ErrorKind::NotFound => last_error = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("upload directory kept vanishing")))
}

/// The async end of a chunk being written.
pub struct ChunkSink {
    frames: mpsc::Sender<Bytes>,
    writer: JoinHandle<Result<StoredChunk, StoreError>>,
}

impl ChunkSink {
    /// Creates `<dir>/.<nonce>.part` and starts its writer thread, which holds `slot` (one of
    /// [`crate::app::AppState::bodies`]; none for a converted workbook, whose conversions are
    /// bounded already) until it ends.
    pub async fn start(
        dir: PathBuf,
        rules: ChunkRules,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Self, StoreError> {
        let nonce = Uuid::new_v4();
        let temp_path = dir.join(format!(".{}.part", nonce.simple()));
        let file = create_in_upload_dir(&dir, &temp_path).await?;
        let (frames, receiver) = mpsc::channel(QUEUE_FRAMES);
        let writer = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let result = write_chunk(file, receiver, &rules);
            match result {
                Ok((bytes, sha256_hex, header)) => Ok(StoredChunk {
                    temp_path,
                    nonce,
                    bytes,
                    sha256_hex,
                    header,
                }),
                Err(err) => {
                    let _ = std::fs::remove_file(&temp_path);
                    Err(err)
                }
            }
        });
        Ok(Self { frames, writer })
    }

    /// Queues one body frame. Fails when the writer stopped (its error comes from [`Self::finish`]).
    pub async fn push(&self, frame: Bytes) -> bool {
        self.frames.send(frame).await.is_ok()
    }

    /// Ends the body: the writer verifies, syncs and returns the stored chunk.
    pub async fn finish(self) -> Result<StoredChunk, StoreError> {
        drop(self.frames);
        self.writer.await.map_err(io::Error::other)?
    }

    /// Abandons the body: the writer sees a truncated stream and removes the file.
    pub async fn abort(self) {
        let Self { frames, writer } = self;
        drop(frames);
        // The writer removes its file on error; a body that merely ended early looks complete
        // to it, so remove that one here.
        if let Ok(Ok(stored)) = writer.await {
            stored.discard().await;
        }
    }
}

/// Checks and hashes of the stored (decoded) bytes.
struct Output {
    file: File,
    rules: ChunkRules,
    written: u64,
    sha256: Sha256,
    head: Vec<u8>,
}

impl Output {
    fn inspect(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.written += data.len() as u64;
        if self.written > self.rules.max_bytes {
            return Err(StoreError::TooLarge(self.rules.max_bytes));
        }
        if data.contains(&0) {
            return Err(StoreError::NotText("it contains NUL bytes"));
        }
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        self.sha256.update(data);
        Ok(())
    }

    /// The header the stored bytes start with, if any, after checking they start as text (in
    /// a UTF-8 dataset: any byte but NUL is text in a Windows-1252 one).
    fn check_head(&self) -> Result<Option<Vec<String>>, StoreError> {
        let dataset = &self.rules.dataset;
        let head = self
            .head
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(&self.head);
        let head = &head[..head.len().min(TEXT_BYTES)];
        if dataset.format.encoding == TextEncoding::Utf8 {
            if let Err(err) = std::str::from_utf8(head) {
                // A multi-byte character cut at the sniff boundary is fine; anything else is not
                // text.
                if err.error_len().is_some() {
                    return Err(StoreError::NotText("it is not UTF-8 text"));
                }
            }
        }
        let whole = self.written == self.head.len() as u64;
        let layout = dataset.header_of(&self.head, whole)?;
        Ok(layout.map(|layout| dataset.header_names(&layout)))
    }
}

impl Write for Output {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inspect(data).map_err(io::Error::other)?;
        self.file.write_all(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Raw (as sent) checksums.
#[derive(Default)]
struct RawHashes {
    md5: Option<Md5>,
    sha256: Option<Sha256>,
}

fn write_chunk(
    file: File,
    mut frames: mpsc::Receiver<Bytes>,
    rules: &ChunkRules,
) -> Result<(u64, String, Option<Vec<String>>), StoreError> {
    // Unencoded, the bytes sent are the bytes stored: the stored file's SHA-256 (always made,
    // for the ledger) checks an expected one, and hashing the same bytes twice is wasted CPU.
    let identity = matches!(rules.encoding, BodyEncoding::Identity);
    let mut raw = RawHashes {
        md5: rules.expect_md5.map(|_| Md5::new()),
        sha256: rules
            .expect_sha256
            .filter(|_| !identity)
            .map(|_| Sha256::new()),
    };
    let output = Output {
        file,
        rules: rules.clone(),
        written: 0,
        sha256: Sha256::new(),
        head: Vec::with_capacity(SNIFF_BYTES),
    };
    let mut decoder = Decoder::new(rules.encoding, output)?;
    let mut batch: Vec<Bytes> = Vec::with_capacity(QUEUE_FRAMES);
    let mut raw_total: u64 = 0;
    while let Some(first) = frames.blocking_recv() {
        batch.push(first);
        while batch.len() < QUEUE_FRAMES {
            match frames.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        for frame in &batch {
            raw_total += frame.len() as u64;
            if raw_total > rules.max_bytes {
                return Err(StoreError::TooLarge(rules.max_bytes));
            }
            if let Some(md5) = &mut raw.md5 {
                md5.update(frame);
            }
            if let Some(sha) = &mut raw.sha256 {
                sha.update(frame);
            }
        }
        if let Decoder::Identity(output) = &mut decoder {
            for frame in &batch {
                output.inspect(frame)?;
            }
            write_all_vectored(&mut output.file, &batch)?;
        } else {
            for frame in &batch {
                decoder.write_compressed(frame)?;
            }
        }
        batch.clear();
    }
    let output = decoder.finish()?;
    if let (Some(md5), Some(expected)) = (raw.md5, rules.expect_md5) {
        if md5.finalize()[..] != expected[..] {
            return Err(StoreError::ChecksumMismatch("MD5"));
        }
    }
    if let (Some(sha), Some(expected)) = (raw.sha256, rules.expect_sha256) {
        if sha.finalize()[..] != expected[..] {
            return Err(StoreError::ChecksumMismatch("SHA-256"));
        }
    }
    let header = output.check_head()?;
    let stored_sha256 = output.sha256.finalize();
    if identity
        && rules
            .expect_sha256
            .is_some_and(|e| stored_sha256[..] != e[..])
    {
        return Err(StoreError::ChecksumMismatch("SHA-256"));
    }
    if rules.require_header && rules.dataset.format.header && header.is_none() {
        return Err(StoreError::MissingHeader(rules.dataset.header_line()));
    }
    output.file.sync_data()?;
    Ok((output.written, hex::encode(stored_sha256), header))
}

fn write_all_vectored(file: &mut File, frames: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        let written = file.write_vectored(remaining)?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

mod decode;
pub mod workbook;
use decode::Decoder;
