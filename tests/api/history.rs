//! Partitioned history (docs/SCALING.md step 3): the audit trail by month, converted from an
//! existing database without losing a row, its months made ahead by the service, and retention
//! that drops whole months.

use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sqlx::PgPool;
use switchboard::history::{Table, month_of};
use switchboard::proto::v1;

// The command runs beside this test's own server, on the test's one runtime thread: waiting for
// it must not block that thread (the server may hold the lock the command waits for).
use tokio::process::Command;

use crate::helpers::{TestOptions, database_at_migration, eventually, spawn_app_with};

/// The last migration before audit_events was partitioned.
const BEFORE_PARTITIONING: i64 = 20261207000034;

/// Every audit row, in id order, as text: what a conversion must keep exactly.
async fn audit_rows(db: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT concat_ws('|', id, at, actor, role, rpc, customer_id, request_id, outcome, \
                read_count, last_at) FROM audit_events ORDER BY id",
    )
    .fetch_all(db)
    .await
    .expect("audit rows")
}

/// Each partition of audit_events with its rows: (partition, rows).
async fn rows_by_partition(db: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT tableoid::regclass::text, count(*) FROM audit_events GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .expect("partitions")
}

async fn months(db: &PgPool) -> Vec<NaiveDate> {
    switchboard::history::store::months(db, Table::AuditEvents)
        .await
        .expect("months")
}

fn months_from(first: NaiveDate, count: u32) -> Vec<NaiveDate> {
    (0..count)
        .map(|i| first.checked_add_months(Months::new(i)).expect("month"))
        .collect()
}

/// A database at the last migration before partitioning, holding audit rows over fourteen
/// months (two a week, some summarized, every outcome) and one with a far-off time.
async fn database_before_partitioning() -> (String, PgPool) {
    let (url, db) = database_at_migration(BEFORE_PARTITIONING).await;
    sqlx::query(
        "INSERT INTO audit_events (at, actor, role, rpc, customer_id, request_id, outcome, \
                                   read_count, last_at) \
         SELECT now() - make_interval(days => g * 7 / 2, secs => g), 'agent-' || (g % 7), 'agent', \
                'Lookup', CASE WHEN g % 3 = 0 THEN gen_random_uuid() END, 'req-' || g, \
                (ARRAY['read', 'written', 'denied', 'erased'])[1 + g % 4], 1 + g % 5, \
                CASE WHEN g % 5 > 0 THEN now() - make_interval(days => g * 7 / 2) END \
         FROM generate_series(0, 120) g",
    )
    .execute(&db)
    .await
    .expect("audit rows");
    (url, db)
}

