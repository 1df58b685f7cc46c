//! Interactions: every contact with a customer on any channel, its disposition and wrap-up, and
//! the catalog of disposition codes. Notes are masked ([`crate::card_data`]) before they are
//! stored; every write invalidates the customer's screen pops before it is acknowledged.

pub mod grpc;
mod store;

pub use self::store::CUSTOMER_ROWS;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::card_data;
use crate::db::{self, Failure};
use crate::page_token::{PageRequest, PageTokenError};
use crate::screenpop::PopInvalidator;
use crate::text_enum::text_enum;
use crate::validation::Violations;

pub use self::store::privacy;

text_enum!(Channel { Voice => "voice", Email => "email", Chat => "chat", Sms => "sms", Visit => "visit", Social => "social" });
text_enum!(Direction { Inbound => "inbound", Outbound => "outbound" });

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    pub code: String,
    pub label: String,
    pub resolves: bool,
    pub active: bool,
}

/// A contact to log, parsed at the edge. `notes` are raw here and masked by [`Interactions::log`].
#[derive(Debug, Clone)]
pub struct NewInteraction {
    pub request_id: String,
    pub customer_id: Uuid,
    pub channel: Channel,
    pub direction: Direction,
    pub agent_id: Option<String>,
    pub call: Option<(String, String)>,
    pub case_id: Option<Uuid>,
    pub campaign_id: Option<String>,
    pub disposition_code: Option<String>,
    pub outcome: String,
    pub notes: String,
    pub follow_up_on: Option<NaiveDate>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub channel: Channel,
    pub direction: Direction,
    pub agent_id: Option<String>,
    pub call: Option<(String, String)>,
    pub case_id: Option<Uuid>,
    pub campaign_id: Option<String>,
    pub disposition_code: Option<String>,
    pub outcome: String,
    pub notes: String,
    pub follow_up_on: Option<NaiveDate>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub wrap_up_completed_at: Option<DateTime<Utc>>,
    pub wrap_up_ms: Option<i64>,
}

impl Interaction {
    /// The feed event: ids, codes and times; never the notes or the outcome text.
    fn event(&self, kind: &'static str) -> crate::feed::Event {
        crate::feed::Event::new(kind, self.id)
            .customer(Some(self.customer_id.into()))
            .data(serde_json::json!({
                "channel": self.channel.as_str(),
                "direction": self.direction.as_str(),
                "agent_id": self.agent_id,
                "gateway_id": self.call.as_ref().map(|(gateway, _)| gateway),
                "call_id": self.call.as_ref().map(|(_, call)| call),
                "case_id": self.case_id,
                "campaign_id": self.campaign_id,
                "disposition_code": self.disposition_code,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "wrap_up_completed_at": self.wrap_up_completed_at,
            }))
    }
}

#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    pub channel: Option<Channel>,
    pub agent_id: Option<String>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
}

impl TimelineFilter {
    fn fingerprint(&self, customer_id: Uuid) -> String {
        format!(
            "{customer_id}|{:?}|{:?}|{:?}|{:?}",
            self.channel.map(Channel::as_str),
            self.agent_id,
            self.started_after.map(|t| t.timestamp_micros()),
            self.started_before.map(|t| t.timestamp_micros())
        )
    }
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InteractionError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("customer not found")]
    CustomerNotFound,
    #[error("interaction not found")]
    NotFound,
    #[error("the linked case does not exist")]
    CaseNotFound,
    #[error("disposition code {0:?} is unknown or retired")]
    UnknownDisposition(String),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for InteractionError {
    fn from(error: sqlx::Error) -> Self {
        match db::classify(&error) {
            Failure::Unavailable => InteractionError::Unavailable(error),
            Failure::ForeignKeyViolation("interactions_case_id_fkey") => {
                InteractionError::CaseNotFound
            }
            _ => InteractionError::Database(error),
        }
    }
}

impl From<PageTokenError> for InteractionError {
    fn from(error: PageTokenError) -> Self {
        InteractionError::Invalid(Violations::single("page_token", error.to_string()))
    }
}

pub type Result<T, E = InteractionError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Interactions {
    pool: PgPool,
    pops: PopInvalidator,
}

