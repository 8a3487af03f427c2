//! The engine's PostgreSQL sessions: tagged with the engine's name, with timeouts by role.
//!
//! A process stopped in the middle of a transaction (SIGSTOP, a frozen VM, a debugger) keeps its
//! sessions, their open transactions and their locks until it runs again. Nothing it holds may
//! stall its peers:
//!
//! - every session is tagged with `application_name` = [`Sessions::tag`], so a peer that takes
//!   over one of its lapsed leases can end its sessions ([`crate::lease`]: fencing);
//! - the lease session (heartbeats) has a `lock_timeout` and a `statement_timeout` well under the
//!   lease TTL: a beat never waits on someone else's lock long enough to let its own leases lapse;
//! - loader sessions have a `lock_timeout` ([`LOADER_LOCK_TIMEOUT`]): a load that meets a row a
//!   stopped peer still holds fails and is retried (its COPY slot released in between) instead of
//!   waiting with it; and an `idle_in_transaction_session_timeout`, so when it is *this* process
//!   that stops between two statements of a load, PostgreSQL itself ends the transaction and
//!   frees its locks, even where no peer is allowed to fence it.

use std::time::Duration;

use ingest_runtime::db::{self, DbError};
use tokio_postgres::Client;

/// How long a load waits for a row or table lock before it fails and is retried. Legitimate
/// waits are short: another chunk of the same upload committing, a partition being created.
pub const LOADER_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL keeps `application_name` to 63 bytes.
const MAX_TAG: usize = 63;

/// How this engine process connects to PostgreSQL.
#[derive(Debug, Clone)]
pub struct Sessions {
    pub database_url: String,
    /// `application_name` of every session of this process.
    pub tag: String,
    pub lease_ttl: Duration,
}

impl Sessions {
    pub fn new(database_url: &str, group: &str, owner: &str, lease_ttl: Duration) -> Self {
        Self {
            database_url: database_url.to_owned(),
            tag: Self::tag(group, owner),
            lease_ttl,
        }
    }

    /// The `application_name` of the sessions of engine `owner` of `group`: readable when it
    /// fits PostgreSQL's limit in plain ASCII, a stable hash of both otherwise.
    pub fn tag(group: &str, owner: &str) -> String {
        let plain = format!("ingest-engine {group}/{owner}");
        if plain.len() <= MAX_TAG && plain.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return plain;
        }
        format!("ingest-engine #{:016x}", fnv1a(plain.as_bytes()))
    }

    /// The session that heartbeats the leases: no statement waits more than a quarter of the
    /// TTL for a lock, or runs more than half of it.
    pub async fn lease(&self) -> Result<Client, DbError> {
        let lock = (self.lease_ttl / 4).max(Duration::from_millis(50));
        let statement = (self.lease_ttl / 2).max(Duration::from_millis(100));
        self.connect(&[("lock_timeout", lock), ("statement_timeout", statement)])
            .await
    }

    /// A session that loads chunks.
    pub async fn loader(&self) -> Result<Client, DbError> {
        // A load's transaction is idle between statements only while this process parses or
        // encodes (milliseconds): far longer means the process is not running.
        let idle = (self.lease_ttl * 2).max(Duration::from_secs(10));
        self.connect(&[
            ("lock_timeout", LOADER_LOCK_TIMEOUT),
            ("idle_in_transaction_session_timeout", idle),
        ])
        .await
    }

    async fn connect(&self, timeouts: &[(&str, Duration)]) -> Result<Client, DbError> {
        let (mut config, tls) = db::parse_url(&self.database_url)?;
        config.application_name(&self.tag);
        // Startup options, not SET: `RESET` goes back to these (partitions.rs relies on it).
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, value) in timeouts {
            options.push_str(&format!(" -c {name}={}", value.as_millis()));
        }
        config.options(options.trim_start());
        db::connect_with(&config, &tls).await
    }
}

/// 64-bit FNV-1a: stable across builds and platforms, so every engine version derives the same
/// tag for a peer.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_readable_when_they_fit_and_hashed_otherwise() {
        assert_eq!(
            Sessions::tag("engine", "engine-a"),
            "ingest-engine engine/engine-a"
        );
        let long = Sessions::tag("engine", &"x".repeat(80));
        assert!(long.starts_with("ingest-engine #") && long.len() <= MAX_TAG);
        assert_ne!(long, Sessions::tag("engine", &"x".repeat(81)));
        assert_eq!(long, Sessions::tag("engine", &"x".repeat(80)));
        assert!(Sessions::tag("engine", "moteur-é").starts_with("ingest-engine #"));
    }
}
