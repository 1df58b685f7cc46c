//! Group commit for call events: events arriving together, from any stream, share one
//! transaction (and one WAL flush), and their reads and writes are done a batch at a time.
//!
//! Each of a few workers takes whatever events are queued (at most [`MAX_BATCH`]; it never waits to
//! fill a batch, so an idle system commits each event alone, at once) and, in one transaction:
//! 1. locks every call of the batch, in one fixed order (no deadlock between batches);
//! 2. reads, in one query each, the acks already given (with their payloads' fingerprints), the
//!    calls' accepted histories and their stored states;
//! 3. runs each event through the state machine in arrival order, updating its call's history as
//!    it goes (so two events of one call in a batch behave as they would one after the other);
//! 4. writes the agents first named by accepted events (known from the gateway), every event with
//!    its ack and every changed call record, one statement each;
//! 5. commits; then publishes the batch's changes to the agents in one Redis round trip, and only
//!    then answers each event's waiter (so a call's change is pushed before the gateway can send
//!    the call's next event).
//!
//! If the transaction fails, no event of the batch is acked. A failure that is not PostgreSQL
//! being unavailable is retried one event per transaction, so one bad event cannot fail others;
//! an event whose own transaction PostgreSQL refuses for its data (SQLSTATE classes 22, 23 and
//! 54) is acked INVALID, stored nowhere, and the stream it came on goes on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::machine::{self, CallRecord, CallState, Step};
use super::store::{self, CallKey};
use super::{Ack, CallEventError, CallView, NewEvent, Notice, notices};
use crate::db::{self, Failure};
use crate::ids::{AgentId, CustomerId};
use crate::ingest_backlog::IngestBacklog;
use crate::live::{Live, LiveCall};
use crate::push::Fanout;

/// The most events one transaction takes.
pub const MAX_BATCH: usize = 256;
/// Transactions in flight at once (each holds one pooled connection while it runs).
///
/// Two, not more: a batch takes what queued while the others committed, so fewer workers make
/// fewer, larger batches, and a batch's fixed cost (its reads, the write statement, a commit) is
/// most of its cost when it is small. Measured with the mixed load at 1,500/s (BENCHMARKS.md,
/// #25 third pass): four workers made batches of about three events; two took PostgreSQL from
/// 113-115% of the two cores to 104-106% and the median event ack from 19-22 ms to 12-13 ms,
/// and the closed loop (1,024 in flight, batches of ~160) acked as many events with a lower p99.
pub const WORKERS: usize = 2;

/// What the committed batch says about one event.
struct Committed {
    ack: Ack,
    /// For an event accepted now (not a resend): the call as it stands after it, and who to tell.
    changed: Option<(CallView, Vec<Notice>)>,
}

struct Submission {
    event: NewEvent,
    customer_id: Option<Uuid>,
    done: oneshot::Sender<Result<Ack, CallEventError>>,
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Submission>,
    /// Events submitted and not answered yet (delivery gives way while there are many).
    backlog: IngestBacklog,
}

