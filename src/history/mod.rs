//! Partitioned history: tables that only grow, range-partitioned by UTC month with PostgreSQL's
//! native partitioning (docs/SCALING.md, step 3).
//!
//! Each such table has one partition per month, `<table>_pYYYY_MM`, and `<table>_default` for a
//! row no month takes. This module decides which months must exist and which retention drops; the
//! DDL itself is two SQL functions of the migration that converted the tables
//! (`history_make_month`, `history_drop_before`), called from [`store`].
//!
//! - **Made ahead.** Every instance makes the current month and the next [`MONTHS_AHEAD`] at
//!   start-up and every [`UPKEEP_INTERVAL`], and so does `switchboard maintenance partitions`. A
//!   row can therefore only reach the default partition if upkeep failed for months, or with a
//!   timestamp far from now; making its month later moves it out.
//! - **Retention** drops whole months: with `keep_months` set, a month goes once all of it is more
//!   than `keep_months` months old, so rows are kept at least `keep_months` months and less than
//!   one month more. Dropping a partition is one catalog change, not a delete per row. The audit
//!   trail's, the call events' and the calls' months are dropped only by `switchboard
//!   maintenance partitions` (a CronJob); the feed's by the feed's sequencer, once its retention has passed
//!   every event of the month.
//! - **Locks.** Making or dropping a partition takes a short exclusive lock on the table. Upkeep
//!   gives up after 2 s rather than hold the queries that queue behind it, and tries again at the
//!   next round; with two months made ahead, nothing depends on one round.

pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Months made ahead of the current one.
pub const MONTHS_AHEAD: u32 = 2;
/// How often a serving instance makes the months ahead.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// A table partitioned by month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Who read or changed what (`at`).
    AuditEvents,
    /// The event feed's rows (`created_at`). Its retention is the feed's own
    /// (`--feed-retention-secs`, `src/feed/sequencer.rs`), not [`Retention`]'s.
    FeedEvents,
    /// The gateways' call events (`occurred_at`). A call whose events retention dropped keeps its
    /// record (KPIs read the records), and takes no more events.
    CallEvents,
    /// The calls' records (`offered_at`): what KPIs, the scorecard and reconciliation read. Whole
    /// days of KPIs stay in their rollups when their calls are dropped.
    Calls,
}

impl Table {
    pub const ALL: &'static [Table] = &[
        Table::AuditEvents,
        Table::FeedEvents,
        Table::CallEvents,
        Table::Calls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::AuditEvents => "audit_events",
            Table::FeedEvents => "feed_events",
            Table::CallEvents => "call_events",
            Table::Calls => "calls",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a retention of {0} months reaches before the calendar")]
    RetentionTooLong(u32),
}

/// How many months each table keeps; `None` keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub audit_months: Option<u32>,
    pub call_event_months: Option<u32>,
    pub call_months: Option<u32>,
}

impl Retention {
    fn months(self, table: Table) -> Option<u32> {
        match table {
            Table::AuditEvents => self.audit_months,
            Table::FeedEvents => None,
            Table::CallEvents => self.call_event_months,
            Table::Calls => self.call_months,
        }
    }
}

/// What one round of upkeep did: partitions made and dropped, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upkeep {
    pub made: Vec<String>,
    pub dropped: Vec<String>,
}

/// The first day of the UTC month holding `at`.
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    let day = at.date_naive();
    day.with_day(1).unwrap_or(day)
}

/// The months whose partitions must exist at `now`: the current one and the next
/// [`MONTHS_AHEAD`].
pub fn months_to_make(now: DateTime<Utc>) -> Vec<NaiveDate> {
    let current = month_of(now);
    (0..=MONTHS_AHEAD)
        .filter_map(|ahead| current.checked_add_months(Months::new(ahead)))
        .collect()
}

