//! PostgreSQL access for the audit trail.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{AuditContext, AuditEvent, AuditFilter};

pub async fn insert(
    conn: &mut PgConnection,
    c: &AuditContext,
    customer_id: Option<Uuid>,
    outcome: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO audit_events (actor, role, rpc, customer_id, request_id, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        &c.actor,
        &c.role,
        &c.rpc,
        customer_id,
        &c.request_id,
        outcome
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_many(
    conn: &mut PgConnection,
    c: &AuditContext,
    customer_ids: &[Uuid],
    outcome: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO audit_events (actor, role, rpc, customer_id, request_id, outcome) \
         SELECT $1, $2, $3, id, $5, $6 FROM unnest($4::uuid[]) AS id",
        &c.actor,
        &c.role,
        &c.rpc,
        customer_ids,
        &c.request_id,
        outcome
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a batch with `COPY` (cheaper for PostgreSQL than an `INSERT`: a busy instance writes
/// one row per card shown).
pub async fn insert_batch(
    pool: &PgPool,
    batch: &[(std::sync::Arc<AuditContext>, Option<Uuid>, &'static str)],
) -> sqlx::Result<()> {
    let mut data = String::with_capacity(batch.len() * 96);
    for (context, customer, outcome) in batch {
        for field in [&context.actor, &context.role, &context.rpc] {
            copy_text(&mut data, field);
            data.push('\t');
        }
        match customer {
            Some(id) => data.push_str(&id.to_string()),
            None => data.push_str("\\N"),
        }
        data.push('\t');
        copy_text(&mut data, &context.request_id);
        data.push('\t');
        data.push_str(outcome);
        data.push('\n');
    }
    let mut conn = crate::db::acquire(pool).await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY audit_events (actor, role, rpc, customer_id, request_id, outcome) FROM STDIN",
        )
        .await?;
    match copy.send(data.into_bytes()).await {
        Ok(_) => {
            copy.finish().await?;
            Ok(())
        }
        Err(error) => {
            copy.abort("audit batch not sent").await.ok();
            Err(error)
        }
    }
}

/// A value in `COPY`'s text format: backslash, tab, newline and carriage return escaped.
fn copy_text(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    role: String,
    rpc: String,
    customer_id: Option<Uuid>,
    request_id: String,
    outcome: String,
}

pub async fn list(
    pool: &PgPool,
    f: &AuditFilter,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<(i64, AuditEvent)>> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, at, actor, role, rpc, customer_id, request_id, outcome FROM audit_events \
         WHERE ($1::text IS NULL OR actor = $1) AND ($2::uuid IS NULL OR customer_id = $2) \
           AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4) \
           AND ($5::bigint IS NULL OR id < $5) \
         ORDER BY id DESC LIMIT $6",
        f.actor.as_deref(),
        f.customer_id,
        f.since,
        f.until,
        before_id,
        limit
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, AuditEvent::from(r)))
        .collect())
}

pub async fn for_customer(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> sqlx::Result<Vec<AuditEvent>> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, at, actor, role, rpc, customer_id, request_id, outcome FROM audit_events \
         WHERE customer_id = $1 ORDER BY id",
        customer_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(AuditEvent::from).collect())
}

impl From<Row> for AuditEvent {
    fn from(r: Row) -> Self {
        let outcome = match r.outcome.as_str() {
            "read" => "read",
            "written" => "written",
            "erased" => "erased",
            _ => "denied",
        };
        AuditEvent {
            at: r.at,
            context: AuditContext {
                actor: r.actor,
                role: r.role,
                rpc: r.rpc,
                request_id: r.request_id,
            },
            customer_id: r.customer_id,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_would_break_a_row() {
        let mut out = String::new();
        copy_text(&mut out, "a\tb\nc\\d\re-\u{e9}");
        assert_eq!(out, "a\\tb\\nc\\\\d\\re-\u{e9}");
    }
}
