//! Partition ownership: leases in PostgreSQL shared by every engine process of a group.
//!
//! Each process heartbeats its membership and renews its leases every third of the lease TTL.
//! It aims for its fair share, `ceil(partitions / live members)`: it takes free or expired
//! partitions up to that share and gives back the ones above it, so ownership rebalances when
//! processes join or leave, and a dead process's partitions are taken over once its leases
//! expire. A lone process owns every partition.
//!
//! A lease that lapsed is taken over, and its previous owner is *fenced*: every PostgreSQL session
//! tagged with its name ([`Sessions::tag`]) is ended with `pg_terminate_backend`, before this
//! process starts loading the partition. Its lease lapsed because it stopped heartbeating; if it
//! is merely stopped (SIGSTOP, a frozen VM) rather than dead, its open transactions would
//! otherwise keep their locks (a chunk's ledger row, the upload's counters row, the partition's
//! offset row, the target table against partition DDL) until it runs again, and loading would
//! wait on it. Fenced, it finds its connections gone when it resumes; its uncommitted work was
//! rolled back, and the chunk ledger keeps anything from being loaded twice. Terminating another
//! role's sessions needs the same role, `pg_signal_backend` or superuser: without the right, the
//! engine logs a warning, counts `ingest_engine_errors_total{stage="fence"}` and relies on the
//! sessions' own timeouts instead ([`crate::session`]).
//!
//! No load holds a lock on a lease row: a heartbeat's renewal or takeover never waits on a load
//! (theirs or ours). Each takeover waits at most the lease session's `lock_timeout`; one that
//! times out is skipped until the next beat instead of failing the whole beat.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::metrics::{self, Stage};
use crate::session::Sessions;

/// One engine process's view of the group's leases.
pub struct Leases {
    pub group: String,
    pub owner: String,
    pub partitions: u16,
    pub ttl: Duration,
}

