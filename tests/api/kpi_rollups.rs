//! Daily KPI rollups (docs/KPIS.md, "Rollups"): GetKpis over whole closed days reads them, and
//! gives what the scan gives, for every KPI and grouping, on three days of calls that cross
//! midnight, repeat across days, convert, and carry wrap-ups, scores and agent time.

use chrono::{DateTime, Days, Duration, NaiveDate, Utc};
use switchboard::proto::v1;
use switchboard::proto::v1::CallEventType::*;

use crate::analytics::{
    ANSWERED_BY_A1, call_dialing, call_from, complete_wrap_up, interaction_ended, kpis, period,
    scored, set_team, state_history, ts,
};
use crate::calls::log_in;
use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with};

const CAMPAIGN_NUMBER: &str = "+14155550199";

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// These tests name today and yesterday: started in the last minute before midnight (UTC), one
/// waits for the new day first.
async fn clear_of_midnight() {
    let to_midnight = midnight(Utc::now().date_naive() + Days::new(1)) - Utc::now();
    if to_midnight < Duration::minutes(1) {
        let wait = to_midnight + Duration::seconds(1);
        tokio::time::sleep(wait.to_std().expect("positive")).await;
    }
}

/// The KPI requests compared: every grouping over whole days, and over partial days with a
/// baseline, with a queue filter and with an agent filter. (Today's agent time grows while the
/// test runs, so today is compared apart.)
fn requests(d1: NaiveDate, zone: &str) -> Vec<v1::GetKpisRequest> {
    let start = midnight(d1);
    let whole = period(start, midnight(Utc::now().date_naive()));
    let partial = period(
        start + Duration::hours(6),
        start + Duration::days(2) + Duration::hours(20),
    );
    let baseline = period(start - Duration::days(7), start + Duration::days(1));
    let mut requests = Vec::new();
    for grouping in [
        v1::KpiGrouping::Unspecified,
        v1::KpiGrouping::Queue,
        v1::KpiGrouping::Agent,
        v1::KpiGrouping::Team,
        v1::KpiGrouping::Campaign,
        v1::KpiGrouping::Day,
        v1::KpiGrouping::Month,
    ] {
        requests.push(v1::GetKpisRequest {
            period: whole,
            group_by: grouping.into(),
            ..Default::default()
        });
        requests.push(v1::GetKpisRequest {
            period: partial,
            baseline_period: baseline,
            group_by: grouping.into(),
            ..Default::default()
        });
    }
    requests.push(v1::GetKpisRequest {
        period: whole,
        group_by: v1::KpiGrouping::Agent.into(),
        queues: vec!["billing".into()],
        ..Default::default()
    });
    requests.push(v1::GetKpisRequest {
        period: whole,
        group_by: v1::KpiGrouping::Day.into(),
        agents: vec!["a-1".into()],
        ..Default::default()
    });
    for request in &mut requests {
        request.time_zone = zone.into();
    }
    requests
}

async fn answers(app: &TestApp, d1: NaiveDate, zone: &str) -> Vec<v1::GetKpisResponse> {
    let mut answers = Vec::new();
    for request in requests(d1, zone) {
        answers.push(kpis(app, request).await);
    }
    answers
}

/// Whether two answers agree: the same text, with every number equal to within a relative 1e-9
/// (sums of milliseconds added in another order).
fn agree(a: &v1::GetKpisResponse, b: &v1::GetKpisResponse) -> bool {
    let (a, b) = (format!("{a:?}"), format!("{b:?}"));
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (ta, tb) = (split(&a), split(&b));
    ta.len() == tb.len()
        && ta
            .iter()
            .zip(&tb)
            .all(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                _ => x == y,
            })
}

async fn noted_closed_days(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM kpi_rollup_notes WHERE day < kpi_day(now())")
        .fetch_one(&app.db)
        .await
        .expect("notes")
}

/// The answers with every closed day scanned: each noted, while the rollup pass is held off.
async fn scanned(app: &TestApp, d1: NaiveDate, zone: &str) -> Vec<v1::GetKpisResponse> {
    let mut held = app.db.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(switchboard::analytics::ROLLUP_LOCK)
        .execute(&mut *held)
        .await
        .expect("rollups held off");
    sqlx::query(
        "INSERT INTO kpi_rollup_notes (day) \
         SELECT d::date FROM generate_series($1::date - 8, kpi_day(now()) - 1, interval '1 day') d",
    )
    .bind(d1)
    .execute(&app.db)
    .await
    .expect("noted");
    let answers = answers(app, d1, zone).await;
    held.rollback().await.expect("released");
    answers
}

