//! Decoding the PGCOPY binary stream `load_chunk` sends, checking every field is one
//! PostgreSQL accepts for its column (as `COPY ... FROM STDIN (FORMAT binary)` would).

use bytes::Bytes;
use ingest_rows::pgcopy::SIGNATURE;
use ingest_rows::validate::Lineage;
use ingest_rows::values::days_from_civil;

/// What a decoded tuple tells about its row.
#[derive(Debug)]
pub struct Tuple {
    pub line_no: i32,
    pub month: (i32, u32),
}

/// A decoded `numeric`: its digits as decimal text.
pub struct Numeric {
    pub negative: bool,
    /// Integer digits without leading zeros (empty for zero).
    pub integer: String,
    /// Fraction digits, `dscale` of them.
    pub fraction: String,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let bytes = self
            .data
            .get(self.at..self.at + n)
            .unwrap_or_else(|| panic!("COPY stream cut at {} (+{n})", self.at));
        self.at += n;
        bytes
    }

    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().expect("two bytes"))
    }

    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().expect("four bytes"))
    }

    /// A field: `None` for NULL.
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.i32();
        assert!(len >= -1, "field length {len}");
        (len >= 0).then(|| self.take(len as usize))
    }
}

/// The payload of one length-prefixed field.
pub fn field(out: &[u8]) -> &[u8] {
    let mut reader = Reader { data: out, at: 0 };
    let field = reader.field().expect("not NULL");
    assert_eq!(reader.at, out.len(), "one field, nothing after it");
    field
}

/// Decodes a whole stream (or nothing), checking its framing and every field.
pub fn decode_copy(buffers: &[Bytes], lineage: Lineage) -> Vec<Tuple> {
    let data: Vec<u8> = buffers.iter().flat_map(|b| b.iter().copied()).collect();
    if data.is_empty() {
        return Vec::new();
    }
    assert!(
        buffers.iter().all(|b| !b.is_empty()),
        "an empty buffer was sent"
    );
    let mut r = Reader { data: &data, at: 0 };
    assert_eq!(r.take(11), SIGNATURE);
    assert_eq!(r.take(8), [0u8; 8], "flags and header extension");
    let mut tuples = Vec::new();
    loop {
        let fields = r.i16();
        if fields == -1 {
            break;
        }
        assert_eq!(fields, 7, "fields per tuple");
        let date = r.field().expect("date is never NULL");
        let content = r.field();
        let amount = r.field().expect("amount is never NULL");
        let kind = r.field().expect("type is never NULL");
        let upload = r.field().expect("upload_id");
        let chunk = r.field().expect("chunk_no");
        let line = r.field().expect("line_no");

        let month = timestamp_month(date);
        if let Some(content) = content {
            let text = std::str::from_utf8(content).expect("text is UTF-8");
            assert!(text.chars().count() <= 1000, "text over 1000 characters");
            let mut chars = text.chars();
            let (first, second) = (chars.next(), chars.next());
            let formula = matches!(first, Some('=' | '+' | '@' | '\t' | '\r'))
                || (first == Some('-') && second.is_some_and(char::is_alphabetic));
            assert!(!formula, "a formula cell was loaded: {text:?}");
        }
        let value = numeric(amount);
        assert!(
            value.integer.len() <= 15 && value.fraction.len() <= 6,
            "amount limits"
        );
        assert!(kind == b"Deposit" || kind == b"Withdrawal", "type {kind:?}");
        assert_eq!(upload, lineage.upload_id.as_bytes());
        assert_eq!(chunk, lineage.chunk_no.to_be_bytes());
        let line_no = i32::from_be_bytes(line.try_into().expect("int4 is 4 bytes"));
        tuples.push(Tuple { line_no, month });
    }
    assert_eq!(r.at, data.len(), "nothing after the trailer");
    tuples
}

/// Checks a binary `timestamp` is within years 1..=9999 and returns its (year, month).
fn timestamp_month(field: &[u8]) -> (i32, u32) {
    let micros = i64::from_be_bytes(field.try_into().expect("timestamp is 8 bytes"));
    let days = micros.div_euclid(86_400_000_000) + days_from_civil(2000, 1, 1);
    let (year, month, _) = ingest_rows::values::civil_from_days(days);
    assert!((1..=9999).contains(&year), "year {year}");
    (year, month)
}

/// Decodes a binary `numeric`, checking the fields PostgreSQL's `numeric_recv` checks.
pub fn numeric(field: &[u8]) -> Numeric {
    let mut r = Reader { data: field, at: 0 };
    let (ndigits, weight, sign, dscale) = (r.i16(), r.i16(), r.i16() as u16, r.i16());
    assert!(
        ndigits >= 0 && dscale >= 0,
        "ndigits {ndigits}, dscale {dscale}"
    );
    assert!(sign == 0 || sign == 0x4000, "sign {sign:#x}");
    let digits: Vec<i16> = (0..ndigits).map(|_| r.i16()).collect();
    assert_eq!(r.at, field.len(), "numeric length");
    assert!(
        digits.iter().all(|d| (0..10_000).contains(d)),
        "digits {digits:?}"
    );
    let group = |w: i32| -> i16 {
        let k = i32::from(weight) - w;
        if k >= 0 && (k as usize) < digits.len() {
            digits[k as usize]
        } else {
            0
        }
    };
    let mut integer = String::new();
    for w in (0..=i32::from(weight)).rev() {
        integer.push_str(&format!("{:04}", group(w)));
    }
    let integer = integer.trim_start_matches('0').to_owned();
    let mut fraction = String::new();
    let groups = (i32::from(dscale) + 3) / 4;
    let present = i32::from(ndigits) - 1 - i32::from(weight);
    for w in 1..=groups.max(present) {
        fraction.push_str(&format!("{:04}", group(-w)));
    }
    let (kept, cut) = fraction.split_at((dscale as usize).min(fraction.len()));
    assert!(
        cut.bytes().all(|b| b == b'0'),
        "digits beyond dscale: {cut}"
    );
    Numeric {
        negative: sign == 0x4000,
        integer,
        fraction: format!("{kept:0<width$}", width = dscale as usize),
    }
}