impl Interactions {
    pub fn new(pool: PgPool, pops: PopInvalidator) -> Self {
        Self { pool, pops }
    }

    #[tracing::instrument(skip_all, fields(customer_id = %new.customer_id))]
    pub async fn log(&self, mut new: NewInteraction) -> Result<Interaction> {
        if let Some(existing) =
            store::find_by_request_id(&mut *crate::db::acquire(&self.pool).await?, &new.request_id)
                .await?
        {
            return Ok(existing);
        }
        new.notes = card_data::mask(&new.notes).into_owned();
        new.outcome = card_data::mask(&new.outcome).into_owned();
        let mut tx = crate::db::begin_generic(&self.pool).await?;
        if !crate::customers::is_live(&mut tx, new.customer_id.into()).await? {
            return Err(InteractionError::CustomerNotFound);
        }
        if let Some(code) = &new.disposition_code {
            require_active(&mut tx, code).await?;
        }
        let id = Uuid::new_v4();
        if !store::insert(&mut tx, id, &new).await? {
            // A concurrent retry with the same request id won: answer with its interaction.
            drop(tx);
            let mut conn = crate::db::acquire(&self.pool).await?;
            return store::find_by_request_id(&mut conn, &new.request_id)
                .await?
                .ok_or(InteractionError::NotFound);
        }
        let interaction = store::load(&mut tx, id)
            .await?
            .ok_or(InteractionError::NotFound)?;
        crate::audit::record_write(&mut tx, new.customer_id.into()).await?;
        crate::feed::record(&mut tx, interaction.event("interaction.logged")).await?;
        let pending = self
            .pops
            .record_for_customers(&mut tx, &[new.customer_id])
            .await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(interaction)
    }

    #[tracing::instrument(skip(self, notes))]
    pub async fn complete_wrap_up(
        &self,
        id: Uuid,
        disposition_code: &str,
        notes: &str,
    ) -> Result<Interaction> {
        let mut tx = crate::db::begin_generic(&self.pool).await?;
        let current = store::load_for_update(&mut tx, id)
            .await?
            .ok_or(InteractionError::NotFound)?;
        if current.wrap_up_completed_at.is_some() {
            return Ok(current);
        }
        require_active(&mut tx, disposition_code).await?;
        let notes = card_data::mask(notes);
        store::complete_wrap_up(&mut tx, id, disposition_code, notes.trim()).await?;
        let interaction = store::load(&mut tx, id)
            .await?
            .ok_or(InteractionError::NotFound)?;
        crate::audit::record_write(&mut tx, interaction.customer_id.into()).await?;
        crate::feed::record(&mut tx, interaction.event("interaction.wrapped_up")).await?;
        let pending = self
            .pops
            .record_for_customers(&mut tx, &[interaction.customer_id])
            .await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(interaction)
    }

    pub async fn list(
        &self,
        customer_id: Uuid,
        filter: TimelineFilter,
        page: &PageRequest,
    ) -> Result<Page<Interaction>> {
        let fingerprint = filter.fingerprint(customer_id);
        let after = page.after(&fingerprint)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        if !crate::customers::is_live(&mut conn, customer_id.into()).await? {
            return Err(InteractionError::CustomerNotFound);
        }
        let fetched =
            store::timeline(&mut conn, customer_id, &filter, after, page.fetch_limit()).await?;
        let (items, next_page_token) = page.page(&fingerprint, fetched, |i| (i.started_at, i.id));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn dispositions(&self) -> Result<Vec<Disposition>> {
        Ok(store::dispositions(&mut *crate::db::acquire(&self.pool).await?).await?)
    }

    pub async fn upsert_disposition(&self, disposition: Disposition) -> Result<Disposition> {
        Ok(
            store::upsert_disposition(&mut *crate::db::acquire(&self.pool).await?, &disposition)
                .await?,
        )
    }
}

async fn require_active(conn: &mut sqlx::PgConnection, code: &str) -> Result<()> {
    match store::disposition(conn, code).await? {
        Some(d) if d.active => Ok(()),
        _ => Err(InteractionError::UnknownDisposition(code.to_owned())),
    }
}
