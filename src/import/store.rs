//! PostgreSQL access for imports: bulk lookups and one statement per kind of write.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Snapshot, Writes};
use crate::feed::Event;
use crate::screenpop::{Pending, PopInvalidator};

#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub id: Uuid,
    pub display_name: String,
    pub company: String,
    pub preferred_language: String,
    pub time_zone: String,
    pub tier: &'static str,
    pub marketing_consent: bool,
    pub do_not_call: bool,
}

pub struct Found {
    /// Reference -> owner (`None`: owned by a deleted or erased customer).
    pub refs: Vec<((String, String), Option<Uuid>)>,
    pub phones: Vec<(String, Uuid)>,
    pub emails: Vec<(String, Uuid)>,
}

/// Keys are joined from `unnest` rather than tested with `= ANY($n)`: an import grows the tables
/// faster than statistics follow, and a cached plan that scans a table testing each row against
/// a 1,000-element array goes quadratic (600 ms a chunk at 30,000 rows); a join stays linear
/// whichever plan PostgreSQL picks.
pub async fn lookup(
    conn: &mut PgConnection,
    refs: &[(String, String)],
    phones: &[String],
    emails: &[String],
) -> sqlx::Result<Found> {
    let (systems, ids): (Vec<String>, Vec<String>) = refs.iter().cloned().unzip();
    let ref_rows: Vec<(String, String, Uuid, bool)> = sqlx::query!(
        "SELECT r.system, r.external_id, r.customer_id, \
           (c.deleted_at IS NULL AND c.erased_at IS NULL) AS \"live!\" \
         FROM external_references r JOIN customers c ON c.id = r.customer_id \
         WHERE (r.system, r.external_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        &systems,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| (row.system, row.external_id, row.customer_id, row.live))
    .collect();
    let mut by_kind = Vec::with_capacity(2);
    for (kind, values) in [("phone", phones), ("email", emails)] {
        let rows: Vec<(String, Uuid)> = sqlx::query!(
        "SELECT p.value, p.customer_id FROM unnest($2::text[]) AS v(value) \
             JOIN contact_points p ON p.kind = $1 AND p.value = v.value \
             JOIN customers c ON c.id = p.customer_id AND c.deleted_at IS NULL AND c.erased_at IS NULL",
        kind,
        values
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| (row.value, row.customer_id))
    .collect();
        by_kind.push(rows);
    }
    let emails = by_kind.pop().unwrap_or_default();
    let phones = by_kind.pop().unwrap_or_default();
    Ok(Found {
        refs: ref_rows
            .into_iter()
            .map(|(system, id, owner, live)| ((system, id), live.then_some(owner)))
            .collect(),
        phones,
        emails,
    })
}

/// What the planner needs to know of existing customers.
pub async fn snapshots(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, Snapshot)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let profiles: Vec<(Uuid, String, String, String, bool)> = sqlx::query!(
        "SELECT c.id, c.company, c.preferred_language, c.time_zone, c.do_not_call \
         FROM unnest($1::uuid[]) AS k(id) JOIN customers c ON c.id = k.id",
        ids
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| {
        (
            row.id,
            row.company,
            row.preferred_language,
            row.time_zone,
            row.do_not_call,
        )
    })
    .collect();
    let mut snapshots: HashMap<Uuid, Snapshot> = profiles
        .into_iter()
        .map(
            |(id, company, preferred_language, time_zone, do_not_call)| {
                (
                    id,
                    Snapshot {
                        company,
                        preferred_language,
                        time_zone,
                        do_not_call,
                        ..Snapshot::default()
                    },
                )
            },
        )
        .collect();
    let contacts: Vec<(Uuid, String, String, bool)> = sqlx::query!(
        "SELECT p.customer_id, p.kind, p.value, p.is_primary \
         FROM unnest($1::uuid[]) AS k(id) JOIN contact_points p ON p.customer_id = k.id",
        ids
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| (row.customer_id, row.kind, row.value, row.is_primary))
    .collect();
    for (id, kind, value, primary) in contacts {
        if let Some(s) = snapshots.get_mut(&id) {
            if kind == "phone" {
                s.phones.insert(value);
                s.has_primary_phone |= primary;
            } else {
                s.emails.insert(value);
                s.has_primary_email |= primary;
            }
        }
    }
    let refs: Vec<(Uuid, String, String)> = sqlx::query!(
        "SELECT r.customer_id, r.system, r.external_id \
         FROM unnest($1::uuid[]) AS k(id) JOIN external_references r ON r.customer_id = k.id",
        ids
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| (row.customer_id, row.system, row.external_id))
    .collect();
    for (id, system, external_id) in refs {
        if let Some(s) = snapshots.get_mut(&id) {
            s.refs.insert((system, external_id));
        }
    }
    Ok(snapshots.into_iter().collect())
}

