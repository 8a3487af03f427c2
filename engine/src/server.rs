//! Running an engine process: prepare the database and streams, serve the probes, and supervise
//! one processor per owned partition as the leases come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use ingest_runtime::{broker, db, telemetry};

use crate::cleanup;
use crate::consumer;
use crate::http::Probe;
use crate::lag::PartitionLag;
use crate::lease::Leases;
use crate::loader::Loader;
use crate::metrics::{self, Stage};
use crate::partitions::Partitions;
use crate::pieces::PieceSessions;
use crate::processor::{run_partition, Shared};
use crate::registry::Registry;
use crate::session::Sessions;
use crate::settings::EngineSettings;
use crate::tables::{self, TableError};
use crate::validate::Limits;

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs the engine until `shutdown` resolves; then stops the processors (in-flight chunks
/// commit or roll back within the shutdown deadline) and gives its leases back.
pub async fn run(
    listener: TcpListener,
    settings: EngineSettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let owner = settings
        .engine_id
        .clone()
        .unwrap_or_else(|| format!("engine-{}", uuid::Uuid::new_v4().simple()));
    let sessions = Sessions::new(
        &settings.shared.database_url,
        &settings.consumer_group,
        &owner,
        settings.lease_ttl,
    );
    let registry = Registry::from_settings(settings.shared.datasets_dir.as_deref())?;
    let (mut control, partitions) = start_up(&settings, &sessions, &registry).await?;
    let partitions = Arc::new(partitions);
    if let Some(archive) = &settings.archive_dir {
        tokio::fs::create_dir_all(archive).await?;
    }
    let chunks = settings.shared.chunk_store()?;
    chunks.clear_old_copies().await;
    tracing::info!(store = %chunks.describe(), "chunk store");
    let shared = Arc::new(Shared {
        sessions: sessions.clone(),
        broker: consumer::client_options(&settings.shared.rabbitmq_stream_url),
        stream_prefix: settings.shared.stream_prefix.clone(),
        group: settings.consumer_group.clone(),
        owner: owner.clone(),
        loader: Loader {
            chunks: Arc::new(chunks),
            archive_dir: settings.archive_dir.clone(),
            limits: Limits {
                max_line_bytes: settings.max_line_bytes,
                ..Limits::default()
            },
            registry: Arc::new(registry),
            partitions,
            copy_slots: Semaphore::new(usize::from(settings.copy_connections)),
            piece_bytes: settings.piece_bytes,
            piece_sessions: PieceSessions::new(sessions, settings.copy_connections),
        },
    });
    let stop_http = CancellationToken::new();
    let lag = Arc::new(PartitionLag::new(settings.lease_ttl));
    let probe = Arc::new(Probe {
        database_url: settings.shared.database_url.clone(),
        broker: settings.shared.rabbitmq_stream_url.clone(),
        metrics: telemetry::install_metrics(),
        lag: lag.clone(),
    });
    // Before the first scrape can happen: every series is listed from it, at zero.
    metrics::register();
    tracing::info!(addr = %listener.local_addr()?, engine = %owner, "engine listening");
    let http_task = tokio::spawn(ingest_runtime::probes::serve(
        listener,
        probe,
        stop_http.clone(),
    ));

    let leases = Leases {
        group: settings.consumer_group.clone(),
        owner,
        partitions: settings.shared.partitions,
        ttl: settings.lease_ttl,
    };
    supervise(
        &shared,
        &leases,
        &lag,
        &mut control,
        settings.lease_ttl / 3,
        shutdown,
        settings.shutdown_timeout,
    )
    .await;
    if let Err(err) = leases.leave(&control).await {
        tracing::warn!(error = %err, "could not give the leases back; they expire on their own");
    }
    stop_http.cancel();
    let _ = http_task.await;
    tracing::info!("engine stopped");
    Ok(())
}

/// How long start-up is retried before the engine gives up (a wrong URL or password fails after
/// this, a database or broker restarting while the engine starts does not end it).
const START_UP_PATIENCE: Duration = Duration::from_secs(60);

/// Migrates the database, makes the streams and the datasets' tables, loads the partition cache
/// and opens the lease session, retrying with backoff (but not a table that does not match its
/// definition: that needs a person).
async fn start_up(
    settings: &EngineSettings,
    sessions: &Sessions,
    registry: &Registry,
) -> anyhow::Result<(tokio_postgres::Client, Partitions)> {
    let deadline = tokio::time::Instant::now() + START_UP_PATIENCE;
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut migrated = db::prepare(&settings.shared.database_url).await?;
            prepare_streams(settings).await?;
            tables::ensure(&mut migrated, registry).await?;
            let partitions = Partitions::load(&migrated, registry).await?;
            let control = sessions.lease().await?;
            anyhow::Ok((control, partitions))
        };
        match attempt.await {
            Ok(started) => return Ok(started),
            Err(err) if matches!(err.downcast_ref(), Some(TableError::Mismatch { .. })) => {
                return Err(err);
            }
            Err(err) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %err, retry_in = ?backoff, "engine start-up failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err.context("engine start-up kept failing")),
        }
    }
}

