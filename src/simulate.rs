//! `switchboard simulate`: demo traffic through the public API, as a PBX and its agents would
//! make it, so that a newcomer sees calls ring and the wallboard move.
//!
//! It provisions a small contact center (two teams, two queues, six simulated agents and the
//! agent a person drives from the web desktop), a disposition catalog, then starts calls at the
//! chosen rate. Each call is reported through `CallEventService.ReportCallEvent` like a gateway
//! would: offered, queued, then rung at an available agent and answered, sometimes held,
//! transferred to the other queue or abandoned, then ended. The simulated agents wrap up
//! (`LogInteraction`, `CompleteWrapUp`) and go available again. The person's agent is rung only
//! while they are AVAILABLE, and wraps up from the desktop. Everything goes through the API with
//! one credential (an ADMIN token: the dev token by default), so nothing here touches a database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use tokio::sync::Mutex;

use crate::client::{AuthedChannel, BearerToken};
use crate::config::SimulateArgs;
use crate::proto::v1;
use crate::proto::v1::agent_service_client::AgentServiceClient;
use crate::proto::v1::call_event_service_client::CallEventServiceClient;
use crate::proto::v1::interaction_service_client::InteractionServiceClient;
use crate::proto::v1::screen_pop_service_client::ScreenPopServiceClient;
use crate::proto_time::to_timestamp;

/// (agent id, display name, team, queues).
const BOTS: &[(&str, &str, &str, &[&str])] = &[
    ("bot-ana", "Ana (simulated)", "Sales", &["sales"]),
    ("bot-ben", "Ben (simulated)", "Sales", &["sales"]),
    (
        "bot-chloe",
        "Chloe (simulated)",
        "Sales",
        &["sales", "support"],
    ),
    ("bot-dev", "Dev (simulated)", "Support", &["support"]),
    ("bot-eli", "Eli (simulated)", "Support", &["support"]),
    (
        "bot-fay",
        "Fay (simulated)",
        "Support",
        &["support", "sales"],
    ),
];

/// (code, label, resolves).
const DISPOSITIONS: &[(&str, &str, bool)] = &[
    ("resolved", "Resolved", true),
    ("info-given", "Information given", true),
    ("callback", "Call back later", false),
    ("complaint", "Complaint logged", false),
];

/// The seeded demo customers' numbers (README), and numbers nobody has.
const CALLERS: &[&str] = &[
    "+14155550100",
    "+14155550111",
    "+14155550100",
    "+14155550123",
    "anonymous",
];

#[derive(Clone)]
struct Sim {
    channel: AuthedChannel,
    gateway_id: String,
    human: String,
    /// Simulated agents free to take a call.
    idle: Arc<Mutex<BTreeSet<String>>>,
    /// The person's agent is on one of our calls (rung, talking): not rung again until it ends.
    human_on_call: Arc<Mutex<bool>>,
}

/// Runs until `--calls` calls were started (and finished), or forever.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let token = crate::client::token(args.server.token.as_deref())
        .context("simulate needs an ADMIN token: --token, SWITCHBOARD_TOKEN or .data/dev-token")?;
    let channel = tonic::transport::Channel::from_shared(args.server.server.clone())
        .context("invalid --server URL")?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", args.server.server))?;
    let channel = tonic::service::interceptor::InterceptedService::new(
        channel,
        BearerToken::new(Some(&token))?,
    );
    let sim = Sim {
        channel,
        gateway_id: args.gateway_id.clone(),
        human: args.human_agent.clone(),
        idle: Arc::new(Mutex::new(BOTS.iter().map(|b| b.0.to_owned()).collect())),
        human_on_call: Arc::new(Mutex::new(false)),
    };
    sim.provision().await?;
    println!(
        "simulating {} calls a minute on gateway {:?}; {} rings when available",
        args.calls_per_minute, args.gateway_id, args.human_agent
    );
    let every = Duration::from_secs_f64(60.0 / args.calls_per_minute.max(0.1));
    let mut calls = tokio::task::JoinSet::new();
    let mut started = 0_u64;
    loop {
        if args.calls > 0 && started >= args.calls {
            break;
        }
        started += 1;
        let sim = sim.clone();
        let call_id = format!("sim-{}-{started}", chrono::Utc::now().timestamp_millis());
        calls.spawn(async move {
            if let Err(error) = sim.call(&call_id).await {
                eprintln!("call {call_id}: {error:#}");
            }
        });
        // Arrivals are random (exponential gaps around the rate), as callers are.
        let gap = every
            .mul_f64(-(1.0 - rand::rng().random::<f64>()).ln())
            .min(every * 4);
        tokio::time::sleep(gap).await;
    }
    while calls.join_next().await.is_some() {}
    Ok(())
}

