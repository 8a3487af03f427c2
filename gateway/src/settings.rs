//! The gateway's settings: flags override `INGEST_*` environment variables, which override defaults
//! that work against local services.

use std::net::SocketAddr;
use std::time::Duration;

use ingest_runtime::settings::{parse_millis, Secret, SharedSettings};
use ingest_runtime::telemetry::LogFormat;

use crate::client_ip::TrustedNet;
use crate::ratelimit::{Quota, RateLimitSettings};

/// The development signing key used when `INGEST_JWT_SECRET` is unset (a loud warning says so).
pub const DEV_JWT_SECRET: &str = "ingest-development-secret-change-me";

/// Everything the gateway needs to run.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewaySettings {
    #[command(flatten)]
    pub shared: SharedSettings,

    /// Address the HTTP server listens on.
    #[arg(long, env = "INGEST_GATEWAY_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// HS256 signing key for tokens (a development key is used, with a warning, when unset).
    #[arg(long, env = "INGEST_JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<Secret>,

    /// The previous signing key, still accepted while tokens signed with it live (key rotation).
    #[arg(long, env = "INGEST_JWT_PREVIOUS_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_previous_secret: Option<Secret>,

    /// Token lifetime in seconds.
    #[arg(long, env = "INGEST_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,

    /// `id:secret` of an API client to create or update at start.
    #[arg(long, env = "INGEST_BOOTSTRAP_CLIENT", hide_env_values = true, value_parser = parse_bootstrap)]
    pub bootstrap_client: Option<(String, Secret)>,

    /// Largest chunk accepted, in bytes (after decompression too).
    #[arg(long, env = "INGEST_MAX_CHUNK_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_chunk_bytes: u64,

    /// Seconds without activity after which an upload still receiving chunks expires (its
    /// unloaded chunk files are removed).
    #[arg(long, env = "INGEST_UPLOAD_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_ttl_secs: u64,

    /// Seconds without a new chunk (or a chunk body on its way) after which an upload with no
    /// declared chunk count, whose received chunks are all loaded, ends `done` (the original's
    /// flow has no `/complete`).
    #[arg(long, env = "INGEST_UPLOAD_SETTLE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_settle_secs: u64,

    /// How long a client may take to send its request headers, in milliseconds.
    #[arg(long = "header-timeout-ms", env = "INGEST_HEADER_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis("INGEST_HEADER_TIMEOUT_MS"))]
    pub header_timeout: Duration,

    /// How long the gateway waits for each piece of a request body, in milliseconds.
    #[arg(long = "body-frame-timeout-ms", env = "INGEST_BODY_FRAME_TIMEOUT_MS", default_value = "30000", value_parser = parse_millis("INGEST_BODY_FRAME_TIMEOUT_MS"))]
    pub body_frame_timeout: Duration,

    /// How long a whole chunk body may take to arrive, in seconds, however steadily its pieces
    /// come: a client trickling bytes cannot hold a connection and a writer for ever. The
    /// default lets a 64 MiB chunk through at about 220 KiB/s.
    #[arg(long, env = "INGEST_BODY_DEADLINE_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_deadline_secs: u64,

    /// Chunk bodies written at once by this gateway (503 beyond): each holds
    /// one of the runtime's 512 blocking threads while its client sends, so slow clients must not
    /// be able to take them all and stall every file operation of the gateway.
    #[arg(long, env = "INGEST_MAX_BODIES_AT_ONCE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=448))]
    pub max_bodies_at_once: u32,

    /// How long the broker may take to confirm a chunk message, in milliseconds.
    #[arg(long = "publish-timeout-ms", env = "INGEST_PUBLISH_TIMEOUT_MS", default_value = "5000", value_parser = parse_millis("INGEST_PUBLISH_TIMEOUT_MS"))]
    pub publish_timeout: Duration,

    /// How long in-flight requests may take to finish after a shutdown signal, in milliseconds.
    #[arg(long = "shutdown-timeout-ms", env = "INGEST_SHUTDOWN_TIMEOUT_MS", default_value = "30000", value_parser = parse_millis("INGEST_SHUTDOWN_TIMEOUT_MS"))]
    pub shutdown_timeout: Duration,

    /// Name of this gateway process, used to name its stream producers (default: random per start).
    #[arg(long, env = "INGEST_GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// Redis URL of the shared rate-limit store.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Prefix of the rate-limit keys in Redis.
    #[arg(long, env = "INGEST_RATELIMIT_PREFIX", default_value = "ingest:rl:")]
    pub ratelimit_prefix: String,

    /// Redis answer deadline for a rate-limit check before the in-process limiter takes over, in ms.
    #[arg(long = "redis-timeout-ms", env = "INGEST_REDIS_TIMEOUT_MS", default_value = "50", value_parser = parse_millis("INGEST_REDIS_TIMEOUT_MS"))]
    pub redis_timeout: Duration,

    /// Requests per second per client IP and per API client, on each route class.
    #[arg(long, env = "INGEST_RATE_LIMIT_PER_SEC", default_value_t = 100.0)]
    pub rate_limit_per_sec: f64,

    /// Burst on top of the rate (nginx `burst`).
    #[arg(long, env = "INGEST_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// Proxies whose X-Forwarded-For / X-Real-IP are trusted (comma-separated IPs or CIDRs).
    #[arg(long, env = "INGEST_TRUSTED_PROXIES", default_value = "", value_parser = parse_trusted)]
    pub trusted_proxies: TrustedProxies,

    /// Log format: text or json.
    #[arg(long, env = "INGEST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Where every upload's completion hook goes unless it names its own `callback_url`.
    #[arg(long, env = "INGEST_WEBHOOK_URL", value_parser = parse_callback_url)]
    pub webhook_url: Option<String>,

    /// HMAC-SHA256 key signing completion hooks (at least 16 characters); hooks are off without it.
    #[arg(long, env = "INGEST_WEBHOOK_SECRET", value_parser = parse_webhook_secret)]
    pub webhook_secret: Option<Secret>,

    /// Let uploads' own callback URLs reach loopback, private and link-local addresses (only
    /// for trusted clients: otherwise any client could make the gateway call inside the network).
    #[arg(long, env = "INGEST_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,

    /// The first retry of a hook that failed comes after this many ms, each next one after twice
    /// as long, up to an hour.
    #[arg(long = "webhook-retry-ms", env = "INGEST_WEBHOOK_RETRY_MS", default_value = "1000", value_parser = parse_millis("INGEST_WEBHOOK_RETRY_MS"))]
    pub webhook_retry: Duration,
}

