//! Calls and call events by month (docs/SCALING.md step 2, "Partitioned history"): `calls` and
//! `call_events` converted from an existing database without losing a row, ingest still finding
//! old resends, old calls and their histories, an event id and a call id each naming one thing
//! within a day, KPIs reading only the months they cover, and retention dropping whole months.

use chrono::{DateTime, Months, TimeDelta, Utc};
use sqlx::PgPool;
use switchboard::history::{Table, month_of};
use switchboard::proto::v1;
use tokio::process::Command;

use crate::calls::report;
use crate::helpers::{TestOptions, database_at_migration, spawn_app, spawn_app_with};

/// The last migration before call_events and calls were partitioned.
const BEFORE_PARTITIONING: i64 = 20261207000036;
const GATEWAY: &str = "pbx-1";

fn event(
    call_id: &str,
    n: u32,
    kind: v1::CallEventType,
    agent: &str,
    at: DateTime<Utc>,
) -> v1::CallEvent {
    let mut event = v1::CallEvent {
        gateway_id: GATEWAY.into(),
        event_id: format!("{call_id}-{n}"),
        call_id: call_id.into(),
        r#type: kind.into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: 0,
        }),
        agent_id: agent.into(),
        ..Default::default()
    };
    if kind == v1::CallEventType::Offered {
        event.caller_number = "+14155550100".into();
        event.dialed_number = "+18005550199".into();
        event.queue = "billing".into();
    }
    event
}

/// Every call event as text, in key order: what the conversion must keep exactly.
async fn event_rows(db: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws('|', gateway_id, event_id, call_id, type, occurred_at, sequence, \
                caller_number, dialed_number, queue, agent_id, target_agent_id, target_queue, \
                attached_data, outcome, reason, received_at, encode(payload_hash, 'hex')) \
         FROM call_events ORDER BY gateway_id, event_id, occurred_at",
    )
    .fetch_all(db)
    .await
    .expect("event rows")
}

/// Every call as text, in key order.
async fn call_rows(db: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws('|', gateway_id, call_id, state, outcome, caller_number, dialed_number, \
                queue, current_agent, on_call_agents, handled_by, transfers, offered_at, queued_at, \
                answered_at, ended_at, hold_ms, customer_id, event_count, updated_at, \
                next_offered_at, team, last_event_at, prev_offered_at, transfer_ring_ms, \
                requeue_wait_ms) \
         FROM calls ORDER BY gateway_id, call_id, offered_at",
    )
    .fetch_all(db)
    .await
    .expect("call rows")
}

#[derive(sqlx::FromRow, Debug, PartialEq)]
struct Call {
    state: String,
    event_count: i32,
    offered_at: DateTime<Utc>,
    last_event_at: DateTime<Utc>,
}

async fn call(db: &PgPool, call_id: &str) -> Call {
    sqlx::query_as(
        "SELECT state, event_count, offered_at, last_event_at FROM calls \
         WHERE gateway_id = $1 AND call_id = $2",
    )
    .bind(GATEWAY)
    .bind(call_id)
    .fetch_one(db)
    .await
    .expect("call")
}

