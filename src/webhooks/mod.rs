//! Pushing the event feed to the systems around the call center: webhook subscriptions (signed
//! per Standard Webhooks, retried, replayable) and the NATS JetStream sink.
//!
//! Both are *sinks*: a row in `feed_sinks` with its own cursor over the feed, delivered by the
//! worker that holds its lease (`delivery`). Every instance runs a worker; a sink is delivered by
//! one of them at a time, and a dead instance's lease runs out and is taken over. A sink sends its
//! events one at a time in feed order, and moves its cursor only past an event that was accepted,
//! so nothing is skipped: an event that keeps failing stops its sink (FAILING) until a replay.
//!
//! What goes out is the feed's event: ids, states and codes, never names, numbers or free text
//! (the feed guarantees it; an erasure empties the data and sends `customer.erased`).

pub mod address;
mod delivery;
pub mod grpc;
pub mod signing;
mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub use self::address::{AllowList, Cidr};
pub use self::delivery::{
    NATS_SINK, NATS_STREAM, SinkStats, nats_subject, spawn_workers, webhook_id,
};
use self::signing::Secret;
use crate::page_token::{PageRequest, PageTokenError};
use crate::validation::Violations;

/// The longest URL a subscription may have.
const MAX_URL: usize = 2_000;
/// The longest description.
pub const MAX_DESCRIPTION: usize = 500;
/// How long the old secret stays valid after a rotation, unless the request says otherwise.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// How delivery behaves (`--webhook-*` flags).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Non-public addresses webhooks may go to anyway.
    pub allow: AllowList,
    /// Attempts on one event before its subscription turns FAILING.
    pub max_attempts: u32,
    /// How long one event may keep failing before its subscription turns FAILING.
    pub max_age: Duration,
    /// The first retry's delay; each next one doubles, up to `retry_max` (with jitter).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// One request's time limit, the answer's body included.
    pub timeout: Duration,
    /// How long a worker holds a sink without renewing its lease.
    pub lease: Duration,
    /// The most of an answer's body that is read (the rest is dropped with the connection).
    pub body_cap: usize,
    /// NATS (JetStream) to publish every event to; `None`: no NATS sink.
    pub nats_url: Option<String>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            allow: AllowList::default(),
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            body_cap: 64 * 1024,
            nats_url: None,
        }
    }
}

impl DeliverySettings {
    /// The delay before attempt `attempts + 1`, after `attempts` failed: exponential from
    /// `retry_base`, capped at `retry_max`, then scaled by `jitter` (0.5 to 1: "equal jitter", so
    /// that subscriptions failing together do not retry together).
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let delay = self
            .retry_base
            .saturating_mul(1 << exponent)
            .min(self.retry_max);
        delay.mul_f64(jitter.clamp(0.5, 1.0))
    }
}

crate::text_enum::text_enum!(
    /// What a sink delivers to.
    Kind { Webhook => "webhook", Nats => "nats" }
);

crate::text_enum::text_enum!(
    /// Whether a sink is delivering.
    State { Active => "active", Paused => "paused", Failing => "failing" }
);

/// A sink as clients see it (never its secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub id: Uuid,
    pub kind: Kind,
    pub url: String,
    pub topics: Vec<String>,
    pub description: String,
    pub state: State,
    pub cursor: i64,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: String,
    pub failing_since: Option<DateTime<Utc>>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription to create, checked.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub topics: Vec<String>,
    pub description: String,
    pub secret: Option<Secret>,
    pub after_cursor: Option<i64>,
}

/// What UpdateWebhook changes (`None`: left as it is).
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub url: Option<String>,
    pub topics: Option<Vec<String>>,
    pub description: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub position: i64,
    /// The last event of a run of first-attempt successes (`position` for a single attempt).
    pub through_position: i64,
    pub events: i32,
    pub attempt: i32,
    pub status_code: i32,
    pub error: String,
    pub duration_ms: i32,
    pub attempted_at: DateTime<Utc>,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Where the sink stopped.
    Stopped,
    /// After this feed cursor.
    After(i64),
    /// With the first event at or after this time.
    Since(DateTime<Utc>),
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("webhook not found")]
    NotFound,
    #[error("the cursor is older than retention; the oldest cursor to resume after is {oldest}")]
    Expired { oldest: i64 },
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(WebhookError);

