//! CallEventService and AgentService: gateways report, agents get their pops.

use std::time::Duration;

use switchboard::calls::machine::{self, EventType, Step, TransferTarget};
use switchboard::proto::v1;
use tokio_stream::StreamExt as _;
use tonic::Streaming;

use std::process::Stdio;

use crate::helpers::{
    PrivateRedis, ServerProcess, TestApp, TestOptions, spawn_app, spawn_app_with,
};

const GATEWAY: &str = "pbx-1";

/// A gateway's view of a call: builds its events with increasing gateway times.
pub struct CallScript {
    pub call_id: String,
    pub events: Vec<v1::CallEvent>,
}

impl CallScript {
    pub fn new(call_id: &str) -> Self {
        Self {
            call_id: call_id.into(),
            events: Vec::new(),
        }
    }

    pub fn event(mut self, kind: v1::CallEventType, agent: &str) -> Self {
        let n = self.events.len() as i64;
        let mut event = v1::CallEvent {
            gateway_id: GATEWAY.into(),
            event_id: format!("{}-{n}", self.call_id),
            call_id: self.call_id.clone(),
            r#type: kind.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000 + n,
                nanos: 0,
            }),
            agent_id: agent.into(),
            ..Default::default()
        };
        if kind == v1::CallEventType::Offered {
            event.caller_number = "(415) 555-0100".into();
            event.dialed_number = "+1 800 555 0199".into();
            event.queue = "billing".into();
        }
        self.events.push(event);
        self
    }

    /// OFFERED, QUEUED, RINGING and ANSWERED by `agent`, ENDED.
    pub fn answered_by(call_id: &str, agent: &str) -> Self {
        use v1::CallEventType::*;
        Self::new(call_id)
            .event(Offered, "")
            .event(Queued, "")
            .event(Ringing, agent)
            .event(Answered, agent)
            .event(Ended, "")
    }
}

/// Streams `events` to the gateway service and returns every ack; the stream must end cleanly.
pub async fn stream_all(
    calls: &mut v1::call_event_service_client::CallEventServiceClient<crate::helpers::Authed>,
    events: Vec<v1::CallEvent>,
) -> Vec<v1::CallEventAck> {
    let requests = tokio_stream::iter(
        events
            .into_iter()
            .map(|e| v1::StreamCallEventsRequest { event: Some(e) }),
    );
    let mut responses = calls
        .stream_call_events(requests)
        .await
        .expect("stream")
        .into_inner();
    let mut acks = Vec::new();
    while let Some(response) = responses.next().await {
        acks.push(response.expect("the stream goes on").ack.expect("ack"));
    }
    acks
}

pub async fn report(app: &TestApp, event: v1::CallEvent) -> v1::CallEventAck {
    app.calls
        .clone()
        .report_call_event(v1::ReportCallEventRequest { event: Some(event) })
        .await
        .expect("reported")
        .into_inner()
        .ack
        .expect("ack")
}

pub async fn log_in(app: &TestApp, agent: &str) {
    app.agents
        .clone()
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: agent.into(),
            state: v1::AgentState::Available.into(),
            reason: String::new(),
        })
        .await
        .expect("agent state set");
}

/// Opens an agent stream and reads up to its first SYNCED; returns the snapshot and the stream.
pub async fn watch(
    app: &TestApp,
    agent: &str,
) -> (
    Vec<v1::WatchAgentResponse>,
    Streaming<v1::WatchAgentResponse>,
) {
    let mut stream = app
        .agents
        .clone()
        .watch_agent(v1::WatchAgentRequest {
            agent_id: agent.into(),
        })
        .await
        .expect("watching")
        .into_inner();
    let mut snapshot = Vec::new();
    loop {
        let message = next(&mut stream).await;
        if message.kind() == v1::AgentCallEventKind::Synced {
            return (snapshot, stream);
        }
        snapshot.push(message);
    }
}

pub async fn next(stream: &mut Streaming<v1::WatchAgentResponse>) -> v1::WatchAgentResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("stream open")
        .expect("no error")
}

fn outcome(ack: &v1::CallEventAck) -> v1::AckOutcome {
    ack.outcome()
}

#[derive(sqlx::FromRow, Debug, PartialEq)]
struct CallRow {
    state: String,
    outcome: String,
    caller_number: Option<String>,
    queue: Option<String>,
    handled_by: Vec<String>,
    transfers: i32,
    hold_ms: i64,
    event_count: i32,
    answered: bool,
    ended: bool,
}

async fn call_row(app: &TestApp, call_id: &str) -> CallRow {
    sqlx::query_as(
        "SELECT state, outcome, caller_number, queue, handled_by, transfers, hold_ms, event_count, \
                answered_at IS NOT NULL AS answered, ended_at IS NOT NULL AS ended \
         FROM calls WHERE gateway_id = $1 AND call_id = $2",
    )
    .bind(GATEWAY)
    .bind(call_id)
    .fetch_one(&app.db)
    .await
    .expect("call row")
}

