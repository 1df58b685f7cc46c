//! PostgreSQL access for screen pops: the stored cards (`customer_cards`), building them, and the
//! `pop_invalidations` table.
//!
//! The card is built by [`build_cards`], one store function owned by this context. It is a
//! read-only projection over tables other contexts own and write (customers, interactions,
//! activity, cases, campaigns, feedback); it is a compile-checked macro, so a change to any of
//! those tables that the card depends on fails the build here. No other context's code reads for
//! the card. Those tables' triggers (migration 30) mark the stored card stale when they change.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::cache::NumberKey;
use crate::proto::v1;
use crate::proto_time::to_timestamp;

/// Most candidates a MULTIPLE pop lists.
pub const MAX_CANDIDATES: i64 = 10;

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
    deleted: bool,
    generation: i64,
    primary_contacts: Json<Vec<CardContact>>,
    external_references: Json<Vec<CardReference>>,
    recent_interactions: Json<Vec<CardInteractionRow>>,
    recent_orders: Json<Vec<CardOrderRow>>,
    lifetime_value: Json<Vec<CardMoney>>,
    last_interaction_at: Option<DateTime<Utc>>,
    open_cases: Json<Vec<CardCaseRow>>,
    offers: Json<Vec<CardOfferRow>>,
    valid_until: Option<DateTime<Utc>>,
    open_feedback: Json<Vec<CardFeedbackRow>>,
}

