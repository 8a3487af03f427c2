//! API clients: ids with argon2-hashed secrets in PostgreSQL (`api_clients`).
//!
//! A token names its client in `sub`; every authenticated request asks [`ApiClients::is_enabled`]
//! whether that client still exists and is enabled. The answer is cached for
//! [`ENABLED_CACHE_TTL`] per gateway, so a disabled (or deleted) client's live tokens stop
//! working within that time on every gateway, at one small query per client per period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use deadpool_postgres::Pool;

use ingest_contract::settings::Secret;

/// What can go wrong managing clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("client id must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadId,
    #[error("client secret must be at least 8 characters")]
    WeakSecret,
    #[error("no such client: {0}")]
    Unknown(String),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("hashing: {0}")]
    Hash(String),
}

/// One API client as listed.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: String,
    pub created_at: String,
    pub disabled: bool,
}

/// How long a gateway trusts its last answer to "is this client enabled?".
pub const ENABLED_CACHE_TTL: Duration = Duration::from_secs(2);
/// Past this many cached answers the cache starts afresh (tokens of unknown clients could
/// otherwise grow it without bound: their `sub` is whatever a key holder signed).
const ENABLED_CACHE_MAX: usize = 10_000;

/// The API clients stored in PostgreSQL.
#[derive(Clone)]
pub struct ApiClients {
    pool: Pool,
    enabled: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ApiClients {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            enabled: Arc::default(),
        }
    }

    /// Creates the client or replaces its secret (and re-enables it).
    pub async fn upsert(&self, client_id: &str, secret: &Secret) -> Result<(), ClientsError> {
        if !valid_id(client_id) {
            return Err(ClientsError::BadId);
        }
        if secret.expose().len() < 8 {
            return Err(ClientsError::WeakSecret);
        }
        let secret = secret.clone();
        // argon2 is deliberately slow: keep it off the async threads.
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(secret.expose().as_bytes(), &salt)
                .map(|hash| hash.to_string())
        })
        .await
        .map_err(|err| ClientsError::Hash(err.to_string()))?
        .map_err(|err| ClientsError::Hash(err.to_string()))?;
        let db = self.pool.get().await?;
        db.execute(
            "INSERT INTO api_clients (client_id, secret_hash) VALUES ($1, $2)
             ON CONFLICT (client_id) DO UPDATE SET secret_hash = excluded.secret_hash, disabled_at = NULL",
            &[&client_id, &hash],
        )
        .await?;
        Ok(())
    }

    /// Whether `secret` is the secret of an enabled client `client_id`.
    pub async fn verify(&self, client_id: &str, secret: &str) -> Result<bool, ClientsError> {
        if !valid_id(client_id) || secret.len() > 1024 {
            return Ok(false);
        }
        let db = self.pool.get().await?;
        let row = db
            .query_opt(
                "SELECT secret_hash FROM api_clients WHERE client_id = $1 AND disabled_at IS NULL",
                &[&client_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let stored: String = row.get(0);
        let secret = secret.to_owned();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(secret.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|err| ClientsError::Hash(err.to_string()))
    }

    /// Whether `client_id` exists and is enabled, as of at most [`ENABLED_CACHE_TTL`] ago.
    /// Checked on every authenticated request, so a disabled or deleted client's live tokens
    /// stop working.
    pub async fn is_enabled(&self, client_id: &str) -> Result<bool, ClientsError> {
        if let Some(enabled) = self.cached(client_id) {
            return Ok(enabled);
        }
        let db = self.pool.get().await?;
        let enabled = db
            .query_opt(
                "SELECT 1 FROM api_clients WHERE client_id = $1 AND disabled_at IS NULL",
                &[&client_id],
            )
            .await?
            .is_some();
        let mut cache = self
            .enabled
            .lock()
            .expect("the client cache lock is never poisoned");
        if cache.len() >= ENABLED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(client_id.to_owned(), (enabled, Instant::now()));
        Ok(enabled)
    }

    fn cached(&self, client_id: &str) -> Option<bool> {
        let cache = self
            .enabled
            .lock()
            .expect("the client cache lock is never poisoned");
        cache
            .get(client_id)
            .filter(|(_, at)| at.elapsed() < ENABLED_CACHE_TTL)
            .map(|(enabled, _)| *enabled)
    }

    pub async fn list(&self) -> Result<Vec<ClientInfo>, ClientsError> {
        let db = self.pool.get().await?;
        let rows = db
            .query(
                "SELECT client_id, created_at::text, disabled_at IS NOT NULL
                 FROM api_clients ORDER BY client_id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| ClientInfo {
                client_id: row.get(0),
                created_at: row.get(1),
                disabled: row.get(2),
            })
            .collect())
    }

    pub async fn disable(&self, client_id: &str) -> Result<(), ClientsError> {
        let db = self.pool.get().await?;
        let updated = db
            .execute(
                "UPDATE api_clients SET disabled_at = coalesce(disabled_at, now()) WHERE client_id = $1",
                &[&client_id],
            )
            .await?;
        if updated == 0 {
            return Err(ClientsError::Unknown(client_id.to_owned()));
        }
        Ok(())
    }
}
