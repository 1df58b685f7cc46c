//! PostgreSQL access for call events and call records.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::machine::{CallRecord, CallState, EventType, Step, TransferTarget};
use super::{Ack, CallView, NewEvent};

fn step_from_row(row: &sqlx::postgres::PgRow) -> sqlx::Result<Step> {
    let kind: String = row.try_get("type")?;
    let target_agent: Option<String> = row.try_get("target_agent_id")?;
    let target_queue: Option<String> = row.try_get("target_queue")?;
    Ok(Step {
        event_id: row.try_get("event_id")?,
        kind: EventType::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("event type {kind}").into()))?,
        occurred_at: row.try_get("occurred_at")?,
        sequence: row.try_get("sequence")?,
        caller_number: row.try_get("caller_number")?,
        dialed_number: row.try_get("dialed_number")?,
        queue: row.try_get("queue")?,
        agent_id: row.try_get("agent_id")?,
        target: target_agent
            .map(TransferTarget::Agent)
            .or(target_queue.map(TransferTarget::Queue)),
    })
}

#[derive(sqlx::FromRow)]
struct CallViewRow {
    gateway_id: String,
    call_id: String,
    state: String,
    caller_number: Option<String>,
    dialed_number: Option<String>,
    queue: Option<String>,
    current_agent: Option<String>,
    offered_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    customer_id: Option<Uuid>,
}

/// Calls the agent is on now (ringing, connected, held or conferenced), oldest first: the live
/// calls (index `calls_live_idx`) that name the agent.
pub async fn active_calls_for_agent(
    conn: &mut PgConnection,
    agent_id: &str,
) -> sqlx::Result<Vec<CallView>> {
    let rows = sqlx::query_as!(
        CallViewRow,
        "SELECT gateway_id, call_id, state, caller_number, dialed_number, queue, current_agent, offered_at, \
                answered_at, customer_id \
         FROM calls WHERE ended_at IS NULL AND on_call_agents @> ARRAY[$1] \
         ORDER BY offered_at, gateway_id, call_id",
        agent_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| CallView {
            gateway_id: row.gateway_id.into(),
            call_id: row.call_id,
            state: CallState::parse(&row.state).unwrap_or(CallState::Offered),
            caller_number: row.caller_number,
            dialed_number: row.dialed_number,
            queue: row.queue,
            current_agent: row.current_agent.map(Into::into),
            offered_at: row.offered_at,
            answered_at: row.answered_at,
            customer_id: row.customer_id.map(Into::into),
        })
        .collect())
}

/// A call's key: (gateway id, call id).
pub type CallKey = (String, String);

fn unzip_keys(keys: &[CallKey]) -> (Vec<String>, Vec<String>) {
    keys.iter().cloned().unzip()
}

/// A call's transaction-scoped lock key, from columns `g` (gateway id) and `c` (call id). Every
/// writer of a call's record takes it first: call-event batches, and the chain stamper.
macro_rules! call_lock_key {
    () => {
        "hashtextextended(g || '/' || c, 7)"
    };
}

