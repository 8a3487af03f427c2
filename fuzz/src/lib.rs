//! The bodies of the fuzz targets, as plain functions: each takes arbitrary bytes, drives one
//! hostile-input path of the gateway or the engine, and panics when an invariant breaks.
//!
//! - [`csv_chunk`] checks `ingest_rows::validate::load_chunk` (tokenizing, validation, PGCOPY encoding)
//!   under both error policies: loaded + rejected = data rows, the COPY stream is well framed
//!   and every field in it is a value PostgreSQL accepts, no formula cell is loaded, lines are
//!   physical and in order, and the two policies agree.
//! - [`pgcopy_values`] checks `Decimal` and `Timestamp` parsing and encoding, decoded back and
//!   compared with the text they came from.
//! - [`dataset_definition`] checks dataset definition parsing (`ingest_rows::definition`) and
//!   the generic validator on the dataset it defines: refused with a line, or valid and
//!   loading any chunk with the dataset's invariants.
//! - [`multipart`] checks `multer::Multipart` over arbitrary bytes and splits, as the gateway
//!   drives it: it ends, and never yields more field bytes than it was given.
//! - `request_headers` (feature `gateway`) checks the gateway's header parsers: Basic and Bearer
//!   credentials, token verification (no forged token ever verifies), and the client IP behind
//!   forwarding headers (an untrusted peer can never choose its rate-limit key).
//!
//! The first three depend only on `ingest-rows` and `multer`, so they build in well under a
//! minute; `request_headers` needs the whole gateway crate and builds only with `--features
//! gateway`. The targets in `fuzz_targets/` are one line each; `scripts/fuzz` runs them, and
//! `cargo test` in this crate replays the seed corpus through the same functions on a stable
//! toolchain.

mod copy;
mod definition;
#[cfg(feature = "gateway")]
mod headers;

use bytes::Bytes;
use ingest_rows::dataset::Dataset;
use ingest_rows::pgcopy::write_numeric;
use ingest_rows::validate::{load_chunk, ChunkError, ChunkReport, ErrorPolicy, Limits, Lineage};
use ingest_rows::values::{days_from_civil, Decimal, Timestamp};

pub use copy::decode_copy;
pub use definition::dataset_definition;
#[cfg(feature = "gateway")]
pub use headers::request_headers;

const LINEAGE: Lineage = Lineage {
    upload_id: uuid::Uuid::from_u128(0x0123_4567_89ab_cdef),
    chunk_no: 7,
};

/// Splits off the first byte as a configuration byte.
pub(crate) fn config(data: &[u8]) -> (u8, &[u8]) {
    data.split_first()
        .map_or((0, data), |(first, rest)| (*first, rest))
}

/// The original's dataset, parsed once (from its definition file) rather than per input.
fn transactions() -> &'static Dataset {
    static TRANSACTIONS: std::sync::OnceLock<Dataset> = std::sync::OnceLock::new();
    TRANSACTIONS.get_or_init(Dataset::transactions)
}

fn run(
    data: &[u8],
    policy: ErrorPolicy,
    limits: &Limits,
) -> (Result<ChunkReport, ChunkError>, Vec<Bytes>) {
    let mut buffers = Vec::new();
    let dataset = transactions();
    let result = load_chunk(
        data,
        dataset,
        &dataset.declared_layout(),
        LINEAGE,
        policy,
        limits,
        &mut |buffer| {
            buffers.push(buffer);
            true
        },
    );
    (result, buffers)
}

