//! The hostile-input catalogue, row level: chunks the gateway accepts (they are CSV text) whose
//! rows the engine must load, reject or refuse. Each case goes through the real gateway, stream,
//! engine and PostgreSQL, and proves three things: the rows rejected are in `rejected_rows` with
//! their line and reason; `transactions` holds exactly the loaded lines, nothing else (no
//! formula cell, no merged or shifted row); and loaded + rejected = the data rows sent.
//!
//! | case | expected |
//! | --- | --- |
//! | formula cells `=`, `+`, `@`, `-`+letter, `-` with `|` or `(`, tab, CR (quoted too) | rejected: `content: starts with a spreadsheet formula character` |
//! | formula cells under `reject-chunk` | chunk failed, nothing loaded, every row counted rejected |
//! | `31/02/2023` | rejected: `date: "31/02/2023 00:00:00" is not a valid date` |
//! | amount `1e309` | rejected: `amount: not a decimal` |
//! | amount `NaN` (and `Infinity`, `inf`) | rejected: `amount: not a decimal` |
//! | amount of 40 digits (before or after the point) | rejected: `more than 15 digits ...` / `more than 6 digits ...` |
//! | wrong header (`Date,Content,...`) | line 1 rejected: `header does not match ...`, rows load |
//! | header only | done, 0 rows |
//! | empty file | done, 0 rows |
//! | mixed line endings (CRLF, LF, no final newline) | all rows load, physical line numbers |
//! | unterminated quote | one rejected record: `unterminated quoted field ...`, rows before it load |
//! | 100,000 columns | rejected: `record longer than 65536 bytes`, raw text capped |
//! | a 10 MiB line | rejected: `record longer than 65536 bytes`, neighbours load |
//! | UTF-8 BOM | header skipped, rows load |
//! | Latin-1 cell after the gateway's 4 KiB sniff | rejected: `content: not valid UTF-8` |
//! | PDF text with no NUL (passes the gateway) | chunk failed: `not a CSV chunk: looks like a PDF document` |
//! | SQL and COPY control text (`'); DROP TABLE`, `\.`, `\N`) | loaded verbatim: binary COPY has no escapes |
//! | header repeated mid-file | rejected: `header line repeated` |
//! | text of 1001 characters | rejected: `content: longer than 1000 characters` |
//!
//! Requests the gateway refuses (binaries, UTF-16, NUL bytes, ...) are in
//! `gateway/tests/hostile.rs`.

use std::time::Duration;

use crate::support::*;

const HEADER: &str = "date,content,amount,type\r\n";
const FORMULA: &str = "content: starts with a spreadsheet formula character";
const TOO_LONG: &str = "record longer than 65536 bytes";

/// A row of the original format with the given cells; its second is its line number, so the
/// loaded rows can be told apart.
fn row(line: u32, content: &str, amount: &str) -> String {
    format!(
        "01/02/2023 00:00:{:02},{content},{amount},Deposit\r\n",
        line % 60
    )
}

/// What became of one chunk.
struct Ingested {
    status: serde_json::Value,
    /// (line, reason) of every rejected row, from `rejected_rows`.
    rejected: Vec<(i32, String)>,
    /// raw_line of every rejected row.
    raw: Vec<String>,
    /// (line, content) of every loaded row, from `transactions`.
    loaded: Vec<(i32, Option<String>)>,
}

impl Ingested {
    fn reasons(&self) -> Vec<(i32, &str)> {
        self.rejected
            .iter()
            .map(|(l, r)| (*l, r.as_str()))
            .collect()
    }

    fn loaded_lines(&self) -> Vec<i32> {
        self.loaded.iter().map(|(l, _)| *l).collect()
    }

    /// The upload finished as `state`, its counters agree with both tables, and the chunk
    /// accounts for all `data_rows` it held.
    fn assert_accounted(&self, state: &str, data_rows: i64) {
        let s = &self.status;
        assert_eq!(s["state"], state, "{s}");
        assert_eq!(s["rows_loaded"], self.loaded.len() as i64, "{s}");
        assert_eq!(s["rows_rejected"], self.rejected.len() as i64, "{s}");
        assert_eq!(
            self.loaded.len() + self.rejected.len(),
            data_rows as usize,
            "loaded + rejected = data rows"
        );
        // No loaded cell would run as a formula in a spreadsheet.
        for (line, content) in &self.loaded {
            let content = content.as_deref().unwrap_or_default();
            let first = content.chars().next();
            let second = content.chars().nth(1);
            let formula = matches!(first, Some('=' | '+' | '@' | '\t' | '\r'))
                || (first == Some('-') && second.is_some_and(char::is_alphabetic));
            assert!(!formula, "line {line} loaded a formula: {content:?}");
        }
    }
}

