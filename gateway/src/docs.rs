//! The OpenAPI document and a docs page, compiled into the binary (no internet needed), served at
//! `/api/upload/docs`, `/api/auth/docs` and `openapi.json` under each prefix.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

use crate::app::HttpResponse;

const OPENAPI: &str = include_str!("../static/openapi.json");
const DOCS_PAGE: &str = include_str!("../static/docs.html");

/// Whether `path` is one of the docs paths (served to `GET` only).
pub fn is_docs_path(path: &str) -> bool {
    document(path).is_some()
}

/// The docs response for `path`, if it is one of the docs paths.
pub fn serve(path: &str) -> Option<HttpResponse> {
    let (body, content_type) = document(path)?;
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(response)
}

fn document(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/api/upload/docs" | "/api/auth/docs" | "/api/upload/docs/" | "/api/auth/docs/" => {
            Some((DOCS_PAGE, "text/html; charset=utf-8"))
        }
        "/api/upload/openapi.json"
        | "/api/auth/openapi.json"
        | "/api/upload/docs/openapi.json"
        | "/api/auth/docs/openapi.json" => Some((OPENAPI, "application/json")),
        _ => None,
    }
}
