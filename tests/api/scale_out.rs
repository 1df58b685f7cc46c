//! Scale-out: three `switchboard serve` processes behind one PostgreSQL database and one Redis
//! prefix, with gateways, agents, pop lookups and a feed subscriber each on a different one.
//! Whichever instance a client uses, it sees what the others did.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use switchboard::proto::v1;
use switchboard::proto::v1::call_event_service_client::CallEventServiceClient;
use switchboard::proto::v1::customer_service_client::CustomerServiceClient;
use switchboard::proto::v1::event_feed_service_client::EventFeedServiceClient;
use switchboard::proto::v1::screen_pop_service_client::ScreenPopServiceClient;

use crate::calls::{CallScript, next};
use crate::helpers::{
    Authed, ServerProcess, admin_database_url, free_port, fresh_database, log_in_and_watch, phone,
};

pub(crate) async fn report(channel: &Authed, gateway: &str, event: v1::CallEvent) {
    let event = v1::CallEvent {
        gateway_id: gateway.into(),
        ..event
    };
    let ack = CallEventServiceClient::new(channel.clone())
        .report_call_event(v1::ReportCallEventRequest { event: Some(event) })
        .await
        .expect("reported")
        .into_inner()
        .ack
        .expect("ack");
    assert_eq!(ack.outcome(), v1::AckOutcome::Accepted, "{}", ack.reason);
}

async fn pop_name(channel: &Authed, number: &str) -> String {
    ScreenPopServiceClient::new(channel.clone())
        .lookup(v1::LookupRequest {
            caller_number: number.into(),
            ..Default::default()
        })
        .await
        .expect("pop")
        .into_inner()
        .pop
        .and_then(|p| p.card)
        .map(|c| c.display_name)
        .unwrap_or_default()
}

#[tokio::test]
async fn three_instances_share_pops_pushes_and_the_feed() {
    three_instances_share(&[]).await;
}

/// The same story on a Redis Cluster of three masters and three replicas: the pops' keys, the
/// pins and the invalidations on their shards, the agents' fan-out over a sharded channel.
#[tokio::test]
async fn three_instances_share_pops_pushes_and_the_feed_over_a_redis_cluster() {
    let cluster = crate::helpers::PrivateCluster::start(3);
    let nodes = cluster.urls().join(",");
    three_instances_share(&[("SWITCHBOARD_REDIS_CLUSTER_NODES", &nodes)]).await;
}

/// Three instances with these settings: whichever one a client uses, it sees what the others did.
pub async fn three_instances_share(envs: &[(&str, &str)]) {
    use v1::CallEventType::*;
    let database_url = fresh_database(&admin_database_url()).await;
    let prefix = format!("t:{}:", uuid::Uuid::new_v4().simple());
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            ServerProcess::start(&database_url, &prefix, free_port(), envs, Stdio::null()).await,
        );
    }
    let mut channels = Vec::new();
    for instance in &instances {
        channels.push(instance.channel().await);
    }
    let (a, b, c) = (&channels[0], &channels[1], &channels[2]);

    // A service follows the feed on C from now on.
    let mut feed = EventFeedServiceClient::new(c.clone())
        .subscribe(v1::SubscribeRequest {
            from_latest: true,
            ..Default::default()
        })
        .await
        .expect("subscribed")
        .into_inner();

    // The customer is created on A; every instance pops the card (the first pop on each
    // caches it in the shared Redis).
    let created = CustomerServiceClient::new(a.clone())
        .create_customer(v1::CreateCustomerRequest {
            display_name: "Ada Lovelace".into(),
            contact_points: vec![phone("+14155550100")],
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner()
        .customer
        .expect("customer");
    for channel in [a, b, c] {
        assert_eq!(pop_name(channel, "+14155550100").await, "Ada Lovelace");
    }

    // Agents watch on C and A; the gateways report on A and B.
    let mut on_c = log_in_and_watch(c.clone(), "a-1").await;
    let mut on_a = log_in_and_watch(a.clone(), "a-2").await;
    for stream in [&mut on_c, &mut on_a] {
        assert_eq!(next(stream).await.kind(), v1::AgentCallEventKind::Synced);
    }
    // Let the watchers' Redis subscriptions settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for event in CallScript::new("g1-call")
        .event(Offered, "")
        .event(Ringing, "a-1")
        .events
    {
        report(a, "pbx-1", event).await;
    }
    for event in CallScript::new("g2-call")
        .event(Offered, "")
        .event(Ringing, "a-2")
        .events
    {
        report(b, "pbx-2", event).await;
    }
    for (stream, gateway) in [(&mut on_c, "pbx-1"), (&mut on_a, "pbx-2")] {
        let ringing = next(stream).await;
        assert_eq!(ringing.kind(), v1::AgentCallEventKind::Ringing);
        assert_eq!(ringing.call.as_ref().expect("call").gateway_id, gateway);
        assert_eq!(
            ringing.pop.and_then(|p| p.card).expect("card").display_name,
            "Ada Lovelace",
            "the agent gets the pop whichever instance the gateway used"
        );
    }

    // A rename on B: no instance serves the old card afterwards.
    CustomerServiceClient::new(b.clone())
        .update_customer(v1::UpdateCustomerRequest {
            customer: Some(v1::Customer {
                id: created.id.clone(),
                version: created.version,
                display_name: "Ada King".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .expect("renamed");
    for channel in [a, b, c] {
        assert_eq!(pop_name(channel, "+14155550100").await, "Ada King");
    }

    // The subscriber on C saw every change, made on A and B, in commit order.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("no error");
        if event.topic != "heartbeat" {
            seen.push((event.r#type, event.subject_id));
        }
    }
    let expected = [
        ("customer.created", created.id.clone()),
        ("call.state_changed", "pbx-1/g1-call".to_owned()),
        ("call.state_changed", "pbx-1/g1-call".to_owned()),
        ("call.state_changed", "pbx-2/g2-call".to_owned()),
        ("call.state_changed", "pbx-2/g2-call".to_owned()),
        ("customer.updated", created.id.clone()),
    ];
    let seen: Vec<(&str, &str)> = seen.iter().map(|(t, s)| (t.as_str(), s.as_str())).collect();
    let expected: Vec<(&str, &str)> = expected.iter().map(|(t, s)| (*t, s.as_str())).collect();
    assert_eq!(seen, expected);
}
