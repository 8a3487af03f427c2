//! Request rate limits with nginx `limit_req rate=R burst=B nodelay` semantics, shared by every gateway
//! through Redis.
//!
//! The algorithm is GCRA: each key stores one "theoretical arrival time" (TAT). With emission interval
//! `T = 1/rate` and tolerance `tau = burst * T`, a request at `now` passes when `max(TAT, now) - now <= tau`
//! and then moves the TAT forward by `T`; a refused request changes nothing. From idle, `burst + 1`
//! requests pass at once, then one every `T`.
//!
//! A check is one `EVALSHA` of an atomic Lua script (reloaded on `NOSCRIPT`, e.g. after a Redis restart)
//! that reads the clock with Redis `TIME`, so skewed gateway clocks cannot disagree, and stores the TAT
//! with an expiry equal to the time until the bucket is full again, so idle keys vanish.
//!
//! Every check is also counted by an in-process limiter with the same semantics, before Redis is asked,
//! and that limiter learns the shared TAT from each Redis answer. A request passes only if both agree,
//! so one gateway never admits more than one budget for a key, whichever store answered: when Redis is
//! late (no answer within `redis_timeout`) or down, the in-process limiter answers alone, from the same
//! state, never from a fresh budget. (A check that times out may never reach Redis, or reach it after
//! later ones; the in-process count is what keeps such a burst within one budget.) Where the two
//! disagree it is towards refusing: when a budget runs out, two checks racing on different threads
//! may reach the two limiters in opposite orders and both be refused. The in-process map holds every
//! key with requests in the last `tau`; idle ones are swept.
//!
//! A late answer is load, not an outage: the limiter counts Redis as down only when its connection is
//! down, a command fails, or checks keep timing out while Redis has answered none for a second.
//! While down, at most one check per second tries Redis again; the first success switches back. Each
//! gateway then enforces its budget alone, from what it last knew of the shared state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{Builder, Client, ClientLike, Config, EventInterface, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::ConnectHandle;
use http::{HeaderName, HeaderValue};

mod gcra;

use gcra::Gcra;
pub use gcra::LocalLimiter;

/// GCRA step in Redis. KEYS[1]: the key; ARGV: interval and tolerance in microseconds, then
/// what the request does ([`Ask`]): spend (`-1`), or only look, restoring a key Redis does not
/// have to the given microseconds ahead of now (`>= 0`). Returns {allowed (0/1), TAT after the
/// decision minus now, in microseconds}.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local known_ahead = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local tat = tonumber(stored or now)
if tat < now then tat = now end
if known_ahead >= 0 then
  if not stored and known_ahead > 0 then
    tat = now + known_ahead
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil(known_ahead / 1000))
  end
  if tat - now > tolerance then return {0, tat - now} end
  return {1, tat - now}
end
if tat - now > tolerance then
  return {0, tat - now}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
return {1, tat - now}
"#;

/// How often a degraded limiter lets one check try Redis again, in microseconds.
const PROBE_GAP_US: u64 = 1_000_000;
/// How long Redis may answer no check, while checks time out waiting for it, before it counts as down,
/// in microseconds. Under load single answers are late; a hung Redis answers nothing at all.
const DOWN_AFTER_US: u64 = 1_000_000;
/// How long `RateLimiter::new` waits for the first connection before starting degraded.
const STARTUP_WAIT: Duration = Duration::from_secs(1);
/// TCP connect deadline; reconnection attempts run in the background, not on the request path.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The route classes, each with its own quota and keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Token requests.
    Auth,
    /// Upload sessions and chunks.
    Upload,
    /// Status queries.
    Status,
}

impl RouteClass {
    /// The name used in keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Upload => "upload",
            Self::Status => "status",
        }
    }
}

/// A sustained rate and the burst allowed on top of it (nginx `rate=` and `burst=`).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// Requests per second; must be positive (non-positive values are treated as one per day).
    pub rate_per_sec: f64,
    /// Extra requests admitted at once from idle.
    pub burst: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            rate_per_sec: 100.0,
            burst: 200,
        }
    }
}

/// Where the shared state lives and the quota of each route class.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Redis URL, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// Prefix of every key (keys are `{prefix}{class}:{kind}:{id}`).
    pub key_prefix: String,
    /// How long a check waits for Redis before the in-process limiter answers.
    pub redis_timeout: Duration,
    /// Quota of [`RouteClass::Auth`].
    pub auth: Quota,
    /// Quota of [`RouteClass::Upload`].
    pub upload: Quota,
    /// Quota of [`RouteClass::Status`].
    pub status: Quota,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "ingest:rl:".into(),
            redis_timeout: Duration::from_millis(50),
            auth: Quota::default(),
            upload: Quota::default(),
            status: Quota::default(),
        }
    }
}

