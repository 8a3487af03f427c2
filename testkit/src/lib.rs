//! Test harness shared by every crate's integration tests.
//!
//! Each test owns its resources: a database of its own built from the real migrations (dropped
//! when the [`TestDb`] is dropped; leftovers of crashed runs older than an hour are swept), partition
//! streams under a random prefix (deleted when the [`TestStreams`] is dropped) and Redis key
//! prefixes. Tests run in parallel without seeing each other. Waiting
//! is done by polling with a deadline ([`wait_for`]), never by fixed sleeps.
//!
//! The services are the local ones (`scripts/services` makes sure they run); the admin database
//! URL can be changed with `INGEST_TEST_DATABASE_URL`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use rabbitmq_stream_client::types::OffsetSpecification;
use rand::Rng;
use tokio_postgres::Client;

use ingest_contract::chunk::ChunkMessage;
use ingest_contract::streams::stream_name;
use ingest_runtime::broker::BrokerAddress;
use ingest_runtime::db;

pub mod api;
pub mod browser;
pub mod proxy;
pub mod rows;
pub mod xlsx;

const TEST_DB_PREFIX: &str = "ingest_test_";

/// URL of the maintenance database tests create their databases from.
pub fn admin_url() -> String {
    std::env::var("INGEST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The local stream broker.
pub fn broker() -> BrokerAddress {
    BrokerAddress::parse("rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f")
        .expect("the local broker URL should parse")
}

/// A random lowercase name with a prefix, for streams, key prefixes and directories.
pub fn random_name(prefix: &str) -> String {
    let suffix: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(10)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("{prefix}{suffix}")
}

/// Partition streams of a test's own (a random prefix), deleted from the broker when dropped:
/// every stream a broker keeps holds open files, and a broker that runs out of them stops
/// working for every test on the machine.
pub struct TestStreams {
    pub prefix: String,
    pub partitions: u16,
}

impl TestStreams {
    pub fn new(prefix: &str, partitions: u16) -> Self {
        Self {
            prefix: random_name(prefix),
            partitions,
        }
    }
}

impl Drop for TestStreams {
    fn drop(&mut self) {
        delete_streams(broker(), &self.prefix, self.partitions);
    }
}

/// Deletes the partition streams `prefix-0..partitions` from `broker`, ignoring the ones that do
/// not exist. Blocking: it runs on a thread with a runtime of its own, so it can be called from
/// `Drop` inside or outside an async context.
pub fn delete_streams(broker: BrokerAddress, prefix: &str, partitions: u16) {
    let streams: Vec<String> = (0..partitions)
        .map(|partition| stream_name(prefix, partition))
        .collect();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let connect = tokio::time::timeout(Duration::from_secs(5), broker.connect());
            let environment = connect.await.ok()?.ok()?;
            for stream in &streams {
                let _ = environment.delete_stream(stream).await;
            }
            Some(())
        })
    })
    .join();
}

/// A database of the test's own, migrated, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new() -> anyhow::Result<Self> {
        let created = TestDb::empty().await?;
        db::prepare(&created.url).await?;
        Ok(created)
    }

    /// Creates a fresh database without applying migrations (for migration tests).
    pub async fn empty() -> anyhow::Result<Self> {
        let admin = db::connect(&admin_url()).await?;
        sweep_stale(&admin).await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let name = format!("{TEST_DB_PREFIX}{now}_{}", random_name(""));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        let url = with_dbname(&admin_url(), &name);
        Ok(Self { name, url })
    }

    /// A new connection to the test database.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(db::connect(&self.url).await?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees: use a runtime of our own on a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let admin = db::connect(&admin_url()).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop test database {}: {err}", self.name);
        }
    }
}

fn with_dbname(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let root = base.rsplit_once('/').map(|(root, _)| root).unwrap_or(base);
    format!("{root}/{name}")
}

