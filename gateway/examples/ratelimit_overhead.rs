//! What the rate limiter adds to a small HTTP request: two real gateways in this process, one
//! limiting in Redis and one whose Redis URL points at a closed port (so it limits in process, which
//! costs well under a microsecond per check: `ratelimit_bench`), answer the same keep-alive
//! requests from a few concurrent tasks, in alternating rounds so that background load hits both.
//!
//! `cargo run --release -p gateway --example ratelimit_overhead [seconds-per-round] [tasks]`
//! (defaults 2 and 4; needs the local PostgreSQL, Redis and RabbitMQ of `scripts/services`).
//!
//! Two requests are timed: an authenticated status GET of an upload (limited by IP and by API
//! client: two checks, then four small queries) and a GET without a token (one check, then 401:
//! the cheapest limited request). Rate and burst are set so high that nothing is refused, and the
//! Redis deadline so long that no check falls back: on a loaded machine a short one (the default is
//! 50 ms) sends some checks in process, which would flatter Redis. The table counts checks answered
//! in process per gateway to show it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use gateway::GatewaySettings;
use ingest_testkit::{random_name, TestDb, TestStreams};
use tokio::sync::oneshot;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 5;
const WARM_UP: Duration = Duration::from_millis(500);
/// Redis deadline of the benchmark (the default is 50 ms).
const REDIS_TIMEOUT_MS: u64 = 1000;
const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-secret-123";

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    settings: GatewaySettings,
}

/// A gateway served by this process.
struct Gateway {
    label: &'static str,
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// One kind of request, sent to every gateway.
struct Probe {
    label: &'static str,
    path: String,
    token: Option<String>,
    expect: u16,
}

/// Latencies and wall time of the requests of one (probe, gateway) pair, over all rounds.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    wall: Duration,
    per_round: Vec<f64>,
    in_process: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(Ok(2.0), |a| a.parse())?;
    let tasks: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    ensure!(tasks > 0 && seconds > 0.0, "need seconds > 0 and tasks > 0");
    let per_round = Duration::from_secs_f64(seconds);

    let db = TestDb::new().await.context("test database")?;
    let streams = TestStreams::new("bench-chunks-", 2);
    let upload_dir = std::env::temp_dir().join(random_name("ingest-rl-overhead-"));
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let base = base_flags(&db, &streams, &upload_dir);
    let redis = start("redis", &base, &[]).await?;
    let closed = format!("--redis-url=redis://127.0.0.1:{closed_port}");
    let local = start("in-process", &base, &[closed.as_str()]).await?;

    let http = reqwest::Client::new();
    ensure!(
        ready_redis(&http, &redis).await? == "ok",
        "redis gateway is degraded"
    );
    ensure!(
        ready_redis(&http, &local).await? != "ok",
        "the closed-port gateway uses redis"
    );
    let token = token(&http, &redis).await?;
    let folder = create_upload(&http, &redis, &token).await?;
    let probes = [
        Probe {
            label: "status GET (2 checks)",
            path: format!("/api/upload/{folder}"),
            token: Some(token),
            expect: 200,
        },
        Probe {
            label: "GET, no token (1 check)",
            path: format!("/api/upload/{}", uuid::Uuid::new_v4()),
            token: None,
            expect: 401,
        },
    ];
    let gateways = [&redis, &local];
    for probe in &probes {
        for gateway in gateways {
            round(&http, gateway, probe, WARM_UP, tasks).await?;
        }
    }

    let mut samples: Vec<Vec<Sample>> = probes
        .iter()
        .map(|_| gateways.iter().map(|_| Sample::default()).collect())
        .collect();
    for r in 0..ROUNDS {
        for (p, probe) in probes.iter().enumerate() {
            // Alternate which gateway goes first, so a trend in background load hits both alike.
            for g in [r % 2, 1 - r % 2] {
                // One gateway runs at a time, so the process-wide counter moves for it alone.
                let before = fallbacks(&http, &redis).await?;
                let (latencies, wall) = round(&http, gateways[g], probe, per_round, tasks).await?;
                let sample = &mut samples[p][g];
                sample.in_process += fallbacks(&http, &redis).await? - before;
                sample
                    .per_round
                    .push(latencies.len() as f64 / wall.as_secs_f64());
                sample.latencies.extend(latencies);
                sample.wall += wall;
            }
        }
    }
    ensure!(
        ready_redis(&http, &redis).await? == "ok",
        "redis gateway ended degraded"
    );

