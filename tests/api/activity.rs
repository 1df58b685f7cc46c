//! ActivityService and the full screen-pop card: orders, lifetime value, recent contacts.

use switchboard::proto::v1;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app, violated_fields};

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_800_000_000 + seconds,
        nanos: 0,
    })
}

fn by_erp(id: &str) -> Option<v1::CustomerRef> {
    Some(v1::CustomerRef {
        r#ref: Some(v1::customer_ref::Ref::ExternalReference(
            v1::ExternalReference {
                system: "erp".into(),
                external_id: id.into(),
            },
        )),
    })
}

fn order(
    order_id: &str,
    customer: Option<v1::CustomerRef>,
    cents: i64,
    status: v1::OrderStatus,
    t: i64,
) -> v1::RecordOrderRequest {
    v1::RecordOrderRequest {
        system: "shop".into(),
        order_id: order_id.into(),
        customer,
        amount: Some(v1::Money {
            currency: "USD".into(),
            amount_minor: cents,
        }),
        status: status.into(),
        ordered_at: at(t),
    }
}

async fn record(app: &TestApp, request: v1::RecordOrderRequest) -> v1::RecordOrderResponse {
    app.activity()
        .record_order(request)
        .await
        .expect("order")
        .into_inner()
}

async fn card(app: &TestApp, number: &str) -> (v1::CustomerCard, v1::PopSource) {
    let (pop, source) = app.pop(number).await;
    (pop.card.expect("an exact match"), source)
}

async fn customer_with_erp(app: &TestApp, name: &str, phone: &str, erp: &str) -> v1::Customer {
    app.customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: name.into(),
            contact_points: vec![crate::helpers::phone(phone)],
            external_references: vec![v1::ExternalReference {
                system: "erp".into(),
                external_id: erp.into(),
            }],
            ..Default::default()
        })
        .await
        .expect("customer")
        .into_inner()
        .customer
        .expect("customer")
}

#[tokio::test]
async fn orders_are_idempotent_and_keep_the_lifetime_value_current() {
    let app = spawn_app().await;
    let ada = customer_with_erp(&app, "Ada Lovelace", "+14155550100", "C-1").await;
    let first = record(
        &app,
        order("o-1", by_erp("C-1"), 12_50, v1::OrderStatus::Paid, 0),
    )
    .await;
    assert_eq!(first.order.expect("order").customer_id, ada.id);
    record(
        &app,
        order("o-2", by_erp("C-1"), 30_00, v1::OrderStatus::Placed, 10),
    )
    .await;
    let resent = record(
        &app,
        order("o-2", by_erp("C-1"), 30_00, v1::OrderStatus::Placed, 10),
    )
    .await;
    assert_eq!(
        resent.lifetime_value,
        [v1::Money {
            currency: "USD".into(),
            amount_minor: 42_50
        }]
    );
    let cancelled = record(
        &app,
        order("o-2", by_erp("C-1"), 30_00, v1::OrderStatus::Cancelled, 10),
    )
    .await;
    assert_eq!(
        cancelled.lifetime_value,
        [v1::Money {
            currency: "USD".into(),
            amount_minor: 12_50
        }]
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(rows, 2, "a resend updates, never duplicates");

    let unknown = app
        .activity()
        .record_order(order("o-3", by_erp("C-404"), 1, v1::OrderStatus::Paid, 0))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = app
        .activity()
        .record_order(v1::RecordOrderRequest {
            amount: Some(v1::Money {
                currency: "dollars".into(),
                amount_minor: -5,
            }),
            ..order("", None, 0, v1::OrderStatus::Unspecified, 0)
        })
        .await
        .expect_err("invalid");
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(
        fields,
        [
            "amount.amount_minor",
            "amount.currency",
            "customer",
            "order_id",
            "status"
        ]
    );
}

#[tokio::test]
async fn the_card_shows_orders_value_and_recent_contacts_fresh_after_each_write() {
    let app = spawn_app().await;
    let ada = customer_with_erp(&app, "Ada Lovelace", "+14155550100", "C-1").await;
    let (blank, _) = card(&app, "+14155550100").await;
    assert!(
        blank.recent_orders.is_empty()
            && blank.recent_interactions.is_empty()
            && !blank.repeat_contact
    );
    assert_eq!(card(&app, "+14155550100").await.1, v1::PopSource::Cache);

    // An order from the ERP shows at once.
    record(
        &app,
        order("o-1", by_erp("C-1"), 99_00, v1::OrderStatus::Shipped, 0),
    )
    .await;
    let (after_order, source) = card(&app, "+14155550100").await;
    assert_eq!(
        source,
        v1::PopSource::Database,
        "the order invalidated the cached card"
    );
    assert_eq!(after_order.recent_orders[0].order_id, "o-1");
    assert_eq!(
        after_order.lifetime_value,
        [v1::Money {
            currency: "USD".into(),
            amount_minor: 99_00
        }]
    );

    // A contact logged today makes the next call a repeat contact.
    app.interactions()
        .upsert_disposition(v1::UpsertDispositionRequest {
            disposition: Some(v1::Disposition {
                code: "resolved".into(),
                label: "Resolved".into(),
                resolves: true,
                active: true,
            }),
        })
        .await
        .expect("disposition");
    let now = switchboard::proto_time::to_timestamp(chrono::Utc::now());
    let logged = app
        .interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: "r-1".into(),
            customer_id: ada.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "a-17".into(),
            notes: "secret note 4111111111111111".into(),
            started_at: Some(now),
            ..Default::default()
        })
        .await
        .expect("logged")
        .into_inner()
        .interaction
        .expect("interaction");
    let (after_contact, source) = card(&app, "+14155550100").await;
    assert_eq!(source, v1::PopSource::Database);
    assert!(after_contact.repeat_contact);
    assert_eq!(after_contact.recent_interactions[0].id, logged.id);
    assert_eq!(after_contact.recent_interactions[0].disposition_code, "");

    // Wrap-up puts the disposition on the card.
    app.interactions()
        .complete_wrap_up(v1::CompleteWrapUpRequest {
            interaction_id: logged.id.clone(),
            disposition_code: "resolved".into(),
            notes: String::new(),
        })
        .await
        .expect("wrapped up");
    let (after_wrap, _) = card(&app, "+14155550100").await;
    let shown = &after_wrap.recent_interactions[0];
    assert_eq!(
        (shown.disposition_label.as_str(), shown.resolved),
        ("Resolved", true)
    );
    let encoded = prost::Message::encode_to_vec(&after_wrap);
    assert!(
        !String::from_utf8_lossy(&encoded).contains("secret note"),
        "notes never reach the card or Redis"
    );
}

#[tokio::test]
async fn service_events_are_idempotent_and_masked() {
    let app = spawn_app().await;
    customer_with_erp(&app, "Ada Lovelace", "+14155550100", "C-1").await;
    let event = v1::RecordServiceEventRequest {
        system: "field".into(),
        event_id: "inst-1".into(),
        customer: by_erp("C-1"),
        kind: v1::ServiceEventKind::Installation.into(),
        status: "scheduled".into(),
        description: "tech paid with 5555 5555 5555 4444".into(),
        occurred_at: at(0),
    };
    app.activity()
        .record_service_event(event.clone())
        .await
        .expect("first");
    let updated = app
        .activity()
        .record_service_event(v1::RecordServiceEventRequest {
            status: "done".into(),
            ..event
        })
        .await
        .expect("resend")
        .into_inner()
        .event
        .expect("event");
    assert_eq!(updated.status, "done");
    assert_eq!(updated.description, "tech paid with **** **** **** 4444");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM service_events")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(rows, 1);
}
