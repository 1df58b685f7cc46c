//! AnalyticsService.GetKpis on hand-built call histories with answers worked out by hand
//! (docs/KPIS.md has the definitions).

use chrono::{DateTime, Duration, SubsecRound as _, TimeZone as _, Utc};
use switchboard::auth::Role;
use switchboard::proto::v1;
use switchboard::proto::v1::CallEventType::{self, *};
use switchboard::proto::v1::analytics_service_client::AnalyticsServiceClient;
use tonic::Code;

use crate::calls::{log_in, report};
use crate::helpers::{
    TestApp, TestOptions, authed, last_calls_against_calls, spawn_app, token, violated_fields,
};

pub(crate) const GATEWAY: &str = "pbx-1";

pub(crate) fn ts(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(switchboard::proto_time::to_timestamp(at))
}

/// A call's history: (event, seconds after its base time, agent), in order.
pub(crate) type Steps<'a> = &'a [(CallEventType, i64, &'a str)];

/// A call a-1 answers after 2 s and ends 30 s after its offer (no misdial).
pub(crate) const ANSWERED_BY_A1: Steps<'static> = &[
    (Offered, 0, ""),
    (Ringing, 1, "a-1"),
    (Answered, 2, "a-1"),
    (Ended, 30, ""),
];

/// Reports one call: (event, seconds after `base`, agent) in order; transfers go to `a-2`, or to
/// the queue named by an agent `queue:<name>`.
pub(crate) async fn call_from(
    app: &TestApp,
    id: &str,
    caller: &str,
    base: DateTime<Utc>,
    queue: &str,
    steps: &[(CallEventType, i64, &str)],
) {
    call_dialing(app, id, caller, "", base, queue, steps).await;
}

/// [`call_from`] to a dialed number.
pub(crate) async fn call_dialing(
    app: &TestApp,
    id: &str,
    caller: &str,
    dialed: &str,
    base: DateTime<Utc>,
    queue: &str,
    steps: &[(CallEventType, i64, &str)],
) {
    for (n, (kind, at, agent)) in steps.iter().enumerate() {
        let mut event = v1::CallEvent {
            gateway_id: GATEWAY.into(),
            event_id: format!("{id}-{n}"),
            call_id: id.into(),
            r#type: (*kind).into(),
            occurred_at: ts(base + Duration::seconds(*at)),
            agent_id: (*agent).into(),
            ..Default::default()
        };
        if *kind == Offered {
            event.caller_number = caller.into();
            event.dialed_number = dialed.into();
            event.queue = queue.into();
        }
        if *kind == Transferred {
            match agent.strip_prefix("queue:") {
                Some(queue) => {
                    event.target_queue = queue.into();
                    event.agent_id.clear();
                }
                None => event.target_agent_id = "a-2".into(),
            }
        }
        let ack = report(app, event).await;
        assert_eq!(
            ack.outcome(),
            v1::AckOutcome::Accepted,
            "{id} step {n}: {}",
            ack.reason
        );
    }
}

async fn call(
    app: &TestApp,
    id: &str,
    base: DateTime<Utc>,
    queue: &str,
    steps: &[(CallEventType, i64, &str)],
) {
    call_from(app, id, "(415) 555-0100", base, queue, steps).await;
}

pub(crate) fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<v1::Period> {
    Some(v1::Period {
        start: ts(start),
        end: ts(end),
    })
}

pub async fn set_team(app: &TestApp, agent: &str, team: &str) {
    app.agents
        .clone()
        .set_agent_team(v1::SetAgentTeamRequest {
            agent_id: agent.into(),
            team: team.into(),
        })
        .await
        .expect("team set");
}

/// A survey score left on call `call`.
pub(crate) async fn scored(app: &TestApp, request_id: &str, call: &str, score: v1::score::Kind) {
    switchboard::proto::v1::feedback_service_client::FeedbackServiceClient::new(
        app.channel.clone(),
    )
    .submit_feedback(v1::SubmitFeedbackRequest {
        request_id: request_id.into(),
        source: v1::FeedbackSource::Customer.into(),
        score: Some(v1::Score { kind: Some(score) }),
        category: "survey".into(),
        gateway_id: GATEWAY.into(),
        call_id: call.into(),
        ..Default::default()
    })
    .await
    .expect("score recorded");
}

pub(crate) async fn kpis(app: &TestApp, request: v1::GetKpisRequest) -> v1::GetKpisResponse {
    AnalyticsServiceClient::new(app.channel.clone())
        .get_kpis(request)
        .await
        .expect("kpis")
        .into_inner()
}

fn v(value: &Option<v1::KpiValue>) -> f64 {
    value.as_ref().and_then(|v| v.value).expect("a value")
}

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance
}

