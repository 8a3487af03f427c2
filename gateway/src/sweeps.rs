//! The gateway's periodic sweeps (expiry, settling, orphans) share one loop: run, log, wait.

use std::future::Future;
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

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
