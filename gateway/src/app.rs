//! The application: shared state and the request router.
//!
//! Every request is rate limited by client IP before anything else, then authenticated, then
//! rate limited by API client, and only then is its body touched: a refused client using
//! `Expect: 100-continue` never sends its body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Pool;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use uuid::Uuid;

use crate::auth::{self, Tokens};
use crate::client_ip::client_ip;
use crate::clients::ApiClients;
use crate::errors::{json_response, ApiError};
use crate::metrics as names;
use crate::publish::Publisher;
use crate::ratelimit::{RateLimiter, RouteClass};
use crate::settings::GatewaySettings;
use crate::upload::{NewUpload, Upload, Uploads};
use crate::{docs, ingest};

/// Everything a request handler may need, shared by all connections.
pub struct AppState {
    pub settings: GatewaySettings,
    pub tokens: Tokens,
    pub clients: ApiClients,
    pub uploads: Uploads,
    pub publisher: Arc<Publisher>,
    pub limiter: RateLimiter,
    pub metrics: PrometheusHandle,
    pub pool: Pool,
}

/// A response with a small in-memory body.
pub type HttpResponse = Response<Full<Bytes>>;

/// Handles one request; never fails at the HTTP level (errors become JSON responses).
pub async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let started = Instant::now();
    let route = route_label(request.method(), request.uri().path());
    let response = match route_request(&state, peer, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "route" => route, "status" => status).increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// A low-cardinality name of the route, for metrics (never ids).
fn route_label(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (_, ["", "api", "auth", "token"]) => "auth_token",
        (_, ["", "api", "auth", "verify"]) => "auth_verify",
        (_, ["", "api", "upload"]) => "upload_create",
        (&Method::POST, ["", "api", "upload", _]) => "upload_multipart",
        (_, ["", "api", "upload", _]) => "upload_status",
        (_, ["", "api", "upload", _, "complete"]) => "upload_complete",
        (_, ["", "api", "upload", _, "chunks", _]) => "upload_chunk",
        (_, ["", "health"]) => "health",
        (_, ["", "ready"]) => "ready",
        (_, ["", "metrics"]) => "metrics",
        _ => "other",
    }
}

async fn route_request(
    state: &Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    check_host(&request)?;
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let segments: Vec<&str> = path.split('/').collect();
    // Operational endpoints are not rate limited: probes and scrapers must always get through.
    match (&method, segments.as_slice()) {
        (&Method::GET, ["", "health"]) => {
            return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
        }
        (&Method::GET, ["", "ready"]) => return Ok(ready(state).await),
        (&Method::GET, ["", "metrics"]) => return Ok(metrics_response(state)),
        _ => {}
    }
    if let Some(response) = docs::serve(&method, &path) {
        return Ok(response);
    }
    // nginx's auth_request subrequest: an HMAC check, not limited on its own, because the upload
    // it guards is limited when it arrives, and nginx turns any answer but 2xx/401/403 into 500.
    if method == Method::GET && segments.as_slice() == ["", "api", "auth", "verify"] {
        authenticate(state, &request).await?;
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("a static response should build"));
    }
    let class = match segments.as_slice() {
        ["", "api", "auth", ..] => RouteClass::Auth,
        ["", "api", "upload", _] | ["", "api", "upload", _, ..] if method == Method::GET => {
            RouteClass::Status
        }
        ["", "api", "upload", ..] => RouteClass::Upload,
        _ => return Err(ApiError::NotFound),
    };
    let ip = client_ip(
        peer.ip(),
        request.headers(),
        &state.settings.trusted_proxies.0,
    );
    limit(state, class, "ip", &ip.to_string()).await?;

    match (&method, segments.as_slice()) {
        (&Method::POST, ["", "api", "auth", "token"]) => issue_token(state, &request).await,
        (_, ["", "api", "auth", "token"]) => Err(ApiError::MethodNotAllowed),
        _ => {
            let client_id = authenticate(state, &request).await?;
            limit(state, class, "client", &client_id).await?;
            upload_routes(state, &client_id, request, &method, &segments).await
        }
    }
}

