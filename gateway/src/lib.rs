//! The gateway: the HTTP front door of the ingestion engine.
//!
//! A request flows through [`app`] (routing, rate limits via [`ratelimit`] keyed by
//! [`client_ip`] and API client, authentication via [`auth`] and [`clients`]), then, for chunk
//! uploads, [`ingest`]: the body streams to disk through [`store`], the chunk is recorded in the
//! ledger by [`upload`], and its message is published to a partition stream by [`publish`]. The
//! client gets 2xx only once the chunk is synced and the broker confirmed. Uploads without a
//! declared count end by [`settle`]; abandoned ones by [`expiry`]. [`server`] runs the
//! hyper accept loop and the graceful shutdown; [`docs`] serves the OpenAPI document.

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod clients;
pub mod docs;
pub mod errors;
pub mod expiry;
pub mod ingest;
pub mod metrics;
pub mod orphans;
pub mod publish;
pub mod ratelimit;
pub mod server;
pub mod settings;
pub mod settle;
pub mod store;
pub mod sweeps;
pub mod upload;

pub use server::run;
pub use settings::GatewaySettings;
