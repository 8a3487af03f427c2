//! The hostile-input catalogue of the gateway: one test per attack, each asserting the status the
//! attacker gets AND that nothing was stored (no file under the upload directory, no ledger row,
//! no rejected row, no row in `transactions`, no upload row but the test's own, and no message on
//! the partition stream).
//!
//! | case | expected |
//! | --- | --- |
//! | path traversal in the folder id (raw `../`, `%2e%2e%2f`, `..%2F`) | 404 |
//! | path traversal or junk in the chunk number | 400 (404 for extra path segments) |
//! | non-UUID folder on every route | 404 |
//! | another client's folder on every route | 404 |
//! | JWT `alg: none` (any case) | 401 |
//! | JWT `HS512` / `HS384` signed with our own key (algorithm confusion) | 401 |
//! | JWT signed with another key | 401 |
//! | JWT expired | 401 `token expired` |
//! | JWT not yet valid (`nbf` or `iat` in the future) | 401 `token not yet valid` |
//! | JWT with a tampered payload | 401 |
//! | garbage bearer tokens, a Basic header on an upload route | 401 |
//! | missing, malformed or wrong Basic credentials (SQL in the id too) | 401 + `WWW-Authenticate` |
//! | 100 KiB of headers, 200 headers | 431 |
//! | a 70 KiB URL | 414 or 431 |
//! | huge `Content-Length` (chunk, multipart, JSON) | 413 before the body is sent |
//! | invalid or conflicting `Content-Length` | 400 |
//! | body longer than `Content-Length` (smuggled request after it) | 400 (checksum), smuggled 401 |
//! | `Content-Length` and `Transfer-Encoding: chunked` together | chunked wins, connection closed |
//! | chunked body over the limit | 413 |
//! | body shorter than `Content-Length`, then EOF | 400 or closed |
//! | slow headers | 408 or closed |
//! | stalled raw body, stalled multipart body | 408 |
//! | trickled raw or multipart body (each byte inside the frame timeout) | 408 at the body deadline |
//! | multipart without `file` / two `file` fields | 422 / 400 |
//! | multipart filename with `../` and `.csv` | 200, stored under a UUID inside the upload dir |
//! | multipart filename with `../` and no `.csv`, other names | 400; a `.xlsx` that is no workbook 415 |
//! | multipart without boundary / garbage / unterminated / no header line | 422 / 400 / 400 / 400 |
//! | ELF, ZIP, PNG, xlsx renamed `.csv`, PDF with NULs (raw and multipart) | 415 |
//! | UTF-16 LE and BE with BOM | 415 |
//! | NUL bytes (at the start, after 4 KiB) | 415 |
//! | Latin-1 text at the start | 415 |
//! | gzip bomb, zstd bomb | 413 |
//! | XLSX: zip bomb member, shared strings past the cap, a sheet past the cap as CSV | 413 |
//! | XLSX: not a zip, a zip that is no workbook, gzip-encoded, bad checksum | 415 / 415 / 400 / 400 |
//! | corrupt or truncated gzip | 400 |
//! | unknown `Content-Encoding` / `Content-Type` | 415 |
//! | MD5, Content-MD5, SHA-256 mismatches; malformed or disagreeing checksums | 400 |
//! | spoofed `X-Forwarded-For` / `X-Real-IP` from an untrusted peer | same rate-limit key: 429 |
//! | oversized, malformed or unexpected JSON bodies | 413 / 400 |
//! | chunks beyond the declared count, to a finished upload | 400 / 409 |
//! | 10,000 uploads opened and never completed | expired, their files removed |
//!
//! Rows that pass the gateway and must be rejected by the engine are in
//! `system-tests/tests/hostile_rows.rs`.

use std::io::Write;
use std::time::Duration;

use crate::support::*;
use base64::Engine;
use futures_util::StreamExt;
use gateway::auth::{Clock, Tokens};
use gateway::expiry::Expiry;
use ingest_runtime::settings::Secret;
use ingest_testkit::wait_for;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIGNING_KEY: &str = "test-signing-key-0123456789";
const GOOD_ROW: &[u8] = b"01/01/2023 00:00:01,Any text there,-614.568,Deposit\r\n";

/// A gateway with one partition stream (so one ordered stream proves what was published), a
/// token and an upload of the test's own.
struct Target {
    app: TestGateway,
    token: String,
    folder: String,
}

async fn target(extra: &[&str]) -> Target {
    let mut flags = vec!["--partitions=1"];
    flags.extend_from_slice(extra);
    let app = TestGateway::start(&flags).await;
    let token = app.token().await;
    let folder = app.create_upload(&token).await;
    Target { app, token, folder }
}

impl Target {
    fn url(&self, rest: &str) -> String {
        format!("{}/api/upload/{}{rest}", self.app.url, self.folder)
    }

    fn put(&self, n: &str) -> reqwest::RequestBuilder {
        self.app
            .http
            .put(self.url(&format!("/chunks/{n}")))
            .bearer_auth(&self.token)
    }

    fn post_form(&self, form: reqwest::multipart::Form) -> reqwest::RequestBuilder {
        self.app
            .http
            .post(self.url(""))
            .bearer_auth(&self.token)
            .multipart(form)
    }

    /// A raw multipart body with the given (field, filename, content) parts.
    fn post_multipart(&self, parts: &[(&str, Option<&str>, &[u8])]) -> reqwest::RequestBuilder {
        self.app
            .http
            .post(self.url(""))
            .bearer_auth(&self.token)
            .header("content-type", "multipart/form-data; boundary=XBOUNDARYX")
            .body(multipart_body("XBOUNDARYX", parts))
    }

    async fn count(&self, table: &str) -> i64 {
        let client = self.app.db.client().await.unwrap();
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Nothing on disk, in the ledger, in `rejected_rows` or `transactions`, no upload but the
    /// test's `uploads`, and nothing on the stream: a sentinel chunk sent now is the first
    /// message of the (single, ordered) partition stream.
    async fn assert_nothing_stored(&self, uploads: i64) {
        let files = self.app.stored_files();
        assert!(files.is_empty(), "files left behind: {files:?}");
        assert_eq!(self.count("chunks").await, 0, "ledger rows");
        assert_eq!(self.count("rejected_rows").await, 0, "rejected rows");
        assert_eq!(self.count("transactions").await, 0, "transactions");
        assert_eq!(self.count("uploads").await, uploads, "uploads");
        let sentinel = self.app.create_upload(&self.token).await;
        let response = self
            .app
            .put_chunk(&self.token, &sentinel, 0, GOOD_ROW)
            .await;
        assert_eq!(response.status(), 200);
        let messages = self.app.stream_messages(1, 1).await;
        assert_eq!(messages.len(), 1, "the sentinel should be on the stream");
        assert_eq!(
            messages[0].upload_id.to_string(),
            sentinel,
            "a refused request published a message before the sentinel"
        );
    }

    /// A token the gateway itself would issue to `client`, at `now` (seconds).
    fn token_for(&self, client: &str, now: Option<u64>) -> String {
        let clock: Clock = match now {
            Some(now) => std::sync::Arc::new(move || now),
            None => gateway::auth::system_clock(),
        };
        Tokens::new(&Secret::new(SIGNING_KEY), None, 3600, clock)
            .issue(client, &[gateway::clients::Scope::Upload])
            .token
    }
}

/// Every status code of the responses a raw exchange got before the connection closed.
async fn raw(addr: std::net::SocketAddr, request: &[u8], close_write: bool) -> Vec<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before it read everything (huge headers): a failed
    // write is part of the exchange, not an error of the test.
    let _ = stream.write_all(request).await;
    if close_write {
        let _ = stream.shutdown().await;
    }
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..n]);
    }
    statuses(&received)
}

