//! The dialplans' HTTP caller-ID lookups (`GET /v1/cid/{number}`, `GET /v1/pop/{number}`) and the
//! LOOKUP credential they use, spoken over plain HTTP/1.1 as curl in a dialplan would.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use switchboard::auth::{RateLimit, Role};
use switchboard::proto::v1;
use tonic::Code;

use crate::helpers::{
    PrivateRedis, ServerProcess, TestApp, TestOptions, authed, eventually, free_port,
    fresh_database, http1, spawn_app, spawn_app_with,
};

const ADA: &str = "+14155550100";

/// What a GET answered: status, headers and body.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// GET `path` on `address` with the given extra headers.
async fn get_from(address: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = http::Request::get(path).header("host", "switchboard");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = http1(address)
        .await
        .send_request(request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("answered");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    }
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Answer {
    get_from(&app.address, path, headers).await
}

async fn lookup_key(app: &TestApp, subject: &str) -> String {
    switchboard::auth::create_api_key(&app.db, subject, Role::Lookup, None)
        .await
        .expect("key created")
}

#[tokio::test]
async fn a_dialplan_gets_the_callers_name_with_its_key_in_a_header_or_the_query() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let key = lookup_key(&app, "pbx-dialplan").await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("freeswitch:{key}"));
    let bearer = format!("Bearer {key}");
    let basic = format!("Basic {basic}");
    let by_query = format!("/v1/cid/{ADA}?key={key}");

    for (path, headers) in [
        (format!("/v1/cid/{ADA}"), vec![("x-api-key", key.as_str())]),
        (
            format!("/v1/cid/{ADA}"),
            vec![("authorization", bearer.as_str())],
        ),
        (
            format!("/v1/cid/{ADA}"),
            vec![("authorization", basic.as_str())],
        ),
        (by_query.clone(), vec![]),
    ] {
        let answer = get(&app, &path, &headers).await;
        assert_eq!(answer.status, 200, "{headers:?}");
        assert_eq!(answer.body, "Ada Lovelace");
        assert_eq!(answer.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(answer.header("cache-control"), "no-store");
        assert_eq!(answer.header("x-switchboard-match"), "exact");
    }

    // The forms a gateway hands over, percent-encoded or not.
    for form in [
        "4155550100",
        "(415)%20555-0100",
        "sip:%2B14155550100@pbx.example.com;user=phone",
        "sip:+14155550100@pbx.example.com",
        "tel:+1-415-555-0100",
        "%22Ada%22%20%3Csip:4155550100@10.0.0.1%3E",
    ] {
        let answer = get(&app, &format!("/v1/cid/{form}?key={key}"), &[]).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (http::StatusCode::OK, "Ada Lovelace"),
            "{form}"
        );
    }
}

