//! Decision support: call KPIs per queue, agent, day or hour, against a baseline period.
//! Definitions are in `kpis.rs` and docs/KPIS.md.

mod chains;
pub mod grpc;
mod kpis;
mod store;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::read_replicas::Reads;

pub use chains::{apply_misdial_rule, spawn as spawn_chain_stamper};
pub use kpis::{Kpis, ServiceLevelRule, Tally};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Total,
    Queue,
    Agent,
    Team,
    Campaign,
    Day,
    Hour,
}

impl Grouping {
    fn as_str(self) -> &'static str {
        match self {
            Grouping::Total => "total",
            Grouping::Queue => "queue",
            Grouping::Agent => "agent",
            Grouping::Team => "team",
            Grouping::Campaign => "campaign",
            Grouping::Day => "day",
            Grouping::Hour => "hour",
        }
    }

    /// Whether a group means the same thing in another period (a queue does; a day does not).
    fn comparable_across_periods(self) -> bool {
        matches!(
            self,
            Grouping::Queue
                | Grouping::Agent
                | Grouping::Team
                | Grouping::Campaign
                | Grouping::Total
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A validated KPI request.
#[derive(Debug, Clone)]
pub struct Query {
    pub period: Window,
    pub baseline: Option<Window>,
    pub grouping: Grouping,
    pub queues: Vec<String>,
    pub agents: Vec<String>,
    pub time_zone: String,
    pub short_abandon_seconds: i32,
    pub service_level_seconds: i32,
    /// Another call from the same customer within this many hours makes a call a repeat.
    pub repeat_window_hours: i32,
    pub service_level_rule: ServiceLevelRule,
    /// After-call work above this on one call makes the call an outlier, out of the AHT.
    pub wrap_up_cap_seconds: i32,
}

/// A group's KPIs, with the baseline's when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub key: String,
    pub kpis: Kpis,
    pub baseline: Option<Kpis>,
}

/// Tallies per group key, in the period and in the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Tallies {
    pub period: std::collections::BTreeMap<String, Tally>,
    pub baseline: Option<std::collections::BTreeMap<String, Tally>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub total: Measured,
    pub groups: Vec<Measured>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(AnalyticsError);

/// Calls, outbound campaign attempts and agent time, tallied per group key.
async fn tallies(
    conn: &mut sqlx::PgConnection,
    query: &Query,
    window: &Window,
    grouping: Grouping,
) -> sqlx::Result<std::collections::BTreeMap<String, Tally>> {
    let mut groups = store::tallies(conn, query, window, grouping).await?;
    // Conversions are not tied to a queue: they belong to no queue group.
    let queues_only = grouping == Grouping::Queue || !query.queues.is_empty();
    if !queues_only {
        for (key, (reached, converted)) in store::conversions(conn, query, window, grouping).await?
        {
            let tally = groups.entry(key).or_default();
            tally.reached += reached;
            tally.converted += converted;
        }
    }
    // Agents work no one queue or campaign: occupancy belongs to no such group.
    let agents_apply = !queues_only && grouping != Grouping::Campaign;
    if agents_apply {
        for (key, (occupied, idle)) in store::agent_time(conn, query, window, grouping).await? {
            let tally = groups.entry(key).or_default();
            tally.occupied_ms += occupied;
            tally.idle_ms += idle;
        }
    }
    Ok(groups)
}

#[derive(Clone)]
pub struct Analytics {
    /// KPIs read a replica once it has replayed every commit made before the request (the
    /// chain stamper's catch-up included); the stamper itself writes the primary.
    reads: Reads,
}

impl Analytics {
    pub fn new(reads: Reads) -> Self {
        Self { reads }
    }

    /// The tallies behind [`Analytics::kpis`], per group, read in one repeatable-read snapshot
    /// so that the totals and the groups agree. The baseline is grouped the same way when its
    /// groups mean the same thing in another period, and is one total (key "") otherwise.
    #[tracing::instrument(skip(self))]
    pub async fn tallies(&self, query: &Query) -> Result<Tallies, AnalyticsError> {
        // Every call committed before this request has its next contact stamped.
        chains::catch_up(self.reads.primary()).await?;
        let source = self.reads.current().await;
        Ok(self
            .reads
            .run(
                source,
                |pool| async move { read_tallies(&pool, query).await },
            )
            .await?)
    }

    /// The KPIs per group and in total, against the baseline when there is one.
    pub async fn kpis(&self, query: &Query) -> Result<Report, AnalyticsError> {
        let Tallies {
            period: groups,
            baseline,
        } = self.tallies(query).await?;
        // Groups partition the calls: the total is their sum, without a second pass.
        let total = Tally::sum(groups.values());
        let baseline_total = baseline.as_ref().map(|groups| Tally::sum(groups.values()));
        let baseline_groups = baseline.unwrap_or_default();
        let rule = query.service_level_rule;
        let total = Measured {
            key: String::new(),
            kpis: total.kpis(rule),
            baseline: baseline_total.map(|t| t.kpis(rule)),
        };
        let groups = match query.grouping {
            Grouping::Total => Vec::new(),
            _ => groups
                .into_iter()
                .map(|(key, tally)| Measured {
                    baseline: baseline_groups.get(&key).map(|t| t.kpis(rule)),
                    kpis: tally.kpis(rule),
                    key,
                })
                .collect(),
        };
        Ok(Report { total, groups })
    }
}

/// [`Analytics::tallies`] on one database, in one repeatable-read snapshot.
async fn read_tallies(pool: &PgPool, query: &Query) -> sqlx::Result<Tallies> {
    let mut tx = crate::db::begin(pool).await?;

    crate::db::set_transaction(&mut tx, crate::db::TransactionMode::RepeatableReadOnly).await?;
    // The joins of wrap-ups and feedback hash a month of rows: in memory, not on disk.
    crate::db::set_transaction(&mut tx, crate::db::TransactionMode::WorkMem128Mb).await?;
    // A month of calls costs enough for PostgreSQL to JIT-compile the query, and compiling
    // its hundred-odd expressions took 1 to 4 s, more than running them (BENCHMARKS.md).
    crate::db::set_transaction(&mut tx, crate::db::TransactionMode::NoJit).await?;
    // Planned for this period's rows: after five runs a cached generic plan guessed 5,000 of
    // a million calls, sorted them on disk and took twice as long.
    crate::db::set_transaction(&mut tx, crate::db::TransactionMode::CustomPlans).await?;
    let period = tallies(&mut tx, query, &query.period, query.grouping).await?;
    let baseline = match query.baseline {
        None => None,
        Some(baseline) => {
            let grouping = match query.grouping.comparable_across_periods() {
                true => query.grouping,
                false => Grouping::Total,
            };
            Some(tallies(&mut tx, query, &baseline, grouping).await?)
        }
    };
    tx.commit().await?;
    Ok(Tallies { period, baseline })
}
