//! Logs and metrics set-up shared by the binaries.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Log output format, chosen with `INGEST_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber; `RUST_LOG` filters (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Buckets (seconds) for latencies from a millisecond to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the global Prometheus recorder (histograms with explicit buckets, not summaries)
/// once per process and returns the handle that renders `/metrics`. Tests start several apps in
/// one process: they share the one recorder.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("latency buckets should be non-empty")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .expect("no other metrics recorder should be installed");
            handle
        })
        .clone()
}

/// What kind of series a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A label of a family, with every value it takes when they are known in advance (empty when
/// they are not: such series appear with their first sample).
#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// One metric family, as a service's catalogue declares it: its name, kind, `# HELP` text and
/// labels. Each service lists its families in one place (`gateway::metrics::FAMILIES`,
/// `engine::metrics::FAMILIES`); the dashboard test reads those catalogues.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [Label],
}

/// Describes every family and creates each series whose label values are all known, at zero:
/// `/metrics` lists them from the first scrape, so dashboards show 0 rather than "No data" and
/// `rate()` sees the first increment. Call once the recorder is installed; idempotent.
pub fn register(families: &[Family]) {
    use metrics::{
        counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    };
    for family in families {
        match family.kind {
            Kind::Counter => describe_counter!(family.name, family.help),
            Kind::Gauge => describe_gauge!(family.name, family.help),
            Kind::Histogram => describe_histogram!(family.name, family.help),
        }
        if family.labels.iter().any(|label| label.values.is_empty()) {
            continue;
        }
        let mut series: Vec<Vec<(&'static str, &'static str)>> = vec![Vec::new()];
        for label in family.labels {
            series = series
                .into_iter()
                .flat_map(|labels| {
                    label.values.iter().map(move |value| {
                        let mut labels = labels.clone();
                        labels.push((label.name, *value));
                        labels
                    })
                })
                .collect();
        }
        for labels in series {
            // Registering a series is what makes the exporter list it, at zero.
            match family.kind {
                Kind::Counter => drop(counter!(family.name, &labels)),
                Kind::Gauge => drop(gauge!(family.name, &labels)),
                Kind::Histogram => drop(histogram!(family.name, &labels)),
            }
        }
    }
}
