//! The stored card (`customer_cards`, issue #25): a cold pop reads it, every write that changes
//! the card marks it stale in its own transaction, what depends on the clock is computed when the
//! pop is read, and an erased customer's card leaves nothing behind.

use std::time::Duration;

use chrono::SubsecRound as _;

use prost::Message as _;
use sqlx::Row as _;
use switchboard::proto::v1;
use switchboard::proto_time::to_timestamp;
use uuid::Uuid;

use crate::helpers::{TestApp, TestOptions, eventually, last_calls_against_calls, spawn_app_with};

/// Without Redis every pop reads PostgreSQL, so each pop below goes through the stored card.
async fn app_without_redis() -> TestApp {
    spawn_app_with(TestOptions {
        redis_url: None,
        ..Default::default()
    })
    .await
}

/// The stored card's bytes and generation (`None` bytes: to be built).
async fn stored(app: &TestApp, customer_id: &str) -> (Option<Vec<u8>>, i64) {
    let row = sqlx::query("SELECT card, generation FROM customer_cards WHERE customer_id = $1")
        .bind(Uuid::parse_str(customer_id).expect("uuid"))
        .fetch_one(&app.db)
        .await
        .expect("a customer_cards row");
    (row.get("card"), row.get("generation"))
}

async fn built(app: &TestApp, customer_id: &str) -> v1::CustomerCard {
    assert!(
        eventually(Duration::from_secs(10), || async {
            stored(app, customer_id).await.0.is_some()
        })
        .await,
        "the background builder stores the card"
    );
    let bytes = stored(app, customer_id).await.0.expect("bytes");
    v1::CustomerCard::decode(bytes.as_slice()).expect("a CustomerCard")
}

async fn plant(app: &TestApp, customer_id: &str, card: &v1::CustomerCard) {
    sqlx::query("UPDATE customer_cards SET card = $2 WHERE customer_id = $1")
        .bind(Uuid::parse_str(customer_id).expect("uuid"))
        .bind(card.encode_to_vec())
        .execute(&app.db)
        .await
        .expect("planted");
}

