//! ScreenPopService: who is calling, fast and never stale, with or without Redis.

use std::time::Duration;

use switchboard::proto::v1;
use switchboard::redis_link::{RedisLink, RedisSettings};
use switchboard::screenpop::PopStats;
use switchboard::screenpop::cache::{CacheTtls, NumberKey, PopCache};

use crate::helpers::{
    PrivateRedis, TestOptions, eventually, free_port, phone, spawn_app, spawn_app_with,
    violated_fields,
};

pub(crate) fn card_name(pop: &v1::ScreenPop) -> &str {
    pop.card
        .as_ref()
        .map_or("", |card| card.display_name.as_str())
}

#[tokio::test]
async fn pops_match_exact_multiple_and_none() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.create_customer("Maria Garcia", &["+14155550111"]).await;
    app.create_customer("Luis Garcia", &["(415) 555-0111"])
        .await;

    let (exact, _) = app.pop("415-555-0100").await;
    assert_eq!(exact.r#match(), v1::MatchKind::Exact);
    assert_eq!(exact.normalized_number, "+14155550100");
    let card = exact.card.expect("card");
    assert_eq!(
        (card.customer_id.as_str(), card.display_name.as_str()),
        (ada.id.as_str(), "Ada Lovelace")
    );
    assert_eq!(card.primary_contacts[0].value, "+14155550100");

    let (shared, _) = app.pop("+1 415 555 0111").await;
    assert_eq!(shared.r#match(), v1::MatchKind::Multiple);
    assert_eq!(shared.candidate_count, 2);
    let mut names: Vec<&str> = shared
        .candidates
        .iter()
        .map(|c| c.display_name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["Luis Garcia", "Maria Garcia"]);
    assert!(shared.card.is_none());

    let (unknown, _) = app.pop("+12125550199").await;
    assert_eq!(unknown.r#match(), v1::MatchKind::None);
    assert_eq!(unknown.normalized_number, "+12125550199");
}

#[tokio::test]
async fn unparseable_numbers_are_invalid_arguments() {
    let app = spawn_app().await;
    let mut pops = app.pops.clone();
    // Empty is a withheld caller now (see the number-forms test); control characters and a
    // 100 KB string are malformed.
    let huge = "1".repeat(100_000);
    for bad in [
        "hello",
        "+1 123",
        "+1415\u{0}5550100",
        "sip:+1415\r\n5550100@pbx",
        &huge,
    ] {
        let status = pops
            .lookup(v1::LookupRequest {
                caller_number: bad.into(),
                ..Default::default()
            })
            .await
            .expect_err(bad);
        assert_eq!(violated_fields(&status), ["caller_number"], "{bad:?}");
    }
    let status = pops
        .lookup(v1::LookupRequest {
            caller_number: "+14155550100".into(),
            dialed_number: "800-CALL-NOW-PLEASE-NOW".into(),
            call_id: "c".repeat(129),
        })
        .await
        .expect_err("bad dialed number and call id");
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["call_id", "dialed_number"]);
}

#[tokio::test]
async fn a_second_lookup_is_served_from_the_cache() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let (_, first) = app.pop("+14155550100").await;
    let (pop, second) = app.pop("(415) 555-0100").await;
    assert_eq!(
        (first, second),
        (v1::PopSource::Database, v1::PopSource::Cache)
    );
    assert_eq!(card_name(&pop), "Ada Lovelace");
    assert_eq!(PopStats::get(&app.stats.database_queries), 1);
}

#[tokio::test]
async fn an_update_invalidates_the_cached_pop_before_it_is_acknowledged() {
    let app = spawn_app().await;
    let ada = app
        .create_customer("Ada Lovelace", &["+14155550100", "+442079460958"])
        .await;
    for number in ["+14155550100", "+442079460958"] {
        app.pop(number).await;
        assert_eq!(app.pop(number).await.1, v1::PopSource::Cache);
    }
    app.rename(&ada, "Ada King").await;
    for number in ["+14155550100", "+442079460958"] {
        let (pop, source) = app.pop(number).await;
        assert_eq!(
            (card_name(&pop), source),
            ("Ada King", v1::PopSource::Database),
            "{number}"
        );
    }
}

