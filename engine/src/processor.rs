//! A partition processor: consumes one partition stream from the offset committed in
//! PostgreSQL and loads each chunk it announces, one at a time, in stream order. Its broker
//! connection ([`PartitionConsumer`]) and its PostgreSQL session live and end with it.

use std::sync::Arc;
use std::time::Duration;

use rabbitmq_stream_client::types::OffsetSpecification;
use rabbitmq_stream_client::ClientOptions;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use ingest_contract::chunk::ChunkMessage;
use ingest_runtime::db;

use crate::consumer::PartitionConsumer;
use crate::loader::{LoadError, Loader, Outcome, Position};
use crate::metrics::{self, Stage};
use crate::session::Sessions;
use ingest_ledger::{offsets, Partition};

/// What every processor of this engine process shares.
pub struct Shared {
    /// This process's PostgreSQL sessions (tagged, with timeouts).
    pub sessions: Sessions,
    /// The stream broker; each processor opens a connection of its own.
    pub broker: ClientOptions,
    pub stream_prefix: String,
    pub group: String,
    pub owner: String,
    pub loader: Loader,
}

/// Why a processor stopped on its own (the supervisor starts it again if the lease is still ours).
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("database: {0}")]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Ledger(#[from] ingest_ledger::LedgerError),
    #[error("stream broker: {0}")]
    Broker(String),
    #[error("lost the lease on partition {0}")]
    LeaseLost(i32),
}

/// Runs until `cancel` fires, the lease is lost, or a connection fails.
pub async fn run_partition(
    shared: Arc<Shared>,
    partition: i32,
    cancel: CancellationToken,
) -> Result<(), ProcessorError> {
    let stream = ingest_contract::streams::stream_name(&shared.stream_prefix, partition as u16);
    let mut client = shared.sessions.loader().await?;
    let committed = offsets::committed(&client, &stream, &shared.group).await?;
    let start = match committed {
        Some(offset) => OffsetSpecification::Offset(offset + 1),
        None => OffsetSpecification::First,
    };
    let mut consumer = PartitionConsumer::subscribe(&shared.broker, &stream, start)
        .await
        .map_err(|err| ProcessorError::Broker(err.to_string()))?;
    tracing::info!(partition, stream = %stream, resume_after = ?committed, "partition processor started");
    metrics::partition_owned(true);
    // A delivery past this offset skipped some: a producer-tracking entry the broker writes at
    // each new segment (one offset, harmless), or messages retention removed unread.
    let mut expected = committed.map_or(0, |offset| offset + 1);
    let result = loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => break Ok(()),
            delivery = consumer.next() => delivery,
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => {
                metrics::error(Stage::Consume);
                tracing::warn!(partition, error = ?err, "delivery error");
                continue;
            }
            None => break Err(ProcessorError::Broker("consumer closed".into())),
        };
        if delivery.offset > expected && aged_out(&shared, &stream, expected).await {
            if let Err(err) = announce_again(&client, partition, expected, delivery.offset).await {
                break Err(err);
            }
        }
        expected = delivery.offset + 1;
        let position = Position {
            stream: stream.clone(),
            partition,
            offset: delivery.offset,
            group: shared.group.clone(),
            owner: shared.owner.clone(),
        };
        let data = delivery.message.data().unwrap_or_default();
        let outcome = match ChunkMessage::decode(data) {
            Ok(message) => {
                load_with_retry(&shared, &mut client, &message, &position, &cancel).await
            }
            Err(err) => {
                tracing::warn!(partition, offset = position.offset, error = %err, "skipping a malformed message");
                metrics::error(Stage::Decode);
                offsets::commit(&client, &stream, &shared.group, position.offset)
                    .await
                    .map(|()| None)
                    .map_err(ProcessorError::from)
            }
        };
        if let Err(err) = outcome {
            break Err(err);
        }
        if cancel.is_cancelled() {
            break Ok(());
        }
    };
    metrics::partition_owned(false);
    // The connection goes with the subscription (see `consumer`: the library's does not).
    consumer.close().await;
    tracing::info!(partition, "partition processor stopped");
    result
}

/// Whether offset `expected` is gone from `stream`: the first message it still holds is later.
/// A gap that starts at or after that first message is a producer-tracking entry, not lost
/// messages. Asked only on a gap, over a connection of its own; unknown counts as aged out: the
/// waiting chunks are then published again (harmless twice) rather than possibly never.
async fn aged_out(shared: &Shared, stream: &str, expected: u64) -> bool {
    let first = async {
        let mut probe =
            PartitionConsumer::subscribe(&shared.broker, stream, OffsetSpecification::First)
                .await
                .ok()?;
        let first = tokio::time::timeout(Duration::from_secs(5), probe.next()).await;
        probe.close().await;
        first.ok()??.ok().map(|delivery| delivery.offset)
    };
    match first.await {
        Some(first) => first > expected,
        None => {
            tracing::warn!(stream, "could not read a stream's first offset after a gap; announcing the partition's waiting chunks again");
            true
        }
    }
}

/// Messages `from..to` of the partition's stream aged out unread. The ledger still holds their
/// chunks as `stored`: every waiting chunk of the partition is marked unannounced, and the
/// gateways' announce sweep publishes them again (those still in the stream come twice, which
/// the ledger makes harmless).
async fn announce_again(
    client: &Client,
    partition: i32,
    from: u64,
    to: u64,
) -> Result<(), ProcessorError> {
    let chunks = ingest_ledger::files::announce_again(client, Partition(partition)).await?;
    metrics::error(Stage::StreamGap);
    tracing::warn!(
        partition,
        missing_offsets = ?(from..to),
        chunks,
        "stream messages aged out before they were read; their chunks are announced again"
    );
    Ok(())
}

/// Loads one message, retrying database errors with backoff until it commits or we stop.
async fn load_with_retry(
    shared: &Shared,
    client: &mut Client,
    message: &ChunkMessage,
    position: &Position,
    cancel: &CancellationToken,
) -> Result<Option<Outcome>, ProcessorError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let result = shared.loader.load(client, message, position).await;
        match result {
            Ok(outcome) => return Ok(Some(outcome)),
            Err(LoadError::LeaseLost(partition)) => {
                return Err(ProcessorError::LeaseLost(partition))
            }
            Err(err) => {
                metrics::error(Stage::Load);
                tracing::warn!(upload_id = %message.upload_id, chunk = message.chunk_no, error = %err, "load failed; retrying");
                if client.is_closed() {
                    // Also how a fenced process finds out: a peer ended its sessions.
                    *client = shared.sessions.loader().await?;
                }
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
