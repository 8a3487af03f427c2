//! An engine stopped in the middle of a COPY (SIGSTOP, as a frozen VM would be) must not stall
//! the group: a peer takes its partitions over once its leases lapse, fences it (ends its
//! PostgreSQL sessions, rolling its open transaction back), and the upload finishes; when the
//! stopped engine runs again, nothing is loaded twice.
//!
//! Before the fix, the stopped engine's load transaction held FOR SHARE on its lease row and
//! FOR UPDATE on the chunk's ledger row: the peer's takeover waited inline in its heartbeat, its
//! own leases lapsed, and loading stopped in the whole group until the stopped process resumed.

use std::time::{Duration, Instant};

use engine::dataset::Dataset;
use engine::partitions::{Partitions, DDL_LOCK_TIMEOUT};
use engine::registry::Registry;
use engine::session::{Sessions, LOADER_LOCK_TIMEOUT};
use ingest_testkit::{wait_for, TestDb};
use tokio_postgres::error::SqlState;

use crate::support::*;

const ENGINE: &str = env!("CARGO_BIN_EXE_system-engine");
/// The lease TTL of the test engines (`TestEnv::engine_args`).
const TTL: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_stopped_mid_copy_is_fenced_and_the_upload_finishes_exactly_once() {
    let env = TestEnv::new(4).await;
    let gateway = start_gateway(&env, &[]).await;
    let client = env.db.client().await.unwrap();
    let stopped = EngineProcess::spawn(ENGINE.as_ref(), &env, "stopped", &[]);
    let _survivor = EngineProcess::spawn(ENGINE.as_ref(), &env, "survivor", &[]);
    let split = vec![("stopped".to_owned(), 2), ("survivor".to_owned(), 2)];
    wait_for(
        "the partitions to split 2/2",
        Duration::from_secs(30),
        || async { (live_lease_owners(&client).await == split).then_some(()) },
    )
    .await;

    // January chunks big enough that COPYs last, then one February chunk per partition, whose
    // partition must be created while the stopped engine's COPY is open.
    let (january, february, per_chunk) = (12, 4, 50_000u64);
    let chunks = january + february;
    let total = i64::from(chunks) * per_chunk as i64;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    let upload = tokio::spawn({
        let (api, folder) = (connect(&gateway).await, folder.clone());
        async move {
            for n in 0..chunks {
                let body = if n < january {
                    original_rows(n as u64 * per_chunk, per_chunk, n == 0)
                } else {
                    february_rows((n - january) as u64 * per_chunk, per_chunk)
                };
                assert_eq!(api.put(&folder, n, body).await, 200);
            }
            api.complete(&folder, chunks).await;
        }
    });

    let tag = Sessions::tag("engine", "stopped");
    let mut attempts = 0;
    let stopped_at = loop {
        attempts += 1;
        assert!(attempts <= 20, "never caught the engine inside a COPY");
        let copy = wait_for(
            "the engine to COPY a chunk",
            Duration::from_secs(60),
            || running_copy(&client, &tag),
        )
        .await;
        stopped.signal("STOP");
        let at = Instant::now();
        // The stop may have landed just after that COPY ended: then let it go and try again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if running_copy(&client, &tag).await == Some(copy) {
            break at;
        }
        stopped.signal("CONT");
    };

    let all = vec![("survivor".to_owned(), 4)];
    wait_for(
        "the survivor to own every partition",
        TTL + Duration::from_secs(5),
        || async { (live_lease_owners(&client).await == all).then_some(()) },
    )
    .await;
    let takeover = stopped_at.elapsed();
    wait_for(
        "the stopped engine's sessions to be ended",
        Duration::from_secs(5),
        || async { (sessions_of(&client, &tag).await == 0).then_some(()) },
    )
    .await;
    upload.await.expect("every chunk should be sent");
    let status = api.wait_finished(&folder, Duration::from_secs(120)).await;
    let finished = stopped_at.elapsed();
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_loaded"], total, "{status}");
    assert_eq!(status["chunks_loaded"], chunks, "{status}");
    assert_eq!(table_counts(&env.db, &folder).await, (total, 0));

    // The stopped engine runs again: its connections are gone, its COPY was rolled back, its
    // leases are someone else's. It rejoins and takes its share back.
    stopped.signal("CONT");
    wait_for(
        "the resumed engine to take its share back",
        Duration::from_secs(30),
        || async { (live_lease_owners(&client).await == split).then_some(()) },
    )
    .await;
    // Its processors run from the committed offsets; a stale load of its own would have
    // committed by now.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(table_counts(&env.db, &folder).await, (total, 0));
    let status = api.status(&folder).await;
    assert_eq!(status["rows_loaded"], total, "{status}");
    assert_eq!(status["chunks_loaded"], chunks, "{status}");
    eprintln!(
        "stopped mid-COPY (attempt {attempts}): the survivor owned every partition after \
         {takeover:.2?}, the upload was done after {finished:.2?} (lease TTL {TTL:?})"
    );
    gateway.stop().await;
}

/// A transaction left open by a stopped process, holding `row` inserted into `transactions`.
async fn open_insert(db: &TestDb, date: &str) -> tokio_postgres::Client {
    let stopped = db.client().await.unwrap();
    // (A separate query: statements before a BEGIN in one query join its transaction.)
    stopped
        .batch_execute(&format!(
            "BEGIN; INSERT INTO transactions (date, amount, type) VALUES ('{date}', 1, 'Deposit')"
        ))
        .await
        .unwrap();
    stopped
}

