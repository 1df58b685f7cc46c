//! PostgreSQL access for cases, comments and case history.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Assignee, Case, CaseFilter, CaseStatus, Change, Comment, NewCase, Priority};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    customer_id: Uuid,
    subject: String,
    description: String,
    status: String,
    priority: i16,
    assignee_agent_id: Option<String>,
    assignee_team: Option<String>,
    sla_due_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    version: i64,
}

impl From<Row> for Case {
    fn from(row: Row) -> Self {
        let assignee = match (row.assignee_agent_id, row.assignee_team) {
            (Some(agent), _) => Some(Assignee::Agent(agent)),
            (None, Some(team)) => Some(Assignee::Team(team)),
            (None, None) => None,
        };
        Case {
            id: row.id,
            customer_id: row.customer_id,
            subject: row.subject,
            description: row.description,
            // CHECK constraints admit only known values.
            status: CaseStatus::parse(&row.status).unwrap_or(CaseStatus::New),
            priority: Priority::from_rank(row.priority).unwrap_or(Priority::Normal),
            assignee,
            sla_due_at: row.sla_due_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            resolved_at: row.resolved_at,
            closed_at: row.closed_at,
            version: row.version,
        }
    }
}

macro_rules! select {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            "SELECT id, customer_id, subject, description, status, priority, assignee_agent_id, assignee_team, sla_due_at, created_at, updated_at, resolved_at, closed_at, version FROM cases " + $rest
            $(, $arg)*
        )
    };
}

pub async fn find_by_request_id(
    conn: &mut PgConnection,
    request_id: &str,
) -> sqlx::Result<Option<Case>> {
    let row = select!("WHERE request_id = $1", request_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Case::from))
}

pub async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Case>> {
    let row = select!("WHERE id = $1", id).fetch_optional(conn).await?;
    Ok(row.map(Case::from))
}