#[tokio::test]
async fn call_kpis_match_a_hand_built_hour_and_improve_on_the_baseline() {
    let mut app = spawn_app().await;
    for agent in ["a-1", "a-2"] {
        log_in(&app, agent).await;
    }
    // Teams as they are when the calls happen: a-1 works in north, a-2 in south.
    set_team(&app, "a-1", "north").await;
    set_team(&app, "a-2", "south").await;
    // Two known callers (the other calls come from an unknown number).
    let ada = app.create_customer("Ada", &["(415) 555-0121"]).await;
    let bob = app.create_customer("Bob", &["(415) 555-0122"]).await;
    let base = (Utc::now() - Duration::hours(1)).trunc_subsecs(0);
    // A: answered after 10 s by a-1, 10 s on hold, ended after 60 s connected; wrapped up.
    call(
        &app,
        "A",
        base,
        "billing",
        &[
            (Offered, 0, ""),
            (Queued, 0, ""),
            (Ringing, 2, "a-1"),
            (Answered, 10, "a-1"),
            (Held, 30, "a-1"),
            (Resumed, 40, "a-1"),
            (Ended, 70, ""),
        ],
    )
    .await;
    // B: a short abandon (3 s).
    call(
        &app,
        "B",
        base,
        "billing",
        &[(Offered, 100, ""), (Queued, 100, ""), (Abandoned, 103, "")],
    )
    .await;
    // C: abandoned after 30 s while ringing a-2.
    call(
        &app,
        "C",
        base,
        "billing",
        &[
            (Offered, 200, ""),
            (Queued, 200, ""),
            (Ringing, 205, "a-2"),
            (Abandoned, 230, ""),
        ],
    )
    .await;
    // D: answered after 25 s (outside the 20 s service level), 60 s of talk.
    call(
        &app,
        "D",
        base,
        "billing",
        &[
            (Offered, 300, ""),
            (Queued, 300, ""),
            (Ringing, 320, "a-2"),
            (Answered, 325, "a-2"),
            (Ended, 385, ""),
        ],
    )
    .await;
    // E: answered after 5 s by a-1, transferred to a-2 who answers 5 s later (ring time, not
    // talk), ended 95 s after the first answer: 90 s of talk.
    call(
        &app,
        "E",
        base,
        "billing",
        &[
            (Offered, 500, ""),
            (Queued, 500, ""),
            (Ringing, 502, "a-1"),
            (Answered, 505, "a-1"),
            (Transferred, 540, "a-1"),
            (Answered, 545, "a-2"),
            (Ended, 600, ""),
        ],
    )
    .await;
    // F: answered after 4 s, still going.
    call(
        &app,
        "F",
        base,
        "billing",
        &[
            (Offered, 700, ""),
            (Queued, 700, ""),
            (Ringing, 702, "a-1"),
            (Answered, 704, "a-1"),
        ],
    )
    .await;
    // H: hung up in the IVR, before any queue: self-service, not an abandon. I: 10 s in the IVR,
    // then 3 s in the queue: a short abandon (timed from the queue). J: abandoned 12 s into the
    // queue: not short, but within the 20 s service level.
    let ivr_and_queue: [(&str, &str, Steps); 3] = [
        ("H", "", &[(Offered, 800, ""), (Abandoned, 830, "")]),
        (
            "I",
            "billing",
            &[(Offered, 900, ""), (Queued, 910, ""), (Abandoned, 913, "")],
        ),
        (
            "J",
            "billing",
            &[
                (Offered, 1000, ""),
                (Queued, 1000, ""),
                (Abandoned, 1012, ""),
            ],
        ),
    ];
    for (id, queue, steps) in ivr_and_queue {
        call(&app, id, base, queue, steps).await;
    }
    // K: answered after 5 s by a-1, transferred to a-2, who rings 8 s and never answers; sent to
    // the sales queue, answered there 20 s later by a-2; 113 s from the first answer to the end:
    // 8 s of transfer ringing, 20 s of waiting again, 85 s of talk.
    call(
        &app,
        "K",
        base,
        "billing",
        &[
            (Offered, 1100, ""),
            (Queued, 1100, ""),
            (Ringing, 1102, "a-1"),
            (Answered, 1105, "a-1"),
            (Transferred, 1130, "a-1"),
            (Transferred, 1138, "queue:sales"),
            (Ringing, 1150, "a-2"),
            (Answered, 1158, "a-2"),
            (Ended, 1218, ""),
        ],
    )
    .await;
    // Ada's P, answered after 4 s and resolved; then M, a 3-second misdial from her: no contact,
    // so P stays a first-contact resolution. Bob's Q, not resolved (its interaction logged as a
    // backfill: no after-call work), and his call-back R that resolves: Q is a repeat, and R is
    // no first contact.
    let answered_after = |queued: i64, answered: i64, agent: &'static str| {
        [
            (Offered, queued, ""),
            (Queued, queued, ""),
            (Ringing, queued + 1, agent),
            (Answered, answered, agent),
            (Ended, answered + 60, ""),
        ]
    };
    let known: [(&str, &str, Vec<_>); 4] = [
        (
            "P",
            "(415) 555-0121",
            answered_after(1300, 1304, "a-1").into(),
        ),
        (
            "M",
            "(415) 555-0121",
            vec![(Offered, 1500, ""), (Ended, 1503, "")],
        ),
        (
            "Q",
            "(415) 555-0122",
            answered_after(1600, 1604, "a-2").into(),
        ),
        (
            "R",
            "(415) 555-0122",
            answered_after(1800, 1803, "a-2").into(),
        ),
    ];
    for (id, caller, steps) in &known {
        call_from(&app, id, caller, base, "billing", steps).await;
    }
    // The baseline hour, a day earlier: one call answered after 40 s.
    let before = base - Duration::days(1);
    call(
        &app,
        "G",
        before,
        "billing",
        &[
            (Offered, 0, ""),
            (Queued, 0, ""),
            (Ringing, 30, "a-1"),
            (Answered, 40, "a-1"),
            (Ended, 100, ""),
        ],
    )
    .await;

    // A's wrap-up: the interaction ended 30 s ago and is wrapped up now.
    let customer = ada.clone();
    app.dispositions(&[("resolved", true), ("callback", false)])
        .await;
    let logged = app
        .interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: "wrap-A".into(),
            customer_id: customer.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "a-1".into(),
            gateway_id: GATEWAY.into(),
            call_id: "A".into(),
            started_at: ts(base),
            ended_at: ts(Utc::now() - Duration::seconds(30)),
            ..Default::default()
        })
        .await
        .expect("logged")
        .into_inner()
        .interaction
        .expect("interaction");
    app.interactions()
        .complete_wrap_up(v1::CompleteWrapUpRequest {
            interaction_id: logged.id,
            disposition_code: "resolved".into(),
            notes: String::new(),
        })
        .await
        .expect("wrapped up");
    // P's and R's interactions ended 10 s and 20 s ago and are wrapped up now. Q's is logged now
    // for a call that ended over 30 minutes ago: a backfill, so no after-call work.
    let q_ended_ago = Utc::now() - (base + Duration::seconds(1664));
    for (customer, id, agent, ended_ago, code) in [
        (&ada, "P", "a-1", Duration::seconds(10), "resolved"),
        (&bob, "Q", "a-2", q_ended_ago, "callback"),
        (&bob, "R", "a-2", Duration::seconds(20), "resolved"),
    ] {
        let interaction = interaction_ended(&app, customer, id, agent, ended_ago).await;
        complete_wrap_up(&app, interaction, code).await;
    }

    // Scores left on the calls: CSAT 4 on A and 2 on D; NPS 10 on E and 3 on D.
    let scores = [
        ("A", v1::score::Kind::Csat(4)),
        ("D", v1::score::Kind::Csat(2)),
        ("E", v1::score::Kind::Nps(10)),
        ("D", v1::score::Kind::Nps(3)),
    ];
    for (n, (call_id, score)) in scores.into_iter().enumerate() {
        scored(&app, &format!("score-{n}"), call_id, score).await;
    }

    let response = kpis(
        &app,
        v1::GetKpisRequest {
            period: period(base, base + Duration::hours(1)),
            baseline_period: period(before, before + Duration::hours(1)),
            group_by: v1::KpiGrouping::Agent.into(),
            ..Default::default()
        },
    )
    .await;
    let total = response.total.expect("total").kpis.expect("kpis");
    assert_eq!(v(&total.offered), 14.0);
    assert_eq!(
        v(&total.answered),
        8.0,
        "A, D, E, F (still connected), K, P, Q, R"
    );
    assert_eq!(v(&total.abandoned), 4.0, "B, C, I and J");
    assert_eq!(v(&total.short_abandoned), 2.0, "B and I");
    assert_eq!(v(&total.self_service), 2.0, "H and M");
    assert_eq!(v(&total.in_progress), 1.0);
    // Decided: 8 answered + 4 abandoned - 2 short = 10 (F counts: it is answered).
    assert!(
        close(v(&total.abandonment_rate), 2.0 / 10.0, 1e-9),
        "C and J"
    );
    assert!(
        close(v(&total.service_level), 7.0 / 10.0, 1e-9),
        "all answers but D within 20 s, of ten"
    );
    assert_eq!(v(&total.csat_top_two_box), 0.5, "the 4, of a 4 and a 2");
    assert_eq!(v(&total.after_call_work_outliers), 0.0);
    assert_eq!(
        v(&total.average_speed_of_answer),
        7.5,
        "(10 + 25 + 5 + 4 + 5 + 4 + 4 + 3) / 8"
    );
    assert_eq!(v(&total.transfer_rate), 0.25, "E and K of eight answered");
    // Seven handled calls: A, D, E, K, P, Q, R.
    assert!(
        close(v(&total.average_talk_time), 465.0 / 7.0, 1e-6),
        "(50 + 60 + 90 + 85 + 60 + 60 + 60) / 7"
    );
    assert!(close(v(&total.average_hold_time), 10.0 / 7.0, 1e-6));
    assert!(
        close(v(&total.average_transfer_ring_time), 13.0 / 7.0, 1e-6),
        "E's 5 s and K's 8 s"
    );
    assert!(
        close(v(&total.average_requeue_wait_time), 20.0 / 7.0, 1e-6),
        "K's 20 s in sales"
    );
    // The wrap-ups took about 30 s (A), 10 s (P) and 20 s (R), measured by the server when they
    // were completed; Q's backfill none.
    assert!(
        close(v(&total.average_wrap_up_time), 60.0 / 7.0, 1.0),
        "60 s / 7 calls"
    );
    assert!(close(
        v(&total.average_handle_time),
        (465.0 + 10.0 + 60.0) / 7.0,
        1.0
    ));
    // Known callers' handled calls: P, Q and R (M is a misdial). Only P is resolved on a first
    // contact; Q is repeated by R, and R follows Q.
    assert!(close(v(&total.first_contact_resolution), 1.0 / 3.0, 1e-9));
    assert!(close(v(&total.repeat_contact_rate), 1.0 / 3.0, 1e-9), "Q");
    // Against the baseline hour: 0 of 1 within the service level, answered after 40 s.
    let sl = total.service_level.expect("service level");
    assert_eq!(sl.baseline, Some(0.0));
    assert!(close(sl.change.expect("change"), 0.7, 1e-9));
    let asa = total.average_speed_of_answer.expect("asa");
    assert_eq!((asa.baseline, asa.change), (Some(40.0), Some(-32.5)));

    let keys: Vec<&str> = response.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(v(&total.csat), 3.0, "(4 + 2) / 2");
    assert_eq!(v(&total.nps), 0.0, "one promoter, one detractor");
    assert_eq!(
        keys,
        ["", "a-1", "a-2"],
        "unanswered calls group under no agent"
    );
    let by_agent: Vec<(f64, f64)> = response.groups[1..]
        .iter()
        .map(|g| {
            let k = g.kpis.as_ref().expect("kpis");
            (v(&k.csat), v(&k.nps))
        })
        .collect();
    assert_eq!(by_agent, [(4.0, 100.0), (2.0, -100.0)]);

    // Teams: calls count for the first answering agent's team as it was then. Moving a-1 to
    // east afterwards moves none of the hour's calls.
    let teams = || async {
        kpis(
            &app,
            v1::GetKpisRequest {
                period: period(base, base + Duration::hours(1)),
                group_by: v1::KpiGrouping::Team.into(),
                ..Default::default()
            },
        )
        .await
        .groups
        .iter()
        .map(|g| (g.key.clone(), v(&g.kpis.as_ref().expect("kpis").offered)))
        .collect::<Vec<_>>()
    };
    let before_the_move = teams().await;
    assert_eq!(
        before_the_move,
        [
            ("".into(), 6.0),
            ("north".into(), 5.0),
            ("south".into(), 3.0)
        ]
    );
    set_team(&app, "a-1", "east").await;
    assert_eq!(
        teams().await,
        before_the_move,
        "history stays where it happened"
    );

    // The service level's variants.
    let variant = |include_short_abandons, counts_quick_abandons_as_met| {
        let app = &app;
        async move {
            let response = kpis(
                app,
                v1::GetKpisRequest {
                    period: period(base, base + Duration::hours(1)),
                    service_level_includes_short_abandons: include_short_abandons,
                    service_level_counts_quick_abandons_as_met: counts_quick_abandons_as_met,
                    ..Default::default()
                },
            )
            .await;
            v(&response
                .total
                .expect("total")
                .kpis
                .expect("kpis")
                .service_level)
        }
    };
    assert!(
        close(variant(true, false).await, 7.0 / 12.0, 1e-9),
        "B and I count against"
    );
    assert!(
        close(variant(false, true).await, 8.0 / 10.0, 1e-9),
        "J counts as met"
    );
    assert!(
        close(variant(true, true).await, 10.0 / 12.0, 1e-9),
        "B, I and J count as met"
    );

    let offered: Vec<f64> = response
        .groups
        .iter()
        .map(|g| v(&g.kpis.as_ref().expect("kpis").offered))
        .collect();
    assert_eq!(offered, [6.0, 5.0, 3.0]);
    let a1 = response.groups[1].kpis.as_ref().expect("kpis");
    let a1_offered = a1.offered.as_ref().expect("offered");
    assert_eq!(
        (a1_offered.baseline, a1_offered.change),
        (Some(1.0), Some(4.0))
    );
    assert_eq!(
        response.groups[2]
            .kpis
            .as_ref()
            .expect("kpis")
            .offered
            .as_ref()
            .expect("offered")
            .baseline,
        None,
        "a-2 had no baseline calls"
    );

    // M, a misdial, carries P as its previous contact and no next one; every other stamp is
    // what a sort of the contacts gives.
    assert_eq!(stamps_against_a_sort(&app).await.1, 0);

    // The misdial threshold is the server's: started again with none, M is a contact, so P is
    // repeated too and nothing was resolved on a first contact.
    let stopped = app.stop_for_restart().await;
    let app = stopped
        .start_again_with(TestOptions {
            misdial_seconds: 0,
            ..Default::default()
        })
        .await;
    let total = kpis(
        &app,
        v1::GetKpisRequest {
            period: period(base, base + Duration::hours(1)),
            ..Default::default()
        },
    )
    .await
    .total
    .expect("total")
    .kpis
    .expect("kpis");
    assert!(
        close(v(&total.repeat_contact_rate), 2.0 / 3.0, 1e-9),
        "P and Q"
    );
    assert_eq!(v(&total.first_contact_resolution), 0.0);
    // The threshold's change restamped M's chain: M is now P's next contact and has one itself.
    assert_eq!(stamps_against_a_sort(&app).await.1, 0);
}

