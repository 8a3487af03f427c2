//! What `load_chunk` accepts, rejects and refuses: a table of malformed chunks with the outcome
//! each must have, plus the properties every outcome keeps (counts add up, nothing is skipped,
//! dates are day first). Pure: no database needed; the COPY stream is decoded here.

use bytes::Bytes;
use engine::dataset::Dataset;
use engine::pgcopy::SIGNATURE;
use engine::validate::{
    load_chunk, ChunkError, ChunkReport, ErrorPolicy, Limits, Lineage, RejectedRow,
};
use ingest_rows::values::days_from_civil;
use uuid::Uuid;

const HEADER: &str = "date,content,amount,type\r\n";
const GOOD: &str = "01/01/2023 00:00:01,Any text there,-614.568,Deposit\r\n";
const FORMULA: &str = "content: starts with a spreadsheet formula character";
const NOT_TS: &str = "is not a timestamp (expected DD/MM/YYYY HH:MM:SS or YYYY-MM-DD HH:MM:SS)";

/// A decoded COPY tuple: each field's bytes, `None` for NULL.
type Tuple = Vec<Option<Vec<u8>>>;

struct Loaded {
    result: Result<ChunkReport, ChunkError>,
    buffers: Vec<Bytes>,
}

fn lineage() -> Lineage {
    Lineage {
        upload_id: Uuid::from_u128(0x1234),
        chunk_no: 7,
    }
}

fn load_with(input: &[u8], policy: ErrorPolicy, limits: &Limits) -> Loaded {
    let mut buffers = Vec::new();
    let mut sink = |buf: Bytes| {
        buffers.push(buf);
        true
    };
    let dataset = Dataset::transactions();
    let layout = dataset.declared_layout();
    let result = load_chunk(
        input,
        &dataset,
        &layout,
        lineage(),
        policy,
        limits,
        &mut sink,
    );
    Loaded { result, buffers }
}

fn load(input: &[u8]) -> Loaded {
    load_with(input, ErrorPolicy::RejectRows, &Limits::default())
}

/// Decodes a whole binary COPY stream, checking its framing.
fn decode(buffers: &[Bytes]) -> Vec<Tuple> {
    let stream: Vec<u8> = buffers.iter().flat_map(|b| b.iter().copied()).collect();
    if stream.is_empty() {
        return Vec::new();
    }
    assert_eq!(&stream[..11], SIGNATURE);
    assert_eq!(&stream[11..19], &[0; 8], "flags and extension length");
    let mut at = 19;
    let mut take = |n: usize| {
        let bytes = stream[at..at + n].to_vec();
        at += n;
        bytes
    };
    let mut tuples = Vec::new();
    loop {
        let fields = i16::from_be_bytes(take(2).try_into().unwrap());
        if fields == -1 {
            break;
        }
        assert_eq!(fields, 7);
        let tuple = (0..fields)
            .map(|_| {
                let len = i32::from_be_bytes(take(4).try_into().unwrap());
                (len >= 0).then(|| take(len as usize))
            })
            .collect();
        tuples.push(tuple);
    }
    assert_eq!(at, stream.len(), "nothing after the trailer");
    tuples
}

fn int4(field: &Option<Vec<u8>>) -> i32 {
    i32::from_be_bytes(field.clone().unwrap().try_into().unwrap())
}

fn line_nos(tuples: &[Tuple]) -> Vec<i32> {
    tuples.iter().map(|t| int4(&t[6])).collect()
}

fn rows(lines: &[&str]) -> String {
    lines.concat()
}

