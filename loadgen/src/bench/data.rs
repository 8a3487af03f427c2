//! The benchmark's input: original-format files generated once per (rows, months, file size,
//! seed) and kept in a cache directory.
//!
//! A marker file, written only after every file was generated and flushed, records what the
//! directory holds. A directory without a matching marker (an interrupted run, other settings)
//! is regenerated, so a cached run never measures half a data set. The `one-file` scenario's
//! input, all files as one CSV ([`whole_file`]), is made from them on demand and removed with
//! them.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::generate::{generate_spread, DateSpread, GenerateError, HEADER};

/// The marker's name inside the cache directory.
pub const MARKER: &str = "complete.json";
/// The name of the files joined into one, inside the cache directory.
pub const WHOLE: &str = "whole.csv";

/// What a cache directory holds, as its marker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    rows: u64,
    /// Months the rows are spread over; none (markers before months existed): a second a row.
    #[serde(default)]
    months: Option<u32>,
    file_size: u64,
    seed: u64,
    /// File names and sizes, in upload order.
    files: Vec<(String, u64)>,
}

/// The generated files of one benchmark run.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub files: Vec<PathBuf>,
    pub rows: u64,
    pub bytes: u64,
    /// Whether the files came from the cache.
    pub reused: bool,
}

/// Why the data set could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("cannot prepare the data directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSpec {
    pub rows: u64,
    /// Months the rows are spread over ([`DateSpread::Months`]).
    pub months: u32,
    pub file_size: u64,
    pub seed: u64,
}

/// Returns the files for `spec` in `dir`, generating them unless the directory already holds
/// exactly them.
pub fn ensure(dir: &Path, spec: DataSpec) -> Result<Dataset, DataError> {
    let DataSpec {
        rows,
        months,
        file_size,
        seed,
    } = spec;
    if let Some(dataset) = cached(dir, spec) {
        return Ok(dataset);
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let marker_path = dir.join(MARKER);
    match std::fs::remove_file(&marker_path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(io_error(&marker_path)(err))
        }
        _ => {}
    }
    remove_old_files(dir)?;
    let files = generate_spread(dir, rows, file_size, seed, DateSpread::Months(months))?;
    let mut listed = Vec::with_capacity(files.len());
    for file in &files {
        let len = std::fs::metadata(file).map_err(io_error(file))?.len();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        listed.push((name, len));
    }
    let marker = Marker {
        rows,
        months: Some(months),
        file_size,
        seed,
        files: listed,
    };
    let text = serde_json::to_vec_pretty(&marker).expect("the marker should serialize");
    std::fs::write(&marker_path, text).map_err(io_error(&marker_path))?;
    Ok(dataset(dir, &marker, false))
}

/// The cached data set, if the marker matches the request and every file is still whole.
fn cached(dir: &Path, spec: DataSpec) -> Option<Dataset> {
    let text = std::fs::read(dir.join(MARKER)).ok()?;
    let marker: Marker = serde_json::from_slice(&text).ok()?;
    let wanted = (marker.rows, marker.months, marker.file_size, marker.seed)
        == (spec.rows, Some(spec.months), spec.file_size, spec.seed);
    let whole = marker.files.iter().all(|(name, len)| {
        std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.len() == *len)
    });
    (wanted && whole).then(|| dataset(dir, &marker, true))
}

fn dataset(dir: &Path, marker: &Marker, reused: bool) -> Dataset {
    Dataset {
        files: marker
            .files
            .iter()
            .map(|(name, _)| dir.join(name))
            .collect(),
        rows: marker.rows,
        bytes: marker.files.iter().map(|(_, len)| len).sum(),
        reused,
    }
}