/// Creates the partition streams that are missing (the processors connect on their own).
async fn prepare_streams(settings: &EngineSettings) -> anyhow::Result<()> {
    let environment = settings.shared.rabbitmq_stream_url.connect().await?;
    broker::ensure_streams(
        &environment,
        &settings.shared.stream_prefix,
        settings.shared.partitions,
        &settings.shared.retention(),
    )
    .await?;
    Ok(())
}

/// The heartbeat loop: renews leases, keeps one processor running per owned partition and
/// refreshes the owned partitions' backlog for `/metrics`.
async fn supervise(
    shared: &Arc<Shared>,
    leases: &Leases,
    lag: &PartitionLag,
    control: &mut tokio_postgres::Client,
    every: Duration,
    shutdown: impl Future<Output = ()>,
    deadline: Duration,
) {
    let mut running: BTreeMap<i32, Running> = BTreeMap::new();
    let mut stopping: BTreeMap<i32, JoinHandle<()>> = BTreeMap::new();
    let mut ticker = tokio::time::interval(every);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        // Processors that ended on their own (errors) are started again if still owned.
        running.retain(|_, r| !r.task.is_finished());
        stopping.retain(|_, task| !task.is_finished());
        let releasable: BTreeSet<i32> = leases_not_running(&running, &stopping, leases.partitions);
        if control.is_closed() {
            // PostgreSQL restarted or the connection broke: without a new one no lease is ever
            // renewed again and every processor stays stopped.
            // (Also how a fenced process finds out: a peer ended its sessions.)
            match shared.sessions.lease().await {
                Ok(client) => *control = client,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot reconnect the lease connection");
                    continue;
                }
            }
        }
        let beat = match leases.beat(control, &releasable).await {
            Ok(beat) => beat,
            Err(err) => {
                metrics::error(Stage::Lease);
                tracing::warn!(error = %err, "lease heartbeat failed");
                continue;
            }
        };
        let owned: Vec<i32> = beat.owned.iter().copied().collect();
        let loader = &shared.loader;
        if let Err(err) = cleanup::sweep(
            control,
            &loader.chunks,
            loader.archive_dir.as_deref(),
            &owned,
        )
        .await
        {
            tracing::warn!(error = %err, "chunk file sweep failed");
        }
        let lost: Vec<i32> = running
            .keys()
            .filter(|p| !beat.owned.contains(p) || beat.to_stop.contains(p))
            .copied()
            .collect();
        for partition in lost {
            if let Some(r) = running.remove(&partition) {
                r.cancel.cancel();
                stopping.insert(partition, r.task);
            }
        }
        for &partition in beat.owned.difference(&beat.to_stop) {
            if running.contains_key(&partition) || stopping.contains_key(&partition) {
                continue;
            }
            let cancel = CancellationToken::new();
            let task = tokio::spawn({
                let (shared, cancel) = (shared.clone(), cancel.clone());
                async move {
                    if let Err(err) = run_partition(shared, partition, cancel).await {
                        tracing::warn!(partition, error = %err, "partition processor ended");
                    }
                }
            });
            running.insert(partition, Running { cancel, task });
        }
        lag.refresh(control, &beat.owned).await;
    }
    tracing::info!("shutting down: stopping partition processors");
    for r in running.values() {
        r.cancel.cancel();
    }
    let tasks = running
        .into_values()
        .map(|r| r.task)
        .chain(stopping.into_values());
    let all = futures_util::future::join_all(tasks);
    if tokio::time::timeout(deadline, all).await.is_err() {
        tracing::warn!("shutdown deadline passed with chunks in flight; they roll back");
    }
}

/// Partitions with no processor: their leases may be released when above the fair share.
fn leases_not_running(
    running: &BTreeMap<i32, Running>,
    stopping: &BTreeMap<i32, JoinHandle<()>>,
    partitions: u16,
) -> BTreeSet<i32> {
    (0..i32::from(partitions))
        .filter(|p| !running.contains_key(p) && !stopping.contains_key(p))
        .collect()
}
