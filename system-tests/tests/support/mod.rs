//! End-to-end harness: a real gateway and real engines (in-process on port 0, or as child
//! processes that tests can SIGKILL) against the real services, with a database, stream prefix
//! and upload directory of the test's own.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
pub use ingest_testkit::api::md5_hex;
pub use ingest_testkit::api::Api;
pub use ingest_testkit::rows::original_rows;
pub use ingest_testkit::{files_under, read_streams};
use ingest_testkit::{random_name, wait_for, TestDb, TestStreams};
use tokio::sync::oneshot;

pub const CLIENT_ID: &str = "e2e-client";
pub const CLIENT_SECRET: &str = "e2e-secret-123";
pub const JWT_SECRET: &str = "e2e-signing-key-0123456789";

/// The resources one test owns.
pub struct TestEnv {
    pub db: TestDb,
    pub upload_dir: PathBuf,
    pub prefix: String,
    pub partitions: u16,
    _streams: TestStreams,
}

impl TestEnv {
    pub async fn new(partitions: u16) -> Self {
        let streams = TestStreams::new("e2e-chunks-", partitions);
        Self {
            db: TestDb::new().await.expect("test database"),
            upload_dir: std::env::temp_dir().join(random_name("ingest-e2e-")),
            prefix: streams.prefix.clone(),
            partitions,
            _streams: streams,
        }
    }

    fn shared_args(&self) -> Vec<String> {
        vec![
            format!("--database-url={}", self.db.url),
            format!("--upload-dir={}", self.upload_dir.display()),
            format!("--stream-prefix={}", self.prefix),
            format!("--partitions={}", self.partitions),
        ]
    }

    pub fn gateway_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = self.shared_args();
        args.extend([
            "--addr=127.0.0.1:0".to_owned(),
            format!("--jwt-secret={JWT_SECRET}"),
            format!("--bootstrap-client={CLIENT_ID}:{CLIENT_SECRET}"),
            format!("--ratelimit-prefix={}:", random_name("rl")),
            "--redis-timeout-ms=200".to_owned(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn engine_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = self.shared_args();
        args.extend([
            "--addr=127.0.0.1:0".to_owned(),
            "--lease-ttl-ms=1500".to_owned(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Waits until no chunk file is left (they are removed right after their commit).
    pub async fn wait_no_files(&self) {
        wait_for(
            "chunk files to be removed",
            Duration::from_secs(10),
            || async {
                let left = self.files_left();
                left.is_empty().then_some(())
            },
        )
        .await;
    }

    /// Chunk files still on disk (temporary ones included).
    pub fn files_left(&self) -> Vec<PathBuf> {
        files_under(&self.upload_dir)
    }
}

/// A task running until its stop signal.
pub struct Running {
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("task should not panic")
                .expect("should stop cleanly");
        }
    }
}

#[derive(Parser)]
struct GatewayArgs {
    #[command(flatten)]
    settings: gateway::GatewaySettings,
}

#[derive(Parser)]
struct EngineArgs {
    #[command(flatten)]
    settings: engine::EngineSettings,
}

pub async fn start_gateway(env: &TestEnv, extra: &[&str]) -> Running {
    let args = std::iter::once("gateway".to_owned()).chain(env.gateway_args(extra));
    let settings = GatewayArgs::parse_from(args).settings;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway::run(listener, settings, async {
        let _ = stopped.await;
    }));
    wait_for("gateway health", Duration::from_secs(30), || async move {
        let url = format!("http://{addr}/health");
        reqwest::get(url).await.ok().filter(|r| r.status() == 200)
    })
    .await;
    Running {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// The settings an engine of `env` runs with, as its command line would give them.
pub fn engine_settings(env: &TestEnv, extra: &[&str]) -> engine::EngineSettings {
    let args = std::iter::once("engine".to_owned()).chain(env.engine_args(extra));
    EngineArgs::parse_from(args).settings
}

pub async fn start_engine(env: &TestEnv, extra: &[&str]) -> Running {
    let settings = engine_settings(env, extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(engine::run(listener, settings, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// An engine as a child process (so a test can SIGKILL it).
pub struct EngineProcess {
    pub child: Child,
    pub id: String,
}

impl EngineProcess {
    pub fn spawn(binary: &Path, env: &TestEnv, id: &str, extra: &[&str]) -> Self {
        let mut args = env.engine_args(extra);
        args.push(format!("--engine-id={id}"));
        let child = Command::new(binary)
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("engine binary should start");
        Self {
            child,
            id: id.to_owned(),
        }
    }

    pub fn kill(&mut self) {
        // SIGKILL: no shutdown code runs, exactly like a crash.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (a `kill` name: TERM, STOP, CONT) to the engine.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill should run");
        assert!(status.success(), "kill -{signal} {} failed", self.id);
    }

    /// SIGTERM, then waits for the orderly shutdown (leases given back) to end.
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + timeout;
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not stop within {timeout:?} of SIGTERM",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client of the in-process gateway `gateway`, with a token of the harness's client.
pub async fn connect(gateway: &Running) -> Api {
    Api::at(format!("http://{}", gateway.addr), CLIENT_ID, CLIENT_SECRET).await
}

/// Engines holding a live lease, with how many partitions each, by name.
pub async fn live_lease_owners(client: &tokio_postgres::Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT owner, count(*) FROM partition_leases WHERE expires_at > now()
             GROUP BY owner ORDER BY owner",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect()
}

/// Rows of an upload in `transactions`, and how many (chunk, line) pairs repeat.
pub async fn table_counts(db: &TestDb, folder: &str) -> (i64, i64) {
    let client = db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(folder).unwrap();
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM transactions WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let duplicates: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT chunk_no, line_no FROM transactions WHERE upload_id = $1
             GROUP BY 1, 2 HAVING count(*) > 1) d",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    (rows, duplicates)
}

/// Rows in `table` of the test's database.
pub async fn count(db: &TestDb, table: &str) -> i64 {
    let client = db.client().await.unwrap();
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}
