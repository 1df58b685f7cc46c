//! PostgreSQL access for customers, contact points and external references.
//!
//! Functions take a connection (or a transaction, which derefs to one); the service logic owns the
//! transaction and commits it.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    ContactKind, ContactPoint, Customer, ExternalReference, NewContactPoint, NewCustomer, Profile,
    SearchQuery, Tier,
};

/// A checked statement with the customer's id as `$1` and the profile as `$2` to `$10`, in the
/// column order of `customers`, then any further arguments.
macro_rules! with_profile {
    ($sql:literal, $id:expr, $p:expr $(, $rest:expr)* $(,)?) => {
        sqlx::query!(
            $sql,
            $id,
            &$p.display_name,
            &$p.company,
            &$p.preferred_language,
            &$p.time_zone,
            $p.tier.as_str(),
            $p.vip,
            &$p.segment,
            $p.marketing_consent,
            $p.do_not_call
            $(, $rest)*
        )
    };
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    id: Uuid,
    display_name: String,
    company: String,
    preferred_language: String,
    time_zone: String,
    tier: String,
    vip: bool,
    segment: String,
    marketing_consent: bool,
    do_not_call: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

#[derive(sqlx::FromRow)]
struct ContactRow {
    customer_id: Uuid,
    id: Uuid,
    kind: String,
    value: String,
    extension: String,
    label: String,
    is_primary: bool,
}

#[derive(sqlx::FromRow)]
struct ReferenceRow {
    customer_id: Uuid,
    system: String,
    external_id: String,
}

pub(super) async fn find_by_request_id(
    pool: &PgPool,
    request_id: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM customers WHERE create_request_id = $1",
        request_id
    )
    .fetch_optional(&mut *crate::db::acquire(pool).await?)
    .await
}