impl Batcher {
    /// Starts the workers; they stop when every `Batcher` clone is dropped.
    pub fn start(pool: PgPool, fanout: Arc<Fanout>, live: Live, backlog: IngestBacklog) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            let outlets = Outlets {
                fanout: Arc::clone(&fanout),
                live: live.clone(),
            };
            tokio::spawn(work(pool.clone(), outlets, Arc::clone(&rx)));
        }
        Self { tx, backlog }
    }

    /// Commits `event` (with the customer its caller resolved to) in the next batch, and tells
    /// the agents concerned; returns its ack.
    pub async fn commit(
        &self,
        event: NewEvent,
        customer_id: Option<Uuid>,
    ) -> Result<Ack, CallEventError> {
        let _waiting = self.backlog.enter();
        let (done, outcome) = oneshot::channel();
        self.tx
            .send(Submission {
                event,
                customer_id,
                done,
            })
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn stopped() -> CallEventError {
    CallEventError::Unavailable(sqlx::Error::PoolClosed)
}

/// Where a committed batch goes besides the acks.
struct Outlets {
    /// The agents on the calls (before the acks: an agent hears of a call no later than the PBX).
    fanout: Arc<Fanout>,
    /// The live queue state (after the acks: it must not slow them).
    live: Live,
}

async fn work(pool: PgPool, outlets: Outlets, rx: Arc<Mutex<mpsc::UnboundedReceiver<Submission>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let events: Vec<(&NewEvent, Option<Uuid>)> =
            batch.iter().map(|s| (&s.event, s.customer_id)).collect();
        match commit_batch(&pool, &events).await {
            Ok((mut outcomes, live)) => {
                let changes: Vec<(CallView, Vec<Notice>)> = outcomes
                    .iter_mut()
                    .filter_map(|outcome| outcome.changed.take())
                    .collect();
                if !changes.is_empty() {
                    outlets.fanout.publish(&changes).await;
                }
                for (submission, outcome) in batch.into_iter().zip(outcomes) {
                    submission.done.send(Ok(outcome.ack)).ok();
                }
                if !live.is_empty() {
                    outlets.live.record_calls(&live).await;
                }
            }
            Err(error) if batch.len() == 1 => {
                let submission = batch.remove(0);
                submission.done.send(alone_failed(error)).ok();
            }
            Err(error) if !matches!(db::classify(&error), Failure::Unavailable) => {
                tracing::warn!(%error, size = batch.len(), "call event batch failed; retrying one by one");
                for submission in batch {
                    let alone = [(&submission.event, submission.customer_id)];
                    let result = match commit_batch(&pool, &alone).await {
                        Ok((mut outcomes, live)) => {
                            let outcome = outcomes.remove(0);
                            if let Some(change) = outcome.changed {
                                outlets.fanout.publish(&[change]).await;
                            }
                            outlets.live.record_calls(&live).await;
                            Ok(outcome.ack)
                        }
                        Err(error) => alone_failed(error),
                    };
                    submission.done.send(result).ok();
                }
            }
            Err(error) => {
                for submission in batch {
                    submission.done.send(Err(replicate(&error))).ok();
                }
            }
        }
    }
}

/// The answer for an event whose own transaction failed: INVALID when PostgreSQL refused its data
/// (a data exception, a constraint, a value too large: resending it unchanged fails the same way),
/// the error otherwise (the stream ends UNAVAILABLE and the gateway resends).
fn alone_failed(error: sqlx::Error) -> Result<Ack, CallEventError> {
    let code = match &error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    };
    match code {
        Some(code)
            if ["22", "23", "54"]
                .iter()
                .any(|class| code.starts_with(class)) =>
        {
            // The database's message may quote the value: log the class, never the text.
            tracing::warn!(sqlstate = %code, "call event refused by PostgreSQL; acked INVALID");
            Ok(Ack::Invalid(format!(
                "PostgreSQL refused this event's data (SQLSTATE {code}); nothing was stored"
            )))
        }
        _ => Err(CallEventError::from(error)),
    }
}

/// The same failure for each waiter of a failed batch (a `sqlx::Error` cannot be cloned).
fn replicate(error: &sqlx::Error) -> CallEventError {
    match db::classify(error) {
        Failure::Unavailable => {
            CallEventError::Unavailable(sqlx::Error::Io(std::io::Error::other(error.to_string())))
        }
        _ => CallEventError::Database(sqlx::Error::Protocol(error.to_string())),
    }
}

fn key_of(event: &NewEvent) -> CallKey {
    (event.gateway_id.clone(), event.call_id.clone())
}

/// One call a batch touches: stored, or started by one of the batch's events.
struct Instance {
    key: CallKey,
    /// The offer time its row is stored under (`None`: a call this batch starts).
    stored_at: Option<DateTime<Utc>>,
    /// Its offer time as the batch stands, which events are matched against.
    offered_at: DateTime<Utc>,
    history: Vec<Step>,
    /// Its state and on-call agents as stored or as the batch left them.
    current: Option<(CallState, Vec<String>)>,
    /// Its customer as stored.
    customer: Option<Uuid>,
    /// The record to write, with the customer to write.
    record: Option<(CallRecord, Option<Uuid>)>,
}

/// The calls a batch touches, by key: each event belongs to the call of its key offered nearest
/// to it within [`IDENTITY_SPAN`](super::IDENTITY_SPAN), or starts a new one.
#[derive(Default)]
struct Instances {
    all: Vec<Instance>,
    by_key: HashMap<CallKey, Vec<usize>>,
}

impl Instances {
    fn push(&mut self, instance: Instance) -> usize {
        let index = self.all.len();
        self.by_key
            .entry(instance.key.clone())
            .or_default()
            .push(index);
        self.all.push(instance);
        index
    }

