//! The gateway: the HTTP front door of the ingestion engine.
//!
//! A request is parsed once into a [`routes::Route`] (its metric label, rate-limit class and
//! handler); [`app`] runs the guards (rate limits via [`ratelimit`] keyed by [`client_ip`] and
//! API client, authentication via [`auth`] and [`clients`]) and the handler, one module per
//! resource under [`routes`]. For chunks ([`routes::chunks`]) the body streams to disk through
//! [`store`], the chunk is recorded in the upload ledger ([`ingest_ledger`]), and its message is
//! published to a partition stream by [`publish`]. The client gets 2xx only once the chunk is
//! synced and the broker confirmed. Uploads without a declared count end by [`settle`];
//! abandoned ones by [`expiry`]; what killed requests leave behind is found by [`orphans`];
//! [`hooks`] tells callback URLs when uploads end. [`server`] runs the hyper accept loop and the
//! graceful shutdown; [`docs`] serves the OpenAPI document ([`openapi`]), [`console`] the upload console.

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod clients;
pub mod console;
pub mod docs;
pub mod errors;
pub mod expiry;
pub mod hooks;
pub mod metrics;
pub mod openapi;
pub mod orphans;
pub mod publish;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod settings;
pub mod settle;
pub mod store;
pub mod sweeps;

pub use server::run;
pub use settings::GatewaySettings;
