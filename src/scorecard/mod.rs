//! The roll-out scorecard: adoption, efficiency against the pre-launch baseline, the feedback
//! loop and team coordination, from the records every other context keeps (docs/SCORECARD.md
//! defines each figure).
//!
//! 1. Efficiency is the KPI query of [`crate::analytics`] run on both periods, per team or
//!    queue, with GetKpis' default thresholds; each KPI's change gets a confidence interval and
//!    a verdict from [`verdict`], so noise is not reported as progress.
//! 2. Adoption, cases and coordination are counted per call and first answering agent here
//!    ([`store`]); team figures are the sums of their agents', and the agents' own figures are
//!    kept below them for the supervisor.
//! 3. The feedback loop covers every item submitted in the period, whoever it came from.

pub mod grpc;
mod store;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

use crate::analytics::{self, Analytics, AnalyticsError, ServiceLevelRule, Tally, Window};
use verdict::{Better, Compared, Moments};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Team,
    Queue,
}

/// A validated scorecard request.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub period: Window,
    pub baseline: Window,
    pub grouping: Grouping,
}

/// A count out of a base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    pub count: i64,
    pub of: i64,
}

impl Share {
    fn add(&mut self, count: i64, of: i64) {
        self.count += count;
        self.of += of;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilentAgent {
    pub agent_id: String,
    pub display_name: String,
    pub calls_answered: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adoption {
    pub pop_delivered: Share,
    pub interaction_logged: Share,
    pub disposition_set: Share,
    pub notes_written: Share,
    pub cases_updated_within_sla: Share,
    /// Agents who answered calls and logged nothing, by agent id.
    pub silent_agents: Vec<SilentAgent>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Efficiency {
    pub average_handle_time: Compared,
    pub average_speed_of_answer: Compared,
    pub service_level: Compared,
    pub first_contact_resolution: Compared,
    pub repeat_contact_rate: Compared,
    pub transfer_rate: Compared,
    pub average_after_call_work: Compared,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    pub agents: i32,
    pub lowest: Option<f64>,
    pub highest: Option<f64>,
    pub coefficient_of_variation: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Coordination {
    pub transfers_resolved_in_team: Share,
    pub cases_resolved_by_teammate: Share,
    pub handle_time_spread: Spread,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentFigures {
    pub agent_id: String,
    pub display_name: String,
    pub calls_answered: i64,
    pub pop_delivered: Share,
    pub interaction_logged: Share,
    pub disposition_set: Share,
    pub notes_written: Share,
    /// Over all of the agent's calls in the period, in seconds.
    pub average_handle_time: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub key: String,
    pub adoption: Adoption,
    pub efficiency: Efficiency,
    /// Team groups and the total.
    pub coordination: Option<Coordination>,
    pub agents: Vec<AgentFigures>,
}

/// Feedback submitted in the period from one source, in one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackCount {
    pub source: String,
    pub category: String,
    pub items: i64,
    pub resolved: i64,
    pub past_due: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackLoop {
    pub counts: Vec<FeedbackCount>,
    pub resolved: Share,
    pub median_hours_to_resolution: Option<f64>,
    pub past_due: i64,
    pub negative_with_case_resolved: Share,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scorecard {
    pub total: Group,
    pub groups: Vec<Group>,
    pub feedback: FeedbackLoop,
}

#[derive(Debug, thiserror::Error)]
pub enum ScorecardError {
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(ScorecardError);

impl From<AnalyticsError> for ScorecardError {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Unavailable(e) => ScorecardError::Unavailable(e),
            AnalyticsError::Database(e) => ScorecardError::Database(e),
        }
    }
}

/// One answered-call row of the adoption query: a group's calls first answered by one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentAdoption {
    key: String,
    agent_id: String,
    display_name: String,
    answered: i64,
    popped: i64,
    logged: i64,
    disposition: i64,
    notes: i64,
}

struct CaseSla {
    key: String,
    within: i64,
    decided: i64,
}

struct TeamTransfers {
    team: String,
    transfers: i64,
    resolved: i64,
}

struct TeamCases {
    team: String,
    resolved: i64,
    by_teammate: i64,
}

struct FeedbackTotals {
    median_seconds: Option<f64>,
    negative_with_case: i64,
    negative_case_resolved: i64,
}

/// The repeat window the scorecard's KPIs use (GetKpis' default), in hours.
const REPEAT_WINDOW_HOURS: i32 = 168;

/// Each efficiency KPI of `now` against `before`, with its verdict. While `settled` is false (the
/// period ended less than the repeat window ago), first-contact resolution and repeat contacts
/// get no verdict: the period's last calls may still become repeats, which would flatter it.
fn efficiency(now: &Tally, before: &Tally, settled: bool) -> Efficiency {
    const MS: f64 = 0.001;
    let rule = ServiceLevelRule::default();
    let moments = |n: i64, sum: f64, sum_sq: f64| Moments { n, sum, sum_sq };
    let provisional = |mut c: Compared| {
        if !settled && c.verdict != verdict::Verdict::InsufficientData {
            c.verdict = verdict::Verdict::Provisional;
        }
        c
    };
    Efficiency {
        average_handle_time: verdict::means(
            moments(now.aht_calls, now.aht_ms, now.aht_ms_sq),
            moments(before.aht_calls, before.aht_ms, before.aht_ms_sq),
            MS,
            Better::Lower,
        ),
        average_speed_of_answer: verdict::means(
            moments(now.answered, now.wait_ms, now.wait_ms_sq),
            moments(before.answered, before.wait_ms, before.wait_ms_sq),
            MS,
            Better::Lower,
        ),
        service_level: verdict::shares(
            now.service_level_counts(rule),
            before.service_level_counts(rule),
            Better::Higher,
        ),
        first_contact_resolution: provisional(verdict::shares(
            (now.first_contact_resolved, now.with_customer),
            (before.first_contact_resolved, before.with_customer),
            Better::Higher,
        )),
        repeat_contact_rate: provisional(verdict::shares(
            (now.repeated, now.with_customer),
            (before.repeated, before.with_customer),
            Better::Lower,
        )),
        transfer_rate: verdict::shares(
            (now.transferred, now.answered),
            (before.transferred, before.answered),
            Better::Lower,
        ),
        average_after_call_work: verdict::means(
            moments(now.aht_calls, now.wrap_up_ms, now.wrap_up_ms_sq),
            moments(before.aht_calls, before.wrap_up_ms, before.wrap_up_ms_sq),
            MS,
            Better::Lower,
        ),
    }
}

/// The adoption figures of these agent rows (one group's, or everyone's).
fn adoption<'a>(rows: impl IntoIterator<Item = &'a AgentAdoption>, cases: Share) -> Adoption {
    let mut adoption = Adoption {
        cases_updated_within_sla: cases,
        ..Adoption::default()
    };
    let mut per_agent: BTreeMap<&str, (&str, i64, i64)> = BTreeMap::new();
    for row in rows {
        adoption.pop_delivered.add(row.popped, row.answered);
        adoption.interaction_logged.add(row.logged, row.answered);
        adoption.disposition_set.add(row.disposition, row.answered);
        adoption.notes_written.add(row.notes, row.answered);
        if !row.agent_id.is_empty() {
            let agent = per_agent
                .entry(&row.agent_id)
                .or_insert((&row.display_name, 0, 0));
            agent.1 += row.answered;
            agent.2 += row.logged;
        }
    }
    adoption.silent_agents = per_agent
        .into_iter()
        .filter(|(_, (_, answered, logged))| *answered > 0 && *logged == 0)
        .map(|(agent_id, (name, answered, _))| SilentAgent {
            agent_id: agent_id.to_owned(),
            display_name: name.to_owned(),
            calls_answered: answered,
        })
        .collect();
    adoption
}

/// The spread of the agents' AHTs (seconds).
fn spread(ahts: &[f64]) -> Spread {
    let n = ahts.len();
    let mean = ahts.iter().sum::<f64>() / n.max(1) as f64;
    let sd = (ahts.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt();
    Spread {
        agents: n as i32,
        lowest: ahts.iter().copied().reduce(f64::min),
        highest: ahts.iter().copied().reduce(f64::max),
        coefficient_of_variation: (n >= 2 && mean > 0.0).then(|| sd / mean),
    }
}

fn agent_figures(row: &AgentAdoption, aht: &BTreeMap<String, Tally>) -> AgentFigures {
    AgentFigures {
        agent_id: row.agent_id.clone(),
        display_name: row.display_name.clone(),
        calls_answered: row.answered,
        pop_delivered: Share {
            count: row.popped,
            of: row.answered,
        },
        interaction_logged: Share {
            count: row.logged,
            of: row.answered,
        },
        disposition_set: Share {
            count: row.disposition,
            of: row.answered,
        },
        notes_written: Share {
            count: row.notes,
            of: row.answered,
        },
        average_handle_time: aht
            .get(&row.agent_id)
            .filter(|t| t.aht_calls > 0)
            .map(|t| t.aht_ms / t.aht_calls as f64 / 1000.0),
    }
}

#[derive(Clone)]
pub struct Scorecards {
    pool: PgPool,
    analytics: Analytics,
}

impl Scorecards {
    pub fn new(pool: PgPool, analytics: Analytics) -> Self {
        Self { pool, analytics }
    }

    #[tracing::instrument(skip(self))]
    pub async fn scorecard(&self, request: &Request) -> Result<Scorecard, ScorecardError> {
        let by_queue = request.grouping == Grouping::Queue;
        let kpi_query = |grouping, baseline| analytics::Query {
            period: request.period,
            baseline,
            grouping,
            queues: Vec::new(),
            agents: Vec::new(),
            time_zone: "UTC".to_owned(),
            short_abandon_seconds: 5,
            service_level_seconds: 20,
            repeat_window_hours: REPEAT_WINDOW_HOURS,
            service_level_rule: ServiceLevelRule::default(),
            wrap_up_cap_seconds: 1800,
        };
        let grouping = match request.grouping {
            Grouping::Team => analytics::Grouping::Team,
            Grouping::Queue => analytics::Grouping::Queue,
        };
        let kpis = self
            .analytics
            .tallies(&kpi_query(grouping, Some(request.baseline)))
            .await?;
        let per_agent = self
            .analytics
            .tallies(&kpi_query(analytics::Grouping::Agent, None))
            .await?
            .period;
        let (start, end) = (request.period.start, request.period.end);
        let mut conn = crate::db::acquire(&self.pool).await?;
        let rows = store::adoption(&mut conn, start, end, by_queue).await?;
        let cases: BTreeMap<String, Share> =
            store::cases_from_calls(&mut conn, start, end, by_queue)
                .await?
                .into_iter()
                .map(|c| {
                    (
                        c.key,
                        Share {
                            count: c.within,
                            of: c.decided,
                        },
                    )
                })
                .collect();
        let mut coordination: BTreeMap<String, Coordination> = BTreeMap::new();
        if !by_queue {
            for t in store::transfers_in_team(&mut conn, start, end).await? {
                coordination
                    .entry(t.team)
                    .or_default()
                    .transfers_resolved_in_team = Share {
                    count: t.resolved,
                    of: t.transfers,
                };
            }
            for c in store::cases_by_teammates(&mut conn, start, end).await? {
                coordination
                    .entry(c.team)
                    .or_default()
                    .cases_resolved_by_teammate = Share {
                    count: c.by_teammate,
                    of: c.resolved,
                };
            }
        }
        let feedback = feedback_loop(&mut conn, request.period).await?;
        drop(conn);

        let baseline = kpis.baseline.unwrap_or_default();
        let settled = request.period.end + chrono::Duration::hours(i64::from(REPEAT_WINDOW_HOURS))
            <= chrono::Utc::now();
        let keys: BTreeSet<&String> = kpis
            .period
            .keys()
            .chain(baseline.keys())
            .chain(rows.iter().map(|r| &r.key))
            .chain(cases.keys())
            .chain(coordination.keys())
            .collect();
        let none = Tally::default();
        let groups: Vec<Group> = keys
            .into_iter()
            .map(|key| {
                let mine: Vec<&AgentAdoption> = rows.iter().filter(|r| &r.key == key).collect();
                let agents: Vec<AgentFigures> = mine
                    .iter()
                    .filter(|r| !r.agent_id.is_empty())
                    .map(|r| agent_figures(r, &per_agent))
                    .collect();
                let ahts: Vec<f64> = agents
                    .iter()
                    .filter_map(|a| a.average_handle_time)
                    .collect();
                Group {
                    key: key.clone(),
                    adoption: adoption(mine, cases.get(key).copied().unwrap_or_default()),
                    efficiency: efficiency(
                        kpis.period.get(key).unwrap_or(&none),
                        baseline.get(key).unwrap_or(&none),
                        settled,
                    ),
                    coordination: (!by_queue).then(|| Coordination {
                        handle_time_spread: spread(&ahts),
                        ..coordination.get(key).copied().unwrap_or_default()
                    }),
                    agents,
                }
            })
            .collect();
        let total = {
            let mut all_cases = Share::default();
            for share in cases.values() {
                all_cases.add(share.count, share.of);
            }
            let mut together = Coordination::default();
            for c in coordination.values() {
                together.transfers_resolved_in_team.add(
                    c.transfers_resolved_in_team.count,
                    c.transfers_resolved_in_team.of,
                );
                together.cases_resolved_by_teammate.add(
                    c.cases_resolved_by_teammate.count,
                    c.cases_resolved_by_teammate.of,
                );
            }
            let ahts: Vec<f64> = per_agent
                .iter()
                .filter(|(agent, t)| !agent.is_empty() && t.aht_calls > 0)
                .map(|(_, t)| t.aht_ms / t.aht_calls as f64 / 1000.0)
                .collect();
            together.handle_time_spread = spread(&ahts);
            Group {
                key: String::new(),
                adoption: adoption(&rows, all_cases),
                efficiency: efficiency(
                    &Tally::sum(kpis.period.values()),
                    &Tally::sum(baseline.values()),
                    settled,
                ),
                coordination: (!by_queue).then_some(together),
                agents: Vec::new(),
            }
        };
        Ok(Scorecard {
            total,
            groups,
            feedback,
        })
    }
}

async fn feedback_loop(
    conn: &mut sqlx::PgConnection,
    period: Window,
) -> Result<FeedbackLoop, ScorecardError> {
    let counts = store::feedback_counts(conn, period.start, period.end).await?;
    let totals = store::feedback_totals(conn, period.start, period.end).await?;
    let mut resolved = Share::default();
    for count in &counts {
        resolved.add(count.resolved, count.items);
    }
    Ok(FeedbackLoop {
        past_due: counts.iter().map(|c| c.past_due).sum(),
        resolved,
        median_hours_to_resolution: totals.median_seconds.map(|s| s / 3600.0),
        negative_with_case_resolved: Share {
            count: totals.negative_case_resolved,
            of: totals.negative_with_case,
        },
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, agent: &str, answered: i64, logged: i64) -> AgentAdoption {
        AgentAdoption {
            key: key.into(),
            agent_id: agent.into(),
            display_name: format!("Agent {agent}"),
            answered,
            popped: answered,
            logged,
            disposition: logged,
            notes: 0,
        }
    }

    #[test]
    fn an_agent_is_silent_only_when_no_call_of_theirs_has_an_interaction() {
        let rows = [
            row("t1", "a-1", 3, 0),
            row("t2", "a-1", 2, 1),
            row("t1", "a-2", 4, 0),
            row("t1", "", 5, 0),
        ];
        let everyone = adoption(&rows, Share::default());
        assert_eq!(
            everyone.silent_agents,
            vec![SilentAgent {
                agent_id: "a-2".into(),
                display_name: "Agent a-2".into(),
                calls_answered: 4
            }]
        );
        assert_eq!(everyone.interaction_logged, Share { count: 1, of: 14 });
        let team_one = adoption(rows.iter().filter(|r| r.key == "t1"), Share::default());
        assert_eq!(team_one.silent_agents.len(), 2);
    }

    #[test]
    fn the_spread_is_the_agents_standard_deviation_over_their_mean() {
        let s = spread(&[200.0, 300.0, 400.0]);
        assert_eq!(
            (s.agents, s.lowest, s.highest),
            (3, Some(200.0), Some(400.0))
        );
        let cv = s.coefficient_of_variation.unwrap_or_default();
        assert!((cv - (20_000.0f64 / 3.0).sqrt() / 300.0).abs() < 1e-12);
        assert_eq!(spread(&[250.0]).coefficient_of_variation, None);
        assert_eq!(spread(&[]).lowest, None);
    }
}
