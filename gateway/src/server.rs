//! Starting and stopping the gateway: state set-up, the accept loop, graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use ingest_rows::registry::Registry;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use ingest_runtime::{db, telemetry};

use crate::app::{handle, AppState};
use crate::auth::{system_clock, Clock, Tokens};
use crate::clients::ApiClients;
use crate::expiry;
use crate::orphans;
use crate::publish::Publisher;
use crate::ratelimit::RateLimiter;
use crate::routes::uploads::Uploads;
use crate::settings::{GatewaySettings, DEV_JWT_SECRET};
use crate::settle::Settle;

/// Prepares the database (created and migrated if needed) and returns a connection pool.
pub async fn database_pool(database_url: &str) -> anyhow::Result<deadpool_postgres::Pool> {
    db::prepare(database_url).await?;
    let (config, tls) = db::parse_url(database_url)?;
    let manager = deadpool_postgres::Manager::new(config, tls);
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(32)
        .build()?)
}

/// Builds the shared state: database, clients, tokens, rate limiter and publisher.
pub async fn build_state(settings: GatewaySettings, clock: Clock) -> anyhow::Result<Arc<AppState>> {
    if settings.jwt_secret.is_none() {
        tracing::warn!(
            "INGEST_JWT_SECRET is not set: signing tokens with the PUBLIC DEVELOPMENT KEY {DEV_JWT_SECRET:?}; \
             anyone can forge tokens. Set INGEST_JWT_SECRET in any real deployment"
        );
    }
    if settings.webhook_url.is_some() && settings.webhook_secret.is_none() {
        anyhow::bail!(
            "INGEST_WEBHOOK_URL is set but INGEST_WEBHOOK_SECRET is not: hooks must be signed"
        );
    }
    let datasets = Arc::new(
        Registry::from_settings(settings.shared.datasets_dir.as_deref())
            .context("INGEST_DATASETS_DIR")?,
    );
    let pool = database_pool(&settings.shared.database_url).await?;
    let clients = ApiClients::new(pool.clone());
    if let Some((id, secret)) = &settings.bootstrap_client {
        let created = clients
            .bootstrap(id, secret)
            .await
            .context("INGEST_BOOTSTRAP_CLIENT")?;
        if created {
            tracing::info!(client_id = %id, "bootstrap client created");
        } else {
            tracing::info!(client_id = %id, "bootstrap client exists; left as it is (`gateway client add` replaces its secret)");
        }
    }
    tokio::fs::create_dir_all(&settings.shared.upload_dir)
        .await
        .with_context(|| format!("INGEST_UPLOAD_DIR {}", settings.shared.upload_dir.display()))?;
    let tokens = Tokens::new(
        &settings.signing_secret(),
        settings.jwt_previous_secret.as_ref(),
        settings.token_ttl_secs,
        clock,
    );
    let name = settings
        .gateway_id
        .clone()
        .unwrap_or_else(|| format!("gateway-{}", uuid::Uuid::new_v4().simple()));
    let publisher = Publisher::new(
        &settings.shared,
        name,
        pool.clone(),
        settings.publish_timeout,
    );
    // The broker may be down at start: uploads answer 503 until it is back.
    match publisher.connect().await {
        Ok(_) => publisher.warm_up().await,
        Err(err) => tracing::warn!(error = %err, "stream broker not reachable yet"),
    }
    let limiter = RateLimiter::new(settings.rate_limits()).await;
    let chunks = settings.shared.chunk_store()?;
    tracing::info!(store = %chunks.describe(), "chunk store");
    Ok(Arc::new(AppState {
        chunks: Arc::new(chunks),
        tokens,
        clients,
        uploads: Uploads::new(pool.clone(), &settings, Arc::clone(&datasets)),
        openapi: bytes::Bytes::from(crate::openapi::with_datasets(&datasets)),
        datasets,
        publisher,
        limiter,
        metrics: {
            let handle = telemetry::install_metrics();
            crate::metrics::register();
            handle
        },
        pool,
        downloads: Arc::new(tokio::sync::Semaphore::new(
            crate::routes::rejected::MAX_AT_ONCE,
        )),
        bodies: Arc::new(tokio::sync::Semaphore::new(
            settings.max_bodies_at_once as usize,
        )),
        settings,
    }))
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish within
/// the shutdown deadline, and closes the producers.
pub async fn run(
    listener: TcpListener,
    settings: GatewaySettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = build_state(settings, system_clock()).await?;
    serve(listener, state, shutdown).await
}

/// Waits, at most `limit`, until the client has sent enough to tell HTTP/1 from HTTP/2:
/// hyper-util's version detection has no timeout of its own (the header timeout starts after
/// it), so a client that connects and sends nothing, or stops inside the HTTP/2 preface, would
/// hold its connection for good. `false`: close it.
async fn speaks_in_time(stream: &TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + limit;
    let mut head = [0u8; PREFACE.len()];
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut head)).await {
            Ok(Ok(peeked)) => peeked,
            Ok(Err(_)) | Err(_) => return false,
        };
        if peeked == 0 {
            return false; // Closed.
        }
        if peeked == PREFACE.len() || head[..peeked] != PREFACE[..peeked] {
            return true;
        }
        // Part of the preface: `peek` answers at once while nothing more comes, so wait a little.
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`run`] with a state built by the caller (tests inject a clock this way).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.header_timeout)
        .max_buf_size(64 * 1024);
    // A peer that stops answering pings is gone: its connection (and streams) are closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    let _expiry = expiry::spawn(&state);
    let _settle = Settle::new(
        state.pool.clone(),
        Duration::from_secs(state.settings.upload_settle_secs),
    )
    .run_periodically();
    let _orphans = orphans::spawn(&state);
    let _hooks = crate::hooks::spawn(&state);
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    if !speaks_in_time(&stream, state.settings.header_timeout).await {
                        return;
                    }
                    let service = service_fn(move |request| handle(state.clone(), peer, request));
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(err) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(state.settings.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed with requests still in flight");
    }
    state.publisher.close().await;
    tracing::info!("gateway stopped");
    Ok(())
}
