//! What operators and their tools reach: `/health`, `/ready` and `/metrics`, answered by
//! [`ingest_runtime::probes`] from what this module says they look at. Never rate limited:
//! probes and scrapers must always get through.

use ingest_runtime::broker::BrokerAddress;
use ingest_runtime::probes::Probes;

use crate::app::AppState;

/// What `/health`, `/ready` and `/metrics` ([`ingest_runtime::probes`]) look at: PostgreSQL
/// through the pool, the stream broker, and Redis, whose loss only degrades the gateway (it then
/// limits in process).
impl Probes for AppState {
    async fn database(&self) -> Result<(), String> {
        let db = self.pool.get().await.map_err(|e| e.to_string())?;
        db.query_one("SELECT 1", &[])
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn broker(&self) -> &BrokerAddress {
        &self.settings.shared.rabbitmq_stream_url
    }

    fn degraded(&self) -> Vec<(&'static str, Option<String>)> {
        let redis = self
            .limiter
            .is_degraded()
            .then(|| "degraded: in-process rate limiting".to_owned());
        vec![("redis", redis)]
    }

    fn metrics(&self) -> String {
        self.metrics.render()
    }
}
