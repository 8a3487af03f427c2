//! The chunk store read as the engine reads it: whole or by byte range, from a directory and
//! from a real S3 API server (`scripts/services`), and a bucket body that breaks off mid-way.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use ingest_runtime::chunk_store::{ChunkReader, ChunkStore};
use ingest_testkit::proxy::CuttableProxy;
use ingest_testkit::TestBucket;

/// `len` bytes that differ from their neighbours, so a range read from the wrong place shows.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Stores `bytes` in `store` under a new name of the ledger's shape, through `spool`.
async fn stored(store: &ChunkStore, spool: &Path, bytes: &[u8]) -> String {
    let name = format!(
        "{}/{}.csv",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4().simple()
    );
    let local = spool.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::write(&local, bytes).unwrap();
    if let ChunkStore::Directory(dir) = store {
        std::fs::create_dir_all(dir.join(name.split('/').next().unwrap())).unwrap();
    }
    store.put_file(&local, &name).await.unwrap();
    name
}

/// Everything `reader` gives, read on a blocking thread as the validator reads it.
async fn read_all(mut reader: ChunkReader) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map(|_| bytes)
    })
    .await
    .unwrap()
}

fn bucket_store(bucket: &TestBucket, endpoint: &str, spool: &Path) -> ChunkStore {
    let options = bucket.options(endpoint);
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ChunkStore::open_with(Some(&bucket.setting), spool, &options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_reads_whole_and_by_range_from_a_directory_and_from_a_bucket() {
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bucket = TestBucket::new(None).await;
    let stores = [
        ChunkStore::Directory(dir.path().to_owned()),
        bucket_store(&bucket, &ingest_testkit::s3_endpoint(), spool.path()),
    ];
    // Over S3's 5 MiB part: the object is a multipart upload.
    let bytes = content(12 * 1024 * 1024 + 17);
    let len = bytes.len() as u64;
    for store in &stores {
        let what = store.describe();
        let name = stored(store, spool.path(), &bytes).await;
        assert_eq!(store.size(&name).await.unwrap(), len, "{what}");
        let whole = read_all(store.reader(&name, None).await.unwrap()).await;
        assert!(whole.unwrap() == bytes, "{what}: the whole chunk");
        for range in [
            0..1,
            5..len - 3,
            6 * 1024 * 1024..7 * 1024 * 1024,
            len - 10..len,
        ] {
            let reader = store.reader(&name, Some(range.clone())).await.unwrap();
            let read = read_all(reader).await.unwrap();
            let (start, end) = (range.start as usize, range.end as usize);
            assert!(read == bytes[start..end], "{what}: bytes {range:?}");
        }
        let gone = format!(
            "{}/{}.csv",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4().simple()
        );
        let missing = store.reader(&gone, None).await.unwrap_err();
        assert!(missing.is_missing(), "{what}: {missing}");
        assert!(store.size(&gone).await.unwrap_err().is_missing(), "{what}");
        let outside = store.reader("../etc/passwd", None).await.unwrap_err();
        assert!(outside.is_outside(), "{what}: {outside}");
    }
}

/// An object of `len` bytes in a new bucket, and a reader of it through a proxy that sends its
/// body at `rate` bytes a second.
struct Throttled {
    proxy: CuttableProxy,
    bytes: Vec<u8>,
    reader: ChunkReader,
    _spool: tempfile::TempDir,
}

async fn throttled(len: usize, rate: u64) -> Throttled {
    let proxy = CuttableProxy::throttled(ingest_testkit::s3_address(), rate).await;
    let spool = tempfile::tempdir().unwrap();
    let bucket = TestBucket::new(None).await;
    let bytes = content(len);
    let name = stored(&bucket.store(), spool.path(), &bytes).await;
    let store = bucket_store(&bucket, &proxy.url(), spool.path());
    let reader = store.reader(&name, None).await.unwrap();
    Throttled {
        proxy,
        bytes,
        reader,
        _spool: spool,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_body_that_breaks_off_mid_way_is_a_read_error_that_says_so() {
    // 2 MiB a second: the 8 MiB body is still arriving when the proxy is cut.
    let Throttled {
        proxy,
        bytes,
        reader,
        _spool,
    } = throttled(8 * 1024 * 1024, 2 << 20).await;
    let broken = reader.broken_off();
    let (started, mut begun) = tokio::sync::oneshot::channel();
    let reading = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut first = vec![0; 256 * 1024];
        reader.read_exact(&mut first).unwrap();
        started.send(()).unwrap();
        let mut rest = Vec::new();
        (reader.read_to_end(&mut rest), first.len() + rest.len())
    });
    tokio::time::timeout(Duration::from_secs(10), &mut begun)
        .await
        .expect("the body starts")
        .unwrap();
    assert!(broken.take().is_none(), "nothing broke off yet");
    proxy.cut();
    let (result, read) = reading.await.unwrap();
    assert!(
        result.is_err(),
        "a body cut after {read} bytes reads as an error"
    );
    assert!(
        read < bytes.len(),
        "the cut came mid-way ({read} bytes read)"
    );
    let err = broken.take().expect("the reader says the body broke off");
    assert!(
        !err.is_missing(),
        "a broken body is not a missing chunk: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_ends_early_is_a_read_error_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::Directory(dir.path().to_owned());
    let name = stored(&store, dir.path(), &content(1024 * 1024)).await;
    let reader = store.reader(&name, None).await.unwrap();
    let broken = reader.broken_off();
    // Cut short after it was opened: the reader knows the size it had.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(&name))
        .unwrap();
    file.set_len(1000).unwrap();
    let err = read_all(reader).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    let why = broken.take().expect("the reader says the read broke off");
    assert!(
        why.to_string()
            .contains("ended after 1000 of its 1048576 bytes"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_body_read_for_longer_than_the_http_clients_30_s_default_arrives_whole() {
    // 512 KiB a second: 16 MiB take 32 s, as a slow COPY reads a big chunk (the object store
    // client's default deadline on a whole request is 30 s).
    // Held, not dropped: the proxy (and its throttle) must outlive the read.
    let Throttled {
        bytes,
        reader,
        proxy: _proxy,
        _spool,
    } = throttled(16 * 1024 * 1024, 512 << 10).await;
    let broken = reader.broken_off();
    let started = std::time::Instant::now();
    let read = read_all(reader).await;
    let took = started.elapsed();
    assert!(took > Duration::from_secs(30), "the read took {took:?}");
    let why = broken.take().map(|err| err.to_string());
    assert!(read.is_ok(), "{:?}: {why:?}", read.err());
    assert!(read.unwrap() == bytes, "the whole body, intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_older_engines_left_in_the_spool_are_cleared_and_nothing_else() {
    let spool = tempfile::tempdir().unwrap();
    let bucket = TestBucket::new(None).await;
    let store = bucket_store(&bucket, &ingest_testkit::s3_endpoint(), spool.path());
    let old = spool.path().join(".fetched");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("upload-chunk.csv.0123"), "a killed load's copy").unwrap();
    let receiving = spool.path().join("an-upload");
    std::fs::create_dir_all(&receiving).unwrap();
    store.clear_old_copies().await;
    assert!(!old.exists(), "the old copies are gone");
    assert!(receiving.exists(), "the rest of the spool stays");
}
