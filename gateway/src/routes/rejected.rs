//! `GET /api/upload/{folder}/rejected`: every rejected row of an upload, streamed a page at a
//! time from a server-side cursor ([`ingest_ledger::rejects`]), so memory stays at one page
//! however many there are. CSV by default (`chunk,line,reason,raw`, RFC 4180 quoting, `raw` the
//! original line as received), or JSON lines with `?format=json`.
//!
//! The cursor needs a transaction that stays open while the client reads, so each download has
//! a database connection of its own, not a pooled one: a client that stops reading midway
//! closes it, and no pooled connection is ever handed on inside an open transaction. At most
//! [`MAX_AT_ONCE`] sessions are open per gateway (503 beyond), and one whose client stalls for a
//! minute is ended by PostgreSQL, which frees its slot: the slot is held by the session, not by
//! the response, which a client that stopped reading never lets go of.

use bytes::Bytes;
use futures_util::stream;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio_postgres::Client;

use ingest_ledger::rejects;
use ingest_ledger::uploads::{RejectedRow, Upload};

use crate::app::{AppState, StreamedResponse};
use crate::errors::ApiError;

/// Rejected rows per page (and per body frame).
const PAGE: u32 = 1000;
/// Downloads one gateway streams at once: each holds a database connection and an open
/// read-only transaction until its client has read it all (or stalled for a minute, see
/// `ingest_ledger::rejects::open`: the session's end frees the slot).
pub const MAX_AT_ONCE: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

/// Where a download is: its connection (until its last page is read: the session, and with it
/// the download's slot, ends there, not when a stalled client takes the last frame), the page
/// to send next, whether the CSV header is due.
struct Download {
    client: Option<Client>,
    page: Option<Vec<RejectedRow>>,
    format: Format,
    header_due: bool,
}

/// Download every rejected row.
///
/// CSV by default (`chunk,line,reason,raw`, RFC 4180 quoting, `raw` the original line as
/// received), or JSON lines with `?format=json`; streamed a page at a time (bounded memory).
/// At most 8 downloads at once per gateway (503 beyond).
#[utoipa::path(get, path = "/api/upload/{folder}/rejected", tag = "upload", operation_id = "downloadRejected",
    security(("bearer" = [])),
    params(("folder" = uuid::Uuid, Path, description = "The upload"),
           ("format" = Option<String>, Query, description = "`csv` (default) or `json` (JSON lines)")),
    responses(
        (status = 200, description = "Every rejected row", content(
            (String = "text/csv"),
            (RejectedRow = "application/x-ndjson"))),
        (status = 404, description = "No such upload of this client", body = crate::errors::ErrorBody),
        (status = 503, description = "Too many downloads at once", body = crate::errors::ErrorBody)))]
pub async fn download(
    state: &AppState,
    upload: &Upload,
    request: &Request<Incoming>,
) -> Result<StreamedResponse, ApiError> {
    let format = format(request.uri().query())?;
    let slot = state.downloads.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable("too many downloads at once; retry in a moment".into())
    })?;
    let client = ingest_runtime::db::connect_holding(&state.settings.shared.database_url, slot)
        .await
        .map_err(|err| ApiError::Unavailable(format!("database unavailable: {err}")))?;
    rejects::open(&client, upload.upload_id).await?;
    // The first page is read before the answer, so a failure here is still a clean error status.
    let first = rejects::next_page(&client, PAGE).await?;
    let download = Download {
        client: Some(client),
        page: Some(first),
        format,
        header_due: format == Format::Csv,
    };
    let frames = stream::unfold(download, |mut download| async move {
        let rows = download.page.take()?;
        let mut out = Vec::with_capacity(rows.len() * 128);
        if std::mem::take(&mut download.header_due) {
            out.extend_from_slice(b"chunk,line,reason,raw\n");
        }
        for row in &rows {
            encode(download.format, row, &mut out);
        }
        let client = download.client.take()?;
        if rows.len() == PAGE as usize {
            match rejects::next_page(&client, PAGE).await {
                Ok(next) => (download.page, download.client) = (Some(next), Some(client)),
                // Ends the body early: the client sees a cut response, never a silently short one.
                Err(err) => return Some((Err(std::io::Error::other(err)), download)),
            }
        } else {
            let _ = rejects::close(&client).await;
        }
        if out.is_empty() {
            return None;
        }
        Some((Ok(Frame::data(Bytes::from(out))), download))
    });
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::JsonLines => ("application/x-ndjson", "jsonl"),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"rejected-{}.{extension}\"",
                upload.upload_id
            ),
        )
        .body(StreamBody::new(frames).boxed_unsync())
        .map_err(|err| ApiError::Internal(err.into()))
}

fn format(query: Option<&str>) -> Result<Format, ApiError> {
    let mut format = Format::Csv;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        format = match (name.as_ref(), value.as_ref()) {
            ("format", "csv") => Format::Csv,
            ("format", "json") => Format::JsonLines,
            ("format", _) => return Err(ApiError::BadRequest("format must be csv or json".into())),
            (other, _) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {other:?}; use format"
                )))
            }
        };
    }
    Ok(format)
}

fn encode(format: Format, row: &RejectedRow, out: &mut Vec<u8>) {
    match format {
        Format::Csv => {
            out.extend_from_slice(format!("{},{},", row.chunk, row.line).as_bytes());
            csv_field(&row.reason, out);
            out.push(b',');
            csv_field(&row.raw, out);
            out.push(b'\n');
        }
        Format::JsonLines => {
            // A struct of strings and integers always serializes.
            let _ = serde_json::to_writer(&mut *out, row);
            out.push(b'\n');
        }
    }
}

/// One CSV field, always quoted (RFC 4180: a quote inside is doubled), so commas, quotes and
/// line breaks of the original line survive.
fn csv_field(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in text.as_bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_written_as_quoted_csv_or_json_lines() {
        let row = RejectedRow {
            chunk: 2,
            line: 7,
            reason: "amount: is not a number".into(),
            raw: "01/01/2023 00:00:00,\"a, \"\"b\"\"\",x,Deposit".into(),
        };
        let mut csv = Vec::new();
        encode(Format::Csv, &row, &mut csv);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "2,7,\"amount: is not a number\",\"01/01/2023 00:00:00,\"\"a, \"\"\"\"b\"\"\"\"\"\",x,Deposit\"\n"
        );
        let mut json = Vec::new();
        encode(Format::JsonLines, &row, &mut json);
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back["raw"], row.raw.as_str());
        assert_eq!(back["line"], 7);
        assert_eq!(format(Some("format=json")).unwrap(), Format::JsonLines);
        assert!(format(Some("format=xml")).is_err());
        assert!(format(Some("limit=1")).is_err());
    }
}
