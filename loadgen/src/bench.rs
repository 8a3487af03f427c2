//! `loadgen bench`: the baseline (`psql \copy` of the files) against the whole pipeline
//! (gateway -> broker -> engine -> PostgreSQL), on the same generated rows, in one run.
//!
//! 1. [`data`]: original-format files for the row count, generated once and cached.
//! 2. [`baseline`]: one connection COPYs the files (CSV) into a fresh table shaped like
//!    `transactions`; timed.
//! 3. The pipeline: [`crate::upload::run_upload`] in-process against a gateway and engine that
//!    are already running; timed from the start of the upload (the first token request) to the
//!    upload's `done`, with the CPU time and peak memory of both processes ([`procstat`]).
//! 4. [`checks`]: the upload's rows in PostgreSQL are exact (counts per chunk, no duplicates,
//!    no gaps) and equal to the baseline's rows; the chunk latency comes from the `chunks` ledger.
//! 5. [`report`]: the table, the JSON file and the Markdown row; the baseline table is dropped.
//!
//! A checkpoint runs before each timed phase so neither pays for the other's dirty pages. The
//! ratio is reported, never judged: the benchmark fails only when a check fails.

pub mod baseline;
pub mod checks;
pub mod data;
pub mod procstat;
pub mod report;

use std::io;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use ingest_contract::db::{self, DbError};
use tokio_postgres::Client;
use uuid::Uuid;

use self::baseline::BaselineError;
use self::data::{DataError, Dataset};
use self::procstat::{ProcUsage, Watch};
use self::report::{BenchReport, Phase};
use crate::split::{plan_files, SplitError};
use crate::upload::{run_upload, UploadError, UploadOptions};

/// Everything one benchmark run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Rows to generate and load.
    pub rows: u64,
    /// Cache directory of the generated files.
    pub data_dir: PathBuf,
    /// Size at which the generator starts a new file.
    pub file_size: u64,
    /// Seed of the generated values.
    pub seed: u64,
    /// The database the engine loads into (the baseline table is made there too).
    pub database_url: String,
    /// How to upload; its `files` are replaced by the generated ones.
    pub upload: UploadOptions,
    /// The gateway's process, to measure its CPU time and memory.
    pub gateway_pid: Option<u32>,
    /// The engine's process, likewise.
    pub engine_pid: Option<u32>,
    /// Free text naming the configuration, stored with the results.
    pub label: Option<String>,
}