async fn upload_routes(
    state: &Arc<AppState>,
    client_id: &str,
    request: Request<Incoming>,
    method: &Method,
    segments: &[&str],
) -> Result<HttpResponse, ApiError> {
    match (method, segments) {
        (&Method::POST, ["", "api", "upload"] | ["", "api", "upload", ""]) => {
            let new = read_json::<NewUpload>(request).await?.unwrap_or_default();
            let upload = state.uploads.create(client_id, new).await?;
            // 200, not 201: the original answered 200 and its own client test asserts it.
            Ok(json_response(
                StatusCode::OK,
                &json!({"folder": upload.upload_id, "dataset": upload.dataset, "state": upload.state,
                        "expected_chunks": upload.expected_chunks}),
            ))
        }
        (&Method::POST, ["", "api", "upload", folder]) => {
            let upload = find_upload(state, client_id, folder).await?;
            ingest::receive_multipart(state, &upload, request).await
        }
        (&Method::GET, ["", "api", "upload", folder]) => {
            let upload = find_upload(state, client_id, folder).await?;
            let status = state.uploads.status(&upload).await?;
            Ok(json_response(StatusCode::OK, &json!(status)))
        }
        (&Method::POST, ["", "api", "upload", folder, "complete"]) => {
            let upload = find_upload(state, client_id, folder).await?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Complete {
                chunks: i32,
            }
            let body = read_json::<Complete>(request)
                .await?
                .ok_or_else(|| ApiError::BadRequest("body {\"chunks\": N} is required".into()))?;
            let new_state = state.uploads.complete(&upload, body.chunks).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"folder": upload.upload_id, "state": new_state, "expected_chunks": body.chunks}),
            ))
        }
        (&Method::PUT, ["", "api", "upload", folder, "chunks", chunk]) => {
            let upload = find_upload(state, client_id, folder).await?;
            let chunk_no = chunk
                .parse::<i32>()
                .ok()
                .filter(|n| (0..1_000_000).contains(n))
                .ok_or_else(|| ApiError::BadRequest("chunk number must be 0 to 999999".into()))?;
            ingest::receive_chunk(state, &upload, chunk_no, request).await
        }
        (_, ["", "api", "upload", ..]) => Err(ApiError::NotFound),
        _ => Err(ApiError::NotFound),
    }
}

/// RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request without exactly one `Host`
/// (nginx enforces it at the edge, but the gateway is also run bare).
fn check_host(request: &Request<Incoming>) -> Result<(), ApiError> {
    if request.version() != http::Version::HTTP_11 {
        return Ok(());
    }
    match request.headers().get_all(http::header::HOST).iter().count() {
        1 => Ok(()),
        0 => Err(ApiError::BadRequest(
            "HTTP/1.1 requests need a Host header".into(),
        )),
        _ => Err(ApiError::BadRequest("more than one Host header".into())),
    }
}

/// Parses a folder id; anything but a UUID is simply not found (never a path).
async fn find_upload(state: &AppState, client_id: &str, folder: &str) -> Result<Upload, ApiError> {
    let upload_id = Uuid::parse_str(folder).map_err(|_| ApiError::NotFound)?;
    state.uploads.find(client_id, upload_id).await
}

async fn limit(state: &AppState, class: RouteClass, kind: &str, id: &str) -> Result<(), ApiError> {
    let decision = state.limiter.check(class, kind, id).await;
    if decision.allowed {
        Ok(())
    } else {
        metrics::counter!(names::RATE_LIMITED, "class" => class_label(class), "kind" => kind.to_owned())
            .increment(1);
        Err(ApiError::RateLimited(decision.headers()))
    }
}

fn class_label(class: RouteClass) -> &'static str {
    match class {
        RouteClass::Auth => "auth",
        RouteClass::Upload => "upload",
        RouteClass::Status => "status",
    }
}