/// The data set's files as one CSV: the header once, then every file's rows in order. Made
/// next to them (through a temporary file, so a half-written one is never used) unless it is
/// already there with the right length; [`ensure`] removes it whenever it regenerates.
pub fn whole_file(dir: &Path, dataset: &Dataset) -> Result<PathBuf, DataError> {
    let path = dir.join(WHOLE);
    let headers = dataset.files.len().saturating_sub(1) as u64 * HEADER.len() as u64;
    let expected = dataset.bytes - headers;
    if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == expected) {
        return Ok(path);
    }
    let partial = dir.join(format!("{WHOLE}.partial"));
    let mut out = io::BufWriter::new(std::fs::File::create(&partial).map_err(io_error(&partial))?);
    for (i, file) in dataset.files.iter().enumerate() {
        let mut input = std::fs::File::open(file).map_err(io_error(file))?;
        if i > 0 {
            // Every generated file starts with the header; only the first keeps it.
            io::Seek::seek(&mut input, io::SeekFrom::Start(HEADER.len() as u64))
                .map_err(io_error(file))?;
        }
        io::copy(&mut input, &mut out).map_err(io_error(&partial))?;
    }
    io::Write::flush(&mut out).map_err(io_error(&partial))?;
    drop(out);
    std::fs::rename(&partial, &path).map_err(io_error(&path))?;
    Ok(path)
}

/// Removes the `data_NNN.csv` files of an earlier generation and the file made of them (other
/// files are left alone).
fn remove_old_files(dir: &Path) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if (name.starts_with("data_") && name.ends_with(".csv")) || name.starts_with(WHOLE) {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rows: u64, months: u32) -> DataSpec {
        DataSpec {
            rows,
            months,
            file_size: 50_000,
            seed: 5,
        }
    }

    #[test]
    fn a_complete_directory_is_reused_and_a_changed_one_regenerated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = ensure(dir.path(), spec(3_000, 12)).expect("generate");
        assert!(!first.reused);
        assert!(first.files.len() >= 3, "{:?}", first.files);
        assert_eq!(first.rows, 3_000);

        let again = ensure(dir.path(), spec(3_000, 12)).expect("reuse");
        assert!(again.reused);
        assert_eq!(
            (again.files.clone(), again.bytes),
            (first.files, first.bytes)
        );

        // A truncated file invalidates the cache.
        std::fs::write(&again.files[1], b"date,content,amount,type\r\n").expect("truncate");
        let repaired = ensure(dir.path(), spec(3_000, 12)).expect("regenerate");
        assert!(!repaired.reused);
        assert_eq!(repaired.bytes, again.bytes);

        // Other settings regenerate, and files of the larger earlier set are removed.
        let fewer = ensure(dir.path(), spec(100, 12)).expect("regenerate");
        assert!(!fewer.reused);
        assert_eq!(fewer.files.len(), 1);
        let csvs = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "csv"))
            })
            .count();
        assert_eq!(csvs, 1);
    }

    #[test]
    fn the_months_are_part_of_the_cache_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let twelve = ensure(dir.path(), spec(3_000, 12)).expect("generate");
        let fifteen = ensure(dir.path(), spec(3_000, 15)).expect("regenerate");
        assert!(!fifteen.reused, "other months are other data");
        // Same sizes (the dates are fixed width), other bytes.
        assert_eq!(fifteen.bytes, twelve.bytes);
        let last = std::fs::read_to_string(fifteen.files.last().expect("a file")).expect("read");
        assert!(last.contains("/03/2024 "), "15 months reach March 2024");
    }

    #[test]
    fn the_whole_file_is_the_files_with_one_header() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dataset = ensure(dir.path(), spec(3_000, 12)).expect("generate");
        assert!(dataset.files.len() >= 3);
        let whole = whole_file(dir.path(), &dataset).expect("join");
        let text = std::fs::read(&whole).expect("read");
        let mut expected = HEADER.to_vec();
        for file in &dataset.files {
            expected.extend_from_slice(&std::fs::read(file).expect("read")[HEADER.len()..]);
        }
        assert_eq!(text, expected);
        assert!(!dir.path().join("whole.csv.partial").exists());
        // Regenerating removes it, so it is never joined from other files.
        ensure(dir.path(), spec(3_000, 6)).expect("regenerate");
        assert!(!whole.exists());
    }
}
