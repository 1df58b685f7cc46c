//! A real Redis Cluster (#26 item 1): three masters and three replicas on loopback, created with
//! `redis-cli --cluster create`, and the service pointed at it with `--redis-cluster-nodes`.
//!
//! - Every Redis story (pops, pins, invalidations, the live board) runs on it from the cache, with
//!   no Redis error. The fan-out across instances is `scale_out.rs`'s story on a cluster.
//! - A master killed under pop load: every pop is answered (from PostgreSQL while its slots
//!   move), and the cache serves again once its replica took over.
//! - A replica that missed an invalidation is never promoted with the old card: the write waits
//!   for a replica to hold the invalidation (`WAIT`), and treats too few as a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchboard::proto::v1;
use switchboard::screenpop::cache::NumberKey;

use crate::helpers::{PrivateCluster, TestApp, TestOptions, spawn_app_with};
use crate::live::{board, floor, settles_on};
use crate::screenpop::card_name;

async fn app_on(cluster: &PrivateCluster) -> TestApp {
    spawn_app_with(TestOptions {
        redis_url: None,
        redis_cluster_nodes: cluster.urls(),
        ..TestOptions::default()
    })
    .await
}

/// Pops `number` until one comes from the cache (at most 20 s: a fail-over on a loaded machine).
async fn cached(app: &TestApp, number: &str) -> bool {
    app.pop_until_cached(number, 200).await
}

/// The hash tag of a number's keys: the key whose slot they all share.
fn tag(number: &str) -> String {
    format!("{{{}}}", NumberKey::of(number).as_str())
}

#[tokio::test]
async fn pops_pins_invalidations_and_the_live_board_run_on_three_shards() {
    let cluster = PrivateCluster::start(3);
    let app = app_on(&cluster).await;
    // Numbers whose keys land on different shards.
    let numbers = [
        "+14155550100",
        "+442079460958",
        "+12025550100",
        "+16175550100",
    ];
    let masters: std::collections::HashSet<usize> = numbers
        .iter()
        .map(|n| cluster.shard_of(&tag(n)).0)
        .collect();
    assert!(masters.len() >= 2, "the numbers span shards");
    let ada = app.create_customer("Ada Lovelace", &numbers).await;
    assert!(cached(&app, numbers[0]).await, "no pop was ever cached");
    let errors = || async { crate::metrics::scrape(&app).await["switchboard_redis_errors_total"] };
    let errors_before = errors().await;
    crate::redis_slots::cached_and_pinned(&app, &numbers).await;
    // One write invalidates every number, on every shard, and each waits for its replica.
    app.rename(&ada, "Ada King").await;
    for number in numbers {
        let (pop, source) = app.pop(number).await;
        assert_eq!(
            (card_name(&pop), source),
            ("Ada King", v1::PopSource::Database),
            "{number}"
        );
        assert_eq!(app.pop(number).await.1, v1::PopSource::Cache, "{number}");
    }
    // The live board, split per queue over the shards.
    floor(&app).await;
    let now = settles_on(&app, v1::LiveSource::Redis, |r| r.queues.len() == 2).await;
    assert_eq!(board(&now, "sales"), (2, Some(10), 1, 1, 1));
    assert_eq!(board(&now, "support"), (0, None, 1, 1, 0));

    assert_eq!(errors().await, errors_before, "no Redis command failed");
}