#[tokio::test]
async fn an_audit_trail_of_fourteen_months_converts_to_monthly_partitions_without_losing_a_row() {
    let (url, db) = database_before_partitioning().await;
    let before = audit_rows(&db).await;
    assert_eq!(before.len(), 121);
    let oldest: DateTime<Utc> = sqlx::query_scalar("SELECT min(at) FROM audit_events")
        .fetch_one(&db)
        .await
        .expect("oldest");

    // The service migrates its database at start-up.
    let app = spawn_app_with(TestOptions {
        database_url: Some(url),
        ..Default::default()
    })
    .await;
    assert_eq!(audit_rows(&db).await, before, "every row, as it was");

    let now = Utc::now();
    let first = month_of(oldest);
    let ahead = month_of(now)
        .checked_add_months(Months::new(2))
        .expect("month");
    let span = (ahead.year() - first.year()) * 12 + ahead.month() as i32 - first.month() as i32;
    assert_eq!(
        months(&db).await,
        months_from(first, span as u32 + 1),
        "one partition per month from the oldest row to two months ahead"
    );
    let partitions = rows_by_partition(&db).await;
    assert!(partitions.len() >= 14, "{partitions:?}");
    assert!(
        partitions
            .iter()
            .all(|(name, _)| name.starts_with("audit_events_p")),
        "no row left in the default partition: {partitions:?}"
    );
    let misplaced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events \
         WHERE tableoid::regclass::text <> 'audit_events_p' || to_char(at AT TIME ZONE 'UTC', 'YYYY_MM')",
    )
    .fetch_one(&db)
    .await
    .expect("misplaced");
    assert_eq!(misplaced, 0, "each row in its own month");

    // New rows go on from the same sequence, into the current month, and the trail lists old
    // and new together.
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let current = format!("audit_events_p{}", month_of(now).format("%Y_%m"));
    let (partition, id): (String, i64) = sqlx::query_as(
        "SELECT tableoid::regclass::text, id FROM audit_events WHERE customer_id = $1::uuid",
    )
    .bind(&ada.id)
    .fetch_one(&db)
    .await
    .expect("the write's audit row");
    assert_eq!(partition, current);
    let newest_before: i64 = before
        .last()
        .and_then(|row| row.split('|').next())
        .and_then(|id| id.parse().ok())
        .expect("an id");
    assert!(id > newest_before, "the sequence went on: {id}");
    let listed = app
        .audit()
        .list_audit_events(v1::ListAuditEventsRequest {
            page_size: 200,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .events;
    assert_eq!(listed.len(), before.len() + 1, "old and new, one list");

    // A list over one month reads that month's partition only (PostgreSQL's own scan counts).
    let month = month_of(now)
        .checked_sub_months(Months::new(3))
        .expect("month");
    let (since, until) = (
        month.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
        month
            .checked_add_months(Months::new(1))
            .expect("month")
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc(),
    );
    let scans = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT relname::text, seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_user_tables \
             WHERE relname LIKE 'audit\\_events\\_%' ORDER BY 1",
        )
        .fetch_all(&db)
        .await
        .expect("statistics")
    };
    // Statistics arrive late: a backend that has gone idle reports within 10 s (PostgreSQL's
    // PGSTAT_IDLE_INTERVAL). Let what came before (the conversion's partition checks, the lists
    // above, which read every month) be reported first; then list the one month twenty times and
    // compare what each partition gained.
    tokio::time::sleep(Duration::from_secs(11)).await;
    const LISTS: i64 = 20;
    let before_scans = scans().await;
    for _ in 0..LISTS {
        let in_month = app
            .audit()
            .list_audit_events(v1::ListAuditEventsRequest {
                since: Some(switchboard::proto_time::to_timestamp(since)),
                until: Some(switchboard::proto_time::to_timestamp(until)),
                page_size: 200,
                ..Default::default()
            })
            .await
            .expect("list a month")
            .into_inner()
            .events;
        assert!(!in_month.is_empty(), "the month has rows");
    }
    let target = format!("audit_events_p{}", month.format("%Y_%m"));
    let gained = |after: &[(String, i64)]| -> Vec<(String, i64)> {
        after
            .iter()
            .zip(&before_scans)
            .map(|(a, b)| (a.0.clone(), a.1 - b.1))
            .collect()
    };
    let counted = eventually(Duration::from_secs(25), || async {
        gained(&scans().await)
            .iter()
            .any(|(name, n)| *name == target && *n >= LISTS)
    })
    .await;
    assert!(counted, "{target} was read by every list");
    let read: Vec<(String, i64)> = gained(&scans().await)
        .into_iter()
        .filter(|(_, n)| *n >= LISTS / 2)
        .collect();
    assert_eq!(
        read.iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        [target.as_str()],
        "no other month was read by them: {read:?}"
    );
}

#[tokio::test]
async fn the_service_makes_the_months_ahead_and_a_late_month_takes_its_rows_from_the_default() {
    let app = spawn_app_with(TestOptions::default()).await;
    let now = Utc::now();
    let expected = switchboard::history::months_to_make(now);
    let made = months(&app.db).await;
    assert!(
        expected.iter().all(|month| made.contains(month)),
        "{made:?} holds {expected:?}"
    );

    // A month ahead dropped by hand (or never made), and a row far ahead (a clock that is off)
    // that has no month yet: it lands in the default partition.
    let next = expected[1];
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE audit_events_p{}",
        next.format("%Y_%m")
    )))
    .execute(&app.db)
    .await
    .expect("drop a month ahead");
    assert!(!months(&app.db).await.contains(&next));
    let far = month_of(now)
        .checked_add_months(Months::new(6))
        .expect("month");
    let at = far.and_hms_opt(12, 0, 0).expect("noon").and_utc();
    sqlx::query(
        "INSERT INTO audit_events (at, actor, role, rpc, outcome) \
         VALUES ($1, 'pbx-9', 'gateway', 'ReportCallEvent', 'denied')",
    )
    .bind(at)
    .execute(&app.db)
    .await
    .expect("a far row");
    let home = |db: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT tableoid::regclass::text FROM audit_events WHERE actor = 'pbx-9'",
        )
        .fetch_one(&db)
        .await
        .expect("the far row")
    };
    assert_eq!(home(app.db.clone()).await, "audit_events_default");

    // The next instance's upkeep (at its start, then hourly) makes the missing month again and
    // reports the row in the default partition.
    let second = spawn_app_with(TestOptions {
        database_url: Some(app.database_url.clone()),
        ..Default::default()
    })
    .await;
    let back = eventually(Duration::from_secs(10), || async {
        months(&second.db).await.contains(&next)
    })
    .await;
    assert!(back, "the service made {next} again");
    let reported = eventually(Duration::from_secs(10), || async {
        crate::metrics::scrape(&second)
            .await
            .get("switchboard_history_default_rows")
            == Some(&1.0)
    })
    .await;
    assert!(reported, "the metric shows the row without a month");

    // Making its month moves it there.
    let made = switchboard::history::store::make_month(&app.db, Table::AuditEvents, far)
        .await
        .expect("make");
    assert!(made.is_some());
    assert_eq!(
        home(app.db.clone()).await,
        format!("audit_events_p{}", far.format("%Y_%m"))
    );
    assert!(
        switchboard::history::store::make_month(&app.db, Table::AuditEvents, far)
            .await
            .expect("again")
            .is_none(),
        "made once"
    );
    assert_eq!(
        switchboard::history::store::default_rows(&app.db)
            .await
            .expect("count"),
        0
    );
}

