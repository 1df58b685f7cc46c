//! Health, reflection and shutdown: what Kubernetes and grpcurl see.

use std::process::Stdio;
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
    PrivatePostgres, ServerProcess, TestOptions, eventually, free_port, fresh_database, spawn_app,
    spawn_app_with,
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
    // Every service answers a probe that names it (a Kubernetes gRPC probe may name any).
    let services = switchboard::proto::service_names();
    assert!(services.len() >= 17, "{services:?}");
    for service in services {
        assert_eq!(app.health_status(service).await, Some(SERVING), "{service}");
    }

    let mut reflection = ServerReflectionClient::new(app.channel.clone());
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
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let mut server = ServerProcess::start(&database_url, &prefix, port, &[], Stdio::null()).await;
    let status = server.signal_and_wait("TERM").await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_calls_finish() {
    let mut app = spawn_app().await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let port = app.address.rsplit(':').next().expect("port").to_owned();

    // A lookup that is still waiting on PostgreSQL when the shutdown begins.
    let mut blocker = app.db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let mut pops = app.pops.clone();
    let in_flight = tokio::spawn(async move {
        pops.lookup(v1::LookupRequest {
            caller_number: "+14155550100".into(),
            ..Default::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = app.begin_shutdown();

    let refused = eventually(Duration::from_secs(5), || {
        let port = port.clone();
        async move {
            tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .is_err()
        }
    })
    .await;
    assert!(refused, "no new connections once draining");
    assert!(!stopping.is_finished(), "waits for the in-flight lookup");

    blocker.commit().await.expect("release");
    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight lookup completes")
        .into_inner();
    assert_eq!(
        response
            .pop
            .and_then(|p| p.card)
            .expect("card")
            .display_name,
        "Ada Lovelace"
    );
    stopping.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn logs_are_json_and_carry_no_phone_numbers_or_names() {
    let database_url = fresh_database(&crate::helpers::admin_database_url()).await;
    let port = free_port();
    let (log, log_file) = crate::helpers::LogFile::create("sb-log");
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let envs = [("RUST_LOG", "debug"), ("SWITCHBOARD_LOG_FORMAT", "json")];
    let mut server = ServerProcess::start(&database_url, &prefix, port, &envs, log_file).await;
    let channel = server.channel().await;
    let mut customers = v1::customer_service_client::CustomerServiceClient::new(channel.clone());
    let mut pops = v1::screen_pop_service_client::ScreenPopServiceClient::new(channel);
    customers
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Philomena Quarrington".into(),
            contact_points: vec![
                crate::helpers::phone("+1 415 555 0163"),
                crate::helpers::email("pq@example.com"),
            ],
            ..Default::default()
        })
        .await
        .expect("created");
    for _ in 0..2 {
        pops.lookup(v1::LookupRequest {
            caller_number: "415-555-0163".into(),
            call_id: "call-9".into(),
            ..Default::default()
        })
        .await
        .expect("pop");
    }
    let rejected = pops
        .lookup(v1::LookupRequest {
            caller_number: "+1 555 0163 999".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(rejected.code(), Code::InvalidArgument);

    let status = server.signal_and_wait("TERM").await;
    assert!(status.success(), "exit status {status:?}");
    let logs = log.take();
    assert!(logs.lines().count() > 5, "debug logging produced output");
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    for secret in [
        "5550163",
        "555 0163",
        "Quarrington",
        "pq@example.com",
        crate::helpers::TEST_SECRET,
        "Bearer ",
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}");
    }
}

#[tokio::test]
async fn the_dev_token_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let database_url = fresh_database(&crate::helpers::admin_database_url()).await;
    let port = free_port();
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(format!("sb-dev-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("dev-token");
    // Left by an older version, world-readable.
    std::fs::write(&path, "old").expect("old token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path_text = path.to_str().expect("utf-8 path");
    let mut server = ServerProcess::start(
        &database_url,
        &prefix,
        port,
        &[
            ("SWITCHBOARD_DEV", "true"),
            ("SWITCHBOARD_DEV_TOKEN_FILE", path_text),
        ],
        Stdio::null(),
    )
    .await;
    let metadata = std::fs::metadata(&path).expect("token file");
    let token = std::fs::read_to_string(&path).expect("token");
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert!(token.starts_with("ey"), "a JWT was written");
    assert!(server.signal_and_wait("TERM").await.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn with_postgresql_down_sigterm_still_exits_zero_within_the_drain_timeout_and_names_what_was_lost()
 {
    let postgres = crate::helpers::PrivatePostgres::start();
    let database_url = fresh_database(&postgres.admin_url()).await;
    let port = free_port();
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let (log, log_file) = crate::helpers::LogFile::create("sb-stop");
    let envs = [("SWITCHBOARD_DRAIN_TIMEOUT_SECS", "3")];
    let mut server = ServerProcess::start(&database_url, &prefix, port, &envs, log_file).await;
    let channel = server.channel().await;
    let mut customers = v1::customer_service_client::CustomerServiceClient::new(channel.clone());
    let mut pops = v1::screen_pop_service_client::ScreenPopServiceClient::new(channel);
    customers
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Ada Lovelace".into(),
            contact_points: vec![crate::helpers::phone("+1 415 555 0100")],
            ..Default::default()
        })
        .await
        .expect("created");
    let pop = v1::LookupRequest {
        caller_number: "+14155550100".into(),
        ..Default::default()
    };
    let cached = crate::helpers::eventually(Duration::from_secs(5), || {
        let mut pops = pops.clone();
        let pop = pop.clone();
        async move {
            pops.lookup(pop)
                .await
                .is_ok_and(|r| r.get_ref().source() == v1::PopSource::Cache)
        }
    })
    .await;
    assert!(cached, "the card is cached");

    postgres.stop_immediately();
    // Audited reads that PostgreSQL can no longer take.
    for _ in 0..10 {
        let answer = pops
            .lookup(pop.clone())
            .await
            .expect("a hot pop still answers");
        assert_eq!(answer.get_ref().source(), v1::PopSource::Cache);
    }
    let stopping = std::time::Instant::now();
    let status = server.signal_and_wait("TERM").await;
    let took = stopping.elapsed();
    let logs = log.take();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_millis(4500),
        "stopped in {took:?}, drain timeout 3 s"
    );
    let lost: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("audit entries not written"))
        .collect();
    assert_eq!(lost.len(), 1, "one line names what was lost: {logs}");
    // The ten reads after PostgreSQL stopped, and any audited just before that was not written.
    let count: usize = lost[0]
        .split(" audit entries not written")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {}", lost[0]));
    assert!(count >= 10, "{}", lost[0]);
}

/// The service's PostgreSQL sessions run with JIT off (PostgreSQL compiles JIT code afresh at
/// each execution, which cost its short statements more than it saved), unless the database URL
/// asks for it.
#[tokio::test]
async fn the_service_sessions_run_without_jit_unless_the_url_asks() {
    let settings = switchboard::db::PoolSettings {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(10),
    };
    let url = crate::helpers::admin_database_url();
    let jit = |url: String| {
        let settings = settings.clone();
        async move {
            let pool = switchboard::db::lazy_pool(&url, &settings).expect("pool");
            let jit: String = sqlx::query_scalar("SHOW jit")
                .fetch_one(&pool)
                .await
                .expect("jit");
            jit
        }
    };
    assert_eq!(jit(url.clone()).await, "off");
    let separator = if url.contains('?') { '&' } else { '?' };
    assert_eq!(
        jit(format!("{url}{separator}options=-c%20jit%3Don")).await,
        "on",
        "the URL's own setting stands"
    );
}
