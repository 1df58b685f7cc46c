//! PrivacyService and `switchboard retention run`: export everything, erase without a trace,
//! age free text out.

use std::collections::BTreeMap;
use std::process::Command;

use prost_types::{FieldMask, Timestamp};
use switchboard::proto::v1;
use uuid::Uuid;

use crate::helpers::{TestApp, email, phone, postgres_tool, redis_url, spawn_app, violated_fields};

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

fn days_ago(days: i64) -> Option<Timestamp> {
    timestamp(chrono::Utc::now() - chrono::Duration::days(days))
}

/// A random, valid US number that appears nowhere else.
fn unique_number() -> String {
    let n = Uuid::new_v4().as_u128();
    format!("+1212{}{:06}", 2 + n % 8, (n >> 8) % 1_000_000)
}

/// Marker strings planted in every kind of personal data, each one unique to this test.
struct Markers {
    tag: String,
    number: String,
}

impl Markers {
    fn new() -> Self {
        Self {
            tag: Uuid::new_v4().simple().to_string(),
            number: unique_number(),
        }
    }

    fn text(&self, what: &str) -> String {
        format!("{what}-{}", self.tag)
    }

    /// Every marker as it could appear in storage: the tag, and the number with or without `+`.
    fn needles(&self) -> Vec<String> {
        vec![
            self.tag.clone(),
            self.number.clone(),
            self.number.trim_start_matches("+1").to_owned(),
        ]
    }
}

/// A customer with every kind of data Switchboard holds, each carrying a marker: profile, phone,
/// email, external reference, an interaction with notes and outcome, a case with a changed
/// subject and a comment, an order, a service event, and a call with attached data that popped
/// (and pinned) the card, and negative feedback (which opened a second case).
async fn customer_with_everything(app: &TestApp, m: &Markers) -> v1::Customer {
    let customer = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: m.text("name"),
            company: m.text("company"),
            contact_points: vec![
                phone(&m.number),
                email(&format!("{}@example.com", m.text("email"))),
            ],
            external_references: vec![v1::ExternalReference {
                system: "erp".into(),
                external_id: m.text("ext"),
            }],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner()
        .customer
        .expect("customer");
    let id = customer.id.clone();
    app.interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: "i-1".into(),
            customer_id: id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "a-17".into(),
            outcome: m.text("outcome"),
            notes: m.text("notes"),
            started_at: days_ago(1),
            ..Default::default()
        })
        .await
        .expect("logged");
    let case = app
        .cases()
        .open_case(v1::OpenCaseRequest {
            request_id: "c-1".into(),
            customer_id: id.clone(),
            subject: m.text("subject"),
            description: m.text("description"),
            priority: v1::CasePriority::Normal.into(),
            actor: "a-17".into(),
        })
        .await
        .expect("opened")
        .into_inner()
        .case
        .expect("case");
    app.cases()
        .update_case(v1::UpdateCaseRequest {
            case: Some(v1::Case {
                id: case.id.clone(),
                version: case.version,
                subject: m.text("subject2"),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["subject".into()],
            }),
            actor: "a-17".into(),
        })
        .await
        .expect("updated");
    app.cases()
        .add_case_comment(v1::AddCaseCommentRequest {
            case_id: case.id,
            text: m.text("comment"),
            actor: "a-17".into(),
        })
        .await
        .expect("commented");
    // Negative: it also opens a case whose description repeats the text.
    switchboard::proto::v1::feedback_service_client::FeedbackServiceClient::new(
        app.channel.clone(),
    )
    .submit_feedback(v1::SubmitFeedbackRequest {
        request_id: "f-1".into(),
        source: v1::FeedbackSource::Customer.into(),
        sentiment: v1::Sentiment::Negative.into(),
        category: "billing".into(),
        text: m.text("feedback"),
        customer_id: id.clone(),
        ..Default::default()
    })
    .await
    .expect("feedback");
    let by_id = Some(v1::CustomerRef {
        r#ref: Some(v1::customer_ref::Ref::CustomerId(id.clone())),
    });
    app.activity()
        .record_order(v1::RecordOrderRequest {
            system: "shop".into(),
            order_id: "o-1".into(),
            customer: by_id.clone(),
            amount: Some(v1::Money {
                currency: "USD".into(),
                amount_minor: 4_200,
            }),
            status: v1::OrderStatus::Paid.into(),
            ordered_at: days_ago(2),
        })
        .await
        .expect("order");
    app.activity()
        .record_service_event(v1::RecordServiceEventRequest {
            system: "field".into(),
            event_id: "s-1".into(),
            customer: by_id,
            kind: v1::ServiceEventKind::Installation.into(),
            status: "done".into(),
            description: m.text("service"),
            occurred_at: days_ago(3),
        })
        .await
        .expect("service event");
    let offered = v1::CallEvent {
        gateway_id: "pbx-1".into(),
        event_id: "e-1".into(),
        call_id: "call-1".into(),
        r#type: v1::CallEventType::Offered.into(),
        occurred_at: days_ago(0),
        caller_number: m.number.clone(),
        dialed_number: "+18005550199".into(),
        queue: "billing".into(),
        attached_data: BTreeMap::from([("account".to_owned(), m.text("attached"))])
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let ack = app
        .calls
        .clone()
        .report_call_event(v1::ReportCallEventRequest {
            event: Some(offered),
        })
        .await
        .expect("reported")
        .into_inner()
        .ack
        .expect("ack");
    assert_eq!(ack.outcome(), v1::AckOutcome::Accepted);
    // A cached pop and a pin from an agent's lookup, on top of the gateway's pin.
    app.pop_for_call(&m.number, "agent-side-call").await;
    app.pop(&m.number).await;
    customer
}

