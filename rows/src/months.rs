//! The months a chunk's rows fall in, read ahead of its load so that every partition its COPY
//! needs exists before the COPY starts (instead of finding a new month after the COPY, rolling
//! back, making the partition and loading the chunk a second time).
//!
//! Only the partition column is looked at, with the same tokenizer and timestamp rules as the
//! validator: a record whose cell is not a valid timestamp (the header, a bad row) adds no
//! month, so a partition is only made for a month a valid cell names. What the validator later
//! finds remains the authority; this is the cheap first look.

use std::collections::BTreeSet;
use std::io::{self, Read};

use simd_csv::ZeroCopyReaderBuilder;

use crate::dataset::Dataset;
use crate::values::Timestamp;

/// The tokenizer's read buffer.
const READ_BUFFER: usize = 256 << 10;

/// The (year, month) of every valid partition-column cell of `input`; empty when the dataset is
/// not partitioned.
pub fn partition_months<R: Read>(input: R, dataset: &Dataset) -> io::Result<BTreeSet<(i32, u32)>> {
    let mut months = BTreeSet::new();
    let Some(column) = dataset.partition_column else {
        return Ok(months);
    };
    let mut reader = ZeroCopyReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(READ_BUFFER)
        .from_reader(input);
    // Rows mostly come in time order: most records repeat the previous record's month.
    let mut last = None;
    while let Some(record) = reader.read_byte_record().map_err(io::Error::from)? {
        let Some(cell) = record.unquote(column) else {
            continue;
        };
        let cell = cell.strip_suffix(b"\r").unwrap_or(cell);
        if let Ok(timestamp) = Timestamp::parse(cell) {
            let month = (timestamp.year, timestamp.month);
            if last != Some(month) {
                months.insert(month);
                last = Some(month);
            }
        }
    }
    Ok(months)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn months(chunk: &[u8]) -> Vec<(i32, u32)> {
        partition_months(chunk, &Dataset::transactions())
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn every_month_of_valid_cells_and_nothing_else() {
        let chunk = b"\xef\xbb\xbfdate,content,amount,type\r\n\
            03/02/2023 00:00:01,x,1,Deposit\r\n\
            \"2024-12-31 23:59:59\",\"a,\"\"b\"\"\",1,Deposit\r\n\
            31/02/2023 00:00:00,invalid date,1,Deposit\r\n\
            garbage\r\n\
            03/02/2023 00:00:02,\"two\nlines 01/05/2022 00:00:00\",1,Deposit\r\n\
            01/01/2025 00:00:00,x,1,Deposit";
        assert_eq!(months(chunk), vec![(2023, 2), (2024, 12), (2025, 1)]);
    }

    #[test]
    fn a_chunk_without_rows_has_no_month() {
        assert!(months(b"").is_empty());
        assert!(months(b"date,content,amount,type\n").is_empty());
    }
}
