//! A partition stream consumer that owns its broker connection and closes it when it stops.
//!
//! rabbitmq-stream-client 0.4.4's `Consumer` cannot give its connection back (upstream #235,
//! fixed in 0.6): `ConsumerHandle::close` only unsubscribes; the connection's heartbeat task keeps
//! sending on the socket for the life of the process; and the consumer's message handler and its
//! `Client` hold each other, so dropping them frees nothing either. The processor built one per
//! partition takeover, so an engine kept one more broker connection open for every partition it
//! ever gave up (measured: +1 per move, see `system-tests/tests/rebalance.rs`).
//!
//! This consumer is built on the client's public connection API instead (`Client::connect`,
//! `subscribe`, `credit`, `unsubscribe`, `close`): [`PartitionConsumer::close`] sends the
//! protocol's Close, which also ends the heartbeat task, and a consumer dropped without `close`
//! closes its connection on a task of its own.
//!
//! It connects to the configured broker node: the deployments here run one node. (In a cluster
//! that node must host a member of the stream; the library's consumer would pick a replica.)
//!
//! Residual, in the library and not reachable from here: when the broker drops a connection
//! (broker restart), `Client::close` returns early and that connection's heartbeat task and
//! socket stay behind; only a broker failure leaks that way, not a rebalance.

use std::collections::HashMap;
use std::sync::Arc;

use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::{Message, MessageResult, OffsetSpecification, ResponseKind};
use rabbitmq_stream_client::{Client, ClientOptions};
use tokio::sync::mpsc;

use ingest_runtime::broker::BrokerAddress;

/// The one subscription on each consumer's connection.
const SUBSCRIPTION: u8 = 1;
/// Deliveries buffered between the connection and the processor. The broker sends one stream
/// chunk per credit and credit is granted once a chunk is queued, so this only smooths.
const BUFFER: usize = 256;

/// One message of a partition stream and its offset.
#[derive(Debug)]
pub struct Delivery {
    pub offset: u64,
    pub message: Message,
}

/// Why a consumer could not be made or stopped delivering.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("broker connection: {0}")]
    Client(#[from] ClientError),
    #[error("subscribing to {stream}: {code}")]
    Subscribe { stream: String, code: String },
    #[error("delivery: {0}")]
    Delivery(String),
}

enum Event {
    Delivery(Delivery),
    Error(String),
    Closed,
}

/// A subscription to one partition stream on a connection of its own.
pub struct PartitionConsumer {
    client: Client,
    events: mpsc::Receiver<Event>,
    open: bool,
}

/// The client options of the broker at `address`.
pub fn client_options(address: &BrokerAddress) -> ClientOptions {
    ClientOptions::builder()
        .host(&address.host)
        .port(address.port)
        .user(&address.username)
        .password(address.password.expose())
        .v_host(&address.virtual_host)
        .build()
}

impl PartitionConsumer {
    /// Connects and subscribes to `stream` from `offset`.
    pub async fn subscribe(
        options: &ClientOptions,
        stream: &str,
        offset: OffsetSpecification,
    ) -> Result<Self, ConsumeError> {
        let client = Client::connect(options.clone()).await?;
        let (sender, events) = mpsc::channel(BUFFER);
        // Subscribing at an offset delivers the whole stream chunk holding it: skip what precedes.
        let first = match offset {
            OffsetSpecification::Offset(first) => first,
            _ => 0,
        };
        let handler = Arc::new(Handler {
            client: client.clone(),
            sender,
            first,
        });
        client
            .set_handler(move |item: MessageResult| async move {
                handler.handle(item).await;
                Ok::<(), ClientError>(())
            })
            .await;
        // Credit 1: the library hands each delivery frame to a task of its own, so with more than
        // one frame in flight two tasks could queue their messages out of stream order.
        let subscribed = client
            .subscribe(SUBSCRIPTION, stream, offset, 1, HashMap::new())
            .await;
        let mut consumer = Self {
            client,
            events,
            open: true,
        };
        match subscribed {
            Ok(response) if response.is_ok() => Ok(consumer),
            Ok(response) => {
                consumer.close().await;
                Err(ConsumeError::Subscribe {
                    stream: stream.to_owned(),
                    code: format!("{:?}", response.code()),
                })
            }
            Err(err) => {
                consumer.close().await;
                Err(err.into())
            }
        }
    }

    /// The next delivery, in stream order; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Result<Delivery, ConsumeError>> {
        match self.events.recv().await? {
            Event::Delivery(delivery) => Some(Ok(delivery)),
            Event::Error(err) => Some(Err(ConsumeError::Delivery(err))),
            Event::Closed => None,
        }
    }

    /// Unsubscribes and closes the connection (its socket and heartbeat task with it).
    pub async fn close(&mut self) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        close_client(&self.client).await;
    }
}

impl Drop for PartitionConsumer {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // A processor cancelled mid-await still gives its connection back.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move { close_client(&client).await });
        }
    }
}

async fn close_client(client: &Client) {
    let _ = client.unsubscribe(SUBSCRIPTION).await;
    if let Err(err) = client.close().await {
        tracing::debug!(error = %err, "broker connection already closed");
    }
    // The handler holds a clone of the client: drop it, or each consumer's client outlives it.
    client
        .set_handler(|_: MessageResult| async { Ok::<(), ClientError>(()) })
        .await;
}

/// Queues the deliveries of the one subscription and grants the next credit.
struct Handler {
    client: Client,
    sender: mpsc::Sender<Event>,
    first: u64,
}

impl Handler {
    async fn handle(&self, item: MessageResult) {
        match item {
            Some(Ok(response)) => {
                if let ResponseKind::Deliver(chunk) = response.kind() {
                    let offsets = chunk.chunk_first_offset..;
                    for (offset, message) in offsets.zip(chunk.messages) {
                        if offset < self.first {
                            continue;
                        }
                        let delivery = Delivery { offset, message };
                        if self.sender.send(Event::Delivery(delivery)).await.is_err() {
                            return; // The consumer is gone: no more credit.
                        }
                    }
                    let _ = self.client.credit(SUBSCRIPTION, 1).await;
                }
            }
            Some(Err(err)) => {
                let _ = self.sender.send(Event::Error(err.to_string())).await;
            }
            None => {
                let _ = self.sender.send(Event::Closed).await;
            }
        }
    }
}
