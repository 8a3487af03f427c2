//! The gateway's HTTP API: one keep-alive connection pool, one shared token, retries.
//!
//! Every call goes through [`ApiClient::execute`], which applies the policy of [`crate::retry`]:
//! transient failures back off, 429 waits for `Retry-After`, a refused token is renewed once,
//! and anything else comes back as an [`ApiError`] carrying the gateway's error code and message.
//! The token lives in a [`TokenCache`] that renews it ahead of its expiry.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use ingest_runtime::settings::Secret;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::api::{
    Complete, CreateUpload, ErrorBody, FileStored, TokenResponse, UploadCreated, UploadStatus,
};
use crate::retry::{classify, Attempts, RetryPolicy, Verdict};
use crate::token::{Token, TokenCache};

/// Why an API call failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the gateway URL {url:?} is not an http(s) URL")]
    BadUrl { url: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("the gateway refused the client credentials (401)")]
    BadCredentials,
    #[error("{what}: HTTP {status} {code}: {message}")]
    Rejected {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: gave up after {attempts} attempts; last failure: {last}")]
    GaveUp {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("{what}: unexpected answer: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
}

/// The client's identity at the gateway.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: Secret,
}

/// A successful answer's body and how many attempts it took.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Bytes,
    pub attempts: u32,
}

/// How a request proves who sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Basic,
    Bearer,
}

/// A client of the gateway's upload API.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    retry: RetryPolicy,
    token: TokenCache,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many connections a client keeps to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// A keep-alive pool: as many as requests in flight.
    Pool,
    /// One HTTP/1.1 keep-alive connection, for a client that sends one request at a time (the
    /// original's client).
    One,
}