#[tokio::test]
async fn days_and_hours_follow_the_offer_and_the_time_zone() {
    let app = spawn_app().await;
    log_in(&app, "a-1").await;
    // Offered ten seconds before midnight UTC, answered after it.
    let late = Utc
        .with_ymd_and_hms(2026, 11, 2, 23, 59, 50)
        .single()
        .expect("time");
    call(
        &app,
        "M",
        late,
        "billing",
        &[
            (Offered, 0, ""),
            (Queued, 0, ""),
            (Ringing, 5, "a-1"),
            (Answered, 15, "a-1"),
            (Ended, 75, ""),
        ],
    )
    .await;
    let morning = Utc
        .with_ymd_and_hms(2026, 11, 3, 10, 0, 0)
        .single()
        .expect("time");
    call(
        &app,
        "N",
        morning,
        "billing",
        &[(Offered, 0, ""), (Queued, 0, ""), (Abandoned, 60, "")],
    )
    .await;
    let day = |zone: &str, grouping: v1::KpiGrouping| v1::GetKpisRequest {
        period: period(late - Duration::days(1), morning + Duration::days(1)),
        group_by: grouping.into(),
        time_zone: zone.into(),
        ..Default::default()
    };
    let utc = kpis(&app, day("", v1::KpiGrouping::Day)).await;
    let keys: Vec<&str> = utc.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(
        keys,
        ["2026-11-02", "2026-11-03"],
        "the call counts on the day it was offered"
    );
    let first = utc.groups[0].kpis.as_ref().expect("kpis");
    assert_eq!(v(&first.answered), 1.0);
    assert!(first.offered.as_ref().expect("offered").baseline.is_none());
    // In New York, 23:59:50 UTC is 18:59:50, and 10:00 UTC on the 3rd is 05:00 on the 3rd.
    let new_york = kpis(&app, day("America/New_York", v1::KpiGrouping::Hour)).await;
    let keys: Vec<&str> = new_york.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(keys, ["2026-11-02T18", "2026-11-03T05"]);
}

