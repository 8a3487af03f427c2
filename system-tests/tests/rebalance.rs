//! Partitions moving between engine processes leave no broker connection behind.
//!
//! rabbitmq-stream-client 0.4.4's consumer never closes its connection (upstream #235): an engine
//! that built one per partition takeover kept one more connection open on the broker for every
//! partition it ever gave up. Here one engine stays up while a second one joins and leaves again
//! and again, so partitions move back and forth; the broker's connections from the engine that
//! stays must be as many as before (one per partition it consumes).
//!
//! Other tests use the same broker at the same time, so only the connections of this test's
//! engine are counted: the broker's stream connections (`rabbitmqctl list_stream_connections`)
//! whose client port is a socket that process holds (from `/proc/<pid>/fd` and `/proc/<pid>/net`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ingest_testkit::wait_for;

use crate::support::*;

const ENGINE: &str = env!("CARGO_BIN_EXE_system-engine");
const BROKER_PORT: u16 = 5552;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_moves_leave_no_broker_connection_behind() {
    let partitions = 4;
    let env = TestEnv::new(partitions).await;
    let client = env.db.client().await.unwrap();
    let mut steady = EngineProcess::spawn(ENGINE.as_ref(), &env, "steady", &[]);
    let pid = steady.child.id();
    let everything = vec![("steady".to_owned(), i64::from(partitions))];
    wait_for(
        "steady to own every partition",
        Duration::from_secs(30),
        || async { (live_lease_owners(&client).await == everything).then_some(()) },
    )
    .await;
    let before = wait_for(
        "one broker connection per partition",
        Duration::from_secs(30),
        || async {
            let count = broker_connections_of(pid).await;
            (count == usize::from(partitions)).then_some(count)
        },
    )
    .await;
    let broker_total_before = broker_stream_connections().await.len();

    let started = Instant::now();
    let (mut moves, mut round) = (0, 0);
    while moves < 30 {
        let mut visitor =
            EngineProcess::spawn(ENGINE.as_ref(), &env, &format!("visitor-{round}"), &[]);
        let split = vec![("steady".to_owned(), 2), (format!("visitor-{round}"), 2)];
        wait_for(
            "the partitions to split 2/2",
            Duration::from_secs(30),
            || async { (live_lease_owners(&client).await == split).then_some(()) },
        )
        .await;
        // An orderly stop gives the leases back at once.
        visitor.terminate(Duration::from_secs(30));
        wait_for(
            "steady to own every partition again",
            Duration::from_secs(30),
            || async { (live_lease_owners(&client).await == everything).then_some(()) },
        )
        .await;
        moves += 4;
        round += 1;
    }
    let took = started.elapsed();

    // Every processor that stopped closed its connection before its lease was released; allow
    // the ones started last a moment to connect.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let count = broker_connections_of(pid).await;
        if count == before || Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        after, before,
        "after {moves} partition moves the steady engine has {after} broker connections, \
         {before} before"
    );
    eprintln!(
        "{moves} partition moves in {round} rounds ({took:.1?}): the steady engine's broker \
         connections {before} before, {after} after; all stream connections on the broker \
         (every test's) {broker_total_before} before, {} after",
        broker_stream_connections().await.len()
    );
    assert!(
        matches!(steady.child.try_wait(), Ok(None)),
        "the steady engine exited"
    );
}

/// The broker's stream connections from sockets that process `pid` holds.
async fn broker_connections_of(pid: u32) -> usize {
    let ours = client_ports(pid);
    broker_stream_connections()
        .await
        .iter()
        .filter(|port| ours.contains(port))
        .count()
}

/// The client ports of the stream connections the broker lists.
async fn broker_stream_connections() -> Vec<u16> {
    let mut failures = Vec::new();
    // RabbitMQ 3.10 fails the whole listing when a connection is in the middle of its handshake
    // (`rabbit_stream_reader:tuned` function_clause): other tests open connections all the time.
    while failures.len() < 20 {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args([
                "-s",
                "list_stream_connections",
                "peer_port",
                "--formatter",
                "csv",
            ])
            .output()
            .await
            .expect("rabbitmqctl should run");
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| line.trim().trim_matches('"').parse().ok())
                .collect();
        }
        failures.push(String::from_utf8_lossy(&output.stderr).into_owned());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("rabbitmqctl list_stream_connections kept failing: {failures:?}");
}

/// Local ports of the TCP sockets of process `pid` connected to the broker's stream port.
fn client_ports(pid: u32) -> BTreeSet<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    let inodes: BTreeSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |address: &str| {
                let hex = address.rsplit_once(':')?.1;
                u16::from_str_radix(hex, 16).ok()
            };
            if fields.len() > 9
                && port(fields[2]) == Some(BROKER_PORT)
                && inodes.contains(fields[9])
            {
                if let Some(local) = port(fields[1]) {
                    ports.insert(local);
                }
            }
        }
    }
    ports
}