/// Makes the partition of February 2023 while a peer inserts into January (already there);
/// returns what the DDL gave and how long each side took.
async fn create_february_beside_a_january_insert(
    db: &TestDb,
    tag: &str,
) -> (
    Result<(), tokio_postgres::Error>,
    Duration,
    Duration,
    tokio_postgres::Client,
    Partitions,
) {
    let sessions = Sessions::new(&db.url, "engine", tag, TTL);
    let loader = sessions.loader().await.unwrap();
    let transactions = Dataset::transactions();
    let partitions = Partitions::load(&loader, &Registry::builtin())
        .await
        .unwrap();
    let peer = db.client().await.unwrap();
    let started = Instant::now();
    let (created, peer_waited) = tokio::join!(
        partitions.create(&loader, &transactions, &[(2023, 2, 1)]),
        async {
            // A peer's load that arrives while the DDL runs (or waits).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let queued = Instant::now();
            peer.execute(
                "INSERT INTO transactions (date, amount, type) VALUES ('2023-01-06', 1, 'Deposit')",
                &[],
            )
            .await
            .unwrap();
            queued.elapsed()
        }
    );
    (created, started.elapsed(), peer_waited, loader, partitions)
}

async fn with_january(db: &TestDb) {
    db.client()
        .await
        .unwrap()
        .batch_execute("SELECT ensure_transactions_partition('2023-01-01')")
        .await
        .unwrap();
}

/// A new month's partition is made apart and attached, which does not conflict with COPYs into
/// other months: neither a stopped process's open COPY nor a running one holds it up, and it
/// holds none of them up.
#[tokio::test]
async fn a_new_partition_neither_waits_for_nor_holds_up_copies_into_other_months() {
    let db = TestDb::new().await.unwrap();
    with_january(&db).await;
    let stopped = open_insert(&db, "2023-01-05").await;
    let (created, took, peer_waited, _loader, _partitions) =
        create_february_beside_a_january_insert(&db, "attach").await;
    created.expect("attaching February does not need January's COPYs to end");
    assert!(took < DDL_LOCK_TIMEOUT, "{took:?}");
    assert!(peer_waited < DDL_LOCK_TIMEOUT, "{peer_waited:?}");
    stopped.batch_execute("COMMIT").await.unwrap();
    eprintln!("partition made in {took:.2?} beside an open COPY; the peer's insert took {peer_waited:.2?}");
}

/// The attach locks the default partition: a stopped process that routed rows there (a month
/// with no partition yet) holds the DDL up. It must give up soon (the load is retried) instead
/// of waiting as long as that process stays stopped, and COPYs into other months go on.
#[tokio::test]
async fn partition_ddl_behind_a_stopped_copy_into_the_default_partition_gives_up() {
    let db = TestDb::new().await.unwrap();
    with_january(&db).await;
    let stopped = open_insert(&db, "2023-02-05").await;
    let (created, gave_up, peer_waited, loader, partitions) =
        create_february_beside_a_january_insert(&db, "ddl").await;
    let err =
        created.expect_err("the DDL cannot lock the default partition while the COPY is open");
    assert_eq!(err.code(), Some(&SqlState::LOCK_NOT_AVAILABLE), "{err}");
    assert!(
        gave_up < DDL_LOCK_TIMEOUT + Duration::from_secs(1),
        "{gave_up:?}"
    );
    assert!(peer_waited < DDL_LOCK_TIMEOUT, "{peer_waited:?}");
    // The session is back to its own lock timeout, and the DDL succeeds once the process's
    // COPY commits: its February row moves from the default partition into the new one.
    let lock_timeout: String = loader
        .query_one("SHOW lock_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lock_timeout, format!("{}s", LOADER_LOCK_TIMEOUT.as_secs()));
    stopped.batch_execute("COMMIT").await.unwrap();
    partitions
        .create(&loader, &Dataset::transactions(), &[(2023, 2, 1)])
        .await
        .unwrap();
    let placed: String = loader
        .query_one(
            "SELECT tableoid::regclass::text FROM transactions WHERE date = '2023-02-05'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(placed, "transactions_2023_02");
    eprintln!(
        "partition DDL gave up after {gave_up:.2?}; the peer's insert took {peer_waited:.2?}"
    );
}

/// The `(pid, query start)` of a COPY into `transactions` the sessions tagged `tag` are running.
async fn running_copy(client: &tokio_postgres::Client, tag: &str) -> Option<(i32, String)> {
    client
        .query_opt(
            "SELECT pid, query_start::text FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'active'
               AND query LIKE 'COPY %transactions%FROM STDIN%'
             ORDER BY query_start LIMIT 1",
            &[&tag],
        )
        .await
        .unwrap()
        .map(|row| (row.get(0), row.get(1)))
}

async fn sessions_of(client: &tokio_postgres::Client, tag: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&tag],
        )
        .await
        .unwrap()
        .get(0)
}

/// `rows` original-format rows in February 2023 from second `start` of the month, no header.
fn february_rows(start: u64, rows: u64) -> Vec<u8> {
    let mut out = String::new();
    for i in start..start + rows {
        let (day, rest) = (i / 86_400 % 28, i % 86_400);
        let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
        let cents = i % 100_000;
        out.push_str(&format!(
            "{:02}/02/2023 {h:02}:{m:02}:{s:02},Any text there,{}.{:02},Deposit\r\n",
            day + 1,
            cents / 100,
            cents % 100
        ));
    }
    out.into_bytes()
}