#[tokio::test]
async fn agent_level_kpis_are_for_supervisors_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let now = Utc::now();
    let service = AnalyticsServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Service, "erp", None),
    ));
    let by_agent = v1::GetKpisRequest {
        period: period(now - Duration::days(1), now),
        group_by: v1::KpiGrouping::Agent.into(),
        ..Default::default()
    };
    let denied = service
        .clone()
        .get_kpis(by_agent.clone())
        .await
        .expect_err("denied");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let by_queue = v1::GetKpisRequest {
        group_by: v1::KpiGrouping::Queue.into(),
        ..by_agent.clone()
    };
    assert!(
        service.clone().get_kpis(by_queue).await.is_ok(),
        "team-level results for services"
    );
    let supervisor = AnalyticsServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Supervisor, "sup-1", None),
    ));
    assert!(supervisor.clone().get_kpis(by_agent.clone()).await.is_ok());

    let bad = supervisor
        .clone()
        .get_kpis(v1::GetKpisRequest {
            period: period(now, now - Duration::days(1)),
            time_zone: "Mars/Olympus".into(),
            service_level_seconds: -1,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&bad),
        ["period", "time_zone", "service_level_seconds"]
    );
}

/// Logs the call's interaction with `code`, and completes its wrap-up with it when `complete`.
async fn wrapped(
    app: &TestApp,
    customer: &v1::Customer,
    call_id: &str,
    code: &str,
    complete: bool,
) {
    let logged = app
        .interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: format!("i-{call_id}"),
            customer_id: customer.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "a-1".into(),
            gateway_id: GATEWAY.into(),
            call_id: call_id.into(),
            started_at: ts(Utc::now() - Duration::hours(3)),
            disposition_code: code.into(),
            ..Default::default()
        })
        .await
        .expect("logged")
        .into_inner()
        .interaction
        .expect("interaction");
    if complete {
        complete_wrap_up(app, logged.id, code).await;
    }
}

