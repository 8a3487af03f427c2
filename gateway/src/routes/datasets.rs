//! `GET /api/datasets`: the datasets an upload may name, with their columns, from the one
//! registry in `rows` ([`ingest_rows::registry::Registry`]), so clients (the console's dataset picker, scripts) never
//! hard-code a shape.

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use ingest_rows::dataset::{Column, ColumnKind, Dataset, ExtraColumns, OnConflict, TextEncoding};

use crate::app::{AppState, HttpResponse};
use crate::errors::{json_response, ApiError, ErrorBody};

/// One dataset: how its files are written, where its rows go and what a row must hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetInfo {
    /// What `POST /api/upload` names (`dataset`).
    pub name: String,
    /// The table its rows are loaded into.
    pub table: String,
    /// The header line of a file in declared order (any order of the names is accepted).
    #[schema(example = "date,content,amount,type")]
    pub header: String,
    /// Whether files start with a header record (without one, columns are in declared order).
    pub has_header: bool,
    #[schema(example = ",")]
    pub delimiter: String,
    #[schema(example = "\"")]
    pub quote: String,
    /// `utf-8` or `windows-1252` (what `latin-1` means here).
    #[schema(example = "utf-8")]
    pub encoding: &'static str,
    /// `ignore` or `refuse`: what a header naming an unknown column means.
    #[schema(example = "refuse")]
    pub extra_columns: &'static str,
    /// The column the table is partitioned by, if any.
    pub partitioned_by: Option<String>,
    /// `month` or `day`, when partitioned.
    pub partition_width: Option<&'static str>,
    /// Columns whose values identify a row across uploads.
    pub unique_key: Vec<String>,
    /// `error` or `skip`: what a row whose unique key is taken does.
    #[schema(example = "error")]
    pub on_conflict: &'static str,
    /// The error policy of an upload that names none.
    #[schema(example = "reject-rows")]
    pub on_error: &'static str,
    /// Whether text starting like a spreadsheet formula is rejected.
    pub reject_formulas: bool,
    /// The XLSX sheet read (the first one when absent).
    pub sheet: Option<String>,
    pub columns: Vec<ColumnInfo>,
}

/// One column, as validation checks it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ColumnInfo {
    pub name: String,
    /// The header names that mean this column (matched ignoring case), its own name first.
    pub headers: Vec<String>,
    /// `text`, `enum` (text from a fixed set), `integer`, `bigint`, `numeric`, `boolean`,
    /// `date`, `timestamp`, `timestamptz`, `uuid` or `json`.
    #[schema(value_type = String, example = "numeric")]
    pub r#type: &'static str,
    /// The PostgreSQL type of the table column.
    #[schema(example = "numeric(21,6)")]
    pub sql_type: String,
    /// Whether an empty cell (or a missing column) is accepted, as the default or NULL.
    pub nullable: bool,
    /// What an empty cell or a missing column loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `text`: the most characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
    /// `numeric`: the most digits before the point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_integer_digits: Option<u32>,
    /// `numeric`: the most digits after the point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    /// `enum`: the accepted values (exact, case-sensitive); `boolean`: the accepted spellings,
    /// true ones first (matched ignoring case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Dates and timestamps: the accepted forms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formats: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetInfo>,
}

/// List the datasets.
///
/// Every dataset an upload may name (the built-in `transactions` and the definitions of
/// `INGEST_DATASETS_DIR`), with how its files are written and each column's type and limits,
/// as validation checks them.
#[utoipa::path(get, path = "/api/datasets", tag = "upload", operation_id = "listDatasets",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every dataset", body = DatasetList),
        (status = 401, description = "Not authenticated", body = ErrorBody)))]
pub async fn list(state: &AppState) -> Result<HttpResponse, ApiError> {
    let datasets = state.datasets.iter().map(|d| info(d)).collect();
    Ok(json_response(StatusCode::OK, &DatasetList { datasets }))
}

fn info(dataset: &Dataset) -> DatasetInfo {
    DatasetInfo {
        name: dataset.name.clone(),
        table: dataset.table.clone(),
        header: dataset.header_line(),
        has_header: dataset.format.header,
        delimiter: char::from(dataset.format.delimiter).to_string(),
        quote: char::from(dataset.format.quote).to_string(),
        encoding: match dataset.format.encoding {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Windows1252 => "windows-1252",
        },
        extra_columns: match dataset.extra_columns {
            ExtraColumns::Ignore => "ignore",
            ExtraColumns::Refuse => "refuse",
        },
        partitioned_by: dataset.partition_column().map(|c| c.name.clone()),
        partition_width: dataset.partition.map(|p| p.by.as_str()),
        unique_key: dataset
            .unique_key
            .iter()
            .map(|&i| dataset.columns[i].name.clone())
            .collect(),
        on_conflict: match dataset.on_conflict {
            OnConflict::Error => "error",
            OnConflict::Skip => "skip",
        },
        on_error: dataset.on_error.as_str(),
        reject_formulas: dataset.reject_formulas,
        sheet: dataset.sheet.clone(),
        columns: dataset.columns.iter().map(column_info).collect(),
    }
}

fn column_info(column: &Column) -> ColumnInfo {
    let mut info = ColumnInfo {
        name: column.name.clone(),
        headers: column.headers.clone(),
        r#type: column.kind.type_name(),
        sql_type: column.kind.sql_type(),
        nullable: column.nullable,
        default: column.default.as_ref().map(|(text, _)| text.clone()),
        max_chars: None,
        max_integer_digits: None,
        max_scale: None,
        values: None,
        formats: None,
    };
    match &column.kind {
        ColumnKind::Timestamp { formats } if formats.is_empty() => {
            info.formats = Some(vec![
                "DD/MM/YYYY HH:MM:SS[.ffffff]".into(),
                "YYYY-MM-DD[T ]HH:MM:SS[.ffffff]".into(),
            ]);
        }
        ColumnKind::Date { formats } if formats.is_empty() => {
            info.formats = Some(vec!["%Y-%m-%d".into()]);
        }
        ColumnKind::TimestampTz { formats } if formats.is_empty() => {
            info.formats = Some(vec!["RFC 3339".into()]);
        }
        ColumnKind::Date { formats }
        | ColumnKind::Timestamp { formats }
        | ColumnKind::TimestampTz { formats } => info.formats = Some(formats.clone()),
        ColumnKind::Text { max_chars } => {
            info.max_chars = Some(*max_chars).filter(|&m| m != usize::MAX);
        }
        ColumnKind::Numeric { precision, scale } => {
            info.max_integer_digits = precision.map(|p| p - scale);
            info.max_scale = Some(*scale);
        }
        ColumnKind::OneOf(values) => {
            info.r#type = "enum";
            info.values = Some(values.clone());
        }
        ColumnKind::Boolean { truthy, falsy } => {
            info.values = Some(truthy.iter().chain(falsy).cloned().collect());
        }
        ColumnKind::Integer | ColumnKind::BigInt | ColumnKind::Uuid | ColumnKind::Json => {}
    }
    info
}
