//! Declarative datasets end to end: the example definitions of `datasets/` loaded through the
//! real gateway and engine (their tables created by the engine), with exact counts, values and
//! rejected-row reasons; a changed definition stops the engine instead of altering a table.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

fn datasets_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets")
}

/// The shipped definitions plus `products_strict`: the catalogue's unique key without
/// `on_conflict = "skip"`, so a duplicate fails its chunk as a plain COPY would.
fn test_datasets(env: &TestEnv) -> PathBuf {
    let dir = env.upload_dir.with_extension("datasets");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(datasets_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let strict = std::fs::read_to_string(datasets_dir().join("products.toml"))
        .unwrap()
        .replace("name = \"products\"", "name = \"products_strict\"")
        .replace("table = \"products\"", "table = \"products_strict\"")
        .replace("on_conflict = \"skip\"", "");
    std::fs::write(dir.join("products_strict.toml"), strict).unwrap();
    dir
}

/// A gateway that knows the test datasets, whose tables an engine made and then stopped; the
/// API, a session on the database, and the `--datasets-dir` flag for engines started later.
async fn tables_made(env: &TestEnv) -> (String, Running, Api, tokio_postgres::Client) {
    let dir = test_datasets(env);
    let datasets_arg = format!("--datasets-dir={}", dir.display());
    let gateway = start_gateway(env, &[&datasets_arg]).await;
    start_engine(env, &[&datasets_arg]).await.stop().await;
    let api = connect(&gateway).await;
    let db = env.db.client().await.unwrap();
    (datasets_arg, gateway, api, db)
}

/// `text` in Windows-1252, as the bank's export is written.
fn latin1(text: &str) -> Vec<u8> {
    encoding_rs::WINDOWS_1252.encode(text).0.into_owned()
}

fn reasons(status: &Value) -> Vec<(i64, i64, String)> {
    let mut found: Vec<(i64, i64, String)> = status["rejected_rows"]
        .as_array()
        .expect("rejected rows")
        .iter()
        .map(|r| {
            let (chunk, line) = (r["chunk"].as_i64(), r["line"].as_i64());
            let reason = r["reason"].as_str().unwrap_or_default().to_owned();
            (chunk.unwrap_or(-1), line.unwrap_or(-1), reason)
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn example_datasets_load_end_to_end() {
    let env = TestEnv::new(2).await;
    let dir = test_datasets(&env);
    let datasets_arg = format!("--datasets-dir={}", dir.display());
    let gateway = start_gateway(&env, &[&datasets_arg]).await;
    let engine = start_engine(&env, &[&datasets_arg]).await;
    let api = connect(&gateway).await;
    let db = env.db.client().await.unwrap();

    // The registry as clients see it.
    let listed = api.get_json("/api/datasets").await;
    let names: Vec<&str> = listed["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "bank_statements",
            "products",
            "products_strict",
            "sensor_readings",
            "transactions"
        ]
    );
    // The docs pages describe them too, without a token.
    let document = api.get_json("/api/upload/openapi.json").await;
    let intro = document["info"]["description"].as_str().unwrap();
    assert!(
        intro.contains("### bank_statements\n\nInto table `bank_statements`, partitioned by month on `booked_on`. Files: header `booked_on;counterparty;description;amount;currency`, delimiter `;`, Windows-1252 (latin-1).")
            && intro.contains("| `currency` | text | no (default `EUR`) | currency, währung |"),
        "{intro}"
    );
    let bank = &listed["datasets"][0];
    assert_eq!(bank["delimiter"], ";");
    assert_eq!(bank["encoding"], "windows-1252");
    assert_eq!(bank["columns"][4]["default"], "EUR");

    // A bank statement: semicolons, Windows-1252, German headers in another order, an extra
    // column (ignored), no currency column (its default), and a second chunk without header.
    let folder = api.create(json!({"dataset": "bank_statements"})).await;
    let first = latin1(
        "Betrag;Buchungstag;Verwendungszweck;Empfänger;Saldo\r\n\
         -12.50;02.01.2024;Miete Januar;Müller GmbH;1000.00\r\n\
         1500.00;31.01.2024;Gehalt;Firma Groß AG;2500.00\r\n\
         9.99;31.02.2024;bad day;X;0\r\n",
    );
    let second = latin1(
        "-3.20;01.02.2024;Bäckerei;Café Zürich;1.00\r\n\
         12,50;03.02.2024;comma decimal;Y;0\r\n",
    );
    assert_eq!(api.put(&folder, 0, first).await, 200);
    assert_eq!(api.put(&folder, 1, second).await, 200);
    // A chunk whose header orders the columns otherwise would be read differently: refused.
    let reordered = latin1("Buchungstag;Betrag\r\n05.02.2024;1.00\r\n");
    assert_eq!(api.put(&folder, 2, reordered).await, 409);
    api.complete(&folder, 2).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(
        (&status["rows_loaded"], &status["rows_rejected"]),
        (&json!(3), &json!(2))
    );
    assert_eq!(
        reasons(&status),
        [
            (
                0,
                4,
                r#"booked_on: "31.02.2024" is not a valid date"#.to_owned()
            ),
            (1, 2, "amount: not a decimal".to_owned()),
        ]
    );
    let rows = texts(
        &db,
        "SELECT format('%s|%s|%s|%s|%s|%s', booked_on, counterparty, description, amount,
                           currency, tableoid::regclass)
             FROM bank_statements ORDER BY booked_on",
        &[],
    )
    .await;
    assert_eq!(
        rows,
        [
            "2024-01-02|Müller GmbH|Miete Januar|-12.50|EUR|bank_statements_2024_01",
            "2024-01-31|Firma Groß AG|Gehalt|1500.00|EUR|bank_statements_2024_01",
            "2024-02-01|Café Zürich|Bäckerei|-3.20|EUR|bank_statements_2024_02",
        ]
    );

    // A chunk without a header sent before chunk 0 waits (the engine parks it) until chunk 0
    // says the file's column order, then loads with it: not in the declared order.
    let folder = api.create(json!({"dataset": "bank_statements"})).await;
    let rest = latin1("-1.00;05.02.2024;late;Zoë;0\r\n");
    let offsets = || async {
        let sum = "SELECT coalesce(sum(\"offset\"), 0)::text FROM stream_offsets";
        texts(&db, sum, &[]).await.remove(0)
    };
    let before = offsets().await;
    assert_eq!(api.put(&folder, 1, rest).await, 200);
    // The engine reads chunk 1 first: it parks it (committing its stream offset, nothing else).
    ingest_testkit::wait_for("chunk 1 to be parked", Duration::from_secs(30), || async {
        (offsets().await != before).then_some(())
    })
    .await;
    let status = api.status(&folder).await;
    assert_eq!(status["chunks_loaded"], 0, "{status}");
    let start = latin1(
        "Betrag;Buchungstag;Verwendungszweck;Empfänger;Saldo\r\n2.00;04.02.2024;early;Bob;0\r\n",
    );
    assert_eq!(api.put(&folder, 0, start).await, 200);
    api.complete(&folder, 2).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(
        (
            &status["state"],
            &status["rows_loaded"],
            &status["rows_rejected"]
        ),
        (&json!("done"), &json!(2), &json!(0)),
        "{status}"
    );
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    let rows = texts(
        &db,
        "SELECT format('%s|%s|%s|%s|%s', chunk_no, booked_on, counterparty, description, amount)
             FROM bank_statements WHERE upload_id = $1 ORDER BY chunk_no",
        &[&id],
    )
    .await;
    assert_eq!(
        rows,
        ["0|2024-02-04|Bob|early|2.00", "1|2024-02-05|Zoë|late|-1.00"]
    );

    // The same dataset from an XLSX workbook: converted to the dataset's own format (semicolons,
    // Windows-1252) before the same checks and load.
    use ingest_testkit::xlsx::{workbook, Cell};
    let book = workbook(
        &[
            vec![
                Cell::Text("Buchungstag"),
                Cell::Text("Betrag"),
                Cell::Text("Empfänger"),
                Cell::Text("Währung"),
            ],
            vec![
                Cell::Text("15.03.2024"),
                Cell::Number(-7.5),
                Cell::Text("Crème; Łódź"),
                Cell::Text("CHF"),
            ],
            vec![
                Cell::Text("16.03.2024"),
                Cell::Number(1.0),
                Cell::Text("€ shop"),
                Cell::Text("JPY"),
            ],
        ],
        &[],
    );
    let folder = api.create(json!({"dataset": "bank_statements"})).await;
    let response = api
        .http
        .put(format!("{}/api/upload/{folder}/chunks/0", api.url))
        .bearer_auth(&api.token)
        .header(
            "content-type",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        .body(book)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    api.complete(&folder, 1).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(
        (&status["rows_loaded"], &status["rows_rejected"]),
        (&json!(1), &json!(1)),
        "{status}"
    );
    assert_eq!(
        reasons(&status)[0].2,
        r#"currency: "JPY" is not one of EUR, USD, CHF, GBP"#
    );
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    let row: String = db
        .query_one(
            "SELECT format('%s|%s|%s|%s', booked_on, counterparty, amount, currency)
             FROM bank_statements WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(row, "2024-03-15|Crème; &#321;ód&#378;|-7.50|CHF");

    // Sensor readings: instants with offsets, partitioned by their UTC day; JSON; a boolean
    // that defaults to true.

    let sensor = "5f0c8d7e-1b2a-4c3d-9e8f-0a1b2c3d4e5f";
    let body = format!(
        "time,sensor_id,temperature,humidity,ok,payload\n\
         2024-03-01T01:30:00+02:00,{sensor},21.50,40,,\"{{\"\"battery\"\": 0.93}}\"\n\
         2024-03-01 12:00:00Z,{sensor},-3.25,55,no,\n\
         2024-03-01T23:59:59.5-01:00,{sensor},,,yes,\"[1,2]\"\n\
         2024-03-02T00:00:00+00:00,not-a-uuid,1,1,true,\n\
         2024-03-02T00:00:00+00:00,{sensor},1,1,true,{{broken\n\
         2024-03-02T00:00:00,{sensor},1,1,true,\n\
         2024-03-02T00:00:00Z,{sensor},1,1,true,\"{{\"\"a\"\": \"\"\\u0000\"\"}}\"\n"
    );
    let status = upload_one(&api, "sensor_readings", body.into_bytes()).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(
        (&status["rows_loaded"], &status["rows_rejected"]),
        (&json!(3), &json!(4)),
        "{:?}",
        reasons(&status)
    );
    let found = reasons(&status);
    assert_eq!(found[0].2, r#"sensor_id: "not-a-uuid" is not a UUID"#);
    assert!(found[1].2.starts_with("payload: not JSON"), "{found:?}");
    assert_eq!(
        found[2].2,
        r#"measured_at: "2024-03-02T00:00:00" is not a valid timestamp with a time zone offset"#
    );
    assert_eq!(
        found[3].2,
        r#"payload: JSON text holding \u0000, which jsonb cannot store"#
    );
    let rows = texts(
        &db,
        "SELECT format('%s|%s|%s|%s|%s|%s', measured_at AT TIME ZONE 'UTC', temperature,
                           humidity, ok, payload, tableoid::regclass)
             FROM sensor_readings ORDER BY measured_at",
        &[],
    )
    .await;
    assert_eq!(
        rows,
        [
            "2024-02-29 23:30:00|21.50|40|t|{\"battery\": 0.93}|sensor_readings_2024_02_29",
            "2024-03-01 12:00:00|-3.25|55|f||sensor_readings_2024_03_01",
            "2024-03-02 00:59:59.5|||t|[1, 2]|sensor_readings_2024_03_02",
        ]
    );

    // A product catalogue with a unique key: rows whose SKU is taken (in the table, or earlier
    // in the same file) are skipped and counted, across uploads.
    let first = "sku,name,price,stock,active,released_on\n\
                 A-1,Lamp,19.90,5,yes,2024-01-15\n\
                 B-2,Chair,49.00,,no,\n\
                 A-1,Lamp again,18.00,1,yes,\n\
                 C-3,Desk,abc,1,yes,\n";
    let (loaded, skipped) = load_products(&api, first).await;
    assert_eq!((loaded, skipped), (2, 1));
    let second = "name,sku,price\nTable,D-4,99.00\nChair,B-2,45.00\n";
    let (loaded, skipped) = load_products(&api, second).await;
    assert_eq!((loaded, skipped), (1, 1));
    let rows = texts(
        &db,
        "SELECT format('%s|%s|%s|%s|%s|%s', sku, name, price, stock, active, released_on)
             FROM products ORDER BY sku",
        &[],
    )
    .await;
    assert_eq!(
        rows,
        [
            "A-1|Lamp|19.90|5|t|2024-01-15",
            "B-2|Chair|49.00|0|f|",
            "D-4|Table|99.00|0|t|",
        ]
    );
    // Without `on_conflict = "skip"`, a key already in the table fails the chunk with the
    // database's reason (it is not retried forever), and nothing of it is loaded.
    let body = "sku,name,price\nS-1,One,1.00\nS-2,Two,2.00\n";
    let status = upload_one(&api, "products_strict", body.into()).await;
    assert_eq!(status["state"], "done", "{status}");
    let body = "sku,name,price\nS-3,Three,3.00\nS-1,One again,1.50\n";
    let status = upload_one(&api, "products_strict", body.into()).await;
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "the database refused the rows: duplicate key value violates unique constraint"
        ) && error.contains("(sku)=(S-1)"),
        "{status}"
    );
    let strict: i64 = db
        .query_one("SELECT count(*) FROM products_strict", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(strict, 2);
    engine.stop().await;

    // The products table exists now: a definition that says otherwise stops the engine.
    let changed_dir = env.upload_dir.with_extension("changed");
    std::fs::create_dir_all(&changed_dir).unwrap();
    let changed = std::fs::read_to_string(datasets_dir().join("products.toml"))
        .unwrap()
        .replace("precision = 10", "precision = 12");
    std::fs::write(changed_dir.join("products.toml"), changed).unwrap();
    let changed_arg = format!("--datasets-dir={}", changed_dir.display());
    let settings = engine_settings(&env, &[&changed_arg]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        engine::run(listener, settings, std::future::pending()),
    )
    .await
    .expect("the engine gives up at once");
    let message = format!("{:#}", refused.expect_err("refused"));
    assert!(
        message.contains(
            "dataset \"products\": table \"products\" does not match the definition: \
             column \"price\" is numeric(10,2), the definition says numeric(12,2)"
        ),
        "{message}"
    );
    std::fs::remove_dir_all(&changed_dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    gateway.stop().await;
}

/// Uploads `csv` as one products chunk; its rows loaded and skipped.
async fn load_products(api: &Api, csv: &str) -> (i64, i64) {
    let status = upload_one(api, "products", csv.into()).await;
    assert_eq!(status["state"], "done", "{status}");
    (
        status["rows_loaded"].as_i64().unwrap(),
        status["rows_skipped"].as_i64().unwrap(),
    )
}

/// Uploads `body` as the only chunk of a new upload of `dataset`; its status once finished.
async fn upload_one(api: &Api, dataset: &str, body: Vec<u8>) -> Value {
    let folder = api.create(json!({ "dataset": dataset })).await;
    assert_eq!(api.put(&folder, 0, body).await, 200);
    api.complete(&folder, 1).await;
    api.wait_finished(&folder, Duration::from_secs(60)).await
}

/// The first column of every row `sql` returns, as text.
async fn texts(
    db: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    let rows = db.query(sql, params).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// A chunk cut into pieces whose dataset an engine no longer knows (its definitions changed
/// since, or a peer with other definitions took the partition over) fails whole: what its
/// loaded pieces committed is deleted with its plan. It used to be retried for good, holding up
/// every later chunk of its stream partition.
#[tokio::test]
async fn a_chunk_in_pieces_of_a_dataset_the_engine_no_longer_knows_fails_whole() {
    let env = TestEnv::new(1).await;
    let (_datasets_arg, gateway, api, db) = tables_made(&env).await;

    let sensor = "5f0c8d7e-1b2a-4c3d-9e8f-0a1b2c3d4e5f";
    let body = format!(
        "sensor_id,measured_at,temperature\n{sensor},2024-03-01 12:00:00Z,1\n\
         {sensor},2024-03-01 12:00:01Z,2\n"
    );
    let folder = api.create(json!({ "dataset": "sensor_readings" })).await;
    assert_eq!(api.put(&folder, 0, body.into_bytes()).await, 200);
    api.complete(&folder, 1).await;
    // As an engine that cut it and loaded its first piece before it stopped would leave it.
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    db.execute(
        "INSERT INTO chunk_pieces (upload_id, chunk_no, piece_no, byte_start, byte_end,
                                   first_line, state, rows_loaded)
         VALUES ($1, 0, 0, 0, 79, 1, 'loaded', 1), ($1, 0, 1, 79, 118, 3, 'stored', 0)",
        &[&id],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO sensor_readings (sensor_id, measured_at, upload_id, chunk_no, line_no)
         VALUES ($2::text::uuid, '2024-03-01 12:00:00Z', $1, 0, 2)",
        &[&id, &sensor],
    )
    .await
    .unwrap();

    // An engine without the definition.
    let engine = start_engine(&env, &[]).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "failed", "{status}");
    let row = db
        .query_one(
            "SELECT c.error,
                    (SELECT count(*) FROM sensor_readings s WHERE s.upload_id = $1),
                    (SELECT count(*) FROM chunk_pieces p WHERE p.upload_id = $1)
             FROM chunks c WHERE c.upload_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let error: Option<String> = row.get(0);
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("unknown dataset")),
        "chunk error: {error:?}"
    );
    assert_eq!(row.get::<_, i64>(1), 0, "the loaded piece's row is deleted");
    assert_eq!(row.get::<_, i64>(2), 0, "and the plan");
    engine.stop().await;
    gateway.stop().await;
}

/// A piece whose rows the database refuses for a unique key its own committed copy took (a peer
/// loaded the same piece and committed while this engine's COPY waited on the key) is skipped,
/// not a reason to fail the chunk: that failure used to delete every loaded piece's rows.
#[tokio::test]
async fn a_piece_refused_for_a_key_its_peer_copy_took_is_skipped_not_failed() {
    let env = TestEnv::new(1).await;
    let (datasets_arg, gateway, api, db) = tables_made(&env).await;

    let (head, tail) = (
        "sku,name,price\nP-1,One,1.00\nP-2,Two,2.00\n",
        "P-3,Three,3.00\n",
    );
    let body = format!("{head}{tail}P-4,Four,4.00\n");
    let folder = api.create(json!({ "dataset": "products_strict" })).await;
    assert_eq!(api.put(&folder, 0, body.clone().into_bytes()).await, 200);
    api.complete(&folder, 1).await;
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    // A plan of two pieces, as an engine that cut the chunk leaves it: lines 1-3, then 4-5.
    let (cut, end) = (head.len() as i64, body.len() as i64);
    db.execute(
        "INSERT INTO chunk_pieces (upload_id, chunk_no, piece_no, byte_start, byte_end, first_line)
         VALUES ($1, 0, 0, 0, $2, 1), ($1, 0, 1, $2, $3, 4)",
        &[&id, &cut, &end],
    )
    .await
    .unwrap();
    // The peer's copy of piece 1: its rows and its move to `loaded`, not committed yet.
    let mut peer = env.db.client().await.unwrap();
    let peer = peer.transaction().await.unwrap();
    peer.execute(
        "INSERT INTO products_strict (sku, name, price, stock, active, upload_id, chunk_no, line_no)
         VALUES ('P-3', 'Three', 3.00, 0, true, $1, 0, 4), ('P-4', 'Four', 4.00, 0, true, $1, 0, 5)",
        &[&id],
    )
    .await
    .unwrap();
    peer.execute(
        "UPDATE chunk_pieces SET state = 'loaded', rows_loaded = 2
         WHERE upload_id = $1 AND chunk_no = 0 AND piece_no = 1",
        &[&id],
    )
    .await
    .unwrap();

    let engine = start_engine(&env, &[&datasets_arg]).await;
    // The engine's COPY of piece 1 waits on the peer's keys; then the peer commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE 'COPY%products_strict%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no COPY waited on the peer's keys"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peer.commit().await.unwrap();

    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_loaded"], 4, "{status}");
    let skus = texts(
        &db,
        "SELECT sku FROM products_strict WHERE upload_id = $1 ORDER BY sku",
        &[&id],
    )
    .await;
    assert_eq!(skus, ["P-1", "P-2", "P-3", "P-4"]);
    engine.stop().await;
    gateway.stop().await;
}
