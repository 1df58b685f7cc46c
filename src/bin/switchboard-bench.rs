//! `switchboard-bench`: the load generator. Loopback targets only; every run is bounded.
//!
//! Scenario `push`: the time from a gateway sending RINGING to one Switchboard instance until the
//! ringing agent's softphone, watching on another instance (or the same), receives the call with
//! its screen pop. Calls run one after another (closed loop), so each sample is an uncontended
//! end-to-end latency: gateway -> commit -> Redis pub/sub -> watcher -> pop lookup -> softphone.
//! The other scenarios (echo, pop-hot, pop-cold, events, mixed) are issue #6.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use switchboard::proto::v1;
use switchboard::proto::v1::agent_service_client::AgentServiceClient;
use switchboard::proto::v1::call_event_service_client::CallEventServiceClient;
use switchboard::proto::v1::customer_service_client::CustomerServiceClient;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    about = "Switchboard load generator (loopback only)"
)]
struct Args {
    /// Scenario to run.
    #[arg(value_parser = ["push"])]
    scenario: String,
    /// The instance gateways report to.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    gateway_server: String,
    /// The instance agents watch on (another instance to measure cross-instance push).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    agent_server: String,
    /// Calls to ring.
    #[arg(long, default_value_t = 500)]
    calls: u32,
    /// Agents to spread the calls over.
    #[arg(long, default_value_t = 10)]
    agents: u32,
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    let uri: tonic::transport::Uri = url.parse().context("server URL")?;
    match uri.host() {
        Some("127.0.0.1" | "localhost" | "::1" | "[::1]") => {}
        other => bail!("loopback targets only, not {other:?}"),
    }
    Ok(Channel::builder(uri).connect().await?)
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let gateway = connect(&args.gateway_server).await?;
    let agent_side = connect(&args.agent_server).await?;
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
        if received.pop.and_then(|p| p.card).is_none() {
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
    println!("  rings without a card: {without_pop}");
    Ok(())
}
