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
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT gateway_id, call_id, state, caller_number, dialed_number, queue, handled_by, \
               transfers, offered_at, answered_at, ended_at, hold_ms FROM calls \
             WHERE customer_id = $1 OR caller_number = ANY($2) \
             ORDER BY offered_at NULLS LAST, gateway_id, call_id",
        )
        .bind(customer_id)
        .bind(numbers)
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
    pub async fn erase(
        conn: &mut PgConnection,
        customer_id: Uuid,
        numbers: &[String],
    ) -> sqlx::Result<()> {
        sqlx::query(
            "WITH erased AS ( \
               UPDATE calls SET caller_number = NULL \
               WHERE customer_id = $1 OR caller_number = ANY($2) \
               RETURNING gateway_id, call_id) \
             UPDATE call_events e SET caller_number = NULL, attached_data = '{}' \
             FROM erased WHERE e.gateway_id = erased.gateway_id AND e.call_id = erased.call_id",
        )
        .bind(customer_id)
        .bind(numbers)
        .execute(&mut *conn)
        .await?;
        // Events of calls whose record never kept the number (a later event changed it).
        sqlx::query(
            "UPDATE call_events SET caller_number = NULL, attached_data = '{}' \
             WHERE caller_number = ANY($1)",
        )
        .bind(numbers)
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
        let done = sqlx::query(
            "UPDATE call_events SET attached_data = '{}' WHERE (gateway_id, event_id) IN ( \
               SELECT gateway_id, event_id FROM call_events WHERE received_at < $1 AND attached_data <> '{}' \
               LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(conn)
        .await?;
        Ok(done.rows_affected())
    }
}
