//! PostgreSQL access for the feed: the outbox rows, the head, sequencing and retention.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
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
    sqlx::query!(
        "UPDATE feed_events SET data = '{}' WHERE customer_id = $1 AND data <> '{}'",
        customer_id
    )
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

/// Where a poll stops counting events waiting to be numbered.
pub const WAITING_COUNTED: i64 = 1_001;

/// What one poll sees.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub head: Head,
    /// Committed events waiting to be numbered, up to [`WAITING_COUNTED`].
    pub waiting: i64,
    /// Whether the sequencer has ids to settle (see [`Settling`]).
    pub unsettled: bool,
}

/// The head, how many committed events wait to be numbered, and whether ids wait to be settled.
/// The count looks only above `settled_through`: the few events there are checked against
/// `feed_positions`, one index probe each (`OFFSET 0` keeps the planner from hashing the whole
/// positions table for an anti-join, which it chose for a parameter it cannot see). It stops at
/// [`WAITING_COUNTED`]: unbounded, the planner's guess of a third of the table made PostgreSQL
/// JIT-compile the query on every poll, 64 ms of a 0.07 ms query.
pub async fn poll(pool: &PgPool) -> sqlx::Result<Poll> {
    let row = sqlx::query!(
        "SELECT h.position, h.pruned_through, \
           (SELECT count(*) FROM (SELECT 1 FROM feed_events e WHERE e.id > h.settled_through \
              AND NOT EXISTS (SELECT 1 FROM feed_positions p WHERE p.event_id = e.id OFFSET 0) \
              LIMIT $1) w) AS \"waiting!\", \
           h.settled_through < (SELECT CASE WHEN is_called THEN last_value ELSE 0 END \
                                FROM feed_events_id_seq) AS \"unsettled!\" \
         FROM feed_head h",
        WAITING_COUNTED
    )
    .fetch_one(&mut *crate::db::acquire(pool).await?)
    .await?;
    let (position, pruned_through, waiting, unsettled) =
        (row.position, row.pruned_through, row.waiting, row.unsettled);
    Ok(Poll {
        head: Head {
            position,
            pruned_through,
        },
        waiting,
        unsettled,
    })
}

/// What the sequencer remembers between passes to advance `feed_head.settled_through`: for each
/// pass, the last event id drawn before it started, and the pass's own transaction id, assigned
/// after that read. A writer holds its transaction id before it draws an event id
/// (`feed_event_id()`, migration 20261202000019), so every id up to the first was drawn by a
/// transaction older than the second. Once no such transaction runs (the oldest running one, a
/// snapshot's `xmin`, is not older), the committed ones are all visible, and a numbering statement
/// that numbered everything it saw settles those ids.
#[derive(Debug, Default)]
pub struct Settling {
    pending: std::collections::VecDeque<(i64, i64)>,
}

impl Settling {
    /// Records a pass that drew ids up to `drawn` before its transaction `xid` began writing, and
    /// whose numbering statement saw `xmin` as the oldest running transaction; returns the highest
    /// event id now settled, if any. Only a `complete` statement (one that numbered every
    /// committed event it saw) settles anything.
    fn advance(&mut self, drawn: i64, xid: i64, xmin: i64, complete: bool) -> Option<i64> {
        let mut settled = None;
        while complete && let Some(&(id, older_than)) = self.pending.front() {
            if older_than > xmin {
                break;
            }
            settled = Some(id);
            self.pending.pop_front();
        }
        // No new id since the last pass: the older entry settles the same ids sooner.
        if self.pending.back().is_none_or(|&(last, _)| last < drawn) {
            self.pending.push_back((drawn, xid));
        }
        settled
    }
}

