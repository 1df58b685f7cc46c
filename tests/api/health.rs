//! Health, reflection and shutdown: what Kubernetes and grpcurl see.

use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard::proto::v1;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::{
    PrivatePostgres, TestOptions, eventually, free_port, fresh_database, spawn_app, spawn_app_with,
};

const SERVING: i32 = ServingStatus::Serving as i32;
const NOT_SERVING: i32 = ServingStatus::NotServing as i32;

#[tokio::test]
async fn health_reports_serving_and_reflection_lists_the_services() {
    let app = spawn_app().await;
    let serving = eventually(Duration::from_secs(5), || async {
        app.health_status("").await == Some(SERVING)
    })
    .await;
    assert!(serving);
    assert_eq!(
        app.health_status("switchboard.v1.ScreenPopService").await,
        Some(SERVING)
    );

    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "switchboard.v1.CustomerService",
        "switchboard.v1.ScreenPopService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn health_follows_postgres_going_away_and_coming_back() {
    let postgres = PrivatePostgres::start();
    let app = spawn_app_with(TestOptions {
        postgres_admin_url: Some(postgres.admin_url()),
        acquire_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.health_status("").await == Some(SERVING)
        })
        .await
    );
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.pop("+14155550100").await;

    postgres.stop_immediately();
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.health_status("").await == Some(NOT_SERVING)
        })
        .await,
        "NOT_SERVING while PostgreSQL is down"
    );
    let started = std::time::Instant::now();
    let status = app
        .customers
        .clone()
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Lost?".into(),
            ..Default::default()
        })
        .await
        .expect_err("no database");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast, took {:?}",
        started.elapsed()
    );
    let (cached, _) = app.pop("+14155550100").await;
    assert_eq!(
        cached.card.expect("hot cards still pop").display_name,
        "Ada Lovelace"
    );
    let uncached = app
        .pops
        .clone()
        .lookup(v1::LookupRequest {
            caller_number: "+12125550199".into(),
            ..Default::default()
        })
        .await
        .expect_err("cold lookup needs the database");
    assert_eq!(uncached.code(), Code::Unavailable);

    postgres.resume();
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.health_status("").await == Some(SERVING)
        })
        .await,
        "SERVING again after PostgreSQL returns"
    );
    app.create_customer("Back Again", &[]).await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT display_name FROM customers ORDER BY created_at")
            .fetch_all(&app.db)
            .await
            .expect("names");
    assert_eq!(
        names,
        ["Ada Lovelace", "Back Again"],
        "the failed create left nothing behind"
    );
}

#[tokio::test]
async fn the_binary_drains_and_exits_zero_on_sigterm() {
    let database_url = fresh_database(&crate::helpers::admin_database_url()).await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .env("DATABASE_URL", &database_url)
        .env("REDIS_URL", crate::helpers::redis_url())
        .env(
            "SWITCHBOARD_REDIS_PREFIX",
            format!("t:{}:", uuid::Uuid::new_v4().simple()),
        )
        .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let address = format!("http://127.0.0.1:{port}");
    let serving = eventually(Duration::from_secs(30), || {
        let address = address.clone();
        async move {
            let Ok(channel) = tonic::transport::Channel::from_shared(address)
                .expect("uri")
                .connect()
                .await
            else {
                return false;
            };
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            matches!(health.check(request).await, Ok(r) if r.get_ref().status == SERVING)
        }
    })
    .await;
    assert!(serving, "the binary serves");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "no longer accepting"
    );
}
