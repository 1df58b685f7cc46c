//! Abuse limits: per-principal rate limits, the request size cap, and the default deadline.

use std::time::Duration;

use switchboard::auth::{RateLimit, Role};
use switchboard::config::Limits;
use switchboard::proto::v1;
use tonic::Code;

use crate::helpers::{TestOptions, authed, spawn_app_with, token};

fn limits(rate: RateLimit, deadline: Duration) -> Limits {
    Limits {
        rate,
        max_request_bytes: 1 << 20,
        max_concurrent_streams: 256,
        max_in_flight: 1000,
        shed_lag: Duration::ZERO,
        shed_queue: Duration::ZERO,
        default_deadline: deadline,
    }
}

#[tokio::test]
async fn a_principal_over_its_rate_is_told_to_slow_down_and_others_are_not() {
    let app = spawn_app_with(TestOptions {
        limits: limits(
            RateLimit {
                per_second: 0.01,
                burst: 5.0,
            },
            Duration::from_secs(30),
        ),
        ..Default::default()
    })
    .await;
    let lookup = || v1::LookupRequest {
        caller_number: "+14155550100".into(),
        ..Default::default()
    };
    let mut busy = v1::screen_pop_service_client::ScreenPopServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-1", None),
    ));
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(
            busy.lookup(lookup())
                .await
                .map(|_| Code::Ok)
                .unwrap_or_else(|s| s.code()),
        );
    }
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count(),
        5,
        "{codes:?}"
    );
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Code::ResourceExhausted)
            .count(),
        3,
        "{codes:?}"
    );
    let mut other = v1::screen_pop_service_client::ScreenPopServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-2", None),
    ));
    other
        .lookup(lookup())
        .await
        .expect("another agent has its own budget");
}

#[tokio::test]
async fn oversized_requests_are_refused_and_nothing_is_written() {
    let app = spawn_app_with(TestOptions::default()).await;
    let status = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Big".into(),
            company: "x".repeat(2 << 20),
            ..Default::default()
        })
        .await
        .expect_err("over 1 MiB");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn calls_without_a_deadline_get_the_default_one_but_streams_live_on() {
    let app = spawn_app_with(TestOptions {
        limits: limits(
            RateLimit {
                per_second: 1000.0,
                burst: 1000.0,
            },
            Duration::from_millis(500),
        ),
        ..Default::default()
    })
    .await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.agents
        .clone()
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: "a-17".into(),
            state: v1::AgentState::Available.into(),
            reason: String::new(),
        })
        .await
        .expect("logged in");
    let mut stream = app
        .agents
        .clone()
        .watch_agent(v1::WatchAgentRequest {
            agent_id: "a-17".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        stream.message().await.expect("ok").expect("synced").kind(),
        v1::AgentCallEventKind::Synced
    );

    // A lookup stuck behind a lock outlives the default deadline.
    let mut blocker = app.db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let started = std::time::Instant::now();
    let stuck = app
        .pops
        .clone()
        .lookup(v1::LookupRequest {
            caller_number: "+14155550100".into(),
            ..Default::default()
        })
        .await
        .expect_err("deadline");
    assert!(
        matches!(stuck.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{stuck:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    blocker.commit().await.expect("release");

    // The softphone's stream, open for longer than the deadline, still gets its ring.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ring = |kind: v1::CallEventType, n: i64, agent: &str| v1::ReportCallEventRequest {
        event: Some(v1::CallEvent {
            gateway_id: "pbx-1".into(),
            event_id: format!("e{n}"),
            call_id: "c-1".into(),
            r#type: kind.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000 + n,
                nanos: 0,
            }),
            caller_number: "+14155550100".into(),
            agent_id: agent.into(),
            ..Default::default()
        }),
    };
    app.calls
        .clone()
        .report_call_event(ring(v1::CallEventType::Offered, 0, ""))
        .await
        .expect("offered");
    app.calls
        .clone()
        .report_call_event(ring(v1::CallEventType::Ringing, 1, "a-17"))
        .await
        .expect("ringing");
    let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("in time")
        .expect("open")
        .expect("a message");
    assert_eq!(message.kind(), v1::AgentCallEventKind::Ringing);
}