/// The outcome of one check, with what the response headers need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests admitted at once from idle (`burst + 1`).
    pub limit: u32,
    /// Requests that would still pass right now.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset_after: Duration,
    /// When refused: time until a request would pass.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up) and, when refused,
    /// `Retry-After` (seconds, rounded up, at least 1).
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut values = vec![
            ("ratelimit-limit", u64::from(self.limit)),
            ("ratelimit-remaining", u64::from(self.remaining)),
            ("ratelimit-reset", ceil_secs(self.reset_after)),
        ];
        if let Some(retry) = self.retry_after {
            values.push(("retry-after", ceil_secs(retry).max(1)));
        }
        let header = |(name, value)| (HeaderName::from_static(name), HeaderValue::from(value));
        values.into_iter().map(header).collect()
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// The decision of two limits applied at once: refused if either refuses (with the longer wait),
    /// otherwise the fewer remaining requests and the later reset.
    fn stricter(self, other: Self) -> Self {
        match (self.allowed, other.allowed) {
            (true, true) => Self {
                remaining: self.remaining.min(other.remaining),
                reset_after: self.reset_after.max(other.reset_after),
                ..self
            },
            (true, false) => other,
            (false, true) => self,
            (false, false) if other.retry_after > self.retry_after => other,
            (false, false) => self,
        }
    }
}

/// Why Redis could not answer a check; the caller falls back, so these never reach a client.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// Connection, timeout or command error.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The script answered something else than `{allowed, offset}`.
    #[error("unexpected reply from the rate-limit script: {0:?}")]
    Reply(Vec<i64>),
}

impl RateLimitError {
    /// Whether Redis only failed to answer within `redis_timeout`.
    fn is_timeout(&self) -> bool {
        matches!(self, Self::Redis(err) if *err.kind() == fred::error::ErrorKind::Timeout)
    }
}

/// The rate limiter of the gateway: Redis and, on every check, the in-process limiter; the latter alone
/// when Redis is down or late. Cheap to clone; clones share one connection and one in-process state.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RateLimitSettings,
    redis: Option<Redis>,
    /// Counts every check of this gateway and learns the shared state from Redis's answers.
    local: LocalLimiter,
    degraded: AtomicBool,
    /// On the local limiter's clock, in microseconds: when a degraded limiter may next try Redis.
    next_probe_us: AtomicU64,
    /// On the local limiter's clock, in microseconds: when Redis last answered a check (0: at start).
    last_answer_us: AtomicU64,
}

struct Redis {
    client: Client,
    script: Script,
    task: ConnectHandle,
}

impl Drop for Redis {
    fn drop(&mut self) {
        // The connection task reconnects forever; nobody can use this client any more.
        self.task.abort();
    }
}

impl RateLimiter {
    /// Starts the limiter. Never fails: with Redis down (or an invalid URL, which is logged) it starts
    /// degraded and keeps reconnecting in the background.
    pub async fn new(settings: RateLimitSettings) -> Self {
        let (redis, connected) = match connect(&settings).await {
            Ok((redis, connected)) => (Some(redis), connected),
            Err(err) => {
                tracing::error!(error = %err, "invalid rate-limit redis settings, limiting in process only");
                (None, false)
            }
        };
        if redis.is_some() && !connected {
            tracing::warn!(url = %settings.redis_url, "rate-limit redis unavailable at start, limiting in process");
        }
        Self {
            inner: Arc::new(Inner {
                settings,
                redis,
                local: LocalLimiter::default(),
                degraded: AtomicBool::new(!connected),
                next_probe_us: AtomicU64::new(0),
                last_answer_us: AtomicU64::new(0),
            }),
        }
    }

    /// One check of one key; `kind` is "ip" or "client".
    pub async fn check(&self, class: RouteClass, kind: &str, id: &str) -> Decision {
        let inner = &*self.inner;
        let quota = inner.quota(class);
        let prefix = &inner.settings.key_prefix;
        let key = format!("{prefix}{}:{kind}:{id}", class.as_str());
        // Counted here before Redis is asked, so checks still waiting on Redis are already spent when
        // a late one is answered in process.
        let now = inner.local.now();
        let own = inner.local.check_at(&key, quota, now);
        if let Some((redis, probe)) = inner.redis_to_try() {
            let ask = if own.allowed {
                Ask::Spend
            } else {
                Ask::Look {
                    known_ahead: own.reset_after,
                }
            };
            match redis_check(redis, &key, Gcra::new(quota), ask).await {
                Ok(shared) => {
                    inner.answered(probe);
                    // `reset_after` is the shared TAT minus Redis's now. Taken from `now`, before the
                    // command was sent, the learnt TAT errs towards the budget other gateways left.
                    inner.local.raise_tat_at(&key, now + shared.reset_after);
                    return shared.stricter(own);
                }
                Err(err) => inner.failed(&err),
            }
        }
        // Only checks Redis did not answer: the in-process count of the others is not an answer.
        metrics::counter!(crate::metrics::RATELIMIT_FALLBACK).increment(1);
        own
    }

    /// Whether checks are currently answered in process (for `/ready`); also true as soon as the Redis
    /// connection is known to be down, before any check has noticed.
    pub fn is_degraded(&self) -> bool {
        let inner = &*self.inner;
        inner.degraded.load(Ordering::Relaxed)
            || inner
                .redis
                .as_ref()
                .is_none_or(|r| !r.client.is_connected())
    }
}

