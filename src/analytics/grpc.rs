//! `switchboard.v1.AnalyticsService`.

use tonic::{Request, Response, Status};

use super::{Analytics, AnalyticsError, Grouping, Kpis, Measured, Query, Window};
use crate::auth::{self, Role};
use crate::grpc_status;
use crate::proto::v1;
use crate::proto::v1::analytics_service_server::AnalyticsService;
use crate::validation::Violations;

pub struct AnalyticsGrpc {
    analytics: Analytics,
}

impl AnalyticsGrpc {
    pub fn new(analytics: Analytics) -> Self {
        Self { analytics }
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

fn window(field: &str, period: Option<&v1::Period>, violations: &mut Violations) -> Option<Window> {
    let period = period?;
    let start = period
        .start
        .as_ref()
        .and_then(crate::proto_time::from_timestamp);
    let end = period
        .end
        .as_ref()
        .and_then(crate::proto_time::from_timestamp);
    match (start, end) {
        (Some(start), Some(end)) if start < end => Some(Window { start, end }),
        (Some(_), Some(_)) => {
            violations.add(field, "must end after it starts");
            None
        }
        _ => {
            violations.add(field, "needs a valid start and end");
            None
        }
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
        Ok(v1::KpiGrouping::Team) => Grouping::Team,
        Ok(v1::KpiGrouping::Campaign) => Grouping::Campaign,
        Err(_) => {
            violations.add("group_by", format!("unknown grouping {}", request.group_by));
            Grouping::Total
        }
    };
    let time_zone = match request.time_zone.as_str() {
        "" => "UTC".to_owned(),
        zone if zone.parse::<chrono_tz::Tz>().is_ok() => zone.to_owned(),
        _ => {
            violations.add("time_zone", "must be an IANA time zone");
            String::new()
        }
    };
    let short_abandon_seconds = seconds(
        "short_abandon_seconds",
        request.short_abandon_seconds,
        5,
        &mut violations,
    );
    let service_level_seconds = seconds(
        "service_level_seconds",
        request.service_level_seconds,
        20,
        &mut violations,
    );
    let repeat_window_hours = match request.repeat_window_hours {
        0 => 168,
        hours @ 1..=2160 => hours,
        _ => {
            violations.add("repeat_window_hours", "must be between 1 and 2160 hours");
            168
        }
    };
    match (period, violations.is_empty()) {
        (Some(period), true) => Ok(Query {
            repeat_window_hours,
            period,
            baseline,
            grouping,
            queues: request.queues,
            agents: request.agents,
            time_zone,
            short_abandon_seconds,
            service_level_seconds,
        }),
        _ => Err(violations),
    }
}

fn value(now: f64, baseline: Option<f64>) -> Option<v1::KpiValue> {
    Some(v1::KpiValue {
        value: Some(now),
        baseline,
        change: baseline.map(|b| now - b),
    })
}

fn optional(now: Option<f64>, baseline: Option<Option<f64>>) -> Option<v1::KpiValue> {
    let baseline = baseline.flatten();
    Some(v1::KpiValue {
        value: now,
        baseline,
        change: now.zip(baseline).map(|(n, b)| n - b),
    })
}

fn kpis_to_proto(k: &Kpis, b: Option<&Kpis>) -> v1::Kpis {
    v1::Kpis {
        offered: value(k.offered, b.map(|b| b.offered)),
        answered: value(k.answered, b.map(|b| b.answered)),
        abandoned: value(k.abandoned, b.map(|b| b.abandoned)),
        short_abandoned: value(k.short_abandoned, b.map(|b| b.short_abandoned)),
        in_progress: value(k.in_progress, b.map(|b| b.in_progress)),
        abandonment_rate: optional(k.abandonment_rate, b.map(|b| b.abandonment_rate)),
        average_speed_of_answer: optional(
            k.average_speed_of_answer,
            b.map(|b| b.average_speed_of_answer),
        ),
        service_level: optional(k.service_level, b.map(|b| b.service_level)),
        average_handle_time: optional(k.average_handle_time, b.map(|b| b.average_handle_time)),
        average_talk_time: optional(k.average_talk_time, b.map(|b| b.average_talk_time)),
        average_hold_time: optional(k.average_hold_time, b.map(|b| b.average_hold_time)),
        average_wrap_up_time: optional(k.average_wrap_up_time, b.map(|b| b.average_wrap_up_time)),
        transfer_rate: optional(k.transfer_rate, b.map(|b| b.transfer_rate)),
        first_contact_resolution: optional(
            k.first_contact_resolution,
            b.map(|b| b.first_contact_resolution),
        ),
        repeat_contact_rate: optional(k.repeat_contact_rate, b.map(|b| b.repeat_contact_rate)),
        csat: optional(k.csat, b.map(|b| b.csat)),
        nps: optional(k.nps, b.map(|b| b.nps)),
        conversions: value(k.conversions, b.map(|b| b.conversions)),
        conversion_rate: optional(k.conversion_rate, b.map(|b| b.conversion_rate)),
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
}