/// Why a benchmark run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("generating the data: {0}")]
    Data(#[from] DataError),
    #[error(transparent)]
    Connect(#[from] DbError),
    #[error("querying PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error("splitting the files: {0}")]
    Split(#[from] SplitError),
    #[error("the pipeline upload stopped: {0}")]
    Upload(#[from] UploadError),
    #[error("the upload id {0:?} is not a UUID")]
    UploadId(String),
    #[error("cannot read /proc for process {pid} (is it running?): {source}")]
    Proc { pid: u32, source: io::Error },
    #[error("a blocking task died: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the benchmark (see the module docs) and returns its report; nothing is written.
pub async fn run_bench(opts: BenchOptions) -> Result<BenchReport, BenchError> {
    let dataset = {
        let (dir, rows, size, seed) = (opts.data_dir.clone(), opts.rows, opts.file_size, opts.seed);
        tokio::task::spawn_blocking(move || data::ensure(&dir, rows, size, seed)).await??
    };
    tracing::info!(
        rows = dataset.rows,
        files = dataset.files.len(),
        bytes = dataset.bytes,
        reused = dataset.reused,
        dir = %opts.data_dir.display(),
        "data ready"
    );
    let planned_rows = {
        let (files, chunk_size) = (dataset.files.clone(), opts.upload.chunk_size);
        tokio::task::spawn_blocking(move || plan_files(&files, chunk_size)).await??
    }
    .iter()
    .map(|chunk| chunk.range.rows)
    .collect::<Vec<u64>>();

    let client = db::connect(&opts.database_url).await?;
    let table = baseline::create_table(&client, dataset.rows).await?;
    let measured = measure(&client, &table, &opts, &dataset, &planned_rows).await;
    let dropped = baseline::drop_table(&client, &table).await;
    let report = measured?;
    dropped?;
    Ok(report)
}

/// The timed phases and the checks, while the baseline table exists.
async fn measure(
    client: &Client,
    table: &str,
    opts: &BenchOptions,
    dataset: &Dataset,
    planned_rows: &[u64],
) -> Result<BenchReport, BenchError> {
    let load_before = report::load_average();
    checkpoint(client).await;
    tracing::info!(table, "baseline: COPY csv over one connection");
    let base = baseline::load(client, table, &dataset.files).await?;
    tracing::info!(
        rows = base.rows,
        secs = base.elapsed.as_secs_f64(),
        "baseline loaded"
    );

    // The baseline's partitions were made before its clock started; so are the pipeline's (the
    // engine makes missing ones itself, but then the clock would time DDL on one side only).
    for (_, first_day, _) in baseline::data_months(client, dataset.rows).await? {
        client
            .execute(
                "SELECT ensure_transactions_partition($1::text::date)",
                &[&first_day],
            )
            .await?;
    }
    checkpoint(client).await;
    let watch = |pid: Option<u32>| -> Result<Option<(u32, Watch)>, BenchError> {
        pid.map(|pid| {
            Watch::start(pid)
                .map(|w| (pid, w))
                .map_err(|source| BenchError::Proc { pid, source })
        })
        .transpose()
    };
    let (gateway, engine) = (watch(opts.gateway_pid)?, watch(opts.engine_pid)?);
    let mut upload = opts.upload.clone();
    upload.files = dataset.files.clone();
    upload.resume = None;
    tracing::info!(url = %upload.url, chunks = planned_rows.len(), "pipeline: upload through the gateway");
    let started = Instant::now();
    let summary = run_upload(upload).await?;
    let pipeline_time = started.elapsed();
    let usage = |watched: Option<(u32, Watch)>| -> Result<Option<ProcUsage>, BenchError> {
        watched
            .map(|(pid, w)| w.stop().map_err(|source| BenchError::Proc { pid, source }))
            .transpose()
    };
    let (gateway, engine) = (usage(gateway)?, usage(engine)?);
    tracing::info!(
        state = %summary.state,
        secs = pipeline_time.as_secs_f64(),
        "pipeline finished; checking the rows"
    );

    let upload_id = Uuid::parse_str(&summary.folder)
        .map_err(|_| BenchError::UploadId(summary.folder.clone()))?;
    let mut checks = checks::lineage(client, upload_id, planned_rows).await?;
    checks.extend(checks::same_content(client, upload_id, table).await?);
    checks.push(checks::Check {
        name: "baseline rows".to_owned(),
        ok: base.rows == dataset.rows,
        detail: format!("{} of {}", base.rows, dataset.rows),
    });
    let chunk_latency = checks::chunk_latency(client, upload_id).await?;

    let baseline = Phase::new(dataset.rows, dataset.bytes, base.elapsed);
    let pipeline = Phase::new(dataset.rows, dataset.bytes, pipeline_time);
    Ok(BenchReport {
        timestamp: report::utc_timestamp(SystemTime::now()),
        label: opts.label.clone(),
        rows: dataset.rows,
        bytes: dataset.bytes,
        files: dataset.files.len(),
        chunks: summary.chunks,
        chunk_size: opts.upload.chunk_size,
        concurrency: opts.upload.concurrency,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_before,
        upload_id: summary.folder,
        ratio: pipeline.secs / baseline.secs,
        baseline,
        pipeline,
        chunk_latency,
        gateway,
        engine,
        checks,
    })
}

/// Flushes dirty pages so the next phase starts from a clean slate. Needs superuser rights;
/// without them the run goes on, a little noisier.
async fn checkpoint(client: &Client) {
    if let Err(err) = client.batch_execute("CHECKPOINT").await {
        tracing::warn!(error = %err, "cannot CHECKPOINT before a timed phase");
    }
}
