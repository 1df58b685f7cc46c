//! The scenarios' requests.
//!
//! - `echo`: `DiagnosticsService.Echo` with 32 bytes: the ceiling of gRPC (and the auth layer) here.
//! - `pop-hot`: lookups of numbers drawn from a sample of the seeded population with a Zipf
//!   distribution (rank `r` drawn with weight `1 / r^s`), after a warm-up pass that looked every
//!   sampled number up once; labels show where each answer came from (Cache, Database...).
//! - `pop-cold`: every lookup a number not looked up before in this run (each sampled number once,
//!   in random order), so each is a cache miss unless an earlier run cached it (the labels show it).
//! - `events`: gateway call events over `streams` bidirectional streams. Each call is OFFERED (the
//!   caller a sampled number, so the server resolves and pins a real card), RINGING, ANSWERED and
//!   ENDED, each event acked by the server only after its commit.
//! - `mixed`: a contact-center day in the ratio of one call's traffic: four call events, two screen
//!   pops, one interaction logged at wrap-up, one customer read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use switchboard::client::AuthedChannel;
use switchboard::proto::v1;
use switchboard::proto::v1::agent_service_client::AgentServiceClient;
use switchboard::proto::v1::call_event_service_client::CallEventServiceClient;
use switchboard::proto::v1::customer_service_client::CustomerServiceClient;
use switchboard::proto::v1::diagnostics_service_client::DiagnosticsServiceClient;
use switchboard::proto::v1::interaction_service_client::InteractionServiceClient;
use switchboard::proto::v1::screen_pop_service_client::ScreenPopServiceClient;
use tokio::sync::{mpsc, oneshot};
use tonic::Request;

use crate::engine::{Done, Job, Workload};

/// Every request carries a deadline, so a stalled server cannot hang the run.
const DEADLINE: Duration = Duration::from_secs(10);

fn with_deadline<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

/// The server's time from its `server-timing: app;dur=<ms>` header, in µs.
fn server_us(metadata: &tonic::metadata::MetadataMap) -> Option<u64> {
    server_us_of(metadata.get("server-timing").map(|v| v.as_ref()))
}

/// The server's time in a `server-timing: app;dur=<ms>` header value, in µs.
pub fn server_us_of(header: Option<&[u8]>) -> Option<u64> {
    let value = std::str::from_utf8(header?).ok()?;
    let ms: f64 = value
        .split("app;dur=")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((ms * 1000.0) as u64)
}

fn done<T>(label: &str, result: Result<tonic::Response<T>, tonic::Status>) -> Done {
    match result {
        Ok(response) => Done {
            label: label.to_owned(),
            result: Ok(()),
            server_us: server_us(response.metadata()),
        },
        Err(status) => Done {
            label: label.to_owned(),
            result: Err(status.code()),
            server_us: None,
        },
    }
}

/// Numbers (and their customers) sampled from the seeded population.
pub struct Population {
    pub numbers: Vec<String>,
    pub customers: Vec<String>,
}

impl Population {
    /// Samples `count` distinct phone numbers of live customers in a pseudo-random order that is
    /// the same on every run (so a warmed sample stays warm for the next run).
    pub async fn sample(database_url: &str, count: usize) -> anyhow::Result<Self> {
        let pool = sqlx::PgPool::connect(database_url)
            .await
            .context("connecting to the seeded database (--database-url)")?;
        let mut rows: Vec<(String, uuid::Uuid)> = sqlx::query_as(
            "SELECT cp.value, cp.customer_id FROM contact_points cp \
             JOIN customers c ON c.id = cp.customer_id AND c.deleted_at IS NULL \
             WHERE cp.kind = 'phone' ORDER BY hashtextextended(cp.value, 11) LIMIT $1",
        )
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(&pool)
        .await?;
        // A number shared by several customers appears once.
        let mut seen = std::collections::HashSet::new();
        rows.retain(|(number, _)| seen.insert(number.clone()));
        anyhow::ensure!(
            !rows.is_empty(),
            "the database has no customers: seed it first (switchboard seed --customers 1000000)"
        );
        Ok(Self {
            numbers: rows.iter().map(|(n, _)| n.clone()).collect(),
            customers: rows.iter().map(|(_, c)| c.to_string()).collect(),
        })
    }
}

