//! The live state as PostgreSQL has it: what the Redis copy is rebuilt from and read instead of it.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{LiveAgent, LiveCall};
use crate::call_model::AgentState;
use crate::call_model::CallState;

struct CallRow {
    gateway_id: String,
    call_id: String,
    version: i64,
    state: String,
    queue: Option<String>,
    since: DateTime<Utc>,
    last_event_at: DateTime<Utc>,
}

struct AgentRow {
    agent_id: String,
    version: i64,
    state: String,
    since: DateTime<Utc>,
    queues: Vec<String>,
}

fn agent_of(row: AgentRow) -> Option<LiveAgent> {
    Some(LiveAgent {
        state: AgentState::parse(&row.state)?,
        agent_id: row.agent_id,
        version: row.version,
        since: row.since,
        queues: row.queues,
    })
}

/// Calls not ended, stale ones too (index `calls_live_idx`).
pub async fn live_calls(conn: &mut PgConnection) -> sqlx::Result<Vec<LiveCall>> {
    let rows = sqlx::query_as!(
        CallRow,
        r#"SELECT gateway_id, call_id, event_count::int8 AS "version!", state, queue,
             COALESCE(queued_at, offered_at, updated_at) AS "since!",
             COALESCE(last_event_at, updated_at) AS "last_event_at!"
           FROM calls
           WHERE ended_at IS NULL"#,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(LiveCall {
                state: CallState::parse(&row.state)?,
                key: crate::call_model::call_key(&row.gateway_id.into(), &row.call_id),
                version: row.version,
                queue: row.queue,
                since: row.since,
                last_event_at: row.last_event_at,
            })
        })
        .collect())
}

pub async fn agents(conn: &mut PgConnection) -> sqlx::Result<Vec<LiveAgent>> {
    let rows = sqlx::query_as!(
        AgentRow,
        "SELECT agent_id, version, state, since, queues FROM agents"
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().filter_map(agent_of).collect())
}

pub async fn agent(conn: &mut PgConnection, agent_id: &str) -> sqlx::Result<Option<LiveAgent>> {
    let row = sqlx::query_as!(
        AgentRow,
        "SELECT agent_id, version, state, since, queues FROM agents WHERE agent_id = $1",
        agent_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(agent_of))
}
