//! The engine's small HTTP port: `/health`, `/ready` and `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use ingest_contract::streams::BrokerAddress;

use crate::lag::PartitionLag;

/// What the probes look at.
pub struct Probe {
    pub database_url: String,
    pub broker: BrokerAddress,
    pub metrics: PrometheusHandle,
    /// The owned partitions' backlog, rendered after the recorder's metrics.
    pub lag: Arc<PartitionLag>,
}

/// Serves the probes until `stop` fires.
pub async fn serve(listener: TcpListener, probe: Arc<Probe>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let probe = probe.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(probe.clone(), request));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    probe: Arc<Probe>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match request.uri().path() {
        "/health" => (
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#.to_owned(),
        ),
        "/ready" => ready(&probe).await,
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", metrics(&probe)),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":{"code":"not_found","message":"not found"}}"#.to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// The recorder's metrics, then the per-partition backlog (see [`crate::lag`]).
fn metrics(probe: &Probe) -> String {
    let mut body = probe.metrics.render();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    probe.lag.render(&mut body);
    body
}

async fn ready(probe: &Probe) -> (StatusCode, &'static str, String) {
    let database = tokio::time::timeout(Duration::from_secs(2), async {
        let client = ingest_contract::db::connect(&probe.database_url)
            .await
            .ok()?;
        client.query_one("SELECT 1", &[]).await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let broker = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((probe.broker.host.as_str(), probe.broker.port)),
    )
    .await
    .is_ok_and(|connected| connected.is_ok());
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let body = serde_json::json!({
        "status": if database && broker { "ready" } else { "unavailable" },
        "postgres": word(database),
        "rabbitmq": word(broker),
    });
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, "application/json", body.to_string())
}
