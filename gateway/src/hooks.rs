//! Completion hooks: when an upload ends (`done`, `failed`, `aborted`, `undone`), a JSON POST
//! ([`ingest_ledger::hooks::UploadEnded`]) to its callback URL, signed with HMAC-SHA256.
//!
//! Delivered from the ledger: every gateway sweeps it for ended uploads whose end was not
//! acknowledged (a 2xx), claims a few for a 30-second lease, posts them, and records the answer.
//! A failed attempt is retried after `INGEST_WEBHOOK_RETRY_MS`, doubling up to an hour, for
//! [`MAX_ATTEMPTS`] attempts (about a day). A gateway killed mid-delivery leaves its claims to
//! expire and be claimed again, so a hook arrives at least once; receivers dedupe on
//! `X-Ingest-Delivery` (`<folder>:<state>:<completed_at>`).
//!
//! Signature: `X-Ingest-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
//! `INGEST_WEBHOOK_SECRET`; a receiver recomputes it and refuses old timestamps.
//!
//! An upload's own callback URL comes from an API client, so unless
//! `INGEST_WEBHOOK_ALLOW_PRIVATE` is set it must resolve to public addresses only, and the
//! request goes to the address that was checked (no second lookup to rebind).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::task::AbortOnDropHandle;

use ingest_ledger::hooks::{self, Due};
use ingest_runtime::settings::Secret;

use crate::app::AppState;
use crate::sweeps::{self, SweepError};

/// Attempts before a hook is given up (its last error stays in the ledger).
pub const MAX_ATTEMPTS: i32 = 30;
/// How long a claimed hook is this gateway's to deliver.
const LEASE: Duration = Duration::from_secs(30);
/// Hooks claimed per sweep.
const BATCH: i64 = 50;
/// One delivery's deadline, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the sweep when hooks are on (`INGEST_WEBHOOK_SECRET` set); it stops when dropped.
pub fn spawn(state: &AppState) -> Option<AbortOnDropHandle<()>> {
    let secret = state.settings.webhook_secret.clone()?;
    let hooks = Arc::new(Hooks {
        pool: state.pool.clone(),
        secret,
        allow_private: state.settings.webhook_allow_private,
        retry: state.settings.webhook_retry,
        default_url: state.settings.webhook_url.clone(),
    });
    Some(sweeps::every(Duration::from_millis(200), move || {
        let hooks = hooks.clone();
        async move {
            if let Err(err) = hooks.sweep().await {
                tracing::warn!(error = %err, "completion hook sweep failed");
            }
        }
    }))
}

struct Hooks {
    pool: Pool,
    secret: Secret,
    allow_private: bool,
    retry: Duration,
    /// `INGEST_WEBHOOK_URL`, trusted: the operator's, not a client's.
    default_url: Option<String>,
}

impl Hooks {
    async fn sweep(&self) -> Result<(), SweepError> {
        let db = self.pool.get().await?;
        let due = hooks::claim_due(&db, LEASE, MAX_ATTEMPTS, BATCH).await?;
        let deliveries = due
            .iter()
            .map(|hook| async move { (hook, self.deliver(hook).await) });
        for (hook, outcome) in futures_util::future::join_all(deliveries).await {
            let folder = hook.event.folder;
            match outcome {
                Ok(()) => hooks::delivered(&db, &hook.event).await?,
                Err(reason) => {
                    let wait = (self.retry
                        * 2u32.saturating_pow(hook.attempts.clamp(0, 20) as u32))
                    .min(Duration::from_secs(3600));
                    tracing::info!(%folder, attempt = hook.attempts + 1, %reason, retry_in = ?wait, "completion hook not delivered");
                    hooks::attempt_failed(&db, &hook.event, wait, &reason).await?;
                }
            }
        }
        Ok(())
    }

    /// Posts one hook; `Err` says why it did not get a 2xx.
    async fn deliver(&self, hook: &Due) -> Result<(), String> {
        let url = reqwest::Url::parse(&hook.url).map_err(|err| format!("bad URL: {err}"))?;
        let trusted = self.allow_private || self.default_url.as_deref() == Some(hook.url.as_str());
        // No proxy from the environment either: it would bypass the address checked below.
        let mut client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if !trusted {
            let address = public_address(&url).await?;
            let host = url.host_str().unwrap_or_default().to_owned();
            client = client.resolve(&host, address);
        }
        let client = client.build().map_err(|err| err.to_string())?;
        let body = serde_json::to_vec(&hook.event).map_err(|err| err.to_string())?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signature = sign(&self.secret, timestamp, &body);
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header(
                "x-ingest-signature",
                format!("t={timestamp},v1={signature}"),
            )
            .header("x-ingest-delivery", delivery_id(&hook.event))
            .body(body)
            .send()
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

/// `<folder>:<state>:<completed_at>`: the same for every attempt of one end, different for a
/// later end of the same upload (reopened and ended again, or undone).
fn delivery_id(event: &ingest_ledger::hooks::UploadEnded) -> String {
    let ended = event.completed_at.as_deref().unwrap_or_default();
    format!("{}:{}:{ended}", event.folder, event.state)
}

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The URL's first address, if every address it resolves to is public.
async fn public_address(url: &reqwest::Url) -> Result<SocketAddr, String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    );
    let addresses: Vec<SocketAddr> = lookup
        .await
        .map_err(|_| format!("resolving {host} timed out"))?
        .map_err(|err| format!("cannot resolve {host}: {err}"))?
        .collect();
    match addresses.first() {
        None => Err(format!("{host} resolves to no address")),
        Some(_) if addresses.iter().any(|a| !is_public(a.ip())) => Err(format!(
            "{host} resolves to a private or local address (set INGEST_WEBHOOK_ALLOW_PRIVATE to allow)"
        )),
        Some(first) => Ok(*first),
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240 // reserved
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19))) // benchmarking
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let [first, second, ..] = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local
                || first == 0x2002 // 6to4: carries an IPv4 address
                || (first == 0x0064 && second == 0xff9b)) // NAT64: carries an IPv4 address
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "fec0::1",
            "192.0.0.8",
            "240.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Python: hmac.new(b"0123456789abcdef", b"1700000000.{}", hashlib.sha256).hexdigest()
        let secret = Secret::new("0123456789abcdef");
        assert_eq!(
            sign(&secret, 1_700_000_000, b"{}"),
            "e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }
}