#[tokio::test]
async fn first_contact_resolution_needs_a_resolving_disposition_and_no_repeat_call() {
    let app = spawn_app().await;
    log_in(&app, "a-1").await;
    app.dispositions(&[("resolved", true), ("callback", false)])
        .await;
    let x = app.create_customer("Xavier", &["(415) 555-0101"]).await;
    let y = app.create_customer("Yara", &["(415) 555-0102"]).await;
    let z = app.create_customer("Zoe", &["(415) 555-0103"]).await;
    let w = app.create_customer("Walt", &["(415) 555-0104"]).await;
    let base = (Utc::now() - Duration::hours(4)).trunc_subsecs(0);
    let handled = [
        (Offered, 0, ""),
        (Queued, 0, ""),
        (Ringing, 2, "a-1"),
        (Answered, 5, "a-1"),
        (Ended, 65, ""),
    ];
    // X: resolved, never calls again. Y: resolved, but calls again two hours later (resolved
    // then, on a second contact). Z: not resolved (callback). W: a resolving disposition logged, but the wrap-up never
    // completed: not resolved.
    call_from(&app, "X1", "(415) 555-0101", base, "billing", &handled).await;
    call_from(&app, "Y1", "(415) 555-0102", base, "billing", &handled).await;
    call_from(
        &app,
        "Y2",
        "(415) 555-0102",
        base + Duration::hours(2),
        "billing",
        &handled,
    )
    .await;
    call_from(&app, "Z1", "(415) 555-0103", base, "billing", &handled).await;
    call_from(&app, "W1", "(415) 555-0104", base, "billing", &handled).await;
    for (customer, call_id, code, complete) in [
        (&x, "X1", "resolved", true),
        (&y, "Y1", "resolved", true),
        (&y, "Y2", "resolved", true),
        (&z, "Z1", "callback", true),
        (&w, "W1", "resolved", false),
    ] {
        wrapped(&app, customer, call_id, code, complete).await;
    }
    let request = |hours: i32| v1::GetKpisRequest {
        period: period(base - Duration::hours(1), Utc::now()),
        repeat_window_hours: hours,
        ..Default::default()
    };
    let week = kpis(&app, request(0))
        .await
        .total
        .expect("total")
        .kpis
        .expect("kpis");
    // Y2 resolved Y's issue, but on Y's second contact: not a first-contact resolution.
    assert_eq!(v(&week.first_contact_resolution), 0.2, "X1 of five");
    assert_eq!(v(&week.repeat_contact_rate), 0.2, "Y1 of five");
    // With a one-hour window, Y's second call is no longer a repeat of the first.
    let hour = kpis(&app, request(1))
        .await
        .total
        .expect("total")
        .kpis
        .expect("kpis");
    assert_eq!(
        v(&hour.first_contact_resolution),
        0.6,
        "X1, Y1 and Y2 (a first contact again, two hours on) of five"
    );
    assert_eq!(v(&hour.repeat_contact_rate), 0.0);
}

/// Agent state history as a fixture: Switchboard stamps state changes with the time they are
/// made, so a history on known past days is written straight into its table.
pub(crate) async fn state_history(app: &TestApp, changes: &[(&str, &str, DateTime<Utc>)]) {
    for (agent, state, at) in changes {
        sqlx::query("INSERT INTO agent_state_changes (agent_id, state, at) VALUES ($1, $2, $3)")
            .bind(agent)
            .bind(state)
            .bind(at)
            .execute(&app.db)
            .await
            .expect("state change stored");
    }
}

fn occupancy(group: &v1::KpiGroup) -> Option<f64> {
    group
        .kpis
        .as_ref()
        .and_then(|k| k.occupancy.as_ref())
        .and_then(|o| o.value)
}

/// Occupancy from `start` to `end`: the total's, and each group's by `grouping`.
async fn occupancy_by(
    app: &TestApp,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    grouping: v1::KpiGrouping,
) -> (Option<f64>, Vec<(String, Option<f64>)>) {
    let response = kpis(
        app,
        v1::GetKpisRequest {
            period: period(start, end),
            group_by: grouping.into(),
            ..Default::default()
        },
    )
    .await;
    let groups = response
        .groups
        .iter()
        .map(|g| (g.key.clone(), occupancy(g)))
        .collect();
    (occupancy(&response.total.expect("total")), groups)
}

