//! The rows crate's tests in one binary: each file is a module (a test is named `<file>::<test>`), so
//! shared helpers compile once and the binary links once.

mod generic;
mod streaming;
