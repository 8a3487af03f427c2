//! The Grafana dashboard against the live services: traffic goes through a real gateway (in
//! process) and a real engine (a child process, so each exports only its own metrics), touching
//! every metric the dashboard draws; then every metric named by the dashboard's PromQL must be in
//! the `/metrics` of the job its selector names (`job="gateway"` or `job="engine"`), and the SQL
//! of its PostgreSQL panels must run against the real schema.
//!
//! Every metric the dashboard draws is named and described in its job's catalogue
//! (`gateway::metrics::FAMILIES`, `engine::metrics::catalogue()`), exported with that `# HELP` text.
//!
//! Also: every metric the engine exports is listed, at zero, on its very first scrape.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ingest_contract::streams::stream_name;
use ingest_testkit::{broker, wait_for};
use rabbitmq_stream_client::types::Message;
use support::*;

const ENGINE: &str = env!("CARGO_BIN_EXE_system-engine");

/// A metric a PromQL expression selects: its name, and its label equality matchers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    labels: BTreeMap<String, String>,
}

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    // Aggregations, which may be followed by `by (...)` before their parenthesis.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric selectors of a PromQL expression: identifiers that are not functions, keywords or
/// label lists, with the equality matchers of the `{...}` right after them.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let skip_group = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while i < chars.len() {
            if chars[i] == open {
                depth += 1;
            } else if chars[i] == close {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            i += 1;
        }
        i
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            let quote = c;
            i += 1;
            while i < chars.len() && chars[i] != quote {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // Grafana variables and numbers (durations only appear inside `[...]`).
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = next_non_space(i);
            let next = chars.get(after).copied();
            if GROUPING.contains(&word.as_str()) {
                if next == Some('(') {
                    i = skip_group(after, '(', ')');
                }
            } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) || next == Some('(') {
                // A keyword or a function call.
            } else {
                let mut labels = BTreeMap::new();
                if next == Some('{') {
                    let end = skip_group(after, '{', '}');
                    let inner: String = chars[after + 1..end - 1].iter().collect();
                    for matcher in inner.split(',') {
                        if let Some((label, value)) = matcher.split_once('=') {
                            let label = label.trim();
                            // Only equality matchers (`=~`, `!=`, `!~` are skipped).
                            if value.starts_with('~') || label.ends_with('!') {
                                continue;
                            }
                            labels.insert(
                                label.to_owned(),
                                value.trim().trim_matches('"').to_owned(),
                            );
                        }
                    }
                    i = end;
                }
                found.push(Selector { name: word, labels });
            }
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn selectors_are_extracted_from_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{job="gateway", status=~"5.."}[$__rate_interval]))) / clamp_min(sum(rate(b_total[5m])) + c, 1e-9) and on(instance) d offset 5m"#;
    let names: Vec<String> = selectors(expr).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a_seconds_bucket", "b_total", "c", "d"]);
    let first = &selectors(expr)[0];
    assert_eq!(first.labels.get("job").map(String::as_str), Some("gateway"));
    assert!(!first.labels.contains_key("status"));
}

/// Samples of a Prometheus text exposition: metric name -> the label sets seen.
fn exposition(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut samples: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, _value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        samples.entry(name.to_owned()).or_default().push(labels);
    }
    samples
}

/// The value of the sample `name{labels}` (exactly those labels) in a text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels: BTreeMap<String, String> = labels
                .split("\",")
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            (series_name == name && labels == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// `(datasource type, query)` of every target of every panel, rows' nested panels included.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let kind = target["datasource"]["type"]
                .as_str()
                .or(panel["datasource"]["type"].as_str())
                .unwrap_or_default()
                .to_owned();
            let query = target["expr"]
                .as_str()
                .or(target["rawSql"].as_str())
                .unwrap_or_else(|| panic!("panel {title:?} has a target without a query"))
                .to_owned();
            out.push((title.clone(), kind, query));
        }
    }
    out
}

/// An engine binary on a known port, killed on drop.
struct EngineChild(Child);

