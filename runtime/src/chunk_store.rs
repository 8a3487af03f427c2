//! Where a stored chunk lives between the gateway that received it and the engine that loads it
//! (`INGEST_CHUNK_STORE`): a directory every gateway and engine sees (the default, and on one
//! host), or an S3-compatible bucket (several hosts, no shared filesystem).
//!
//! Either way a chunk is first written, checked and synced as a local file under
//! `INGEST_UPLOAD_DIR` (the gateway's spool): a refused body never reaches the store, and a
//! bucket receives only whole, checked chunks. The engine reads a chunk as it arrives
//! ([`ChunkStore::reader`]): the file itself, or the body of a GET (a ranged one for a piece of a
//! big chunk), pulled as the validator reads it, so no object is ever held whole in the
//! engine's memory or on its disk. The names are the ledger's
//! (`<upload>/<nonce>.csv`, see `ingest_ledger::files`), a fresh nonce for every body, so two
//! requests never write the same object: the "same chunk number, different bytes" rule (409)
//! is the ledger's, by checksum.

use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey::Client};
use object_store::path::Path as ObjectPath;
use object_store::ClientConfigKey;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Size of the parts a chunk is sent to a bucket in: S3's smallest (but for the last part).
const PART_BYTES: usize = 5 << 20;
/// Chunks sent to a bucket at once by one process, one part of each in flight: the memory and
/// connections a gateway spends on bucket uploads are bounded by this, however many chunks
/// arrive together (the others wait their turn, already checked and synced in the spool).
const UPLOADS_AT_ONCE: usize = 4;
/// How long one store request may keep being retried (connection refused, 5xx, timeouts)
/// before the caller hears about it: a gateway then answers 503, an engine retries the load.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// A load reads an object's body only as fast as its COPY takes the rows (minutes, with
/// PostgreSQL busy or a 64 MiB chunk loaded whole), so a GET gets no deadline of its own
/// (the client's default of 30 s would break every long load, again on each retry): only
/// this one between two pieces of the body, so a store that stops sending is still noticed
/// (as is a load that stops reading for as long: it is retried).
const BODY_READ_TIMEOUT: &str = "60s";
/// What stands for "no deadline" on a whole GET: longer than any load.
const GET_TIMEOUT: &str = "6h";

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChunkStoreError {
    #[error("INGEST_CHUNK_STORE {0:?}: {1}")]
    Setting(String, String),
    #[error("chunk store {store}: {source}")]
    Object {
        store: String,
        source: object_store::Error,
    },
    #[error("chunk file: {0}")]
    Io(#[from] std::io::Error),
    #[error("chunk path {0:?} points outside the store")]
    Outside(String),
    #[error("chunk {0:?} is not in the store")]
    Missing(String),
    #[error("chunk store {store}: the object's body broke off: {source}")]
    BrokeOff {
        store: String,
        source: object_store::Error,
    },
    #[error("chunk store {store}: the chunk ended after {read} of its {expected} bytes")]
    EndedEarly {
        store: String,
        read: u64,
        expected: u64,
    },
}

impl ChunkStoreError {
    /// The store does not have the chunk (as opposed to not answering). A local file error
    /// (the spool) never is: it says nothing of the chunk.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            Self::Missing(_)
                | Self::Object {
                    source: object_store::Error::NotFound { .. },
                    ..
                }
        )
    }

    /// The name given points outside the store (a message is never trusted that far).
    pub fn is_outside(&self) -> bool {
        matches!(self, Self::Outside(_))
    }
}

/// The chunk store of this process.
#[derive(Debug)]
pub enum ChunkStore {
    /// Chunk files live in `INGEST_UPLOAD_DIR` itself, shared by every process.
    Directory(PathBuf),
    /// Chunk files live in a bucket; `INGEST_UPLOAD_DIR` is this process's own spool.
    Bucket(Bucket),
}

/// An S3-compatible bucket and a prefix in it.
#[derive(Debug, Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// The same bucket, for the GETs loads read (see [`BODY_READ_TIMEOUT`]).
    reads: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    spool: PathBuf,
}