/// Takes the transaction-scoped lock of every call in `keys`, in one fixed order (by lock key),
/// so that two batches sharing calls can never deadlock.
pub async fn lock_calls(conn: &mut PgConnection, keys: &[CallKey]) -> sqlx::Result<()> {
    let (gateways, calls) = unzip_keys(keys);
    sqlx::query(concat!(
        "SELECT pg_advisory_xact_lock(k) FROM ( \
           SELECT DISTINCT ",
        call_lock_key!(),
        " AS k FROM unnest($1::text[], $2::text[]) AS t(g, c)) locks \
         ORDER BY k",
    ))
    .bind(gateways)
    .bind(calls)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the lock of each call in `keys` that no other transaction holds, without waiting;
/// returns the calls locked.
pub async fn try_lock_calls(
    conn: &mut PgConnection,
    keys: &[CallKey],
) -> sqlx::Result<Vec<CallKey>> {
    let (gateways, calls) = unzip_keys(keys);
    sqlx::query_as(concat!(
        "SELECT g, c FROM unnest($1::text[], $2::text[]) AS t(g, c) \
         WHERE pg_try_advisory_xact_lock(",
        call_lock_key!(),
        ")",
    ))
    .bind(gateways)
    .bind(calls)
    .fetch_all(conn)
    .await
}

/// An ack already given, with the fingerprint of the payload it was given to (`None` for events
/// stored before fingerprints were kept).
pub type StoredAck = (Ack, Option<Vec<u8>>);

/// The acks given under each (gateway id, event id), with the time of the event each was given
/// to.
#[derive(Default)]
pub struct Acks(HashMap<(String, String), Vec<TimedAck>>);

/// An ack with the time of the event it was given to.
type TimedAck = (DateTime<Utc>, StoredAck);

impl Acks {
    /// The ack given to an event of this gateway and id within
    /// [`IDENTITY_SPAN`](super::IDENTITY_SPAN) of `at`, if any (the nearest).
    pub fn find(&self, key: &(String, String), at: DateTime<Utc>) -> Option<&StoredAck> {
        self.0
            .get(key)?
            .iter()
            .filter(|(then, _)| (at - *then).abs() <= super::IDENTITY_SPAN)
            .min_by_key(|(then, _)| (at - *then).abs())
            .map(|(_, ack)| ack)
    }

    pub fn insert(&mut self, key: (String, String), at: DateTime<Utc>, ack: StoredAck) {
        self.0.entry(key).or_default().push((at, ack));
    }
}

/// An event's key and time: (gateway id, event id, occurred at).
pub type EventKey = (String, String, DateTime<Utc>);

/// The acks already given to any of these events: a stored event of the same gateway and event
/// id within [`IDENTITY_SPAN`](super::IDENTITY_SPAN) of the event's time (so each key reads the
/// one or two months around it, never every month). An event sent twice in one batch reads its
/// stored ack twice; [`Acks`] keeps both, and finds either.
pub async fn stored_acks(conn: &mut PgConnection, events: &[EventKey]) -> sqlx::Result<Acks> {
    let mut gateways = Vec::with_capacity(events.len());
    let mut ids = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    for (gateway, id, at) in events {
        gateways.push(gateway.clone());
        ids.push(id.clone());
        times.push(*at);
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        gateway_id: String,
        event_id: String,
        occurred_at: DateTime<Utc>,
        outcome: String,
        reason: String,
        payload_hash: Option<Vec<u8>>,
    }
    let rows = sqlx::query_as!(
        Row,
        "SELECT e.gateway_id, e.event_id, e.occurred_at, e.outcome, e.reason, e.payload_hash \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS t(g, id, at) \
         JOIN call_events e ON e.gateway_id = t.g AND e.event_id = t.id \
           AND e.occurred_at BETWEEN t.at - make_interval(secs => $4) AND t.at + make_interval(secs => $4)",
        &gateways,
        &ids,
        &times,
        super::IDENTITY_SPAN.num_seconds() as f64
    )
    .fetch_all(conn)
    .await?;
    let mut acks = Acks::default();
    for row in rows {
        let ack = if row.outcome == "accepted" {
            Ack::Accepted
        } else {
            Ack::Rejected(row.reason)
        };
        acks.insert(
            (row.gateway_id, row.event_id),
            row.occurred_at,
            (ack, row.payload_hash),
        );
    }
    Ok(acks)
}

/// A stored call a batch may continue: its key, the offer time its row is stored under, its
/// last accepted event's time, its state and on-call agents, and its customer.
pub struct StoredCall {
    pub key: CallKey,
    pub offered_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub state: CallState,
    pub on_call_agents: Vec<String>,
    pub customer_id: Option<Uuid>,
}

/// A call key with the offer times to look between: (key, from, to).
pub type CallWindow = (CallKey, DateTime<Utc>, DateTime<Utc>);

/// The stored calls of each key offered within its window (`calls` is partitioned on the offer
/// time, so each key reads only the months of its window).
pub async fn calls_within(
    conn: &mut PgConnection,
    windows: &[CallWindow],
) -> sqlx::Result<Vec<StoredCall>> {
    let WindowColumns {
        gateways,
        calls,
        from,
        to,
    } = WindowColumns::of(windows);
    #[derive(sqlx::FromRow)]
    struct Row {
        gateway_id: String,
        call_id: String,
        offered_at: DateTime<Utc>,
        last_event_at: DateTime<Utc>,
        state: String,
        on_call_agents: Vec<String>,
        customer_id: Option<Uuid>,
    }
    let rows = sqlx::query_as!(
        Row,
        "SELECT c.gateway_id, c.call_id, c.offered_at, \
                COALESCE(c.last_event_at, c.offered_at) AS \"last_event_at!\", c.state, \
                c.on_call_agents, c.customer_id \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(g, c, lo, hi) \
         JOIN calls c ON c.gateway_id = t.g AND c.call_id = t.c AND c.offered_at BETWEEN t.lo AND t.hi",
        &gateways,
        &calls,
        &from,
        &to
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let state = CallState::parse(&row.state)
                .ok_or_else(|| sqlx::Error::Decode(format!("call state {}", row.state).into()))?;
            Ok(StoredCall {
                key: (row.gateway_id, row.call_id),
                offered_at: row.offered_at,
                last_event_at: row.last_event_at,
                state,
                on_call_agents: row.on_call_agents,
                customer_id: row.customer_id,
            })
        })
        .collect()
}