#[tokio::test]
async fn a_streamed_call_is_acked_after_commit_and_recorded() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    log_in(&app, "a-17").await;
    let script = CallScript::answered_by("c-1", "a-17");
    let requests = tokio_stream::iter(
        script
            .events
            .clone()
            .into_iter()
            .map(|e| v1::StreamCallEventsRequest { event: Some(e) }),
    );
    let mut acks = app
        .calls
        .clone()
        .stream_call_events(requests)
        .await
        .expect("stream")
        .into_inner();
    let mut acked = Vec::new();
    while let Some(ack) = acks.next().await {
        let ack = ack.expect("ack").ack.expect("ack");
        assert_eq!(outcome(&ack), v1::AckOutcome::Accepted, "{ack:?}");
        // Acked means committed: the event is already in PostgreSQL.
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM call_events WHERE event_id = $1")
                .bind(&ack.event_id)
                .fetch_one(&app.db)
                .await
                .expect("count");
        assert_eq!(stored, 1);
        acked.push(ack.event_id);
    }
    assert_eq!(acked.len(), 5);
    let row = call_row(&app, "c-1").await;
    assert_eq!(
        row,
        CallRow {
            state: "ended".into(),
            outcome: "completed".into(),
            caller_number: Some("+14155550100".into()),
            queue: Some("billing".into()),
            handled_by: vec!["a-17".into()],
            transfers: 0,
            hold_ms: 0,
            event_count: 5,
            answered: true,
            ended: true,
        }
    );
    let customer: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT customer_id FROM calls WHERE call_id = 'c-1'")
            .fetch_one(&app.db)
            .await
            .expect("customer");
    assert_eq!(
        customer.map(|id| id.to_string()),
        Some(ada.id),
        "the caller was matched on OFFERED"
    );

    // The hot per-call state in Redis outlives the call by its TTL.
    let client = redis::Client::open(crate::helpers::redis_url()).expect("redis");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let key = format!("{}call:pbx-1/c-1", app.redis_prefix);
    let (state, ttl): (Vec<u8>, i64) = redis::pipe()
        .get(&key)
        .ttl(&key)
        .query_async(&mut redis)
        .await
        .expect("hot state");
    let hot = <v1::AgentCall as prost::Message>::decode(state.as_slice()).expect("encoded call");
    assert_eq!(hot.state(), v1::CallState::Ended);
    assert!(
        (1..=3600).contains(&ttl),
        "kept for an hour after the end, ttl {ttl}"
    );
}

#[tokio::test]
async fn resent_events_have_one_effect_and_the_same_ack() {
    let app = spawn_app().await;
    log_in(&app, "a-17").await;
    let script = CallScript::answered_by("c-2", "a-17");
    let first: Vec<_> = {
        let mut acks = Vec::new();
        for event in &script.events {
            acks.push(report(&app, event.clone()).await);
        }
        acks
    };
    // Sequential resends.
    for (event, ack) in script.events.iter().zip(&first) {
        assert_eq!(&report(&app, event.clone()).await, ack);
    }
    // A hundred concurrent resends of one event, and of a new one.
    let mut new_event = script.events[4].clone();
    new_event.event_id = "c-2-extra".into();
    new_event.r#type = v1::CallEventType::Held.into();
    for event in [script.events[2].clone(), new_event] {
        let sends: Vec<_> = (0..100)
            .map(|_| {
                let mut calls = app.calls.clone();
                let event = event.clone();
                tokio::spawn(async move {
                    calls
                        .report_call_event(v1::ReportCallEventRequest { event: Some(event) })
                        .await
                        .map(|r| r.into_inner().ack)
                })
            })
            .collect();
        let mut acks = Vec::new();
        for send in sends {
            acks.push(send.await.expect("task").expect("ack"));
        }
        acks.dedup();
        assert_eq!(acks.len(), 1, "every resend gets the same ack: {acks:?}");
    }
    let counts: (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM call_events WHERE call_id = 'c-2'), \
                (SELECT event_count FROM calls WHERE call_id = 'c-2')",
    )
    .fetch_one(&app.db)
    .await
    .expect("counts");
    assert_eq!(
        counts,
        (6, 5),
        "six stored events, the HELD after ENDED rejected"
    );
}

#[tokio::test]
async fn events_arriving_out_of_order_give_the_same_call_record() {
    let app = spawn_app().await;
    log_in(&app, "a-17").await;
    log_in(&app, "a-22").await;
    use v1::CallEventType::*;
    let in_order = |id: &str| {
        CallScript::new(id)
            .event(Offered, "")
            .event(Ringing, "a-17")
            .event(Answered, "a-17")
            .event(Held, "")
            .event(Resumed, "")
            .event(Ended, "")
    };
    for event in in_order("ordered").events {
        assert_eq!(
            report(&app, event).await.outcome(),
            v1::AckOutcome::Accepted
        );
    }
    let mut shuffled = in_order("shuffled").events;
    shuffled.reverse();
    shuffled.swap(1, 4);
    for ack in stream_all(&mut app.calls.clone(), shuffled).await {
        assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{ack:?}");
    }
    assert_eq!(
        call_row(&app, "shuffled").await,
        call_row(&app, "ordered").await
    );
    assert_eq!(call_row(&app, "ordered").await.hold_ms, 1000);
}