async fn export(app: &TestApp, customer_id: &str) -> v1::ExportCustomerDataResponse {
    app.privacy()
        .export_customer_data(v1::ExportCustomerDataRequest {
            customer_id: customer_id.into(),
        })
        .await
        .expect("exported")
        .into_inner()
}

async fn erase(app: &TestApp, customer_id: &str) -> v1::EraseCustomerResponse {
    app.privacy()
        .erase_customer(v1::EraseCustomerRequest {
            customer_id: customer_id.into(),
        })
        .await
        .expect("erased")
        .into_inner()
}

/// A plain-SQL dump of the whole test database.
fn pg_dump(app: &TestApp) -> String {
    let output = postgres_tool("pg_dump")
        .arg("--dbname")
        .arg(&app.database_url)
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 dump")
}

/// Every key under the test's prefix, each followed by its value(s), as lossy text.
async fn redis_contents(app: &TestApp) -> String {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects");
    // SCAN, not KEYS: a development Redis shared with benchmarks can hold millions of keys.
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", app.redis_prefix))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut contents = String::new();
    for key in keys {
        contents.push_str(&key);
        contents.push('\n');
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("type");
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("get"),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("hgetall"),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("smembers"),
            "none" => Vec::new(),
            other => panic!("unexpected Redis type {other} at {key}"),
        };
        for value in values {
            contents.push_str(&String::from_utf8_lossy(&value));
            contents.push('\n');
        }
    }
    contents
}

fn found<'a>(haystack: &str, needles: &'a [String]) -> Vec<&'a str> {
    needles
        .iter()
        .filter(|n| haystack.contains(n.as_str()))
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn an_export_holds_everything_about_the_customer_including_who_looked() {
    let app = spawn_app().await;
    let m = Markers::new();
    let customer = customer_with_everything(&app, &m).await;
    app.customers
        .clone()
        .get_customer(v1::GetCustomerRequest {
            id: customer.id.clone(),
        })
        .await
        .expect("read");

    let export = export(&app, &customer.id).await;

    let record = export.customer.expect("customer");
    assert_eq!(record.display_name, m.text("name"));
    assert_eq!(record.company, m.text("company"));
    let mut contacts: Vec<&str> = record
        .contact_points
        .iter()
        .map(|c| c.value.as_str())
        .collect();
    contacts.sort();
    let email = format!("{}@example.com", m.text("email"));
    let mut expected = vec![m.number.as_str(), email.as_str()];
    expected.sort();
    assert_eq!(contacts, expected);
    assert_eq!(record.external_references[0].external_id, m.text("ext"));
    assert!(export.erase_time.is_none() && export.delete_time.is_none());

    assert_eq!(export.interactions.len(), 1);
    assert_eq!(export.interactions[0].notes, m.text("notes"));
    assert_eq!(export.feedback.len(), 1);
    assert_eq!(export.feedback[0].text, m.text("feedback"));
    // The case the negative feedback opened comes second.
    assert_eq!(export.cases.len(), 2);
    let case = &export.cases[0];
    assert_eq!(
        case.case.as_ref().map(|c| c.subject.clone()),
        Some(m.text("subject2"))
    );
    assert_eq!(case.comments[0].text, m.text("comment"));
    let actions: Vec<&str> = case.history.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["opened", "subject", "commented"]);
    assert_eq!(export.orders.len(), 1);
    assert_eq!(export.service_events[0].description, m.text("service"));
    assert_eq!(export.calls.len(), 1);
    assert_eq!(
        (
            export.calls[0].call_id.as_str(),
            export.calls[0].caller_number.as_str()
        ),
        ("call-1", m.number.as_str())
    );

    // The trail: the writes, and this export itself, recorded before it answered.
    let rpcs: Vec<(&str, &str)> = export
        .access_log
        .iter()
        .map(|e| (e.rpc.as_str(), e.outcome.as_str()))
        .collect();
    assert!(rpcs.contains(&("/switchboard.v1.CustomerService/CreateCustomer", "written")));
    assert_eq!(
        rpcs.last(),
        Some(&("/switchboard.v1.PrivacyService/ExportCustomerData", "read"))
    );
}