/// Every request's answer scanned, then from the rollups: the same. Returns the latter.
async fn scanned_then_rolled(app: &TestApp, d1: NaiveDate, zone: &str) -> Vec<v1::GetKpisResponse> {
    let scan = scanned(app, d1, zone).await;
    rolled_up(app).await;
    let rolled = answers(app, d1, zone).await;
    assert_eq!(scan.len(), rolled.len());
    for (n, (scan, rolled)) in scan.iter().zip(&rolled).enumerate() {
        assert!(
            agree(scan, rolled),
            "request {n}: {:?}\nscan:   {scan:?}\nrolled: {rolled:?}",
            requests(d1, zone)[n]
        );
    }
    rolled
}

/// Adds `offered` to the rollup row of `day`'s sales calls, in place.
async fn tamper(app: &TestApp, day: NaiveDate, offered: i64) {
    sqlx::query(
        "UPDATE kpi_call_rollups SET offered = offered + $2 WHERE day = $1 AND queue = 'sales'",
    )
    .bind(day)
    .bind(offered)
    .execute(&app.db)
    .await
    .expect("tampered");
}

async fn rolled_up(app: &TestApp) {
    switchboard::analytics::catch_up_rollups(&app.db)
        .await
        .expect("rolled up");
    assert_eq!(noted_closed_days(app).await, 0);
}

fn total(response: &v1::GetKpisResponse) -> &v1::Kpis {
    response
        .total
        .as_ref()
        .and_then(|t| t.kpis.as_ref())
        .expect("total")
}

fn value(kpi: &Option<v1::KpiValue>) -> Option<f64> {
    kpi.as_ref().and_then(|k| k.value)
}