/// Sends `chunk` as chunk 0 of a new upload through a real gateway to a real engine, waits for
/// the upload to finish, and reads what the tables hold for it.
/// Sends `chunk` to a gateway that refuses it: the status and the error message; nothing is
/// stored.
async fn ingest_refused(chunk: Vec<u8>) -> (u16, String) {
    let env = TestEnv::new(1).await;
    let gateway = start_gateway(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({})).await;
    let response = api
        .http
        .put(format!("{}/api/upload/{folder}/chunks/0", api.url))
        .bearer_auth(&api.token)
        .header("content-type", "text/csv")
        .body(chunk)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert!(env.files_left().is_empty(), "{:?}", env.files_left());
    gateway.stop().await;
    (status, text)
}

async fn ingest(chunk: Vec<u8>, on_error: &str) -> Ingested {
    let env = TestEnv::new(1).await;
    let gateway = start_gateway(&env, &[]).await;
    let engine = start_engine(&env, &[]).await;
    let api = connect(&gateway).await;
    let folder = api.create(serde_json::json!({"on_error": on_error})).await;
    assert_eq!(
        api.put(&folder, 0, chunk).await,
        200,
        "the gateway accepts it"
    );
    api.complete(&folder, 1).await;
    let status = api.wait_finished(&folder, Duration::from_secs(60)).await;
    // The chunk file goes once it is loaded; a failed chunk's is kept for a retry.
    if status["state"] == "failed" {
        assert_eq!(env.files_left().len(), 1, "{:?}", env.files_left());
    } else {
        env.wait_no_files().await;
    }

    let client = env.db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(&folder).unwrap();
    let rejected_rows = client
        .query(
            "SELECT line_no, reason, raw_line FROM rejected_rows WHERE upload_id = $1
             ORDER BY line_no",
            &[&id],
        )
        .await
        .unwrap();
    let loaded = client
        .query(
            "SELECT line_no, content FROM transactions WHERE upload_id = $1 ORDER BY line_no",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let (_, duplicates) = table_counts(&env.db, &folder).await;
    assert_eq!(duplicates, 0, "no (chunk, line) loaded twice");
    engine.stop().await;
    gateway.stop().await;
    Ingested {
        status,
        rejected: rejected_rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        raw: rejected_rows.iter().map(|r| r.get(2)).collect(),
        loaded,
    }
}

#[tokio::test]
async fn formula_injection_cells_are_rejected_per_row() {
    let cells = [
        "=SUM(A1:A9)",
        "+1+1",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "-cmd|' /C calc'!A0",
        "\"\t=1+1\"",
        "\"\r=1+1\"",
        "\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
        // Not formulas: plain text and text starting with a minus and no letter.
        "- note",
        "-5 apples",
        "a=b",
    ];
    let mut chunk = HEADER.to_owned();
    for (i, cell) in cells.iter().enumerate() {
        chunk.push_str(&row(i as u32 + 2, cell, "-614.568"));
    }
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", cells.len() as i64);
    let expected: Vec<(i32, &str)> = (2..=8).map(|l| (l, FORMULA)).collect();
    assert_eq!(done.reasons(), expected);
    let contents: Vec<&str> = done
        .loaded
        .iter()
        .filter_map(|(_, c)| c.as_deref())
        .collect();
    assert_eq!(contents, vec!["- note", "-5 apples", "a=b"]);
    assert_eq!(done.loaded_lines(), vec![9, 10, 11]);
}

#[tokio::test]
async fn formula_cells_fail_the_whole_chunk_under_reject_chunk() {
    let chunk = [
        HEADER,
        &row(2, "fine", "1"),
        &row(3, "=1+1", "1"),
        &row(4, "ok", "2"),
    ]
    .concat();
    let done = ingest(chunk.into_bytes(), "reject-chunk").await;
    assert_eq!(done.status["state"], "failed");
    assert_eq!(done.status["chunks_failed"], 1);
    let error = done.status["error"].as_str().unwrap();
    assert!(error.contains(&format!("line 3: {FORMULA}")), "{error}");
    assert!(done.loaded.is_empty(), "nothing of a rejected chunk loads");
    // Every data row is accounted for as rejected; the bad one is listed with its reason.
    assert_eq!(done.status["rows_rejected"], 3);
    assert_eq!(done.reasons(), vec![(3, FORMULA)]);
}

#[tokio::test]
async fn the_31st_of_february_is_rejected() {
    let chunk = [
        HEADER,
        "31/02/2023 10:00:00,bad date,1.5,Deposit\r\n",
        "30/02/2024 10:00:00,bad date,1.5,Deposit\r\n",
        "29/02/2024 10:00:00,leap day,1.5,Deposit\r\n",
    ]
    .concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 3);
    assert_eq!(
        done.reasons(),
        vec![
            (2, r#"date: "31/02/2023 10:00:00" is not a valid date"#),
            (3, r#"date: "30/02/2024 10:00:00" is not a valid date"#),
        ]
    );
    assert_eq!(done.loaded_lines(), vec![4]);
}

/// A chunk of one good row, then one row per amount: all of them are rejected with `reason`.
async fn amounts_are_rejected(amounts: &[&str], reason: &str) {
    let mut chunk = [HEADER, &row(2, "good", "1.5")].concat();
    for (i, amount) in amounts.iter().enumerate() {
        chunk.push_str(&row(i as u32 + 3, "x", amount));
    }
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", amounts.len() as i64 + 1);
    let expected: Vec<(i32, &str)> = (3..).zip(amounts.iter().map(|_| reason)).collect();
    assert_eq!(done.reasons(), expected);
    assert_eq!(done.loaded_lines(), vec![2]);
}

#[tokio::test]
async fn an_amount_of_1e309_is_rejected() {
    amounts_are_rejected(
        &["1e309", "1E309", "-1e-309", "1e3"],
        "amount: not a decimal",
    )
    .await;
}

#[tokio::test]
async fn an_amount_of_nan_or_infinity_is_rejected() {
    let amounts = ["NaN", "nan", "-NaN", "Infinity", "-inf", "+Inf"];
    amounts_are_rejected(&amounts, "amount: not a decimal").await;
}

#[tokio::test]
async fn an_amount_of_40_digits_is_rejected() {
    let integer = "9".repeat(40);
    amounts_are_rejected(
        &[&integer, &format!("-{integer}.5")],
        "amount: more than 15 digits before the decimal point",
    )
    .await;
    let fraction = format!("0.{}", "1".repeat(40));
    amounts_are_rejected(
        &[&fraction],
        "amount: more than 6 digits after the decimal point",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_header_is_a_rejected_line_not_a_skipped_one() {
    // Header names are matched ignoring case: this is the header.
    let chunk = [
        "Date,Content,Amount,Type\r\n",
        &row(2, "a", "1"),
        &row(3, "b", "2"),
    ]
    .concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 2);
    assert_eq!(done.loaded_lines(), vec![2, 3]);
    // A header that lacks a required column is refused with the chunk, before anything is
    // stored.
    let lacking = ["date,content,amount\r\n", &row(2, "a", "1")].concat();
    let refused = ingest_refused(lacking.into_bytes()).await;
    assert_eq!(refused.0, 422);
    assert!(
        refused
            .1
            .contains(r#"the header lacks the required column \"type\""#),
        "{}",
        refused.1
    );
    // Another separator: one cell, rejected too, never guessed at.
    let semicolons = ["date;content;amount;type\r\n", &row(2, "a", "1")].concat();
    let done = ingest(semicolons.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 2);
    assert_eq!(done.reasons(), vec![(1, "expected 4 columns, found 1")]);
}

#[tokio::test]
async fn a_header_only_chunk_loads_nothing_and_finishes() {
    let done = ingest(HEADER.as_bytes().to_vec(), "reject-rows").await;
    done.assert_accounted("done", 0);
    assert_eq!(done.status["chunks_loaded"], 1);
}

#[tokio::test]
async fn an_empty_chunk_loads_nothing_and_finishes() {
    let done = ingest(Vec::new(), "reject-rows").await;
    done.assert_accounted("done", 0);
    assert_eq!(done.status["chunks_loaded"], 1);
}

#[tokio::test]
async fn mixed_line_endings_load_every_row_on_its_physical_line() {
    let chunk = [
        "date,content,amount,type\n",
        &row(2, "crlf", "1"),
        "01/02/2023 00:00:03,lf,2,Deposit\n",
        "\r\n\n",
        "01/02/2023 00:00:06,last without newline,3,Withdrawal",
    ]
    .concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 3);
    assert_eq!(done.loaded_lines(), vec![2, 3, 6]);
}

#[tokio::test]
async fn an_unterminated_quote_is_one_rejected_record() {
    let chunk = [
        HEADER,
        &row(2, "before", "1"),
        &row(3, "\"unterminated", "1"),
        &row(4, "swallowed", "1"),
        &row(5, "swallowed too", "1"),
    ]
    .concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    // The open quote runs to the end of the chunk: one record, rejected, never half loaded.
    done.assert_accounted("done", 2);
    assert_eq!(done.loaded_lines(), vec![2]);
    assert_eq!(done.rejected.len(), 1);
    let (line, reason) = &done.rejected[0];
    assert_eq!(*line, 3);
    assert!(reason.starts_with("unterminated quoted field"), "{reason}");
}

#[tokio::test]
async fn a_row_of_100000_columns_is_rejected() {
    let wide = format!("{}\r\n", ",".repeat(99_999));
    let chunk = [HEADER, &row(2, "before", "1"), &wide, &row(4, "after", "1")].concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 3);
    assert_eq!(done.reasons(), vec![(3, TOO_LONG)]);
    assert_eq!(done.loaded_lines(), vec![2, 4]);
    assert!(done.raw[0].len() <= 1024, "the raw text kept is capped");
}

#[tokio::test]
async fn a_10_mib_line_is_rejected_and_its_neighbours_load() {
    let huge = row(3, &"a".repeat(10 << 20), "1");
    let chunk = [HEADER, &row(2, "before", "1"), &huge, &row(4, "after", "1")].concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 3);
    assert_eq!(done.reasons(), vec![(3, TOO_LONG)]);
    assert_eq!(done.loaded_lines(), vec![2, 4]);
    assert!(done.raw[0].len() <= 1024);
}

#[tokio::test]
async fn a_utf8_bom_is_skipped_with_the_header() {
    let chunk = ["\u{feff}", HEADER, &row(2, "a", "1"), &row(3, "b", "2")].concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 2);
    assert_eq!(done.loaded_lines(), vec![2, 3]);
    assert_eq!(done.loaded[0].1.as_deref(), Some("a"));
}