/// A chunk a store holds, with when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// The ledger's name: `<upload>/<nonce>.csv`.
    pub relative: String,
    pub modified: SystemTime,
}

/// Checks an `INGEST_CHUNK_STORE` value at start (a typo is a configuration error).
pub fn parse_setting(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|err| format!("{value:?}: {err}"))?;
    match url.scheme() {
        "file" if url.to_file_path().is_ok() => Ok(value.to_owned()),
        "s3" if url.host_str().is_some_and(|b| !b.is_empty()) => Ok(value.to_owned()),
        _ => Err(format!(
            "{value:?}: expected file:///absolute/path or s3://bucket/prefix"
        )),
    }
}

impl ChunkStore {
    /// The store `setting` names (`None`: the directory `upload_dir`). A bucket takes its
    /// endpoint, region and credentials from the usual `AWS_*` variables (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...).
    pub fn open(setting: Option<&str>, upload_dir: &Path) -> Result<Self, ChunkStoreError> {
        Self::open_with(setting, upload_dir, &[])
    }

    /// [`Self::open`], with bucket options (`aws_endpoint`, `aws_access_key_id`, ...: the
    /// `AWS_*` names in lower case) that take precedence over the environment's.
    pub fn open_with(
        setting: Option<&str>,
        upload_dir: &Path,
        options: &[(&str, &str)],
    ) -> Result<Self, ChunkStoreError> {
        let Some(setting) = setting else {
            return Ok(Self::Directory(upload_dir.to_owned()));
        };
        let invalid = |why: String| ChunkStoreError::Setting(setting.to_owned(), why);
        let url = url::Url::parse(setting).map_err(|err| invalid(err.to_string()))?;
        match url.scheme() {
            "file" => url
                .to_file_path()
                .map(Self::Directory)
                .map_err(|()| invalid("not an absolute path".into())),
            "s3" => {
                let mut builder = AmazonS3Builder::from_env();
                for (key, value) in options {
                    let key = key.parse().map_err(|err| invalid(format!("{err}")))?;
                    builder = builder.with_config(key, *value);
                }
                let builder = builder.with_url(setting).with_retry(RetryConfig {
                    retry_timeout: RETRY_FOR,
                    max_retries: 4,
                    ..RetryConfig::default()
                });
                let reads = builder
                    .clone()
                    .with_config(Client(ClientConfigKey::Timeout), GET_TIMEOUT)
                    .with_config(Client(ClientConfigKey::ReadTimeout), BODY_READ_TIMEOUT)
                    .build()
                    .map_err(|err| invalid(err.to_string()))?;
                let store = builder.build().map_err(|err| invalid(err.to_string()))?;
                Ok(Self::Bucket(Bucket {
                    store: Arc::new(store),
                    reads: Arc::new(reads),
                    prefix: ObjectPath::from(url.path().trim_matches('/')),
                    url: setting.to_owned(),
                    spool: upload_dir.to_owned(),
                }))
            }
            _ => Err(invalid("expected file:// or s3://".into())),
        }
    }

    /// For logs: the directory or the bucket URL.
    pub fn describe(&self) -> String {
        match self {
            Self::Directory(dir) => dir.display().to_string(),
            Self::Bucket(bucket) => bucket.url.clone(),
        }
    }

    /// Where this process keeps its local files: chunks being received, rejected rows spilled
    /// to disk.
    pub fn spool(&self) -> &Path {
        match self {
            Self::Directory(dir) => dir,
            Self::Bucket(bucket) => &bucket.spool,
        }
    }

    /// Removes `<spool>/.fetched`, where engines before 2026-12-07 copied bucket objects to load
    /// them (a killed load left its copy there); nothing writes there any more.
    pub async fn clear_old_copies(&self) {
        if let Self::Bucket(bucket) = self {
            let _ = tokio::fs::remove_dir_all(bucket.spool.join(".fetched")).await;
        }
    }