/// Three closed days of calls, scores, wrap-ups, attempts and agent time, and a call today.
async fn three_days(app: &TestApp, d1: NaiveDate) {
    for agent in ["a-1", "a-2"] {
        log_in(app, agent).await;
    }
    set_team(app, "a-1", "north").await;
    set_team(app, "a-2", "south").await;
    app.dispositions(&[("resolved", true), ("callback", false)])
        .await;
    let ada = app.create_customer("Ada", &["(415) 555-0121"]).await;
    let bob = app.create_customer("Bob", &["(415) 555-0122"]).await;
    let cy = app.create_customer("Cy", &["(415) 555-0123"]).await;
    let campaign = crate::campaigns::create(
        app,
        v1::Campaign {
            name: "Spring".into(),
            channel: v1::CampaignChannel::InboundCall.into(),
            status: v1::CampaignStatus::Active.into(),
            starts_at: ts(midnight(d1) - Duration::days(1)),
            ends_at: ts(midnight(d1) + Duration::days(30)),
            dialed_numbers: vec![CAMPAIGN_NUMBER.into()],
            calling_window: Some(v1::CallingWindow {
                start_minute: 0,
                end_minute: 1440,
            }),
            ..Default::default()
        },
    )
    .await;
    let at = |day: u64, h: i64, m: i64| {
        midnight(d1 + Days::new(day)) + Duration::hours(h) + Duration::minutes(m)
    };
    let handled = |agent: &'static str| {
        [
            (Offered, 0, ""),
            (Queued, 0, ""),
            (Ringing, 2, agent),
            (Answered, 8, agent),
            (Held, 30, agent),
            (Resumed, 40, agent),
            (Ended, 200, ""),
        ]
    };
    let ada_n = "(415) 555-0121";
    let bob_n = "(415) 555-0122";
    let other = "(415) 555-0100";
    // Day 1: Ada handled (and calls again on day 2: a repeat across days), an abandon, a short
    // abandon, and a call answered after midnight.
    call_dialing(
        app,
        "A1",
        ada_n,
        "",
        at(0, 10, 0),
        "billing",
        &handled("a-1"),
    )
    .await;
    let abandon = [(Offered, 0, ""), (Queued, 0, ""), (Abandoned, 30, "")];
    call_dialing(app, "B1", other, "", at(0, 11, 0), "billing", &abandon).await;
    let short = [(Offered, 0, ""), (Queued, 0, ""), (Abandoned, 3, "")];
    call_dialing(app, "S1", other, "", at(0, 12, 0), "sales", &short).await;
    let late = [
        (Offered, 0, ""),
        (Queued, 0, ""),
        (Ringing, 20, "a-2"),
        (Answered, 40, "a-2"),
        (Ended, 160, ""),
    ];
    call_dialing(app, "M1", other, "", at(0, 23, 59), "billing", &late).await;
    // Day 2: Ada again, to the campaign's number, transferred; an IVR hang-up.
    let transferred = [
        (Offered, 0, ""),
        (Queued, 0, ""),
        (Ringing, 2, "a-1"),
        (Answered, 6, "a-1"),
        (Transferred, 60, "a-1"),
        (Answered, 70, "a-2"),
        (Ended, 300, ""),
    ];
    let campaign_call = |id: &'static str, d, h, steps| async move {
        call_dialing(app, id, ada_n, CAMPAIGN_NUMBER, at(d, h, 0), "sales", steps).await;
    };
    campaign_call("A2", 1, 9, &transferred[..]).await;
    let ivr = [(Offered, 0, ""), (Ended, 40, "")];
    call_dialing(app, "H1", other, "", at(1, 10, 0), "", &ivr).await;
    // Day 3: Bob to the campaign's number, and a call still connected.
    let bob_call = handled("a-1");
    call_dialing(
        app,
        "B2",
        bob_n,
        CAMPAIGN_NUMBER,
        at(2, 15, 0),
        "sales",
        &bob_call,
    )
    .await;
    call_dialing(
        app,
        "Y1",
        "(415) 555-0123",
        "",
        at(2, 16, 0),
        "sales",
        &bob_call,
    )
    .await;
    let connected = [(Offered, 0, ""), (Queued, 0, ""), (Answered, 12, "a-2")];
    call_dialing(app, "C1", other, "", at(2, 18, 0), "billing", &connected).await;
    // Today.
    let now = Utc::now() - Duration::minutes(2);
    call_dialing(app, "T1", other, "", now, "billing", &abandon).await;

    // Wrap-ups: resolved on A1 and B2, a call-back on M1.
    for (customer, call, agent, code) in [
        (&ada, "A1", "a-1", "resolved"),
        (&bob, "M1", "a-2", "callback"),
        (&bob, "B2", "a-1", "resolved"),
    ] {
        let interaction = interaction_ended(app, customer, call, agent, Duration::minutes(5)).await;
        complete_wrap_up(app, interaction, code).await;
    }
    // Cy's only interaction started two days before Cy's call: too early to be the call's (over
    // a day before its offer), whichever days the period covers.
    let early = Utc::now() - at(0, 12, 1);
    let interaction = interaction_ended(app, &cy, "Y1", "a-1", early).await;
    complete_wrap_up(app, interaction, "resolved").await;
    // Scores on A1 (CSAT 5) and B2 (NPS 9, CSAT 2).
    for (n, (call, kind)) in [
        ("A1", v1::score::Kind::Csat(5)),
        ("B2", v1::score::Kind::Nps(9)),
        ("B2", v1::score::Kind::Csat(2)),
    ]
    .into_iter()
    .enumerate()
    {
        scored(app, &format!("s-{n}"), call, kind).await;
    }
    // Outbound attempts: a conversion and a decline on day 2, no answer on day 3.
    for (n, (agent, outcome, when)) in [
        ("a-1", "converted", at(1, 14, 0)),
        ("a-1", "declined", at(1, 15, 0)),
        ("a-2", "no_answer", at(2, 9, 0)),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO campaign_attempts (lease_id, campaign_id, customer_id, agent_id, \
               outcome, member_state, attempts, at) \
             VALUES ($1, $2::uuid, $3::uuid, $4, $5, 'done', 1, $6)",
        )
        .bind(uuid::Uuid::from_u128(n as u128 + 1))
        .bind(&campaign.id)
        .bind(&ada.id)
        .bind(agent)
        .bind(outcome)
        .bind(when)
        .execute(&app.db)
        .await
        .expect("attempt stored");
    }
    // Agent time: a-1 ready on day 1 and busy across midnight into day 2; a-2 on days 2 and 3.
    state_history(
        app,
        &[
            ("a-1", "available", at(0, 8, 0)),
            ("a-1", "busy", at(0, 22, 0)),
            ("a-1", "available", at(1, 2, 0)),
            ("a-1", "away", at(1, 17, 0)),
            ("a-2", "available", at(1, 8, 0)),
            ("a-2", "after_call_work", at(2, 12, 0)),
            ("a-2", "offline", at(2, 20, 0)),
        ],
    )
    .await;
}

