//! AnalyticsService.GetLiveQueueStats: live calls and agents per queue, from the hot copy in
//! Redis, rebuilt from PostgreSQL, and from PostgreSQL itself while Redis is away.

use std::time::Duration;

use redis::AsyncCommands as _;
use switchboard::proto::v1;
use switchboard::proto::v1::CallEventType::{self, *};
use switchboard::proto::v1::analytics_service_client::AnalyticsServiceClient;
use tonic::Code;

use crate::calls::{log_in, report};
use crate::helpers::{
    PrivateRedis, TestApp, TestOptions, redis_url, spawn_app, spawn_app_with, violated_fields,
};

const GATEWAY: &str = "pbx-1";
/// Ten minutes before the run (whole seconds): the calls have been waiting a while, well within
/// the live board's staleness bound.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| chrono::Utc::now().timestamp() - 600)
}

/// Reports `steps` of call `id` in `queue`: (event, seconds after `t0()`, agent).
pub(crate) async fn call(
    app: &TestApp,
    id: &str,
    queue: &str,
    steps: &[(CallEventType, i64, &str)],
) {
    for (kind, at, agent) in steps {
        let mut event = v1::CallEvent {
            gateway_id: GATEWAY.into(),
            event_id: format!("{id}-{}", kind.as_str_name()),
            call_id: id.into(),
            r#type: (*kind).into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: t0() + at,
                nanos: 0,
            }),
            agent_id: (*agent).into(),
            ..Default::default()
        };
        if *kind == Offered {
            event.caller_number = "(415) 555-0100".into();
            event.queue = queue.into();
        }
        let ack = report(app, event).await;
        assert_eq!(
            ack.outcome(),
            v1::AckOutcome::Accepted,
            "{id}: {}",
            ack.reason
        );
    }
}

async fn set_queues(app: &TestApp, agent: &str, queues: &[&str]) -> Vec<String> {
    app.agents
        .clone()
        .set_agent_queues(v1::SetAgentQueuesRequest {
            agent_id: agent.into(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        })
        .await
        .expect("queues set")
        .into_inner()
        .queues
}

pub async fn set_state(app: &TestApp, agent: &str, state: v1::AgentState) {
    app.agents
        .clone()
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: agent.into(),
            state: state.into(),
            reason: String::new(),
        })
        .await
        .expect("state set");
}

pub(crate) async fn stats(app: &TestApp, queues: &[&str]) -> v1::GetLiveQueueStatsResponse {
    AnalyticsServiceClient::new(app.channel.clone())
        .get_live_queue_stats(v1::GetLiveQueueStatsRequest {
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        })
        .await
        .expect("live stats")
        .into_inner()
}

/// What a wallboard shows of a queue: (waiting, oldest waiting since (s), in service,
/// available, busy).
pub(crate) fn board(
    response: &v1::GetLiveQueueStatsResponse,
    queue: &str,
) -> (i32, Option<i64>, i32, i32, i32) {
    let q = response
        .queues
        .iter()
        .find(|q| q.queue == queue)
        .unwrap_or_else(|| panic!("queue {queue} in {response:?}"));
    let agents = q.agents.unwrap_or_default();
    (
        q.calls_waiting,
        q.oldest_waiting_since.map(|t| t.seconds - t0()),
        q.calls_in_service,
        agents.available,
        agents.busy,
    )
}