fn seconds(low: f64, high: f64) -> Duration {
    Duration::from_secs_f64(rand::rng().random_range(low..high))
}

impl Sim {
    async fn provision(&self) -> anyhow::Result<()> {
        let mut agents = AgentServiceClient::new(self.channel.clone());
        let human = (
            self.human.as_str(),
            "Demo agent",
            "Support",
            &["support", "sales"][..],
        );
        for (id, name, team, queues) in BOTS.iter().copied().chain([human]) {
            agents
                .upsert_agent(v1::UpsertAgentRequest {
                    agent_id: id.into(),
                    display_name: name.into(),
                    team: team.into(),
                    queues: queues.iter().map(|q| (*q).to_owned()).collect(),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("provisioning {id}"))?;
        }
        for (id, ..) in BOTS {
            self.set_state(id, v1::AgentState::Available).await?;
        }
        let mut interactions = InteractionServiceClient::new(self.channel.clone());
        for (code, label, resolves) in DISPOSITIONS {
            interactions
                .upsert_disposition(v1::UpsertDispositionRequest {
                    disposition: Some(v1::Disposition {
                        code: (*code).into(),
                        label: (*label).into(),
                        resolves: *resolves,
                        active: true,
                    }),
                })
                .await
                .context("writing the disposition catalog")?;
        }
        Ok(())
    }

    async fn set_state(&self, agent: &str, state: v1::AgentState) -> anyhow::Result<()> {
        AgentServiceClient::new(self.channel.clone())
            .set_agent_state(v1::SetAgentStateRequest {
                agent_id: agent.into(),
                state: state.into(),
                reason: String::new(),
            })
            .await?;
        Ok(())
    }

    async fn report(&self, call_id: &str, n: u32, event: v1::CallEvent) -> anyhow::Result<()> {
        let event = v1::CallEvent {
            gateway_id: self.gateway_id.clone(),
            event_id: format!("{call_id}-{n}"),
            call_id: call_id.into(),
            occurred_at: Some(to_timestamp(chrono::Utc::now())),
            sequence: i64::from(n),
            ..event
        };
        let ack = CallEventServiceClient::new(self.channel.clone())
            .report_call_event(v1::ReportCallEventRequest { event: Some(event) })
            .await?
            .into_inner()
            .ack
            .context("no ack")?;
        anyhow::ensure!(
            ack.outcome() == v1::AckOutcome::Accepted,
            "event {n} not accepted: {:?} {}",
            ack.outcome(),
            ack.reason
        );
        Ok(())
    }

    /// An agent for `queue`: the person's agent when they are available (and not on a call),
    /// else an idle simulated agent of the queue.
    async fn take_agent(&self, queue: &str) -> anyhow::Result<Option<String>> {
        let mut on_call = self.human_on_call.lock().await;
        let mut agents = AgentServiceClient::new(self.channel.clone());
        let human = agents
            .list_agent_states(v1::ListAgentStatesRequest {
                agent_id: self.human.clone(),
                limit: 1,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().changes.into_iter().next());
        if !*on_call && human.is_some_and(|c| c.state() == v1::AgentState::Available) {
            *on_call = true;
            return Ok(Some(self.human.clone()));
        }
        drop(on_call);
        let mut idle = self.idle.lock().await;
        let pick = BOTS
            .iter()
            .filter(|(id, .., queues)| queues.contains(&queue) && idle.contains(*id))
            .map(|(id, ..)| (*id).to_owned())
            .next();
        if let Some(id) = &pick {
            idle.remove(id);
        }
        Ok(pick)
    }

    async fn call(&self, call_id: &str) -> anyhow::Result<()> {
        let (caller, queue, abandons, holds, transfers) = {
            let mut rng = rand::rng();
            (
                CALLERS[rng.random_range(0..CALLERS.len())],
                if rng.random_bool(0.5) {
                    "sales"
                } else {
                    "support"
                },
                rng.random_bool(0.12),
                rng.random_bool(0.15),
                rng.random_bool(0.08),
            )
        };
        let event = |kind: v1::CallEventType| v1::CallEvent {
            r#type: kind.into(),
            ..Default::default()
        };
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        self.report(
            call_id,
            next(),
            v1::CallEvent {
                caller_number: caller.into(),
                dialed_number: "+18005550199".into(),
                ..event(v1::CallEventType::Offered)
            },
        )
        .await?;
        self.report(
            call_id,
            next(),
            v1::CallEvent {
                queue: queue.into(),
                ..event(v1::CallEventType::Queued)
            },
        )
        .await?;
        tokio::time::sleep(seconds(1.0, 6.0)).await;
        // Wait for an agent; a caller who waited long enough, or was going to, hangs up.
        let mut agent = None;
        for _ in 0..30 {
            if abandons {
                break;
            }
            agent = self.take_agent(queue).await?;
            if agent.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let Some(agent) = agent else {
            return self
                .report(call_id, next(), event(v1::CallEventType::Abandoned))
                .await;
        };
        let with = |kind| v1::CallEvent {
            agent_id: agent.clone(),
            ..event(kind)
        };
        self.report(call_id, next(), with(v1::CallEventType::Ringing))
            .await?;
        tokio::time::sleep(seconds(2.0, 4.0)).await;
        self.report(call_id, next(), with(v1::CallEventType::Answered))
            .await?;
        if agent != self.human {
            self.set_state(&agent, v1::AgentState::Busy).await?;
        }
        tokio::time::sleep(seconds(8.0, 30.0)).await;
        if holds {
            self.report(call_id, next(), with(v1::CallEventType::Held))
                .await?;
            tokio::time::sleep(seconds(3.0, 10.0)).await;
            self.report(call_id, next(), with(v1::CallEventType::Resumed))
                .await?;
        }
        if transfers {
            let other = if queue == "sales" { "support" } else { "sales" };
            self.report(
                call_id,
                next(),
                v1::CallEvent {
                    target_queue: other.into(),
                    ..with(v1::CallEventType::Transferred)
                },
            )
            .await?;
        }
        tokio::time::sleep(seconds(2.0, 10.0)).await;
        self.report(call_id, next(), event(v1::CallEventType::Ended))
            .await?;
        if agent == self.human {
            // Rung again once the person wrapped up and is available (their desktop says so).
            *self.human_on_call.lock().await = false;
        } else {
            self.wrap_up(&agent, caller, call_id).await?;
        }
        Ok(())
    }

    /// The simulated agent's after-call work: the interaction on the caller's record (when the
    /// number is one customer's), a disposition, then available again.
    async fn wrap_up(&self, agent: &str, caller: &str, call_id: &str) -> anyhow::Result<()> {
        self.set_state(agent, v1::AgentState::AfterCallWork).await?;
        tokio::time::sleep(seconds(3.0, 12.0)).await;
        let pop = ScreenPopServiceClient::new(self.channel.clone())
            .lookup(v1::LookupRequest {
                caller_number: caller.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .pop;
        if let Some(card) = pop.and_then(|p| p.card) {
            let mut interactions = InteractionServiceClient::new(self.channel.clone());
            let now = chrono::Utc::now();
            let logged = interactions
                .log_interaction(v1::LogInteractionRequest {
                    request_id: format!("sim:{call_id}"),
                    customer_id: card.customer_id,
                    channel: v1::Channel::Voice.into(),
                    direction: v1::Direction::Inbound.into(),
                    agent_id: agent.into(),
                    gateway_id: self.gateway_id.clone(),
                    call_id: call_id.into(),
                    started_at: Some(to_timestamp(now - chrono::Duration::seconds(40))),
                    ended_at: Some(to_timestamp(now)),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .interaction
                .context("no interaction")?;
            let code = DISPOSITIONS[rand::rng().random_range(0..DISPOSITIONS.len())].0;
            interactions
                .complete_wrap_up(v1::CompleteWrapUpRequest {
                    interaction_id: logged.id,
                    disposition_code: code.into(),
                    notes: String::new(),
                })
                .await?;
        }
        self.set_state(agent, v1::AgentState::Available).await?;
        self.idle.lock().await.insert(agent.to_owned());
        Ok(())
    }
}
