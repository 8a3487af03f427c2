//! Sustained load: `--clients` concurrent clients upload through one gateway for `--secs`
//! seconds, each in a loop (open an upload, PUT its chunks one after the other, complete it).
//!
//! Every response is counted by status (retries would hide failures: there are none), and every
//! request's latency is kept for the percentiles. Around the timed run it samples the open file
//! descriptors and RSS of the processes given with `--pid` (gateway, engine): after a warm-up
//! run and the engine's drain (the baseline), each second of the run (the peak), and after the
//! run and the drain (the end). At the end it checks in PostgreSQL that the engine loaded every
//! acknowledged row exactly once, deletes the run's streams, and prints a Markdown report.
//!
//! ```text
//! cargo run --release -p loadgen --example sustained -- --url http://127.0.0.1:8000 \
//!     --database-url postgres://postgres@127.0.0.1/ingest --pid gateway=123 --pid engine=456
//! ```
//! `bench/sustained` starts everything and writes `bench/results/sustained.md`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[arg(long, default_value = "bench-client")]
    client_id: String,
    #[arg(long, default_value = "bench-secret-123")]
    client_secret: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Length of the timed run.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Length of the warm-up run before the baseline is taken.
    #[arg(long, default_value_t = 10)]
    warmup_secs: u64,
    /// Chunks per upload.
    #[arg(long, default_value_t = 8)]
    chunks: usize,
    /// Data rows per chunk.
    #[arg(long, default_value_t = 200)]
    rows: usize,
    /// The database the gateway and engine use (for the drain and the exactly-once check).
    #[arg(long)]
    database_url: String,
    /// `name=pid` of a process whose descriptors and memory are watched (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    /// Streams deleted at the end: `<prefix>-0` .. `<prefix>-(partitions-1)`.
    #[arg(long)]
    stream_prefix: Option<String>,
    #[arg(long, default_value_t = 4)]
    partitions: u16,
    #[arg(
        long,
        default_value = "rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f"
    )]
    broker_url: String,
    /// The gateway's Redis port (to name its connections in the report).
    #[arg(long, default_value_t = 6379)]
    redis_port: u16,
}

fn parse_pid(value: &str) -> Result<(String, u32), String> {
    let (name, pid) = value.split_once('=').ok_or("expected name=pid")?;
    Ok((
        name.to_owned(),
        pid.parse().map_err(|_| "pid is not a number")?,
    ))
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, u64>,
    /// Latencies in microseconds, by request kind.
    latencies: BTreeMap<&'static str, Vec<u32>>,
    uploads_done: u64,
    rows_acknowledged: u64,
    bytes_acknowledged: u64,
}

impl Tally {
    fn record(&mut self, kind: &'static str, status: String, took: Duration) {
        *self.statuses.entry(status).or_default() += 1;
        let micros = took.as_micros().min(u128::from(u32::MAX)) as u32;
        self.latencies.entry(kind).or_default().push(micros);
    }

    fn requests(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn failures(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| s.starts_with('5') || s.as_str() == "error")
            .map(|(_, n)| n)
            .sum()
    }
}

/// One second's (or one moment's) view of a process.
#[derive(Clone, Copy, Default)]
struct ProcSample {
    fds: usize,
    rss_kib: u64,
}

