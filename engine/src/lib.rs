//! The engine: sharded stream processors that validate CSV chunks and load them into PostgreSQL,
//! exactly once.
//!
//! - [`server`]: runs a process: prepares database and streams, serves [`http`] probes, and
//!   supervises one [`processor`] per partition this process owns through [`lease`]s.
//! - [`processor`]: consumes one partition stream from the offset committed in PostgreSQL.
//! - [`loader`]: loads one chunk in one transaction: ledger claim, COPY, rejected rows, counters,
//!   stream offset; [`partitions`] creates monthly partitions ahead of the rows; [`cleanup`]
//!   removes chunk files after their commit and sweeps what a crash left behind.
//! - [`dataset`]: the description of a dataset's columns that drives validation and encoding.
//! - [`validate`]: tokenizes a chunk with simd-csv and checks every row against the dataset.
//! - [`pgcopy`]: encodes validated rows in PostgreSQL's binary COPY format.

pub mod cleanup;
pub mod dataset;
pub mod http;
pub mod lease;
pub mod loader;
pub mod partitions;
pub mod pgcopy;
pub mod processor;
pub mod server;
pub mod settings;
pub mod validate;

pub use server::run;
pub use settings::EngineSettings;
