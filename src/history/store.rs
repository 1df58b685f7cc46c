//! PostgreSQL access for partitioned history: the migration's two functions, each called in its
//! own short transaction under one advisory lock (two instances never make the same month at
//! once), and the catalog read that lists a table's months.

use chrono::NaiveDate;
use sqlx::PgPool;

use super::Table;
use crate::db::{self, TransactionMode};

/// The advisory lock every partition change takes ("SBHIST" in ASCII, to spot in `pg_locks`).
const PARTITIONS_LOCK: i64 = 0x5342_4849_5354;

/// How many times a change that gave up waiting for its lock is tried again, a second apart.
const LOCK_RETRIES: u32 = 5;
/// SQLSTATE `lock_not_available`: a wait past `lock_timeout`.
const LOCK_TIMEOUT: &str = "55P03";

/// Makes `table`'s partition for `month` unless it exists (moving in the default partition's
/// rows for that month); returns its name when it was made.
pub async fn make_month(
    pool: &PgPool,
    table: Table,
    month: NaiveDate,
) -> sqlx::Result<Option<String>> {
    retry_lock_timeouts(|| async {
        let mut tx = locked(pool, TransactionMode::ShortLockWait).await?;
        let made = sqlx::query_scalar!(
            "SELECT CASE WHEN history_make_month($1, $2) THEN history_partition($1, $2) END AS made",
            table.name(),
            month
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(made)
    })
    .await
}

/// Drops `table`'s month partitions before `keep_from`, and its default partition's rows from
/// before it; returns the partitions dropped.
pub async fn drop_before(
    pool: &PgPool,
    table: Table,
    keep_from: NaiveDate,
) -> sqlx::Result<Vec<String>> {
    retry_lock_timeouts(|| async {
        let mut tx = locked(pool, TransactionMode::ShortLockWait).await?;
        let dropped = drop_in(&mut tx, table, keep_from).await?;
        tx.commit().await?;
        Ok(dropped)
    })
    .await
}

/// Drops `table`'s month partitions before `keep_from` (and its default partition's rows from
/// before it) if that can be done at once: `None` when another change holds the partitions'
/// lock, or the table's lock is not had within 100 ms. For a table every write path uses, whose
/// writers would queue behind a longer wait; the caller tries again at its next round.
pub async fn try_drop_before(
    pool: &PgPool,
    table: Table,
    keep_from: NaiveDate,
) -> sqlx::Result<Option<Vec<String>>> {
    let mut tx = db::begin(pool).await?;
    let locked = sqlx::query_scalar!(
        "SELECT pg_try_advisory_xact_lock($1) AS \"locked!\"",
        PARTITIONS_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(None);
    }
    db::set_transaction(&mut tx, TransactionMode::BriefLockWait).await?;
    match drop_in(&mut tx, table, keep_from).await {
        Err(error) if is_lock_timeout(&error) => Ok(None),
        Err(error) => Err(error),
        Ok(dropped) => {
            tx.commit().await?;
            Ok(Some(dropped))
        }
    }
}

/// `history_drop_before`, in a transaction that holds the partitions' lock.
async fn drop_in(
    tx: &mut sqlx::PgConnection,
    table: Table,
    keep_from: NaiveDate,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT history_drop_before($1, $2) AS \"dropped!\"",
        table.name(),
        keep_from
    )
    .fetch_all(tx)
    .await
}

/// Whether `error` is a lock wait that passed `lock_timeout`.
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some(LOCK_TIMEOUT))
}

/// A transaction holding the partitions' advisory lock (waited for as long as it takes: its
/// holder gives up its own waits within seconds), whose other lock waits follow `mode`.
async fn locked(
    pool: &PgPool,
    mode: TransactionMode,
) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = db::begin(pool).await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", PARTITIONS_LOCK)
        .execute(&mut *tx)
        .await?;
    db::set_transaction(&mut tx, mode).await?;
    Ok(tx)
}

/// Runs `change` again, a second later, while it fails on a lock timeout, at most
/// [`LOCK_RETRIES`] times.
async fn retry_lock_timeouts<T, F, Fut>(mut change: F) -> sqlx::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<T>>,
{
    let mut tries = 0;
    loop {
        match change().await {
            Err(error) if is_lock_timeout(&error) && tries < LOCK_RETRIES => {
                tries += 1;
                tracing::info!(
                    tries,
                    "partition change waited too long for its lock; again"
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// `table`'s month partitions, oldest first.
pub async fn months(pool: &PgPool, table: Table) -> sqlx::Result<Vec<NaiveDate>> {
    sqlx::query_scalar!(
        "SELECT to_date(right(c.relname, 7), 'YYYY_MM') AS \"month!\" \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::text::regclass \
           AND c.relname ~ ('^' || $1 || '_p[0-9]{4}_[0-9]{2}$') \
         ORDER BY 1",
        table.name()
    )
    .fetch_all(pool)
    .await
}

/// Rows in the default partitions of every partitioned table ([`Table::ALL`](super::Table::ALL):
/// one term each), each counted up to 100,000.
pub async fn default_rows(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM audit_events_default LIMIT 100000) a) \
              + (SELECT count(*) FROM (SELECT 1 FROM feed_events_default LIMIT 100000) f) \
           AS \"rows!\""
    )
    .fetch_one(pool)
    .await
}
