//! Marketing campaigns on the shared record: campaigns with an offer for the agent's script,
//! outbound lists worked one leased member at a time under the dialing rules ([`rules`]), the
//! outcome of every attempt, and inbound attribution by dialed number ([`OfferDirectory`]).
//!
//! Leasing is one statement: the next callable member is picked with `FOR UPDATE SKIP LOCKED`, so
//! concurrent agents each skip the rows the others are taking, and a lease that runs out makes
//! its member callable again without any sweeper.

pub mod grpc;
mod offers;
pub mod rules;
mod store;

pub use self::store::CUSTOMER_ROWS;

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub use self::offers::{Offer, OfferDirectory};
pub use self::rules::{
    AttemptPolicy, CallingWindow, CampaignStatus, Channel, MemberState, Outcome,
};
use crate::page_token::{PageRequest, PageTokenError};
use crate::screenpop::PopInvalidator;
use crate::validation::Violations;

/// At most this many explicit customer ids per `AddCampaignMembers`.
pub const MAX_EXPLICIT_MEMBERS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: Uuid,
    pub fields: CampaignFields,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// What a client sets on a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignFields {
    pub name: String,
    pub channel: Channel,
    pub status: CampaignStatus,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub offer_text: String,
    /// E.164.
    pub dialed_numbers: Vec<String>,
    pub policy: AttemptPolicy,
    pub lease: Duration,
    pub window: CallingWindow,
    pub default_time_zone: String,
}

impl Campaign {
    /// Active and inside its dates at `now`.
    pub fn is_running(&self, now: DateTime<Utc>) -> bool {
        self.fields.status == CampaignStatus::Active
            && self.fields.starts_at <= now
            && now < self.fields.ends_at
    }
}

/// The fields an update changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct CampaignPatch {
    pub name: Option<String>,
    pub status: Option<CampaignStatus>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub offer_text: Option<String>,
    pub dialed_numbers: Option<Vec<String>>,
    pub max_attempts: Option<i32>,
    pub retry_after: Option<Duration>,
    pub lease: Option<Duration>,
    pub window: Option<CallingWindow>,
    pub default_time_zone: Option<String>,
}

/// Which customers `AddCampaignMembers` adds.
#[derive(Debug, Clone)]
pub enum Members {
    Ids(Vec<Uuid>),
    Segment(SegmentFilter),
}

/// Conditions that all hold; an empty list or `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct SegmentFilter {
    pub tiers: Vec<String>,
    pub segments: Vec<String>,
    pub languages: Vec<String>,
    pub currency: String,
    pub min_lifetime_value_minor: Option<i64>,
    pub max_lifetime_value_minor: Option<i64>,
    pub last_contact_before: Option<DateTime<Utc>>,
    pub last_contact_after: Option<DateTime<Utc>>,
    pub has_open_case: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub added: i64,
    pub already_members: i64,
}

/// A leased member for an agent to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub lease_id: Uuid,
    pub customer_id: Uuid,
    pub display_name: String,
    pub phone_number: String,
    pub time_zone: String,
    pub attempts: i32,
    pub expires_at: DateTime<Utc>,
    pub callback_at: Option<DateTime<Utc>>,
    pub offer_text: String,
}

