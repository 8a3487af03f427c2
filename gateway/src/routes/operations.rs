//! What operators and their tools reach: `/health`, `/ready`, `/metrics`, and the docs pages.
//! Never rate limited: probes and scrapers must always get through.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::app::{AppState, HttpResponse};
use crate::errors::json_response;

/// `GET /health`: the process answers.
pub fn health() -> HttpResponse {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /ready`: PostgreSQL and the stream broker reachable (503 otherwise); Redis down only
/// degrades it, since the gateway then limits in process.
pub async fn ready(state: &AppState) -> HttpResponse {
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

/// `GET /metrics`: the Prometheus exposition.
pub fn metrics(state: &AppState) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
