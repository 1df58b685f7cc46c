//! The event feed other services follow: every domain change writes an [`Event`] in its own
//! transaction ([`record`]); the [`Sequencer`] numbers committed events; subscribers replay and
//! follow them by position (`grpc`).
//!
//! Why a sequencer: an identity column is handed out when a row is inserted, not when its
//! transaction commits, so a reader that resumes "after id 41" can miss id 40 committing late.
//! Positions are given only to committed rows, by one instance at a time (the one holding the
//! lock on `feed_head`), in id order within a pass; a later pass only ever sees later commits.
//! So a consumer that resumes after position P misses nothing, and a change made after another
//! committed always comes after it.
//!
//! Events carry ids, states and codes: never names, numbers, emails or free text.

pub mod grpc;
mod sequencer;
mod store;
mod subscription;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ids::CustomerId;

pub use sequencer::{FeedHead, Sequencer};

/// The event feed as subscribers read it: committed events in position order.
#[derive(Clone)]
pub struct EventFeed {
    pool: sqlx::PgPool,
    head: FeedHead,
}

impl EventFeed {
    pub fn new(pool: sqlx::PgPool, head: FeedHead) -> Self {
        Self { pool, head }
    }

    /// A subscription from `start`: its events as they are numbered, until the receiver drops.
    pub async fn subscribe(
        &self,
        start: Start,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<FeedItem, FeedError>>, FeedError> {
        subscription::subscribe(self.pool.clone(), self.head.clone(), start).await
    }
}
pub use store::{Columns, Head, StoredEvent};

/// Empties the payloads of the customer's feed events (an erasure), keeping their positions.
pub async fn scrub_customer(
    conn: &mut sqlx::PgConnection,
    customer_id: CustomerId,
) -> sqlx::Result<()> {
    store::scrub_customer(conn, customer_id.as_uuid()).await
}
pub use subscription::{FeedItem, Start, parse_cursor, subscribe};

/// The feed's head now: the newest position, and what retention removed.
pub async fn head(pool: &sqlx::PgPool) -> sqlx::Result<Head> {
    Ok(store::poll(pool).await?.head)
}

/// Up to `limit` events after position `after`, of `topics` (all when empty), in order: for
/// readers that keep their own cursor (the push sinks).
pub async fn read_after(
    pool: &sqlx::PgPool,
    after: i64,
    topics: &[String],
    limit: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    store::after(pool, after, topics, limit).await
}

/// The position to resume after to get every event from `since` on: the one before the first
/// event that occurred at or after it (the head when there is none).
pub async fn position_before(
    pool: &sqlx::PgPool,
    since: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<i64> {
    store::position_before(pool, since).await
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("not a cursor of this feed")]
    BadCursor,
    #[error("the cursor is ahead of the feed")]
    CursorAhead,
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("the cursor is older than retention; the oldest cursor to resume after is {oldest}")]
    Expired { oldest: i64 },
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(FeedError);

/// The insert of [`Columns`] (`$1`-`$5`) into the outbox, in the callers' order (WITH ORDINALITY
/// keeps it in the ids): a statement of its own, or a CTE of another write (call events).
macro_rules! insert_events_sql {
    () => {
        "INSERT INTO feed_events (topic, type, subject_id, customer_id, data) \
         SELECT topic, type, subject_id, customer_id, data \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[]) \
           WITH ORDINALITY AS e(topic, type, subject_id, customer_id, data, n) \
         ORDER BY n"
    };
}
pub(crate) use insert_events_sql;

/// The topics a subscriber can choose from.
pub const TOPICS: &[&str] = &[
    "customer",
    "call",
    "interaction",
    "case",
    "order",
    "feedback",
    "campaign",
];

/// One change, as other services see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// `topic.what`, e.g. `customer.created`; the topic is the part before the dot.
    kind: &'static str,
    subject_id: String,
    customer_id: Option<Uuid>,
    data: Value,
}

impl Event {
    pub fn new(kind: &'static str, subject_id: impl ToString) -> Self {
        debug_assert!(
            TOPICS.contains(&Self::topic_of(kind)),
            "unknown topic in {kind}"
        );
        Self {
            kind,
            subject_id: subject_id.to_string(),
            customer_id: None,
            data: Value::Object(Default::default()),
        }
    }

    /// The customer the change concerns (erasing them empties the event's data).
    pub fn customer(mut self, customer_id: Option<CustomerId>) -> Self {
        self.customer_id = customer_id.map(CustomerId::as_uuid);
        self
    }

    /// Details: ids, states and codes only.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    fn topic_of(kind: &str) -> &str {
        kind.split_once('.').map_or(kind, |(topic, _)| topic)
    }

    fn topic(&self) -> &'static str {
        Self::topic_of(self.kind)
    }
}

/// Writes one event in the caller's transaction.
pub async fn record(conn: &mut PgConnection, event: Event) -> sqlx::Result<()> {
    record_all(conn, std::slice::from_ref(&event)).await
}

/// Writes events in the caller's transaction, in order, with one statement.
pub async fn record_all(conn: &mut PgConnection, events: &[Event]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    store::insert(conn, events).await
}
