//! The engine end to end: chunks uploaded through the real gateway, published to the real broker
//! and loaded into the real PostgreSQL by real engine processes.

use std::time::Duration;

use ingest_testkit::wait_for;

use crate::support::*;

const ENGINE: &str = env!("CARGO_BIN_EXE_system-engine");

#[tokio::test]
async fn uploaded_chunks_are_loaded_exactly_once() {
    let env = TestEnv::new(4).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    let (chunks, per_chunk) = (8, 500u64);
    for n in 0..chunks {
        let body = original_rows(n as u64 * per_chunk, per_chunk, n == 0);
        assert_eq!(api.put(&folder, n, body).await, 200);
    }
    // A chunk sent twice is stored once and loaded once.
    assert_eq!(
        api.put(&folder, 3, original_rows(3 * per_chunk, per_chunk, false))
            .await,
        200
    );
    api.complete(&folder, chunks).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_loaded"], 4000);
    assert_eq!(status["rows_rejected"], 0);
    assert_eq!(status["chunks_loaded"], 8);
    assert_eq!(table_counts(&env.db, &folder).await, (4000, 0));

    let client = env.db.client().await.unwrap();
    // Day-first dates, no data row skipped (the original lost the first row of every file).
    let first: String = client
        .query_one(
            "SELECT format('%s|%s|%s|%s|%s', date, content, amount, type, line_no) FROM transactions
             WHERE chunk_no = 0 ORDER BY line_no LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        first,
        "2023-01-01 00:00:00|Any text there|-1000.000|Withdrawal|2"
    );
    let in_default: i64 = client
        .query_one("SELECT count(*) FROM transactions_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        in_default, 0,
        "well-formed rows belong in monthly partitions"
    );
    let expected_sum: i64 = (0..4000i64)
        .map(|i| (i * 7919 % 2_000_000) - 1_000_000)
        .sum();
    let sum: String = client
        .query_one(
            "SELECT (sum(amount) * 1000)::bigint::text FROM transactions",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, expected_sum.to_string());
    env.wait_no_files().await;
    engine.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn bad_rows_are_rejected_with_their_reasons_per_policy() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    let chunk = b"date,content,amount,type\r\n\
        01/02/2023 10:00:00,ok,1.5,Deposit\r\n\
        31/02/2023 10:00:00,bad date,1.5,Deposit\r\n\
        02/02/2023 10:00:00,bad amount,1e309,Deposit\r\n\
        03/02/2023 10:00:00,bad type,1,Transfer\r\n\
        04/02/2023 10:00:00,too,many,columns,here\r\n\
        05/02/2023 10:00:00,=SUM(A1:A9),1,Deposit\r\n\
        2023-02-06T10:00:00,iso date,-0.001,Withdrawal\r\n"
        .to_vec();

    let rows_folder = api
        .create(serde_json::json!({"on_error": "reject-rows"}))
        .await;
    assert_eq!(api.put(&rows_folder, 0, chunk.clone()).await, 200);
    api.complete(&rows_folder, 1).await;
    let status = api
        .wait_finished(&rows_folder, Duration::from_secs(30))
        .await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_loaded"], 2);
    assert_eq!(status["rows_rejected"], 5);
    let lines: Vec<i64> = status["rejected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7]);
    let reasons = status["rejected_rows"].to_string();
    for word in ["date", "amount", "type", "columns", "formula"] {
        assert!(reasons.contains(word), "no {word} reason in {reasons}");
    }
    assert_eq!(table_counts(&env.db, &rows_folder).await, (2, 0));

    let chunk_folder = api
        .create(serde_json::json!({"on_error": "reject-chunk"}))
        .await;
    assert_eq!(api.put(&chunk_folder, 0, chunk).await, 200);
    api.complete(&chunk_folder, 1).await;
    let status = api
        .wait_finished(&chunk_folder, Duration::from_secs(30))
        .await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["chunks_failed"], 1);
    assert_eq!(status["rows_loaded"], 0);
    assert_eq!(
        status["rows_rejected"], 7,
        "every data row of a rejected chunk is accounted for"
    );
    assert!(
        status["error"].as_str().unwrap().contains("line 3"),
        "{status}"
    );
    assert_eq!(table_counts(&env.db, &chunk_folder).await, (0, 0));
    let kept = env.files_left();
    assert_eq!(
        kept.len(),
        1,
        "the failed chunk's file is kept for a retry: {kept:?}"
    );
    engine.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn sigkilled_engines_resume_without_loss_or_duplicates() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    let (chunks, per_chunk) = (24, 20_000u64);
    for n in 0..chunks {
        let body = original_rows(n as u64 * per_chunk, per_chunk, n == 0);
        assert_eq!(api.put(&folder, n, body).await, 200);
    }
    api.complete(&folder, chunks).await;
    // Kill the engine three times while it is loading, at different points.
    for (round, at_least) in [(0, 1), (1, 6), (2, 12)] {
        let mut engine =
            EngineProcess::spawn(ENGINE.as_ref(), &env, &format!("victim-{round}"), &[]);
        wait_for("chunks to load", Duration::from_secs(60), || async {
            let loaded = api.status(&folder).await["chunks_loaded"]
                .as_i64()
                .unwrap_or(0);
            (loaded >= at_least).then_some(())
        })
        .await;
        engine.kill();
    }
    let _survivor = EngineProcess::spawn(ENGINE.as_ref(), &env, "survivor", &[]);
    let status = api.wait_finished(&folder, Duration::from_secs(120)).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_loaded"], chunks as i64 * per_chunk as i64);
    assert_eq!(
        table_counts(&env.db, &folder).await,
        (chunks as i64 * per_chunk as i64, 0)
    );
    // The last file goes right after its commit, or with the sweep when a kill came in between.
    env.wait_no_files().await;
    gateway.stop().await;
}

