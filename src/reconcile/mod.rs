//! Parallel running: the old system's call records (CDRs) against Switchboard's calls, day by
//! day (docs/RECONCILE.md).
//!
//! 1. A run streams records into a temporary table of one PostgreSQL transaction; nothing is
//!    written to the database's own tables, and the table goes with the transaction.
//! 2. When the stream ends, one query matches every record to a call of the gateway: by call id
//!    where both have it, otherwise by caller, dialed number and the nearest start within the
//!    tolerance, one record per call. Duplicates (the same call id, or the same caller, dialed
//!    number and start, on a later line) are set aside first.
//! 3. Two grouped queries count each day on both sides; the discrepancies are listed by line.
//!
//! [`files`] reads Asterisk, FreeSWITCH, Kamailio and mapped CSV files into records, and [`cli`]
//! is `switchboard reconcile`, which streams them here through the public API.

pub mod cli;
pub mod files;
pub mod grpc;
mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// What a run compares with, and how loosely.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gateway_id: String,
    pub time_tolerance_seconds: i32,
    pub duration_tolerance_seconds: i32,
    pub time_zone: String,
}

/// One call as the old system recorded it, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdr {
    pub line: i64,
    pub call_id: Option<String>,
    /// E.164, or none (withheld, an extension).
    pub caller: Option<String>,
    pub dialed: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub talk_ms: Option<i64>,
}

/// The KPIs one side shows for a day (times in milliseconds, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Side {
    pub offered: i64,
    pub answered: i64,
    pub wait_ms: f64,
    pub talk_ms: f64,
    /// Answered calls with a talk time (ended).
    pub talked: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Day {
    pub day: String,
    pub cdrs: i64,
    pub matched: i64,
    pub missing_in_switchboard: i64,
    pub missing_in_cdrs: i64,
    pub duplicates: i64,
    pub outcome_mismatches: i64,
    pub duration_mismatches: i64,
    pub cdr: Side,
    pub switchboard: Side,
}

impl Day {
    fn add(&mut self, other: &Day) {
        self.cdrs += other.cdrs;
        self.matched += other.matched;
        self.missing_in_switchboard += other.missing_in_switchboard;
        self.missing_in_cdrs += other.missing_in_cdrs;
        self.duplicates += other.duplicates;
        self.outcome_mismatches += other.outcome_mismatches;
        self.duration_mismatches += other.duration_mismatches;
        for (mine, theirs) in [
            (&mut self.cdr, &other.cdr),
            (&mut self.switchboard, &other.switchboard),
        ] {
            mine.offered += theirs.offered;
            mine.answered += theirs.answered;
            mine.wait_ms += theirs.wait_ms;
            mine.talk_ms += theirs.talk_ms;
            mine.talked += theirs.talked;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    MissingInSwitchboard,
    MissingInCdrs,
    Duplicate,
    Outcome,
    Duration,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "missing_in_switchboard" => Kind::MissingInSwitchboard,
            "missing_in_cdrs" => Kind::MissingInCdrs,
            "duplicate" => Kind::Duplicate,
            "outcome" => Kind::Outcome,
            "duration" => Kind::Duration,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub kind: Kind,
    pub line: i64,
    pub call_id: String,
    pub day: String,
    pub detail: String,
}

/// At most this many discrepancies are listed; the counts are always complete.
pub const LISTED: i64 = 10_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub days: Vec<Day>,
    pub total: Day,
    pub discrepancies: Vec<Discrepancy>,
    pub left_out: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(ReconcileError);

#[derive(Clone)]
pub struct Reconciler {
    pool: PgPool,
}

/// One run: its records so far, in a transaction that is rolled back at the end.
pub struct Run {
    tx: Transaction<'static, Postgres>,
    settings: Settings,
}

impl Reconciler {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn start(&self, settings: Settings) -> Result<Run, ReconcileError> {
        let mut tx = crate::db::begin(&self.pool).await?;
        // A million records and a month of calls are hashed and sorted: in memory, not on disk.
        crate::db::set_transaction(&mut tx, crate::db::TransactionMode::WorkMem128Mb).await?;
        store::create_table(&mut tx).await?;
        Ok(Run { tx, settings })
    }
}

impl Run {
    pub async fn add(&mut self, records: &[Cdr]) -> Result<(), ReconcileError> {
        Ok(store::insert(&mut self.tx, records).await?)
    }

    /// Matches, counts and lists; nothing stays written.
    #[tracing::instrument(skip(self), fields(gateway_id = %self.settings.gateway_id))]
    pub async fn finish(mut self) -> Result<Report, ReconcileError> {
        let s = &self.settings;
        store::analyze(&mut self.tx).await?;
        store::pair(&mut self.tx, &s.gateway_id, s.time_tolerance_seconds).await?;
        let tolerance_ms = 1000 * i64::from(s.duration_tolerance_seconds);
        let mut days: BTreeMap<String, Day> = BTreeMap::new();
        for day in store::cdr_days(&mut self.tx, &s.gateway_id, &s.time_zone, tolerance_ms).await? {
            days.insert(day.day.clone(), day);
        }
        for (day, side, missing) in store::switchboard_days(
            &mut self.tx,
            &s.gateway_id,
            &s.time_zone,
            s.time_tolerance_seconds,
        )
        .await?
        {
            let entry = days.entry(day.clone()).or_insert_with(|| Day {
                day,
                ..Day::default()
            });
            entry.switchboard = side;
            entry.missing_in_cdrs = missing;
        }
        let (discrepancies, total_listed) = store::discrepancies(
            &mut self.tx,
            &s.gateway_id,
            &s.time_zone,
            s.time_tolerance_seconds,
            tolerance_ms,
        )
        .await?;
        self.tx.rollback().await?;
        let mut total = Day::default();
        for day in days.values() {
            total.add(day);
        }
        Ok(Report {
            days: days.into_values().collect(),
            total,
            left_out: total_listed - discrepancies.len() as i64,
            discrepancies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_sums_both_sides_of_every_day() {
        let day = |name: &str, n: i64| Day {
            day: name.into(),
            cdrs: n,
            matched: n - 1,
            cdr: Side {
                offered: n,
                answered: n - 1,
                wait_ms: 1000.0,
                talk_ms: 2000.0,
                talked: 1,
            },
            switchboard: Side {
                offered: n + 1,
                ..Side::default()
            },
            ..Day::default()
        };
        let mut total = Day::default();
        total.add(&day("2026-11-01", 3));
        total.add(&day("2026-11-02", 5));
        assert_eq!((total.cdrs, total.matched), (8, 6));
        assert_eq!((total.cdr.answered, total.cdr.talk_ms), (6, 4000.0));
        assert_eq!(total.switchboard.offered, 10);
        assert_eq!(Kind::parse("duplicate"), Some(Kind::Duplicate));
        assert_eq!(Kind::parse("other"), None);
    }
}