#[tokio::test]
async fn bad_and_impossible_events_get_their_own_ack_and_the_stream_goes_on() {
    let app = spawn_app().await;
    log_in(&app, "a-17").await;
    use v1::CallEventType::*;
    let script = CallScript::answered_by("c-3", "a-17");
    let mut answered_after_end = script.events[3].clone();
    answered_after_end.event_id = "late-answer".into();
    answered_after_end.occurred_at = Some(prost_types::Timestamp {
        seconds: 1_800_000_100,
        nanos: 0,
    });
    let mut bad_number = CallScript::new("c-4").event(Offered, "").events.remove(0);
    bad_number.caller_number = "not a number".into();
    let mut no_id = CallScript::new("c-5").event(Offered, "").events.remove(0);
    no_id.event_id = String::new();
    let mut oversized = CallScript::new("c-6").event(Offered, "").events.remove(0);
    oversized
        .attached_data
        .insert("ivr".into(), "x".repeat(2000));
    let unknown_agent = CallScript::new("c-7")
        .event(Offered, "")
        .event(Ringing, "a-404")
        .events
        .remove(1);
    let mut no_type = CallScript::new("c-8").event(Offered, "").events.remove(0);
    no_type.r#type = 99;

    let mut events = script.events.clone();
    events.extend([
        answered_after_end,
        bad_number,
        no_id,
        oversized,
        unknown_agent,
        no_type,
    ]);
    let mut after = CallScript::new("c-9").event(Offered, "").events.remove(0);
    after.event_id = "still-flowing".into();
    events.push(after);

    let mut acks = std::collections::HashMap::new();
    for ack in stream_all(&mut app.calls.clone(), events).await {
        let id = if ack.event_id.is_empty() {
            "<no id>".to_owned()
        } else {
            ack.event_id.clone()
        };
        acks.insert(id, ack);
    }
    let field = |id: &str| {
        acks[id]
            .violations
            .iter()
            .map(|v| v.field.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(acks["late-answer"].outcome(), v1::AckOutcome::Rejected);
    assert_eq!(acks["late-answer"].reason, "ANSWERED after the call ended");
    assert_eq!(acks["c-4-0"].outcome(), v1::AckOutcome::Invalid);
    assert_eq!(field("c-4-0"), ["caller_number"]);
    assert_eq!(field("<no id>"), ["event_id"]);
    assert_eq!(field("c-6-0"), ["attached_data[0].value"]);
    // An agent never seen (a desk phone) is no reason to refuse the event.
    assert_eq!(acks["c-7-1"].outcome(), v1::AckOutcome::Accepted);
    assert_eq!(field("c-8-0"), ["type"]);
    assert_eq!(acks["still-flowing"].outcome(), v1::AckOutcome::Accepted);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM call_events WHERE call_id IN ('c-4', 'c-5', 'c-6', 'c-8')",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(stored, 0, "malformed events are not stored");
    assert_eq!(call_row(&app, "c-3").await.state, "ended");
}

#[tokio::test]
async fn a_ringing_agent_gets_the_call_and_its_pop_then_each_change() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    log_in(&app, "a-17").await;
    log_in(&app, "a-22").await;
    let (snapshot, mut a17) = watch(&app, "a-17").await;
    assert!(snapshot.is_empty());
    let (_, mut a22) = watch(&app, "a-22").await;

    use v1::CallEventType::*;
    let script = CallScript::new("c-10")
        .event(Offered, "")
        .event(Ringing, "a-17")
        .event(Answered, "a-17")
        .event(Held, "")
        .event(Resumed, "");
    for event in script.events {
        report(&app, event).await;
    }
    let ringing = next(&mut a17).await;
    assert_eq!(ringing.kind(), v1::AgentCallEventKind::Ringing);
    let call = ringing.call.expect("call");
    assert_eq!(
        (call.call_id.as_str(), call.caller_number.as_str()),
        ("c-10", "+14155550100")
    );
    let card = ringing.pop.expect("pop").card.expect("card");
    assert_eq!(card.display_name, "Ada Lovelace");
    let kinds: Vec<_> = [
        next(&mut a17).await,
        next(&mut a17).await,
        next(&mut a17).await,
    ]
    .iter()
    .map(|m| m.kind())
    .collect();
    assert_eq!(
        kinds,
        [
            v1::AgentCallEventKind::Answered,
            v1::AgentCallEventKind::Held,
            v1::AgentCallEventKind::Resumed
        ]
    );

    // Transferred to a-22, who gets the same pinned card.
    let mut transfer = CallScript::new("c-10").event(Offered, "").events.remove(0);
    transfer.event_id = "c-10-t".into();
    transfer.r#type = Transferred.into();
    transfer.caller_number = String::new();
    transfer.target_agent_id = "a-22".into();
    transfer.occurred_at = Some(prost_types::Timestamp {
        seconds: 1_800_000_010,
        nanos: 0,
    });
    assert_eq!(
        report(&app, transfer).await.outcome(),
        v1::AckOutcome::Accepted
    );
    assert_eq!(
        next(&mut a17).await.kind(),
        v1::AgentCallEventKind::TransferredAway
    );
    let ringing = next(&mut a22).await;
    assert_eq!(ringing.kind(), v1::AgentCallEventKind::Ringing);
    assert_eq!(
        ringing.pop.and_then(|p| p.card).expect("card").display_name,
        "Ada Lovelace"
    );

    // A softphone that reconnects mid-call gets the call and its pop back at once.
    drop(a22);
    let (snapshot, _) = watch(&app, "a-22").await;
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].kind(), v1::AgentCallEventKind::Snapshot);
    assert_eq!(
        snapshot[0]
            .pop
            .clone()
            .and_then(|p| p.card)
            .expect("card")
            .display_name,
        "Ada Lovelace"
    );
}

#[tokio::test]
async fn an_agent_on_another_server_process_gets_the_pop() {
    use v1::CallEventType::*;
    // Two `switchboard serve` processes sharing one PostgreSQL database and one Redis prefix.
    let database_url = crate::helpers::fresh_database(&crate::helpers::admin_database_url()).await;
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let gateway_side = ServerProcess::start(
        &database_url,
        &prefix,
        crate::helpers::free_port(),
        &[],
        Stdio::null(),
    )
    .await;
    let agent_side = ServerProcess::start(
        &database_url,
        &prefix,
        crate::helpers::free_port(),
        &[],
        Stdio::null(),
    )
    .await;
    let gateway_channel = gateway_side.channel().await;
    v1::customer_service_client::CustomerServiceClient::new(gateway_channel.clone())
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Ada Lovelace".into(),
            contact_points: vec![crate::helpers::phone("+14155550100")],
            ..Default::default()
        })
        .await
        .expect("customer");
    let mut stream = crate::helpers::log_in_and_watch(agent_side.channel().await, "a-17").await;
    assert_eq!(
        next(&mut stream).await.kind(),
        v1::AgentCallEventKind::Synced
    );
    // Let the agent side's Redis subscription settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut calls = v1::call_event_service_client::CallEventServiceClient::new(gateway_channel);
    for event in CallScript::new("c-20")
        .event(Offered, "")
        .event(Ringing, "a-17")
        .events
    {
        let ack = calls
            .report_call_event(v1::ReportCallEventRequest { event: Some(event) })
            .await
            .expect("reported")
            .into_inner()
            .ack
            .expect("ack");
        assert_eq!(ack.outcome(), v1::AckOutcome::Accepted);
    }
    let ringing = next(&mut stream).await;
    assert_eq!(ringing.kind(), v1::AgentCallEventKind::Ringing);
    assert_eq!(ringing.call.expect("call").call_id, "c-20");
    assert_eq!(
        ringing.pop.and_then(|p| p.card).expect("card").display_name,
        "Ada Lovelace"
    );
}

