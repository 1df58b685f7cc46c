//! PostgreSQL access for call events and call records.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::machine::{CallRecord, CallState, EventType, Step, TransferTarget};
use super::{Ack, CallView, NewEvent};

/// Serializes everything that touches one call until the transaction ends.
pub async fn lock_call(
    conn: &mut PgConnection,
    gateway_id: &str,
    call_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7))")
        .bind(gateway_id)
        .bind(call_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The ack given to an event already stored.
pub async fn stored_ack(
    conn: &mut PgConnection,
    gateway_id: &str,
    event_id: &str,
) -> sqlx::Result<Option<Ack>> {
    let row = sqlx::query(
        "SELECT outcome, reason FROM call_events WHERE gateway_id = $1 AND event_id = $2",
    )
    .bind(gateway_id)
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let outcome: String = row.try_get("outcome")?;
        let reason: String = row.try_get("reason")?;
        Ok(if outcome == "accepted" {
            Ack::Accepted
        } else {
            Ack::Rejected(reason)
        })
    })
    .transpose()
}

/// Agents among `agent_ids` that Switchboard has never seen.
pub async fn unknown_agents(
    conn: &mut PgConnection,
    agent_ids: &[&str],
) -> sqlx::Result<Vec<String>> {
    if agent_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "SELECT a FROM unnest($1::text[]) AS a WHERE NOT EXISTS (SELECT 1 FROM agents WHERE agent_id = a)",
    )
    .bind(agent_ids)
    .fetch_all(conn)
    .await
}

/// The call's accepted events, sorted as the machine applies them.
pub async fn accepted_steps(
    conn: &mut PgConnection,
    gateway_id: &str,
    call_id: &str,
) -> sqlx::Result<Vec<Step>> {
    let rows = sqlx::query(
        "SELECT event_id, type, occurred_at, sequence, caller_number, dialed_number, queue, agent_id, \
                target_agent_id, target_queue \
         FROM call_events WHERE gateway_id = $1 AND call_id = $2 AND outcome = 'accepted' \
         ORDER BY occurred_at, sequence, event_id",
    )
    .bind(gateway_id)
    .bind(call_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
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
        })
        .collect()
}

pub async fn insert_event(
    conn: &mut PgConnection,
    event: &NewEvent,
    ack: &Ack,
) -> sqlx::Result<()> {
    let step = &event.step;
    let (target_agent, target_queue) = match &step.target {
        Some(TransferTarget::Agent(a)) => (Some(a.as_str()), None),
        Some(TransferTarget::Queue(q)) => (None, Some(q.as_str())),
        None => (None, None),
    };
    let (outcome, reason) = match ack {
        Ack::Accepted => ("accepted", ""),
        Ack::Rejected(reason) => ("rejected", reason.as_str()),
    };
    sqlx::query(
        "INSERT INTO call_events (gateway_id, event_id, call_id, type, occurred_at, sequence, caller_number, \
         dialed_number, queue, agent_id, target_agent_id, target_queue, attached_data, outcome, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&event.gateway_id)
    .bind(&step.event_id)
    .bind(&event.call_id)
    .bind(step.kind.as_str())
    .bind(step.occurred_at)
    .bind(step.sequence)
    .bind(&step.caller_number)
    .bind(&step.dialed_number)
    .bind(&step.queue)
    .bind(&step.agent_id)
    .bind(target_agent)
    .bind(target_queue)
    .bind(sqlx::types::Json(&event.attached_data))
    .bind(outcome)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// The state and on-call agents stored for a call before this event.
pub async fn current(
    conn: &mut PgConnection,
    gateway_id: &str,
    call_id: &str,
) -> sqlx::Result<Option<(CallState, Vec<String>)>> {
    let row = sqlx::query(
        "SELECT state, on_call_agents FROM calls WHERE gateway_id = $1 AND call_id = $2",
    )
    .bind(gateway_id)
    .bind(call_id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let state: String = row.try_get("state")?;
        let state = CallState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("call state {state}").into()))?;
        Ok((state, row.try_get("on_call_agents")?))
    })
    .transpose()
}

/// Writes the folded record; the matched customer is kept once set.
pub async fn save_call(
    conn: &mut PgConnection,
    gateway_id: &str,
    call_id: &str,
    call: &CallRecord,
    customer_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO calls (gateway_id, call_id, state, outcome, caller_number, dialed_number, queue, current_agent, \
           on_call_agents, handled_by, transfers, offered_at, queued_at, answered_at, ended_at, hold_ms, customer_id, \
           event_count, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, now()) \
         ON CONFLICT (gateway_id, call_id) DO UPDATE SET state = $3, outcome = $4, caller_number = $5, \
           dialed_number = $6, queue = $7, current_agent = $8, on_call_agents = $9, handled_by = $10, \
           transfers = $11, offered_at = $12, queued_at = $13, answered_at = $14, ended_at = $15, hold_ms = $16, \
           customer_id = COALESCE(calls.customer_id, $17), event_count = $18, updated_at = now()",
    )
    .bind(gateway_id)
    .bind(call_id)
    .bind(call.state.as_str())
    .bind(call.outcome.as_str())
    .bind(&call.caller_number)
    .bind(&call.dialed_number)
    .bind(&call.queue)
    .bind(&call.current_agent)
    .bind(call.on_call_agents())
    .bind(&call.handled_by)
    .bind(call.transfers)
    .bind(call.offered_at)
    .bind(call.queued_at)
    .bind(call.answered_at)
    .bind(call.ended_at)
    .bind(call.hold_ms)
    .bind(customer_id)
    .bind(call.event_count)
    .execute(conn)
    .await?;
    Ok(())
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

/// Calls the agent is on now (ringing, connected, held or conferenced), oldest first.
pub async fn active_calls_for_agent(
    conn: &mut PgConnection,
    agent_id: &str,
) -> sqlx::Result<Vec<CallView>> {
    let rows: Vec<CallViewRow> = sqlx::query_as(
        "SELECT gateway_id, call_id, state, caller_number, dialed_number, queue, current_agent, offered_at, \
                answered_at, customer_id \
         FROM calls WHERE on_call_agents @> ARRAY[$1] AND state NOT IN ('ended', 'abandoned') \
         ORDER BY offered_at, gateway_id, call_id",
    )
    .bind(agent_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| CallView {
            gateway_id: row.gateway_id,
            call_id: row.call_id,
            state: CallState::parse(&row.state).unwrap_or(CallState::Offered),
            caller_number: row.caller_number,
            dialed_number: row.dialed_number,
            queue: row.queue,
            current_agent: row.current_agent,
            offered_at: row.offered_at,
            answered_at: row.answered_at,
            customer_id: row.customer_id,
        })
        .collect())
}
