//! The `/health`, `/ready` and `/metrics` answers both services give, written once: the engine
//! answers them on a port of their own ([`serve`]), the gateway on its API port, through its
//! route table. Each service says what its probes look at by implementing [`Probes`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerAddress;

/// A probe's answer.
pub type ProbeResponse = Response<Full<Bytes>>;

/// How long `/ready` waits for each dependency.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What a service's probes look at.
pub trait Probes: Send + Sync + 'static {
    /// PostgreSQL answers a query: `Ok`, or why not.
    fn database(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Where the stream broker is (`/ready` opens a TCP connection to it).
    fn broker(&self) -> &BrokerAddress;
    /// Dependencies whose loss only degrades the service (the gateway's Redis): each one's name
    /// and `None` while it is fine, else what the service does without it.
    fn degraded(&self) -> Vec<(&'static str, Option<String>)> {
        Vec::new()
    }
    /// The Prometheus exposition.
    fn metrics(&self) -> String;
}

/// `GET /health`: the process answers.
pub fn health() -> ProbeResponse {
    respond(
        StatusCode::OK,
        "application/json",
        json!({"status": "ok"}).to_string(),
    )
}

/// `GET /ready`: 200 while PostgreSQL and the stream broker are reachable, 503 otherwise; the
/// body says which is not (`status` is `ready`, `degraded` or `unavailable`).
pub async fn ready(probes: &impl Probes) -> ProbeResponse {
    let database = match tokio::time::timeout(READY_TIMEOUT, probes.database()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(err)) => format!("unreachable: {err}"),
        Err(_) => "unreachable: timed out".to_owned(),
    };
    let broker = probes.broker();
    let rabbitmq = match tokio::time::timeout(
        READY_TIMEOUT,
        tokio::net::TcpStream::connect((broker.host.as_str(), broker.port)),
    )
    .await
    {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(err)) => format!("unreachable: {err}"),
        Err(_) => "unreachable: timed out".to_owned(),
    };
    let healthy = database == "ok" && rabbitmq == "ok";
    let mut body = json!({"postgres": database, "rabbitmq": rabbitmq});
    let mut degraded = false;
    for (name, state) in probes.degraded() {
        degraded |= state.is_some();
        body[name] = json!(state.unwrap_or_else(|| "ok".to_owned()));
    }
    body["status"] = json!(match (healthy, degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ready",
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", body.to_string())
}

/// `GET /metrics`: the Prometheus exposition.
pub fn metrics(probes: &impl Probes) -> ProbeResponse {
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        probes.metrics(),
    )
}

/// Answers `/health`, `/ready` and `/metrics` on `listener` (anything else: 404) until `stop`
/// fires.
pub async fn serve(listener: TcpListener, probes: Arc<impl Probes>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(probes.clone(), request));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    probes: Arc<impl Probes>,
    request: Request<Incoming>,
) -> Result<ProbeResponse, Infallible> {
    Ok(match request.uri().path() {
        "/health" => health(),
        "/ready" => ready(&*probes).await,
        "/metrics" => metrics(&*probes),
        _ => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            json!({"error": {"code": "not_found", "message": "not found"}}).to_string(),
        ),
    })
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> ProbeResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
