//! The gateway's metrics, declared once: names, help texts and the label values known in
//! advance. [`register`] runs at start, so every counter and histogram is on `/metrics` from
//! the first scrape (at 0): dashboards show 0 instead of "No data", and `rate()` sees the first
//! increment. Call sites use the names below.

use ::metrics::{counter, describe_counter, describe_histogram, histogram, Unit};

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
];

/// Describes every metric and creates each known series at zero. Idempotent.
pub fn register() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route and status");
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "time to answer an HTTP request, by route"
    );
    describe_counter!(
        RATE_LIMITED,
        "requests refused with 429, by route class and key kind"
    );
    describe_counter!(
        RATELIMIT_FALLBACK,
        "rate-limit checks answered by the in-process limiter instead of Redis"
    );
    describe_counter!(AUTH_FAILURES, "refused authentications, by reason");
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "chunk bytes stored and recorded"
    );
    describe_histogram!(
        CHUNK_STORE,
        Unit::Seconds,
        "time to store, record and publish one chunk"
    );
    describe_counter!(
        UPLOADS_EXPIRED,
        "uploads failed by the expiry sweep (TTL without activity)"
    );
    describe_counter!(
        UPLOADS_SETTLED,
        "uploads without a declared count ended by the settle rule"
    );

    for route in ROUTES {
        let _ = histogram!(HTTP_REQUEST_DURATION, "route" => *route);
    }
    for class in LIMIT_CLASSES {
        for kind in LIMIT_KINDS {
            counter!(RATE_LIMITED, "class" => *class, "kind" => *kind).increment(0);
        }
    }
    for reason in AUTH_FAILURE_REASONS {
        counter!(AUTH_FAILURES, "reason" => *reason).increment(0);
    }
    for name in [
        RATELIMIT_FALLBACK,
        BYTES_RECEIVED,
        UPLOADS_EXPIRED,
        UPLOADS_SETTLED,
    ] {
        counter!(name).increment(0);
    }
    let _ = histogram!(CHUNK_STORE);
}
