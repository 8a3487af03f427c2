//! The partitions (months or days) a chunk's rows fall in, read ahead of its load so that every
//! partition its COPY needs exists before the COPY starts (instead of finding a new one after
//! the COPY, rolling back, making the partition and loading the chunk a second time).
//!
//! Only the partition column is looked at, with the same tokenizer and cell rules as the
//! validator: a record whose cell is not a valid date (the header, a bad row) adds no
//! partition, so a partition is only made for a day a valid cell names. What the validator later
//! finds remains the authority; this is the cheap first look.

use std::collections::BTreeSet;
use std::io::{self, Read};

use crate::cell::CellContext;
use crate::dataset::{Dataset, Day, Layout};

/// The tokenizer's read buffer.
const READ_BUFFER: usize = 256 << 10;

/// The first day of every partition a valid partition-column cell of `input` falls in; empty
/// when the dataset is not partitioned. The cells are found with the header the input starts
/// with, else with `layout` (the upload's).
pub fn partition_starts<R: Read>(
    input: R,
    dataset: &Dataset,
    layout: &Layout,
) -> io::Result<BTreeSet<Day>> {
    let mut starts = BTreeSet::new();
    let Some(partitioning) = dataset.partition else {
        return Ok(starts);
    };
    let column = &dataset.columns[partitioning.column];
    let cell_in = |layout: &Layout| {
        layout
            .order
            .iter()
            .position(|&c| c == partitioning.column)
            .and_then(|at| layout.cell_of[at])
    };
    let Some(mut cell) = cell_in(layout) else {
        return Ok(starts);
    };
    let mut reader = dataset
        .format
        .tokenizer()
        .buffer_capacity(READ_BUFFER)
        .from_reader(crate::validate::decoded(input, dataset));
    let context = CellContext {
        quote: dataset.format.quote,
        may_have_quotes: true,
        utf8_checked: false,
        reject_formulas: false,
    };
    let mut scratch = Vec::with_capacity(64);
    // Rows mostly come in time order: most records repeat the previous record's partition.
    let (mut last, mut first) = (None, true);
    while let Some(record) = reader.read_byte_record().map_err(io::Error::from)? {
        let cells = || {
            (0..record.len()).map(|i| {
                let c = record.get(i).unwrap_or_default();
                c.strip_suffix(b"\r").unwrap_or(c)
            })
        };
        if std::mem::take(&mut first) && dataset.format.header {
            if let Ok(Some(header)) = dataset.read_header(cells()) {
                match cell_in(&header) {
                    Some(at) => cell = at,
                    None => return Ok(starts),
                }
                continue;
            }
        }
        let Some(raw) = record.get(cell) else {
            continue;
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        scratch.clear();
        if let Ok(Some(day)) = column.encode_cell(raw, context, &mut scratch) {
            let start = partitioning.by.start(day);
            if last != Some(start) {
                starts.insert(start);
                last = Some(start);
            }
        }
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn months(chunk: &[u8]) -> Vec<(i32, u32)> {
        let dataset = crate::registry::Registry::builtin()
            .get("transactions")
            .expect("built in");
        partition_starts(chunk, &dataset, &dataset.declared_layout())
            .expect("read from memory")
            .into_iter()
            .map(|(year, month, _)| (year, month))
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
    fn the_header_of_the_chunk_says_where_the_column_is() {
        let chunk = b"type,amount,date\nDeposit,1,01/03/2023 00:00:00\n";
        assert_eq!(months(chunk), vec![(2023, 3)]);
    }

    #[test]
    fn a_chunk_without_rows_has_no_month() {
        assert!(months(b"").is_empty());
        assert!(months(b"date,content,amount,type\n").is_empty());
    }
}