/// A database at the last migration before partitioning, as that release wrote it: 28 calls, one
/// every 15 days over fourteen months (the even ones ended, the odd ones still connected, as a
/// lost ENDED leaves them), a rejected event, and a call recorded before migration 25 whose
/// `last_event_at` (from its state times) is earlier than its last event, a HELD.
async fn database_before_partitioning() -> (String, PgPool) {
    let (url, db) = database_at_migration(BEFORE_PARTITIONING).await;
    sqlx::query(
        "INSERT INTO calls (gateway_id, call_id, state, outcome, caller_number, dialed_number, queue, \
                            current_agent, on_call_agents, handled_by, offered_at, answered_at, \
                            ended_at, event_count, last_event_at) \
         SELECT 'pbx-1', 'old-' || g, CASE WHEN g % 2 = 0 THEN 'ended' ELSE 'connected' END, \
                CASE WHEN g % 2 = 0 THEN 'completed' ELSE 'in_progress' END, '+14155550100', \
                '+18005550199', 'billing', CASE WHEN g % 2 = 1 THEN 'a-1' END, \
                CASE WHEN g % 2 = 1 THEN ARRAY['a-1'] ELSE '{}' END, ARRAY['a-1'], t, \
                t + interval '10 s', CASE WHEN g % 2 = 0 THEN t + interval '60 s' END, \
                CASE WHEN g % 2 = 0 THEN 4 ELSE 3 END, \
                t + CASE WHEN g % 2 = 0 THEN interval '60 s' ELSE interval '10 s' END \
         FROM generate_series(0, 27) g, \
              LATERAL (SELECT date_trunc('second', now()) - make_interval(days => 1 + g * 15) AS t) x \
         UNION ALL \
         SELECT 'pbx-1', 'legacy', 'held', 'in_progress', '+14155550100', '+18005550199', \
                'billing', 'a-1', ARRAY['a-1'], ARRAY['a-1'], t, t + interval '10 s', NULL, 4, \
                t + interval '10 s' \
         FROM (SELECT date_trunc('second', now()) - interval '200 days' AS t) x",
    )
    .execute(&db)
    .await
    .expect("calls");
    sqlx::query(
        "INSERT INTO call_events (gateway_id, event_id, call_id, type, occurred_at, caller_number, \
                                  dialed_number, queue, agent_id, outcome, reason, attached_data) \
         SELECT c.gateway_id, c.call_id || '-' || e.n, c.call_id, e.type, \
                c.offered_at + make_interval(secs => e.secs), \
                CASE WHEN e.n = 0 THEN '+14155550100' END, CASE WHEN e.n = 0 THEN '+18005550199' END, \
                CASE WHEN e.n = 0 THEN 'billing' END, CASE WHEN e.type IN ('ringing', 'answered') THEN 'a-1' END, \
                'accepted', '', CASE WHEN e.n = 0 THEN '{\"crm_ref\": \"T-1\"}'::jsonb ELSE '{}' END \
         FROM calls c, \
              (VALUES (0, 'offered', 0), (1, 'ringing', 5), (2, 'answered', 10), (3, 'ended', 60), \
                      (4, 'held', 20)) e(n, type, secs) \
         WHERE (e.type <> 'ended' OR c.state = 'ended') AND (e.type <> 'held' OR c.call_id = 'legacy')",
    )
    .execute(&db)
    .await
    .expect("events");
    sqlx::query(
        "INSERT INTO call_events (gateway_id, event_id, call_id, type, occurred_at, outcome, reason) \
         SELECT gateway_id, 'old-20-x', call_id, 'queued', ended_at + interval '1 s', 'rejected', \
                'QUEUED after the call ended' \
         FROM calls WHERE call_id = 'old-20'",
    )
    .execute(&db)
    .await
    .expect("a rejected event");
    (url, db)
}