#[tokio::test]
async fn adding_a_number_replaces_its_cached_unknown_answer() {
    let app = spawn_app().await;
    let grace = app.create_customer("Grace Hopper", &[]).await;
    assert_eq!(
        app.pop("+12125550199").await.0.r#match(),
        v1::MatchKind::None
    );
    let (cached, source) = app.pop("+12125550199").await;
    assert_eq!(
        (cached.r#match(), source),
        (v1::MatchKind::None, v1::PopSource::Cache)
    );

    app.customers
        .clone()
        .add_contact_point(v1::AddContactPointRequest {
            customer_id: grace.id.clone(),
            contact_point: Some(phone("212-555-0199")),
        })
        .await
        .expect("added");
    let (pop, _) = app.pop("+12125550199").await;
    assert_eq!(
        (pop.r#match(), card_name(&pop)),
        (v1::MatchKind::Exact, "Grace Hopper")
    );
}

#[tokio::test]
async fn removing_a_number_or_the_customer_updates_the_pop() {
    let app = spawn_app().await;
    let alan = app
        .create_customer("Alan Turing", &["+14155550120", "+14155550121"])
        .await;
    app.pop("+14155550120").await;
    app.pop("+14155550121").await;
    let removed_id = alan.contact_points[0].id.clone();
    let alan = app
        .customers
        .clone()
        .remove_contact_point(v1::RemoveContactPointRequest {
            customer_id: alan.id.clone(),
            contact_point_id: removed_id,
        })
        .await
        .expect("removed")
        .into_inner()
        .customer
        .expect("c");
    assert_eq!(
        app.pop("+14155550120").await.0.r#match(),
        v1::MatchKind::None
    );
    assert_eq!(
        app.pop("+14155550121").await.0.r#match(),
        v1::MatchKind::Exact
    );

    app.customers
        .clone()
        .delete_customer(v1::DeleteCustomerRequest {
            id: alan.id,
            version: alan.version,
        })
        .await
        .expect("deleted");
    assert_eq!(
        app.pop("+14155550121").await.0.r#match(),
        v1::MatchKind::None
    );
}

#[tokio::test]
async fn a_burst_of_concurrent_misses_makes_one_database_query() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    // A first pop (of another number) opens the Redis connection: on a cold start the burst's
    // cache reads could time out and fall back to PostgreSQL one by one, which is not what this
    // test is about (it failed about half the time when run alone).
    let warmed = crate::helpers::eventually(Duration::from_secs(5), || async {
        app.pop("+14155550199").await.1 != v1::PopSource::Database
    })
    .await;
    assert!(warmed, "the cache answers");
    let before = PopStats::get(&app.stats.database_queries);

    // Hold the customers table so that every lookup in the burst misses while the first query
    // is still running: without coalescing, each of them would query PostgreSQL.
    let mut blocker = app.db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let lookups: Vec<_> = (0..32)
        .map(|_| {
            let mut pops = app.pops.clone();
            tokio::spawn(async move {
                pops.lookup(v1::LookupRequest {
                    caller_number: "+14155550100".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.commit().await.expect("release");

    let mut sources = Vec::new();
    for lookup in lookups {
        let response = lookup.await.expect("task").expect("lookup");
        assert_eq!(
            card_name(response.pop.as_ref().expect("pop")),
            "Ada Lovelace"
        );
        sources.push(response.source());
    }
    assert_eq!(
        PopStats::get(&app.stats.database_queries) - before,
        1,
        "sources: {sources:?}"
    );
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == v1::PopSource::Database)
            .count(),
        1
    );
    assert_eq!(
        sources
            .iter()
            .filter(|s| **s == v1::PopSource::Shared)
            .count(),
        31
    );
}

#[tokio::test]
async fn a_pop_pinned_to_a_call_follows_the_call_and_stays_current() {
    let app = spawn_app().await;
    let maria = app.create_customer("Maria Garcia", &["+14155550111"]).await;
    let (first, source) = app.pop_for_call("+14155550111", "call-1").await;
    assert_eq!(source, v1::PopSource::Database);
    let (transferred, source) = app.pop_for_call("+14155550111", "call-1").await;
    assert_eq!(source, v1::PopSource::CallPin);
    assert_eq!(card_name(&transferred), card_name(&first));

    app.rename(&maria, "Maria Garcia-Lopez").await;
    let (after_update, source) = app.pop_for_call("+14155550111", "call-1").await;
    assert_eq!(
        (card_name(&after_update), source),
        ("Maria Garcia-Lopez", v1::PopSource::Database)
    );
    assert_eq!(
        app.pop_for_call("+14155550111", "call-1").await.1,
        v1::PopSource::CallPin
    );
}

#[tokio::test]
async fn two_numbers_pinned_under_the_same_call_id_keep_their_own_cards() {
    // Call ids come from clients; a pin must never hand one caller's card to another.
    let app = spawn_app().await;
    app.create_customer("Maria Garcia", &["+14155550111"]).await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let (maria, _) = app.pop_for_call("+14155550111", "shared-id").await;
    let (ada, source) = app.pop_for_call("+14155550100", "shared-id").await;
    assert_eq!(source, v1::PopSource::Database);
    assert_eq!(
        (card_name(&maria), card_name(&ada)),
        ("Maria Garcia", "Ada Lovelace")
    );
    let (maria_again, source) = app.pop_for_call("+14155550111", "shared-id").await;
    assert_eq!(
        (card_name(&maria_again), source),
        ("Maria Garcia", v1::PopSource::CallPin)
    );
}

/// A link to the suite's Redis under keys of its own.
fn own_link(op_timeout: Duration, retry_after: Duration) -> RedisLink {
    RedisLink::new(&RedisSettings {
        target: switchboard::redis_link::RedisTarget::Server(crate::helpers::redis_url()),
        wait_replicas: 0,
        key_prefix: format!("t:{}:", uuid::Uuid::new_v4().simple()),
        op_timeout,
        retry_after,
    })
}

/// A command that times out while Redis answers others sent after it (it was slow: queued behind
/// a machine short of CPU, say) leaves Redis in use; a timeout while nothing answers skips it for
/// the back-off period, as before. Under the mixed load such timeouts had sent thousands of pops
/// a run to PostgreSQL (#25).
#[tokio::test]
async fn a_slow_command_among_answered_ones_does_not_make_the_link_skip_redis() {
    let link = own_link(Duration::from_millis(300), Duration::from_secs(60));
    link.warm(Duration::from_secs(5)).await;
    let stalled = || {
        link.run(|_conn| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok::<_, redis::RedisError>(())
        })
    };
    let answered = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        link.run(
            |mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await },
        )
        .await
    };
    let (slow, answered) = tokio::join!(stalled(), answered);
    assert!(
        matches!(
            slow,
            Err(switchboard::redis_link::RedisLinkError::Timeout(_))
        ),
        "{slow:?}"
    );
    assert_eq!(answered.expect("ping"), "PONG");
    assert!(link.is_available(), "Redis answered: it must stay in use");

    // Nothing answers while this one waits: the link is skipped.
    let alone = stalled().await;
    assert!(
        matches!(
            alone,
            Err(switchboard::redis_link::RedisLinkError::Timeout(_))
        ),
        "{alone:?}"
    );
    assert!(!link.is_available(), "no answer since it was sent: skipped");
}

#[tokio::test]
async fn a_cache_fill_that_raced_an_invalidation_is_discarded() {
    let link = own_link(Duration::from_millis(200), Duration::from_millis(100));
    let ttls = CacheTtls {
        pop: Duration::from_secs(60),
        negative: Duration::from_secs(5),
        pin: Duration::from_secs(60),
    };
    let cache = PopCache::new(link, ttls);
    let number = &NumberKey::of("+14155550100");
    let before = cache.read(number, None).await.expect("read");
    assert_eq!((before.pop.as_deref(), before.generation), (None, None));

    // A write commits and invalidates while a reader is still querying PostgreSQL...
    cache
        .invalidate(std::slice::from_ref(number), 42)
        .await
        .expect("invalidate");
    assert_eq!(
        cache.read(number, None).await.expect("read").fence,
        Some(42),
        "the invalidation's fence is read with the generation"
    );
    // ...so the reader's fill, based on the generation it read before, must not land.
    assert!(
        !cache
            .store_if_current(number, before.generation, b"old card", true)
            .await
            .expect("fill")
    );
    let after = cache.read(number, None).await.expect("read");
    assert_eq!((after.pop.as_deref(), after.generation), (None, Some(1)));
    // A reader that started after the invalidation fills normally.
    assert!(
        cache
            .store_if_current(number, after.generation, b"new card", true)
            .await
            .expect("fill")
    );
    assert_eq!(
        cache.read(number, None).await.expect("read").pop.as_deref(),
        Some(b"new card".as_slice())
    );
}

#[tokio::test]
async fn pops_are_answered_with_redis_stopped_and_caching_resumes_when_it_returns() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.pop("+14155550100").await;
    assert_eq!(app.pop("+14155550100").await.1, v1::PopSource::Cache);

    redis.stop();
    for _ in 0..20 {
        let (pop, source) = app.pop("+14155550100").await;
        assert_eq!(
            (card_name(&pop), source),
            ("Ada Lovelace", v1::PopSource::Database)
        );
    }
    let ada = app.rename(&ada, "Ada King").await;
    assert_eq!(card_name(&app.pop("+14155550100").await.0), "Ada King");

    redis.resume();
    let resumed = eventually(Duration::from_secs(10), || async {
        app.pop("+14155550100").await.1 == v1::PopSource::Cache
    })
    .await;
    assert!(resumed, "caching resumes by itself");
    let (pop, _) = app.pop("+14155550100").await;
    assert_eq!(card_name(&pop), "Ada King");
    assert_eq!(ada.version, 2);
}

#[tokio::test]
async fn a_write_while_redis_is_down_never_lets_a_stale_card_back() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.url()),
        ..Default::default()
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.pop("+14155550100").await;
    assert_eq!(app.pop("+14155550100").await.1, v1::PopSource::Cache);

    // Redis goes away with the old card on disk; the write cannot reach it to invalidate.
    redis.save();
    redis.stop();
    app.rename(&ada, "Ada King").await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pop_invalidations")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(pending, 1, "the invalidation waits in PostgreSQL");
    assert_eq!(card_name(&app.pop("+14155550100").await.0), "Ada King");

    // Redis comes back holding the stale card: it must never be served.
    redis.resume();
    let mut served_from_cache = false;
    for _ in 0..60 {
        let (pop, source) = app.pop("+14155550100").await;
        assert_eq!(card_name(&pop), "Ada King", "from {source:?}");
        served_from_cache |= source == v1::PopSource::Cache;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served_from_cache,
        "the cache is trusted again once the invalidation is applied"
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pop_invalidations")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(pending, 0);
}