    /// The call `event` belongs to (a new one when none is near enough).
    fn of(&mut self, key: &CallKey, at: DateTime<Utc>) -> usize {
        let near = self.by_key.get(key).and_then(|indexes| {
            indexes
                .iter()
                .copied()
                .map(|i| (i, (self.all[i].offered_at - at).abs()))
                .filter(|(_, gap)| *gap <= super::IDENTITY_SPAN)
                .min_by_key(|(i, gap)| (*gap, *i))
                .map(|(i, _)| i)
        });
        near.unwrap_or_else(|| {
            self.push(Instance {
                key: key.clone(),
                stored_at: None,
                offered_at: at,
                history: Vec::new(),
                current: None,
                customer: None,
                record: None,
            })
        })
    }
}

/// The stored calls `events` may continue, with their histories.
async fn load_instances(
    conn: &mut sqlx::PgConnection,
    events: &[(&NewEvent, Option<Uuid>)],
) -> sqlx::Result<Instances> {
    let mut spans: HashMap<CallKey, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    for (event, _) in events {
        let at = event.step.occurred_at;
        let span = spans.entry(key_of(event)).or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
    }
    let windows: Vec<store::CallWindow> = spans
        .into_iter()
        .map(|(key, (first, last))| {
            (
                key,
                first - super::IDENTITY_SPAN,
                last + super::IDENTITY_SPAN,
            )
        })
        .collect();
    let stored = store::calls_within(conn, &windows).await?;
    let calls: Vec<&store::StoredCall> = stored.iter().collect();
    let mut histories = store::accepted_steps_of(conn, &calls).await?;
    let mut instances = Instances::default();
    for call in stored {
        let history = histories
            .remove(&(call.key.clone(), call.offered_at))
            .unwrap_or_default();
        instances.push(Instance {
            stored_at: Some(call.offered_at),
            offered_at: call.offered_at,
            history,
            current: Some((call.state, call.on_call_agents)),
            customer: call.customer_id,
            record: None,
            key: call.key,
        });
    }
    Ok(instances)
}

