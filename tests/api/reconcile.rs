//! `switchboard reconcile` and ReconcileService: an Asterisk Master.csv with planted differences
//! against the calls a gateway reported, reported exactly.

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use switchboard::auth::Role;
use switchboard::config::{ReconcileArgs, ServerArgs};
use switchboard::proto::v1;
use switchboard::proto::v1::CallEventType::{self, *};
use switchboard::proto::v1::reconcile_service_client::ReconcileServiceClient;
use tonic::Code;

use crate::calls::report;
use crate::helpers::{TestApp, authed, spawn_app, token, violated_fields};

const GATEWAY: &str = "pbx-1";

/// Reports a call: (event, seconds after `at`).
async fn call(
    app: &TestApp,
    id: &str,
    caller: &str,
    at: DateTime<Utc>,
    steps: &[(CallEventType, i64)],
) {
    for (n, (kind, after)) in steps.iter().enumerate() {
        let event = v1::CallEvent {
            gateway_id: GATEWAY.into(),
            event_id: format!("{id}-{n}"),
            call_id: id.into(),
            r#type: (*kind).into(),
            occurred_at: Some(switchboard::proto_time::to_timestamp(
                at + Duration::seconds(*after),
            )),
            caller_number: if *kind == Offered {
                caller.into()
            } else {
                String::new()
            },
            queue: "sales".into(),
            agent_id: if matches!(kind, Ringing | Answered) {
                "a-1".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        let ack = report(app, event).await;
        assert_eq!(
            ack.outcome(),
            v1::AckOutcome::Accepted,
            "{id}: {}",
            ack.reason
        );
    }
}

/// An Asterisk Master.csv row (loguniqueid on; `uniqueid` None: a row without it, as when
/// loguniqueid is off). Times are `HH:MM:SS` on 2026-11-02 (or `+1d` for the day after), Berlin.
fn master_row(
    src: &str,
    start: &str,
    answer: &str,
    end: &str,
    billsec: i64,
    disposition: &str,
    uniqueid: Option<&str>,
) -> String {
    let stamp = |t: &str| match t {
        "" => String::new(),
        t if t.starts_with("+1d ") => format!("2026-11-03 {}", &t[4..]),
        t if t.contains('-') => t.to_owned(),
        t => format!("2026-11-02 {t}"),
    };
    let mut row = format!(
        "\"\",\"{src}\",\"600\",\"from-pstn\",\"\"\"Caller\"\" <{src}>\",\"SIP/trunk-0001\",\
         \"SIP/200-0002\",\"Dial\",\"SIP/200,30\",\"{}\",\"{}\",\"{}\",{},{billsec},\"{disposition}\",\
         \"DOCUMENTATION\"",
        stamp(start),
        stamp(answer),
        stamp(end),
        billsec + 5
    );
    if let Some(id) = uniqueid {
        row.push_str(&format!(",\"{id}\",\"\""));
    }
    row.push('\n');
    row
}

#[tokio::test]
async fn a_master_csv_with_planted_differences_is_reconciled_exactly() {
    let app = spawn_app().await;
    // 09:00 on 2 November 2026 in Berlin (CET) is 08:00 UTC.
    let t = Utc
        .with_ymd_and_hms(2026, 11, 2, 8, 0, 0)
        .single()
        .expect("a time");
    let answered = |wait: i64, talk: i64| {
        [
            (Offered, 0),
            (Ringing, 1),
            (Answered, wait),
            (Ended, wait + talk),
        ]
    };
    call(&app, "1793606400.1", "+14155550101", t, &answered(7, 60)).await;
    call(
        &app,
        "1793606500.2",
        "+14155550102",
        t + Duration::seconds(100),
        &answered(5, 60),
    )
    .await;
    call(
        &app,
        "1793606600.3",
        "+14155550103",
        t + Duration::seconds(200),
        &[(Offered, 0), (Ended, 30)],
    )
    .await;
    call(
        &app,
        "1793606700.4",
        "+14155550104",
        t + Duration::seconds(250),
        &answered(4, 30),
    )
    .await;
    call(
        &app,
        "sw-9",
        "+14155550109",
        t + Duration::seconds(300),
        &answered(6, 40),
    )
    .await;
    call(
        &app,
        "1793693000.7",
        "+14155550107",
        t + Duration::days(1),
        &answered(3, 20),
    )
    .await;

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("Master.csv");
    let rows = [
        // 1: the same call as Switchboard's.
        master_row(
            "4155550101",
            "09:00:00",
            "09:00:07",
            "09:01:07",
            60,
            "ANSWERED",
            Some("1793606400.1"),
        ),
        // 2: billed 75 s, Switchboard timed 60 s.
        master_row(
            "4155550102",
            "09:01:40",
            "09:01:45",
            "09:03:00",
            75,
            "ANSWERED",
            Some("1793606500.2"),
        ),
        // 3: answered here, abandoned in Switchboard.
        master_row(
            "4155550103",
            "09:03:20",
            "09:03:30",
            "09:03:50",
            20,
            "ANSWERED",
            Some("1793606600.3"),
        ),
        // 4: a call Switchboard never heard of.
        master_row(
            "4155550105",
            "09:04:00",
            "09:04:03",
            "09:04:33",
            30,
            "ANSWERED",
            Some("1793606800.5"),
        ),
        // 5: line 1 again.
        master_row(
            "4155550101",
            "09:00:00",
            "09:00:07",
            "09:01:07",
            60,
            "ANSWERED",
            Some("1793606400.1"),
        ),
        // 6: no unique id: matched by caller and a start 2 s from the offer.
        master_row(
            "4155550109",
            "09:05:02",
            "09:05:06",
            "09:05:46",
            40,
            "ANSWERED",
            None,
        ),
        // 7: a broken row.
        master_row(
            "4155550110",
            "yesterday",
            "",
            "",
            0,
            "NO ANSWER",
            Some("1793606900.6"),
        ),
        // 8: the next day, the same.
        master_row(
            "4155550107",
            "+1d 09:00:00",
            "+1d 09:00:03",
            "+1d 09:00:23",
            20,
            "ANSWERED",
            Some("1793693000.7"),
        ),
    ];
    std::fs::write(&file, rows.concat()).expect("written");
    let report_path = dir.path().join("report.csv");
    let (r, bad) = switchboard::reconcile::cli::run(ReconcileArgs {
        file: file.clone(),
        format: "asterisk".into(),
        gateway_id: GATEWAY.into(),
        mapping: None,
        time_zone: "Europe/Berlin".into(),
        time_tolerance: 5,
        duration_tolerance: 2,
        report: Some(report_path.clone()),
        server: ServerArgs {
            server: app.address.clone(),
            token: Some(token(Role::Supervisor, "sup-1", None)),
        },
    })
    .await
    .expect("reconciled");

    assert_eq!(
        bad.iter()
            .map(|b| (b.line, b.field.as_str()))
            .collect::<Vec<_>>(),
        [(7, "started_at")]
    );
    let days: Vec<(&str, [i64; 7])> = r
        .days
        .iter()
        .map(|d| {
            (
                d.day.as_str(),
                [
                    d.cdrs,
                    d.matched,
                    d.missing_in_switchboard,
                    d.missing_in_cdrs,
                    d.duplicates,
                    d.outcome_mismatches,
                    d.duration_mismatches,
                ],
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            ("2026-11-02", [5, 4, 1, 1, 1, 1, 1]),
            ("2026-11-03", [1, 1, 0, 0, 0, 0, 0])
        ]
    );
    // The KPIs side by side on the first day: the CDRs answered 1, 2, 3, 5 and 6 (talk 60, 75,
    // 20, 30, 40 s); Switchboard 1, 2, 4 and sw-9 of its five calls (talk 60, 60, 30, 40 s).
    let first = &r.days[0];
    let (cdr, sb) = (
        first.cdr.expect("cdr side"),
        first.switchboard.expect("our side"),
    );
    assert_eq!((cdr.offered, cdr.answered), (5, 5));
    assert_eq!((sb.offered, sb.answered), (5, 4));
    assert_eq!(
        cdr.average_talk,
        Some((60.0 + 75.0 + 20.0 + 30.0 + 40.0) / 5.0)
    );
    assert_eq!(sb.average_talk, Some((60.0 + 60.0 + 30.0 + 40.0) / 4.0));
    assert_eq!(sb.average_wait, Some((7.0 + 5.0 + 4.0 + 6.0) / 4.0));
    assert_eq!(cdr.average_wait, Some((7.0 + 5.0 + 10.0 + 3.0 + 4.0) / 5.0));
    let total = r.total.expect("total");
    assert_eq!((total.cdrs, total.matched), (6, 5));

    let listed: Vec<(i64, v1::DiscrepancyKind, &str)> = r
        .discrepancies
        .iter()
        .map(|d| (d.line, d.kind(), d.call_id.as_str()))
        .collect();
    use v1::DiscrepancyKind as K;
    assert_eq!(
        listed,
        [
            (2, K::Duration, "1793606500.2"),
            (3, K::Outcome, "1793606600.3"),
            (4, K::MissingInSwitchboard, "1793606800.5"),
            (5, K::Duplicate, "1793606400.1"),
            (0, K::MissingInCdrs, "1793606700.4"),
        ]
    );
    assert_eq!(
        r.discrepancies[0].detail,
        "talk 75 s in the cdr, 60 s in switchboard"
    );
    assert_eq!(r.discrepancies[3].detail, "the same call as line 1");

    // The report file: every discrepancy and the broken row, by line.
    let mut reader = csv::Reader::from_path(&report_path).expect("report");
    let lines: Vec<(String, String)> = reader
        .records()
        .map(|row| {
            let row = row.expect("row");
            (row[0].to_owned(), row[1].to_owned())
        })
        .collect();
    let expected = [
        ("2", "duration"),
        ("3", "outcome"),
        ("4", "missing_in_switchboard"),
        ("5", "duplicate"),
        ("7", "rejected"),
        ("0", "missing_in_cdrs"),
    ];
    assert_eq!(lines, expected.map(|(l, k)| (l.to_owned(), k.to_owned())));
    // Nothing of the run stays in the database.
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'cdr_%'")
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(tables, 0);
}

#[tokio::test]
async fn reconciling_is_for_supervisors_and_systems_and_bad_settings_are_refused() {
    let app = spawn_app().await;
    let request = v1::ReconcileCdrsRequest {
        gateway_id: GATEWAY.into(),
        ..Default::default()
    };
    let denied = ReconcileServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-1", None),
    ))
    .reconcile_cdrs(tokio_stream::iter([request.clone()]))
    .await
    .expect_err("denied");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut service = ReconcileServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Service, "erp", None),
    ));
    let empty = service
        .reconcile_cdrs(tokio_stream::iter([request]))
        .await
        .expect("an empty run")
        .into_inner();
    assert!(empty.days.is_empty());
    let bad = service
        .reconcile_cdrs(tokio_stream::iter([v1::ReconcileCdrsRequest {
            gateway_id: String::new(),
            time_tolerance_seconds: -1,
            time_zone: "Mars/Olympus".into(),
            ..Default::default()
        }]))
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&bad),
        ["gateway_id", "time_tolerance_seconds", "time_zone"]
    );
    // A record without a start is reported with its line; the run goes on.
    let at = Utc
        .with_ymd_and_hms(2026, 11, 2, 8, 0, 0)
        .single()
        .map(switchboard::proto_time::to_timestamp);
    let records = vec![
        v1::CdrRecord {
            line: 1,
            started_at: at,
            ..Default::default()
        },
        v1::CdrRecord {
            line: 2,
            ..Default::default()
        },
    ];
    let answered = service
        .reconcile_cdrs(tokio_stream::iter([v1::ReconcileCdrsRequest {
            gateway_id: GATEWAY.into(),
            records,
            ..Default::default()
        }]))
        .await
        .expect("a run")
        .into_inner();
    let rejected: Vec<(i64, &str)> = answered
        .rejected
        .iter()
        .map(|r| (r.line, r.field.as_str()))
        .collect();
    assert_eq!(rejected, [(2, "started_at")]);
    assert_eq!(answered.total.map(|t| t.missing_in_switchboard), Some(1));
}