    /// Stores the synced local file `local` as `relative`, which it consumes: renamed into
    /// place (and the directory synced) in a directory, sent in parts to a bucket and then
    /// removed. On an error nothing is stored and `local` is left to the caller. A bucket upload
    /// runs as a task of its own: a caller that goes away (its client disconnected) leaves it
    /// to finish or abort, never a half-done multipart upload; the object it leaves unrecorded
    /// is the orphan sweep's.
    pub async fn put_file(&self, local: &Path, relative: &str) -> Result<(), ChunkStoreError> {
        let relative = checked(relative)?;
        match self {
            Self::Directory(dir) => {
                let (from, to) = (local.to_owned(), dir.join(relative));
                tokio::task::spawn_blocking(move || {
                    std::fs::rename(&from, &to)?;
                    if let Some(dir) = to.parent() {
                        std::fs::File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                })
                .await
                .map_err(std::io::Error::other)?
            }
            Self::Bucket(bucket) => {
                // Opened before it waits for its turn: the spool's sweep of old temporary files
                // cannot take it from under the upload.
                let file = tokio::fs::File::open(local).await?;
                let (bucket, relative) = (bucket.clone(), relative.to_owned());
                tokio::spawn(async move { bucket.upload(file, &relative).await })
                    .await
                    .map_err(std::io::Error::other)??;
                let _ = tokio::fs::remove_file(local).await;
                if let Some(dir) = local.parent() {
                    // The upload's spool directory, once empty (a request writing into it
                    // makes it again: see the gateway's `create_in_upload_dir`).
                    let _ = tokio::fs::remove_dir(dir).await;
                }
                Ok(())
            }
        }
    }

    /// The chunk's bytes (only those of `range` when given), to read on a blocking thread as
    /// they arrive: the file itself in a directory, the body of a (ranged) GET from a bucket.
    /// A chunk that is not there is [`ChunkStoreError::is_missing`]. A read that fails or ends
    /// early is an I/O error of the reader, and [`ChunkReader::broken_off`] says it was the
    /// store's (the chunk was checked whole when it was stored: such an error says nothing of
    /// its bytes).
    pub async fn reader(
        &self,
        relative: &str,
        range: Option<Range<u64>>,
    ) -> Result<ChunkReader, ChunkStoreError> {
        let relative = checked(relative)?;
        match self {
            Self::Directory(dir) => {
                let mut file = match tokio::fs::File::open(dir.join(relative)).await {
                    Ok(file) => file.into_std().await,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ChunkStoreError::Missing(relative.to_owned()))
                    }
                    Err(err) => return Err(err.into()),
                };
                let len = match range {
                    Some(range) => {
                        file.seek(SeekFrom::Start(range.start))?;
                        range.end - range.start
                    }
                    None => file.metadata()?.len(),
                };
                let input = Box::new(file.take(len));
                Ok(ChunkReader::new(input, len, dir.display().to_string()))
            }
            Self::Bucket(bucket) => bucket.stream(relative, range).await,
        }
    }

    /// The chunk's size in bytes.
    pub async fn size(&self, relative: &str) -> Result<u64, ChunkStoreError> {
        let relative = checked(relative)?;
        match self {
            Self::Directory(dir) => match tokio::fs::metadata(dir.join(relative)).await {
                Ok(meta) => Ok(meta.len()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    Err(ChunkStoreError::Missing(relative.to_owned()))
                }
                Err(err) => Err(err.into()),
            },
            Self::Bucket(bucket) => {
                let location = bucket.location(relative);
                let meta = bucket.store.head(&location).await;
                Ok(meta.map_err(|err| bucket.error(err))?.size)
            }
        }
    }

    /// Removes the chunk; `Ok(false)`: it was not there.
    pub async fn remove(&self, relative: &str) -> Result<bool, ChunkStoreError> {
        self.take_away(relative, None).await
    }

    /// Moves the chunk aside as `name` instead of removing it: into the directory `archive`
    /// (a directory store) or under `<prefix>/archive/` (a bucket). `Ok(false)`: it was not
    /// there.
    pub async fn archive(
        &self,
        relative: &str,
        archive: &Path,
        name: &str,
    ) -> Result<bool, ChunkStoreError> {
        self.take_away(relative, Some((archive, name))).await
    }

    async fn take_away(
        &self,
        relative: &str,
        archive: Option<(&Path, &str)>,
    ) -> Result<bool, ChunkStoreError> {
        let relative = checked(relative)?;
        match self {
            Self::Directory(dir) => {
                let path = dir.join(relative);
                let result = match archive {
                    Some((archive, name)) => tokio::fs::rename(&path, archive.join(name)).await,
                    None => tokio::fs::remove_file(&path).await,
                };
                if let Some(parent) = path.parent() {
                    // The upload's directory goes with its last file; fails harmlessly before.
                    let _ = tokio::fs::remove_dir(parent).await;
                }
                match result {
                    Ok(()) => Ok(true),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(err) => Err(err.into()),
                }
            }
            Self::Bucket(bucket) => {
                let location = bucket.location(relative);
                if let Some((_, name)) = archive {
                    let archived = bucket.prefix.clone().join("archive").join(name);
                    match bucket.store.copy(&location, &archived).await {
                        Err(object_store::Error::NotFound { .. }) => return Ok(false),
                        other => other.map_err(|err| bucket.error(err))?,
                    }
                }
                // S3 answers a delete of a missing key with success: ask first, so the caller
                // still learns whether it was there.
                match bucket.store.head(&location).await {
                    Err(object_store::Error::NotFound { .. }) => return Ok(false),
                    other => other.map_err(|err| bucket.error(err))?,
                };
                bucket
                    .store
                    .delete(&location)
                    .await
                    .map_err(|err| bucket.error(err))?;
                Ok(true)
            }
        }
    }

    /// Every chunk the bucket holds, for the orphan sweep (a directory store is swept by
    /// walking the directory: `None`).
    pub async fn list(&self) -> Option<Result<Vec<StoredFile>, ChunkStoreError>> {
        let Self::Bucket(bucket) = self else {
            return None;
        };
        let mut listing = bucket.store.list(Some(&bucket.prefix));
        let mut files = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(err) => return Some(Err(bucket.error(err))),
            };
            let Some(relative) = meta.location.prefix_match(&bucket.prefix) else {
                continue;
            };
            let relative: Vec<_> = relative.map(|part| part.as_ref().to_owned()).collect();
            // Chunks are `<upload>/<nonce>.csv`; the archive is not the sweep's.
            if let [upload, name] = relative.as_slice() {
                files.push(StoredFile {
                    relative: format!("{upload}/{name}"),
                    modified: meta.last_modified.into(),
                });
            }
        }
        Some(Ok(files))
    }
}

