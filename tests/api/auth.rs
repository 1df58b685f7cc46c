//! Authentication and authorization: every RPC with every role, bad tokens, API keys, and the
//! resource rules (an agent only for itself, a gateway only for its own gateway id).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use switchboard::auth::permissions::PERMISSIONS;
use switchboard::auth::{Claims, Role};
use switchboard::client::BearerToken;
use switchboard::proto::v1;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;

use crate::helpers::{Authed, TEST_ISSUER, TEST_SECRET, TestApp, authed, spawn_app, token};

const ROLES: [Role; 6] = [
    Role::Agent,
    Role::Supervisor,
    Role::Gateway,
    Role::Service,
    Role::Admin,
    Role::Lookup,
];

fn as_role(app: &TestApp, role: Role) -> Authed {
    let gateway = (role == Role::Gateway).then_some("pbx-1");
    authed(app.raw_channel.clone(), &token(role, "a-1", gateway))
}

fn anonymous(app: &TestApp) -> Authed {
    InterceptedService::new(
        app.raw_channel.clone(),
        BearerToken::new(None).expect("no token"),
    )
}

/// Calls `path` with an empty message and returns the status code (OK when it answered). Every
/// kind of RPC is called as server streaming (the same on the wire): an error comes in the
/// headers, or as the stream's first item; a stream that stays open answered.
async fn code_of(channel: Authed, path: &'static str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<v1::ListDispositionsRequest, v1::ListDispositionsRequest>::default();
    let call = grpc.server_streaming(
        tonic::Request::new(v1::ListDispositionsRequest {}),
        http::uri::PathAndQuery::from_static(path),
        codec,
    );
    let mut stream = match tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("answered within 10 s")
    {
        Ok(response) => response.into_inner(),
        Err(status) => return status.code(),
    };
    match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        Ok(Err(status)) => status.code(),
        Ok(Ok(_)) | Err(_) => Code::Ok,
    }
}

fn signed(claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signs")
}

fn claims(role: &str) -> Claims {
    Claims {
        sub: "a-1".into(),
        role: role.into(),
        gateway_id: None,
        iss: TEST_ISSUER.into(),
        aud: TEST_ISSUER.into(),
        exp: chrono::Utc::now().timestamp() + 600,
        nbf: None,
    }
}