fn exact(pop: &v1::ScreenPop) -> &v1::CustomerCard {
    assert_eq!(pop.r#match(), v1::MatchKind::Exact);
    pop.card.as_ref().expect("card")
}

#[tokio::test]
async fn a_cold_pop_reads_the_stored_card_and_a_write_marks_it_stale_in_its_own_transaction() {
    let app = app_without_redis().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let card = built(&app, &ada.id).await;
    assert_eq!(card.display_name, "Ada Lovelace");
    assert_eq!(card.customer_id, ada.id);

    // The pop is the stored bytes: a card planted there is what the pop shows.
    let planted = v1::CustomerCard {
        display_name: "Planted".into(),
        ..card.clone()
    };
    plant(&app, &ada.id, &planted).await;
    let (pop, source) = app.pop("+14155550100").await;
    assert_eq!(source, v1::PopSource::Database);
    assert_eq!(exact(&pop).display_name, "Planted");

    // A write marks the card stale before it is acknowledged (in its own transaction), so the
    // next pop builds the card again from the tables.
    let (_, generation) = stored(&app, &ada.id).await;
    app.rename(&ada, "Ada King").await;
    let (bytes, after) = stored(&app, &ada.id).await;
    assert!(
        bytes.is_none() || after > generation,
        "the rename made the card stale"
    );
    assert!(after > generation, "the generation moved");
    let (pop, _) = app.pop("+14155550100").await;
    assert_eq!(exact(&pop).display_name, "Ada King");
    // ...and the pop that built it stored it.
    let card = built(&app, &ada.id).await;
    assert_eq!(card.display_name, "Ada King");
}

#[tokio::test]
async fn what_changes_with_the_clock_is_computed_when_the_pop_is_read() {
    let app = app_without_redis().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let card = built(&app, &ada.id).await;
    assert!(!card.repeat_contact);

    // A card stored with a case due an hour ago that was not overdue then, and a contact six
    // days ago: both flags are set at reading, whatever the bytes say.
    let now = chrono::Utc::now();
    let aged = v1::CustomerCard {
        last_contact_at: Some(to_timestamp(now - chrono::Duration::days(6))),
        repeat_contact: false,
        open_cases: vec![
            v1::CardCase {
                id: Uuid::new_v4().to_string(),
                subject: "late".into(),
                sla_due_at: Some(to_timestamp(now - chrono::Duration::hours(1))),
                overdue: false,
                ..Default::default()
            },
            v1::CardCase {
                id: Uuid::new_v4().to_string(),
                subject: "in time".into(),
                sla_due_at: Some(to_timestamp(now + chrono::Duration::hours(1))),
                overdue: true,
                ..Default::default()
            },
        ],
        ..card
    };
    plant(&app, &ada.id, &aged).await;
    let (pop, _) = app.pop("+14155550100").await;
    let shown = exact(&pop);
    assert!(shown.repeat_contact, "a contact six days ago");
    assert_eq!(
        shown
            .open_cases
            .iter()
            .map(|c| (c.subject.as_str(), c.overdue))
            .collect::<Vec<_>>(),
        [("late", true), ("in time", false)]
    );

    // Eight days ago is not a repeat contact, unless a call ended since: the latest call is read
    // live, so call events never make a card stale.
    let older = v1::CustomerCard {
        last_contact_at: Some(to_timestamp(now - chrono::Duration::days(8))),
        ..aged
    };
    plant(&app, &ada.id, &older).await;
    let (pop, _) = app.pop("+14155550100").await;
    assert!(!exact(&pop).repeat_contact);
    let ended = now - chrono::Duration::hours(2);
    sqlx::query(
        "INSERT INTO calls (gateway_id, call_id, caller_number, state, offered_at, ended_at, customer_id) \
         VALUES ('gw', 'c-1', '+14155550100', 'ended', $1, $2, $3)",
    )
    .bind(ended - chrono::Duration::minutes(5))
    .bind(ended)
    .bind(Uuid::parse_str(&ada.id).expect("uuid"))
    .execute(&app.db)
    .await
    .expect("a call");
    let (bytes, _) = stored(&app, &ada.id).await;
    assert!(bytes.is_some(), "a call does not make the card stale");
    let (pop, _) = app.pop("+14155550100").await;
    let shown = exact(&pop);
    assert!(shown.repeat_contact, "a call ended two hours ago");
    assert_eq!(
        shown.last_contact_at.as_ref().map(|t| t.seconds),
        Some(ended.timestamp())
    );
}

#[tokio::test]
async fn an_offer_that_starts_later_makes_the_stored_card_expire_then() {
    let app = app_without_redis().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    built(&app, &ada.id).await;
    // A campaign that starts in a moment, with Ada a member: written in SQL (the campaign API
    // does not take a start this close), which marks her card stale like any write.
    let starts = chrono::Utc::now() + chrono::Duration::seconds(3);
    campaign_with_member(&app, starts, &ada.id).await;
    let (pop, _) = app.pop("+14155550100").await;
    assert!(exact(&pop).offers.is_empty(), "not started yet");
    let until: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT valid_until FROM customer_cards WHERE customer_id = $1")
            .bind(Uuid::parse_str(&ada.id).expect("uuid"))
            .fetch_one(&app.db)
            .await
            .expect("valid_until");
    assert_eq!(
        until.map(|t| t.timestamp_micros()),
        Some(starts.timestamp_micros()),
        "the card is valid until the offer starts"
    );
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + (starts - chrono::Utc::now()).to_std().unwrap_or_default()
            + Duration::from_millis(50),
    )
    .await;
    let (pop, _) = app.pop("+14155550100").await;
    assert_eq!(
        exact(&pop)
            .offers
            .iter()
            .map(|o| o.offer_text.as_str())
            .collect::<Vec<_>>(),
        ["Half price"],
        "the stored card expired when the offer started"
    );
}

