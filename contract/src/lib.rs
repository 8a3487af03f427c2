//! What the gateway and the engine must agree on.
//!
//! - [`chunk`]: the message published for every stored chunk ([`chunk::ChunkMessage`]).
//! - [`chunk_store`]: where stored chunks live between gateway and engine: a shared directory or
//!   an S3-compatible bucket (`INGEST_CHUNK_STORE`).
//! - [`streams`]: partition stream names, which partition a chunk goes to, and broker connections.
//! - [`db`]: connecting to PostgreSQL, creating the database, applying `db/migrations` under an
//!   advisory lock so several processes can start at once; [`pgtls`]: TLS as `sslmode` asks.
//! - [`settings`]: the settings both binaries share and the [`settings::Secret`] type.
//! - [`telemetry`]: tracing set-up and the Prometheus recorder.
//! - [`shutdown`]: the signal handling both binaries share.
//! - `testkit` (feature `testkit`): per-test databases, random stream names and key prefixes,
//!   polling with deadlines.

pub mod chunk;
pub mod chunk_store;
pub mod db;
pub mod pgtls;
pub mod settings;
pub mod shutdown;
pub mod streams;
pub mod telemetry;

pub use shutdown::shutdown_signal;
#[cfg(feature = "testkit")]
pub mod testkit;
