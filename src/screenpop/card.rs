//! The stored card: each customer's card kept in PostgreSQL (`customer_cards`), encoded and ready
//! to send, so that a pop that misses Redis reads bytes through index lookups instead of building
//! the card with a dozen subqueries.
//!
//! - **Current.** Triggers on every table the card shows mark the customer's card stale in the
//!   writing transaction itself (migration 30), so a pop after an acknowledged write never reads
//!   the old card. A stale or missing card is built by the pop that meets it (and stored), or ahead
//!   of time by the [`spawn_builder`] task every instance runs.
//! - **No lost race.** A card is stored only if the generation read with its data is still current
//!   (`store::store_cards`): a write that commits after a builder read moves the generation.
//! - **Time.** What changes with the clock is not frozen in the bytes. A case's `overdue` and the
//!   card's `repeat_contact` are computed here when the pop is read ([`settle`]), from the stored
//!   timestamps; the end of the latest call is read live (`customer_last_calls`, one row per
//!   customer that triggers on `calls` keep, migration 42), so call events never make a card
//!   stale; and the card expires (`valid_until`) when one of the customer's campaign offers next
//!   starts or ends.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgPool;
use uuid::Uuid;

use super::store::{self, Built, Indexed};
use crate::proto::v1;
use crate::proto_time::{from_timestamp, to_timestamp};

/// A contact within this long before the pop makes the call a repeat contact.
pub const REPEAT_CONTACT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Cards the background builder builds per statement.
const BUILD_BATCH: i64 = 256;

/// Resolves an E.164 number to a pop: everyone who has it, most recently updated first, from their
/// stored cards (building any that are stale).
pub async fn resolve(pool: &PgPool, number: &str) -> sqlx::Result<v1::ScreenPop> {
    let rows = store::pop_index(pool, number).await?;
    let now = Utc::now();
    let stale: Vec<Uuid> = rows
        .iter()
        .filter(|row| stored(row, now).is_none())
        .map(|row| row.customer_id)
        .collect();
    let built = if stale.is_empty() {
        HashMap::new()
    } else {
        build(pool, &stale).await?
    };
    Ok(assemble(number, &rows, built, now))
}

/// [`resolve`] on a read replica, which cannot build a card: `None` when one of the number's
/// cards is stale (the caller reads the primary). The latest call's end is the replica's, at most
/// the lag bound behind.
pub async fn resolve_stored(pool: &PgPool, number: &str) -> sqlx::Result<Option<v1::ScreenPop>> {
    let rows = store::pop_index(pool, number).await?;
    let now = Utc::now();
    if rows.iter().any(|row| stored(row, now).is_none()) {
        return Ok(None);
    }
    Ok(Some(assemble(number, &rows, HashMap::new(), now)))
}

/// The pop of `number` from its index rows, with the cards `built` for the stale ones.
fn assemble(
    number: &str,
    rows: &[Indexed],
    mut built: HashMap<Uuid, v1::CustomerCard>,
    now: DateTime<Utc>,
) -> v1::ScreenPop {
    let total = rows.first().map_or(0, |row| row.total);
    let mut cards: Vec<v1::CustomerCard> = rows
        .iter()
        .filter_map(|row| {
            let card = stored(row, now).or_else(|| built.remove(&row.customer_id))?;
            Some(settle(card, row.last_call_end, now))
        })
        .collect();
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
    pop
}

/// The stored card, if there is one that is current at `now` and decodes.
fn stored(row: &Indexed, now: DateTime<Utc>) -> Option<v1::CustomerCard> {
    let bytes = row.card.as_deref().filter(|bytes| !bytes.is_empty())?;
    if row.valid_until.is_some_and(|until| until <= now) {
        return None;
    }
    v1::CustomerCard::decode(bytes).ok()
}

