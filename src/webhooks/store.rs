//! PostgreSQL access for the push sinks: `feed_sinks` (subscriptions, cursors, leases) and
//! `feed_sink_deliveries` (the attempts log).
//!
//! Every write a worker makes is fenced by its lease: it names the worker (`lease_owner = $me`),
//! so a worker whose lease was taken over (it stalled past the lease) changes nothing.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Change, Delivery, Kind, Sink, State};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    kind: String,
    url: String,
    topics: Vec<String>,
    description: String,
    state: String,
    cursor: i64,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: String,
    failing_since: Option<DateTime<Utc>>,
    previous_secret_until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Sink {
    fn from(r: Row) -> Self {
        Sink {
            id: r.id,
            // CHECK constraints admit only known values.
            kind: Kind::parse(&r.kind).unwrap_or(Kind::Webhook),
            url: r.url,
            topics: r.topics,
            description: r.description,
            state: State::parse(&r.state).unwrap_or(State::Paused),
            cursor: r.cursor,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            failing_since: r.failing_since,
            // An overlap that has ended is no overlap.
            previous_secret_until: r.previous_secret_until.filter(|until| *until > Utc::now()),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A statement that ends by returning the changed sink's [`Row`].
macro_rules! returning {
    ($sql:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            $sql + " RETURNING id, kind, url, topics, description, state, cursor, attempts, \
              next_attempt_at, last_error, failing_since, previous_secret_until, created_at, \
              updated_at"
            $(, $arg)*
        )
    };
}

/// Webhooks' [`Row`]s, with the rest of the statement after `FROM feed_sinks`.
macro_rules! select {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            Row,
            "SELECT id, kind, url, topics, description, state, cursor, attempts, \
               next_attempt_at, last_error, failing_since, previous_secret_until, created_at, \
               updated_at FROM feed_sinks WHERE kind = 'webhook' " + $rest
            $(, $arg)*
        )
    };
}

pub struct NewSink<'a> {
    pub id: Uuid,
    pub kind: Kind,
    pub url: &'a str,
    pub topics: &'a [String],
    pub description: &'a str,
    pub secret: &'a str,
    pub cursor: i64,
}

