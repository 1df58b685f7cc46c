//! PostgreSQL access for interactions and dispositions.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Channel, Direction, Disposition, Interaction, NewInteraction, TimelineFilter};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    customer_id: Uuid,
    channel: String,
    direction: String,
    agent_id: Option<String>,
    gateway_id: Option<String>,
    call_id: Option<String>,
    case_id: Option<Uuid>,
    campaign_id: Option<String>,
    disposition_code: Option<String>,
    outcome: String,
    notes: String,
    follow_up_on: Option<NaiveDate>,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    wrap_up_completed_at: Option<DateTime<Utc>>,
    wrap_up_ms: Option<i64>,
}

impl From<Row> for Interaction {
    fn from(row: Row) -> Self {
        Interaction {
            id: row.id,
            customer_id: row.customer_id,
            // The CHECK constraints admit only known values.
            channel: Channel::parse(&row.channel).unwrap_or(Channel::Voice),
            direction: Direction::parse(&row.direction).unwrap_or(Direction::Inbound),
            agent_id: row.agent_id,
            call: row.gateway_id.zip(row.call_id),
            case_id: row.case_id,
            campaign_id: row.campaign_id,
            disposition_code: row.disposition_code,
            outcome: row.outcome,
            notes: row.notes,
            follow_up_on: row.follow_up_on,
            started_at: row.started_at,
            ended_at: row.ended_at,
            wrap_up_completed_at: row.wrap_up_completed_at,
            wrap_up_ms: row.wrap_up_ms,
        }
    }
}

macro_rules! select {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            "SELECT id, customer_id, channel, direction, agent_id, gateway_id, call_id, case_id, campaign_id, disposition_code, outcome, notes, follow_up_on, started_at, ended_at, wrap_up_completed_at, wrap_up_ms FROM interactions " + $rest
            $(, $arg)*
        )
    };
}

pub async fn find_by_request_id(
    conn: &mut PgConnection,
    request_id: &str,
) -> sqlx::Result<Option<Interaction>> {
    let row = select!("WHERE request_id = $1", request_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Interaction::from))
}

pub async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Interaction>> {
    let row = select!("WHERE id = $1", id).fetch_optional(conn).await?;
    Ok(row.map(Interaction::from))
}

