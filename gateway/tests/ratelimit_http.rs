//! Rate limits as clients see them: over real HTTP, before the body is read, keyed by the real
//! client IP, shared by gateways through Redis, and held by concurrent bursts on a busy machine
//! whether Redis answers in time, late, or not at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use ingest_testkit::random_name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A route that is rate limited by IP and then refused by auth: cheap, and touches nothing.
fn probe_url(app: &TestGateway) -> String {
    format!("{}/api/upload/{}", app.url, uuid::Uuid::new_v4())
}

#[tokio::test]
async fn a_300_request_burst_admits_201_then_one_per_10ms_with_headers() {
    let app = TestGateway::start(&[]).await;
    let started = Instant::now();
    let requests = (0..300).map(|_| app.http.get(probe_url(&app)).send());
    let responses = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    let statuses: Vec<u16> = responses
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    let passed = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(passed + limited, 300);
    // 201 at once, plus one per 10 ms the burst took to arrive.
    let refill = (elapsed.as_millis() / 10) as usize;
    assert!(
        (201..=201 + refill).contains(&passed),
        "{passed} passed in {elapsed:?}"
    );
    let refused = responses
        .into_iter()
        .map(Result::unwrap)
        .find(|r| r.status() == 429)
        .unwrap();
    for header in [
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ] {
        assert!(refused.headers().contains_key(header), "missing {header}");
    }
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    // One request per ~1000 s and a burst of 1: exactly two requests pass per key.
    let app = TestGateway::start(&["--rate-limit-per-sec=0.001", "--rate-limit-burst=1"]).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let response = app
            .http
            .get(probe_url(&app))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 429]);
}

#[tokio::test]
async fn two_gateways_sharing_redis_share_one_budget() {
    let prefix = format!("--ratelimit-prefix={}:", random_name("shared"));
    let flags = [
        "--rate-limit-per-sec=0.001",
        "--rate-limit-burst=1",
        prefix.as_str(),
    ];
    let first = TestGateway::start(&flags).await;
    let second = TestGateway::start(&flags).await;
    let a = first
        .http
        .get(probe_url(&first))
        .send()
        .await
        .unwrap()
        .status();
    let b = second
        .http
        .get(probe_url(&second))
        .send()
        .await
        .unwrap()
        .status();
    let c = first
        .http
        .get(probe_url(&first))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!((a.as_u16(), b.as_u16(), c.as_u16()), (401, 401, 429));
}

#[tokio::test]
async fn a_limited_client_is_refused_before_it_sends_its_body() {
    let app = TestGateway::start(&["--rate-limit-per-sec=0.001", "--rate-limit-burst=0"]).await;
    // Burst 0 admits one request per class: the token (auth class), then one upload request.
    let token = app.token().await;
    assert_eq!(app.create_upload_raw(&token).await, 200);
    // The upload budget is spent: a 100-continue client gets 429, never "100 Continue".
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n",
        uuid::Uuid::new_v4()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the gateway answers without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buffer[..read]);
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
}

