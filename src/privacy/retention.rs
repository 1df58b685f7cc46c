//! `switchboard retention run`: free text older than the retention period is blanked in batches,
//! each batch in its own short transaction (so a long purge never holds locks for long and can be
//! interrupted and re-run at any point).
//!
//! What ages out: interaction notes and free-text outcomes (by when the interaction started), case
//! comments (by when they were written) and the attached data of call events (by when they were
//! received). Everything KPIs count stays. Interactions show on screen pops, so each batch
//! invalidates the affected customers' pops like any other write.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use super::Result;
use crate::screenpop::{Pending, PopInvalidator};
use crate::{calls, cases, interactions};

const BATCH: i64 = 1000;

/// Where the retention job runs against: the database, and the Redis of the servers whose cached
/// pops must be refreshed (`None`: no Redis; cached pops expire by themselves).
pub struct RetentionTarget {
    pub database_url: String,
    pub redis: Option<crate::redis_link::RedisTarget>,
    pub redis_prefix: String,
}

/// `switchboard retention run`, wired: connects, migrates, blanks what is older than `keep_days`,
/// and invalidates the pops that showed it. Returns the cutoff and what was blanked.
pub async fn run_retention_job(
    target: RetentionTarget,
    keep_days: u32,
) -> anyhow::Result<(DateTime<Utc>, RetentionReport)> {
    let pool = PgPool::connect(&target.database_url).await?;
    crate::db::migrate(&pool).await?;
    let cache = target.redis.map(|redis| {
        let link = crate::redis_link::RedisLink::new(&crate::redis_link::RedisSettings {
            wait_replicas: redis.default_wait_replicas(),
            target: redis,
            key_prefix: target.redis_prefix,
            op_timeout: std::time::Duration::from_millis(500),
            retry_after: std::time::Duration::from_secs(1),
        });
        crate::screenpop::cache::PopCache::invalidation_only(link)
    });
    if cache.is_none() {
        tracing::warn!("no REDIS_URL: cached pops may show purged outcomes until they expire");
    }
    let pops = PopInvalidator::new(pool.clone(), cache);
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(keep_days));
    let report = run_retention(&pool, &pops, cutoff).await?;
    Ok((cutoff, report))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub interactions: u64,
    pub case_comments: u64,
    pub call_events: u64,
}

/// Blanks everything covered by the retention policy that is older than `cutoff`.
pub async fn run_retention(
    pool: &PgPool,
    pops: &PopInvalidator,
    cutoff: DateTime<Utc>,
) -> Result<RetentionReport> {
    let interactions = in_batches(pool, pops, |conn, pops| {
        Box::pin(async move {
            let mut customers = interactions::privacy::purge_before(conn, cutoff, BATCH).await?;
            let purged = customers.len() as u64;
            customers.sort();
            customers.dedup();
            Ok((purged, pops.record_for_customers(conn, &customers).await?))
        })
    })
    .await?;
    let case_comments = in_batches(pool, pops, |conn, _| {
        Box::pin(async move {
            let purged = cases::privacy::purge_before(conn, cutoff, BATCH).await?;
            Ok((purged, Pending::default()))
        })
    })
    .await?;
    let call_events = in_batches(pool, pops, |conn, _| {
        Box::pin(async move {
            let purged = calls::privacy::purge_before(conn, cutoff, BATCH).await?;
            Ok((purged, Pending::default()))
        })
    })
    .await?;
    Ok(RetentionReport {
        interactions,
        case_comments,
        call_events,
    })
}

/// Runs `batch` (up to [`BATCH`] rows, and the pop invalidations they need) in its own
/// transaction until a batch comes back short; returns the rows changed.
async fn in_batches<F>(pool: &PgPool, pops: &PopInvalidator, mut batch: F) -> Result<u64>
where
    F: for<'c> FnMut(
        &'c mut PgConnection,
        PopInvalidator,
    ) -> BoxFuture<'c, sqlx::Result<(u64, Pending)>>,
{
    let mut total = 0;
    loop {
        let mut tx = crate::db::begin(pool).await?;
        let (changed, pending) = batch(&mut tx, pops.clone()).await?;
        tx.commit().await?;
        pops.apply(pending).await;
        total += changed;
        if changed < BATCH as u64 {
            return Ok(total);
        }
    }
}
