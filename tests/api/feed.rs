//! EventFeedService: every committed change, in order, to any instance; nothing aborted; a
//! consumer that resumes from its cursor misses nothing.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rand::Rng as _;
use switchboard::feed::Event;
use switchboard::history::Table;
use switchboard::proto::v1;
use switchboard::proto::v1::event_feed_service_client::EventFeedServiceClient;
use tokio_stream::StreamExt as _;
use tonic::{Code, Streaming};

use crate::calls::{CallScript, log_in, report};
use crate::helpers::{Authed, TestApp, TestOptions, spawn_app, spawn_app_with, violated_fields};

fn feed(app: &TestApp) -> EventFeedServiceClient<Authed> {
    EventFeedServiceClient::new(app.channel.clone())
}

async fn subscribe(app: &TestApp, request: v1::SubscribeRequest) -> Streaming<v1::FeedEvent> {
    feed(app)
        .subscribe(request)
        .await
        .expect("subscribed")
        .into_inner()
}

/// Reads events (heartbeats skipped) until `done` says so, or fails after `limit`.
async fn read_until(
    stream: &mut Streaming<v1::FeedEvent>,
    limit: Duration,
    mut done: impl FnMut(&[v1::FeedEvent]) -> bool,
) -> Vec<v1::FeedEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&seen) {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; got {:?}", types(&seen)))
            .expect("the stream goes on")
            .expect("an event");
        if next.topic != "heartbeat" {
            seen.push(next);
        }
    }
    seen
}