/// Sends `head`, then `body` one byte every `every` (a slowloris upload), until the connection
/// closes or `limit` passes; returns what the gateway answered meanwhile.
async fn trickle(
    addr: std::net::SocketAddr,
    head: &[u8],
    body: &[u8],
    every: Duration,
    limit: Duration,
) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head).await.unwrap();
    let body = body.to_vec();
    let sender = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        // Hold the connection open: the body is never finished.
        std::future::pending::<()>().await;
    });
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..n]);
    }
    sender.abort();
    String::from_utf8_lossy(&received).into_owned()
}

/// The status codes of the HTTP/1.1 responses in `received`.
fn statuses(received: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(received);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

fn multipart_body(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, content) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        )
        .unwrap();
        if let Some(file_name) = file_name {
            write!(body, "; filename=\"{file_name}\"").unwrap();
        }
        body.extend_from_slice(b"\r\nContent-Type: text/csv\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    body
}

fn csv_with_header(rows: usize) -> Vec<u8> {
    original_rows(0, rows as u64, true)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

// ---- folder and chunk ids ------------------------------------------------------------------

#[tokio::test]
async fn path_traversal_in_the_folder_id_is_not_found() {
    let t = target(&[]).await;
    let auth = format!("Authorization: Bearer {}", t.token);
    for path in [
        "/api/upload/../../../etc/passwd/chunks/0",
        "/api/upload/..%2F..%2F..%2Fetc%2Fpasswd/chunks/0",
        "/api/upload/%2e%2e%2f%2e%2e%2fetc/chunks/0",
        "/api/upload/..\\..\\etc/chunks/0",
    ] {
        let request = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n",
            GOOD_ROW.len()
        );
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(GOOD_ROW);
        assert_eq!(raw(t.app.addr, &bytes, false).await, vec![404], "{path}");
    }
    for folder in ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "."] {
        let url = format!("{}/api/upload/{folder}", t.app.url);
        let get = t.app.http.get(&url).bearer_auth(&t.token);
        assert_eq!(status_of(get).await, 404, "GET {folder}");
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn path_traversal_or_junk_in_the_chunk_number_is_refused() {
    let t = target(&[]).await;
    for chunk in [
        "..%2F..%2Fetc%2Fpasswd",
        "-1",
        "1000000",
        "0x10",
        "1e3",
        "%00",
        "99999999999999999999",
        " 1",
    ] {
        let status = status_of(t.put(chunk).body(GOOD_ROW)).await;
        assert_eq!(status, 400, "chunk {chunk:?}");
    }
    // Extra path segments are another route: not found.
    let request = format!(
        "PUT /api/upload/{}/chunks/../../x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n",
        t.folder, t.token
    );
    assert_eq!(raw(t.app.addr, request.as_bytes(), false).await, vec![404]);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn a_folder_that_is_not_a_uuid_is_not_found_on_every_route() {
    let t = target(&[]).await;
    for folder in [
        "not-a-uuid",
        "12345",
        "00000000-0000-0000-0000-00000000000g",
        "%20",
    ] {
        let base = format!("{}/api/upload/{folder}", t.app.url);
        let http = &t.app.http;
        let put = http.put(format!("{base}/chunks/0")).body(GOOD_ROW);
        assert_eq!(status_of(put.bearer_auth(&t.token)).await, 404);
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(csv_with_header(1)).file_name("a.csv"),
        );
        let post = http.post(&base).bearer_auth(&t.token).multipart(form);
        assert_eq!(status_of(post).await, 404);
        let complete = http
            .post(format!("{base}/complete"))
            .json(&json!({"chunks": 1}));
        assert_eq!(status_of(complete.bearer_auth(&t.token)).await, 404);
        assert_eq!(status_of(http.get(&base).bearer_auth(&t.token)).await, 404);
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn another_clients_folder_is_not_found_on_every_route() {
    let t = target(&[]).await;
    // A real, enabled client (a token naming no client is refused before any lookup).
    let pool = gateway::server::database_pool(&t.app.db.url).await.unwrap();
    gateway::clients::ApiClients::new(pool)
        .upsert("other-client", &Secret::new("other-client-secret"))
        .await
        .unwrap();
    let other = t.token_for("other-client", None);
    let http = &t.app.http;
    let put = t.app.http.put(t.url("/chunks/0")).bearer_auth(&other);
    let put = put.body(GOOD_ROW);
    assert_eq!(status_of(put).await, 404);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(csv_with_header(1)).file_name("a.csv"),
    );
    let post = http.post(t.url("")).bearer_auth(&other).multipart(form);
    assert_eq!(status_of(post).await, 404);
    let complete = http.post(t.url("/complete")).bearer_auth(&other);
    assert_eq!(status_of(complete.json(&json!({"chunks": 0}))).await, 404);
    assert_eq!(
        status_of(http.get(t.url("")).bearer_auth(&other)).await,
        404
    );
    // The owner's upload is untouched.
    let status = t.app.status(&t.token, &t.folder).await;
    assert_eq!(status["state"], "receiving");
    assert_eq!(status["expected_chunks"], serde_json::Value::Null);
    t.assert_nothing_stored(1).await;
}

// ---- tokens ---------------------------------------------------------------------------------

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn claims(sub: &str, iat: u64, exp: u64, nbf: Option<u64>) -> serde_json::Value {
    let mut claims = json!({"sub": sub, "iat": iat, "exp": exp, "jti": "x"});
    if let Some(nbf) = nbf {
        claims["nbf"] = json!(nbf);
    }
    claims
}

fn now() -> u64 {
    (gateway::auth::system_clock())()
}

fn sign(alg: Algorithm, key: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// `POST /api/upload` with a bearer token: (status, error message).
async fn try_token(t: &Target, token: &str) -> (u16, String) {
    let response = t
        .app
        .http
        .post(format!("{}/api/upload", t.app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn jwt_with_alg_none_is_refused() {
    let t = target(&[]).await;
    let payload = b64(claims(CLIENT_ID, now(), now() + 600, None)
        .to_string()
        .as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_eq!(try_token(&t, &token).await, (401, "invalid token".into()));
        }
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn jwt_with_another_algorithm_over_our_key_is_refused() {
    let t = target(&[]).await;
    let claims = claims(CLIENT_ID, now(), now() + 600, None);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, SIGNING_KEY, &claims);
        assert_eq!(try_token(&t, &token).await, (401, "invalid token".into()));
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn jwt_signed_with_another_key_is_refused() {
    let t = target(&[]).await;
    let claims = claims(CLIENT_ID, now(), now() + 600, None);
    for key in ["another-key-0123456789", "", "test-signing-key-012345678"] {
        let token = sign(Algorithm::HS256, key, &claims);
        assert_eq!(try_token(&t, &token).await, (401, "invalid token".into()));
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn an_expired_jwt_is_refused() {
    let t = target(&[]).await;
    let expired = t.token_for(CLIENT_ID, Some(now() - 3601));
    assert_eq!(try_token(&t, &expired).await, (401, "token expired".into()));
    let just = sign(
        Algorithm::HS256,
        SIGNING_KEY,
        &claims(CLIENT_ID, 1, now(), None),
    );
    assert_eq!(try_token(&t, &just).await, (401, "token expired".into()));
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn a_jwt_not_yet_valid_is_refused() {
    let t = target(&[]).await;
    let future_iat = t.token_for(CLIENT_ID, Some(now() + 3600));
    let not_yet = (401, "token not yet valid".to_owned());
    assert_eq!(try_token(&t, &future_iat).await, not_yet);
    let nbf = claims(CLIENT_ID, now(), now() + 7200, Some(now() + 600));
    let future_nbf = sign(Algorithm::HS256, SIGNING_KEY, &nbf);
    assert_eq!(try_token(&t, &future_nbf).await, not_yet);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn a_jwt_with_a_tampered_payload_is_refused() {
    let t = target(&[]).await;
    let good = t.token_for(CLIENT_ID, None);
    let parts: Vec<&str> = good.split('.').collect();
    for payload in [
        claims("other-client", now(), now() + 600, None),
        claims(CLIENT_ID, now(), now() + 100_000_000, None),
    ] {
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(payload.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(try_token(&t, &forged).await, (401, "invalid token".into()));
    }
    // A flipped signature bit.
    let mut signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    signature[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    assert_eq!(try_token(&t, &flipped).await, (401, "invalid token".into()));
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn garbage_bearer_tokens_are_refused() {
    let t = target(&[]).await;
    let long = "a".repeat(10_000);
    for token in ["garbage", "a.b.c", "..", "e30.e30.e30", long.as_str()] {
        assert_eq!(try_token(&t, token).await.0, 401, "{token:.20}");
    }
    let upload = format!("{}/api/upload", t.app.url);
    for header in [
        "Bearer".as_bytes().to_vec(),
        b"Bearer    ".to_vec(),
        b"Token abc".to_vec(),
        format!(
            "Basic {}",
            b64(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
        )
        .into_bytes(),
        b"Bearer \xff\xfe".to_vec(),
    ] {
        let value = reqwest::header::HeaderValue::from_bytes(&header).unwrap();
        let post = t.app.http.post(&upload).header("authorization", value);
        assert_eq!(
            status_of(post).await,
            401,
            "{}",
            String::from_utf8_lossy(&header)
        );
    }
    assert_eq!(status_of(t.app.http.post(&upload)).await, 401);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn missing_malformed_or_wrong_basic_credentials_are_refused() {
    let t = target(&[]).await;
    let token_url = format!("{}/api/auth/token", t.app.url);
    let basic = |raw: &[u8]| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    };
    let mut headers: Vec<Vec<u8>> = vec![
        b"Basic".to_vec(),
        b"Basic !!!not-base64!!!".to_vec(),
        basic(b"no-colon-here").into_bytes(),
        basic(b"\xff\xfe:\xfd").into_bytes(),
        basic(format!("{CLIENT_ID}:wrong-secret").as_bytes()).into_bytes(),
        basic(format!("{CLIENT_ID}:").as_bytes()).into_bytes(),
        basic(b":").into_bytes(),
        basic(b"' OR '1'='1:' OR '1'='1").into_bytes(),
        basic(b"nobody:nothing").into_bytes(),
        basic(format!("{CLIENT_ID}:{}", "x".repeat(2000)).as_bytes()).into_bytes(),
        format!("Digest {}", b64(b"a:b")).into_bytes(),
    ];
    headers.push(format!("Bearer {}", t.token).into_bytes());
    for header in headers {
        let value = reqwest::header::HeaderValue::from_bytes(&header).unwrap();
        let response = t
            .app
            .http
            .post(&token_url)
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            401,
            "{}",
            String::from_utf8_lossy(&header)
        );
        assert!(response.headers().contains_key("www-authenticate"));
    }
    let missing = t.app.http.post(&token_url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let clients = t.count("api_clients").await;
    assert_eq!(clients, 1, "no client appears from a login attempt");
    t.assert_nothing_stored(1).await;
}

// ---- headers and body framing ---------------------------------------------------------------

#[tokio::test]
async fn huge_headers_are_refused_with_431() {
    let t = target(&[]).await;
    let head = |extra: &str| {
        format!(
            "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             {extra}Content-Length: {}\r\n\r\n",
            t.folder,
            t.token,
            GOOD_ROW.len()
        )
        .into_bytes()
    };
    let one_huge = head(&format!("X-Big: {}\r\n", "a".repeat(100 * 1024)));
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    for mut request in [one_huge, head(&many)] {
        request.extend_from_slice(GOOD_ROW);
        let statuses = raw(t.app.addr, &request, false).await;
        assert!(statuses == vec![431] || statuses.is_empty(), "{statuses:?}");
    }
    // The same request with small headers is fine: the 431 came from the size alone.
    let small = format!(
        "GET /api/upload/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         X-Big: {}\r\nConnection: close\r\n\r\n",
        t.folder,
        t.token,
        "a".repeat(1000)
    );
    assert_eq!(raw(t.app.addr, small.as_bytes(), false).await, vec![200]);
    let long_url = format!(
        "GET /api/upload/{}?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        t.folder,
        "q".repeat(70 * 1024)
    );
    let statuses = raw(t.app.addr, long_url.as_bytes(), false).await;
    assert!(
        statuses == vec![414] || statuses == vec![431] || statuses.is_empty(),
        "{statuses:?}"
    );
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn a_huge_content_length_is_refused_before_the_body() {
    let t = target(&["--max-chunk-bytes=1000000"]).await;
    let auth = format!("Authorization: Bearer {}", t.token);
    for (route, content_type) in [
        (format!("PUT /api/upload/{}/chunks/0", t.folder), "text/csv"),
        (
            format!("POST /api/upload/{}", t.folder),
            "multipart/form-data; boundary=b",
        ),
        ("POST /api/upload".to_owned(), "application/json"),
    ] {
        // Headers only: the answer must come without the body ever being sent.
        let request = format!(
            "{route} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: {content_type}\r\n\
             Content-Length: 1000000000000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        );
        let statuses = raw(t.app.addr, request.as_bytes(), false).await;
        assert_eq!(statuses, vec![413], "{route}");
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn an_invalid_or_conflicting_content_length_is_refused() {
    let t = target(&[]).await;
    for lengths in [
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 18446744073709551616\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 6\r\n",
    ] {
        let request = format!(
            "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             {lengths}Connection: close\r\n\r\n01/01/2023 00:00:01,a,1,Deposit\r\n",
            t.folder, t.token
        );
        assert_eq!(
            raw(t.app.addr, request.as_bytes(), false).await,
            vec![400],
            "{lengths}"
        );
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_smuggles_nothing() {
    let t = target(&[]).await;
    // The checksum covers the whole body, the declared length only its first part: 400. The
    // rest is read as a second request, which has no token: 401.
    let declared = GOOD_ROW;
    let smuggled = format!(
        "PUT /api/upload/{}/chunks/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        t.folder,
        GOOD_ROW.len()
    );
    let mut whole = declared.to_vec();
    whole.extend_from_slice(smuggled.as_bytes());
    whole.extend_from_slice(GOOD_ROW);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&whole))
    };
    let mut request = format!(
        "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         X-Checksum-SHA256: {sha}\r\nContent-Length: {}\r\n\r\n",
        t.folder,
        t.token,
        declared.len()
    )
    .into_bytes();
    request.extend_from_slice(&whole);
    assert_eq!(raw(t.app.addr, &request, false).await, vec![400, 401]);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn content_length_with_chunked_encoding_uses_chunked_and_closes() {
    let t = target(&[]).await;
    // hyper drops Content-Length when Transfer-Encoding is chunked and closes the connection
    // after the response, so the bytes after the chunked body are never read as a request.
    let smuggled = "GET /api/upload HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n{smuggled}",
        t.folder,
        t.token,
        GOOD_ROW.len(),
        String::from_utf8_lossy(GOOD_ROW)
    );
    assert_eq!(raw(t.app.addr, request.as_bytes(), false).await, vec![200]);
    let stored = t.app.stored_files();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        std::fs::read(&stored[0]).unwrap(),
        GOOD_ROW,
        "the chunked body, whole"
    );
    assert_eq!(t.app.ledger_rows().await, 1);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_off() {
    let t = target(&["--max-chunk-bytes=1000"]).await;
    let frames = (0..50).map(|_| Ok::<_, std::io::Error>(GOOD_ROW.to_vec()));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(frames));
    assert_eq!(status_of(t.put("0").body(body)).await, 413);
    let multipart = reqwest::Body::wrap_stream(futures_util::stream::iter(
        [multipart_body(
            "XBOUNDARYX",
            &[("file", Some("a.csv"), &csv_with_header(100))],
        )]
        .map(Ok::<_, std::io::Error>),
    ));
    let post = t.app.http.post(t.url("")).bearer_auth(&t.token);
    let post = post.header("content-type", "multipart/form-data; boundary=XBOUNDARYX");
    assert_eq!(status_of(post.body(multipart)).await, 413);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_stores_nothing() {
    let t = target(&[]).await;
    let mut request = format!(
        "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 100000\r\n\r\n",
        t.folder, t.token
    )
    .into_bytes();
    request.extend_from_slice(GOOD_ROW);
    // The client ends its side early: an incomplete body is an error, answered or not.
    let statuses = raw(t.app.addr, &request, true).await;
    assert!(statuses == vec![400] || statuses.is_empty(), "{statuses:?}");
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let t = target(&["--header-timeout-ms=300"]).await;
    let partial = format!(
        "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n",
        t.folder, t.token
    );
    // raw() waits up to 10 s: an answer or a close well before that is the timeout at work.
    let started = std::time::Instant::now();
    let statuses = raw(t.app.addr, partial.as_bytes(), false).await;
    assert!(statuses == vec![408] || statuses.is_empty(), "{statuses:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "held open");
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn stalled_raw_and_multipart_bodies_time_out() {
    let t = target(&["--body-frame-timeout-ms=300"]).await;
    let head = |route: &str, content_type: &str| {
        format!(
            "{route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: 100000\r\n\r\n",
            t.token
        )
        .into_bytes()
    };
    let mut put = head(
        &format!("PUT /api/upload/{}/chunks/0", t.folder),
        "text/csv",
    );
    put.extend_from_slice(&csv_with_header(2));
    let mut post = head(
        &format!("POST /api/upload/{}", t.folder),
        "multipart/form-data; boundary=XBOUNDARYX",
    );
    let body = multipart_body(
        "XBOUNDARYX",
        &[("file", Some("a.csv"), &csv_with_header(2))],
    );
    post.extend_from_slice(&body[..body.len() - 20]);
    for request in [put, post] {
        let started = std::time::Instant::now();
        assert_eq!(raw(t.app.addr, &request, false).await, vec![408]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    t.assert_nothing_stored(1).await;
}

/// Slow bodies cannot take every writer: beyond `INGEST_MAX_BODIES_AT_ONCE` a chunk is 503 at
/// once, and the slot comes back when the slow body ends.
#[tokio::test]
async fn slow_bodies_beyond_the_writer_slots_are_refused_at_once() {
    let t = target(&["--max-bodies-at-once=1", "--body-frame-timeout-ms=30000"]).await;
    let head = format!(
        "PUT /api/upload/{}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/csv\r\nContent-Length: 100000\r\n\r\n",
        t.folder, t.token
    );
    let start_slow = || async {
        let mut slow = tokio::net::TcpStream::connect(t.app.addr).await.unwrap();
        slow.write_all(head.as_bytes()).await.unwrap();
        slow.write_all(&csv_with_header(2)).await.unwrap();
        slow
    };
    // Once the slow body holds the only slot, another chunk is refused without waiting. A probe
    // can overtake the slow request (auth, rate limit and ledger lie between accept and slot):
    // then the slow one is the one refused, and another is started.
    let mut slow = start_slow().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let reason = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slow body held the slot"
        );
        let mut byte = [0u8; 1];
        let answered = tokio::time::timeout(Duration::from_millis(50), slow.peek(&mut byte)).await;
        if answered.is_ok() {
            slow = start_slow().await;
        }
        let response = t.app.put_chunk(&t.token, &t.folder, 1, GOOD_ROW).await;
        if response.status() == 503 {
            break response.text().await.unwrap();
        }
    };
    assert!(reason.contains("too many chunks"), "{reason}");
    drop(slow);
    wait_for("the slot to come back", Duration::from_secs(10), || async {
        let response = t.app.put_chunk(&t.token, &t.folder, 1, GOOD_ROW).await;
        (response.status() == 200).then_some(())
    })
    .await;
}

/// `rows` rejected rows of `bytes` each for chunk 0 of the target's upload (stored first).
async fn rejected_rows_of(t: &Target, rows: i32, bytes: i32) -> tokio_postgres::Client {
    assert_eq!(status_of(t.put("0").body(GOOD_ROW)).await, 200);
    let db = t.app.db.client().await.unwrap();
    let id = uuid::Uuid::parse_str(&t.folder).unwrap();
    db.execute(
        "INSERT INTO rejected_rows (upload_id, chunk_no, line_no, reason, raw_line)
         SELECT $1, 0, n, 'bad', repeat('x', $3) FROM generate_series(1, $2) n",
        &[&id, &rows, &bytes],
    )
    .await
    .unwrap();
    db
}

/// Takes every download slot with a `/rejected` request whose client never reads past the
/// first bytes of the answer (by then the download holds its slot and has read a page).
async fn stall_every_download(t: &Target) -> Vec<tokio::net::TcpStream> {
    let request = format!(
        "GET /api/upload/{}/rejected HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        t.folder, t.token
    );
    let mut stalled = Vec::new();
    for _ in 0..gateway::routes::rejected::MAX_AT_ONCE {
        let mut reader = tokio::net::TcpStream::connect(t.app.addr).await.unwrap();
        reader.write_all(request.as_bytes()).await.unwrap();
        let mut first = [0u8; 12];
        while reader.peek(&mut first).await.unwrap() < first.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            &first, b"HTTP/1.1 200",
            "a stalled download was not answered"
        );
        stalled.push(reader);
    }
    stalled
}

/// Waits (10 s at most) for a `/rejected` download to be answered 200: a slot came back.
async fn a_download_runs_again(t: &Target) {
    wait_for("a slot to come back", Duration::from_secs(10), || async {
        let download = t.app.http.get(t.url("/rejected")).bearer_auth(&t.token);
        (status_of(download).await == 200).then_some(())
    })
    .await;
}

/// A client that takes every download slot and stops reading holds them only while PostgreSQL
/// keeps their sessions: once the database ends them (its 60 s idle-in-transaction timeout, or
/// a terminated backend as here), other downloads run again. The slot used to be held by the
/// response, which a stalled client never lets go of: every `/rejected` got 503 for good.
#[tokio::test]
async fn stalled_downloads_give_their_slots_back_when_their_sessions_end() {
    let t = target(&[]).await;
    // About 24 MB: far more than the socket buffers of a client not reading.
    let db = rejected_rows_of(&t, 24_000, 1000).await;
    let stalled = stall_every_download(&t).await;
    let download = t.app.http.get(t.url("/rejected")).bearer_auth(&t.token);
    assert_eq!(status_of(download).await, 503, "all slots are taken");

    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'FETCH%'",
        &[],
    )
    .await
    .unwrap();
    a_download_runs_again(&t).await;
    drop(stalled);
}

/// A download whose last page is read ends its session (and frees its slot) then, whether or
/// not its client takes the last frame: the session used to stay open, no longer in a
/// transaction (so never ended by the database), for as long as the client stalled.
#[tokio::test]
async fn a_download_stalled_on_its_last_page_gives_its_slot_back() {
    let t = target(&[]).await;
    // One page (under 1000 rows) of about 10 MB, read before the client stalls on it.
    rejected_rows_of(&t, 999, 10_000).await;
    let stalled = stall_every_download(&t).await;
    a_download_runs_again(&t).await;
    drop(stalled);
}

#[tokio::test]
async fn trickled_raw_and_multipart_bodies_hit_the_body_deadline() {
    // A byte every 100 ms never trips the 2 s frame timeout: only the 1 s total deadline ends it.
    let t = target(&["--body-frame-timeout-ms=2000", "--body-deadline-secs=1"]).await;
    let head = |route: &str, content_type: &str| {
        format!(
            "{route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: 100000\r\n\r\n",
            t.token
        )
        .into_bytes()
    };
    let put = (
        head(
            &format!("PUT /api/upload/{}/chunks/0", t.folder),
            "text/csv",
        ),
        csv_with_header(3),
    );
    let post = (
        head(
            &format!("POST /api/upload/{}", t.folder),
            "multipart/form-data; boundary=XBOUNDARYX",
        ),
        multipart_body(
            "XBOUNDARYX",
            &[("file", Some("a.csv"), &csv_with_header(3))],
        ),
    );
    for (head, body) in [put, post] {
        let started = std::time::Instant::now();
        let every = Duration::from_millis(100);
        // Without a total deadline the client could go on for ever; give up on the gateway at 8 s.
        let answer = trickle(t.app.addr, &head, &body, every, Duration::from_secs(8)).await;
        assert_eq!(
            statuses(answer.as_bytes()),
            vec![408],
            "after {:?}",
            started.elapsed()
        );
        assert!(
            answer.contains(r#"{"error":{"code":"timeout","#),
            "{answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "held open for {:?}",
            started.elapsed()
        );
    }
    t.assert_nothing_stored(1).await;
}

// ---- multipart ------------------------------------------------------------------------------

#[tokio::test]
async fn multipart_without_a_file_field_is_unprocessable() {
    let t = target(&[]).await;
    let form = reqwest::multipart::Form::new().text("other", "x");
    assert_eq!(status_of(t.post_form(form)).await, 422);
    let misnamed = t.post_multipart(&[("File", Some("a.csv"), &csv_with_header(1))]);
    assert_eq!(status_of(misnamed).await, 422);
    assert_eq!(status_of(t.post_multipart(&[])).await, 422);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn multipart_with_two_files_is_refused() {
    let t = target(&[]).await;
    let csv = csv_with_header(2);
    let two = t.post_multipart(&[("file", Some("a.csv"), &csv), ("file", Some("b.csv"), &csv)]);
    assert_eq!(status_of(two).await, 400);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn a_traversal_filename_is_stored_under_a_uuid_inside_the_upload_dir() {
    let t = target(&[]).await;
    let escape = t.app.upload_dir.join("../escaped-by-hostile-test.csv");
    let name = format!("../../../../..{}", escape.display());
    let csv = csv_with_header(2);
    assert_eq!(
        status_of(t.post_multipart(&[("file", Some(&name), &csv)])).await,
        200
    );
    assert!(!escape.exists(), "{} was written", escape.display());
    let stored = t.app.stored_files();
    assert_eq!(stored.len(), 1);
    let relative = stored[0].strip_prefix(&t.app.upload_dir).unwrap();
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(parts[0], t.folder);
    let stem = parts[1].strip_suffix(".csv").unwrap();
    assert!(
        stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit()),
        "{relative:?}"
    );
    assert_eq!(parts.len(), 2);
}

#[tokio::test]
async fn multipart_files_not_named_csv_are_refused() {
    let t = target(&[]).await;
    let csv = csv_with_header(2);
    for name in [
        "../../etc/passwd",
        "a.exe",
        "a.csv.exe",
        "a",
        ".csv.",
        "a.csv\0.exe",
    ] {
        let post = t.post_multipart(&[("file", Some(name), &csv)]);
        assert_eq!(status_of(post).await, 400, "{name:?}");
    }
    assert_eq!(
        status_of(t.post_multipart(&[("file", None, &csv)])).await,
        400
    );
    let xlsx = t.post_multipart(&[("file", Some("../a.XLSX"), &csv)]);
    assert_eq!(status_of(xlsx).await, 415);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn malformed_multipart_bodies_are_refused() {
    let t = target(&[]).await;
    let csv = csv_with_header(2);
    let post = || t.app.http.post(t.url("")).bearer_auth(&t.token);
    let no_boundary = post()
        .header("content-type", "multipart/form-data")
        .body(csv.clone());
    assert_eq!(status_of(no_boundary).await, 422);
    let not_multipart = post().header("content-type", "text/csv").body(csv.clone());
    assert_eq!(status_of(not_multipart).await, 422);
    let with_boundary = || post().header("content-type", "multipart/form-data; boundary=XB");
    assert_eq!(status_of(with_boundary().body(csv.clone())).await, 400);
    let mut unterminated = multipart_body("XB", &[("file", Some("a.csv"), &csv)]);
    unterminated.truncate(unterminated.len() - 8);
    assert_eq!(status_of(with_boundary().body(unterminated)).await, 400);
    let headless = t.post_multipart(&[("file", Some("a.csv"), GOOD_ROW)]);
    assert_eq!(status_of(headless).await, 400);
    t.assert_nothing_stored(1).await;
}

// ---- content that is not CSV text -----------------------------------------------------------

/// Binaries people upload by mistake (or on purpose), by their first bytes.
fn binaries() -> Vec<(&'static str, Vec<u8>)> {
    let mut xlsx = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00".to_vec();
    xlsx.extend_from_slice(b"[Content_Types].xml\xec\x97\xcbn\xdb0\x10E\xf7");
    vec![
        (
            "ELF",
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00".to_vec(),
        ),
        (
            "ZIP",
            b"PK\x03\x04\x0a\x00\x00\x00\x00\x00date,content".to_vec(),
        ),
        (
            "PNG",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00".to_vec(),
        ),
        ("xlsx", xlsx),
        (
            "PDF",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\x00<<>>".to_vec(),
        ),
        ("UTF-16LE", utf16(false)),
        ("UTF-16BE", utf16(true)),
        ("NUL at 0", b"\x00date,content,amount,type\r\n".to_vec()),
        ("NUL after 4 KiB", {
            let mut csv = csv_with_header(200);
            csv.extend_from_slice(b"01/01/2023 00:00:01,a\x00b,1,Deposit\r\n");
            csv
        }),
        (
            "Latin-1",
            b"date,content,amount,type\r\n01/01/2023 00:00:01,caf\xe9 cr\xe8me,1,Deposit\r\n"
                .to_vec(),
        ),
    ]
}

fn utf16(big_endian: bool) -> Vec<u8> {
    let text = String::from_utf8(csv_with_header(3)).unwrap();
    let mut out = if big_endian {
        vec![0xfe, 0xff]
    } else {
        vec![0xff, 0xfe]
    };
    for unit in text.encode_utf16() {
        let bytes = if big_endian {
            unit.to_be_bytes()
        } else {
            unit.to_le_bytes()
        };
        out.extend_from_slice(&bytes);
    }
    out
}

#[tokio::test]
async fn binaries_utf16_nul_bytes_and_latin1_are_unsupported_media() {
    let t = target(&[]).await;
    for (what, bytes) in binaries() {
        let put = t
            .put("0")
            .header("content-type", "text/csv")
            .body(bytes.clone());
        assert_eq!(status_of(put).await, 415, "PUT {what}");
        let post = t.post_multipart(&[("file", Some("renamed.csv"), &bytes)]);
        assert_eq!(status_of(post).await, 415, "multipart {what}");
    }
    t.assert_nothing_stored(1).await;
}

// ---- XLSX workbooks ---------------------------------------------------------------------------

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Sends `request` and checks it is refused with `status` and a message that says `why`.
async fn assert_refused(request: reqwest::RequestBuilder, status: u16, why: &str) {
    let response = request.send().await.unwrap();
    let got = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        got == status && message.contains(why),
        "{got} {message:?}, wanted {status} {why:?}"
    );
}

#[tokio::test]
async fn an_xlsx_workbook_is_stored_as_the_csv_of_its_first_sheet() {
    let t = target(&[]).await;
    let book = ingest_testkit::xlsx::original_workbook(0, 50);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&book))
    };
    let put = t
        .put("0")
        .header("content-type", XLSX)
        .header("x-checksum-sha256", sha)
        .body(book.clone());
    assert_eq!(status_of(put).await, 200);
    let files = t.app.stored_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let csv = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 51, "{csv}");
    assert_eq!(lines[0], "date,content,amount,type");
    assert_eq!(
        lines[1],
        "01/01/2023 00:00:00,\"Any text, there\",-1000,Withdrawal"
    );
    assert_eq!(
        lines[2],
        "01/01/2023 00:01:00,\"Any text, there\",-992.081,Deposit"
    );
    let message = &t.app.stream_messages(1, 1).await[0];
    assert!(message.has_header, "the sheet's first row is the header");
    // The original's multipart route takes a .xlsx file the same way.
    let form = t.post_multipart(&[("file", Some("statement.xlsx"), &book)]);
    assert_eq!(status_of(form).await, 200);
    assert_eq!(t.app.stored_files().len(), 2);
}

#[tokio::test]
async fn hostile_workbooks_are_refused_and_nothing_is_stored() {
    use ingest_testkit::xlsx::{workbook, Cell};
    // A 1 MB cap: the shared strings may expand to 1 MB, the whole workbook to 32 MB.
    let t = target(&["--max-chunk-bytes=1000000"]).await;
    let put = |body: Vec<u8>| t.put("0").header("content-type", XLSX).body(body);
    // A zip bomb: a member of 40 MB of zeros compresses to a few dozen KB.
    let bomb = workbook(
        &[vec![Cell::Text("date")]],
        &[("xl/media/image1.bin", vec![0u8; 40_000_000])],
    );
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    assert_eq!(status_of(put(bomb.clone())).await, 413, "zip bomb");
    let form = t.post_multipart(&[("file", Some("bomb.xlsx"), &bomb)]);
    assert_eq!(status_of(form).await, 413, "zip bomb, multipart");
    // Huge shared strings: one string of 2 MB (calamine would hold the table whole).
    let huge = workbook(&[vec![Cell::Owned("x".repeat(2_000_000))]], &[]);
    assert_eq!(status_of(put(huge)).await, 413, "shared strings");
    // The same table where the package's relationships put it (calamine follows them).
    // Two thousand strings of 1 KB: no text is long, the table is.
    let many: Vec<Vec<Cell>> = (0..2_000)
        .map(|i| vec![Cell::Owned(format!("{i:04}{}", "x".repeat(1000)))])
        .collect();
    let mut moved = ingest_testkit::xlsx::parts(&many);
    for (name, bytes) in &mut moved {
        if let Some(rest) = name.strip_prefix("xl/") {
            *name = format!("data/{rest}");
        }
        if name == "_rels/.rels" {
            *bytes = String::from_utf8(bytes.clone())
                .unwrap()
                .replace("xl/workbook.xml", "data/workbook.xml")
                .into_bytes();
        }
    }
    let moved = ingest_testkit::xlsx::zip(&moved);
    assert_refused(put(moved), 413, "data/sharedStrings.xml expands beyond").await;
    // A table claiming ten billion strings (calamine would reserve room for them up front).
    let mut claims = ingest_testkit::xlsx::parts(&[vec![Cell::Text("date")]]);
    for (name, bytes) in &mut claims {
        if name == "xl/sharedStrings.xml" {
            *bytes = String::from_utf8(bytes.clone())
                .unwrap()
                .replace("uniqueCount=\"1\"", "uniqueCount=\"10000000000\"")
                .into_bytes();
        }
    }
    let claims = ingest_testkit::xlsx::zip(&claims);
    assert_eq!(status_of(put(claims)).await, 415, "string count");
    // One cell's text past the cap (calamine allocates a cell's text whole).
    let long = workbook(&[vec![Cell::Inline("y".repeat(1_500_000))]], &[]);
    assert_refused(put(long), 413, "sheet1.xml holds a text of more than").await;
    // A sheet whose CSV is past the cap, from a small workbook: 300 rows of four 1 KB texts.
    let rows: Vec<Vec<Cell>> = (0..300)
        .map(|_| vec![Cell::Inline("z".repeat(1000)); 4])
        .collect();
    let wide = workbook(&rows, &[]);
    assert!(wide.len() < 100_000, "{}", wide.len());
    assert_refused(put(wide), 413, "the sheet is larger than").await;
    // One row repeating a long shared string: refused before the row is built whole.
    let mut row = vec![Cell::Owned("w".repeat(600_000))];
    row.extend((0..15).map(|_| Cell::Shared(0)));
    assert_refused(put(workbook(&[row], &[])), 413, "the sheet is larger than").await;
    // Wrong content: CSV text sent as a workbook, a zip that is no workbook.
    assert_eq!(status_of(put(csv_with_header(3))).await, 415, "not a zip");
    let mut zip = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut zip);
        writer
            .start_file("hello.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut writer, b"hello").unwrap();
        writer.finish().unwrap();
    }
    assert_eq!(status_of(put(zip.into_inner())).await, 415, "no workbook");
    // A workbook is compressed already; and its checksum is of the bytes sent.
    let book = ingest_testkit::xlsx::original_workbook(0, 3);
    let gzipped = put(gzip(&book)).header("content-encoding", "gzip");
    assert_eq!(status_of(gzipped).await, 400, "gzip");
    let wrong = put(book).header("x-checksum-sha256", "00".repeat(32));
    assert_eq!(status_of(wrong).await, 400, "checksum");
    t.assert_nothing_stored(1).await;
}

// ---- encodings, types and checksums ---------------------------------------------------------

#[tokio::test]
async fn gzip_and_zstd_bombs_are_cut_off_at_the_decoded_limit() {
    let t = target(&["--max-chunk-bytes=1000000"]).await;
    let zeros = vec![b'0'; 50_000_000];
    let gzip_bomb = gzip(&zeros);
    let zstd_bomb = zstd::encode_all(&zeros[..], 3).unwrap();
    drop(zeros);
    assert!(gzip_bomb.len() < 1_000_000 && zstd_bomb.len() < 1_000_000);
    for (encoding, bomb) in [("gzip", gzip_bomb), ("zstd", zstd_bomb)] {
        let put = t.put("0").header("content-encoding", encoding).body(bomb);
        assert_eq!(status_of(put).await, 413, "{encoding}");
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn corrupt_or_truncated_compressed_bodies_are_refused() {
    let t = target(&[]).await;
    let good = gzip(&csv_with_header(50));
    let mut corrupt = good.clone();
    corrupt[20] ^= 0xff;
    let truncated = good[..good.len() / 2].to_vec();
    let zstd_truncated = zstd::encode_all(&csv_with_header(50)[..], 3).unwrap()[..20].to_vec();
    for (encoding, body) in [
        ("gzip", corrupt),
        ("gzip", truncated),
        ("gzip", b"not gzip at all".to_vec()),
        ("zstd", zstd_truncated),
    ] {
        let put = t.put("0").header("content-encoding", encoding).body(body);
        assert_eq!(status_of(put).await, 400, "{encoding}");
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn unknown_encodings_and_content_types_are_unsupported() {
    let t = target(&[]).await;
    for encoding in ["br", "gzip, gzip", "deflate", "compress", "x-gzip"] {
        let put = t
            .put("0")
            .header("content-encoding", encoding)
            .body(GOOD_ROW);
        assert_eq!(status_of(put).await, 415, "{encoding}");
    }
    for content_type in [
        "application/json",
        "image/png",
        "application/zip",
        "text/html",
    ] {
        let put = t
            .put("0")
            .header("content-type", content_type)
            .body(GOOD_ROW);
        assert_eq!(status_of(put).await, 415, "{content_type}");
    }
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn checksum_mismatches_and_malformed_checksums_are_refused() {
    let t = target(&[]).await;
    let md5 = md5_hex(GOOD_ROW);
    let md5_b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&md5).unwrap());
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("x-md5-hash", "0".repeat(32))],
        vec![(
            "content-md5",
            base64::engine::general_purpose::STANDARD.encode([0u8; 16]),
        )],
        vec![("x-checksum-sha256", "00".repeat(32))],
        vec![("x-md5-hash", "zz".repeat(16))],
        vec![("x-md5-hash", md5[..30].to_owned())],
        vec![("content-md5", "%%%".to_owned())],
        vec![("x-checksum-sha256", "abc".to_owned())],
        vec![
            ("x-md5-hash", md5.clone()),
            (
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode([1u8; 16]),
            ),
        ],
    ];
    for headers in cases {
        let mut put = t.put("0").body(GOOD_ROW);
        for (name, value) in &headers {
            put = put.header(*name, value);
        }
        assert_eq!(status_of(put).await, 400, "{headers:?}");
    }
    let form = t.post_multipart(&[("file", Some("a.csv"), &csv_with_header(1))]);
    assert_eq!(status_of(form.header("x-md5-hash", md5_b64)).await, 400);
    t.assert_nothing_stored(1).await;
}

// ---- rate limits, JSON bodies, session state ------------------------------------------------

#[tokio::test]
async fn spoofed_forwarding_headers_do_not_change_the_rate_limit_key() {
    // One request per ~1000 s and a burst of 1: two requests pass per key.
    let t = target(&["--rate-limit-per-sec=0.001", "--rate-limit-burst=1"]).await;
    // Creating the upload spent one of this IP's two upload requests. Whatever the headers
    // claim, the next one passes the IP limit (and fails auth), the rest are limited.
    let mut statuses = Vec::new();
    for i in 0..3 {
        let put = t
            .app
            .http
            .put(t.url("/chunks/0"))
            .bearer_auth("not-a-token")
            .header("x-forwarded-for", format!("203.0.113.{i}, 10.0.0.{i}"))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=192.0.2.{i}"))
            .body(GOOD_ROW);
        statuses.push(status_of(put).await);
    }
    assert_eq!(statuses, vec![401, 429, 429]);
    let files = t.app.stored_files();
    assert!(files.is_empty(), "{files:?}");
    assert_eq!(t.count("chunks").await, 0);
    assert_eq!(t.count("uploads").await, 1);
    // (The sentinel of assert_nothing_stored would be rate limited too: the ledger is the proof.)
}

#[tokio::test]
async fn oversized_malformed_or_unexpected_json_bodies_are_refused() {
    let t = target(&[]).await;
    let create = || {
        t.app
            .http
            .post(format!("{}/api/upload", t.app.url))
            .bearer_auth(&t.token)
            .header("content-type", "application/json")
    };
    let huge = format!(r#"{{"dataset": "{}"}}"#, "a".repeat(100 * 1024));
    assert_eq!(status_of(create().body(huge.clone())).await, 413);
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        [huge.into_bytes()].map(Ok::<_, std::io::Error>),
    ));
    assert_eq!(status_of(create().body(chunked)).await, 413);
    for body in [
        "{",
        "[]",
        "null x",
        r#"{"dataset": "../../etc/passwd"}"#,
        r#"{"dataset": "transactions; DROP TABLE uploads"}"#,
        r#"{"expected_chunks": -1}"#,
        r#"{"expected_chunks": 99999999999}"#,
        r#"{"total_bytes": -5}"#,
        r#"{"on_error": "ignore"}"#,
        r#"{"admin": true}"#,
        r#"{"client_id": "other-client"}"#,
    ] {
        assert_eq!(status_of(create().body(body)).await, 400, "{body}");
    }
    let complete = t.app.http.post(t.url("/complete")).bearer_auth(&t.token);
    assert_eq!(status_of(complete.body(r#"{"chunks": -1}"#)).await, 400);
    t.assert_nothing_stored(1).await;
}

#[tokio::test]
async fn chunks_beyond_the_count_or_after_the_end_are_refused() {
    let t = target(&[]).await;
    let complete = t.app.http.post(t.url("/complete")).bearer_auth(&t.token);
    assert_eq!(status_of(complete.json(&json!({"chunks": 0}))).await, 200);
    assert_eq!(t.app.status(&t.token, &t.folder).await["state"], "done");
    assert_eq!(status_of(t.put("0").body(GOOD_ROW)).await, 409);
    let post = t.post_multipart(&[("file", Some("a.csv"), &csv_with_header(1))]);
    assert_eq!(status_of(post).await, 409);
    let declared = t.app.create_upload(&t.token).await;
    let complete = t
        .app
        .http
        .post(format!("{}/api/upload/{declared}/complete", t.app.url));
    let complete = complete.bearer_auth(&t.token).json(&json!({"chunks": 2}));
    assert_eq!(status_of(complete).await, 200);
    let beyond = t.app.put_chunk(&t.token, &declared, 2, GOOD_ROW).await;
    assert_eq!(beyond.status(), 400);
    t.assert_nothing_stored(2).await;
}

// ---- stale uploads --------------------------------------------------------------------------

/// Opens `n` uploads through the API, 32 at a time.
async fn open_uploads(t: &Target, n: usize) -> Vec<String> {
    futures_util::stream::iter(0..n)
        .map(|_| t.app.create_upload(&t.token))
        .buffer_unordered(32)
        .collect()
        .await
}

#[tokio::test]
async fn ten_thousand_abandoned_uploads_expire_and_their_files_are_removed() {
    let t = target(&["--rate-limit-per-sec=1000000", "--rate-limit-burst=100000"]).await;
    let abandoned = open_uploads(&t, 10_000).await;
    // Some abandoned uploads received chunks the engine (not running here) never loaded, and
    // one holds a temporary file a killed gateway left.
    for folder in &abandoned[..20] {
        assert_eq!(
            t.app
                .put_chunk(&t.token, folder, 0, GOOD_ROW)
                .await
                .status(),
            200
        );
    }
    let leftover = t.app.upload_dir.join(&abandoned[0]).join(".0123.part");
    std::fs::write(&leftover, b"half a chunk").unwrap();
    // Live uploads: an old one still receiving chunks, and one whose declared chunks all came
    // (they wait for an engine). Declared chunks that never came are no reason to live: that
    // upload expires (it used to stay `processing` for good).
    let (active, declared, never_came) = (&abandoned[20], &abandoned[21], &abandoned[22]);
    assert_eq!(
        t.app
            .put_chunk(&t.token, declared, 0, GOOD_ROW)
            .await
            .status(),
        200
    );
    for (folder, chunks) in [(declared, 1), (never_came, 3)] {
        let complete = t
            .app
            .http
            .post(format!("{}/api/upload/{folder}/complete", t.app.url));
        let complete = complete
            .bearer_auth(&t.token)
            .json(&json!({ "chunks": chunks }));
        assert_eq!(status_of(complete).await, 200);
    }
    // Time passes: everything is a day and an hour old, except the active upload's new chunk.
    let client = t.app.db.client().await.unwrap();
    client
        .batch_execute(
            "UPDATE uploads SET created_at = now() - interval '25 hours',
                                body_seen_at = body_seen_at - interval '25 hours';
             UPDATE chunks SET received_at = now() - interval '25 hours';",
        )
        .await
        .unwrap();
    assert_eq!(
        t.app
            .put_chunk(&t.token, active, 0, GOOD_ROW)
            .await
            .status(),
        200
    );

    let pool = gateway::server::database_pool(&t.app.db.url).await.unwrap();
    let chunks = ingest_runtime::chunk_store::ChunkStore::Directory(t.app.upload_dir.clone());
    let expiry = Expiry::new(
        pool,
        std::sync::Arc::new(chunks),
        Duration::from_secs(24 * 3600),
    );
    let done = expiry.sweep().await.unwrap();
    // The 10,000 opened here but the 2 live ones, and the test's own upload.
    assert_eq!((done.uploads, done.chunks, done.files), (9_999, 20, 21));
    assert_eq!(
        expiry.sweep().await.unwrap().uploads,
        0,
        "a second sweep finds nothing"
    );

    let states: Vec<(String, Option<String>, i64)> = client
        .query(
            "SELECT state, error, count(*) FROM uploads GROUP BY 1, 2 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        states,
        vec![
            ("failed".to_owned(), Some("expired".to_owned()), 9_999),
            ("processing".to_owned(), None, 1),
            ("receiving".to_owned(), None, 1),
        ]
    );
    let status = t.app.status(&t.token, never_came).await;
    assert_eq!(status["error"], "expired", "{status}");
    // Only the live uploads' chunk files are left; the expired chunks are failed, so an engine
    // that gets their messages later skips them.
    let mut files = t.app.stored_files();
    files.sort();
    let mut live = [active, declared].map(|folder| t.app.upload_dir.join(folder));
    live.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].starts_with(&live[0]) && files[1].starts_with(&live[1]),
        "{files:?}"
    );
    let failed: i64 = client
        .query_one(
            "SELECT count(*) FROM chunks WHERE state = 'failed' AND file_removed
               AND committed_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 20);
    let status = t.app.status(&t.token, &abandoned[5]).await;
    assert_eq!(
        (status["state"].as_str(), status["error"].as_str()),
        (Some("failed"), Some("expired"))
    );
    assert_eq!(status["chunks_failed"], 1);
    assert_eq!(
        t.app
            .put_chunk(&t.token, &abandoned[5], 1, GOOD_ROW)
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn the_gateway_expires_stale_uploads_by_itself() {
    let t = target(&["--upload-ttl-secs=1"]).await;
    // What a gateway killed mid-chunk leaves (a chunk sent now could race the 1 s expiry).
    let dir = t.app.upload_dir.join(&t.folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".0123.part"), GOOD_ROW).unwrap();
    let status = wait_for("the upload to expire", Duration::from_secs(30), || async {
        let status = t.app.status(&t.token, &t.folder).await;
        (status["state"] == "failed").then_some(status)
    })
    .await;
    assert_eq!(status["error"], "expired");
    wait_for(
        "its files to be removed",
        Duration::from_secs(10),
        || async { (t.app.stored_files().is_empty() && !dir.exists()).then_some(()) },
    )
    .await;
}