#[tokio::test]
async fn with_redis_stopped_events_are_still_acked_and_push_resumes_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    log_in(&app, "a-17").await;
    let (_, mut stream) = watch(&app, "a-17").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    redis.stop();
    use v1::CallEventType::*;
    for event in CallScript::new("c-30")
        .event(Offered, "")
        .event(Ringing, "a-17")
        .events
    {
        assert_eq!(
            report(&app, event).await.outcome(),
            v1::AckOutcome::Accepted
        );
    }
    let ringing = next(&mut stream).await;
    assert_eq!(
        ringing.kind(),
        v1::AgentCallEventKind::Ringing,
        "delivered on this instance without Redis"
    );
    assert_eq!(
        ringing
            .pop
            .and_then(|p| p.card)
            .expect("pop from PostgreSQL")
            .display_name,
        "Ada Lovelace"
    );

    redis.resume();
    // The subscription comes back and the watcher is resynchronized with its current calls.
    let resync = next(&mut stream).await;
    assert_eq!(resync.kind(), v1::AgentCallEventKind::Resync);
    let snapshot = next(&mut stream).await;
    assert_eq!(snapshot.kind(), v1::AgentCallEventKind::Snapshot);
    assert_eq!(snapshot.call.expect("call").call_id, "c-30");
    assert_eq!(
        next(&mut stream).await.kind(),
        v1::AgentCallEventKind::Synced
    );
    let mut answered = CallScript::new("c-30")
        .event(Offered, "")
        .event(Ringing, "a-17")
        .event(Answered, "a-17")
        .events
        .remove(2);
    answered.event_id = "c-30-answered".into();
    report(&app, answered).await;
    // The publishes that failed while Redis was down also owe every instance a resync, sent
    // with the next envelope once Redis is back: this watcher may get the answer as that
    // resync's snapshot rather than as an ANSWERED.
    loop {
        let message = next(&mut stream).await;
        let connected = message
            .call
            .as_ref()
            .is_some_and(|call| call.state() == v1::CallState::Connected);
        match message.kind() {
            v1::AgentCallEventKind::Answered => break,
            v1::AgentCallEventKind::Snapshot if connected => break,
            v1::AgentCallEventKind::Resync
            | v1::AgentCallEventKind::Snapshot
            | v1::AgentCallEventKind::Synced => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn agent_states_are_kept_with_their_history() {
    let app = spawn_app().await;
    let mut agents = app.agents.clone();
    let set = |state: v1::AgentState, reason: &str| v1::SetAgentStateRequest {
        agent_id: "a-17".into(),
        state: state.into(),
        reason: reason.into(),
    };
    agents
        .set_agent_state(set(v1::AgentState::Available, ""))
        .await
        .expect("available");
    agents
        .set_agent_state(set(v1::AgentState::Available, ""))
        .await
        .expect("same again");
    agents
        .set_agent_state(set(v1::AgentState::Away, "lunch"))
        .await
        .expect("away");
    let history = agents
        .list_agent_states(v1::ListAgentStatesRequest {
            agent_id: "a-17".into(),
            limit: 0,
        })
        .await
        .expect("history")
        .into_inner()
        .changes;
    let states: Vec<(v1::AgentState, &str)> = history
        .iter()
        .map(|c| (c.state(), c.reason.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            (v1::AgentState::Away, "lunch"),
            (v1::AgentState::Available, "")
        ]
    );

    let bad = agents
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: "bad id".into(),
            state: 42,
            reason: String::new(),
        })
        .await
        .expect_err("invalid");
    let mut fields = crate::helpers::violated_fields(&bad);
    fields.sort();
    assert_eq!(fields, ["agent_id", "state"]);
    let unknown = agents
        .list_agent_states(v1::ListAgentStatesRequest {
            agent_id: "a-404".into(),
            limit: 0,
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

/// The call record the machine folds from the events stored for a call.
#[derive(sqlx::FromRow)]
struct EventRow {
    event_id: String,
    r#type: String,
    occurred_at: chrono::DateTime<chrono::Utc>,
    sequence: i64,
    caller_number: Option<String>,
    queue: Option<String>,
    agent_id: Option<String>,
    target_agent_id: Option<String>,
    target_queue: Option<String>,
}

/// The call record the machine folds from the events stored for a call.
pub async fn rebuilt_from_log(db: &sqlx::PgPool, call_id: &str) -> machine::CallRecord {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT event_id, type, occurred_at, sequence, caller_number, queue, agent_id, target_agent_id, target_queue \
         FROM call_events WHERE call_id = $1 AND outcome = 'accepted' ORDER BY occurred_at, sequence, event_id",
    )
    .bind(call_id)
    .fetch_all(db)
    .await
    .expect("events");
    let steps: Vec<Step> = rows
        .into_iter()
        .map(|row| Step {
            event_id: row.event_id,
            kind: EventType::parse(&row.r#type).expect("known type"),
            occurred_at: row.occurred_at,
            sequence: row.sequence,
            caller_number: row.caller_number,
            dialed_number: None,
            queue: row.queue,
            agent_id: row.agent_id,
            target: row
                .target_agent_id
                .map(TransferTarget::Agent)
                .or(row.target_queue.map(TransferTarget::Queue)),
        })
        .collect();
    machine::fold(&steps)
        .expect("accepted history is possible")
        .expect("events")
}

#[derive(sqlx::FromRow, Debug, PartialEq)]
struct StoredCall {
    state: String,
    outcome: String,
    handled_by: Vec<String>,
    hold_ms: i64,
    event_count: i32,
    answered_at: Option<chrono::DateTime<chrono::Utc>>,
    ended_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[tokio::test]
async fn a_server_killed_mid_stream_loses_no_acked_event() {
    use v1::CallEventType::*;
    let database_url = crate::helpers::fresh_database(&crate::helpers::admin_database_url()).await;
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let port = crate::helpers::free_port();
    let mut server = ServerProcess::start(&database_url, &prefix, port, &[], Stdio::null()).await;
    let mut agents = v1::agent_service_client::AgentServiceClient::new(server.channel().await);
    for agent in ["a-1", "a-2"] {
        agents
            .set_agent_state(v1::SetAgentStateRequest {
                agent_id: agent.into(),
                state: v1::AgentState::Available.into(),
                reason: String::new(),
            })
            .await
            .expect("agent");
    }
    let events: Vec<v1::CallEvent> = (0..60)
        .flat_map(|i| {
            let call = format!("k-{i}");
            let script = if i % 3 == 0 {
                CallScript::new(&call)
                    .event(Offered, "")
                    .event(Queued, "")
                    .event(Abandoned, "")
            } else {
                CallScript::new(&call)
                    .event(Offered, "")
                    .event(Ringing, "a-1")
                    .event(Answered, "a-1")
                    .event(Held, "")
                    .event(Resumed, "")
                    .event(Ended, "")
            };
            script.events
        })
        .collect();

    // Stream everything; kill the server with SIGKILL once a third has been acked.
    let (sender, receiver) = tokio::sync::mpsc::channel(events.len());
    for event in &events {
        sender
            .send(v1::StreamCallEventsRequest {
                event: Some(event.clone()),
            })
            .await
            .expect("queued");
    }
    let mut calls =
        v1::call_event_service_client::CallEventServiceClient::new(server.channel().await);
    let mut acks = calls
        .stream_call_events(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    let mut acked = std::collections::HashSet::new();
    while let Some(Ok(response)) = acks.next().await {
        let ack = response.ack.expect("ack");
        assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{ack:?}");
        acked.insert(ack.event_id);
        if acked.len() == events.len() / 3 {
            let status = server.signal_and_wait("KILL").await;
            assert!(!status.success());
        }
    }
    drop(sender);
    assert!(
        acked.len() >= events.len() / 3 && acked.len() < events.len(),
        "killed mid-stream: {} acked",
        acked.len()
    );

    // Restart and resend everything that was not acked (and a few that were).
    let server = ServerProcess::start(&database_url, &prefix, port, &[], Stdio::null()).await;
    let resend: Vec<v1::CallEvent> = events
        .iter()
        .filter(|e| !acked.contains(&e.event_id) || e.event_id.ends_with("-0"))
        .cloned()
        .collect();
    let mut calls =
        v1::call_event_service_client::CallEventServiceClient::new(server.channel().await);
    for ack in stream_all(&mut calls, resend).await {
        assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{ack:?}");
        acked.insert(ack.event_id);
    }
    assert_eq!(acked.len(), events.len());

    let db = sqlx::PgPool::connect(&database_url).await.expect("pool");
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM call_events ORDER BY event_id")
            .fetch_all(&db)
            .await
            .expect("events");
    let mut expected: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    expected.sort();
    assert_eq!(stored, expected, "every event stored exactly once");
    for i in 0..60 {
        let call = format!("k-{i}");
        let rebuilt = rebuilt_from_log(&db, &call).await;
        let row: StoredCall = sqlx::query_as(
            "SELECT state, outcome, handled_by, hold_ms, event_count, answered_at, ended_at FROM calls WHERE call_id = $1",
        )
        .bind(&call)
        .fetch_one(&db)
        .await
        .expect("call");
        let expected = StoredCall {
            state: rebuilt.state.as_str().to_owned(),
            outcome: rebuilt.outcome.as_str().to_owned(),
            handled_by: rebuilt.handled_by.clone(),
            hold_ms: rebuilt.hold_ms,
            event_count: rebuilt.event_count,
            answered_at: rebuilt.answered_at,
            ended_at: rebuilt.ended_at,
        };
        assert_eq!(row, expected, "{call}");
    }
}

#[tokio::test]
async fn a_burst_of_concurrent_events_and_resends_commits_each_event_once() {
    // Sent all at once, the events share group commits: events of one call land in the same
    // batch, resends of an event land in the same batch as the original, in any order.
    let app = spawn_app().await;
    log_in(&app, "a-17").await;
    let calls = 40;
    let mut events = Vec::new();
    for c in 0..calls {
        let script = CallScript::answered_by(&format!("burst-{c}"), "a-17");
        for event in script.events {
            events.push(event.clone());
            events.push(event);
        }
    }
    let acks = futures::future::join_all(events.into_iter().map(|event| report(&app, event))).await;
    assert_eq!(acks.len(), calls * 5 * 2);
    assert!(
        acks.iter()
            .all(|ack| ack.outcome() == v1::AckOutcome::Accepted),
        "every event and every resend is accepted: {:?}",
        acks.iter()
            .filter(|a| a.outcome() != v1::AckOutcome::Accepted)
            .map(|a| (&a.event_id, &a.reason))
            .collect::<Vec<_>>()
    );
    let (stored, wrong): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM call_events WHERE call_id LIKE 'burst-%'), \
                (SELECT count(*) FROM calls WHERE call_id LIKE 'burst-%' \
                   AND (event_count <> 5 OR state <> 'ended' OR handled_by <> '{a-17}'))",
    )
    .fetch_one(&app.db)
    .await
    .expect("counts");
    assert_eq!((stored, wrong), (calls as i64 * 5, 0));
}

fn at(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

#[tokio::test]
async fn poison_events_fail_alone_and_every_good_event_around_them_is_acked_and_stored_once() {
    let app = spawn_app().await;
    use v1::CallEventType::*;
    let offered = |call: &str| CallScript::new(call).event(Offered, "").events.remove(0);
    let mut bad: Vec<(v1::CallEvent, &str)> = Vec::new();
    let mut nul_key = offered("bad-1");
    nul_key.attached_data.insert("ac\0count".into(), "1".into());
    bad.push((nul_key, "attached_data[0].key"));
    let mut nul_value = offered("bad-2");
    nul_value
        .attached_data
        .insert("account".into(), "12\u{0}3".into());
    bad.push((nul_value, "attached_data[0].value"));
    let mut year_zero = offered("bad-3");
    year_zero.occurred_at = at(-62_135_596_801, 0);
    bad.push((year_zero, "occurred_at"));
    let mut year_10000 = offered("bad-4");
    year_10000.occurred_at = at(253_402_300_800, 0);
    bad.push((year_10000, "occurred_at"));
    let mut too_many_nanos = offered("bad-5");
    too_many_nanos.occurred_at = at(1_800_000_000, 1_000_000_000);
    bad.push((too_many_nanos, "occurred_at"));
    let mut nul_queue = offered("bad-6");
    nul_queue.queue = "bil\0ling".into();
    bad.push((nul_queue, "queue"));

    // Good and bad interleaved, twice over: every good event is a whole call of its own.
    let mut events = Vec::new();
    let mut good = Vec::new();
    for round in 0..2 {
        for (i, (event, _)) in bad.iter().enumerate() {
            let call = CallScript::answered_by(&format!("good-{round}-{i}"), "a-1");
            good.extend(call.events.iter().map(|e| e.event_id.clone()));
            events.extend(call.events);
            events.push(event.clone());
        }
    }
    let acks = stream_all(&mut app.calls.clone(), events).await;
    assert_eq!(acks.len(), good.len() + 2 * bad.len(), "one ack per event");
    for ack in &acks {
        match bad.iter().find(|(e, _)| e.event_id == ack.event_id) {
            Some((_, field)) => {
                assert_eq!(ack.outcome(), v1::AckOutcome::Invalid, "{}", ack.event_id);
                let fields: Vec<&str> = ack.violations.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(fields, [*field], "{}", ack.event_id);
            }
            None => assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.event_id),
        }
    }
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM call_events ORDER BY event_id")
            .fetch_all(&app.db)
            .await
            .expect("events");
    good.sort();
    assert_eq!(
        stored, good,
        "stored if and only if acked as stored, once each"
    );

    // The unary form answers the same per-event INVALID, never INTERNAL.
    for (event, field) in &bad {
        let ack = report(&app, event.clone()).await;
        assert_eq!(ack.outcome(), v1::AckOutcome::Invalid);
        assert_eq!(ack.violations[0].field, *field);
    }
}

#[tokio::test]
async fn an_event_postgresql_refuses_is_acked_invalid_alone_and_its_batch_commits() {
    let app = spawn_app().await;
    // A rule only PostgreSQL knows: edge validation cannot catch it, so the batch must split.
    sqlx::query(
        "ALTER TABLE call_events ADD CONSTRAINT test_refused CHECK (queue IS DISTINCT FROM 'refused')",
    )
    .execute(&app.db)
    .await
    .expect("constraint");
    use v1::CallEventType::*;
    let mut events = Vec::new();
    for i in 0..40 {
        let mut event = CallScript::new(&format!("c-{i}"))
            .event(Offered, "")
            .events
            .remove(0);
        if i % 10 == 3 {
            event.queue = "refused".into();
        }
        events.push(event);
    }
    // Sent concurrently, so that they share batches.
    let acks = futures::future::join_all(events.iter().cloned().map(|e| report(&app, e))).await;
    for (event, ack) in events.iter().zip(&acks) {
        let expected = if event.queue == "refused" {
            v1::AckOutcome::Invalid
        } else {
            v1::AckOutcome::Accepted
        };
        assert_eq!(
            ack.outcome(),
            expected,
            "{}: {}",
            event.event_id,
            ack.reason
        );
    }
    assert!(acks.iter().any(|a| a.reason.contains("SQLSTATE 23514")));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(stored, 36);
}

#[tokio::test]
async fn a_pbx_only_agent_is_learned_and_the_answered_call_counts_for_them() {
    let app = spawn_app().await;
    // "desk-7" never opened a softphone: the PBX is all that knows them.
    let script = CallScript::answered_by("c-desk", "desk-7");
    for ack in stream_all(&mut app.calls.clone(), script.events).await {
        assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.reason);
    }
    let row = call_row(&app, "c-desk").await;
    assert_eq!(
        (row.state.as_str(), row.outcome.as_str()),
        ("ended", "completed")
    );
    assert_eq!(row.handled_by, ["desk-7"]);
    let known_from: String =
        sqlx::query_scalar("SELECT known_from FROM agents WHERE agent_id = 'desk-7'")
            .fetch_one(&app.db)
            .await
            .expect("the agent is known");
    assert_eq!(known_from, "gateway");

    // The directory shows the drift: desk-7 is known from the gateway alone, while an agent on a
    // softphone and a provisioned one are not listed.
    log_in(&app, "a-1").await;
    let mut agents = app.agents.clone();
    let provisioned = agents
        .upsert_agent(v1::UpsertAgentRequest {
            agent_id: "a-2".into(),
            display_name: "Grace Hopper".into(),
            team: "billing".into(),
            queues: vec!["billing".into(), "billing".into(), "vip".into()],
            extension: "2002".into(),
            sip_user: "grace".into(),
        })
        .await
        .expect("provisioned")
        .into_inner()
        .agent
        .expect("agent");
    assert_eq!(provisioned.queues, ["billing", "vip"]);
    assert_eq!(provisioned.known_from(), v1::AgentKnownFrom::Directory);
    assert!(provisioned.provision_time.is_some());
    let gateway_only = |agents: &mut v1::agent_service_client::AgentServiceClient<_>| {
        let mut agents = agents.clone();
        async move {
            agents
                .list_agents(v1::ListAgentsRequest {
                    gateway_only: true,
                    ..Default::default()
                })
                .await
                .expect("listed")
                .into_inner()
                .agents
                .into_iter()
                .map(|a| (a.agent_id.clone(), a.known_from()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        gateway_only(&mut agents).await,
        [("desk-7".to_owned(), v1::AgentKnownFrom::Gateway)]
    );
    // Provisioning the desk phone's agent resolves the drift.
    agents
        .upsert_agent(v1::UpsertAgentRequest {
            agent_id: "desk-7".into(),
            extension: "1007".into(),
            ..Default::default()
        })
        .await
        .expect("provisioned");
    assert_eq!(gateway_only(&mut agents).await, []);

    // Every agent, a page at a time, in id order.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = agents
            .list_agents(v1::ListAgentsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.agents.into_iter().map(|a| a.agent_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["a-1", "a-2", "desk-7"]);

    let bad = agents
        .upsert_agent(v1::UpsertAgentRequest {
            agent_id: "a-3".into(),
            extension: "12 34".into(),
            sip_user: "has space".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        crate::helpers::violated_fields(&bad),
        ["extension", "sip_user"]
    );
}

#[tokio::test]
async fn a_reused_event_id_with_another_payload_is_acked_as_a_duplicate_id_and_not_stored() {
    let app = spawn_app().await;
    use v1::CallEventType::*;
    let first = CallScript::new("c-1").event(Offered, "").events.remove(0);
    assert_eq!(
        report(&app, first.clone()).await.outcome(),
        v1::AckOutcome::Accepted
    );
    // The same event written another way is the same event: the stored ack.
    let mut same = first.clone();
    same.caller_number = "+14155550100".into();
    assert_eq!(report(&app, same).await.outcome(), v1::AckOutcome::Accepted);
    // The same id for another event is a gateway bug, told as such.
    let mut reused = first.clone();
    reused.caller_number = "+14155550199".into();
    let ack = report(&app, reused.clone()).await;
    assert_eq!(ack.outcome(), v1::AckOutcome::DuplicateId, "{}", ack.reason);
    // In one stream, beside the original.
    let acks = stream_all(&mut app.calls.clone(), vec![first, reused]).await;
    let outcomes: std::collections::BTreeSet<_> = acks.iter().map(|a| a.outcome()).collect();
    assert_eq!(
        outcomes,
        [v1::AckOutcome::Accepted, v1::AckOutcome::DuplicateId].into()
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT caller_number FROM call_events")
        .fetch_all(&app.db)
        .await
        .expect("events");
    assert_eq!(stored, ["+14155550100"], "the first one stands");
    let samples = crate::metrics::scrape(&app).await;
    assert_eq!(
        samples.get(r#"switchboard_call_events_total{outcome="duplicate_id"}"#),
        Some(&2.0),
        "counted"
    );
}

/// Every stored text of the test's database, as one string.
async fn stored_text(app: &TestApp) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&app.db)
    .await
    .expect("tables");
    let mut all = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t"
        )))
        .fetch_all(&app.db)
        .await
        .expect("rows");
        all.push_str(&rows.join("\n"));
    }
    all
}

#[tokio::test]
async fn card_numbers_are_masked_in_attached_data_case_subjects_and_agent_reasons() {
    let app = spawn_app().await;
    let customer = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    // Separated by dots and slashes, which were never masked, and in fields that masked nothing.
    let cards = [
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "3782.822463.10005",
    ];
    use v1::CallEventType::*;
    let mut offered = CallScript::new("c-ivr").event(Offered, "").events.remove(0);
    offered.attached_data.insert("card".into(), cards[0].into());
    offered
        .attached_data
        .insert("cvv".into(), "security code 123".into());
    offered
        .attached_data
        .insert(format!("pan {}", cards[2]), "yes".into());
    assert_eq!(
        report(&app, offered).await.outcome(),
        v1::AckOutcome::Accepted
    );
    app.cases()
        .open_case(v1::OpenCaseRequest {
            request_id: "c-1".into(),
            customer_id: customer.id.clone(),
            subject: format!("refund to {}", cards[1]),
            description: format!("caller read {}", cards[2]),
            priority: v1::CasePriority::Normal.into(),
            actor: "a-17".into(),
        })
        .await
        .expect("opened");
    app.agents
        .clone()
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: "a-17".into(),
            state: v1::AgentState::Away.into(),
            reason: format!("paying {}", cards[0]),
        })
        .await
        .expect("state set");

    let stored = stored_text(&app).await;
    for card in cards {
        let digits: String = card.chars().filter(char::is_ascii_digit).collect();
        let head = &digits[..digits.len() - 4];
        let compact: String = stored
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '*')
            .collect();
        assert!(!stored.contains(card), "{card} stored as sent");
        assert!(!compact.contains(head), "{card}'s digits stored");
    }
    assert!(!stored.contains("code 123"), "the security code is stored");
    assert!(
        stored.contains("****.****.****.1111"),
        "masked, last four kept"
    );
}

