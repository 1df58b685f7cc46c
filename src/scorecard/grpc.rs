//! `switchboard.v1.ScorecardService`.

use tonic::{Request, Response, Status};

use super::verdict::{self, Compared, Verdict};
use super::{
    AgentFigures, Coordination, Efficiency, FeedbackLoop, Group, Grouping, ScorecardError,
    Scorecards, Share, Spread,
};
use crate::analytics::grpc::window;
use crate::auth::{self, Role};
use crate::feedback::Source;
use crate::feedback::grpc::source_to_proto;
use crate::grpc_status;
use crate::proto::v1;
use crate::proto::v1::scorecard_service_server::ScorecardService;
use crate::validation::Violations;

pub struct ScorecardGrpc {
    scorecards: Scorecards,
}

impl ScorecardGrpc {
    pub fn new(scorecards: Scorecards) -> Self {
        Self { scorecards }
    }
}

impl From<ScorecardError> for Status {
    fn from(error: ScorecardError) -> Self {
        match &error {
            ScorecardError::Unavailable(source) => grpc_status::unavailable(source),
            ScorecardError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn request_of(request: &v1::GetScorecardRequest) -> Result<super::Request, Violations> {
    let mut violations = Violations::new();
    let period = window("period", request.period.as_ref(), &mut violations);
    let baseline = window(
        "baseline_period",
        request.baseline_period.as_ref(),
        &mut violations,
    );
    for (field, given) in [
        ("period", &request.period),
        ("baseline_period", &request.baseline_period),
    ] {
        if given.is_none() {
            violations.add(field, "is required");
        }
    }
    let grouping = match v1::ScorecardGrouping::try_from(request.group_by) {
        Ok(v1::ScorecardGrouping::Unspecified | v1::ScorecardGrouping::Team) => Grouping::Team,
        Ok(v1::ScorecardGrouping::Queue) => Grouping::Queue,
        Err(_) => {
            violations.add("group_by", format!("unknown grouping {}", request.group_by));
            Grouping::Team
        }
    };
    match (period, baseline, violations.is_empty()) {
        (Some(period), Some(baseline), true) => Ok(super::Request {
            period,
            baseline,
            grouping,
        }),
        _ => Err(violations),
    }
}

fn share(s: Share) -> Option<v1::Share> {
    Some(v1::Share {
        count: s.count,
        of: s.of,
        share: (s.of > 0).then(|| s.count as f64 / s.of as f64),
    })
}

fn comparison(c: Compared) -> Option<v1::Comparison> {
    let verdict = match c.verdict {
        Verdict::Improved => v1::Verdict::Improved,
        Verdict::Worse => v1::Verdict::Worse,
        Verdict::NoClearChange => v1::Verdict::NoClearChange,
        Verdict::InsufficientData => v1::Verdict::InsufficientData,
        Verdict::Provisional => v1::Verdict::Provisional,
    };
    Some(v1::Comparison {
        value: c.value,
        baseline: c.baseline,
        change: c.change,
        change_low: c.low,
        change_high: c.high,
        calls: c.calls,
        baseline_calls: c.baseline_calls,
        verdict: verdict.into(),
    })
}

fn efficiency(e: Efficiency) -> Option<v1::Efficiency> {
    Some(v1::Efficiency {
        average_handle_time: comparison(e.average_handle_time),
        average_speed_of_answer: comparison(e.average_speed_of_answer),
        service_level: comparison(e.service_level),
        first_contact_resolution: comparison(e.first_contact_resolution),
        repeat_contact_rate: comparison(e.repeat_contact_rate),
        transfer_rate: comparison(e.transfer_rate),
        average_after_call_work: comparison(e.average_after_call_work),
    })
}

fn spread(s: Spread) -> Option<v1::HandleTimeSpread> {
    Some(v1::HandleTimeSpread {
        agents: s.agents,
        lowest: s.lowest,
        highest: s.highest,
        coefficient_of_variation: s.coefficient_of_variation,
    })
}

fn coordination(c: Coordination) -> v1::Coordination {
    v1::Coordination {
        transfers_resolved_in_team: share(c.transfers_resolved_in_team),
        cases_resolved_by_teammate: share(c.cases_resolved_by_teammate),
        handle_time_spread: spread(c.handle_time_spread),
    }
}

fn agent(a: AgentFigures) -> v1::AgentFigures {
    v1::AgentFigures {
        pop_delivered: share(a.pop_delivered),
        interaction_logged: share(a.interaction_logged),
        disposition_set: share(a.disposition_set),
        notes_written: share(a.notes_written),
        average_handle_time: a.average_handle_time,
        calls_answered: a.calls_answered,
        agent_id: a.agent_id,
        display_name: a.display_name,
    }
}

/// The group in proto form; who the individuals are only for `individuals`.
fn group(g: Group, individuals: bool) -> v1::ScorecardGroup {
    let a = g.adoption;
    let silent_agent_count = a.silent_agents.len() as i64;
    let silent_agents = match individuals {
        true => a
            .silent_agents
            .into_iter()
            .map(|s| v1::SilentAgent {
                agent_id: s.agent_id,
                display_name: s.display_name,
                calls_answered: s.calls_answered,
            })
            .collect(),
        false => Vec::new(),
    };
    v1::ScorecardGroup {
        key: g.key,
        adoption: Some(v1::Adoption {
            pop_delivered: share(a.pop_delivered),
            interaction_logged: share(a.interaction_logged),
            disposition_set: share(a.disposition_set),
            notes_written: share(a.notes_written),
            cases_updated_within_sla: share(a.cases_updated_within_sla),
            silent_agent_count,
            silent_agents,
        }),
        efficiency: efficiency(g.efficiency),
        coordination: g.coordination.map(coordination),
        agents: match individuals {
            true => g.agents.into_iter().map(agent).collect(),
            false => Vec::new(),
        },
    }
}

fn feedback(f: FeedbackLoop) -> v1::FeedbackLoop {
    let mut by_source_and_category: Vec<v1::FeedbackCount> = f
        .counts
        .into_iter()
        .map(|c| v1::FeedbackCount {
            source: Source::parse(&c.source)
                .map(source_to_proto)
                .unwrap_or_default()
                .into(),
            category: c.category,
            items: c.items,
            resolved: c.resolved,
            past_due: c.past_due,
        })
        .collect();
    by_source_and_category.sort_by(|a, b| (a.source, &a.category).cmp(&(b.source, &b.category)));
    v1::FeedbackLoop {
        by_source_and_category,
        resolved: share(f.resolved),
        median_hours_to_resolution: f.median_hours_to_resolution,
        past_due: f.past_due,
        negative_with_case_resolved: share(f.negative_with_case_resolved),
    }
}

#[tonic::async_trait]
impl ScorecardService for ScorecardGrpc {
    async fn get_scorecard(
        &self,
        request: Request<v1::GetScorecardRequest>,
    ) -> Result<Response<v1::GetScorecardResponse>, Status> {
        let principal = auth::principal(&request)?;
        let request =
            request_of(request.get_ref()).map_err(|v| grpc_status::invalid_argument(&v))?;
        // Who did what is for the people who lead them, not for every credential that may read
        // the team figures.
        let individuals = principal.role == Role::Supervisor;
        let card = self.scorecards.scorecard(&request).await?;
        Ok(Response::new(v1::GetScorecardResponse {
            total: Some(group(card.total, individuals)),
            groups: card
                .groups
                .into_iter()
                .map(|g| group(g, individuals))
                .collect(),
            feedback: Some(feedback(card.feedback)),
            confidence: verdict::CONFIDENCE,
            as_of: Some(crate::proto_time::to_timestamp(chrono::Utc::now())),
        }))
    }
}
