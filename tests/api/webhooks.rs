//! Webhooks against a real receiver on loopback (`web/tests/webhook-receiver.ts`), which checks
//! every signature with the `standardwebhooks` npm package: an implementation of the
//! specification independent of Switchboard's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use switchboard::proto::v1;
use switchboard::proto::v1::webhook_service_client::WebhookServiceClient;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::helpers::{
    Authed, ServerProcess, TestApp, TestOptions, eventually, free_port, spawn_app, spawn_app_with,
    violated_fields,
};

/// The receiver process and every line it printed.
struct Receiver {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(port: u16) -> Self {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        assert!(
            web.join("node_modules/tsx").exists(),
            "web/node_modules is missing: run `npm ci` in web/ (scripts/test.sh does)"
        );
        // Node itself, with tsx as its loader: killing it kills the receiver (the tsx wrapper
        // would leave its node child holding the port).
        let mut child = Command::new("node")
            .args(["--import", "tsx", "tests/webhook-receiver.ts"])
            .arg(port.to_string())
            .current_dir(&web)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the receiver runs");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver starts")
            .expect("a line")
            .expect("a line");
        let listening: Value = serde_json::from_str(&first).expect("JSON");
        let port = u16::try_from(listening["listening"].as_u64().expect("a port")).expect("port");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("lines").push(value);
                }
            }
        });
        Self {
            child,
            port,
            lines: seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn control(&self, body: Value) {
        let body = body.to_string();
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("the receiver listens");
        let request = format!(
            "POST /_control HTTP/1.1\r\nhost: receiver\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    }

    /// Every request to `path`, in arrival order.
    fn requests(&self, path: &str) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|line| line["path"] == path)
            .cloned()
            .collect()
    }

    /// The cursors of the requests to `path` that were accepted (2xx), in arrival order.
    fn accepted(&self, path: &str) -> Vec<i64> {
        self.requests(path)
            .iter()
            .filter(|r| (200..300).contains(&r["status"].as_i64().unwrap_or(0)))
            .map(|r| r["cursor"].as_str().unwrap_or("").parse().expect("cursor"))
            .collect()
    }

    async fn kill(mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("gone");
    }
}

