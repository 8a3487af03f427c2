//! When to retry a request and how long to wait first, as pure functions.
//!
//! Policy: a 2xx is success; 401 means "get a new token and try once more"; 429 waits for the
//! server's `Retry-After` (which says exactly when there is room again); 408, 5xx (503 is the
//! gateway saying its broker is down) and transport errors are transient and retried with
//! exponential backoff and jitter, a bounded number of times; every other status (400, 409,
//! 413, 415, ...) is the client's fault, so retrying cannot help and the upload stops.
//!
//! Waiting out a 429 is expected under load and does not use up the transient-failure attempts;
//! it has its own, larger bound so a misbehaving server cannot hold the client forever.

use std::time::Duration;

use reqwest::StatusCode;

/// How often and how patiently requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request in all, counting the first, before a transient failure is fatal.
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles on each further retry.
    pub base_delay: Duration,
    /// Backoff never exceeds this.
    pub max_delay: Duration,
    /// How many 429 answers one request may wait out.
    pub max_throttle_waits: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_throttle_waits: 200,
        }
    }
}

/// The longest `Retry-After` honoured; longer asks are treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl RetryPolicy {
    /// The wait before retry number `retry` (0 before the second attempt), for `jitter` in
    /// [0, 1). "Equal jitter": half of the exponential delay is fixed, half random, so clients
    /// that failed together spread out but none retries at once.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        let half = exponential / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What to do with an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Success,
    /// 401: the token was refused; fetch a new one and try again.
    Reauthenticate,
    /// 429: wait (for `Retry-After` when the server gave one) and try again.
    Throttled(Option<Duration>),
    /// 408, 5xx: try again after a backoff.
    Transient,
    /// Anything else: stop.
    Fatal,
}

/// Classifies a status, with the value of its `Retry-After` header if any.
pub fn classify(status: StatusCode, retry_after: Option<&str>) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Success,
        401 => Verdict::Reauthenticate,
        429 => Verdict::Throttled(retry_after.and_then(parse_retry_after)),
        408 | 500..=599 => Verdict::Transient,
        _ => Verdict::Fatal,
    }
}

/// Parses `Retry-After` given in seconds (the form rate limiters use). An HTTP date is not
/// understood and yields `None`, which falls back to the backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let seconds = value
        .parse::<u64>()
        .map(Duration::from_secs)
        .ok()
        .or_else(|| value.parse::<f64>().ok().and_then(finite_seconds))?;
    Some(seconds.min(MAX_RETRY_AFTER))
}

fn finite_seconds(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(1e6)))
}

/// The retry budget of one request: counts attempts and says how long to wait next.
#[derive(Debug, Clone)]
pub struct Attempts {
    policy: RetryPolicy,
    attempts: u32,
    transient_failures: u32,
    throttle_waits: u32,
}

impl Attempts {
    /// A fresh budget; call [`Attempts::start`] before each attempt.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            attempts: 0,
            transient_failures: 0,
            throttle_waits: 0,
        }
    }

    /// Records the start of an attempt.
    pub fn start(&mut self) {
        self.attempts += 1;
    }

    /// Attempts made so far.
    pub fn made(&self) -> u32 {
        self.attempts
    }

    /// After a transient failure: the wait before trying again, or `None` when the attempts
    /// are used up.
    pub fn after_transient(&mut self, jitter: f64) -> Option<Duration> {
        self.transient_failures += 1;
        if self.transient_failures >= self.policy.max_attempts.max(1) {
            return None;
        }
        Some(self.policy.backoff(self.transient_failures - 1, jitter))
    }

    /// After a 429: the server's wait (plus a little jitter so throttled clients do not all
    /// return at the same instant), or `None` when this request has waited too often.
    pub fn after_throttle(
        &mut self,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        self.throttle_waits += 1;
        if self.throttle_waits > self.policy.max_throttle_waits {
            return None;
        }
        let spread = self.policy.base_delay.mul_f64(jitter.clamp(0.0, 1.0));
        Some(match retry_after {
            Some(wait) => wait + spread,
            None => self.policy.backoff(self.throttle_waits.min(6) - 1, jitter),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_throttle_waits: 2,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_spans_the_upper_half() {
        let p = policy();
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(300));
        assert_eq!(p.backoff(10, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(u32::MAX, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn statuses_map_to_the_documented_policy() {
        let c = |code: u16| classify(StatusCode::from_u16(code).expect("valid status"), None);
        assert_eq!(c(200), Verdict::Success);
        assert_eq!(c(201), Verdict::Success);
        assert_eq!(c(401), Verdict::Reauthenticate);
        assert_eq!(c(429), Verdict::Throttled(None));
        assert_eq!(c(503), Verdict::Transient);
        assert_eq!(c(500), Verdict::Transient);
        assert_eq!(c(408), Verdict::Transient);
        for fatal in [400, 403, 404, 409, 413, 415, 422] {
            assert_eq!(c(fatal), Verdict::Fatal, "status {fatal}");
        }
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some("3")),
            Verdict::Throttled(Some(Duration::from_secs(3)))
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_bounds_them() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
    }

    #[test]
    fn transient_failures_are_bounded_by_max_attempts() {
        let mut a = Attempts::new(policy());
        assert_eq!(a.after_transient(0.0), Some(Duration::from_millis(50)));
        assert_eq!(a.after_transient(0.0), Some(Duration::from_millis(100)));
        assert_eq!(a.after_transient(0.0), Some(Duration::from_millis(200)));
        assert_eq!(a.after_transient(0.0), None, "4 attempts in all");
    }

    #[test]
    fn throttling_waits_for_retry_after_without_using_up_attempts() {
        let mut a = Attempts::new(policy());
        let wait = a.after_throttle(Some(Duration::from_secs(2)), 0.5);
        assert_eq!(wait, Some(Duration::from_millis(2050)));
        assert_eq!(
            a.after_throttle(None, 0.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(a.after_throttle(Some(Duration::from_secs(1)), 0.0), None);
        // The transient budget is untouched.
        assert_eq!(a.after_transient(0.0), Some(Duration::from_millis(50)));
    }
}