#[tokio::test]
async fn latin1_after_the_gateways_sniff_is_a_rejected_row() {
    // The gateway checks the first 4 KiB are UTF-8: put the Latin-1 cell after them.
    let mut chunk = HEADER.as_bytes().to_vec();
    for line in 2..=101 {
        chunk.extend_from_slice(row(line, "plain text", "1").as_bytes());
    }
    chunk.extend_from_slice(b"01/02/2023 00:00:42,caf\xe9 cr\xe8me,1,Deposit\r\n");
    let done = ingest(chunk, "reject-rows").await;
    done.assert_accounted("done", 101);
    assert_eq!(done.reasons(), vec![(102, "content: not valid UTF-8")]);
    assert!(done.raw[0].starts_with("01/02/2023 00:00:42,caf\u{fffd}"));
}

#[tokio::test]
async fn text_shaped_binaries_fail_the_chunk_and_load_nothing() {
    let done = ingest(
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\n".to_vec(),
        "reject-rows",
    )
    .await;
    assert_eq!(done.status["state"], "failed");
    let error = done.status["error"].as_str().unwrap();
    assert!(
        error.contains("not a CSV chunk: looks like a PDF document"),
        "{error}"
    );
    assert!(done.loaded.is_empty() && done.rejected.is_empty());
}

