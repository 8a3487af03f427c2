//! The gateway test harness: a real gateway on port 0 against the real services, with a
//! database, stream prefix, upload directory and rate-limit prefix of its own.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gateway::GatewaySettings;
use ingest_contract::chunk::ChunkMessage;
pub use ingest_testkit::api::{md5_hex, Api};
pub use ingest_testkit::rows::{original_rows, HEADER};
pub use ingest_testkit::{files_under, read_streams};
use ingest_testkit::{random_name, TestDb, TestStreams};
use tokio::sync::oneshot;

pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-secret-123";

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    settings: GatewaySettings,
}

/// Settings for a test gateway; `extra` flags override.
pub fn settings(
    db: &TestDb,
    upload_dir: &std::path::Path,
    prefix: &str,
    extra: &[&str],
) -> GatewaySettings {
    let mut args: Vec<String> = vec![
        "gateway".into(),
        format!("--database-url={}", db.url),
        "--addr=127.0.0.1:0".into(),
        format!("--upload-dir={}", upload_dir.display()),
        format!("--stream-prefix={prefix}"),
        "--partitions=2".into(),
        "--jwt-secret=test-signing-key-0123456789".into(),
        format!("--bootstrap-client={CLIENT_ID}:{CLIENT_SECRET}"),
        format!("--ratelimit-prefix={}:", random_name("rl")),
        "--redis-timeout-ms=200".into(),
    ];
    // A flag given in `extra` replaces the default above.
    args.retain(|arg| {
        let name = arg.split('=').next().unwrap_or_default();
        !extra.iter().any(|e| e.split('=').next() == Some(name))
    });
    args.extend(extra.iter().map(|s| s.to_string()));
    Wrapper::parse_from(args).settings
}

/// A running gateway.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub url: String,
    pub db: TestDb,
    pub upload_dir: PathBuf,
    pub prefix: String,
    streams: TestStreams,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestGateway {
    pub async fn start(extra: &[&str]) -> Self {
        let db = TestDb::new().await.expect("test database");
        let upload_dir = std::env::temp_dir().join(random_name("ingest-gw-"));
        // More streams than any test's `--partitions`, so all of them are deleted at the end.
        let streams = TestStreams::new("test-chunks-", 8);
        Self::start_on(db, upload_dir, streams, extra).await
    }

    /// Starts a gateway on existing resources (to restart one).
    pub async fn start_on(
        db: TestDb,
        upload_dir: PathBuf,
        streams: TestStreams,
        extra: &[&str],
    ) -> Self {
        let settings = settings(&db, &upload_dir, &streams.prefix, extra);
        assert!(settings.shared.partitions <= streams.partitions);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run(listener, settings, async {
            let _ = stopped.await;
        }));
        let app = Self {
            addr,
            url: format!("http://{addr}"),
            db,
            upload_dir,
            prefix: streams.prefix.clone(),
            streams,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        };
        let http = app.http.clone();
        let health = format!("{}/health", app.url);
        ingest_testkit::wait_for("gateway health", Duration::from_secs(30), || {
            let http = http.clone();
            let health = health.clone();
            async move {
                http.get(&health)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
            }
        })
        .await;
        app
    }

    /// Stops the gateway and hands back its resources.
    pub async fn stop(self) -> (TestDb, PathBuf, TestStreams) {
        let Self {
            db,
            upload_dir,
            streams,
            stop,
            task,
            ..
        } = self;
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(task) = task {
            task.await.unwrap().unwrap();
        }
        (db, upload_dir, streams)
    }

    pub async fn token(&self) -> String {
        self.token_for(CLIENT_ID, CLIENT_SECRET).await
    }

    /// A token of API client `client_id`.
    pub async fn token_for(&self, client_id: &str, secret: &str) -> String {
        ingest_testkit::api::token(&self.http, &self.url, client_id, secret).await
    }

    /// Adds API client `client_id` and returns a token of it.
    pub async fn token_of_new_client(&self, client_id: &str, secret: &str) -> String {
        let pool = gateway::server::database_pool(&self.db.url).await.unwrap();
        let secret = ingest_runtime::settings::Secret::new(secret);
        gateway::clients::ApiClients::new(pool)
            .upsert(client_id, &secret)
            .await
            .unwrap();
        self.token_for(client_id, secret.expose()).await
    }

    /// The API as the holder of `token`.
    pub fn api(&self, token: &str) -> Api {
        Api::with_token(&self.url, &self.http, token)
    }

    /// `POST /api/upload` without a body, as the original's client; the folder.
    pub async fn create_upload(&self, token: &str) -> String {
        self.api(token).create(serde_json::Value::Null).await
    }

    /// `POST /api/upload`, returning only the status.
    pub async fn create_upload_raw(&self, token: &str) -> u16 {
        let response = self.api(token).create_raw(serde_json::Value::Null).await;
        response.status().as_u16()
    }

    pub async fn put_chunk(
        &self,
        token: &str,
        folder: &str,
        n: i32,
        body: &'static [u8],
    ) -> reqwest::Response {
        self.api(token).put_raw(folder, n, body.to_vec()).await
    }

    pub async fn multipart(
        &self,
        token: &str,
        folder: &str,
        name: &str,
        body: Vec<u8>,
        md5: Option<String>,
    ) -> reqwest::Response {
        self.api(token).multipart(folder, name, body, md5).await
    }

    pub async fn status(&self, token: &str, folder: &str) -> serde_json::Value {
        let response = self
            .api(token)
            .get_raw(&format!("/api/upload/{folder}"))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn status_raw(&self, token: &str, folder: &str) -> u16 {
        let response = self
            .api(token)
            .get_raw(&format!("/api/upload/{folder}"))
            .await;
        response.status().as_u16()
    }

    /// Files under the upload directory (temporary `.part` files included).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        files_under(&self.upload_dir)
    }

    pub async fn ledger_rows(&self) -> i64 {
        self.count("chunks").await
    }

    /// Rows in `table` (the test's own database).
    pub async fn count(&self, table: &str) -> i64 {
        let client = self.db.client().await.unwrap();
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Every message on the test's partition streams, read until `count` arrived.
    pub async fn stream_messages(&self, partitions: u16, count: usize) -> Vec<ChunkMessage> {
        ingest_testkit::read_streams(&self.prefix, partitions, count).await
    }
}
