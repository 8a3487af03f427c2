//! The engine's settings: flags override `INGEST_*` environment variables, which override
//! defaults that work against local services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ingest_runtime::settings::{parse_millis, SharedSettings};
use ingest_runtime::telemetry::LogFormat;

/// Everything the engine needs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineSettings {
    #[command(flatten)]
    pub shared: SharedSettings,

    /// Address of the engine's small HTTP port: /health, /ready, /metrics.
    #[arg(long, env = "INGEST_ENGINE_ADDR", default_value = "127.0.0.1:9000")]
    pub addr: SocketAddr,

    /// How many chunks are COPYed into PostgreSQL at once by this process.
    #[arg(long, env = "INGEST_COPY_CONNECTIONS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub copy_connections: u16,

    /// A chunk file bigger than this many bytes is cut at record boundaries into pieces of at
    /// most about this size, loaded at once over several COPY connections (each piece exactly
    /// once; see `engine/src/pieces.rs`). Chunks of uploads with `on_error = reject-chunk` are
    /// never cut: their rows load all or none.
    #[arg(long, env = "INGEST_PIECE_BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub piece_bytes: u64,

    /// Engines sharing the partitions form a group; each group consumes every chunk once.
    #[arg(long, env = "INGEST_CONSUMER_GROUP", default_value = "engine")]
    pub consumer_group: String,

    /// Name of this engine process in the group (default: random per start).
    #[arg(long, env = "INGEST_ENGINE_ID")]
    pub engine_id: Option<String>,

    /// How long a partition lease lasts without renewal, in ms: a dead engine's partitions are
    /// taken over after this long.
    #[arg(long = "lease-ttl-ms", env = "INGEST_LEASE_TTL_MS", default_value = "5000", value_parser = parse_millis("INGEST_LEASE_TTL_MS"))]
    pub lease_ttl: Duration,

    /// Move loaded chunk files here instead of deleting them.
    #[arg(long, env = "INGEST_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,

    /// Longest accepted CSV record, in bytes.
    #[arg(long, env = "INGEST_MAX_LINE_BYTES", default_value_t = 64 * 1024)]
    pub max_line_bytes: usize,

    /// How long in-flight chunks may take to commit after a shutdown signal, in ms.
    #[arg(long = "shutdown-timeout-ms", env = "INGEST_SHUTDOWN_TIMEOUT_MS", default_value = "30000", value_parser = parse_millis("INGEST_SHUTDOWN_TIMEOUT_MS"))]
    pub shutdown_timeout: Duration,

    /// Log format: text or json.
    #[arg(long, env = "INGEST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