/// Sets what depends on the time of reading: the last contact (with the latest call, read live),
/// whether this is a repeat contact, and which open cases are overdue.
pub fn settle(
    mut card: v1::CustomerCard,
    last_call_end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> v1::CustomerCard {
    let last_interaction = card.last_contact_at.as_ref().and_then(from_timestamp);
    let last_contact = last_interaction.max(last_call_end);
    card.last_contact_at = last_contact.map(to_timestamp);
    card.repeat_contact = last_contact.is_some_and(|at| now - at < REPEAT_CONTACT_WINDOW);
    for case in &mut card.open_cases {
        case.overdue = case
            .sla_due_at
            .as_ref()
            .and_then(from_timestamp)
            .is_some_and(|due| due < now);
    }
    card
}

/// Builds and stores the cards of these customers; returns the live customers' cards.
async fn build(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<HashMap<Uuid, v1::CustomerCard>> {
    let built = store::build_cards(pool, ids).await?;
    let encoded: Vec<_> = built
        .iter()
        .map(|b: &Built| {
            let bytes = b
                .card
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default();
            (b.customer_id, b.generation, bytes, b.valid_until)
        })
        .collect();
    store::store_cards(pool, &encoded).await?;
    Ok(built
        .into_iter()
        .filter_map(|b| Some((b.customer_id, b.card?)))
        .collect())
}

/// Builds every card that is missing or stale, a batch at a time; returns how many it built.
/// `switchboard maintenance build-cards` runs it to the end; [`spawn_builder`] runs it in the
/// background.
pub async fn build_pending(pool: &PgPool) -> sqlx::Result<usize> {
    let mut total = 0;
    let mut after = Uuid::nil();
    loop {
        let ids = store::cards_to_build(pool, after, BUILD_BATCH).await?;
        let Some(last) = ids.last() else {
            return Ok(total);
        };
        after = *last;
        total += ids.len();
        build(pool, &ids).await?;
    }
}

/// Builds stale cards every `interval` until `stop` fires, so that pops after a write rarely have
/// to build the card themselves.
pub fn spawn_builder(
    pool: PgPool,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            match build_pending(&pool).await {
                Ok(0) => {}
                Ok(built) => tracing::debug!(built, "customer cards built"),
                Err(error) => tracing::debug!(%error, "customer cards not built this time"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a time")
    }

    #[test]
    fn settling_computes_the_time_relative_fields_at_reading() {
        let card = v1::CustomerCard {
            last_contact_at: Some(to_timestamp(at("2026-12-01T10:00:00Z"))),
            open_cases: vec![
                v1::CardCase {
                    sla_due_at: Some(to_timestamp(at("2026-12-07T09:00:00Z"))),
                    ..Default::default()
                },
                v1::CardCase {
                    sla_due_at: Some(to_timestamp(at("2026-12-07T11:00:00Z"))),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let now = at("2026-12-07T10:00:00Z");
        let settled = settle(card.clone(), None, now);
        assert!(
            settled.repeat_contact,
            "six days after the last interaction"
        );
        assert_eq!(
            settled
                .open_cases
                .iter()
                .map(|c| c.overdue)
                .collect::<Vec<_>>(),
            [true, false]
        );

        // A week and a minute later: no longer a repeat, unless a call ended since.
        let later = at("2026-12-08T10:01:00Z");
        assert!(!settle(card.clone(), None, later).repeat_contact);
        let called = settle(card, Some(at("2026-12-08T09:00:00Z")), later);
        assert!(called.repeat_contact);
        assert_eq!(
            called.last_contact_at,
            Some(to_timestamp(at("2026-12-08T09:00:00Z")))
        );
        assert!(called.open_cases.iter().all(|c| c.overdue));
    }

    #[test]
    fn a_card_past_its_validity_or_blank_is_not_served() {
        let card = v1::CustomerCard {
            display_name: "Ada".into(),
            ..Default::default()
        };
        let now = at("2026-12-07T10:00:00Z");
        let row = |card: Option<Vec<u8>>, valid_until: Option<DateTime<Utc>>| Indexed {
            customer_id: Uuid::nil(),
            card,
            valid_until,
            last_call_end: None,
            total: 1,
        };
        let bytes = card.encode_to_vec();
        assert_eq!(
            stored(&row(Some(bytes.clone()), None), now),
            Some(card.clone())
        );
        assert_eq!(
            stored(
                &row(Some(bytes.clone()), Some(at("2026-12-07T10:00:01Z"))),
                now
            ),
            Some(card)
        );
        assert_eq!(stored(&row(Some(bytes), Some(now)), now), None);
        assert_eq!(stored(&row(Some(Vec::new()), None), now), None);
        assert_eq!(stored(&row(None, None), now), None);
    }
}