/// The events between a call's start and its end write no index entry: each one's update of the
/// call record is HOT (no index names a column they change). Only the insert (OFFERED) and the
/// end (ENDED sets `ended_at`, which the live index tests) touch the indexes. Reads PostgreSQL's
/// own counts for this test's database, which its backends flush within a second or so of going
/// idle.
#[tokio::test]
async fn a_calls_events_between_its_start_and_end_write_no_index_entries() {
    use v1::CallEventType::*;
    let app = spawn_app().await;
    log_in(&app, "a-17").await;
    let script = CallScript::new("c-hot")
        .event(Offered, "")
        .event(Queued, "")
        .event(Ringing, "a-17")
        .event(Answered, "a-17")
        .event(Held, "a-17")
        .event(Resumed, "a-17")
        .event(Ended, "");
    // One at a time: each event is its own batch, so its own update.
    for event in script.events {
        let ack = report(&app, event).await;
        assert_eq!(outcome(&ack), v1::AckOutcome::Accepted, "{ack:?}");
    }
    let counts = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT sum(n_tup_upd)::int8, sum(n_tup_hot_upd)::int8 FROM pg_stat_user_tables \
             WHERE relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'calls'::regclass)",
        )
        .fetch_one(&app.db)
        .await
        .expect("table statistics")
    };
    let counted =
        crate::helpers::eventually(Duration::from_secs(15), || async { counts().await.0 >= 6 })
            .await;
    let (updates, hot) = counts().await;
    assert!(counted, "six updates counted, got {updates}");
    assert_eq!(
        (updates, updates - hot),
        (6, 1),
        "six updates of the call, all HOT but the end's"
    );
}