/// Commits the batch; returns each event's outcome and the live state of each call it changed.
async fn commit_batch(
    pool: &PgPool,
    events: &[(&NewEvent, Option<Uuid>)],
) -> sqlx::Result<(Vec<Committed>, Vec<LiveCall>)> {
    let mut keys: Vec<CallKey> = events.iter().map(|(e, _)| key_of(e)).collect();
    keys.sort();
    keys.dedup();
    let event_keys: Vec<(String, String)> = events
        .iter()
        .map(|(e, _)| (e.gateway_id.clone(), e.step.event_id.clone()))
        .collect();
    let fingerprints: Vec<Vec<u8>> = events.iter().map(|(e, _)| e.fingerprint()).collect();
    let timed_keys: Vec<store::EventKey> = events
        .iter()
        .map(|(e, _)| {
            let (gateway, id) = (e.gateway_id.clone(), e.step.event_id.clone());
            (gateway, id, e.step.occurred_at)
        })
        .collect();

    let mut tx = crate::db::begin_generic(pool).await?;
    store::lock_calls(&mut tx, &keys).await?;
    let stored = store::stored_acks(&mut tx, &timed_keys).await?;
    let mut instances = load_instances(&mut tx, events).await?;

    let mut decided = store::Acks::default();
    let mut writes: Vec<(&NewEvent, Ack, &[u8])> = Vec::new();
    let mut named: HashSet<&str> = HashSet::new();
    let mut outcomes = Vec::with_capacity(events.len());
    let mut feed = Vec::new();
    for (((event, customer_id), event_key), fingerprint) in
        events.iter().zip(&event_keys).zip(&fingerprints)
    {
        // A resend (stored, or earlier in this very batch) gets the ack already given; the same
        // event id with another payload is a gateway bug, told as such and not stored.
        let at = event.step.occurred_at;
        if let Some((ack, hash)) = stored
            .find(event_key, at)
            .or_else(|| decided.find(event_key, at))
        {
            let ack = match hash {
                Some(hash) if hash != fingerprint => {
                    tracing::warn!(event_id = %event_key.1, "event id reused with another payload");
                    Ack::DuplicateId
                }
                _ => ack.clone(),
            };
            outcomes.push(Committed { ack, changed: None });
            continue;
        }
        let index = instances.of(&key_of(event), at);
        let call = &mut instances.all[index];
        // A stored call with no history left: retention dropped its events' months
        // (`--call-event-retention-months`), so nothing can be folded onto it any more.
        let admitted = if call.history.is_empty() && call.stored_at.is_some() {
            Err(machine::Impossible(
                "the call's events are past the call-event retention; it can take no more".into(),
            ))
        } else {
            machine::admit(call.history.clone(), event.step.clone())
        };
        if admitted.is_ok() {
            named.extend(event.agents());
        }
        let outcome = match admitted {
            Err(reason) => {
                tracing::info!(reason = %reason.0, "call event rejected");
                Committed {
                    ack: Ack::Rejected(reason.0),
                    changed: None,
                }
            }
            Ok((history, record)) => {
                let customer = call
                    .record
                    .as_ref()
                    .and_then(|(_, customer)| *customer)
                    .or(*customer_id)
                    .or(call.customer);
                let view = CallView {
                    gateway_id: event.gateway_id.as_str().into(),
                    call_id: event.call_id.clone(),
                    state: record.state,
                    caller_number: record.caller_number.clone(),
                    dialed_number: record.dialed_number.clone(),
                    queue: record.queue.clone(),
                    current_agent: record.current_agent.clone().map(AgentId::new),
                    offered_at: Some(record.offered_at),
                    answered_at: record.answered_at,
                    customer_id: customer_id.map(CustomerId::new),
                };
                feed.push(feed_event(event, &record, customer));
                let notices = notices(call.current.as_ref(), &record, event.step.kind, &view);
                call.current = Some((record.state, record.on_call_agents()));
                call.offered_at = record.offered_at;
                call.history = history;
                call.record = Some((record, customer));
                Committed {
                    ack: Ack::Accepted,
                    changed: Some((view, notices)),
                }
            }
        };
        decided.insert(
            event_key.clone(),
            at,
            (outcome.ack.clone(), Some(fingerprint.clone())),
        );
        writes.push((event, outcome.ack.clone(), fingerprint));
        outcomes.push(outcome);
    }

    let mut named: Vec<&str> = named.into_iter().collect();
    named.sort_unstable();
    let rows: Vec<(&NewEvent, &Ack, &[u8])> = writes.iter().map(|(e, a, h)| (*e, a, *h)).collect();
    let calls: Vec<store::CallWrite> = instances
        .all
        .iter()
        .filter_map(|call| {
            let (record, customer_id) = call.record.as_ref()?;
            Some(store::CallWrite {
                key: &call.key,
                stored_at: call.stored_at,
                record,
                customer_id: *customer_id,
            })
        })
        .collect();
    store::write_batch(
        &mut tx,
        &store::BatchWrite {
            agents: &named,
            events: &rows,
            feed: &feed,
            calls: &calls,
        },
    )
    .await?;
    tx.commit().await?;
    let live = calls
        .iter()
        .map(|call| live_call(&call.key.0, &call.key.1, call.record))
        .collect();
    Ok((outcomes, live))
}

/// The call as the live queue statistics see it. An ended call's time is now, which starts its
/// tombstone's minute (the gateway's clock may differ from ours).
fn live_call(gateway_id: &str, call_id: &str, record: &CallRecord) -> LiveCall {
    LiveCall {
        key: crate::call_model::call_key(&gateway_id.into(), call_id),
        version: i64::from(record.event_count),
        state: record.state,
        queue: record.queue.clone(),
        since: match record.state.is_terminal() {
            true => chrono::Utc::now(),
            false => record.queued_at.unwrap_or(record.offered_at),
        },
        last_event_at: record.last_event_at,
    }
}

/// What the feed says about an accepted call event: the call's state after it, never numbers.
fn feed_event(event: &NewEvent, record: &CallRecord, customer: Option<Uuid>) -> crate::feed::Event {
    crate::feed::Event::new(
        "call.state_changed",
        crate::call_model::call_key(&event.gateway_id.as_str().into(), &event.call_id),
    )
    .customer(customer.map(Into::into))
    .data(serde_json::json!({
        "gateway_id": event.gateway_id,
        "call_id": event.call_id,
        "event": event.step.kind.as_str(),
        "state": record.state.as_str(),
        "outcome": record.outcome.as_str(),
        "queue": record.queue,
        "agent_id": record.current_agent,
        "transfers": record.transfers,
        "occurred_at": event.step.occurred_at,
    }))
}