/// Numbers up to `limit` committed events, and advances `settled_through`, unless another
/// instance is doing it right now. Returns the new head position when this call numbered any.
pub async fn sequence(
    pool: &PgPool,
    limit: i64,
    settling: &mut Settling,
) -> sqlx::Result<Option<i64>> {
    let mut tx = crate::db::begin(pool).await?;
    // The numbering statement's row estimates are guesses from parameters; a JIT compilation
    // would cost far more than the statement.
    crate::db::set_transaction(&mut tx, crate::db::TransactionMode::NoJit).await?;
    // Read before this transaction has an id (the lock below gives it one).
    let drawn: i64 = sqlx::query_scalar!(
        r#"SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS "drawn!" FROM feed_events_id_seq"#
    )
    .fetch_one(&mut *tx)
    .await?;
    let Some((head, settled_through, xid)) = sqlx::query!(
        "SELECT position, settled_through, pg_current_xact_id()::text::bigint AS \"xid!\" \
         FROM feed_head FOR UPDATE SKIP LOCKED"
    )
    .fetch_optional(&mut *tx)
    .await?
    .map(|row| (row.position, row.settled_through, row.xid)) else {
        return Ok(None);
    };
    let row = sqlx::query!(
        "WITH next AS ( \
           SELECT id, $1 + row_number() OVER (ORDER BY id) AS position \
           FROM (SELECT e.id FROM feed_events e \
                 WHERE e.id > $3 \
                   AND NOT EXISTS (SELECT 1 FROM feed_positions p WHERE p.event_id = e.id OFFSET 0) \
                 ORDER BY e.id LIMIT $2) w), \
         done AS (INSERT INTO feed_positions (position, event_id) \
                  SELECT position, id FROM next RETURNING position) \
         SELECT max(position) AS numbered_to, count(*) AS \"numbered!\", \
           pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS \"xmin!\" \
         FROM done",
        head,
        limit,
        settled_through
    )
    .fetch_one(&mut *tx)
    .await?;
    let (numbered_to, numbered, xmin) = (row.numbered_to, row.numbered, row.xmin);
    let settled = settling
        .advance(drawn, xid, xmin, numbered < limit)
        .filter(|id| *id > settled_through);
    if numbered_to.is_none() && settled.is_none() {
        return Ok(None);
    }
    sqlx::query!(
        "UPDATE feed_head SET position = COALESCE($1, position), \
           settled_through = GREATEST(settled_through, COALESCE($2::int8, 0))",
        numbered_to,
        settled
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(numbered_to)
}

/// Prunes up to `limit` of the oldest positions whose events were created before `cutoff`, in
/// position order: their positions are deleted and `pruned_through` moves past them. The events'
/// rows go with their month's partition ([`months_to_drop`]). Returns how many went.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>, limit: i64) -> sqlx::Result<u64> {
    let mut tx = crate::db::begin(pool).await?;
    let Some(pruned): Option<i64> =
        sqlx::query_scalar!("SELECT pruned_through FROM feed_head FOR UPDATE SKIP LOCKED")
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(0);
    };
    // The oldest events first, up to the first one young enough to keep.
    let through: Option<i64> = sqlx::query_scalar!(
        "SELECT max(position) FROM ( \
           SELECT position, created_at, \
             bool_or(created_at >= $2) OVER (ORDER BY position) AS reached_young \
           FROM (SELECT p.position, e.created_at \
                 FROM feed_positions p JOIN feed_events e ON e.id = p.event_id \
                 WHERE p.position > $1 ORDER BY p.position LIMIT $3) oldest) s \
         WHERE NOT reached_young",
        pruned,
        cutoff,
        limit
    )
    .fetch_one(&mut *tx)
    .await?;
    let Some(through) = through else {
        return Ok(0);
    };
    let deleted = sqlx::query!(
        "DELETE FROM feed_positions WHERE position > $1 AND position <= $2",
        pruned,
        through
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!("UPDATE feed_head SET pruned_through = $1", through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// The first month of events that must stay, of `months` (the partitions, oldest first), when
/// everything before `cap` may go by age: every month before it holds only events that are
/// numbered (settled) and that no position points to any more, and so does the default partition
/// before it. `None` when even the oldest month must stay.
///
/// The test is on ids, two index reads per month: the highest event id created before the month
/// must be settled and below every id a position still names. Ids and creation times interleave
/// only at a month's edge (a transaction that began in one month draws its id in the next), so
/// a month may stay until the next month's first events are pruned too: a week, with the default
/// retention.
pub async fn months_to_drop(
    pool: &PgPool,
    months: &[NaiveDate],
    cap: NaiveDate,
) -> sqlx::Result<Option<NaiveDate>> {
    let mut conn = crate::db::acquire(pool).await?;
    let bounds = sqlx::query!(
        "SELECT h.settled_through, (SELECT min(event_id) FROM feed_positions) AS oldest_named \
         FROM feed_head h"
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut keep_from = None;
    for month in months.iter().copied().filter(|month| *month <= cap) {
        let start = month.and_time(NaiveTime::MIN).and_utc();
        let newest: Option<i64> = sqlx::query_scalar!(
            "SELECT max(id) FROM feed_events WHERE created_at < $1",
            start
        )
        .fetch_one(&mut *conn)
        .await?;
        let gone = newest.is_none_or(|id| {
            id <= bounds.settled_through && bounds.oldest_named.is_none_or(|named| id < named)
        });
        if !gone {
            break;
        }
        keep_from = Some(month);
    }
    Ok(keep_from)
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
        "SELECT p.position, e.topic, e.type, e.subject_id, e.customer_id, e.data::text AS data_json, \
           e.created_at AS occurred_at \
         FROM feed_positions p JOIN feed_events e ON e.id = p.event_id \
         WHERE p.position > $1 AND (cardinality($2::text[]) = 0 OR e.topic = ANY($2)) \
         ORDER BY p.position LIMIT $3",
    )
    .bind(after)
    .bind(topics)
    .bind(limit)
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await
}

/// The position before the first event created at or after `since`; the head when none is.
pub async fn position_before(pool: &PgPool, since: DateTime<Utc>) -> sqlx::Result<i64> {
    let mut conn = crate::db::acquire(pool).await?;
    let first = sqlx::query_scalar!(
        "SELECT p.position FROM feed_positions p JOIN feed_events e ON e.id = p.event_id \
         WHERE e.created_at >= $1 ORDER BY p.position LIMIT 1",
        since
    )
    .fetch_optional(&mut *conn)
    .await?;
    match first {
        Some(position) => Ok(position - 1),
        None => Ok(sqlx::query_scalar!("SELECT position FROM feed_head")
            .fetch_one(&mut *conn)
            .await?),
    }
}

#[cfg(test)]
mod tests {
    use super::Settling;

    #[test]
    fn ids_settle_once_every_transaction_older_than_the_pass_has_ended() {
        let mut settling = Settling::default();
        // Pass 1 (transaction 50): ids up to 100 were drawn before it.
        assert_eq!(settling.advance(100, 50, 40, true), None);
        // Pass 2 (transaction 60): transaction 49 still runs, so ids up to 100 may still appear.
        assert_eq!(settling.advance(180, 60, 49, true), None);
        // Pass 3: the oldest running transaction is 55: pass 1's ids are settled, not pass 2's.
        assert_eq!(settling.advance(200, 70, 55, true), Some(100));
        // Pass 4: nothing older than 70 runs: passes 2 and 3 settle.
        assert_eq!(settling.advance(250, 80, 70, true), Some(200));
        // Idle passes (no new id) add nothing to wait for: pass 4's entry settles them all.
        assert_eq!(settling.advance(250, 90, 75, true), None);
        assert_eq!(settling.advance(250, 95, 85, true), Some(250));
        assert_eq!(settling.pending.len(), 1, "only the last pass waits");
    }

    #[test]
    fn a_statement_that_left_events_unnumbered_settles_nothing() {
        let mut settling = Settling::default();
        assert_eq!(settling.advance(100, 50, 40, true), None);
        // Its limit was reached: committed events below 100 may still be unnumbered.
        assert_eq!(settling.advance(300, 60, 55, false), None);
        // The next complete statement numbers them: both earlier passes settle.
        assert_eq!(settling.advance(320, 70, 65, true), Some(300));
    }
}