/// Two queues: sales has a caller queued since t0 + 10 and one ringing since t0 + 20 (queued at
/// t0 + 15), and one call in service; support has one call on hold (with a-3); a call that ended
/// and one still in the IVR count nowhere. a-1 takes both queues and is available; a-2 takes
/// sales and is busy; a-3 takes none and is away.
pub(crate) async fn floor(app: &TestApp) {
    for agent in ["a-1", "a-2", "a-3"] {
        log_in(app, agent).await;
    }
    assert_eq!(
        set_queues(app, "a-1", &["support", "sales", "sales"]).await,
        vec!["sales".to_owned(), "support".to_owned()],
        "sorted, without duplicates"
    );
    set_queues(app, "a-2", &["sales"]).await;
    set_state(app, "a-2", v1::AgentState::Busy).await;
    set_state(app, "a-3", v1::AgentState::Away).await;
    call(app, "s1", "sales", &[(Offered, 5, ""), (Queued, 10, "")]).await;
    call(
        app,
        "s2",
        "sales",
        &[(Offered, 12, ""), (Queued, 15, ""), (Ringing, 20, "a-1")],
    )
    .await;
    call(
        app,
        "s3",
        "sales",
        &[
            (Offered, 0, ""),
            (Queued, 1, ""),
            (Ringing, 2, "a-2"),
            (Answered, 3, "a-2"),
        ],
    )
    .await;
    call(
        app,
        "p1",
        "support",
        &[
            (Offered, 0, ""),
            (Ringing, 2, "a-3"),
            (Answered, 3, "a-3"),
            (Held, 9, "a-3"),
        ],
    )
    .await;
    call(
        app,
        "p2",
        "support",
        &[(Offered, 0, ""), (Abandoned, 4, "")],
    )
    .await;
    call(app, "ivr", "", &[(Offered, 0, "")]).await;
}

/// Whether the board shows what [`floor`]'s calls and agents add up to. Each call's live state is
/// written after its events are acknowledged (so that it never slows the acks): a read right
/// after the last ack may find an earlier call one write behind, and the board converges.
fn shows_the_floor(r: &v1::GetLiveQueueStatsResponse) -> bool {
    r.queues.len() == 2
        && board(r, "sales") == (2, Some(10), 1, 1, 1)
        && board(r, "support") == (0, None, 1, 1, 0)
}

/// Deletes the app's live copy in Redis (as a Redis restarted empty would have it).
async fn empty_the_live_copy(app: &TestApp) {
    let client = redis::Client::open(redis_url()).expect("redis client");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis
        .keys(format!("{}live:*", app.redis_prefix))
        .await
        .expect("keys");
    let _: () = redis.del(&keys).await.expect("del");
}

