//! PostgreSQL access for screen pops: resolving a number to cards in one query, and the
//! `pop_invalidations` table.

use serde::Deserialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::proto::v1;

/// Most candidates a MULTIPLE pop lists.
pub const MAX_CANDIDATES: i64 = 10;

#[derive(sqlx::FromRow)]
struct CardRow {
    id: Uuid,
    display_name: String,
    company: String,
    tier: String,
    vip: bool,
    preferred_language: String,
    time_zone: String,
    segment: String,
    do_not_call: bool,
    marketing_consent: bool,
    version: i64,
    primary_contacts: Json<Vec<CardContact>>,
    external_references: Json<Vec<CardReference>>,
    total: i64,
}

#[derive(Deserialize)]
struct CardContact {
    id: Uuid,
    kind: String,
    value: String,
    extension: String,
    label: String,
}

#[derive(Deserialize)]
struct CardReference {
    system: String,
    external_id: String,
}

/// Resolves an E.164 number to a pop: everyone who has it, most recently updated first.
pub async fn resolve(pool: &PgPool, number: &str) -> sqlx::Result<v1::ScreenPop> {
    let rows: Vec<CardRow> = sqlx::query_as(
        "SELECT c.id, c.display_name, c.company, c.tier, c.vip, c.preferred_language, c.time_zone, \
                c.segment, c.do_not_call, c.marketing_consent, c.version, \
                COALESCE((SELECT json_agg(json_build_object('id', p.id, 'kind', p.kind, 'value', p.value, \
                                 'extension', p.extension, 'label', p.label) ORDER BY p.kind DESC) \
                          FROM contact_points p WHERE p.customer_id = c.id AND p.is_primary), '[]'::json) \
                  AS primary_contacts, \
                COALESCE((SELECT json_agg(json_build_object('system', r.system, 'external_id', r.external_id) \
                                 ORDER BY r.system, r.external_id) \
                          FROM external_references r WHERE r.customer_id = c.id), '[]'::json) \
                  AS external_references, \
                count(*) OVER () AS total \
         FROM customers c \
         WHERE c.deleted_at IS NULL \
           AND c.id IN (SELECT customer_id FROM contact_points WHERE kind = 'phone' AND value = $1) \
         ORDER BY c.updated_at DESC, c.id \
         LIMIT $2",
    )
    .bind(number)
    .bind(MAX_CANDIDATES)
    .fetch_all(pool)
    .await?;

    let total = rows.first().map_or(0, |row| row.total);
    let mut cards: Vec<v1::CustomerCard> = rows.into_iter().map(card).collect();
    let mut pop = v1::ScreenPop {
        normalized_number: number.to_owned(),
        candidate_count: i32::try_from(total).unwrap_or(i32::MAX),
        ..Default::default()
    };
    match cards.len() {
        0 => pop.set_match(v1::MatchKind::None),
        1 if total == 1 => {
            pop.set_match(v1::MatchKind::Exact);
            pop.card = cards.pop();
        }
        _ => {
            pop.set_match(v1::MatchKind::Multiple);
            pop.candidates = cards;
        }
    }
    Ok(pop)
}

fn card(row: CardRow) -> v1::CustomerCard {
    let tier = match row.tier.as_str() {
        "silver" => v1::Tier::Silver,
        "gold" => v1::Tier::Gold,
        "platinum" => v1::Tier::Platinum,
        _ => v1::Tier::Standard,
    };
    v1::CustomerCard {
        customer_id: row.id.to_string(),
        display_name: row.display_name,
        company: row.company,
        tier: tier.into(),
        vip: row.vip,
        preferred_language: row.preferred_language,
        time_zone: row.time_zone,
        segment: row.segment,
        do_not_call: row.do_not_call,
        marketing_consent: row.marketing_consent,
        primary_contacts: row
            .primary_contacts
            .0
            .into_iter()
            .map(|c| v1::ContactPoint {
                id: c.id.to_string(),
                kind: if c.kind == "email" {
                    v1::ContactKind::Email
                } else {
                    v1::ContactKind::Phone
                }
                .into(),
                value: c.value,
                extension: c.extension,
                label: c.label,
                primary: true,
            })
            .collect(),
        external_references: row
            .external_references
            .0
            .into_iter()
            .map(|r| v1::ExternalReference {
                system: r.system,
                external_id: r.external_id,
            })
            .collect(),
        version: row.version,
    }
}

/// The E.164 numbers whose pops show this customer.
pub async fn customer_numbers(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT value FROM contact_points WHERE customer_id = $1 AND kind = 'phone'")
        .bind(customer_id)
        .fetch_all(conn)
        .await
}

pub async fn record_invalidations(
    conn: &mut PgConnection,
    numbers: &[String],
) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "INSERT INTO pop_invalidations (number) SELECT unnest($1::text[]) RETURNING id",
    )
    .bind(numbers)
    .fetch_all(conn)
    .await
}

pub async fn pending_invalidations(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as("SELECT id, number FROM pop_invalidations ORDER BY id LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

pub async fn delete_invalidations(pool: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pop_invalidations WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}
