//! The upload console: static files of `gateway/static/console`, compiled into the binary (no
//! CDN, works offline), served at `/console`. The page talks to the public API only, with a
//! token it gets from the client id and secret typed into it.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

use crate::app::HttpResponse;

const INDEX: &str = include_str!("../static/console/index.html");
const SCRIPT: &str = include_str!("../static/console/console.js");
const STYLE: &str = include_str!("../static/console/console.css");

/// Whether `path` is one of the console's files (served to `GET` only).
pub fn is_console_path(path: &str) -> bool {
    file(path).is_some()
}

/// The console file at `path`, if it is one.
pub fn serve(path: &str) -> Option<HttpResponse> {
    let (body, content_type) = file(path)?;
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page runs only its own files: no inline script, no other origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

fn file(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/console" | "/console/" | "/console/index.html" => {
            Some((INDEX, "text/html; charset=utf-8"))
        }
        "/console/console.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/console/console.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}