/// Drops test databases left by runs that crashed more than an hour ago.
async fn sweep_stale(admin: &Client) {
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'ingest\\_test\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for row in rows {
        let name: String = row.get(0);
        let created = name[TEST_DB_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|secs| secs + 3600 < now) {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file below `dir` (none when it does not exist), for checks that nothing was left behind.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// The S3-compatible server tests use: `INGEST_TEST_S3_ENDPOINT`, or the `moto_server` that
/// `scripts/services` starts.
pub fn s3_endpoint() -> String {
    std::env::var("INGEST_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9100".into())
}

/// The next positional argument of an example, parsed, or `default` when there is none.
pub fn next_arg<T>(args: &mut impl Iterator<Item = String>, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(default))
}

/// [`s3_endpoint`]'s `host:port` (what a proxy in front of it connects to).
pub fn s3_address() -> String {
    s3_endpoint().trim_start_matches("http://").to_owned()
}

/// A bucket of the test's own on [`s3_endpoint`] (the test server takes any credentials).
pub struct TestBucket {
    /// What the processes reach it at (the server, or a proxy in front of it).
    pub endpoint: String,
    /// `INGEST_CHUNK_STORE`.
    pub setting: String,
}

impl TestBucket {
    /// Makes a new bucket, reached at `endpoint` (default: the server itself).
    pub async fn new(endpoint: Option<String>) -> Self {
        let server = s3_endpoint();
        let name = random_name("test-").to_lowercase().replace('_', "-");
        create_bucket(&server, &name)
            .await
            .unwrap_or_else(|err| panic!("the S3 server at {server} (scripts/services): {err}"));
        Self {
            endpoint: endpoint.unwrap_or(server),
            setting: format!("s3://{name}/chunks"),
        }
    }

    /// The bucket's settings as `AWS_*` names in lower case, for `endpoint`.
    pub fn options(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", endpoint.to_owned()),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// The `AWS_*` environment of a process that uses the bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options(&self.endpoint)
            .into_iter()
            .map(|(key, value)| (key.to_uppercase(), value))
            .collect()
    }

    /// The bucket as a chunk store reached at the server itself (not through a proxy), for the
    /// test's own puts, removals and listings.
    pub fn store(&self) -> ingest_runtime::chunk_store::ChunkStore {
        let options = self.options(&s3_endpoint());
        let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ingest_runtime::chunk_store::ChunkStore::open_with(
            Some(&self.setting),
            Path::new("/nonexistent"),
            &options,
        )
        .expect("the test bucket's settings")
    }

    /// The chunks the bucket holds now (asked of the server itself).
    pub async fn chunks(&self) -> Vec<String> {
        let listed = self.store().list().await.expect("a bucket lists");
        let files = listed.expect("the test bucket should answer");
        files.into_iter().map(|file| file.relative).collect()
    }
}

/// `PUT /<name>` on the S3 server (a test server needs no signature to make a bucket).
async fn create_bucket(server: &str, name: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = server.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let request = format!(
        "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let status = String::from_utf8_lossy(&answer);
    let status = status.lines().next().unwrap_or_default();
    if status.contains(" 200 ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "creating bucket {name}: {status}"
        )))
    }
}

/// Reads the partition streams from the start until `count` messages arrived (10 s deadline).
pub async fn read_streams(prefix: &str, partitions: u16, count: usize) -> Vec<ChunkMessage> {
    let env = broker().connect().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut consumers = Vec::new();
    for partition in 0..partitions {
        let mut consumer = env
            .consumer()
            .offset(OffsetSpecification::First)
            .build(&stream_name(prefix, partition))
            .await
            .unwrap();
        let tx = tx.clone();
        consumers.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let data = delivery.message().data().unwrap_or_default().to_vec();
                if tx.send(ChunkMessage::decode(&data).unwrap()).await.is_err() {
                    break;
                }
            }
        }));
    }
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while messages.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(message)) => messages.push(message),
            _ => break,
        }
    }
    for consumer in consumers {
        consumer.abort();
    }
    messages
}
