//! The audit trail: writes with their transaction, reads and denials shortly after.

use std::time::Duration;

use switchboard::auth::Role;
use switchboard::proto::v1;
use tonic::Code;

use crate::helpers::{TestApp, authed, eventually, spawn_app, token};

#[derive(sqlx::FromRow, Debug, PartialEq)]
struct Row {
    actor: String,
    role: String,
    rpc: String,
    customer_id: Option<uuid::Uuid>,
    request_id: String,
    outcome: String,
}

async fn rows(app: &TestApp, outcome: &str) -> Vec<Row> {
    sqlx::query_as("SELECT actor, role, rpc, customer_id, request_id, outcome FROM audit_events WHERE outcome = $1 ORDER BY id")
        .bind(outcome)
        .fetch_all(&app.db)
        .await
        .expect("audit rows")
}

#[tokio::test]
async fn writes_are_audited_in_their_own_transaction() {
    let app = spawn_app().await;
    let mut request = tonic::Request::new(v1::CreateCustomerRequest {
        display_name: "Ada Lovelace".into(),
        external_references: vec![v1::ExternalReference {
            system: "erp".into(),
            external_id: "C-1".into(),
        }],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-77".parse().expect("header"));
    let ada = app
        .customers
        .clone()
        .create_customer(request)
        .await
        .expect("created")
        .into_inner()
        .customer
        .expect("c");
    let written = rows(&app, "written").await;
    assert_eq!(
        written,
        [Row {
            actor: "test-admin".into(),
            role: "admin".into(),
            rpc: "/switchboard.v1.CustomerService/CreateCustomer".into(),
            customer_id: Some(ada.id.parse().expect("uuid")),
            request_id: "req-77".into(),
            outcome: "written".into(),
        }],
        "the write and its audit row committed together"
    );

    // A write that fails leaves neither data nor an audit row.
    let conflict = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Impostor".into(),
            external_references: vec![v1::ExternalReference {
                system: "erp".into(),
                external_id: "C-1".into(),
            }],
            ..Default::default()
        })
        .await
        .expect_err("taken");
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert_eq!(rows(&app, "written").await.len(), 1);
}

#[tokio::test]
async fn reads_of_customer_data_and_denials_are_audited() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let id: uuid::Uuid = ada.id.parse().expect("uuid");
    let mut agent_customers = v1::customer_service_client::CustomerServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-1", None),
    ));
    // A request id with what the batch writer's COPY format must escape.
    let mut read = tonic::Request::new(v1::GetCustomerRequest { id: ada.id.clone() });
    read.metadata_mut()
        .insert("x-request-id", "req\\7\tb".parse().expect("header"));
    agent_customers.get_customer(read).await.expect("read");
    let mut agent_pops = v1::screen_pop_service_client::ScreenPopServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-1", None),
    ));
    agent_pops
        .lookup(v1::LookupRequest {
            caller_number: "+14155550100".into(),
            ..Default::default()
        })
        .await
        .expect("pop");
    let mut gateway_customers = v1::customer_service_client::CustomerServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Gateway, "pbx-1", Some("pbx-1")),
    ));
    let denied = gateway_customers
        .get_customer(v1::GetCustomerRequest { id: ada.id.clone() })
        .await
        .expect_err("gateways read no PII");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let audited = eventually(Duration::from_secs(5), || async {
        rows(&app, "read").await.len() == 2 && rows(&app, "denied").await.len() == 1
    })
    .await;
    assert!(
        audited,
        "reads: {:?}, denials: {:?}",
        rows(&app, "read").await,
        rows(&app, "denied").await
    );
    let read_rows = rows(&app, "read").await;
    assert_eq!(read_rows[0].request_id, "req\\7\tb", "stored exactly");
    let reads: Vec<(String, String, Option<uuid::Uuid>)> = read_rows
        .into_iter()
        .map(|r| (r.actor, r.rpc, r.customer_id))
        .collect();
    assert_eq!(
        reads,
        [
            (
                "a-1".to_owned(),
                "/switchboard.v1.CustomerService/GetCustomer".to_owned(),
                Some(id)
            ),
            (
                "a-1".to_owned(),
                "/switchboard.v1.ScreenPopService/Lookup".to_owned(),
                Some(id)
            ),
        ]
    );
    let denial = &rows(&app, "denied").await[0];
    assert_eq!(
        (denial.actor.as_str(), denial.role.as_str()),
        ("pbx-1", "gateway")
    );

    // ADMIN reads the trail through the API, filtered by customer.
    let events = app
        .audit()
        .list_audit_events(v1::ListAuditEventsRequest {
            customer_id: ada.id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .events;
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["read", "read", "written"], "newest first");
}

