//! The fault tests' harness: private service instances ([`services`]), the system as processes
//! that can be killed ([`stack`]), the uploaded data and its expected outcome ([`data`]), and
//! the client, progress and invariant checks ([`check`]).

pub mod check;
pub mod data;
pub mod services;
pub mod stack;