#[tokio::test]
async fn an_erasure_leaves_no_marker_in_postgresql_or_redis_and_keeps_the_counts() {
    let app = spawn_app().await;
    let m = Markers::new();
    let customer = customer_with_everything(&app, &m).await;
    let id: Uuid = customer.id.parse().expect("uuid");
    let needles = m.needles();
    // The checks below can fail: every marker is there before the erasure.
    assert_eq!(found(&pg_dump(&app), &needles).len(), needles.len());
    assert!(found(&redis_contents(&app).await, &needles).contains(&m.tag.as_str()));

    let erased = erase(&app, &customer.id).await;
    assert_eq!(erased.numbers_purged, 1);

    assert_eq!(found(&pg_dump(&app), &needles), Vec::<&str>::new());
    assert_eq!(
        found(&redis_contents(&app).await, &needles),
        Vec::<&str>::new()
    );

    // What KPIs count is still there, attached to the anonymous row.
    let counts: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM interactions WHERE customer_id = $1), \
                (SELECT count(*) FROM cases WHERE customer_id = $1), \
                (SELECT count(*) FROM orders WHERE customer_id = $1), \
                (SELECT count(*) FROM calls WHERE customer_id = $1), \
                (SELECT count(*) FROM customer_values WHERE customer_id = $1)",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .expect("counts");
    assert_eq!(counts, (1, 2, 1, 1, 1));

    // The person is gone from every read path.
    let gone = app
        .customers
        .clone()
        .get_customer(v1::GetCustomerRequest {
            id: customer.id.clone(),
        })
        .await
        .expect_err("erased");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let (pop, _) = app.pop(&m.number).await;
    assert_eq!(pop.r#match(), v1::MatchKind::None);

    // Erasing again changes nothing and reports the first erasure.
    let again = erase(&app, &customer.id).await;
    assert_eq!(
        (again.erase_time, again.numbers_purged),
        (erased.erase_time, 0)
    );
    let export = export(&app, &customer.id).await;
    assert_eq!(export.erase_time, erased.erase_time);
    assert!(export.delete_time.is_some());
    assert!(
        export
            .access_log
            .iter()
            .any(|e| e.rpc == "/switchboard.v1.PrivacyService/EraseCustomer"
                && e.outcome == "erased")
    );
}