/// Audited reads of `customer` written so far (summarized rows count many).
async fn reads_of(app: &TestApp, customer: uuid::Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(read_count), 0)::bigint FROM audit_events \
         WHERE outcome = 'read' AND customer_id = $1",
    )
    .bind(customer)
    .fetch_one(&app.db)
    .await
    .expect("count")
}

async fn denials(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE outcome = 'denied'")
        .fetch_one(&app.db)
        .await
        .expect("count")
}

/// A summarized read row: actor, count, first and last read.
type Summarized = (
    String,
    i32,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// Waits, if need be, so that the next few seconds stay in one calendar minute.
async fn away_from_a_minute_boundary() {
    let second = chrono::Timelike::second(&chrono::Utc::now());
    if second > 45 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await;
    }
}

#[tokio::test]
async fn reads_audited_while_postgres_is_down_wait_up_to_a_bound_and_the_rest_are_counted() {
    let postgres = crate::helpers::PrivatePostgres::start();
    let mut app = crate::helpers::spawn_app_with(crate::helpers::TestOptions {
        postgres_admin_url: Some(postgres.admin_url()),
        acquire_timeout: Duration::from_millis(500),
        audit_max_pending: 20,
        ..Default::default()
    })
    .await;
    let customer = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let id: uuid::Uuid = customer.id.parse().expect("uuid");
    away_from_a_minute_boundary().await;
    let popped = std::sync::atomic::AtomicI64::new(0);
    let cached = eventually(Duration::from_secs(5), || async {
        popped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        app.pop("+14155550100").await.1 == v1::PopSource::Cache
    })
    .await;
    assert!(cached, "the card is cached");
    // Everything audited so far is written: nothing is pending when PostgreSQL goes.
    let settled = eventually(Duration::from_secs(5), || async {
        crate::metrics::value(
            &crate::metrics::scrape(&app).await,
            "switchboard_audit_pending",
        ) == 0.0
    })
    .await;
    assert!(settled, "the audit queue drains");
    // Reads so far: the pops above (their summary's count is only brought up to date when the
    // minute is over, so it is not read from the table here).
    let before = popped.load(std::sync::atomic::Ordering::Relaxed);
    let denials_before = denials(&app).await;

    postgres.stop_immediately();
    // Denials are a row each: 20 wait, 30 are dropped and counted.
    let mut gateway = v1::customer_service_client::CustomerServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Gateway, "pbx-1", Some("pbx-1")),
    ));
    for _ in 0..50 {
        let denied = gateway
            .get_customer(v1::GetCustomerRequest {
                id: customer.id.clone(),
            })
            .await
            .expect_err("gateways read no PII");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    // Reads of one customer by one agent in this minute are counted in the summary already
    // open: they need no room, so even at the bound none is lost.
    for _ in 0..50 {
        let (pop, source) = app.pop("+14155550100").await;
        assert_eq!(source, v1::PopSource::Cache, "hot cards still pop");
        assert!(pop.card.is_some());
    }
    let samples = crate::metrics::scrape(&app).await;
    assert_eq!(
        crate::metrics::value(&samples, "switchboard_audit_pending"),
        20.0,
        "the bound"
    );
    assert_eq!(
        crate::metrics::value(&samples, "switchboard_audit_dropped_total"),
        30.0,
        "50 denials, 20 kept; every read counted"
    );

    postgres.resume();
    let written = eventually(Duration::from_secs(10), || async {
        denials(&app).await == denials_before + 20
    })
    .await;
    assert!(
        written,
        "the 20 denials kept are written once PostgreSQL is back: {}",
        denials(&app).await - denials_before
    );
    // The summary's count is brought up to date when its minute is over, or when the writer
    // stops: stop the server (its audit writer flushes last).
    app.begin_shutdown()
        .await
        .expect("joined")
        .expect("shut down");
    assert_eq!(reads_of(&app, id).await, before + 50, "every read counted");
    assert_eq!(
        denials(&app).await,
        denials_before + 20,
        "and no more denials"
    );
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE outcome = 'read' AND customer_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .expect("rows");
    assert_eq!(rows, 1, "one summarized row for the minute's reads");
}

