//! `loadgen bench`: the pipeline (gateway -> broker -> engine -> PostgreSQL) against `psql
//! \copy` of the same generated rows, in one run, for one [`Scenario`] of how the rows reach
//! the gateway.
//!
//! 1. [`data`]: original-format files for the row count, spread over `--months` months,
//!    generated once and cached.
//! 2. [`baseline`]: one connection COPYs the files (CSV) into a fresh table shaped like
//!    `transactions`, its monthly partitions made before the clock; timed. Then the second
//!    baseline: two connections at once, each COPYing every other file into another such
//!    table; timed.
//! 3. The pipeline ([`scenario`]), against a gateway and engine that are already running, into
//!    `transactions` with none of the data's monthly partitions made: the engine makes them
//!    while the clock runs, as it would for a user's data. Timed from the first token request
//!    to the status poll showing the rows loaded, with the CPU time and peak memory of both
//!    processes ([`procstat`]).
//! 4. [`checks`]: no partition of the data's months existed before the pipeline; the upload's
//!    rows in PostgreSQL are exact (counts per chunk, no duplicates, no gaps, none in the
//!    default partition) and equal to the baseline's rows; the chunk latency comes from the
//!    `chunks` ledger.
//! 5. [`report`]: the table, the JSON file and the Markdown row; the baseline tables are
//!    dropped.
//!
//! A checkpoint runs before each timed phase so none pays for another's dirty pages. The
//! ratios are reported, never judged: the benchmark fails only when a check fails.
//!
//! [`intake`] is `loadgen intake`: the gateway's own intake rate against the disk's.

pub mod baseline;
pub mod checks;
pub mod data;
pub mod intake;
pub mod procstat;
pub mod report;
pub mod scenario;

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use ingest_runtime::db::{self, DbError};
use tokio_postgres::Client;
use uuid::Uuid;

use self::baseline::BaselineError;
use self::data::{DataError, DataSpec, Dataset};
use self::procstat::{ProcUsage, Watch};
use self::report::{BenchReport, Phase};
pub use self::scenario::Scenario;
use crate::generate::{months_covered, DateSpread};
use crate::split::SplitError;
use crate::upload::{UploadError, UploadOptions};

/// Sessions of the second baseline.
pub const PARALLEL_SESSIONS: usize = 2;

/// Everything one benchmark run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How the pipeline gets the rows.
    pub scenario: Scenario,
    /// Rows to generate and load.
    pub rows: u64,
    /// Months the rows are spread over.
    pub months: u32,
    /// Cache directory of the generated files.
    pub data_dir: PathBuf,
    /// Size at which the generator starts a new file.
    pub file_size: u64,
    /// Seed of the generated values.
    pub seed: u64,
    /// The database the engine loads into (the baseline tables are made there too).
    pub database_url: String,
    /// How to upload; its `files` are replaced by the generated ones (and, for some scenarios,
    /// its chunk size and concurrency: see [`scenario`]).
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
    #[error("reading the ledger: {0}")]
    Ledger(#[from] ingest_ledger::LedgerError),
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
    let spec = DataSpec {
        rows: opts.rows,
        months: opts.months,
        file_size: opts.file_size,
        seed: opts.seed,
    };
    let dataset = {
        let dir = opts.data_dir.clone();
        tokio::task::spawn_blocking(move || data::ensure(&dir, spec)).await??
    };
    tracing::info!(
        rows = dataset.rows,
        months = opts.months,
        files = dataset.files.len(),
        bytes = dataset.bytes,
        reused = dataset.reused,
        dir = %opts.data_dir.display(),
        "data ready"
    );
    let prepared = {
        let (opts, dataset) = (opts.clone(), dataset.clone());
        tokio::task::spawn_blocking(move || scenario::prepare(opts.scenario, &opts, &dataset))
            .await??
    };
    let months = months_covered(dataset.rows, DateSpread::Months(opts.months));

    let client = db::connect(&opts.database_url).await?;
    let table = baseline::create_table(&client, &months).await?;
    let measured = measure(&client, &table, &opts, &dataset, &prepared, &months).await;
    let dropped = baseline::drop_table(&client, &table).await;
    let report = measured?;
    dropped?;
    Ok(report)
}

/// The two baselines' times and the rows the parallel one loaded.
struct Baselines {
    one: baseline::BaselineRun,
    parallel: baseline::BaselineRun,
}