#[tokio::test]
async fn kpis_over_rolled_up_days_equal_the_scan_for_every_kpi_and_grouping() {
    clear_of_midnight().await;
    let app = spawn_app().await;
    let d1 = Utc::now().date_naive() - Days::new(4);
    three_days(&app, d1).await;

    let rolled = scanned_then_rolled(&app, d1, "").await;
    let rolled_days: Vec<NaiveDate> =
        sqlx::query_scalar("SELECT day FROM kpi_rollup_days WHERE day >= $1 ORDER BY day")
            .bind(d1)
            .fetch_all(&app.db)
            .await
            .expect("rolled days");
    assert_eq!(
        rolled_days,
        (0..4).map(|n| d1 + Days::new(n)).collect::<Vec<_>>(),
        "every closed day since the first call, up to yesterday"
    );

    // The data are not trivial: every kind of call, score, attempt and agent time is in.
    let whole = total(&rolled[0]);
    assert_eq!(value(&whole.offered), Some(9.0));
    assert_eq!(value(&whole.abandoned), Some(2.0));
    assert_eq!(value(&whole.short_abandoned), Some(1.0));
    assert_eq!(value(&whole.self_service), Some(1.0));
    assert_eq!(value(&whole.in_progress), Some(1.0));
    assert_eq!(
        value(&whole.transfer_rate),
        Some(1.0 / 6.0),
        "A2 of six answered"
    );
    // Known handled: A1, A2, B2 and Y1. A1 is repeated the next day; B2 resolves Bob's first
    // call; Y1 has no interaction of its own.
    assert_eq!(value(&whole.repeat_contact_rate), Some(0.25));
    assert_eq!(value(&whole.first_contact_resolution), Some(0.25));
    assert_eq!(value(&whole.csat), Some(3.5));
    assert_eq!(value(&whole.nps), Some(100.0));
    assert_eq!(value(&whole.conversion_rate), Some(0.5));
    assert!(value(&whole.occupancy).is_some_and(|o| o > 0.0 && o < 1.0));
    // Today is scanned, and adds to the rolled-up days.
    let with_today = v1::GetKpisRequest {
        period: period(midnight(d1), Utc::now() + Duration::hours(1)),
        ..Default::default()
    };
    let with_today = kpis(&app, with_today).await;
    assert_eq!(value(&total(&with_today).offered), Some(10.0));
    assert_eq!(value(&total(&with_today).abandoned), Some(3.0));
    let months: Vec<&str> = rolled[12].groups.iter().map(|g| g.key.as_str()).collect();
    let mut expected: Vec<String> = (0..3)
        .map(|n| (d1 + Days::new(n)).format("%Y-%m").to_string())
        .collect();
    expected.dedup();
    assert_eq!(months, expected, "by month, keyed YYYY-MM");
    let campaigns = &rolled[8].groups;
    assert_eq!(campaigns.len(), 2, "the campaign's calls, and the rest");

    // The rolled-up days are read from the rollups: a change made to them in place shows.
    tamper(&app, d1, 1000).await;
    let tampered = kpis(&app, requests(d1, "").swap_remove(0)).await;
    assert_eq!(value(&total(&tampered).offered), Some(1009.0));
    tamper(&app, d1, -1000).await;

    // A score left now on a day-3 call shows at once (the day is scanned until it is rolled up
    // again), and the same after the pass.
    scored(&app, "s-late", "B2", v1::score::Kind::Csat(5)).await;
    let at_once = kpis(&app, requests(d1, "").swap_remove(0)).await;
    assert_eq!(value(&total(&at_once).csat), Some(4.0), "(5 + 2 + 5) / 3");
    rolled_up(&app).await;
    let after = kpis(&app, requests(d1, "").swap_remove(0)).await;
    assert!(agree(&at_once, &after), "{at_once:?}\n{after:?}");
}

