//! gRPC-web on the gRPC port, spoken by hand over HTTP/1.1 (as a browser's fetch would): binary and
//! text modes, a server stream, CORS, and every layer (auth, metrics, audit) applied; and by a real
//! npm client, Connect-ES with clients generated from `proto/` (`web/scripts/grpc-web-probe.ts`).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf as _, Bytes};
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;
use switchboard::auth::Role;
use switchboard::proto::v1;

use crate::calls::{CallScript, log_in, report};
use crate::helpers::{TestApp, TestOptions, http1, spawn_app, spawn_app_with, token};

const DESK: &str = "https://desk.example.com";

/// The PBX offers a call from Ada's number and rings `agent` with it.
async fn ring(app: &TestApp, call_id: &str, agent: &str) {
    use v1::CallEventType::{Offered, Ringing};
    let script = CallScript::new(call_id)
        .event(Offered, "")
        .event(Ringing, agent);
    for event in script.events {
        assert_eq!(report(app, event).await.outcome(), v1::AckOutcome::Accepted);
    }
}

/// One gRPC-web frame: flag byte, big-endian length, payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a response body into its data messages and its trailers.
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

fn grpc_status(trailers: &str) -> Option<&str> {
    trailers
        .lines()
        .find_map(|line| line.trim().strip_prefix("grpc-status:"))
        .map(str::trim)
}

fn request(
    path: &str,
    content_type: &str,
    token: Option<&str>,
    origin: Option<&str>,
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::post(path)
        .header("host", "switchboard")
        .header("content-type", content_type)
        .header("x-grpc-web", "1");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    builder.body(Full::new(Bytes::from(body))).expect("request")
}

fn admin_token() -> String {
    token(Role::Admin, "web-admin", None)
}

/// A unary call in binary mode: the response's headers, messages and trailers.
async fn unary(
    app: &TestApp,
    path: &str,
    message: &impl prost::Message,
    token: Option<&str>,
) -> (http::HeaderMap, Vec<Vec<u8>>, String) {
    let body = frame(0, &message.encode_to_vec());
    let response = http1(&app.address)
        .await
        .send_request(request(
            path,
            "application/grpc-web+proto",
            token,
            None,
            body,
        ))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let (messages, mut trailers) = frames(&body);
    // A trailers-only answer (an error before any message) carries its status in the headers.
    if let Some(status) = headers.get("grpc-status") {
        trailers.push_str(&format!(
            "grpc-status:{}\r\n",
            status.to_str().unwrap_or("?")
        ));
    }
    (headers, messages, trailers)
}