#[tokio::test]
async fn calls_and_events_of_fourteen_months_convert_and_ingest_finds_old_calls_and_resends() {
    use v1::CallEventType::*;
    let (url, db) = database_before_partitioning().await;
    let before = event_rows(&db).await;
    assert_eq!(before.len(), 14 * 4 + 14 * 3 + 4 + 1);
    let oldest = call(&db, "old-27").await.offered_at;
    let legacy = call(&db, "legacy").await;
    // The migration fixes the legacy call's last event time, and nothing else.
    let unfixed = |mut rows: Vec<String>| {
        rows.retain(|row| !row.starts_with("pbx-1|legacy|"));
        rows
    };
    let calls_before = unfixed(call_rows(&db).await);

    // The service migrates its database at start-up.
    let app = spawn_app_with(TestOptions {
        database_url: Some(url),
        ..Default::default()
    })
    .await;
    assert_eq!(event_rows(&db).await, before, "every event, as it was");
    let calls_after = call_rows(&db).await;
    assert_eq!(calls_after.len(), 29);
    assert_eq!(unfixed(calls_after), calls_before, "every call, as it was");
    for (table, time) in [("calls", "offered_at"), ("call_events", "occurred_at")] {
        let misplaced: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE tableoid::regclass::text <> \
               '{table}_p' || to_char({time} AT TIME ZONE 'UTC', 'YYYY_MM')"
        )))
        .fetch_one(&db)
        .await
        .expect("misplaced");
        assert_eq!(
            misplaced, 0,
            "each row of {table} in its own month, none in the default"
        );
    }
    let fill: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT array_to_string(c.reloptions, ',') FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'calls'::regclass",
    )
    .fetch_all(&db)
    .await
    .expect("storage parameters");
    assert_eq!(
        fill,
        ["fillfactor=80"],
        "every month of calls leaves room for HOT updates"
    );
    // No month is analyzed and empty (see `analyzed_empty_months`).
    let analyzed_empty =
        crate::history::analyzed_empty_months(&db, &["calls", "call_events"]).await;
    assert!(analyzed_empty.is_empty(), "{analyzed_empty:?}");
    let months = switchboard::history::store::months(&db, Table::CallEvents)
        .await
        .expect("months");
    assert_eq!(months.first(), Some(&month_of(oldest)));
    assert!(months.len() >= 16, "{months:?}");
    assert_eq!(
        call(&db, "legacy").await.last_event_at,
        legacy.offered_at + TimeDelta::seconds(20),
        "the legacy call's last event time now covers its HELD"
    );

    // A resend of the oldest call's first event, and of a rejected event, gets the ack already
    // given, and stores nothing.
    let resend = event("old-27", 0, Offered, "", oldest);
    assert_eq!(
        report(&app, resend).await.outcome(),
        v1::AckOutcome::Accepted
    );
    let rejected_at = call(&db, "old-20").await.last_event_at + TimeDelta::seconds(1);
    let mut again = event("old-20", 0, Queued, "", rejected_at);
    again.event_id = "old-20-x".into();
    let ack = report(&app, again).await;
    assert_eq!(ack.outcome(), v1::AckOutcome::Rejected);
    assert_eq!(ack.reason, "QUEUED after the call ended");
    assert_eq!(event_rows(&db).await.len(), before.len(), "nothing stored");

    // The next event of a call a year old joins its history in its own old month.
    let old = call(&db, "old-25").await;
    let ended = event(
        "old-25",
        3,
        Ended,
        "",
        old.offered_at + TimeDelta::seconds(120),
    );
    let ack = report(&app, ended).await;
    assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.reason);
    let after = call(&db, "old-25").await;
    assert_eq!((after.state.as_str(), after.event_count), ("ended", 4));
    assert_eq!(after.offered_at, old.offered_at);

    // The legacy call's HELD is in the history the RESUMED is checked against.
    let resumed = event(
        "legacy",
        5,
        Resumed,
        "a-1",
        legacy.offered_at + TimeDelta::seconds(30),
    );
    let ack = report(&app, resumed).await;
    assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.reason);
    let after = call(&db, "legacy").await;
    assert_eq!((after.state.as_str(), after.event_count), ("connected", 5));
}

#[tokio::test]
async fn an_event_id_names_one_event_within_a_day_of_it_and_another_event_further_away() {
    use v1::CallEventType::*;
    let app = spawn_app().await;
    let t = Utc::now() - TimeDelta::days(5);
    let first = event("c-1", 0, Offered, "", t);
    assert_eq!(
        report(&app, first.clone()).await.outcome(),
        v1::AckOutcome::Accepted
    );
    // Two hours later, the same id on another call: a gateway reusing an id it still uses.
    let mut near = event("c-2", 0, Offered, "", t + TimeDelta::hours(2));
    near.event_id = first.event_id.clone();
    assert_eq!(
        report(&app, near).await.outcome(),
        v1::AckOutcome::DuplicateId
    );
    // Three days later, the same id names another event (a gateway whose counter restarted).
    let mut far = event("c-3", 0, Offered, "", t + TimeDelta::days(3));
    far.event_id = first.event_id.clone();
    let ack = report(&app, far.clone()).await;
    assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.reason);
    // Each is resent with its own ack, once.
    assert_eq!(
        report(&app, first).await.outcome(),
        v1::AckOutcome::Accepted
    );
    assert_eq!(report(&app, far).await.outcome(), v1::AckOutcome::Accepted);
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT call_id FROM call_events WHERE event_id = 'c-1-0' ORDER BY 1")
            .fetch_all(&app.db)
            .await
            .expect("events");
    assert_eq!(stored, ["c-1", "c-3"]);
    assert_eq!(call(&app.db, "c-3").await.state, "offered");
}