    println!("{ROUNDS} rounds of {seconds} s per gateway and request, {tasks} concurrent keep-alive connections\n");
    println!("| request | limiter | requests | checks in process | req/s | req/s per round | p50 | p99 |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (probe, row) in probes.iter().zip(&mut samples) {
        for (gateway, sample) in gateways.iter().zip(row.iter_mut()) {
            sample.latencies.sort_unstable();
            let rounds: Vec<String> = sample.per_round.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                probe.label,
                gateway.label,
                sample.latencies.len(),
                sample.in_process,
                throughput(sample),
                rounds.join(", "),
                micros(quantile(sample, 0.50)),
                micros(quantile(sample, 0.99)),
            );
        }
    }
    println!("\n| request | added at p50 | added at p99 | req/s redis / in-process |");
    println!("| --- | --- | --- | --- |");
    for (probe, row) in probes.iter().zip(&samples) {
        let added =
            |q| quantile(&row[0], q).as_secs_f64() * 1e6 - quantile(&row[1], q).as_secs_f64() * 1e6;
        println!(
            "| {} | {:+.0} µs | {:+.0} µs | {:.2} |",
            probe.label,
            added(0.50),
            added(0.99),
            throughput(&row[0]) / throughput(&row[1]),
        );
    }

    for gateway in [redis, local] {
        let _ = gateway.stop.send(());
        gateway.task.await??;
    }
    let _ = std::fs::remove_dir_all(&upload_dir);
    Ok(())
}

fn base_flags(db: &TestDb, streams: &TestStreams, upload_dir: &std::path::Path) -> Vec<String> {
    vec![
        "gateway".into(),
        format!("--database-url={}", db.url),
        format!("--upload-dir={}", upload_dir.display()),
        format!("--stream-prefix={}", streams.prefix),
        format!("--partitions={}", streams.partitions),
        "--jwt-secret=bench-signing-key-0123456789".into(),
        format!("--bootstrap-client={CLIENT_ID}:{CLIENT_SECRET}"),
        format!("--ratelimit-prefix={}:", random_name("bench:rl:")),
        "--rate-limit-per-sec=1000000".into(),
        "--rate-limit-burst=1000000".into(),
        format!("--redis-timeout-ms={REDIS_TIMEOUT_MS}"),
    ]
}

async fn start(label: &'static str, base: &[String], extra: &[&str]) -> anyhow::Result<Gateway> {
    let args = base.iter().map(String::as_str).chain(extra.iter().copied());
    let settings = Wrapper::try_parse_from(args)?.settings;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway::run(listener, settings, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        ensure!(Instant::now() < deadline, "{label} gateway did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Gateway {
        label,
        url,
        stop,
        task,
    })
}

/// Sends requests from `tasks` concurrent tasks for `duration`; returns their latencies and the
/// wall time.
async fn round(
    http: &reqwest::Client,
    gateway: &Gateway,
    probe: &Probe,
    duration: Duration,
    tasks: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let url = format!("{}{}", gateway.url, probe.path);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (http, url, token) = (http.clone(), url.clone(), probe.token.clone());
            let expect = probe.expect;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let t = Instant::now();
                    let mut request = http.get(&url);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await?;
                    let status = response.status().as_u16();
                    response.bytes().await?;
                    latencies.push(t.elapsed());
                    // A refusal or an error would time something else than the limiter.
                    ensure!(status == expect, "{url} answered {status}, not {expect}");
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    Ok((latencies, started.elapsed()))
}

fn throughput(sample: &Sample) -> f64 {
    sample.latencies.len() as f64 / sample.wall.as_secs_f64()
}

/// The `q` quantile of sorted latencies.
fn quantile(sample: &Sample, q: f64) -> Duration {
    let latencies = &sample.latencies;
    latencies[((latencies.len() - 1) as f64 * q) as usize]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// The `redis` field of `/ready`: "ok", or why limiting is in process.
async fn ready_redis(http: &reqwest::Client, gateway: &Gateway) -> anyhow::Result<String> {
    let ready: serde_json::Value = http
        .get(format!("{}/ready", gateway.url))
        .send()
        .await?
        .json()
        .await?;
    Ok(ready["redis"].as_str().unwrap_or_default().to_owned())
}

/// `ingest_ratelimit_fallback_total` (one recorder per process: it counts both gateways).
async fn fallbacks(http: &reqwest::Client, gateway: &Gateway) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{}/metrics", gateway.url))
        .send()
        .await?
        .text()
        .await?;
    let value = text
        .lines()
        .find(|line| line.starts_with("ingest_ratelimit_fallback_total"))
        .and_then(|line| line.split_whitespace().last())
        .map_or(Ok(0.0), str::parse)?;
    Ok(value)
}

async fn token(http: &reqwest::Client, gateway: &Gateway) -> anyhow::Result<String> {
    let body: serde_json::Value = http
        .post(format!("{}/api/auth/token", gateway.url))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = body["token"].as_str().context("no token in the answer")?;
    Ok(token.to_owned())
}

async fn create_upload(
    http: &reqwest::Client,
    gateway: &Gateway,
    token: &str,
) -> anyhow::Result<String> {
    let body: serde_json::Value = http
        .post(format!("{}/api/upload", gateway.url))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let folder = body["folder"].as_str().context("no folder in the answer")?;
    Ok(folder.to_owned())
}