#[tokio::test]
async fn token_checks_for_nginx_are_not_rate_limited() {
    // nginx turns a 429 from its auth_request subrequest into a 500, and the upload it guards
    // is limited when it arrives anyway.
    let app = TestGateway::start(&["--rate-limit-per-sec=0.001", "--rate-limit-burst=0"]).await;
    let token = app.token().await;
    for _ in 0..5 {
        let response = app
            .http
            .get(format!("{}/api/auth/verify", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let bad = app
        .http
        .get(format!("{}/api/auth/verify", app.url))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

// ---- Concurrent bursts on a busy machine ----------------------------------------------------------

/// Threads that keep every core busy until dropped: the burst that leaked was seen on a loaded
/// machine, where the gateway's tasks, Redis and PostgreSQL all wait for CPU.
struct CpuBurners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuBurners {
    /// Four spinning threads per core.
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..4 * cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..10_000u64 {
                            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuBurners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What one burst got through.
#[derive(Debug, Default)]
struct Burst {
    admitted: usize,
    limited: usize,
}

/// One client address's keep-alive connections, all asking for the status of one folder.
struct StatusClient {
    /// One `reqwest::Client` per connection: each has its own pool, so its own connection.
    connections: Vec<reqwest::Client>,
    url: String,
    token: String,
}

impl StatusClient {
    /// A token (auth class) and a folder (upload class), so status requests spend only the status
    /// budget; `POST /api/upload` is accepted with any 2xx.
    async fn new(app: &TestGateway, connections: usize) -> Self {
        let token = app.token().await;
        let response = app
            .http
            .post(format!("{}/api/upload", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("the gateway answers");
        assert!(response.status().is_success(), "{}", response.status());
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        let folder = body["folder"].as_str().expect("a folder");
        Self {
            connections: (0..connections).map(|_| reqwest::Client::new()).collect(),
            url: format!("{}/api/upload/{folder}", app.url),
            token,
        }
    }

    /// The same address, token and folder over `connections` other connections.
    fn with_connections(&self, connections: usize) -> Self {
        Self {
            connections: (0..connections).map(|_| reqwest::Client::new()).collect(),
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }

    /// Every connection sends `per_connection` status requests back to back, all starting
    /// together. Admitted = 200, limited = 429, nothing else.
    async fn burst(&self, per_connection: usize) -> Burst {
        let start = Arc::new(tokio::sync::Barrier::new(self.connections.len()));
        let workers = self.connections.iter().map(|http| {
            let (http, url, token) = (http.clone(), self.url.clone(), self.token.clone());
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut statuses = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let response = http.get(&url).bearer_auth(&token).send().await;
                    statuses.push(response.expect("the gateway answers").status().as_u16());
                }
                statuses
            })
        });
        let mut burst = Burst::default();
        for worker in futures_util::future::join_all(workers).await {
            for status in worker.expect("a burst worker panicked") {
                match status {
                    200 => burst.admitted += 1,
                    429 => burst.limited += 1,
                    other => panic!("only 200 and 429 expected, got {other}"),
                }
            }
        }
        burst
    }
}

/// The quota of the burst tests: the burst of 200 with a slow refill, so the bound is
/// about the burst (one budget of 201, not two) whatever the load does to the burst's duration.
const BURST: usize = 200;
const RATE_PER_SEC: f64 = 10.0;
const BURST_QUOTA: [&str; 2] = ["--rate-limit-per-sec=10", "--rate-limit-burst=200"];
/// 64 connections x 16 = 1024 requests, about 1.5 s on two busy cores: long enough for the old
/// limiter's once-a-second Redis probe to switch back and forth between the two budgets.
const CONNECTIONS: usize = 64;
const PER_CONNECTION: usize = 16;

/// The most one gateway may admit for one key in `elapsed` (nginx `limit_req ... nodelay`):
/// `burst + 1` at once and one per `1/rate` after, plus 2: one for rounding the refill down to
/// whole requests, one for the test's and the gateway's clocks being read at different moments.
/// The gateway's checks all ran inside `elapsed` (measured from before the first request was sent
/// to after the last answer), so their own refill is at most this.
fn allowed_in(elapsed: Duration) -> usize {
    BURST + 1 + (RATE_PER_SEC * elapsed.as_secs_f64()) as usize + 2
}

/// Admitted requests over a first phase with no extra load (`first`) and then a burst of every
/// connection of `client` with the CPU burners on; checked against one budget for the time both
/// phases took.
async fn assert_one_budget<F, Fut>(client: &StatusClient, first: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Burst>,
{
    let started = Instant::now();
    let first = first().await;
    let burst = {
        let _busy = CpuBurners::start();
        client.burst(PER_CONNECTION).await
    };
    let elapsed = started.elapsed();
    let admitted = first.admitted + burst.admitted;
    let bound = allowed_in(elapsed);
    eprintln!(
        "admitted {admitted} in {elapsed:?} (bound {bound}): first {first:?}, burst {burst:?}"
    );
    assert!(
        admitted <= bound,
        "{admitted} admitted in {elapsed:?}, more than one budget ({bound}): first {first:?}, busy burst {burst:?}"
    );
    assert!(
        admitted > BURST,
        "the limiter admits a whole burst: first {first:?}, busy burst {burst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_burst_on_a_busy_machine_admits_one_budget() {
    // The deadline of the report (then the default), against the shared Redis on 6379.
    let flags: Vec<&str> = BURST_QUOTA
        .iter()
        .chain(&["--redis-timeout-ms=10"])
        .copied()
        .collect();
    let app = TestGateway::start(&flags).await;
    let client = StatusClient::new(&app, CONNECTIONS).await;
    // One request per connection opens them (a client's warm keep-alive pool) and spends part of
    // the budget in Redis; then all 64 connections burst at once on a loaded machine.
    assert_one_budget(&client, || client.burst(1)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1ms_redis_deadline_adds_no_second_budget() {
    // Redis is healthy but, for a 1 ms deadline on a loaded machine, slow: many burst checks time
    // out and are answered in process. The budget was spent first, one request at a time on one
    // connection, mostly in Redis; the in-process answers must know it.
    let flags: Vec<&str> = BURST_QUOTA
        .iter()
        .chain(&["--redis-timeout-ms=1"])
        .copied()
        .collect();
    let app = TestGateway::start(&flags).await;
    let client = StatusClient::new(&app, CONNECTIONS).await;
    let sequential = client.with_connections(1);
    assert_one_budget(&client, || sequential.burst(BURST + 50)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_one_gateway_still_admits_one_budget() {
    // Nothing listens there: the gateway starts degraded and limits in process, alone.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let redis = format!("--redis-url=redis://127.0.0.1:{port}");
    let flags: Vec<&str> = BURST_QUOTA
        .iter()
        .chain(&[redis.as_str()])
        .copied()
        .collect();
    let app = TestGateway::start(&flags).await;
    let client = StatusClient::new(&app, CONNECTIONS).await;
    assert_one_budget(&client, || client.burst(1)).await;
    app.stop().await;
}
