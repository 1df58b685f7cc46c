//! `switchboard.v1.ReconcileService`.

use futures::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::{Cdr, Day, Kind, ReconcileError, Reconciler, Report, Settings, Side};
use crate::grpc_status;
use crate::phone::{Caller, PhoneParser};
use crate::proto::v1;
use crate::proto::v1::reconcile_service_server::ReconcileService;
use crate::validation::Violations;

/// Records in one request message.
const MAX_RECORDS: usize = 1000;

pub struct ReconcileGrpc {
    reconciler: Reconciler,
    phones: PhoneParser,
}

impl ReconcileGrpc {
    pub fn new(reconciler: Reconciler, phones: PhoneParser) -> Self {
        Self { reconciler, phones }
    }
}

impl From<ReconcileError> for Status {
    fn from(error: ReconcileError) -> Self {
        match &error {
            ReconcileError::Unavailable(source) => grpc_status::unavailable(source),
            ReconcileError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn settings_of(first: &v1::ReconcileCdrsRequest) -> Result<Settings, Violations> {
    let mut v = Violations::new();
    let gateway_id = v.text("gateway_id", &first.gateway_id, 64, true);
    let seconds = |v: &mut Violations, field: &str, value: i32, default: i32| match value {
        0 => default,
        1..=3600 => value,
        _ => {
            v.add(field, "must be between 0 and 3600 seconds");
            default
        }
    };
    let time_tolerance_seconds = seconds(
        &mut v,
        "time_tolerance_seconds",
        first.time_tolerance_seconds,
        5,
    );
    let duration_tolerance_seconds = seconds(
        &mut v,
        "duration_tolerance_seconds",
        first.duration_tolerance_seconds,
        2,
    );
    let time_zone = v.time_zone("time_zone", &first.time_zone);
    match v.is_empty() {
        true => Ok(Settings {
            gateway_id,
            time_tolerance_seconds,
            duration_tolerance_seconds,
            time_zone,
        }),
        false => Err(v),
    }
}

/// A number as calls store it: E.164, or none (withheld, an extension, not a number).
fn number(phones: &PhoneParser, raw: &str) -> Option<String> {
    match phones.parse_caller(raw.trim()) {
        Ok(Caller::Number(number)) => Some(number.e164().to_owned()),
        _ => None,
    }
}

/// The record checked, or the field that makes it unusable.
fn record_of(phones: &PhoneParser, r: &v1::CdrRecord) -> Result<Cdr, v1::RejectedCdr> {
    let reject = |field: &str, reason: &str| v1::RejectedCdr {
        line: r.line,
        field: field.into(),
        reason: reason.into(),
    };
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| crate::proto_time::from_timestamp(t).ok_or(()))
            .transpose()
    };
    let started_at = time(&r.started_at)
        .map_err(|()| reject("started_at", "is not a valid time"))?
        .ok_or_else(|| reject("started_at", "is required"))?;
    let answered_at =
        time(&r.answered_at).map_err(|()| reject("answered_at", "is not a valid time"))?;
    let ended_at = time(&r.ended_at).map_err(|()| reject("ended_at", "is not a valid time"))?;
    if answered_at.is_some_and(|a| a < started_at) {
        return Err(reject("answered_at", "is before the start"));
    }
    if ended_at.is_some_and(|e| e < answered_at.unwrap_or(started_at)) {
        return Err(reject("ended_at", "is before the start or the answer"));
    }
    if r.talk_seconds.is_some_and(|s| !(0..=86_400).contains(&s)) {
        return Err(reject("talk_seconds", "must be between 0 and 86400"));
    }
    // PostgreSQL refuses NUL in text: no control character gets as far as the database.
    let call_id = r.call_id.trim();
    if call_id.chars().count() > 128 || call_id.chars().any(char::is_control) {
        return Err(reject(
            "call_id",
            "at most 128 characters, and no control characters",
        ));
    }
    Ok(Cdr {
        line: r.line,
        call_id: (!call_id.is_empty()).then(|| call_id.to_owned()),
        caller: number(phones, &r.caller_number),
        dialed: number(phones, &r.dialed_number),
        started_at,
        answered_at,
        ended_at,
        talk_ms: r.talk_seconds.map(|s| s * 1000),
    })
}

fn side(s: Side) -> Option<v1::SideKpis> {
    let per = |sum: f64, n: i64| (n > 0).then(|| sum / n as f64 / 1000.0);
    Some(v1::SideKpis {
        offered: s.offered,
        answered: s.answered,
        answer_rate: (s.offered > 0).then(|| s.answered as f64 / s.offered as f64),
        average_wait: per(s.wait_ms, s.answered),
        average_talk: per(s.talk_ms, s.talked),
    })
}

fn day(d: Day) -> v1::DayReconciliation {
    v1::DayReconciliation {
        cdrs: d.cdrs,
        matched: d.matched,
        missing_in_switchboard: d.missing_in_switchboard,
        missing_in_cdrs: d.missing_in_cdrs,
        duplicates: d.duplicates,
        outcome_mismatches: d.outcome_mismatches,
        duration_mismatches: d.duration_mismatches,
        cdr: side(d.cdr),
        switchboard: side(d.switchboard),
        day: d.day,
    }
}

fn response(report: Report, rejected: Vec<v1::RejectedCdr>) -> v1::ReconcileCdrsResponse {
    v1::ReconcileCdrsResponse {
        days: report.days.into_iter().map(day).collect(),
        total: Some(day(report.total)),
        discrepancies: report
            .discrepancies
            .into_iter()
            .map(|d| v1::Discrepancy {
                kind: match d.kind {
                    Kind::MissingInSwitchboard => v1::DiscrepancyKind::MissingInSwitchboard,
                    Kind::MissingInCdrs => v1::DiscrepancyKind::MissingInCdrs,
                    Kind::Duplicate => v1::DiscrepancyKind::Duplicate,
                    Kind::Outcome => v1::DiscrepancyKind::Outcome,
                    Kind::Duration => v1::DiscrepancyKind::Duration,
                }
                .into(),
                line: d.line,
                call_id: d.call_id,
                day: d.day,
                detail: d.detail,
            })
            .collect(),
        discrepancies_left_out: report.left_out,
        rejected,
    }
}

#[tonic::async_trait]
impl ReconcileService for ReconcileGrpc {
    async fn reconcile_cdrs(
        &self,
        request: Request<Streaming<v1::ReconcileCdrsRequest>>,
    ) -> Result<Response<v1::ReconcileCdrsResponse>, Status> {
        let mut input = request.into_inner();
        let mut run = None;
        let mut rejected = Vec::new();
        while let Some(message) = input.next().await {
            let message = message?;
            if message.records.len() > MAX_RECORDS {
                return Err(grpc_status::invalid_argument(&Violations::single(
                    "records",
                    format!("at most {MAX_RECORDS} records per message"),
                )));
            }
            let run = match &mut run {
                Some(run) => run,
                None => {
                    let settings =
                        settings_of(&message).map_err(|v| grpc_status::invalid_argument(&v))?;
                    run.insert(self.reconciler.start(settings).await?)
                }
            };
            let mut records = Vec::with_capacity(message.records.len());
            for record in &message.records {
                match record_of(&self.phones, record) {
                    Ok(record) => records.push(record),
                    Err(bad) => rejected.push(bad),
                }
            }
            run.add(&records).await?;
        }
        let Some(run) = run else {
            return Err(grpc_status::invalid_argument(&Violations::single(
                "gateway_id",
                "is required: no message came",
            )));
        };
        Ok(Response::new(response(run.finish().await?, rejected)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto_time::to_timestamp;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        chrono::DateTime::from_timestamp(1_790_000_000 + seconds, 0).map(to_timestamp)
    }

    #[test]
    fn a_record_is_checked_and_its_numbers_normalized() {
        let phones = PhoneParser::new(phonenumber::country::Id::US);
        let good = v1::CdrRecord {
            line: 4,
            call_id: " 1790000000.17 ".into(),
            caller_number: "(415) 555-0100".into(),
            dialed_number: "600".into(),
            started_at: at(0),
            answered_at: at(5),
            ended_at: at(65),
            talk_seconds: Some(60),
        };
        let cdr = record_of(&phones, &good).expect("a good record");
        assert_eq!(cdr.call_id.as_deref(), Some("1790000000.17"));
        assert_eq!(cdr.caller.as_deref(), Some("+14155550100"));
        assert_eq!((cdr.dialed, cdr.talk_ms), (None, Some(60_000)));
        for (bad, field) in [
            (
                v1::CdrRecord {
                    started_at: None,
                    ..good.clone()
                },
                "started_at",
            ),
            (
                v1::CdrRecord {
                    answered_at: at(-1),
                    ..good.clone()
                },
                "answered_at",
            ),
            (
                v1::CdrRecord {
                    ended_at: at(3),
                    ..good.clone()
                },
                "ended_at",
            ),
            (
                v1::CdrRecord {
                    talk_seconds: Some(-1),
                    ..good.clone()
                },
                "talk_seconds",
            ),
        ] {
            let rejected = record_of(&phones, &bad).expect_err(field);
            assert_eq!((rejected.line, rejected.field.as_str()), (4, field));
        }
    }
}