/// An active inbound campaign with an offer, from `starts` for 30 days, with the customer a
/// member: written in SQL (the campaign API does not take a start this close).
async fn campaign_with_member(
    app: &TestApp,
    starts: chrono::DateTime<chrono::Utc>,
    customer_id: &str,
) -> Uuid {
    let campaign = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO campaigns (id, request_id, name, channel, status, starts_at, ends_at, offer_text, \
                                max_attempts, retry_after_seconds, lease_seconds, window_start, \
                                window_end, default_time_zone) \
         VALUES ($1, $1::text, 'Winter', 'inbound_call', 'active', $2, $3, 'Half price', \
                 1, 60, 60, 0, 1440, 'UTC')",
    )
    .bind(campaign)
    .bind(starts)
    .bind(starts + chrono::Duration::days(30))
    .execute(&app.db)
    .await
    .expect("campaign");
    sqlx::query("INSERT INTO campaign_members (campaign_id, customer_id) VALUES ($1, $2)")
        .bind(campaign)
        .bind(Uuid::parse_str(customer_id).expect("uuid"))
        .execute(&app.db)
        .await
        .expect("member");
    campaign
}

#[tokio::test]
async fn leasing_a_campaign_member_keeps_the_card_and_finishing_it_does_not() {
    let app = app_without_redis().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let campaign = campaign_with_member(
        &app,
        chrono::Utc::now() - chrono::Duration::hours(1),
        &ada.id,
    )
    .await;
    let card = built(&app, &ada.id).await;
    assert_eq!(card.offers.len(), 1, "the running offer is on the card");
    let (_, generation) = stored(&app, &ada.id).await;

    // An outbound agent leases her, an attempt is recorded: nothing on the card changes.
    sqlx::query(
        "UPDATE campaign_members SET state = 'leased', attempts = attempts + 1 \
         WHERE campaign_id = $1",
    )
    .bind(campaign)
    .execute(&app.db)
    .await
    .expect("leased");
    assert_eq!(
        stored(&app, &ada.id).await,
        (Some(card.encode_to_vec()), generation),
        "a lease leaves the stored card as it was"
    );

    // Done: the offer leaves her card, in the same transaction.
    sqlx::query("UPDATE campaign_members SET state = 'done' WHERE campaign_id = $1")
        .bind(campaign)
        .execute(&app.db)
        .await
        .expect("done");
    let (_, after) = stored(&app, &ada.id).await;
    assert!(
        after > generation,
        "finishing the member made the card stale"
    );
    let (pop, _) = app.pop("+14155550100").await;
    assert!(exact(&pop).offers.is_empty());
}

