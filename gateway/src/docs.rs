//! The OpenAPI document and a docs page, compiled into the binary (no internet needed), served at
//! `/api/upload/docs`, `/api/auth/docs` and `openapi.json` under each prefix.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response};
use http_body_util::Full;

use crate::app::HttpResponse;

const OPENAPI: &str = include_str!("../static/openapi.json");
const DOCS_PAGE: &str = include_str!("../static/docs.html");

/// The docs response for `path`, if it is one of the docs paths.
pub fn serve(method: &Method, path: &str) -> Option<HttpResponse> {
    if method != Method::GET {
        return None;
    }
    let (body, content_type) = match path {
        "/api/upload/docs" | "/api/auth/docs" | "/api/upload/docs/" | "/api/auth/docs/" => {
            (DOCS_PAGE, "text/html; charset=utf-8")
        }
        "/api/upload/openapi.json"
        | "/api/auth/openapi.json"
        | "/api/upload/docs/openapi.json"
        | "/api/auth/docs/openapi.json" => (OPENAPI, "application/json"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(response)
}