/// Windows as `unnest` columns: gateway ids, call ids, from, to.
#[derive(Default)]
struct WindowColumns {
    gateways: Vec<String>,
    calls: Vec<String>,
    from: Vec<DateTime<Utc>>,
    to: Vec<DateTime<Utc>>,
}

impl WindowColumns {
    fn of(windows: &[CallWindow]) -> Self {
        let mut columns = Self::default();
        for ((gateway, call), from, to) in windows {
            columns.gateways.push(gateway.clone());
            columns.calls.push(call.clone());
            columns.from.push(*from);
            columns.to.push(*to);
        }
        columns
    }
}

/// The accepted histories of these stored calls, each sorted as the machine applies them, by
/// (key, offer time). A call's accepted events lie between its first and its last (`offered_at`
/// and `last_event_at`), so each reads only the months of its own span.
pub async fn accepted_steps_of(
    conn: &mut PgConnection,
    calls: &[&StoredCall],
) -> sqlx::Result<HashMap<(CallKey, DateTime<Utc>), Vec<Step>>> {
    let windows: Vec<CallWindow> = calls
        .iter()
        .map(|call| (call.key.clone(), call.offered_at, call.last_event_at))
        .collect();
    let WindowColumns {
        gateways,
        calls: ids,
        from,
        to,
    } = WindowColumns::of(&windows);
    let rows = sqlx::query(
        "SELECT t.g AS gateway_id, t.c AS call_id, t.lo AS call_offered_at, e.event_id, e.type, \
                e.occurred_at, e.sequence, e.caller_number, e.dialed_number, e.queue, e.agent_id, \
                e.target_agent_id, e.target_queue \
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(g, c, lo, hi) \
         JOIN call_events e ON e.gateway_id = t.g AND e.call_id = t.c \
           AND e.occurred_at BETWEEN t.lo AND t.hi \
         WHERE e.outcome = 'accepted' \
         ORDER BY t.g, t.c, t.lo, e.occurred_at, e.sequence, e.event_id",
    )
    .bind(gateways)
    .bind(ids)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?;
    let mut histories: HashMap<(CallKey, DateTime<Utc>), Vec<Step>> = HashMap::new();
    for row in &rows {
        let key = (row.try_get("gateway_id")?, row.try_get("call_id")?);
        let offered_at = row.try_get("call_offered_at")?;
        histories
            .entry((key, offered_at))
            .or_default()
            .push(step_from_row(row)?);
    }
    Ok(histories)
}

/// A batch's writes: the agents its accepted events named, its events with their acks (accepted
/// or rejected: the others are never stored) and payload fingerprints, their feed events, and the
/// folded record of each call it changed (a matched customer is kept once set).
pub struct BatchWrite<'a> {
    pub agents: &'a [&'a str],
    pub events: &'a [(&'a NewEvent, &'a Ack, &'a [u8])],
    pub feed: &'a [crate::feed::Event],
    pub calls: &'a [CallWrite<'a>],
}