#[derive(Deserialize)]
struct CardFeedbackRow {
    id: Uuid,
    category: String,
    status: String,
    created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct CardOfferRow {
    campaign_id: Uuid,
    campaign_name: String,
    offer_text: String,
}

#[derive(Deserialize)]
struct CardCaseRow {
    id: Uuid,
    subject: String,
    status: String,
    priority: i16,
    sla_due_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct CardInteractionRow {
    id: Uuid,
    channel: String,
    direction: String,
    agent_id: Option<String>,
    disposition_code: Option<String>,
    disposition_label: Option<String>,
    resolved: Option<bool>,
    outcome: String,
    started_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct CardOrderRow {
    system: String,
    order_id: String,
    amount_minor: i64,
    currency: String,
    status: String,
    ordered_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct CardMoney {
    currency: String,
    amount_minor: i64,
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

/// A customer a number pops, with the stored card if there is one.
pub struct Indexed {
    pub customer_id: Uuid,
    /// The encoded `CustomerCard`; `None` when it must be built.
    pub card: Option<Vec<u8>>,
    pub valid_until: Option<DateTime<Utc>>,
    /// The end of the customer's latest call, read live from `customer_last_calls` (call events
    /// never make a card stale).
    pub last_call_end: Option<DateTime<Utc>>,
    /// How many live customers have the number (the first [`MAX_CANDIDATES`] are listed).
    pub total: i64,
}

/// The customers an E.164 number pops, most recently updated first, with their stored cards: index
/// lookups only (the number, the customers, their cards, their latest call's end). The latest
/// end is one row per customer (migration 42), not a probe of every month of `calls`.
pub async fn pop_index(pool: &PgPool, number: &str) -> sqlx::Result<Vec<Indexed>> {
    sqlx::query_as!(
        Indexed,
        "SELECT c.id AS customer_id, k.card, k.valid_until, l.ended_at AS \"last_call_end?\", \
                count(*) OVER () AS \"total!\" \
         FROM customers c LEFT JOIN customer_cards k ON k.customer_id = c.id \
           LEFT JOIN customer_last_calls l ON l.customer_id = c.id \
         WHERE c.deleted_at IS NULL \
           AND c.id IN (SELECT customer_id FROM contact_points WHERE kind = 'phone' AND value = $1) \
         ORDER BY c.updated_at DESC, c.id \
         LIMIT $2",
        number,
        MAX_CANDIDATES
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await
}

/// A card built from the tables it shows, to store.
pub struct Built {
    pub customer_id: Uuid,
    /// The card's generation when its data was read (0 if it had no row).
    pub generation: i64,
    /// `None` for a deleted customer: nothing to show.
    pub card: Option<v1::CustomerCard>,
    /// When an offer on it next starts or ends.
    pub valid_until: Option<DateTime<Utc>>,
}

/// Customers after `after` whose cards must be built (new, or changed by a write), up to `limit`.
pub async fn cards_to_build(pool: &PgPool, after: Uuid, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT k.customer_id FROM customer_cards k JOIN customers c ON c.id = k.customer_id \
         WHERE k.card IS NULL AND k.customer_id > $1 ORDER BY k.customer_id LIMIT $2",
        after,
        limit
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await
}

/// Builds the cards of these customers in one statement, with the generation of each stored card
/// read in the same snapshot as the data. `repeat_contact` and `overdue` are left for the reader.
pub async fn build_cards(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<Built>> {
    let rows: Vec<CardRow> = sqlx::query_as!(
        CardRow,
        "SELECT c.id, c.display_name, c.company, c.tier, c.vip, c.preferred_language, c.time_zone, \
                c.segment, c.do_not_call, c.marketing_consent, c.version, \
                c.deleted_at IS NOT NULL AS \"deleted!\", \
                COALESCE((SELECT k.generation FROM customer_cards k WHERE k.customer_id = c.id), 0) AS \"generation!\", \
                COALESCE((SELECT json_agg(json_build_object('id', p.id, 'kind', p.kind, 'value', p.value, \
                                 'extension', p.extension, 'label', p.label) ORDER BY p.kind DESC) \
                          FROM contact_points p WHERE p.customer_id = c.id AND p.is_primary), '[]'::json) \
                  AS \"primary_contacts!: Json<Vec<CardContact>>\", \
                COALESCE((SELECT json_agg(json_build_object('system', r.system, 'external_id', r.external_id) \
                                 ORDER BY r.system, r.external_id) \
                          FROM external_references r WHERE r.customer_id = c.id), '[]'::json) \
                  AS \"external_references!: Json<Vec<CardReference>>\", \
                COALESCE((SELECT json_agg(x) FROM ( \
                    SELECT i.id, i.channel, i.direction, i.agent_id, i.disposition_code, \
                           d.label AS disposition_label, d.resolves AS resolved, i.outcome, i.started_at \
                    FROM interactions i LEFT JOIN dispositions d ON d.code = i.disposition_code \
                    WHERE i.customer_id = c.id ORDER BY i.started_at DESC, i.id DESC LIMIT 3) x), '[]'::json) \
                  AS \"recent_interactions!: Json<Vec<CardInteractionRow>>\", \
                COALESCE((SELECT json_agg(x) FROM ( \
                    SELECT o.system, o.order_id, o.amount_minor, o.currency, o.status, o.ordered_at \
                    FROM orders o WHERE o.customer_id = c.id ORDER BY o.ordered_at DESC LIMIT 3) x), '[]'::json) \
                  AS \"recent_orders!: Json<Vec<CardOrderRow>>\", \
                COALESCE((SELECT json_agg(json_build_object('currency', v.currency, 'amount_minor', v.lifetime_minor) \
                                 ORDER BY v.currency) \
                          FROM customer_values v WHERE v.customer_id = c.id), '[]'::json) AS \"lifetime_value!: Json<Vec<CardMoney>>\", \
                (SELECT max(i.started_at) FROM interactions i WHERE i.customer_id = c.id) AS \"last_interaction_at?\", \
                COALESCE((SELECT json_agg(x) FROM ( \
                    SELECT k.id, k.subject, k.status, k.priority, k.sla_due_at FROM cases k \
                    WHERE k.customer_id = c.id AND k.status IN ('new', 'open', 'pending') \
                    ORDER BY k.priority DESC, k.sla_due_at, k.id LIMIT 3) x), '[]'::json) AS \"open_cases!: Json<Vec<CardCaseRow>>\", \
                COALESCE((SELECT json_agg(json_build_object('campaign_id', g.id, 'campaign_name', g.name, \
                                 'offer_text', g.offer_text) ORDER BY g.starts_at, g.id) \
                          FROM campaign_members m JOIN campaigns g ON g.id = m.campaign_id \
                          WHERE m.customer_id = c.id AND m.state <> 'done' AND g.status = 'active' \
                            AND g.offer_text <> '' AND g.starts_at <= now() AND now() < g.ends_at), \
                         '[]'::json) AS \"offers!: Json<Vec<CardOfferRow>>\", \
                (SELECT min(CASE WHEN g.starts_at > now() THEN g.starts_at ELSE g.ends_at END) \
                   FROM campaign_members m JOIN campaigns g ON g.id = m.campaign_id \
                  WHERE m.customer_id = c.id AND m.state <> 'done' AND g.status = 'active' \
                    AND g.offer_text <> '' AND now() < g.ends_at) AS \"valid_until?\", \
                COALESCE((SELECT json_agg(x) FROM ( \
                    SELECT f.id, f.category, f.status, f.created_at FROM feedback f \
                    WHERE f.customer_id = c.id AND f.sentiment = 'negative' \
                      AND f.status NOT IN ('resolved', 'closed') \
                    ORDER BY f.created_at DESC, f.id DESC LIMIT 3) x), '[]'::json) AS \"open_feedback!: Json<Vec<CardFeedbackRow>>\" \
         FROM customers c WHERE c.id = ANY($1)",
        ids
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Built {
            customer_id: row.id,
            generation: row.generation,
            valid_until: row.valid_until,
            card: (!row.deleted).then(|| card(row)),
        })
        .collect())
}

/// A card to store: the customer, the generation it was built at, its bytes, and its expiry.
pub type Encoded = (Uuid, i64, Vec<u8>, Option<DateTime<Utc>>);

/// Stores built cards, each only if its generation is still the one it was built at (and its row
/// is not being written right now). A deleted customer's row gets empty bytes: nothing to build,
/// nothing to show.
pub async fn store_cards(pool: &PgPool, built: &[Encoded]) -> sqlx::Result<u64> {
    let mut ids = Vec::with_capacity(built.len());
    let mut generations = Vec::with_capacity(built.len());
    let mut cards = Vec::with_capacity(built.len());
    let mut valid_until = Vec::with_capacity(built.len());
    for (id, generation, card, until) in built {
        ids.push(*id);
        generations.push(*generation);
        cards.push(card.as_slice());
        valid_until.push(*until);
    }
    // Never waits for a row lock: a card a write is marking stale right now is skipped (that
    // write moves its generation anyway), so a builder can never deadlock with a writing
    // transaction that touches several customers' cards in several statements. Every customer has
    // a row (migration 30 and the customers trigger), so storing is an update.
    let done = sqlx::query!(
        "WITH input AS ( \
           SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::timestamptz[]) \
             AS t(id, generation, card, valid_until)), \
         locked AS ( \
           SELECT k.customer_id FROM customer_cards k \
           JOIN input i ON i.id = k.customer_id AND k.generation = i.generation \
           ORDER BY k.customer_id FOR UPDATE OF k SKIP LOCKED) \
         UPDATE customer_cards k SET card = i.card, valid_until = i.valid_until \
         FROM input i JOIN locked l ON l.customer_id = i.id \
         WHERE k.customer_id = i.id",
        &ids,
        &generations,
        &cards as &[&[u8]],
        &valid_until as &[Option<DateTime<Utc>>]
    )
    .execute(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(done.rows_affected())
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
        recent_interactions: row
            .recent_interactions
            .0
            .into_iter()
            .map(card_interaction)
            .collect(),
        recent_orders: row.recent_orders.0.into_iter().map(card_order).collect(),
        lifetime_value: row
            .lifetime_value
            .0
            .into_iter()
            .map(|m| v1::Money {
                currency: m.currency,
                amount_minor: m.amount_minor,
            })
            .collect(),
        last_contact_at: row.last_interaction_at.map(to_timestamp),
        open_cases: row.open_cases.0.into_iter().map(card_case).collect(),
        offers: row
            .offers
            .0
            .into_iter()
            .map(|o| v1::CardOffer {
                campaign_id: o.campaign_id.to_string(),
                campaign_name: o.campaign_name,
                offer_text: o.offer_text,
            })
            .collect(),
        open_feedback: row
            .open_feedback
            .0
            .into_iter()
            .map(|f| v1::CardFeedback {
                id: f.id.to_string(),
                category: f.category,
                status: f.status,
                create_time: Some(to_timestamp(f.created_at)),
            })
            .collect(),
        // Time-relative: set when the pop is read (`card::settle`).
        repeat_contact: false,
    }
}

fn card_interaction(i: CardInteractionRow) -> v1::CardInteraction {
    let channel = match i.channel.as_str() {
        "email" => v1::Channel::Email,
        "chat" => v1::Channel::Chat,
        "sms" => v1::Channel::Sms,
        "visit" => v1::Channel::Visit,
        "social" => v1::Channel::Social,
        _ => v1::Channel::Voice,
    };
    let direction = if i.direction == "outbound" {
        v1::Direction::Outbound
    } else {
        v1::Direction::Inbound
    };
    v1::CardInteraction {
        id: i.id.to_string(),
        channel: channel.into(),
        direction: direction.into(),
        agent_id: i.agent_id.unwrap_or_default(),
        disposition_code: i.disposition_code.unwrap_or_default(),
        disposition_label: i.disposition_label.unwrap_or_default(),
        resolved: i.resolved.unwrap_or(false),
        outcome: i.outcome,
        started_at: Some(to_timestamp(i.started_at)),
    }
}

fn card_case(k: CardCaseRow) -> v1::CardCase {
    let status = match k.status.as_str() {
        "open" => v1::CaseStatus::Open,
        "pending" => v1::CaseStatus::Pending,
        _ => v1::CaseStatus::New,
    };
    let priority = match k.priority {
        1 => v1::CasePriority::Low,
        3 => v1::CasePriority::High,
        4 => v1::CasePriority::Urgent,
        _ => v1::CasePriority::Normal,
    };
    v1::CardCase {
        id: k.id.to_string(),
        subject: k.subject,
        status: status.into(),
        priority: priority.into(),
        sla_due_at: Some(to_timestamp(k.sla_due_at)),
        // Time-relative: set when the pop is read (`card::settle`).
        overdue: false,
    }
}

fn card_order(o: CardOrderRow) -> v1::CardOrder {
    let status = match o.status.as_str() {
        "paid" => v1::OrderStatus::Paid,
        "shipped" => v1::OrderStatus::Shipped,
        "delivered" => v1::OrderStatus::Delivered,
        "cancelled" => v1::OrderStatus::Cancelled,
        "returned" => v1::OrderStatus::Returned,
        _ => v1::OrderStatus::Placed,
    };
    v1::CardOrder {
        system: o.system,
        order_id: o.order_id,
        amount: Some(v1::Money {
            currency: o.currency,
            amount_minor: o.amount_minor,
        }),
        status: status.into(),
        ordered_at: Some(to_timestamp(o.ordered_at)),
    }
}

/// The E.164 numbers whose pops show these customers.
pub async fn customer_numbers(
    conn: &mut PgConnection,
    customer_ids: &[Uuid],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "SELECT p.value FROM unnest($1::uuid[]) AS k(id) \
         JOIN contact_points p ON p.customer_id = k.id AND p.kind = 'phone'",
        customer_ids
    )
    .fetch_all(conn)
    .await
}

pub async fn record_invalidations(
    conn: &mut PgConnection,
    numbers: &[NumberKey],
) -> sqlx::Result<Vec<i64>> {
    let keys: Vec<String> = numbers.iter().map(|k| k.as_str().to_owned()).collect();
    sqlx::query_scalar!(
        "INSERT INTO pop_invalidations (number_key) SELECT unnest($1::text[]) RETURNING id",
        &keys
    )
    .fetch_all(conn)
    .await
}

/// Invalidations a writer could not apply (failed), or should have applied long ago (it died
/// between its commit and Redis). Fresh rows are a writer's normal path in progress.
pub async fn pending_invalidations(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<(i64, String)>> {
    let rows = sqlx::query!(
        "SELECT id, number_key FROM pop_invalidations \
         WHERE failed OR created_at < now() - interval '5 seconds' ORDER BY id LIMIT $1",
        limit
    )
    .fetch_all(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id, row.number_key))
        .collect())
}

pub async fn mark_invalidations_failed(pool: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE pop_invalidations SET failed = true WHERE id = ANY($1)",
        ids
    )
    .execute(&mut *crate::db::acquire(pool).await?)
    .await?;
    Ok(())
}

pub async fn delete_invalidations(pool: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM pop_invalidations WHERE id = ANY($1)", ids)
        .execute(&mut *crate::db::acquire(pool).await?)
        .await?;
    Ok(())
}
