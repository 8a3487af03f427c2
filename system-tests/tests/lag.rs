//! Per-partition backlog on the engine's `/metrics`, against the real services: chunks a real
//! gateway stored wait in the ledger, and the engine owning their partition reports how many and
//! how long the oldest has waited, until it loads them; a partition's series leave an engine
//! with its lease.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use ingest_contract::streams::stream_name;
use ingest_testkit::{broker, wait_for, TestStreams};
use rabbitmq_stream_client::types::{Message, OffsetSpecification};
use tokio::sync::oneshot;

use crate::support::*;

const BACKLOG: &str = "ingest_partition_backlog_chunks";
const OLDEST: &str = "ingest_partition_oldest_waiting_seconds";

/// One partition's gauges as an engine exports them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Gauges {
    chunks: f64,
    oldest_seconds: f64,
}

/// The backlog gauges on the engine's `/metrics`, by partition (None while it does not answer).
async fn scrape(addr: SocketAddr) -> Option<BTreeMap<i32, Gauges>> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut chunks = BTreeMap::new();
    let mut oldest = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let into = match name {
            BACKLOG => &mut chunks,
            OLDEST => &mut oldest,
            _ => continue,
        };
        let partition = labels
            .strip_prefix("partition=\"")
            .and_then(|rest| rest.strip_suffix("\"}"))
            .expect("the only label should be the partition");
        into.insert(
            partition.parse::<i32>().expect("a partition number"),
            value.parse::<f64>().expect("a gauge value"),
        );
    }
    assert_eq!(
        chunks.keys().collect::<Vec<_>>(),
        oldest.keys().collect::<Vec<_>>(),
        "both gauges should cover the same partitions"
    );
    Some(
        chunks
            .into_iter()
            .map(|(p, c)| {
                let gauges = Gauges {
                    chunks: c,
                    oldest_seconds: oldest[&p],
                };
                (p, gauges)
            })
            .collect(),
    )
}

#[derive(Parser)]
struct EngineArgs {
    #[command(flatten)]
    settings: engine::EngineSettings,
}

/// An in-process engine consuming the streams of `prefix` instead of the test's own.
struct Engine {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Engine {
    async fn start(env: &TestEnv, prefix: &str) -> Self {
        let args = env.engine_args(&[]).into_iter().map(|arg| {
            if arg.starts_with("--stream-prefix=") {
                format!("--stream-prefix={prefix}")
            } else {
                arg
            }
        });
        let settings =
            EngineArgs::parse_from(std::iter::once("engine".to_owned()).chain(args)).settings;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(engine::run(listener, settings, async {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Copies the first `count` messages of one stream to the end of another.
async fn forward(from: &str, to: &str, count: i64) {
    let environment = broker().connect().await.unwrap();
    let mut consumer = environment
        .consumer()
        .offset(OffsetSpecification::First)
        .build(from)
        .await
        .unwrap();
    let producer = environment.producer().build(to).await.unwrap();
    for _ in 0..count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("the gateway's message should be in its stream")
            .expect("the consumer should stay open")
            .unwrap();
        let body = delivery.message().data().unwrap().to_vec();
        producer
            .send_with_confirm(Message::builder().body(body).build())
            .await
            .unwrap();
    }
    let _ = producer.close().await;
    let _ = consumer.handle().close().await;
}

/// Chunks stored in the ledger, by partition (every state).
async fn chunks_by_partition(env: &TestEnv) -> BTreeMap<i32, i64> {
    let client = env.db.client().await.unwrap();
    client
        .query(
            "SELECT partition, count(*) FROM chunks GROUP BY partition",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_chunks_are_backlog_until_the_engine_loads_them() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    // The engine reads streams of its own, to which nothing is published yet: it owns both
    // partitions and runs, but hears of no chunk until the test forwards the gateway's messages.
    let quiet = TestStreams::new("lag-quiet-", env.partitions);
    let engine = Engine::start(&env, &quiet.prefix).await;
    let idle = wait_for("the engine to export both partitions", secs(30), || async {
        scrape(engine.addr).await.filter(|g| g.len() == 2)
    })
    .await;
    let nothing = Gauges {
        chunks: 0.0,
        oldest_seconds: 0.0,
    };
    assert!(idle.values().all(|g| *g == nothing), "{idle:?}");

    let api = connect(&gateway).await;
    for upload in 0..3 {
        let folder = api.create(serde_json::json!({})).await;
        for chunk in 0..2 {
            let start = (upload * 2 + chunk) * 100;
            assert_eq!(
                api.put(&folder, chunk as i32, original_rows(start, 100, chunk == 0))
                    .await,
                200
            );
        }
        api.complete(&folder, 2).await;
    }
    let stored = chunks_by_partition(&env).await;
    assert_eq!(stored.values().sum::<i64>(), 6);

    // Every stored chunk counts for its own partition.
    let waiting = wait_for(
        "the backlog to show the stored chunks",
        secs(10),
        || async {
            let gauges = scrape(engine.addr).await?;
            let by_partition: BTreeMap<i32, i64> = gauges
                .iter()
                .map(|(&p, g)| (p, g.chunks as i64))
                .filter(|(_, c)| *c > 0)
                .collect();
            (by_partition == stored).then_some(gauges)
        },
    )
    .await;
    let (&busiest, first) = waiting
        .iter()
        .max_by(|a, b| a.1.chunks.total_cmp(&b.1.chunks))
        .unwrap();
    assert!(first.oldest_seconds > 0.0, "{waiting:?}");
    // The oldest chunk's age grows while it waits.
    wait_for("the oldest waiting age to grow", secs(10), || async {
        let now = scrape(engine.addr).await?.get(&busiest).copied()?;
        assert_eq!(now.chunks, first.chunks, "nothing should load yet");
        (now.oldest_seconds >= first.oldest_seconds + 1.0).then_some(())
    })
    .await;

    for (&partition, &count) in &stored {
        let partition = u16::try_from(partition).unwrap();
        forward(
            &stream_name(&env.prefix, partition),
            &stream_name(&quiet.prefix, partition),
            count,
        )
        .await;
    }
    wait_for("the backlog to drain", secs(30), || async {
        let gauges = scrape(engine.addr).await?;
        (gauges.len() == 2 && gauges.values().all(|g| *g == nothing)).then_some(())
    })
    .await;
    let client = env.db.client().await.unwrap();
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM chunks WHERE state = 'loaded'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(loaded, 6, "the backlog drained because the chunks loaded");

    engine.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitions_series_leave_with_its_lease() {
    let env = TestEnv::new(2).await;
    let all: BTreeSet<i32> = [0, 1].into();
    let owned = |addr: SocketAddr| async move {
        scrape(addr)
            .await
            .map(|g| g.into_keys().collect::<BTreeSet<i32>>())
    };
    let first = start_engine(&env, &[]).await;
    wait_for(
        "the lone engine to export every partition",
        secs(30),
        || async { owned(first.addr).await.filter(|p| *p == all) },
    )
    .await;

    // A second engine joins: each ends up with one partition and exports only that one.
    let second = start_engine(&env, &[]).await;
    wait_for("the partitions to be split", secs(30), || async {
        let (a, b) = (owned(first.addr).await?, owned(second.addr).await?);
        (a.len() == 1 && b.len() == 1 && a.union(&b).copied().collect::<BTreeSet<_>>() == all)
            .then_some(())
    })
    .await;

    // It leaves: the first takes its partition back, and its series with it.
    second.stop().await;
    wait_for(
        "the first engine to export every partition again",
        secs(30),
        || async { owned(first.addr).await.filter(|p| *p == all) },
    )
    .await;
    first.stop().await;
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