#[tokio::test]
async fn two_engines_share_partitions_and_take_over_from_a_dead_one() {
    let env = TestEnv::new(4).await;
    let gateway = start_gateway(&env, &[]).await;
    let mut first = EngineProcess::spawn(ENGINE.as_ref(), &env, "engine-a", &[]);
    let _second = EngineProcess::spawn(ENGINE.as_ref(), &env, "engine-b", &[]);
    let client = env.db.client().await.unwrap();
    wait_for(
        "the partitions to split 2/2",
        Duration::from_secs(30),
        || async {
            let owned = lease_owners(&client).await;
            (owned == vec![("engine-a".to_owned(), 2), ("engine-b".to_owned(), 2)]).then_some(())
        },
    )
    .await;
    first.kill();
    wait_for(
        "engine-b to take over all partitions",
        Duration::from_secs(15),
        || async {
            let owned = lease_owners(&client).await;
            (owned == vec![("engine-b".to_owned(), 4)]).then_some(())
        },
    )
    .await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    for n in 0..8 {
        assert_eq!(
            api.put(&folder, n, original_rows(n as u64 * 100, 100, false))
                .await,
            200
        );
    }
    api.complete(&folder, 8).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["rows_loaded"], 800, "{status}");
    assert_eq!(table_counts(&env.db, &folder).await, (800, 0));
    gateway.stop().await;
}

async fn lease_owners(client: &tokio_postgres::Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT owner, count(*) FROM partition_leases WHERE expires_at > now()
             GROUP BY owner ORDER BY owner",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect()
}

/// `original_rows` with the physical lines `every`, `2 * every`, ... replaced by a bad row.
/// Returns the chunk and the line numbers it rejects.
fn with_bad_lines(chunk: Vec<u8>, every: usize) -> (Vec<u8>, Vec<i32>) {
    let text = String::from_utf8(chunk).unwrap();
    let mut out = String::new();
    let mut bad = Vec::new();
    for (i, line) in text.split_inclusive("\r\n").enumerate() {
        let line_no = i + 1;
        if line_no % every == 0 {
            out.push_str("bad,row\r\n");
            bad.push(line_no as i32);
        } else {
            out.push_str(line);
        }
    }
    (out.into_bytes(), bad)
}

