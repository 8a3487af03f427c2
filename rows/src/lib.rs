//! Rows of a CSV chunk, apart from any service: what the engine does between reading a chunk
//! file and handing bytes to `COPY`. Kept free of async, database and broker code so the fuzz
//! targets and benchmarks build it in seconds.
//!
//! - [`registry`]: the datasets by name, read from their [`definition`] files.
//! - [`dataset`]: the description of a dataset that drives validation and encoding; [`cell`]
//!   checks and encodes one cell against its column.
//! - [`validate`]: tokenizes a chunk with simd-csv and checks every row against the dataset.
//! - [`partitions`]: the partitions a chunk's rows fall in, read ahead of its load.
//! - [`pieces`]: cuts a big chunk at record boundaries so several connections load it.
//! - [`values`]: timestamps and decimals read from a cell's text, beside the column types.
//! - [`pgcopy`]: encodes validated rows in PostgreSQL's binary COPY format.
//! - [`rejects`]: the rejected rows of a chunk, encoded for COPY and spilled to disk past a
//!   memory budget.

pub mod cell;
pub mod dataset;
pub mod definition;
pub mod partitions;
pub mod pgcopy;
pub mod pieces;
pub mod registry;
pub mod rejects;
mod scan;
pub mod validate;
pub mod values;
