//! Publishing chunk messages to the partition streams, with broker confirms.
//!
//! One named producer per partition stream and gateway process. Publishing ids are
//! `(epoch << 32) | counter`, where the epoch comes from a PostgreSQL sequence each time a
//! producer is (re)created: ids are strictly increasing across restarts, so rabbitmq-stream-client
//! 0.4.4's habit of resuming a named producer at the last stored id (not the next) never makes the
//! broker drop a new message as a duplicate. Ids are assigned and sent under one lock, so they
//! reach the broker in order. Whatever the broker does, the engine's (upload, chunk) ledger makes a
//! repeated message harmless.
//!
//! Producers are made at start ([`Publisher::warm_up`]), made again on first use after an error,
//! and dropped on error, so the gateway starts and keeps serving (with 503 for uploads) while the
//! broker is down, and recovers when it is back.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use rabbitmq_stream_client::types::Message;
use rabbitmq_stream_client::{Dedup, Environment, Producer};
use tokio::sync::{oneshot, Mutex};

use ingest_contract::chunk::ChunkMessage;
use ingest_contract::streams::{partition_for, stream_name};
use ingest_runtime::broker::{ensure_streams, BrokerAddress, Retention};
use ingest_runtime::settings::SharedSettings;

/// Why a chunk message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("stream broker unavailable: {0}")]
    Broker(String),
    #[error("stream broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("stream broker refused the message")]
    Refused,
}

struct Slot {
    producer: Option<(Producer<Dedup>, u64)>,
    next: u32,
}

/// Publishes chunk messages to `<prefix>-<partition>` streams.
pub struct Publisher {
    broker: BrokerAddress,
    environment: Mutex<Option<Environment>>,
    prefix: String,
    partitions: u16,
    retention: Retention,
    name: String,
    pool: Pool,
    timeout: Duration,
    slots: Vec<Mutex<Slot>>,
}

impl Publisher {
    /// A publisher to the broker, streams and partitions `shared` names; `name` is its
    /// producers' name (deduplication), `timeout` how long one publish may wait for the broker.
    pub fn new(shared: &SharedSettings, name: String, pool: Pool, timeout: Duration) -> Arc<Self> {
        let partitions = shared.partitions;
        let slots = (0..partitions)
            .map(|_| {
                Mutex::new(Slot {
                    producer: None,
                    next: 0,
                })
            })
            .collect();
        Arc::new(Self {
            broker: shared.rabbitmq_stream_url.clone(),
            environment: Mutex::new(None),
            prefix: shared.stream_prefix.clone(),
            partitions,
            retention: shared.retention(),
            name,
            pool,
            timeout,
            slots,
        })
    }

    /// Connects and creates the partition streams that are missing.
    pub async fn connect(&self) -> Result<Environment, PublishError> {
        let mut environment = self.environment.lock().await;
        if let Some(env) = environment.as_ref() {
            return Ok(env.clone());
        }
        let env = tokio::time::timeout(self.timeout, self.broker.connect())
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?
            .map_err(|err| PublishError::Broker(err.to_string()))?;
        ensure_streams(&env, &self.prefix, self.partitions, &self.retention)
            .await
            .map_err(|err| PublishError::Broker(err.to_string()))?;
        *environment = Some(env.clone());
        Ok(env)
    }

    /// Creates every partition's producer before the first chunk needs it. A producer costs a
    /// broker connection, a publisher declaration and an epoch from PostgreSQL (about 180 ms
    /// here), which would otherwise be added to the first upload of each partition. A failure is
    /// only logged: the producer is then made on first use, as after any error.
    pub async fn warm_up(&self) {
        let created = (0..self.partitions).map(|partition| async move {
            let mut slot = self.slots[usize::from(partition)].lock().await;
            if let Err(err) = self.ensure_producer(&mut slot, partition).await {
                tracing::warn!(partition, error = %err, "producer not ready; made on first use");
            }
        });
        futures_util::future::join_all(created).await;
    }

    /// The partition a chunk goes to.
    pub fn partition(&self, message: &ChunkMessage) -> u16 {
        partition_for(message.upload_id, message.chunk_no, self.partitions)
    }

    /// Publishes and waits for the broker's confirm.
    pub async fn publish(&self, message: &ChunkMessage) -> Result<(), PublishError> {
        let partition = self.partition(message);
        let result = self.try_publish(partition, message).await;
        if result.is_err() {
            // Start afresh next time: the producer or the whole connection may be gone.
            self.slots[usize::from(partition)].lock().await.producer = None;
            *self.environment.lock().await = None;
        }
        result
    }

    async fn try_publish(
        &self,
        partition: u16,
        message: &ChunkMessage,
    ) -> Result<(), PublishError> {
        let confirmed = {
            let mut slot = self.slots[usize::from(partition)].lock().await;
            self.ensure_producer(&mut slot, partition).await?;
            let id = {
                let (_, epoch) = slot.producer.as_ref().expect("producer was just ensured");
                (epoch << 32) | u64::from(slot.next)
            };
            slot.next += 1;
            let (tx, rx) = oneshot::channel();
            let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
            let body = Message::builder()
                .body(message.encode())
                .publising_id(id)
                .build();
            let (producer, _) = slot.producer.as_mut().expect("producer was just ensured");
            producer
                .send(body, move |status| {
                    let tx = tx.clone();
                    async move {
                        let ok = matches!(status, Ok(ref s) if s.confirmed());
                        if let Some(tx) = tx.lock().ok().and_then(|mut tx| tx.take()) {
                            let _ = tx.send(ok);
                        }
                    }
                })
                .await
                .map_err(|err| PublishError::Broker(err.to_string()))?;
            rx
        };
        match tokio::time::timeout(self.timeout, confirmed).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(PublishError::Refused),
            Ok(Err(_)) => Err(PublishError::Broker("producer closed".into())),
            Err(_) => Err(PublishError::Timeout(self.timeout)),
        }
    }

    /// Gives the slot a working producer, with its counter back at 0, if it has none.
    async fn ensure_producer(&self, slot: &mut Slot, partition: u16) -> Result<(), PublishError> {
        if slot.producer.as_ref().is_none_or(|(p, _)| p.is_closed()) {
            slot.producer = Some(self.create_producer(partition).await?);
            slot.next = 0;
        }
        Ok(())
    }

    async fn create_producer(
        &self,
        partition: u16,
    ) -> Result<(Producer<Dedup>, u64), PublishError> {
        let epoch: i64 = {
            let db = self
                .pool
                .get()
                .await
                .map_err(|err| PublishError::Broker(format!("database: {err}")))?;
            db.query_one("SELECT nextval('publish_epoch')", &[])
                .await
                .map_err(|err| PublishError::Broker(format!("database: {err}")))?
                .get(0)
        };
        let env = self.connect().await?;
        let stream = stream_name(&self.prefix, partition);
        // The client flushes its batch on a timer that never stops (0.4.4): 5 ms keeps the added
        // latency small without waking too often.
        let producer = tokio::time::timeout(
            self.timeout,
            env.producer()
                .batch_delay(Duration::from_millis(5))
                .name(&format!("{}-{stream}", self.name))
                .build(&stream),
        )
        .await
        .map_err(|_| PublishError::Timeout(self.timeout))?
        .map_err(|err| PublishError::Broker(err.to_string()))?;
        Ok((producer, epoch as u64))
    }

    /// Closes every producer (at shutdown).
    pub async fn close(&self) {
        for slot in &self.slots {
            if let Some((producer, _)) = slot.lock().await.producer.take() {
                let _ = producer.close().await;
            }
        }
    }
}
