//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and the
//! types they read and answer (so it cannot drift from the code), built once per process.
//! `routes::tests` fails if a route of [`crate::routes::Route`] has no operation here, or one
//! without a summary and description.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

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

/// The document as JSON, built on first use.
pub fn json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}
