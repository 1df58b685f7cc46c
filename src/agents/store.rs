//! PostgreSQL access for agents and their state history.

use sqlx::{PgConnection, Row};

use super::{AgentState, StateChange};

/// The agent's softphone is here now: known from the desktop if it was not known at all.
pub async fn ensure_known(conn: &mut PgConnection, agent_id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO agents (agent_id, known_from, desktop_seen_at) VALUES ($1, 'desktop', now()) \
         ON CONFLICT (agent_id) DO UPDATE SET desktop_seen_at = now()",
    )
    .bind(agent_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Agents a gateway named that were never seen: known from the gateway from now on.
pub async fn learn_from_gateway(conn: &mut PgConnection, agent_ids: &[&str]) -> sqlx::Result<()> {
    if agent_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO agents (agent_id, known_from) SELECT a, 'gateway' FROM unnest($1::text[]) AS a \
         ORDER BY a ON CONFLICT (agent_id) DO NOTHING",
    )
    .bind(agent_ids)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_team(conn: &mut PgConnection, agent_id: &str, team: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO agents (agent_id, team, known_from) VALUES ($1, $2, 'directory') \
         ON CONFLICT (agent_id) DO UPDATE SET team = EXCLUDED.team",
    )
    .bind(agent_id)
    .bind(team)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets the queues the agent takes calls from (sorted, without duplicates); returns them.
pub async fn set_queues(
    conn: &mut PgConnection,
    agent_id: &str,
    queues: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "INSERT INTO agents (agent_id, queues, known_from) \
         SELECT $1, COALESCE(array_agg(DISTINCT q ORDER BY q), '{}'), 'directory' FROM unnest($2::text[]) AS q \
         ON CONFLICT (agent_id) DO UPDATE SET queues = EXCLUDED.queues, \
           version = agents.version + 1 \
         RETURNING queues",
    )
    .bind(agent_id)
    .bind(queues)
    .fetch_one(conn)
    .await
}

fn change(row: &sqlx::postgres::PgRow) -> sqlx::Result<StateChange> {
    let state: String = row.try_get("state")?;
    Ok(StateChange {
        state: AgentState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("agent state {state}").into()))?,
        reason: row.try_get("reason")?,
        since: row.try_get("since")?,
    })
}

/// The agent's current state (locked when inside a transaction).
pub async fn lock_current(
    conn: &mut PgConnection,
    agent_id: &str,
) -> sqlx::Result<Option<StateChange>> {
    let row = sqlx::query("SELECT state, reason, since FROM agents WHERE agent_id = $1 FOR UPDATE")
        .bind(agent_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(change).transpose()
}

pub async fn change_state(
    conn: &mut PgConnection,
    agent_id: &str,
    state: AgentState,
    reason: &str,
) -> sqlx::Result<StateChange> {
    let row = sqlx::query(
        "WITH changed AS ( \
           UPDATE agents SET state = $2, reason = $3, since = clock_timestamp(), version = version + 1 \
           WHERE agent_id = $1 \
           RETURNING agent_id, state, reason, since) \
         INSERT INTO agent_state_changes (agent_id, state, reason, at) \
         SELECT agent_id, state, reason, since FROM changed \
         RETURNING state, reason, at AS since",
    )
    .bind(agent_id)
    .bind(state.as_str())
    .bind(reason)
    .fetch_one(conn)
    .await?;
    change(&row)
}

pub async fn history(
    conn: &mut PgConnection,
    agent_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<StateChange>> {
    let rows = sqlx::query(
        "SELECT state, reason, at AS since FROM agent_state_changes WHERE agent_id = $1 \
         ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(agent_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(change).collect()
}