/// A call's record to write: a stored call's row (found by its key and the offer time it is
/// stored under, which the record may move) or a new one.
pub struct CallWrite<'a> {
    pub key: &'a CallKey,
    pub stored_at: Option<DateTime<Utc>>,
    pub record: &'a CallRecord,
    pub customer_id: Option<Uuid>,
}

/// The events' columns, for `unnest` (`$7`-`$22` of [`write_batch`]'s statement).
#[derive(Default)]
struct EventColumns<'a> {
    gateway_id: Vec<&'a str>,
    event_id: Vec<&'a str>,
    call_id: Vec<&'a str>,
    kind: Vec<&'static str>,
    occurred_at: Vec<DateTime<Utc>>,
    sequence: Vec<i64>,
    caller_number: Vec<Option<&'a str>>,
    dialed_number: Vec<Option<&'a str>>,
    queue: Vec<Option<&'a str>>,
    agent_id: Vec<Option<&'a str>>,
    target_agent_id: Vec<Option<&'a str>>,
    target_queue: Vec<Option<&'a str>>,
    attached_data: Vec<sqlx::types::Json<&'a std::collections::BTreeMap<String, String>>>,
    outcome: Vec<&'static str>,
    reason: Vec<&'a str>,
    payload_hash: Vec<&'a [u8]>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &'a [(&'a NewEvent, &'a Ack, &'a [u8])]) -> Self {
        let mut columns = Self::default();
        for (event, ack, hash) in events {
            let step = &event.step;
            let (outcome, reason) = match ack {
                Ack::Accepted => ("accepted", ""),
                Ack::Rejected(reason) => ("rejected", reason.as_str()),
                // Never written (`commit_batch` stores only these two); the CHECK would refuse it.
                Ack::Invalid(_) | Ack::DuplicateId => ("", ""),
            };
            let (target_agent, target_queue) = TransferTarget::columns(step.target.as_ref());
            columns.gateway_id.push(&event.gateway_id);
            columns.event_id.push(&step.event_id);
            columns.call_id.push(&event.call_id);
            columns.kind.push(step.kind.as_str());
            columns.occurred_at.push(step.occurred_at);
            columns.sequence.push(step.sequence);
            columns.caller_number.push(step.caller_number.as_deref());
            columns.dialed_number.push(step.dialed_number.as_deref());
            columns.queue.push(step.queue.as_deref());
            columns.agent_id.push(step.agent_id.as_deref());
            columns.target_agent_id.push(target_agent);
            columns.target_queue.push(target_queue);
            columns
                .attached_data
                .push(sqlx::types::Json(&event.attached_data));
            columns.outcome.push(outcome);
            columns.reason.push(reason);
            columns.payload_hash.push(hash);
        }
        columns
    }
}

/// The call records' columns, for `unnest` (`$23`-`$44`). An array column goes as a JSON array
/// (`unnest` would flatten an array of arrays).
#[derive(Default)]
struct CallColumns<'a> {
    gateway_id: Vec<&'a str>,
    call_id: Vec<&'a str>,
    stored_at: Vec<Option<DateTime<Utc>>>,
    state: Vec<&'static str>,
    outcome: Vec<&'static str>,
    caller_number: Vec<Option<&'a str>>,
    dialed_number: Vec<Option<&'a str>>,
    queue: Vec<Option<&'a str>>,
    current_agent: Vec<Option<&'a str>>,
    on_call_agents: Vec<sqlx::types::Json<Vec<String>>>,
    handled_by: Vec<sqlx::types::Json<&'a [String]>>,
    transfers: Vec<i32>,
    offered_at: Vec<DateTime<Utc>>,
    queued_at: Vec<Option<DateTime<Utc>>>,
    answered_at: Vec<Option<DateTime<Utc>>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
    hold_ms: Vec<i64>,
    customer_id: Vec<Option<Uuid>>,
    event_count: Vec<i32>,
    last_event_at: Vec<DateTime<Utc>>,
    transfer_ring_ms: Vec<i64>,
    requeue_wait_ms: Vec<i64>,
}

