//! Every gateway test in one binary: the harness (`support`) compiles once and the binary links
//! once, instead of once per file. Each file is a module, so a test is named `<file>::<test>`
//! (`cargo test -p gateway --test gateway -- hostile::`). The gateways these tests start in
//! process share this binary's Prometheus recorder, so no test here asserts a metric's value
//! from one of them; `api::metrics_list_every_counter_at_zero_from_the_first_scrape` starts a
//! gateway process of its own for that. `ratelimit.rs` is a binary of its own (see Cargo.toml).

mod support;

mod api;
mod encodings;
mod hostile;
mod process;
mod ratelimit_http;
