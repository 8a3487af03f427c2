//! The pipeline's side of a run: how the generated rows reach the gateway, and when its clock
//! stops.
//!
//! - [`Scenario::OwnClient`]: [`crate::upload::run_upload`], our parallel client: chunks of
//!   about `--chunk-size` cut from the files, `--concurrency` in flight, the count declared,
//!   status polled until `done`.
//! - [`Scenario::OriginalClient`]: [`crate::original::run_original`], the original's client: one
//!   connection, each file whole and in turn as a multipart POST, no count declared; the clock
//!   stops at the status poll showing every file loaded (not at the settle rule's `done`,
//!   which comes only after the idle period).
//! - [`Scenario::OneFile`]: the files joined into one CSV ([`super::data::whole_file`], made
//!   before the clock) sent as a single chunk by our client, then polled until `done`.
//!
//! Every clock starts at the first token request.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::data::{self, Dataset};
use super::{BenchError, BenchOptions};
use crate::api::ReportedState;
use crate::original::run_original;
use crate::split::plan_files;
use crate::upload::run_upload;

/// How the pipeline gets the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Our parallel upload client.
    OwnClient,
    /// The original's client: one connection, one multipart file at a time.
    OriginalClient,
    /// The whole input as one upload of one chunk.
    OneFile,
}

impl Scenario {
    /// The name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Self::OwnClient => "own-client",
            Self::OriginalClient => "original-client",
            Self::OneFile => "one-file",
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the upload ends, which decides what the checks expect of its ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The chunk count was declared: the upload is `done`.
    Declared,
    /// No count was declared: every chunk is loaded, and the upload is still `receiving` (or
    /// `done`, had the settle period passed before the checks).
    Settle,
}

/// What the scenario sends, prepared before the clock starts.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Data rows of each chunk, by chunk number: what the table must hold.
    pub planned_rows: Vec<u64>,
    /// The files the pipeline is given.
    pub files: Vec<std::path::PathBuf>,
    /// The chunk size given to our client.
    pub chunk_size: u64,
}

/// Plans what `scenario` sends (not timed).
pub fn prepare(
    scenario: Scenario,
    opts: &BenchOptions,
    dataset: &Dataset,
) -> Result<Prepared, BenchError> {
    let (files, chunk_size) = match scenario {
        Scenario::OwnClient => (dataset.files.clone(), opts.upload.chunk_size),
        // Whole files, one chunk each: a chunk size no file reaches.
        Scenario::OriginalClient => (dataset.files.clone(), u64::MAX),
        Scenario::OneFile => {
            let whole = data::whole_file(&opts.data_dir, dataset)?;
            let len = std::fs::metadata(&whole)
                .map_err(|source| data::DataError::Io {
                    path: whole.clone(),
                    source,
                })?
                .len();
            (vec![whole], len.max(1))
        }
    };
    let planned_rows = plan_files(&files, chunk_size)?
        .iter()
        .map(|chunk| chunk.range.rows)
        .collect();
    Ok(Prepared {
        planned_rows,
        files,
        chunk_size,
    })
}

/// The pipeline's measured run.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    pub folder: String,
    /// Chunks the upload was sent as.
    pub chunks: u64,
    pub elapsed: Duration,
    pub ending: Ending,
    /// The state the last status poll showed.
    pub state: ReportedState,
}

/// Runs the pipeline the way `scenario` says and times it (see the module docs).
pub async fn run(
    scenario: Scenario,
    opts: &BenchOptions,
    prepared: &Prepared,
) -> Result<PipelineRun, BenchError> {
    let mut upload = opts.upload.clone();
    upload.files = prepared.files.clone();
    upload.chunk_size = prepared.chunk_size;
    upload.resume = None;
    if scenario == Scenario::OneFile {
        upload.concurrency = 1;
    }
    let started = Instant::now();
    Ok(match scenario {
        Scenario::OwnClient | Scenario::OneFile => {
            let summary = run_upload(upload).await?;
            PipelineRun {
                elapsed: started.elapsed(),
                folder: summary.folder,
                chunks: summary.chunks,
                ending: Ending::Declared,
                state: summary.state,
            }
        }
        Scenario::OriginalClient => {
            let summary = run_original(upload).await?;
            tracing::info!(
                send_secs = summary.send_time.as_secs_f64(),
                "original client: every file sent"
            );
            PipelineRun {
                elapsed: started.elapsed(),
                folder: summary.folder,
                chunks: summary.files,
                ending: Ending::Settle,
                state: summary.status.state,
            }
        }
    })
}
