//! The gateway's periodic sweeps (expiry, settling, orphans, completion hooks) share one loop
//! (run, log, wait) and, those that only touch the ledger, one error type.

use std::future::Future;
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

/// Why a sweep on the ledger stopped (the next one tries again).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Ledger(#[from] ingest_ledger::LedgerError),
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Runs `sweep` every `interval` until the returned handle is dropped. A sweep that runs late
/// delays the next one instead of bunching them up behind it.
pub fn every<F, Fut>(interval: Duration, mut sweep: F) -> AbortOnDropHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            sweep().await;
        }
    }))
}
