//! Tests of the whole system: gateway, engines and clients together against the real
//! PostgreSQL, Redis, RabbitMQ and S3 server, in process and as processes that are killed,
//! stopped and restarted. Everything is in `tests/`: one file per concern (`pipeline`,
//! `faults`, `metrics`, `lag`, `hostile_rows`, `memory`, `pause`, `rebalance`, `real_clients`,
//! `datasets`, `loadgen_e2e`, `deploy`), with the shared harness in `tests/support` and the fault
//! harness in `tests/faults`. Service crates' own tests stay in the service crates, which no
//! longer depend on each other for testing.