#[tokio::test]
async fn repeated_reads_in_a_minute_are_one_row_with_a_count_and_first_and_last_times() {
    let mut app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    away_from_a_minute_boundary().await;
    let mut agent = v1::customer_service_client::CustomerServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-1", None),
    ));
    let mut other = v1::customer_service_client::CustomerServiceClient::new(authed(
        app.raw_channel.clone(),
        &token(Role::Agent, "a-2", None),
    ));
    let started = chrono::Utc::now();
    for _ in 0..5 {
        agent
            .get_customer(v1::GetCustomerRequest { id: ada.id.clone() })
            .await
            .expect("read");
    }
    // The row shows at once, through the API too.
    let list = |app: &TestApp| {
        let mut audit = app.audit();
        let id = ada.id.clone();
        async move {
            audit
                .list_audit_events(v1::ListAuditEventsRequest {
                    customer_id: id,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .events
        }
    };
    let shown = eventually(Duration::from_secs(5), || async {
        list(&app)
            .await
            .iter()
            .any(|e| e.outcome == "read" && e.actor == "a-1")
    })
    .await;
    assert!(shown, "{:?}", rows(&app, "read").await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        agent
            .get_customer(v1::GetCustomerRequest { id: ada.id.clone() })
            .await
            .expect("read");
    }
    other
        .get_customer(v1::GetCustomerRequest { id: ada.id.clone() })
        .await
        .expect("read");
    let shown = eventually(Duration::from_secs(5), || async {
        list(&app).await.iter().any(|e| e.actor == "a-2")
    })
    .await;
    assert!(shown, "a-2's read is a row of its own");
    let events = list(&app).await;
    let a2 = events.iter().find(|e| e.actor == "a-2").expect("a-2");
    assert_eq!((a2.read_count, a2.last_at), (1, None), "a single read");
    assert_eq!(
        events.iter().filter(|e| e.outcome == "read").count(),
        2,
        "a-1's eight reads are one row"
    );
    assert_eq!(
        events.iter().filter(|e| e.outcome == "written").count(),
        1,
        "the write that created her stays a row of its own"
    );

    // Counts are made exact once the minute is over, or when the writer stops: stop the server
    // (its audit writer flushes last) and read the rows.
    app.begin_shutdown()
        .await
        .expect("joined")
        .expect("shut down");
    let summarized: Vec<Summarized> = sqlx::query_as(
        "SELECT actor, read_count, at, last_at FROM audit_events \
             WHERE outcome = 'read' ORDER BY actor",
    )
    .fetch_all(&app.db)
    .await
    .expect("rows");
    assert_eq!(
        summarized
            .iter()
            .map(|(actor, n, _, _)| (actor.as_str(), *n))
            .collect::<Vec<_>>(),
        [("a-1", 8), ("a-2", 1)]
    );
    let (_, _, first, last) = &summarized[0];
    assert!(
        *first >= started - chrono::Duration::milliseconds(1),
        "the first read's time: {first}"
    );
    assert!(
        last.is_some_and(|last| last > *first),
        "the last read came after the first"
    );
}

#[tokio::test]
async fn list_filters_refuse_timestamps_outside_the_protobuf_range() {
    let app = crate::helpers::spawn_app().await;
    let customer = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let year_zero = Some(prost_types::Timestamp {
        seconds: -62_135_596_801,
        nanos: 0,
    });
    let year_10000 = Some(prost_types::Timestamp {
        seconds: 253_402_300_800,
        nanos: 0,
    });
    let interactions = app
        .interactions()
        .list_interactions(v1::ListInteractionsRequest {
            customer_id: customer.id.clone(),
            started_after: year_zero,
            started_before: year_10000,
            ..Default::default()
        })
        .await
        .expect_err("out of range");
    assert_eq!(
        crate::helpers::violated_fields(&interactions),
        ["started_after", "started_before"]
    );
    let audit = app
        .audit()
        .list_audit_events(v1::ListAuditEventsRequest {
            since: year_10000,
            until: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 1_000_000_000,
            }),
            ..Default::default()
        })
        .await
        .expect_err("out of range");
    assert_eq!(crate::helpers::violated_fields(&audit), ["since", "until"]);
}

/// The audit list pages with the same tokens as every list: a page token is tied to its filter, so
/// one from another filter is refused instead of silently starting the other list mid-way.
#[tokio::test]
async fn audit_pages_follow_on_and_a_token_from_another_filter_is_refused() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Pages", &["+14155550161"]).await;
    for n in 0..3 {
        app.rename(
            &app.customers
                .clone()
                .get_customer(v1::GetCustomerRequest { id: ada.id.clone() })
                .await
                .expect("get")
                .into_inner()
                .customer
                .expect("customer"),
            &format!("Ada Pages {n}"),
        )
        .await;
    }
    let list = |customer_id: String, page_token: String| {
        let mut audit = app.audit();
        async move {
            audit
                .list_audit_events(v1::ListAuditEventsRequest {
                    customer_id,
                    page_size: 2,
                    page_token,
                    ..Default::default()
                })
                .await
        }
    };
    let first = list(ada.id.clone(), String::new())
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.events.len(), 2);
    assert!(!first.next_page_token.is_empty(), "more than one page");
    let second = list(ada.id.clone(), first.next_page_token.clone())
        .await
        .expect("second page")
        .into_inner();
    assert!(!second.events.is_empty());
    let other = list(String::new(), first.next_page_token)
        .await
        .expect_err("a token from another filter");
    assert_eq!(other.code(), Code::InvalidArgument);
    assert_eq!(crate::helpers::violated_fields(&other), ["page_token"]);
}
