//! The one registry of datasets, shared by gateway and engine: the built-in `transactions`
//! definition plus every `*.toml` file of the datasets directory (`INGEST_DATASETS_DIR`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dataset::{Dataset, PartitionBy};
use crate::definition::{self, DefinitionError};

/// The original's dataset, compiled in so the original's API works without a datasets folder.
const TRANSACTIONS: &str = include_str!("../../datasets/transactions.toml");

/// Datasets by name.
#[derive(Debug, Clone)]
pub struct Registry {
    datasets: BTreeMap<String, Arc<Dataset>>,
}

impl Registry {
    /// Only the built-in `transactions`.
    pub fn builtin() -> Registry {
        let transactions = definition::parse(Path::new("datasets/transactions.toml"), TRANSACTIONS)
            .expect("the built-in transactions definition is valid");
        Registry {
            datasets: BTreeMap::from([(transactions.name.clone(), Arc::new(transactions))]),
        }
    }

    /// The built-in datasets and those defined in `dir` (a file there may replace a built-in
    /// one). Any invalid file, two files defining one name, or two datasets sharing a table is
    /// an error: services refuse to start on it.
    pub fn load(dir: &Path) -> Result<Registry, DefinitionError> {
        let unreadable = |err: std::io::Error| DefinitionError {
            file: dir.to_owned(),
            line: 0,
            field: "(directory)".into(),
            message: err.to_string(),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(unreadable)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(unreadable)?;
        files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        files.sort();
        let mut registry = Registry::builtin();
        let mut from_files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            let dataset = definition::read_file(&file)?;
            let clash = |message: String| DefinitionError {
                file: file.clone(),
                line: 1,
                field: "name".into(),
                message,
            };
            if let Some(first) = from_files.get(&dataset.name) {
                return Err(clash(format!(
                    "dataset {:?} is also defined in {}",
                    dataset.name,
                    first.display()
                )));
            }
            if let Some(other) = registry
                .datasets
                .values()
                .find(|d| d.table == dataset.table && d.name != dataset.name)
            {
                return Err(clash(format!(
                    "table {:?} is also the table of dataset {:?}",
                    dataset.table, other.name
                )));
            }
            if let Some((table, of)) = registry.datasets.values().find_map(|other| {
                let clash = |a: &Dataset, b: &Dataset| {
                    a.table == format!("{}_default", b.table)
                        || [PartitionBy::Month, PartitionBy::Day]
                            .iter()
                            .any(|by| by.parse_table_name(&a.table, &b.table).is_some())
                };
                if clash(&dataset, other) {
                    Some((dataset.table.clone(), other.table.clone()))
                } else if clash(other, &dataset) {
                    Some((other.table.clone(), dataset.table.clone()))
                } else {
                    None
                }
            }) {
                return Err(clash(format!(
                    "table {table:?} is named like a partition of table {of:?}"
                )));
            }
            from_files.insert(dataset.name.clone(), file.clone());
            registry
                .datasets
                .insert(dataset.name.clone(), Arc::new(dataset));
        }
        Ok(registry)
    }

    /// The registry a service uses: `dir` when set (it must exist), else the `datasets`
    /// folder of the working directory when there is one, else only the built-in datasets.
    pub fn from_settings(dir: Option<&Path>) -> Result<Registry, DefinitionError> {
        match dir {
            Some(dir) => Registry::load(dir),
            None if Path::new("datasets").is_dir() => Registry::load(Path::new("datasets")),
            None => Ok(Registry::builtin()),
        }
    }

    /// The dataset called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Dataset>> {
        self.datasets.get(name).cloned()
    }

    /// Every dataset, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Dataset>> {
        self.datasets.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_definitions_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets");
        let registry = Registry::load(&dir).expect("the shipped datasets are valid");
        assert!(registry.get("transactions").is_some());
        assert!(registry.get("nope").is_none());
    }
}