#[tokio::test]
async fn occupancy_is_busy_and_wrap_up_time_over_staffed_time_cut_at_the_period_and_days() {
    let app = spawn_app().await;
    for (agent, team) in [("a-1", "red"), ("a-2", "blue")] {
        set_team(&app, agent, team).await;
    }
    let day = Utc
        .with_ymd_and_hms(2026, 10, 5, 0, 0, 0)
        .single()
        .expect("a day");
    let m = |minutes: i64| day + Duration::minutes(minutes);
    state_history(
        &app,
        &[
            // a-1 comes in the evening before: 30 min available, then a call across midnight.
            ("a-1", "available", m(-60)),
            ("a-1", "busy", m(-30)),
            ("a-1", "after_call_work", m(30)),
            ("a-1", "available", m(45)),
            ("a-1", "away", m(60)),
            // a-2: 20 min available, 20 busy, then offline.
            ("a-2", "available", m(0)),
            ("a-2", "busy", m(20)),
            ("a-2", "offline", m(40)),
        ],
    )
    .await;

    // 00:00 to 01:00: a-1 busy 30 (from before the period) + wrap-up 15, available 15;
    // a-2 busy 20, available 20.
    let (total, teams) = occupancy_by(&app, m(0), m(60), v1::KpiGrouping::Team).await;
    assert_eq!(total, Some(65.0 / 100.0));
    assert_eq!(
        teams,
        [("blue".into(), Some(0.5)), ("red".into(), Some(0.75))]
    );
    // a-1 moves to blue afterwards: the hour stays where it was worked.
    set_team(&app, "a-1", "blue").await;
    let (_, teams_again) = occupancy_by(&app, m(0), m(60), v1::KpiGrouping::Team).await;
    assert_eq!(
        teams_again, teams,
        "history stays with the team it was worked in"
    );

    // By day from 23:00 the evening before: the call across midnight is cut at midnight.
    let (_, days) = occupancy_by(&app, m(-60), m(60), v1::KpiGrouping::Day).await;
    assert_eq!(
        days,
        [
            ("2026-10-04".into(), Some(0.5)),
            ("2026-10-05".into(), Some(0.65))
        ]
    );

    // Agents belong to no queue: a queue grouping has no occupancy.
    let by_queue = kpis(
        &app,
        v1::GetKpisRequest {
            period: period(m(0), m(60)),
            group_by: v1::KpiGrouping::Queue.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(occupancy(&by_queue.total.expect("total")), None);
}

fn repeat_rate(response: v1::GetKpisResponse) -> f64 {
    v(&response
        .total
        .expect("total")
        .kpis
        .expect("kpis")
        .repeat_contact_rate)
}

/// The repeat-contact rate of the calls offered from `start` until now.
async fn repeat_rate_from(app: &TestApp, start: DateTime<Utc>) -> f64 {
    repeat_rate(
        kpis(
            app,
            v1::GetKpisRequest {
                period: period(start, Utc::now()),
                ..Default::default()
            },
        )
        .await,
    )
}

#[tokio::test]
async fn repeat_contacts_follow_merges_unmerges_and_calls_reported_out_of_order() {
    let app = spawn_app().await;
    log_in(&app, "a-1").await;
    let ann = app.create_customer("Ann", &["(415) 555-0111"]).await;
    let twin = app.create_customer("Ann (twin)", &["(415) 555-0112"]).await;
    let base = (Utc::now() - Duration::hours(6)).trunc_subsecs(0);
    let handled = [
        (Offered, 0, ""),
        (Ringing, 2, "a-1"),
        (Answered, 5, "a-1"),
        (Ended, 65, ""),
    ];
    // The later call is reported first: Ann's first call still gets it as her next contact.
    call_from(
        &app,
        "A2",
        "(415) 555-0111",
        base + Duration::hours(2),
        "q",
        &handled,
    )
    .await;
    call_from(&app, "A1", "(415) 555-0111", base, "q", &handled).await;
    call_from(
        &app,
        "T1",
        "(415) 555-0112",
        base + Duration::hours(1),
        "q",
        &handled,
    )
    .await;
    let request = || v1::GetKpisRequest {
        period: period(base - Duration::hours(1), Utc::now()),
        ..Default::default()
    };
    assert_eq!(
        repeat_rate(kpis(&app, request()).await),
        1.0 / 3.0,
        "A1 of three"
    );

    // The twin is Ann: her call at +1h is the next contact of A1 and is followed by A2.
    app.customers
        .clone()
        .merge_customers(v1::MergeCustomersRequest {
            survivor_id: ann.id.clone(),
            duplicate_id: twin.id.clone(),
            dry_run: false,
        })
        .await
        .expect("merged");
    assert_eq!(
        repeat_rate(kpis(&app, request()).await),
        2.0 / 3.0,
        "A1 and T1"
    );
    let next: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT next_offered_at FROM calls WHERE gateway_id = $1 ORDER BY offered_at",
    )
    .bind(GATEWAY)
    .fetch_all(&app.db)
    .await
    .expect("calls");
    assert_eq!(
        next,
        [
            Some(base + Duration::hours(1)),
            Some(base + Duration::hours(2)),
            None
        ]
    );
    // The twin's latest call end went with the call: Ann's row has it, the twin has none.
    assert_eq!(last_calls_against_calls(&app.db).await, (1, 0));

    app.customers
        .clone()
        .unmerge_customer(v1::UnmergeCustomerRequest {
            customer_id: twin.id.clone(),
        })
        .await
        .expect("unmerged");
    assert_eq!(repeat_rate(kpis(&app, request()).await), 1.0 / 3.0);
    // And back: Ann's latest end is her own again (recounted), the twin's is hers.
    assert_eq!(last_calls_against_calls(&app.db).await, (2, 0));
    // After the merge and the unmerge, next and previous contacts are what a sort gives.
    let (stamped, differ) = stamps_against_a_sort(&app).await;
    assert!(stamped > 0);
    assert_eq!(differ, 0);
}

#[tokio::test]
async fn concurrent_calls_of_the_same_customers_all_chain_before_the_kpis_are_read() {
    let app = spawn_app().await;
    log_in(&app, "a-1").await;
    let numbers = ["(415) 555-0121", "(415) 555-0122", "(415) 555-0123"];
    for (n, number) in numbers.iter().enumerate() {
        app.create_customer(&format!("Caller {n}"), &[number]).await;
    }
    let base = (Utc::now() - Duration::hours(3)).trunc_subsecs(0);
    // Ten calls per customer, a minute apart, all reported at once (in reverse order of offer
    // across the three customers), so many land in concurrent batches.
    let calls: Vec<(String, &str, DateTime<Utc>)> = (0..30)
        .rev()
        .map(|i| {
            let number = numbers[i % 3];
            let at = base + Duration::minutes(i as i64);
            (format!("R{i}"), number, at)
        })
        .collect();
    futures::future::join_all(
        calls
            .iter()
            .map(|(id, number, at)| call_from(&app, id, number, *at, "q", ANSWERED_BY_A1)),
    )
    .await;
    // Every call but each customer's last is followed by another within the week.
    let rate = repeat_rate_from(&app, base - Duration::hours(1)).await;
    assert_eq!(rate, 27.0 / 30.0);
    // And every stamp, next and previous, is what sorting each customer's calls gives.
    assert_eq!(stamps_against_a_sort(&app).await, (30, 0));
    // Concurrent batches raised the three customers' latest call ends without a deadlock.
    assert_eq!(last_calls_against_calls(&app.db).await, (3, 0));
}

/// The calls of known customers, and how many of them have a next or previous contact stamp
/// other than what sorting each customer's contacts gives (a misdial is no contact: it carries
/// its previous contact, and no next one).
async fn stamps_against_a_sort(app: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE c.next_offered_at IS DISTINCT FROM s.next_at \
                                        OR c.prev_offered_at IS DISTINCT FROM s.prev_at) \
         FROM calls c JOIN ( \
           SELECT gateway_id, call_id, \
             CASE WHEN contact THEN min(contact_at) OVER (w ROWS BETWEEN 1 FOLLOWING \
                                                           AND UNBOUNDED FOLLOWING) END AS next_at, \
             max(contact_at) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_at \
           FROM (SELECT k.*, CASE WHEN k.contact THEN k.offered_at END AS contact_at \
                 FROM (SELECT x.*, NOT COALESCE(x.ended_at < x.offered_at + make_interval(secs => \
                         (SELECT misdial_seconds FROM contact_chain_rule)), false) AS contact \
                       FROM calls x WHERE x.customer_id IS NOT NULL) k) k \
           WINDOW w AS (PARTITION BY customer_id ORDER BY offered_at, gateway_id, call_id)) s \
         USING (gateway_id, call_id)",
    )
    .fetch_one(&app.db)
    .await
    .expect("stamps")
}

