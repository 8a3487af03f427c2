//! Streaming must not change a chunk's outcome: the same chunk read whole or in odd little
//! pieces gives the same report and the same COPY bytes, including past the window's release
//! point, with multibyte characters and line endings split across reads. Nor must cutting it
//! into pieces that load apart ([`ingest_rows::pieces`]): together they load the same rows, with
//! the same line numbers, and reject the same ones.

use std::io::{self, Read};

use bytes::Bytes;
use ingest_rows::dataset::Dataset;
use ingest_rows::pgcopy::SIGNATURE;
use ingest_rows::pieces;
use ingest_rows::validate::{
    load_chunk, load_piece_into, ChunkReport, ErrorPolicy, Limits, Lineage, PieceStart, Target,
};
use proptest::prelude::*;

/// Hands out the input a few bytes at a time, in the sizes given (cycled).
struct Trickle<'a> {
    input: &'a [u8],
    sizes: Vec<usize>,
    turn: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()]
            .min(buf.len())
            .min(self.input.len());
        self.turn += 1;
        buf[..size].copy_from_slice(&self.input[..size]);
        self.input = &self.input[size..];
        Ok(size)
    }
}

const LINEAGE: Lineage = Lineage {
    upload_id: uuid::Uuid::from_u128(9),
    chunk_no: 1,
};

fn run(input: impl Read) -> (Result<ChunkReport, String>, Vec<u8>) {
    let mut sent = Vec::new();
    let result = load_chunk(
        input,
        &Dataset::transactions(),
        &Dataset::transactions().declared_layout(),
        LINEAGE,
        ErrorPolicy::RejectRows,
        &Limits::default(),
        &mut |buffer: Bytes| {
            sent.extend_from_slice(&buffer);
            true
        },
    );
    (result.map_err(|err| err.to_string()), sent)
}

/// One line of a chunk: good rows, bad ones, and the odd shapes around them.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0u32..28, 0u32..86_400, -999_999i64..999_999).prop_map(|(day, secs, cents)| {
            format!(
                "{:02}/03/2023 {:02}:{:02}:{:02},caf\u{e9} \u{1f600},{}.{:02},Deposit\r\n",
                day + 1, secs / 3600, secs / 60 % 60, secs % 60, cents / 100, (cents % 100).abs()
            )
            .into_bytes()
        }),
        1 => Just(b"01/01/2023 00:00:00,\"multi\nline, quoted\",1.5,Withdrawal\n".to_vec()),
        1 => Just(b"31/02/2023 00:00:00,bad date,1,Deposit\n".to_vec()),
        1 => Just(b"\n\r\n".to_vec()),
        1 => Just(b"01/01/2023 00:00:00,not \xff utf8,1,Deposit\n".to_vec()),
        1 => Just(b"too,few\r\n".to_vec()),
        1 => Just(b"date,content,amount,type\n".to_vec()),
        1 => Just(b"02/01/2023 00:00:00,\"a \"\"quoted\"\"\nword\",2,Deposit\n".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn read_in_pieces_equals_read_whole(
        lines in prop::collection::vec(line(), 0..200),
        sizes in prop::collection::vec(1usize..9, 1..6),
        header in any::<bool>(),
    ) {
        let mut input = if header { b"date,content,amount,type\r\n".to_vec() } else { Vec::new() };
        input.extend(lines.concat());
        let whole = run(input.as_slice());
        let pieces = run(Trickle { input: &input, sizes, turn: 0 });
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn loaded_in_pieces_equals_loaded_whole(
        lines in prop::collection::vec(line(), 0..200),
        max_piece in 1u64..600,
        header in any::<bool>(),
    ) {
        let mut input = if header { b"date,content,amount,type\r\n".to_vec() } else { Vec::new() };
        input.extend(lines.concat());
        let (whole, whole_sent) = run(input.as_slice());
        let whole = whole.unwrap();
        let cut = pieces::cut(input.as_slice(), input.len() as u64, max_piece, b'"').unwrap();
        prop_assert_eq!(cut.first().unwrap().start, 0);
        prop_assert_eq!(cut.last().unwrap().end, input.len() as u64);
        let (mut rows, mut tuples, mut rejected) = ((0, 0), Vec::new(), Vec::new());
        for piece in &cut {
            let bytes = &input[piece.start as usize..piece.end as usize];
            let mut sent = Vec::new();
            let dataset = Dataset::transactions();
            let report = load_piece_into(
                bytes,
                Target { dataset: &dataset, layout: &dataset.declared_layout() },
                LINEAGE,
                PieceStart { first_line: piece.first_line },
                ErrorPolicy::RejectRows,
                &Limits::default(),
                &mut |buffer: Bytes| {
                    sent.extend_from_slice(&buffer);
                    true
                },
                &mut |row| {
                    rejected.push(row);
                    Ok(())
                },
            )
            .unwrap();
            rows.0 += report.data_rows;
            rows.1 += report.rows_loaded;
            tuples.extend_from_slice(strip_copy_framing(&sent));
        }
        prop_assert_eq!(rows, (whole.data_rows, whole.rows_loaded));
        prop_assert_eq!(rejected, whole.rejected);
        prop_assert_eq!(tuples, strip_copy_framing(&whole_sent).to_vec());
    }
}

/// The tuples of a binary COPY stream, without its header and trailer (empty when nothing was
/// sent).
fn strip_copy_framing(sent: &[u8]) -> &[u8] {
    if sent.is_empty() {
        return sent;
    }
    assert!(sent.starts_with(SIGNATURE));
    &sent[SIGNATURE.len() + 8..sent.len() - 2]
}

#[test]
fn line_numbers_hold_past_the_window() {
    // About 6 MiB: the window is released several times before the bad rows near the end.
    let good = "01/01/2023 00:00:00,some content here,12.5,Deposit\r\n";
    let mut input = String::from("date,content,amount,type\r\n");
    let rows = 6 * (1 << 20) / good.len();
    for n in 0..rows {
        input.push_str(if n % 100_000 == 99_999 {
            "bad\r\n"
        } else {
            good
        });
    }
    input.push_str("\"open quote,1,Deposit\r\n");
    let (report, _) = run(input.as_bytes());
    let report = report.unwrap();
    let lines: Vec<i32> = report.rejected.iter().map(|r| r.line_no).collect();
    let mut expected: Vec<i32> = (0..rows)
        .filter(|n| n % 100_000 == 99_999)
        .map(|n| n as i32 + 2)
        .collect();
    expected.push(rows as i32 + 2);
    assert_eq!(lines, expected);
    assert_eq!(report.data_rows, rows as u64 + 1);
    assert_eq!(report.bytes, input.len() as u64);
}