impl ApiClient {
    /// A client for the gateway at `base_url` (e.g. `http://127.0.0.1:8000`).
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        retry: RetryPolicy,
        request_timeout: Duration,
    ) -> Result<Self, ApiError> {
        Self::with_connections(
            base_url,
            credentials,
            retry,
            request_timeout,
            Connections::Pool,
        )
    }

    /// [`ApiClient::new`], keeping `connections` to the gateway.
    pub fn with_connections(
        base_url: &str,
        credentials: Credentials,
        retry: RetryPolicy,
        request_timeout: Duration,
        connections: Connections,
    ) -> Result<Self, ApiError> {
        let bad_url = || ApiError::BadUrl {
            url: base_url.to_owned(),
        };
        // A trailing slash makes `join` keep any path prefix the gateway is mounted under.
        let base =
            Url::parse(&format!("{}/", base_url.trim_end_matches('/'))).map_err(|_| bad_url())?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad_url());
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(request_timeout)
            .tcp_nodelay(true);
        if connections == Connections::One {
            http = http.http1_only().pool_max_idle_per_host(1);
        }
        let http = http.build().map_err(ApiError::Build)?;
        Ok(Self {
            http,
            base,
            credentials,
            retry,
            token: TokenCache::default(),
        })
    }

    /// `POST /api/upload`: opens an upload and returns its folder.
    pub async fn create_upload(&self, body: &CreateUpload<'_>) -> Result<UploadCreated, ApiError> {
        let url = self.url("api/upload");
        let answer = self
            .execute("create upload", Auth::Bearer, |http| {
                http.post(url.clone()).json(body)
            })
            .await?;
        decode("create upload", &answer.body)
    }

    /// `POST /api/upload` without a body, as the original's client opened an upload: no chunk
    /// count is declared, so the upload ends by the gateway's settle rule.
    pub async fn create_bare_upload(&self) -> Result<UploadCreated, ApiError> {
        let url = self.url("api/upload");
        let answer = self
            .execute("create upload", Auth::Bearer, |http| http.post(url.clone()))
            .await?;
        decode("create upload", &answer.body)
    }

    /// `POST /api/upload/{folder}`: the original's multipart upload of one file, a part named
    /// `file` with `file_name` and no content type of its own (as Python's `requests` sends a
    /// `(name, bytes)` pair), and `X-MD5-Hash`. Returns the chunk number the gateway gave it
    /// and the attempts made.
    pub async fn post_file(
        &self,
        folder: &str,
        file_name: &str,
        body: Bytes,
        md5_hex: &str,
    ) -> Result<(u64, u32), ApiError> {
        let url = self.url(&format!("api/upload/{folder}"));
        let what = format!("file {file_name}");
        let answer = self
            .execute(&what, Auth::Bearer, |http| {
                let len = body.len() as u64;
                let part =
                    Part::stream_with_length(body.clone(), len).file_name(file_name.to_owned());
                http.post(url.clone())
                    .header("X-MD5-Hash", md5_hex)
                    .multipart(Form::new().part("file", part))
            })
            .await?;
        let stored: FileStored = decode(&what, &answer.body)?;
        Ok((stored.chunk, answer.attempts))
    }

    /// `PUT /api/upload/{folder}/chunks/{index}` with its SHA-256 (hex); returns the attempts
    /// made.
    pub async fn put_chunk(
        &self,
        folder: &str,
        index: u64,
        body: Bytes,
        sha256_hex: &str,
    ) -> Result<u32, ApiError> {
        let url = self.url(&format!("api/upload/{folder}/chunks/{index}"));
        let what = format!("chunk {index}");
        let answer = self
            .execute(&what, Auth::Bearer, |http| {
                http.put(url.clone())
                    .header(CONTENT_TYPE, "text/csv")
                    .header("X-Checksum-SHA256", sha256_hex)
                    .body(body.clone())
            })
            .await?;
        Ok(answer.attempts)
    }

    /// `POST /api/upload/{folder}/complete`: declares how many chunks the upload has.
    pub async fn complete(&self, folder: &str, chunks: u64) -> Result<(), ApiError> {
        let url = self.url(&format!("api/upload/{folder}/complete"));
        let body = Complete { chunks };
        self.execute("complete", Auth::Bearer, |http| {
            http.post(url.clone()).json(&body)
        })
        .await?;
        Ok(())
    }

    /// `GET /api/upload/{folder}`.
    pub async fn status(&self, folder: &str) -> Result<UploadStatus, ApiError> {
        let url = self.url(&format!("api/upload/{folder}"));
        let answer = self
            .execute("status", Auth::Bearer, |http| http.get(url.clone()))
            .await?;
        decode("status", &answer.body)
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("a relative path should join onto an http base URL")
    }

    /// `POST /api/auth/token`. Boxed because `execute` calls it (through the token cache).
    fn fetch_token(&self) -> BoxFuture<'_, Result<Token, ApiError>> {
        Box::pin(async move {
            let url = self.url("api/auth/token");
            let obtained = Instant::now();
            let answer = self
                .execute("token", Auth::Basic, |http| http.post(url.clone()))
                .await?;
            let token: TokenResponse = decode("token", &answer.body)?;
            tracing::debug!(expires_in = token.expires_in, "token obtained");
            let lifetime = Duration::from_secs(token.expires_in);
            Ok(Token::new(token.token, obtained, lifetime))
        })
    }

    /// Sends the request `build` makes until it succeeds or the retry policy gives up.
    async fn execute(
        &self,
        what: &str,
        auth: Auth,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Answer, ApiError> {
        let mut attempts = Attempts::new(self.retry);
        let mut renewed = false;
        loop {
            attempts.start();
            let mut request = build(&self.http);
            let mut used = None;
            match auth {
                Auth::Basic => {
                    let Credentials {
                        client_id,
                        client_secret,
                    } = &self.credentials;
                    request = request.basic_auth(client_id, Some(client_secret.expose()));
                }
                Auth::Bearer => {
                    let token = self.token.get(|| self.fetch_token()).await?;
                    request = request.bearer_auth(&token);
                    used = Some(token);
                }
            }
            let failure = match request.send().await {
                Err(err) => transport_failure(&err),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match classify(status, retry_after.as_deref()) {
                        Verdict::Success => match response.bytes().await {
                            Ok(body) => {
                                return Ok(Answer {
                                    body,
                                    attempts: attempts.made(),
                                })
                            }
                            Err(err) => transport_failure(&err),
                        },
                        Verdict::Reauthenticate if auth == Auth::Basic => {
                            return Err(ApiError::BadCredentials)
                        }
                        Verdict::Reauthenticate if !renewed => {
                            // The gateway may have rotated its key or restarted: one fresh
                            // token is worth a try, a second refusal is not.
                            renewed = true;
                            if let Some(used) = &used {
                                self.token.forget(used).await;
                            }
                            continue;
                        }
                        Verdict::Throttled(wait) => {
                            let Some(delay) = attempts.after_throttle(wait, rand::random()) else {
                                return Err(ApiError::GaveUp {
                                    what: what.to_owned(),
                                    attempts: attempts.made(),
                                    last: "HTTP 429 too many requests".to_owned(),
                                });
                            };
                            tracing::debug!(what, delay_ms = delay.as_millis() as u64, "throttled");
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        Verdict::Transient => {
                            let body = response.text().await.unwrap_or_default();
                            format!("HTTP {status}: {}", excerpt(&body))
                        }
                        Verdict::Reauthenticate | Verdict::Fatal => {
                            let body = response.bytes().await.unwrap_or_default();
                            return Err(rejected(what, status, &body));
                        }
                    }
                }
            };
            let Some(delay) = attempts.after_transient(rand::random()) else {
                return Err(ApiError::GaveUp {
                    what: what.to_owned(),
                    attempts: attempts.made(),
                    last: failure,
                });
            };
            tracing::warn!(
                what,
                attempt = attempts.made(),
                delay_ms = delay.as_millis() as u64,
                error = %failure,
                "retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

fn transport_failure(err: &reqwest::Error) -> String {
    // reqwest's Display hides the cause ("error sending request"): show the chain.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The error for a refused request, from the gateway's JSON error body when it sent one.
fn rejected(what: &str, status: StatusCode, body: &[u8]) -> ApiError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => (error.code, error.message),
        Err(_) => (
            status.canonical_reason().unwrap_or("error").to_owned(),
            excerpt(&String::from_utf8_lossy(body)),
        ),
    };
    ApiError::Rejected {
        what: what.to_owned(),
        status: status.as_u16(),
        code,
        message,
    }
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|source| ApiError::Decode {
        what: what.to_owned(),
        source,
    })
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_error_body_gives_code_and_message() {
        let err = rejected(
            "chunk 3",
            StatusCode::CONFLICT,
            br#"{"error":{"code":"chunk_conflict","message":"chunk 3 differs"}}"#,
        );
        assert_eq!(
            err.to_string(),
            "chunk 3: HTTP 409 chunk_conflict: chunk 3 differs"
        );
        let err = rejected("status", StatusCode::NOT_FOUND, b"no such page");
        assert_eq!(err.to_string(), "status: HTTP 404 Not Found: no such page");
    }

    #[test]
    fn base_urls_must_be_http() {
        let creds = Credentials {
            client_id: "id".into(),
            client_secret: Secret::new("s"),
        };
        let make = |url: &str| {
            ApiClient::new(
                url,
                creds.clone(),
                RetryPolicy::default(),
                Duration::from_secs(1),
            )
        };
        assert!(matches!(make("ftp://x"), Err(ApiError::BadUrl { .. })));
        assert!(matches!(make("not a url"), Err(ApiError::BadUrl { .. })));
        let client = make("http://127.0.0.1:8000/prefix/").expect("an http URL should do");
        assert_eq!(
            client.url("api/upload").as_str(),
            "http://127.0.0.1:8000/prefix/api/upload"
        );
    }
}
