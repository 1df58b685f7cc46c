//! PostgreSQL access for the audit trail.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::summary::{Moved, Summary};
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

/// Writes rows and new read summaries with `COPY` (cheaper for PostgreSQL than an `INSERT`: a busy
/// instance writes many rows a second), with ids taken first so that each summary knows its row.
/// Returns the summaries' ids, in order.
pub async fn insert_batch(
    pool: &PgPool,
    rows: &[super::Row],
    summaries: &[Summary],
) -> sqlx::Result<Vec<i64>> {
    let mut conn = crate::db::acquire(pool).await?;
    let count = i64::try_from(rows.len() + summaries.len()).unwrap_or(i64::MAX);
    let ids: Vec<i64> = sqlx::query_scalar!(
        "SELECT nextval(pg_get_serial_sequence('audit_events', 'id')) AS \"id!\" \
         FROM generate_series(1, $1::bigint)",
        count
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut data = String::with_capacity((rows.len() + summaries.len()) * 128);
    let mut next = ids.iter();
    let mut line = |context: &AuditContext,
                    customer: Option<Uuid>,
                    outcome: &str,
                    at: DateTime<Utc>,
                    count: i32,
                    last: Option<DateTime<Utc>>| {
        if let Some(id) = next.next() {
            data.push_str(&id.to_string());
        }
        data.push('\t');
        push_time(&mut data, at);
        data.push('\t');
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
        data.push('\t');
        data.push_str(&count.to_string());
        data.push('\t');
        match last {
            Some(last) => push_time(&mut data, last),
            None => data.push_str("\\N"),
        }
        data.push('\n');
    };
    // Numbered in the order things happened (both lists are in that order already): a merge.
    let mut summary_ids = Vec::with_capacity(summaries.len());
    let (mut r, mut k) = (0, 0);
    while r < rows.len() || k < summaries.len() {
        let take_row = k == summaries.len() || (r < rows.len() && rows[r].at <= summaries[k].first);
        if take_row {
            let row = &rows[r];
            line(&row.context, row.customer, row.outcome, row.at, 1, None);
            r += 1;
        } else {
            let s = &summaries[k];
            summary_ids.push(ids[r + k]);
            let last = (s.count > 1).then_some(s.last);
            line(&s.context, Some(s.customer), "read", s.first, s.count, last);
            k += 1;
        }
    }
    let mut copy = conn
        .copy_in_raw(
            "COPY audit_events (id, at, actor, role, rpc, customer_id, request_id, outcome, read_count, last_at) \
             FROM STDIN",
        )
        .await?;
    match copy.send(data.into_bytes()).await {
        Ok(_) => {
            copy.finish().await?;
            Ok(summary_ids)
        }
        Err(error) => {
            copy.abort("audit batch not sent").await.ok();
            Err(error)
        }
    }
}

/// Brings summarized rows up to their counts. Each row is found by its id and its `at` (the first
/// read), so the update reads only that row's month.
pub async fn update_counts(pool: &PgPool, moved: &[Moved]) -> sqlx::Result<()> {
    let ids: Vec<i64> = moved.iter().map(|m| m.row).collect();
    let first: Vec<DateTime<Utc>> = moved.iter().map(|m| m.first).collect();
    let counts: Vec<i32> = moved.iter().map(|m| m.count).collect();
    let last: Vec<DateTime<Utc>> = moved.iter().map(|m| m.last).collect();
    sqlx::query!(
        "UPDATE audit_events a SET read_count = u.n, last_at = u.last \
         FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::timestamptz[]) \
           AS u(id, first, n, last) \
         WHERE a.id = u.id AND a.at = u.first",
        &ids,
        &first,
        &counts,
        &last
    )
    .execute(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(())
}

/// A time in `COPY`'s text format, cut to PostgreSQL's microseconds the way sqlx cuts a bound
/// time (`COPY` would round instead): [`update_counts`] finds a row by the time it was written
/// with, so both must be the same instant.
fn push_time(out: &mut String, at: DateTime<Utc>) {
    use std::fmt::Write as _;
    let _ = write!(out, "{}", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
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
    read_count: i32,
    last_at: Option<DateTime<Utc>>,
}

/// A page of the trail, newest first. The time bounds are written so that PostgreSQL prunes to
/// their months in a generic plan too (`$3 IS NULL OR at >= $3` would read every month once the
/// statement's plan is cached).
pub async fn list(
    pool: &PgPool,
    f: &AuditFilter,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<(i64, AuditEvent)>> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, at, actor, role, rpc, customer_id, request_id, outcome, read_count, last_at \
         FROM audit_events \
         WHERE ($1::text IS NULL OR actor = $1) AND ($2::uuid IS NULL OR customer_id = $2) \
           AND at >= COALESCE($3::timestamptz, '-infinity') \
           AND at < COALESCE($4::timestamptz, 'infinity') \
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
        "SELECT id, at, actor, role, rpc, customer_id, request_id, outcome, read_count, last_at \
         FROM audit_events \
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
            count: r.read_count,
            last_at: r.last_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_text, push_time};

    #[test]
    fn copy_times_are_cut_to_microseconds_not_rounded() {
        use chrono::TimeZone;
        let at = chrono::Utc
            .timestamp_opt(1_796_634_000, 123_456_999)
            .single()
            .expect("time");
        let mut out = String::new();
        push_time(&mut out, at);
        assert_eq!(out, "2026-12-07T09:00:00.123456Z");
    }

    #[test]
    fn copy_text_escapes_what_would_break_a_row() {
        let mut out = String::new();
        copy_text(&mut out, "a\tb\nc\\d\re-\u{e9}");
        assert_eq!(out, "a\\tb\\nc\\\\d\\re-\u{e9}");
    }
}
