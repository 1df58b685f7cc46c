//! The web app, served by the binary, in a real browser: Debian's Chromium driven by
//! playwright-core (`web/tests/browser.ts`), against a live server with the data each story needs.
//! A failing story leaves its screenshot in `target/browser-screenshots/`.

use std::time::Duration;

use serde_json::Value;
use switchboard::auth::Role;
use switchboard::proto::v1;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with, token};

const AGENT: &str = "web-agent";
const GATEWAY: &str = "web-pbx";
const CALLER: &str = "+14155550142";
const SHARED: &str = "+14155550143";

fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots")
}

/// A customer with an open case and a past call with a disposition, an agent in a team, and a
/// number two customers share.
async fn contact_center(app: &TestApp) -> v1::Customer {
    app.dispositions(&[("resolved", true), ("callback", false)])
        .await;
    let ada = app.create_customer("Ada Browser", &[CALLER]).await;
    app.open_case(&ada.id, "web-case").await;
    let mut interactions = app.interactions();
    let past = interactions
        .log_interaction(v1::LogInteractionRequest {
            request_id: "web-past".into(),
            customer_id: ada.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "someone-else".into(),
            started_at: Some(switchboard::proto_time::to_timestamp(
                chrono::Utc::now() - chrono::Duration::days(2),
            )),
            ..Default::default()
        })
        .await
        .expect("past interaction")
        .into_inner()
        .interaction
        .expect("interaction");
    interactions
        .complete_wrap_up(v1::CompleteWrapUpRequest {
            interaction_id: past.id,
            disposition_code: "callback".into(),
            notes: String::new(),
        })
        .await
        .expect("past wrap-up");
    app.create_customer("Maria Shared", &[SHARED]).await;
    app.create_customer("Luis Shared", &[SHARED]).await;
    app.agents
        .clone()
        .upsert_agent(v1::UpsertAgentRequest {
            agent_id: AGENT.into(),
            display_name: "Web Agent".into(),
            team: "Support".into(),
            queues: vec!["web".into(), "wallboard-q".into()],
            ..Default::default()
        })
        .await
        .expect("agent provisioned");
    app.agents
        .clone()
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: AGENT.into(),
            state: v1::AgentState::Away.into(),
            reason: "Training".into(),
        })
        .await
        .expect("agent state");
    ada
}

/// The browser story running against `app`: its JSON lines on stdout, and its stdin.
struct Story {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    scenario: &'static str,
}

impl Story {
    fn start(app: &TestApp, scenario: &'static str, extra: &[(&str, String)]) -> Self {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let tsx = web.join("node_modules/.bin/tsx");
        assert!(
            tsx.exists(),
            "web/node_modules is missing: run `npm ci` in web/ (scripts/test.sh does)"
        );
        let mut command = tokio::process::Command::new(&tsx);
        command
            .arg("tests/browser.ts")
            .current_dir(&web)
            .env("SCENARIO", scenario)
            .env("SWITCHBOARD_URL", &app.address)
            .env("AGENT_ID", AGENT)
            .env("AGENT_TOKEN", token(Role::Agent, AGENT, None))
            .env("SUPERVISOR_TOKEN", token(Role::Supervisor, "web-sup", None))
            .env("GATEWAY_ID", GATEWAY)
            .env(
                "GATEWAY_TOKEN",
                token(Role::Gateway, GATEWAY, Some(GATEWAY)),
            )
            .env("CALLER", CALLER)
            .env("CUSTOMER_NAME", "Ada Browser")
            .env("CASE_SUBJECT", "refund")
            .env("LAST_DISPOSITION", "callback")
            .env("SHARED_NUMBER", SHARED)
            .env("SCREENSHOTS", screenshots())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("node runs the browser story");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            lines,
            scenario,
        }
    }

    /// The next step the story printed; a failed step fails the test with what the story saw.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
            .await
            .expect("the browser story answers within 120 s")
            .expect("stdout readable")
            .expect("the story printed a line before exiting (its stderr says why)");
        let step: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_ne!(
            step["step"],
            "failed",
            "the {} story failed (screenshot in {}): {step}",
            self.scenario,
            screenshots().display()
        );
        step
    }

    /// Reads steps up to `step`, returning it.
    async fn until(&mut self, step: &str) -> Value {
        loop {
            let next = self.next().await;
            if next["step"] == step {
                return next;
            }
        }
    }

    async fn finish(mut self) -> Vec<Value> {
        let mut steps = Vec::new();
        loop {
            let step = self.next().await;
            let done = step["step"] == "done";
            steps.push(step);
            if done {
                break;
            }
        }
        let status = self.child.wait().await.expect("the story exits");
        assert!(
            status.success(),
            "the {} story exited with {status}",
            self.scenario
        );
        steps
    }
}