impl Drop for EngineChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_engine(env: &TestEnv, addr: SocketAddr, extra: &[&str]) -> EngineChild {
    let args: Vec<String> = env
        .engine_args(extra)
        .into_iter()
        .map(|arg| {
            if arg.starts_with("--addr=") {
                format!("--addr={addr}")
            } else {
                arg
            }
        })
        .collect();
    let child = Command::new(ENGINE)
        .args(&args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the engine binary should start");
    EngineChild(child)
}

/// Waits until the upload is done or failed; its state, rows loaded and rows rejected.
async fn finished(env: &TestEnv, folder: &str) -> (String, i64, i64) {
    let client = env.db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(folder).unwrap();
    wait_for("the upload to finish", Duration::from_secs(60), || async {
        let row = client
            .query_one(
                "SELECT state, rows_loaded, rows_rejected FROM uploads WHERE upload_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let state: String = row.get(0);
        (state == "done" || state == "failed").then(|| (state, row.get(1), row.get(2)))
    })
    .await
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_draws_is_exported() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/dashboards/ingest.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "the dashboard should have its panels");

    let env = TestEnv::new(2).await;
    // Eleven requests per route class and key, then one per 100 s: the test's own few requests
    // pass, and a dozen more from one address meet a 429 however slow the machine is. Uploads are
    // awaited in the database, not by polling the (limited) status route.
    let limits = ["--rate-limit-per-sec=0.01", "--rate-limit-burst=10"];
    let gateway = start_gateway(&env, &limits).await;
    // A gateway whose Redis is unreachable answers rate-limit checks in process.
    let degraded = start_gateway(&env, &["--redis-url=redis://127.0.0.1:1"]).await;
    let engine_addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let _engine = spawn_engine(&env, engine_addr, &[]);
    wait_for("engine health", Duration::from_secs(30), || async {
        reqwest::get(format!("http://{engine_addr}/health"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    // Loaded and rejected rows.
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    let mut body = original_rows(0, 200, true);
    body.extend_from_slice(b"31/02/2023 00:00:00,Any text there,1.000,Deposit\r\n");
    assert_eq!(api.put(&folder, 0, body).await, 200);
    api.complete(&folder, 1).await;
    assert_eq!(finished(&env, &folder).await, ("done".to_owned(), 200, 1));
    // A failed chunk (reject-chunk policy).
    let failing = api
        .create(serde_json::json!({"on_error": "reject-chunk"}))
        .await;
    let mut body = original_rows(0, 10, true);
    body.extend_from_slice(b"not,a,valid,row\r\n");
    assert_eq!(api.put(&failing, 0, body).await, 200);
    api.complete(&failing, 1).await;
    assert_eq!(finished(&env, &failing).await.0, "failed");
    // An engine error: a message that is no chunk message.
    let broker_env = broker().connect().await.unwrap();
    let producer = broker_env
        .producer()
        .build(&stream_name(&env.prefix, 0))
        .await
        .unwrap();
    producer
        .send_with_confirm(Message::builder().body(b"garbage".to_vec()).build())
        .await
        .unwrap();
    let _ = producer.close().await;
    let engine_metrics = format!("http://{engine_addr}/metrics");
    wait_for(
        "the engine to count the bad message",
        Duration::from_secs(15),
        || async {
            let text = get_text(&engine_metrics).await;
            let decode = [("stage", "decode")];
            (sample(&text, "ingest_engine_errors_total", &decode)? >= 1.0).then_some(())
        },
    )
    .await;
    // 429s and auth failures: requests without a token from another address.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut limited = false;
    for _ in 0..12 {
        let response = other
            .get(format!(
                "http://{}/api/upload/{}",
                gateway.addr,
                uuid::Uuid::new_v4()
            ))
            .send()
            .await
            .unwrap();
        limited |= response.status() == 429;
    }
    assert!(
        limited,
        "the gateway should have refused a request with 429"
    );
    // Redis fallback.
    let status = reqwest::get(format!(
        "http://{}/api/upload/{}",
        degraded.addr,
        uuid::Uuid::new_v4()
    ))
    .await
    .unwrap()
    .status();
    assert_eq!(status, 401);

    let texts: BTreeMap<&str, String> = [
        (
            "gateway",
            get_text(&format!("http://{}/metrics", gateway.addr)).await,
        ),
        ("engine", get_text(&engine_metrics).await),
    ]
    .into_iter()
    .collect();
    let exports: BTreeMap<&str, _> = texts
        .iter()
        .map(|(job, text)| (*job, exposition(text)))
        .collect();
    // Each job's catalogue: the one place its metrics are named and described.
    let catalogues: BTreeMap<&str, Vec<ingest_runtime::telemetry::Family>> = [
        ("gateway", gateway::metrics::FAMILIES.to_vec()),
        ("engine", engine::metrics::catalogue()),
    ]
    .into_iter()
    .collect();
    // The engine runs in its own process: neither export may be the union of both.
    assert!(!exports["gateway"].contains_key("ingest_rows_loaded_total"));
    assert!(!exports["engine"].contains_key("ingest_http_requests_total"));

    let mut checked = BTreeSet::new();
    let client = env.db.client().await.unwrap();
    for (title, kind, query) in &queries {
        match kind.as_str() {
            "prometheus" => {
                let found = selectors(query);
                assert!(!found.is_empty(), "panel {title:?}: no metric in {query}");
                for selector in found {
                    let jobs: Vec<&str> = match selector.labels.get("job") {
                        Some(job) => vec![
                            exports
                                .get_key_value(job.as_str())
                                .unwrap_or_else(|| panic!("panel {title:?}: unknown job {job}"))
                                .0,
                        ],
                        None => exports.keys().copied().collect(),
                    };
                    let series: Vec<&BTreeMap<String, String>> = jobs
                        .iter()
                        .filter_map(|job| exports[job].get(&selector.name))
                        .flatten()
                        .collect();
                    assert!(
                        !series.is_empty(),
                        "panel {title:?}: {} is not exported by {jobs:?}",
                        selector.name
                    );
                    for (label, value) in &selector.labels {
                        if label == "job" {
                            continue;
                        }
                        assert!(
                            series.iter().any(|s| s.get(label) == Some(value)),
                            "panel {title:?}: no {}{{{label}=\"{value}\"}} series",
                            selector.name
                        );
                    }
                    // Named and described in its job's catalogue, with the help text exported.
                    let family_name = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| selector.name.strip_suffix(suffix))
                        .unwrap_or(&selector.name);
                    for job in &jobs {
                        let Some(family) = catalogues[job].iter().find(|f| f.name == family_name)
                        else {
                            continue;
                        };
                        assert!(!family.help.is_empty(), "{family_name} has no help text");
                        let help = format!("# HELP {family_name} {}\n", family.help);
                        assert!(
                            texts[job].contains(&help),
                            "panel {title:?}: {job} exports {family_name} without its catalogue's help"
                        );
                    }
                    assert!(
                        jobs.iter()
                            .any(|job| catalogues[job].iter().any(|f| f.name == family_name)),
                        "panel {title:?}: {family_name} is in no catalogue of {jobs:?}"
                    );
                    checked.insert(selector.name);
                }
            }
            "grafana-postgresql-datasource" => {
                let rows = client
                    .query(query.as_str(), &[])
                    .await
                    .unwrap_or_else(|err| panic!("panel {title:?}: SQL fails: {err}"));
                // The backlog table lists every partition with its owner.
                assert_eq!(rows.len(), 2, "panel {title:?}");
                for row in rows {
                    let owner: String = row.get("owner");
                    assert_ne!(owner, "(unowned)", "panel {title:?}");
                    let waiting: i64 = row.get("chunks_waiting");
                    assert_eq!(waiting, 0, "panel {title:?}");
                }
            }
            other => panic!("panel {title:?}: unexpected datasource type {other:?}"),
        }
    }
    // Every family the issue asks for is drawn.
    for wanted in [
        "ingest_rows_loaded_total",
        "ingest_rows_rejected_total",
        "ingest_bytes_loaded_total",
        "ingest_bytes_received_total",
        "ingest_chunk_latency_seconds_bucket",
        "ingest_rate_limited_total",
        "ingest_engine_errors_total",
        "ingest_partitions_owned",
        "ingest_partition_backlog_chunks",
        "ingest_partition_oldest_waiting_seconds",
    ] {
        assert!(
            checked.contains(wanted),
            "the dashboard does not draw {wanted}"
        );
    }

    degraded.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_engine_metric_is_listed_at_zero_on_the_first_scrape() {
    use engine::metrics::{Kind, FAMILIES};

    // What dashboards and alerts rely on, whatever the catalogue says.
    let relied_on = [
        ("ingest_rows_loaded_total", None),
        ("ingest_rows_rejected_total", None),
        ("ingest_bytes_loaded_total", None),
        (
            "ingest_chunks_total",
            Some(("outcome", &["loaded", "failed"][..])),
        ),
        (
            "ingest_engine_errors_total",
            Some(("stage", &["consume", "decode", "load", "backlog"][..])),
        ),
        ("ingest_copy_duration_seconds", None),
        ("ingest_chunk_latency_seconds", None),
        ("ingest_partitions_owned", None),
    ];
    for (name, label) in relied_on {
        let family = FAMILIES
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the engine's catalogue"));
        if let Some((label, values)) = label {
            let declared = family
                .labels
                .iter()
                .find(|l| l.name == label)
                .unwrap_or_else(|| panic!("{name} has no label {label}"));
            for value in values {
                assert!(
                    declared.values.contains(value),
                    "{name}{{{label}=\"{value}\"}} is not declared"
                );
            }
        }
    }

    let env = TestEnv::new(2).await;
    let engine_addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let _engine = spawn_engine(&env, engine_addr, &[]);
    wait_for("engine health", Duration::from_secs(30), || async {
        reqwest::get(format!("http://{engine_addr}/health"))
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    // The first scrape, before any chunk, error or partition move could have touched a metric.
    let text = get_text(&format!("http://{engine_addr}/metrics")).await;
    let mut missing = Vec::new();
    for family in FAMILIES {
        if !text.contains(&format!("# HELP {} ", family.name)) {
            missing.push(format!("help text of {}", family.name));
        }
        let series: Vec<Vec<(&str, &str)>> = match family.labels {
            [] => vec![vec![]],
            [label] => label
                .values
                .iter()
                .map(|v| vec![(label.name, *v)])
                .collect(),
            _ => panic!(
                "{}: the engine's families have at most one label",
                family.name
            ),
        };
        for labels in series {
            let (name, zero) = match family.kind {
                Kind::Counter => (family.name.to_owned(), true),
                Kind::Histogram => (format!("{}_count", family.name), true),
                // Processors may already have started: present is what matters.
                Kind::Gauge => (family.name.to_owned(), false),
            };
            match sample(&text, &name, &labels) {
                None => missing.push(format!("{name}{labels:?}")),
                Some(value) if zero && value != 0.0 => {
                    missing.push(format!("{name}{labels:?} is {value}, not 0"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(
        missing.is_empty(),
        "first scrape lacks {missing:?}:\n{text}"
    );
}

/// `months` months of `per_month` rows each from January of `year` (on into the next years past
/// 12), in `order` (the dataset's column names), one row every eight hours; with the header
/// line when `header`.
fn rows_over_months(
    year: i32,
    months: u32,
    per_month: u32,
    order: [&str; 4],
    header: bool,
) -> Vec<u8> {
    let mut out = String::new();
    if header {
        out.push_str(&order.join(","));
        out.push_str("\r\n");
    }
    for months_on in 0..months {
        let (year, month) = (year + (months_on / 12) as i32, months_on % 12 + 1);
        for n in 0..per_month {
            let (day, hour) = (1 + n / 3 % 28, n % 3 * 8);
            let cell = |name: &str| match name {
                "date" => format!("{day:02}/{month:02}/{year} {hour:02}:00:00"),
                "content" => format!("row {n}"),
                "amount" => format!("{n}.50"),
                _ => "Deposit".to_owned(),
            };
            let row: Vec<String> = order.iter().map(|name| cell(name)).collect();
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
    }
    out.into_bytes()
}

/// An engine child loading chunks over 64 KiB in pieces, once its metrics answer.
async fn engine_cutting_at_64_kib(env: &TestEnv) -> (EngineChild, SocketAddr) {
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let engine = spawn_engine(env, addr, &["--piece-bytes=65536"]);
    wait_for("engine metrics", Duration::from_secs(30), || async {
        let response = reqwest::get(format!("http://{addr}/metrics")).await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    (engine, addr)
}

/// Every partition a chunk needs is made before its COPY, whole or in pieces: chunks over many
/// new months load with no COPY rolled back (`ingest_partition_reloads_total` stays 0), also
/// a headerless chunk of an upload whose header reorders the columns (read in the upload's
/// layout, not the dataset's declared one). Without the read of each piece the count was 9;
/// with the declared order for the reordered chunk, 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_months_are_made_before_the_copy_whole_or_in_pieces() {
    const REORDERED: [&str; 4] = ["type", "amount", "date", "content"];
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let (_engine, engine_addr) = engine_cutting_at_64_kib(&env).await;
    let reloads = || async {
        let text = get_text(&format!("http://{engine_addr}/metrics")).await;
        sample(&text, "ingest_partition_reloads_total", &[])
    };

    // About 470 kB over 8 months of 2024 (cut into pieces), then 3 months of 2025 (whole).
    let many = api.create(serde_json::json!({})).await;
    let big = rows_over_months(2024, 8, 2000, DECLARED, true);
    assert!(big.len() > 4 * 65536, "{} bytes", big.len());
    assert_eq!(api.put(&many, 0, big).await, 200);
    let small = rows_over_months(2025, 3, 30, DECLARED, false);
    assert_eq!(api.put(&many, 1, small).await, 200);
    api.complete(&many, 2).await;
    assert_eq!(finished(&env, &many).await, ("done".into(), 16_090, 0));
    assert_eq!(reloads().await, Some(0.0));
    // One read of the months per piece (at least 5 of 64 KiB), one for the small chunk.
    let text = get_text(&format!("http://{engine_addr}/metrics")).await;
    let scans = sample(&text, "ingest_months_scan_seconds_count", &[]);
    assert!(
        scans > Some(5.0),
        "the big chunk was not loaded in pieces: {scans:?} scans"
    );

    // Columns reordered by the header: the headerless chunk's months (2026-01..05) are read
    // where the header says the date is.
    let reordered = api.create(serde_json::json!({})).await;
    let head = rows_over_months(2024, 1, 3, REORDERED, true);
    assert_eq!(api.put(&reordered, 0, head).await, 200);
    let tail = rows_over_months(2026, 5, 3, REORDERED, false);
    assert_eq!(api.put(&reordered, 1, tail).await, 200);
    api.complete(&reordered, 2).await;
    assert_eq!(finished(&env, &reordered).await, ("done".into(), 18, 0));
    assert_eq!(reloads().await, Some(0.0));

    let client = env.db.client().await.unwrap();
    let months: Vec<String> = client
        .query(
            "SELECT DISTINCT tableoid::regclass::text FROM transactions ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut expected: Vec<String> = (1..=8)
        .map(|m| format!("transactions_2024_{m:02}"))
        .collect();
    expected.extend((1..=3).map(|m| format!("transactions_2025_{m:02}")));
    expected.extend((1..=5).map(|m| format!("transactions_2026_{m:02}")));
    assert_eq!(
        months, expected,
        "every row in its month's partition, none in the default"
    );
    gateway.stop().await;
}

/// The original's columns, in the declared order.
const DECLARED: [&str; 4] = ["date", "content", "amount", "type"];

/// A stack whose engine cuts chunks over 64 KiB into pieces, and a session on its database.
async fn stack_cutting_at_64_kib() -> (TestEnv, Running, Api, EngineChild, tokio_postgres::Client) {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let (engine, _addr) = engine_cutting_at_64_kib(&env).await;
    let client = env.db.client().await.unwrap();
    (env, gateway, api, engine, client)
}

/// The error of the (only) chunk of upload `folder`, and how many of its rows are in
/// `transactions`.
async fn chunk_error_and_rows(
    client: &tokio_postgres::Client,
    folder: &str,
) -> (Option<String>, i64) {
    let id = uuid::Uuid::parse_str(folder).unwrap();
    let row = client
        .query_one(
            "SELECT c.error, (SELECT count(*) FROM transactions t WHERE t.upload_id = $1)
             FROM chunks c WHERE c.upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A chunk whose dates need more new partitions than one chunk may make (366) fails, with the
/// reason, and makes at most that many: loaded whole (none made), and cut into pieces that each
/// need fewer (the pieces share the allowance; each piece on its own, as before, let this chunk
/// make 400 and load). Partitions made by another engine since this one started do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_makes_at_most_366_partitions_whole_or_in_pieces() {
    let (env, gateway, api, _engine, client) = stack_cutting_at_64_kib().await;
    let partitions = || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'transactions'::regclass",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let before = partitions().await;
    let refused = "new partitions, more than the 366 one chunk may make";

    // 400 months from 1990, a row each (16 kB): loaded whole.
    let whole = api.create(serde_json::json!({})).await;
    let rows = rows_over_months(1990, 400, 1, DECLARED, true);
    assert!(rows.len() < 65536, "{} bytes", rows.len());
    assert_eq!(api.put(&whole, 0, rows).await, 200);
    api.complete(&whole, 1).await;
    assert_eq!(finished(&env, &whole).await, ("failed".into(), 0, 0));
    assert_eq!(
        partitions().await,
        before,
        "a refused whole chunk makes none"
    );

    // The same 400 months, 6 rows each (97 kB): two pieces of about 270 and 130 months.
    let cut = api.create(serde_json::json!({})).await;
    let rows = rows_over_months(1990, 400, 6, DECLARED, true);
    assert!(rows.len() > 65536, "{} bytes", rows.len());
    assert_eq!(api.put(&cut, 0, rows).await, 200);
    api.complete(&cut, 1).await;
    let (state, loaded, _) = finished(&env, &cut).await;
    assert_eq!((state.as_str(), loaded), ("failed", 0));
    let made = partitions().await - before;
    assert!(made <= 366, "the pieces made {made} partitions");

    for folder in [&whole, &cut] {
        let (error, rows) = chunk_error_and_rows(&client, folder).await;
        assert!(
            error.as_deref().is_some_and(|e| e.contains(refused)),
            "chunk error: {error:?}"
        );
        assert_eq!(rows, 0, "no row of a failed chunk stays");
    }

    // Partitions another engine made after this one started are not new: 400 months from
    // 2100, made here, then a chunk that needs all of them loads.
    let mut month = (2100, 1);
    for _ in 0..400 {
        let (year, m) = month;
        let next = if m == 12 {
            (year + 1, 1)
        } else {
            (year, m + 1)
        };
        let (name, first) = (
            format!("transactions_{year:04}_{m:02}"),
            format!("{year:04}-{m:02}-01"),
        );
        let next_first = format!("{:04}-{:02}-01", next.0, next.1);
        client
            .query_one(
                "SELECT ensure_partition('transactions', $1, 'date', $2, $3)",
                &[&name, &first, &next_first],
            )
            .await
            .unwrap();
        month = next;
    }
    let made_elsewhere = api.create(serde_json::json!({})).await;
    let rows = rows_over_months(2100, 400, 1, DECLARED, true);
    assert_eq!(api.put(&made_elsewhere, 0, rows).await, 200);
    api.complete(&made_elsewhere, 1).await;
    assert_eq!(
        finished(&env, &made_elsewhere).await,
        ("done".into(), 400, 0)
    );
    gateway.stop().await;
}

/// A relation named like a partition the rows need that is not one (someone's own table) fails
/// the chunk with the reason, whole, rather than being retried for good and holding up every
/// later chunk of its stream partition. The months the look ahead could not make are not
/// counted twice against the cap: 200 of them used to fail the chunk as "400 new partitions".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relation_in_the_way_of_a_partition_fails_the_chunk_with_the_reason() {
    let (env, gateway, api, _engine, client) = stack_cutting_at_64_kib().await;
    client
        .batch_execute("CREATE TABLE transactions_2150_01 (x int)")
        .await
        .unwrap();

    let folder = api.create(serde_json::json!({})).await;
    let rows = rows_over_months(2150, 200, 1, DECLARED, true);
    assert!(rows.len() < 65536, "loaded whole: {} bytes", rows.len());
    assert_eq!(api.put(&folder, 0, rows).await, 200);
    api.complete(&folder, 1).await;
    assert_eq!(finished(&env, &folder).await, ("failed".into(), 0, 0));
    let (error, rows) = chunk_error_and_rows(&client, &folder).await;
    assert!(
        error.as_deref().is_some_and(|e| e.contains(
            "relation transactions_2150_01 exists and is not a partition of transactions"
        )),
        "chunk error: {error:?}"
    );
    assert_eq!(rows, 0, "no row of the failed chunk stays");
    gateway.stop().await;
}