#[tokio::test]
async fn a_miss_a_withheld_caller_and_a_shared_number_answer_as_documented() {
    let app = spawn_app().await;
    let key = lookup_key(&app, "pbx").await;
    let mut customers = app.customers.clone();
    for name in ["Ann Office", "Bob Office"] {
        customers
            .create_customer(v1::CreateCustomerRequest {
                display_name: name.into(),
                company: "Acme GmbH".into(),
                contact_points: vec![crate::helpers::phone("+14155550111")],
                ..Default::default()
            })
            .await
            .expect("created");
    }
    app.create_customer("Cy Home", &["+14155550122"]).await;
    app.create_customer("Di Home", &["+14155550122"]).await;

    let query = format!("?key={key}");
    let miss = get(&app, &format!("/v1/cid/+14155550999{query}"), &[]).await;
    assert_eq!(
        (miss.status, miss.body.as_str()),
        (http::StatusCode::NOT_FOUND, "")
    );
    assert_eq!(miss.header("x-switchboard-match"), "none");
    assert_eq!(miss.header("x-switchboard-caller"), "number");

    for withheld in [
        "anonymous",
        "Restricted",
        "sip:anonymous@anonymous.invalid",
        "",
    ] {
        let answer = get(&app, &format!("/v1/cid/{withheld}{query}"), &[]).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (http::StatusCode::NOT_FOUND, ""),
            "{withheld:?}"
        );
        assert_eq!(answer.header("x-switchboard-caller"), "withheld");
    }
    let not_a_number = get(&app, &format!("/v1/cid/sip:alice@example.com{query}"), &[]).await;
    assert_eq!(not_a_number.status, 404);
    assert_eq!(not_a_number.header("x-switchboard-caller"), "not-a-number");

    let office = get(&app, &format!("/v1/cid/+14155550111{query}"), &[]).await;
    assert_eq!(
        (office.status, office.body.as_str()),
        (http::StatusCode::OK, "Acme GmbH")
    );
    assert_eq!(office.header("x-switchboard-match"), "multiple");
    let household = get(&app, &format!("/v1/cid/+14155550122{query}"), &[]).await;
    assert_eq!(household.status, 200);
    assert!(
        household.body == "Di Home (1 of 2)" || household.body == "Cy Home (1 of 2)",
        "{}",
        household.body
    );

    // The JSON lookup answers 200 with NONE for a miss and a withheld caller.
    let withheld = get(&app, &format!("/v1/pop/anonymous{query}"), &[]).await;
    assert_eq!(withheld.status, 200);
    let json = withheld.json();
    assert_eq!(json["match"], "MATCH_KIND_NONE");
    assert_eq!(json["callerKind"], "CALLER_KIND_WITHHELD");
    assert_eq!(json["source"], "POP_SOURCE_NONE");
}

