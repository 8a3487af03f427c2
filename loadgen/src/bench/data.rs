//! The benchmark's input: original-format files generated once per (rows, file size, seed) and
//! kept in a cache directory.
//!
//! A marker file, written only after every file was generated and flushed, records what the
//! directory holds. A directory without a matching marker (an interrupted run, other settings)
//! is regenerated, so a cached run never measures half a data set.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::generate::{generate, GenerateError};

/// The marker's name inside the cache directory.
pub const MARKER: &str = "complete.json";

/// What a cache directory holds, as its marker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    rows: u64,
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

/// Returns the files for `rows` rows in `dir`, generating them unless the directory already
/// holds exactly them.
pub fn ensure(dir: &Path, rows: u64, file_size: u64, seed: u64) -> Result<Dataset, DataError> {
    if let Some(dataset) = cached(dir, rows, file_size, seed) {
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
    let files = generate(dir, rows, file_size, seed)?;
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
        file_size,
        seed,
        files: listed,
    };
    let text = serde_json::to_vec_pretty(&marker).expect("the marker should serialize");
    std::fs::write(&marker_path, text).map_err(io_error(&marker_path))?;
    Ok(dataset(dir, &marker, false))
}

/// The cached data set, if the marker matches the request and every file is still whole.
fn cached(dir: &Path, rows: u64, file_size: u64, seed: u64) -> Option<Dataset> {
    let text = std::fs::read(dir.join(MARKER)).ok()?;
    let marker: Marker = serde_json::from_slice(&text).ok()?;
    let wanted = (marker.rows, marker.file_size, marker.seed) == (rows, file_size, seed);
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

/// Removes the `data_NNN.csv` files of an earlier generation (other files are left alone).
fn remove_old_files(dir: &Path) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("data_") && name.ends_with(".csv") {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_directory_is_reused_and_a_changed_one_regenerated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = ensure(dir.path(), 3_000, 50_000, 5).expect("generate");
        assert!(!first.reused);
        assert!(first.files.len() >= 3, "{:?}", first.files);
        assert_eq!(first.rows, 3_000);

        let again = ensure(dir.path(), 3_000, 50_000, 5).expect("reuse");
        assert!(again.reused);
        assert_eq!(
            (again.files.clone(), again.bytes),
            (first.files, first.bytes)
        );

        // A truncated file invalidates the cache.
        std::fs::write(&again.files[1], b"date,content,amount,type\r\n").expect("truncate");
        let repaired = ensure(dir.path(), 3_000, 50_000, 5).expect("regenerate");
        assert!(!repaired.reused);
        assert_eq!(repaired.bytes, again.bytes);

        // Other settings regenerate, and files of the larger earlier set are removed.
        let fewer = ensure(dir.path(), 100, 50_000, 5).expect("regenerate");
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
}