/// Statements of this database whose text contains each of `fragments`: (calls, plans) each.
/// Needs `pg_stat_statements` preloaded with `track_planning` (scripts/services.sh does both).
async fn statement_counts(db: &sqlx::PgPool, fragments: &[&str]) -> Vec<(i64, i64)> {
    let mut counts = Vec::new();
    for fragment in fragments {
        let row: (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(sum(calls), 0)::int8, COALESCE(sum(plans), 0)::int8 \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND strpos(query, $1) > 0",
        )
        .bind(fragment)
        .fetch_one(db)
        .await
        .expect("pg_stat_statements must be loaded with track_planning on (scripts/services.sh)");
        counts.push(row);
    }
    counts
}

/// The call-event batch's three reads (the acks given, the stored calls, their histories) take
/// arrays and read tables partitioned by month. PostgreSQL's default plan choice finds a custom
/// plan (which knows the array's length and prunes to one month) cheaper every time, so each
/// batch planned them afresh: with other such statements, a fifth of PostgreSQL's time under the
/// mixed load (#25). The batch runs them on generic plans, made once per pooled connection.
#[tokio::test]
async fn the_call_event_batchs_reads_are_planned_once_per_connection_not_per_batch() {
    let app = spawn_app().await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&app.db)
        .await
        .expect("pg_stat_statements");
    let reads = [
        "e.outcome, e.reason, e.payload_hash FROM unnest(",
        "COALESCE(c.last_event_at, c.offered_at) AS \"last_event_at!\"",
        "t.lo AS call_offered_at, e.event_id",
    ];
    let before = statement_counts(&app.db, &reads).await;
    // One event at a time: each is a batch of its own.
    for n in 0..12 {
        for event in CallScript::answered_by(&format!("plans-{n}"), "agent-7").events {
            let ack = report(&app, event).await;
            assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{ack:?}");
        }
    }
    let after = statement_counts(&app.db, &reads).await;
    for ((fragment, (calls0, plans0)), (calls1, plans1)) in reads.iter().zip(before).zip(after) {
        let (calls, plans) = (calls1 - calls0, plans1 - plans0);
        assert!(calls >= 60, "{fragment}: {calls} calls");
        // At most one generic plan per connection of the app's pool (8), whatever the batches.
        assert!(
            plans <= 8,
            "{fragment}: planned {plans} times in {calls} calls"
        );
    }
}

