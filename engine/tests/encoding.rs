//! The binary COPY encoder against the real PostgreSQL: whatever `load_chunk` sends must read
//! back exactly as PostgreSQL's own CSV COPY reads the same cells (same timestamps, same
//! numerics down to their scale, same text, NULL vs empty string), at the right line numbers.

use std::collections::BTreeMap;

use bytes::Bytes;
use engine::dataset::Dataset;
use engine::validate::{load_chunk, ChunkReport, ErrorPolicy, Limits, Lineage};
use futures_util::SinkExt;
use ingest_rows::values::civil_from_days;
use ingest_testkit::TestDb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::Rng;
use tokio_postgres::Client;
use uuid::Uuid;

/// One generated row, as the cells of the CSV file.
#[derive(Debug, Clone)]
struct Row {
    date: String,
    content: Option<String>,
    amount: String,
    kind: &'static str,
}

/// Loads `csv` with `load_chunk` and sends the stream through binary COPY.
async fn load_binary(client: &Client, csv: &str, upload_id: Uuid) -> anyhow::Result<ChunkReport> {
    let dataset = Dataset::transactions();
    let mut buffers = Vec::new();
    let lineage = Lineage {
        upload_id,
        chunk_no: 3,
    };
    let report = load_chunk(
        csv.as_bytes(),
        &dataset,
        &dataset.declared_layout(),
        lineage,
        ErrorPolicy::RejectRows,
        &Limits::default(),
        &mut |buf| {
            buffers.push(buf);
            true
        },
    )?;
    if report.rows_loaded > 0 {
        let sink = client
            .copy_in::<_, Bytes>(&dataset.copy_statement(&dataset.declared_layout()))
            .await?;
        futures_util::pin_mut!(sink);
        for buf in buffers {
            sink.send(buf).await?;
        }
        assert_eq!(sink.finish().await?, report.rows_loaded);
    } else {
        assert!(buffers.is_empty(), "nothing is sent when no row loads");
    }
    Ok(report)
}

/// Loads the same cells with PostgreSQL's CSV COPY (day-first dates) into `expected`.
async fn load_reference(client: &Client, csv: &str, header: bool) -> anyhow::Result<()> {
    client
        .batch_execute(
            "SET datestyle = 'ISO, DMY';
             CREATE TABLE IF NOT EXISTS expected (ord bigint GENERATED ALWAYS AS IDENTITY,
                 date timestamp, content text, amount numeric, type text);
             TRUNCATE expected RESTART IDENTITY",
        )
        .await?;
    let statement = format!(
        "COPY expected (date, content, amount, type) FROM STDIN (FORMAT csv, HEADER {header})"
    );
    let sink = client.copy_in::<_, Bytes>(&statement).await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::copy_from_slice(csv.as_bytes())).await?;
    sink.finish().await?;
    Ok(())
}

/// Rows of the upload that differ from `expected`, matched in line order; and the line numbers.
async fn differences(client: &Client, upload_id: Uuid) -> anyhow::Result<(i64, Vec<i32>)> {
    let row = client
        .query_one(
            "SELECT count(*) FROM (
                 SELECT row_number() OVER (ORDER BY line_no) AS ord, date, content,
                        amount::text AS amount, type
                 FROM transactions WHERE upload_id = $1) t
             FULL JOIN (SELECT ord, date, content, amount::text AS amount, type FROM expected) e
             USING (ord)
             WHERE (t.date, t.content, t.amount, t.type)
                   IS DISTINCT FROM (e.date, e.content, e.amount, e.type)",
            &[&upload_id],
        )
        .await?;
    let lines = client
        .query(
            "SELECT line_no FROM transactions WHERE upload_id = $1 AND chunk_no = 3
             ORDER BY line_no",
            &[&upload_id],
        )
        .await?;
    Ok((row.get(0), lines.iter().map(|r| r.get(0)).collect()))
}

