//! Completion of uploads that never declare their chunk count: the original's flow, which has
//! no `/complete`.
//!
//! The rule ([`ingest_ledger::completion`] holds it): an upload with no declared count settles once it has received at least one chunk,
//! every received chunk is loaded or failed (nothing `stored` waits for an engine), and no chunk
//! arrived, nor was a chunk body seen on its way, for `INGEST_UPLOAD_SETTLE_SECS`. It then ends `done` (or `failed` if a chunk failed),
//! as a declared upload does with its last chunk. A settled upload stays open to its client: a
//! later chunk reopens it (`receiving` again, see [`ingest_ledger::uploads::record_chunk`]), and
//! `/complete` may still declare its count. The status shows the rule and when it settles.
//!
//! Every gateway runs the sweep; each upload is settled by one atomic `UPDATE`, and a chunk
//! recorded at the same moment either sees the upload settled (and reopens it) or makes it no
//! longer eligible, because both take the upload's row lock.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::task::AbortOnDropHandle;

use crate::sweeps::{self, SweepError};

/// Settles idle uploads with nothing left to load.
#[derive(Clone)]
pub struct Settle {
    pool: Pool,
    idle: Duration,
}

impl Settle {
    pub fn new(pool: Pool, idle: Duration) -> Self {
        Self { pool, idle }
    }

    /// How often the periodic sweep runs: a quarter of the idle period, between 0.2 s and 5 s.
    pub fn interval(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// Settles every eligible upload; returns how many.
    pub async fn sweep(&self) -> Result<u64, SweepError> {
        let db = self.pool.get().await?;
        Ok(settle_idle(&db, self.idle).await?)
    }

    /// Runs [`Self::sweep`] every [`Self::interval`] until the returned handle is dropped.
    pub fn run_periodically(self) -> AbortOnDropHandle<()> {
        sweeps::every(self.interval(), move || {
            let settle = self.clone();
            async move {
                match settle.sweep().await {
                    Ok(0) => {}
                    Ok(settled) => tracing::debug!(uploads = settled, "settled idle uploads"),
                    Err(err) => tracing::warn!(error = %err, "upload settle sweep failed"),
                }
            }
        })
    }
}

/// Ends every undeclared upload idle for `idle` whose received chunks are all loaded or failed
/// ([`ingest_ledger::completion::settle_idle`]). Also used by the expiry sweep, so expiry never
/// fails an upload that lost nothing.
pub async fn settle_idle(
    db: &tokio_postgres::Client,
    idle: Duration,
) -> Result<u64, ingest_ledger::LedgerError> {
    let settled = ingest_ledger::completion::settle_idle(db, idle).await?;
    if settled > 0 {
        metrics::counter!(crate::metrics::UPLOADS_SETTLED).increment(settled);
    }
    Ok(settled)
}
