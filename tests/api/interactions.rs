//! InteractionService: the customer's timeline, wrap-up, dispositions, and masked notes.

use switchboard::proto::v1;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app, violated_fields};

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_800_000_000 + seconds,
        nanos: 0,
    })
}

async fn dispositions(app: &TestApp) {
    app.dispositions(&[("resolved", true), ("callback", false)])
        .await;
}

fn voice(customer_id: &str, request_id: &str, started: i64) -> v1::LogInteractionRequest {
    v1::LogInteractionRequest {
        request_id: request_id.into(),
        customer_id: customer_id.into(),
        channel: v1::Channel::Voice.into(),
        direction: v1::Direction::Inbound.into(),
        agent_id: "a-17".into(),
        started_at: at(started),
        ended_at: at(started + 60),
        ..Default::default()
    }
}

async fn log(app: &TestApp, request: v1::LogInteractionRequest) -> v1::Interaction {
    app.interactions()
        .log_interaction(request)
        .await
        .expect("logged")
        .into_inner()
        .interaction
        .expect("interaction")
}

#[tokio::test]
async fn notes_never_keep_card_data_and_replays_are_idempotent() {
    let app = spawn_app().await;
    dispositions(&app).await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let request = v1::LogInteractionRequest {
        notes: "Paid with 4111 1111 1111 1111, CVV 123. Call back on +1 415 555 0100 about order 100234567 on 2026-12-01.".into(),
        disposition_code: "callback".into(),
        follow_up_on: "2026-12-01".into(),
        ..voice(&ada.id, "req-1", 0)
    };
    let first = log(&app, request.clone()).await;
    assert_eq!(
        first.notes,
        "Paid with **** **** **** 1111, CVV ***. Call back on +1 415 555 0100 about order 100234567 on 2026-12-01."
    );
    let replay = log(&app, request).await;
    assert_eq!(replay.id, first.id);
    let stored: Vec<String> = sqlx::query_scalar("SELECT notes FROM interactions")
        .fetch_all(&app.db)
        .await
        .expect("notes");
    assert_eq!(
        stored,
        std::slice::from_ref(&first.notes),
        "one row, masked in PostgreSQL"
    );
    assert!(!stored[0].contains("4111 1111 1111 1111"));
}

