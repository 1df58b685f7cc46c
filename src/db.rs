//! PostgreSQL plumbing: the pool, migrations, and classifying sqlx errors into what a caller can act on.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Pool settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails with UNAVAILABLE.
    pub acquire_timeout: Duration,
}

/// A pool that connects lazily, so the server starts (and reports NOT_SERVING) while PostgreSQL is
/// unreachable instead of failing to boot.
pub fn lazy_pool(database_url: &str, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(database_url)?.application_name("switchboard");
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Waits until PostgreSQL answers, retrying every 500 ms for at most `patience`.
pub async fn wait_until_reachable(pool: &PgPool, patience: Duration) -> Result<(), sqlx::Error> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Applies pending migrations; safe to run from several instances at once (sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// What a failed query means for the request that sent it.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure<'a> {
    /// The database could not be reached or the pool is exhausted: nothing was written.
    Unavailable,
    /// A unique constraint (by name) rejected the write.
    UniqueViolation(&'a str),
    /// A foreign key (by name) rejected the write.
    ForeignKeyViolation(&'a str),
    /// Anything else: a bug or a schema mismatch.
    Other,
}

pub fn classify(error: &sqlx::Error) -> Failure<'_> {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Failure::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") => Failure::UniqueViolation(db.constraint().unwrap_or("")),
            Some("23503") => Failure::ForeignKeyViolation(db.constraint().unwrap_or("")),
            // Class 08 (connection exception), 57P01..57P03 (admin shutdown, crash shutdown,
            // cannot connect now): the server is going away or not there yet.
            Some(code) if code.starts_with("08") || code.starts_with("57P") => Failure::Unavailable,
            _ => Failure::Other,
        },
        _ => Failure::Other,
    }
}

/// `From<sqlx::Error>` for a context's error enum whose database failures are only
/// `Unavailable(sqlx::Error)` (retry: UNAVAILABLE) and `Database(sqlx::Error)` (INTERNAL).
macro_rules! from_sqlx {
    ($error:ident) => {
        impl From<sqlx::Error> for $error {
            fn from(error: sqlx::Error) -> Self {
                match $crate::db::classify(&error) {
                    $crate::db::Failure::Unavailable => $error::Unavailable(error),
                    _ => $error::Database(error),
                }
            }
        }
    };
}
pub(crate) use from_sqlx;
