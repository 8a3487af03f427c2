//! The gateway's metrics, declared once in [`FAMILIES`]: names, help texts and the label values
//! known in advance (the dashboard test reads this catalogue). [`register`] runs at start, so every counter and histogram is on `/metrics` from
//! the first scrape (at 0): dashboards show 0 instead of "No data", and `rate()` sees the first
//! increment. Call sites use the names below.

use ingest_runtime::telemetry::{Family, Kind, Label};

pub const HTTP_REQUESTS: &str = "ingest_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "ingest_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "ingest_rate_limited_total";
pub const RATELIMIT_FALLBACK: &str = "ingest_ratelimit_fallback_total";
pub const AUTH_FAILURES: &str = "ingest_auth_failures_total";
pub const BYTES_RECEIVED: &str = "ingest_bytes_received_total";
pub const CHUNK_STORE: &str = "ingest_chunk_store_seconds";
pub const UPLOADS_EXPIRED: &str = "ingest_uploads_expired_total";
pub const UPLOADS_SETTLED: &str = "ingest_uploads_settled_total";

/// Every route label of [`HTTP_REQUESTS`] and [`HTTP_REQUEST_DURATION`].
pub const ROUTES: &[&str] = &[
    "auth_token",
    "auth_verify",
    "upload_create",
    "upload_list",
    "upload_multipart",
    "upload_status",
    "upload_rejected",
    "upload_delete",
    "upload_complete",
    "upload_chunk",
    "upload_chunk_retry",
    "datasets_list",
    "clients_list",
    "clients_add",
    "clients_disable",
    "health",
    "ready",
    "metrics",
    "docs",
    "console",
    "other",
];
/// Every `class` label of [`RATE_LIMITED`].
pub const LIMIT_CLASSES: &[&str] = &["auth", "upload", "status"];
/// Every `kind` label of [`RATE_LIMITED`].
pub const LIMIT_KINDS: &[&str] = &["ip", "client"];
/// Every `reason` label of [`AUTH_FAILURES`].
pub const AUTH_FAILURE_REASONS: &[&str] = &[
    "missing",
    "expired",
    "not_yet_valid",
    "invalid",
    "client_disabled",
    "no_credentials",
    "bad_credentials",
    "scope",
];

/// The gateway's catalogue: every family it exports, with its `# HELP` text and labels.
pub const FAMILIES: &[Family] = &[
    Family {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        help: "HTTP requests answered, by route and status",
        labels: &[
            Label {
                name: "route",
                values: ROUTES,
            },
            Label {
                name: "status",
                values: &[],
            },
        ],
    },
    Family {
        name: HTTP_REQUEST_DURATION,
        kind: Kind::Histogram,
        help: "time to answer an HTTP request, by route",
        labels: &[Label {
            name: "route",
            values: ROUTES,
        }],
    },
    Family {
        name: RATE_LIMITED,
        kind: Kind::Counter,
        help: "requests refused with 429, by route class and key kind",
        labels: &[
            Label {
                name: "class",
                values: LIMIT_CLASSES,
            },
            Label {
                name: "kind",
                values: LIMIT_KINDS,
            },
        ],
    },
    Family {
        name: RATELIMIT_FALLBACK,
        kind: Kind::Counter,
        help: "rate-limit checks answered by the in-process limiter instead of Redis",
        labels: &[],
    },
    Family {
        name: AUTH_FAILURES,
        kind: Kind::Counter,
        help: "refused authentications, by reason",
        labels: &[Label {
            name: "reason",
            values: AUTH_FAILURE_REASONS,
        }],
    },
    Family {
        name: BYTES_RECEIVED,
        kind: Kind::Counter,
        help: "chunk bytes stored and recorded",
        labels: &[],
    },
    Family {
        name: CHUNK_STORE,
        kind: Kind::Histogram,
        help: "time to store, record and publish one chunk",
        labels: &[],
    },
    Family {
        name: UPLOADS_EXPIRED,
        kind: Kind::Counter,
        help: "uploads failed by the expiry sweep (TTL without activity)",
        labels: &[],
    },
    Family {
        name: UPLOADS_SETTLED,
        kind: Kind::Counter,
        help: "uploads without a declared count ended by the settle rule",
        labels: &[],
    },
];

/// Describes every family and creates each known series at zero. Idempotent.
pub fn register() {
    ingest_runtime::telemetry::register(FAMILIES);
}
