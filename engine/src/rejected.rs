//! A chunk's rejected rows into `rejected_rows`, by COPY from the stream that validation built
//! ([`RejectedCopy`]: bounded memory, spilled to disk past a budget).

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use futures_util::SinkExt;
use ingest_rows::rejects::{RejectedCopy, RejectedStream, COPY_REJECTED};
use ingest_rows::validate::Lineage;
use tokio::sync::mpsc;
use tokio_postgres::Transaction;

use crate::loader::LoadError;

/// Encoded rejected rows kept in memory per chunk before they go to the spill file.
const MEMORY_BUDGET: usize = 1 << 20;
/// Bytes per COPY message.
const PIECE: usize = 1 << 20;

/// Where a chunk being validated keeps its rejected rows. Spill files go under the upload
/// directory (a real volume; `/tmp` may be memory) and are unlinked as soon as they are made.
pub fn collector(upload_dir: &Path, lineage: Lineage) -> RejectedCopy {
    RejectedCopy::new(lineage, &upload_dir.join(".spill"), MEMORY_BUDGET)
}

/// COPYs the rows into `rejected_rows` inside `tx`, reading the stream on a blocking thread.
pub async fn copy(tx: &Transaction<'_>, mut stream: RejectedStream) -> Result<(), LoadError> {
    let (sender, mut pieces) = mpsc::channel::<Bytes>(2);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        loop {
            let mut piece = Vec::with_capacity(PIECE);
            (&mut stream).take(PIECE as u64).read_to_end(&mut piece)?;
            if piece.is_empty() || sender.blocking_send(Bytes::from(piece)).is_err() {
                return Ok(());
            }
        }
    });
    let mut sink = Box::pin(tx.copy_in(COPY_REJECTED).await?);
    while let Some(piece) = pieces.recv().await {
        sink.send(piece).await?;
    }
    reader
        .await
        .map_err(|err| LoadError::Parser(err.to_string()))?
        .map_err(|err| LoadError::Parser(format!("reading the rejected rows: {err}")))?;
    sink.as_mut().finish().await?;
    Ok(())
}