/// Managed Redis usually speaks TLS only: `rediss://` URLs cache pops like plain ones.
#[tokio::test]
async fn pops_are_cached_in_a_redis_that_speaks_only_tls() {
    let redis = PrivateRedis::start_tls();
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.tls_url()),
        ..Default::default()
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    assert!(
        app.pop_until_cached("+14155550100", 50).await,
        "no pop was ever cached over TLS"
    );
    app.rename(&ada, "Ada King").await;
    let (pop, source) = app.pop("+14155550100").await;
    assert_eq!(
        (card_name(&pop), source),
        ("Ada King", v1::PopSource::Database)
    );
}

#[tokio::test]
async fn pops_work_with_a_redis_url_pointing_at_a_closed_port() {
    let closed = format!("redis://127.0.0.1:{}", free_port());
    let app = spawn_app_with(TestOptions {
        redis_url: Some(closed),
        ..Default::default()
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.rename(&ada, "Ada King").await;
    for _ in 0..5 {
        let (pop, source) = app.pop("+14155550100").await;
        assert_eq!(
            (card_name(&pop), source),
            ("Ada King", v1::PopSource::Database)
        );
    }
}

#[tokio::test]
async fn pops_work_without_any_redis_configured() {
    let app = spawn_app_with(TestOptions {
        redis_url: None,
        ..Default::default()
    })
    .await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.rename(&ada, "Ada King").await;
    let (pop, source) = app.pop("+14155550100").await;
    assert_eq!(
        (card_name(&pop), source),
        ("Ada King", v1::PopSource::Database)
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM pop_invalidations")
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(
        pending, 0,
        "without a cache nothing waits to be invalidated"
    );
}

#[tokio::test]
async fn a_write_in_progress_elsewhere_leaves_the_cache_on_and_a_failed_one_is_relayed() {
    let app = spawn_app().await;
    app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    app.pop("+14155550100").await;
    // Another instance's write, committed and about to apply its invalidation: a fresh row.
    sqlx::query(
        "INSERT INTO pop_invalidations (number_key) VALUES ('00000000000000000000000000000001')",
    )
    .execute(&app.db)
    .await
    .expect("row");
    // Over two relay ticks, the row is left to its writer and the cache stays in use.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.pop("+14155550100").await.1, v1::PopSource::Cache);
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pop_invalidations")
            .fetch_one(&app.db)
            .await
            .expect("count")
    };
    assert_eq!(count().await, 1);
    // Its writer could not reach Redis: marked failed, the relay applies it.
    sqlx::query("UPDATE pop_invalidations SET failed = true")
        .execute(&app.db)
        .await
        .expect("failed");
    assert!(eventually(Duration::from_secs(3), || async { count().await == 0 }).await);
    assert!(
        eventually(Duration::from_secs(3), || async {
            app.pop("+14155550100").await.1 == v1::PopSource::Cache
        })
        .await
    );
}

#[tokio::test]
async fn every_number_form_a_gateway_sends_pops_the_card_and_withheld_callers_are_not_errors() {
    let app = spawn_app().await;
    let ada = app.create_customer("Ada Lovelace", &["+14155550100"]).await;
    let uk = app
        .create_customer("Grace Hopper", &["+44 20 7946 0958"])
        .await;
    let mut pops = app.pops.clone();
    let mut lookup = async |caller: &str| {
        pops.lookup(v1::LookupRequest {
            caller_number: caller.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("{caller:?}: {status:?}"))
        .into_inner()
    };
    for (form, customer) in [
        ("sip:+14155550100@pbx.example.com", &ada),
        ("sip:+14155550100@pbx.example.com;user=phone", &ada),
        (
            "sips:%2B14155550100@pbx.example.com:5061;transport=tls",
            &ada,
        ),
        ("\"Ada\" <sip:4155550100@10.0.0.1>", &ada),
        ("tel:+1-415-555-0100", &ada),
        ("tel:+1-415-555-0100;ext=12", &ada),
        ("+1 415 555 0100;ext=12", &ada),
        ("415-555-0100 x12", &ada),
        ("415-555-0100 ext. 12", &ada),
        ("＋１ ４１５ ５５５ ０１００", &ada),
        ("011 44 20 7946 0958", &uk),
        ("0044 20 7946 0958", &uk),
    ] {
        let answer = lookup(form).await;
        let pop = answer.pop.expect("pop");
        assert_eq!(pop.r#match(), v1::MatchKind::Exact, "{form}");
        assert_eq!(pop.caller_kind(), v1::CallerKind::Number, "{form}");
        assert_eq!(pop.card.expect("card").customer_id, customer.id, "{form}");
    }
    for (form, kind) in [
        ("", v1::CallerKind::Withheld),
        ("anonymous", v1::CallerKind::Withheld),
        ("Restricted", v1::CallerKind::Withheld),
        ("UNAVAILABLE", v1::CallerKind::Withheld),
        ("unknown", v1::CallerKind::Withheld),
        ("private", v1::CallerKind::Withheld),
        (
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
            v1::CallerKind::Withheld,
        ),
        ("sip:alice@example.com", v1::CallerKind::NotANumber),
    ] {
        let answer = lookup(form).await;
        assert_eq!(answer.source(), v1::PopSource::None, "{form:?}");
        let pop = answer.pop.expect("pop");
        assert_eq!(
            (pop.r#match(), pop.caller_kind()),
            (v1::MatchKind::None, kind),
            "{form:?}"
        );
        assert!(pop.card.is_none() && pop.normalized_number.is_empty());
    }

    // The same forms wherever a number comes in: a contact point, and a gateway's call events.
    app.customers
        .clone()
        .add_contact_point(v1::AddContactPointRequest {
            customer_id: ada.id.clone(),
            contact_point: Some(crate::helpers::phone("tel:+1-415-555-0101")),
        })
        .await
        .expect("a tel: URI is a number");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM contact_points WHERE value = '+14155550101'")
            .fetch_one(&app.db)
            .await
            .expect("contact points");
    assert_eq!(stored, 1, "stored in E.164");
    let mut calls = app.calls.clone();
    for (call_id, caller) in [
        ("c-sip", "\"Ada\" <sip:+14155550100@pbx;user=phone>"),
        ("c-anon", "anonymous"),
        ("c-alice", "sip:alice@example.com"),
    ] {
        let ack = calls
            .report_call_event(v1::ReportCallEventRequest {
                event: Some(v1::CallEvent {
                    gateway_id: "pbx-1".into(),
                    event_id: format!("{call_id}-0"),
                    call_id: call_id.into(),
                    r#type: v1::CallEventType::Offered.into(),
                    occurred_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
                    caller_number: caller.into(),
                    dialed_number: "sip:+18005550199@pbx".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("reported")
            .into_inner()
            .ack
            .expect("ack");
        assert_eq!(
            ack.outcome(),
            v1::AckOutcome::Accepted,
            "{caller}: {}",
            ack.reason
        );
    }
    let stored: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT call_id, caller_number, dialed_number FROM calls ORDER BY call_id")
            .fetch_all(&app.db)
            .await
            .expect("calls");
    let dialed = Some("+18005550199".to_owned());
    assert_eq!(
        stored,
        [
            ("c-alice".to_owned(), None, dialed.clone()),
            ("c-anon".to_owned(), None, dialed.clone()),
            ("c-sip".to_owned(), Some("+14155550100".to_owned()), dialed),
        ]
    );
}