/// Ranks drawn with probability proportional to `1 / rank^s`.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// The 0-based rank for the uniform draw `u` in [0, 1).
    pub fn rank(&self, u: f64) -> usize {
        let target = u * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative
            .partition_point(|&c| c <= target)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

/// Channels round robin by request index.
#[derive(Clone)]
pub struct Connections(pub Arc<Vec<AuthedChannel>>);

impl Connections {
    fn pick(&self, index: u64) -> AuthedChannel {
        self.0[(index % self.0.len() as u64) as usize].clone()
    }
}

pub fn rng(index: u64) -> SmallRng {
    SmallRng::seed_from_u64(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub struct Echo(pub Connections);

impl Workload for Echo {
    fn job(&self, index: u64) -> Job {
        let mut client = DiagnosticsServiceClient::new(self.0.pick(index));
        Box::pin(async move {
            let result = client
                .echo(with_deadline(v1::EchoRequest {
                    payload: vec![7; 32],
                }))
                .await;
            done("echo", result)
        })
    }
}

async fn lookup(channel: AuthedChannel, number: String) -> Done {
    let result = ScreenPopServiceClient::new(channel)
        .lookup(with_deadline(v1::LookupRequest {
            caller_number: number,
            ..Default::default()
        }))
        .await;
    let label = match &result {
        Ok(response) => format!("pop {:?}", response.get_ref().source()),
        Err(_) => "pop".to_owned(),
    };
    done(&label, result)
}

pub struct PopHot {
    pub connections: Connections,
    pub numbers: Arc<Vec<String>>,
    pub zipf: Zipf,
}

impl Workload for PopHot {
    fn job(&self, index: u64) -> Job {
        let rank = self.zipf.rank(rng(index).random::<f64>());
        let number = self.numbers[rank].clone();
        Box::pin(lookup(self.connections.pick(index), number))
    }
}

/// Each number once, in order; past the end, around again (and then hot: the labels show it).
pub struct PopCold {
    pub connections: Connections,
    pub numbers: Arc<Vec<String>>,
}

impl Workload for PopCold {
    fn job(&self, index: u64) -> Job {
        let number = self.numbers[(index % self.numbers.len() as u64) as usize].clone();
        Box::pin(lookup(self.connections.pick(index), number))
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<v1::CallEventAck>>>>;

/// One open `StreamCallEvents` stream: events go in through `tx`, acks are matched by event id.
struct GatewayStream {
    tx: mpsc::UnboundedSender<v1::StreamCallEventsRequest>,
    pending: Pending,
}

pub struct Events {
    streams: Vec<GatewayStream>,
    numbers: Arc<Vec<String>>,
    run: String,
    agents: u64,
}

pub const GATEWAY: &str = "bench";

/// Calls in progress at once on one gateway stream.
const CALLS_PER_STREAM: u64 = 16;

impl Events {
    /// Logs `agents` agents in and opens `streams` streams over the connections.
    pub async fn open(
        connections: &Connections,
        streams: usize,
        agents: u64,
        numbers: Arc<Vec<String>>,
        run: &str,
    ) -> anyhow::Result<Self> {
        let mut agent_client = AgentServiceClient::new(connections.pick(0));
        for a in 0..agents {
            agent_client
                .set_agent_state(v1::SetAgentStateRequest {
                    agent_id: format!("bench-a{a}"),
                    state: v1::AgentState::Available.into(),
                    reason: String::new(),
                })
                .await?;
        }
        let mut opened = Vec::with_capacity(streams);
        for s in 0..streams {
            let (tx, rx) = mpsc::unbounded_channel();
            let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let mut acks = CallEventServiceClient::new(connections.pick(s as u64))
                .stream_call_events(requests)
                .await?
                .into_inner();
            let pending: Pending = Arc::default();
            let matcher = Arc::clone(&pending);
            tokio::spawn(async move {
                loop {
                    let response = match acks.next().await {
                        Some(Ok(response)) => response,
                        Some(Err(status)) => {
                            // Once per stream: every event it still carries fails with it.
                            eprintln!(
                                "event stream {s} ended at {:?}: {status}",
                                std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .unwrap_or_default()
                                    .as_millis()
                                    % 100_000
                            );
                            break;
                        }
                        None => break,
                    };
                    let Some(ack) = response.ack else { continue };
                    let waiter = matcher
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&ack.event_id));
                    if let Some(waiter) = waiter {
                        waiter.send(ack).ok();
                    }
                }
                // The stream ended: whoever still waits gets an error (their sender drops).
                if let Ok(mut p) = matcher.lock() {
                    p.clear();
                }
            });
            opened.push(GatewayStream { tx, pending });
        }
        Ok(Self {
            streams: opened,
            numbers,
            run: run.to_owned(),
            agents,
        })
    }

    /// Event `index`: stream `index % streams`; on that stream, [`CALLS_PER_STREAM`] calls at a
    /// time, four events each, sent in order.
    fn event(&self, index: u64) -> (usize, v1::CallEvent) {
        use v1::CallEventType::{Answered, Ended, Offered, Ringing};
        let streams = self.streams.len() as u64;
        let stream = index % streams;
        let local = index / streams;
        // Each stream carries CALLS_PER_STREAM calls at once, their events interleaved; the
        // events of one call are in order on its stream.
        let (slot, round) = (local % CALLS_PER_STREAM, local / CALLS_PER_STREAM);
        let (call, step) = ((round / 4) * CALLS_PER_STREAM + slot, round % 4);
        let call_id = format!("{}-s{stream}-c{call}", self.run);
        let agent = format!("bench-a{}", (stream * 7919 + call) % self.agents);
        let (kind, agent) = match step {
            0 => (Offered, String::new()),
            1 => (Ringing, agent),
            2 => (Answered, agent),
            _ => (Ended, String::new()),
        };
        let now = chrono::Utc::now();
        let caller = self.numbers
            [((stream * 1_000_003 + call) % self.numbers.len() as u64) as usize]
            .clone();
        let event = v1::CallEvent {
            gateway_id: GATEWAY.into(),
            event_id: format!("{call_id}-{step}"),
            call_id,
            r#type: kind.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: now.timestamp_subsec_nanos() as i32,
            }),
            sequence: step as i64,
            caller_number: if kind == Offered {
                caller
            } else {
                String::new()
            },
            dialed_number: if kind == Offered {
                "+18005550199".into()
            } else {
                String::new()
            },
            queue: if kind == Offered {
                "bench".into()
            } else {
                String::new()
            },
            agent_id: agent,
            ..Default::default()
        };
        (stream as usize, event)
    }
}

impl Workload for Events {
    fn job(&self, index: u64) -> Job {
        let (stream, event) = self.event(index);
        let stream = &self.streams[stream];
        let (done, ack) = oneshot::channel();
        if let Ok(mut pending) = stream.pending.lock() {
            pending.insert(event.event_id.clone(), done);
        }
        let sent = stream
            .tx
            .send(v1::StreamCallEventsRequest { event: Some(event) });
        Box::pin(async move {
            let result = if sent.is_err() {
                Err(tonic::Code::Unavailable)
            } else {
                match tokio::time::timeout(DEADLINE, ack).await {
                    Ok(Ok(ack)) if ack.outcome() == v1::AckOutcome::Accepted => Ok(()),
                    // Shed: the instance held 1,024 events open (not stored; a gateway resends).
                    Ok(Ok(ack)) if ack.outcome() == v1::AckOutcome::Resend => {
                        Err(tonic::Code::ResourceExhausted)
                    }
                    // A rejected or invalid ack is an answer, but not the one expected here.
                    Ok(Ok(_)) => Err(tonic::Code::FailedPrecondition),
                    Ok(Err(_)) => Err(tonic::Code::Unavailable),
                    Err(_) => Err(tonic::Code::DeadlineExceeded),
                }
            };
            Done {
                label: "event".to_owned(),
                result,
                server_us: None,
            }
        })
    }
}

/// Per eight requests: four call events, two pops, one interaction, one customer read.
pub struct Mixed {
    pub connections: Connections,
    pub events: Events,
    pub pops: PopHot,
    pub customers: Arc<Vec<String>>,
    pub run: String,
}

impl Workload for Mixed {
    fn job(&self, index: u64) -> Job {
        let round = index / 8;
        match index % 8 {
            0..=3 => self.events.job(round * 4 + index % 8),
            4 | 5 => self.pops.job(index),
            6 => {
                let customer =
                    self.customers[(round % self.customers.len() as u64) as usize].clone();
                let mut client = InteractionServiceClient::new(self.connections.pick(index));
                let request = v1::LogInteractionRequest {
                    request_id: format!("{}-i{index}", self.run),
                    customer_id: customer,
                    channel: v1::Channel::Voice.into(),
                    direction: v1::Direction::Inbound.into(),
                    agent_id: format!("bench-a{}", round % 50),
                    disposition_code: String::new(),
                    notes: "Asked about the last invoice; explained the proration.".into(),
                    started_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
                    ..Default::default()
                };
                Box::pin(async move {
                    let result = client.log_interaction(with_deadline(request)).await;
                    done("log interaction", result)
                })
            }
            _ => {
                let id =
                    self.customers[(round * 31 % self.customers.len() as u64) as usize].clone();
                let mut client = CustomerServiceClient::new(self.connections.pick(index));
                Box::pin(async move {
                    let result = client
                        .get_customer(with_deadline(v1::GetCustomerRequest { id }))
                        .await;
                    done("get customer", result)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favors_low_ranks_and_stays_in_range() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.rank(rng.random::<f64>())] += 1;
        }
        assert!(counts[0] > counts[9] && counts[9] > counts[99] && counts[99] > counts[999]);
        // Rank 1 has weight 1 / H(1000) ≈ 13.4%.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.999_999_9), 999);
    }
}
