//! API clients: ids with argon2-hashed secrets in PostgreSQL (`api_clients`).
//!
//! A token names its client in `sub` and its [`Scope`]s in `scope`; every authenticated request
//! asks [`ApiClients::scopes_now`] whether that client still exists and is enabled, whether the
//! token was issued after the client's secret last changed, and what it may do now. The answer
//! is cached for [`ENABLED_CACHE_TTL`] per gateway, so a disabled (or deleted, or demoted)
//! client's live tokens stop working within that time on every gateway, at one small query per
//! client per period. Disabling a client, or replacing its secret, revokes the tokens it was
//! issued before: each token carries the client's token generation at issue ([`Grant`]), the
//! change bumps it, and a token of an older generation is refused; enabling the client again
//! does not bring them back.
//!
//! Clients are managed with `gateway client ...` (bootstrap, and for an operator at the
//! database) or, by a client with the `admin` scope, over the API (`/api/clients`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use deadpool_postgres::Pool;
use tokio::sync::Semaphore;

use ingest_runtime::settings::Secret;

/// What a client's tokens may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The upload API (every route under `/api/upload` and `/api/uploads`).
    Upload,
    /// Managing API clients (`/api/clients`).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "upload" => Some(Self::Upload),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Reads a list of names: each known, none twice, at least one; sorted.
    pub fn parse_all<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Self>, ClientsError> {
        let mut scopes = Vec::new();
        for name in names {
            let scope = Self::parse(name).ok_or_else(|| ClientsError::BadScope(name.to_owned()))?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err(ClientsError::BadScope(String::new()));
        }
        scopes.sort();
        Ok(scopes)
    }
}

/// The scopes' names, as stored and as answered.
pub fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|scope| scope.as_str()).collect()
}

/// Stored scopes; the schema's CHECK keeps unknown names out, and one that slipped in is dropped.
fn stored(names: Vec<String>) -> Vec<Scope> {
    names.iter().filter_map(|name| Scope::parse(name)).collect()
}

/// What can go wrong managing clients.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("client id must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadId,
    #[error("client secret must be at least 8 characters")]
    WeakSecret,
    #[error("scopes must be one or more of upload, admin (got {0:?})")]
    BadScope(String),
    #[error("client {0} exists already")]
    Exists(String),
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
    pub scopes: Vec<Scope>,
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
    enabled: Arc<Mutex<HashMap<String, CachedGrant>>>,
}

/// What an enabled client may do now: its scopes, and its token generation (tokens of an
/// older one are revoked). What a token is issued with, too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scopes: Vec<Scope>,
    pub generation: u32,
}

impl Grant {
    fn from_row(row: &tokio_postgres::Row, scopes: usize, generation: usize) -> Self {
        Self {
            scopes: stored(row.get(scopes)),
            generation: u32::try_from(row.get::<_, i32>(generation)).unwrap_or(0),
        }
    }

    /// The scopes a token of `generation` has now: none if the client revoked it since.
    fn scopes_of(self, generation: u32) -> Option<Vec<Scope>> {
        (generation >= self.generation).then_some(self.scopes)
    }
}

/// The last answer for a client (`None` if disabled or unknown), and when it was asked.
type CachedGrant = (Option<Grant>, Instant);