/// A chunk's bytes as they arrive (see [`ChunkStore::reader`]); a blocking reader.
pub struct ChunkReader {
    input: Box<dyn Read + Send>,
    /// The bytes the chunk (or range) has: fewer before the end is a read that broke off.
    expected: u64,
    read: u64,
    /// The store, for errors.
    store: String,
    broken: BrokenOff,
}

/// Where a reader leaves the store's error when a read of the chunk failed or ended early.
#[derive(Clone, Default)]
pub struct BrokenOff(Arc<Mutex<Option<ChunkStoreError>>>);

impl BrokenOff {
    /// The store's error, if a read broke off: the store stopped answering mid-way (a load
    /// to retry), not a chunk whose bytes are wrong (however the reader's caller wrapped the
    /// I/O error it saw).
    pub fn take(&self) -> Option<ChunkStoreError> {
        self.0.lock().expect("broken-off lock").take()
    }

    /// Keeps the first error (the cause; what follows it is its echo).
    fn set(&self, err: ChunkStoreError) {
        self.0.lock().expect("broken-off lock").get_or_insert(err);
    }
}

impl ChunkReader {
    fn new(input: Box<dyn Read + Send>, expected: u64, store: String) -> Self {
        Self {
            input,
            expected,
            read: 0,
            store,
            broken: BrokenOff::default(),
        }
    }

