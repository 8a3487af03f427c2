//! The gateway.

pub mod client_ip;
pub mod ratelimit;