#[tokio::test]
async fn an_erased_customer_leaves_no_stored_card() {
    let app = app_without_redis().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    built(&app, &ada.id).await;
    app.privacy()
        .erase_customer(v1::EraseCustomerRequest {
            customer_id: ada.id.clone(),
        })
        .await
        .expect("erased");
    let (bytes, _) = stored(&app, &ada.id).await;
    assert!(
        bytes.as_deref().is_none_or(<[u8]>::is_empty),
        "no card bytes right after the erasure"
    );
    // The background builder leaves it blank.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (bytes, _) = stored(&app, &ada.id).await;
    assert!(bytes.as_deref().is_none_or(<[u8]>::is_empty));
    let (pop, _) = app.pop("+14155550100").await;
    assert_eq!(pop.r#match(), v1::MatchKind::None);
}

/// The pop's latest call end (`customer_last_calls`, one row per customer) against every kind of
/// write to `calls`: ended calls inserted at once, a live call that ends, an end moved back, a
/// call moved to another customer and back, and deletes. After each, the table equals the latest
/// `ended_at` among each customer's calls, and the pop's last contact shows it.
#[tokio::test]
async fn the_latest_call_end_follows_every_write_to_calls() {
    let app = app_without_redis().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550130"]).await;
    let bob = app.create_customer("Bob Babbage", &["+14155550131"]).await;
    let (ada_id, bob_id) = (
        Uuid::parse_str(&ada.id).expect("uuid"),
        Uuid::parse_str(&bob.id).expect("uuid"),
    );
    let now = chrono::Utc::now().trunc_subsecs(0);
    let ago = |minutes: i64| now - chrono::Duration::minutes(minutes);
    let last_contact = |number: &'static str| {
        let app = &app;
        async move {
            let (pop, _) = app.pop(number).await;
            exact(&pop).last_contact_at.as_ref().map(|t| t.seconds)
        }
    };

    // Two ended calls and a live one of Ada's, and one of nobody's, in one statement.
    sqlx::query(
        "INSERT INTO calls (gateway_id, call_id, caller_number, state, offered_at, ended_at, customer_id) \
         SELECT 'gw', id, '+14155550130', CASE WHEN e IS NULL THEN 'connected' ELSE 'ended' END, o, e, c \
         FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::uuid[]) AS t(id, o, e, c)",
    )
    .bind(["a-3h", "a-2h", "a-live", "nobody"])
    .bind([ago(185), ago(125), ago(90), ago(10)])
    .bind([Some(ago(180)), Some(ago(120)), None, Some(ago(5))])
    .bind([Some(ada_id), Some(ada_id), Some(ada_id), None])
    .execute(&app.db)
    .await
    .expect("calls");
    assert_eq!(last_calls_against_calls(&app.db).await, (1, 0));
    assert_eq!(
        last_contact("+14155550130").await,
        Some(ago(120).timestamp())
    );
    assert_eq!(last_contact("+14155550131").await, None);

    let set_end = |at: chrono::DateTime<chrono::Utc>| {
        sqlx::query("UPDATE calls SET state = 'ended', ended_at = $1 WHERE call_id = 'a-live'")
            .bind(at)
            .execute(&app.db)
    };
    // The live call ends an hour ago: raised.
    set_end(ago(60)).await.expect("ended");
    assert_eq!(last_calls_against_calls(&app.db).await, (1, 0));
    assert_eq!(
        last_contact("+14155550130").await,
        Some(ago(60).timestamp())
    );
    // Its end is corrected to four hours ago: recounted, the call that ended two hours ago is
    // the latest again.
    set_end(ago(240)).await.expect("corrected");
    assert_eq!(last_calls_against_calls(&app.db).await, (1, 0));
    assert_eq!(
        last_contact("+14155550130").await,
        Some(ago(120).timestamp())
    );

    let move_call = |from: Uuid, to: Uuid| {
        sqlx::query("UPDATE calls SET customer_id = $2 WHERE call_id = 'a-2h' AND customer_id = $1")
            .bind(from)
            .bind(to)
            .execute(&app.db)
    };
    // That call moves to Bob, as a merge moves calls: Ada's latest is three hours ago now.
    move_call(ada_id, bob_id).await.expect("moved");
    assert_eq!(last_calls_against_calls(&app.db).await, (2, 0));
    assert_eq!(
        last_contact("+14155550130").await,
        Some(ago(180).timestamp())
    );
    assert_eq!(
        last_contact("+14155550131").await,
        Some(ago(120).timestamp())
    );
    // And back, as an unmerge moves it: Bob has no ended call left, and no row.
    move_call(bob_id, ada_id).await.expect("moved back");
    assert_eq!(last_calls_against_calls(&app.db).await, (1, 0));
    assert_eq!(
        last_contact("+14155550130").await,
        Some(ago(120).timestamp())
    );
    assert_eq!(last_contact("+14155550131").await, None);

    // Deleting the latest call recounts; deleting the rest leaves no row.
    let delete = |sql: &'static str| sqlx::query(sql).bind(ada_id).execute(&app.db);
    delete("DELETE FROM calls WHERE customer_id = $1 AND call_id = 'a-2h'")
        .await
        .expect("deleted");
    assert_eq!(last_calls_against_calls(&app.db).await, (1, 0));
    assert_eq!(
        last_contact("+14155550130").await,
        Some(ago(180).timestamp())
    );
    delete("DELETE FROM calls WHERE customer_id = $1")
        .await
        .expect("deleted");
    assert_eq!(last_calls_against_calls(&app.db).await, (0, 0));
    assert_eq!(last_contact("+14155550130").await, None);
}
