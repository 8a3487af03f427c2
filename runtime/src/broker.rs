//! The stream broker: where it is ([`BrokerAddress`], from `RABBITMQ_STREAM_URL`), and creating
//! the partition streams ([`ensure_streams`]) with their [`Retention`]. The stream names are the
//! wire contract's (`ingest_contract::streams`).

use std::time::Duration;

use ingest_contract::streams::stream_name;
use rabbitmq_stream_client::types::{ByteCapacity, ResponseCode, StreamCreator};
use rabbitmq_stream_client::{error::StreamCreateError, Environment};

use crate::settings::Secret;

/// Where the stream broker is, parsed from `RABBITMQ_STREAM_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    pub virtual_host: String,
}

impl BrokerAddress {
    /// Parses `rabbitmq-stream://user:password@host:port/vhost` (vhost percent-encoded, `%2f` = `/`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|err| err.to_string())?;
        if parsed.scheme() != "rabbitmq-stream" {
            return Err(format!(
                "scheme must be rabbitmq-stream, not {}",
                parsed.scheme()
            ));
        }
        let host = parsed.host_str().ok_or("no host")?.to_owned();
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let vhost = parsed.path().trim_start_matches('/');
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(5552),
            username: match parsed.username() {
                "" => "guest".to_owned(),
                user => decode(user),
            },
            password: Secret::new(
                parsed
                    .password()
                    .map(decode)
                    .unwrap_or_else(|| "guest".into()),
            ),
            virtual_host: if vhost.is_empty() {
                "/".to_owned()
            } else {
                decode(vhost)
            },
        })
    }

    /// [`Self::parse`] with an error naming the setting, for clap.
    pub fn parse_setting(url: &str) -> Result<Self, String> {
        Self::parse(url).map_err(|err| format!("RABBITMQ_STREAM_URL is not valid: {err}"))
    }

    /// Opens a broker environment (connections are made per producer and consumer).
    pub async fn connect(&self) -> Result<Environment, rabbitmq_stream_client::error::ClientError> {
        Environment::builder()
            .host(&self.host)
            .port(self.port)
            .username(&self.username)
            .password(self.password.expose())
            .virtual_host(&self.virtual_host)
            .build()
            .await
    }
}

/// How long a partition stream keeps its messages. Only a stream's creation applies it: an
/// existing stream keeps what it was created with (change it with a RabbitMQ policy).
///
/// A message that ages out before any engine read it loses nothing: the chunk ledger still holds
/// the chunk as `stored`, and an engine that finds a gap in a stream's offsets has the gateways
/// announce its partition's waiting chunks again (see the engine's `processor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// `max-age`, whole seconds; `None` keeps messages whatever their age.
    pub max_age: Option<Duration>,
    /// `max-length-bytes`; `None` sets no size cap.
    pub max_bytes: Option<u64>,
    /// `stream-max-segment-size-bytes`; `None` is the broker's default (500 MB). Retention
    /// removes whole segments, and only when a new one starts.
    pub segment_bytes: Option<u64>,
}

impl Retention {
    fn apply(&self, mut creator: StreamCreator) -> StreamCreator {
        if let Some(age) = self.max_age {
            creator = creator.max_age(age);
        }
        if let Some(bytes) = self.max_bytes {
            creator = creator.max_length(ByteCapacity::B(bytes));
        }
        if let Some(bytes) = self.segment_bytes {
            creator = creator.max_segment_size(ByteCapacity::B(bytes));
        }
        creator
    }
}

/// Creates the partition streams that do not exist yet, with `retention`.
pub async fn ensure_streams(
    env: &Environment,
    prefix: &str,
    partitions: u16,
    retention: &Retention,
) -> Result<(), StreamCreateError> {
    for partition in 0..partitions {
        match retention
            .apply(env.stream_creator())
            .create(&stream_name(prefix, partition))
            .await
        {
            Ok(()) => {}
            Err(StreamCreateError::Create {
                status: ResponseCode::StreamAlreadyExists,
                ..
            }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_url() {
        let addr =
            BrokerAddress::parse("rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f").unwrap();
        assert_eq!(addr.host, "127.0.0.1");
        assert_eq!(addr.port, 5552);
        assert_eq!(addr.username, "guest");
        assert_eq!(addr.password.expose(), "guest");
        assert_eq!(addr.virtual_host, "/");
        assert!(BrokerAddress::parse_setting("amqp://x")
            .unwrap_err()
            .contains("RABBITMQ_STREAM_URL"));
    }
}