async fn notes_on(app: &TestApp, day: NaiveDate) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM kpi_rollup_notes WHERE day = $1")
        .bind(day)
        .fetch_one(&app.db)
        .await
        .expect("notes")
}

/// How long the last rollup of `day` took, in seconds.
async fn took(app: &TestApp, day: NaiveDate) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM took)::float8 FROM kpi_rollup_days WHERE day = $1",
    )
    .bind(day)
    .fetch_one(&app.db)
    .await
    .expect("took")
}

async fn rolled(app: &TestApp, day: NaiveDate) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM kpi_rollup_days WHERE day = $1)")
        .bind(day)
        .fetch_one(&app.db)
        .await
        .expect("rolled days")
}

/// Today's writes note nothing (today is never rolled up), a write to a closed day notes it,
/// and a day that just closed is rolled up only once every transaction older than the barrier
/// the pass took after midnight has ended: such a transaction may have written it unnoted.
#[tokio::test]
async fn a_day_that_just_closed_waits_for_the_transactions_that_began_before() {
    clear_of_midnight().await;
    let app = spawn_app().await;
    let today = Utc::now().date_naive();
    let yesterday = today - Days::new(1);
    let abandon = [(Offered, 0, ""), (Queued, 0, ""), (Abandoned, 30, "")];
    let now = Utc::now();
    call_dialing(&app, "T1", "(415) 555-0100", "", now, "billing", &abandon).await;
    assert_eq!(notes_on(&app, now.date_naive()).await, 0, "today's call");
    let before = midnight(today) - Duration::hours(2);
    call_dialing(
        &app,
        "Y1",
        "(415) 555-0100",
        "",
        before,
        "billing",
        &abandon,
    )
    .await;
    assert!(notes_on(&app, yesterday).await > 0, "yesterday's call");

    // As if yesterday had just closed: it is not yet safe.
    sqlx::query("UPDATE kpi_rollup_state SET safe_through = $1")
        .bind(yesterday - Days::new(1))
        .execute(&app.db)
        .await
        .expect("state");
    // A transaction that wrote (it has an id) and has not ended.
    let mut open = app.db.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .expect("an id");
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(1500),
        switchboard::analytics::catch_up_rollups(&app.db),
    )
    .await;
    assert!(waited.is_err(), "the pass waits for the open transaction");
    assert!(!rolled(&app, yesterday).await);
    let yesterdays = v1::GetKpisRequest {
        period: period(midnight(yesterday), midnight(today)),
        ..Default::default()
    };
    let scanned = kpis(&app, yesterdays.clone()).await;
    assert_eq!(value(&total(&scanned).offered), Some(1.0), "read by a scan");

    open.commit().await.expect("ended");
    rolled_up(&app).await;
    assert!(rolled(&app, yesterday).await);
    let from_rollup = kpis(&app, yesterdays).await;
    assert!(
        agree(&scanned, &from_rollup),
        "{scanned:?}\n{from_rollup:?}"
    );
}

/// The same, with the rollups cut in New York's days: totals, and days and months asked for in
/// New York, read them; the scan agrees.
#[tokio::test]
async fn rollups_in_a_deployments_time_zone_serve_its_days() {
    clear_of_midnight().await;
    let zone = "America/New_York";
    let app = spawn_app_with(TestOptions {
        kpi_time_zone: zone.into(),
        ..TestOptions::default()
    })
    .await;
    let d1 = Utc::now().date_naive() - Days::new(4);
    three_days(&app, d1).await;
    let rolled = scanned_then_rolled(&app, d1, zone).await;
    let days: Vec<&str> = rolled[10].groups.iter().map(|g| g.key.as_str()).collect();
    // The calls of d1 from 10:00 to 23:59 UTC are on d1 in New York too; day 3's up to 18:00.
    let expected: Vec<String> = (0..3)
        .map(|n| (d1 + Days::new(n)).format("%Y-%m-%d").to_string())
        .collect();
    assert_eq!(days, expected);
    // Days asked for in New York are read from its rollups.
    let by_day = requests(d1, zone).swap_remove(10);
    let before = kpis(&app, by_day.clone()).await;
    tamper(&app, d1, 1000).await;
    let after = kpis(&app, by_day).await;
    assert_eq!(
        value(&total(&after).offered),
        value(&total(&before).offered).map(|n| n + 1000.0)
    );
    // Asked for in another zone, days are scanned: the change in place does not show.
    let in_utc = requests(d1, "UTC").swap_remove(10);
    let scanned = kpis(&app, in_utc).await;
    assert!(value(&total(&scanned).offered).is_some_and(|n| n < 1000.0));

    // An instance started with UTC instead: every rollup is dropped (the change in place with
    // it), and the days are rolled up again in UTC, where they answer as the scan.
    switchboard::analytics::apply_rollup_zone(&app.db, "UTC")
        .await
        .expect("zone changed");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi_call_rollups")
        .fetch_one(&app.db)
        .await
        .expect("rows");
    assert_eq!(rows, 0);
    let rolled = scanned_then_rolled(&app, d1, "UTC").await;
    assert_eq!(value(&total(&rolled[0]).offered), Some(9.0));
}