fn csv_cell(text: &str) -> String {
    if text.is_empty() || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn csv_record(row: &Row) -> String {
    let content = row.content.as_deref().map(csv_cell).unwrap_or_default();
    format!("{},{content},{},{}", row.date, row.amount, row.kind)
}

/// The engine's own formula-injection rule: such cells are generated elsewhere.
fn starts_like_formula(text: &str) -> bool {
    engine::cell::starts_like_formula(text.as_bytes())
}

fn timestamp() -> impl Strategy<Value = String> {
    let year = prop_oneof![1000..=9999i32, 1999..=2001i32, Just(2024), Just(1900)];
    let month = prop_oneof![1..=12u32, Just(1u32), Just(2), Just(12)];
    let clock = prop_oneof![
        (0..24u32, 0..60u32, 0..60u32),
        Just((0, 0, 0)),
        Just((23, 59, 59))
    ];
    (year, month, 1..=31u32, clock, "[0-9]{0,6}", 0..3u8).prop_map(
        |(y, m, d, (hh, mi, ss), frac, style)| {
            // Clamping biases days toward month ends and leap days.
            let d = d.min(ingest_rows::values::days_in_month(y, m));
            let frac = if frac.is_empty() {
                frac
            } else {
                format!(".{frac}")
            };
            match style {
                0 => format!("{d:02}/{m:02}/{y:04} {hh:02}:{mi:02}:{ss:02}{frac}"),
                1 => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mi:02}:{ss:02}{frac}"),
                _ => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mi:02}:{ss:02}{frac}"),
            }
        },
    )
}

fn amount() -> impl Strategy<Value = String> {
    let edges = prop_oneof![
        Just("0"),
        Just("-0"),
        Just("0.000000"),
        Just("0.0001"),
        Just("-0.000001"),
        Just("999999999999999.999999"),
        Just("-999999999999999.999999"),
        Just("-614.568"),
        Just("10000"),
        Just("+1.50"),
        Just("000123.4500"),
        Just("100000000.00001"),
    ];
    let random =
        ("[-+]?", "[0-9]{1,15}", "(\\.[0-9]{1,6})?").prop_map(|(s, i, f)| format!("{s}{i}{f}"));
    prop_oneof![1 => edges.prop_map(str::to_owned), 3 => random]
}

fn content() -> impl Strategy<Value = Option<String>> {
    let text = "(\\PC|[\",\n\r\t ]|\r\n){0,30}".prop_map(|s| {
        if starts_like_formula(&s) {
            format!("x{s}")
        } else {
            s
        }
    });
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(String::new())),
        1 => Just(Some("é".repeat(1000))),
        1 => Just(Some("-614.568, \"quoted\"\r\nnext line".to_owned())),
        8 => text.prop_map(Some),
    ]
}

fn row() -> impl Strategy<Value = Row> {
    (
        timestamp(),
        content(),
        amount(),
        prop_oneof![Just("Deposit"), Just("Withdrawal")],
    )
        .prop_map(|(date, content, amount, kind)| Row {
            date,
            content,
            amount,
            kind,
        })
}

/// A chunk's text in the messy shapes files come in, and the line each row starts on.
fn messy_csv(rows: &[(Row, bool, u8)], header: bool, final_newline: bool) -> (String, Vec<i32>) {
    let mut csv = String::new();
    let mut lines = Vec::new();
    if header {
        csv.push_str("date,content,amount,type\r\n");
    }
    for (i, (row, crlf, blanks)) in rows.iter().enumerate() {
        lines.push(csv.matches('\n').count() as i32 + 1);
        csv.push_str(&csv_record(row));
        let ending = if *crlf { "\r\n" } else { "\n" };
        if i + 1 < rows.len() || final_newline {
            csv.push_str(&ending.repeat(1 + usize::from(*blanks)));
        }
    }
    (csv, lines)
}

#[test]
fn binary_copy_reads_back_like_postgres_csv_copy() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (db, client) = runtime.block_on(async {
        let db = TestDb::new().await?;
        let client = db.client().await?;
        anyhow::Ok((db, client))
    })?;
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let shape = (
        proptest::collection::vec(
            (
                row(),
                any::<bool>(),
                prop_oneof![4 => Just(0u8), 1 => 0..3u8],
            ),
            0..40,
        ),
        any::<bool>(),
        any::<bool>(),
    );
    let result = runner.run(&shape, |(rows, header, final_newline)| {
        let (csv, expected_lines) = messy_csv(&rows, header, final_newline);
        let plain: String = rows.iter().map(|(r, _, _)| csv_record(r) + "\n").collect();
        let upload_id = Uuid::new_v4();
        let checked = runtime.block_on(async {
            let report = load_binary(&client, &csv, upload_id).await?;
            load_reference(&client, &plain, false).await?;
            anyhow::Ok((report, differences(&client, upload_id).await?))
        });
        let (report, (differing, lines)) =
            checked.map_err(|err| TestCaseError::fail(format!("{err:#}")))?;
        prop_assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        prop_assert_eq!(report.rows_loaded, rows.len() as u64);
        prop_assert_eq!(differing, 0, "rows differ from PostgreSQL's CSV reading");
        prop_assert_eq!(lines, expected_lines);
        Ok(())
    });
    drop(client);
    drop(db);
    result.map_err(|err| anyhow::anyhow!("{err}"))
}

