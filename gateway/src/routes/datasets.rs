//! `GET /api/datasets`: the datasets an upload may name, with their columns, from the one
//! registry in `rows` ([`Dataset`]), so clients (the console's dataset picker, scripts) never
//! hard-code a shape.

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use ingest_rows::dataset::{ColumnKind, Dataset};

use crate::app::HttpResponse;
use crate::errors::{json_response, ApiError, ErrorBody};

/// One dataset: where its rows go and what a file of it holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetInfo {
    /// What `POST /api/upload` names (`dataset`).
    pub name: String,
    /// The table its rows are loaded into.
    pub table: String,
    /// The header line a file may start with (columns in file order).
    #[schema(example = "date,content,amount,type")]
    pub header: String,
    /// The column the table is partitioned by (monthly), if any.
    pub partitioned_by: Option<String>,
    pub columns: Vec<ColumnInfo>,
}

/// One column, as validation checks it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ColumnInfo {
    pub name: String,
    /// `timestamp`, `text`, `numeric` or `enum`.
    #[schema(value_type = String, example = "numeric")]
    pub r#type: &'static str,
    /// Whether an empty cell is accepted (as NULL).
    pub nullable: bool,
    /// `text`: the most characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
    /// `numeric`: the most digits before the point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_integer_digits: Option<u32>,
    /// `numeric`: the most digits after the point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    /// `enum`: the accepted values (exact, case-sensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// `timestamp`: the accepted forms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formats: Option<Vec<&'static str>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetInfo>,
}

/// List the datasets.
///
/// Every dataset an upload may name, with the header its files start with and each column's
/// type and limits, as validation checks them.
#[utoipa::path(get, path = "/api/datasets", tag = "upload", operation_id = "listDatasets",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every dataset", body = DatasetList),
        (status = 401, description = "Not authenticated", body = ErrorBody)))]
pub async fn list() -> Result<HttpResponse, ApiError> {
    let datasets = Dataset::BUILTIN
        .iter()
        .filter_map(|name| Dataset::builtin(name))
        .map(|dataset| info(&dataset))
        .collect();
    Ok(json_response(StatusCode::OK, &DatasetList { datasets }))
}

fn info(dataset: &Dataset) -> DatasetInfo {
    DatasetInfo {
        name: dataset.name.clone(),
        table: dataset.table.clone(),
        header: dataset.header_line(),
        partitioned_by: dataset
            .partition_column
            .map(|i| dataset.columns[i].name.clone()),
        columns: dataset
            .columns
            .iter()
            .map(|column| {
                let mut info = ColumnInfo {
                    name: column.name.clone(),
                    r#type: "text",
                    nullable: column.nullable,
                    max_chars: None,
                    max_integer_digits: None,
                    max_scale: None,
                    values: None,
                    formats: None,
                };
                match &column.kind {
                    ColumnKind::Timestamp => {
                        info.r#type = "timestamp";
                        info.formats = Some(vec![
                            "DD/MM/YYYY HH:MM:SS[.ffffff]",
                            "YYYY-MM-DD[T ]HH:MM:SS[.ffffff]",
                        ]);
                    }
                    ColumnKind::Text { max_chars } => info.max_chars = Some(*max_chars),
                    ColumnKind::Decimal {
                        max_integer_digits,
                        max_scale,
                    } => {
                        info.r#type = "numeric";
                        info.max_integer_digits = Some(*max_integer_digits);
                        info.max_scale = Some(*max_scale);
                    }
                    ColumnKind::OneOf(values) => {
                        info.r#type = "enum";
                        info.values = Some(values.clone());
                    }
                }
                info
            })
            .collect(),
    }
}
