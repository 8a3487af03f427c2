//! The generator writes the original's format, reproducibly, rolling files over at the size.

use std::path::PathBuf;

use loadgen::generate::{generate, HEADER};

fn read_all(files: &[PathBuf]) -> Vec<Vec<u8>> {
    files
        .iter()
        .map(|f| std::fs::read(f).expect("generated files should be readable"))
        .collect()
}

/// The date of row `i`, computed independently of the generator (January 2023 only).
fn expected_date(i: u64) -> String {
    assert!(i < 31 * 86_400, "this helper only knows January");
    let (day, rest) = (1 + i / 86_400, i % 86_400);
    format!(
        "{day:02}/01/2023 {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[test]
fn files_have_the_original_structure_and_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rows = 90_000; // past midnight: row 86,400 is 02/01/2023 00:00:00
    let files = generate(dir.path(), rows, 9 << 20, 7).expect("generation should succeed");
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("data_000.csv"));
    let data = std::fs::read(&files[0]).expect("readable");
    assert!(data.starts_with(HEADER));
    assert_eq!(HEADER, b"date,content,amount,type\r\n");
    let text = std::str::from_utf8(&data).expect("ASCII output");
    assert!(text.ends_with("\r\n"));
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "CRLF only"
    );
    let (mut deposits, mut withdrawals, mut negative, mut positive) = (0, 0, 0, 0);
    let mut decimals_seen = [false; 4];
    for (i, line) in text.split_terminator("\r\n").skip(1).enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 4, "line {i}: {line}");
        assert_eq!(fields[0], expected_date(i as u64), "line {i}");
        assert_eq!(fields[1], "Any text there");
        let amount: f64 = fields[2].parse().expect("amounts are numbers");
        assert!((-1000.0..=1000.0).contains(&amount), "{amount}");
        let (_, frac) = fields[2]
            .split_once('.')
            .expect("amounts have a decimal point");
        assert!(
            (1..=3).contains(&frac.len()),
            "Python-style decimals: {}",
            fields[2]
        );
        assert!(
            frac.len() == 1 || !frac.ends_with('0'),
            "no trailing zeros: {}",
            fields[2]
        );
        decimals_seen[frac.len()] = true;
        assert_eq!(
            (amount * 1000.0).round() / 1000.0,
            amount,
            "3 decimals at most"
        );
        if amount < 0.0 {
            negative += 1;
        } else {
            positive += 1;
        }
        match fields[3] {
            "Deposit" => deposits += 1,
            "Withdrawal" => withdrawals += 1,
            other => panic!("unexpected type {other:?}"),
        }
    }
    assert_eq!(deposits + withdrawals, rows);
    assert!(text.contains("\r\n01/01/2023 23:59:59,"));
    assert!(text.contains("\r\n02/01/2023 00:00:00,"));
    // Roughly even odds: 5 standard deviations is about 750 rows here.
    for count in [deposits, withdrawals, negative, positive] {
        assert!((44_000..46_000).contains(&count), "{count} of {rows}");
    }
    assert!(decimals_seen[1] && decimals_seen[2] && decimals_seen[3]);
}

#[test]
fn the_same_seed_writes_the_same_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let first = read_all(&generate(a.path(), 20_000, 300_000, 42).expect("generate"));
    let again = read_all(&generate(b.path(), 20_000, 300_000, 42).expect("generate"));
    let other = read_all(&generate(c.path(), 20_000, 300_000, 43).expect("generate"));
    assert!(first.len() > 1);
    assert_eq!(first, again);
    assert_ne!(first, other);
    // Only the random columns differ: the dates are the same.
    let dates = |files: &[Vec<u8>]| -> Vec<String> {
        files
            .iter()
            .flat_map(|f| {
                String::from_utf8_lossy(f)
                    .lines()
                    .skip(1)
                    .map(|l| l[..19].to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(dates(&first), dates(&other));
}

#[test]
fn a_new_file_starts_when_the_next_row_would_not_fit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let size = 100_000;
    let files = generate(dir.path(), 10_000, size, 1).expect("generate");
    let contents = read_all(&files);
    // About 53 bytes a row: 10,000 rows make 6 files of at most 100,000 bytes.
    assert_eq!(
        files.len(),
        6,
        "{:?}",
        contents.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut rows = 0;
    let mut next_second = 0u64;
    for (i, (path, data)) in files.iter().zip(&contents).enumerate() {
        assert!(path.ends_with(format!("data_{i:03}.csv")));
        assert!(data.starts_with(HEADER), "every file has the header");
        assert!(data.len() as u64 <= size);
        if i + 1 < files.len() {
            // Full: the next file's first row would not have fit.
            let next_row = contents[i + 1][HEADER.len()..]
                .split_inclusive(|&b| b == b'\n')
                .next()
                .expect("a row");
            assert!(data.len() + next_row.len() > size as usize);
        }
        let text = std::str::from_utf8(data).expect("ASCII");
        for line in text.split_terminator("\r\n").skip(1) {
            // Dates continue across files.
            assert_eq!(&line[..19], expected_date(next_second));
            next_second += 1;
            rows += 1;
        }
    }
    assert_eq!(rows, 10_000);
}

#[test]
fn the_default_size_makes_files_like_the_original() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The original made a file per ~178,800 rows: 200,000 rows need 2 files.
    let files = generate(dir.path(), 200_000, 9 << 20, 3).expect("generate");
    assert_eq!(files.len(), 2);
    let first = std::fs::metadata(&files[0]).expect("stat").len();
    assert!(first <= 9 << 20 && first > (9 << 20) - 64, "{first}");
    assert!(generate(dir.path(), 0, 9 << 20, 3)
        .expect("generate")
        .is_empty());
}
