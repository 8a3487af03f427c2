//! GCRA arithmetic in integer microseconds, and the in-process limiter that uses it on every check
//! (alone while Redis is unavailable or late).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Decision, Quota};

/// Below this many keys the in-process limiter does not bother sweeping idle entries.
pub(super) const MIN_SWEEP_LEN: usize = 1024;

/// A quota in integer microseconds, so Redis, Lua doubles and Rust compute exactly the same thing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gcra {
    pub(super) interval_us: u64,
    pub(super) tolerance_us: u64,
    pub(super) limit: u32,
}

impl Gcra {
    pub(super) fn new(quota: Quota) -> Self {
        const DAY_US: f64 = 86_400e6;
        let interval = if quota.rate_per_sec.is_finite() && quota.rate_per_sec > 0.0 {
            (1e6 / quota.rate_per_sec).round().clamp(1.0, DAY_US)
        } else {
            DAY_US
        };
        // Truncation is exact: `interval` is a whole number within [1, DAY_US].
        let interval_us = interval as u64;
        // Lua holds `now + tolerance` in a double: stay far below 2^53 even for absurd quotas.
        let tolerance_us = interval_us
            .saturating_mul(u64::from(quota.burst))
            .min(1 << 52);
        Self {
            interval_us,
            tolerance_us,
            limit: quota.burst.saturating_add(1),
        }
    }

    /// One GCRA step: whether the request passes, and the TAT to store (`now` and TATs share one clock).
    pub(super) fn step(self, stored_tat: Option<u64>, now: u64) -> (bool, u64) {
        let tat = stored_tat.map_or(now, |tat| tat.max(now));
        if tat - now > self.tolerance_us {
            (false, tat)
        } else {
            (true, tat + self.interval_us)
        }
    }

    /// The decision, from whether the request passed and how far the TAT now is ahead of the clock.
    pub(super) fn decision(self, allowed: bool, ahead_us: u64) -> Decision {
        let remaining = if ahead_us <= self.tolerance_us {
            (self.tolerance_us - ahead_us) / self.interval_us + 1
        } else {
            0
        };
        Decision {
            allowed,
            limit: self.limit,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset_after: Duration::from_micros(ahead_us),
            retry_after: (!allowed)
                .then(|| Duration::from_micros(ahead_us.saturating_sub(self.tolerance_us))),
        }
    }
}

/// The in-process limiter: same GCRA, state in a local map. The gateway counts every check in it and
/// raises its TATs to the shared ones Redis reports, so its answers, when Redis cannot give one,
/// continue the budget already spent instead of starting a new one.
pub struct LocalLimiter {
    epoch: Instant,
    state: Mutex<LocalState>,
}

struct LocalState {
    tats: HashMap<String, u64>,
    sweep_at_len: usize,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            state: Mutex::new(LocalState {
                tats: HashMap::new(),
                sweep_at_len: MIN_SWEEP_LEN,
            }),
        }
    }
}

impl LocalLimiter {
    /// Checks `key` against `quota` now.
    pub fn check(&self, key: &str, quota: Quota) -> Decision {
        self.check_at(key, quota, self.epoch.elapsed())
    }

    /// Checks `key` at `now`, measured on the limiter's own clock (since its creation); lets tests control time.
    pub fn check_at(&self, key: &str, quota: Quota, now: Duration) -> Decision {
        let gcra = Gcra::new(quota);
        let now = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means another check panicked mid-update; the map is still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (allowed, tat) = gcra.step(state.tats.get(key).copied(), now);
        if allowed {
            match state.tats.get_mut(key) {
                Some(stored) => *stored = tat,
                None => {
                    state.tats.insert(key.to_owned(), tat);
                }
            }
        }
        // A TAT in the past is the same as no entry: drop those once the map doubles, so memory follows
        // the number of active keys (amortised O(1) per check).
        if state.tats.len() >= state.sweep_at_len {
            state.tats.retain(|_, tat| *tat > now);
            state.sweep_at_len = (state.tats.len() * 2).max(MIN_SWEEP_LEN);
        }
        gcra.decision(allowed, tat - now)
    }

    /// Moves the TAT of `key` forward to `tat` (on the limiter's clock) if it is behind: what Redis
    /// reported for the shared state, which includes other gateways' requests.
    pub(super) fn raise_tat_at(&self, key: &str, tat: Duration) {
        let tat = u64::try_from(tat.as_micros()).unwrap_or(u64::MAX);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.tats.get_mut(key) {
            Some(stored) => *stored = (*stored).max(tat),
            // Counted just before, so only missing if a sweep found its TAT already past.
            None => {
                state.tats.insert(key.to_owned(), tat);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.state.lock().map(|s| s.tats.len()).unwrap_or_default()
    }

    /// The limiter's clock: time since its creation.
    pub(super) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(super) fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}