/// Runs `switchboard maintenance partitions` with `flag` (a retention of `months`), and checks
/// that it dropped `table`'s month holding `at`, as a table, and said so.
async fn retention_drops(
    app: &crate::helpers::TestApp,
    flag: &str,
    months: u32,
    table: Table,
    at: DateTime<Utc>,
) {
    let run = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["maintenance", "partitions", flag, &months.to_string()])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .await
        .expect("maintenance runs");
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{err}");
    let month = format!("{}_p{}", table.name(), month_of(at).format("%Y_%m"));
    assert!(out.contains(&month), "{out}");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&month)
        .fetch_one(&app.db)
        .await
        .expect("catalog");
    assert!(!exists, "{month} is dropped as a table");
}

#[tokio::test]
async fn retention_drops_old_months_of_call_events_and_their_calls_take_no_more() {
    use v1::CallEventType::*;
    let app = spawn_app().await;
    let now = Utc::now();
    // The months of the calls below, as a converted database has them.
    for back in 1..=9 {
        let month = month_of(now)
            .checked_sub_months(Months::new(back))
            .expect("month");
        for table in [Table::CallEvents, Table::Calls] {
            switchboard::history::store::make_month(&app.db, table, month)
                .await
                .expect("month made");
        }
    }
    let gone_at = now - Months::new(8);
    let kept_at = now - Months::new(1);
    for (call_id, at) in [("gone", gone_at), ("kept", kept_at)] {
        for (n, (kind, agent)) in [(Offered, ""), (Ringing, "a-1"), (Answered, "a-1")]
            .into_iter()
            .enumerate()
        {
            let ack = report(
                &app,
                event(
                    call_id,
                    n as u32,
                    kind,
                    agent,
                    at + TimeDelta::seconds(n as i64),
                ),
            )
            .await;
            assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.reason);
        }
    }
    let before = call(&app.db, "gone").await;

    retention_drops(
        &app,
        "--call-event-retention-months",
        6,
        Table::CallEvents,
        gone_at,
    )
    .await;
    let left: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM call_events ORDER BY event_id")
            .fetch_all(&app.db)
            .await
            .expect("events");
    assert_eq!(left, ["kept-0", "kept-1", "kept-2"]);
    assert_eq!(
        call(&app.db, "gone").await,
        before,
        "the call's record stays for KPIs"
    );

    // A late event of the call whose events are gone cannot be folded onto a history that is
    // not there: REJECTED, and its record is unchanged. The kept call goes on.
    let late = event("gone", 3, Ended, "", gone_at + TimeDelta::seconds(60));
    let ack = report(&app, late).await;
    assert_eq!(ack.outcome(), v1::AckOutcome::Rejected);
    assert!(ack.reason.contains("retention"), "{}", ack.reason);
    assert_eq!(call(&app.db, "gone").await, before);
    let ended = event("kept", 3, Ended, "", kept_at + TimeDelta::seconds(60));
    let ack = report(&app, ended).await;
    assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.reason);
    assert_eq!(call(&app.db, "kept").await.state, "ended");

    // The calls' own retention drops their months whole too.
    retention_drops(&app, "--call-retention-months", 7, Table::Calls, gone_at).await;
    let left: Vec<String> = sqlx::query_scalar("SELECT call_id FROM calls ORDER BY call_id")
        .fetch_all(&app.db)
        .await
        .expect("calls");
    assert_eq!(left, ["kept"]);
}

