//! What the engine's probe port (`/health`, `/ready`, `/metrics`, served by
//! [`ingest_runtime::probes`]) looks at.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use ingest_runtime::broker::BrokerAddress;
use ingest_runtime::probes::Probes;

use crate::lag::PartitionLag;

/// The engine's dependencies and metrics, as its probes see them.
pub struct Probe {
    pub database_url: String,
    pub broker: BrokerAddress,
    pub metrics: PrometheusHandle,
    /// The owned partitions' backlog, rendered after the recorder's metrics.
    pub lag: Arc<PartitionLag>,
}

impl Probes for Probe {
    async fn database(&self) -> Result<(), String> {
        ingest_runtime::db::answers(&self.database_url).await
    }

    fn broker(&self) -> &BrokerAddress {
        &self.broker
    }

    /// The recorder's metrics, then the per-partition backlog (see [`crate::lag`]).
    fn metrics(&self) -> String {
        let mut body = self.metrics.render();
        if !body.is_empty() && !body.ends_with('\n') {
            body.push('\n');
        }
        self.lag.render(&mut body);
        body
    }
}
