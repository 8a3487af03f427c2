//! The wire contract between gateways and engines: what travels on the broker and how it is
//! addressed. No I/O here; connecting to anything is `ingest-runtime`'s.
//!
//! - [`chunk`]: the message published for every stored chunk ([`chunk::ChunkMessage`]).
//! - [`streams`]: partition stream names and which partition a chunk goes to.
//!
//! The other half of what both services agree on, the upload ledger's tables, states and
//! statements, is the `ingest-ledger` crate.

pub mod chunk;
pub mod streams;
