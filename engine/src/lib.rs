//! The engine: sharded stream processors that validate CSV chunks and load them into PostgreSQL,
//! exactly once.
//!
//! - [`cli`]: the command line (`engine`, `engine migrate`).
//! - [`server`]: runs a process: prepares database and streams, serves the probes
//!   (`ingest_runtime::probes`, looking at what [`http`] names), and
//!   supervises one [`processor`] per partition this process owns through [`lease`]s.
//! - [`processor`]: consumes one partition stream from the offset committed in PostgreSQL, over a
//!   [`consumer`] whose broker connection ends with it.
//! - [`session`]: this process's PostgreSQL sessions, tagged with its name (so a peer taking over
//!   its lapsed leases can fence it) and with lock, statement and idle timeouts, so a stopped
//!   process cannot stall the group.
//! - [`metrics`]: every metric the engine exports, declared once and listed from the first scrape.
//! - [`loader`]: loads one chunk in one transaction: ledger claim, COPY, rejected rows, counters,
//!   stream offset (every ledger statement is [`ingest_ledger`]'s); [`pieces`] loads a big chunk
//!   as several pieces at once, each exactly once; [`tables`] creates the datasets' tables from
//!   their definitions; [`partitions`] creates their partitions ahead of the rows; [`cleanup`] removes chunk files after their commit and sweeps what a
//!   crash left behind; [`rejected`] COPYs the bad rows into `rejected_rows`.
//! - [`dataset`], [`validate`], [`pgcopy`]: the rows of a chunk, from the `ingest-rows` crate.

pub mod cleanup;
pub mod cli;
pub mod consumer;
pub mod http;
pub mod lag;
pub mod lease;
pub mod loader;
pub mod metrics;
pub mod partitions;
pub mod pieces;
pub mod processor;
pub mod rejected;
pub mod server;
pub mod session;
pub mod settings;
pub mod tables;

pub use ingest_rows::{cell, dataset, pgcopy, registry, validate};
pub use server::run;
pub use settings::EngineSettings;
