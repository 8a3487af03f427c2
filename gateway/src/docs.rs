//! The docs pages: Swagger UI (vendored, version-pinned, compiled into the binary: no internet
//! needed) over the OpenAPI document generated from the code ([`crate::openapi`]), served at
//! `/api/upload/docs` and `/api/auth/docs`, the document at `openapi.json` under each prefix.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

use crate::app::HttpResponse;

const DOCS_PAGE: &str = include_str!("../static/docs.html");
const DOCS_SCRIPT: &str = include_str!("../static/docs.js");
/// Swagger UI's files live under a versioned path, so browsers may cache them for good.
const SWAGGER_UI: &str = "/api/upload/docs/swagger-ui-5.32.0/";
const BUNDLE: &[u8] = include_bytes!("../static/swagger-ui/swagger-ui-bundle.js");
const STYLE: &[u8] = include_bytes!("../static/swagger-ui/swagger-ui.css");
const LICENSE: &[u8] = include_bytes!("../static/swagger-ui/LICENSE");

/// Whether `path` is one of the docs paths (served to `GET` only).
pub fn is_docs_path(path: &str) -> bool {
    document(path, &Bytes::new()).is_some()
}

/// The docs response for `path`, if it is one of the docs paths; `openapi` is this gateway's
/// document ([`crate::openapi::with_datasets`]).
pub fn serve(path: &str, openapi: &Bytes) -> Option<HttpResponse> {
    let (body, content_type) = document(path, openapi)?;
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if path.starts_with(SWAGGER_UI) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
    }
    Some(response)
}

fn document(path: &str, openapi: &Bytes) -> Option<(Bytes, &'static str)> {
    if let Some(file) = path.strip_prefix(SWAGGER_UI) {
        return match file {
            "swagger-ui-bundle.js" => {
                Some((Bytes::from_static(BUNDLE), "text/javascript; charset=utf-8"))
            }
            "swagger-ui.css" => Some((Bytes::from_static(STYLE), "text/css; charset=utf-8")),
            "LICENSE" => Some((Bytes::from_static(LICENSE), "text/plain; charset=utf-8")),
            _ => None,
        };
    }
    match path {
        "/api/upload/docs" | "/api/auth/docs" | "/api/upload/docs/" | "/api/auth/docs/" => Some((
            Bytes::from_static(DOCS_PAGE.as_bytes()),
            "text/html; charset=utf-8",
        )),
        "/api/upload/docs/docs.js" => Some((
            Bytes::from_static(DOCS_SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        )),
        "/api/upload/openapi.json"
        | "/api/auth/openapi.json"
        | "/api/upload/docs/openapi.json"
        | "/api/auth/docs/openapi.json" => Some((openapi.clone(), "application/json")),
        _ => None,
    }
}