/// GET `path` over HTTP/1.1: (status, content type, body).
async fn get(app: &TestApp, path: &str) -> (u16, String, Vec<u8>) {
    use http_body_util::BodyExt as _;
    let response = crate::helpers::http1(&app.address)
        .await
        .send_request(
            http::Request::get(path)
                .header("host", "switchboard")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, content_type, body.to_vec())
}

#[tokio::test]
async fn the_binary_serves_the_app_and_turns_it_off_on_request() {
    let app = spawn_app().await;
    let (status, content_type, body) = get(&app, "/").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&body).contains("/app.js"));
    let (status, content_type, _) = get(&app, "/app.js").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    let (status, _, body) = get(&app, "/ui/config.json").await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &br#"{"devMode":false}"#[..])
    );

    let quiet = spawn_app_with(TestOptions {
        web_ui: false,
        ..Default::default()
    })
    .await;
    let mut served = Vec::new();
    for path in ["/", "/app.js", "/ui/config.json"] {
        served.push(get(&quiet, path).await.0);
    }
    assert!(
        served.iter().all(|s| *s != 200),
        "--web-ui=false still served: {served:?}"
    );
}

/// An agent signs in, goes available by keyboard, sees the card of a ringing call (name, open case,
/// last interaction), wraps up by keyboard after ENDED, and finds the interaction in the timeline
/// and in the next pop of the number. axe-core finds no serious or critical violation.
#[tokio::test]
async fn an_agent_takes_a_call_from_ring_to_wrap_up_in_the_browser() {
    let app = spawn_app().await;
    let ada = contact_center(&app).await;
    let steps = Story::start(&app, "agent", &[]).finish().await;
    let wrapped = steps
        .iter()
        .find(|s| s["step"] == "wrapped-up")
        .expect("the story wrapped up");
    let (disposition, notes): (String, String) = sqlx::query_as(
        "SELECT disposition_code, notes FROM interactions \
         WHERE customer_id = $1::uuid AND agent_id = $2 AND wrap_up_completed_at IS NOT NULL",
    )
    .bind(&ada.id)
    .bind(AGENT)
    .fetch_one(&app.db)
    .await
    .expect("the desktop's interaction is stored on the customer");
    assert_eq!(disposition, wrapped["disposition"].as_str().expect("code"));
    assert!(
        !notes.contains("4111 1111 1111 1111"),
        "stored masked: {notes}"
    );
    let cases: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cases WHERE customer_id = $1::uuid \
         AND subject = 'Refund follow-up from the call'",
    )
    .bind(&ada.id)
    .fetch_one(&app.db)
    .await
    .expect("cases");
    assert_eq!(cases, 1, "the case opened from the call");
}

#[tokio::test]
async fn unclear_callers_are_picked_or_created_and_the_interaction_names_them() {
    let app = spawn_app().await;
    contact_center(&app).await;
    let steps = Story::start(&app, "multiple", &[]).finish().await;
    let picked = steps
        .iter()
        .find(|s| s["step"] == "picked")
        .expect("a pick");
    let customer: String = sqlx::query_scalar(
        "SELECT customer_id::text FROM interactions WHERE gateway_id = $1 AND call_id = $2",
    )
    .bind(GATEWAY)
    .bind(picked["call_id"].as_str().expect("call id"))
    .fetch_one(&app.db)
    .await
    .expect("the call's interaction");
    assert_eq!(customer, picked["customer_id"].as_str().expect("id"));
    let created = steps
        .iter()
        .find(|s| s["step"] == "created")
        .expect("a withheld caller created");
    let name: String = sqlx::query_scalar(
        "SELECT c.display_name FROM interactions i JOIN customers c ON c.id = i.customer_id \
         WHERE i.gateway_id = $1 AND i.call_id = $2",
    )
    .bind(GATEWAY)
    .bind(created["call_id"].as_str().expect("call id"))
    .fetch_one(&app.db)
    .await
    .expect("the withheld call's interaction, on the customer created for it");
    assert_eq!(name, "Walk-in Caller");
}

