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
