//! PostgreSQL read replicas (`--database-replica-url`): a real streaming standby of a test's own
//! PostgreSQL, copied with `pg_basebackup` on loopback.

use std::time::Duration;

use switchboard::proto::v1;

use crate::helpers::{
    PrivatePostgres, TestApp, TestOptions, eventually, fresh_database, spawn_app_with,
    with_database,
};

/// A primary of the test's own, a standby of it (replay delayed by `apply_delay`), and the
/// service on the primary with the standby as its replica.
async fn with_replica(
    apply_delay: Option<&str>,
) -> (PrivatePostgres, PrivatePostgres, TestApp, String) {
    let primary = PrivatePostgres::start();
    let standby = PrivatePostgres::standby_of(&primary, apply_delay);
    let database_url = fresh_database(&primary.admin_url()).await;
    let name = database_url.rsplit('/').next().expect("name").to_owned();
    let replica_url = with_database(&standby.admin_url(), &name);
    let app = spawn_app_with(TestOptions {
        postgres_admin_url: Some(primary.admin_url()),
        database_url: Some(database_url),
        database_replica_urls: vec![replica_url.clone()],
        ..TestOptions::default()
    })
    .await;
    (primary, standby, app, replica_url)
}

/// How many times the replica has read `table` (sequential and index scans), from its own
/// statistics.
/// Scans of `table` on the replica, its partitions' included (a partitioned table's own
/// statistics count nothing: the scans are its partitions').
async fn replica_reads(replica_url: &str, table: &str) -> i64 {
    let replica = sqlx::PgPool::connect(replica_url).await.expect("replica");
    sqlx::query_scalar(
        "SELECT COALESCE(sum(seq_scan + COALESCE(idx_scan, 0)), 0)::int8 \
         FROM pg_stat_user_tables s \
         WHERE s.relname = $1 OR s.relid IN ( \
           SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = to_regclass($1))",
    )
    .bind(table)
    .fetch_one(&replica)
    .await
    .expect("replica statistics")
}

fn by_name(name: &str) -> v1::SearchCustomersRequest {
    v1::SearchCustomersRequest {
        query: Some(v1::search_customers_request::Query::NamePrefix(name.into())),
        ..Default::default()
    }
}

async fn search(app: &TestApp, name: &str) -> Vec<String> {
    app.customers
        .clone()
        .search_customers(by_name(name))
        .await
        .expect("search answered")
        .into_inner()
        .customers
        .into_iter()
        .map(|c| c.display_name)
        .collect()
}

/// The calls offered in the hour the test calls (`CallScript`) are dated.
async fn kpis(app: &TestApp) -> v1::GetKpisResponse {
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    v1::analytics_service_client::AnalyticsServiceClient::new(app.channel.clone())
        .get_kpis(v1::GetKpisRequest {
            period: Some(v1::Period {
                start: at(1_800_000_000 - 1_800),
                end: at(1_800_000_000 + 1_800),
            }),
            ..Default::default()
        })
        .await
        .expect("KPIs answered")
        .into_inner()
}

async fn audit_list(app: &TestApp) -> usize {
    v1::audit_service_client::AuditServiceClient::new(app.channel.clone())
        .list_audit_events(v1::ListAuditEventsRequest::default())
        .await
        .expect("audit list answered")
        .into_inner()
        .events
        .len()
}