impl<'a> CallColumns<'a> {
    fn of(calls: &'a [CallWrite<'a>]) -> Self {
        let mut columns = Self::default();
        for write in calls {
            let ((gateway, call_id), call) = (write.key, write.record);
            columns.gateway_id.push(gateway);
            columns.call_id.push(call_id);
            columns.stored_at.push(write.stored_at);
            columns.state.push(call.state.as_str());
            columns.outcome.push(call.outcome.as_str());
            columns.caller_number.push(call.caller_number.as_deref());
            columns.dialed_number.push(call.dialed_number.as_deref());
            columns.queue.push(call.queue.as_deref());
            columns.current_agent.push(call.current_agent.as_deref());
            columns
                .on_call_agents
                .push(sqlx::types::Json(call.on_call_agents()));
            columns.handled_by.push(sqlx::types::Json(&call.handled_by));
            columns.transfers.push(call.transfers);
            columns.offered_at.push(call.offered_at);
            columns.queued_at.push(call.queued_at);
            columns.answered_at.push(call.answered_at);
            columns.ended_at.push(call.ended_at);
            columns.hold_ms.push(call.hold_ms);
            columns.customer_id.push(write.customer_id);
            columns.event_count.push(call.event_count);
            columns.last_event_at.push(call.last_event_at);
            columns.transfer_ring_ms.push(call.transfer_ring_ms);
            columns.requeue_wait_ms.push(call.requeue_wait_ms);
        }
        columns
    }
}