fn types(events: &[v1::FeedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.r#type.as_str()).collect()
}

fn cursor(event: &v1::FeedEvent) -> i64 {
    event.cursor.parse().expect("numeric cursor")
}

fn assert_increasing(events: &[v1::FeedEvent]) {
    for pair in events.windows(2) {
        assert!(
            cursor(&pair[0]) < cursor(&pair[1]),
            "cursors must increase: {} then {}",
            pair[0].cursor,
            pair[1].cursor
        );
    }
}

#[tokio::test]
async fn every_kind_of_change_reaches_the_feed_in_the_order_it_was_made() {
    let app = spawn_app().await;
    let ada = app
        .create_customer("Ada Lovelace", &["(415) 555-0100"])
        .await;
    let ada = app.rename(&ada, "Ada King").await;
    let interaction = app
        .interactions()
        .log_interaction(v1::LogInteractionRequest {
            request_id: "feed-i1".into(),
            customer_id: ada.id.clone(),
            channel: v1::Channel::Voice.into(),
            direction: v1::Direction::Inbound.into(),
            agent_id: "a-17".into(),
            notes: "She said her card is 4111 1111 1111 1111".into(),
            started_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
            ..Default::default()
        })
        .await
        .expect("logged")
        .into_inner();
    assert!(interaction.interaction.is_some());
    let case = app
        .cases()
        .open_case(v1::OpenCaseRequest {
            request_id: "feed-c1".into(),
            customer_id: ada.id.clone(),
            subject: "Router down".into(),
            priority: v1::CasePriority::Normal.into(),
            actor: "a-17".into(),
            ..Default::default()
        })
        .await
        .expect("opened")
        .into_inner()
        .case
        .expect("case");
    app.activity()
        .record_order(v1::RecordOrderRequest {
            system: "shop".into(),
            order_id: "o-1".into(),
            customer: Some(v1::CustomerRef {
                r#ref: Some(v1::customer_ref::Ref::CustomerId(ada.id.clone())),
            }),
            amount: Some(v1::Money {
                currency: "USD".into(),
                amount_minor: 1999,
            }),
            status: v1::OrderStatus::Placed.into(),
            ordered_at: Some(switchboard::proto_time::to_timestamp(chrono::Utc::now())),
        })
        .await
        .expect("order recorded");
    log_in(&app, "a-17").await;
    for event in CallScript::answered_by("feed-call-1", "a-17").events {
        assert_eq!(
            report(&app, event).await.outcome(),
            v1::AckOutcome::Accepted
        );
    }

    let feedback = switchboard::proto::v1::feedback_service_client::FeedbackServiceClient::new(
        app.channel.clone(),
    )
    .submit_feedback(v1::SubmitFeedbackRequest {
        request_id: "feed-f1".into(),
        source: v1::FeedbackSource::Customer.into(),
        sentiment: v1::Sentiment::Negative.into(),
        category: "billing".into(),
        text: "Ada is furious".into(),
        customer_id: ada.id.clone(),
        ..Default::default()
    })
    .await
    .expect("feedback submitted")
    .into_inner();
    assert!(feedback.case_opened, "negative feedback opens a case");

    let mut stream = subscribe(&app, v1::SubscribeRequest::default()).await;
    let expected = [
        "customer.created",
        "customer.updated",
        "interaction.logged",
        "case.opened",
        "order.recorded",
        "call.state_changed",
        "call.state_changed",
        "call.state_changed",
        "call.state_changed",
        "call.state_changed",
        "case.opened",
        "feedback.submitted",
    ];
    let events = read_until(&mut stream, Duration::from_secs(10), |seen| {
        seen.len() >= expected.len()
    })
    .await;
    assert_eq!(types(&events), expected);
    assert_increasing(&events);
    assert_eq!(events[0].subject_id, ada.id);
    assert!(events[..5].iter().all(|e| e.customer_id == ada.id));
    assert_eq!(events[3].subject_id, case.id);
    let call_states: Vec<String> = events[5..10]
        .iter()
        .map(|e| {
            let data: serde_json::Value = serde_json::from_str(&e.data_json).expect("json");
            data["state"].as_str().expect("state").to_owned()
        })
        .collect();
    assert_eq!(
        call_states,
        ["offered", "queued", "ringing", "connected", "ended"]
    );
    assert!(
        events[5..].iter().all(|e| e.customer_id == ada.id),
        "the call is Ada's"
    );
    // Ids, states and codes only: no names, numbers, notes or subjects.
    for event in &events {
        for secret in ["Ada", "4155550100", "4111", "Router", "King", "furious"] {
            assert!(
                !event.data_json.contains(secret),
                "{} carries {secret}: {}",
                event.r#type,
                event.data_json
            );
        }
    }

    // A topic filter, and a cursor from the middle: only what comes after, of that topic.
    let mut cases_only = subscribe(
        &app,
        v1::SubscribeRequest {
            after_cursor: events[1].cursor.clone(),
            topics: vec!["case".into(), "order".into()],
            from_latest: false,
        },
    )
    .await;
    let filtered = read_until(&mut cases_only, Duration::from_secs(10), |seen| {
        seen.len() >= 2
    })
    .await;
    assert_eq!(types(&filtered), ["case.opened", "order.recorded"]);
    assert_eq!(filtered[0].cursor, events[3].cursor);
}

#[tokio::test]
async fn aborted_transactions_publish_nothing_and_a_resumed_consumer_misses_nothing() {
    let app = spawn_app().await;
    let mut stream = subscribe(&app, v1::SubscribeRequest::default()).await;
    // Four writers, each committing or rolling back at random, while the consumer reads.
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let pool = app.db.clone();
            tokio::spawn(async move {
                let mut committed = Vec::new();
                for i in 0..60 {
                    let commit = rand::rng().random_bool(0.6);
                    let mut tx = pool.begin().await.expect("begin");
                    let subject = format!("w{writer}-{i:03}");
                    switchboard::feed::record(&mut tx, Event::new("order.recorded", &subject))
                        .await
                        .expect("recorded");
                    if rand::rng().random_bool(0.3) {
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    if commit {
                        tx.commit().await.expect("commit");
                        committed.push(subject);
                    } else {
                        tx.rollback().await.expect("rollback");
                    }
                }
                committed
            })
        })
        .collect();
    // The consumer stops after 40 events and comes back with its last cursor.
    let first = read_until(&mut stream, Duration::from_secs(20), |seen| {
        seen.len() >= 40
    })
    .await;
    drop(stream);
    let mut committed = BTreeSet::new();
    for writer in writers {
        committed.extend(writer.await.expect("writer"));
    }
    let mut resumed = subscribe(
        &app,
        v1::SubscribeRequest {
            after_cursor: first.last().expect("40 events").cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    let rest = read_until(&mut resumed, Duration::from_secs(20), |seen| {
        first.len() + seen.len() >= committed.len()
    })
    .await;
    let all: Vec<v1::FeedEvent> = first.into_iter().chain(rest).collect();
    assert_increasing(&all);
    let delivered: Vec<&str> = all.iter().map(|e| e.subject_id.as_str()).collect();
    let unique: BTreeSet<String> = delivered.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(unique.len(), delivered.len(), "no event twice");
    assert_eq!(unique, committed, "exactly the committed events");
    // Each writer committed one after another: its events are in its order.
    let mut last: HashMap<&str, &str> = HashMap::new();
    for subject in delivered {
        let (writer, _) = subject.split_once('-').expect("writer-i");
        if let Some(previous) = last.insert(writer, subject) {
            assert!(previous < subject, "{previous} then {subject}");
        }
    }
    // Nothing more is waiting: no aborted event shows up later.
    let extra = tokio::time::timeout(Duration::from_millis(500), resumed.next()).await;
    assert!(
        extra.is_err(),
        "unexpected event after the committed ones: {extra:?}"
    );
}

#[tokio::test]
async fn a_subscriber_on_another_instance_follows_live_writes() {
    let writer = spawn_app().await;
    let reader = spawn_app_with(TestOptions {
        database_url: Some(writer.database_url.clone()),
        ..TestOptions::default()
    })
    .await;
    let mut stream = subscribe(
        &reader,
        v1::SubscribeRequest {
            from_latest: true,
            ..Default::default()
        },
    )
    .await;
    let grace = writer
        .create_customer("Grace Hopper", &["(212) 555-0101"])
        .await;
    let events = read_until(&mut stream, Duration::from_secs(10), |seen| {
        !seen.is_empty()
    })
    .await;
    assert_eq!(types(&events), ["customer.created"]);
    assert_eq!(events[0].subject_id, grace.id);
}

#[tokio::test]
async fn bad_cursors_and_topics_are_refused_and_an_expired_cursor_is_out_of_range() {
    let app = spawn_app_with(TestOptions {
        feed_retention: Duration::from_secs(1),
        ..TestOptions::default()
    })
    .await;
    for (request, field) in [
        (
            v1::SubscribeRequest {
                after_cursor: "12x".into(),
                ..Default::default()
            },
            "after_cursor",
        ),
        (
            v1::SubscribeRequest {
                after_cursor: "999999".into(),
                ..Default::default()
            },
            "after_cursor",
        ),
        (
            v1::SubscribeRequest {
                topics: vec!["gossip".into()],
                ..Default::default()
            },
            "topics",
        ),
    ] {
        let status = feed(&app).subscribe(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), [field]);
    }
    app.create_customer("Old News", &[]).await;
    // Retention is one second: after pruning, cursor 0 is older than the oldest event kept.
    let expired = crate::helpers::eventually(Duration::from_secs(10), || async {
        let status = feed(&app)
            .subscribe(v1::SubscribeRequest {
                after_cursor: "0".into(),
                ..Default::default()
            })
            .await
            .err();
        status.filter(|s| s.code() == Code::OutOfRange).is_some()
    })
    .await;
    assert!(expired, "cursor 0 became OUT_OF_RANGE");
    let status = feed(&app)
        .subscribe(v1::SubscribeRequest {
            after_cursor: "0".into(),
            ..Default::default()
        })
        .await
        .expect_err("out of range");
    let oldest = status
        .metadata()
        .get("oldest_cursor")
        .expect("oldest_cursor metadata")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(oldest, "1");
    let resumed = feed(&app)
        .subscribe(v1::SubscribeRequest {
            after_cursor: oldest,
            ..Default::default()
        })
        .await;
    assert!(resumed.is_ok(), "resuming after the oldest cursor works");
}

#[tokio::test]
async fn erasing_a_customer_empties_the_data_of_their_events() {
    let app = spawn_app().await;
    let ada = app
        .create_customer("Ada Lovelace", &["(415) 555-0100"])
        .await;
    app.rename(&ada, "Ada King").await;
    let bob = app.create_customer("Bob", &[]).await;
    app.privacy()
        .erase_customer(v1::EraseCustomerRequest {
            customer_id: ada.id.clone(),
        })
        .await
        .expect("erased");
    let mut stream = subscribe(&app, v1::SubscribeRequest::default()).await;
    let events = read_until(&mut stream, Duration::from_secs(10), |seen| seen.len() >= 4).await;
    assert_eq!(
        types(&events),
        [
            "customer.created",
            "customer.updated",
            "customer.created",
            "customer.erased"
        ]
    );
    for event in events.iter().filter(|e| e.customer_id == ada.id) {
        assert_eq!(event.data_json, "{}", "{} keeps data", event.r#type);
    }
    let bobs = events
        .iter()
        .find(|e| e.subject_id == bob.id)
        .expect("Bob's");
    assert_ne!(
        bobs.data_json, "{}",
        "other customers' events are untouched"
    );
}

/// `feed_head.settled_through`: every event id up to it is numbered or rolled back.
async fn settled_through(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT settled_through FROM feed_head")
        .fetch_one(&app.db)
        .await
        .expect("head")
}

#[tokio::test]
async fn an_event_committed_after_many_later_ones_is_still_numbered_and_delivered() {
    let app = spawn_app().await;
    let mut stream = subscribe(&app, v1::SubscribeRequest::default()).await;
    // A slow writer draws an event id first and keeps its transaction open.
    let mut slow = app.db.begin().await.expect("begin");
    switchboard::feed::record(&mut slow, Event::new("order.recorded", "slow"))
        .await
        .expect("recorded");
    let slow_id: i64 = sqlx::query_scalar("SELECT currval('feed_events_id_seq')")
        .fetch_one(&mut *slow)
        .await
        .expect("id");
    // Thirty later events commit one by one over many sequencer passes, and are delivered.
    for i in 0..30 {
        let mut tx = app.db.begin().await.expect("begin");
        switchboard::feed::record(
            &mut tx,
            Event::new("order.recorded", format!("fast-{i:02}")),
        )
        .await
        .expect("recorded");
        tx.commit().await.expect("commit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fast = read_until(&mut stream, Duration::from_secs(10), |seen| {
        seen.len() >= 30
    })
    .await;
    assert!(fast.iter().all(|e| e.subject_id.starts_with("fast-")));
    // Their ids are settled up to, and never past, the open transaction's.
    let settled = settled_through(&app).await;
    assert!(
        settled < slow_id,
        "settled through {settled}, past {slow_id}"
    );

    slow.commit().await.expect("commit");
    let late = read_until(&mut stream, Duration::from_secs(10), |seen| {
        !seen.is_empty()
    })
    .await;
    assert_eq!(types(&late), ["order.recorded"]);
    assert_eq!(late[0].subject_id, "slow");
    assert!(cursor(&late[0]) > cursor(fast.last().expect("30 events")));
    // With the slow writer gone, the settled ids move past all of them.
    let mut settled = settled_through(&app).await;
    for _ in 0..50 {
        if settled > slow_id + 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled = settled_through(&app).await;
    }
    assert!(settled >= slow_id + 30, "settled through {settled}");
}

async fn feed_months(app: &TestApp) -> Vec<chrono::NaiveDate> {
    switchboard::history::store::months(&app.db, Table::FeedEvents)
        .await
        .expect("months")
}

#[tokio::test]
async fn a_month_of_events_goes_whole_and_only_once_no_consumer_can_still_need_it() {
    let app = spawn_app_with(TestOptions {
        feed_retention: Duration::from_secs(10),
        ..TestOptions::default()
    })
    .await;
    let this_month = switchboard::history::month_of(chrono::Utc::now());
    let old = this_month
        .checked_sub_months(chrono::Months::new(2))
        .expect("month");
    assert!(
        switchboard::history::store::make_month(&app.db, Table::FeedEvents, old)
            .await
            .expect("make")
            .is_some(),
        "the month two back, as upkeep made it then"
    );
    // A young event, then fifty from two months back: numbered after it, so the retention that
    // has passed them cannot prune them before it (positions are pruned in order).
    app.create_customer("Young Event", &[]).await;
    let at = old.and_hms_opt(9, 0, 0).expect("time").and_utc() + chrono::Duration::days(2);
    sqlx::query(
        "INSERT INTO feed_events (topic, type, subject_id, data, created_at) \
         SELECT 'customer', 'customer.updated', 'old-' || g, '{}', $1 FROM generate_series(1, 50) g",
    )
    .bind(at)
    .execute(&app.db)
    .await
    .expect("old events");

    // Past a pruning round (every 5 s with a 10 s retention), the month is still there, and a
    // consumer starting from the beginning gets every event.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(feed_months(&app).await.contains(&old), "the month stays");
    let mut stream = subscribe(
        &app,
        v1::SubscribeRequest {
            after_cursor: "0".into(),
            ..Default::default()
        },
    )
    .await;
    let events = read_until(&mut stream, Duration::from_secs(10), |seen| {
        seen.len() >= 51
    })
    .await;
    assert_eq!(types(&events)[0], "customer.created");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.subject_id.starts_with("old-"))
            .count(),
        50
    );
    assert_increasing(&events);

    // Once the young event is past retention too, all are pruned and the month goes, as a table.
    let gone = crate::helpers::eventually(Duration::from_secs(30), || async {
        !feed_months(&app).await.contains(&old)
    })
    .await;
    assert!(gone, "the month was dropped");
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("feed_events_p{}", old.format("%Y_%m")))
        .fetch_one(&app.db)
        .await
        .expect("catalog");
    assert_eq!(exists, None, "dropped, not emptied");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM feed_events WHERE created_at < $1::date")
            .bind(this_month)
            .fetch_one(&app.db)
            .await
            .expect("old rows");
    assert_eq!(left, 0);
    let young: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM feed_events WHERE type = 'customer.created' AND created_at >= $1::date",
    )
    .bind(this_month)
    .fetch_one(&app.db)
    .await
    .expect("young rows");
    assert_eq!(young, 1, "this month's rows wait for this month to pass");
}