/// A call's stored next contact, read directly.
async fn next_contact(app: &TestApp, call_id: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT next_offered_at FROM calls WHERE gateway_id = $1 AND call_id = $2")
        .bind(GATEWAY)
        .bind(call_id)
        .fetch_one(&app.db)
        .await
        .expect("call")
}

/// Polls (up to 5 s) until the call's next contact is `expected`; returns what it last read.
async fn next_contact_becomes(
    app: &TestApp,
    call_id: &str,
    expected: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let mut seen = next_contact(app, call_id).await;
    for _ in 0..50 {
        if seen == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        seen = next_contact(app, call_id).await;
    }
    seen
}

#[tokio::test]
async fn the_stamper_skips_a_call_a_writer_holds_and_stamps_it_once_let_go() {
    let app = spawn_app().await;
    log_in(&app, "a-1").await;
    app.create_customer("Ann", &["(415) 555-0131"]).await;
    app.create_customer("Bob", &["(415) 555-0132"]).await;
    let base = (Utc::now() - Duration::hours(4)).trunc_subsecs(0);
    call_from(&app, "ANN-1", "(415) 555-0131", base, "q", ANSWERED_BY_A1).await;
    call_from(&app, "BOB-1", "(415) 555-0132", base, "q", ANSWERED_BY_A1).await;

    // A writer (as a call-event batch would) holds the lock of Ann's first call while both
    // customers call again.
    let mut writer = app.db.begin().await.expect("begin");
    switchboard::calls::lock_calls(&mut writer, &[(GATEWAY.into(), "ANN-1".into())])
        .await
        .expect("lock");
    let later = base + Duration::hours(1);
    call_from(&app, "ANN-2", "(415) 555-0131", later, "q", ANSWERED_BY_A1).await;
    call_from(&app, "BOB-2", "(415) 555-0132", later, "q", ANSWERED_BY_A1).await;

    // The background stamper is not stuck behind the held call: Bob's chain is stamped.
    assert_eq!(
        next_contact_becomes(&app, "BOB-1", Some(later)).await,
        Some(later)
    );
    assert_eq!(next_contact(&app, "ANN-1").await, None, "held: not written");
    let noted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM contact_chains_dirty WHERE customer_id = (SELECT customer_id FROM calls WHERE call_id = 'ANN-1')")
            .fetch_one(&app.db)
            .await
            .expect("notes");
    assert!(noted >= 1, "Ann is noted again for a later pass");

    // Once the writer lets go, a later pass stamps Ann's call without being asked.
    writer.commit().await.expect("commit");
    assert_eq!(
        next_contact_becomes(&app, "ANN-1", Some(later)).await,
        Some(later)
    );
    let rate = repeat_rate_from(&app, base - Duration::hours(1)).await;
    assert_eq!(rate, 2.0 / 4.0);
}

#[tokio::test]
async fn a_customers_earlier_misdials_are_not_rewritten_when_they_call_again() {
    let app = spawn_app().await;
    log_in(&app, "a-1").await;
    app.create_customer("Ann", &["(415) 555-0141"]).await;
    let base = (Utc::now() - Duration::hours(8)).trunc_subsecs(0);
    let misdial = [(Offered, 0, ""), (Ended, 3, "")];
    call_from(&app, "ANN-1", "(415) 555-0141", base, "q", ANSWERED_BY_A1).await;
    for n in 1..=5 {
        let at = base + Duration::hours(n);
        call_from(
            &app,
            &format!("MIS-{n}"),
            "(415) 555-0141",
            at,
            "q",
            &misdial,
        )
        .await;
    }
    // A KPI request waits for the stamper.
    repeat_rate_from(&app, base - Duration::hours(1)).await;
    let versions = || async {
        sqlx::query_as::<_, (String, String, Option<DateTime<Utc>>, Option<DateTime<Utc>>)>(
            "SELECT call_id, ctid::text, next_offered_at, prev_offered_at FROM calls \
             WHERE call_id LIKE 'MIS-%' ORDER BY call_id",
        )
        .fetch_all(&app.db)
        .await
        .expect("misdials")
    };
    let before = versions().await;
    assert_eq!(before.len(), 5);
    assert!(
        before
            .iter()
            .all(|(_, _, next, prev)| next.is_none() && *prev == Some(base)),
        "a misdial carries its previous contact and no next one: {before:?}"
    );
    assert_eq!(
        next_contact(&app, "ANN-1").await,
        None,
        "misdials are no contacts"
    );

    // Ann calls again. While the call goes on it is a contact: ANN-1's next.
    let again = base + Duration::hours(6);
    call_from(
        &app,
        "ANN-2",
        "(415) 555-0141",
        again,
        "q",
        &[(Offered, 0, "")],
    )
    .await;
    repeat_rate_from(&app, base - Duration::hours(1)).await;
    assert_eq!(next_contact(&app, "ANN-1").await, Some(again));
    assert_eq!(stamps_against_a_sort(&app).await, (7, 0));
    // Then it ends within the misdial threshold: ANN-1 has no next contact again.
    let ended = v1::CallEvent {
        gateway_id: GATEWAY.into(),
        event_id: "ANN-2-end".into(),
        call_id: "ANN-2".into(),
        r#type: Ended.into(),
        occurred_at: ts(again + Duration::seconds(4)),
        ..Default::default()
    };
    report(&app, ended).await;
    repeat_rate_from(&app, base - Duration::hours(1)).await;
    assert_eq!(next_contact(&app, "ANN-1").await, None);
    assert_eq!(stamps_against_a_sort(&app).await, (7, 0));

    // Neither change rewrote the earlier misdials (each restamp of a row moves its `ctid`): a
    // new call costs its customer's last contact and itself, however many misdials came between.
    assert_eq!(versions().await, before);

    // A contact reported late, between the second and third misdials, is the previous contact of
    // the misdials after it, and the next of ANN-1; a call after all of them finds it.
    let late = base + Duration::hours(2) + Duration::minutes(30);
    call_from(
        &app,
        "ANN-LATE",
        "(415) 555-0141",
        late,
        "q",
        ANSWERED_BY_A1,
    )
    .await;
    let last = base + Duration::hours(7);
    call_from(&app, "ANN-3", "(415) 555-0141", last, "q", ANSWERED_BY_A1).await;
    repeat_rate_from(&app, base - Duration::hours(1)).await;
    assert_eq!(next_contact(&app, "ANN-1").await, Some(late));
    assert_eq!(next_contact(&app, "ANN-LATE").await, Some(last));
    assert_eq!(stamps_against_a_sort(&app).await, (9, 0));
}