/// The answer to `NextOutboundContact`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextContact {
    Leased(Lease),
    /// Nobody callable now; the earliest spacing or callback ends after this long (zero when
    /// nothing but the calling window, or nothing at all, holds members back).
    NoneNow {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CampaignStats {
    pub members: i64,
    pub pending: i64,
    pub leased: i64,
    pub done: i64,
    pub outcomes: Vec<(Outcome, i64)>,
    pub attempts: i64,
    pub conversions: i64,
    pub conversion_rate: f64,
    pub inbound_calls: i64,
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("campaign not found")]
    NotFound,
    #[error("customer {0} not found")]
    CustomerNotFound(Uuid),
    #[error("lease not found")]
    LeaseNotFound,
    #[error("the campaign changed since version {sent} was read (now {current})")]
    StaleVersion { sent: i64, current: i64 },
    #[error("a {from} campaign cannot become {to}")]
    IllegalTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("dialed number {0} belongs to another campaign that is not completed")]
    NumberTaken(String),
    #[error("{0}")]
    NotRunning(&'static str),
    #[error("the campaign is completed")]
    Completed,
    #[error("the lease expired and the member was leased again")]
    LeaseLost,
    #[error("a different outcome ({0}) was already recorded for this lease")]
    OutcomeConflict(&'static str),
    #[error("an agent may work only its own leases")]
    NotYourLease,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

crate::db::from_sqlx!(CampaignError);

impl From<PageTokenError> for CampaignError {
    fn from(error: PageTokenError) -> Self {
        CampaignError::Invalid(Violations::single("page_token", error.to_string()))
    }
}

pub type Result<T, E = CampaignError> = std::result::Result<T, E>;

/// What `RecordOutcome` reports.
pub type Recorded = rules::AfterOutcome;

#[derive(Clone)]
pub struct Campaigns {
    pool: PgPool,
    pops: PopInvalidator,
    offers: OfferDirectory,
}

impl Campaigns {
    pub fn new(pool: PgPool, pops: PopInvalidator, offers: OfferDirectory) -> Self {
        Self { pool, pops, offers }
    }

    #[tracing::instrument(skip_all)]
    pub async fn create(&self, request_id: &str, fields: CampaignFields) -> Result<Campaign> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        if let Some(existing) = store::find_by_request_id(&mut conn, request_id).await? {
            return Ok(existing);
        }
        drop(conn);
        let mut tx = crate::db::begin(&self.pool).await?;
        let id = Uuid::new_v4();
        if !store::insert(&mut tx, id, request_id, &fields).await? {
            // A concurrent retry with the same request id won.
            drop(tx);
            let mut conn = crate::db::acquire(&self.pool).await?;
            return store::find_by_request_id(&mut conn, request_id)
                .await?
                .ok_or(CampaignError::NotFound);
        }
        if fields.status != CampaignStatus::Completed {
            store::claim_numbers(&mut tx, id, &fields.dialed_numbers).await?;
        }
        let campaign = store::load(&mut tx, id)
            .await?
            .ok_or(CampaignError::NotFound)?;
        tx.commit().await?;
        self.offers.refresh().await;
        Ok(campaign)
    }

    pub async fn get(&self, id: Uuid) -> Result<Campaign> {
        store::load(&mut *crate::db::acquire(&self.pool).await?, id)
            .await?
            .ok_or(CampaignError::NotFound)
    }

    #[tracing::instrument(skip(self, patch))]
    pub async fn update(&self, id: Uuid, version: i64, patch: CampaignPatch) -> Result<Campaign> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let mut campaign = store::load_for_update(&mut tx, id)
            .await?
            .ok_or(CampaignError::NotFound)?;
        if campaign.version != version {
            return Err(CampaignError::StaleVersion {
                sent: version,
                current: campaign.version,
            });
        }
        let before = campaign.fields.clone();
        if before.status == CampaignStatus::Completed {
            return Err(CampaignError::Completed);
        }
        let f = &mut campaign.fields;
        if let Some(status) = patch.status.filter(|s| *s != f.status) {
            if !f.status.can_become(status) {
                return Err(CampaignError::IllegalTransition {
                    from: f.status.as_str(),
                    to: status.as_str(),
                });
            }
            f.status = status;
        }
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(value) = patch.$field { f.$field = value; })* };
        }
        set!(
            name,
            starts_at,
            ends_at,
            offer_text,
            dialed_numbers,
            lease,
            window,
            default_time_zone
        );
        if let Some(max_attempts) = patch.max_attempts {
            f.policy.max_attempts = max_attempts;
        }
        if let Some(retry_after) = patch.retry_after {
            f.policy.retry_after = retry_after;
        }
        if f.ends_at <= f.starts_at {
            return Err(CampaignError::Invalid(Violations::single(
                "campaign.ends_at",
                "must be after starts_at",
            )));
        }
        if *f == before {
            return Ok(campaign);
        }
        store::save(&mut tx, &campaign).await?;
        if campaign.fields.status == CampaignStatus::Completed {
            store::release_numbers(&mut tx, id).await?;
        } else if campaign.fields.dialed_numbers != before.dialed_numbers {
            store::release_numbers(&mut tx, id).await?;
            store::claim_numbers(&mut tx, id, &campaign.fields.dialed_numbers).await?;
        }
        // What members' pops show depends on the status, dates and offer.
        let pending = if offer_shown_changed(&before, &campaign.fields) {
            let members = store::open_member_ids(&mut tx, id).await?;
            self.pops.record_for_customers(&mut tx, &members).await?
        } else {
            Default::default()
        };
        let campaign = store::load(&mut tx, id)
            .await?
            .ok_or(CampaignError::NotFound)?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        self.offers.refresh().await;
        Ok(campaign)
    }

    pub async fn list(
        &self,
        status: Option<CampaignStatus>,
        page: &PageRequest,
    ) -> Result<Page<Campaign>> {
        let fingerprint = format!("campaigns|{:?}", status.map(CampaignStatus::as_str));
        let after = page.after(&fingerprint)?;
        let fetched = store::list(
            &mut *crate::db::acquire(&self.pool).await?,
            status,
            after,
            page.fetch_limit(),
        )
        .await?;
        let (items, next_page_token) = page.page(&fingerprint, fetched, |c| (c.created_at, c.id));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn stats(&self, id: Uuid) -> Result<CampaignStats> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        let campaign = store::load(&mut conn, id)
            .await?
            .ok_or(CampaignError::NotFound)?;
        Ok(store::stats(&mut conn, &campaign, Utc::now()).await?)
    }

    /// Adds members; the pops of those added start showing the campaign's offer.
    #[tracing::instrument(skip_all, fields(campaign_id = %id))]
    pub async fn add_members(&self, id: Uuid, members: Members) -> Result<Added> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let campaign = store::load_for_share(&mut tx, id)
            .await?
            .ok_or(CampaignError::NotFound)?;
        if campaign.fields.status == CampaignStatus::Completed {
            return Err(CampaignError::Completed);
        }
        let (matched, added) = match members {
            Members::Ids(ids) => {
                if let Some(missing) = store::first_missing_customer(&mut tx, &ids).await? {
                    return Err(CampaignError::CustomerNotFound(missing));
                }
                store::add_ids(&mut tx, id, &ids).await?
            }
            Members::Segment(filter) => store::add_segment(&mut tx, id, &filter).await?,
        };
        let pending = if campaign.fields.offer_text.is_empty() {
            Default::default()
        } else {
            self.pops.record_for_customers(&mut tx, &added).await?
        };
        tx.commit().await?;
        self.pops.apply(pending).await;
        let added = added.len() as i64;
        Ok(Added {
            added,
            already_members: matched - added,
        })
    }

    /// Leases the next callable member to `agent_id`.
    #[tracing::instrument(skip(self))]
    pub async fn next_contact(&self, id: Uuid, agent_id: &str) -> Result<NextContact> {
        let now = Utc::now();
        let mut conn = crate::db::acquire(&self.pool).await?;
        let campaign = store::load(&mut conn, id)
            .await?
            .ok_or(CampaignError::NotFound)?;
        match campaign.fields.status {
            CampaignStatus::Active => {}
            CampaignStatus::Draft => {
                return Err(CampaignError::NotRunning("the campaign is a draft"));
            }
            CampaignStatus::Paused => {
                return Err(CampaignError::NotRunning("the campaign is paused"));
            }
            CampaignStatus::Completed => return Err(CampaignError::Completed),
        }
        if now < campaign.fields.starts_at {
            return Err(CampaignError::NotRunning("the campaign has not started"));
        }
        if now >= campaign.fields.ends_at {
            return Err(CampaignError::NotRunning("the campaign has ended"));
        }
        let zones = campaign.fields.window.zones_open_at(now);
        if let Some(lease) = store::lease_next(&mut conn, &campaign, agent_id, &zones, now).await? {
            return Ok(NextContact::Leased(lease));
        }
        let earliest = store::earliest_retry(&mut conn, id, now).await?;
        Ok(NextContact::NoneNow {
            retry_after: earliest.map_or(Duration::zero(), |at| (at - now).max(Duration::zero())),
        })
    }

    /// Records the outcome of a leased attempt. `acting_agent` is the agent credential's id, when
    /// the caller is an agent: it may only complete its own leases.
    #[tracing::instrument(skip(self, callback_at))]
    pub async fn record_outcome(
        &self,
        lease_id: Uuid,
        outcome: Outcome,
        callback_at: Option<DateTime<Utc>>,
        acting_agent: Option<&str>,
    ) -> Result<Recorded> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let lease = store::load_lease(&mut tx, lease_id)
            .await?
            .ok_or(CampaignError::LeaseNotFound)?;
        if acting_agent.is_some_and(|agent| agent != lease.agent_id) {
            return Err(CampaignError::NotYourLease);
        }
        if let Some(previous) = store::recorded_attempt(&mut tx, lease_id).await? {
            return if previous.0 == outcome {
                Ok(previous.1)
            } else {
                Err(CampaignError::OutcomeConflict(previous.0.as_str()))
            };
        }
        let member = store::lock_member(&mut tx, lease.campaign_id, lease.customer_id).await?;
        if member.lease_id != Some(lease_id) {
            return Err(CampaignError::LeaseLost);
        }
        let campaign = store::load(&mut tx, lease.campaign_id)
            .await?
            .ok_or(CampaignError::NotFound)?;
        // PostgreSQL keeps microseconds: a retry must read back exactly what this call returns.
        let now = Utc::now().trunc_subsecs(6);
        let callback_at = callback_at.map(|at| at.trunc_subsecs(6));
        let after = rules::after_outcome(
            outcome,
            member.attempts,
            campaign.fields.policy,
            now,
            callback_at,
        );
        store::finish_attempt(&mut tx, &lease, outcome, callback_at, &after).await?;
        let event = crate::feed::Event::new("campaign.outcome_recorded", lease_id)
            .customer(Some(lease.customer_id.into()))
            .data(serde_json::json!({
                "campaign_id": lease.campaign_id,
                "agent_id": lease.agent_id,
                "outcome": outcome.as_str(),
                "attempts": after.attempts,
                "member_state": after.state.as_str(),
                "next_attempt_at": after.next_attempt_at,
                "callback_at": callback_at,
            }));
        crate::feed::record(&mut tx, event).await?;
        let mut pending = Default::default();
        if outcome == Outcome::DoNotCall {
            crate::customers::flag_do_not_call(&mut tx, lease.customer_id.into()).await?;
        }
        if outcome == Outcome::DoNotCall
            || (after.state == MemberState::Done && !campaign.fields.offer_text.is_empty())
        {
            pending = self
                .pops
                .record_for_customers(&mut tx, &[lease.customer_id])
                .await?;
        }
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(after)
    }
}

/// Whether members' pops show something different: the offer appears, disappears or changes.
fn offer_shown_changed(before: &CampaignFields, after: &CampaignFields) -> bool {
    let shows = |f: &CampaignFields| f.status == CampaignStatus::Active && !f.offer_text.is_empty();
    shows(before) != shows(after)
        || (shows(after)
            && (before.offer_text != after.offer_text
                || before.name != after.name
                || before.starts_at != after.starts_at
                || before.ends_at != after.ends_at))
}