#[tokio::test]
async fn the_wallboard_shows_a_call_waiting_then_in_service_and_charts_todays_kpis() {
    let app = spawn_app().await;
    contact_center(&app).await;
    let steps = Story::start(&app, "wallboard", &[]).finish().await;
    let charts = steps
        .iter()
        .find(|s| s["step"] == "charts")
        .expect("charts drawn");
    assert_eq!(charts["rates"].as_array().map(Vec::len), Some(4));
}

/// The roll-out page: a baseline month and the weeks since the launch, seeded as in
/// `tests/api/scorecard.rs` (the answer much faster, the handle time within its noise, one agent
/// logging nothing). The verdicts and the weekly adoption chart are GetScorecard's.
#[tokio::test]
async fn the_roll_out_page_shows_the_scorecards_verdicts_and_weekly_adoption() {
    use crate::scorecard::{answered, log, provision};
    use chrono::{Duration as Days, SubsecRound as _, Utc};
    let app = spawn_app().await;
    app.dispositions(&[("noted", false)]).await;
    provision(&app, "a-1", "Ada Agent", "north").await;
    provision(&app, "a-2", "Ben Agent", "north").await;
    let customer = app
        .create_customer("Dora Customer", &["+1 415 555 0199"])
        .await
        .id;
    let now = Utc::now().trunc_subsecs(0);
    for i in 0..40 {
        let (wait, talk) = if i % 2 == 0 { (30, 200) } else { (50, 400) };
        let at = now - Days::days(50) + Days::hours(i);
        answered(&app, &format!("b{i}"), at, "a-1", wait, talk).await;
    }
    for i in 0..40 {
        let (agent, wait, talk) = if i % 2 == 0 {
            ("a-1", 5, 190)
        } else {
            ("a-2", 15, 390)
        };
        let at = now - Days::days(20) + Days::hours(i);
        answered(&app, &format!("p{i}"), at, agent, wait, talk).await;
        if i % 4 == 0 {
            log(
                &app,
                &customer,
                &format!("p{i}"),
                "a-1",
                at,
                ("noted", "", ""),
            )
            .await;
        }
    }
    let steps = Story::start(&app, "rollout", &[]).finish().await;
    let verdicts = &steps
        .iter()
        .find(|s| s["step"] == "verdicts")
        .expect("verdicts shown")["verdicts"];
    assert_eq!(verdicts["averageSpeedOfAnswer"], "Improved");
    assert_eq!(verdicts["averageHandleTime"], "No clear change");
    let silent = steps
        .iter()
        .find(|s| s["step"] == "teams")
        .and_then(|s| s["silent"].as_str())
        .expect("the team row");
    assert_eq!(silent, "1: Ben Agent");
}

/// The desktop's stream outlives the server: stopped and started again on the same port, the
/// stream reconnects and the snapshot brings back the call the agent is on, with its card.
#[tokio::test]
async fn the_desktop_stream_survives_a_server_restart() {
    let mut app = spawn_app().await;
    contact_center(&app).await;
    let mut story = Story::start(&app, "restart", &[]);
    story.until("restart").await;
    let stopped = app.stop_for_restart().await;
    let _again = stopped.start_again().await;
    let stdin = story.child.stdin.as_mut().expect("stdin");
    stdin.write_all(b"restarted\n").await.expect("told");
    let resumed = story.until("resumed").await;
    assert!(resumed["call_id"].as_str().is_some());
    story.finish().await;
}

/// Ring-to-visible latency: from the gateway's ReportCallEvent(RINGING) to the card in the DOM,
/// over RING_CALLS calls (default 100). Measured, not asserted: the figures go to BENCHMARKS.md.
#[tokio::test]
async fn ring_to_visible_latency_is_measured() {
    let app = spawn_app().await;
    contact_center(&app).await;
    let calls = std::env::var("RING_CALLS").unwrap_or_else(|_| "100".into());
    let steps = Story::start(&app, "latency", &[("RING_CALLS", calls.clone())])
        .finish()
        .await;
    let measured = steps
        .iter()
        .find(|s| s["step"] == "ring-to-visible")
        .expect("measured");
    assert_eq!(measured["calls"].to_string(), calls);
    println!("ring-to-visible: {measured}");
    std::fs::create_dir_all(screenshots()).expect("target dir");
    std::fs::write(
        screenshots().join("ring-to-visible.json"),
        measured.to_string(),
    )
    .expect("written");
}