/// What a process's descriptors are: TCP connections by the port of their other end (or of
/// ours, for accepted ones), and the rest by kind.
fn fd_kinds(pid: u32, ports: &[(&str, u16)]) -> BTreeMap<String, usize> {
    // inode -> (local port, remote port), from the process's network namespace.
    let mut sockets = BTreeMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| {
                addr.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            if let (Some(local), Some(remote), Some(inode)) = (
                fields.get(1).and_then(|a| port(a)),
                fields.get(2).and_then(|a| port(a)),
                fields.get(9),
            ) {
                sockets.insert(inode.to_string(), (local, remote));
            }
        }
    }
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            match sockets.get(inode) {
                Some(&(local, remote)) => ports
                    .iter()
                    .find(|(_, p)| *p == remote || (*p == local && remote != 0))
                    .map_or("other tcp", |(name, _)| name)
                    .to_owned(),
                None => "other sockets".to_owned(),
            }
        } else if target.starts_with('/') {
            "files".to_owned()
        } else {
            "pipes, epoll, events".to_owned()
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

fn port_of(url: &str, default: u16) -> u16 {
    url.rsplit_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(default)
}

fn sample(pid: u32) -> ProcSample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    ProcSample { fds, rss_kib }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients + 16)
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()?;
    let token = token(&http, &args).await?;
    let db = ingest_runtime::db::connect(&args.database_url).await?;

    eprintln!(
        "warm-up: {} clients for {} s",
        args.clients, args.warmup_secs
    );
    let warmup = run(&http, &args, &token, args.warmup_secs).await;
    if warmup.failures() > 0 {
        bail!("the warm-up failed: {:?}", warmup.statuses);
    }
    drain(&db).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline: Vec<ProcSample> = args.pids.iter().map(|(_, pid)| sample(*pid)).collect();
    let ports = [
        ("postgres", port_of(&args.database_url, 5432)),
        ("broker", port_of(&args.broker_url, 5552)),
        ("redis", args.redis_port),
        ("clients", port_of(&args.url, 80)),
    ];
    let kinds = |pid: u32| fd_kinds(pid, &ports);
    let baseline_kinds: Vec<_> = args.pids.iter().map(|(_, pid)| kinds(*pid)).collect();

    eprintln!("run: {} clients for {} s", args.clients, args.secs);
    let (peaks_tx, peaks) = watch_peaks(&args);
    let started = Instant::now();
    let tally = run(&http, &args, &token, args.secs).await;
    let elapsed = started.elapsed();
    peaks_tx.store(true, Ordering::Relaxed);
    let drained_in = drain(&db).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<ProcSample> = args.pids.iter().map(|(_, pid)| sample(*pid)).collect();
    let after_kinds: Vec<_> = args.pids.iter().map(|(_, pid)| kinds(*pid)).collect();
    let peaks = peaks.await?;

    let (rows_loaded, rows_in_table) = totals(&db).await?;
    let expected_rows = warmup.rows_acknowledged + tally.rows_acknowledged;
    delete_streams(&args);

    let report = Report {
        args: &args,
        tally: &tally,
        elapsed,
        drained_in,
        baseline: &baseline,
        peaks: &peaks,
        after: &after,
        baseline_kinds: &baseline_kinds,
        after_kinds: &after_kinds,
        expected_rows,
        rows_loaded,
        rows_in_table,
    };
    let (verdict, grew) = report.growth();
    println!("{}\n{verdict}", report.markdown());
    let exact = rows_loaded == expected_rows && rows_in_table == expected_rows;
    if tally.failures() > 0 || !exact || grew {
        bail!("sustained load failed: see the report");
    }
    Ok(())
}

async fn token(http: &reqwest::Client, args: &Args) -> anyhow::Result<String> {
    let answer: serde_json::Value = http
        .post(format!("{}/api/auth/token", args.url))
        .basic_auth(&args.client_id, Some(&args.client_secret))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(answer["token"].as_str().context("no token")?.to_owned())
}

