//! The rate limiter against real Redis: the shared one on 6379 (random key prefix per test), and
//! redis-servers of the tests' own, on free ports, for outages.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface};
use futures_util::future::join_all;
use gateway::ratelimit::{
    Decision, LocalLimiter, Quota, RateLimitSettings, RateLimiter, RouteClass,
};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
const T: Duration = Duration::from_millis(10);
/// A refill so slow that no test can see one: burst counts are exact whatever the machine's load.
const SLOW: Quota = Quota {
    rate_per_sec: 0.01,
    burst: 200,
};

fn settings(url: &str, quota: Quota) -> RateLimitSettings {
    RateLimitSettings {
        redis_url: url.to_owned(),
        key_prefix: format!("test:rl:{}:", uuid::Uuid::new_v4().simple()),
        redis_timeout: Duration::from_millis(10),
        auth: quota,
        upload: quota,
        status: quota,
    }
}

async fn plain_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).expect("test url should parse"))
        .build()
        .expect("client should build");
    client
        .init()
        .await
        .expect("redis should be up for the test");
    client
}

fn passes(decisions: &[Decision]) -> usize {
    decisions.iter().filter(|d| d.allowed).count()
}

/// Polls `done` every 20 ms until it holds, panicking after `deadline`.
async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A redis-server owned by one test, killed on drop; restartable on the same port.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("should bind a free port");
        listener
            .local_addr()
            .expect("bound socket has an address")
            .port()
    }

    async fn start() -> Self {
        let mut redis = Self {
            port: Self::free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server should be installed");
        self.child = Some(child);
        let url = &self.url();
        wait_until(
            Duration::from_secs(10),
            "own redis to start",
            || async move {
                let Ok(config) = Config::from_url(url) else {
                    return false;
                };
                let Ok(client) = Builder::from_config(config).build() else {
                    return false;
                };
                client.init().await.is_ok() && client.quit().await.is_ok()
            },
        )
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis should be running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill {signal} {pid} failed"
        );
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn burst_of_300_admits_201_then_one_per_10ms() {
    let limiter = RateLimiter::new(settings(SHARED_REDIS, Quota::default())).await;
    let start = Instant::now();
    let mut decisions = Vec::new();
    for _ in 0..300 {
        decisions.push(limiter.check(RouteClass::Upload, "ip", "192.0.2.1").await);
    }
    let span = start.elapsed();
    assert!(!limiter.is_degraded());
    for (i, d) in decisions.iter().take(201).enumerate() {
        assert!(d.allowed, "request {i} of the burst was refused");
        assert_eq!(d.limit, 201);
        assert!(d.remaining >= 200 - i as u32);
    }
    // Exactly 201 when the burst takes under 10 ms; each further 10 ms of wall time earns one more.
    let refills = (span.as_micros() / T.as_micros()) as usize;
    let passed = passes(&decisions);
    assert!(passed <= 201 + refills, "{passed} passed in {span:?}");
    let refused = decisions
        .iter()
        .find(|d| !d.allowed)
        .expect("some must be refused");
    let retry = refused
        .retry_after
        .expect("refused decisions say when to retry");
    assert!(
        retry > Duration::ZERO && retry <= T,
        "retry after {retry:?}"
    );
    assert_eq!(refused.headers().len(), 4);
    // Waiting as told lets one more through.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let d = limiter.check(RouteClass::Upload, "ip", "192.0.2.1").await;
        if d.allowed {
            break;
        }
        assert!(Instant::now() < deadline, "no refill within 2 s");
        tokio::time::sleep(d.retry_after.unwrap_or(T)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_burst_is_exact() {
    let limiter = RateLimiter::new(settings(SHARED_REDIS, SLOW)).await;
    let checks = (0..300).map(|_| limiter.check(RouteClass::Auth, "client", "c-1"));
    let decisions = join_all(checks).await;
    assert!(!limiter.is_degraded());
    assert_eq!(passes(&decisions), 201);
    // Atomic script: every admitted request saw a distinct budget, 200 down to 0.
    let mut remaining: Vec<u32> = decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..=200).collect::<Vec<_>>());
    let interval = Duration::from_secs(100);
    for d in decisions.iter().filter(|d| !d.allowed) {
        assert_eq!(d.remaining, 0);
        assert!(d
            .retry_after
            .is_some_and(|r| r > interval - Duration::from_secs(5) && r <= interval));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_share_one_budget() {
    let first = settings(SHARED_REDIS, SLOW);
    let second = RateLimitSettings {
        redis_timeout: Duration::from_millis(50),
        ..first.clone()
    };
    let (a, b) = (
        RateLimiter::new(first).await,
        RateLimiter::new(second).await,
    );
    let from_a = (0..150).map(|_| a.check(RouteClass::Upload, "ip", "192.0.2.2"));
    let from_b = (0..150).map(|_| b.check(RouteClass::Upload, "ip", "192.0.2.2"));
    let (da, db) = tokio::join!(join_all(from_a), join_all(from_b));
    assert!(!a.is_degraded() && !b.is_degraded());
    assert_eq!(passes(&da) + passes(&db), 201);
    assert!(
        passes(&da) > 0 && passes(&db) > 0,
        "both instances got some of the budget"
    );
}

/// A request this gateway refuses on its own count spends nothing in Redis (a refused request
/// changes no state): it used to spend there whenever Redis still had room, starving the key on
/// every other gateway. And a key Redis lost (a restart without persistence) gets back what
/// this gateway knows was spent rather than a fresh budget.
#[tokio::test]
async fn a_request_refused_in_process_spends_nothing_of_the_shared_budget() {
    // Patient with Redis: a late answer taken in process would make the counts inexact.
    let settings = RateLimitSettings {
        redis_timeout: Duration::from_secs(1),
        ..settings(SHARED_REDIS, SLOW)
    };
    let key = format!("{}upload:ip:192.0.2.9", settings.key_prefix);
    let redis = plain_client(SHARED_REDIS).await;
    // Each on Redis (one that started degraded would count in process only; a check of
    // another key probes it).
    let limiter = || async {
        let limiter = RateLimiter::new(settings.clone()).await;
        wait_until(Duration::from_secs(10), "the limiter on redis", || {
            let limiter = limiter.clone();
            async move {
                limiter.check(RouteClass::Auth, "ip", "warm-up").await;
                !limiter.is_degraded()
            }
        })
        .await;
        limiter
    };
    let admitted = |limiter: &RateLimiter, n: usize| {
        let limiter = limiter.clone();
        async move {
            let mut passed = 0;
            for _ in 0..n {
                let decision = limiter.check(RouteClass::Upload, "ip", "192.0.2.9").await;
                passed += usize::from(decision.allowed);
            }
            passed
        }
    };
    let first = limiter().await;
    assert_eq!(admitted(&first, 201).await, 201);
    // The shared key now holds less than this gateway counted: 100 spent elsewhere after a
    // loss of the key.
    let _: i64 = redis.del(&key).await.expect("del");
    assert_eq!(admitted(&limiter().await, 100).await, 100);
    assert_eq!(admitted(&first, 50).await, 0, "over its own count");
    assert_eq!(
        admitted(&limiter().await, 201).await,
        101,
        "the refused requests spent the shared budget"
    );

    // The key lost again: one refused request puts back what this gateway knows was spent.
    let _: i64 = redis.del(&key).await.expect("del");
    assert_eq!(admitted(&first, 1).await, 0);
    assert_eq!(
        admitted(&limiter().await, 201).await,
        0,
        "a lost key started a fresh budget"
    );
    assert!(!first.is_degraded());
}

#[tokio::test]
async fn keys_follow_the_layout_and_expire() {
    let settings = settings(SHARED_REDIS, Quota::default());
    let key = format!("{}status:client:acme", settings.key_prefix);
    let redis = plain_client(SHARED_REDIS).await;
    let limiter = RateLimiter::new(settings.clone()).await;

    limiter.check(RouteClass::Status, "client", "acme").await;
    let ttl: i64 = redis.pttl(&key).await.expect("pttl");
    assert!(
        (1..=10).contains(&ttl),
        "one request keeps the key for T = 10 ms, not {ttl}"
    );
    for _ in 0..200 {
        limiter.check(RouteClass::Status, "client", "acme").await;
    }
    let ttl: i64 = redis.pttl(&key).await.expect("pttl");
    assert!(
        (1000..=2010).contains(&ttl),
        "a full bucket lives at most tau + T, not {ttl} ms"
    );

    let fast = Quota {
        rate_per_sec: 1000.0,
        burst: 4,
    };
    let limiter = RateLimiter::new(RateLimitSettings {
        auth: fast,
        ..settings.clone()
    })
    .await;
    let decisions =
        join_all((0..10).map(|_| limiter.check(RouteClass::Auth, "ip", "2001:db8::7"))).await;
    assert!(passes(&decisions) >= 5);
    let (key, redis) = (
        &format!("{}auth:ip:2001:db8::7", settings.key_prefix),
        &redis,
    );
    wait_until(
        Duration::from_secs(2),
        "the idle key to expire",
        || async move {
            let exists: i64 = redis.exists(key).await.expect("exists");
            exists == 0
        },
    )
    .await;
    assert!(!limiter.is_degraded());
}

#[tokio::test]
async fn classes_and_kinds_have_separate_budgets() {
    let mut settings = settings(SHARED_REDIS, SLOW);
    settings.auth = Quota {
        rate_per_sec: 0.01,
        burst: 2,
    };
    let limiter = RateLimiter::new(settings).await;
    let auth: Vec<Decision> =
        join_all((0..5).map(|_| limiter.check(RouteClass::Auth, "ip", "192.0.2.3"))).await;
    assert_eq!(passes(&auth), 3);
    assert_eq!(auth[0].limit, 3);
    let upload = limiter.check(RouteClass::Upload, "ip", "192.0.2.3").await;
    assert!(upload.allowed && upload.limit == 201 && upload.remaining == 200);
    let by_client = limiter.check(RouteClass::Auth, "client", "192.0.2.3").await;
    assert!(by_client.allowed && by_client.remaining == 2);
}

#[test]
fn fallback_limiter_has_the_same_semantics_on_an_injected_clock() {
    let limiter = LocalLimiter::default();
    let quota = Quota::default();
    let t0 = Duration::from_secs(5);
    for i in 0..201u32 {
        let d = limiter.check_at("k", quota, t0);
        assert!(d.allowed, "request {i} of the burst");
        assert_eq!(d.remaining, 200 - i);
    }
    // Refused requests do not move the TAT: many of them change nothing.
    for _ in 0..50 {
        let d = limiter.check_at("k", quota, t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(T));
        assert_eq!(d.remaining, 0);
    }
    let almost = limiter.check_at("k", quota, t0 + T - Duration::from_micros(1));
    assert!(!almost.allowed);
    assert_eq!(almost.retry_after, Some(Duration::from_micros(1)));
    for step in 1..=20u32 {
        let at = t0 + T * step;
        assert!(
            limiter.check_at("k", quota, at).allowed,
            "one more at +{step}0 ms"
        );
        assert!(
            !limiter.check_at("k", quota, at).allowed,
            "only one at +{step}0 ms"
        );
    }
    // The bucket is full again 2.01 s after the last admitted request.
    let d = limiter.check_at("k", quota, t0 + 20 * T + Duration::from_millis(2010));
    assert!(d.allowed);
    assert_eq!(d.remaining, 200);
    assert_eq!(
        limiter.check_at("other", quota, t0).remaining,
        200,
        "keys are independent"
    );
}

const SMALL: Quota = Quota {
    rate_per_sec: 0.01,
    burst: 5,
};

#[tokio::test]
async fn outage_falls_back_to_local_limits_and_recovers() {
    let mut redis = OwnRedis::start().await;
    let settings = settings(&redis.url(), SMALL);
    let key = format!("{}upload:ip:192.0.2.4", settings.key_prefix);
    let limiter = &RateLimiter::new(settings).await;
    let check = || limiter.check(RouteClass::Upload, "ip", "192.0.2.4");

    assert!(check().await.allowed && check().await.allowed);
    assert!(!limiter.is_degraded());
    let exists: i64 = plain_client(&redis.url())
        .await
        .exists(&key)
        .await
        .expect("exists");
    assert_eq!(exists, 1, "while healthy the state lives in redis");

    redis.kill();
    let mut during = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        during.push(check().await);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "a check waited on dead redis"
        );
    }
    assert!(limiter.is_degraded());
    assert_eq!(
        passes(&during),
        4,
        "the in-process limiter continues the budget: 6 - 2 spent in redis, not a fresh 6"
    );

    // A fresh server has neither the key nor the script (NOSCRIPT is handled).
    redis.restart().await;
    wait_until(Duration::from_secs(10), "recovery", || async move {
        check().await;
        !limiter.is_degraded()
    })
    .await;
    let after: Vec<Decision> = join_all((0..10).map(|_| check())).await;
    assert_eq!(
        passes(&after),
        0,
        "the new redis has a fresh budget, but this limiter counted the outage's requests"
    );
    let exists: i64 = plain_client(&redis.url())
        .await
        .exists(&key)
        .await
        .expect("exists");
    assert_eq!(exists, 1, "checks are counted in redis again");
}

/// How many of `n` concurrent checks of one key pass.
async fn passed(limiter: &RateLimiter, n: usize) -> usize {
    let checks = (0..n).map(|_| limiter.check(RouteClass::Upload, "ip", "192.0.2.7"));
    passes(&join_all(checks).await)
}

#[tokio::test]
async fn during_an_outage_each_limiter_continues_from_the_shared_budget_it_last_saw() {
    // Two gateways on one redis; a client spends 4 of the 6 it has (burst 5), 3 through the first.
    let mut redis = OwnRedis::start().await;
    let settings = settings(&redis.url(), SMALL);
    let first = RateLimiter::new(settings.clone()).await;
    let second = RateLimiter::new(settings).await;
    assert_eq!(passed(&first, 3).await, 3);
    let seen = second.check(RouteClass::Upload, "ip", "192.0.2.7").await;
    assert!(seen.allowed && seen.remaining == 2, "{seen:?}");

    redis.kill();
    let by_first = passed(&first, 10).await;
    let by_second = passed(&second, 10).await;
    assert!(first.is_degraded() && second.is_degraded());
    // Each continues from the state its last redis answer showed, plus its own requests: the first
    // saw 3 spent, the second 4. Neither starts a fresh budget of 6, but together they admit more
    // than the 2 that were left: each gateway limits alone while redis is down.
    assert_eq!((by_first, by_second), (3, 2));
}

#[tokio::test]
async fn late_answers_are_answered_in_process_from_the_same_budget() {
    let redis = OwnRedis::start().await;
    let limiter = &RateLimiter::new(settings(&redis.url(), SMALL)).await;
    let check = || limiter.check(RouteClass::Upload, "client", "c-late");
    assert_eq!(passes(&join_all((0..3).map(|_| check())).await), 3);

    // A stopped redis is a healthy one that answers late: every check times out.
    redis.signal("-STOP");
    let late = join_all((0..10).map(|_| check())).await;
    assert_eq!(
        passes(&late),
        3,
        "6 - 3 spent in redis, not a second budget of 6"
    );
    assert!(
        !limiter.is_degraded(),
        "late answers alone do not switch the limiter to in-process"
    );

    // Redis runs the late checks when it resumes; the budget is spent there and here alike.
    redis.signal("-CONT");
    let after = join_all((0..5).map(|_| check())).await;
    assert_eq!(passes(&after), 0);
    assert!(!limiter.is_degraded());
}

#[tokio::test]
async fn a_silent_redis_is_down_after_a_second_then_probed_at_most_once_per_second() {
    let redis = OwnRedis::start().await;
    let limiter = &RateLimiter::new(settings(&redis.url(), SMALL)).await;
    let check = || limiter.check(RouteClass::Status, "ip", "192.0.2.5");
    assert!(check().await.allowed);

    redis.signal("-STOP");
    let start = Instant::now();
    let first = check().await;
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "the 10 ms timeout bounds a check"
    );
    assert!(first.allowed && !limiter.is_degraded());
    // Checks keep asking redis, each waiting for its timeout, until it has answered none for a second.
    wait_until(
        Duration::from_secs(10),
        "redis to count as down",
        || async move {
            check().await;
            limiter.is_degraded()
        },
    )
    .await;

    // For 1.5 s, only checks that probe redis pay the timeout: at most one per second.
    let window = Instant::now();
    let mut slow = 0;
    while window.elapsed() < Duration::from_millis(1500) {
        let start = Instant::now();
        check().await;
        slow += usize::from(start.elapsed() >= Duration::from_millis(8));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(slow <= 2, "{slow} checks waited on the stopped redis");
    assert!(limiter.is_degraded());

    redis.signal("-CONT");
    wait_until(Duration::from_secs(10), "recovery", || async move {
        check().await;
        !limiter.is_degraded()
    })
    .await;
}

#[tokio::test]
async fn starts_degraded_without_redis_and_switches_to_it_later() {
    let mut redis = OwnRedis {
        port: OwnRedis::free_port(),
        child: None,
    };
    let start = Instant::now();
    let limiter = &RateLimiter::new(settings(&redis.url(), SMALL)).await;
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(limiter.is_degraded());
    let decisions =
        join_all((0..10).map(|_| limiter.check(RouteClass::Auth, "ip", "192.0.2.6"))).await;
    assert_eq!(passes(&decisions), 6);

    redis.restart().await;
    wait_until(Duration::from_secs(10), "recovery", || async move {
        limiter.check(RouteClass::Auth, "ip", "192.0.2.6").await;
        !limiter.is_degraded()
    })
    .await;
}