async fn authenticate(state: &AppState, request: &Request<Incoming>) -> Result<String, ApiError> {
    let verified = auth::bearer(request.headers()).and_then(|token| state.tokens.verify(token));
    match verified {
        Ok(claims) => {
            // A valid signature is not enough: the client must still exist and be enabled.
            let enabled = state.clients.is_enabled(&claims.sub).await.map_err(|err| {
                tracing::warn!(error = %err, "cannot check whether a client is enabled");
                ApiError::Unavailable("cannot check the client now; retry later".into())
            })?;
            if !enabled {
                metrics::counter!(names::AUTH_FAILURES, "reason" => "client_disabled").increment(1);
                return Err(ApiError::Unauthorized("client is disabled or unknown"));
            }
            Ok(claims.sub)
        }
        Err(err) => {
            let reason = match err {
                auth::TokenError::Missing => "missing",
                auth::TokenError::Expired => "expired",
                auth::TokenError::NotYetValid => "not_yet_valid",
                auth::TokenError::Invalid => "invalid",
            };
            metrics::counter!(names::AUTH_FAILURES, "reason" => reason).increment(1);
            Err(ApiError::Unauthorized(match err {
                auth::TokenError::Missing => "not authenticated",
                auth::TokenError::Expired => "token expired",
                auth::TokenError::NotYetValid => "token not yet valid",
                auth::TokenError::Invalid => "invalid token",
            }))
        }
    }
}

async fn issue_token(
    state: &AppState,
    request: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let Some((id, secret)) = auth::basic_credentials(request.headers()) else {
        metrics::counter!(names::AUTH_FAILURES, "reason" => "no_credentials").increment(1);
        return Err(ApiError::Unauthorized(
            "client credentials required (HTTP Basic)",
        ));
    };
    let valid = state
        .clients
        .verify(&id, &secret)
        .await
        .map_err(|err| ApiError::Internal(err.into()))?;
    if !valid {
        metrics::counter!(names::AUTH_FAILURES, "reason" => "bad_credentials").increment(1);
        return Err(ApiError::Unauthorized("invalid client credentials"));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!(state.tokens.issue(&id)),
    ))
}

/// Reads a small JSON body (at most 64 KiB); an empty body is `None`.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<Option<T>, ApiError> {
    const MAX: usize = 64 * 1024;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX as u64) {
        return Err(ApiError::PayloadTooLarge(
            "JSON body larger than 64 KiB".into(),
        ));
    }
    let body = tokio::time::timeout(
        Duration::from_secs(30),
        Limited::new(request.into_body(), MAX).collect(),
    )
    .await
    .map_err(|_| ApiError::Timeout)?
    .map_err(|err| {
        // A body without Content-Length can still be too large: same answer as with one.
        if err.is::<http_body_util::LengthLimitError>() {
            ApiError::PayloadTooLarge("JSON body larger than 64 KiB".into())
        } else {
            ApiError::BadRequest(format!("cannot read body: {err}"))
        }
    })?
    .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|err| ApiError::BadRequest(format!("invalid JSON body: {err}")))
}

async fn ready(state: &AppState) -> HttpResponse {
    let database = match tokio::time::timeout(Duration::from_secs(2), async {
        let db = state.pool.get().await.map_err(|e| e.to_string())?;
        db.query_one("SELECT 1", &[])
            .await
            .map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(err)) => format!("unreachable: {err}"),
        Err(_) => "unreachable: timed out".to_owned(),
    };
    let broker = &state.settings.shared.rabbitmq_stream_url;
    let rabbitmq = match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((broker.host.as_str(), broker.port)),
    )
    .await
    {
        Ok(Ok(_)) => "ok".to_owned(),
        _ => "unreachable".to_owned(),
    };
    // Without Redis the gateway still limits, in process: degraded, not unready.
    let redis = if state.limiter.is_degraded() {
        "degraded: in-process rate limiting"
    } else {
        "ok"
    };
    let healthy = database == "ok" && rabbitmq == "ok";
    let status = if !healthy {
        "unavailable"
    } else if redis == "ok" {
        "ready"
    } else {
        "degraded"
    };
    json_response(
        if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &json!({"status": status, "postgres": database, "rabbitmq": rabbitmq, "redis": redis}),
    )
}

fn metrics_response(state: &AppState) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
