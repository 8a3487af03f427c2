//! Partition streams: their names and which one a chunk goes to.
//!
//! RabbitMQ 3.10 has no super streams, so a "partitioned stream" is `N` plain streams named
//! `<prefix>-0` .. `<prefix>-(N-1)`. Gateways publish to them; engines divide them among
//! themselves with leases in PostgreSQL. Connecting to the broker and creating the streams is
//! `ingest_runtime::broker`.

use uuid::Uuid;

/// Name of partition stream `partition`.
pub fn stream_name(prefix: &str, partition: u16) -> String {
    format!("{prefix}-{partition}")
}

/// The partition of a chunk. Consecutive chunks of one upload go to consecutive partitions, so
/// one big upload spreads over all of them; different uploads start at different partitions.
pub fn partition_for(upload_id: Uuid, chunk_no: i32, partitions: u16) -> u16 {
    let start = (upload_id.as_u128() % u128::from(partitions)) as u64;
    ((start + u64::from(chunk_no.unsigned_abs())) % u64::from(partitions)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_spreads_over_all_partitions() {
        let upload = Uuid::new_v4();
        let mut seen: Vec<u16> = (0..8).map(|n| partition_for(upload, n, 4)).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 0, 1, 1, 2, 2, 3, 3]);
    }
}
