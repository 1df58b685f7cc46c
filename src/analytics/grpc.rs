//! `switchboard.v1.AnalyticsService`.

use tonic::{Request, Response, Status};

use super::{Analytics, AnalyticsError, Grouping, Kpis, Measured, Query, ServiceLevelRule, Window};
use crate::auth::{self, Role};
use crate::call_model::parse_agent_id;
use crate::grpc_status;
use crate::live::{self, Live};
use crate::proto::v1;
use crate::proto::v1::analytics_service_server::AnalyticsService;
use crate::validation::Violations;

pub struct AnalyticsGrpc {
    analytics: Analytics,
    live: Live,
}

impl AnalyticsGrpc {
    pub fn new(analytics: Analytics, live: Live) -> Self {
        Self { analytics, live }
    }
}

impl From<AnalyticsError> for Status {
    fn from(error: AnalyticsError) -> Self {
        match &error {
            AnalyticsError::Unavailable(source) => grpc_status::unavailable(source),
            AnalyticsError::Database(source) => grpc_status::internal(source),
        }
    }
}

/// A required-or-absent period, checked: both ends set and in order.
pub(crate) fn window(
    field: &str,
    period: Option<&v1::Period>,
    violations: &mut Violations,
) -> Option<Window> {
    let period = period?;
    let start = violations.time(&format!("{field}.start"), period.start.as_ref(), true);
    let end = violations.time(&format!("{field}.end"), period.end.as_ref(), true);
    match (start, end) {
        (Some(start), Some(end)) if start < end => Some(Window { start, end }),
        (Some(_), Some(_)) => {
            violations.add(field, "must end after it starts");
            None
        }
        _ => None,
    }
}

fn seconds(field: &str, value: i32, default: i32, violations: &mut Violations) -> i32 {
    match value {
        0 => default,
        1..=3600 => value,
        _ => {
            violations.add(field, "must be between 1 and 3600 seconds");
            default
        }
    }
}

fn query_of(request: v1::GetKpisRequest) -> Result<Query, Violations> {
    let mut violations = Violations::new();
    let period = window("period", request.period.as_ref(), &mut violations);
    if request.period.is_none() {
        violations.add("period", "is required");
    }
    let baseline = window(
        "baseline_period",
        request.baseline_period.as_ref(),
        &mut violations,
    );
    let grouping = match v1::KpiGrouping::try_from(request.group_by) {
        Ok(v1::KpiGrouping::Unspecified) => Grouping::Total,
        Ok(v1::KpiGrouping::Queue) => Grouping::Queue,
        Ok(v1::KpiGrouping::Agent) => Grouping::Agent,
        Ok(v1::KpiGrouping::Day) => Grouping::Day,
        Ok(v1::KpiGrouping::Hour) => Grouping::Hour,
        Ok(v1::KpiGrouping::Month) => Grouping::Month,
        Ok(v1::KpiGrouping::Team) => Grouping::Team,
        Ok(v1::KpiGrouping::Campaign) => Grouping::Campaign,
        Err(_) => {
            violations.add("group_by", format!("unknown grouping {}", request.group_by));
            Grouping::Total
        }
    };
    let time_zone = violations.time_zone("time_zone", &request.time_zone);
    let short_abandon_seconds = seconds(
        "short_abandon_seconds",
        request.short_abandon_seconds,
        super::SHORT_ABANDON_SECONDS,
        &mut violations,
    );
    let service_level_seconds = seconds(
        "service_level_seconds",
        request.service_level_seconds,
        super::SERVICE_LEVEL_SECONDS,
        &mut violations,
    );
    let wrap_up_cap_seconds = match request.after_call_work_cap_seconds {
        0 => super::WRAP_UP_CAP_SECONDS,
        cap @ 1..=86_400 => cap,
        _ => {
            violations.add(
                "after_call_work_cap_seconds",
                "must be between 1 and 86400 seconds",
            );
            super::WRAP_UP_CAP_SECONDS
        }
    };
    let repeat_window_hours = match request.repeat_window_hours {
        0 => super::REPEAT_WINDOW_HOURS,
        hours @ 1..=2160 => hours,
        _ => {
            violations.add("repeat_window_hours", "must be between 1 and 2160 hours");
            super::REPEAT_WINDOW_HOURS
        }
    };
    let queues = violations.texts("queues", &request.queues, 100, 100);
    let agents = request
        .agents
        .iter()
        .enumerate()
        .filter_map(|(i, agent)| violations.check(&format!("agents[{i}]"), parse_agent_id(agent)))
        .collect();
    if request.agents.len() > 100 {
        violations.add("agents", "at most 100 agents");
    }
    match (period, violations.is_empty()) {
        (Some(period), true) => Ok(Query {
            repeat_window_hours,
            period,
            baseline,
            grouping,
            queues,
            agents,
            time_zone,
            short_abandon_seconds,
            service_level_seconds,
            service_level_rule: ServiceLevelRule {
                include_short_abandons: request.service_level_includes_short_abandons,
                quick_abandons_met: request.service_level_counts_quick_abandons_as_met,
            },
            wrap_up_cap_seconds,
        }),
        _ => Err(violations),
    }
}