#[tokio::test]
async fn a_call_id_names_one_call_within_a_day_and_starts_a_new_call_further_away() {
    use v1::CallEventType::*;
    let app = spawn_app().await;
    let t = Utc::now() - TimeDelta::days(6);
    let later = t + TimeDelta::days(3);
    // A gateway that reuses its call ids: the same id three days apart, both calls in one stream
    // (so often in one batch), and a late event of the first call among them.
    let mut events = vec![
        event("c-1", 0, Offered, "", t),
        event("c-1", 1, Ended, "", t + TimeDelta::seconds(40)),
    ];
    let mut second = vec![
        event("c-1", 0, Offered, "", later),
        event("c-1", 1, Ringing, "a-1", later + TimeDelta::seconds(5)),
        event("c-1", 2, Answered, "a-1", later + TimeDelta::seconds(9)),
    ];
    for e in &mut second {
        e.event_id = format!("again-{}", e.event_id);
    }
    events.extend(second);
    let mut late = event("c-1", 9, Queued, "", t + TimeDelta::hours(2));
    late.event_id = "late".into();
    events.push(late);
    let acks = crate::calls::stream_all(&mut app.calls.clone(), events).await;
    let outcome = |id: &str| {
        acks.iter()
            .find(|ack| ack.event_id == id)
            .map(|ack| (ack.outcome(), ack.reason.clone()))
            .expect("acked")
    };
    for id in [
        "c-1-0",
        "c-1-1",
        "again-c-1-0",
        "again-c-1-1",
        "again-c-1-2",
    ] {
        assert_eq!(
            outcome(id).0,
            v1::AckOutcome::Accepted,
            "{id}: {:?}",
            outcome(id)
        );
    }
    // Two hours after the first call's offer, the event is the first call's: after its end.
    assert_eq!(
        outcome("late").0,
        v1::AckOutcome::Rejected,
        "{:?}",
        outcome("late")
    );

    let calls: Vec<(DateTime<Utc>, String, i32)> = sqlx::query_as(
        "SELECT offered_at, state, event_count FROM calls WHERE call_id = 'c-1' ORDER BY offered_at",
    )
    .fetch_all(&app.db)
    .await
    .expect("calls");
    let second_at = DateTime::from_timestamp(later.timestamp(), 0).expect("time");
    let first_at = DateTime::from_timestamp(t.timestamp(), 0).expect("time");
    assert_eq!(
        calls,
        [
            (first_at, "ended".to_string(), 2),
            (second_at, "connected".to_string(), 3)
        ]
    );
    // The second call goes on where it is.
    let ended = event("c-1", 3, Ended, "", later + TimeDelta::seconds(70));
    assert_eq!(
        report(&app, ended).await.outcome(),
        v1::AckOutcome::Accepted
    );
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM calls WHERE call_id = 'c-1' ORDER BY offered_at")
            .fetch_all(&app.db)
            .await
            .expect("states");
    assert_eq!(states, ["ended", "ended"]);
}

#[tokio::test]
async fn kpis_for_a_month_read_only_that_months_calls() {
    let app = spawn_app().await;
    let this_month = month_of(Utc::now());
    let months: Vec<_> = (0..3)
        .map(|back| {
            this_month
                .checked_sub_months(Months::new(back))
                .expect("month")
        })
        .collect();
    for month in &months {
        switchboard::history::store::make_month(&app.db, Table::Calls, *month)
            .await
            .expect("month made");
    }
    // Ten answered calls in each of the three months (no customer, so no chain to stamp).
    for (m, month) in months.iter().enumerate() {
        sqlx::query(
            "INSERT INTO calls (gateway_id, call_id, state, outcome, queue, handled_by, offered_at, \
                                answered_at, ended_at, event_count, last_event_at) \
             SELECT 'pbx-1', $1 || '-' || n, 'ended', 'completed', 'billing', ARRAY['a-1'], at, \
                    at + interval '5 s', at + interval '65 s', 4, at + interval '65 s' \
             FROM generate_series(1, 10) n, \
                  LATERAL (SELECT $2::date + make_interval(hours => n) AS at) x",
        )
        .bind(format!("m{m}"))
        .bind(month)
        .execute(&app.db)
        .await
        .expect("calls");
    }
    let last_month = months[1];
    let start = last_month.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let end = this_month.and_hms_opt(0, 0, 0).expect("midnight").and_utc();

    // Another session holds the other months of calls locked: a KPI query that read them would
    // wait, and the request would time out.
    let mut other = app.db.begin().await.expect("transaction");
    for month in [months[0], months[2]] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE calls_p{} IN ACCESS EXCLUSIVE MODE",
            month.format("%Y_%m")
        )))
        .execute(&mut *other)
        .await
        .expect("locked");
    }
    sqlx::query("LOCK TABLE calls_default IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *other)
        .await
        .expect("locked");
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::analytics::kpis(
            &app,
            v1::GetKpisRequest {
                period: crate::analytics::period(start, end),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("KPIs answered without waiting for the other months");
    other.rollback().await.expect("released");
    let total = response.total.expect("total").kpis.expect("kpis");
    assert_eq!(total.offered.and_then(|v| v.value), Some(10.0));
    assert_eq!(total.answered.and_then(|v| v.value), Some(10.0));
}
