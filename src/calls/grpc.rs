//! `switchboard.v1.CallEventService`: event parsing, per-event acks, and the bidirectional stream.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{Stream, StreamExt as _};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use super::machine::{EventType, Step, TransferTarget};
use super::{Ack, CallEventError, CallEvents, NewEvent};
use crate::auth::{self, Principal};
use crate::call_model::parse_agent_id;
use crate::drain::Draining;
use crate::grpc_status;
use crate::metrics::Metrics;
use crate::phone::{Caller, PhoneParser};
use crate::proto::v1;
use crate::proto::v1::call_event_service_server::CallEventService;
use crate::validation::Violations;

/// Events of one stream worked on at once (events of one call are still applied in order).
const STREAM_CONCURRENCY: usize = 64;
/// Events read from any stream of this instance and not answered yet, beyond which a stream's
/// next event is answered RESEND at once: four of the batcher's full batches (two per worker,
/// one committing and one filling), so that both workers commit full batches while an accepted
/// event waits for about two commits, not behind a queue that grows with the overload. A closed
/// loop of 1,024 events in flight, the benchmark's, never meets it. (Half of it cost a fifth of
/// the throughput past capacity: BENCHMARKS.md, #25 sixth pass.)
const MAX_OPEN_EVENTS: usize = 1024;
const MAX_ATTACHED_ENTRIES: usize = 32;

#[derive(Clone)]
pub struct CallEventGrpc {
    events: CallEvents,
    phones: PhoneParser,
    draining: Draining,
    metrics: Arc<Metrics>,
    /// Events read from this instance's streams and not answered yet ([`MAX_OPEN_EVENTS`]).
    open: Arc<AtomicUsize>,
}

impl CallEventGrpc {
    pub fn new(
        events: CallEvents,
        phones: PhoneParser,
        draining: Draining,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            events,
            phones,
            draining,
            metrics,
            open: Arc::default(),
        }
    }

    /// The ack for one event, counted by outcome and timed for the metrics.
    async fn acknowledge(
        &self,
        principal: &Principal,
        event: Option<v1::CallEvent>,
    ) -> Result<v1::CallEventAck, Status> {
        let received = std::time::Instant::now();
        let result = self.decide(principal, event).await;
        let outcome = match &result {
            Ok(ack) => match ack.outcome() {
                v1::AckOutcome::Accepted => "accepted",
                v1::AckOutcome::Rejected => "rejected",
                v1::AckOutcome::DuplicateId => "duplicate_id",
                _ => "invalid",
            },
            Err(_) => "failed",
        };
        self.metrics.call_event(outcome, received.elapsed());
        result
    }

    /// The ack for one event; `Err` only when nothing could be committed.
    async fn decide(
        &self,
        principal: &Principal,
        event: Option<v1::CallEvent>,
    ) -> Result<v1::CallEventAck, Status> {
        let event = event.unwrap_or_default();
        let event_id = event.event_id.clone();
        let parsed = match parse_event(event, &self.phones) {
            Ok(parsed) => parsed,
            Err(violations) => {
                return Ok(v1::CallEventAck {
                    event_id,
                    outcome: v1::AckOutcome::Invalid.into(),
                    reason: violations.to_string(),
                    violations: violations
                        .iter()
                        .map(|v| v1::EventFieldViolation {
                            field: v.field.clone(),
                            description: v.description.clone(),
                        })
                        .collect(),
                });
            }
        };
        if !principal.may_report_for_gateway(&parsed.gateway_id) {
            tracing::info!(subject = %principal.subject, "permission denied: event for another gateway");
            return Err(Status::permission_denied(
                "a gateway may report events only for its own gateway_id",
            ));
        }
        let ack = self.events.ingest(parsed).await?;
        Ok(match ack {
            Ack::Accepted => v1::CallEventAck {
                event_id,
                outcome: v1::AckOutcome::Accepted.into(),
                ..Default::default()
            },
            Ack::Rejected(reason) => v1::CallEventAck {
                event_id,
                outcome: v1::AckOutcome::Rejected.into(),
                reason,
                ..Default::default()
            },
            Ack::Invalid(reason) => v1::CallEventAck {
                event_id,
                outcome: v1::AckOutcome::Invalid.into(),
                reason,
                ..Default::default()
            },
            Ack::DuplicateId => v1::CallEventAck {
                event_id,
                outcome: v1::AckOutcome::DuplicateId.into(),
                reason: "this event_id was used before for an event with another payload; \
                         the first one stands and this one was not stored"
                    .into(),
                ..Default::default()
            },
        })
    }
}