#[tokio::test]
async fn a_master_killed_under_pop_load_loses_no_pop_and_its_replica_takes_over() {
    let mut cluster = PrivateCluster::start(3);
    let app = Arc::new(app_on(&cluster).await);
    let numbers: Vec<String> = (0..24).map(|i| format!("+1415555{:04}", 100 + i)).collect();
    for (i, number) in numbers.iter().enumerate() {
        app.create_customer(&format!("Customer {i}"), &[number.as_str()])
            .await;
    }
    for number in &numbers {
        assert!(cached(&app, number).await, "{number} cached");
    }
    let (master, replica) = cluster.shard_of(&tag(&numbers[0]));
    let replica = replica.expect("the master's replica");

    // Four clients pop the numbers round and round while the master dies.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (app, stop, numbers) = (Arc::clone(&app), Arc::clone(&stop), numbers.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    let number = &numbers[i % numbers.len()];
                    let started = Instant::now();
                    let answer = app
                        .pops
                        .clone()
                        .lookup(v1::LookupRequest {
                            caller_number: number.clone(),
                            ..Default::default()
                        })
                        .await;
                    let name = answer
                        .as_ref()
                        .ok()
                        .and_then(|r| r.get_ref().pop.as_ref().map(|p| card_name(p).to_owned()));
                    seen.push((i % numbers.len(), name, started.elapsed()));
                    i += 1;
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.nodes[master].stop();
    let took_over = tokio::task::spawn_blocking({
        let cluster = std::mem::take(&mut cluster.nodes);
        move || {
            let cluster = PrivateCluster { nodes: cluster };
            let took_over = cluster.wait_until_master(replica);
            (cluster, took_over)
        }
    })
    .await
    .expect("waited");
    let (cluster, took_over) = took_over;
    assert!(took_over, "the replica took over");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    for client in clients {
        for (i, name, took) in client.await.expect("client ran") {
            assert_eq!(
                name.as_deref(),
                Some(format!("Customer {i}").as_str()),
                "every pop is answered, with its card"
            );
            answered += 1;
            slowest = slowest.max(took);
        }
    }
    assert!(answered > 100, "the load ran: {answered} pops");
    eprintln!("fail-over under load: {answered} pops answered, the slowest in {slowest:?}");
    // A pop waits at most one Redis timeout (50 ms) before PostgreSQL answers; the rest is the
    // machine (two cores, a cluster and the suite on them).
    assert!(slowest < Duration::from_secs(2), "slowest pop {slowest:?}");

    // After the fail-over: a write to a number of the moved slots invalidates on the new master,
    // and the cache serves that shard again.
    let customer = app.create_customer("Grace Hopper", &["+12065550100"]).await;
    let moved = numbers
        .iter()
        .find(|n| cluster.shard_of(&tag(n)).0 == replica)
        .expect("a number on the promoted replica");
    assert!(
        cached(&app, moved).await,
        "the cache serves the moved slots"
    );
    let renamed = app.rename(&customer, "Grace B. Hopper").await;
    assert_eq!(renamed.display_name, "Grace B. Hopper");
    assert!(cached(&app, "+12065550100").await);
    assert_eq!(
        card_name(&app.pop("+12065550100").await.0),
        "Grace B. Hopper"
    );
}