/// Customer search, KPIs and audit lists read the replica (its own statistics count the reads);
/// with the replica stopped, every one of them is still answered, from the primary.
#[tokio::test]
async fn searches_kpis_and_audit_lists_read_the_replica_and_fall_back_when_it_stops() {
    let (_primary, standby, app, replica_url) = with_replica(None).await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;

    // The monitor measures the replica every 250 ms; then searches go to it.
    let before = replica_reads(&replica_url, "customers").await;
    let searched = eventually(Duration::from_secs(15), || async {
        assert_eq!(search(&app, "Ada").await, ["Ada Lovelace"]);
        replica_reads(&replica_url, "customers").await > before
    })
    .await;
    assert!(searched, "the replica served the search");

    // A pop that misses Redis reads the replica's stored cards (each number here is new, so
    // each is a miss; the replica has replayed past the customer's creation by now).
    let mut n = 0;
    let app_ref = &app;
    let popped = eventually(Duration::from_secs(15), || {
        n += 1;
        let number = format!("+1415555{:04}", 1000 + n);
        let app = app_ref;
        async move {
            let (pop, _) = app.pop(&number).await;
            assert_eq!(pop.r#match(), v1::MatchKind::None, "nobody has {number}");
            app.stats
                .replica_queries
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        }
    })
    .await;
    assert!(popped, "a replica answered a pop");
    assert_eq!(card_name(&app).await, "Ada Lovelace");

    let before = replica_reads(&replica_url, "calls").await;
    let counted = eventually(Duration::from_secs(15), || async {
        kpis(&app).await;
        replica_reads(&replica_url, "calls").await > before
    })
    .await;
    assert!(counted, "the replica served the KPIs");

    let before = replica_reads(&replica_url, "audit_events").await;
    let listed = eventually(Duration::from_secs(15), || async {
        audit_list(&app).await;
        replica_reads(&replica_url, "audit_events").await > before
    })
    .await;
    assert!(listed, "the replica served the audit list");

    let metrics = reqwest::get(format!("http://{}/metrics", app.metrics_address))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("switchboard_db_replica_lag_seconds{replica=\"0\"}"),
        "the lag is a metric: {metrics}"
    );

    // Stopped without warning while reads run back to back: the reads that meet the dead
    // replica before the monitor notices are sent again to the primary; none fails.
    let reading = {
        let (customers, channel) = (app.customers.clone(), app.channel.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < until {
                let found = customers
                    .clone()
                    .search_customers(by_name("Ada"))
                    .await
                    .map_err(|status| format!("search failed after {answered}: {status}"))?;
                assert_eq!(found.into_inner().customers.len(), 1);
                v1::audit_service_client::AuditServiceClient::new(channel.clone())
                    .list_audit_events(v1::ListAuditEventsRequest::default())
                    .await
                    .map_err(|status| format!("audit list failed after {answered}: {status}"))?;
                answered += 1;
            }
            Ok::<_, String>(answered)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::spawn_blocking(move || standby.stop_immediately())
        .await
        .expect("stopped");
    let answered = reading
        .await
        .expect("reader")
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(answered > 10, "reads went on: {answered}");
    kpis(&app).await;
}

/// Replay delayed by 3 s: the replica shows the past. A pop right after an update shows the
/// new card (pops read the primary); a KPI read right after a call counts it (it waits for the
/// replica to replay past the call, then reads the primary); a search shows the new name once
/// the replica is measured past the lag bound, and never the old name after that.
#[tokio::test]
async fn a_replica_replaying_late_never_shows_kpis_or_pops_the_past() {
    let (_primary, _standby, app, _replica_url) = with_replica(Some("3s")).await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    assert_eq!(card_name(&app).await, "Ada Lovelace");
    // The replica has caught up (the primary idle for longer than the delay).
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The rename's fence is past what the replica has replayed (3 s late): the miss after it
    // reads the primary, and the card it caches is the new one.
    let replica_pops = app
        .stats
        .replica_queries
        .load(std::sync::atomic::Ordering::Relaxed);
    app.rename(&ada, "Ada King").await;
    for _ in 0..5 {
        assert_eq!(
            card_name(&app).await,
            "Ada King",
            "a pop after the update shows the new card"
        );
    }
    assert_eq!(
        app.stats
            .replica_queries
            .load(std::sync::atomic::Ordering::Relaxed),
        replica_pops,
        "no pop read the replica that has not replayed the rename"
    );
    assert_eq!(offered(&kpis(&app).await), 0.0);
    for event in crate::calls::CallScript::answered_by("c-late", "a-1").events {
        let ack = crate::calls::report(&app, event).await;
        assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{ack:?}");
    }
    assert_eq!(
        offered(&kpis(&app).await),
        1.0,
        "the call just reported is counted"
    );

    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..10 {
        assert_eq!(search(&app, "Ada").await, ["Ada King"]);
    }
}

async fn card_name(app: &TestApp) -> String {
    let (pop, _) = app.pop("+14155550100").await;
    pop.card.map(|card| card.display_name).unwrap_or_default()
}

fn offered(response: &v1::GetKpisResponse) -> f64 {
    response
        .total
        .as_ref()
        .and_then(|t| t.kpis.as_ref())
        .and_then(|k| k.offered.as_ref())
        .and_then(|v| v.value)
        .unwrap_or_default()
}