#[tokio::test]
async fn wrap_up_records_the_disposition_and_after_call_work_once() {
    let app = spawn_app().await;
    dispositions(&app).await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let now = chrono::Utc::now();
    let ended = now - chrono::Duration::seconds(30);
    let interaction = log(
        &app,
        v1::LogInteractionRequest {
            started_at: Some(switchboard::proto_time::to_timestamp(
                ended - chrono::Duration::seconds(120),
            )),
            ended_at: Some(switchboard::proto_time::to_timestamp(ended)),
            ..voice(&ada.id, "req-2", 0)
        },
    )
    .await;
    let wrap = |code: &str, notes: &str| v1::CompleteWrapUpRequest {
        interaction_id: interaction.id.clone(),
        disposition_code: code.into(),
        notes: notes.into(),
    };
    let done = app
        .interactions()
        .complete_wrap_up(wrap("resolved", "card 5555555555554444"))
        .await
        .expect("wrapped")
        .into_inner()
        .interaction
        .expect("i");
    assert_eq!(done.disposition_code, "resolved");
    assert_eq!(done.notes, "card ************4444");
    assert!(
        (29_000..40_000).contains(&done.wrap_up_ms),
        "about 30 s of after-call work, got {}",
        done.wrap_up_ms
    );
    let again = app
        .interactions()
        .complete_wrap_up(wrap("callback", ""))
        .await
        .expect("idempotent")
        .into_inner()
        .interaction
        .expect("i");
    assert_eq!(again, done, "a second wrap-up changes nothing");

    let unknown = app
        .interactions()
        .complete_wrap_up(v1::CompleteWrapUpRequest {
            interaction_id: uuid::Uuid::new_v4().to_string(),
            disposition_code: "resolved".into(),
            notes: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn retired_or_unknown_dispositions_are_refused() {
    let app = spawn_app().await;
    dispositions(&app).await;
    let ada = app.create_customer("Ada Lovelace", &[]).await;
    app.interactions()
        .upsert_disposition(v1::UpsertDispositionRequest {
            disposition: Some(v1::Disposition {
                code: "callback".into(),
                label: "Call back".into(),
                resolves: false,
                active: false,
            }),
        })
        .await
        .expect("retired");
    for code in ["callback", "no-such-code"] {
        let status = app
            .interactions()
            .log_interaction(v1::LogInteractionRequest {
                disposition_code: code.into(),
                ..voice(&ada.id, code, 0)
            })
            .await
            .expect_err(code);
        assert_eq!(status.code(), Code::FailedPrecondition, "{code}");
    }
    let catalog = app
        .interactions()
        .list_dispositions(v1::ListDispositionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .dispositions;
    let codes: Vec<(&str, bool)> = catalog
        .iter()
        .map(|d| (d.code.as_str(), d.active))
        .collect();
    assert_eq!(codes, [("resolved", true), ("callback", false)]);
}

#[tokio::test]
async fn bad_input_is_reported_field_by_field() {
    let app = spawn_app().await;
    let status = app
        .interactions()
        .log_interaction(v1::LogInteractionRequest {
            customer_id: "nope".into(),
            channel: 42,
            agent_id: "has space".into(),
            gateway_id: "pbx".into(),
            follow_up_on: "tomorrow".into(),
            notes: "x".repeat(10_001),
            started_at: at(100),
            ended_at: at(50),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "agent_id",
            "call_id",
            "channel",
            "customer_id",
            "direction",
            "ended_at",
            "follow_up_on",
            "notes",
            "request_id"
        ]
    );
    let missing = app
        .interactions()
        .log_interaction(voice(&uuid::Uuid::new_v4().to_string(), "r", 0))
        .await
        .expect_err("unknown customer");
    assert_eq!(missing.code(), Code::NotFound);
    let ada = app.create_customer("Ada Lovelace", &[]).await;
    let no_case = app
        .interactions()
        .log_interaction(v1::LogInteractionRequest {
            case_id: uuid::Uuid::new_v4().to_string(),
            ..voice(&ada.id, "r2", 0)
        })
        .await
        .expect_err("unknown case");
    assert_eq!(no_case.code(), Code::NotFound, "{no_case:?}");
}

#[tokio::test]
async fn the_timeline_pages_newest_first_and_stays_stable_while_contacts_arrive() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &[]).await;
    for i in 0..7 {
        let mut request = voice(&ada.id, &format!("r{i}"), i * 100);
        if i % 2 == 1 {
            request.channel = v1::Channel::Email.into();
        }
        log(&app, request).await;
    }
    let page = |token: String, channel: v1::Channel| v1::ListInteractionsRequest {
        customer_id: ada.id.clone(),
        channel: channel.into(),
        page_size: 3,
        page_token: token,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let response = app
            .interactions()
            .list_interactions(page(token, v1::Channel::Unspecified))
            .await
            .expect("page")
            .into_inner();
        seen.extend(
            response
                .interactions
                .iter()
                .map(|i| i.started_at.expect("start").seconds - 1_800_000_000),
        );
        // A contact logged mid-way, newer than everything, must not shift later pages.
        if seen.len() == 3 {
            log(&app, voice(&ada.id, "late", 10_000)).await;
        }
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
    }
    assert_eq!(seen, [600, 500, 400, 300, 200, 100, 0]);

    let emails = app
        .interactions()
        .list_interactions(page(String::new(), v1::Channel::Email))
        .await
        .expect("emails")
        .into_inner();
    let starts: Vec<i64> = emails
        .interactions
        .iter()
        .map(|i| i.started_at.expect("start").seconds - 1_800_000_000)
        .collect();
    assert_eq!(starts, [500, 300, 100]);
    assert!(
        emails.next_page_token.is_empty(),
        "three emails fit one page"
    );
    let voice_page = app
        .interactions()
        .list_interactions(page(String::new(), v1::Channel::Voice))
        .await
        .expect("voice")
        .into_inner();
    assert!(!voice_page.next_page_token.is_empty());
    let misused = app
        .interactions()
        .list_interactions(page(voice_page.next_page_token, v1::Channel::Email))
        .await
        .expect_err("a token of another query");
    assert_eq!(violated_fields(&misused), ["page_token"]);
}
