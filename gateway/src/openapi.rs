//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and the
//! types they read and answer (so it cannot drift from the code), built once per process.
//! `routes::tests` fails if a route of [`crate::routes::Route`] has no operation here, or one
//! without a summary and description.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use ingest_rows::dataset::{Dataset, TextEncoding};
use ingest_rows::registry::Registry;

use crate::routes::{auth, chunks, clients, datasets, rejected, uploads};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ingest gateway",
        description = "Upload huge CSV files in chunks; rows land in PostgreSQL exactly once, every \
                       bad row accounted for. Compatible with the original bank-reconciliation-system API."
    ),
    paths(
        auth::issue_token,
        auth::verify,
        uploads::create,
        uploads::list,
        uploads::status,
        uploads::complete,
        uploads::withdraw,
        chunks::receive_multipart,
        chunks::receive_chunk,
        chunks::retry,
        rejected::download,
        datasets::list,
        clients::list,
        clients::add,
        clients::disable,
    ),
    tags(
        (name = "auth", description = "Tokens for API clients"),
        (name = "upload", description = "Uploads, their chunks and what became of their rows"),
        (name = "admin", description = "API clients (the admin scope)"),
    ),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// `basic` (client credentials, for a token) and `bearer` (the token, for everything else).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as JSON with the datasets of `registry` described in its introduction, so the
/// docs pages show what an upload may name without a token. Built once per gateway at start.
pub fn with_datasets(registry: &Registry) -> String {
    let mut document = ApiDoc::openapi();
    let mut text = document.info.description.take().unwrap_or_default();
    text.push_str("\n\n## Datasets\n\nWhat `POST /api/upload` may name as `dataset` (also `GET /api/datasets`); \
                   a header names the columns in any order, matched ignoring case.\n");
    for dataset in registry.iter() {
        text.push_str(&describe(dataset));
    }
    document.info.description = Some(text);
    document
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// One dataset as Markdown: its files, its table and its columns.
fn describe(dataset: &Dataset) -> String {
    let partition = match (dataset.partition_column(), dataset.partition) {
        (Some(column), Some(p)) => {
            format!(", partitioned by {} on `{}`", p.by.as_str(), column.name)
        }
        _ => String::new(),
    };
    let mut text = format!(
        "\n### {}\n\nInto table `{}`{partition}. Files: {}, delimiter `{}`, {}.\n\n\
         | column | type | required | header names |\n|---|---|---|---|\n",
        dataset.name,
        dataset.table,
        if dataset.format.header {
            format!("header `{}`", dataset.header_line())
        } else {
            "no header (columns in this order)".to_owned()
        },
        char::from(dataset.format.delimiter),
        match dataset.format.encoding {
            TextEncoding::Utf8 => "UTF-8",
            TextEncoding::Windows1252 => "Windows-1252 (latin-1)",
        },
    );
    for column in &dataset.columns {
        let required = match (&column.default, column.nullable) {
            (Some((default, _)), _) => format!("no (default `{default}`)"),
            (None, true) => "no".to_owned(),
            (None, false) => "yes".to_owned(),
        };
        text.push_str(&format!(
            "| `{}` | {} | {required} | {} |\n",
            column.name,
            column.kind.sql_type(),
            column.headers.join(", ")
        ));
    }
    text
}

/// The document as JSON, built on first use.
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}