/// Writes the batch in one statement (one round trip on the hottest write path): the feed's
/// insert and the agents' are CTEs of it, the events and calls arrive as typed column arrays. A
/// stored call's row is updated where it is stored (a new offer time moves it to its month), a
/// new call's inserted; the per-call lock the batch holds keeps both to one writer. An agent
/// learned here has no team yet, so the calls' join on `agents` not seeing it (one snapshot)
/// gives the same team, `''`. The statement ends by raising the customers' latest call ends
/// (`customer_last_calls`, migration 42) in customer order: the triggers on `calls` would too,
/// but in two firings (the update's, then the insert's), and two batches taking the rows in two
/// steps could deadlock.
pub async fn write_batch(conn: &mut PgConnection, batch: &BatchWrite<'_>) -> sqlx::Result<()> {
    if batch.events.is_empty() {
        return Ok(());
    }
    let events = EventColumns::of(batch.events);
    let calls = CallColumns::of(batch.calls);
    let query = sqlx::query(concat!(
        "WITH feed AS (",
        crate::feed::insert_events_sql!(),
        "), learned AS (",
        crate::agents::learn_from_gateway_sql!("$6"),
        "), events AS (\
           INSERT INTO call_events (gateway_id, event_id, call_id, type, occurred_at, sequence, \
             caller_number, dialed_number, queue, agent_id, target_agent_id, target_queue, \
             attached_data, outcome, reason, payload_hash) \
           SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], \
             $11::timestamptz[], $12::int8[], $13::text[], $14::text[], $15::text[], $16::text[], \
             $17::text[], $18::text[], $19::jsonb[], $20::text[], $21::text[], $22::bytea[])), \
         r AS ( \
           SELECT r.gateway_id, r.call_id, r.stored_at, r.state, r.outcome, r.caller_number, \
             r.dialed_number, r.queue, r.current_agent, \
             ARRAY(SELECT jsonb_array_elements_text(r.on_call_agents)) AS on_call_agents, \
             ARRAY(SELECT jsonb_array_elements_text(r.handled_by)) AS handled_by, r.transfers, \
             r.offered_at, r.queued_at, r.answered_at, r.ended_at, r.hold_ms, r.customer_id, \
             r.event_count, \
             CASE WHEN jsonb_array_length(r.handled_by) > 0 THEN COALESCE(a.team, '') END AS team, \
             r.last_event_at, r.transfer_ring_ms, r.requeue_wait_ms \
           FROM unnest($23::text[], $24::text[], $25::text[], $26::text[], $27::text[], $28::text[], \
             $29::text[], $30::text[], $31::jsonb[], $32::jsonb[], $33::int4[], $34::timestamptz[], \
             $35::timestamptz[], $36::timestamptz[], $37::timestamptz[], $38::int8[], $39::uuid[], \
             $40::int4[], $41::timestamptz[], $42::int8[], $43::int8[], $44::timestamptz[]) \
             AS r(gateway_id, call_id, state, outcome, caller_number, dialed_number, queue, \
               current_agent, on_call_agents, handled_by, transfers, offered_at, queued_at, \
               answered_at, ended_at, hold_ms, customer_id, event_count, last_event_at, \
               transfer_ring_ms, requeue_wait_ms, stored_at) \
           LEFT JOIN agents a ON a.agent_id = r.handled_by->>0), \
         updated AS ( \
           UPDATE calls c SET state = r.state, outcome = r.outcome, \
             caller_number = r.caller_number, dialed_number = r.dialed_number, queue = r.queue, \
             current_agent = r.current_agent, on_call_agents = r.on_call_agents, \
             handled_by = r.handled_by, transfers = r.transfers, offered_at = r.offered_at, \
             queued_at = r.queued_at, answered_at = r.answered_at, ended_at = r.ended_at, \
             hold_ms = r.hold_ms, customer_id = COALESCE(c.customer_id, r.customer_id), \
             event_count = r.event_count, updated_at = now(), team = COALESCE(c.team, r.team), \
             last_event_at = r.last_event_at, transfer_ring_ms = r.transfer_ring_ms, \
             requeue_wait_ms = r.requeue_wait_ms \
           FROM r \
           WHERE r.stored_at IS NOT NULL AND c.gateway_id = r.gateway_id \
             AND c.call_id = r.call_id AND c.offered_at = r.stored_at \
           RETURNING c.customer_id, c.ended_at), \
         inserted AS ( \
           INSERT INTO calls (gateway_id, call_id, state, outcome, caller_number, dialed_number, \
             queue, current_agent, on_call_agents, handled_by, transfers, offered_at, queued_at, \
             answered_at, ended_at, hold_ms, customer_id, event_count, updated_at, team, \
             last_event_at, transfer_ring_ms, requeue_wait_ms) \
           SELECT gateway_id, call_id, state, outcome, caller_number, dialed_number, queue, \
             current_agent, on_call_agents, handled_by, transfers, offered_at, queued_at, \
             answered_at, ended_at, hold_ms, customer_id, event_count, now(), team, last_event_at, \
             transfer_ring_ms, requeue_wait_ms \
           FROM r WHERE r.stored_at IS NULL \
           RETURNING customer_id, ended_at), \
         ends AS (SELECT * FROM updated UNION ALL SELECT * FROM inserted) \
         SELECT customer_last_calls_raise(array_agg(customer_id), array_agg(ended_at)) FROM ends \
         WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL",
    ));
    crate::feed::Columns::of(batch.feed)
        .bind(query)
        .bind(batch.agents)
        .bind(events.gateway_id)
        .bind(events.event_id)
        .bind(events.call_id)
        .bind(events.kind)
        .bind(events.occurred_at)
        .bind(events.sequence)
        .bind(events.caller_number)
        .bind(events.dialed_number)
        .bind(events.queue)
        .bind(events.agent_id)
        .bind(events.target_agent_id)
        .bind(events.target_queue)
        .bind(events.attached_data)
        .bind(events.outcome)
        .bind(events.reason)
        .bind(events.payload_hash)
        .bind(calls.gateway_id)
        .bind(calls.call_id)
        .bind(calls.state)
        .bind(calls.outcome)
        .bind(calls.caller_number)
        .bind(calls.dialed_number)
        .bind(calls.queue)
        .bind(calls.current_agent)
        .bind(calls.on_call_agents)
        .bind(calls.handled_by)
        .bind(calls.transfers)
        .bind(calls.offered_at)
        .bind(calls.queued_at)
        .bind(calls.answered_at)
        .bind(calls.ended_at)
        .bind(calls.hold_ms)
        .bind(calls.customer_id)
        .bind(calls.event_count)
        .bind(calls.last_event_at)
        .bind(calls.transfer_ring_ms)
        .bind(calls.requeue_wait_ms)
        .bind(calls.stored_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// What a privacy export reads and what erasure and retention blank.
pub mod privacy {
    use chrono::{DateTime, Utc};
    use sqlx::PgConnection;
    use uuid::Uuid;

    use super::super::CallSummary;
    use super::CallState;

    #[derive(sqlx::FromRow)]
    struct Row {
        gateway_id: String,
        call_id: String,
        state: String,
        caller_number: Option<String>,
        dialed_number: Option<String>,
        queue: Option<String>,
        handled_by: Vec<String>,
        transfers: i32,
        offered_at: Option<DateTime<Utc>>,
        answered_at: Option<DateTime<Utc>>,
        ended_at: Option<DateTime<Utc>>,
        hold_ms: i64,
    }

    /// Calls matched to the customer or from one of `numbers`, oldest first.
    pub async fn for_customer(
        conn: &mut PgConnection,
        customer_id: Uuid,
        numbers: &[String],
    ) -> sqlx::Result<Vec<CallSummary>> {
        let rows = sqlx::query_as!(
            Row,
            "SELECT gateway_id, call_id, state, caller_number, dialed_number, queue, handled_by, \
               transfers, offered_at, answered_at, ended_at, hold_ms FROM calls \
             WHERE customer_id = $1 OR caller_number = ANY($2) \
             ORDER BY offered_at NULLS LAST, gateway_id, call_id",
            customer_id,
            numbers
        )
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(CallSummary {
                    state: CallState::parse(&row.state).ok_or_else(|| {
                        sqlx::Error::Decode(format!("call state {}", row.state).into())
                    })?,
                    gateway_id: row.gateway_id,
                    call_id: row.call_id,
                    caller_number: row.caller_number,
                    dialed_number: row.dialed_number,
                    queue: row.queue,
                    handled_by: row.handled_by,
                    transfers: row.transfers,
                    offered_at: row.offered_at,
                    answered_at: row.answered_at,
                    ended_at: row.ended_at,
                    hold_ms: row.hold_ms,
                })
            })
            .collect()
    }

    /// Blanks the caller number of the customer's calls (and of calls from their numbers) and of
    /// their events, and the events' attached data; states, agents and timings stay for KPIs.
    /// Every month of `call_events` is read: a call's rejected events may lie outside its span.
    pub async fn erase(
        conn: &mut PgConnection,
        customer_id: Uuid,
        numbers: &[String],
    ) -> sqlx::Result<()> {
        sqlx::query!(
            "WITH erased AS ( \
               UPDATE calls SET caller_number = NULL \
               WHERE customer_id = $1 OR caller_number = ANY($2) \
               RETURNING gateway_id, call_id) \
             UPDATE call_events e SET caller_number = NULL, attached_data = '{}' \
             FROM erased WHERE e.gateway_id = erased.gateway_id AND e.call_id = erased.call_id",
            customer_id,
            numbers
        )
        .execute(&mut *conn)
        .await?;
        // Events of calls whose record never kept the number (a later event changed it).
        sqlx::query!(
            "UPDATE call_events SET caller_number = NULL, attached_data = '{}' \
             WHERE caller_number = ANY($1)",
            numbers
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Blanks the attached data of up to `limit` call events received before `cutoff`; returns
    /// how many changed.
    pub async fn purge_before(
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query!(
        "UPDATE call_events SET attached_data = '{}' WHERE (gateway_id, event_id, occurred_at) IN ( \
               SELECT gateway_id, event_id, occurred_at FROM call_events WHERE received_at < $1 AND attached_data <> '{}' \
               LIMIT $2 FOR UPDATE SKIP LOCKED)",
        cutoff,
        limit
    )
        .execute(conn)
        .await?;
        Ok(done.rows_affected())
    }
}

/// This context's rows per customer, as a merge moves them and an unmerge moves them back (the
/// keys are kept in merges' lineage: never change their form).
pub const CUSTOMER_ROWS: &[crate::customer_rows::CustomerRows] =
    &[crate::customer_rows::customer_rows!(
        "calls",
        reassign: "UPDATE calls SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING json_build_array(gateway_id, call_id)::text AS \"key!\"",
        restore: "UPDATE calls SET customer_id = $2 WHERE customer_id = $1 \
                  AND json_build_array(gateway_id, call_id)::text = ANY($3)",
    )];
