//! The latency probes: one request at a time, no load.
//!
//! Scenario `push`: the time from a gateway sending RINGING to one Switchboard instance until the
//! ringing agent's softphone, watching on another instance (or the same), receives the call with
//! its screen pop. Calls run one after another (closed loop), so each sample is an uncontended
//! end-to-end latency: gateway -> commit -> Redis pub/sub -> watcher -> pop lookup -> softphone.
//!
//! Scenario `pop`: creates customers whose cards carry an order, an interaction and an open case,
//! then looks each number up once (cold: PostgreSQL, one query) and then many times (hot: Redis),
//! closed loop, and reports the round-trip latency of each kind (server time is below it).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::Args;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use switchboard::client::{AuthedChannel, BearerToken};
use switchboard::proto::v1;
use switchboard::proto::v1::agent_service_client::AgentServiceClient;
use switchboard::proto::v1::call_event_service_client::CallEventServiceClient;
use switchboard::proto::v1::customer_service_client::CustomerServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

fn report(name: &str, histogram: &Histogram<u64>) {
    println!(
        "  {name}: {} lookups, round trip (µs): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
}

/// Customers with a full card, then cold and hot lookups of their numbers.
pub async fn pop_scenario(args: &Args, run: &str) -> anyhow::Result<()> {
    use switchboard::proto::v1::activity_service_client::ActivityServiceClient;
    use switchboard::proto::v1::case_service_client::CaseServiceClient;
    use switchboard::proto::v1::interaction_service_client::InteractionServiceClient;
    use switchboard::proto::v1::screen_pop_service_client::ScreenPopServiceClient;

    let channel = connect(&args.gateway_server, args.token.as_deref()).await?;
    let mut customers = CustomerServiceClient::new(channel.clone());
    let mut activity = ActivityServiceClient::new(channel.clone());
    let mut interactions = InteractionServiceClient::new(channel.clone());
    let mut cases = CaseServiceClient::new(channel.clone());
    let pops = ScreenPopServiceClient::new(channel);
    let exchange = 200 + (chrono::Utc::now().timestamp_millis() % 700);
    let now = switchboard::proto_time::to_timestamp(chrono::Utc::now());
    let mut numbers = Vec::new();
    for i in 0..args.customers {
        let number = format!("+1646{exchange:03}{i:04}");
        let customer = customers
            .create_customer(v1::CreateCustomerRequest {
                display_name: format!("Bench Customer {i}"),
                contact_points: vec![v1::NewContactPoint {
                    kind: v1::ContactKind::Phone.into(),
                    value: number.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await?
            .into_inner()
            .customer
            .context("customer")?;
        let by_id = Some(v1::CustomerRef {
            r#ref: Some(v1::customer_ref::Ref::CustomerId(customer.id.clone())),
        });
        activity
            .record_order(v1::RecordOrderRequest {
                system: "bench".into(),
                order_id: format!("{run}-{i}"),
                customer: by_id,
                amount: Some(v1::Money {
                    currency: "USD".into(),
                    amount_minor: 4999,
                }),
                status: v1::OrderStatus::Paid.into(),
                ordered_at: Some(now),
            })
            .await?;
        interactions
            .log_interaction(v1::LogInteractionRequest {
                request_id: format!("{run}-{i}"),
                customer_id: customer.id.clone(),
                channel: v1::Channel::Voice.into(),
                direction: v1::Direction::Inbound.into(),
                started_at: Some(now),
                ..Default::default()
            })
            .await?;
        cases
            .open_case(v1::OpenCaseRequest {
                request_id: format!("{run}-{i}"),
                customer_id: customer.id,
                subject: "Bench case".into(),
                actor: "bench".into(),
                ..Default::default()
            })
            .await?;
        numbers.push(number);
    }
    let mut by_source: std::collections::BTreeMap<String, Histogram<u64>> = Default::default();
    let lookup = |number: String| {
        let mut pops = pops.clone();
        async move {
            let started = Instant::now();
            let response = pops
                .lookup(v1::LookupRequest {
                    caller_number: number,
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::Ok((response.source(), started.elapsed().as_micros() as u64))
        }
    };
    for number in &numbers {
        let (source, micros) = lookup(number.clone()).await?;
        by_source
            .entry(format!("cold ({source:?})"))
            .or_insert_with(|| Histogram::new(3).expect("histogram"))
            .record(micros)?;
    }
    for i in 0..args.lookups {
        let (source, micros) = lookup(numbers[i as usize % numbers.len()].clone()).await?;
        by_source
            .entry(format!("hot ({source:?})"))
            .or_insert_with(|| Histogram::new(3).expect("histogram"))
            .record(micros)?;
    }
    println!(
        "scenario pop: {} customers with an order, an interaction and an open case each; {}",
        numbers.len(),
        args.gateway_server
    );
    for (name, histogram) in &by_source {
        report(name, histogram);
    }
    Ok(())
}

pub async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<AuthedChannel> {
    let uri: tonic::transport::Uri = url.parse().context("server URL")?;
    match uri.host() {
        Some("127.0.0.1" | "localhost" | "::1" | "[::1]") => {}
        other => bail!("loopback targets only, not {other:?}"),
    }
    let channel = Channel::builder(uri).connect().await?;
    let token = switchboard::client::token(token);
    Ok(InterceptedService::new(
        channel,
        BearerToken::new(token.as_deref())?,
    ))
}

fn event(run: &str, call: u32, n: i64, kind: v1::CallEventType, agent: &str) -> v1::CallEvent {
    let now = chrono::Utc::now();
    v1::CallEvent {
        gateway_id: "bench".into(),
        event_id: format!("{run}-{call}-{n}"),
        call_id: format!("{run}-{call}"),
        r#type: kind.into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        sequence: n,
        caller_number: if kind == v1::CallEventType::Offered {
            "+14155550100".into()
        } else {
            String::new()
        },
        agent_id: agent.into(),
        ..Default::default()
    }
}

/// Rings calls one after another and times each push to the agent's softphone.
pub async fn push_scenario(args: &Args) -> anyhow::Result<()> {
    let gateway = connect(&args.gateway_server, args.token.as_deref()).await?;
    let agent_side = connect(&args.agent_server, args.token.as_deref()).await?;
    let mut calls = CallEventServiceClient::new(gateway.clone());
    let mut agents = AgentServiceClient::new(agent_side);
    let run = format!("b{}", chrono::Utc::now().timestamp_millis());

    // A caller with a card, so every ring carries a real pop.
    CustomerServiceClient::new(gateway)
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Bench Caller".into(),
            request_id: "switchboard-bench-caller".into(),
            contact_points: vec![v1::NewContactPoint {
                kind: v1::ContactKind::Phone.into(),
                value: "+14155550100".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?;

    let mut streams = Vec::new();
    for a in 0..args.agents {
        let agent_id = format!("{run}-a{a}");
        agents
            .set_agent_state(v1::SetAgentStateRequest {
                agent_id: agent_id.clone(),
                state: v1::AgentState::Available.into(),
                reason: String::new(),
            })
            .await?;
        let mut stream = agents
            .watch_agent(v1::WatchAgentRequest {
                agent_id: agent_id.clone(),
            })
            .await?
            .into_inner();
        while let Some(message) = stream.next().await {
            if message?.kind() == v1::AgentCallEventKind::Synced {
                break;
            }
        }
        streams.push((agent_id, stream));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut without_pop = 0;
    let started = Instant::now();
    for call in 0..args.calls {
        let (agent_id, stream) = &mut streams[(call % args.agents) as usize];
        calls
            .report_call_event(v1::ReportCallEventRequest {
                event: Some(event(&run, call, 0, v1::CallEventType::Offered, "")),
            })
            .await?;
        let sent = Instant::now();
        calls
            .report_call_event(v1::ReportCallEventRequest {
                event: Some(event(&run, call, 1, v1::CallEventType::Ringing, agent_id)),
            })
            .await?;
        let received = loop {
            let message = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .context("no push within 5 s")?
                .context("stream ended")??;
            if message.kind() == v1::AgentCallEventKind::Ringing {
                break message;
            }
        };
        histogram.record(sent.elapsed().as_micros() as u64)?;
        // The caller resolves to one card, or to candidates when the number is shared.
        let resolved = received
            .pop
            .is_some_and(|p| p.card.is_some() || !p.candidates.is_empty());
        if !resolved {
            without_pop += 1;
        }
        calls
            .report_call_event(v1::ReportCallEventRequest {
                event: Some(event(&run, call, 2, v1::CallEventType::Ended, "")),
            })
            .await?;
        let _ended = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    }
    println!(
        "scenario push: {} calls in {:.1} s, gateway {} -> agents {}",
        args.calls,
        started.elapsed().as_secs_f64(),
        args.gateway_server,
        args.agent_server
    );
    println!(
        "  RINGING sent -> softphone received (µs): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
    println!("  rings without a resolved caller: {without_pop}");
    Ok(())
}

/// Scenario `sip-ring`: the ring-to-pop latency of a real SIP path (`scripts/sip-bench.sh` drives
/// the calls with SIPp through Kamailio and `switchboard-gateway`). It watches `--sip-agent` and
/// notes when each RINGING arrives (this machine's clock); then it reads, per call, when Kamailio
/// handled the 180 it relayed (the RINGING event's `occurred_at`, Kamailio's `$TV` on the same
/// clock) and reports the difference: Kamailio -> evapi -> adapter (spool fsync) -> gRPC stream ->
/// commit -> Redis pub/sub -> watcher -> pop -> the agent's stream.
pub async fn sip_ring_scenario(args: &Args) -> anyhow::Result<()> {
    let channel = connect(&args.gateway_server, args.token.as_deref()).await?;
    let mut agents = AgentServiceClient::new(channel);
    let mut stream = agents
        .watch_agent(v1::WatchAgentRequest {
            agent_id: args.sip_agent.clone(),
        })
        .await?
        .into_inner();
    println!("watching {}: ready", args.sip_agent);
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    while received.len() < args.calls as usize && Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await
        else {
            continue;
        };
        let message = message?;
        let at = chrono::Utc::now();
        if message.kind() == v1::AgentCallEventKind::Ringing
            && let Some(call) = message.call
        {
            let resolved = message.pop.is_some_and(|p| p.card.is_some());
            received.push((call.call_id, at, resolved));
        }
    }
    let database_url = args
        .database_url
        .as_deref()
        .context("sip-ring reads the events' times: set DATABASE_URL")?;
    let pool = sqlx::PgPool::connect(database_url).await?;
    let ids: Vec<String> = received.iter().map(|(id, ..)| id.clone()).collect();
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT call_id, occurred_at FROM call_events \
         WHERE type = 'ringing' AND outcome = 'accepted' AND call_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;
    let relayed: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        rows.into_iter().collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut without_card = 0;
    for (call_id, at, resolved) in &received {
        if let Some(kamailio) = relayed.get(call_id) {
            let micros = (*at - *kamailio).num_microseconds().unwrap_or(0).max(1);
            histogram.record(micros as u64)?;
        }
        if !resolved {
            without_card += 1;
        }
    }
    println!(
        "scenario sip-ring: {} RINGINGs received, {} matched to Kamailio's 180",
        received.len(),
        histogram.len()
    );
    println!(
        "  Kamailio relayed 180 -> agent's stream got RINGING (µs): p50 {}  p90 {}  p99 {}  max {}",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    println!("  rings without the caller's card: {without_card}");
    Ok(())
}
