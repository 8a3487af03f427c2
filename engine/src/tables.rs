//! The tables of the datasets, created from their definitions at start.
//!
//! A dataset's table that does not exist yet is created with its columns, the lineage columns,
//! an index on `upload_id` (undo deletes by it), its unique key and, when partitioned, a default
//! partition (rows of a range with no partition yet land there until [`crate::partitions`]
//! moves them). A table that exists is checked against the definition and never altered: a
//! changed definition stops the engine with an error saying what differs, so nobody's data is
//! reshaped by an edit to a TOML file. Engines starting together create a table once (an
//! advisory lock).

use ingest_rows::dataset::{quote_ident, ColumnKind, Dataset, LINEAGE_COLUMNS};
use ingest_rows::registry::Registry;
use tokio_postgres::Client;

/// A table that does not match its dataset's definition, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("dataset {dataset:?}: table {table:?} does not match the definition: {problem}. A changed definition is not applied to an existing table: migrate the table, or give the dataset a new table name")]
    Mismatch {
        dataset: String,
        table: String,
        problem: String,
    },
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// Creates the missing tables of `registry`'s datasets and checks the existing ones.
pub async fn ensure(client: &mut Client, registry: &Registry) -> Result<(), TableError> {
    for dataset in registry.iter() {
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('ingest: dataset tables'))",
            &[],
        )
        .await?;
        let exists = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&quote_ident(&dataset.table)],
            )
            .await?
            .get::<_, bool>(0);
        if exists {
            check(&tx, dataset).await?;
        } else {
            tx.batch_execute(&create_statements(dataset)).await?;
            tracing::info!(dataset = %dataset.name, table = %dataset.table, "table created");
        }
        tx.commit().await?;
    }
    Ok(())
}

/// The DDL of a dataset's table.
pub fn create_statements(dataset: &Dataset) -> String {
    let table = quote_ident(&dataset.table);
    let mut columns: Vec<String> = dataset
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{not_null}", quote_ident(&c.name), c.kind.sql_type())
        })
        .collect();
    columns.push("upload_id uuid NOT NULL".into());
    columns.push("chunk_no integer NOT NULL".into());
    columns.push("line_no integer NOT NULL".into());
    if !dataset.unique_key.is_empty() {
        let key: Vec<String> = dataset
            .unique_key
            .iter()
            .map(|&i| quote_ident(&dataset.columns[i].name))
            .collect();
        columns.push(format!("UNIQUE ({})", key.join(", ")));
    }
    let partitioned = match dataset.partition_column() {
        Some(column) => format!(" PARTITION BY RANGE ({})", quote_ident(&column.name)),
        None => String::new(),
    };
    let mut ddl = format!(
        "CREATE TABLE {table} (\n    {}\n){partitioned};\n",
        columns.join(",\n    ")
    );
    if dataset.partition.is_some() {
        ddl += &format!(
            "CREATE TABLE {} PARTITION OF {table} DEFAULT;\n",
            quote_ident(&format!("{}_default", dataset.table))
        );
    }
    ddl += &format!(
        "CREATE INDEX {} ON {table} (upload_id);\n",
        quote_ident(&format!("{}_upload_idx", dataset.table))
    );
    ddl
}