/// The first month kept when rows are kept `keep_months` months: every month before it ended
/// more than `keep_months` months before `now`.
pub fn keep_from(now: DateTime<Utc>, keep_months: u32) -> Option<NaiveDate> {
    let cutoff = now.checked_sub_months(Months::new(keep_months))?;
    Some(month_of(cutoff))
}

/// Makes the months ahead of every partitioned table.
pub async fn make_ahead(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<String>, HistoryError> {
    let mut made = Vec::new();
    for table in Table::ALL {
        for month in months_to_make(now) {
            made.extend(store::make_month(pool, *table, month).await?);
        }
    }
    Ok(made)
}

/// `switchboard maintenance partitions`: makes the months ahead, then drops what `retention` no
/// longer keeps.
pub async fn upkeep(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention: Retention,
) -> Result<Upkeep, HistoryError> {
    let made = make_ahead(pool, now).await?;
    let mut dropped = Vec::new();
    for table in Table::ALL {
        let Some(months) = retention.months(*table) else {
            continue;
        };
        let first_kept = keep_from(now, months).ok_or(HistoryError::RetentionTooLong(months))?;
        dropped.extend(store::drop_before(pool, *table, first_kept).await?);
    }
    Ok(Upkeep { made, dropped })
}

/// Makes the months ahead now and every [`UPKEEP_INTERVAL`] until `stop` turns true, then counts
/// the rows in the default partitions into `default_rows` (they mean months were missing: an
/// alert). A failed round is logged and tried again at the next.
pub fn spawn_upkeep(
    pool: PgPool,
    default_rows: Arc<AtomicI64>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            match make_ahead(&pool, Utc::now()).await {
                Ok(made) if !made.is_empty() => tracing::info!(?made, "history partitions made"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "history partitions not made (retrying)"),
            }
            match store::default_rows(&pool).await {
                Ok(rows) => default_rows.store(rows, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "history default partitions not counted"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("time")
    }

    fn month(y: i32, m: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, 1).expect("date")
    }

    #[test]
    fn the_current_month_and_two_ahead_are_made_across_a_year_end() {
        assert_eq!(
            months_to_make(at(2026, 11, 30, 23)),
            [month(2026, 11), month(2026, 12), month(2027, 1)]
        );
        assert_eq!(
            months_to_make(at(2026, 12, 1, 0)),
            [month(2026, 12), month(2027, 1), month(2027, 2)]
        );
    }

    #[test]
    fn retention_keeps_whole_months_at_least_as_long_as_asked() {
        // Twelve months back from 7 December 2026 is 7 December 2025: December 2025 is partly
        // younger, so it stays; November 2025 ended before the cutoff and goes.
        assert_eq!(keep_from(at(2026, 12, 7, 10), 12), Some(month(2025, 12)));
        // On the first of a month, the month twelve back is just reached, and kept.
        assert_eq!(keep_from(at(2026, 12, 1, 0), 12), Some(month(2025, 12)));
        // Zero months keeps the current month only.
        assert_eq!(keep_from(at(2026, 12, 31, 23), 0), Some(month(2026, 12)));
        // A month-end that the earlier month does not have clamps to its last day.
        assert_eq!(keep_from(at(2026, 3, 31, 12), 1), Some(month(2026, 2)));
    }

    #[test]
    fn every_kept_row_is_at_least_as_old_as_retention_allows() {
        // For any now and any retention, the first month kept starts no later than the cutoff
        // (nothing younger than the cutoff is dropped), and its end is after the cutoff (no
        // month wholly older than the cutoff is kept).
        for days in (0..800).step_by(7) {
            let now = at(2025, 1, 1, 12) + chrono::Duration::days(days);
            for months in [0, 1, 6, 12, 13, 24] {
                let cutoff = now.checked_sub_months(Months::new(months)).expect("cutoff");
                let first = keep_from(now, months).expect("month");
                let start = Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight"));
                let end = start.checked_add_months(Months::new(1)).expect("month end");
                assert!(start <= cutoff && cutoff < end, "{now} keeping {months}");
            }
        }
    }
}