/// A webhook's delivery attempts, newest first (up to 500).
async fn deliveries(
    client: &mut WebhookServiceClient<Authed>,
    id: &str,
) -> Vec<v1::WebhookDelivery> {
    client
        .list_deliveries(v1::ListDeliveriesRequest {
            id: id.to_owned(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("deliveries")
        .into_inner()
        .deliveries
}

fn webhooks(channel: &Authed) -> WebhookServiceClient<Authed> {
    WebhookServiceClient::new(channel.clone())
}

async fn create(
    client: &mut WebhookServiceClient<Authed>,
    url: String,
    topics: &[&str],
) -> (v1::Webhook, String) {
    let created = client
        .create_webhook(v1::CreateWebhookRequest {
            url,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            description: "ERP order sync".into(),
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    (created.webhook.expect("webhook"), created.secret)
}

/// The feed positions after `after` (of `topic`, all when empty), once at least `count` are
/// numbered: what a subscription owes.
async fn positions_after(db: &sqlx::PgPool, after: i64, topic: &str, count: usize) -> Vec<i64> {
    let mut positions = Vec::new();
    for _ in 0..200 {
        positions = sqlx::query_scalar(
            "SELECT p.position FROM feed_positions p JOIN feed_events e ON e.id = p.event_id \
             WHERE p.position > $1 AND ($2 = '' OR e.topic = $2) ORDER BY p.position",
        )
        .bind(after)
        .bind(topic)
        .fetch_all(db)
        .await
        .expect("positions");
        if positions.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        positions.len() >= count,
        "{count} events numbered: {positions:?}"
    );
    positions
}

/// Waits until the receiver accepted `expected` (at least) on `path`.
async fn delivered(receiver: &Receiver, path: &str, expected: &[i64]) {
    let arrived = eventually(Duration::from_secs(20), || async {
        let accepted = receiver.accepted(path);
        expected.iter().all(|p| accepted.contains(p))
    })
    .await;
    assert!(
        arrived,
        "expected {expected:?} at {path}, accepted {:?}",
        receiver.accepted(path)
    );
}

async fn make_customers(app: &TestApp, prefix: &str, n: usize) {
    for i in 0..n {
        app.create_customer(
            &format!("{prefix} {i}"),
            &[&format!("+1415555{:04}", 1000 + i)],
        )
        .await;
    }
}

/// Events arrive signed (an independent verifier accepts every one), in feed order, each once,
/// with ids and codes only: no name or number in any body.
#[tokio::test]
async fn a_webhook_gets_every_event_signed_in_order_with_no_personal_data() {
    let app = spawn_app().await;
    let receiver = Receiver::start(0).await;
    let mut client = webhooks(&app.channel);
    let (hook, secret) = create(&mut client, receiver.url("/erp"), &[]).await;
    assert!(secret.starts_with("whsec_"));
    assert_eq!(hook.state(), v1::WebhookState::Active);
    receiver
        .control(serde_json::json!({"secrets": [secret]}))
        .await;
    let start: i64 = hook.cursor.parse().expect("cursor");

    make_customers(&app, "Grace Hopper", 8).await;
    let owed = positions_after(&app.db, start, "customer", 8).await;
    delivered(&receiver, "/erp", &owed).await;

    let requests = receiver.requests("/erp");
    assert_eq!(receiver.accepted("/erp"), owed, "in order, each once");
    for request in &requests {
        assert_eq!(request["verified"], serde_json::json!([true]), "{request}");
        let cursor = request["cursor"].as_str().expect("cursor");
        assert_eq!(request["id"], format!("sb_{cursor}"));
        let body = request["body"].as_str().expect("body");
        assert!(!body.contains("Grace"), "no names: {body}");
        // The numbers are +1415555 1000 to 1007 (the digits "4155551" appear in none of a
        // body's ids or times but by a one-in-millions chance).
        assert!(!body.contains("4155551"), "no numbers: {body}");
        assert_eq!(request["concurrent"], 1, "one at a time");
    }
    assert_eq!(requests[0]["type"], "customer.created");

    // Its own deliveries are listed, newest first: runs of first attempts that cover every
    // event sent, each once. A run is recorded once its response is in, just after the receiver
    // saw the request: wait for the last one.
    let last = owed.last().expect("one").to_string();
    let mut listed = deliveries(&mut client, &hook.id).await;
    for _ in 0..100 {
        if listed.first().is_some_and(|d| d.through_cursor == last) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        listed = deliveries(&mut client, &hook.id).await;
    }
    let deliveries = listed;
    assert_eq!(
        deliveries[0].through_cursor,
        owed.last().expect("one").to_string()
    );
    let mut covered = Vec::new();
    for entry in deliveries.iter().rev() {
        let (first, last): (i64, i64) = (
            entry.cursor.parse().expect("cursor"),
            entry.through_cursor.parse().expect("through"),
        );
        let run: Vec<i64> = owed
            .iter()
            .copied()
            .filter(|p| (first..=last).contains(p))
            .collect();
        assert_eq!(run.len(), entry.events as usize, "{entry:?}");
        assert_eq!(run.first(), Some(&first), "{entry:?}");
        covered.extend(run);
    }
    assert_eq!(covered, owed, "each event once, in order");
    assert!(
        deliveries
            .iter()
            .all(|d| d.status_code == 204 && d.error.is_empty() && d.attempt == 1)
    );
}

/// The receiver answers 500 for a while, then hangs, then dies and comes back on its port:
/// every event arrives, accepted once each, in order, with no id missing; the failures are in
/// the delivery log.
#[tokio::test]
async fn a_receiver_that_fails_hangs_and_restarts_still_gets_every_event_in_order() {
    let app = spawn_app().await;
    let port = free_port();
    let receiver = Receiver::start(port).await;
    let mut client = webhooks(&app.channel);
    let (hook, secret) = create(&mut client, receiver.url("/erp"), &["customer"]).await;
    let secrets = serde_json::json!({"secrets": [secret]});
    receiver.control(secrets.clone()).await;
    let start: i64 = hook.cursor.parse().expect("cursor");

    make_customers(&app, "Before", 3).await;
    delivered(
        &receiver,
        "/erp",
        &positions_after(&app.db, start, "customer", 3).await,
    )
    .await;

    receiver.control(serde_json::json!({"mode": "fail"})).await;
    make_customers(&app, "During", 3).await;
    let failed = eventually(Duration::from_secs(10), || async {
        receiver
            .requests("/erp")
            .iter()
            .filter(|r| r["status"] == 500)
            .count()
            >= 2
    })
    .await;
    assert!(failed, "retried while failing");
    receiver.control(serde_json::json!({"mode": "hang"})).await;
    let hung = eventually(Duration::from_secs(10), || async {
        receiver.requests("/erp").iter().any(|r| r["status"] == 0)
    })
    .await;
    assert!(hung, "an attempt hung");
    let timed_out = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let id = hook.id.clone();
        async move {
            let log = deliveries(&mut client, &id).await;
            log.iter().any(|d| d.error == "timeout")
        }
    })
    .await;
    assert!(timed_out, "the hung attempt timed out");
    receiver.kill().await;
    make_customers(&app, "After", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let receiver = Receiver::start(port).await;
    receiver.control(secrets).await;
    let owed = positions_after(&app.db, start, "customer", 9).await;
    assert_eq!(owed.len(), 9);
    // The new receiver process gets what the old one had not accepted: the six after the first
    // three, in order, once each.
    let rest = &owed[3..];
    delivered(&receiver, "/erp", rest).await;
    assert_eq!(
        receiver.accepted("/erp"),
        rest,
        "in order, none missing, once each"
    );

    let log = deliveries(&mut client, &hook.id).await;
    let errors: Vec<&str> = log.iter().map(|d| d.error.as_str()).collect();
    assert!(errors.contains(&"status"), "{errors:?}");
    assert!(errors.contains(&"timeout"), "{errors:?}");
    assert!(
        errors.contains(&"connect"),
        "the receiver was down: {errors:?}"
    );
    assert!(log.iter().any(|d| d.status_code == 500));
    let hook = client
        .get_webhook(v1::GetWebhookRequest { id: hook.id })
        .await
        .expect("get")
        .into_inner()
        .webhook
        .expect("webhook");
    assert_eq!(hook.state(), v1::WebhookState::Active);
    assert_eq!(hook.attempts, 0, "all is well again");
}

/// With its attempts used up the subscription turns FAILING and stops, and says so (status,
/// metrics); ReplayWebhook starts it again from the event that failed.
#[tokio::test]
async fn a_failing_subscription_stops_and_replay_resumes_it() {
    let mut options = TestOptions::default();
    options.webhooks.max_attempts = 3;
    let app = spawn_app_with(options).await;
    let receiver = Receiver::start(0).await;
    let mut client = webhooks(&app.channel);
    let (hook, secret) = create(&mut client, receiver.url("/billing"), &["customer"]).await;
    receiver
        .control(serde_json::json!({"secrets": [secret], "mode": "fail"}))
        .await;
    let start: i64 = hook.cursor.parse().expect("cursor");
    make_customers(&app, "Failing", 1).await;

    let mut failing = None;
    for _ in 0..150 {
        let hook = client
            .get_webhook(v1::GetWebhookRequest {
                id: hook.id.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .webhook
            .expect("webhook");
        if hook.state() == v1::WebhookState::Failing {
            failing = Some(hook);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failing = failing.expect("the subscription turned FAILING");
    assert_eq!(failing.attempts, 3);
    assert_eq!(failing.last_error, "status 500");
    assert!(failing.failing_since.is_some());
    let metric = eventually(Duration::from_secs(10), || async {
        crate::metrics::value(
            &crate::metrics::scrape(&app).await,
            "switchboard_webhooks_failing",
        ) == 1.0
    })
    .await;
    assert!(metric, "the metrics say so");

    // Stopped: a new event is not sent, and nothing is skipped.
    make_customers(&app, "Waiting", 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.requests("/billing").len(), 3, "no more attempts");

    receiver.control(serde_json::json!({"mode": "ok"})).await;
    let replayed = client
        .replay_webhook(v1::ReplayWebhookRequest {
            id: hook.id.clone(),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner()
        .webhook
        .expect("webhook");
    assert_eq!(replayed.state(), v1::WebhookState::Active);
    let owed = positions_after(&app.db, start, "customer", 2).await;
    assert_eq!(owed.len(), 2);
    delivered(&receiver, "/billing", &owed).await;
    assert_eq!(receiver.accepted("/billing"), owed);

    // A replay from a cursor sends those events again, with the same ids.
    client
        .replay_webhook(v1::ReplayWebhookRequest {
            id: hook.id.clone(),
            after_cursor: start.to_string(),
            ..Default::default()
        })
        .await
        .expect("replay from a cursor");
    let again = eventually(Duration::from_secs(10), || async {
        receiver.accepted("/billing").len() == 4
    })
    .await;
    assert!(again, "{:?}", receiver.accepted("/billing"));
    assert_eq!(receiver.accepted("/billing")[2..], owed[..]);
}

/// Loopback, private and link-local targets are refused without the operator's allow-list;
/// with it, a redirect is a failed attempt (never followed), and an endless answer body is cut
/// off without holding delivery up.
#[tokio::test]
async fn internal_targets_are_refused_redirects_not_followed_and_bodies_capped() {
    let mut options = TestOptions::default();
    options.webhooks.allow = switchboard::webhooks::AllowList::default();
    options.webhooks.max_attempts = 2;
    let strict = spawn_app_with(options).await;
    let mut client = webhooks(&strict.channel);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "https://user:password@example.com/hook",
        "ftp://example.com/hook",
    ] {
        let refused = client
            .create_webhook(v1::CreateWebhookRequest {
                url: url.into(),
                ..Default::default()
            })
            .await
            .expect_err(url);
        assert_eq!(violated_fields(&refused), ["url"], "{url}");
    }

    let app = spawn_app().await;
    let receiver = Receiver::start(0).await;
    let mut client = webhooks(&app.channel);
    let (hook, secret) = create(&mut client, receiver.url("/moved"), &["customer"]).await;
    receiver
        .control(serde_json::json!({"secrets": [secret], "mode": "redirect"}))
        .await;
    make_customers(&app, "Redirected", 1).await;
    let tried = eventually(Duration::from_secs(10), || async {
        receiver.requests("/moved").len() >= 2
    })
    .await;
    assert!(tried);
    assert!(
        receiver.requests("/elsewhere").is_empty(),
        "the redirect was not followed"
    );
    let log = deliveries(&mut client, &hook.id).await;
    assert!(
        log.iter()
            .all(|d| d.status_code == 302 && d.error == "redirect")
    );

    // An endless body: the 200 counts, the rest is dropped, and the next event goes out.
    receiver.control(serde_json::json!({"mode": "big"})).await;
    let (big, secret) = create(&mut client, receiver.url("/big"), &["customer"]).await;
    receiver
        .control(serde_json::json!({"secrets": [secret]}))
        .await;
    let start: i64 = big.cursor.parse().expect("cursor");
    make_customers(&app, "Streamed", 2).await;
    let owed = positions_after(&app.db, start, "customer", 2).await;
    delivered(&receiver, "/big", &owed).await;
}

/// A rotation: during the overlap every delivery carries two signatures, one for each secret,
/// so a receiver holding either verifies it.
#[tokio::test]
async fn during_a_secret_rotation_both_secrets_verify() {
    let app = spawn_app().await;
    let receiver = Receiver::start(0).await;
    let mut client = webhooks(&app.channel);
    let (hook, old) = create(&mut client, receiver.url("/rotating"), &["customer"]).await;
    let rotated = client
        .rotate_webhook_secret(v1::RotateWebhookSecretRequest {
            id: hook.id.clone(),
            overlap_seconds: Some(3600),
            secret: String::new(),
        })
        .await
        .expect("rotated")
        .into_inner();
    let new = rotated.secret;
    assert_ne!(new, old);
    assert!(
        rotated
            .webhook
            .expect("webhook")
            .previous_secret_valid_until
            .is_some()
    );
    receiver
        .control(serde_json::json!({"secrets": [old, new]}))
        .await;
    make_customers(&app, "Rotated", 1).await;
    let start: i64 = hook.cursor.parse().expect("cursor");
    delivered(
        &receiver,
        "/rotating",
        &positions_after(&app.db, start, "customer", 1).await,
    )
    .await;
    assert_eq!(
        receiver.requests("/rotating")[0]["verified"],
        serde_json::json!([true, true])
    );

    // The overlap ended: only the new secret signs.
    client
        .rotate_webhook_secret(v1::RotateWebhookSecretRequest {
            id: hook.id.clone(),
            overlap_seconds: Some(0),
            secret: new.clone(),
        })
        .await
        .expect("rotated again");
    make_customers(&app, "Rotated again", 1).await;
    let two = eventually(Duration::from_secs(10), || async {
        receiver.accepted("/rotating").len() == 2
    })
    .await;
    assert!(two);
    assert_eq!(
        receiver.requests("/rotating")[1]["verified"],
        serde_json::json!([false, true])
    );
}

/// Bad requests get field violations or NOT_FOUND, never INTERNAL.
#[tokio::test]
async fn bad_webhook_requests_are_refused_clearly() {
    let app = spawn_app().await;
    let mut client = webhooks(&app.channel);
    let bad = client
        .create_webhook(v1::CreateWebhookRequest {
            url: "http://127.0.0.1:9/x".into(),
            topics: vec!["invoices".into()],
            secret: "not-a-secret".into(),
            after_cursor: "-3".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(fields, ["after_cursor", "secret", "topics[0]"]);
    let ahead = client
        .create_webhook(v1::CreateWebhookRequest {
            url: "http://127.0.0.1:9/x".into(),
            after_cursor: "999999999".into(),
            ..Default::default()
        })
        .await
        .expect_err("ahead");
    assert_eq!(violated_fields(&ahead), ["after_cursor"]);
    let missing = client
        .get_webhook(v1::GetWebhookRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let not_id = client
        .pause_webhook(v1::PauseWebhookRequest { id: "x".into() })
        .await
        .expect_err("not an id");
    assert_eq!(violated_fields(&not_id), ["id"]);
    let (hook, _) = create(&mut client, "http://127.0.0.1:9/x".into(), &[]).await;
    let both = client
        .replay_webhook(v1::ReplayWebhookRequest {
            id: hook.id.clone(),
            after_cursor: "0".into(),
            since: Some(prost_types::Timestamp::default()),
        })
        .await
        .expect_err("both");
    assert_eq!(violated_fields(&both), ["since"]);
    let paused = client
        .pause_webhook(v1::PauseWebhookRequest {
            id: hook.id.clone(),
        })
        .await
        .expect("paused")
        .into_inner()
        .webhook
        .expect("webhook");
    assert_eq!(paused.state(), v1::WebhookState::Paused);
    let updated = client
        .update_webhook(v1::UpdateWebhookRequest {
            id: hook.id.clone(),
            topics: vec!["order".into()],
            update_mask: vec!["topics".into()],
            ..Default::default()
        })
        .await
        .expect("updated")
        .into_inner()
        .webhook
        .expect("webhook");
    assert_eq!(updated.topics, ["order"]);
    assert_eq!(updated.url, "http://127.0.0.1:9/x", "outside the mask");
    let listed = client
        .list_webhooks(v1::ListWebhooksRequest::default())
        .await
        .expect("listed")
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 1);
    client
        .delete_webhook(v1::DeleteWebhookRequest {
            id: hook.id.clone(),
        })
        .await
        .expect("deleted");
    let again = client
        .delete_webhook(v1::DeleteWebhookRequest { id: hook.id })
        .await
        .expect_err("gone");
    assert_eq!(again.code(), tonic::Code::NotFound);
}

/// Three instances on one database share the subscriptions through leases: no subscription is
/// ever sent two requests at once, and when the instance delivering is SIGKILLed another takes
/// its lease over and every event still arrives, in order of first arrival, none missing. A
/// repeat is possible only for events in flight at the kill, with the same webhook-id.
#[tokio::test]
async fn three_instances_share_the_work_and_survive_a_kill() {
    let app = spawn_app().await;
    let receiver = Receiver::start(0).await;
    let envs = [
        ("SWITCHBOARD_WEBHOOK_ALLOW_CIDR", "127.0.0.0/8"),
        ("SWITCHBOARD_WEBHOOK_LEASE_MS", "1500"),
        ("SWITCHBOARD_WEBHOOK_TIMEOUT_MS", "500"),
        ("SWITCHBOARD_WEBHOOK_RETRY_BASE_MS", "50"),
        ("SWITCHBOARD_WEBHOOK_RETRY_MAX_MS", "300"),
    ];
    let mut instances = Vec::new();
    for n in 0..3 {
        instances.push(
            ServerProcess::start(
                &app.database_url,
                &format!("{}hooks{n}:", app.redis_prefix),
                free_port(),
                &envs,
                std::process::Stdio::null(),
            )
            .await,
        );
    }
    let channel = instances[0].channel().await;
    let mut client = webhooks(&channel);
    let paths = ["/a", "/b", "/c"];
    let mut starts = Vec::new();
    let mut secrets = Vec::new();
    for path in paths {
        let (hook, secret) = create(&mut client, receiver.url(path), &["customer"]).await;
        starts.push(hook.cursor.parse::<i64>().expect("cursor"));
        secrets.push(secret);
    }
    receiver
        .control(serde_json::json!({"secrets": secrets}))
        .await;

    // Customers keep coming (through the in-process instance) while one of the three dies.
    let writer = {
        let customers = app.customers.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let mut customers = customers.clone();
                customers
                    .create_customer(v1::CreateCustomerRequest {
                        display_name: format!("Load {i}"),
                        ..Default::default()
                    })
                    .await
                    .expect("created");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut killed = instances.remove(1);
    killed.signal_and_wait("KILL").await;
    writer.await.expect("writer");

    for (i, path) in paths.iter().enumerate() {
        let owed = positions_after(&app.db, starts[i], "customer", 60).await;
        assert_eq!(owed.len(), 60);
        delivered(&receiver, path, &owed).await;
        let mut first: Vec<i64> = Vec::new();
        for cursor in receiver.accepted(path) {
            if !first.contains(&cursor) {
                first.push(cursor);
            }
        }
        assert_eq!(
            first, owed,
            "{path}: every event, in order of first arrival"
        );
        let requests = receiver.requests(path);
        assert!(
            requests.iter().all(|r| r["concurrent"] == 1),
            "{path}: never two requests at once"
        );
        assert!(
            requests.iter().all(|r| r["verified"]
                .as_array()
                .is_some_and(|v| v.contains(&Value::Bool(true)))),
            "{path}: signed"
        );
        let repeats = receiver.accepted(path).len() - owed.len();
        assert!(
            repeats <= 50,
            "{path}: {repeats} repeats, at most a page at the kill"
        );
    }
}

/// Only SERVICE and ADMIN credentials manage webhooks: an agent or a supervisor is refused.
#[tokio::test]
async fn only_systems_and_admins_manage_webhooks() {
    use switchboard::auth::Role;
    let app = spawn_app().await;
    for role in [Role::Agent, Role::Supervisor, Role::Gateway] {
        let channel = crate::helpers::authed(
            app.raw_channel.clone(),
            &crate::helpers::token(role, "someone", Some("pbx")),
        );
        let refused = webhooks(&channel)
            .list_webhooks(v1::ListWebhooksRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{role:?}");
    }
    let service = crate::helpers::authed(
        app.raw_channel.clone(),
        &crate::helpers::token(Role::Service, "erp-bridge", None),
    );
    webhooks(&service)
        .list_webhooks(v1::ListWebhooksRequest::default())
        .await
        .expect("a SERVICE credential lists");
}

/// An erased customer: the receiver gets `customer.erased` with the customer's id, so it can
/// erase too, and an event about them replayed afterwards has its details emptied.
#[tokio::test]
async fn an_erasure_reaches_the_receiver_and_empties_what_is_replayed() {
    let app = spawn_app().await;
    let receiver = Receiver::start(0).await;
    let mut client = webhooks(&app.channel);
    let (hook, secret) = create(&mut client, receiver.url("/erase"), &["customer"]).await;
    receiver
        .control(serde_json::json!({"secrets": [secret]}))
        .await;
    let start: i64 = hook.cursor.parse().expect("cursor");
    let customer = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    switchboard::proto::v1::privacy_service_client::PrivacyServiceClient::new(app.channel.clone())
        .erase_customer(v1::EraseCustomerRequest {
            customer_id: customer.id.clone(),
        })
        .await
        .expect("erased");
    let owed = positions_after(&app.db, start, "customer", 2).await;
    delivered(&receiver, "/erase", &owed).await;
    let erased = receiver
        .requests("/erase")
        .into_iter()
        .find(|r| r["type"] == "customer.erased")
        .expect("customer.erased was delivered");
    let body: Value = serde_json::from_str(erased["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["data"]["customer_id"], customer.id);

    client
        .replay_webhook(v1::ReplayWebhookRequest {
            id: hook.id,
            after_cursor: start.to_string(),
            ..Default::default()
        })
        .await
        .expect("replayed");
    let again = eventually(Duration::from_secs(10), || async {
        receiver.accepted("/erase").len() >= 2 * owed.len()
    })
    .await;
    assert!(again);
    let replayed_created = receiver
        .requests("/erase")
        .into_iter()
        .filter(|r| r["type"] == "customer.created")
        .nth(1)
        .expect("the creation, replayed");
    let body: Value =
        serde_json::from_str(replayed_created["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["data"]["details"], serde_json::json!({}), "{body}");
}
