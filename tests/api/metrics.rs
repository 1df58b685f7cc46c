//! The Prometheus metrics port: scraped before and after some traffic, the numbers move by what
//! the traffic did.

use std::collections::HashMap;

use switchboard::proto::v1;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

use crate::calls::{CallScript, log_in, report, watch};
use crate::helpers::{TestApp, eventually, spawn_app};

/// GET `path` on the metrics port: (status line, body).
async fn get(app: &TestApp, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(app.metrics_address)
        .await
        .expect("metrics port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: switchboard\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Every sample of a scrape: `name{labels}` -> value.
pub async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let (status, body) = get(app, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

pub fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_rpcs_pops_call_events_and_agent_streams() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    assert_eq!(value(&before, "switchboard_agent_streams_open"), 0.0);
    // The test options keep the in-flight limit fixed at its ceiling; nothing is shed.
    assert_eq!(value(&before, "switchboard_admission_limit"), 1000.0);
    assert_eq!(value(&before, "switchboard_admission_shed_total"), 0.0);
    assert!(
        before.contains_key("switchboard_runtime_lag_microseconds"),
        "the lag probe is exported"
    );

    // Pops: the first misses the cache and queries PostgreSQL; they go on until one is answered
    // from Redis (the card is cached once the creation's invalidation has been relayed).
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let mut pops = 0.0;
    let mut cached = false;
    for _ in 0..50 {
        pops += 1.0;
        if app.pop("+14155550100").await.1 == v1::PopSource::Cache {
            cached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(cached, "the card is cached within 50 pops");
    // An RPC that fails.
    let missing = app
        .customers
        .clone()
        .get_customer(v1::GetCustomerRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("no such customer");
    assert_eq!(missing.code(), Code::NotFound);
    // Call events: four accepted, then one rejected (an answer after the end).
    log_in(&app, "a-1").await;
    let (_, _stream) = watch(&app, "a-1").await;
    for event in CallScript::answered_by("m-1", "a-1")
        .events
        .into_iter()
        .take(4)
    {
        report(&app, event).await;
    }
    use v1::CallEventType::*;
    let mut late = CallScript::new("m-1")
        .event(Offered, "")
        .event(Ended, "")
        .event(Answered, "a-1")
        .events;
    let at = |seconds: i64| {
        Some(prost_types::Timestamp {
            seconds: 1_800_000_000 + seconds,
            nanos: 0,
        })
    };
    let mut ended = late.remove(1);
    ended.event_id = "m-1-end".into();
    ended.occurred_at = at(10);
    report(&app, ended).await;
    let mut answered = late.remove(1);
    answered.event_id = "m-1-late-answer".into();
    answered.occurred_at = at(11);
    assert_eq!(
        report(&app, answered).await.outcome(),
        v1::AckOutcome::Rejected
    );

    let after = scrape(&app).await;
    let moved = |name: &str| value(&after, name) - value(&before, name);
    assert_eq!(
        moved(
            r#"switchboard_rpc_requests_total{method="switchboard.v1.CustomerService/GetCustomer",code="NOT_FOUND"}"#
        ),
        1.0
    );
    assert_eq!(
        moved(
            r#"switchboard_rpc_requests_total{method="switchboard.v1.ScreenPopService/Lookup",code="OK"}"#
        ),
        pops
    );
    assert_eq!(
        moved(
            r#"switchboard_rpc_duration_seconds_count{method="switchboard.v1.ScreenPopService/Lookup",code="OK"}"#
        ),
        pops
    );
    assert_eq!(
        moved(r#"switchboard_call_events_total{outcome="accepted"}"#),
        5.0
    );
    assert_eq!(
        moved(r#"switchboard_call_events_total{outcome="rejected"}"#),
        1.0
    );
    assert_eq!(moved("switchboard_call_event_ack_seconds_count"), 6.0);
    assert!(moved("switchboard_call_event_ack_seconds_sum") > 0.0);
    // At least the pop answered from Redis (the call events' pops may hit the cache too).
    assert!(moved("switchboard_screen_pop_cache_hits_total") >= 1.0);
    assert!(moved("switchboard_screen_pop_database_queries_total") >= 1.0);
    assert_eq!(value(&after, "switchboard_agent_streams_open"), 1.0);
    assert!(
        value(&after, "switchboard_db_pool_in_use") + value(&after, "switchboard_db_pool_idle")
            >= 1.0
    );
    assert!(value(&after, "switchboard_db_pool_max") >= 1.0);
    // The feed numbers the events within a sequencer pass or two.
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            value(&scrape(&app).await, "switchboard_feed_head_position") > 0.0
        })
        .await,
        "the feed head moves"
    );
    drop(_stream);
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            value(&scrape(&app).await, "switchboard_agent_streams_open") == 0.0
        })
        .await,
        "the closed stream is no longer counted"
    );

    let (status, _) = get(&app, "/other").await;
    assert!(status.contains("404"), "{status}");
}