#[tokio::test]
async fn a_replica_that_missed_an_invalidation_is_never_promoted_with_the_old_card() {
    let mut cluster = PrivateCluster::start(3);
    let app = app_on(&cluster).await;
    let number = "+14155550100";
    let ada = app.create_customer("Ada Lovelace", &[number]).await;
    assert!(cached(&app, number).await, "the old card is cached");
    let (master, replica) = cluster.shard_of(&tag(number));
    let replica = replica.expect("the master's replica");
    // The replica holds the cached card. Frozen, it reads nothing more from its master; 32 MB
    // written to the master's shard fill the socket between them, so what follows stays in the
    // master's buffer and dies with it (a replica lagging behind a burst of writes).
    cluster.wait_until_whole();
    cluster.nodes[replica].pause(true);
    let client = redis::Client::open(cluster.nodes[master].url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("the master");
    let burst = vec![b'x'; 1 << 20];
    for i in 0..32 {
        let _: () = redis::cmd("SET")
            .arg(format!("burst:{}:{i}", tag(number)))
            .arg(&burst)
            .query_async(&mut conn)
            .await
            .expect("burst");
    }
    app.rename(&ada, "Ada King").await;
    // The master dies before the replica could have the invalidation; the replica takes over.
    cluster.nodes[master].stop();
    cluster.nodes[replica].pause(false);
    let cluster = tokio::task::spawn_blocking(move || {
        assert!(cluster.wait_until_master(replica), "the replica took over");
        cluster
    })
    .await
    .expect("waited");
    // Whatever the pops meet meanwhile, none shows the old card, and the cache serves again.
    let mut from_cache = false;
    for _ in 0..300 {
        let (pop, source) = app.pop(number).await;
        assert_eq!(card_name(&pop), "Ada King", "from {source:?}");
        if source == v1::PopSource::Cache {
            from_cache = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(from_cache, "the cache serves again");
    drop(cluster);
}

/// The agents' fan-out is a sharded channel, held by the master of its slot. When that master
/// dies, an agent watching on one instance still gets the calls a gateway reports on another:
/// the subscription follows the slot to the promoted replica, and the watcher is resynchronized
/// with what it missed meanwhile.
#[tokio::test]
async fn agents_keep_getting_calls_across_instances_when_the_fan_out_shard_fails_over() {
    use crate::calls::{CallScript, next};
    use crate::helpers::{ServerProcess, admin_database_url, free_port, fresh_database};
    use switchboard::proto::v1::CallEventType::*;

    let cluster = PrivateCluster::start(3);
    let database_url = fresh_database(&admin_database_url()).await;
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let nodes = cluster.urls().join(",");
    let envs = [
        ("SWITCHBOARD_REDIS_CLUSTER_NODES", nodes.as_str()),
        ("RUST_LOG", "info,switchboard=debug"),
    ];
    let mut instances = Vec::new();
    let mut logs = Vec::new();
    for i in 0..2 {
        let (log, stderr) = crate::helpers::LogFile::create(&format!("fanout-{i}"));
        logs.push(log);
        instances
            .push(ServerProcess::start(&database_url, &prefix, free_port(), &envs, stderr).await);
    }
    let (agent_side, gateway_side) = (instances[0].channel().await, instances[1].channel().await);
    let mut watching = crate::helpers::log_in_and_watch(agent_side, "a-1").await;
    assert_eq!(
        next(&mut watching).await.kind(),
        v1::AgentCallEventKind::Synced
    );
    let report = |call: &'static str| {
        let channel = gateway_side.clone();
        async move {
            for event in CallScript::new(call)
                .event(Offered, "")
                .event(Ringing, "a-1")
                .events
            {
                crate::scale_out::report(&channel, "pbx-1", event).await;
            }
        }
    };
    // The agent's view shows `call` ringing: as a RINGING, or in a snapshot after a RESYNC.
    async fn rings(watching: &mut tonic::Streaming<v1::WatchAgentResponse>, call: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(1), futures::StreamExt::next(watching))
                    .await
            else {
                continue;
            };
            let kind = message.kind();
            let this_call = message.call.as_ref().is_some_and(|c| c.call_id == call);
            if this_call
                && matches!(
                    kind,
                    v1::AgentCallEventKind::Ringing | v1::AgentCallEventKind::Snapshot
                )
            {
                return true;
            }
        }
        false
    }
    // Let the subscription settle, then a call before the fail-over crosses instances.
    tokio::time::sleep(Duration::from_millis(500)).await;
    report("before").await;
    assert!(
        rings(&mut watching, "before").await,
        "pushed across instances"
    );

    let channel = format!("{prefix}agent-events");
    let (master, replica) = cluster.shard_of(&channel);
    let replica = replica.expect("the master's replica");
    let mut cluster = cluster;
    cluster.nodes[master].stop();
    let cluster = tokio::task::spawn_blocking(move || {
        assert!(cluster.wait_until_master(replica), "the replica took over");
        cluster
    })
    .await
    .expect("waited");
    report("after").await;
    let ok = rings(&mut watching, "after").await;
    if !ok {
        drop(instances);
        for log in logs {
            eprintln!("{}", log.take());
        }
    }
    assert!(ok, "pushed across instances after the fail-over");
    drop(cluster);
}
