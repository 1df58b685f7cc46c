//! CustomerService.MergeCustomers / UnmergeCustomer / FindDuplicateCustomers.

use switchboard::proto::v1;
use switchboard::proto::v1::campaign_service_client::CampaignServiceClient;
use switchboard::proto::v1::feedback_service_client::FeedbackServiceClient;
use tonic::Code;
use uuid::Uuid;

use crate::calls::{CallScript, report};
use crate::helpers::{TestApp, email, phone, spawn_app, violated_fields};

/// Rows each customer owns, table by table (the order of `merge_coverage().0`).
async fn owned(app: &TestApp, id: &str) -> Vec<i64> {
    let row: (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM contact_points WHERE customer_id = $1), \
                (SELECT count(*) FROM external_references WHERE customer_id = $1), \
                (SELECT count(*) FROM interactions WHERE customer_id = $1), \
                (SELECT count(*) FROM cases WHERE customer_id = $1), \
                (SELECT count(*) FROM orders WHERE customer_id = $1), \
                (SELECT count(*) FROM service_events WHERE customer_id = $1), \
                (SELECT count(*) FROM calls WHERE customer_id = $1), \
                (SELECT count(*) FROM feedback WHERE customer_id = $1), \
                (SELECT count(*) FROM campaign_members WHERE customer_id = $1), \
                (SELECT count(*) FROM campaign_leases WHERE customer_id = $1), \
                (SELECT count(*) FROM campaign_attempts WHERE customer_id = $1)",
    )
    .bind(Uuid::parse_str(id).expect("uuid"))
    .fetch_one(&app.db)
    .await
    .expect("counts");
    vec![
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10,
    ]
}

async fn get(app: &TestApp, id: &str) -> v1::Customer {
    app.customers
        .clone()
        .get_customer(v1::GetCustomerRequest { id: id.into() })
        .await
        .expect("get")
        .into_inner()
        .customer
        .expect("customer")
}

async fn merge(
    app: &TestApp,
    survivor: &str,
    duplicate: &str,
    dry_run: bool,
) -> Result<v1::MergeCustomersResponse, tonic::Status> {
    app.customers
        .clone()
        .merge_customers(v1::MergeCustomersRequest {
            survivor_id: survivor.into(),
            duplicate_id: duplicate.into(),
            dry_run,
        })
        .await
        .map(|r| r.into_inner())
}

fn numbers(customer: &v1::Customer) -> Vec<String> {
    let mut values: Vec<String> = customer
        .contact_points
        .iter()
        .map(|c| c.value.clone())
        .collect();
    values.sort();
    values
}

