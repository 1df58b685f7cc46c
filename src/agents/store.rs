//! PostgreSQL access for agents and their state history.

use sqlx::{PgConnection, Row};

use super::{AgentEntry, AgentFilter, AgentState, KnownFrom, Provision, StateChange};

/// The columns [`entry`] reads.
macro_rules! entry_columns {
    () => {
        "agent_id, display_name, team, queues, extension, sip_user, known_from, provisioned_at, \
         desktop_seen_at, state"
    };
}

fn entry(row: &sqlx::postgres::PgRow) -> sqlx::Result<AgentEntry> {
    let known_from: String = row.try_get("known_from")?;
    let state: String = row.try_get("state")?;
    Ok(AgentEntry {
        provision: Provision {
            agent_id: row.try_get("agent_id")?,
            display_name: row.try_get("display_name")?,
            team: row.try_get("team")?,
            queues: row.try_get("queues")?,
            extension: row.try_get("extension")?,
            sip_user: row.try_get("sip_user")?,
        },
        known_from: KnownFrom::parse(&known_from)
            .ok_or_else(|| sqlx::Error::Decode(format!("known from {known_from}").into()))?,
        provisioned_at: row.try_get("provisioned_at")?,
        desktop_seen_at: row.try_get("desktop_seen_at")?,
        state: AgentState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("agent state {state}").into()))?,
    })
}

/// Writes the agent's directory entry and marks them provisioned; returns the entry.
pub async fn provision(conn: &mut PgConnection, p: &Provision) -> sqlx::Result<AgentEntry> {
    let row = sqlx::query(concat!(
        "INSERT INTO agents (agent_id, display_name, team, queues, extension, sip_user, known_from, \
           provisioned_at) \
         SELECT $1, $2, $3, COALESCE(array_agg(DISTINCT q ORDER BY q), '{}'), $5, $6, 'directory', now() \
         FROM unnest($4::text[]) AS q \
         ON CONFLICT (agent_id) DO UPDATE SET display_name = EXCLUDED.display_name, \
           team = EXCLUDED.team, queues = EXCLUDED.queues, extension = EXCLUDED.extension, \
           sip_user = EXCLUDED.sip_user, provisioned_at = EXCLUDED.provisioned_at, \
           version = agents.version + 1 \
         RETURNING ",
        entry_columns!()
    ))
    .bind(&p.agent_id)
    .bind(&p.display_name)
    .bind(&p.team)
    .bind(&p.queues)
    .bind(&p.extension)
    .bind(&p.sip_user)
    .fetch_one(conn)
    .await?;
    entry(&row)
}

/// Agents in id order after `filter.after`.
pub async fn list(conn: &mut PgConnection, filter: &AgentFilter) -> sqlx::Result<Vec<AgentEntry>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM agents \
         WHERE ($1::text IS NULL OR agent_id > $1) \
           AND (NOT $2 OR (provisioned_at IS NULL AND desktop_seen_at IS NULL)) \
           AND ($3::text IS NULL OR team = $3) \
         ORDER BY agent_id LIMIT $4"
    ))
    .bind(&filter.after)
    .bind(filter.gateway_only)
    .bind(&filter.team)
    .bind(filter.limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(entry).collect()
}

/// The agent's softphone is here now: known from the desktop if it was not known at all.
pub async fn ensure_known(conn: &mut PgConnection, agent_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO agents (agent_id, known_from, desktop_seen_at) VALUES ($1, 'desktop', now()) \
         ON CONFLICT (agent_id) DO UPDATE SET desktop_seen_at = now()",
        agent_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Agents a gateway named that were never seen: known from the gateway from now on.
pub async fn learn_from_gateway(conn: &mut PgConnection, agent_ids: &[&str]) -> sqlx::Result<()> {
    if agent_ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO agents (agent_id, known_from) SELECT a, 'gateway' FROM unnest($1::text[]) AS a \
         ORDER BY a ON CONFLICT (agent_id) DO NOTHING",
        &agent_ids.iter().map(|id| (*id).to_owned()).collect::<Vec<String>>()
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_team(conn: &mut PgConnection, agent_id: &str, team: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO agents (agent_id, team, known_from) VALUES ($1, $2, 'directory') \
         ON CONFLICT (agent_id) DO UPDATE SET team = EXCLUDED.team",
        agent_id,
        team
    )
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
    sqlx::query_scalar!(
        "INSERT INTO agents (agent_id, queues, known_from) \
         SELECT $1, COALESCE(array_agg(DISTINCT q ORDER BY q), '{}'), 'directory' FROM unnest($2::text[]) AS q \
         ON CONFLICT (agent_id) DO UPDATE SET queues = EXCLUDED.queues, \
           version = agents.version + 1 \
         RETURNING queues",
        agent_id,
        queues
    )
    .fetch_one(conn)
    .await
}

struct ChangeRow {
    state: String,
    reason: String,
    since: chrono::DateTime<chrono::Utc>,
}

fn change(row: ChangeRow) -> sqlx::Result<StateChange> {
    Ok(StateChange {
        state: AgentState::parse(&row.state)
            .ok_or_else(|| sqlx::Error::Decode(format!("agent state {}", row.state).into()))?,
        reason: row.reason,
        since: row.since,
    })
}

/// The agent's current state (locked when inside a transaction).
pub async fn lock_current(
    conn: &mut PgConnection,
    agent_id: &str,
) -> sqlx::Result<Option<StateChange>> {
    let row = sqlx::query_as!(
        ChangeRow,
        "SELECT state, reason, since FROM agents WHERE agent_id = $1 FOR UPDATE",
        agent_id
    )
    .fetch_optional(conn)
    .await?;
    row.map(change).transpose()
}

pub async fn change_state(
    conn: &mut PgConnection,
    agent_id: &str,
    state: AgentState,
    reason: &str,
) -> sqlx::Result<StateChange> {
    let row = sqlx::query_as!(
        ChangeRow,
        "WITH changed AS ( \
           UPDATE agents SET state = $2, reason = $3, since = clock_timestamp(), version = version + 1 \
           WHERE agent_id = $1 \
           RETURNING agent_id, state, reason, since) \
         INSERT INTO agent_state_changes (agent_id, state, reason, at) \
         SELECT agent_id, state, reason, since FROM changed \
         RETURNING state, reason, at AS since",
        agent_id,
        state.as_str(),
        reason
    )
    .fetch_one(conn)
    .await?;
    change(row)
}

pub async fn history(
    conn: &mut PgConnection,
    agent_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<StateChange>> {
    let rows = sqlx::query_as!(
        ChangeRow,
        "SELECT state, reason, at AS since FROM agent_state_changes WHERE agent_id = $1 \
         ORDER BY at DESC, id DESC LIMIT $2",
        agent_id,
        limit
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(change).collect()
}