#[tokio::test]
async fn lookup_over_grpc_web_in_binary_and_text_modes_on_http1_goes_through_every_layer() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let lookup = v1::LookupRequest {
        caller_number: "+14155550100".into(),
        ..Default::default()
    };
    let path = "/switchboard.v1.ScreenPopService/Lookup";

    let (headers, messages, trailers) = unary(&app, path, &lookup, Some(&admin_token())).await;
    assert_eq!(headers["content-type"], "application/grpc-web+proto");
    assert_eq!(grpc_status(&trailers), Some("0"), "{trailers}");
    let pop = v1::LookupResponse::decode(messages[0].as_slice())
        .expect("a LookupResponse")
        .pop
        .expect("pop");
    assert_eq!(pop.card.expect("card").customer_id, ada.id);

    // Text mode: the same frames, base64.
    // (The response is text when the client accepts it, as grpc-web's text clients say.)
    let body = STANDARD
        .encode(frame(0, &lookup.encode_to_vec()))
        .into_bytes();
    let mut text_request = request(
        path,
        "application/grpc-web-text",
        Some(&admin_token()),
        None,
        body,
    );
    text_request.headers_mut().insert(
        "accept",
        http::HeaderValue::from_static("application/grpc-web-text"),
    );
    let response = http1(&app.address)
        .await
        .send_request(text_request)
        .await
        .expect("response");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("application/grpc-web-text"),
        "{content_type} {:?}",
        response.status()
    );
    let text = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    // Each frame may be base64-encoded on its own: decode them one by one.
    let mut decoded = Vec::new();
    for chunk in String::from_utf8_lossy(&text).split_inclusive('=') {
        for piece in chunk.split('=').filter(|p| !p.is_empty()) {
            let padded = format!("{piece}{}", "=".repeat((4 - piece.len() % 4) % 4));
            decoded.extend(STANDARD.decode(padded).expect("base64"));
        }
    }
    let (messages, trailers) = frames(&decoded);
    assert_eq!(grpc_status(&trailers), Some("0"), "{trailers}");
    assert_eq!(
        v1::LookupResponse::decode(messages[0].as_slice())
            .expect("decoded")
            .pop
            .expect("pop")
            .r#match(),
        v1::MatchKind::Exact
    );

    // The auth layer applies: no token, UNAUTHENTICATED (16); an agent may not read the audit.
    let (_, messages, trailers) = unary(&app, path, &lookup, None).await;
    assert!(messages.is_empty());
    assert_eq!(grpc_status(&trailers), Some("16"), "{trailers}");
    let agent = token(Role::Agent, "a-17", None);
    let (_, _, trailers) = unary(
        &app,
        "/switchboard.v1.AuditService/ListAuditEvents",
        &v1::ListAuditEventsRequest::default(),
        Some(&agent),
    )
    .await;
    assert_eq!(grpc_status(&trailers), Some("7"), "{trailers}");

    // Bad input is a clear status, as on native gRPC.
    let (_, _, trailers) = unary(
        &app,
        path,
        &v1::LookupRequest {
            caller_number: "hello".into(),
            ..Default::default()
        },
        Some(&admin_token()),
    )
    .await;
    assert_eq!(grpc_status(&trailers), Some("3"), "{trailers}");

    // Metrics and the audit trail saw the gRPC-web calls like any other.
    let samples = crate::metrics::scrape(&app).await;
    let counted = samples
        .iter()
        .filter(|(name, _)| {
            name.starts_with("switchboard_rpc_requests_total")
                && name.contains("ScreenPopService/Lookup")
        })
        .map(|(_, value)| *value)
        .sum::<f64>();
    assert!(counted >= 4.0, "gRPC-web lookups counted: {counted}");
    let audited = crate::helpers::eventually(Duration::from_secs(5), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(read_count), 0)::bigint FROM audit_events \
             WHERE actor = 'web-admin' AND rpc LIKE '%Lookup'",
        )
        .fetch_one(&app.db)
        .await
        .expect("audit");
        n >= 2
    })
    .await;
    assert!(audited, "the pops read over gRPC-web are audited");
}

#[tokio::test]
async fn a_softphone_on_grpc_web_gets_the_ringing_push_with_the_pop() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    log_in(&app, "a-17").await;
    let watch = v1::WatchAgentRequest {
        agent_id: "a-17".into(),
    };
    let agent = token(Role::Agent, "a-17", None);
    let response = http1(&app.address)
        .await
        .send_request(request(
            "/switchboard.v1.AgentService/WatchAgent",
            "application/grpc-web+proto",
            Some(&agent),
            None,
            frame(0, &watch.encode_to_vec()),
        ))
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut buffer = bytes::BytesMut::new();
    let mut next = async || -> v1::WatchAgentResponse {
        loop {
            if buffer.len() >= 5 {
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if buffer.len() >= 5 + len {
                    let flag = buffer[0];
                    buffer.advance(5);
                    let payload = buffer.split_to(len);
                    assert_eq!(flag & 0x80, 0, "a message, not the trailers");
                    return v1::WatchAgentResponse::decode(payload).expect("a WatchAgentResponse");
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("a push within 10 s")
                .expect("the stream stays open")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                buffer.extend_from_slice(&data);
            }
        }
    };
    assert_eq!(next().await.kind(), v1::AgentCallEventKind::Synced);

    ring(&app, "c-web", "a-17").await;
    let ringing = next().await;
    assert_eq!(ringing.kind(), v1::AgentCallEventKind::Ringing);
    let card = ringing.pop.expect("pop").card.expect("card");
    assert_eq!(card.display_name, "Ada Lovelace");
}

