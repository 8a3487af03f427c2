//! The runtime's tests against the real services in one binary: each file is a module (a test is named `<file>::<test>`), so
//! shared helpers compile once and the binary links once.

mod chunk_store;
mod migrations;
mod probes;
mod tls;
