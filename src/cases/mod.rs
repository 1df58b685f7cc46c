//! Service cases: a customer's problem from opening to closing, with an SLA due time from its
//! priority ([`SlaPolicy`]), legal status changes only ([`CaseStatus::can_become`]), and every
//! change recorded with who and when. Writes that change the screen pop invalidate it.

pub mod grpc;
mod policy;
mod store;

pub use self::store::CUSTOMER_ROWS;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub use self::policy::{CaseStatus, Priority, SlaPolicy};
use crate::card_data;
use crate::page_token::{PageKey, PageRequest, PageToken, PageTokenError};
use crate::screenpop::PopInvalidator;
use crate::validation::Violations;

pub use self::store::privacy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub subject: String,
    pub description: String,
    pub status: CaseStatus,
    pub priority: Priority,
    pub assignee: Option<Assignee>,
    pub sla_due_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl Case {
    /// The feed event: status, priority, assignee and dates; never the subject or description.
    fn event(&self, kind: &'static str) -> crate::feed::Event {
        let (agent, team) = match &self.assignee {
            Some(Assignee::Agent(agent)) => (Some(agent.as_str()), None),
            Some(Assignee::Team(team)) => (None, Some(team.as_str())),
            None => (None, None),
        };
        crate::feed::Event::new(kind, self.id)
            .customer(Some(self.customer_id.into()))
            .data(serde_json::json!({
                "status": self.status.as_str(),
                "priority": self.priority.as_str(),
                "assignee_agent_id": agent,
                "assignee_team": team,
                "sla_due_at": self.sla_due_at,
                "resolved_at": self.resolved_at,
                "closed_at": self.closed_at,
                "version": self.version,
            }))
    }

    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status.is_active() && self.sla_due_at < now
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignee {
    Agent(String),
    Team(String),
}

#[derive(Debug, Clone)]
pub struct NewCase {
    pub request_id: String,
    pub customer_id: Uuid,
    pub subject: String,
    pub description: String,
    pub priority: Priority,
    pub actor: String,
}

#[derive(Debug, Clone, Default)]
pub struct CasePatch {
    pub subject: Option<String>,
    pub description: Option<String>,
    pub priority: Option<Priority>,
    pub status: Option<CaseStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub customer_id: Option<Uuid>,
    pub status: Option<CaseStatus>,
    pub agent_id: Option<String>,
    pub team: Option<String>,
    pub overdue_only: bool,
}

impl CaseFilter {
    fn fingerprint(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{}",
            self.customer_id,
            self.status.map(CaseStatus::as_str),
            self.agent_id,
            self.team,
            self.overdue_only
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: Uuid,
    pub case_id: Uuid,
    pub author: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: String,
    pub from: String,
    pub to: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("case not found")]
    NotFound,
    #[error("customer not found")]
    CustomerNotFound,
    #[error("the case changed since version {sent} was read (now {current})")]
    StaleVersion { sent: i64, current: i64 },
    #[error("a {from} case cannot become {to}")]
    IllegalTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(CaseError);

/// Where a page of cases starts: the priority's rank, the SLA due time, then the id.
struct SlaOrder {
    rank: i16,
    due: DateTime<Utc>,
    id: Uuid,
}

impl PageKey for SlaOrder {
    fn to_token(&self) -> PageToken {
        let due = self.due.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        PageToken {
            key: format!("{}|{due}", self.rank),
            id: self.id,
        }
    }

    fn from_token(token: PageToken) -> Option<Self> {
        let (rank, due) = token.key.split_once('|')?;
        Some(Self {
            rank: rank.parse().ok()?,
            due: DateTime::parse_from_rfc3339(due).ok()?.with_timezone(&Utc),
            id: token.id,
        })
    }
}

impl From<PageTokenError> for CaseError {
    fn from(error: PageTokenError) -> Self {
        CaseError::Invalid(Violations::single("page_token", error.to_string()))
    }
}

pub type Result<T, E = CaseError> = std::result::Result<T, E>;

/// Opens a case inside the caller's transaction, for writes that must not commit without their
/// case (negative feedback). The caller audits the write and invalidates the customer's pops.
/// `new.request_id` must be fresh (the caller's own idempotency check comes first).
pub async fn open_within(
    conn: &mut sqlx::PgConnection,
    sla: &SlaPolicy,
    mut new: NewCase,
) -> sqlx::Result<Uuid> {
    new.subject = card_data::mask(&new.subject).into_owned();
    new.description = card_data::mask(&new.description).into_owned();
    let id = Uuid::new_v4();
    let now = Utc::now();
    store::insert(&mut *conn, id, &new, now, sla.due(now, new.priority)).await?;
    store::record_change(conn, id, "opened", "", CaseStatus::New.as_str(), &new.actor).await?;
    if let Some(case) = store::load(&mut *conn, id).await? {
        crate::feed::record(conn, case.event("case.opened")).await?;
    }
    Ok(id)
}

/// Whether the case exists.
pub async fn exists(conn: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<bool> {
    Ok(store::load(conn, id).await?.is_some())
}

#[derive(Clone)]
pub struct Cases {
    pool: PgPool,
    pops: PopInvalidator,
    sla: SlaPolicy,
}

impl Cases {
    pub fn new(pool: PgPool, pops: PopInvalidator, sla: SlaPolicy) -> Self {
        Self { pool, pops, sla }
    }

    #[tracing::instrument(skip_all, fields(customer_id = %new.customer_id))]
    pub async fn open(&self, mut new: NewCase) -> Result<Case> {
        if let Some(existing) =
            store::find_by_request_id(&mut *crate::db::acquire(&self.pool).await?, &new.request_id)
                .await?
        {
            return Ok(existing);
        }
        new.subject = card_data::mask(&new.subject).into_owned();
        new.description = card_data::mask(&new.description).into_owned();
        let mut tx = crate::db::begin(&self.pool).await?;
        if !crate::customers::is_live(&mut tx, new.customer_id.into()).await? {
            return Err(CaseError::CustomerNotFound);
        }
        let id = Uuid::new_v4();
        let now = Utc::now();
        if !store::insert(&mut tx, id, &new, now, self.sla.due(now, new.priority)).await? {
            drop(tx);
            let mut conn = crate::db::acquire(&self.pool).await?;
            return store::find_by_request_id(&mut conn, &new.request_id)
                .await?
                .ok_or(CaseError::NotFound);
        }
        store::record_change(
            &mut tx,
            id,
            "opened",
            "",
            CaseStatus::New.as_str(),
            &new.actor,
        )
        .await?;
        self.finish(tx, id, "case.opened").await
    }

    pub async fn get(&self, id: Uuid) -> Result<Case> {
        store::load(&mut *crate::db::acquire(&self.pool).await?, id)
            .await?
            .ok_or(CaseError::NotFound)
    }

    #[tracing::instrument(skip(self, patch))]
    pub async fn update(
        &self,
        id: Uuid,
        version: i64,
        patch: CasePatch,
        actor: &str,
    ) -> Result<Case> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let mut case = store::load_for_update(&mut tx, id)
            .await?
            .ok_or(CaseError::NotFound)?;
        if case.version != version {
            return Err(CaseError::StaleVersion {
                sent: version,
                current: case.version,
            });
        }
        let mut changes: Vec<(&str, String, String)> = Vec::new();
        if let Some(status) = patch.status.filter(|s| *s != case.status) {
            if !case.status.can_become(status) {
                return Err(CaseError::IllegalTransition {
                    from: case.status.as_str(),
                    to: status.as_str(),
                });
            }
            changes.push((
                "status",
                case.status.as_str().into(),
                status.as_str().into(),
            ));
            match status {
                CaseStatus::Resolved => case.resolved_at = Some(Utc::now()),
                CaseStatus::Closed => case.closed_at = Some(Utc::now()),
                _ => case.resolved_at = None,
            }
            case.status = status;
        }
        if let Some(priority) = patch.priority.filter(|p| *p != case.priority) {
            changes.push((
                "priority",
                case.priority.as_str().into(),
                priority.as_str().into(),
            ));
            case.priority = priority;
            case.sla_due_at = self.sla.due(case.created_at, priority);
        }
        if let Some(subject) = patch
            .subject
            .map(|s| card_data::mask(&s).into_owned())
            .filter(|s| *s != case.subject)
        {
            changes.push(("subject", case.subject.clone(), subject.clone()));
            case.subject = subject;
        }
        if let Some(description) = patch.description {
            let description = card_data::mask(&description).into_owned();
            if description != case.description {
                changes.push(("description", String::new(), String::new()));
                case.description = description;
            }
        }
        if changes.is_empty() {
            return Ok(case);
        }
        store::save(&mut tx, &case).await?;
        for (action, from, to) in changes {
            store::record_change(&mut tx, id, action, &from, &to, actor).await?;
        }
        self.finish(tx, id, "case.updated").await
    }

    #[tracing::instrument(skip(self))]
    pub async fn assign(&self, id: Uuid, assignee: Assignee, actor: &str) -> Result<Case> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let mut case = store::load_for_update(&mut tx, id)
            .await?
            .ok_or(CaseError::NotFound)?;
        if case.assignee.as_ref() == Some(&assignee) {
            return Ok(case);
        }
        let describe = |a: &Option<Assignee>| match a {
            Some(Assignee::Agent(agent)) => format!("agent:{agent}"),
            Some(Assignee::Team(team)) => format!("team:{team}"),
            None => String::new(),
        };
        let from = describe(&case.assignee);
        case.assignee = Some(assignee);
        store::save(&mut tx, &case).await?;
        store::record_change(
            &mut tx,
            id,
            "assigned",
            &from,
            &describe(&case.assignee),
            actor,
        )
        .await?;
        self.finish(tx, id, "case.updated").await
    }

    #[tracing::instrument(skip(self, text))]
    pub async fn comment(&self, case_id: Uuid, text: &str, actor: &str) -> Result<Comment> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let case = store::load_for_update(&mut tx, case_id)
            .await?
            .ok_or(CaseError::NotFound)?;
        crate::audit::record_write(&mut tx, case.customer_id.into()).await?;
        let comment =
            store::insert_comment(&mut tx, case_id, &card_data::mask(text), actor).await?;
        store::record_change(&mut tx, case_id, "commented", "", "", actor).await?;
        let event = crate::feed::Event::new("case.commented", case_id)
            .customer(Some(case.customer_id.into()))
            .data(serde_json::json!({"comment_id": comment.id}));
        crate::feed::record(&mut tx, event).await?;
        tx.commit().await?;
        Ok(comment)
    }

    pub async fn list(&self, filter: CaseFilter, page: &PageRequest) -> Result<Page<Case>> {
        let fingerprint = filter.fingerprint();
        let after = page
            .after::<SlaOrder>(&fingerprint)?
            .map(|o| (o.rank, o.due, o.id));
        let fetched = store::list(
            &mut *crate::db::acquire(&self.pool).await?,
            &filter,
            after,
            page.fetch_limit(),
        )
        .await?;
        let (items, next_page_token) = page.page(&fingerprint, fetched, |c| SlaOrder {
            rank: c.priority.rank(),
            due: c.sla_due_at,
            id: c.id,
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn history(&self, case_id: Uuid) -> Result<Vec<Change>> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        store::load(&mut conn, case_id)
            .await?
            .ok_or(CaseError::NotFound)?;
        Ok(store::history(&mut conn, case_id).await?)
    }

    /// Invalidates the customer's pops, commits, and returns the case as stored.
    async fn finish(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        id: Uuid,
        kind: &'static str,
    ) -> Result<Case> {
        let case = store::load(&mut tx, id).await?.ok_or(CaseError::NotFound)?;
        crate::audit::record_write(&mut tx, case.customer_id.into()).await?;
        crate::feed::record(&mut tx, case.event(kind)).await?;
        let pending = self
            .pops
            .record_for_customers(&mut tx, &[case.customer_id])
            .await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(case)
    }
}
