//! Feedback from anyone (customers, agents, suppliers, partners, shareholders, internal), each
//! item tracked to a resolution with its history. Negative feedback about a customer is tied to a
//! service case in the same transaction, so it cannot be forgotten; open negative feedback shows
//! on the customer's screen pop.

pub mod grpc;
mod store;

pub use self::store::CUSTOMER_ROWS;

pub use self::store::privacy;

use chrono::{DateTime, SubsecRound as _, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::card_data;
use crate::cases::{self, NewCase, Priority, SlaPolicy};
use crate::db::{self, Failure};
use crate::page_token::{PageRequest, PageTokenError};
use crate::screenpop::PopInvalidator;
use crate::text_enum::text_enum;
use crate::validation::Violations;

text_enum!(Source {
    Customer => "customer",
    Agent => "agent",
    Supplier => "supplier",
    Partner => "partner",
    Shareholder => "shareholder",
    Internal => "internal",
});

text_enum!(Sentiment { Positive => "positive", Neutral => "neutral", Negative => "negative" });

text_enum!(Status {
    New => "new",
    Triaged => "triaged",
    InProgress => "in_progress",
    Resolved => "resolved",
    Closed => "closed",
});

impl Status {
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Resolved | Status::Closed)
    }

    /// NEW -> TRIAGED -> IN_PROGRESS -> RESOLVED -> CLOSED, and RESOLVED -> IN_PROGRESS.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (New, Triaged)
                | (Triaged, InProgress)
                | (InProgress, Resolved)
                | (Resolved, Closed)
                | (Resolved, InProgress)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Score {
    Csat(i32),
    Nps(i32),
}

impl Score {
    pub fn is_valid(self) -> bool {
        match self {
            Score::Csat(n) => (1..=5).contains(&n),
            Score::Nps(n) => (0..=10).contains(&n),
        }
    }

    /// CSAT 1-2 / NPS 0-6 negative, CSAT 3 / NPS 7-8 neutral, the rest positive (the standard
    /// reading), with the negative bounds taken from `thresholds`.
    pub fn sentiment(self, thresholds: Thresholds) -> Sentiment {
        match self {
            Score::Csat(n) if n <= thresholds.negative_csat => Sentiment::Negative,
            Score::Csat(n) if n <= 3 => Sentiment::Neutral,
            Score::Nps(n) if n <= thresholds.negative_nps => Sentiment::Negative,
            Score::Nps(n) if n <= 8 => Sentiment::Neutral,
            _ => Sentiment::Positive,
        }
    }

    fn is_low(self, thresholds: Thresholds) -> bool {
        self.sentiment(thresholds) == Sentiment::Negative
    }
}

