//! PostgreSQL plumbing: the pool, migrations, and classifying sqlx errors into what a caller can act on.

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

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
    let options = connect_options(database_url)?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// How the service connects to a PostgreSQL server (the primary or a read replica).
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let mut options = PgConnectOptions::from_str(database_url)?.application_name("switchboard");
    // JIT off for the service's sessions, unless the URL sets it (`?options=-c%20jit%3Don`). Its
    // statements are short, and PostgreSQL compiles JIT code afresh at every execution: a
    // statement over a large table paid tens of milliseconds of compiling to save less.
    if !database_url.contains("jit") {
        options = options.options([("jit", "off")]);
    }
    Ok(options)
}

/// Tasks of this process waiting for a pooled connection right now (sqlx does not count them):
/// the `switchboard_db_pool_waiting` gauge. Every acquisition goes through [`acquire`] or
/// [`begin`] (clippy's `disallowed-methods` refuses `Pool::acquire` and `Pool::begin`
/// elsewhere).
static WAITING: AtomicI64 = AtomicI64::new(0);

pub fn waiting_for_connection() -> i64 {
    WAITING.load(Ordering::Relaxed)
}

/// Counts a waiter until dropped, however the wait ends (done, failed or cancelled).
struct Waiter;

impl Waiter {
    fn enter() -> Self {
        WAITING.fetch_add(1, Ordering::Relaxed);
        Waiter
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pooled connection, counted while it is awaited.
#[allow(clippy::disallowed_methods)]
pub async fn acquire(pool: &PgPool) -> sqlx::Result<PoolConnection<Postgres>> {
    let _waiting = Waiter::enter();
    pool.acquire().await
}

/// A transaction on a pooled connection, counted as waiting until it has begun (the wait for
/// the connection, plus the BEGIN round trip).
#[allow(clippy::disallowed_methods)]
pub async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let _waiting = Waiter::enter();
    pool.begin().await
}

/// A transaction whose statements run on generic plans, begun in the same round trip as `BEGIN`.
///
/// For the hot write paths, whose statements take arrays (`unnest($1::uuid[])`, `= ANY($1)`) or
/// read partitioned tables. PostgreSQL's default (`plan_cache_mode = auto`) compares each cached
/// statement's generic plan with the custom plans it made, and a custom plan knows the array's
/// length (one element, not the generic ten) and prunes to one month: it always looks cheaper,
/// so such a statement is planned afresh at every execution. Measured under the mixed load
/// (BENCHMARKS.md, #25 third pass): a fifth of PostgreSQL's time was planning, 0.4 to 0.6 ms
/// for each of the call-event batch's three reads. Their generic plans are index lookups either
/// way, and runtime pruning still reads one month.
///
/// Not for statements whose best plan depends on a value (a `LIKE` prefix, a skewed column, a
/// time range's width): those stay on the default.
#[allow(clippy::disallowed_methods)]
pub async fn begin_generic(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let _waiting = Waiter::enter();
    pool.begin_with("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
        .await
}

/// Waits until PostgreSQL answers, retrying every 500 ms for at most `patience`.
pub async fn wait_until_reachable(pool: &PgPool, patience: Duration) -> Result<(), sqlx::Error> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match sqlx::query_scalar!("SELECT 1 AS ok").fetch_one(pool).await {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// How the rest of a transaction runs, for the few that need more than the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionMode {
    /// One snapshot for every statement (an export that must agree with itself).
    RepeatableRead,
    /// One snapshot, reading only (KPIs over several statements).
    RepeatableReadOnly,
    /// Sorts and hashes of up to 128 MB in memory (the KPI joins).
    WorkMem128Mb,
    /// A fresh plan for every statement (an import grows tables faster than their statistics).
    CustomPlans,
    /// No JIT compilation (the feed's numbering: a JIT costs more than the statement).
    NoJit,
    /// Gives up on a lock after 2 s (DDL on a busy table: queries queue behind a waiting lock).
    ShortLockWait,
    /// Gives up on a lock after 100 ms (DDL on a table every write path uses).
    BriefLockWait,
}

/// Sets `mode` for the rest of the current transaction.
pub async fn set_transaction(
    conn: &mut sqlx::PgConnection,
    mode: TransactionMode,
) -> sqlx::Result<()> {
    let statement = match mode {
        TransactionMode::RepeatableRead => {
            sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        }
        TransactionMode::RepeatableReadOnly => {
            sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        }
        TransactionMode::WorkMem128Mb => sqlx::query!("SET LOCAL work_mem = '128MB'"),
        TransactionMode::CustomPlans => {
            sqlx::query!("SET LOCAL plan_cache_mode = force_custom_plan")
        }
        TransactionMode::NoJit => sqlx::query!("SET LOCAL jit = off"),
        TransactionMode::ShortLockWait => sqlx::query!("SET LOCAL lock_timeout = '2s'"),
        TransactionMode::BriefLockWait => sqlx::query!("SET LOCAL lock_timeout = '100ms'"),
    };
    statement.execute(conn).await?;
    Ok(())
}

/// Whether PostgreSQL answers `SELECT 1` within `patience` (the health probe).
pub async fn ping(pool: &PgPool, patience: Duration) -> bool {
    matches!(
        tokio::time::timeout(
            patience,
            sqlx::query_scalar!("SELECT 1 AS ok").fetch_one(pool)
        )
        .await,
        Ok(Ok(_))
    )
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

#[cfg(test)]
mod waiting_tests {
    use super::*;

    #[tokio::test]
    async fn a_task_waiting_for_a_connection_is_counted_until_it_gives_up() {
        // A "server" that accepts and never answers: the connection attempt hangs.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("address");
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let settings = PoolSettings {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(400),
        };
        let pool =
            lazy_pool(&format!("postgres://nobody@{address}/none"), &settings).expect("a pool");
        let before = waiting_for_connection();
        let waiter = tokio::spawn(async move { acquire(&pool).await.is_err() });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(waiting_for_connection(), before + 1);
        assert!(waiter.await.expect("joined"), "it gives up at the timeout");
        assert_eq!(waiting_for_connection(), before);
        silent.abort();
    }
}
