//! The integrated customer record: the one place the call center, sales, service and marketing
//! read and write who a customer is and how to reach them.
//!
//! This module holds the domain types and the service logic. Each write runs in one transaction
//! that also records the screen-pop invalidations it needs; the pops are invalidated in Redis after
//! the commit and before the write is acknowledged (see [`crate::screenpop::PopInvalidator`]).

pub mod grpc;
mod merge;
mod merge_store;
mod store;

pub use self::merge::{MergeError, Merged};

pub use self::merge_store::{CUSTOMER_ROWS, NOT_MOVED};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::customer_rows::CustomerRows;
use crate::db::{self, Failure};
use crate::email::Email;
use crate::ids::CustomerId;
use crate::page_token::{PageRequest, PageTokenError};
use crate::phone::PhoneNumber;
use crate::screenpop::PopInvalidator;
use crate::text_enum::text_enum;
use crate::validation::Violations;

pub use self::store::privacy;

text_enum!(Tier {
    Standard => "standard",
    Silver => "silver",
    Gold => "gold",
    Platinum => "platinum",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    Phone,
    Email,
}

impl ContactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactKind::Phone => "phone",
            ContactKind::Email => "email",
        }
    }
}

/// A stored contact point. `value` is E.164 for phones and the lower-cased address for emails.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactPoint {
    pub id: Uuid,
    pub kind: ContactKind,
    pub value: String,
    pub extension: String,
    pub label: String,
    pub primary: bool,
}

/// A parsed contact point value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactValue {
    Phone(PhoneNumber),
    Email(Email),
}

impl ContactValue {
    pub fn kind(&self) -> ContactKind {
        match self {
            ContactValue::Phone(_) => ContactKind::Phone,
            ContactValue::Email(_) => ContactKind::Email,
        }
    }

    fn stored_value(&self) -> &str {
        match self {
            ContactValue::Phone(phone) => phone.e164(),
            ContactValue::Email(email) => email.as_str(),
        }
    }

