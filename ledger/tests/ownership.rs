//! The ledger is the one owner of its tables: no production source outside `ledger/src` may hold
//! a statement on them. Tests may still read them to check what a run left behind.

use std::path::{Path, PathBuf};

const TABLES: [&str; 4] = ["uploads", "chunks", "chunk_pieces", "stream_offsets"];
const VERBS: [&str; 5] = ["FROM", "INTO", "UPDATE", "JOIN", "TABLE"];

/// `(file, the offending words)` for each statement on a ledger table in `source`.
fn statements_on_ledger_tables(source: &str) -> Vec<String> {
    let words: Vec<&str> = source.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| {
            let table = pair[1].trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'));
            VERBS.contains(&pair[0]) && TABLES.contains(&table)
        })
        .map(|pair| format!("{} {}", pair[0], pair[1]))
        .collect()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn no_service_writes_ledger_sql_itself() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the ledger crate sits in the workspace");
    let mut sources = Vec::new();
    for member in std::fs::read_dir(root)
        .expect("the workspace is readable")
        .flatten()
    {
        let path = member.path();
        if path.join("Cargo.toml").is_file() && !path.ends_with("ledger") {
            rust_files(&path.join("src"), &mut sources);
        }
    }
    assert!(
        sources.iter().any(|p| p.ends_with("engine/src/loader.rs")),
        "the scan should see the services' sources"
    );
    let offenders: Vec<String> = sources
        .iter()
        .flat_map(|path| {
            let source = std::fs::read_to_string(path).expect("a source file is readable");
            statements_on_ledger_tables(&source)
                .into_iter()
                .map(move |found| format!("{}: {found}", path.display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "ledger SQL outside the ledger: {offenders:#?}"
    );
}

#[test]
fn the_scan_finds_statements_across_lines_and_quotes() {
    let source = "client.query(\"SELECT 1 FROM\n   chunks c WHERE\", &[]);\nUPDATE \"uploads\" SET";
    assert_eq!(
        statements_on_ledger_tables(source),
        ["FROM chunks", "UPDATE \"uploads\""]
    );
    assert!(statements_on_ledger_tables("the chunks FROM a file; INTO partitions").is_empty());
}
