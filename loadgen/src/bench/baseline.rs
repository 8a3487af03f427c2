//! The baseline: what a user would do without this system, `psql \copy` of each file.
//!
//! One connection, one `COPY ... FROM STDIN (FORMAT csv, HEADER true)` per file, the file
//! streamed from disk in 1 MiB blocks by a reader thread, into a fresh table shaped exactly like
//! `transactions` (`LIKE ... INCLUDING ALL`, monthly partitions for the data's months and a
//! default partition, all made before the clock starts). Every connection sets `datestyle` to
//! day-first, which the original system forgot. The table is kept until the pipeline's rows
//! have been compared with it.
//!
//! [`load_parallel`] is the second baseline: what plain parallel COPY gets, several `psql
//! \copy` sessions at once, each with its share of the files, into a table of its own.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use ingest_runtime::db::{self, DbError};
use tokio::sync::mpsc;
use tokio_postgres::Client;

const BLOCK: usize = 1 << 20;

/// Why the baseline could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("baseline: {0}")]
    Connect(#[from] DbError),
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

/// Creates an empty table like `transactions` with a partition for each of `months` (year,
/// month) and a default one, and returns its name.
pub async fn create_table(client: &Client, months: &[(i32, u32)]) -> Result<String, BaselineError> {
    let table = format!(
        "bench_baseline_{}",
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..12)
            .unwrap_or("x")
    );
    day_first(client).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (LIKE transactions INCLUDING ALL) PARTITION BY RANGE (date);
             CREATE TABLE {table}_default PARTITION OF {table} DEFAULT;"
        ))
        .await?;
    for &(year, month) in months {
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        client
            .batch_execute(&format!(
                "CREATE TABLE {table}_{year:04}_{month:02} PARTITION OF {table}
                 FOR VALUES FROM ('{year:04}-{month:02}-01') TO ('{next_year:04}-{next_month:02}-01')"
            ))
            .await?;
    }
    Ok(table)
}

/// Reads dates day first on this connection, as the data is written.
async fn day_first(client: &Client) -> Result<(), BaselineError> {
    client.batch_execute("SET datestyle = 'ISO, DMY'").await?;
    Ok(())
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

/// Copies the files into `table` over `sessions` connections at once, the files dealt out in
/// turn (file `i` to session `i % sessions`), and times it from the first COPY to the last
/// one's end. The connections are opened and set up before the clock starts.
pub async fn load_parallel(
    database_url: &str,
    table: &str,
    files: &[PathBuf],
    sessions: usize,
) -> Result<BaselineRun, BaselineError> {
    let sessions = sessions.max(1);
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let client = db::connect(database_url).await?;
        day_first(&client).await?;
        clients.push(client);
    }
    let shares: Vec<Vec<PathBuf>> = (0..sessions)
        .map(|s| files.iter().skip(s).step_by(sessions).cloned().collect())
        .collect();
    let started = Instant::now();
    let runs = futures_util::future::try_join_all(
        clients
            .iter()
            .zip(&shares)
            .map(|(client, share)| load(client, table, share)),
    )
    .await?;
    Ok(BaselineRun {
        rows: runs.iter().map(|r| r.rows).sum(),
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