impl From<CallEventError> for Status {
    fn from(error: CallEventError) -> Self {
        match &error {
            CallEventError::Unavailable(source) => grpc_status::unavailable(source),
            CallEventError::Database(source) => grpc_status::internal(source),
        }
    }
}

fn bounded_id(violations: &mut Violations, field: &str, value: &str, max: usize) -> String {
    let value = violations.text(field, value, max, true);
    if value.chars().any(char::is_whitespace) {
        violations.add(field, "must not contain spaces");
    }
    value
}

fn optional_agent(violations: &mut Violations, field: &str, value: &str) -> Option<String> {
    match value.trim() {
        "" => None,
        agent => violations.check(field, parse_agent_id(agent)),
    }
}

fn optional_text(
    violations: &mut Violations,
    field: &str,
    value: &str,
    max: usize,
) -> Option<String> {
    Some(violations.text(field, value, max, false)).filter(|v| !v.is_empty())
}

/// Parses a gateway event; every bad field is reported.
pub fn parse_event(event: v1::CallEvent, phones: &PhoneParser) -> Result<NewEvent, Violations> {
    let mut violations = Violations::new();
    let gateway_id = bounded_id(&mut violations, "gateway_id", &event.gateway_id, 64);
    let event_id = bounded_id(&mut violations, "event_id", &event.event_id, 128);
    let call_id = bounded_id(&mut violations, "call_id", &event.call_id, 128);
    let kind = match v1::CallEventType::try_from(event.r#type) {
        Ok(v1::CallEventType::Offered) => Some(EventType::Offered),
        Ok(v1::CallEventType::Queued) => Some(EventType::Queued),
        Ok(v1::CallEventType::Ringing) => Some(EventType::Ringing),
        Ok(v1::CallEventType::Answered) => Some(EventType::Answered),
        Ok(v1::CallEventType::Held) => Some(EventType::Held),
        Ok(v1::CallEventType::Resumed) => Some(EventType::Resumed),
        Ok(v1::CallEventType::Transferred) => Some(EventType::Transferred),
        Ok(v1::CallEventType::Conferenced) => Some(EventType::Conferenced),
        Ok(v1::CallEventType::Ended) => Some(EventType::Ended),
        Ok(v1::CallEventType::Abandoned) => Some(EventType::Abandoned),
        Ok(v1::CallEventType::Unspecified) | Err(_) => {
            violations.add("type", format!("unknown call event type {}", event.r#type));
            None
        }
    };
    let occurred_at = violations.time("occurred_at", event.occurred_at.as_ref(), true);
    // A withheld caller, or a SIP user that is not a number, is a call with no number: normal.
    let caller_number = match event.caller_number.trim() {
        "" => {
            if kind == Some(EventType::Offered) {
                violations.add("caller_number", "is required on OFFERED");
            }
            None
        }
        number => match violations.check("caller_number", phones.parse_caller(number)) {
            Some(Caller::Number(number)) => Some(number.e164().to_owned()),
            Some(Caller::Withheld | Caller::NotANumber) | None => None,
        },
    };
    let dialed_number = match event.dialed_number.trim() {
        "" => None,
        number => violations
            .check("dialed_number", phones.parse(number, ""))
            .map(|p| p.e164().to_owned()),
    };
    let queue = optional_text(&mut violations, "queue", &event.queue, 64);
    let agent_id = optional_agent(&mut violations, "agent_id", &event.agent_id);
    if matches!(
        kind,
        Some(EventType::Ringing | EventType::Answered | EventType::Conferenced)
    ) && event.agent_id.trim().is_empty()
    {
        violations.add(
            "agent_id",
            "is required on RINGING, ANSWERED and CONFERENCED",
        );
    }
    let target_agent = optional_agent(&mut violations, "target_agent_id", &event.target_agent_id);
    let target_queue = optional_text(&mut violations, "target_queue", &event.target_queue, 64);
    let target = match (kind, target_agent, target_queue) {
        (Some(EventType::Transferred), Some(agent), None) => Some(TransferTarget::Agent(agent)),
        (Some(EventType::Transferred), None, Some(queue)) => Some(TransferTarget::Queue(queue)),
        (Some(EventType::Transferred), _, _) => {
            violations.add(
                "target_agent_id",
                "TRANSFERRED needs exactly one of target_agent_id and target_queue",
            );
            None
        }
        (_, None, None) => None,
        (_, _, _) => {
            violations.add("target_agent_id", "only TRANSFERRED has a target");
            None
        }
    };
    if event.attached_data.len() > MAX_ATTACHED_ENTRIES {
        violations.add(
            "attached_data",
            format!("at most {MAX_ATTACHED_ENTRIES} entries"),
        );
    }
    // IVRs put what callers key in here: keys and values are masked like every free text.
    let mut attached_data = BTreeMap::new();
    let sorted: BTreeMap<String, String> = event.attached_data.into_iter().collect();
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        // The key may be what is wrong with it: the violation names the entry by its position in
        // key order.
        let field = format!("attached_data[{i}]");
        if key.is_empty() || key.chars().count() > 64 || key.chars().any(char::is_control) {
            violations.add(
                format!("{field}.key"),
                "must be 1 to 64 characters without control characters",
            );
            continue;
        }
        let value = violations.free_text(&format!("{field}.value"), &value, 1024);
        let (key, value) = crate::card_data::mask_entry(&key, &value);
        attached_data.insert(key, value);
    }
    let (Some(kind), Some(occurred_at), true) = (kind, occurred_at, violations.is_empty()) else {
        return Err(violations);
    };
    Ok(NewEvent {
        gateway_id,
        call_id,
        step: Step {
            event_id,
            kind,
            occurred_at,
            sequence: event.sequence,
            caller_number,
            dialed_number,
            queue,
            agent_id,
            target,
        },
        attached_data,
    })
}

type AckStream = Pin<Box<dyn Stream<Item = Result<v1::StreamCallEventsResponse, Status>> + Send>>;

/// One of the instance's [`MAX_OPEN_EVENTS`] places, held from an event's read to its answer.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn take(open: &Arc<AtomicUsize>) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_OPEN_EVENTS).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(Arc::clone(open)))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to an event read while the instance had [`MAX_OPEN_EVENTS`] open.
fn resend(event: Option<&v1::CallEvent>) -> v1::StreamCallEventsResponse {
    v1::StreamCallEventsResponse {
        ack: Some(v1::CallEventAck {
            event_id: event.map(|e| e.event_id.clone()).unwrap_or_default(),
            outcome: v1::AckOutcome::Resend.into(),
            reason: format!(
                "not stored: this instance has {MAX_OPEN_EVENTS} events in progress; send it \
                 again once earlier events are acked"
            ),
            ..Default::default()
        }),
    }
}

#[tonic::async_trait]
impl CallEventService for CallEventGrpc {
    type StreamCallEventsStream = AckStream;

    async fn stream_call_events(
        &self,
        request: Request<Streaming<v1::StreamCallEventsRequest>>,
    ) -> Result<Response<Self::StreamCallEventsStream>, Status> {
        let principal = auth::principal(&request)?;
        let this = self.clone();
        // Events of one call wait for the previous event of that call in this stream, so a stream
        // applies them in the order the gateway sent them; other calls proceed concurrently.
        let mut previous: HashMap<(String, String), oneshot::Receiver<()>> = HashMap::new();
        // Every event is read as soon as it arrives. Not reading (backpressure, as before) left
        // the events in the HTTP/2 connection's buffer, and h2 (0.4.16 on) closes a connection
        // that holds many small unread DATA frames (GOAWAY ENHANCE_YOUR_CALM): every stream on
        // it failed. An event read while the instance has MAX_OPEN_EVENTS open is answered
        // RESEND at once; the others queue for one of the stream's STREAM_CONCURRENCY places.
        // On drain: read no further event, ack the ones read, then end the stream cleanly.
        let mut inbound = Box::pin(
            request
                .into_inner()
                .take_until(self.draining.clone().started()),
        );
        let (work, queued) = mpsc::channel(MAX_OPEN_EVENTS);
        let (shed, resends) = mpsc::channel(MAX_OPEN_EVENTS);
        let (open, metrics) = (Arc::clone(&self.open), Arc::clone(&self.metrics));
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let place = match &message {
                    Ok(request) => match Open::take(&open) {
                        Some(place) => Some(place),
                        None => {
                            metrics.call_event_resend();
                            // A client that does not read its acks stops the reading here.
                            if shed.send(Ok(resend(request.event.as_ref()))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    },
                    Err(_) => None,
                };
                if work.send((message, place)).await.is_err() {
                    return;
                }
            }
        });
        let worked = tokio_stream::wrappers::ReceiverStream::new(queued)
            .map(
                move |(message, place): (
                    Result<v1::StreamCallEventsRequest, Status>,
                    Option<Open>,
                )| {
                    let this = this.clone();
                    let principal = principal.clone();
                    let (done, wait_for) = match &message {
                        Ok(request) => {
                            let event = request.event.as_ref();
                            let key = event
                                .map(|e| (e.gateway_id.clone(), e.call_id.clone()))
                                .unwrap_or_default();
                            if previous.len() > 10_000 {
                                previous.retain(|_, rx| {
                                    matches!(
                                        rx.try_recv(),
                                        Err(oneshot::error::TryRecvError::Empty)
                                    )
                                });
                            }
                            let (tx, rx) = oneshot::channel();
                            (Some(tx), previous.insert(key, rx))
                        }
                        Err(_) => (None, None),
                    };
                    // Boxed: the acknowledgement's state machine is large, and `buffer_unordered`
                    // moves each future into a task of its own. Unboxed, copying it there was 14% of
                    // the server's CPU in the closed-loop events benchmark (perf, BENCHMARKS.md).
                    Box::pin(async move {
                        let _place = place;
                        if let Some(wait_for) = wait_for {
                            wait_for.await.ok();
                        }
                        let result = match message {
                            Ok(request) => this
                                .acknowledge(&principal, request.event)
                                .await
                                .map(|ack| v1::StreamCallEventsResponse { ack: Some(ack) }),
                            Err(status) => Err(status),
                        };
                        if let Some(done) = done {
                            done.send(()).ok();
                        }
                        result
                    })
                },
            )
            .buffer_unordered(STREAM_CONCURRENCY);
        let acks =
            futures::stream::select(worked, tokio_stream::wrappers::ReceiverStream::new(resends));
        Ok(Response::new(Box::pin(acks)))
    }

    async fn report_call_event(
        &self,
        request: Request<v1::ReportCallEventRequest>,
    ) -> Result<Response<v1::ReportCallEventResponse>, Status> {
        let principal = auth::principal(&request)?;
        let ack = self
            .acknowledge(&principal, request.into_inner().event)
            .await?;
        Ok(Response::new(v1::ReportCallEventResponse {
            ack: Some(ack),
        }))
    }
}
