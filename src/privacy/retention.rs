//! `switchboard retention run`: free text older than the retention period is blanked in batches,
//! each batch in its own short transaction (so a long purge never holds locks for long and can be
//! interrupted and re-run at any point).
//!
//! What ages out: interaction notes and free-text outcomes (by when the interaction started), case
//! comments (by when they were written) and the attached data of call events (by when they were
//! received). Everything KPIs count stays. Interactions show on screen pops, so each batch
//! invalidates the affected customers' pops like any other write.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;
use crate::screenpop::PopInvalidator;
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
    let mut report = RetentionReport::default();
    loop {
        let mut tx = pool.begin().await?;
        let mut customers = interactions::privacy::purge_before(&mut tx, cutoff, BATCH).await?;
        let purged = customers.len();
        customers.sort();
        customers.dedup();
        let pending = pops.record_for_customers(&mut tx, &customers).await?;
        tx.commit().await?;
        pops.apply(pending).await;
        report.interactions += purged as u64;
        if (purged as i64) < BATCH {
            break;
        }
    }
    loop {
        let mut tx = pool.begin().await?;
        let purged = cases::privacy::purge_before(&mut tx, cutoff, BATCH).await?;
        tx.commit().await?;
        report.case_comments += purged;
        if purged < BATCH as u64 {
            break;
        }
    }
    loop {
        let mut tx = pool.begin().await?;
        let purged = calls::privacy::purge_before(&mut tx, cutoff, BATCH).await?;
        tx.commit().await?;
        report.call_events += purged;
        if purged < BATCH as u64 {
            break;
        }
    }
    Ok(report)
}
