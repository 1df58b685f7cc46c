//! SegmentationService: RFM scores and named segments on hand-built histories with known answers.

use chrono::{Duration, Utc};
use switchboard::proto::v1;
use switchboard::proto::v1::segmentation_service_client::SegmentationServiceClient;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app, violated_fields};

fn at(days_ago: i64) -> Option<prost_types::Timestamp> {
    Some(switchboard::proto_time::to_timestamp(
        Utc::now() - Duration::days(days_ago),
    ))
}

async fn order(app: &TestApp, customer: &v1::Customer, id: &str, cents: i64, days_ago: i64) {
    app.activity()
        .record_order(v1::RecordOrderRequest {
            system: "shop".into(),
            order_id: id.into(),
            customer: Some(v1::CustomerRef {
                r#ref: Some(v1::customer_ref::Ref::CustomerId(customer.id.clone())),
            }),
            amount: Some(v1::Money {
                currency: "USD".into(),
                amount_minor: cents,
            }),
            status: v1::OrderStatus::Paid.into(),
            ordered_at: at(days_ago),
        })
        .await
        .expect("order recorded");
}

async fn contact(app: &TestApp, customer: &v1::Customer, request_id: &str, days_ago: i64) {
    app.interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: request_id.into(),
            customer_id: customer.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            started_at: at(days_ago),
            ..Default::default()
        })
        .await
        .expect("interaction logged");
}

async fn segment(app: &TestApp) -> v1::SegmentCustomersResponse {
    SegmentationServiceClient::new(app.channel.clone())
        .segment_customers(v1::SegmentCustomersRequest::default())
        .await
        .expect("segmented")
        .into_inner()
}

async fn segment_of(app: &TestApp, customer: &v1::Customer) -> String {
    app.customers
        .clone()
        .get_customer(v1::GetCustomerRequest {
            id: customer.id.clone(),
        })
        .await
        .expect("customer")
        .into_inner()
        .customer
        .expect("customer")
        .segment
}

#[tokio::test]
async fn rfm_segments_follow_the_grid_are_stored_and_a_rerun_changes_nothing() {
    let app = spawn_app().await;
    // Six live customers, so quintile scores are 1, 2, 3, 4, 5, 5 by rank (ties share one).
    let idle = app.create_customer("Idle", &[]).await;
    let fan = app.create_customer("Fan", &["(415) 555-0101"]).await;
    let faded = app.create_customer("Faded", &[]).await;
    let newcomer = app.create_customer("Newcomer", &[]).await;
    let caller = app.create_customer("Caller", &[]).await;
    let spender = app.create_customer("Spender", &[]).await;
    for (i, days) in [1, 2, 3, 4, 5].into_iter().enumerate() {
        order(&app, &fan, &format!("fan-{i}"), 10_000, days).await;
    }
    contact(&app, &faded, "faded-1", 300).await;
    order(&app, &newcomer, "new-1", 10_000, 2).await;
    for i in 0..3 {
        contact(&app, &caller, &format!("caller-{i}"), 200).await;
    }
    order(&app, &spender, "big-1", 50_000, 100).await;
    order(&app, &spender, "big-2", 50_000, 101).await;
    // An order outside the 365-day window counts for nothing.
    order(&app, &idle, "ancient", 999_900, 400).await;
    // The fan's pop is cached before the run, so the run must refresh it.
    let (before, _) = app.pop("(415) 555-0101").await;
    assert_eq!(before.card.expect("card").segment, "");

    let first = segment(&app).await;
    assert_eq!(first.customers_scored, 6);
    assert_eq!(first.customers_changed, 6);
    // recency / frequency / monetary scores, worked out by hand in docs/SEGMENTS.md:
    for (customer, expected) in [
        (&idle, "no_activity"),             // nothing in the window
        (&fan, "champions"),                // r5 f5 m4
        (&faded, "hibernating"),            // r2 f2 m1
        (&newcomer, "potential_loyalists"), // r5 f2 m4
        (&caller, "loyal"),                 // r3 f5 m1
        (&spender, "champions"),            // r4 f4 m5
    ] {
        assert_eq!(
            segment_of(&app, customer).await,
            expected,
            "{}",
            customer.display_name
        );
    }
    let counts: Vec<(String, i64)> = first
        .segments
        .iter()
        .map(|s| (s.segment.clone(), s.customers))
        .collect();
    assert_eq!(counts[0], ("champions".to_owned(), 2));
    assert_eq!(counts.iter().map(|c| c.1).sum::<i64>(), 6);
    let (after, _) = app.pop("(415) 555-0101").await;
    assert_eq!(
        after.card.expect("card").segment,
        "champions",
        "the pop shows it"
    );

    let again = segment(&app).await;
    assert_eq!(again.customers_changed, 0, "idempotent");
    assert_eq!(again.segments, first.segments);

    // The faded customer comes back with three recent orders: only changes are written.
    for i in 0..3 {
        order(&app, &faded, &format!("back-{i}"), 5_000, i).await;
    }
    let third = segment(&app).await;
    assert!(third.customers_changed >= 1);
    assert_ne!(segment_of(&app, &faded).await, "hibernating");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM feed_events WHERE type = 'customer.updated' AND data->>'change' = 'segment'",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(
        events,
        6 + third.customers_changed,
        "one feed event per change"
    );
}

#[tokio::test]
async fn bad_windows_and_currencies_are_refused() {
    let app = spawn_app().await;
    let status = SegmentationServiceClient::new(app.channel.clone())
        .segment_customers(v1::SegmentCustomersRequest {
            window_days: -5,
            currency: "usd".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["window_days", "currency"]);
}
