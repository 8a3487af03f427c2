//! PostgreSQL: connecting, creating the database when it is missing, and migrations.
//!
//! Migrations are the SQL files of `db/migrations`, compiled into the binaries. They are applied
//! in order, each in its own transaction, while holding a session advisory lock, so any number
//! of gateway and engine processes may start at once: the first applies them, the others wait
//! and then find nothing left to do.

use tokio_postgres::{error::SqlState, Client, Config};

use crate::pgtls::{self, Tls};

/// The migrations, in the order they are applied. Append only: never change what an applied one
/// leaves in a database (0013 lost its first `ensure_partition`, which 0014 replaces whole: a
/// database ends the same either way).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../db/migrations/0001_init.sql")),
    (
        2,
        "chunk_file_removal",
        include_str!("../../db/migrations/0002_chunk_file_removal.sql"),
    ),
    (
        3,
        "chunk_announced",
        include_str!("../../db/migrations/0003_chunk_announced.sql"),
    ),
    (
        4,
        "chunk_backlog",
        include_str!("../../db/migrations/0004_chunk_backlog.sql"),
    ),
    (
        5,
        "transaction_id_cache",
        include_str!("../../db/migrations/0005_transaction_id_cache.sql"),
    ),
    (
        6,
        "partition_attach",
        include_str!("../../db/migrations/0006_partition_attach.sql"),
    ),
    (
        7,
        "chunk_pieces",
        include_str!("../../db/migrations/0007_chunk_pieces.sql"),
    ),
    (
        8,
        "upload_idempotency",
        include_str!("../../db/migrations/0008_upload_idempotency.sql"),
    ),
    (
        9,
        "upload_withdrawal",
        include_str!("../../db/migrations/0009_upload_withdrawal.sql"),
    ),
    (
        10,
        "upload_hooks",
        include_str!("../../db/migrations/0010_upload_hooks.sql"),
    ),
    (
        11,
        "chunk_retries",
        include_str!("../../db/migrations/0011_chunk_retries.sql"),
    ),
    (
        12,
        "client_scopes",
        include_str!("../../db/migrations/0012_client_scopes.sql"),
    ),
    (
        13,
        "declarative_datasets",
        include_str!("../../db/migrations/0013_declarative_datasets.sql"),
    ),
    (
        14,
        "partition_clash",
        include_str!("../../db/migrations/0014_partition_clash.sql"),
    ),
    (
        15,
        "client_token_cutoff",
        include_str!("../../db/migrations/0015_client_token_cutoff.sql"),
    ),
    (
        16,
        "upload_body_seen",
        include_str!("../../db/migrations/0016_upload_body_seen.sql"),
    ),
];

/// Key of the advisory lock that serialises migration runs ("ingest" in ASCII).
const MIGRATION_LOCK: i64 = 0x696e_6765_7374;

/// What can go wrong talking to the database at start.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(tokio_postgres::Error),
    #[error("DATABASE_URL names no database")]
    NoDatabaseName,
    #[error("cannot reach PostgreSQL at DATABASE_URL: {}", with_causes(.0))]
    Connect(tokio_postgres::Error),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("DATABASE_URL: {0}")]
    Tls(#[from] crate::pgtls::TlsError),
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
}

/// `err` and its causes: "error performing TLS handshake" alone does not say that the
/// certificate's issuer is unknown.
fn with_causes(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(err) = cause {
        let next = err.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        cause = err.source();
    }
    text
}

/// The connection settings of `url` and the TLS connector its `sslmode` asks for
/// ([`crate::pgtls`]).
pub fn parse_url(url: &str) -> Result<(Config, Tls), DbError> {
    let (rest, mode, root) = pgtls::split_url(url);
    let mut config: Config = rest.parse().map_err(DbError::BadUrl)?;
    let tls = pgtls::connector(&mut config, mode.as_deref(), root.as_deref())?;
    Ok((config, tls))
}

/// Connects and drives the connection on a background task.
pub async fn connect(url: &str) -> Result<Client, DbError> {
    let (config, tls) = parse_url(url)?;
    connect_with(&config, &tls).await
}

/// Whether the database at `url` answers a query (a probe's check): `Ok`, or why not.
pub async fn answers(url: &str) -> Result<(), String> {
    let client = connect(url).await.map_err(|err| err.to_string())?;
    client
        .query_one("SELECT 1", &[])
        .await
        .map(drop)
        .map_err(|err| err.to_string())
}

/// Connects with `config` over `tls` and drives the connection on a background task.
pub async fn connect_with(config: &Config, tls: &Tls) -> Result<Client, DbError> {
    connect_holding_with(config, tls, ()).await
}

/// Connects to `url` like [`connect`], with `held` kept until the session ends: when the client
/// is dropped, or when the server ends the session (an idle-in-transaction timeout, a
/// terminated backend), whoever holds the client meanwhile. A permit held this way bounds live
/// sessions, not clients stuck with a dead one.
pub async fn connect_holding<T: Send + 'static>(url: &str, held: T) -> Result<Client, DbError> {
    let (config, tls) = parse_url(url)?;
    connect_holding_with(&config, &tls, held).await
}

async fn connect_holding_with<T: Send + 'static>(
    config: &Config,
    tls: &Tls,
    held: T,
) -> Result<Client, DbError> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "postgres connection closed");
        }
        drop(held);
    });
    Ok(client)
}

/// Creates the database named in `url` if it does not exist. Safe when several processes race.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let (config, tls) = parse_url(url)?;
    let name = config
        .get_dbname()
        .ok_or(DbError::NoDatabaseName)?
        .to_owned();
    match connect_with(&config, &tls).await {
        Ok(_) => return Ok(()),
        Err(DbError::Connect(err)) if err.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(err) => return Err(err),
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let client = connect_with(&admin, &tls).await?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // Another process created it between our check and our CREATE.
        Err(err)
            if err.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || err.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// Applies the migrations not applied yet; returns how many this call applied.
pub async fn migrate(client: &mut Client) -> Result<usize, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_pending(client).await;
    // The lock is released even when a migration failed; a failed unlock only means the
    // connection is gone, which releases the lock anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply_pending(client: &mut Client) -> Result<usize, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut count = 0;
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let failed = |source| DbError::Migration {
            version,
            name,
            source,
        };
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version, name, "migration applied");
        count += 1;
    }
    Ok(count)
}

/// Creates the database if needed, applies migrations and returns a connection to it.
pub async fn prepare(url: &str) -> Result<Client, DbError> {
    ensure_database(url).await?;
    let mut client = connect(url).await?;
    migrate(&mut client).await?;
    Ok(client)
}