#[tokio::test]
async fn the_routing_json_carries_what_an_ivr_routes_on_and_pins_the_card_to_the_call() {
    let app = spawn_app().await;
    let key = lookup_key(&app, "ivr").await;
    let mut campaign = crate::campaigns::outbound("Winter");
    campaign.dialed_numbers = vec!["+1 800 555 0199".into()];
    let campaign = crate::campaigns::create(&app, campaign).await;
    let ada = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Ada Lovelace".into(),
            tier: v1::Tier::Gold.into(),
            vip: true,
            preferred_language: "de".into(),
            segment: "enterprise".into(),
            consent: Some(v1::Consent {
                marketing: false,
                do_not_call: true,
            }),
            contact_points: vec![crate::helpers::phone(ADA)],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner()
        .customer
        .expect("customer");
    let now = chrono::Utc::now().timestamp();
    app.interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: "last-call".into(),
            customer_id: ada.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "a-42".into(),
            started_at: Some(prost_types::Timestamp {
                seconds: now - 600,
                nanos: 0,
            }),
            ended_at: Some(prost_types::Timestamp {
                seconds: now - 300,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("logged");
    app.cases()
        .open_case(v1::OpenCaseRequest {
            request_id: "urgent".into(),
            customer_id: ada.id.clone(),
            subject: "outage".into(),
            description: "site down".into(),
            priority: v1::CasePriority::Urgent.into(),
            actor: "a-42".into(),
        })
        .await
        .expect("case opened");

    let answer = get(
        &app,
        &format!("/v1/pop/{ADA}?key={key}&dialed=+18005550199&call_id=ivr-call-1"),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), "application/json");
    let json = answer.json();
    assert_eq!(json["match"], "MATCH_KIND_EXACT");
    assert_eq!(json["callerKind"], "CALLER_KIND_NUMBER");
    assert_eq!(json["normalizedNumber"], ADA);
    assert_eq!(json["customerId"], ada.id.as_str());
    assert_eq!(json["displayName"], "Ada Lovelace");
    assert_eq!(json["tier"], "TIER_GOLD");
    assert_eq!(json["vip"], true);
    assert_eq!(json["preferredLanguage"], "de");
    assert_eq!(json["segment"], "enterprise");
    assert_eq!(json["doNotCall"], true);
    assert_eq!(json["urgentCaseOpen"], true);
    assert_eq!(json["overdueCaseOpen"], false);
    assert_eq!(json["repeatContact"], true);
    assert_eq!(json["lastAgentId"], "a-42");
    assert_eq!(json["dialedCampaignId"], campaign.id.as_str());
    assert_eq!(json["dialedCampaignName"], "Winter");
    assert_eq!(json["candidateCount"], 1);
    let shown: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    for hidden in [
        "primaryContacts",
        "recentOrders",
        "offers",
        "openFeedback",
        "card",
    ] {
        assert!(!shown.contains(&hidden), "{hidden} is not for dialplans");
    }

    // The agent who answers the call sees the card the IVR routed on.
    let (_, source) = app.pop_for_call(ADA, "ivr-call-1").await;
    assert_eq!(source, v1::PopSource::CallPin);
}

#[tokio::test]
async fn a_lookup_key_looks_callers_up_and_can_do_nothing_else() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let key = lookup_key(&app, "pbx").await;
    let as_lookup = authed(app.raw_channel.clone(), &key);

    let named = v1::caller_id_service_client::CallerIdServiceClient::new(as_lookup.clone())
        .get_caller_name(v1::GetCallerNameRequest {
            caller_number: ADA.into(),
        })
        .await
        .expect("a lookup key may look up")
        .into_inner();
    assert_eq!(named.name, "Ada Lovelace");

    let card = v1::screen_pop_service_client::ScreenPopServiceClient::new(as_lookup.clone())
        .lookup(v1::LookupRequest {
            caller_number: ADA.into(),
            ..Default::default()
        })
        .await
        .expect_err("the whole card is not for a lookup key");
    assert_eq!(card.code(), Code::PermissionDenied);
    let search = v1::customer_service_client::CustomerServiceClient::new(as_lookup)
        .search_customers(v1::SearchCustomersRequest {
            query: Some(v1::search_customers_request::Query::NamePrefix(
                "Ada".into(),
            )),
            ..Default::default()
        })
        .await
        .expect_err("no search");
    assert_eq!(search.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn wrong_missing_and_revoked_keys_are_refused_with_an_empty_body() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &[ADA]).await;
    let revoked = lookup_key(&app, "old-pbx").await;
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE subject = 'old-pbx'")
        .execute(&app.db)
        .await
        .expect("revoked");

    for (path, headers) in [
        (format!("/v1/cid/{ADA}"), vec![]),
        (format!("/v1/cid/{ADA}?key=sbk_wrong"), vec![]),
        (format!("/v1/cid/{ADA}?key={revoked}"), vec![]),
        (
            format!("/v1/cid/{ADA}"),
            vec![("x-api-key", revoked.as_str())],
        ),
        (
            format!("/v1/cid/{ADA}"),
            vec![("authorization", "Basic !!!")],
        ),
    ] {
        let answer = get(&app, &path, &headers).await;
        assert_eq!(answer.status, 401, "{path} {headers:?}");
        assert_eq!(
            answer.body, "",
            "a dialplan must not show an error as a name"
        );
        assert_eq!(answer.header("grpc-status"), "16");
        assert!(!answer.header("www-authenticate").is_empty());
    }
    let json = get(&app, &format!("/v1/pop/{ADA}?key=sbk_wrong"), &[]).await;
    assert_eq!(json.status, 401);
    assert_eq!(json.json()["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn bad_requests_get_a_clear_answer_naming_the_field() {
    let app = spawn_app().await;
    let key = lookup_key(&app, "pbx").await;
    let control = get(&app, &format!("/v1/pop/415%00555?key={key}"), &[]).await;
    assert_eq!(control.status, 400);
    let error = &control.json()["error"];
    assert_eq!(error["status"], "INVALID_ARGUMENT");
    assert_eq!(
        error["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(
        error["details"][0]["fieldViolations"][0]["field"],
        "caller_number"
    );

    let long = "4".repeat(3000);
    let too_long = get(&app, &format!("/v1/cid/{long}?key={key}"), &[]).await;
    assert_eq!(
        (too_long.status, too_long.body.as_str()),
        (http::StatusCode::BAD_REQUEST, "")
    );
    let not_utf8 = get(&app, &format!("/v1/cid/%FF?key={key}"), &[]).await;
    assert_eq!(not_utf8.status, 400);
    let dialed = get(&app, &format!("/v1/pop/{ADA}?key={key}&dialed=banana"), &[]).await;
    assert_eq!(dialed.status, 400);
    assert_eq!(
        dialed.json()["error"]["details"][0]["fieldViolations"][0]["field"],
        "dialed_number"
    );

    let response = http1(&app.address)
        .await
        .send_request(
            http::Request::post(format!("/v1/cid/{ADA}?key={key}"))
                .header("host", "switchboard")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("answered");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers().get("allow").expect("allow"), "GET");
}

#[tokio::test]
async fn an_http_lookup_is_fresh_right_after_an_update() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &[ADA]).await;
    let key = lookup_key(&app, "pbx").await;
    let path = format!("/v1/cid/{ADA}?key={key}");
    assert_eq!(get(&app, &path, &[]).await.body, "Ada Lovelace");
    assert_eq!(
        get(&app, &format!("/v1/pop/{ADA}?key={key}"), &[])
            .await
            .json()["source"],
        "POP_SOURCE_CACHE",
        "the second lookup is hot"
    );
    app.rename(&ada, "Ada King").await;
    assert_eq!(get(&app, &path, &[]).await.body, "Ada King");
}

#[tokio::test]
async fn http_lookups_answer_from_postgresql_with_redis_stopped() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &[ADA]).await;
    let key = lookup_key(&app, "pbx").await;
    let path = format!("/v1/pop/{ADA}?key={key}");
    get(&app, &path, &[]).await;
    assert_eq!(
        get(&app, &path, &[]).await.json()["source"],
        "POP_SOURCE_CACHE"
    );

    redis.stop();
    for _ in 0..5 {
        let json = get(&app, &path, &[]).await.json();
        assert_eq!(json["displayName"], "Ada Lovelace");
        assert_eq!(json["source"], "POP_SOURCE_DATABASE");
    }
    app.rename(&ada, "Ada King").await;
    let answer = get(&app, &format!("/v1/cid/{ADA}?key={key}"), &[]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (http::StatusCode::OK, "Ada King")
    );
}