/// `load_chunk` on arbitrary bytes. The first byte picks small limits, so long records and the
/// cut raw text are reached without megabytes of input.
pub fn csv_chunk(data: &[u8]) {
    let (cfg, data) = config(data);
    let limits = Limits {
        max_line_bytes: if cfg & 1 == 1 {
            16 + usize::from(cfg >> 4) * 8
        } else {
            64 << 10
        },
        max_raw_bytes: 1 + usize::from(cfg >> 1 & 7) * 16,
    };
    let (rows, buffers) = run(data, ErrorPolicy::RejectRows, &limits);
    let report = match rows {
        Ok(report) => report,
        Err(ChunkError::NotCsv(_)) => {
            // An error loads nothing (the caller aborts its COPY), whatever was sent before it.
            // Binary data is refused as soon as it is read, too much invalid UTF-8 only at the
            // end: by then `reject-chunk` may have failed on a bad row instead.
            let (chunk, _) = run(data, ErrorPolicy::RejectChunk, &limits);
            assert!(
                matches!(
                    chunk,
                    Err(ChunkError::NotCsv(_) | ChunkError::RejectedChunk(_))
                ),
                "refused as not CSV under reject-rows, {chunk:?} under reject-chunk"
            );
            return;
        }
        Err(other) => panic!("load_chunk failed on in-memory input: {other}"),
    };
    assert_eq!(
        report.rows_loaded + report.rejected.len() as u64,
        report.data_rows,
        "loaded + rejected = data rows"
    );
    assert_eq!(report.bytes, data.len() as u64);
    let tuples = decode_copy(&buffers, LINEAGE);
    assert_eq!(
        tuples.len() as u64,
        report.rows_loaded,
        "one COPY tuple per loaded row"
    );

    // Physical line numbers: within the chunk, increasing, never both loaded and rejected.
    let lines = 1 + data.iter().filter(|&&b| b == b'\n').count() as i32;
    let loaded: Vec<i32> = tuples.iter().map(|t| t.line_no).collect();
    let rejected: Vec<i32> = report.rejected.iter().map(|r| r.line_no).collect();
    for list in [&loaded, &rejected] {
        assert!(
            list.windows(2).all(|w| w[0] < w[1]),
            "lines out of order: {list:?}"
        );
        assert!(
            list.iter().all(|l| (1..=lines).contains(l)),
            "line outside the chunk"
        );
    }
    assert!(
        loaded.iter().all(|l| !rejected.contains(l)),
        "a line both loaded and rejected"
    );
    for row in &report.rejected {
        assert!(
            row.raw.len() <= limits.max_raw_bytes,
            "raw text over its cap"
        );
        assert!(!row.reason.is_empty());
    }
    let months: std::collections::BTreeSet<(i32, u32, u32)> =
        tuples.iter().map(|t| (t.month.0, t.month.1, 1)).collect();
    assert_eq!(
        months, report.partitions,
        "the months reported are those of the rows"
    );

    // reject-chunk agrees: the same rows when none is bad, else the first bad row.
    let (chunk, chunk_buffers) = run(data, ErrorPolicy::RejectChunk, &limits);
    match (chunk, report.rejected.first()) {
        (Ok(same), None) => {
            assert_eq!(same, report);
            assert_eq!(chunk_buffers, buffers);
        }
        (Err(ChunkError::RejectedChunk(first)), Some(expected)) => assert_eq!(&first, expected),
        (other, first) => panic!("policies disagree: {other:?} vs first rejected {first:?}"),
    }
}

/// A cell parsed as an amount and as a timestamp, encoded, decoded back and compared.
pub fn pgcopy_values(data: &[u8]) {
    if let Some(decimal) = Decimal::parse(data) {
        let mut out = Vec::new();
        write_numeric(&mut out, &decimal);
        let field = copy::field(&out);
        let value = copy::numeric(field);
        let text = std::str::from_utf8(data).expect("a decimal is ASCII");
        let unsigned = text.trim_start_matches(['-', '+']);
        let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let integer = integer.trim_start_matches('0');
        let is_zero = integer.is_empty() && fraction.bytes().all(|b| b == b'0');
        assert_eq!(value.integer, integer, "integer digits of {text:?}");
        assert_eq!(value.fraction, fraction, "fraction digits of {text:?}");
        if !is_zero {
            assert_eq!(value.negative, text.starts_with('-'), "sign of {text:?}");
        }
        // Reading the canonical text again gives the same bytes.
        let canonical = format!(
            "{}{}{}{}",
            if value.negative { "-" } else { "" },
            if integer.is_empty() { "0" } else { integer },
            if fraction.is_empty() { "" } else { "." },
            fraction
        );
        let mut again = Vec::new();
        let reread = Decimal::parse(canonical.as_bytes()).expect("canonical text parses");
        write_numeric(&mut again, &reread);
        assert_eq!(again, out, "{text:?} and {canonical:?} encode differently");
    }
    if let Ok(ts) = Timestamp::parse(data) {
        let micros = ts.pg_micros();
        let days = micros.div_euclid(86_400_000_000);
        let in_day = micros.rem_euclid(86_400_000_000);
        let (year, month, day) =
            ingest_rows::values::civil_from_days(days + days_from_civil(2000, 1, 1));
        assert_eq!((year, month, day), (ts.year, ts.month, ts.day));
        let secs = (in_day / 1_000_000) as u32;
        assert_eq!(
            (
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                (in_day % 1_000_000) as u32
            ),
            (ts.hour, ts.minute, ts.second, ts.micros)
        );
        assert!((1..=9999).contains(&ts.year), "a 4-digit year");
    }
}

/// The gateway's multipart parser over arbitrary bytes, fed in pieces of a size the first byte
/// picks, with the gateway's fixed boundary and a stream size limit.
pub fn multipart(data: &[u8]) {
    let (cfg, body) = config(data);
    let piece = 1 + usize::from(cfg);
    let frames: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(64 << 10));
    let mut parts = multer::Multipart::with_constraints(
        futures_util::stream::iter(frames),
        "XBOUNDARYX",
        constraints,
    );
    futures_executor::block_on(async {
        let mut fields = 0usize;
        let mut field_bytes = 0usize;
        while let Ok(Some(mut field)) = parts.next_field().await {
            fields += 1;
            assert!(
                fields <= body.len() / 8 + 1,
                "more fields than the body can hold"
            );
            // What the gateway looks at: the name and the file name (only their extension).
            let _ = (field.name(), field.content_type());
            if let Some(name) = field.file_name() {
                let _ = name
                    .rsplit_once('.')
                    .map(|(_, ext)| ext.to_ascii_lowercase());
            }
            while let Ok(Some(chunk)) = field.chunk().await {
                field_bytes += chunk.len();
                assert!(field_bytes <= body.len(), "field bytes out of nothing");
            }
        }
    });
    // Content-Type headers as clients send them.
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = multer::parse_boundary(text);
    }
}
