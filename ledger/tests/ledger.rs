//! The ledger's tests against the real PostgreSQL in one binary: each file is a module (a test is named `<file>::<test>`), so
//! shared helpers compile once and the binary links once.

mod common;

mod files;
mod hooks;
mod intake;
mod ownership;
mod pieces;
mod retries;