/// Asks until the answer comes from `source` and passes `check` (at most 10 s); returns it.
pub(crate) async fn settles_on(
    app: &TestApp,
    source: v1::LiveSource,
    check: impl Fn(&v1::GetLiveQueueStatsResponse) -> bool,
) -> v1::GetLiveQueueStatsResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = stats(app, &[]).await;
        if response.source() == source && check(&response) {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "did not settle: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wallboard_counts_waiting_calls_the_longest_wait_and_agents_by_state() {
    // No rebuild after the first (empty) one: everything below comes from the writes each
    // commit makes.
    let app = spawn_app_with(TestOptions {
        live_rebuild: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    floor(&app).await;
    let now = settles_on(&app, v1::LiveSource::Redis, shows_the_floor).await;
    assert_eq!(board(&now, "sales"), (2, Some(10), 1, 1, 1));
    assert_eq!(board(&now, "support"), (0, None, 1, 1, 0));
    let everyone = now.agents.unwrap_or_default();
    assert_eq!(
        (everyone.available, everyone.busy, everyone.away),
        (1, 1, 1)
    );
    let as_of = now.as_of.expect("as of").seconds;
    let longest = now.queues[0].longest_wait_seconds;
    assert!(
        (longest - (as_of - (t0() + 10)) as f64).abs() < 1.0,
        "measured from the oldest waiter at as_of: {longest}"
    );

    // The longest waiter is answered and a-1 goes busy: the board follows.
    call(
        &app,
        "s1",
        "sales",
        &[(Ringing, 30, "a-1"), (Answered, 31, "a-1")],
    )
    .await;
    set_state(&app, "a-1", v1::AgentState::Busy).await;
    let after = settles_on(&app, v1::LiveSource::Redis, |r| {
        board(r, "sales") == (1, Some(15), 2, 0, 2)
    })
    .await;
    assert_eq!(board(&after, "sales"), (1, Some(15), 2, 0, 2));

    // A filter gives exactly the queues named, quiet ones with zeros.
    let some = stats(&app, &["support", "claims"]).await;
    let names: Vec<&str> = some.queues.iter().map(|q| q.queue.as_str()).collect();
    assert_eq!(names, ["claims", "support"]);
    assert_eq!(board(&some, "claims"), (0, None, 0, 0, 0));
}

/// A call that moves to another queue leaves the first at once, without a rebuild: each queue
/// has its own hash, and the move's entry (a higher version) wins over the one left behind.
#[tokio::test]
async fn a_call_moved_to_another_queue_counts_only_there() {
    let app = spawn_app_with(TestOptions {
        live_rebuild: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    floor(&app).await;
    settles_on(&app, v1::LiveSource::Redis, shows_the_floor).await;
    let moved = v1::CallEvent {
        gateway_id: GATEWAY.into(),
        event_id: "s1-to-support".into(),
        call_id: "s1".into(),
        r#type: Queued.into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: t0() + 30,
            nanos: 0,
        }),
        queue: "support".into(),
        ..Default::default()
    };
    assert_eq!(
        report(&app, moved).await.outcome(),
        v1::AckOutcome::Accepted
    );
    let moved = settles_on(&app, v1::LiveSource::Redis, |r| board(r, "support").0 == 1).await;
    assert_eq!(board(&moved, "sales"), (1, Some(15), 1, 1, 1));
    let (waiting, _, in_service, available, busy) = board(&moved, "support");
    assert_eq!((waiting, in_service, available, busy), (1, 1, 1, 0));
    // The entry left in sales's hash is old, not gone: the reads skip it until a rebuild.
    let client = redis::Client::open(redis_url()).expect("redis client");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let left: Option<String> = redis
        .hget(
            format!("{}live:calls:sales", app.redis_prefix),
            format!("{GATEWAY}/s1"),
        )
        .await
        .expect("hget");
    assert!(left.is_some(), "the stale entry stays until a rebuild");
}

#[tokio::test]
async fn the_rebuild_repairs_a_copy_that_missed_writes_and_an_emptied_redis_reads_postgres() {
    let app = spawn_app().await;
    floor(&app).await;
    let before = settles_on(&app, v1::LiveSource::Redis, shows_the_floor).await;
    assert_eq!(board(&before, "sales"), (2, Some(10), 1, 1, 1));

    // Writes lost while Redis was away: a call that ended still shows waiting, and one that
    // started is missing.
    let client = redis::Client::open(redis_url()).expect("redis client");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let calls_key = format!("{}live:calls:sales", app.redis_prefix);
    let _: () = redis
        .hset(
            &calls_key,
            "pbx-1/ghost",
            format!("1 queued {} sales", (t0() + 1) * 1000),
        )
        .await
        .expect("hset");
    let _: () = redis
        .hdel(&calls_key, format!("{GATEWAY}/s2"))
        .await
        .expect("hdel");
    let repaired = settles_on(&app, v1::LiveSource::Redis, |r| {
        board(r, "sales").1 == Some(10) && board(r, "sales").0 == 2
    })
    .await;
    assert_eq!(board(&repaired, "sales"), (2, Some(10), 1, 1, 1));

    // Redis restarted empty: PostgreSQL answers (the same numbers) until the copy is rebuilt.
    empty_the_live_copy(&app).await;
    let fallback = stats(&app, &[]).await;
    assert_eq!(fallback.source(), v1::LiveSource::Database);
    assert_eq!(board(&fallback, "sales"), (2, Some(10), 1, 1, 1));
    assert_eq!(board(&fallback, "support"), (0, None, 1, 1, 0));
    let rebuilt = settles_on(&app, v1::LiveSource::Redis, |r| r.queues.len() == 2).await;
    assert_eq!(board(&rebuilt, "sales"), (2, Some(10), 1, 1, 1));
}

#[tokio::test]
async fn with_redis_stopped_postgres_answers_and_the_copy_comes_back() {
    let mut redis = PrivateRedis::start();
    // No periodic rebuild after the first: the copy must come back because a write to it failed
    // and Redis lost it, not because a period ran out.
    let app = spawn_app_with(TestOptions {
        redis_url: Some(redis.url()),
        live_rebuild: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    floor(&app).await;
    settles_on(&app, v1::LiveSource::Redis, shows_the_floor).await;

    redis.stop();
    // Changes while Redis is down are committed, and shown from PostgreSQL.
    call(&app, "s1", "sales", &[(Abandoned, 40, "")]).await;
    let down = settles_on(&app, v1::LiveSource::Database, |_| true).await;
    assert_eq!(board(&down, "sales"), (1, Some(15), 1, 1, 1));

    // Redis returns empty; the rebuild brings the copy back with the change it missed.
    redis.resume();
    let back = settles_on(&app, v1::LiveSource::Redis, |r| r.queues.len() == 2).await;
    assert_eq!(board(&back, "sales"), (1, Some(15), 1, 1, 1));
}

#[tokio::test]
async fn bad_queue_lists_are_refused() {
    let app = spawn_app().await;
    let status = AnalyticsServiceClient::new(app.channel.clone())
        .get_live_queue_stats(v1::GetLiveQueueStatsRequest {
            queues: vec!["sales".into(), " ".into()],
        })
        .await
        .expect_err("an empty queue name");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["queues[1]"]);
    let status = app
        .agents
        .clone()
        .set_agent_queues(v1::SetAgentQueuesRequest {
            agent_id: "a-1".into(),
            queues: (0..101).map(|n| format!("q{n}")).collect(),
        })
        .await
        .expect_err("too many queues");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["queues"]);
}

/// A call that never ended (its gateway lost the end) is stale once it has had no event for the
/// staleness bound (4 hours by default, by the events' own times): counted apart, never as
/// waiting, from Redis and from PostgreSQL alike. A call reported late with old times (a
/// backfill) is judged by those times, not by when it was reported.
#[tokio::test]
async fn a_call_with_no_event_for_hours_is_stale_never_waiting() {
    let app = spawn_app_with(TestOptions {
        live_rebuild: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    // Five hours before now, in seconds after `t0()`.
    let hours_ago = chrono::Utc::now().timestamp() - 5 * 3600 - t0();
    call(
        &app,
        "lost",
        "sales",
        &[(Offered, hours_ago, ""), (Queued, hours_ago + 5, "")],
    )
    .await;
    call(
        &app,
        "talking",
        "sales",
        &[
            (Offered, hours_ago, ""),
            (Queued, hours_ago + 5, ""),
            (Ringing, hours_ago + 6, "a-1"),
            (Answered, hours_ago + 8, "a-1"),
        ],
    )
    .await;
    call(
        &app,
        "fresh",
        "sales",
        &[(Offered, 300, ""), (Queued, 310, "")],
    )
    .await;
    let stale = |r: &v1::GetLiveQueueStatsResponse| {
        r.queues
            .iter()
            .find(|q| q.queue == "sales")
            .map(|q| q.calls_stale)
    };
    let from_redis = settles_on(&app, v1::LiveSource::Redis, |r| stale(r) == Some(2)).await;
    assert_eq!(board(&from_redis, "sales"), (1, Some(310), 0, 0, 0));

    empty_the_live_copy(&app).await;
    let from_database = stats(&app, &[]).await;
    assert_eq!(from_database.source(), v1::LiveSource::Database);
    assert_eq!(stale(&from_database), Some(2));
    assert_eq!(board(&from_database, "sales"), (1, Some(310), 0, 0, 0));
}
