//! Every system test in one binary: the harness compiles once and the binary links once, instead
//! of once per file (see the note in `system-tests/Cargo.toml`). libtest still runs two tests at
//! a time on two cores, as it did within each file's binary; each file is a module, so a test is
//! named `<file>::<test>` (`cargo test -p system-tests -- faults::`).
//!
//! Except `metrics.rs` and `nginx.rs`, binaries of their own: the Prometheus recorder is global
//! to a process, so in one binary the in-process gateway they scrape would also count the
//! requests and export the metrics of every other test's in-process gateway and engine.

mod support;

mod browser;
mod datasets;
mod deploy;
mod faults;
mod hostile_rows;
mod lag;
mod loadgen_e2e;
mod memory;
mod pause;
mod pipeline;
mod real_clients;
mod rebalance;
