//! The engine: sharded stream processors that validate CSV chunks and load them into PostgreSQL.
//!
//! - [`dataset`]: the description of a dataset's columns that drives validation and encoding.
//! - [`validate`]: tokenizes a chunk with simd-csv and checks every row against the dataset.
//! - [`pgcopy`]: encodes validated rows in PostgreSQL's binary COPY format.

pub mod dataset;
pub mod pgcopy;
pub mod validate;
