//! The system under test as separate processes: gateways and engines a test can SIGKILL, wired
//! to the shared services or to private ones, with a database, stream prefix, upload directory
//! and work directory (data files, process logs) of the test's own.
//!
//! The engine child is the real `engine` binary. The gateway child is this test binary started
//! again to run only the `gateway_child_process` entry (see `faults.rs`): it runs
//! `gateway::run` from the same build as the test, which the `gateway` binary of a stale
//! `target/` might not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use ingest_runtime::broker::BrokerAddress;
use ingest_testkit::{delete_streams, random_name, wait_for, TestBucket, TestDb};

use super::services::free_port;

pub const CLIENT_ID: &str = "faults-client";
pub const CLIENT_SECRET: &str = "faults-secret-123";
const JWT_SECRET: &str = "faults-signing-key-0123456789";
const ENGINE: &str = env!("CARGO_BIN_EXE_system-engine");
/// Where the gateway child finds its arguments (one per line).
pub const GATEWAY_ARGS_ENV: &str = "FAULTS_GATEWAY_ARGS";
/// The name of the test that is the gateway child's entry point.
const GATEWAY_ENTRY: &str = "faults::gateway_child_process";

/// Where everything of one test lives.
pub struct Stack {
    pub database_url: String,
    pub redis_url: String,
    pub broker_url: String,
    /// Data files and process logs; removed at the end unless the test failed.
    pub work: PathBuf,
    pub upload_dir: PathBuf,
    pub prefix: String,
    pub partitions: u16,
    pub gateway_port: u16,
    /// Chunks in a bucket instead of the shared `upload_dir` ([`Stack::with_bucket`]): each
    /// process then has a spool of its own under `upload_dir`.
    pub bucket: Option<TestBucket>,
    _db: Option<TestDb>,
}

impl Stack {
    /// A stack on the shared services, with a fresh database.
    pub async fn shared(partitions: u16) -> Self {
        let db = TestDb::new().await.expect("test database");
        let mut stack = Self::on_database(db.url.clone(), partitions);
        stack._db = Some(db);
        stack
    }

    /// A stack whose database is `database_url` (created and migrated by the binaries).
    pub fn on_database(database_url: String, partitions: u16) -> Self {
        let work = std::env::temp_dir().join(random_name("ingest-faults-"));
        std::fs::create_dir_all(&work).expect("work directory");
        Self {
            database_url,
            redis_url: "redis://127.0.0.1:6379".into(),
            // The shared broker, unless `FAULTS_RABBITMQ_STREAM_URL` names another.
            broker_url: std::env::var("FAULTS_RABBITMQ_STREAM_URL")
                .unwrap_or_else(|_| "rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f".into()),
            upload_dir: work.join("uploads"),
            work,
            prefix: random_name("faults-"),
            partitions,
            gateway_port: free_port(),
            bucket: None,
            _db: None,
        }
    }

    /// Keeps chunks in a new bucket reached at `endpoint` (the server's own address, or a
    /// proxy's in front of it), not in a shared directory.
    pub async fn with_bucket(mut self, endpoint: Option<String>) -> Self {
        self.bucket = Some(TestBucket::new(endpoint).await);
        self
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// The settings every process gets; `name`'s own spool when chunks are in a bucket.
    fn shared_args(&self, name: &str) -> Vec<String> {
        let mut args = vec![
            format!("--database-url={}", self.database_url),
            format!("--rabbitmq-stream-url={}", self.broker_url),
            format!("--stream-prefix={}", self.prefix),
            format!("--partitions={}", self.partitions),
        ];
        match &self.bucket {
            None => args.push(format!("--upload-dir={}", self.upload_dir.display())),
            Some(bucket) => args.extend([
                format!("--upload-dir={}", self.upload_dir.join(name).display()),
                format!("--chunk-store={}", bucket.setting),
            ]),
        }
        args
    }

    /// The bucket's `AWS_*` variables for a child process.
    fn bucket_env(&self, command: &mut Command) {
        if let Some(bucket) = &self.bucket {
            command.envs(bucket.env());
        }
    }

    /// Starts a gateway process on the stack's port and waits until it answers.
    pub async fn spawn_gateway(&self, name: &str) -> Proc {
        self.spawn_gateway_on(name, self.gateway_port).await
    }

    /// Starts a gateway process on `port` and waits until it answers.
    pub async fn spawn_gateway_on(&self, name: &str, port: u16) -> Proc {
        let mut args = self.shared_args(name);
        args.extend([
            format!("--addr=127.0.0.1:{port}"),
            format!("--jwt-secret={JWT_SECRET}"),
            format!("--bootstrap-client={CLIENT_ID}:{CLIENT_SECRET}"),
            format!("--redis-url={}", self.redis_url),
            format!("--ratelimit-prefix={}:", self.prefix),
            "--redis-timeout-ms=200".into(),
            // Files of killed requests are swept after 2 (temporary) and 10 (chunk) deadlines.
            "--body-frame-timeout-ms=1000".into(),
            // Faults, not the rate limiter, are under test here.
            "--rate-limit-per-sec=100000".into(),
            "--rate-limit-burst=100000".into(),
        ]);
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        command
            .args([GATEWAY_ENTRY, "--exact", "--ignored", "--nocapture"])
            .env(GATEWAY_ARGS_ENV, args.join("\n"));
        self.bucket_env(&mut command);
        let proc = Proc::spawn(command, &self.log(name), name);
        let url = format!("http://127.0.0.1:{port}/health");
        wait_for("the gateway to answer", Duration::from_secs(60), || async {
            let ok = reqwest::get(&url).await.ok()?.status() == 200;
            ok.then_some(())
        })
        .await;
        proc
    }

    /// Starts an engine process named `id` in the group.
    pub fn spawn_engine(&self, id: &str) -> Proc {
        let mut command = Command::new(ENGINE);
        self.bucket_env(&mut command);
        command.args(self.shared_args(id)).args([
            "--addr=127.0.0.1:0".to_owned(),
            "--lease-ttl-ms=1500".to_owned(),
            format!("--engine-id={id}"),
        ]);
        Proc::spawn(command, &self.log(id), id)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.work.join(format!("{name}.log"))
    }

    /// A new connection to the stack's database.
    pub async fn db(&self) -> tokio_postgres::Client {
        ingest_runtime::db::connect(&self.database_url)
            .await
            .expect("the stack's database")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Ok(broker) = BrokerAddress::parse(&self.broker_url) {
            delete_streams(broker, &self.prefix, self.partitions);
        }
        if std::thread::panicking() {
            eprintln!("fault test failed: logs are in {}", self.work.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

/// A child process, SIGKILLed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    fn spawn(mut command: Command, log: &Path, name: &str) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("process log");
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("FAULTS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running (it has not exited on its own).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Parser)]
struct GatewayArgs {
    #[command(flatten)]
    settings: gateway::GatewaySettings,
}

/// The gateway child's main: serves until it is killed, or exits when its parent is gone.
pub fn gateway_child_main(args: &str) {
    let argv = std::iter::once("gateway").chain(args.lines());
    let settings = GatewayArgs::parse_from(argv).settings;
    ingest_runtime::telemetry::init_tracing(settings.log_format);
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        // A test that died (even by SIGKILL) must not leave its gateway behind.
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(250));
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(settings.addr).await?;
            gateway::run(listener, settings, std::future::pending()).await
        })
        .expect("the gateway should run until it is killed");
}