#[tokio::test]
async fn http_lookups_are_audited_counted_and_rate_limited_per_credential() {
    let defaults = TestOptions::default();
    let app = spawn_app_with(TestOptions {
        limits: switchboard::config::Limits {
            rate: RateLimit {
                per_second: 0.01,
                burst: 4.0,
            },
            ..defaults.limits
        },
        ..defaults
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &[ADA]).await;
    let busy = lookup_key(&app, "busy-pbx").await;
    let calm = lookup_key(&app, "calm-pbx").await;

    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = get(&app, &format!("/v1/cid/{ADA}?key={busy}"), &[]).await;
        if answer.status == 429 {
            assert_eq!(answer.body, "");
            assert_eq!(answer.header("retry-after"), "1");
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(
        get(&app, &format!("/v1/cid/{ADA}?key={calm}"), &[])
            .await
            .status,
        200,
        "another credential has its own bucket"
    );

    let audited = eventually(Duration::from_secs(5), || async {
        // Reads are summarized per key, customer and minute: count them, not rows.
        let rows: Vec<(String, String, String, Option<uuid::Uuid>, i32)> = sqlx::query_as(
            "SELECT actor, role, outcome, customer_id, read_count FROM audit_events \
             WHERE rpc = '/switchboard.v1.CallerIdService/GetCallerName' ORDER BY id",
        )
        .fetch_all(&app.db)
        .await
        .expect("audit rows");
        let reads: i32 = rows
            .iter()
            .filter(|(actor, role, outcome, customer, _)| {
                actor == "busy-pbx"
                    && role == "lookup"
                    && outcome == "read"
                    && customer.map(|c| c.to_string()) == Some(ada.id.clone())
            })
            .map(|row| row.4)
            .sum();
        let denied = rows
            .iter()
            .filter(|(actor, _, outcome, _, _)| actor == "busy-pbx" && outcome == "denied")
            .count();
        reads == 4 && denied == 2
    })
    .await;
    assert!(
        audited,
        "each read and each refusal is audited as the key's subject"
    );

    let samples = crate::metrics::scrape(&app).await;
    let ok = crate::metrics::value(
        &samples,
        r#"switchboard_rpc_requests_total{method="switchboard.v1.CallerIdService/GetCallerName",code="OK"}"#,
    );
    let limited = crate::metrics::value(
        &samples,
        r#"switchboard_rpc_requests_total{method="switchboard.v1.CallerIdService/GetCallerName",code="RESOURCE_EXHAUSTED"}"#,
    );
    assert_eq!((ok, limited), (5.0, 2.0));
}

#[tokio::test]
async fn a_lookup_key_never_reaches_the_logs_or_the_audit_trail() {
    let database_url = fresh_database(&crate::helpers::admin_database_url()).await;
    let port = free_port();
    let (log, log_file) = crate::helpers::LogFile::create("sb-cid");
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let envs = [
        ("RUST_LOG", "debug,switchboard=trace"),
        ("SWITCHBOARD_LOG_FORMAT", "json"),
    ];
    let mut server = ServerProcess::start(&database_url, &prefix, port, &envs, log_file).await;
    let db = sqlx::PgPool::connect(&database_url).await.expect("pool");
    let key = switchboard::auth::create_api_key(&db, "pbx", Role::Lookup, None)
        .await
        .expect("key");
    v1::customer_service_client::CustomerServiceClient::new(server.channel().await)
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Philomena Quarrington".into(),
            contact_points: vec![crate::helpers::phone("+1 415 555 0163")],
            ..Default::default()
        })
        .await
        .expect("created");
    let address = server.address.clone();
    let named = get_from(&address, &format!("/v1/cid/+14155550163?key={key}"), &[]).await;
    assert_eq!(named.body, "Philomena Quarrington");
    get_from(
        &address,
        &format!("/v1/pop/+14155550163?key={key}&call_id=c-1"),
        &[],
    )
    .await;
    get_from(
        &address,
        "/v1/cid/+14155550163",
        &[("x-api-key", key.as_str())],
    )
    .await;
    let wrong = get_from(&address, "/v1/cid/+14155550163?key=sbk_NotTheRealKey", &[]).await;
    assert_eq!(wrong.status, 401);

    // Stopping flushes the audit trail.
    let status = server.signal_and_wait("TERM").await;
    assert!(status.success(), "exit status {status:?}");
    let audit_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE rpc LIKE '/switchboard.v1.CallerIdService/%'",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    let logs = log.take();
    assert!(
        logs.contains("CallerIdService/GetCallerName") && logs.contains("unauthenticated request"),
        "the lookups and the refused key were logged"
    );
    assert!(audit_rows >= 3, "the lookups were audited ({audit_rows})");
    let audit_text: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(a)::text FROM audit_events a")
            .fetch_all(&db)
            .await
            .expect("audit rows");
    let secret_part = key.trim_start_matches("sbk_");
    for secret in [secret_part, "NotTheRealKey", "5550163", "Quarrington"] {
        assert!(!logs.contains(secret), "logs contain {secret:?}");
        assert!(
            !audit_text.iter().any(|row| row.contains(secret)),
            "the audit trail contains {secret:?}"
        );
    }
}
