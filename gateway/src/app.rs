//! The application: shared state and the dispatch of each [`Route`] to its handler.
//!
//! Every request is rate limited by client IP before anything else, then authenticated, then
//! rate limited by API client, and only then is its body touched: a refused client using
//! `Expect: 100-continue` never sends its body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use deadpool_postgres::Pool;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use ingest_rows::registry::Registry;
use ingest_runtime::chunk_store::ChunkStore;
use ingest_runtime::probes;

use crate::auth::Tokens;
use crate::client_ip::client_ip;
use crate::clients::ApiClients;
use crate::errors::ApiError;
use crate::metrics as names;
use crate::publish::Publisher;
use crate::ratelimit::{RateLimiter, RouteClass};
use crate::routes::uploads::Uploads;
use crate::routes::{auth, chunks, clients, datasets, rejected, uploads, Route};
use crate::settings::GatewaySettings;
use crate::{console, docs};

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
    /// The datasets uploads may name (`INGEST_DATASETS_DIR`).
    pub datasets: Arc<Registry>,
    /// The OpenAPI document the docs pages show, with those datasets described.
    pub openapi: Bytes,
    /// Downloads streaming at once ([`crate::routes::rejected`]): each holds a connection.
    pub downloads: Arc<tokio::sync::Semaphore>,
    /// Chunk bodies being written at once (`INGEST_MAX_BODIES_AT_ONCE`): each holds a blocking
    /// thread ([`crate::store::ChunkSink`]).
    pub bodies: Arc<tokio::sync::Semaphore>,
    /// Where stored chunks go (`INGEST_CHUNK_STORE`); temporary files live in its spool.
    pub chunks: Arc<ChunkStore>,
}

/// A response with a small in-memory body: what almost every handler answers.
pub type HttpResponse = Response<Full<Bytes>>;

/// A response whose body is streamed as it is produced (a download); every response is sent as
/// one of these.
pub type StreamedResponse = Response<UnsyncBoxBody<Bytes, std::io::Error>>;

/// An in-memory response as a streamed one.
pub fn streamed(response: HttpResponse) -> StreamedResponse {
    response.map(|body| body.map_err(|never| match never {}).boxed_unsync())
}

/// Handles one request; never fails at the HTTP level (errors become JSON responses).
pub async fn handle(
    state: Arc<AppState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<StreamedResponse, Infallible> {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let route = Route::parse(request.method(), &path);
    let response = match dispatch(&state, peer, route, request).await {
        Ok(response) => response,
        Err(err) => streamed(err.into_response()),
    };
    let status = response.status().as_u16().to_string();
    let label = route.label();
    metrics::counter!(names::HTTP_REQUESTS, "route" => label, "status" => status).increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => label)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Runs the route's handler after what guards it: the IP limit, authentication, the client limit.
async fn dispatch(
    state: &Arc<AppState>,
    peer: SocketAddr,
    route: Route<'_>,
    request: Request<Incoming>,
) -> Result<StreamedResponse, ApiError> {
    check_host(&request)?;
    match route {
        Route::Health => return Ok(streamed(probes::health())),
        Route::Ready => return Ok(streamed(probes::ready(&**state).await)),
        Route::Metrics => return Ok(streamed(probes::metrics(&**state))),
        Route::Docs => {
            let page =
                docs::serve(request.uri().path(), &state.openapi).ok_or(ApiError::NotFound)?;
            return Ok(streamed(page));
        }
        Route::Console => {
            let page = console::serve(request.uri().path()).ok_or(ApiError::NotFound)?;
            return Ok(streamed(page));
        }
        Route::VerifyToken => return auth::verify(state, &request).await.map(streamed),
        _ => {}
    }
    let Some(class) = route.class() else {
        return Err(ApiError::NotFound);
    };
    let ip = client_ip(
        peer.ip(),
        request.headers(),
        &state.settings.trusted_proxies.0,
    );
    limit(state, class, "ip", &ip.to_string()).await?;
    match route {
        Route::IssueToken => return auth::issue_token(state, &request).await.map(streamed),
        Route::TokenMethodNotAllowed => return Err(ApiError::MethodNotAllowed),
        _ => {}
    }
    let caller = auth::authenticate(state, &request).await?;
    limit(state, class, "client", &caller.client_id).await?;
    if let Some(scope) = route.scope() {
        caller.require(scope)?;
    }
    match route {
        Route::Rejected { folder } => {
            let upload = uploads::find(state, &caller.client_id, folder).await?;
            rejected::download(state, &upload, &request).await
        }
        route => client_route(state, &caller, route, request)
            .await
            .map(streamed),
    }
}

/// The API client's routes answered with an in-memory body.
async fn client_route(
    state: &AppState,
    caller: &auth::Caller,
    route: Route<'_>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let client_id = caller.client_id.as_str();
    match route {
        Route::ListDatasets => datasets::list(state).await,
        Route::ListClients => clients::list(state).await,
        Route::AddClient => clients::add(state, request).await,
        Route::DisableClient { client_id } => clients::disable(state, caller, client_id).await,
        Route::CreateUpload => uploads::create(state, client_id, request).await,
        Route::ListUploads => uploads::list(state, client_id, &request).await,
        Route::SendFile { folder } => {
            let upload = uploads::find(state, client_id, folder).await?;
            chunks::receive_multipart(state, &upload, request).await
        }
        Route::Status { folder } => {
            let upload = uploads::find(state, client_id, folder).await?;
            uploads::status(state, &upload).await
        }
        Route::Complete { folder } => {
            let upload = uploads::find(state, client_id, folder).await?;
            uploads::complete(state, &upload, request).await
        }
        Route::Withdraw { folder } => {
            let upload = uploads::find(state, client_id, folder).await?;
            uploads::withdraw(state, &upload, &request).await
        }
        Route::PutChunk { folder, chunk } => {
            let upload = uploads::find(state, client_id, folder).await?;
            chunks::receive_chunk(state, &upload, chunk_number(chunk)?, request).await
        }
        Route::RetryChunk { folder, chunk } => {
            let upload = uploads::find(state, client_id, folder).await?;
            chunks::retry(state, &upload, chunk_number(chunk)?).await
        }
        _ => Err(ApiError::NotFound),
    }
}

fn chunk_number(chunk: &str) -> Result<i32, ApiError> {
    chunk
        .parse::<i32>()
        .ok()
        .filter(|n| (0..1_000_000).contains(n))
        .ok_or_else(|| ApiError::BadRequest("chunk number must be 0 to 999999".into()))
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

async fn limit(state: &AppState, class: RouteClass, kind: &str, id: &str) -> Result<(), ApiError> {
    let decision = state.limiter.check(class, kind, id).await;
    if decision.allowed {
        Ok(())
    } else {
        metrics::counter!(names::RATE_LIMITED, "class" => class.as_str(), "kind" => kind.to_owned())
            .increment(1);
        Err(ApiError::RateLimited(decision.headers()))
    }
}