/// A rolled-up day that changes again is recounted by the background pass only once
/// `RECOUNT_SPACING` times its last rollup's duration has passed (a catch-up does not wait).
/// Meanwhile reads scan it and show the change. The change is the everyday one: a customer who
/// calls again today makes yesterday's call a repeat.
#[tokio::test]
async fn a_changed_day_waits_its_spacing_for_the_recount_and_is_scanned_meanwhile() {
    clear_of_midnight().await;
    let app = spawn_app().await;
    log_in(&app, "a-1").await;
    let today = Utc::now().date_naive();
    let yesterday = today - Days::new(1);
    app.create_customer("Ada", &["(415) 555-0121"]).await;
    let late = midnight(today) - Duration::hours(2);
    call_from(
        &app,
        "Y1",
        "(415) 555-0121",
        late,
        "billing",
        ANSWERED_BY_A1,
    )
    .await;
    rolled_up(&app).await;
    let yesterdays = v1::GetKpisRequest {
        period: period(midnight(yesterday), midnight(today)),
        ..Default::default()
    };
    let repeats = |r: &v1::GetKpisResponse| value(&total(r).repeat_contact_rate);
    assert_eq!(repeats(&kpis(&app, yesterdays.clone()).await), Some(0.0));

    // As if yesterday's rollup had taken a minute: its next recount is due an hour after it.
    sqlx::query("UPDATE kpi_rollup_days SET took = interval '1 minute' WHERE day = $1")
        .bind(yesterday)
        .execute(&app.db)
        .await
        .expect("took a minute");
    call_from(
        &app,
        "T1",
        "(415) 555-0121",
        Utc::now(),
        "billing",
        ANSWERED_BY_A1,
    )
    .await;
    // The read catches the chain stamper up, which restamps Y1 and notes yesterday.
    assert_eq!(
        repeats(&kpis(&app, yesterdays.clone()).await),
        Some(1.0),
        "a scan"
    );
    assert!(notes_on(&app, yesterday).await > 0, "noted");

    let (_stop, halt) = tokio::sync::watch::channel(false);
    switchboard::analytics::roll_up_due_days(&app.db, &halt)
        .await
        .expect("a pass");
    assert!(notes_on(&app, yesterday).await > 0, "not yet due");
    assert_eq!(took(&app, yesterday).await, 60.0);
    assert_eq!(
        repeats(&kpis(&app, yesterdays.clone()).await),
        Some(1.0),
        "still a scan"
    );

    // An hour and a second later, it is due.
    sqlx::query("UPDATE kpi_rollup_days SET rolled_at = now() - interval '3601 s' WHERE day = $1")
        .bind(yesterday)
        .execute(&app.db)
        .await
        .expect("an hour ago");
    switchboard::analytics::roll_up_due_days(&app.db, &halt)
        .await
        .expect("a pass");
    assert_eq!(notes_on(&app, yesterday).await, 0, "recounted");
    let recounted = took(&app, yesterday).await;
    assert!(recounted < 60.0, "what the recount took: {recounted} s");
    assert_eq!(
        repeats(&kpis(&app, yesterdays).await),
        Some(1.0),
        "from the rollup"
    );
}
