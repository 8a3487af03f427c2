//! The partition streams' committed offsets (`stream_offsets`), stored in the transaction of
//! the data they cover: a restarted processor resumes right after the last committed chunk.

use tokio_postgres::GenericClient;

use crate::LedgerError;

/// The last committed offset of `stream` for `group`, if any.
pub async fn committed(
    client: &impl GenericClient,
    stream: &str,
    group: &str,
) -> Result<Option<u64>, LedgerError> {
    let row = client
        .query_opt(
            "SELECT \"offset\" FROM stream_offsets WHERE stream = $1 AND consumer_group = $2",
            &[&stream, &group],
        )
        .await?;
    Ok(row.map(|row| row.get::<_, i64>(0) as u64))
}

/// Stores the offset (never backwards), in `client`'s transaction if any.
pub async fn commit(
    client: &impl GenericClient,
    stream: &str,
    group: &str,
    offset: u64,
) -> Result<(), LedgerError> {
    client
        .execute(
            "INSERT INTO stream_offsets (stream, consumer_group, \"offset\") VALUES ($1, $2, $3)
             ON CONFLICT (stream, consumer_group) DO UPDATE
             SET \"offset\" = greatest(stream_offsets.\"offset\", excluded.\"offset\"), updated_at = now()",
            &[&stream, &group, &(offset as i64)],
        )
        .await?;
    Ok(())
}
