//! The NATS JetStream sink against a real `nats-server` (Debian's package) on loopback, read by a
//! JetStream consumer.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::process::{Child, Command};

use crate::helpers::{TestApp, TestOptions, free_port, spawn_app_with};

/// `nats-server` with JetStream, its store in `dir`.
async fn start_nats(port: u16, dir: &Path) -> Child {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("nats-server");
    let child = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server runs (scripts/test.sh installs it)");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nats-server never listened on {port}");
}

async fn customers(app: &TestApp, prefix: &str, n: usize) {
    for i in 0..n {
        app.create_customer(&format!("{prefix} {i}"), &[]).await;
    }
}

/// Every feed event reaches the JetStream stream once (by `Nats-Msg-Id`), in feed order, on
/// `switchboard.v1.<topic>`, across a NATS server restart and a Switchboard restart.
#[tokio::test]
async fn every_event_reaches_jetstream_once_in_order_across_restarts() {
    let store = tempfile::tempdir().expect("store");
    let port = free_port();
    let mut nats = start_nats(port, store.path()).await;
    let url = format!("nats://127.0.0.1:{port}");
    let options = || {
        let mut options = TestOptions::default();
        options.webhooks.nats_url = Some(url.clone());
        options
    };
    let mut app = spawn_app_with(options()).await;
    let db = app.db.clone();

    customers(&app, "Before", 4).await;
    // NATS stops (its store kept) while events keep coming, and starts again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.start_kill().expect("stop NATS");
    nats.wait().await.expect("stopped");
    customers(&app, "While NATS is down", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = crate::metrics::scrape(&app).await;
    assert_eq!(
        crate::metrics::value(&down, "switchboard_nats_published_total"),
        4.0,
        "nothing acknowledged while NATS is down"
    );
    let _nats = start_nats(port, store.path()).await;
    // The three held back went out once NATS was back (the client retried them, or the sink did).
    let caught_up = crate::helpers::eventually(Duration::from_secs(20), || async {
        let samples = crate::metrics::scrape(&app).await;
        crate::metrics::value(&samples, "switchboard_nats_published_total") >= 7.0
    })
    .await;
    let samples = crate::metrics::scrape(&app).await;
    assert!(caught_up, "{samples:?}");

    // Switchboard restarts; more events.
    let stopped = app.stop_for_restart().await;
    let app = stopped.start_again_with(options()).await;
    customers(&app, "After", 3).await;

    let owed: Vec<i64> = {
        let mut owed = Vec::new();
        for _ in 0..200 {
            owed =
                sqlx::query_scalar("SELECT p.position FROM feed_positions p ORDER BY p.position")
                    .fetch_all(&db)
                    .await
                    .expect("positions");
            if owed.len() >= 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        owed
    };
    assert_eq!(owed.len(), 10, "ten customers, ten events");

    let client = async_nats::connect(&url)
        .await
        .expect("a consumer connects");
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(switchboard::webhooks::NATS_STREAM)
        .await
        .expect("Switchboard made the stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("test".into()),
            ..Default::default()
        })
        .await
        .expect("a consumer");
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < owed.len() && tokio::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        while let Some(message) = batch.next().await {
            let message = message.expect("a message");
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .expect("Nats-Msg-Id");
            seen.push((id, message.subject.to_string()));
            message.ack().await.expect("ack");
        }
    }
    let ids: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    let expected: Vec<String> = owed.iter().map(|p| format!("sb_{p}")).collect();
    assert_eq!(ids, expected, "every event once, in feed order");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no id twice"
    );
    assert!(
        seen.iter()
            .all(|(_, subject)| subject == "switchboard.v1.customer"),
        "{seen:?}"
    );
}