/// A chunk far bigger than `INGEST_PIECE_BYTES` is cut into pieces loaded over several COPY
/// connections, each exactly once: with the engine SIGKILLed three times mid-load, every good
/// row is loaded once with its line number in the chunk, every bad row is rejected once, and
/// the plan is gone when the chunks are loaded.
#[tokio::test]
async fn big_chunks_load_in_pieces_exactly_once_through_sigkills() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    let (chunks, per_chunk) = (4, 40_000u64);
    let mut rejected_lines = Vec::new();
    for n in 0..chunks {
        let (body, bad) = with_bad_lines(original_rows(n as u64 * per_chunk, per_chunk, true), 997);
        rejected_lines.extend(bad.iter().map(|&line| (n, line)));
        assert_eq!(api.put(&folder, n, body).await, 200);
    }
    api.complete(&folder, chunks).await;
    let good = chunks as i64 * per_chunk as i64 - rejected_lines.len() as i64;
    // About 2.2 MB per chunk: some 34 pieces each.
    let pieces = ["--piece-bytes=65536"];
    let client = env.db.client().await.unwrap();
    let loaded = || async {
        client
            .query_one(
                "SELECT count(*) FROM transactions WHERE upload_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let mut planned = 0;
    for (round, share) in [(0, 10), (1, 40), (2, 70)] {
        let mut engine =
            EngineProcess::spawn(ENGINE.as_ref(), &env, &format!("victim-{round}"), &pieces);
        wait_for("rows to load", Duration::from_secs(60), || async {
            (loaded().await * 100 >= good * share).then_some(())
        })
        .await;
        engine.kill();
        planned += client
            .query_one(
                "SELECT count(*) FROM chunk_pieces WHERE upload_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    assert!(planned > 0, "the chunks were never cut into pieces");
    let _survivor = EngineProcess::spawn(ENGINE.as_ref(), &env, "survivor", &pieces);
    let status = api.wait_finished(&folder, Duration::from_secs(120)).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["rows_loaded"], good, "{status}");
    assert_eq!(status["rows_rejected"], rejected_lines.len(), "{status}");
    assert_eq!(table_counts(&env.db, &folder).await, (good, 0));
    let rejected: Vec<(i32, i32)> = client
        .query(
            "SELECT chunk_no, line_no FROM rejected_rows WHERE upload_id = $1 ORDER BY 1, 2",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(rejected, rejected_lines);
    // Line numbers are the chunk's, not the piece's: the header is line 1, the last row is
    // line `per_chunk + 1`, and no line is missing but the rejected ones.
    let lines = client
        .query_one(
            "SELECT min(line_no), max(line_no), count(DISTINCT line_no) FROM transactions
             WHERE upload_id = $1 AND chunk_no = 2",
            &[&id],
        )
        .await
        .unwrap();
    let bad_in_chunk = rejected_lines.iter().filter(|(n, _)| *n == 2).count() as i64;
    assert_eq!(
        (
            lines.get::<_, i32>(0),
            lines.get::<_, i32>(1),
            lines.get::<_, i64>(2)
        ),
        (2, per_chunk as i32 + 1, per_chunk as i64 - bad_in_chunk)
    );
    let plans: i64 = client
        .query_one("SELECT count(*) FROM chunk_pieces", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plans, 0, "a loaded chunk's plan is deleted");
    env.wait_no_files().await;
    gateway.stop().await;
}

/// A chunk that is not text after all (here: well-formed rows, then enough bytes that are not
/// UTF-8 to make it binary data) fails whole when its pieces load apart, as it does when loaded
/// whole; the rows its good pieces had committed are deleted with it: a failed chunk loaded
/// nothing.
#[tokio::test]
async fn a_chunk_failed_by_one_piece_keeps_none_of_its_rows() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &["--piece-bytes=65536"]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    let mut poisoned = original_rows(0, 20_000, true);
    let good_bytes = poisoned.len();
    while poisoned.len() < good_bytes * 115 / 100 {
        poisoned.extend_from_slice(&[0xff; 48]);
        poisoned.extend_from_slice(b"\r\n");
    }
    assert_eq!(api.put(&folder, 0, poisoned).await, 200);
    assert_eq!(
        api.put(&folder, 1, original_rows(20_000, 30_000, false))
            .await,
        200
    );
    api.complete(&folder, 2).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["chunks_failed"], 1, "{status}");
    assert_eq!(status["rows_loaded"], 30_000, "{status}");
    let client = env.db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    let per_chunk: Vec<(i32, i64)> = client
        .query(
            "SELECT chunk_no, count(*) FROM transactions WHERE upload_id = $1 GROUP BY 1 ORDER BY 1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(per_chunk, vec![(1, 30_000)]);
    let error: String = client
        .query_one(
            "SELECT error FROM chunks WHERE upload_id = $1 AND chunk_no = 0",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("not a CSV chunk"), "{error}");
    let rejected: i64 = client
        .query_one(
            "SELECT count(*) FROM rejected_rows WHERE upload_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 0);
    // The good pieces had committed their rows: the failure deleted them.
    wait_for(
        "the statistics to count the deleted rows",
        Duration::from_secs(10),
        || async {
            let deleted: i64 = client
                .query_one(
                    "SELECT coalesce(sum(n_tup_del), 0)::bigint FROM pg_stat_user_tables
                     WHERE relname LIKE 'transactions%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (deleted > 0).then_some(())
        },
    )
    .await;
    engine.stop().await;
    gateway.stop().await;
}

/// `GET /api/upload/{folder}/rejected` streams every rejected row, beyond the status's sample of
/// 100 and across the download's pages, as JSON lines and as CSV with the original lines intact.
#[tokio::test]
async fn every_rejected_row_downloads_as_csv_or_json_lines() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    let bad_rows = 2500; // three pages of the download
    let mut chunk = b"date,content,amount,type\n".to_vec();
    let mut sent = Vec::new();
    for i in 0..bad_rows {
        // Quotes, commas and a non-ASCII character: what a CSV round trip gets wrong first.
        let line = format!("01/01/2023 00:00:00,\"say \"\"hi\"\", {i} \u{e9}\",x{i},Deposit");
        chunk.extend_from_slice(line.as_bytes());
        chunk.push(b'\n');
        sent.push(line);
        if i % 100 == 0 {
            chunk.extend_from_slice(b"02/01/2023 00:00:00,fine,1,Deposit\n");
        }
    }
    let folder = api.create(serde_json::json!({"expected_chunks": 1})).await;
    assert_eq!(api.put(&folder, 0, chunk).await, 200);
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["rows_rejected"], bad_rows, "{status}");
    assert_eq!(status["rejected_rows"].as_array().unwrap().len(), 100);

    let download = |query: &str| {
        let request = api
            .http
            .get(format!("{}/api/upload/{folder}/rejected{query}", api.url))
            .bearer_auth(&api.token);
        async move { request.send().await.unwrap() }
    };
    let json = download("?format=json").await;
    assert_eq!(json.status(), 200);
    let json = json.text().await.unwrap();
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let raws: Vec<&str> = rows.iter().map(|r| r["raw"].as_str().unwrap()).collect();
    assert_eq!(raws, sent, "every rejected row, in line order, as sent");
    assert!(rows
        .iter()
        .all(|r| r["reason"].as_str().unwrap().contains("amount")));

    let csv = download("").await;
    assert_eq!(csv.status(), 200);
    let content_type = csv.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let quoted = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let expected: String = std::iter::once("chunk,line,reason,raw\n".to_owned())
        .chain(rows.iter().map(|r| {
            let (reason, raw) = (r["reason"].as_str().unwrap(), r["raw"].as_str().unwrap());
            format!(
                "{},{},{},{}\n",
                r["chunk"],
                r["line"],
                quoted(reason),
                quoted(raw)
            )
        }))
        .collect();
    assert_eq!(csv.text().await.unwrap(), expected);

    assert_eq!(download("?format=xml").await.status(), 400);
    let nothing_rejected = api.create(serde_json::json!({})).await;
    let empty = api
        .http
        .get(format!(
            "{}/api/upload/{nothing_rejected}/rejected",
            api.url
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(empty.text().await.unwrap(), "chunk,line,reason,raw\n");
    engine.stop().await;
    gateway.stop().await;
}

/// `DELETE /api/upload/{folder}` aborts an upload: its chunks not loaded yet never are, their
/// files go, it takes no more. `?rows=true` undoes an import: every row it loaded is deleted.
#[tokio::test]
async fn an_aborted_upload_loads_nothing_more_and_an_undone_one_keeps_no_row() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let delete = |folder: &str, query: &str| {
        let request = api
            .http
            .delete(format!("{}/api/upload/{folder}{query}", api.url))
            .bearer_auth(&api.token);
        async move { request.send().await.unwrap() }
    };
    // No engine yet: two of three chunks are stored, none loaded.
    let aborted = api.create(serde_json::json!({"expected_chunks": 3})).await;
    for n in 0..2 {
        let rows = original_rows(n as u64 * 100, 100, n == 0);
        assert_eq!(api.put(&aborted, n, rows).await, 200);
    }
    let answer = delete(&aborted, "").await;
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["state"], "aborted", "{answer}");
    assert_eq!(answer["chunks_failed"], 2);
    assert_eq!(answer["rows_deleted"], serde_json::Value::Null);
    assert!(env.files_left().is_empty(), "{:?}", env.files_left());
    assert_eq!(
        api.put(&aborted, 2, original_rows(200, 100, false)).await,
        409
    );
    assert_eq!(delete(&aborted, "").await.status(), 409);

    let engine = start_engine(&env, &[]).await;
    let loaded = api.create(serde_json::json!({"expected_chunks": 5})).await;
    for n in 0..5 {
        let rows = original_rows(n as u64 * 100, 100, n == 0);
        assert_eq!(api.put(&loaded, n, rows).await, 200);
    }
    let status = api.wait_finished(&loaded, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(table_counts(&env.db, &loaded).await, (500, 0));
    assert_eq!(
        delete(&loaded, "").await.status(),
        409,
        "a done upload only undoes"
    );
    assert_eq!(delete(&loaded, "?rows=maybe").await.status(), 400);
    let undone = delete(&loaded, "?rows=true").await;
    assert_eq!(undone.status(), 200);
    let undone: serde_json::Value = undone.json().await.unwrap();
    assert_eq!(undone["state"], "undone", "{undone}");
    assert_eq!(undone["rows_deleted"], 500);
    assert_eq!(table_counts(&env.db, &loaded).await, (0, 0));
    let status = api.status(&loaded).await;
    assert_eq!(status["rows_undone"], 500, "{status}");
    assert_eq!(
        status["rows_loaded"], 500,
        "what was loaded stays on record"
    );
    assert_eq!(delete(&loaded, "?rows=true").await.status(), 409);

    // The aborted upload's stored chunks were failed: the engine skipped them.
    assert_eq!(table_counts(&env.db, &aborted).await, (0, 0));
    engine.stop().await;
    gateway.stop().await;
}

/// An undo that lands while the upload is still loading (whole chunks and pieces on several
/// connections) leaves no row behind: every load committed before it is deleted with it, every
/// load after it rolls back.
#[tokio::test]
async fn undoing_an_import_while_it_loads_leaves_no_row_behind() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &["--piece-bytes=65536"]).await;
    let api = connect(&gateway).await;
    let chunks = 24;
    let folder = api
        .create(serde_json::json!({"expected_chunks": chunks}))
        .await;
    for n in 0..chunks {
        // Every third chunk is big enough to be loaded in pieces.
        let rows = if n % 3 == 0 { 6000 } else { 1500 };
        let body = original_rows(n as u64 * 10_000, rows, n == 0);
        assert_eq!(api.put(&folder, n, body).await, 200);
    }
    let undone = api
        .http
        .delete(format!("{}/api/upload/{folder}?rows=true", api.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(undone.status(), 200);
    let undone: serde_json::Value = undone.json().await.unwrap();
    // The engine settles what it was loading, then finds the rest failed.
    let status = wait_for(
        "every chunk loaded or failed",
        Duration::from_secs(60),
        || {
            let api = &api;
            let folder = &folder;
            async move {
                let status = api.status(folder).await;
                let settled =
                    status["chunks_loaded"].as_i64()? + status["chunks_failed"].as_i64()?;
                (settled == i64::from(chunks)).then_some(status)
            }
        },
    )
    .await;
    // Give a load that lost the race time to (not) commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        table_counts(&env.db, &folder).await,
        (0, 0),
        "{undone} {status}"
    );
    assert_eq!(status["state"], "undone", "{status}");
    println!(
        "undone while loading: {} chunks loaded before, {} failed, {} rows deleted",
        status["chunks_loaded"], status["chunks_failed"], undone["rows_deleted"]
    );
    env.wait_no_files().await;
    engine.stop().await;
    gateway.stop().await;
}

/// Partition streams keep messages for `INGEST_STREAM_MAX_AGE_SECS`; chunks whose messages aged
/// out before any engine read them are still `stored` in the ledger: the engine sees the gap in
/// the stream's offsets, the gateway announces them again, and every row loads exactly once.
#[tokio::test]
async fn chunks_whose_messages_aged_out_unread_are_announced_again_and_loaded() {
    let env = TestEnv::new(1).await;
    // One-second messages in ~2 KB segments: retention removes a segment once a newer one starts.
    let retention = ["--stream-max-age-secs=1", "--stream-segment-bytes=2000"];
    let gateway = start_gateway(&env, &retention).await;
    let api = connect(&gateway).await;
    // No engine yet: these messages wait in the stream, filling a few segments...
    let (early_chunks, late_chunks) = (20, 20);
    let early = upload_ten_row_chunks(&api, early_chunks).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // ...and age out as later messages start new segments.
    let late = upload_ten_row_chunks(&api, late_chunks).await;
    let held = offsets_held(&env).await;
    assert!(
        held[0] > 0,
        "the broker should have removed the oldest messages"
    );
    // Each new segment starts with a producer-tracking entry that takes an offset: a healthy
    // stream has gaps too, which the engine tells from lost messages by the first offset held.
    assert!(
        held.windows(2).any(|w| w[1] > w[0] + 1),
        "no tracking gap to tell apart: {held:?}"
    );

    let engine = start_engine(&env, &retention).await;
    for (folder, chunks) in [(&early, early_chunks), (&late, late_chunks)] {
        let status = api.wait_finished(folder, Duration::from_secs(90)).await;
        assert_eq!(status["state"], "done", "{status}");
        assert_eq!(status["rows_loaded"], chunks * 10, "{status}");
        assert_eq!(table_counts(&env.db, folder).await, (chunks as i64 * 10, 0));
    }
    engine.stop().await;
    gateway.stop().await;
}

/// A new upload of `chunks` chunks of ten rows each, all stored; its folder.
async fn upload_ten_row_chunks(api: &Api, chunks: i32) -> String {
    let folder = api
        .create(serde_json::json!({"expected_chunks": chunks}))
        .await;
    for n in 0..chunks {
        let rows = original_rows(n as u64 * 10, 10, n == 0);
        assert_eq!(api.put(&folder, n, rows).await, 200);
    }
    folder
}

/// The offsets of the messages the partition-0 stream still holds, in order.
async fn offsets_held(env: &TestEnv) -> Vec<u64> {
    use rabbitmq_stream_client::types::OffsetSpecification;
    let options = engine::consumer::client_options(&ingest_testkit::broker());
    let stream = ingest_contract::streams::stream_name(&env.prefix, 0);
    let mut consumer = engine::consumer::PartitionConsumer::subscribe(
        &options,
        &stream,
        OffsetSpecification::First,
    )
    .await
    .expect("subscribe to the partition stream");
    let mut offsets = Vec::new();
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
    {
        offsets.push(delivery.expect("a delivery").offset);
    }
    consumer.close().await;
    offsets
}

/// A chunk that failed keeps its file: retried as it is it fails again (same bytes, same rows
/// rejected, nothing doubled), and once re-PUT with fixed bytes it loads and the upload ends
/// `done` with every row once. Concurrent retries of one chunk queue it once.
#[tokio::test]
async fn a_failed_chunk_is_retried_and_replaced_through_the_api() {
    let env = TestEnv::new(2).await;
    let gateway = start_gateway(&env, &[]).await;
    let mut engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    let retry = |folder: &str, n: &str| {
        let request = api
            .http
            .post(format!("{}/api/upload/{folder}/chunks/{n}/retry", api.url))
            .bearer_auth(&api.token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let folder = api
        .create(serde_json::json!({"expected_chunks": 3, "on_error": "reject-chunk"}))
        .await;
    let mut bad = original_rows(100, 100, false);
    bad.extend_from_slice(b"31/02/2023 10:00:00,Not a day,1.000,Deposit\r\n");
    for (n, rows) in [
        original_rows(0, 100, true),
        bad,
        original_rows(200, 100, false),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(api.put(&folder, n as i32, rows).await, 200);
    }
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(
        (status["state"].as_str(), status["chunks_failed"].as_i64()),
        (Some("failed"), Some(1)),
        "{status}"
    );
    assert_eq!(table_counts(&env.db, &folder).await, (200, 0));
    let kept = env.files_left();
    assert_eq!(kept.len(), 1, "the failed chunk's file is kept: {kept:?}");
    let rejected = || async {
        let client = env.db.client().await.unwrap();
        let id = uuid::Uuid::parse_str(&folder).unwrap();
        client
            .query_one(
                "SELECT count(*) FROM rejected_rows WHERE upload_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(
        status["rows_rejected"], 101,
        "every row of the failed chunk"
    );
    assert_eq!(status["failed_chunks"], serde_json::json!([1]), "{status}");
    assert_eq!(rejected().await, 1, "the bad row is on record");

    // Four clients retry at once: one queues it, the others find it queued already. With no
    // engine meanwhile: one that failed the chunk again between two of the requests would make
    // the later one a retry of its own (202), as it should be (this failed in CI).
    engine.stop().await;
    let answers = futures_util::future::join_all((0..4).map(|_| retry(&folder, "1"))).await;
    let mut answers = answers;
    answers.sort();
    assert_eq!(answers, vec![202, 409, 409, 409]);
    engine = start_engine(&env, &[]).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(status["state"], "failed", "the same bytes fail again");
    assert_eq!(status["rows_rejected"], 101, "{status}");
    assert_eq!(rejected().await, 1, "not doubled");
    assert_eq!(table_counts(&env.db, &folder).await, (200, 0));

    // A failed upload takes new bytes for its failed chunk only.
    assert_eq!(
        api.put(&folder, 0, original_rows(0, 5, true)).await,
        409,
        "chunk 0 loaded"
    );
    // New bytes for the chunk: the upload opens again and ends done.
    assert_eq!(
        api.put(&folder, 1, original_rows(100, 100, false)).await,
        200
    );
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    assert_eq!(
        (status["state"].as_str(), status["chunks_failed"].as_i64()),
        (Some("done"), Some(0)),
        "{status}"
    );
    assert_eq!(status["rows_rejected"], 0, "{status}");
    assert_eq!(rejected().await, 0);
    assert_eq!(table_counts(&env.db, &folder).await, (300, 0));
    env.wait_no_files().await;

    assert_eq!(
        retry(&folder, "1").await,
        409,
        "a done upload retries nothing"
    );
    assert_eq!(retry(&folder, "x").await, 400);
    let other = api.create(serde_json::json!({})).await;
    assert_eq!(api.put(&other, 0, original_rows(0, 10, true)).await, 200);
    assert_eq!(retry(&other, "5").await, 409, "never received");
    engine.stop().await;
    gateway.stop().await;
}