/// What a change that revokes the client's tokens does to its generation.
const NEXT_GENERATION: &str = "token_generation = api_clients.token_generation + 1";

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

    /// Creates the client or replaces its secret (and re-enables it); an existing client keeps
    /// its scopes, a new one gets `upload`. Tokens issued before a replaced secret are revoked.
    pub async fn upsert(&self, client_id: &str, secret: &Secret) -> Result<(), ClientsError> {
        let hash = hash_secret(client_id, secret).await?;
        let db = self.pool.get().await?;
        db.execute(
            &format!(
                "INSERT INTO api_clients (client_id, secret_hash) VALUES ($1, $2)
                 ON CONFLICT (client_id) DO UPDATE
                 SET secret_hash = excluded.secret_hash, disabled_at = NULL,
                     {NEXT_GENERATION}"
            ),
            &[&client_id, &hash],
        )
        .await?;
        Ok(())
    }

    /// Creates the client with scope `upload` unless it exists; `false` when it did. An
    /// existing client is left as it is: a gateway's start (`INGEST_BOOTSTRAP_CLIENT`) must not
    /// enable a client an operator disabled, nor undo a secret rotated since.
    pub async fn bootstrap(&self, client_id: &str, secret: &Secret) -> Result<bool, ClientsError> {
        self.create(client_id, secret, &[Scope::Upload])
            .await
            .map(|()| true)
            .or_else(|err| match err {
                ClientsError::Exists(_) => Ok(false),
                other => Err(other),
            })
    }

    /// Creates a new client with `scopes`; [`ClientsError::Exists`] if the id is taken (over the
    /// API a secret is never replaced silently).
    pub async fn create(
        &self,
        client_id: &str,
        secret: &Secret,
        scopes: &[Scope],
    ) -> Result<(), ClientsError> {
        let hash = hash_secret(client_id, secret).await?;
        let db = self.pool.get().await?;
        let inserted = db
            .execute(
                "INSERT INTO api_clients (client_id, secret_hash, scopes) VALUES ($1, $2, $3)
                 ON CONFLICT (client_id) DO NOTHING",
                &[&client_id, &hash, &scope_names(scopes)],
            )
            .await?;
        if inserted == 0 {
            return Err(ClientsError::Exists(client_id.to_owned()));
        }
        Ok(())
    }

    /// Sets what the client's tokens may do (live tokens follow within [`ENABLED_CACHE_TTL`]).
    pub async fn set_scopes(&self, client_id: &str, scopes: &[Scope]) -> Result<(), ClientsError> {
        let db = self.pool.get().await?;
        let updated = db
            .execute(
                "UPDATE api_clients SET scopes = $2 WHERE client_id = $1",
                &[&client_id, &scope_names(scopes)],
            )
            .await?;
        if updated == 0 {
            return Err(ClientsError::Unknown(client_id.to_owned()));
        }
        Ok(())
    }

    /// What enabled client `client_id` may do if `secret` is its secret (a token is issued
    /// with it), `None` otherwise.
    pub async fn verify(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<Grant>, ClientsError> {
        if !valid_id(client_id) || secret.len() > 1024 {
            return Ok(None);
        }
        let db = self.pool.get().await?;
        let row = db
            .query_opt(
                "SELECT secret_hash, scopes, token_generation FROM api_clients
                 WHERE client_id = $1 AND disabled_at IS NULL",
                &[&client_id],
            )
            .await?;
        // An unknown or disabled id costs the same check as a wrong secret, so how long the
        // answer takes does not tell which client ids exist.
        let (hash, grant) = match row {
            Some(row) => (
                Some(row.get::<_, String>(0)),
                Some(Grant::from_row(&row, 1, 2)),
            ),
            None => (None, None),
        };
        let secret = secret.to_owned();
        let valid = off_the_async_threads(move || {
            let hash = hash.as_deref().unwrap_or(&NO_CLIENT_HASH);
            PasswordHash::new(hash)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(secret.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await?;
        Ok(grant.filter(|_| valid))
    }

    /// The scopes a token of `client_id` issued in token generation `generation` has now:
    /// `None` if the client is unknown or disabled, or revoked the token since; as of at most
    /// [`ENABLED_CACHE_TTL`] ago. Checked on every authenticated request, so a disabled,
    /// deleted or demoted client's live tokens stop working.
    pub async fn scopes_now(
        &self,
        client_id: &str,
        generation: u32,
    ) -> Result<Option<Vec<Scope>>, ClientsError> {
        if let Some(grant) = self.cached(client_id) {
            return Ok(grant.and_then(|grant| grant.scopes_of(generation)));
        }
        // Stamped before asking: an answer that took long is not newer than one asked later.
        let asked = Instant::now();
        let db = self.pool.get().await?;
        let grant = db
            .query_opt(
                "SELECT scopes, token_generation FROM api_clients
                 WHERE client_id = $1 AND disabled_at IS NULL",
                &[&client_id],
            )
            .await?
            .map(|row| Grant::from_row(&row, 0, 1));
        let mut cache = self
            .enabled
            .lock()
            .expect("the client cache lock is never poisoned");
        if cache.len() >= ENABLED_CACHE_MAX {
            cache.clear();
        }
        let newer_known = cache
            .get(client_id)
            .is_some_and(|&(_, cached_at)| cached_at > asked);
        if !newer_known {
            cache.insert(client_id.to_owned(), (grant.clone(), asked));
        }
        Ok(grant.and_then(|grant| grant.scopes_of(generation)))
    }

    fn cached(&self, client_id: &str) -> Option<Option<Grant>> {
        let cache = self
            .enabled
            .lock()
            .expect("the client cache lock is never poisoned");
        cache
            .get(client_id)
            .filter(|(_, at)| at.elapsed() < ENABLED_CACHE_TTL)
            .map(|(enabled, _)| enabled.clone())
    }

    pub async fn list(&self) -> Result<Vec<ClientInfo>, ClientsError> {
        let db = self.pool.get().await?;
        let rows = db
            .query(
                "SELECT client_id, created_at::text, disabled_at IS NOT NULL, scopes
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
                scopes: stored(row.get(3)),
            })
            .collect())
    }

    pub async fn disable(&self, client_id: &str) -> Result<(), ClientsError> {
        let db = self.pool.get().await?;
        let updated = db
            .execute(
                "UPDATE api_clients
                 SET disabled_at = coalesce(disabled_at, now()),
                     token_generation = token_generation
                                        + CASE WHEN disabled_at IS NULL THEN 1 ELSE 0 END
                 WHERE client_id = $1",
                &[&client_id],
            )
            .await?;
        if updated == 0 {
            return Err(ClientsError::Unknown(client_id.to_owned()));
        }
        Ok(())
    }
}

/// What a secret is checked against when no enabled client has the id: the hash of a random
/// secret, with the parameters every stored hash has.
static NO_CLIENT_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(generate_secret().expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

/// Checks the id and the secret, and hashes the secret.
async fn hash_secret(client_id: &str, secret: &Secret) -> Result<String, ClientsError> {
    if !valid_id(client_id) {
        return Err(ClientsError::BadId);
    }
    if secret.expose().len() < 8 {
        return Err(ClientsError::WeakSecret);
    }
    let secret = secret.clone();
    off_the_async_threads(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(secret.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await?
    .map_err(|err| ClientsError::Hash(err.to_string()))
}

/// Runs an argon2 hash or check on the blocking pool, at most one per core at a time.
///
/// Each one takes 19 MiB and tens of milliseconds of a core by design; unbounded, a burst of
/// token requests (from many addresses, so past the per-IP limit) would start as many as the
/// blocking pool has threads (512): gigabytes, and every core busy. Waiting requests queue here.
async fn off_the_async_threads<T: Send + 'static>(
    hashing: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ClientsError> {
    static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    let _slot = SLOTS
        .acquire()
        .await
        .map_err(|err| ClientsError::Hash(err.to_string()))?;
    tokio::task::spawn_blocking(hashing)
        .await
        .map_err(|err| ClientsError::Hash(err.to_string()))
}

/// A new random secret: 32 bytes from the OS, hex.
pub fn generate_secret() -> Secret {
    use argon2::password_hash::rand_core::RngCore;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}