/// Logs an interaction for a call that ended `ended_ago` before now, by `agent`; returns its id.
pub(crate) async fn interaction_ended(
    app: &TestApp,
    customer: &v1::Customer,
    call_id: &str,
    agent: &str,
    ended_ago: Duration,
) -> String {
    app.interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: format!("acw-{call_id}-{agent}"),
            customer_id: customer.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: agent.into(),
            gateway_id: GATEWAY.into(),
            call_id: call_id.into(),
            started_at: ts(Utc::now() - ended_ago - Duration::minutes(1)),
            ended_at: ts(Utc::now() - ended_ago),
            ..Default::default()
        })
        .await
        .expect("logged")
        .into_inner()
        .interaction
        .expect("interaction")
        .id
}

pub(crate) async fn complete_wrap_up(app: &TestApp, interaction_id: String, code: &str) {
    app.interactions()
        .complete_wrap_up(v1::CompleteWrapUpRequest {
            interaction_id,
            disposition_code: code.into(),
            notes: String::new(),
        })
        .await
        .expect("wrapped up");
}

/// After-call work runs from the contact's end to the agent leaving AFTER_CALL_WORK or
/// CompleteWrapUp, whichever comes first; it is summed over a call's interactions; a backfilled
/// interaction (logged more than the cap after its contact ended) has none; and a call over the
/// cap is an outlier, counted and left out of the AHT.
#[tokio::test]
async fn after_call_work_ends_when_the_agent_leaves_wrap_up_sums_per_call_and_is_capped() {
    let app = spawn_app().await;
    for agent in ["a-1", "a-2", "a-3"] {
        log_in(&app, agent).await;
    }
    app.dispositions(&[("done", false)]).await;
    let customer = app.create_customer("Ada", &[]).await;
    let base = (Utc::now() - Duration::minutes(30)).trunc_subsecs(0);
    let handled = |agent: &'static str| {
        [
            (Offered, 0, ""),
            (Queued, 0, ""),
            (Ringing, 1, agent),
            (Answered, 2, agent),
            (Ended, 62, ""),
        ]
    };
    for id in ["K", "L", "M"] {
        call(&app, id, base, "billing", &handled("a-1")).await;
    }

    // K: the agent leaves wrap-up about 2 s after the end; the wrap-up is completed 2 s later.
    let k = interaction_ended(&app, &customer, "K", "a-1", Duration::seconds(2)).await;
    crate::live::set_state(&app, "a-1", v1::AgentState::AfterCallWork).await;
    crate::live::set_state(&app, "a-1", v1::AgentState::Available).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    complete_wrap_up(&app, k, "done").await;
    // L: logged two hours after its end (a backfill) and completed now: no after-call work.
    let l = interaction_ended(&app, &customer, "L", "a-1", Duration::hours(2)).await;
    complete_wrap_up(&app, l, "done").await;
    // M: two interactions (a-2, then a-3 after a transfer), ended 10 s and 5 s ago, completed
    // now: 15 s together. (Not a-1's: a-1 left wrap-up after they ended, which would end
    // theirs too.)
    let m1 = interaction_ended(&app, &customer, "M", "a-2", Duration::seconds(10)).await;
    let m2 = interaction_ended(&app, &customer, "M", "a-3", Duration::seconds(5)).await;
    complete_wrap_up(&app, m1, "done").await;
    complete_wrap_up(&app, m2, "done").await;

    let read = |cap: i32| {
        let app = &app;
        async move {
            kpis(
                app,
                v1::GetKpisRequest {
                    period: period(base, base + Duration::hours(1)),
                    after_call_work_cap_seconds: cap,
                    ..Default::default()
                },
            )
            .await
            .total
            .expect("total")
            .kpis
            .expect("kpis")
        }
    };
    // The default cap (30 minutes): K about 2 s (not the 4 s to CompleteWrapUp), L 0, M 15 s.
    let all = read(0).await;
    assert_eq!(v(&all.after_call_work_outliers), 0.0);
    let acw = v(&all.average_wrap_up_time) * 3.0;
    assert!((17.0..19.5).contains(&acw), "2 + 0 + 15, got {acw}");
    assert!(
        close(v(&all.average_handle_time), 60.0 + acw / 3.0, 0.01),
        "60 s connected each"
    );
    // A 12 s cap: M is an outlier, out of the AHT and the average after-call work.
    let capped = read(12).await;
    assert_eq!(v(&capped.after_call_work_outliers), 1.0);
    let acw = v(&capped.average_wrap_up_time) * 2.0;
    assert!((2.0..4.0).contains(&acw), "K's 2 s and L's 0, got {acw}");
    assert!(close(
        v(&capped.average_handle_time),
        60.0 + acw / 2.0,
        0.01
    ));
    assert_eq!(
        v(&capped.average_talk_time),
        60.0,
        "talk counts every handled call"
    );
}