#[tokio::test]
async fn sql_and_copy_control_text_is_loaded_verbatim() {
    let cells = [
        "'); DROP TABLE transactions; --",
        "\\.",
        "\\N",
        "\"a,\"\"b\"\"\nc\"",
        "Robert'); DELETE FROM uploads;--",
    ];
    let mut chunk = HEADER.to_owned();
    for (i, cell) in cells.iter().enumerate() {
        chunk.push_str(&row(i as u32 + 2, cell, "1"));
    }
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", cells.len() as i64);
    let contents: Vec<&str> = done
        .loaded
        .iter()
        .filter_map(|(_, c)| c.as_deref())
        .collect();
    assert_eq!(
        contents,
        vec![
            "'); DROP TABLE transactions; --",
            "\\.",
            "\\N",
            "a,\"b\"\nc",
            "Robert'); DELETE FROM uploads;--",
        ]
    );
}

#[tokio::test]
async fn a_header_repeated_mid_file_is_rejected() {
    let chunk = [HEADER, &row(2, "a", "1"), HEADER, &row(4, "b", "1")].concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 3);
    assert_eq!(done.reasons(), vec![(3, "header line repeated")]);
    assert_eq!(done.loaded_lines(), vec![2, 4]);
}

#[tokio::test]
async fn text_over_1000_characters_is_rejected() {
    let chunk = [
        HEADER,
        &row(2, &"é".repeat(1000), "1"),
        &row(3, &"é".repeat(1001), "1"),
    ]
    .concat();
    let done = ingest(chunk.into_bytes(), "reject-rows").await;
    done.assert_accounted("done", 2);
    assert_eq!(
        done.reasons(),
        vec![(3, "content: longer than 1000 characters")]
    );
    assert_eq!(done.loaded_lines(), vec![2]);
}