/// A burst past what the server holds open, sent as gateways send (one small HTTP/2 DATA frame
/// per event) on 16 streams of one connection while commits wait: every event is read as it
/// arrives and answered, the 1,024 the instance holds open when they commit and the rest RESEND
/// at once, not stored. The streams and their connection go on, and the events answered RESEND
/// are stored when sent again. Before, the server stopped reading a stream with 64 events in
/// progress, h2 kept the rest unread, and past its budget for small unread frames it closed the
/// connection (GOAWAY ENHANCE_YOUR_CALM): every stream on it failed.
#[tokio::test]
async fn a_burst_past_capacity_is_answered_resend_per_event_and_the_connection_goes_on() {
    const STREAMS: usize = 16;
    const PER_STREAM: usize = 320;
    const OPEN: usize = 1024;
    let total = STREAMS * PER_STREAM;
    let app = spawn_app().await;
    // Commits wait (their insert of the events) while this transaction holds the lock.
    let mut lock = app.db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE call_events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let event = |s: usize, i: usize| v1::CallEvent {
        gateway_id: GATEWAY.into(),
        event_id: format!("b{s}-{i}"),
        call_id: format!("b{s}-{i}"),
        r#type: v1::CallEventType::Offered.into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_800_000_000 + (s * PER_STREAM + i) as i64,
            nanos: 0,
        }),
        caller_number: "+14155550100".into(),
        ..Default::default()
    };
    let mut senders = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = app
            .calls
            .clone()
            .stream_call_events(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        senders.push(tx);
        streams.push(stream);
    }
    let mut acks = futures::stream::select_all(streams);
    // One event at a time on each stream, a millisecond apart: one DATA frame each.
    for i in 0..PER_STREAM {
        for (s, tx) in senders.iter().enumerate() {
            tx.send(v1::StreamCallEventsRequest {
                event: Some(event(s, i)),
            })
            .expect("the stream is open (and its connection)");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut next = async |within: u64| {
        tokio::time::timeout(Duration::from_secs(within), acks.next())
            .await
            .expect("answered")
            .expect("the streams go on")
            .expect("the streams go on (and their connection)")
            .ack
            .expect("ack")
    };
    // While commits wait, everything past the events held open is answered RESEND, at once.
    let mut resend = Vec::new();
    while resend.len() < total - OPEN {
        let ack = next(10).await;
        assert_eq!(outcome(&ack), v1::AckOutcome::Resend, "{ack:?}");
        resend.push(ack.event_id);
    }
    lock.commit().await.expect("unlock");
    // The rest commit, and are acked on their streams.
    for _ in 0..OPEN {
        let ack = next(30).await;
        assert_eq!(outcome(&ack), v1::AckOutcome::Accepted, "{ack:?}");
    }
    // Nothing answered RESEND was stored.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM call_events WHERE event_id = ANY($1)")
            .bind(&resend)
            .fetch_one(&app.db)
            .await
            .expect("count");
    assert_eq!(stored, 0);
    // Sent again, 64 at a time on one stream of the same connection, each is stored once.
    let mut calls = app.calls.clone();
    for chunk in resend.chunks(64) {
        let events = chunk
            .iter()
            .map(|id| {
                let (s, i) = id[1..].split_once('-').expect("id");
                event(s.parse().expect("s"), i.parse().expect("i"))
            })
            .collect();
        for ack in stream_all(&mut calls, events).await {
            assert_eq!(outcome(&ack), v1::AckOutcome::Accepted, "{ack:?}");
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events WHERE gateway_id = $1")
        .bind(GATEWAY)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(stored, total as i64);
}
