//! PostgreSQL access for feedback and its history.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Change, Feedback, Filter, NewFeedback, Score, Sentiment, Source, Status, Summary};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    source: String,
    sentiment: String,
    score_kind: Option<String>,
    score: Option<i32>,
    category: String,
    text: String,
    customer_id: Option<Uuid>,
    interaction_id: Option<Uuid>,
    case_id: Option<Uuid>,
    gateway_id: Option<String>,
    call_id: Option<String>,
    status: String,
    owner: Option<String>,
    due_at: Option<DateTime<Utc>>,
    resolution: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
}

impl From<Row> for Feedback {
    fn from(r: Row) -> Self {
        let score = match (r.score_kind.as_deref(), r.score) {
            (Some("csat"), Some(n)) => Some(Score::Csat(n)),
            (Some("nps"), Some(n)) => Some(Score::Nps(n)),
            _ => None,
        };
        Feedback {
            id: r.id,
            // CHECK constraints admit only known values.
            source: Source::parse(&r.source).unwrap_or(Source::Internal),
            sentiment: Sentiment::parse(&r.sentiment).unwrap_or(Sentiment::Neutral),
            score,
            category: r.category,
            text: r.text,
            customer_id: r.customer_id,
            interaction_id: r.interaction_id,
            case_id: r.case_id,
            call: r.gateway_id.zip(r.call_id),
            status: Status::parse(&r.status).unwrap_or(Status::New),
            owner: r.owner,
            due_at: r.due_at,
            resolution: r.resolution,
            created_at: r.created_at,
            updated_at: r.updated_at,
            resolved_at: r.resolved_at,
            closed_at: r.closed_at,
        }
    }
}

macro_rules! select {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            "SELECT id, source, sentiment, score_kind, score, category, text, customer_id, interaction_id, case_id, gateway_id, call_id, status, owner, due_at, resolution, created_at, updated_at, resolved_at, closed_at FROM feedback " + $rest
            $(, $arg)*
        )
    };
}

pub async fn find_by_request_id(
    conn: &mut PgConnection,
    request_id: &str,
) -> sqlx::Result<Option<Feedback>> {
    let row = select!("WHERE request_id = $1", request_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Feedback::from))
}

pub async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Feedback>> {
    let row = select!("WHERE id = $1", id).fetch_optional(conn).await?;
    Ok(row.map(Feedback::from))
}