pub async fn insert(pool: &PgPool, new: NewSink<'_>) -> sqlx::Result<Sink> {
    let row = returning!(
        "INSERT INTO feed_sinks (id, kind, url, topics, description, secret, cursor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        new.id,
        new.kind.as_str(),
        new.url,
        new.topics,
        new.description,
        new.secret,
        new.cursor
    )
    .fetch_one(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(row.into())
}

/// The NATS sink's row (one per deployment, a fixed id), made at its first start from the head.
pub async fn ensure_nats(pool: &PgPool, id: Uuid, cursor: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO feed_sinks (id, kind, cursor, description) \
         VALUES ($1, 'nats', $2, 'the NATS JetStream sink (--nats-url)') \
         ON CONFLICT (id) DO NOTHING",
        id,
        cursor
    )
    .execute(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Sink>> {
    let row = select!("AND id = $1", id)
        .fetch_optional(&mut *crate::db::acquire(pool).await?)
        .await?;
    Ok(row.map(Into::into))
}

/// Webhooks, oldest first, after `(created_at, id)`.
pub async fn list(
    pool: &PgPool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Sink>> {
    let (at, id) = after.unzip();
    let rows = select!(
        "AND ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2)) \
         ORDER BY created_at, id LIMIT $3",
        at,
        id,
        limit
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn update(pool: &PgPool, id: Uuid, change: &Change) -> sqlx::Result<Option<Sink>> {
    let row = returning!(
        "UPDATE feed_sinks SET url = coalesce($2, url), topics = coalesce($3, topics), \
           description = coalesce($4, description), updated_at = now() \
         WHERE id = $1 AND kind = 'webhook'",
        id,
        change.url.as_deref(),
        change.topics.as_deref(),
        change.description.as_deref()
    )
    .fetch_optional(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(row.map(Into::into))
}

pub async fn pause(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Sink>> {
    let row = returning!(
        "UPDATE feed_sinks SET state = 'paused', updated_at = now() \
         WHERE id = $1 AND kind = 'webhook'",
        id
    )
    .fetch_optional(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(row.map(Into::into))
}

pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM feed_sinks WHERE id = $1 AND kind = 'webhook'",
        id
    )
    .execute(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The new secret; the current one becomes the previous, valid until `until`.
pub async fn rotate(
    pool: &PgPool,
    id: Uuid,
    secret: &str,
    until: DateTime<Utc>,
) -> sqlx::Result<Option<Sink>> {
    let row = returning!(
        "UPDATE feed_sinks SET previous_secret = secret, previous_secret_until = $3, \
           secret = $2, updated_at = now() \
         WHERE id = $1 AND kind = 'webhook'",
        id,
        secret,
        until
    )
    .fetch_optional(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(row.map(Into::into))
}

/// Active again from `cursor` (or where it is), the failure and attempts cleared, due now.
pub async fn replay(pool: &PgPool, id: Uuid, cursor: Option<i64>) -> sqlx::Result<Option<Sink>> {
    let row = returning!(
        "UPDATE feed_sinks SET state = 'active', cursor = coalesce($2, cursor), attempts = 0, \
           next_attempt_at = now(), last_error = '', failing_since = NULL, updated_at = now() \
         WHERE id = $1 AND kind = 'webhook'",
        id,
        cursor
    )
    .fetch_optional(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(row.map(Into::into))
}

/// A page of a webhook's attempts, newest first, before delivery id `before`.
pub async fn deliveries(
    pool: &PgPool,
    sink: Uuid,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as!(
        Delivery,
        "SELECT id, position, through_position, events, attempt, status_code, error, \
           duration_ms, attempted_at \
         FROM feed_sink_deliveries WHERE sink_id = $1 AND ($2::bigint IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
        sink,
        before,
        limit
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await
}

/// A sink a worker holds, with what delivering needs.
pub struct Claimed {
    pub sink: Sink,
    /// The current secret, then the previous one while its overlap lasts.
    pub secrets: Vec<String>,
}

/// Leases up to `limit` active sinks that are due and behind `head`, and not leased by anyone
/// else; `with_nats`: the NATS sink too (only instances configured for it deliver it).
pub async fn claim(
    pool: &PgPool,
    owner: Uuid,
    lease: std::time::Duration,
    head: i64,
    with_nats: bool,
    limit: i64,
) -> sqlx::Result<Vec<Claimed>> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let rows = sqlx::query!(
        "UPDATE feed_sinks s SET lease_owner = $1, \
           lease_until = now() + make_interval(secs => $2::bigint / 1000.0) \
         WHERE s.id IN ( \
           SELECT id FROM feed_sinks WHERE state = 'active' AND next_attempt_at <= now() \
             AND cursor < $3 AND (lease_until IS NULL OR lease_until < now()) \
             AND (kind = 'webhook' OR $4) \
           ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
         RETURNING id, kind, url, topics, description, state, cursor, attempts, next_attempt_at, \
           last_error, failing_since, previous_secret_until, created_at, updated_at, secret, \
           previous_secret",
        owner,
        lease_ms,
        head,
        with_nats,
        limit
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let overlapping = r
                .previous_secret_until
                .is_some_and(|until| until > Utc::now());
            let mut secrets = vec![r.secret];
            if overlapping && let Some(previous) = r.previous_secret {
                secrets.push(previous);
            }
            Claimed {
                sink: Row {
                    id: r.id,
                    kind: r.kind,
                    url: r.url,
                    topics: r.topics,
                    description: r.description,
                    state: r.state,
                    cursor: r.cursor,
                    attempts: r.attempts,
                    next_attempt_at: r.next_attempt_at,
                    last_error: r.last_error,
                    failing_since: r.failing_since,
                    previous_secret_until: r.previous_secret_until,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                }
                .into(),
                secrets,
            }
        })
        .collect())
}

/// One attempt for the log, or a run of first-attempt successes (`position` through `through`,
/// `events` of them, `duration_ms` the longest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub position: i64,
    pub through: i64,
    pub events: i32,
    pub attempt: i32,
    pub status_code: i32,
    pub error: &'static str,
    pub duration_ms: i32,
}

/// What a worker writes at a checkpoint: the cursor, whether it keeps the lease (renewed) or lets
/// it go, and the attempts since the last checkpoint. `false`: the lease was someone else's by
/// then, and nothing was written.
pub async fn checkpoint(
    pool: &PgPool,
    id: Uuid,
    owner: Uuid,
    cursor: i64,
    keep: Option<std::time::Duration>,
    attempts: &[Attempt],
) -> sqlx::Result<bool> {
    let mut tx = crate::db::begin(pool).await?;
    let keep_ms = keep.map(|lease| i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let done = sqlx::query!(
        "UPDATE feed_sinks SET cursor = greatest(cursor, $3), \
           attempts = CASE WHEN cursor < $3 THEN 0 ELSE attempts END, \
           last_error = CASE WHEN cursor < $3 THEN '' ELSE last_error END, \
           lease_until = CASE WHEN $4::bigint IS NULL THEN NULL \
                              ELSE now() + make_interval(secs => $4::bigint / 1000.0) END, \
           lease_owner = CASE WHEN $4::bigint IS NULL THEN NULL ELSE lease_owner END \
         WHERE id = $1 AND lease_owner = $2",
        id,
        owner,
        cursor,
        keep_ms
    )
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    log(&mut tx, id, attempts).await?;
    tx.commit().await?;
    Ok(true)
}

/// The event after the cursor failed: attempts counted, the next one due at `next`, or the sink
/// FAILING (`failing`). The lease goes. `false`: the lease was someone else's.
#[allow(clippy::too_many_arguments)]
pub async fn failed(
    pool: &PgPool,
    id: Uuid,
    owner: Uuid,
    cursor: i64,
    attempts: i32,
    next: DateTime<Utc>,
    error: &str,
    failing: bool,
    log_attempts: &[Attempt],
) -> sqlx::Result<bool> {
    let mut tx = crate::db::begin(pool).await?;
    let done = sqlx::query!(
        "UPDATE feed_sinks SET cursor = greatest(cursor, $3), attempts = $4, \
           next_attempt_at = $5, last_error = $6, \
           state = CASE WHEN $7 THEN 'failing' ELSE state END, \
           failing_since = CASE WHEN $7 THEN now() ELSE failing_since END, \
           updated_at = CASE WHEN $7 THEN now() ELSE updated_at END, \
           lease_owner = NULL, lease_until = NULL \
         WHERE id = $1 AND lease_owner = $2",
        id,
        owner,
        cursor,
        attempts,
        next,
        error,
        failing
    )
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    log(&mut tx, id, log_attempts).await?;
    tx.commit().await?;
    Ok(true)
}

async fn log(conn: &mut sqlx::PgConnection, id: Uuid, attempts: &[Attempt]) -> sqlx::Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let positions: Vec<i64> = attempts.iter().map(|a| a.position).collect();
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    let statuses: Vec<i32> = attempts.iter().map(|a| a.status_code).collect();
    let errors: Vec<&str> = attempts.iter().map(|a| a.error).collect();
    let durations: Vec<i32> = attempts.iter().map(|a| a.duration_ms).collect();
    let throughs: Vec<i64> = attempts.iter().map(|a| a.through).collect();
    let events: Vec<i32> = attempts.iter().map(|a| a.events).collect();
    sqlx::query!(
        "INSERT INTO feed_sink_deliveries (sink_id, position, attempt, status_code, error, \
           duration_ms, through_position, events) \
         SELECT $1, * FROM unnest($2::bigint[], $3::int[], $4::int[], $5::text[], $6::int[], \
           $7::bigint[], $8::int[])",
        id,
        &positions,
        &numbers,
        &statuses,
        &errors as &[&str],
        &durations,
        &throughs,
        &events
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes attempts older than `cutoff` (at most `limit`); how many went.
pub async fn prune_deliveries(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM feed_sink_deliveries WHERE id IN ( \
           SELECT id FROM feed_sink_deliveries WHERE attempted_at < $1 LIMIT $2)",
        cutoff,
        limit
    )
    .execute(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(done.rows_affected())
}

/// Sinks stopped in FAILING, for the metrics.
pub async fn count_failing(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!("SELECT count(*) AS \"n!\" FROM feed_sinks WHERE state = 'failing'")
        .fetch_one(&mut *crate::db::acquire(pool).await?)
        .await
}