/// The response's `access-control-*` headers.
fn cors_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("access-control-"))
        .map(|(name, value)| {
            (
                name.to_string(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn preflight(app: &TestApp, origin: &str) -> http::Response<hyper::body::Incoming> {
    let request = http::Request::options("/switchboard.v1.ScreenPopService/Lookup")
        .header("host", "switchboard")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        )
        .body(Full::new(Bytes::new()))
        .expect("request");
    http1(&app.address)
        .await
        .send_request(request)
        .await
        .expect("answer")
}

#[tokio::test]
async fn cors_answers_allowed_origins_only_and_lets_browsers_cache_the_preflight() {
    let app = spawn_app_with(TestOptions {
        cors_allow_origins: vec![http::HeaderValue::from_static(DESK)],
        ..TestOptions::default()
    })
    .await;
    let allowed = preflight(&app, DESK).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], DESK);
    assert_eq!(headers["access-control-max-age"], "86400");
    let allow_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii");
    for header in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(allow_headers.contains(header), "{allow_headers}");
    }
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("ascii")
            .contains("POST")
    );

    let refused = preflight(&app, "https://evil.example.com").await;
    assert_eq!(
        cors_headers(refused.headers()),
        Vec::<(String, String)>::new(),
        "a disallowed origin gets no CORS headers"
    );

    // The call itself, from the allowed origin: the gRPC-web headers are readable by the page.
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let lookup = v1::LookupRequest {
        caller_number: "+14155550100".into(),
        ..Default::default()
    };
    let call = |origin: &'static str| {
        let body = frame(0, &lookup.encode_to_vec());
        let app = &app;
        async move {
            http1(&app.address)
                .await
                .send_request(request(
                    "/switchboard.v1.ScreenPopService/Lookup",
                    "application/grpc-web+proto",
                    Some(&admin_token()),
                    Some(origin),
                    body,
                ))
                .await
                .expect("response")
        }
    };
    let from_desk = call(DESK).await;
    assert_eq!(from_desk.headers()["access-control-allow-origin"], DESK);
    let exposed = from_desk.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for header in ["grpc-status", "grpc-message"] {
        assert!(exposed.contains(header), "{exposed}");
    }
    let from_elsewhere = call("https://evil.example.com").await;
    assert_eq!(
        cors_headers(from_elsewhere.headers()),
        Vec::<(String, String)>::new()
    );

    // With no allow-list (the default), nobody gets CORS headers.
    let closed = spawn_app().await;
    assert_eq!(
        cors_headers(preflight(&closed, DESK).await.headers()),
        Vec::<(String, String)>::new()
    );
}

/// Connect-ES's gRPC-web transport for Node (`@connectrpc/connect-node`, over HTTP/1.1), with the
/// clients `protoc-gen-es` generated from `proto/` into `web/src/gen`: a lookup, then a WatchAgent
/// stream that receives the RINGING push with the card.
#[tokio::test]
async fn a_connect_es_grpc_web_client_looks_up_and_receives_the_ringing_push() {
    use tokio::io::AsyncBufReadExt as _;

    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let tsx = web.join("node_modules/.bin/tsx");
    assert!(
        tsx.exists(),
        "web/node_modules is missing: run `npm ci` in web/ (scripts/test.sh does)"
    );
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let mut probe = tokio::process::Command::new(&tsx)
        .arg("scripts/grpc-web-probe.ts")
        .current_dir(&web)
        .env("SWITCHBOARD_URL", &app.address)
        .env("SWITCHBOARD_TOKEN", token(Role::Agent, "a-17", None))
        .env("SWITCHBOARD_AGENT_TOKEN", token(Role::Agent, "a-17", None))
        .env("SWITCHBOARD_AGENT_ID", "a-17")
        .env("SWITCHBOARD_CALLER", "sip:+14155550100@pbx.example.com")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the probe");
    let mut lines = tokio::io::BufReader::new(probe.stdout.take().expect("stdout")).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the probe answers within 30 s")
            .expect("stdout readable")
            .expect("the probe printed a line before exiting (its stderr says why)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };

    let lookup = next().await;
    assert_eq!(lookup["step"], "lookup");
    assert_eq!(lookup["match"], "EXACT");
    assert_eq!(lookup["name"], "Ada Lovelace");
    let synced = next().await;
    assert_eq!(
        (synced["step"].as_str(), synced["kind"].as_str()),
        (Some("push"), Some("SYNCED"))
    );

    ring(&app, "c-npm", "a-17").await;
    let ringing = next().await;
    assert_eq!(ringing["kind"], "RINGING");
    assert_eq!(ringing["callId"], "c-npm");
    assert_eq!(ringing["name"], "Ada Lovelace");
    let status = tokio::time::timeout(Duration::from_secs(10), probe.wait())
        .await
        .expect("the probe exits after the push")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
}