impl From<PageTokenError> for WebhookError {
    fn from(error: PageTokenError) -> Self {
        Self::Invalid(Violations::single("page_token", error.to_string()))
    }
}

type Result<T> = std::result::Result<T, WebhookError>;

/// Checks a topic list against the feed's topics; duplicates go.
pub fn check_topics(v: &mut Violations, field: &str, topics: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        if !crate::feed::TOPICS.contains(&topic.as_str()) {
            v.add(
                format!("{field}[{i}]"),
                format!("must be one of {}", crate::feed::TOPICS.join(", ")),
            );
        } else if !kept.contains(topic) {
            kept.push(topic.clone());
        }
    }
    kept
}

/// A subscription's URL: http or https, a host, no credentials in it, at most [`MAX_URL`].
/// Where it points is checked by [`Webhooks`] (it needs a DNS lookup).
pub fn check_url_form(v: &mut Violations, field: &str, text: &str) -> Option<reqwest::Url> {
    let text = text.trim();
    if text.is_empty() {
        v.add(field, "is required");
        return None;
    }
    if text.len() > MAX_URL {
        v.add(field, format!("must be at most {MAX_URL} characters"));
        return None;
    }
    let Ok(url) = reqwest::Url::parse(text) else {
        v.add(field, "must be an absolute http:// or https:// URL");
        return None;
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        v.add(field, "must be an absolute http:// or https:// URL");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        v.add(
            field,
            "must not carry a user or password (secrets do not go in URLs; the signature \
             authenticates the sender)",
        );
        return None;
    }
    Some(url)
}

/// The subscriptions, and what their RPCs do.
#[derive(Clone)]
pub struct Webhooks {
    pool: PgPool,
    settings: Arc<DeliverySettings>,
}

impl Webhooks {
    pub fn new(pool: PgPool, settings: Arc<DeliverySettings>) -> Self {
        Self { pool, settings }
    }

    /// A subscription's URL, checked: its form ([`check_url_form`]), then where its host resolves
    /// (only to addresses the allow-list permits).
    async fn checked_url(&self, text: &str) -> Result<reqwest::Url> {
        let mut v = Violations::new();
        let Some(url) = check_url_form(&mut v, "url", text) else {
            return Err(WebhookError::Invalid(v));
        };
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        address::resolve(&self.settings.allow, host, port)
            .await
            .map_err(|error| WebhookError::Invalid(Violations::single("url", error.to_string())))?;
        Ok(url)
    }

    /// A cursor a sink may start after: inside retention, not ahead of the feed.
    async fn check_cursor(&self, cursor: i64) -> Result<()> {
        let head = crate::feed::head(&self.pool).await?;
        if cursor < head.pruned_through {
            return Err(WebhookError::Expired {
                oldest: head.pruned_through,
            });
        }
        if cursor > head.position {
            return Err(WebhookError::Invalid(Violations::single(
                "after_cursor",
                "is ahead of the feed",
            )));
        }
        Ok(())
    }

    /// Creates a subscription; returns it and its secret (shown once).
    pub async fn create(&self, new: NewWebhook) -> Result<(Sink, Secret)> {
        let url = self.checked_url(&new.url).await?;
        let cursor = match new.after_cursor {
            Some(cursor) => {
                self.check_cursor(cursor).await?;
                cursor
            }
            None => crate::feed::head(&self.pool).await?.position,
        };
        let secret = new.secret.unwrap_or_else(Secret::generate);
        let sink = store::insert(
            &self.pool,
            store::NewSink {
                id: Uuid::now_v7(),
                kind: Kind::Webhook,
                url: url.as_str(),
                topics: &new.topics,
                description: &new.description,
                secret: secret.expose(),
                cursor,
            },
        )
        .await?;
        Ok((sink, secret))
    }

