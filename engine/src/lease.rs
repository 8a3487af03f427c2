//! Partition ownership: leases in PostgreSQL shared by every engine process of a group.
//!
//! Each process heartbeats its membership and renews its leases every third of the lease TTL.
//! It aims for its fair share, `ceil(partitions / live members)`: it takes free or expired
//! partitions up to that share and gives back the ones above it, so ownership rebalances when
//! processes join or leave, and a dead process's partitions are taken over once its leases
//! expire. A lone process owns every partition.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::Client;

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
        if (owned.len() as i64) < share {
            for partition in 0..i32::from(self.partitions) {
                if owned.len() as i64 >= share {
                    break;
                }
                if owned.contains(&partition) {
                    continue;
                }
                let taken = client
                    .query_opt(
                        "INSERT INTO partition_leases (consumer_group, partition, owner, expires_at)
                         VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8 / 1000))
                         ON CONFLICT (consumer_group, partition) DO UPDATE
                         SET owner = excluded.owner, expires_at = excluded.expires_at
                         WHERE partition_leases.expires_at < now()
                         RETURNING partition",
                        &[&self.group, &partition, &self.owner, &ttl_ms],
                    )
                    .await?;
                if taken.is_some() {
                    owned.insert(partition);
                }
            }
        }
        Ok(Beat { owned, to_stop })
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

/// The result of a heartbeat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Beat {
    /// Partitions this process holds a lease on now.
    pub owned: BTreeSet<i32>,
    /// Owned partitions above the fair share: stop their processors, they are released next beat.
    pub to_stop: BTreeSet<i32>,
}
