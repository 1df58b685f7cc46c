//! PostgreSQL access for the feed: the outbox rows, the head, sequencing and retention.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::Event;

/// Events as the column arrays `$1`-`$5` of [`insert_events_sql!`](crate::feed::insert_events_sql),
/// for a statement that inserts them into `feed_events`, alone or together with its own write.
pub struct Columns<'a> {
    topics: Vec<&'static str>,
    kinds: Vec<&'static str>,
    subjects: Vec<&'a str>,
    customers: Vec<Option<Uuid>>,
    data: Vec<&'a serde_json::Value>,
}

impl<'a> Columns<'a> {
    pub fn of(events: &'a [Event]) -> Self {
        let mut columns = Self {
            topics: Vec::with_capacity(events.len()),
            kinds: Vec::with_capacity(events.len()),
            subjects: Vec::with_capacity(events.len()),
            customers: Vec::with_capacity(events.len()),
            data: Vec::with_capacity(events.len()),
        };
        for event in events {
            columns.topics.push(event.topic());
            columns.kinds.push(event.kind);
            columns.subjects.push(event.subject_id.as_str());
            columns.customers.push(event.customer_id);
            columns.data.push(&event.data);
        }
        columns
    }

    /// Binds the columns as the query's first five parameters.
    pub fn bind<'q>(
        self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.topics)
            .bind(self.kinds)
            .bind(self.subjects)
            .bind(self.customers)
            .bind(self.data)
    }
}

pub async fn insert(conn: &mut PgConnection, events: &[Event]) -> sqlx::Result<()> {
    Columns::of(events)
        .bind(sqlx::query(crate::feed::insert_events_sql!()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Empties the data of every event about an erased customer, in the erasure's transaction.
pub async fn scrub_customer(conn: &mut PgConnection, customer_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE feed_events SET data = '{}' WHERE customer_id = $1 AND data <> '{}'")
        .bind(customer_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// The highest position handed out.
    pub position: i64,
    /// Every position up to this one is gone (retention).
    pub pruned_through: i64,
}

/// The head, and whether committed events wait for a position.
/// The head, and how many committed events wait to be numbered (few, with the partial index).
pub async fn poll(pool: &PgPool) -> sqlx::Result<(Head, i64)> {
    let (position, pruned_through, waiting): (i64, i64, i64) = sqlx::query_as(
        "SELECT position, pruned_through, \
           (SELECT count(*) FROM feed_events WHERE position IS NULL) \
         FROM feed_head",
    )
    .fetch_one(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok((
        Head {
            position,
            pruned_through,
        },
        waiting,
    ))
}

/// Numbers up to `limit` committed events, unless another instance is doing it right now.
/// Returns the new head position when this call numbered any.
pub async fn sequence(pool: &PgPool, limit: i64) -> sqlx::Result<Option<i64>> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(head): Option<i64> =
        sqlx::query_scalar("SELECT position FROM feed_head FOR UPDATE SKIP LOCKED")
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(None);
    };
    let numbered: Option<i64> = sqlx::query_scalar(
        "WITH next AS ( \
           SELECT id, $1 + row_number() OVER (ORDER BY id) AS position \
           FROM (SELECT id FROM feed_events WHERE position IS NULL ORDER BY id LIMIT $2) w), \
         done AS (UPDATE feed_events e SET position = next.position FROM next \
                  WHERE e.id = next.id RETURNING e.position) \
         SELECT max(position) FROM done",
    )
    .bind(head)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    let Some(new_head) = numbered else {
        return Ok(None);
    };
    sqlx::query("UPDATE feed_head SET position = $1")
        .bind(new_head)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(new_head))
}

/// Deletes up to `limit` of the oldest events created before `cutoff`, in position order.
/// Returns how many went.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(pruned): Option<i64> =
        sqlx::query_scalar("SELECT pruned_through FROM feed_head FOR UPDATE SKIP LOCKED")
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(0);
    };
    // The oldest events first, up to the first one young enough to keep.
    let through: Option<i64> = sqlx::query_scalar(
        "SELECT max(position) FROM ( \
           SELECT position, created_at, \
             bool_or(created_at >= $2) OVER (ORDER BY position) AS reached_young \
           FROM (SELECT position, created_at FROM feed_events \
                 WHERE position > $1 ORDER BY position LIMIT $3) oldest) s \
         WHERE NOT reached_young",
    )
    .bind(pruned)
    .bind(cutoff)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    let Some(through) = through else {
        return Ok(0);
    };
    let deleted = sqlx::query("DELETE FROM feed_events WHERE position > $1 AND position <= $2")
        .bind(pruned)
        .bind(through)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE feed_head SET pruned_through = $1")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// An event as subscribers get it: its position is its cursor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub position: i64,
    pub topic: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub subject_id: String,
    pub customer_id: Option<Uuid>,
    pub data_json: String,
    pub occurred_at: DateTime<Utc>,
}

/// Up to `limit` events after `after`, of the given topics (all when empty), in position order.
pub async fn after(
    pool: &PgPool,
    after: i64,
    topics: &[String],
    limit: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(
        "SELECT position, topic, type, subject_id, customer_id, data::text AS data_json, \
           created_at AS occurred_at \
         FROM feed_events \
         WHERE position > $1 AND (cardinality($2::text[]) = 0 OR topic = ANY($2)) \
         ORDER BY position LIMIT $3",
    )
    .bind(after)
    .bind(topics)
    .bind(limit)
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await
}