impl Inner {
    fn quota(&self, class: RouteClass) -> Quota {
        match class {
            RouteClass::Auth => self.settings.auth,
            RouteClass::Upload => self.settings.upload,
            RouteClass::Status => self.settings.status,
        }
    }

    /// Redis, when this check should use it, and whether the check is a probe. Never while the client
    /// knows its connection is down (no request waits for a timeout then); while degraded, only one check
    /// per `PROBE_GAP_US`, so a slow Redis is not hammered and only that check pays the timeout.
    fn redis_to_try(&self) -> Option<(&Redis, bool)> {
        let redis = self.redis.as_ref()?;
        if !redis.client.is_connected() {
            self.mark_degraded(&"connection down");
            return None;
        }
        if !self.degraded.load(Ordering::Relaxed) {
            return Some((redis, false));
        }
        let now = self.local.now_us();
        let next = self.next_probe_us.load(Ordering::Relaxed);
        let claimed = now >= next
            && (self.next_probe_us)
                .compare_exchange(
                    next,
                    now + PROBE_GAP_US,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        claimed.then_some((redis, true))
    }

    /// Redis answered a check. Only a probe ends degradation: a check sent before Redis failed may
    /// still succeed, and must not flip the state back and forth (and flood the log) on a flaky Redis.
    fn answered(&self, probe: bool) {
        self.last_answer_us
            .fetch_max(self.local.now_us(), Ordering::Relaxed);
        if probe {
            self.mark_healthy();
        }
    }

    /// Redis did not answer a check. A late answer while Redis keeps answering others is load: that
    /// check is answered in process, the next ones still ask Redis.
    fn failed(&self, err: &RateLimitError) {
        let last_answer_us = self.last_answer_us.load(Ordering::Relaxed);
        let silent_us = self.local.now_us().saturating_sub(last_answer_us);
        if err.is_timeout() && silent_us < DOWN_AFTER_US {
            tracing::debug!(error = %err, "rate-limit redis answered late, this check is answered in process");
            return;
        }
        self.mark_degraded(err);
    }

    fn mark_healthy(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("rate-limit redis is back, limiting in redis again");
        }
    }

    fn mark_degraded(&self, reason: &dyn std::fmt::Display) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            let next = self.local.now_us() + PROBE_GAP_US;
            self.next_probe_us.store(next, Ordering::Relaxed);
            tracing::warn!(error = %reason, "rate-limit redis failed, limiting in process");
        }
    }
}

/// Builds the client and starts connecting; reports whether the first connection succeeded in time.
async fn connect(settings: &RateLimitSettings) -> Result<(Redis, bool), RateLimitError> {
    let mut config = Config::from_url(&settings.redis_url)?;
    // Keep retrying the first connection too: a gateway may start before Redis does.
    config.fail_fast = false;
    let mut policy = ReconnectPolicy::new_exponential(0, 10, (PROBE_GAP_US / 1000) as u32, 2);
    policy.set_jitter(10);
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = CONNECT_TIMEOUT;
            // A retried EVALSHA could run twice and spend budget twice; the fallback answers instead.
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = settings.redis_timeout)
        .set_policy(policy)
        .build()?;
    let mut errors = client.error_rx();
    let task = client.connect();
    let connected = tokio::select! {
        result = client.wait_for_connect() => result.is_ok(),
        _ = errors.recv() => false,
        _ = tokio::time::sleep(STARTUP_WAIT) => false,
    };
    let script = Script::from_lua(GCRA_LUA);
    if connected {
        // Saves the NOSCRIPT round trip on the first check; `evalsha_with_reload` covers a failure here.
        let _ = script.load(&client).await;
    }
    Ok((
        Redis {
            client,
            script,
            task,
        },
        connected,
    ))
}

/// What a check asks of Redis.
enum Ask {
    /// An allowed request spends from the shared budget.
    Spend,
    /// A request the in-process count refused is refused either way: it only looks (which
    /// still tells whether Redis answers, and its TAT), as a refused request changes no state.
    /// Spending for it would burn the shared budget for nothing, starving the key on every
    /// other gateway. A key Redis lost (restarted without persistence) is restored to what
    /// this gateway knows was spent, `known_ahead` of now, instead of starting a fresh budget.
    Look { known_ahead: Duration },
}

async fn redis_check(
    redis: &Redis,
    key: &str,
    gcra: Gcra,
    ask: Ask,
) -> Result<Decision, RateLimitError> {
    let ask = match ask {
        Ask::Spend => -1,
        Ask::Look { known_ahead } => i64::try_from(known_ahead.as_micros()).unwrap_or(i64::MAX),
    };
    let args = vec![gcra.interval_us as i64, gcra.tolerance_us as i64, ask];
    let reply: Vec<i64> = redis
        .script
        .evalsha_with_reload(&redis.client, key, args)
        .await?;
    match reply[..] {
        [allowed @ (0 | 1), ahead] if ahead >= 0 => Ok(gcra.decision(allowed == 1, ahead as u64)),
        _ => Err(RateLimitError::Reply(reply)),
    }
}

#[cfg(test)]
mod tests;