/// Runs the clients for `secs` seconds; each finishes the upload it is in.
async fn run(http: &reqwest::Client, args: &Arc<Args>, token: &str, secs: u64) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..args.clients)
        .map(|n| {
            let (http, args, token, tally) =
                (http.clone(), args.clone(), token.to_owned(), tally.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let first_row = (n as u64 * 1_000_000 + seq) * args.rows as u64;
                    upload(&http, &args, &token, &tally, first_row).await;
                    seq += args.chunks as u64;
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.await;
    }
    Arc::try_unwrap(tally)
        .ok()
        .expect("every client has finished")
        .into_inner()
        .expect("no client panicked holding the tally")
}

/// One upload: open, PUT each chunk, complete. Stops at the first failed request.
async fn upload(
    http: &reqwest::Client,
    args: &Args,
    token: &str,
    tally: &Mutex<Tally>,
    first_row: u64,
) {
    let send = |kind: &'static str, request: reqwest::RequestBuilder| async move {
        let started = Instant::now();
        let response = request.bearer_auth(token).send().await;
        let status = match &response {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "error".to_owned(),
        };
        let ok = response.as_ref().is_ok_and(|r| r.status().is_success());
        let body = match response {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let took = started.elapsed();
        tally.lock().unwrap().record(kind, status, took);
        ok.then_some(body)
    };
    let body = json!({"expected_chunks": args.chunks});
    let create = http.post(format!("{}/api/upload", args.url)).json(&body);
    let Some(created) = send("create", create).await else {
        return;
    };
    let Some(folder) = created["folder"].as_str() else {
        return;
    };
    let mut rows = 0;
    let mut bytes = 0;
    for n in 0..args.chunks {
        let start = first_row + (n * args.rows) as u64;
        let chunk = csv_rows(start, args.rows, n == 0);
        bytes += chunk.len() as u64;
        let put = http
            .put(format!("{}/api/upload/{folder}/chunks/{n}", args.url))
            .header("content-type", "text/csv")
            .body(chunk);
        if send("chunk", put).await.is_none() {
            return;
        }
        rows += args.rows as u64;
    }
    let body = json!({"chunks": args.chunks});
    let complete = http
        .post(format!("{}/api/upload/{folder}/complete", args.url))
        .json(&body);
    if send("complete", complete).await.is_some() {
        let mut tally = tally.lock().unwrap();
        tally.uploads_done += 1;
        tally.rows_acknowledged += rows;
        tally.bytes_acknowledged += bytes;
    }
}

/// Original-format rows (day-first dates a minute apart within 2023), CRLF.
fn csv_rows(start: u64, rows: usize, header: bool) -> Vec<u8> {
    let mut out = String::with_capacity(rows * 52 + 32);
    if header {
        out.push_str("date,content,amount,type\r\n");
    }
    for i in start..start + rows as u64 {
        let minute = i % (360 * 1440);
        let (day, rest) = (minute / 1440, minute % 1440);
        let (month, day) = (day / 30 + 1, day % 28 + 1);
        let cents = (i.wrapping_mul(7919) % 200_000) as i64 - 100_000;
        let kind = if i % 2 == 0 { "Deposit" } else { "Withdrawal" };
        let sign = if cents < 0 { "-" } else { "" };
        out.push_str(&format!(
            "{day:02}/{month:02}/2023 {:02}:{:02}:00,Any text there,{sign}{}.{:02},{kind}\r\n",
            rest / 60,
            rest % 60,
            cents.abs() / 100,
            cents.abs() % 100
        ));
    }
    out.into_bytes()
}

/// Samples the watched processes every second until told to stop; returns the peaks.
fn watch_peaks(args: &Args) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<ProcSample>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let pids: Vec<u32> = args.pids.iter().map(|(_, pid)| *pid).collect();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut peaks = vec![ProcSample::default(); pids.len()];
            while !stop.load(Ordering::Relaxed) {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    let now = sample(*pid);
                    peak.fds = peak.fds.max(now.fds);
                    peak.rss_kib = peak.rss_kib.max(now.rss_kib);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            peaks
        }
    });
    (stop, task)
}

/// Waits until the engine has loaded every upload that was completed; returns how long it took.
async fn drain(db: &tokio_postgres::Client) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let pending: i64 = db
            .query_one(
                "SELECT count(*) FROM uploads WHERE state NOT IN ('done', 'failed')
                 AND expected_chunks IS NOT NULL AND chunks_received = expected_chunks",
                &[],
            )
            .await?
            .get(0);
        if pending == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{pending} uploads still loading after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows the ledger says were loaded (done uploads), and rows in the table.