    pub async fn get(&self, id: Uuid) -> Result<Sink> {
        store::get(&self.pool, id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    pub async fn list(&self, page: &PageRequest) -> Result<Page<Sink>> {
        const FINGERPRINT: &str = "webhooks";
        let after = page.after(FINGERPRINT)?;
        let fetched = store::list(&self.pool, after, page.fetch_limit()).await?;
        let (items, next_page_token) = page.page(FINGERPRINT, fetched, |s| (s.created_at, s.id));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn update(&self, id: Uuid, mut change: Change) -> Result<Sink> {
        if let Some(url) = &change.url {
            change.url = Some(self.checked_url(url).await?.to_string());
        }
        store::update(&self.pool, id, &change)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    pub async fn pause(&self, id: Uuid) -> Result<Sink> {
        store::pause(&self.pool, id)
            .await?
            .ok_or(WebhookError::NotFound)
    }

    pub async fn delete(&self, id: Uuid) -> Result<()> {
        if store::delete(&self.pool, id).await? {
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    /// A new secret; the old one stays valid for `overlap`.
    pub async fn rotate(
        &self,
        id: Uuid,
        secret: Option<Secret>,
        overlap: Duration,
    ) -> Result<(Sink, Secret)> {
        let secret = secret.unwrap_or_else(Secret::generate);
        let until =
            Utc::now() + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::MAX);
        let sink = store::rotate(&self.pool, id, secret.expose(), until)
            .await?
            .ok_or(WebhookError::NotFound)?;
        Ok((sink, secret))
    }

    pub async fn deliveries(&self, id: Uuid, page: &PageRequest) -> Result<Page<Delivery>> {
        let fingerprint = format!("deliveries|{id}");
        let after = page.after(&fingerprint)?;
        self.get(id).await?;
        let fetched = store::deliveries(&self.pool, id, after, page.fetch_limit()).await?;
        let (items, next_page_token) = page.page(&fingerprint, fetched, |d| d.id);
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Active again, from `from`, with the failure cleared.
    pub async fn replay(&self, id: Uuid, from: ReplayFrom) -> Result<Sink> {
        let cursor = match from {
            ReplayFrom::Stopped => None,
            ReplayFrom::After(cursor) => {
                self.check_cursor(cursor).await?;
                Some(cursor)
            }
            ReplayFrom::Since(since) => {
                let cursor = crate::feed::position_before(&self.pool, since).await?;
                let head = crate::feed::head(&self.pool).await?;
                Some(cursor.max(head.pruned_through))
            }
        };
        let sink = store::replay(&self.pool, id, cursor)
            .await?
            .ok_or(WebhookError::NotFound)?;
        tracing::info!(webhook = %sink.id, cursor = sink.cursor, "webhook replay: active again");
        Ok(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitters_down_to_half() {
        let settings = DeliverySettings {
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(settings.backoff(1, 1.0), Duration::from_secs(2));
        assert_eq!(settings.backoff(2, 1.0), Duration::from_secs(4));
        assert_eq!(settings.backoff(5, 1.0), Duration::from_secs(32));
        assert_eq!(settings.backoff(6, 1.0), Duration::from_secs(60));
        assert_eq!(settings.backoff(40, 1.0), Duration::from_secs(60));
        assert_eq!(settings.backoff(1, 0.5), Duration::from_secs(1));
        assert_eq!(
            settings.backoff(1, 0.1),
            Duration::from_secs(1),
            "at least half"
        );
    }

    #[test]
    fn urls_must_be_http_without_credentials() {
        let check = |text: &str| {
            let mut v = Violations::new();
            let url = check_url_form(&mut v, "url", text);
            (url.is_some(), v.is_empty())
        };
        assert_eq!(check("https://erp.example.com/hooks"), (true, true));
        assert_eq!(check("http://10.0.0.1:8080/x"), (true, true), "form only");
        assert_eq!(check(""), (false, false));
        assert_eq!(check("ftp://example.com/"), (false, false));
        assert_eq!(check("/relative"), (false, false));
        assert_eq!(check("https://user:pw@example.com/"), (false, false));
        assert_eq!(
            check(&format!("https://e.com/{}", "a".repeat(MAX_URL))),
            (false, false)
        );
    }

    #[test]
    fn topics_are_the_feeds_without_repeats() {
        let mut v = Violations::new();
        let topics = check_topics(
            &mut v,
            "topics",
            &["case".into(), "case".into(), "order".into()],
        );
        assert_eq!(topics, ["case", "order"]);
        assert!(v.is_empty());
        check_topics(&mut v, "topics", &["invoices".into()]);
        assert!(!v.is_empty());
    }
}
