//! Decision support: call KPIs per queue, agent, day or hour, against a baseline period.
//! Definitions are in `kpis.rs` and docs/KPIS.md.

mod chains;
pub mod grpc;
mod kpis;
mod rollups;
mod store;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::read_replicas::Reads;

pub use chains::{apply_misdial_rule, spawn as spawn_chain_stamper};
pub use kpis::{Kpis, ServiceLevelRule, Tally};
pub use rollups::{
    RECOUNT_SPACING, ROLLUP_LOCK, apply_zone as apply_rollup_zone, catch_up as catch_up_rollups,
    roll_up_due as roll_up_due_days, spawn as spawn_rollups,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Total,
    Queue,
    Agent,
    Team,
    Campaign,
    Day,
    Hour,
    Month,
    /// Not asked for: the rollup pass's key (`store::call_tallies_sql`).
    Rollup,
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
            Grouping::Month => "month",
            Grouping::Rollup => "rollup",
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

/// The definitions' defaults: what a request that sets none asks for, and what the rollups hold.
pub const SHORT_ABANDON_SECONDS: i32 = 5;
pub const SERVICE_LEVEL_SECONDS: i32 = 20;
pub const REPEAT_WINDOW_HOURS: i32 = 168;
pub const WRAP_UP_CAP_SECONDS: i32 = 1800;

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

impl Query {
    /// What the rollups hold: every call, agent and attempt of the window, under the default
    /// definitions, with days in `zone`.
    fn rollup(window: Window, zone: &str) -> Self {
        Query {
            period: window,
            baseline: None,
            grouping: Grouping::Rollup,
            queues: Vec::new(),
            agents: Vec::new(),
            time_zone: zone.into(),
            short_abandon_seconds: SHORT_ABANDON_SECONDS,
            service_level_seconds: SERVICE_LEVEL_SECONDS,
            repeat_window_hours: REPEAT_WINDOW_HOURS,
            service_level_rule: ServiceLevelRule::default(),
            wrap_up_cap_seconds: WRAP_UP_CAP_SECONDS,
        }
    }

    /// Whether whole days of this request can be read from the rollups: it asks for the
    /// definitions they hold (the service level's variants are applied to the tallies, after),
    /// and groups by something they keep (never hours; days and months only in the rollups'
    /// zone, which [`rollups::plan_for`] checks).
    fn reads_rollups(&self, grouping: Grouping) -> bool {
        !matches!(grouping, Grouping::Hour | Grouping::Rollup)
            && self.short_abandon_seconds == SHORT_ABANDON_SECONDS
            && self.service_level_seconds == SERVICE_LEVEL_SECONDS
            && self.repeat_window_hours == REPEAT_WINDOW_HOURS
            && self.wrap_up_cap_seconds == WRAP_UP_CAP_SECONDS
    }
}

/// One part of a period a KPI read tallies: a stretch scanned, or whole days read from the
/// rollups.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    Scanned(&'a Window),
    Rolled(&'a [chrono::NaiveDate]),
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

/// Calls, outbound campaign attempts and agent time, tallied per group key: whole days from the
/// rollups where they are current and the request reads them, the rest scanned.
async fn tallies(
    conn: &mut sqlx::PgConnection,
    query: &Query,
    window: &Window,
    grouping: Grouping,
) -> sqlx::Result<std::collections::BTreeMap<String, Tally>> {
    let days_in = matches!(grouping, Grouping::Day | Grouping::Month).then_some(&*query.time_zone);
    let plan = match query.reads_rollups(grouping) {
        true => rollups::plan_for(conn, window, days_in).await?,
        false => rollups::Plan::scan(*window),
    };
    // Conversions are not tied to a queue: they belong to no queue group.
    let queues_only = grouping == Grouping::Queue || !query.queues.is_empty();
    // Agents work no one queue or campaign: occupancy belongs to no such group.
    let agents_apply = !queues_only && grouping != Grouping::Campaign;
    let mut groups = std::collections::BTreeMap::<String, Tally>::new();
    let mut add = |key: String, part: Tally| *groups.entry(key).or_default() += part;
    for part in plan.parts() {
        for (key, tally) in store::tallies(conn, query, part, grouping).await? {
            add(key, tally);
        }
        if !queues_only {
            for (key, pair) in store::conversions(conn, query, part, grouping).await? {
                add(key, Tally::converting(pair));
            }
        }
        if agents_apply {
            for (key, pair) in store::agent_time(conn, query, part, grouping).await? {
                add(key, Tally::occupying(pair));
            }
        }
    }
    Ok(groups)
}

/// Runs `round` every `every` until `stop` turns true (the background passes: chain stamping,
/// rollups). A failing round is retried at the next tick, and logged once per streak.
fn spawn_rounds<F, Fut>(
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
    mut round: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = sqlx::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streak = crate::failure_streak::FailureStreak::default();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            streak.record(what, round().await);
        }
    })
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
