//! PostgreSQL access for agents and their state history.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{AgentEntry, AgentFilter, AgentState, KnownFrom, Provision, StateChange};

/// An agents row as [`entry`] reads it.
struct EntryRow {
    agent_id: String,
    display_name: String,
    team: String,
    queues: Vec<String>,
    extension: String,
    sip_user: String,
    known_from: String,
    provisioned_at: Option<DateTime<Utc>>,
    desktop_seen_at: Option<DateTime<Utc>>,
    state: String,
}

/// A checked query naming the columns of [`EntryRow`] between `$lead` and `$tail`.
macro_rules! with_entry {
    ($lead:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            EntryRow,
            $lead
                + "agent_id, display_name, team, queues, extension, sip_user, known_from, \
                   provisioned_at, desktop_seen_at, state"
                + $tail
            $(, $arg)*
        )
    };
}

fn entry(row: EntryRow) -> sqlx::Result<AgentEntry> {
    Ok(AgentEntry {
        provision: Provision {
            agent_id: row.agent_id,
            display_name: row.display_name,
            team: row.team,
            queues: row.queues,
            extension: row.extension,
            sip_user: row.sip_user,
        },
        known_from: KnownFrom::parse(&row.known_from)
            .ok_or_else(|| sqlx::Error::Decode(format!("known from {}", row.known_from).into()))?,
        provisioned_at: row.provisioned_at,
        desktop_seen_at: row.desktop_seen_at,
        state: AgentState::parse(&row.state)
            .ok_or_else(|| sqlx::Error::Decode(format!("agent state {}", row.state).into()))?,
    })
}

/// Writes the agent's directory entry and marks them provisioned; returns the entry.
pub async fn provision(conn: &mut PgConnection, p: &Provision) -> sqlx::Result<AgentEntry> {
    let row = with_entry!(
        "INSERT INTO agents (agent_id, display_name, team, queues, extension, sip_user, known_from, \
           provisioned_at) \
         SELECT $1, $2, $3, COALESCE(array_agg(DISTINCT q ORDER BY q), '{}'), $5, $6, 'directory', now() \
         FROM unnest($4::text[]) AS q \
         ON CONFLICT (agent_id) DO UPDATE SET display_name = EXCLUDED.display_name, \
           team = EXCLUDED.team, queues = EXCLUDED.queues, extension = EXCLUDED.extension, \
           sip_user = EXCLUDED.sip_user, provisioned_at = EXCLUDED.provisioned_at, \
           version = agents.version + 1 \
         RETURNING ",
        "",
        &p.agent_id,
        &p.display_name,
        &p.team,
        &p.queues,
        &p.extension,
        &p.sip_user
    )
    .fetch_one(conn)
    .await?;
    entry(row)
}

/// Agents in id order after `filter.after`.
pub async fn list(conn: &mut PgConnection, filter: &AgentFilter) -> sqlx::Result<Vec<AgentEntry>> {
    with_entry!(
        "SELECT ",
        " FROM agents \
         WHERE ($1::text IS NULL OR agent_id > $1) \
           AND (NOT $2 OR (provisioned_at IS NULL AND desktop_seen_at IS NULL)) \
           AND ($3::text IS NULL OR team = $3) \
         ORDER BY agent_id LIMIT $4",
        filter.after.as_deref(),
        filter.gateway_only,
        filter.team.as_deref(),
        filter.limit
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(entry)
    .collect()
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

/// The insert that makes the agents a gateway named known from the gateway (`$ids`: the
/// `text[]` parameter naming them), in id order so that concurrent batches lock them in one order.
/// A CTE of the call-event batch's write (`calls::store::write_batch`).
macro_rules! learn_from_gateway_sql {
    ($ids:literal) => {
        concat!(
            "INSERT INTO agents (agent_id, known_from) SELECT a, 'gateway' FROM unnest(",
            $ids,
            "::text[]) AS a ORDER BY a ON CONFLICT (agent_id) DO NOTHING"
        )
    };
}
pub(crate) use learn_from_gateway_sql;

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

/// Notes that these agents were shown these calls' pops (the first note per call and agent stays).
pub async fn record_pops_shown<'a>(
    pool: &sqlx::PgPool,
    shown: impl Iterator<Item = (&'a str, &'a str, &'a str, DateTime<Utc>)>,
) -> sqlx::Result<()> {
    let (mut gateways, mut calls, mut agents, mut ats) = (vec![], vec![], vec![], vec![]);
    for (gateway_id, call_id, agent_id, at) in shown {
        gateways.push(gateway_id.to_owned());
        calls.push(call_id.to_owned());
        agents.push(agent_id.to_owned());
        ats.push(at);
    }
    sqlx::query!(
        "INSERT INTO pop_deliveries (gateway_id, call_id, agent_id, delivered_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) \
         ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING",
        &gateways,
        &calls,
        &agents,
        &ats
    )
    .execute(pool)
    .await?;
    Ok(())
}