/// The parsed `INGEST_TRUSTED_PROXIES` list.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<TrustedNet>);

fn parse_trusted(value: &str) -> Result<TrustedProxies, String> {
    TrustedNet::parse_list(value).map(TrustedProxies)
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.len() < 16 {
        return Err("INGEST_JWT_SECRET must be at least 16 characters".into());
    }
    Ok(Secret::new(value))
}

fn parse_webhook_secret(value: &str) -> Result<Secret, String> {
    if value.len() < 16 {
        return Err("INGEST_WEBHOOK_SECRET must be at least 16 characters".into());
    }
    Ok(Secret::new(value))
}

/// An `http` or `https` URL of at most 2048 bytes: a completion hook's target.
pub fn parse_callback_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|err| format!("not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || value.len() > 2048 {
        return Err("a callback URL must be http or https, with a host, at most 2048 bytes".into());
    }
    Ok(value.to_owned())
}

fn parse_bootstrap(value: &str) -> Result<(String, Secret), String> {
    match value.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok((id.to_owned(), Secret::new(secret)))
        }
        _ => Err("INGEST_BOOTSTRAP_CLIENT must be `client_id:client_secret`".into()),
    }
}

impl GatewaySettings {
    /// The signing key in force (the development key when none is configured).
    pub fn signing_secret(&self) -> Secret {
        self.jwt_secret
            .clone()
            .unwrap_or_else(|| Secret::new(DEV_JWT_SECRET))
    }

    /// Rate-limit settings: the same quota on every route class.
    pub fn rate_limits(&self) -> RateLimitSettings {
        let quota = Quota {
            rate_per_sec: self.rate_limit_per_sec,
            burst: self.rate_limit_burst,
        };
        RateLimitSettings {
            redis_url: self.redis_url.clone(),
            key_prefix: self.ratelimit_prefix.clone(),
            redis_timeout: self.redis_timeout,
            auth: quota,
            upload: quota,
            status: quota,
        }
    }
}
