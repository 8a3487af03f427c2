//! The `dataset_definition` target: a dataset definition and a chunk in one input, separated by
//! the first NUL byte (a definition file cannot hold one). The definition must parse or be
//! refused with an error naming a line, never panic; a definition that parses then reads its
//! own header line back as its declared layout, and validates the chunk with the invariants of
//! every dataset: loaded + rejected = data rows, and a COPY stream whose tuples all have the
//! dataset's field count, with field lengths that fit the stream.

use std::path::Path;

use ingest_rows::definition;
use ingest_rows::pgcopy::SIGNATURE;
use ingest_rows::validate::{load_chunk, ErrorPolicy, Limits};

use crate::LINEAGE;

pub fn dataset_definition(data: &[u8]) {
    let (text, chunk) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let dataset = match definition::parse(Path::new("fuzz.toml"), text) {
        Ok(dataset) => dataset,
        Err(err) => {
            assert!(!err.message.is_empty(), "an error says what is wrong");
            assert!(err.line <= text.lines().count() + 1, "{err}");
            return;
        }
    };
    let declared = dataset.declared_layout();
    if dataset.format.header {
        let header = format!("{}\n", dataset.header_line());
        let encoded = match dataset.format.encoding.decoder() {
            None => header.into_bytes(),
            Some(encoding) => encoding.encode(&header).0.into_owned(),
        };
        assert_eq!(
            dataset.header_of(&encoded, true),
            Ok(Some(declared.clone())),
            "the declared header line reads back as the declared layout"
        );
    }
    let limits = Limits {
        max_line_bytes: 4096,
        max_raw_bytes: 64,
    };
    let mut stream = Vec::new();
    let report = load_chunk(
        chunk,
        &dataset,
        &declared,
        LINEAGE,
        ErrorPolicy::RejectRows,
        &limits,
        &mut |buffer| {
            stream.extend_from_slice(&buffer);
            true
        },
    );
    let Ok(report) = report else {
        return; // Not CSV at all: refused whole, which is allowed.
    };
    assert_eq!(
        report.rows_loaded + report.rows_rejected,
        report.data_rows,
        "loaded + rejected = data rows"
    );
    let tuples = count_tuples(&stream, dataset.copy_field_count());
    assert_eq!(tuples, report.rows_loaded, "one tuple per loaded row");
}

/// Walks a binary COPY stream: signature, header, tuples of `fields` fields, trailer.
fn count_tuples(stream: &[u8], fields: i16) -> u64 {
    if stream.is_empty() {
        return 0;
    }
    assert!(stream.starts_with(SIGNATURE), "signature");
    let mut at = SIGNATURE.len() + 8;
    let mut tuples = 0;
    loop {
        let count = i16::from_be_bytes(stream[at..at + 2].try_into().expect("two bytes"));
        at += 2;
        if count == -1 {
            assert_eq!(at, stream.len(), "nothing after the trailer");
            return tuples;
        }
        assert_eq!(count, fields, "every tuple has the dataset's fields");
        for _ in 0..count {
            let len = i32::from_be_bytes(stream[at..at + 4].try_into().expect("four bytes"));
            at += 4;
            assert!(len >= -1, "a field length");
            at += usize::try_from(len.max(0)).expect("non-negative");
            assert!(at <= stream.len(), "the field fits the stream");
        }
        tuples += 1;
    }
}
