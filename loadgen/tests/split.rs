//! The splitter cuts only at record boundaries, keeps every byte, and keeps headers in place.

use std::io::{self, Read};

use loadgen::generate::{generate, HEADER};
use loadgen::split::{plan_files, split_file, split_reader, ChunkRange};
use proptest::prelude::*;

/// Hands out at most `step` bytes per read, so records and quoted fields straddle reads.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// One CSV field: plain text, or quoted text with commas, newlines and `""` escapes.
fn field() -> impl Strategy<Value = String> {
    let plain = "[a-z0-9 .:/-]{0,8}";
    let piece = prop_oneof![
        Just(",".to_owned()),
        Just("\r\n".to_owned()),
        Just("\n".to_owned()),
        Just("\"\"".to_owned()),
        "[a-z ]{1,4}",
    ];
    let quoted = prop::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()));
    prop_oneof![plain.prop_map(|s| s.to_owned()), quoted]
}

/// A record with its terminator (the last may have none).
fn record() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(field(), 1..5),
        prop_oneof![Just("\r\n"), Just("\n")],
    )
        .prop_map(|(fields, end)| format!("{}{end}", fields.join(",")))
}

/// A file: header, records, maybe a last record without newline; and where records end.
fn csv_file() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (
        prop::collection::vec(record(), 0..40),
        prop::option::of(prop::collection::vec(field(), 1..3)),
    )
        .prop_map(|(records, last)| {
            let mut data = b"date,content,amount,type\r\n".to_vec();
            let mut ends = vec![data.len()];
            for r in records {
                data.extend_from_slice(r.as_bytes());
                ends.push(data.len());
            }
            // An empty last "record" is no record at all.
            if let Some(last) = last.map(|f| f.join(",")).filter(|l| !l.is_empty()) {
                data.extend_from_slice(last.as_bytes());
                ends.push(data.len());
            }
            (data, ends)
        })
}

fn check_chunks(data: &[u8], ends: &[usize], chunks: &[ChunkRange], chunk_size: u64) {
    let mut joined = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.offset as usize, joined.len(), "chunks are contiguous");
        assert!(c.len > 0, "no empty chunks");
        let end = (c.offset + c.len) as usize;
        assert!(
            ends.contains(&end),
            "chunk {i} ends at {end}, inside a record"
        );
        if i + 1 < chunks.len() {
            assert!(c.len >= chunk_size, "only the last chunk may be small");
        }
        joined.extend_from_slice(&data[c.offset as usize..end]);
    }
    assert_eq!(joined, data, "the chunks give the file back");
    if let Some(first) = chunks.first() {
        assert!(data[..first.len as usize].starts_with(HEADER));
        // The header never travels alone while there is a data row to go with it.
        if ends.len() > 1 {
            assert!(first.offset + first.len >= ends[1] as u64);
        }
    }
    let rows: u64 = chunks.iter().map(|c| c.rows).sum();
    assert_eq!(
        rows as usize,
        ends.len().saturating_sub(1),
        "rows are counted"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunks_rebuild_the_file_and_end_on_record_boundaries(
        (data, ends) in csv_file(),
        chunk_size in 1u64..300,
        step in 1usize..64,
    ) {
        let chunks = split_reader(Trickle { data: &data, step }, chunk_size)
            .expect("reading memory should not fail");
        check_chunks(&data, &ends, &chunks, chunk_size);
    }
}

#[test]
fn generated_files_split_into_chunks_without_repeated_headers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = generate(dir.path(), 30_000, 1 << 20, 5).expect("generate");
    assert_eq!(files.len(), 2);
    let chunk_size = 100_000;
    let plan = plan_files(&files, chunk_size).expect("split");
    let mut next_file_starts = true;
    let mut rows = 0;
    for (i, chunk) in plan.iter().enumerate() {
        assert_eq!(chunk.index, i as u64, "chunks are numbered across files");
        let data = std::fs::read(chunk.path.as_path()).expect("read");
        let bytes = &data[chunk.range.offset as usize..][..chunk.range.len as usize];
        assert!(bytes.ends_with(b"\r\n"), "chunk {i} ends a record");
        assert_eq!(
            bytes.starts_with(HEADER),
            chunk.range.offset == 0,
            "chunk {i}"
        );
        assert_eq!(chunk.range.offset == 0, next_file_starts, "chunk {i}");
        next_file_starts = chunk.range.offset + chunk.range.len == data.len() as u64;
        let lines = bytes.split_inclusive(|&b| b == b'\n').count() as u64;
        assert_eq!(chunk.range.rows, lines - u64::from(chunk.range.offset == 0));
        rows += chunk.range.rows;
    }
    assert_eq!(rows, 30_000);
    let single = split_file(&files[1], chunk_size).expect("split");
    let second: Vec<ChunkRange> = plan
        .iter()
        .filter(|c| c.path.as_path() == files[1])
        .map(|c| c.range)
        .collect();
    assert_eq!(single, second, "the split is deterministic");
}

#[test]
fn a_missing_file_names_its_path() {
    let err = split_file("/nonexistent/x.csv".as_ref(), 10).expect_err("no such file");
    assert!(err.to_string().contains("/nonexistent/x.csv"), "{err}");
}