/// Scores at or below these are negative feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub negative_csat: i32,
    pub negative_nps: i32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            negative_csat: 2,
            negative_nps: 6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFeedback {
    pub request_id: String,
    pub source: Source,
    pub sentiment: Option<Sentiment>,
    pub score: Option<Score>,
    pub category: String,
    pub text: String,
    pub customer_id: Option<Uuid>,
    pub interaction_id: Option<Uuid>,
    pub case_id: Option<Uuid>,
    pub call: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub id: Uuid,
    pub source: Source,
    pub sentiment: Sentiment,
    pub score: Option<Score>,
    pub category: String,
    pub text: String,
    pub customer_id: Option<Uuid>,
    pub interaction_id: Option<Uuid>,
    pub case_id: Option<Uuid>,
    pub call: Option<(String, String)>,
    pub status: Status,
    pub owner: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl Feedback {
    /// The feed event: source, sentiment, score, category and lifecycle; never the text or the
    /// resolution.
    fn event(&self, kind: &'static str) -> crate::feed::Event {
        let score = self.score.map(|score| match score {
            Score::Csat(value) => serde_json::json!({"kind": "csat", "value": value}),
            Score::Nps(value) => serde_json::json!({"kind": "nps", "value": value}),
        });
        crate::feed::Event::new(kind, self.id)
            .customer(self.customer_id.map(Into::into))
            .data(serde_json::json!({
                "source": self.source.as_str(),
                "sentiment": self.sentiment.as_str(),
                "score": score,
                "category": self.category,
                "status": self.status.as_str(),
                "owner": self.owner,
                "due_at": self.due_at,
                "case_id": self.case_id,
                "interaction_id": self.interaction_id,
                "resolved_at": self.resolved_at,
                "closed_at": self.closed_at,
            }))
    }

    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status.is_open() && self.due_at.is_some_and(|due| due < now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: String,
    pub from: String,
    pub to: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub open_only: bool,
    pub overdue_only: bool,
    pub owner: Option<String>,
    pub category: Option<String>,
    pub source: Option<Source>,
    pub customer_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub total: i64,
    pub by_source: Vec<(String, i64)>,
    pub by_sentiment: Vec<(String, i64)>,
    pub by_category: Vec<(String, i64)>,
    pub share_resolved: f64,
    pub median_hours_to_resolution: f64,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("feedback not found")]
    NotFound,
    #[error("{0} not found")]
    LinkNotFound(&'static str),
    #[error("feedback that is {from} cannot become {to}")]
    IllegalTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for FeedbackError {
    fn from(error: sqlx::Error) -> Self {
        match db::classify(&error) {
            Failure::Unavailable => FeedbackError::Unavailable(error),
            Failure::ForeignKeyViolation("feedback_interaction_id_fkey") => {
                FeedbackError::LinkNotFound("interaction")
            }
            Failure::ForeignKeyViolation("feedback_case_id_fkey") => {
                FeedbackError::LinkNotFound("case")
            }
            _ => FeedbackError::Database(error),
        }
    }
}

impl From<PageTokenError> for FeedbackError {
    fn from(error: PageTokenError) -> Self {
        FeedbackError::Invalid(Violations::single("page_token", error.to_string()))
    }
}

pub type Result<T, E = FeedbackError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct FeedbackDesk {
    pool: PgPool,
    pops: PopInvalidator,
    sla: SlaPolicy,
    thresholds: Thresholds,
}

impl FeedbackDesk {
    pub fn new(pool: PgPool, pops: PopInvalidator, sla: SlaPolicy, thresholds: Thresholds) -> Self {
        Self {
            pool,
            pops,
            sla,
            thresholds,
        }
    }

    /// Records feedback; returns it and whether this call opened its case.
    #[tracing::instrument(skip_all, fields(source = new.source.as_str()))]
    pub async fn submit(&self, mut new: NewFeedback) -> Result<(Feedback, bool)> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        if let Some(existing) = store::find_by_request_id(&mut conn, &new.request_id).await? {
            return Ok((existing, false));
        }
        drop(conn);
        new.text = card_data::mask(&new.text).into_owned();
        let sentiment = new
            .sentiment
            .or_else(|| new.score.map(|s| s.sentiment(self.thresholds)))
            .unwrap_or(Sentiment::Neutral);
        let negative = sentiment == Sentiment::Negative
            || new.score.is_some_and(|s| s.is_low(self.thresholds));
        let mut tx = crate::db::begin(&self.pool).await?;
        if let Some(customer) = new.customer_id
            && !crate::customers::is_live(&mut tx, customer.into()).await?
        {
            return Err(FeedbackError::LinkNotFound("customer"));
        }
        let id = Uuid::new_v4();
        if !store::insert(&mut tx, id, &new, sentiment).await? {
            drop(tx);
            let mut conn = crate::db::acquire(&self.pool).await?;
            let existing = store::find_by_request_id(&mut conn, &new.request_id)
                .await?
                .ok_or(FeedbackError::NotFound)?;
            return Ok((existing, false));
        }
        store::record_change(&mut tx, id, "submitted", "", Status::New.as_str(), "").await?;
        let mut case_opened = false;
        if let (true, Some(customer_id), None) = (negative, new.customer_id, new.case_id) {
            let case_id = cases::open_within(
                &mut tx,
                &self.sla,
                NewCase {
                    request_id: format!("feedback:{}", new.request_id),
                    customer_id,
                    subject: format!("Negative feedback: {}", new.category),
                    description: new.text.clone(),
                    priority: Priority::High,
                    actor: "feedback".into(),
                },
            )
            .await?;
            store::link_case(&mut tx, id, case_id).await?;
            store::record_change(&mut tx, id, "linked_case", "", &case_id.to_string(), "").await?;
            case_opened = true;
        }
        let pending = match new.customer_id {
            Some(customer) => {
                crate::audit::record_write(&mut tx, customer.into()).await?;
                self.pops.record_for_customers(&mut tx, &[customer]).await?
            }
            None => Default::default(),
        };
        let feedback = store::load(&mut tx, id)
            .await?
            .ok_or(FeedbackError::NotFound)?;
        crate::feed::record(&mut tx, feedback.event("feedback.submitted")).await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok((feedback, case_opened))
    }

    pub async fn get(&self, id: Uuid) -> Result<(Feedback, Vec<Change>)> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        let feedback = store::load(&mut conn, id)
            .await?
            .ok_or(FeedbackError::NotFound)?;
        let history = store::history(&mut conn, id).await?;
        Ok((feedback, history))
    }

    #[tracing::instrument(skip(self))]
    pub async fn triage(
        &self,
        id: Uuid,
        owner: String,
        due_at: DateTime<Utc>,
        actor: &str,
    ) -> Result<Feedback> {
        let due_at = due_at.trunc_subsecs(6);
        let mut tx = crate::db::begin(&self.pool).await?;
        let mut item = store::load_for_update(&mut tx, id)
            .await?
            .ok_or(FeedbackError::NotFound)?;
        match item.status {
            Status::New => {}
            Status::Triaged
                if item.owner.as_deref() == Some(owner.as_str()) && item.due_at == Some(due_at) =>
            {
                return Ok(item);
            }
            Status::Triaged => {}
            other => {
                return Err(FeedbackError::IllegalTransition {
                    from: other.as_str(),
                    to: Status::Triaged.as_str(),
                });
            }
        }
        let from = format!(
            "{}|{}",
            item.owner.clone().unwrap_or_default(),
            item.due_at.map(|d| d.to_rfc3339()).unwrap_or_default()
        );
        item.status = Status::Triaged;
        item.owner = Some(owner.clone());
        item.due_at = Some(due_at);
        store::save(&mut tx, &item).await?;
        store::record_change(
            &mut tx,
            id,
            "triaged",
            &from,
            &format!("{owner}|{}", due_at.to_rfc3339()),
            actor,
        )
        .await?;
        self.finish(tx, id).await
    }

    #[tracing::instrument(skip(self, resolution))]
    pub async fn set_status(
        &self,
        id: Uuid,
        status: Status,
        resolution: Option<String>,
        actor: &str,
    ) -> Result<Feedback> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let mut item = store::load_for_update(&mut tx, id)
            .await?
            .ok_or(FeedbackError::NotFound)?;
        if item.status == status {
            return Ok(item);
        }
        if !item.status.can_become(status) {
            return Err(FeedbackError::IllegalTransition {
                from: item.status.as_str(),
                to: status.as_str(),
            });
        }
        let from = item.status;
        let now = Utc::now();
        match status {
            Status::Resolved => {
                let Some(resolution) = resolution.filter(|r| !r.trim().is_empty()) else {
                    return Err(FeedbackError::Invalid(Violations::single(
                        "resolution",
                        "is required to resolve",
                    )));
                };
                item.resolution = Some(card_data::mask(&resolution).into_owned());
                item.resolved_at = Some(now);
            }
            Status::Closed => item.closed_at = Some(now),
            _ => item.resolved_at = None,
        }
        item.status = status;
        store::save(&mut tx, &item).await?;
        store::record_change(&mut tx, id, "status", from.as_str(), status.as_str(), actor).await?;
        self.finish(tx, id).await
    }

    pub async fn list(&self, filter: Filter, page: &PageRequest) -> Result<Page<Feedback>> {
        let fingerprint = format!(
            "feedback|{}|{}|{:?}|{:?}|{:?}|{:?}",
            filter.open_only,
            filter.overdue_only,
            filter.owner,
            filter.category,
            filter.source.map(Source::as_str),
            filter.customer_id
        );
        let after = page.after(&fingerprint)?;
        let fetched = store::list(
            &mut *crate::db::acquire(&self.pool).await?,
            &filter,
            after,
            page.fetch_limit(),
        )
        .await?;
        let (items, next_page_token) = page.page(&fingerprint, fetched, |f| (f.created_at, f.id));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn summary(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Summary> {
        Ok(store::summary(&mut *crate::db::acquire(&self.pool).await?, since, until).await?)
    }

    /// Audits, invalidates the customer's pops (open negative feedback shows there), commits.
    async fn finish(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        id: Uuid,
    ) -> Result<Feedback> {
        let item = store::load(&mut tx, id)
            .await?
            .ok_or(FeedbackError::NotFound)?;
        crate::feed::record(&mut tx, item.event("feedback.changed")).await?;
        let pending = match item.customer_id {
            Some(customer) => {
                crate::audit::record_write(&mut tx, customer.into()).await?;
                self.pops.record_for_customers(&mut tx, &[customer]).await?
            }
            None => Default::default(),
        };
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_read_as_sentiment_with_configurable_negative_bounds() {
        let t = Thresholds::default();
        assert_eq!(Score::Csat(1).sentiment(t), Sentiment::Negative);
        assert_eq!(Score::Csat(2).sentiment(t), Sentiment::Negative);
        assert_eq!(Score::Csat(3).sentiment(t), Sentiment::Neutral);
        assert_eq!(Score::Csat(5).sentiment(t), Sentiment::Positive);
        assert_eq!(Score::Nps(6).sentiment(t), Sentiment::Negative);
        assert_eq!(Score::Nps(7).sentiment(t), Sentiment::Neutral);
        assert_eq!(Score::Nps(9).sentiment(t), Sentiment::Positive);
        let strict = Thresholds {
            negative_csat: 3,
            negative_nps: 4,
        };
        assert_eq!(Score::Csat(3).sentiment(strict), Sentiment::Negative);
        assert_eq!(Score::Nps(5).sentiment(strict), Sentiment::Neutral);
        assert!(!Score::Csat(0).is_valid() && !Score::Nps(11).is_valid());
    }

    #[test]
    fn nothing_closes_without_being_resolved() {
        use Status::*;
        assert!(New.can_become(Triaged));
        assert!(!New.can_become(Closed));
        assert!(!Triaged.can_become(Closed));
        assert!(!InProgress.can_become(Closed));
        assert!(Resolved.can_become(Closed));
        assert!(Resolved.can_become(InProgress));
        assert!(!Closed.can_become(InProgress));
    }
}