#[tokio::test]
async fn original_format_loads_exactly_into_monthly_partitions() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let client = db.client().await?;
    // Like the original generator: header, CRLF, day-first dates from 01/01/2023 00:00:01 one
    // step apart (80 s here, so 40,000 rows run into February), 3-decimal amounts, over several 1 MiB buffers.
    let mut rng = rand::thread_rng();
    let mut csv = String::from("date,content,amount,type\r\n");
    let start = 1_672_531_200i64; // 2023-01-01 00:00:00 UTC
    let mut per_month: BTreeMap<(i32, u32), i64> = BTreeMap::new();
    for i in 1..=40_000i64 {
        let secs = start + 1 + (i - 1) * 80;
        let days = secs.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let tod = secs.rem_euclid(86_400);
        let amount = if i == 1 {
            -614_568
        } else {
            rng.gen_range(-1_000_000..=1_000_000i64)
        };
        let kind = if i == 1 || rng.gen::<bool>() {
            "Deposit"
        } else {
            "Withdrawal"
        };
        csv.push_str(&format!(
            "{d:02}/{m:02}/{y} {:02}:{:02}:{:02},Any text there,{}{}.{:03},{kind}\r\n",
            tod / 3600,
            tod / 60 % 60,
            tod % 60,
            if amount < 0 { "-" } else { "" },
            amount.abs() / 1000,
            amount.abs() % 1000,
        ));
        *per_month.entry((y, m)).or_default() += 1;
    }

    let dataset = Dataset::transactions();
    let upload_id = Uuid::new_v4();
    let mut buffers = Vec::new();
    let lineage = Lineage {
        upload_id,
        chunk_no: 3,
    };
    let report = load_chunk(
        csv.as_bytes(),
        &dataset,
        &dataset.declared_layout(),
        lineage,
        ErrorPolicy::RejectRows,
        &Limits::default(),
        &mut |buf| {
            buffers.push(buf);
            true
        },
    )?;
    assert_eq!((report.data_rows, report.rows_loaded), (40_000, 40_000));
    assert_eq!(
        report.partitions.iter().copied().collect::<Vec<_>>(),
        per_month
            .keys()
            .map(|&(y, m)| (y, m, 1))
            .collect::<Vec<_>>()
    );
    assert!(buffers.len() > 1, "spans several buffers");
    for (y, m, _) in &report.partitions {
        let first_day = format!("{y:04}-{m:02}-01");
        client
            .execute(
                "SELECT ensure_transactions_partition($1::text::date)",
                &[&first_day],
            )
            .await?;
    }
    let sink = client
        .copy_in::<_, Bytes>(&dataset.copy_statement(&dataset.declared_layout()))
        .await?;
    futures_util::pin_mut!(sink);
    for buf in buffers {
        sink.send(buf).await?;
    }
    assert_eq!(sink.finish().await?, 40_000);

    load_reference(&client, &csv, true).await?;
    let (differing, lines) = differences(&client, upload_id).await?;
    assert_eq!(differing, 0);
    assert_eq!(lines, (2..=40_001).collect::<Vec<i32>>());
    let first = client
        .query_one(
            "SELECT to_char(date, 'YYYY-MM-DD HH24:MI:SS'), content, amount::text, type, line_no
             FROM transactions WHERE upload_id = $1 AND line_no = 2",
            &[&upload_id],
        )
        .await?;
    let first: (String, String, String, String, i32) = (
        first.get(0),
        first.get(1),
        first.get(2),
        first.get(3),
        first.get(4),
    );
    assert_eq!(
        first,
        (
            "2023-01-01 00:00:01".into(),
            "Any text there".into(),
            "-614.568".into(),
            "Deposit".into(),
            2
        )
    );
    for ((y, m), rows) in per_month {
        let table = format!("transactions_{y:04}_{m:02}");
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        assert_eq!(count, rows, "{table}");
    }
    Ok(())
}