    /// What says, after reading, whether a read broke off (kept by the caller: the reader
    /// itself goes to the blocking thread that reads it).
    pub fn broken_off(&self) -> BrokenOff {
        self.broken.clone()
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.input.read(buf) {
            Ok(0) if self.read < self.expected && !buf.is_empty() => {
                let err = ChunkStoreError::EndedEarly {
                    store: self.store.clone(),
                    read: self.read,
                    expected: self.expected,
                };
                let message = err.to_string();
                self.broken.set(err);
                Err(std::io::Error::new(ErrorKind::UnexpectedEof, message))
            }
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => Err(err),
            Err(err) => {
                let echo = std::io::Error::new(err.kind(), err.to_string());
                self.broken.set(ChunkStoreError::Io(echo));
                Err(err)
            }
        }
    }
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkReader")
    }
}

impl Bucket {
    fn location(&self, relative: &str) -> ObjectPath {
        relative
            .split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn error(&self, source: object_store::Error) -> ChunkStoreError {
        ChunkStoreError::Object {
            store: self.url.clone(),
            source,
        }
    }

    /// Sends `local` in parts of [`PART_BYTES`], one at a time, [`UPLOADS_AT_ONCE`] chunks in
    /// the process; an interrupted upload is aborted (the bucket keeps no part of it).
    async fn upload(
        &self,
        mut file: tokio::fs::File,
        relative: &str,
    ) -> Result<(), ChunkStoreError> {
        static UPLOADS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(UPLOADS_AT_ONCE));
        let _turn = UPLOADS.acquire().await.expect("never closed");
        let location = self.location(relative);
        let len = file.metadata().await?.len();
        if len <= PART_BYTES as u64 {
            let bytes = read_part(&mut file, len as usize).await?;
            self.store
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(|err| self.error(err))?;
            return Ok(());
        }
        let mut upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|err| self.error(err))?;
        let sent: Result<(), ChunkStoreError> = async {
            let mut left = len;
            while left > 0 {
                let size = left.min(PART_BYTES as u64);
                let part = read_part(&mut file, size as usize).await?;
                upload
                    .put_part(PutPayload::from(part))
                    .await
                    .map_err(|err| self.error(err))?;
                left -= size;
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => {
                upload.complete().await.map_err(|err| self.error(err))?;
                Ok(())
            }
            Err(err) => {
                let _ = upload.abort().await;
                Err(err)
            }
        }
    }

    /// The object's body (only `range` of it when given) as a blocking reader that pulls it
    /// from the store as it is read. Must be called on the runtime: the reader blocks on it.
    async fn stream(
        &self,
        relative: &str,
        range: Option<Range<u64>>,
    ) -> Result<ChunkReader, ChunkStoreError> {
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self
            .reads
            .get_opts(&self.location(relative), options)
            .await
            .map_err(|err| self.error(err))?;
        let expected = match &range {
            Some(range) => range.end - range.start,
            None => got.meta.size,
        };
        let broken = BrokenOff::default();
        let (bucket, noted) = (self.clone(), broken.clone());
        let body = got.into_stream().map_err(move |source| {
            let err = ChunkStoreError::BrokeOff {
                store: bucket.url.clone(),
                source,
            };
            let message = err.to_string();
            noted.set(err);
            std::io::Error::other(message)
        });
        let input = SyncIoBridge::new(StreamReader::new(body));
        Ok(ChunkReader {
            broken,
            ..ChunkReader::new(Box::new(input), expected, self.url.clone())
        })
    }
}

/// The next `size` bytes of `file`, in a buffer of exactly that size (`read_to_end` would
/// double a full buffer to look for more).
async fn read_part(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Vec<u8>> {
    let mut part = vec![0; size];
    file.read_exact(&mut part).await?;
    Ok(part)
}

/// `relative` if it stays inside the store (plain names only): a message's or a row's path is
/// never trusted to point elsewhere.
fn checked(relative: &str) -> Result<&str, ChunkStoreError> {
    let inside = !relative.is_empty()
        && Path::new(relative)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(relative)
    } else {
        Err(ChunkStoreError::Outside(relative.to_owned()))
    }
}