/// Compares an existing table's columns and partitioning with the definition.
async fn check(tx: &tokio_postgres::Transaction<'_>, dataset: &Dataset) -> Result<(), TableError> {
    let mismatch = |problem: String| TableError::Mismatch {
        dataset: dataset.name.clone(),
        table: dataset.table.clone(),
        problem,
    };
    let table = quote_ident(&dataset.table);
    let rows = tx
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await?;
    let actual: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let find = |name: &str| actual.iter().find(|(n, _, _)| n == name);
    for column in &dataset.columns {
        let wanted = column.kind.sql_type();
        match find(&column.name) {
            None => return Err(mismatch(format!("it has no column {:?}", column.name))),
            Some((_, found, _)) if !compatible(&column.kind, &wanted, found) => {
                return Err(mismatch(format!(
                    "column {:?} is {found}, the definition says {wanted}",
                    column.name
                )))
            }
            // The table would refuse rows the definition lets through (a missing value).
            Some((_, _, true)) if column.nullable && column.default.is_none() => {
                return Err(mismatch(format!(
                    "column {:?} is NOT NULL, the definition lets it be empty",
                    column.name
                )))
            }
            Some(_) => {}
        }
    }
    if !dataset.unique_key.is_empty() {
        let mut key: Vec<String> = dataset
            .unique_key
            .iter()
            .map(|&i| dataset.columns[i].name.clone())
            .collect();
        key.sort();
        let unique: Vec<Vec<String>> = tx
            .query(
                "SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = $1::text::regclass AND i.indisunique GROUP BY i.indexrelid",
                &[&table],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !unique.contains(&key) {
            return Err(mismatch(format!(
                "it has no unique index on ({}), the definition's unique_key",
                key.join(", ")
            )));
        }
    }
    for lineage in LINEAGE_COLUMNS {
        if find(lineage).is_none() {
            return Err(mismatch(format!("it has no lineage column {lineage:?}")));
        }
    }
    let key: Option<String> = tx
        .query_one("SELECT pg_get_partkeydef($1::text::regclass)", &[&table])
        .await?
        .get(0);
    let wanted = dataset.partition_column().map(|c| c.name.as_str());
    let found = key.as_deref().map(|k| {
        k.trim_start_matches("RANGE (")
            .trim_end_matches(')')
            .trim_matches('"')
    });
    if wanted != found {
        return Err(mismatch(format!(
            "it is partitioned by {}, the definition says {}",
            key.as_deref().unwrap_or("nothing"),
            wanted.map_or("nothing".to_owned(), |c| format!("RANGE ({c})"))
        )));
    }
    if let Some(partitioning) = dataset.partition {
        let partitions = tx
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = $1::text::regclass",
                &[&table],
            )
            .await?;
        let default = format!("{}_default", dataset.table);
        let other = partitions
            .iter()
            .map(|r| r.get::<_, String>(0))
            .find(|name| {
                *name != default
                    && partitioning
                        .by
                        .parse_table_name(name, &dataset.table)
                        .is_none()
            });
        if let Some(other) = other {
            return Err(mismatch(format!(
                "its partition {other:?} is not one {} wide, as the definition says",
                partitioning.by.as_str()
            )));
        }
    }
    Ok(())
}

/// Whether an existing column of type `found` holds what the definition validates: the same
/// type, or an unconstrained `numeric` for a `numeric(p, s)` (as `transactions.amount` is).
fn compatible(kind: &ColumnKind, wanted: &str, found: &str) -> bool {
    found == wanted || (matches!(kind, ColumnKind::Numeric { .. }) && found == "numeric")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_from_a_definition() {
        let text = r#"
            unique_key = ["sku", "day"]
            on_conflict = "skip"
            partition = { column = "day", by = "day" }
            [[columns]]
            name = "sku"
            type = "text"
            required = true
            [[columns]]
            name = "day"
            type = "date"
            required = true
            [[columns]]
            name = "price"
            type = "numeric"
            precision = 10
            scale = 2
        "#;
        let dataset = ingest_rows::definition::parse(std::path::Path::new("prices.toml"), text)
            .expect("valid");
        assert_eq!(
            create_statements(&dataset),
            "CREATE TABLE \"prices\" (\n    \"sku\" text NOT NULL,\n    \"day\" date NOT NULL,\n    \
             \"price\" numeric(10,2),\n    upload_id uuid NOT NULL,\n    chunk_no integer NOT NULL,\n    \
             line_no integer NOT NULL,\n    UNIQUE (\"sku\", \"day\")\n) PARTITION BY RANGE (\"day\");\n\
             CREATE TABLE \"prices_default\" PARTITION OF \"prices\" DEFAULT;\n\
             CREATE INDEX \"prices_upload_idx\" ON \"prices\" (upload_id);\n"
        );
    }
}