/// An expected outcome: rows loaded and (line, reason) of each rejected row, or NotCsv.
enum Outcome {
    Rows(u64, Vec<(i32, String)>),
    NotCsv(&'static str),
}

/// A row of the original format with the given cells.
fn line(date: &str, content: &str, amount: &str, kind: &str) -> String {
    format!("{date},{content},{amount},{kind}\r\n")
}

/// The table: name, chunk, outcome. Lines are numbered from 1, the header included.
#[rustfmt::skip]
fn cases() -> Vec<(&'static str, String, Outcome)> {
    let d = "01/01/2023 00:00:00";
    let row = |content: &str, amount: &str| format!("{HEADER}{}", line(d, content, amount, "Deposit"));
    let amounts = |list: &[&str]| rows(&[HEADER, &list.iter().map(|a| line(d, "x", a, "Deposit")).collect::<String>()]);
    let dates = |list: &[&str]| rows(&[HEADER, &list.iter().map(|t| line(t, "x", "1", "Deposit")).collect::<String>()]);
    let contents = |list: &[&str]| rows(&[HEADER, &list.iter().map(|c| line(d, c, "1", "Deposit")).collect::<String>()]);
    let not_date = |l: i32, t: &str| (l, format!(r#"date: "{t}" is not a valid date"#));
    let not_ts = |l: i32, t: &str| (l, format!(r#"date: "{t}" {NOT_TS}"#));
    let outcome = |loaded: u64, rejects: Vec<(i32, String)>| Outcome::Rows(loaded, rejects);
    let r = |l: i32, reason: &str| (l, reason.to_owned());
    vec![
        ("too few columns", rows(&[HEADER, "01/01/2023 00:00:01,x,-614.568\r\n", GOOD]), outcome(1, vec![r(2, "expected 4 columns, found 3")])),
        ("too many columns", rows(&[HEADER, "01/01/2023 00:00:01,x,1,Deposit,extra\r\n"]), outcome(0, vec![r(2, "expected 4 columns, found 5")])),
        ("31 February", rows(&[HEADER, GOOD, &line("31/02/2023 00:00:00", "x", "1", "Deposit")]), outcome(1, vec![not_date(3, "31/02/2023 00:00:00")])),
        ("13th month", dates(&["13/13/2023 00:00:00"]), outcome(0, vec![not_date(2, "13/13/2023 00:00:00")])),
        ("month first", dates(&["02/13/2023 00:00:00"]), outcome(0, vec![not_date(2, "02/13/2023 00:00:00")])),
        ("leap days", dates(&["29/02/2023 00:00:00", "29/02/2024 00:00:00", "29/02/2000 00:00:00", "29/02/1900 00:00:00"]),
            outcome(2, vec![not_date(2, "29/02/2023 00:00:00"), not_date(5, "29/02/1900 00:00:00")])),
        ("bad time", dates(&["01/01/2023 24:00:00"]), outcome(0, vec![r(2, r#"date: "01/01/2023 24:00:00" is not a valid time"#)])),
        ("date format", dates(&["2023/01/01 00:00:00", "", "1/1/2023 00:00:00"]),
            outcome(0, vec![not_ts(2, "2023/01/01 00:00:00"), r(3, "date: missing value"), not_ts(4, "1/1/2023 00:00:00")])),
        ("iso dates", dates(&["2023-01-31T23:59:59.123456", "2023-01-31 23:59:59", "2023-01-31 23:59:59Z"]),
            outcome(2, vec![not_ts(4, "2023-01-31 23:59:59Z")])),
        ("amount 1e309, NaN, inf", amounts(&["1e309", "NaN", "inf", "-Infinity", "0x10"]),
            outcome(0, (2..=6).map(|l| r(l, "amount: not a decimal")).collect())),
        ("amount digits", amounts(&[&"9".repeat(40), "999999999999999.999999", "0000000000000001.0000001"]),
            outcome(1, vec![r(2, "amount: more than 15 digits before the decimal point"), r(4, "amount: more than 6 digits after the decimal point")])),
        ("amount empty", amounts(&["", "\"\""]), outcome(0, vec![r(2, "amount: missing value"), r(3, "amount: missing value")])),
        ("amount 1,5", amounts(&["1,5", "\"1,5\""]), outcome(0, vec![r(2, "expected 4 columns, found 5"), r(3, "amount: not a decimal")])),
        ("bad type", rows(&[HEADER, &line(d, "x", "1", "deposit"), &line(d, "x", "1", "")]),
            outcome(0, vec![r(2, r#"type: "deposit" is not one of Deposit, Withdrawal"#), r(3, "type: missing value")])),
        ("formula cells", contents(&["=SUM(A1:A9)", "+1", "@cmd", "-cmd", "\"\tx\"", "\"=1\"", "-5 apples", "- note", "a=b"]),
            outcome(3, (2..=7).map(|l| r(l, FORMULA)).collect())),
        ("formula after a minus", contents(&["-2+3+cmd|' /C calc'!A0", "-1+HYPERLINK(x)", "-5 apples", "-0.5 off"]),
            outcome(2, vec![r(2, FORMULA), r(3, FORMULA)])),
        ("unterminated quote", rows(&[HEADER, GOOD, &line(d, "\"unterminated", "1", "Deposit"), GOOD, GOOD]),
            outcome(1, vec![r(3, "unterminated quoted field (expected 4 columns, found 2)")])),
        ("stray quote", rows(&[HEADER, &line(d, "ab\"c", "1", "Deposit"), GOOD]),
            outcome(0, vec![r(2, "stray quote in an unquoted field (expected 4 columns, found 2)")])),
        ("quote after a quoted cell", row("\"ab\"c", "1"), outcome(0, vec![r(2, "content: text after the closing quote")])),
        ("header only", HEADER.to_owned(), outcome(0, vec![])),
        ("header only, no newline", "date,content,amount,type".to_owned(), outcome(0, vec![])),
        ("empty file", String::new(), outcome(0, vec![])),
        ("only empty lines", "\r\n\n\r\n".to_owned(), outcome(0, vec![])),
        ("header in other case", rows(&["Date, Content ,AMOUNT,Type\r\n", GOOD]), outcome(1, vec![])),
        ("header lacking a required column", rows(&["date,content,amount\r\n", GOOD]),
            outcome(1, vec![r(1, r#"the header lacks the required column "type""#)])),
        ("header naming an unknown column", rows(&["date,content,amount,type,note\r\n", GOOD]),
            outcome(1, vec![r(1, r#"the header names "note", which is not a column of this dataset"#)])),
        ("header in another order than the upload's", rows(&["type,amount,content,date\r\n", GOOD]),
            outcome(1, vec![r(1, "header differs from the upload's first header (date,content,amount,type)")])),
        ("other header", rows(&["date,text,amount,kind\r\n", GOOD]), outcome(1, vec![not_ts(1, "date")])),
        ("header again mid-file", rows(&[GOOD, HEADER, GOOD]), outcome(2, vec![r(2, "header line repeated")])),
        ("mixed line endings", rows(&["date,content,amount,type\n", GOOD, "01/01/2023 00:00:02,x,1,Deposit\n", "01/01/2023 00:00:03,x,1,Deposit"]),
            outcome(3, vec![])),
        ("bare CR ending the chunk", rows(&[HEADER, "01/01/2023 00:00:03,x,1,Deposit\r"]), outcome(1, vec![])),
        ("UTF-8 BOM", format!("\u{feff}{HEADER}{GOOD}"), outcome(1, vec![])),
        ("line over the cap", rows(&[HEADER, GOOD, &line(d, &"a".repeat(70_000), "1", "Deposit")]),
            outcome(1, vec![r(3, "record longer than 65536 bytes")])),
        ("100,000 columns", rows(&[HEADER, &format!("{}\r\n", ",".repeat(99_999)), GOOD]),
            outcome(1, vec![r(2, "record longer than 65536 bytes")])),
        ("1000 and 1001 characters", contents(&[&"é".repeat(1000), &"é".repeat(1001)]),
            outcome(1, vec![r(3, "content: longer than 1000 characters")])),
        ("NUL byte", row("a\0b", "1"), Outcome::NotCsv("NUL byte")),
        ("PDF", "%PDF-1.7\n1 0 obj\n".to_owned(), Outcome::NotCsv("looks like a PDF document")),
    ]
}

/// Inputs that are not UTF-8, so cannot be `String`s.
#[rustfmt::skip]
fn byte_cases() -> Vec<(&'static str, Vec<u8>, Outcome)> {
    let mut one_bad_cell = [HEADER.as_bytes(), b"01/01/2023 00:00:00,caf\xe9,1,Deposit\r\n"].concat();
    one_bad_cell.extend(GOOD.repeat(20).as_bytes());
    let mut mostly_bad: Vec<u8> = (0..4000u32).map(|i| 0x80 | (i % 100) as u8).collect();
    mostly_bad.extend(GOOD.as_bytes());
    vec![
        ("PNG magic", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec(), Outcome::NotCsv("looks like a PNG image")),
        ("ZIP (xlsx)", b"PK\x03\x04\x14\x00\x06\x00".to_vec(), Outcome::NotCsv("looks like a ZIP archive")),
        ("ELF", b"\x7fELF\x02\x01\x01".to_vec(), Outcome::NotCsv("looks like an ELF executable")),
        ("UTF-16 LE BOM", b"\xff\xfed\x00a\x00t\x00e\x00".to_vec(), Outcome::NotCsv("UTF-16")),
        ("UTF-16 BE BOM", b"\xfe\xff\x00d\x00a".to_vec(), Outcome::NotCsv("UTF-16")),
        ("invalid UTF-8 in one cell", one_bad_cell, Outcome::Rows(20, vec![(2, "content: not valid UTF-8".to_owned())])),
        ("mostly not UTF-8", mostly_bad, Outcome::NotCsv("not UTF-8 text")),
    ]
}

#[test]
fn malformed_inputs_have_their_stated_outcome() {
    let all = cases()
        .into_iter()
        .map(|(name, text, outcome)| (name, text.into_bytes(), outcome))
        .chain(byte_cases());
    let mut checked = 0;
    for (name, input, outcome) in all {
        let loaded = load(&input);
        match (outcome, loaded.result) {
            (Outcome::Rows(rows, rejects), Ok(report)) => {
                let got: Vec<(i32, String)> = report
                    .rejected
                    .iter()
                    .map(|r| (r.line_no, r.reason.clone()))
                    .collect();
                assert_eq!(got, rejects, "{name}: rejected rows");
                assert_eq!(report.rows_loaded, rows, "{name}: rows loaded");
                assert_eq!(
                    report.rows_loaded + report.rejected.len() as u64,
                    report.data_rows,
                    "{name}: loaded + rejected = data rows"
                );
                let tuples = decode(&loaded.buffers);
                assert_eq!(tuples.len() as u64, rows, "{name}: tuples sent");
                assert_eq!(report.bytes, input.len() as u64);
            }
            (Outcome::NotCsv(why), Err(ChunkError::NotCsv(reason))) => {
                assert!(
                    reason.contains(why),
                    "{name}: {reason:?} should say {why:?}"
                );
                assert!(loaded.buffers.is_empty(), "{name}: nothing sent");
            }
            (_, other) => panic!("{name}: unexpected outcome {other:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn no_data_row_is_skipped_and_lines_are_physical() {
    let input = rows(&[
        HEADER,
        GOOD,
        "\r\n",
        GOOD,
        "01/01/2023 00:00:03,\"two\r\nlines\",1,Deposit\r\n",
        "\n",
        GOOD,
    ]);
    let loaded = load(input.as_bytes());
    let report = loaded.result.expect("loads");
    assert_eq!((report.data_rows, report.rows_loaded), (4, 4));
    let tuples = decode(&loaded.buffers);
    assert_eq!(line_nos(&tuples), [2, 4, 5, 8]);
    assert_eq!(tuples[2][1].as_deref(), Some(&b"two\r\nlines"[..]));
    // Without a header the first line is a data row too.
    let loaded = load(rows(&[GOOD, GOOD]).as_bytes());
    assert_eq!(line_nos(&decode(&loaded.buffers)), [1, 2]);
}

#[test]
fn dates_are_read_day_first() {
    let input = rows(&[
        HEADER,
        "01/02/2023 00:00:00,x,1,Deposit\r\n",
        "2023-03-01 00:00:00,x,1,Deposit\r\n",
    ]);
    let loaded = load(input.as_bytes());
    let report = loaded.result.expect("loads");
    assert_eq!(
        report.partitions.into_iter().collect::<Vec<_>>(),
        [(2023, 2, 1), (2023, 3, 1)]
    );
    let tuples = decode(&loaded.buffers);
    let micros = i64::from_be_bytes(tuples[0][0].clone().unwrap().try_into().unwrap());
    let february_first =
        (days_from_civil(2023, 2, 1) - days_from_civil(2000, 1, 1)) * 86_400_000_000;
    assert_eq!(micros, february_first);
}

#[test]
fn empty_cells_are_null_and_quoted_empty_cells_are_empty_strings() {
    let input = rows(&[
        "01/01/2023 00:00:00,,1,Deposit\r\n",
        "01/01/2023 00:00:00,\"\",1,Deposit\r\n",
        "01/01/2023 00:00:00,\"say \"\"hi\"\", ok\",1,Deposit\r\n",
    ]);
    let tuples = decode(&load(input.as_bytes()).buffers);
    assert_eq!(tuples[0][1], None);
    assert_eq!(tuples[1][1], Some(Vec::new()));
    assert_eq!(tuples[2][1].as_deref(), Some(&b"say \"hi\", ok"[..]));
    assert_eq!(
        tuples[0][4].as_deref(),
        Some(&Uuid::from_u128(0x1234).as_bytes()[..])
    );
    assert_eq!(int4(&tuples[0][5]), 7);
}

#[test]
fn reject_chunk_stops_at_the_first_bad_row() {
    let input = rows(&[
        HEADER,
        GOOD,
        "01/01/2023 00:00:00,x,NaN,Deposit\r\n",
        "bad\r\n",
    ]);
    let loaded = load_with(
        input.as_bytes(),
        ErrorPolicy::RejectChunk,
        &Limits::default(),
    );
    match loaded.result {
        Err(ChunkError::RejectedChunk(RejectedRow {
            line_no,
            reason,
            raw,
        })) => {
            assert_eq!((line_no, reason.as_str()), (3, "amount: not a decimal"));
            assert_eq!(raw, "01/01/2023 00:00:00,x,NaN,Deposit");
        }
        other => panic!("expected RejectedChunk, got {other:?}"),
    }
    let clean = load_with(
        rows(&[HEADER, GOOD]).as_bytes(),
        ErrorPolicy::RejectChunk,
        &Limits::default(),
    );
    assert_eq!(clean.result.expect("clean chunk loads").rows_loaded, 1);
    assert_eq!(
        ErrorPolicy::parse("reject-chunk"),
        Some(ErrorPolicy::RejectChunk)
    );
    assert_eq!(
        ErrorPolicy::parse("reject-rows"),
        Some(ErrorPolicy::RejectRows)
    );
    assert_eq!(ErrorPolicy::parse("ignore"), None);
}

#[test]
fn raw_text_of_rejected_rows_is_capped() {
    let limits = Limits {
        max_line_bytes: 1 << 20,
        max_raw_bytes: 1024,
    };
    let input = format!("01/01/2023 00:00:00,{},x,Deposit\r\n", "é".repeat(5000));
    let report = load_with(input.as_bytes(), ErrorPolicy::RejectRows, &limits)
        .result
        .expect("loads");
    let raw = &report.rejected[0].raw;
    assert!(raw.len() <= 1024 && raw.len() > 1000, "{}", raw.len());
    assert!(raw.starts_with("01/01/2023 00:00:00,éé"));
}

#[test]
fn a_row_of_100000_columns_is_one_rejected_row() {
    let limits = Limits {
        max_line_bytes: 1 << 20,
        max_raw_bytes: 1024,
    };
    let input = format!("{HEADER}{}\r\n{GOOD}", ",".repeat(99_999));
    let report = load_with(input.as_bytes(), ErrorPolicy::RejectRows, &limits)
        .result
        .expect("loads");
    assert_eq!((report.data_rows, report.rows_loaded), (2, 1));
    assert_eq!(
        report.rejected[0].reason,
        "expected 4 columns, found 100000"
    );
    assert_eq!(report.rejected[0].raw.len(), 1024);
}

#[test]
fn big_chunks_go_out_in_buffers_of_about_a_mebibyte() {
    let input = format!("{HEADER}{}", GOOD.repeat(50_000));
    let loaded = load(input.as_bytes());
    assert_eq!(loaded.result.expect("loads").rows_loaded, 50_000);
    assert!(loaded.buffers.len() >= 3);
    for buffer in &loaded.buffers[..loaded.buffers.len() - 1] {
        assert!((1 << 20..(1 << 20) + (128 << 10)).contains(&buffer.len()));
    }
    let tuples = decode(&loaded.buffers);
    assert_eq!(line_nos(&tuples), (2..50_002).collect::<Vec<_>>());
}

#[test]
fn a_closed_sink_stops_the_load() {
    let input = format!("{HEADER}{}", GOOD.repeat(10));
    let dataset = Dataset::transactions();
    let result = load_chunk(
        input.as_bytes(),
        &dataset,
        &dataset.declared_layout(),
        lineage(),
        ErrorPolicy::RejectRows,
        &Limits::default(),
        &mut |_| false,
    );
    assert!(matches!(result, Err(ChunkError::SinkClosed)), "{result:?}");
}