pub async fn load_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Case>> {
    let row = select!("WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Case::from))
}

/// Inserts unless the request id is taken (a concurrent retry); returns whether it inserted.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    new: &NewCase,
    now: DateTime<Utc>,
    due: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO cases (id, request_id, customer_id, subject, description, status, priority, sla_due_at, \
           created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'new', $6, $7, $8, $8) ON CONFLICT (request_id) DO NOTHING",
        id,
        &new.request_id,
        new.customer_id,
        &new.subject,
        &new.description,
        new.priority.rank(),
        due,
        now
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Writes a changed case, bumping its version.
pub async fn save(conn: &mut PgConnection, case: &Case) -> sqlx::Result<()> {
    let (agent, team) = match &case.assignee {
        Some(Assignee::Agent(agent)) => (Some(agent.as_str()), None),
        Some(Assignee::Team(team)) => (None, Some(team.as_str())),
        None => (None, None),
    };
    sqlx::query!(
        "UPDATE cases SET subject = $2, description = $3, status = $4, priority = $5, assignee_agent_id = $6, \
           assignee_team = $7, sla_due_at = $8, resolved_at = $9, closed_at = $10, version = version + 1, \
           updated_at = now() \
         WHERE id = $1",
        case.id,
        &case.subject,
        &case.description,
        case.status.as_str(),
        case.priority.rank(),
        agent,
        team,
        case.sla_due_at,
        case.resolved_at,
        case.closed_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn record_change(
    conn: &mut PgConnection,
    case_id: Uuid,
    action: &str,
    from: &str,
    to: &str,
    actor: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO case_history (case_id, action, \"from\", \"to\", actor) VALUES ($1, $2, $3, $4, $5)",
        case_id,
        action,
        from,
        to,
        actor
    )
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_comment(
    conn: &mut PgConnection,
    case_id: Uuid,
    text: &str,
    author: &str,
) -> sqlx::Result<Comment> {
    let row = sqlx::query!(
        "INSERT INTO case_comments (id, case_id, author, text) VALUES ($1, $2, $3, $4) RETURNING id, created_at",
        Uuid::new_v4(),
        case_id,
        author,
        text
    )
    .fetch_one(conn)
    .await?;
    let (id, created_at): (Uuid, DateTime<Utc>) = (row.id, row.created_at);
    Ok(Comment {
        id,
        case_id,
        author: author.to_owned(),
        text: text.to_owned(),
        created_at,
    })
}

/// Most urgent first: priority (high to low), due time, id; strictly after the cursor.
pub async fn list(
    conn: &mut PgConnection,
    filter: &CaseFilter,
    after: Option<(i16, DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Case>> {
    let rows = select!(
        "WHERE ($1::uuid IS NULL OR customer_id = $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR assignee_agent_id = $3) \
           AND ($4::text IS NULL OR assignee_team = $4) \
           AND (NOT $5 OR (status IN ('new', 'open', 'pending') AND sla_due_at < now())) \
           AND ($6::smallint IS NULL OR priority < $6 \
                OR (priority = $6 AND (sla_due_at, id) > ($7::timestamptz, $8::uuid))) \
         ORDER BY priority DESC, sla_due_at, id LIMIT $9",
        filter.customer_id,
        filter.status.map(CaseStatus::as_str),
        filter.agent_id.as_deref(),
        filter.team.as_deref(),
        filter.overdue_only,
        after.map(|(rank, _, _)| rank),
        after.map(|(_, due, _)| due),
        after.map(|(_, _, id)| id),
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Case::from).collect())
}

pub async fn history(conn: &mut PgConnection, case_id: Uuid) -> sqlx::Result<Vec<Change>> {
    let rows: Vec<(String, String, String, String, DateTime<Utc>)> = sqlx::query!(
        "SELECT action, \"from\", \"to\", actor, at FROM case_history WHERE case_id = $1 ORDER BY id",
        case_id
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|row| (row.action, row.from, row.to, row.actor, row.at))
    .collect();
    Ok(rows
        .into_iter()
        .map(|(action, from, to, actor, at)| Change {
            action,
            from,
            to,
            actor,
            at,
        })
        .collect())
}

/// What a privacy export reads and what erasure and retention blank.
pub mod privacy {
    use chrono::{DateTime, Utc};
    use sqlx::PgConnection;
    use uuid::Uuid;

    use super::{Case, Change, Comment, Row, history};

    /// Every case of the customer, oldest first, with its comments and history.
    pub async fn for_customer(
        conn: &mut PgConnection,
        customer_id: Uuid,
    ) -> sqlx::Result<Vec<(Case, Vec<Comment>, Vec<Change>)>> {
        let rows = select!(
            "WHERE customer_id = $1 ORDER BY created_at, id",
            customer_id
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut cases = Vec::with_capacity(rows.len());
        for case in rows.into_iter().map(Case::from) {
            let comments = comments(&mut *conn, case.id).await?;
            let changes = history(&mut *conn, case.id).await?;
            cases.push((case, comments, changes));
        }
        Ok(cases)
    }

    async fn comments(conn: &mut PgConnection, case_id: Uuid) -> sqlx::Result<Vec<Comment>> {
        let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query!(
            "SELECT id, author, text, created_at FROM case_comments WHERE case_id = $1 \
             ORDER BY created_at, id",
            case_id
        )
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(|row| (row.id, row.author, row.text, row.created_at))
        .collect();
        Ok(rows
            .into_iter()
            .map(|(id, author, text, created_at)| Comment {
                id,
                case_id,
                author,
                text,
                created_at,
            })
            .collect())
    }

    /// Blanks subjects, descriptions, comments and the subject changes in the history; statuses,
    /// priorities, assignees and times stay for KPIs.
    pub async fn erase(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE cases SET subject = '(erased)', description = '' WHERE customer_id = $1",
            customer_id
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "UPDATE case_comments SET text = '' \
             WHERE case_id IN (SELECT id FROM cases WHERE customer_id = $1)",
            customer_id
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "UPDATE case_history SET \"from\" = '', \"to\" = '' \
             WHERE action = 'subject' AND case_id IN (SELECT id FROM cases WHERE customer_id = $1)",
            customer_id
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Blanks up to `limit` comments written before `cutoff`; returns how many.
    pub async fn purge_before(
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query!(
            "UPDATE case_comments SET text = '' WHERE id IN ( \
               SELECT id FROM case_comments WHERE created_at < $1 AND text <> '' \
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
        "cases",
        reassign: "UPDATE cases SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING id::text AS \"key!\"",
        restore: "UPDATE cases SET customer_id = $2 WHERE customer_id = $1 \
                  AND id::text = ANY($3)",
    )];