/// Writes a planned chunk; returns the pop invalidations to apply after the commit.
pub async fn write(
    conn: &mut PgConnection,
    w: &Writes,
    pops: &PopInvalidator,
) -> sqlx::Result<Pending> {
    if !w.creates.is_empty() {
        let rows: Vec<_> = w
            .creates
            .iter()
            .map(|c| {
                json!({"id": c.id, "display_name": c.display_name, "company": c.company,
                       "preferred_language": c.preferred_language, "time_zone": c.time_zone,
                       "tier": c.tier, "marketing_consent": c.marketing_consent,
                       "do_not_call": c.do_not_call})
            })
            .collect();
        sqlx::query!(
        "INSERT INTO customers (id, display_name, company, preferred_language, time_zone, tier, \
               marketing_consent, do_not_call) \
             SELECT id, display_name, company, preferred_language, time_zone, tier, marketing_consent, \
               do_not_call \
             FROM jsonb_to_recordset($1) AS r(id uuid, display_name text, company text, \
               preferred_language text, time_zone text, tier text, marketing_consent boolean, \
               do_not_call boolean)",
        serde_json::Value::Array(rows)
    )
        .execute(&mut *conn)
        .await?;
    }
    if !w.fills.is_empty() {
        let rows: Vec<_> = w
            .fills
            .iter()
            .map(|(id, s)| {
                json!({"id": id, "company": s.company, "preferred_language": s.preferred_language,
                       "time_zone": s.time_zone, "do_not_call": s.do_not_call})
            })
            .collect();
        // Only blanks are filled and do-not-call only set, whatever a concurrent writer did.
        sqlx::query!(
            "UPDATE customers c SET \
               company = CASE WHEN c.company = '' THEN f.company ELSE c.company END, \
               preferred_language = CASE WHEN c.preferred_language = '' THEN f.preferred_language \
                                         ELSE c.preferred_language END, \
               time_zone = CASE WHEN c.time_zone = '' THEN f.time_zone ELSE c.time_zone END, \
               do_not_call = c.do_not_call OR f.do_not_call, \
               updated_at = now(), version = c.version + 1 \
             FROM jsonb_to_recordset($1) AS f(id uuid, company text, preferred_language text, \
               time_zone text, do_not_call boolean) \
             WHERE c.id = f.id",
            serde_json::Value::Array(rows)
        )
        .execute(&mut *conn)
        .await?;
    }
    let touched: Vec<Uuid> = w
        .creates
        .iter()
        .map(|c| c.id)
        .chain(w.fills.keys().copied())
        .chain(w.contact_points.iter().map(|(id, _, _, _)| *id))
        .chain(w.refs.iter().map(|(id, _, _)| *id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !w.contact_points.is_empty() {
        let rows: Vec<_> = w
            .contact_points
            .iter()
            .map(|(customer, kind, value, primary)| {
                json!({"id": Uuid::new_v4(), "customer_id": customer, "kind": kind, "value": value,
                       "is_primary": primary})
            })
            .collect();
        sqlx::query!(
            "INSERT INTO contact_points (id, customer_id, kind, value, is_primary) \
             SELECT id, customer_id, kind, value, is_primary FROM jsonb_to_recordset($1) \
               AS r(id uuid, customer_id uuid, kind text, value text, is_primary boolean) \
             ON CONFLICT (customer_id, kind, value, extension) DO NOTHING",
            serde_json::Value::Array(rows)
        )
        .execute(&mut *conn)
        .await?;
        // The planner made the first contact point of each kind primary where there was none
        // (a concurrent writer adding a primary meanwhile fails the chunk on the unique index).
    }
    if !w.refs.is_empty() {
        let rows: Vec<_> = w
            .refs
            .iter()
            .map(|(customer, system, id)| {
                json!({"system": system, "external_id": id, "customer_id": customer})
            })
            .collect();
        sqlx::query!(
            "INSERT INTO external_references (system, external_id, customer_id) \
             SELECT system, external_id, customer_id FROM jsonb_to_recordset($1) \
               AS r(system text, external_id text, customer_id uuid)",
            serde_json::Value::Array(rows)
        )
        .execute(&mut *conn)
        .await?;
    }
    crate::audit::record_writes(&mut *conn, touched.iter().map(|&id| id.into())).await?;
    let created: HashSet<Uuid> = w.creates.iter().map(|c| c.id).collect();
    let events: Vec<_> = w
        .creates
        .iter()
        .map(|c| {
            Event::new("customer.created", c.id)
                .customer(Some(c.id.into()))
                .data(json!({"change": "imported", "tier": c.tier,
                             "marketing_consent": c.marketing_consent, "do_not_call": c.do_not_call}))
        })
        .chain(touched.iter().filter(|id| !created.contains(id)).map(|id| {
            Event::new("customer.updated", id)
                .customer(Some((*id).into()))
                .data(json!({"change": "imported"}))
        }))
        .collect();
    crate::feed::record_all(&mut *conn, &events).await?;
    pops.record_for_customers(conn, &touched).await
}
