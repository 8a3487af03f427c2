//! The validator on datasets other than `transactions`: definitions parsed from TOML, then
//! chunks with another delimiter and quote, no header, a header in another order with extra
//! and missing columns, Windows-1252 text, and every column type's refusals.

use std::path::Path;

use bytes::Bytes;
use ingest_rows::dataset::{Dataset, Layout};
use ingest_rows::definition;
use ingest_rows::validate::{load_chunk, ChunkReport, ErrorPolicy, Limits, Lineage};

const LINEAGE: Lineage = Lineage {
    upload_id: uuid::Uuid::from_u128(5),
    chunk_no: 0,
};

fn dataset(text: &str) -> Dataset {
    definition::parse(Path::new("test.toml"), text).expect("a valid definition")
}

/// Loads `chunk` with `layout` (the declared one when `None`); the report and the COPY tuples,
/// each as its fields (`None` for NULL).
fn load(
    dataset: &Dataset,
    layout: Option<&Layout>,
    chunk: &[u8],
) -> (ChunkReport, Vec<Vec<Option<Vec<u8>>>>) {
    let declared = dataset.declared_layout();
    let mut stream = Vec::new();
    let report = load_chunk(
        chunk,
        dataset,
        layout.unwrap_or(&declared),
        LINEAGE,
        ErrorPolicy::RejectRows,
        &Limits::default(),
        &mut |buffer: Bytes| {
            stream.extend_from_slice(&buffer);
            true
        },
    )
    .expect("loads");
    (report, tuples(&stream))
}