/// The proto form of every KPI: its value now, and against the baseline when there is one.
fn kpis_to_proto(now: &Kpis, baseline: Option<&Kpis>) -> v1::Kpis {
    let kpi = |get: fn(&Kpis) -> Option<f64>| {
        let (value, baseline) = (get(now), baseline.and_then(get));
        Some(v1::KpiValue {
            value,
            baseline,
            change: value.zip(baseline).map(|(n, b)| n - b),
        })
    };
    v1::Kpis {
        offered: kpi(|k| Some(k.offered)),
        answered: kpi(|k| Some(k.answered)),
        abandoned: kpi(|k| Some(k.abandoned)),
        short_abandoned: kpi(|k| Some(k.short_abandoned)),
        in_progress: kpi(|k| Some(k.in_progress)),
        self_service: kpi(|k| Some(k.self_service)),
        after_call_work_outliers: kpi(|k| Some(k.wrap_up_outliers)),
        csat_top_two_box: kpi(|k| k.csat_top_two_box),
        abandonment_rate: kpi(|k| k.abandonment_rate),
        average_speed_of_answer: kpi(|k| k.average_speed_of_answer),
        service_level: kpi(|k| k.service_level),
        average_handle_time: kpi(|k| k.average_handle_time),
        average_talk_time: kpi(|k| k.average_talk_time),
        average_hold_time: kpi(|k| k.average_hold_time),
        average_transfer_ring_time: kpi(|k| k.average_transfer_ring_time),
        average_requeue_wait_time: kpi(|k| k.average_requeue_wait_time),
        average_wrap_up_time: kpi(|k| k.average_wrap_up_time),
        transfer_rate: kpi(|k| k.transfer_rate),
        first_contact_resolution: kpi(|k| k.first_contact_resolution),
        repeat_contact_rate: kpi(|k| k.repeat_contact_rate),
        csat: kpi(|k| k.csat),
        nps: kpi(|k| k.nps),
        conversions: kpi(|k| Some(k.conversions)),
        conversion_rate: kpi(|k| k.conversion_rate),
        occupancy: kpi(|k| k.occupancy),
    }
}

fn group_to_proto(m: Measured) -> v1::KpiGroup {
    v1::KpiGroup {
        kpis: Some(kpis_to_proto(&m.kpis, m.baseline.as_ref())),
        key: m.key,
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsGrpc {
    async fn get_kpis(
        &self,
        request: Request<v1::GetKpisRequest>,
    ) -> Result<Response<v1::GetKpisResponse>, Status> {
        let principal = auth::principal(&request)?;
        let query =
            query_of(request.into_inner()).map_err(|v| grpc_status::invalid_argument(&v))?;
        let agent_level = query.grouping == Grouping::Agent || !query.agents.is_empty();
        if agent_level && !matches!(principal.role, Role::Supervisor | Role::Admin) {
            return Err(Status::permission_denied(
                "agent-level KPIs are for supervisors",
            ));
        }
        let report = self.analytics.kpis(&query).await?;
        Ok(Response::new(v1::GetKpisResponse {
            total: Some(group_to_proto(report.total)),
            groups: report.groups.into_iter().map(group_to_proto).collect(),
        }))
    }

    async fn get_live_queue_stats(
        &self,
        request: Request<v1::GetLiveQueueStatsRequest>,
    ) -> Result<Response<v1::GetLiveQueueStatsResponse>, Status> {
        let queues = live::grpc::queues_of(request.get_ref())?;
        let stats = self.live.stats(&queues).await?;
        Ok(Response::new(live::grpc::stats_to_proto(
            stats,
            chrono::Utc::now(),
        )))
    }
}