    fn extension(&self) -> &str {
        match self {
            ContactValue::Phone(phone) => phone.extension().unwrap_or(""),
            ContactValue::Email(_) => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContactPoint {
    pub value: ContactValue,
    pub label: String,
    pub primary: bool,
}

pub use crate::ids::ExternalReference;

/// The descriptive fields of a customer, as created or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub display_name: String,
    pub company: String,
    pub preferred_language: String,
    pub time_zone: String,
    pub tier: Tier,
    pub vip: bool,
    pub segment: String,
    pub marketing_consent: bool,
    pub do_not_call: bool,
}

#[derive(Clone)]
pub struct Customer {
    pub id: Uuid,
    pub profile: Profile,
    pub contact_points: Vec<ContactPoint>,
    pub external_references: Vec<ExternalReference>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Customer {
    /// The feed event of a change to this customer: flags and codes, never names or numbers.
    pub fn event(&self, kind: &'static str, change: &str) -> crate::feed::Event {
        let p = &self.profile;
        crate::feed::Event::new(kind, self.id)
            .customer(Some(self.id.into()))
            .data(serde_json::json!({
                "change": change,
                "version": self.version,
                "tier": p.tier.as_str(),
                "vip": p.vip,
                "segment": p.segment,
                "marketing_consent": p.marketing_consent,
                "do_not_call": p.do_not_call,
            }))
    }

    /// E.164 numbers of every phone contact point: the screen-pop keys that show this customer.
    fn phone_numbers(&self) -> Vec<String> {
        self.contact_points
            .iter()
            .filter(|cp| cp.kind == ContactKind::Phone)
            .map(|cp| cp.value.clone())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub profile: Profile,
    pub contact_points: Vec<NewContactPoint>,
    pub external_references: Vec<ExternalReference>,
    /// Client idempotency key.
    pub request_id: Option<String>,
}

/// The fields an update changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    pub display_name: Option<String>,
    pub company: Option<String>,
    pub preferred_language: Option<String>,
    pub time_zone: Option<String>,
    pub tier: Option<Tier>,
    pub vip: Option<bool>,
    pub segment: Option<String>,
    pub marketing_consent: Option<bool>,
    pub do_not_call: Option<bool>,
}

impl ProfilePatch {
    fn apply(self, profile: &mut Profile) {
        let p = profile;
        if let Some(v) = self.display_name {
            p.display_name = v;
        }
        if let Some(v) = self.company {
            p.company = v;
        }
        if let Some(v) = self.preferred_language {
            p.preferred_language = v;
        }
        if let Some(v) = self.time_zone {
            p.time_zone = v;
        }
        if let Some(v) = self.tier {
            p.tier = v;
        }
        if let Some(v) = self.vip {
            p.vip = v;
        }
        if let Some(v) = self.segment {
            p.segment = v;
        }
        if let Some(v) = self.marketing_consent {
            p.marketing_consent = v;
        }
        if let Some(v) = self.do_not_call {
            p.do_not_call = v;
        }
    }
}

#[derive(Debug, Clone)]
pub enum SearchQuery {
    Phone(PhoneNumber),
    Email(Email),
    NamePrefix(String),
    External(ExternalReference),
}

impl SearchQuery {
    /// A stable text form, used to tie page tokens to the query that made them.
    fn fingerprint(&self) -> String {
        match self {
            SearchQuery::Phone(p) => format!("phone:{}", p.e164()),
            SearchQuery::Email(e) => format!("email:{}", e.as_str()),
            SearchQuery::NamePrefix(n) => format!("name:{}", n.to_lowercase()),
            SearchQuery::External(r) => format!("ext:{}:{}", r.system, r.external_id),
        }
    }
}

pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("customer not found")]
    NotFound,
    #[error("contact point not found")]
    ContactPointNotFound,
    #[error("the customer changed since version {sent} was read (now {current})")]
    StaleVersion { sent: i64, current: i64 },
    #[error("{0}")]
    AlreadyExists(&'static str),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for CustomerError {
    fn from(error: sqlx::Error) -> Self {
        match db::classify(&error) {
            Failure::Unavailable => CustomerError::Unavailable(error),
            Failure::UniqueViolation(constraint) => {
                CustomerError::AlreadyExists(match constraint {
                    "external_references_pkey" => {
                        "the external reference is linked to another customer"
                    }
                    "contact_points_unique_per_customer" => {
                        "the customer already has this contact point"
                    }
                    "customers_create_request_id_key" => {
                        "a customer was created with this request id"
                    }
                    _ => "the record already exists",
                })
            }
            _ => CustomerError::Database(error),
        }
    }
}

impl From<PageTokenError> for CustomerError {
    fn from(error: PageTokenError) -> Self {
        CustomerError::Invalid(Violations::single("page_token", error.to_string()))
    }
}

pub type Result<T, E = CustomerError> = std::result::Result<T, E>;

/// The customer service logic.
#[derive(Clone)]
pub struct Customers {
    pool: PgPool,
    /// Search reads a replica within the lag bound (a search is no read of one's own write:
    /// `get` and every write use the primary).
    reads: crate::read_replicas::Reads,
    pops: PopInvalidator,
    /// Every context's rows per customer, which a merge moves (this context's own included).
    rows: Arc<[CustomerRows]>,
}

impl Customers {
    pub fn new(
        pool: PgPool,
        reads: crate::read_replicas::Reads,
        pops: PopInvalidator,
        rows: Vec<CustomerRows>,
    ) -> Self {
        Self {
            pool,
            reads,
            pops,
            rows: rows.into(),
        }
    }

    #[tracing::instrument(skip_all, fields(customer_id))]
    pub async fn create(&self, new: NewCustomer) -> Result<Customer> {
        if let Some(request_id) = &new.request_id
            && let Some(existing) = store::find_by_request_id(&self.pool, request_id).await?
        {
            return self.get(existing).await;
        }
        let id = Uuid::new_v4();
        tracing::Span::current().record("customer_id", tracing::field::display(id));
        let mut tx = crate::db::begin(&self.pool).await?;
        if let Err(error) = store::insert_customer(&mut tx, id, &new).await {
            // A concurrent retry with the same request id won the race: answer with its customer.
            if let (Some(request_id), Failure::UniqueViolation("customers_create_request_id_key")) =
                (&new.request_id, db::classify(&error))
            {
                drop(tx);
                let winner = store::find_by_request_id(&self.pool, request_id).await?;
                return self.get(winner.ok_or(CustomerError::NotFound)?).await;
            }
            return Err(error.into());
        }
        for (cp, primary) in new
            .contact_points
            .iter()
            .zip(primary_flags(&new.contact_points))
        {
            store::insert_contact_point(&mut tx, id, cp, primary).await?;
        }
        for reference in &new.external_references {
            store::insert_external_reference(&mut tx, id, reference).await?;
        }
        let customer = store::load(&mut tx, id)
            .await?
            .ok_or(CustomerError::NotFound)?;
        let event = customer.event("customer.created", "created");
        self.commit_and_invalidate(tx, id, customer.phone_numbers(), event)
            .await?;
        Ok(customer)
    }

    #[tracing::instrument(skip(self))]
    pub async fn get(&self, id: Uuid) -> Result<Customer> {
        // Its reads take arrays of ids: on generic plans they are not planned at every call.
        let mut tx = crate::db::begin_generic(&self.pool).await?;
        let customer = self.resolve_merged(&mut tx, id).await?;
        tx.commit().await?;
        customer.ok_or(CustomerError::NotFound)
    }

    #[tracing::instrument(skip(self, patch))]
    pub async fn update(&self, id: Uuid, version: i64, patch: ProfilePatch) -> Result<Customer> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let mut customer = lock_version(&mut tx, id, Some(version)).await?;
        patch.apply(&mut customer.profile);
        store::update_profile(&mut tx, id, &customer.profile).await?;
        self.finish_write(tx, id, Vec::new(), "profile").await
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, id: Uuid, version: Option<i64>) -> Result<()> {
        let mut tx = crate::db::begin(&self.pool).await?;
        let Some(current) = store::lock_for_delete(&mut tx, id).await? else {
            return Err(CustomerError::NotFound);
        };
        if current.deleted {
            return Ok(());
        }
        check_version(version, current.version)?;
        store::soft_delete(&mut tx, id).await?;
        let numbers = store::phone_numbers(&mut tx, id).await?;
        let event = crate::feed::Event::new("customer.deleted", id).customer(Some(id.into()));
        self.commit_and_invalidate(tx, id, numbers, event).await
    }

    #[tracing::instrument(skip(self, query))]
    pub async fn search(&self, query: SearchQuery, page: &PageRequest) -> Result<Page<Customer>> {
        let fingerprint = query.fingerprint();
        let after = page.after::<(String, Uuid)>(&fingerprint)?;
        let limit = page.fetch_limit();
        let (items, next_page_token) = self
            .reads
            .run(self.reads.behind(), |pool| {
                let (query, after, fingerprint) = (&query, after.as_ref(), &fingerprint);
                async move {
                    let mut conn = crate::db::acquire(&pool).await?;
                    let ids = store::search_ids(&mut conn, query, after, limit).await?;
                    let (ids, next_page_token) = page.page(fingerprint, ids, Clone::clone);
                    let ids: Vec<Uuid> = ids.iter().map(|(_, id)| *id).collect();
                    let items = store::load_many(&mut conn, &ids).await?;
                    Ok((items, next_page_token))
                }
            })
            .await?;
        Ok(Page {
            items,
            next_page_token,
        })
    }

    #[tracing::instrument(skip(self, new))]
    pub async fn add_contact_point(&self, id: Uuid, new: NewContactPoint) -> Result<Customer> {
        let mut tx = crate::db::begin(&self.pool).await?;
        lock_version(&mut tx, id, None).await?;
        if new.primary {
            store::clear_primary(&mut tx, id, new.value.kind()).await?;
        }
        store::insert_contact_point(&mut tx, id, &new, new.primary).await?;
        store::ensure_primaries(&mut tx, id).await?;
        self.finish_write(tx, id, Vec::new(), "contact_point_added")
            .await
    }

    #[tracing::instrument(skip(self))]
    pub async fn remove_contact_point(&self, id: Uuid, contact_point_id: Uuid) -> Result<Customer> {
        let mut tx = crate::db::begin(&self.pool).await?;
        lock_version(&mut tx, id, None).await?;
        let removed = store::delete_contact_point(&mut tx, id, contact_point_id)
            .await?
            .ok_or(CustomerError::ContactPointNotFound)?;
        store::ensure_primaries(&mut tx, id).await?;
        let removed_numbers = match removed.kind {
            ContactKind::Phone => vec![removed.value],
            ContactKind::Email => Vec::new(),
        };
        self.finish_write(tx, id, removed_numbers, "contact_point_removed")
            .await
    }

    #[tracing::instrument(skip(self, reference))]
    pub async fn link_external_reference(
        &self,
        id: Uuid,
        reference: ExternalReference,
    ) -> Result<Customer> {
        let mut tx = crate::db::begin(&self.pool).await?;
        lock_version(&mut tx, id, None).await?;
        match store::external_reference_owner(&mut tx, &reference).await? {
            Some(owner) if owner == id => {
                drop(tx);
                return self.get(id).await;
            }
            Some(_) => {
                return Err(CustomerError::AlreadyExists(
                    "the external reference is linked to another customer",
                ));
            }
            None => store::insert_external_reference(&mut tx, id, &reference).await?,
        }
        self.finish_write(tx, id, Vec::new(), "reference_linked")
            .await
    }

    /// Bumps the version, reloads the customer, commits, and invalidates every pop that showed it.
    async fn finish_write(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        id: Uuid,
        mut extra_numbers: Vec<String>,
        change: &'static str,
    ) -> Result<Customer> {
        store::touch(&mut tx, id).await?;
        let customer = store::load(&mut tx, id)
            .await?
            .ok_or(CustomerError::NotFound)?;
        extra_numbers.extend(customer.phone_numbers());
        let event = customer.event("customer.updated", change);
        self.commit_and_invalidate(tx, id, extra_numbers, event)
            .await?;
        Ok(customer)
    }

    /// Records the write in the audit trail and the event feed, commits, and invalidates the
    /// pops that showed it.
    async fn commit_and_invalidate(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        customer_id: Uuid,
        numbers: Vec<String>,
        event: crate::feed::Event,
    ) -> Result<()> {
        crate::audit::record_write(&mut tx, customer_id.into()).await?;
        crate::feed::record(&mut tx, event).await?;
        let pending = self.pops.record(&mut tx, numbers).await?;
        tx.commit().await?;
        self.pops.apply(pending).await;
        Ok(())
    }
}

/// Whether a customer exists and is not deleted; for other contexts that attach facts to one.
pub async fn is_live(conn: &mut sqlx::PgConnection, id: CustomerId) -> sqlx::Result<bool> {
    store::is_live(conn, id.as_uuid()).await
}

/// Sets the customer's do-not-call flag in the caller's transaction (a campaign outcome), audited
/// as a write. The caller invalidates the customer's pops.
pub async fn flag_do_not_call(conn: &mut sqlx::PgConnection, id: CustomerId) -> sqlx::Result<()> {
    store::flag_do_not_call(conn, id.as_uuid()).await?;
    crate::audit::record_write(conn, id).await?;
    let event = crate::feed::Event::new("customer.updated", id)
        .customer(Some(id))
        .data(serde_json::json!({"change": "do_not_call", "do_not_call": true}));
    crate::feed::record(conn, event).await
}

/// Locks the live customer row and checks the version the client read, if it sent one.
async fn lock_version(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    version: Option<i64>,
) -> Result<Customer> {
    let customer = store::load_for_update(conn, id)
        .await?
        .ok_or(CustomerError::NotFound)?;
    check_version(version, customer.version)?;
    Ok(customer)
}

/// Which of a new customer's contact points are primary: per kind, the first one marked primary,
/// or the first one of that kind when none is marked.
fn primary_flags(contact_points: &[NewContactPoint]) -> Vec<bool> {
    let explicit = |kind| {
        contact_points
            .iter()
            .any(|cp| cp.primary && cp.value.kind() == kind)
    };
    let mut taken = Vec::new();
    contact_points
        .iter()
        .map(|cp| {
            let kind = cp.value.kind();
            let primary = !taken.contains(&kind) && (cp.primary || !explicit(kind));
            if primary {
                taken.push(kind);
            }
            primary
        })
        .collect()
}

fn check_version(sent: Option<i64>, current: i64) -> Result<()> {
    match sent {
        Some(sent) if sent != current => Err(CustomerError::StaleVersion { sent, current }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::PhoneParser;

    fn phone(n: &str, primary: bool) -> NewContactPoint {
        let parser = PhoneParser::for_region("US").expect("US");
        NewContactPoint {
            value: ContactValue::Phone(parser.parse(n, "").expect("valid")),
            label: String::new(),
            primary,
        }
    }

    fn email(e: &str, primary: bool) -> NewContactPoint {
        NewContactPoint {
            value: ContactValue::Email(Email::parse(e).expect("valid")),
            label: String::new(),
            primary,
        }
    }

    #[test]
    fn first_of_each_kind_is_primary_when_none_is_marked() {
        let cps = [
            phone("+14155550100", false),
            email("a@b.co", false),
            phone("+14155550101", false),
        ];
        assert_eq!(primary_flags(&cps), [true, true, false]);
    }

    #[test]
    fn the_first_marked_primary_wins() {
        let cps = [
            phone("+14155550100", false),
            phone("+14155550101", true),
            phone("+14155550102", true),
        ];
        assert_eq!(primary_flags(&cps), [false, true, false]);
    }

    #[test]
    fn stale_versions_are_reported_with_both_numbers() {
        assert!(check_version(None, 3).is_ok());
        assert!(check_version(Some(3), 3).is_ok());
        assert!(matches!(
            check_version(Some(2), 3),
            Err(CustomerError::StaleVersion {
                sent: 2,
                current: 3
            })
        ));
    }
}