async fn totals(db: &tokio_postgres::Client) -> anyhow::Result<(u64, u64)> {
    let row = db
        .query_one(
            "SELECT (SELECT coalesce(sum(rows_loaded), 0)::int8 FROM uploads WHERE state = 'done'),
                    (SELECT count(*) FROM transactions)",
            &[],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

fn delete_streams(args: &Args) {
    let Some(prefix) = &args.stream_prefix else {
        return;
    };
    let Ok(broker) = ingest_runtime::broker::BrokerAddress::parse(&args.broker_url) else {
        return;
    };
    ingest_testkit::delete_streams(broker, prefix, args.partitions);
}

struct Report<'a> {
    args: &'a Args,
    tally: &'a Tally,
    elapsed: Duration,
    drained_in: Duration,
    baseline: &'a [ProcSample],
    peaks: &'a [ProcSample],
    after: &'a [ProcSample],
    baseline_kinds: &'a [BTreeMap<String, usize>],
    after_kinds: &'a [BTreeMap<String, usize>],
    expected_rows: u64,
    rows_loaded: u64,
    rows_in_table: u64,
}

impl Report<'_> {
    /// Whether descriptors or memory grew over the run: descriptors other than the clients'
    /// idle keep-alive connections (which close on their own) must be as many as after the
    /// warm-up, and RSS may not exceed the warm-up's by more than a quarter (or 16 MiB).
    fn growth(&self) -> (String, bool) {
        let mut lines = vec!["Growth after the run:".to_owned()];
        let mut grew = false;
        for (i, (name, _)) in self.args.pids.iter().enumerate() {
            let lasting = |kinds: &BTreeMap<String, usize>| {
                kinds
                    .iter()
                    .filter(|(k, _)| *k != "clients")
                    .map(|(_, n)| n)
                    .sum::<usize>()
            };
            let (fds_before, fds_after) = (
                lasting(&self.baseline_kinds[i]),
                lasting(&self.after_kinds[i]),
            );
            let (rss_before, rss_after) = (self.baseline[i].rss_kib, self.after[i].rss_kib);
            let allowed = (rss_before / 4).max(16 * 1024);
            let bad = fds_after > fds_before || rss_after > rss_before + allowed;
            grew |= bad;
            lines.push(format!(
                "- {name}: descriptors other than client connections {fds_before} -> {fds_after}; \
                 RSS {:+.1} MiB ({:.1} -> {:.1} MiB): {}",
                (rss_after as f64 - rss_before as f64) / 1024.0,
                rss_before as f64 / 1024.0,
                rss_after as f64 / 1024.0,
                if bad { "GREW" } else { "no growth" }
            ));
        }
        (lines.join("\n"), grew)
    }

    fn markdown(&self) -> String {
        let t = self.tally;
        let secs = self.elapsed.as_secs_f64();
        let mut out = format!(
            "| clients | run | requests | req/s | uploads | rows/s acknowledged | MB/s | statuses |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n\
             | {} | {secs:.1} s | {} | {:.0} | {} | {:.0} | {:.2} | {:?} |\n\n",
            self.args.clients,
            t.requests(),
            t.requests() as f64 / secs,
            t.uploads_done,
            t.rows_acknowledged as f64 / secs,
            t.bytes_acknowledged as f64 / secs / 1e6,
            t.statuses,
        );
        out.push_str(
            "| request | count | p50 | p90 | p99 | max |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for (kind, latencies) in &t.latencies {
            let mut sorted = latencies.clone();
            sorted.sort_unstable();
            let q = |q: f64| {
                let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
                format!("{:.1} ms", f64::from(sorted[rank - 1]) / 1000.0)
            };
            out.push_str(&format!(
                "| {kind} | {} | {} | {} | {} | {} |\n",
                sorted.len(),
                q(0.5),
                q(0.9),
                q(0.99),
                q(1.0)
            ));
        }
        out.push_str(
            "\n| process | fds after warm-up | fds peak | fds after run | RSS after warm-up | RSS peak | RSS after run |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        for (i, (name, _)) in self.args.pids.iter().enumerate() {
            let (b, p, a) = (self.baseline[i], self.peaks[i], self.after[i]);
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                b.fds,
                p.fds,
                a.fds,
                mib(b.rss_kib),
                mib(p.rss_kib),
                mib(a.rss_kib)
            ));
        }
        out.push_str("\nDescriptors by kind (TCP by the service at the other end):\n\n");
        for (i, (name, _)) in self.args.pids.iter().enumerate() {
            out.push_str(&format!(
                "- {name}: after warm-up {:?}; after the run {:?}\n",
                self.baseline_kinds[i], self.after_kinds[i]
            ));
        }
        out.push_str(&format!(
            "\nDrain after the run: {:.1} s. Rows acknowledged (warm-up and run): {}; loaded \
             according to the ledger: {}; in `transactions`: {}.\n",
            self.drained_in.as_secs_f64(),
            self.expected_rows,
            self.rows_loaded,
            self.rows_in_table
        ));
        out
    }
}
