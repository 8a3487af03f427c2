//! Settings shared by the gateway and the engine, and the [`Secret`] type.
//!
//! Each binary builds one typed settings value at start from flags, then `INGEST_*` (and the
//! conventional `DATABASE_URL`, `REDIS_URL`, `RABBITMQ_STREAM_URL`) environment variables, then
//! defaults that work against local services. Invalid values stop the process with a message
//! naming the variable. Nothing below `main` reads the environment.

use std::fmt;
use std::path::PathBuf;

/// The environment variable prefix of every setting of ours.
pub const ENV_PREFIX: &str = "INGEST_";

/// A value that must never be printed: its `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Settings both binaries need: where the database, the broker and the chunk files are.
#[derive(Debug, Clone, clap::Args)]
pub struct SharedSettings {
    /// PostgreSQL URL; the database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ingest",
        value_parser = parse_database_url
    )]
    pub database_url: String,

    /// RabbitMQ stream protocol URL.
    #[arg(
        long,
        env = "RABBITMQ_STREAM_URL",
        default_value = "rabbitmq-stream://guest:guest@127.0.0.1:5552/%2f",
        value_parser = crate::broker::BrokerAddress::parse_setting
    )]
    pub rabbitmq_stream_url: crate::broker::BrokerAddress,

    /// Number of partition streams (1 to 256).
    #[arg(long, env = "INGEST_PARTITIONS", default_value_t = 4, value_parser = parse_partitions)]
    pub partitions: u16,

    /// Prefix of the partition stream names: `<prefix>-<n>`.
    #[arg(long, env = "INGEST_STREAM_PREFIX", default_value = "ingest-chunks", value_parser = parse_stream_prefix)]
    pub stream_prefix: String,

    /// Where chunk files are stored; shared by gateways and engines, never served. With a
    /// bucket as `INGEST_CHUNK_STORE`, this process's own spool instead (never shared).
    #[arg(long, env = "INGEST_UPLOAD_DIR", default_value = "./data/uploads")]
    pub upload_dir: PathBuf,

    /// Where stored chunks live between gateway and engine: `file:///path` (a directory every
    /// process sees; default: `INGEST_UPLOAD_DIR`) or `s3://bucket/prefix` (an S3-compatible
    /// bucket; endpoint, region and credentials from the `AWS_*` variables).
    #[arg(long, env = "INGEST_CHUNK_STORE", value_parser = crate::chunk_store::parse_setting)]
    pub chunk_store: Option<String>,

    /// Folder of dataset definitions (`*.toml`, see `datasets/`), read at start by gateway and
    /// engine alike. Default: `./datasets` when it exists, else only the built-in
    /// `transactions`.
    #[arg(long, env = "INGEST_DATASETS_DIR")]
    pub datasets_dir: Option<PathBuf>,

    /// Partition streams keep messages this many seconds (0: forever); applied when a stream is
    /// created.
    #[arg(long, env = "INGEST_STREAM_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub stream_max_age_secs: u64,

    /// Partition streams keep at most this many bytes (0: no cap); applied when created.
    #[arg(long, env = "INGEST_STREAM_MAX_BYTES", default_value_t = 0)]
    pub stream_max_bytes: u64,

    /// Segment size of new partition streams, in bytes (0: the broker's default, 500 MB).
    /// Retention removes whole segments.
    #[arg(long, env = "INGEST_STREAM_SEGMENT_BYTES", default_value_t = 0)]
    pub stream_segment_bytes: u64,
}

impl SharedSettings {
    /// The chunk store these settings name.
    pub fn chunk_store(
        &self,
    ) -> Result<crate::chunk_store::ChunkStore, crate::chunk_store::ChunkStoreError> {
        crate::chunk_store::ChunkStore::open(self.chunk_store.as_deref(), &self.upload_dir)
    }

    /// The retention new partition streams are created with.
    pub fn retention(&self) -> crate::broker::Retention {
        let some = |n: u64| (n > 0).then_some(n);
        crate::broker::Retention {
            max_age: some(self.stream_max_age_secs).map(std::time::Duration::from_secs),
            max_bytes: some(self.stream_max_bytes),
            segment_bytes: some(self.stream_segment_bytes),
        }
    }
}

/// Checked at start, TLS settings included: a bad `sslmode` or an unreadable `sslrootcert` is a
/// configuration error, not a failure on first connect.
fn parse_database_url(value: &str) -> Result<String, String> {
    crate::db::parse_url(value)
        .map(|_| value.to_owned())
        .map_err(|err| match err {
            crate::db::DbError::BadUrl(err) => {
                format!("DATABASE_URL is not a PostgreSQL URL: {err}")
            }
            other => other.to_string(),
        })
}

fn parse_partitions(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!(
            "INGEST_PARTITIONS must be a whole number from 1 to 256, not {value:?}"
        )),
    }
}

fn parse_stream_prefix(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 200
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "INGEST_STREAM_PREFIX must be 1-200 characters of A-Z a-z 0-9 - _ . , not {value:?}"
        ))
    }
}

/// Parses a duration given in milliseconds, naming the variable when it is not one.
pub fn parse_millis(
    variable: &'static str,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone {
    move |value: &str| {
        value
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| {
                format!("{variable} must be a whole number of milliseconds, not {value:?}")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "*** Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn invalid_values_name_their_variable() {
        assert!(parse_partitions("0")
            .unwrap_err()
            .contains("INGEST_PARTITIONS"));
        assert!(parse_partitions("x")
            .unwrap_err()
            .contains("INGEST_PARTITIONS"));
        assert_eq!(parse_partitions("16"), Ok(16));
        assert!(parse_stream_prefix("a/b")
            .unwrap_err()
            .contains("INGEST_STREAM_PREFIX"));
        assert!(parse_database_url("not a url=")
            .unwrap_err()
            .contains("DATABASE_URL"));
    }
}