/// A duplicate with something in every table a merge moves, and a survivor sharing its first
/// phone and one campaign.
async fn pair(app: &TestApp) -> (v1::Customer, v1::Customer) {
    let survivor = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Ada Lovelace".into(),
            contact_points: vec![phone("415-555-0142"), email("ada@example.com")],
            consent: Some(v1::Consent {
                marketing: true,
                do_not_call: false,
            }),
            ..Default::default()
        })
        .await
        .expect("survivor")
        .into_inner()
        .customer
        .expect("customer");
    let duplicate = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "A. Lovelace".into(),
            company: "Analytical Engines".into(),
            contact_points: vec![
                phone("(415) 555-0142"),
                phone("(415) 555-0100"),
                email("countess@example.com"),
            ],
            external_references: vec![v1::ExternalReference {
                system: "erp".into(),
                external_id: "C-1815".into(),
            }],
            consent: Some(v1::Consent {
                marketing: true,
                do_not_call: true,
            }),
            ..Default::default()
        })
        .await
        .expect("duplicate")
        .into_inner()
        .customer
        .expect("customer");
    let id = duplicate.id.clone();
    app.interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: "i-1".into(),
            customer_id: id.clone(),
            channel: v1::Channel::Email.into(),
            direction: v1::Direction::Inbound.into(),
            outcome: "asked about invoices".into(),
            started_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
            ..Default::default()
        })
        .await
        .expect("interaction");
    app.activity()
        .record_order(v1::RecordOrderRequest {
            system: "shop".into(),
            order_id: "o-1".into(),
            customer: Some(v1::CustomerRef {
                r#ref: Some(v1::customer_ref::Ref::CustomerId(id.clone())),
            }),
            amount: Some(v1::Money {
                currency: "USD".into(),
                amount_minor: 4_200,
            }),
            status: v1::OrderStatus::Paid.into(),
            ordered_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
        })
        .await
        .expect("order");
    app.activity()
        .record_service_event(v1::RecordServiceEventRequest {
            system: "field".into(),
            event_id: "s-1".into(),
            customer: Some(v1::CustomerRef {
                r#ref: Some(v1::customer_ref::Ref::CustomerId(id.clone())),
            }),
            kind: v1::ServiceEventKind::Installation.into(),
            status: "done".into(),
            description: "meter installed".into(),
            occurred_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
        })
        .await
        .expect("service event");
    FeedbackServiceClient::new(app.channel.clone())
        .submit_feedback(v1::SubmitFeedbackRequest {
            request_id: "f-1".into(),
            source: v1::FeedbackSource::Customer.into(),
            score: Some(v1::Score {
                kind: Some(v1::score::Kind::Csat(1)),
            }),
            category: "billing".into(),
            customer_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("feedback (opens a case)");
    // The caller of this call is the duplicate's second number.
    for event in CallScript::new("merge-1")
        .event(v1::CallEventType::Offered, "")
        .events
    {
        report(app, event).await;
    }
    let mut campaigns = CampaignServiceClient::new(app.channel.clone());
    for (name, members) in [
        ("Both", vec![survivor.id.clone(), id.clone()]),
        ("Duplicate only", vec![id.clone()]),
    ] {
        let campaign = campaigns
            .create_campaign(v1::CreateCampaignRequest {
                request_id: name.into(),
                campaign: Some(v1::Campaign {
                    name: name.into(),
                    channel: v1::CampaignChannel::OutboundCall.into(),
                    starts_at: Some(prost_types::Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 0,
                    }),
                    ends_at: Some(prost_types::Timestamp {
                        seconds: 1_900_000_000,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .expect("campaign")
            .into_inner()
            .campaign
            .expect("campaign");
        campaigns
            .add_campaign_members(v1::AddCampaignMembersRequest {
                campaign_id: campaign.id,
                members: Some(v1::add_campaign_members_request::Members::CustomerIds(
                    v1::CustomerIds { ids: members },
                )),
            })
            .await
            .expect("members");
    }
    (survivor, duplicate)
}

#[tokio::test]
async fn a_merge_is_previewed_applied_and_undone_exactly() {
    let app = spawn_app().await;
    let (survivor, duplicate) = pair(&app).await;
    let s_before = owned(&app, &survivor.id).await;
    let d_before = owned(&app, &duplicate.id).await;
    assert!(
        d_before[..9].iter().all(|n| *n > 0),
        "the duplicate owns rows everywhere: {d_before:?}"
    );

    let candidates = app
        .customers
        .clone()
        .find_duplicate_customers(v1::FindDuplicateCustomersRequest {
            customer_id: survivor.id.clone(),
            limit: 0,
        })
        .await
        .expect("candidates")
        .into_inner()
        .candidates;
    assert_eq!(candidates.len(), 1);
    assert_eq!(
        candidates[0].customer.as_ref().expect("customer").id,
        duplicate.id
    );
    assert_eq!(
        candidates[0].reasons,
        vec!["same phone".to_owned(), "similar name".to_owned()]
    );

    let (pop, _) = app.pop("(415) 555-0100").await;
    assert_eq!(pop.card.expect("card").customer_id, duplicate.id);

    // The preview shows the merged survivor and writes nothing.
    let preview = merge(&app, &survivor.id, &duplicate.id, true)
        .await
        .expect("dry run");
    assert!(preview.merge_id.is_empty());
    let merged_view = preview.survivor.expect("survivor");
    assert_eq!(
        numbers(&merged_view),
        vec![
            "+14155550100",
            "+14155550142",
            "ada@example.com",
            "countess@example.com"
        ]
    );
    assert_eq!(merged_view.company, "Analytical Engines");
    assert!(merged_view.consent.as_ref().expect("consent").do_not_call);
    assert_eq!(preview.dropped_contact_points, 1);
    assert_eq!(preview.dropped_memberships, 1);
    assert_eq!(
        get(&app, &duplicate.id).await.id,
        duplicate.id,
        "nothing written"
    );
    assert_eq!(owned(&app, &survivor.id).await, s_before);
    assert_eq!(owned(&app, &duplicate.id).await, d_before);

    let merged = merge(&app, &survivor.id, &duplicate.id, false)
        .await
        .expect("merged");
    assert!(!merged.merge_id.is_empty());
    let as_merged = merged.survivor.expect("survivor");
    assert_eq!(
        numbers(&as_merged),
        numbers(&merged_view),
        "the preview was exact"
    );
    assert_eq!(merged.moved, preview.moved);
    assert_eq!(
        owned(&app, &duplicate.id).await,
        vec![0; 11],
        "the duplicate owns nothing"
    );
    let redirected = get(&app, &duplicate.id).await;
    assert_eq!(redirected.id, survivor.id, "the tombstone redirects");
    let (pop, _) = app.pop("(415) 555-0100").await;
    assert_eq!(
        pop.card.expect("card").customer_id,
        survivor.id,
        "the cached pop was invalidated"
    );
    let again = merge(&app, &survivor.id, &duplicate.id, false)
        .await
        .expect_err("tombstone");
    assert_eq!(again.code(), Code::NotFound);

    let undone = app
        .customers
        .clone()
        .unmerge_customer(v1::UnmergeCustomerRequest {
            customer_id: duplicate.id.clone(),
        })
        .await
        .expect("unmerged")
        .into_inner();
    let restored = undone.restored.expect("restored");
    assert_eq!(numbers(&restored), numbers(&duplicate));
    assert!(restored.consent.expect("consent").do_not_call);
    let kept = undone.survivor.expect("survivor");
    assert_eq!(numbers(&kept), numbers(&survivor));
    assert_eq!(kept.company, "");
    assert!(!kept.consent.expect("consent").do_not_call);
    assert_eq!(owned(&app, &survivor.id).await, s_before);
    assert_eq!(owned(&app, &duplicate.id).await, d_before);
    assert_eq!(get(&app, &duplicate.id).await.id, duplicate.id);
    let (pop, _) = app.pop("(415) 555-0100").await;
    assert_eq!(pop.card.expect("card").customer_id, duplicate.id);
    let value: i64 = sqlx::query_scalar(
        "SELECT lifetime_minor FROM customer_values WHERE customer_id = $1::uuid",
    )
    .bind(&duplicate.id)
    .fetch_one(&app.db)
    .await
    .expect("value back with the order");
    assert_eq!(value, 4_200);

    let twice = app
        .customers
        .clone()
        .unmerge_customer(v1::UnmergeCustomerRequest {
            customer_id: duplicate.id.clone(),
        })
        .await
        .expect_err("nothing to undo");
    assert_eq!(twice.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn merges_refuse_what_cannot_be_merged() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada", &["415-555-0150"]).await;
    let itself = merge(&app, &ada.id, &ada.id, false)
        .await
        .expect_err("same");
    assert_eq!(itself.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&itself), vec!["duplicate_id".to_owned()]);
    let unknown = merge(&app, &ada.id, &Uuid::new_v4().to_string(), true)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = merge(&app, "x", "", false).await.expect_err("bad ids");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn every_customer_table_is_merged_or_left_on_purpose() {
    let app = spawn_app().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND column_name = 'customer_id' \
           AND NOT (SELECT relispartition FROM pg_class WHERE oid = quote_ident(table_name)::regclass) \
         ORDER BY 1",
    )
    .fetch_all(&app.db)
    .await
    .expect("schema");
    let moved: Vec<&str> = switchboard::app::wiring::customer_rows()
        .iter()
        .map(|rows| rows.table)
        .collect();
    let left = switchboard::customers::NOT_MOVED;
    for table in &tables {
        assert!(
            moved.contains(&table.as_str()) || left.contains(&table.as_str()),
            "{table} holds customer rows but a merge neither moves nor deliberately leaves them"
        );
    }
    assert!(tables.len() >= moved.len());
}