impl Leases {
    /// One heartbeat: renews, rebalances and returns the partitions this process owns now.
    /// `releasable` says which owned partitions may be given back right now (their processor
    /// stopped); the caller stops surplus processors first and releases them on a later beat.
    pub async fn beat(
        &self,
        client: &Client,
        releasable: &BTreeSet<i32>,
    ) -> Result<Beat, tokio_postgres::Error> {
        let ttl_ms = self.ttl.as_millis() as f64;
        client
            .execute(
                "INSERT INTO engine_members (consumer_group, member, seen_at) VALUES ($1, $2, now())
                 ON CONFLICT (consumer_group, member) DO UPDATE SET seen_at = now()",
                &[&self.group, &self.owner],
            )
            .await?;
        client
            .execute(
                "DELETE FROM engine_members
                 WHERE consumer_group = $1 AND seen_at < now() - make_interval(secs => $2::float8 / 1000)",
                &[&self.group, &ttl_ms],
            )
            .await?;
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM engine_members WHERE consumer_group = $1",
                &[&self.group],
            )
            .await?
            .get(0);
        let share = (i64::from(self.partitions) + live.max(1) - 1) / live.max(1);
        let mut owned: BTreeSet<i32> = client
            .query(
                "UPDATE partition_leases SET expires_at = now() + make_interval(secs => $3::float8 / 1000)
                 WHERE consumer_group = $1 AND owner = $2 AND partition < $4 RETURNING partition",
                &[&self.group, &self.owner, &ttl_ms, &i32::from(self.partitions)],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let surplus = owned.len() as i64 - share;
        let mut to_stop = BTreeSet::new();
        if surplus > 0 {
            // Give back the highest partitions first, once their processors have stopped.
            let extra: Vec<i32> = owned.iter().rev().take(surplus as usize).copied().collect();
            for partition in extra {
                if releasable.contains(&partition) {
                    client
                        .execute(
                            "DELETE FROM partition_leases
                             WHERE consumer_group = $1 AND partition = $2 AND owner = $3",
                            &[&self.group, &partition, &self.owner],
                        )
                        .await?;
                    owned.remove(&partition);
                } else {
                    to_stop.insert(partition);
                }
            }
        }
        let mut lapsed_owners = BTreeSet::new();
        if (owned.len() as i64) < share {
            for partition in 0..i32::from(self.partitions) {
                if owned.len() as i64 >= share {
                    break;
                }
                if owned.contains(&partition) {
                    continue;
                }
                match self.take(client, partition, ttl_ms).await {
                    Ok(Some(previous)) => {
                        owned.insert(partition);
                        if let Some(previous) = previous.filter(|p| *p != self.owner) {
                            tracing::info!(partition, previous = %previous, "took over a lapsed lease");
                            lapsed_owners.insert(previous);
                        }
                    }
                    Ok(None) => {}
                    Err(err) if is_timeout(&err) => {
                        metrics::error(Stage::Lease);
                        tracing::warn!(partition, error = %err, "lease takeover timed out; next beat");
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        for previous in &lapsed_owners {
            self.fence(client, previous).await;
        }
        Ok(Beat { owned, to_stop })
    }

    /// Takes `partition` if its lease is free or lapsed: `Some(previous owner)` when taken
    /// (`None` inside when nobody held it).
    async fn take(
        &self,
        client: &Client,
        partition: i32,
        ttl_ms: f64,
    ) -> Result<Option<Option<String>>, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "WITH previous AS (
                     SELECT owner FROM partition_leases WHERE consumer_group = $1 AND partition = $2
                 )
                 INSERT INTO partition_leases (consumer_group, partition, owner, expires_at)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8 / 1000))
                 ON CONFLICT (consumer_group, partition) DO UPDATE
                 SET owner = excluded.owner, expires_at = excluded.expires_at
                 WHERE partition_leases.expires_at < now()
                 RETURNING (SELECT owner FROM previous)",
                &[&self.group, &partition, &self.owner, &ttl_ms],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Ends every PostgreSQL session of `previous`, whose lease lapsed, so nothing it still holds
    /// (it may only be stopped) blocks the loads of the partitions taken from it. Best effort.
    async fn fence(&self, client: &Client, previous: &str) {
        let tag = Sessions::tag(&self.group, previous);
        // Wait for each session to be gone (its locks released), a fraction of the TTL at most.
        let wait_ms = (self.ttl.as_millis() / 4).clamp(10, 1000) as i64;
        let fenced = client
            .query(
                "SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = $1
                   AND pid <> pg_backend_pid()",
                &[&tag, &wait_ms],
            )
            .await;
        match fenced {
            Ok(rows) => {
                let ended = rows.iter().filter(|row| row.get::<_, bool>(0)).count();
                tracing::info!(engine = %previous, sessions = ended, "fenced a lapsed engine");
            }
            Err(err) => {
                metrics::error(Stage::Fence);
                let hint = if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                    "grant pg_signal_backend to the engines' role (or use one role for all)"
                } else {
                    "its sessions end with their own timeouts"
                };
                tracing::warn!(engine = %previous, error = %err, hint, "cannot fence a lapsed engine");
            }
        }
    }

    /// Gives back every lease and leaves the group (at shutdown), so others take over at once.
    pub async fn leave(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        client
            .execute(
                "DELETE FROM partition_leases WHERE consumer_group = $1 AND owner = $2",
                &[&self.group, &self.owner],
            )
            .await?;
        client
            .execute(
                "DELETE FROM engine_members WHERE consumer_group = $1 AND member = $2",
                &[&self.group, &self.owner],
            )
            .await?;
        Ok(())
    }
}

/// A lock or statement timeout (the lease session has both).
fn is_timeout(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::LOCK_NOT_AVAILABLE) | Some(&SqlState::QUERY_CANCELED)
    )
}

/// The result of a heartbeat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Beat {
    /// Partitions this process holds a lease on now.
    pub owned: BTreeSet<i32>,
    /// Owned partitions above the fair share: stop their processors, they are released next beat.
    pub to_stop: BTreeSet<i32>,
}