#[tokio::test]
async fn every_rpc_is_checked_for_every_role_and_for_no_credential() {
    let app = spawn_app().await;
    let mut checked = 0;
    for (path, allowed) in PERMISSIONS {
        assert_eq!(
            code_of(anonymous(&app), path).await,
            Code::Unauthenticated,
            "{path} without a credential"
        );
        for role in ROLES {
            let code = code_of(as_role(&app, role), path).await;
            if allowed.contains(&role) {
                assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{path} as {role:?} got {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{path} as {role:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, PERMISSIONS.len() * ROLES.len());
    // Health needs no credential.
    assert_ne!(
        code_of(anonymous(&app), "/grpc.health.v1.Health/Check").await,
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let lookup = "/switchboard.v1.ScreenPopService/Lookup";
    let expired = Claims {
        exp: chrono::Utc::now().timestamp() - 3600,
        ..claims("agent")
    };
    let not_yet = Claims {
        nbf: Some(chrono::Utc::now().timestamp() + 3600),
        ..claims("agent")
    };
    let other_audience = Claims {
        aud: "someone-else".into(),
        ..claims("agent")
    };
    let other_issuer = Claims {
        iss: "evil".into(),
        ..claims("agent")
    };
    let unknown_role = claims("root");
    let none_alg = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(
            serde_json::to_string(&claims("admin"))
                .expect("json")
                .as_bytes()
        )
    );
    let cases = [
        ("expired", signed(&expired, TEST_SECRET.as_bytes())),
        ("not yet valid", signed(&not_yet, TEST_SECRET.as_bytes())),
        (
            "wrong audience",
            signed(&other_audience, TEST_SECRET.as_bytes()),
        ),
        (
            "wrong issuer",
            signed(&other_issuer, TEST_SECRET.as_bytes()),
        ),
        (
            "unknown role",
            signed(&unknown_role, TEST_SECRET.as_bytes()),
        ),
        (
            "wrong secret",
            signed(&claims("admin"), b"another-secret-of-at-least-32-bytes!"),
        ),
        ("alg=none", none_alg),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in cases {
        assert_eq!(
            code_of(authed(app.raw_channel.clone(), &token), lookup).await,
            Code::Unauthenticated,
            "{name}"
        );
    }
    let good = signed(&claims("agent"), TEST_SECRET.as_bytes());
    assert_ne!(
        code_of(authed(app.raw_channel.clone(), &good), lookup).await,
        Code::Unauthenticated
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn api_keys_authenticate_gateways_for_their_own_gateway_only() {
    let app = spawn_app().await;
    let key = switchboard::auth::create_api_key(&app.db, "pbx-1", Role::Gateway, Some("pbx-1"))
        .await
        .expect("key");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(&app.db)
        .await
        .expect("hashes");
    assert_eq!(stored.len(), 1);
    assert!(
        !String::from_utf8_lossy(&stored[0]).contains(&key[4..]),
        "only the hash is stored"
    );

    let mut calls = v1::call_event_service_client::CallEventServiceClient::with_interceptor(
        app.raw_channel.clone(),
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("x-api-key", key.parse().expect("header"));
            Ok(request)
        },
    );
    let event = |gateway: &str| v1::ReportCallEventRequest {
        event: Some(v1::CallEvent {
            gateway_id: gateway.into(),
            event_id: format!("{gateway}-e1"),
            call_id: "c-1".into(),
            r#type: v1::CallEventType::Offered.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            caller_number: "+14155550100".into(),
            ..Default::default()
        }),
    };
    let own = calls
        .report_call_event(event("pbx-1"))
        .await
        .expect("own gateway")
        .into_inner()
        .ack
        .expect("ack");
    assert_eq!(own.outcome(), v1::AckOutcome::Accepted);
    let other = calls
        .report_call_event(event("pbx-2"))
        .await
        .expect_err("another gateway");
    assert_eq!(other.code(), Code::PermissionDenied);

    let revoked = switchboard::auth::create_api_key(&app.db, "svc", Role::Service, None)
        .await
        .expect("key");
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE subject = 'svc'")
        .execute(&app.db)
        .await
        .expect("revoke");
    let mut grpc = tonic::client::Grpc::new(InterceptedService::new(
        app.raw_channel.clone(),
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("x-api-key", revoked.parse().expect("header"));
            Ok(request)
        },
    ));
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<v1::ListDispositionsRequest, v1::ListDispositionsRequest>::default();
    let status = grpc
        .unary(
            tonic::Request::new(v1::ListDispositionsRequest {}),
            http::uri::PathAndQuery::from_static("/switchboard.v1.ActivityService/RecordOrder"),
            codec,
        )
        .await
        .expect_err("revoked");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_agent_acts_only_for_itself() {
    let app = spawn_app().await;
    let mut agents = v1::agent_service_client::AgentServiceClient::new(as_role(&app, Role::Agent));
    let state = |agent: &str| v1::SetAgentStateRequest {
        agent_id: agent.into(),
        state: v1::AgentState::Available.into(),
        reason: String::new(),
    };
    agents
        .set_agent_state(state("a-1"))
        .await
        .expect("its own state");
    let other = agents
        .set_agent_state(state("a-2"))
        .await
        .expect_err("another agent's state");
    assert_eq!(other.code(), Code::PermissionDenied);
    let watch = agents
        .watch_agent(v1::WatchAgentRequest {
            agent_id: "a-2".into(),
        })
        .await
        .expect_err("another agent's stream");
    assert_eq!(watch.code(), Code::PermissionDenied);
    let mut own = agents
        .watch_agent(v1::WatchAgentRequest {
            agent_id: "a-1".into(),
        })
        .await
        .expect("its own stream")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), own.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("a message");
    assert_eq!(first.kind(), v1::AgentCallEventKind::Synced);

    let mut supervisor =
        v1::agent_service_client::AgentServiceClient::new(as_role(&app, Role::Supervisor));
    supervisor
        .set_agent_state(state("a-2"))
        .await
        .expect("a supervisor may set any agent's state");

    // Case writes name their actor; an agent's credential may name only itself.
    let customer = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let open_as = |actor: &str, request_id: &str| v1::OpenCaseRequest {
        request_id: request_id.into(),
        customer_id: customer.id.clone(),
        subject: "Router down".into(),
        priority: v1::CasePriority::Normal.into(),
        actor: actor.into(),
        ..Default::default()
    };
    let mut cases = v1::case_service_client::CaseServiceClient::new(as_role(&app, Role::Agent));
    let forged = cases
        .open_case(open_as("a-2", "c-forged"))
        .await
        .expect_err("another agent's name");
    assert_eq!(forged.code(), Code::PermissionDenied);
    cases
        .open_case(open_as("a-1", "c-own"))
        .await
        .expect("its own name");
    let opened: i64 = sqlx::query_scalar("SELECT count(*) FROM cases")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(opened, 1, "the forged case was not written");
}

#[tokio::test]
async fn the_server_refuses_to_start_without_an_authentication_configuration() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env_remove("SWITCHBOARD_JWT_HS256_SECRET")
        .env_remove("SWITCHBOARD_DEV")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no authentication configured"), "{stderr}");
}
