//! `loadgen`: the original system's data generator, and the client that uploads CSV files to
//! the gateway in parallel, resumable chunks. The binary is a thin shell over this library, so
//! the benchmark calls the same code in-process.
//!
//! - [`generate`]: writes the original generator's files (`date,content,amount,type`, CRLF,
//!   day-first dates a second apart, or spread evenly over months), reproducibly from a seed.
//! - [`split`]: cuts files into chunks of about a given size at record boundaries, following
//!   CSV quoting, by scanning with a small buffer; numbers chunks across files.
//! - [`upload`]: one upload end to end ([`upload::run_upload`]): open or resume, send chunks
//!   concurrently (each read from disk by its range), `complete`, poll until loaded.
//! - [`original`]: the original system's client flow (one connection, whole files as
//!   multipart posts, no `complete`), for the benchmark's `original-client` scenario.
//! - [`client`]: the gateway's HTTP API with retries; [`api`]: its JSON bodies; [`token`]: the
//!   shared bearer token, renewed before expiry; [`retry`]: the retry policy and backoff as pure
//!   functions.
//! - [`progress`]: the progress line; [`summary`]: what an upload achieved.
//! - [`bench`]: `loadgen bench`, the baselines (`COPY csv` over one connection, and over two
//!   at once) against the whole pipeline on the same cached data, for one scenario of how the
//!   rows reach the gateway, with exactness checks in PostgreSQL and a report;
//!   [`plot`]: the throughput plot drawn from the benchmark's results.
//! - [`cli`]: the command line, turned into the options above.
//!
//! ```text
//! files --split--> PlannedChunk[] --upload--> PUT chunks (<= concurrency) --> complete --> poll
//!                                     |                 client: token, retry, errors
//!                                     +--> progress counters --> progress line
//! ```

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod generate;
pub mod original;
pub mod plot;
pub mod progress;
pub mod retry;
pub mod split;
pub mod summary;
pub mod token;
pub mod upload;
