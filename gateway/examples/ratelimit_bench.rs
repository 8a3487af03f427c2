//! Throughput and latency of rate-limit checks against a real Redis, and of the in-process fallback.
//!
//! `cargo run -p gateway --release --example ratelimit_bench [redis-url]`
//! (default `redis://127.0.0.1:6379`; keys go under a random prefix and expire by themselves).

use std::time::{Duration, Instant};

use gateway::ratelimit::{LocalLimiter, Quota, RateLimitSettings, RateLimiter, RouteClass};

const SEQUENTIAL_CHECKS: usize = 20_000;
const TASKS: usize = 32;
const CHECKS_PER_TASK: usize = 2_000;
const LOCAL_CHECKS: usize = 1_000_000;
/// Distinct client addresses, so the load touches many keys as real traffic does.
const CLIENTS: usize = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis_url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let settings = RateLimitSettings {
        redis_url,
        key_prefix: format!("bench:rl:{}:", uuid::Uuid::new_v4().simple()),
        // A short deadline (the default is 50 ms) sends checks in process on a loaded machine, and the
        // in-process answers would be counted as Redis ones.
        redis_timeout: Duration::from_secs(1),
        ..RateLimitSettings::default()
    };
    let limiter = RateLimiter::new(settings.clone()).await;
    anyhow::ensure!(
        !limiter.is_degraded(),
        "redis at {} is not reachable",
        settings.redis_url
    );

    // Warm-up: connection, script cache, allocator.
    run(&limiter, 0, 1_000).await;

    let start = Instant::now();
    let (mut latencies, fallbacks) = run(&limiter, 0, SEQUENTIAL_CHECKS).await;
    report(
        "redis, sequential",
        start.elapsed(),
        &mut latencies,
        fallbacks,
    );

    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let limiter = limiter.clone();
            tokio::spawn(
                async move { run(&limiter, task * CHECKS_PER_TASK, CHECKS_PER_TASK).await },
            )
        })
        .collect();
    let (mut latencies, mut fallbacks) = (Vec::new(), 0);
    for task in tasks {
        let (l, f) = task.await?;
        latencies.extend(l);
        fallbacks += f;
    }
    let label = format!("redis, {TASKS} concurrent tasks");
    report(&label, start.elapsed(), &mut latencies, fallbacks);

    let local = LocalLimiter::default();
    let keys: Vec<String> = (0..CLIENTS)
        .map(|i| format!("upload:ip:{}", ip(i)))
        .collect();
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(LOCAL_CHECKS);
    for i in 0..LOCAL_CHECKS {
        let t = Instant::now();
        std::hint::black_box(local.check(&keys[i % CLIENTS], Quota::default()));
        latencies.push(t.elapsed());
    }
    report(
        "in-process fallback, sequential",
        start.elapsed(),
        &mut latencies,
        0,
    );
    Ok(())
}

/// Runs `count` checks one after another; returns their latencies and how many ran while the limiter
/// counted Redis as down (a single late answer does not, but with a 1 s deadline none is expected).
async fn run(limiter: &RateLimiter, offset: usize, count: usize) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(count);
    let mut fallbacks = 0;
    for i in offset..offset + count {
        let t = Instant::now();
        let decision = limiter
            .check(RouteClass::Upload, "ip", &ip(i % CLIENTS))
            .await;
        latencies.push(t.elapsed());
        std::hint::black_box(decision);
        fallbacks += usize::from(limiter.is_degraded());
    }
    (latencies, fallbacks)
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn report(label: &str, wall: Duration, latencies: &mut [Duration], fallbacks: usize) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{label:<34} {:>9.0} checks/s  p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}  ({} checks, {fallbacks} answered in process)",
        latencies.len() as f64 / wall.as_secs_f64(),
        at(0.50),
        at(0.99),
        at(1.0),
        latencies.len(),
    );
}
