//! The baseline: what a user would do without this system, `psql \copy` of each file.
//!
//! One connection, one `COPY ... FROM STDIN (FORMAT csv, HEADER true)` per file, the file
//! streamed from disk in 1 MiB blocks by a reader thread, into a fresh table shaped exactly like
//! `transactions` (`LIKE ... INCLUDING ALL`, monthly partitions for the data's months and a
//! default partition). The connection sets `datestyle` to day-first, which the original system
//! forgot. The table is kept until the pipeline's rows have been compared with it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

/// Row `i` of the generator is dated this plus `i` seconds (see [`crate::generate`]).
const DATA_START: &str = "2023-01-01 00:00:00";
const BLOCK: usize = 1 << 20;

/// Why the baseline could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("baseline: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("baseline: the file reader died: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The baseline's outcome.
#[derive(Debug, Clone, Copy)]
pub struct BaselineRun {
    /// Rows PostgreSQL reported copied.
    pub rows: u64,
    /// Wall time of the COPYs, first byte to last commit.
    pub elapsed: Duration,
}

/// Creates an empty table like `transactions`, partitioned for `rows` generated rows, and
/// returns its name.
pub async fn create_table(client: &Client, rows: u64) -> Result<String, BaselineError> {
    let table = format!(
        "bench_baseline_{}",
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..12)
            .unwrap_or("x")
    );
    client
        .batch_execute(&format!(
            "SET datestyle = 'ISO, DMY';
             CREATE TABLE {table} (LIKE transactions INCLUDING ALL) PARTITION BY RANGE (date);
             CREATE TABLE {table}_default PARTITION OF {table} DEFAULT;"
        ))
        .await?;
    for (suffix, from, to) in data_months(client, rows).await? {
        client
            .batch_execute(&format!(
                "CREATE TABLE {table}_{suffix} PARTITION OF {table} FOR VALUES FROM ('{from}') TO ('{to}')"
            ))
            .await?;
    }
    Ok(table)
}

/// The months the generated data covers, as (`YYYY_MM`, first day, first day of the next).
pub async fn data_months(
    client: &Client,
    rows: u64,
) -> Result<Vec<(String, String, String)>, BaselineError> {
    let last_second = rows.saturating_sub(1);
    let months = client
        .query(
            &format!(
                "SELECT to_char(m, 'YYYY_MM'), m::date::text, (m + interval '1 month')::date::text
                 FROM generate_series(
                     date_trunc('month', timestamp '{DATA_START}'),
                     date_trunc('month', timestamp '{DATA_START}' + {last_second} * interval '1 second'),
                     interval '1 month') AS m"
            ),
            &[],
        )
        .await?;
    Ok(months
        .iter()
        .map(|month| (month.get(0), month.get(1), month.get(2)))
        .collect())
}

/// Copies every file into `table`, one COPY per file, and times it.
pub async fn load(
    client: &Client,
    table: &str,
    files: &[PathBuf],
) -> Result<BaselineRun, BaselineError> {
    let started = Instant::now();
    let mut rows = 0;
    for file in files {
        rows += copy_file(client, table, file).await?;
    }
    Ok(BaselineRun {
        rows,
        elapsed: started.elapsed(),
    })
}

/// Drops the baseline table and its partitions.
pub async fn drop_table(client: &Client, table: &str) -> Result<(), BaselineError> {
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await?;
    Ok(())
}

async fn copy_file(client: &Client, table: &str, path: &Path) -> Result<u64, BaselineError> {
    let sink = client
        .copy_in::<_, Bytes>(&format!(
            "COPY {table} (date, content, amount, type) FROM STDIN (FORMAT csv, HEADER true)"
        ))
        .await?;
    let mut sink = pin!(sink);
    let (blocks, mut received) = mpsc::channel::<io::Result<Bytes>>(4);
    let reader = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || read_blocks(&path, &blocks))
    };
    while let Some(block) = received.recv().await {
        let block = block.map_err(|source| BaselineError::Read {
            path: path.to_owned(),
            source,
        })?;
        sink.send(block).await?;
    }
    reader.await?;
    Ok(sink.as_mut().finish().await?)
}

/// Sends the file's bytes in blocks until the end or until the receiver is gone.
fn read_blocks(path: &Path, blocks: &mpsc::Sender<io::Result<Bytes>>) {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) => {
            let _ = blocks.blocking_send(Err(err));
            return;
        }
    };
    loop {
        let mut block = vec![0u8; BLOCK];
        match file.read(&mut block) {
            Ok(0) => return,
            Ok(n) => {
                block.truncate(n);
                if blocks.blocking_send(Ok(Bytes::from(block))).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                let _ = blocks.blocking_send(Err(err));
                return;
            }
        }
    }
}
