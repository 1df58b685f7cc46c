//! Redis Cluster's rule that the keys one command, script or MULTI block uses hash to one slot
//! (#26 item 1, in part). A cluster of one master holding every slot refuses any of them that
//! spans slots with CROSSSLOT, as every cluster does, while a client that is not cluster aware
//! still reaches it: on it, the pop, pin, invalidation and live-board stories must run without a
//! single Redis error, and from the cache.

use switchboard::proto::v1;
use switchboard::proto::v1::CallEventType::*;

use crate::helpers::{PrivateRedis, TestOptions, spawn_app_with};
use crate::screenpop::card_name;

/// Each number's second pop comes from the cache, and a pop for a ringing call pins its card.
pub(crate) async fn cached_and_pinned(app: &crate::helpers::TestApp, numbers: &[&str]) {
    for &number in numbers {
        app.pop(number).await;
        assert_eq!(app.pop(number).await.1, v1::PopSource::Cache, "{number}");
        app.pop_for_call(number, "ring-1").await;
        assert_eq!(
            app.pop_for_call(number, "ring-1").await.1,
            v1::PopSource::CallPin
        );
    }
}

#[tokio::test]
async fn pops_pins_invalidations_and_the_live_board_keep_their_keys_in_one_slot() {
    let redis = PrivateRedis::start_cluster_of_one();
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.url()),
        ..TestOptions::default()
    })
    .await;
    let numbers = ["+14155550100", "+442079460958"];
    let ada = app.create_customer("Ada Lovelace", &numbers).await;
    // A fresh connection's first command can pass the 50 ms Redis timeout on a busy machine
    // (the link then skips Redis for a second): first, a pop of another number is cached.
    assert!(
        app.pop_until_cached("+12025550100", 50).await,
        "no pop was ever cached"
    );
    let errors = || async { crate::metrics::scrape(&app).await["switchboard_redis_errors_total"] };
    let errors_before = errors().await;
    cached_and_pinned(&app, &numbers).await;
    // An instance of the release before hash tags, still running during a rolling upgrade,
    // caches under the untagged names: a write here drops its copy and moves its generation.
    let client = redis::Client::open(redis.url().as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let number = switchboard::screenpop::cache::NumberKey::of(numbers[0]);
    let untagged = |kind: &str| format!("{}{kind}:{}", app.redis_prefix, number.as_str());
    let _: () = redis::pipe()
        .set(untagged("pop"), "an old card")
        .set(untagged("popgen"), 7)
        .query_async(&mut conn)
        .await
        .expect("old release's keys");
    // One write invalidates both numbers.
    app.rename(&ada, "Ada King").await;
    let (old_pop, old_generation): (Option<String>, i64) = redis::pipe()
        .get(untagged("pop"))
        .get(untagged("popgen"))
        .query_async(&mut conn)
        .await
        .expect("old release's keys read");
    assert_eq!((old_pop, old_generation), (None, 8));
    for number in numbers {
        let (pop, source) = app.pop(number).await;
        assert_eq!(
            (card_name(&pop), source),
            ("Ada King", v1::PopSource::Database)
        );
        assert_eq!(app.pop(number).await.1, v1::PopSource::Cache, "{number}");
    }
    // The live board: a caller waiting in sales.
    let at = chrono::Utc::now() - chrono::Duration::seconds(30);
    let waiting = [(Offered, 0, ""), (Queued, 1, "")];
    crate::analytics::call_from(&app, "w1", "(415) 555-0199", at, "sales", &waiting).await;
    let board = crate::live::stats(&app, &["sales"]).await;
    assert_eq!(board.queues[0].calls_waiting, 1, "{board:?}");

    assert_eq!(errors().await, errors_before, "no Redis command failed");
}