/// Times the one-session baseline into `table`, then the parallel one into a table of its own
/// (dropped again before the pipeline runs).
async fn baselines(
    client: &Client,
    table: &str,
    opts: &BenchOptions,
    dataset: &Dataset,
    months: &[(i32, u32)],
) -> Result<Baselines, BenchError> {
    checkpoint(client).await;
    tracing::info!(table, "baseline: COPY csv over one connection");
    let one = baseline::load(client, table, &dataset.files).await?;
    tracing::info!(
        rows = one.rows,
        secs = one.elapsed.as_secs_f64(),
        "baseline loaded"
    );

    let parallel_table = baseline::create_table(client, months).await?;
    checkpoint(client).await;
    tracing::info!(table = %parallel_table, sessions = PARALLEL_SESSIONS, "parallel baseline");
    let parallel = baseline::load_parallel(
        &opts.database_url,
        &parallel_table,
        &dataset.files,
        PARALLEL_SESSIONS,
    )
    .await;
    let dropped = baseline::drop_table(client, &parallel_table).await;
    let parallel = parallel?;
    dropped?;
    tracing::info!(
        rows = parallel.rows,
        secs = parallel.elapsed.as_secs_f64(),
        "parallel baseline loaded"
    );
    Ok(Baselines { one, parallel })
}

/// The timed phases and the checks, while the baseline table exists.
async fn measure(
    client: &Client,
    table: &str,
    opts: &BenchOptions,
    dataset: &Dataset,
    prepared: &scenario::Prepared,
    months: &[(i32, u32)],
) -> Result<BenchReport, BenchError> {
    let load_before = report::load_average();
    let base = baselines(client, table, opts, dataset, months).await?;

    // The pipeline makes its partitions itself, on the clock: none may exist yet (a database
    // a previous run loaded into would hide that cost).
    let premade = checks::existing_partitions(client, months).await?;
    if !premade.is_empty() {
        tracing::warn!(
            partitions = premade.len(),
            "partitions of the data's months exist before the pipeline; use a fresh database"
        );
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
    tracing::info!(
        scenario = %opts.scenario,
        url = %opts.upload.url,
        chunks = prepared.planned_rows.len(),
        "pipeline: upload through the gateway"
    );
    let run = scenario::run(opts.scenario, opts, prepared).await?;
    let usage = |watched: Option<(u32, Watch)>| -> Result<Option<ProcUsage>, BenchError> {
        watched
            .map(|(pid, w)| w.stop().map_err(|source| BenchError::Proc { pid, source }))
            .transpose()
    };
    let (gateway, engine) = (usage(gateway)?, usage(engine)?);
    tracing::info!(
        state = %run.state,
        secs = run.elapsed.as_secs_f64(),
        "pipeline finished; checking the rows"
    );

    let upload_id =
        Uuid::parse_str(&run.folder).map_err(|_| BenchError::UploadId(run.folder.clone()))?;
    let mut checks = vec![checks::Check {
        name: "data months with a partition before the pipeline".to_owned(),
        ok: premade.is_empty(),
        detail: if premade.is_empty() {
            "none".to_owned()
        } else {
            premade.join(", ")
        },
    }];
    checks.extend(checks::lineage(client, upload_id, &prepared.planned_rows, run.ending).await?);
    checks.extend(checks::partitions(client, upload_id, months).await?);
    checks.extend(checks::same_content(client, upload_id, table).await?);
    for (name, rows) in [
        ("baseline rows", base.one.rows),
        ("parallel baseline rows", base.parallel.rows),
    ] {
        checks.push(checks::Check {
            name: name.to_owned(),
            ok: rows == dataset.rows,
            detail: format!("{rows} of {}", dataset.rows),
        });
    }
    let chunk_latency = checks::chunk_latency(client, upload_id).await?;

    let phase = |elapsed| Phase::new(dataset.rows, dataset.bytes, elapsed);
    let (baseline, parallel_baseline, pipeline) = (
        phase(base.one.elapsed),
        phase(base.parallel.elapsed),
        phase(run.elapsed),
    );
    Ok(BenchReport {
        timestamp: report::utc_timestamp(SystemTime::now()),
        label: opts.label.clone(),
        scenario: opts.scenario,
        months: opts.months,
        rows: dataset.rows,
        bytes: dataset.bytes,
        files: dataset.files.len(),
        chunks: run.chunks,
        chunk_size: prepared.chunk_size.min(dataset.bytes),
        concurrency: match opts.scenario {
            Scenario::OwnClient => opts.upload.concurrency,
            Scenario::OriginalClient | Scenario::OneFile => 1,
        },
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_before,
        upload_id: run.folder,
        ratio: pipeline.secs / baseline.secs,
        parallel_ratio: pipeline.secs / parallel_baseline.secs,
        baseline,
        parallel_baseline,
        parallel_sessions: PARALLEL_SESSIONS,
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
