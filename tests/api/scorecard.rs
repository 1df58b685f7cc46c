//! ScorecardService.GetScorecard on a baseline month and a post-launch month seeded with known
//! differences; every figure is worked out by hand here (docs/SCORECARD.md has the definitions).

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use prost_types::FieldMask;
use switchboard::auth::Role;
use switchboard::proto::v1;
use switchboard::proto::v1::CallEventType::{self, *};
use switchboard::proto::v1::feedback_service_client::FeedbackServiceClient;
use switchboard::proto::v1::scorecard_service_client::ScorecardServiceClient;
use tonic::Code;

use crate::helpers::{
    TestApp, authed, eventually, log_in_and_watch, spawn_app, token, violated_fields,
};

const GATEWAY: &str = "pbx-1";
/// The z of each KPI's interval: 95% for the seven KPIs together (Bonferroni).
const Z: f64 = 2.690_109_527_158_866;

fn ts(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(switchboard::proto_time::to_timestamp(at))
}

fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<v1::Period> {
    Some(v1::Period {
        start: ts(start),
        end: ts(end),
    })
}

/// One call from nobody's number: (event, seconds after `at`, agent); a transfer goes to `a-2`.
async fn call(app: &TestApp, id: &str, at: DateTime<Utc>, steps: &[(CallEventType, i64, &str)]) {
    call_from(app, id, "+1 415 555 0100", at, steps).await;
}

async fn call_from(
    app: &TestApp,
    id: &str,
    caller: &str,
    at: DateTime<Utc>,
    steps: &[(CallEventType, i64, &str)],
) {
    crate::analytics::call_from(app, id, caller, at, "sales", steps).await;
}

/// An answered call: waits `wait` seconds from the offer, then `talk` seconds with `agent`.
pub(crate) async fn answered(
    app: &TestApp,
    id: &str,
    at: DateTime<Utc>,
    agent: &str,
    wait: i64,
    talk: i64,
) {
    call(
        app,
        id,
        at,
        &[
            (Offered, 0, ""),
            (Ringing, 1, agent),
            (Answered, wait, agent),
            (Ended, wait + talk, ""),
        ],
    )
    .await;
}

pub(crate) async fn provision(app: &TestApp, agent: &str, name: &str, team: &str) {
    app.agents
        .clone()
        .upsert_agent(v1::UpsertAgentRequest {
            agent_id: agent.into(),
            display_name: name.into(),
            team: team.into(),
            queues: vec!["sales".into()],
            ..Default::default()
        })
        .await
        .expect("provisioned");
}

/// Logs an interaction on the call; returns its id.
pub(crate) async fn log(
    app: &TestApp,
    customer: &str,
    call_id: &str,
    agent: &str,
    at: DateTime<Utc>,
    (code, notes, case_id): (&str, &str, &str),
) -> String {
    app.interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: format!("i-{call_id}"),
            customer_id: customer.into(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: agent.into(),
            gateway_id: GATEWAY.into(),
            call_id: call_id.into(),
            case_id: case_id.into(),
            started_at: ts(at),
            disposition_code: code.into(),
            notes: notes.into(),
            ..Default::default()
        })
        .await
        .expect("logged")
        .into_inner()
        .interaction
        .expect("interaction")
        .id
}

async fn open_case(app: &TestApp, customer: &str, request_id: &str, actor: &str) -> v1::Case {
    app.cases()
        .open_case(v1::OpenCaseRequest {
            request_id: request_id.into(),
            customer_id: customer.into(),
            subject: "refund".into(),
            priority: v1::CasePriority::Normal.into(),
            actor: actor.into(),
            ..Default::default()
        })
        .await
        .expect("case opened")
        .into_inner()
        .case
        .expect("case")
}

async fn case_status(
    app: &TestApp,
    case: v1::Case,
    status: v1::CaseStatus,
    actor: &str,
) -> v1::Case {
    app.cases()
        .update_case(v1::UpdateCaseRequest {
            case: Some(v1::Case {
                status: status.into(),
                ..case
            }),
            update_mask: Some(FieldMask {
                paths: vec!["status".into()],
            }),
            actor: actor.into(),
        })
        .await
        .expect("case updated")
        .into_inner()
        .case
        .expect("case")
}

/// An agent's id, calls answered, pops delivered and interactions logged.
type AgentRow<'a> = (&'a str, i64, (i64, i64), (i64, i64));