#[tokio::test]
async fn privacy_requests_reject_bad_and_unknown_ids() {
    let app = spawn_app().await;
    let bad = app
        .privacy()
        .export_customer_data(v1::ExportCustomerDataRequest {
            customer_id: "not-a-uuid".into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        (bad.code(), violated_fields(&bad)),
        (tonic::Code::InvalidArgument, vec!["customer_id".to_owned()])
    );
    let missing = app
        .privacy()
        .erase_customer(v1::EraseCustomerRequest {
            customer_id: String::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
    let unknown = app
        .privacy()
        .erase_customer(v1::EraseCustomerRequest {
            customer_id: Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn retention_blanks_old_free_text_only_and_refreshes_cached_pops() {
    let app = spawn_app().await;
    let m = Markers::new();
    let customer = app.create_customer("Ada Lovelace", &[&m.number]).await;
    for (request_id, days, text) in [("old", 400, "old-notes"), ("new", 10, "new-notes")] {
        app.interactions()
            .log_interaction(v1::LogInteractionRequest {
                request_id: request_id.into(),
                customer_id: customer.id.clone(),
                channel: v1::Channel::Voice.into(),
                direction: v1::Direction::Inbound.into(),
                outcome: format!("{text}-outcome"),
                notes: text.into(),
                started_at: days_ago(days),
                ..Default::default()
            })
            .await
            .expect("logged");
    }
    let outcomes = |pop: &v1::ScreenPop| -> Vec<String> {
        pop.card
            .as_ref()
            .map(|c| {
                c.recent_interactions
                    .iter()
                    .map(|i| i.outcome.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (cached, _) = app.pop(&m.number).await;
    assert_eq!(
        outcomes(&cached),
        ["new-notes-outcome", "old-notes-outcome"]
    );
    assert_eq!(app.pop(&m.number).await.1, v1::PopSource::Cache);

    let run = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["retention", "run", "--keep-days", "365"])
        .env("DATABASE_URL", &app.database_url)
        .env("REDIS_URL", redis_url())
        .env("SWITCHBOARD_REDIS_PREFIX", &app.redis_prefix)
        .output()
        .expect("retention runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("1 interactions"));

    let notes: Vec<(String, String)> = sqlx::query_as(
        "SELECT notes, outcome FROM interactions WHERE customer_id = $1 ORDER BY started_at",
    )
    .bind(Uuid::parse_str(&customer.id).expect("uuid"))
    .fetch_all(&app.db)
    .await
    .expect("notes");
    assert_eq!(
        notes,
        [
            (String::new(), String::new()),
            ("new-notes".to_owned(), "new-notes-outcome".to_owned())
        ]
    );
    let (fresh, source) = app.pop(&m.number).await;
    assert_eq!(source, v1::PopSource::Database);
    assert_eq!(outcomes(&fresh), ["new-notes-outcome", ""]);
}

#[tokio::test]
async fn erasing_a_customer_erases_every_duplicate_merged_into_them_before() {
    let app = spawn_app().await;
    let m = Markers::new();
    let survivor = customer_with_everything(&app, &m).await;
    // Two duplicates of the same person, one merged into the other before it joins the survivor:
    // each tombstone keeps its own row.
    let dup = Markers::new();
    let mut duplicate_ids = Vec::new();
    for what in ["first", "second"] {
        let customer = app
            .customers
            .clone()
            .create_customer(v1::CreateCustomerRequest {
                display_name: dup.text(&format!("{what}-name")),
                company: dup.text(&format!("{what}-company")),
                contact_points: vec![email(&format!("{}@example.com", dup.text(what)))],
                ..Default::default()
            })
            .await
            .expect("created")
            .into_inner()
            .customer
            .expect("customer");
        duplicate_ids.push(customer.id);
    }
    let merge = |survivor_id: &str, duplicate_id: &str| v1::MergeCustomersRequest {
        survivor_id: survivor_id.into(),
        duplicate_id: duplicate_id.into(),
        dry_run: false,
    };
    let mut customers = app.customers.clone();
    customers
        .merge_customers(merge(&duplicate_ids[0], &duplicate_ids[1]))
        .await
        .expect("second merged into first");
    customers
        .merge_customers(merge(&survivor.id, &duplicate_ids[0]))
        .await
        .expect("first merged into the survivor");
    // A third copy of the same person came from the legacy import, and was merged in too.
    let imported = v1::import_service_client::ImportServiceClient::new(app.channel.clone())
        .import_customers(tokio_stream::iter([v1::ImportCustomersRequest {
            rows: vec![v1::ImportRow {
                display_name: dup.text("imported-name"),
                company: dup.text("imported-company"),
                emails: vec![format!("{}@example.com", dup.text("imported"))],
                ..Default::default()
            }],
            dry_run: false,
        }]))
        .await
        .expect("import")
        .into_inner()
        .message()
        .await
        .expect("answer")
        .expect("a result");
    let imported_id = imported.results[0].customer_id.clone();
    customers
        .merge_customers(merge(&survivor.id, &imported_id))
        .await
        .expect("the imported copy merged into the survivor");
    duplicate_ids.push(imported_id);
    let needles = [m.needles(), dup.needles()].concat();
    assert!(found(&pg_dump(&app), &needles).contains(&dup.tag.as_str()));

    erase(&app, &survivor.id).await;

    assert_eq!(found(&pg_dump(&app), &needles), Vec::<&str>::new());
    let erased: Vec<bool> = sqlx::query_scalar(
        "SELECT erased_at IS NOT NULL FROM customers WHERE id = ANY($1::uuid[]) ORDER BY id",
    )
    .bind(&duplicate_ids)
    .fetch_all(&app.db)
    .await
    .expect("tombstones");
    assert_eq!(erased, [true, true, true]);
}

#[tokio::test]
async fn remask_masks_card_numbers_stored_by_older_releases_and_a_second_run_changes_nothing() {
    let app = spawn_app().await;
    let customer = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let case = app.open_case(&customer.id, "c-1").await;
    app.agents
        .clone()
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: "a-17".into(),
            state: v1::AgentState::Away.into(),
            reason: "lunch".into(),
        })
        .await
        .expect("state");
    let customer_id = Uuid::parse_str(&customer.id).expect("uuid");
    let case_id = Uuid::parse_str(&case.id).expect("uuid");
    // What an older release stored as sent.
    for statement in [
        "UPDATE cases SET subject = 'card 4111.1111.1111.1111', description = 'pan 4111/1111/1111/1111' WHERE id = $1",
        "UPDATE customers SET company = 'Amex 3782.822463.10005 Ltd' WHERE id = $2",
        "UPDATE agent_state_changes SET reason = 'paid with 4111 1111 1111 1111 cvv 123'",
        "INSERT INTO call_events (gateway_id, event_id, call_id, type, occurred_at, attached_data, outcome) \
         VALUES ('pbx-1', 'e-1', 'c-1', 'offered', now(), \
                 '{\"card\": \"4111111111111111\", \"cvv\": \"987\", \"menu\": \"2\"}', 'accepted')",
    ] {
        sqlx::query(statement)
            .bind(case_id)
            .bind(customer_id)
            .execute(&app.db)
            .await
            .expect(statement);
    }

    let remask = || {
        let run = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["retention", "remask"])
            .env("DATABASE_URL", &app.database_url)
            .output()
            .expect("remask runs");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        String::from_utf8_lossy(&run.stdout).into_owned()
    };
    let first = remask();
    assert!(first.contains("remask finished: 5 rows masked"), "{first}");
    assert!(first.contains("cases.subject: 1 rows masked"), "{first}");

    let (subject, description): (String, String) =
        sqlx::query_as("SELECT subject, description FROM cases WHERE id = $1")
            .bind(case_id)
            .fetch_one(&app.db)
            .await
            .expect("case");
    assert_eq!(subject, "card ****.****.****.1111");
    assert_eq!(description, "pan ****/****/****/1111");
    let company: String = sqlx::query_scalar("SELECT company FROM customers WHERE id = $1")
        .bind(customer_id)
        .fetch_one(&app.db)
        .await
        .expect("customer");
    assert_eq!(company, "Amex ****.******.*0005 Ltd");
    let reason: String = sqlx::query_scalar("SELECT reason FROM agent_state_changes")
        .fetch_one(&app.db)
        .await
        .expect("reason");
    assert_eq!(reason, "paid with **** **** **** 1111 cvv ***");
    let attached: serde_json::Value =
        sqlx::query_scalar("SELECT attached_data FROM call_events WHERE event_id = 'e-1'")
            .fetch_one(&app.db)
            .await
            .expect("event");
    assert_eq!(
        attached,
        serde_json::json!({"card": "************1111", "cvv": "***", "menu": "2"})
    );

    let second = remask();
    assert!(
        second.contains("remask finished: 0 rows masked"),
        "{second}"
    );
}

#[tokio::test]
async fn remask_walks_each_month_of_a_partitioned_table_and_misses_no_row() {
    let app = spawn_app().await;
    // Two months of call events with card numbers, their rows of different sizes, so the two
    // partitions' row positions (ctids) interleave unevenly: one walk over the parent in ctid
    // order, a thousand rows at a time, passed over rows at the batch edges.
    let month = |ahead: i32| {
        format!("date_trunc('month', now()) + make_interval(months => {ahead}, hours => n)")
    };
    for (ahead, pad) in [(0, 10), (1, 300)] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO call_events (gateway_id, event_id, call_id, type, occurred_at, \
                                      attached_data, outcome) \
             SELECT 'pbx-1', 'e-{ahead}-' || n, 'c-' || n, 'offered', {}, \
                    jsonb_build_object('card', '4111111111111111', 'pad', repeat('x', {pad} + n % 7)), \
                    'accepted' \
             FROM generate_series(1, 1500) n",
            month(ahead)
        )))
        .execute(&app.db)
        .await
        .expect("events");
    }
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["retention", "remask"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .await
        .expect("remask runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM call_events WHERE attached_data::text LIKE '%4111111111111111%'",
    )
    .fetch_one(&app.db)
    .await
    .expect("count");
    assert_eq!(left, 0, "{}", String::from_utf8_lossy(&run.stdout));
    assert!(
        String::from_utf8_lossy(&run.stdout)
            .contains("call_events.attached_data: 3000 rows masked"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