fn tuples(stream: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
    if stream.is_empty() {
        return Vec::new();
    }
    let mut at = 19;
    let mut rows = Vec::new();
    loop {
        let count = i16::from_be_bytes([stream[at], stream[at + 1]]);
        at += 2;
        if count == -1 {
            return rows;
        }
        let mut fields = Vec::new();
        for _ in 0..count {
            let len = i32::from_be_bytes(stream[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                fields.push(None);
            } else {
                fields.push(Some(stream[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        rows.push(fields);
    }
}

fn reasons(report: &ChunkReport) -> Vec<(i32, &str)> {
    report
        .rejected
        .iter()
        .map(|r| (r.line_no, r.reason.as_str()))
        .collect()
}

#[test]
fn no_header_another_delimiter_and_quote() {
    let dataset = dataset(
        "header = false\ndelimiter = \"|\"\nquote = \"'\"\n\
         [[columns]]\nname = \"code\"\ntype = \"text\"\nrequired = true\n\
         [[columns]]\nname = \"n\"\ntype = \"integer\"\n",
    );
    // The first line is data (no header), a quoted cell holds the delimiter and a doubled quote.
    let (report, rows) = load(&dataset, None, b"code|1\n'a|b''c'|2\nx|y\n");
    assert_eq!((report.rows_loaded, report.rows_rejected), (2, 1));
    assert_eq!(reasons(&report), [(3, r#"n: "y" is not an integer"#)]);
    assert_eq!(rows[0][0].as_deref(), Some(&b"code"[..]));
    assert_eq!(rows[1][0].as_deref(), Some(&b"a|b'c"[..]));
    assert_eq!(rows[1][1].as_deref(), Some(&2i32.to_be_bytes()[..]));
}

#[test]
fn a_header_in_another_order_with_extra_and_missing_columns() {
    let dataset = dataset(
        "extra_columns = \"ignore\"\n\
         [[columns]]\nname = \"id\"\ntype = \"bigint\"\nrequired = true\n\
         [[columns]]\nname = \"flag\"\ntype = \"boolean\"\ndefault = \"yes\"\n\
         [[columns]]\nname = \"note\"\naliases = [\"Remark\"]\ntype = \"text\"\n",
    );
    let chunk = b"REMARK,junk,ID\nhello,zzz,7\n,zzz,8\n";
    let layout = dataset
        .header_of(chunk, true)
        .expect("valid")
        .expect("a header");
    assert_eq!(dataset.header_names(&layout), ["note", "", "id"]);
    assert_eq!(
        dataset.copy_statement(&layout),
        "COPY \"test\" (\"note\", \"id\", \"flag\", \"upload_id\", \"chunk_no\", \"line_no\") \
         FROM STDIN (FORMAT binary)"
    );
    let (report, rows) = load(&dataset, Some(&layout), chunk);
    assert_eq!((report.rows_loaded, report.rows_rejected), (2, 0));
    // note, id, flag (the default, as the column is missing), then the lineage.
    assert_eq!(rows[0][0].as_deref(), Some(&b"hello"[..]));
    assert_eq!(rows[0][1].as_deref(), Some(&7i64.to_be_bytes()[..]));
    assert_eq!(rows[0][2].as_deref(), Some(&[1u8][..]));
    assert_eq!(rows[1][0], None);
}

#[test]
fn windows_1252_is_converted_while_read() {
    let dataset = dataset(
        "encoding = \"latin-1\"\ndelimiter = \";\"\n\
         [[columns]]\nname = \"name\"\naliases = [\"Straße\"]\ntype = \"text\"\nmax_length = 5\n",
    );
    // "Straße" header, then "Müße" (4 characters, 4 bytes in Windows-1252, 6 in UTF-8) and a
    // euro sign (0x80).
    let chunk = b"Stra\xdfe\nM\xfc\xdfe\n\x80 12\n";
    let layout = dataset
        .header_of(chunk, true)
        .expect("valid")
        .expect("a header");
    let (report, rows) = load(&dataset, Some(&layout), chunk);
    assert_eq!(
        (report.rows_loaded, report.rows_rejected),
        (2, 0),
        "{:?}",
        report.rejected
    );
    assert_eq!(rows[0][0].as_deref(), Some("Müße".as_bytes()));
    assert_eq!(rows[1][0].as_deref(), Some("€ 12".as_bytes()));
}

#[test]
fn each_type_refuses_what_it_cannot_hold() {
    let dataset = dataset(
        "formula_injection = \"allow\"\n\
         [[columns]]\nname = \"i\"\ntype = \"integer\"\n\
         [[columns]]\nname = \"b\"\ntype = \"boolean\"\n\
         [[columns]]\nname = \"d\"\ntype = \"date\"\nformats = [\"%d/%m/%Y\"]\n\
         [[columns]]\nname = \"u\"\ntype = \"uuid\"\n\
         [[columns]]\nname = \"j\"\ntype = \"json\"\n\
         [[columns]]\nname = \"n\"\ntype = \"numeric\"\nprecision = 4\nscale = 2\n\
         [[columns]]\nname = \"t\"\ntype = \"text\"\n",
    );
    let chunk = b"i,b,d,u,j,n,t\n\
        1,t,29/02/2024,00000000-0000-0000-0000-000000000001,{},12.34,=sum(A1)\n\
        2147483648,,,,,,\n\
        ,maybe,,,,,\n\
        ,,30/02/2024,,,,\n\
        ,,,nope,,,\n\
        ,,,,[1,,\n\
        ,,,,,123.4,\n";
    let (report, rows) = load(&dataset, None, chunk);
    assert_eq!(
        reasons(&report),
        [
            (3, r#"i: "2147483648" is not an integer"#),
            (
                4,
                r#"b: "maybe" is not one of true, t, yes, y, 1, false, f, no, n, 0"#
            ),
            (5, r#"d: "30/02/2024" is not a valid date"#),
            (6, r#"u: "nope" is not a UUID"#),
            (
                7,
                "j: not JSON: EOF while parsing a list at line 1 column 2"
            ),
            (8, "n: more than 2 digits before the decimal point"),
        ]
    );
    assert_eq!(report.rows_loaded, 1);
    // The date as days since 2000-01-01, the formula loaded as text (allowed here).
    assert_eq!(rows[0][2].as_deref(), Some(&8825i32.to_be_bytes()[..]));
    assert_eq!(rows[0][6].as_deref(), Some(&b"=sum(A1)"[..]));
}