#[tokio::test]
async fn retention_drops_whole_months_and_keeps_every_row_of_the_months_it_keeps() {
    let (url, db) = database_before_partitioning().await;
    let app = spawn_app_with(TestOptions {
        database_url: Some(url),
        ..Default::default()
    })
    .await;
    let now = Utc::now();
    let keep_from = switchboard::history::keep_from(now, 6).expect("month");
    let kept_before: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', id, at, actor, read_count) FROM audit_events \
         WHERE at >= $1::date ORDER BY id",
    )
    .bind(keep_from)
    .fetch_all(&db)
    .await
    .expect("kept rows");
    let older: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE at < $1::date")
        .bind(keep_from)
        .fetch_one(&db)
        .await
        .expect("older rows");
    assert!(older > 0 && !kept_before.is_empty());
    // A stray old row in the default partition goes too.
    sqlx::query(
        "INSERT INTO audit_events_default (at, actor, role, rpc, outcome) \
         VALUES ('1999-12-31T23:00:00Z', 'pbx-old', 'gateway', 'ReportCallEvent', 'denied')",
    )
    .execute(&db)
    .await
    .expect("stray row");

    let run = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["maintenance", "partitions", "--audit-retention-months", "6"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .await
        .expect("maintenance runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = String::from_utf8_lossy(&run.stdout);
    let oldest_left: NaiveDate = sqlx::query_scalar::<_, DateTime<Utc>>(
        "SELECT min(at) FROM audit_events WHERE at > '2000-01-01'",
    )
    .fetch_one(&db)
    .await
    .map(month_of)
    .expect("oldest left");
    assert_eq!(
        oldest_left, keep_from,
        "the oldest month left is the first kept"
    );
    assert!(
        report.contains(&format!(
            "audit_events_p{}",
            keep_from
                .checked_sub_months(Months::new(1))
                .expect("month")
                .format("%Y_%m")
        )),
        "the report names the months dropped: {report}"
    );

    let kept_after: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', id, at, actor, read_count) FROM audit_events ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .expect("rows left");
    assert_eq!(
        kept_after, kept_before,
        "every row of the months kept, and no other"
    );
    assert!(
        months(&db).await.iter().all(|month| *month >= keep_from),
        "no partition before {keep_from}"
    );
    let dropped_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relname ~ '^audit_events_p[0-9]{4}_[0-9]{2}$' \
           AND to_date(right(relname, 7), 'YYYY_MM') < $1",
    )
    .bind(keep_from)
    .fetch_one(&db)
    .await
    .expect("catalog");
    assert_eq!(
        dropped_tables, 0,
        "the old months are gone as tables, not emptied"
    );

    // Run again: nothing more to drop, and the service's writes go on.
    let again = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["maintenance", "partitions", "--audit-retention-months", "6"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .await
        .expect("maintenance runs again");
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("dropped: none"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    app.create_customer("Grace Hopper", &["+14155550101"]).await;
    let written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE outcome = 'written' AND at > now() - interval '1 minute'")
            .fetch_one(&db)
            .await
            .expect("written");
    assert!(written >= 1);
}

/// The months of `tables` that PostgreSQL analyzed while they were empty (default partitions
/// aside). It plans such a month as empty: a plan cached then scans the whole month as it fills.
/// A month never analyzed is planned with index scans.
pub(crate) async fn analyzed_empty_months(db: &PgPool, tables: &[&str]) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = ANY($1) AND c.reltuples = 0 AND right(c.relname, 8) <> '_default' \
         ORDER BY 1",
    )
    .bind(tables)
    .fetch_all(db)
    .await
    .expect("statistics")
}

#[tokio::test]
async fn no_month_of_a_new_database_is_analyzed_empty() {
    let app = spawn_app_with(TestOptions::default()).await;
    let tables: Vec<&str> = Table::ALL.iter().map(|table| table.name()).collect();
    let months: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = ANY($1)",
    )
    .bind(&tables)
    .fetch_one(&app.db)
    .await
    .expect("months");
    assert!(months >= 4 * 4, "{months}");
    let analyzed_empty = analyzed_empty_months(&app.db, &tables).await;
    assert!(analyzed_empty.is_empty(), "{analyzed_empty:?}");
}