fn share(s: &Option<v1::Share>) -> (i64, i64) {
    let s = s.as_ref().expect("a share");
    (s.count, s.of)
}

/// Mean and variance of the mean of per-call values, as the test works them out.
fn mean_and_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance / n)
}

fn close(actual: Option<f64>, expected: f64) {
    let actual = actual.expect("a value");
    assert!(
        (actual - expected).abs() < 1e-6,
        "{actual} is not {expected}"
    );
}

/// Checks a mean KPI against the per-call values of both periods, interval included.
fn check_mean(c: &Option<v1::Comparison>, now: &[f64], before: &[f64], verdict: v1::Verdict) {
    let c = c.as_ref().expect("a comparison");
    let ((m1, v1), (m0, v0)) = (mean_and_variance(now), mean_and_variance(before));
    close(c.value, m1);
    close(c.baseline, m0);
    close(c.change, m1 - m0);
    close(c.change_low, m1 - m0 - Z * (v1 + v0).sqrt());
    close(c.change_high, m1 - m0 + Z * (v1 + v0).sqrt());
    assert_eq!(
        (c.calls, c.baseline_calls),
        (now.len() as i64, before.len() as i64)
    );
    assert_eq!(c.verdict(), verdict);
}

fn check_share(
    c: &Option<v1::Comparison>,
    now: (i64, i64),
    before: (i64, i64),
    verdict: v1::Verdict,
) {
    let c = c.as_ref().expect("a comparison");
    let p = |(k, n): (i64, i64)| k as f64 / n as f64;
    close(c.value, p(now));
    close(c.baseline, p(before));
    close(c.change, p(now) - p(before));
    let (low, high) = (c.change_low.expect("low"), c.change_high.expect("high"));
    assert!(low <= p(now) - p(before) && p(now) - p(before) <= high);
    assert_eq!((c.calls, c.baseline_calls), (now.1, before.1));
    assert_eq!(c.verdict(), verdict);
}

