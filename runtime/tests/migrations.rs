//! The real migrations against the real PostgreSQL.

use ingest_runtime::db;
use ingest_testkit::TestDb;

#[tokio::test]
async fn concurrent_migration_runs_apply_each_migration_once() {
    let test_db = TestDb::empty().await.unwrap();
    let runs = (0..4).map(|_| {
        let url = test_db.url.clone();
        tokio::spawn(async move { db::prepare(&url).await.map(|_| ()) })
    });
    for run in futures_util::future::join_all(runs).await {
        run.unwrap().unwrap();
    }
    let client = test_db.client().await.unwrap();
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, db::MIGRATIONS.len() as i64);
    let mut again = test_db.client().await.unwrap();
    assert_eq!(
        db::migrate(&mut again).await.unwrap(),
        0,
        "a second run applies nothing"
    );
}

#[tokio::test]
async fn concurrent_processes_create_a_missing_database_once() {
    let test_db = TestDb::empty().await.unwrap();
    // Named like every test database so a crashed run's leftover is swept too.
    let name = format!("{}_create", test_db.name);
    let url = test_db.url.replace(&test_db.name, &name);
    let runs = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { db::ensure_database(&url).await })
    });
    for run in futures_util::future::join_all(runs).await {
        run.unwrap().unwrap();
    }
    let admin = db::connect(&test_db.url).await.unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn transactions_route_rows_to_monthly_and_default_partitions() {
    let test_db = TestDb::new().await.unwrap();
    let client = test_db.client().await.unwrap();
    for month in ["2023-01-01", "2023-02-01"] {
        let created: bool = client
            .query_one(
                "SELECT ensure_transactions_partition($1::text::date)",
                &[&month],
            )
            .await
            .unwrap()
            .get(0);
        assert!(created);
    }
    client
        .batch_execute(
            "INSERT INTO transactions (date, content, amount, type) VALUES
                ('2023-01-31 23:59:59', 'Any text there', -614.568, 'Deposit'),
                ('2023-02-01 00:00:00', 'Any text there', 0.001, 'Withdrawal'),
                ('2031-07-04 12:00:00', 'no partition yet', 1, 'Deposit')",
        )
        .await
        .unwrap();
    let placed: Vec<(String, i64)> = client
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM transactions GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        placed,
        vec![
            ("transactions_2023_01".to_owned(), 1),
            ("transactions_2023_02".to_owned(), 1),
            ("transactions_default".to_owned(), 1),
        ]
    );
    // A month whose rows already sit in the default partition gets its partition all the same:
    // the rows move into it, in the same transaction.
    let created: bool = client
        .query_one("SELECT ensure_transactions_partition('2031-07-15')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(created);
    let moved: Vec<(String, String)> = client
        .query(
            "SELECT tableoid::regclass::text, content FROM transactions WHERE date >= '2031-01-01'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        moved,
        vec![(
            "transactions_2031_07".to_owned(),
            "no partition yet".to_owned()
        )]
    );
    let total: i64 = client
        .query_one("SELECT count(*) FROM transactions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 3);
}