pub(super) async fn insert_customer(
    conn: &mut PgConnection,
    id: Uuid,
    new: &NewCustomer,
) -> sqlx::Result<()> {
    with_profile!(
        "INSERT INTO customers (id, display_name, company, preferred_language, time_zone, tier, vip, \
         segment, marketing_consent, do_not_call, create_request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        id,
        new.profile,
        new.request_id.as_deref()
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn insert_contact_point(
    conn: &mut PgConnection,
    customer_id: Uuid,
    cp: &NewContactPoint,
    primary: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO contact_points (id, customer_id, kind, value, extension, label, is_primary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        Uuid::new_v4(),
        customer_id,
        cp.value.kind().as_str(),
        cp.value.stored_value(),
        cp.value.extension(),
        &cp.label,
        primary
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes the oldest contact point of each kind primary where that kind has none.
pub(super) async fn ensure_primaries(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE contact_points SET is_primary = true WHERE id IN ( \
           SELECT DISTINCT ON (kind) id FROM contact_points cp \
           WHERE customer_id = $1 AND NOT EXISTS ( \
             SELECT 1 FROM contact_points p \
             WHERE p.customer_id = $1 AND p.kind = cp.kind AND p.is_primary) \
           ORDER BY kind, seq)",
        customer_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn clear_primary(
    conn: &mut PgConnection,
    customer_id: Uuid,
    kind: ContactKind,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE contact_points SET is_primary = false WHERE customer_id = $1 AND kind = $2 AND is_primary",
        customer_id,
        kind.as_str()
    )
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn insert_external_reference(
    conn: &mut PgConnection,
    customer_id: Uuid,
    reference: &ExternalReference,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO external_references (system, external_id, customer_id) VALUES ($1, $2, $3)",
        &reference.system,
        &reference.external_id,
        customer_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn external_reference_owner(
    conn: &mut PgConnection,
    reference: &ExternalReference,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT customer_id FROM external_references WHERE system = $1 AND external_id = $2",
        &reference.system,
        &reference.external_id
    )
    .fetch_optional(conn)
    .await
}

pub(super) async fn flag_do_not_call(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE customers SET do_not_call = true, updated_at = now(), version = version + 1 \
         WHERE id = $1 AND NOT do_not_call",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn is_live(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1 AND deleted_at IS NULL) AS \"live!\"",
        id
    )
    .fetch_one(conn)
    .await
}

/// Loads a live (not deleted) customer.
pub(super) async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Customer>> {
    Ok(load_many(conn, &[id]).await?.pop())
}

/// Locks a live customer's row for the rest of the transaction, then loads it.
pub(super) async fn load_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<Customer>> {
    let locked: Option<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM customers WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    match locked {
        Some(id) => load(conn, id).await,
        None => Ok(None),
    }
}

pub(super) struct DeleteState {
    pub version: i64,
    pub deleted: bool,
}

pub(super) async fn lock_for_delete(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<Option<DeleteState>> {
    let row = sqlx::query!(
        "SELECT version, deleted_at IS NOT NULL AS \"deleted!\" FROM customers WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| DeleteState {
        version: row.version,
        deleted: row.deleted,
    }))
}

pub(super) async fn soft_delete(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE customers SET deleted_at = now(), updated_at = now(), version = version + 1 WHERE id = $1",
        id
    )
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn phone_numbers(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT value FROM contact_points WHERE customer_id = $1 AND kind = 'phone'",
        id
    )
    .fetch_all(conn)
    .await
}

pub(super) async fn update_profile(
    conn: &mut PgConnection,
    id: Uuid,
    p: &Profile,
) -> sqlx::Result<()> {
    with_profile!(
        "UPDATE customers SET display_name = $2, company = $3, preferred_language = $4, time_zone = $5, \
         tier = $6, vip = $7, segment = $8, marketing_consent = $9, do_not_call = $10 WHERE id = $1",
        id,
        p
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a change: bumps the version and the update time.
pub(super) async fn touch(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE customers SET version = version + 1, updated_at = now() WHERE id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn delete_contact_point(
    conn: &mut PgConnection,
    customer_id: Uuid,
    contact_point_id: Uuid,
) -> sqlx::Result<Option<ContactPoint>> {
    let row = sqlx::query_as!(
        ContactRow,
        "DELETE FROM contact_points WHERE customer_id = $1 AND id = $2 \
         RETURNING customer_id, id, kind, value, extension, label, is_primary",
        customer_id,
        contact_point_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(ContactPoint::from))
}

/// Builds one search statement: `$1`/`$2` are the keyset cursor, `$3` the limit, `$4`/`$5` the filter.
macro_rules! search {
    ($conn:expr, $after:expr, $limit:expr, $first:expr, $second:expr, $filter:literal) => {
        sqlx::query!(
            "SELECT lower(c.display_name) COLLATE \"C\" AS \"key!\", c.id FROM customers c \
             WHERE c.deleted_at IS NULL AND "
                + $filter
                + " AND ($1::text IS NULL OR (lower(c.display_name) COLLATE \"C\", c.id) \
                   > ($1::text COLLATE \"C\", $2::uuid)) ORDER BY 1, 2 LIMIT $3",
            $after.map(|(key, _)| key.as_str()),
            $after.map(|(_, id)| *id),
            $limit,
            $first,
            $second
        )
        .fetch_all($conn)
        .await?
        .into_iter()
        .map(|row| (row.key, row.id))
        .collect()
    };
}

/// Ids of matching live customers after the cursor, with their sort keys.
pub(super) async fn search_ids(
    conn: &mut PgConnection,
    query: &SearchQuery,
    after: Option<&(String, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<(String, Uuid)>> {
    Ok(match query {
        SearchQuery::Phone(phone) => search!(
            conn,
            after,
            limit,
            phone.e164(),
            "",
            "c.id IN (SELECT customer_id FROM contact_points \
             WHERE kind = 'phone' AND value = $4 AND $5 = '')"
        ),
        SearchQuery::Email(email) => search!(
            conn,
            after,
            limit,
            email.as_str(),
            "",
            "c.id IN (SELECT customer_id FROM contact_points \
             WHERE kind = 'email' AND value = $4 AND $5 = '')"
        ),
        SearchQuery::NamePrefix(prefix) => search!(
            conn,
            after,
            limit,
            prefix.as_str(),
            "",
            "lower(c.display_name) COLLATE \"C\" >= lower($4) COLLATE \"C\" \
             AND lower(c.display_name) COLLATE \"C\" < (lower($4) || chr(1114111)) COLLATE \"C\" \
             AND $5 = ''"
        ),
        SearchQuery::External(reference) => search!(
            conn,
            after,
            limit,
            reference.system.as_str(),
            reference.external_id.as_str(),
            "c.id IN (SELECT customer_id FROM external_references \
             WHERE system = $4 AND external_id = $5)"
        ),
    })
}

/// Loads live customers in the order of `ids` (unknown or deleted ids are skipped).
pub(super) async fn load_many(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Customer>> {
    load_rows(conn, ids, false).await
}

async fn load_rows(
    conn: &mut PgConnection,
    ids: &[Uuid],
    include_deleted: bool,
) -> sqlx::Result<Vec<Customer>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_as!(
        CustomerRow,
        "SELECT id, display_name, company, preferred_language, time_zone, tier, vip, segment, \
         marketing_consent, do_not_call, created_at, updated_at, version \
         FROM customers WHERE id = ANY($1) AND ($2 OR deleted_at IS NULL)",
        ids,
        include_deleted
    )
    .fetch_all(&mut *conn)
    .await?;
    let contacts = sqlx::query_as!(
        ContactRow,
        "SELECT customer_id, id, kind, value, extension, label, is_primary FROM contact_points \
         WHERE customer_id = ANY($1) ORDER BY seq",
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let references = sqlx::query_as!(
        ReferenceRow,
        "SELECT customer_id, system, external_id FROM external_references \
         WHERE customer_id = ANY($1) ORDER BY system, external_id",
        ids
    )
    .fetch_all(&mut *conn)
    .await?;

    let mut customers: Vec<Customer> = rows.into_iter().map(Customer::from).collect();
    for contact in contacts {
        if let Some(c) = customers.iter_mut().find(|c| c.id == contact.customer_id) {
            c.contact_points.push(ContactPoint::from(contact));
        }
    }
    for reference in references {
        if let Some(c) = customers.iter_mut().find(|c| c.id == reference.customer_id) {
            c.external_references.push(ExternalReference {
                system: reference.system,
                external_id: reference.external_id,
            });
        }
    }
    customers.sort_by_key(|c| ids.iter().position(|id| *id == c.id));
    Ok(customers)
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Customer {
            id: row.id,
            profile: Profile {
                display_name: row.display_name,
                company: row.company,
                preferred_language: row.preferred_language,
                time_zone: row.time_zone,
                // The CHECK constraint admits only the four known tiers.
                tier: Tier::parse(&row.tier).unwrap_or(Tier::Standard),
                vip: row.vip,
                segment: row.segment,
                marketing_consent: row.marketing_consent,
                do_not_call: row.do_not_call,
            },
            contact_points: Vec::new(),
            external_references: Vec::new(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
        }
    }
}

impl From<ContactRow> for ContactPoint {
    fn from(row: ContactRow) -> Self {
        ContactPoint {
            id: row.id,
            kind: if row.kind == "email" {
                ContactKind::Email
            } else {
                ContactKind::Phone
            },
            value: row.value,
            extension: row.extension,
            label: row.label,
            primary: row.is_primary,
        }
    }
}

/// What a privacy export reads and what erasure removes.
pub mod privacy {
    use chrono::{DateTime, Utc};
    use sqlx::PgConnection;
    use uuid::Uuid;

    use super::super::Customer;

    /// A customer as held, deleted or erased ones included.
    pub struct Held {
        pub customer: Customer,
        pub deleted_at: Option<DateTime<Utc>>,
        pub erased_at: Option<DateTime<Utc>>,
        /// Its phone numbers (none after an erasure).
        pub phone_numbers: Vec<String>,
    }

    pub async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Held>> {
        let Some(customer) = super::load_rows(&mut *conn, &[id], true).await?.pop() else {
            return Ok(None);
        };
        let row = sqlx::query!(
            "SELECT deleted_at, erased_at FROM customers WHERE id = $1",
            id
        )
        .fetch_one(&mut *conn)
        .await?;
        let (deleted_at, erased_at): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            (row.deleted_at, row.erased_at);
        let phone_numbers = super::phone_numbers(conn, id).await?;
        Ok(Some(Held {
            customer,
            deleted_at,
            erased_at,
            phone_numbers,
        }))
    }

    /// The customer's phone numbers (E.164), whose pops and pins an erasure must purge.
    pub async fn phone_numbers(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<String>> {
        super::phone_numbers(conn, id).await
    }

    /// Locks the customer's row; `None` if there is no such customer, else when it was erased.
    pub async fn lock(
        conn: &mut PgConnection,
        id: Uuid,
    ) -> sqlx::Result<Option<Option<DateTime<Utc>>>> {
        sqlx::query_scalar!(
            "SELECT erased_at FROM customers WHERE id = $1 FOR UPDATE",
            id
        )
        .fetch_optional(conn)
        .await
    }

    /// Every customer merged into `id`, directly or through a chain of merges (the tombstones
    /// whose `merged_into` leads to `id`).
    pub async fn merged_into(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar!(
            "WITH RECURSIVE lineage AS ( \
               SELECT id FROM customers WHERE merged_into = $1 \
               UNION SELECT c.id FROM customers c JOIN lineage l ON c.merged_into = l.id) \
             SELECT id AS \"id!\" FROM lineage ORDER BY id",
            id
        )
        .fetch_all(conn)
        .await
    }

    /// Drops what the merges of `ids` kept to undo them (keys and profile values moved): an erased
    /// customer is never unmerged.
    pub async fn scrub_merges(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
        sqlx::query!(
            "UPDATE customer_merges SET lineage = '{\"erased\": true}' \
             WHERE survivor_id = ANY($1) OR duplicate_id = ANY($1)",
            ids
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Removes the contact points and external references and anonymizes the row, which stays
    /// (deleted) so that calls, interactions and orders still count. Returns the erase time.
    pub async fn erase(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<DateTime<Utc>> {
        sqlx::query!("DELETE FROM contact_points WHERE customer_id = $1", id)
            .execute(&mut *conn)
            .await?;
        sqlx::query!("DELETE FROM external_references WHERE customer_id = $1", id)
            .execute(&mut *conn)
            .await?;
        sqlx::query_scalar!(
        "UPDATE customers SET display_name = '(erased)', company = '', preferred_language = '', \
               time_zone = '', segment = '', vip = false, marketing_consent = false, \
               create_request_id = NULL, deleted_at = COALESCE(deleted_at, now()), erased_at = now(), \
               updated_at = now(), version = version + 1 \
             WHERE id = $1 RETURNING erased_at AS \"erased_at!\"",
        id
    )
        .fetch_one(conn)
        .await
    }
}