#[tokio::test]
async fn the_scorecard_measures_adoption_efficiency_feedback_and_teamwork_against_the_baseline() {
    let app = spawn_app().await;
    let now = Utc::now().trunc_subsecs(0);
    let (post, baseline) = (now - Duration::days(30), now - Duration::days(90));
    app.dispositions(&[("noted", false), ("fixed", true)]).await;
    provision(&app, "a-1", "Ada Agent", "north").await;
    provision(&app, "a-2", "Ben Agent", "north").await;
    provision(&app, "a-3", "Cy Agent", "south").await;
    let customer = app
        .create_customer("Dora Customer", &["+1 415 555 0199"])
        .await
        .id;
    // a-1's softphone is open (and read) during the post-launch month; a-2's never is.
    let mut stream = log_in_and_watch(app.channel.clone(), "a-1").await;
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });

    // Baseline month, team north: 40 calls by a-1, waiting 30 or 50 s and talking 200 or 400 s.
    let (mut waits_before, mut handles_before) = (vec![], vec![]);
    for i in 0..40 {
        let (wait, talk) = if i % 2 == 0 { (30, 200) } else { (50, 400) };
        answered(
            &app,
            &format!("b{i}"),
            baseline + Duration::hours(24 + i),
            "a-1",
            wait,
            talk,
        )
        .await;
        waits_before.push(wait as f64);
        handles_before.push(talk as f64);
    }
    // Post-launch month: 40 calls, a-1 the even ones (5 s wait, 190 s talk), a-2 the odd ones
    // (15 s, 390 s): the answer got much faster, the handle time moved within its noise.
    let (mut waits, mut handles) = (vec![], vec![]);
    let at = |i: i64| post + Duration::hours(24 + i);
    for i in 0..40 {
        let (agent, wait, talk) = if i % 2 == 0 {
            ("a-1", 5, 190)
        } else {
            ("a-2", 15, 390)
        };
        answered(&app, &format!("p{i}"), at(i), agent, wait, talk).await;
        waits.push(wait as f64);
        handles.push(talk as f64);
    }
    // A call a-1 answers after 5 s and hands to a teammate, who resolves it: 180 s handled (the
    // 5 s ringing a-2 is transfer time, not talk).
    call(
        &app,
        "px",
        at(50),
        &[
            (Offered, 0, ""),
            (Ringing, 1, "a-1"),
            (Answered, 5, "a-1"),
            (Transferred, 65, "a-1"),
            (Answered, 70, "a-2"),
            (Ended, 190, ""),
        ],
    )
    .await;
    waits.push(5.0);
    handles.push(180.0);
    // Team south: three calls a-3 answers and never logs.
    for i in 0..3 {
        answered(&app, &format!("s{i}"), at(60 + i), "a-3", 10, 100).await;
    }

    // Adoption: a-1 logs every fourth call with a disposition, notes on every eighth; a case is
    // opened from p0 (a-1), updated at once and resolved by teammate a-2; another from p4 is
    // neither updated nor due yet, so its SLA is undecided.
    let from_call = open_case(&app, &customer, "case-p0", "a-1").await;
    let open_one = case_status(&app, from_call.clone(), v1::CaseStatus::Open, "a-1").await;
    case_status(&app, open_one, v1::CaseStatus::Resolved, "a-2").await;
    let undecided = open_case(&app, &customer, "case-p4", "a-1").await;
    for i in (0..40).step_by(4) {
        let notes = if i % 8 == 0 {
            "asked about the invoice"
        } else {
            ""
        };
        let case = match i {
            0 => from_call.id.as_str(),
            4 => undecided.id.as_str(),
            _ => "",
        };
        log(
            &app,
            &customer,
            &format!("p{i}"),
            "a-1",
            at(i),
            ("noted", notes, case),
        )
        .await;
    }
    let wrap = log(&app, &customer, "px", "a-2", at(50), ("fixed", "", "")).await;
    app.interactions()
        .complete_wrap_up(v1::CompleteWrapUpRequest {
            interaction_id: wrap,
            disposition_code: "fixed".into(),
            notes: String::new(),
        })
        .await
        .expect("wrapped up");

    // The feedback loop: a complaint (its case is resolved), a supplier's note resolved, a
    // shareholder's letter past its due date, and a staff suggestion still new.
    let desk = FeedbackServiceClient::new(app.channel.clone());
    let submit =
        |request_id: &str, source: v1::FeedbackSource, category: &str, sentiment: v1::Sentiment| {
            let mut desk = desk.clone();
            let request = v1::SubmitFeedbackRequest {
                request_id: request_id.into(),
                source: source.into(),
                sentiment: sentiment as i32,
                category: category.into(),
                text: "see the attached letter".into(),
                customer_id: match source {
                    v1::FeedbackSource::Customer => customer.clone(),
                    _ => String::new(),
                },
                ..Default::default()
            };
            async move {
                desk.submit_feedback(request)
                    .await
                    .expect("submitted")
                    .into_inner()
                    .feedback
                    .expect("feedback")
            }
        };
    use v1::FeedbackSource::{Customer, Internal, Shareholder, Supplier};
    use v1::Sentiment::{Negative, Neutral, Positive};
    let complaint = submit("f1", Customer, "billing", Negative).await;
    let supplier = submit("f2", Supplier, "delivery", Neutral).await;
    let shareholder = submit("f3", Shareholder, "strategy", Positive).await;
    submit("f4", Internal, "tools", Neutral).await;
    let complaint_case = app
        .cases()
        .get_case(v1::GetCaseRequest {
            id: complaint.case_id.clone(),
        })
        .await
        .expect("the complaint's case")
        .into_inner()
        .case
        .expect("case");
    let complaint_case = case_status(&app, complaint_case, v1::CaseStatus::Open, "sup-1").await;
    case_status(&app, complaint_case, v1::CaseStatus::Resolved, "sup-1").await;
    for (item, due) in [
        (&supplier, now + Duration::days(2)),
        (&shareholder, now - Duration::days(1)),
    ] {
        desk.clone()
            .triage_feedback(v1::TriageFeedbackRequest {
                id: item.id.clone(),
                owner: "office".into(),
                due_at: ts(due),
                actor: "sup-1".into(),
            })
            .await
            .expect("triaged");
    }
    for (status, resolution) in [
        (v1::FeedbackStatus::InProgress, ""),
        (v1::FeedbackStatus::Resolved, "changed the carrier"),
    ] {
        desk.clone()
            .update_feedback_status(v1::UpdateFeedbackStatusRequest {
                id: supplier.id.clone(),
                status: status.into(),
                resolution: resolution.into(),
                actor: "sup-1".into(),
            })
            .await
            .expect("moved");
    }

    let supervisor = ScorecardServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Supervisor, "sup-1", None),
    ));
    let request = v1::GetScorecardRequest {
        period: period(post, now + Duration::hours(1)),
        baseline_period: period(baseline, baseline + Duration::days(30)),
        group_by: v1::ScorecardGrouping::Team.into(),
    };
    // Pops are noted shortly after they are sent: a-1's 21 calls (its 20 and the transfer).
    let popped = eventually(std::time::Duration::from_secs(10), || {
        let (mut supervisor, request) = (supervisor.clone(), request);
        async move {
            let card = supervisor
                .get_scorecard(request)
                .await
                .expect("scorecard")
                .into_inner();
            share(
                &card
                    .total
                    .expect("total")
                    .adoption
                    .expect("adoption")
                    .pop_delivered,
            )
            .0 == 21
        }
    })
    .await;
    assert!(popped, "a-1's 21 pops were noted");
    reader.abort();
    let card = supervisor
        .clone()
        .get_scorecard(request)
        .await
        .expect("scorecard")
        .into_inner();
    assert!((card.confidence - (1.0 - 0.05 / 7.0)).abs() < 1e-12);
    let keys: Vec<&str> = card.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(keys, ["north", "south"]);
    let north = &card.groups[0];

    // Adoption, team north: 41 answered calls; a-1 got 21 pops; 11 calls have an interaction
    // (10 of a-1's and the transfer), all 11 a disposition, 5 notes; one case decided, in time.
    let a = north.adoption.as_ref().expect("adoption");
    assert_eq!(share(&a.pop_delivered), (21, 41));
    assert_eq!(share(&a.interaction_logged), (11, 41));
    assert_eq!(share(&a.disposition_set), (11, 41));
    assert_eq!(share(&a.notes_written), (5, 41));
    assert_eq!(share(&a.cases_updated_within_sla), (1, 1));
    let silent: Vec<(&str, &str, i64)> = a
        .silent_agents
        .iter()
        .map(|s| {
            (
                s.agent_id.as_str(),
                s.display_name.as_str(),
                s.calls_answered,
            )
        })
        .collect();
    assert_eq!(silent, [("a-2", "Ben Agent", 20)]);
    assert_eq!(a.silent_agent_count, 1);

    // Efficiency against the baseline, each against the hand-worked intervals.
    let e = north.efficiency.as_ref().expect("efficiency");
    check_mean(
        &e.average_speed_of_answer,
        &waits,
        &waits_before,
        v1::Verdict::Improved,
    );
    check_mean(
        &e.average_handle_time,
        &handles,
        &handles_before,
        v1::Verdict::NoClearChange,
    );
    // Every post-launch answer within 20 s, no baseline one: 41/41 against 0/40.
    check_share(&e.service_level, (41, 41), (0, 40), v1::Verdict::Improved);
    // One transfer in 41 answered calls against none in 40: noise.
    check_share(
        &e.transfer_rate,
        (1, 41),
        (0, 40),
        v1::Verdict::NoClearChange,
    );
    // No call has after-call work on either side: no change, and no interval around it.
    let acw = e.average_after_call_work.as_ref().expect("acw");
    assert_eq!((acw.value, acw.change), (Some(0.0), Some(0.0)));
    assert_eq!(acw.verdict(), v1::Verdict::NoClearChange);
    // No call is from a known customer: first-contact resolution has no base.
    let fcr = e.first_contact_resolution.as_ref().expect("fcr");
    assert_eq!((fcr.value, fcr.calls), (None, 0));
    assert_eq!(fcr.verdict(), v1::Verdict::InsufficientData);

    // Coordination: the transfer stayed in the team and was resolved; a-2 resolved a-1's case;
    // the agents' AHTs are a-1's (20 x 190 s + 180 s) / 21 and a-2's 390 s.
    let c = north.coordination.as_ref().expect("coordination");
    assert_eq!(share(&c.transfers_resolved_in_team), (1, 1));
    assert_eq!(share(&c.cases_resolved_by_teammate), (1, 1));
    let spread = c.handle_time_spread.as_ref().expect("spread");
    let ahts = [(20.0 * 190.0 + 180.0) / 21.0, 390.0];
    let mean = (ahts[0] + ahts[1]) / 2.0;
    assert_eq!(spread.agents, 2);
    close(spread.lowest, ahts[0]);
    close(spread.highest, ahts[1]);
    close(
        spread.coefficient_of_variation,
        (ahts[1] - ahts[0]) / 2.0 / mean,
    );
    // Individual figures come below the team's, for the supervisor.
    let agents: Vec<AgentRow> = north
        .agents
        .iter()
        .map(|f| {
            (
                f.agent_id.as_str(),
                f.calls_answered,
                share(&f.pop_delivered),
                share(&f.interaction_logged),
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            ("a-1", 21, (21, 21), (11, 21)),
            ("a-2", 20, (0, 20), (0, 20))
        ]
    );
    close(north.agents[1].average_handle_time, 390.0);

    // Team south: three calls, no baseline: no verdict; a-3 logged nothing.
    let south = &card.groups[1];
    let south_aht = south
        .efficiency
        .as_ref()
        .and_then(|e| e.average_handle_time.as_ref());
    assert_eq!(
        south_aht.map(|c| (c.value, c.verdict())),
        Some((Some(100.0), v1::Verdict::InsufficientData))
    );
    assert_eq!(
        south.adoption.as_ref().map(|a| a.silent_agent_count),
        Some(1)
    );

    // The total: 44 answered calls, both silent agents.
    let total = card.total.as_ref().expect("total");
    let ta = total.adoption.as_ref().expect("adoption");
    assert_eq!(share(&ta.interaction_logged), (11, 44));
    let names: Vec<&str> = ta
        .silent_agents
        .iter()
        .map(|s| s.agent_id.as_str())
        .collect();
    assert_eq!(names, ["a-2", "a-3"]);

    // The feedback loop: four items, one resolved, one past due, the complaint's case resolved.
    let f = card.feedback.as_ref().expect("feedback");
    let counts: Vec<(v1::FeedbackSource, &str, i64, i64, i64)> = f
        .by_source_and_category
        .iter()
        .map(|c| {
            (
                c.source(),
                c.category.as_str(),
                c.items,
                c.resolved,
                c.past_due,
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            (Customer, "billing", 1, 0, 0),
            (Supplier, "delivery", 1, 1, 0),
            (Shareholder, "strategy", 1, 0, 1),
            (Internal, "tools", 1, 0, 0),
        ]
    );
    assert_eq!(share(&f.resolved), (1, 4));
    assert_eq!(f.past_due, 1);
    assert_eq!(share(&f.negative_with_case_resolved), (1, 1));
    let median = f.median_hours_to_resolution.expect("a median");
    assert!(median > 0.0 && median < 1.0 / 60.0, "{median} h");

    // An ADMIN reads the team figures and counts, not who.
    let admin = ScorecardServiceClient::new(app.channel.clone())
        .get_scorecard(request)
        .await
        .expect("admin scorecard")
        .into_inner();
    let admin_total = admin
        .total
        .as_ref()
        .and_then(|t| t.adoption.as_ref())
        .expect("adoption");
    assert_eq!(
        (
            admin_total.silent_agent_count,
            admin_total.silent_agents.len()
        ),
        (2, 0)
    );
    assert!(admin.groups.iter().all(|g| g.agents.is_empty()));

    // By queue: one queue, every call; no coordination (a team figure).
    let by_queue = supervisor
        .clone()
        .get_scorecard(v1::GetScorecardRequest {
            group_by: v1::ScorecardGrouping::Queue.into(),
            ..request
        })
        .await
        .expect("by queue")
        .into_inner();
    let sales = &by_queue.groups[..];
    assert_eq!(sales.len(), 1);
    assert_eq!(sales[0].key, "sales");
    assert_eq!(
        share(
            &sales[0]
                .adoption
                .as_ref()
                .expect("adoption")
                .interaction_logged
        ),
        (11, 44)
    );
    assert!(sales[0].coordination.is_none());
}

#[tokio::test]
async fn the_scorecard_is_for_managers_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let now = Utc::now();
    let request = v1::GetScorecardRequest {
        period: period(now - Duration::days(7), now),
        baseline_period: period(now - Duration::days(14), now - Duration::days(7)),
        group_by: v1::ScorecardGrouping::Team.into(),
    };
    for role in [Role::Agent, Role::Service, Role::Gateway] {
        let denied = ScorecardServiceClient::new(authed(
            app.raw_channel.clone(),
            &token(role, "someone", Some(GATEWAY)),
        ))
        .get_scorecard(request)
        .await
        .expect_err("denied");
        assert_eq!(denied.code(), Code::PermissionDenied, "{role:?}");
    }
    let mut supervisor = ScorecardServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Supervisor, "sup-1", None),
    ));
    let empty = supervisor
        .get_scorecard(request)
        .await
        .expect("an empty scorecard")
        .into_inner();
    assert!(empty.groups.is_empty());
    let aht = empty
        .total
        .and_then(|t| t.efficiency)
        .and_then(|e| e.average_handle_time);
    assert_eq!(
        aht.map(|c| c.verdict()),
        Some(v1::Verdict::InsufficientData)
    );

    let bad = supervisor
        .get_scorecard(v1::GetScorecardRequest {
            period: period(now, now - Duration::days(1)),
            baseline_period: None,
            group_by: 9,
        })
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&bad),
        ["period", "baseline_period", "group_by"]
    );
}