pub async fn load_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<Interaction>> {
    let row = select!("WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Interaction::from))
}

/// Inserts unless the request id is taken (a concurrent retry); returns whether it inserted.
pub async fn insert(conn: &mut PgConnection, id: Uuid, new: &NewInteraction) -> sqlx::Result<bool> {
    let (gateway_id, call_id) = new.call.clone().unzip();
    let inserted = sqlx::query!(
        "INSERT INTO interactions (id, request_id, customer_id, channel, direction, agent_id, gateway_id, call_id, \
           case_id, campaign_id, disposition_code, outcome, notes, follow_up_on, started_at, ended_at, team) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
           (SELECT COALESCE(a.team, '') FROM agents a WHERE a.agent_id = $6)) \
         ON CONFLICT (request_id) DO NOTHING",
        id,
        &new.request_id,
        new.customer_id,
        new.channel.as_str(),
        new.direction.as_str(),
        new.agent_id.as_deref(),
        gateway_id,
        call_id,
        new.case_id,
        new.campaign_id.as_deref(),
        new.disposition_code.as_deref(),
        &new.outcome,
        &new.notes,
        new.follow_up_on,
        new.started_at,
        new.ended_at
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn complete_wrap_up(
    conn: &mut PgConnection,
    id: Uuid,
    disposition: &str,
    extra_notes: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE interactions SET disposition_code = $2, \
           notes = CASE WHEN $3 = '' THEN notes WHEN notes = '' THEN $3 ELSE notes || E'\\n' || $3 END, \
           wrap_up_completed_at = now(), \
           wrap_up_ms = GREATEST(0, (extract(epoch FROM now() - COALESCE(ended_at, started_at)) * 1000)::bigint), \
           wrap_up_ended_at = LEAST(now(), wrap_up_ended_at, ( \
             SELECT min(s.at) FROM ( \
               SELECT at, state, lag(state) OVER (ORDER BY at, id) AS before \
               FROM agent_state_changes \
               WHERE agent_id = interactions.agent_id \
                 AND at >= COALESCE(interactions.ended_at, interactions.started_at) - interval '1 day') s \
             WHERE s.at > COALESCE(interactions.ended_at, interactions.started_at) \
               AND s.before = 'after_call_work' AND s.state <> 'after_call_work')) \
         WHERE id = $1",
        id,
        disposition,
        extra_notes
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first by (started_at, id), strictly after the cursor.
pub async fn timeline(
    conn: &mut PgConnection,
    customer_id: Uuid,
    filter: &TimelineFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Interaction>> {
    let rows = select!(
        "WHERE customer_id = $1 \
           AND ($2::text IS NULL OR channel = $2) \
           AND ($3::text IS NULL OR agent_id = $3) \
           AND ($4::timestamptz IS NULL OR started_at >= $4) \
           AND ($5::timestamptz IS NULL OR started_at < $5) \
           AND ($6::timestamptz IS NULL OR (started_at, id) < ($6, $7::uuid)) \
         ORDER BY started_at DESC, id DESC LIMIT $8",
        customer_id,
        filter.channel.map(Channel::as_str),
        filter.agent_id.as_deref(),
        filter.started_after,
        filter.started_before,
        after.map(|(t, _)| t),
        after.map(|(_, id)| id),
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Interaction::from).collect())
}

#[derive(sqlx::FromRow)]
struct DispositionRow {
    code: String,
    label: String,
    resolves: bool,
    active: bool,
}

impl From<DispositionRow> for Disposition {
    fn from(row: DispositionRow) -> Self {
        Disposition {
            code: row.code,
            label: row.label,
            resolves: row.resolves,
            active: row.active,
        }
    }
}

pub async fn disposition(conn: &mut PgConnection, code: &str) -> sqlx::Result<Option<Disposition>> {
    let row = sqlx::query_as!(
        DispositionRow,
        "SELECT code, label, resolves, active FROM dispositions WHERE code = $1",
        code
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Disposition::from))
}

pub async fn dispositions(conn: &mut PgConnection) -> sqlx::Result<Vec<Disposition>> {
    let rows = sqlx::query_as!(
        DispositionRow,
        "SELECT code, label, resolves, active FROM dispositions ORDER BY active DESC, code"
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Disposition::from).collect())
}

pub async fn upsert_disposition(
    conn: &mut PgConnection,
    d: &Disposition,
) -> sqlx::Result<Disposition> {
    let row = sqlx::query_as!(
        DispositionRow,
        "INSERT INTO dispositions (code, label, resolves, active) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (code) DO UPDATE SET label = $2, resolves = $3, active = $4, updated_at = now() \
         RETURNING code, label, resolves, active",
        &d.code,
        &d.label,
        d.resolves,
        d.active
    )
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// What a privacy export reads and what erasure and retention blank.
pub mod privacy {
    use chrono::{DateTime, Utc};
    use sqlx::PgConnection;
    use uuid::Uuid;

    use super::{Interaction, Row};

    /// Every interaction with the customer, oldest first.
    pub async fn for_customer(
        conn: &mut PgConnection,
        customer_id: Uuid,
    ) -> sqlx::Result<Vec<Interaction>> {
        let rows = select!(
            "WHERE customer_id = $1 ORDER BY started_at, id",
            customer_id
        )
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().map(Interaction::from).collect())
    }

    /// Blanks the customer's notes and free-text outcomes; dispositions and timings stay for KPIs.
    pub async fn erase(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE interactions SET notes = '', outcome = '' WHERE customer_id = $1",
            customer_id
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Blanks the notes and outcomes of up to `limit` interactions started before `cutoff`;
    /// returns the customers whose interactions changed.
    pub async fn purge_before(
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar!(
        "UPDATE interactions SET notes = '', outcome = '' WHERE id IN ( \
               SELECT id FROM interactions WHERE started_at < $1 AND (notes <> '' OR outcome <> '') \
               LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING customer_id",
        cutoff,
        limit
    )
        .fetch_all(conn)
        .await
    }
}

/// This context's rows per customer, as a merge moves them and an unmerge moves them back (the
/// keys are kept in merges' lineage: never change their form).
pub const CUSTOMER_ROWS: &[crate::customer_rows::CustomerRows] =
    &[crate::customer_rows::customer_rows!(
        "interactions",
        reassign: "UPDATE interactions SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING id::text AS \"key!\"",
        restore: "UPDATE interactions SET customer_id = $2 WHERE customer_id = $1 \
                  AND id::text = ANY($3)",
    )];
