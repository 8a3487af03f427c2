//! What every service process runs on: settings, PostgreSQL (connections, TLS, migrations), the
//! stream broker, the chunk store, logs and metrics, the probe endpoints, signals.
//!
//! - [`settings`]: the settings both binaries share and the [`settings::Secret`] type.
//! - [`db`]: connecting to PostgreSQL, creating the database, applying `db/migrations` under an
//!   advisory lock so several processes can start at once; [`pgtls`]: TLS as `sslmode` asks.
//! - [`broker`]: where the stream broker is, and creating the partition streams.
//! - [`chunk_store`]: where stored chunks live between gateway and engine: a shared directory or
//!   an S3-compatible bucket (`INGEST_CHUNK_STORE`).
//! - [`telemetry`]: tracing set-up and the Prometheus recorder; [`probes`]: the `/health`,
//!   `/ready` and `/metrics` answers both services give.
//! - [`shutdown`]: the signal handling both binaries share; [`memory`]: how their memory is
//!   mapped (transparent huge pages off).

pub mod broker;
pub mod chunk_store;
pub mod db;
pub mod memory;
pub mod pgtls;
pub mod probes;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use shutdown::shutdown_signal;