/// First-contact resolution and repeat contacts, on calls from known customers: before the launch
/// every customer called twice within the week and no wrap-up resolved anything (FCR 0 of 60,
/// repeats 30 of 60); after it, each called once and was resolved (FCR 30 of 30, no repeat).
#[tokio::test]
async fn first_contact_resolution_and_repeats_are_judged_on_known_customers_calls() {
    let app = spawn_app().await;
    let now = Utc::now().trunc_subsecs(0);
    let (post, baseline) = (now - Duration::days(30), now - Duration::days(90));
    app.dispositions(&[("noted", false), ("fixed", true)]).await;
    provision(&app, "a-1", "Ada Agent", "north").await;
    // 60 customers, each with one number: the first 30 call before the launch, the rest after.
    let mut customers = Vec::new();
    for i in 0..60 {
        let number = format!("+1 212 555 01{i:02}");
        let customer = app
            .create_customer(&format!("Customer {i}"), &[&number])
            .await;
        customers.push((number, customer.id));
    }
    let mut n = 0;
    let mut answered_and_wrapped = |i: usize, at: DateTime<Utc>, code: &'static str| {
        n += 1;
        let (app, id, (number, customer)) = (&app, format!("k{n}"), customers[i].clone());
        async move {
            let steps = [
                (Offered, 0, ""),
                (Ringing, 1, "a-1"),
                (Answered, 8, "a-1"),
                (Ended, 128, ""),
            ];
            call_from(app, &id, &number, at, &steps).await;
            let interaction = log(app, &customer, &id, "a-1", at, (code, "", "")).await;
            app.interactions()
                .complete_wrap_up(v1::CompleteWrapUpRequest {
                    interaction_id: interaction,
                    disposition_code: code.into(),
                    notes: String::new(),
                })
                .await
                .expect("wrapped up");
        }
    };
    for i in 0..30 {
        let first = baseline + Duration::hours(24 + 4 * i as i64);
        answered_and_wrapped(i, first, "noted").await;
        answered_and_wrapped(i, first + Duration::days(2), "noted").await;
    }
    for i in 30..60 {
        let at = post + Duration::hours(24 + 4 * (i as i64 - 30));
        answered_and_wrapped(i, at, "fixed").await;
    }
    let efficiency = |end: DateTime<Utc>| {
        let mut client = ScorecardServiceClient::new(app.channel.clone());
        async move {
            client
                .get_scorecard(v1::GetScorecardRequest {
                    period: period(post, end),
                    baseline_period: period(baseline, baseline + Duration::days(30)),
                    group_by: v1::ScorecardGrouping::Team.into(),
                })
                .await
                .expect("scorecard")
                .into_inner()
                .total
                .and_then(|t| t.efficiency)
                .expect("efficiency")
        }
    };
    // The period ended more than the repeat window (7 days) ago: its repeats are all in.
    let e = efficiency(now - Duration::days(8)).await;
    check_share(
        &e.first_contact_resolution,
        (30, 30),
        (0, 60),
        v1::Verdict::Improved,
    );
    check_share(
        &e.repeat_contact_rate,
        (0, 30),
        (30, 60),
        v1::Verdict::Improved,
    );
    // Ending now, the same calls may still be followed by repeats: no verdict yet.
    let e = efficiency(now).await;
    check_share(
        &e.first_contact_resolution,
        (30, 30),
        (0, 60),
        v1::Verdict::Provisional,
    );
    check_share(
        &e.repeat_contact_rate,
        (0, 30),
        (30, 60),
        v1::Verdict::Provisional,
    );
}