pub async fn load_for_update(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Feedback>> {
    let row = select!("WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Feedback::from))
}

/// Inserts unless the request id is taken (a concurrent retry); returns whether it inserted.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    new: &NewFeedback,
    sentiment: Sentiment,
) -> sqlx::Result<bool> {
    let (score_kind, score) = match new.score {
        Some(Score::Csat(n)) => (Some("csat"), Some(n)),
        Some(Score::Nps(n)) => (Some("nps"), Some(n)),
        None => (None, None),
    };
    let (gateway_id, call_id) = new.call.clone().unzip();
    let inserted = sqlx::query!(
        "INSERT INTO feedback (id, request_id, source, sentiment, score_kind, score, category, text, \
           customer_id, interaction_id, case_id, gateway_id, call_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (request_id) DO NOTHING",
        id,
        &new.request_id,
        new.source.as_str(),
        sentiment.as_str(),
        score_kind,
        score,
        &new.category,
        &new.text,
        new.customer_id,
        new.interaction_id,
        new.case_id,
        gateway_id,
        call_id
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn link_case(conn: &mut PgConnection, id: Uuid, case_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE feedback SET case_id = $2 WHERE id = $1",
        id,
        case_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn save(conn: &mut PgConnection, f: &Feedback) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE feedback SET status = $2, owner = $3, due_at = $4, resolution = $5, resolved_at = $6, \
           closed_at = $7, updated_at = now() WHERE id = $1",
        f.id,
        f.status.as_str(),
        f.owner.as_deref(),
        f.due_at,
        f.resolution.as_deref(),
        f.resolved_at,
        f.closed_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn record_change(
    conn: &mut PgConnection,
    id: Uuid,
    action: &str,
    from: &str,
    to: &str,
    actor: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO feedback_history (feedback_id, action, from_value, to_value, actor) \
         VALUES ($1, $2, $3, $4, $5)",
        id,
        action,
        from,
        to,
        actor
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn history(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<Change>> {
    let rows: Vec<(String, String, String, String, DateTime<Utc>)> = sqlx::query!(
        "SELECT action, from_value, to_value, actor, at FROM feedback_history \
         WHERE feedback_id = $1 ORDER BY id",
        id
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|row| (row.action, row.from_value, row.to_value, row.actor, row.at))
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

pub async fn list(
    conn: &mut PgConnection,
    f: &Filter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Feedback>> {
    let (after_at, after_id) = after.unzip();
    let rows = select!(
        "WHERE (NOT $1 OR status NOT IN ('resolved', 'closed')) \
           AND (NOT $2 OR (status NOT IN ('resolved', 'closed') AND due_at < now())) \
           AND ($3::text IS NULL OR owner = $3) \
           AND ($4::text IS NULL OR category = $4) \
           AND ($5::text IS NULL OR source = $5) \
           AND ($6::uuid IS NULL OR customer_id = $6) \
           AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8)) \
         ORDER BY created_at DESC, id DESC LIMIT $9",
        f.open_only,
        f.overdue_only,
        f.owner.as_deref(),
        f.category.as_deref(),
        f.source.map(Source::as_str),
        f.customer_id,
        after_at,
        after_id,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Feedback::from).collect())
}

pub async fn summary(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Summary> {
    let (total, resolved, median_seconds): (i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('resolved', 'closed')), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - created_at)) \
                  FILTER (WHERE resolved_at IS NOT NULL)::float8 \
         FROM feedback WHERE created_at >= $1 AND created_at < $2",
    )
    .bind(since)
    .bind(until)
    .fetch_one(&mut *conn)
    .await?;
    let mut counts = Vec::with_capacity(3);
    for sql in [
        "SELECT source, count(*) FROM feedback WHERE created_at >= $1 AND created_at < $2 \
         GROUP BY source ORDER BY count(*) DESC, source",
        "SELECT sentiment, count(*) FROM feedback WHERE created_at >= $1 AND created_at < $2 \
         GROUP BY sentiment ORDER BY count(*) DESC, sentiment",
        "SELECT category, count(*) FROM feedback WHERE created_at >= $1 AND created_at < $2 \
         GROUP BY category ORDER BY count(*) DESC, category",
    ] {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql)
            .bind(since)
            .bind(until)
            .fetch_all(&mut *conn)
            .await?;
        counts.push(rows);
    }
    let by_category = counts.pop().unwrap_or_default();
    let by_sentiment = counts.pop().unwrap_or_default();
    let by_source = counts.pop().unwrap_or_default();
    Ok(Summary {
        total,
        by_source,
        by_sentiment,
        by_category,
        share_resolved: if total == 0 {
            0.0
        } else {
            resolved as f64 / total as f64
        },
        median_hours_to_resolution: median_seconds.unwrap_or(0.0) / 3600.0,
    })
}

pub mod privacy {
    use sqlx::PgConnection;
    use uuid::Uuid;

    use super::{Feedback, Row};

    /// The customer's feedback, oldest first.
    pub async fn for_customer(
        conn: &mut PgConnection,
        customer_id: Uuid,
    ) -> sqlx::Result<Vec<Feedback>> {
        let rows = select!(
            "WHERE customer_id = $1 ORDER BY created_at, id",
            customer_id
        )
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().map(Feedback::from).collect())
    }

    /// Blanks the text and resolution of the customer's feedback; source, sentiment, score,
    /// category, status and times stay for the summary and KPIs.
    pub async fn erase(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE feedback SET text = '', \
               resolution = CASE WHEN resolution IS NULL THEN NULL ELSE '(erased)' END \
             WHERE customer_id = $1",
            customer_id
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// This context's rows per customer, as a merge moves them and an unmerge moves them back (the
/// keys are kept in merges' lineage: never change their form).
pub const CUSTOMER_ROWS: &[crate::customer_rows::CustomerRows] =
    &[crate::customer_rows::customer_rows!(
        "feedback",
        reassign: "UPDATE feedback SET customer_id = $1 WHERE customer_id = $2 \
                   RETURNING id::text AS \"key!\"",
        restore: "UPDATE feedback SET customer_id = $2 WHERE customer_id = $1 \
                  AND id::text = ANY($3)",
    )];
