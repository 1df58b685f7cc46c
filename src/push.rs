//! Push: the fan-out of call changes to the agents watching them, on whichever instance they
//! are. A call-event batch's commit publishes here (then records on the live board); softphone
//! streams (`agents::Watcher`) subscribe here.
//!
//! The instance that commits a call event publishes its notifications on one Redis pub/sub
//! channel (`{prefix}agent-events`; on a Redis Cluster, a sharded channel: `SPUBLISH` reaches
//! only the nodes of its slot, not the whole cluster bus); every instance subscribes to it and hands each notification
//! to its local watchers of that agent. It also writes the call's hot state
//! (`{prefix}call:{gateway}/{call}`), sent together with it.
//!
//! Each watcher has a bounded buffer. A watcher that falls behind is never waited for: it is marked
//! lagged and later receives RESYNC and a fresh snapshot, so a stuck softphone cannot slow the
//! gateways or other agents. When publishing fails (Redis down, or a cluster's slot moving),
//! notifications go to this instance's watchers directly, and the next envelope that gets through
//! (one is sent within half a second if no call change does it) asks every instance to
//! resynchronize its watchers, which missed them. When the subscription comes back after an
//! interruption, every local watcher is resynchronized, because it may have missed changes
//! published elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use crate::call_model::{CallView, Notice, NoticeKind};
use crate::proto::v1;
use crate::proto_time::to_timestamp;
use crate::redis_link::{RedisLink, RedisTarget};

/// Notifications a watcher may have queued before it counts as lagging.
const WATCHER_BUFFER: usize = 64;
/// How long a finished call's hot state stays in Redis (active calls: 12 hours).
const ENDED_CALL_TTL_SECS: u64 = 3600;
const ACTIVE_CALL_TTL_SECS: u64 = 12 * 3600;

/// What instances exchange over Redis pub/sub. It is internal, so it is not in the public proto
/// package; its field numbers are those of the `switchboard.v1.AgentFanout` message it replaced,
/// so instances of both versions understand each other during a rolling upgrade.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct Envelope {
    #[prost(message, repeated, tag = "1")]
    pub notifications: Vec<AgentNotification>,
    /// The sender failed to publish earlier notifications: every instance resynchronizes its
    /// watchers (an instance of the release before ignores it).
    #[prost(bool, tag = "2")]
    pub resync: bool,
}

/// One agent's notice of a call change, as fanned out.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct AgentNotification {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    #[prost(enumeration = "v1::AgentCallEventKind", tag = "2")]
    pub kind: i32,
    /// The call carries the caller's number: no derived `Debug` prints it.
    #[prost(message, optional, tag = "3")]
    pub call: Option<v1::AgentCall>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("notifications", &self.notifications)
            .field("resync", &self.resync)
            .finish()
    }
}

impl std::fmt::Debug for AgentNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentNotification")
            .field("agent_id", &self.agent_id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum Delivery {
    Notice(Box<AgentNotification>),
    /// Changes may have been missed: send a fresh snapshot.
    Resync,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    lagged: Arc<AtomicBool>,
}

pub struct Fanout {
    link: Option<RedisLink>,
    channel: String,
    local: Mutex<HashMap<String, Vec<Slot>>>,
    next_id: AtomicU64,
    /// A publish with notifications failed: the next envelope that gets through asks every
    /// instance to resynchronize, since their watchers missed them.
    owed_resync: AtomicBool,
}

/// One watcher's registration; dropping it unregisters.
pub struct Subscription {
    fanout: Arc<Fanout>,
    agent_id: String,
    id: u64,
    pub rx: mpsc::Receiver<Delivery>,
    pub lagged: Arc<AtomicBool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut local = self.fanout.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slots) = local.get_mut(&self.agent_id) {
            slots.retain(|slot| slot.id != self.id);
            if slots.is_empty() {
                local.remove(&self.agent_id);
            }
        }
    }
}

impl Fanout {
    pub fn new(link: Option<RedisLink>) -> Arc<Self> {
        let channel = link
            .as_ref()
            .map_or_else(String::new, |l| l.key("agent-events"));
        Arc::new(Self {
            link,
            channel,
            local: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            owed_resync: AtomicBool::new(false),
        })
    }

    pub fn subscribe(self: &Arc<Self>, agent_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            tx,
            lagged: lagged.clone(),
        };
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent_id.to_owned())
            .or_default()
            .push(slot);
        Subscription {
            fanout: Arc::clone(self),
            agent_id: agent_id.to_owned(),
            id,
            rx,
            lagged,
        }
    }

    /// Watchers on this instance.
    pub fn local_watchers(&self) -> usize {
        self.local
            .lock()
            .map(|l| l.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Publishes committed changes (in commit order): every call's hot state and all their
    /// notifications, in one Redis round trip.
    pub async fn publish(&self, changes: &[(CallView, Vec<Notice>)]) {
        let notifications: Vec<AgentNotification> = changes
            .iter()
            .flat_map(|(_, notices)| notices.iter().cloned().map(notification))
            .collect();
        let Some(link) = &self.link else {
            self.dispatch(notifications);
            return;
        };
        // The hot state is for queue statistics: it keeps no caller number, so there is nothing
        // personal in it to erase.
        let mut commands: Vec<redis::Cmd> = changes
            .iter()
            .map(|(call, _)| {
                let ttl = if call.state.is_terminal() {
                    ENDED_CALL_TTL_SECS
                } else {
                    ACTIVE_CALL_TTL_SECS
                };
                let bytes = v1::AgentCall {
                    caller_number: String::new(),
                    ..agent_call(call)
                }
                .encode_to_vec();
                let mut set = redis::cmd("SET");
                set.arg(link.key(&format!("call:{}", call.key())))
                    .arg(bytes)
                    .arg("EX")
                    .arg(ttl);
                set
            })
            .collect();
        // Encoded from a borrow: the notifications themselves are needed again only if Redis fails.
        let envelope = Envelope {
            notifications,
            resync: self.owed_resync.swap(false, Ordering::AcqRel),
        };
        let owes = !envelope.notifications.is_empty() || envelope.resync;
        if owes {
            let mut publish = redis::cmd(if link.is_cluster() {
                "SPUBLISH"
            } else {
                "PUBLISH"
            });
            publish.arg(&self.channel).arg(envelope.encode_to_vec());
            commands.push(publish);
        }
        let result = link.send_all(commands).await;
        if result.is_err() {
            // Agents on other instances get these at the resync that the next envelope to get
            // through asks for (`spawn_owed_resync` sends one if no publish does).
            if owes {
                self.owed_resync.store(true, Ordering::Release);
            }
            self.dispatch(envelope.notifications);
        }
    }

    fn dispatch(&self, notifications: Vec<AgentNotification>) {
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        for notification in notifications {
            for slot in local.get(&notification.agent_id).into_iter().flatten() {
                if slot
                    .tx
                    .try_send(Delivery::Notice(Box::new(notification.clone())))
                    .is_err()
                {
                    slot.lagged.store(true, Ordering::Release);
                }
            }
        }
    }

    fn resync_all(&self) {
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        for slot in local.values().flatten() {
            slot.lagged.store(true, Ordering::Release);
            slot.tx.try_send(Delivery::Resync).ok();
        }
    }

    /// Keeps a subscription to the channel, reconnecting with back-off, until `stop` fires.
    pub fn spawn_subscriber(
        self: &Arc<Self>,
        target: RedisTarget,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match target {
                RedisTarget::Server(url) => {
                    let Ok(client) = redis::Client::open(url.as_str()) else {
                        return;
                    };
                    let channel = this.channel.clone();
                    let subscribe = move || {
                        let (client, channel) = (client.clone(), channel.clone());
                        async move {
                            let mut pubsub = client.get_async_pubsub().await?;
                            pubsub.subscribe(&channel).await?;
                            Ok(pubsub
                                .into_on_message()
                                .map(|message| message.get_payload_bytes().to_vec())
                                .boxed())
                        }
                    };
                    this.keep_subscribed(subscribe, stop).await;
                }
                RedisTarget::Cluster(nodes) => {
                    let channel = this.channel.clone();
                    let subscribe = move || sharded_subscription(nodes.clone(), channel.clone());
                    this.keep_subscribed(subscribe, stop).await;
                }
            }
        })
    }

    /// Holds the subscription that `subscribe` makes, and makes it again (every half second
    /// until it holds) whenever it is lost; after an interruption, every local watcher is
    /// resynchronized once it holds again.
    async fn keep_subscribed<F, Fut>(&self, mut subscribe: F, mut stop: watch::Receiver<bool>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = redis::RedisResult<futures::stream::BoxStream<'static, Vec<u8>>>>,
    {
        let mut interrupted = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(2), subscribe()).await {
                Ok(Ok(mut messages)) => {
                    if interrupted {
                        tracing::info!(
                            "agent push subscription restored; resynchronizing watchers"
                        );
                        self.resync_all();
                    }
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(payload) => self.receive(&payload),
                                None => break,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                    tracing::warn!("agent push subscription lost");
                }
                Ok(Err(error)) => tracing::debug!(%error, "agent push subscription failed"),
                Err(_) => tracing::debug!("agent push subscription timed out"),
            }
            interrupted = true;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Publishes the resync owed after a failed publish, every `interval` until it gets
    /// through, so agents elsewhere catch up even when no new call change follows.
    pub fn spawn_owed_resync(
        self: &Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
                if this.owed_resync.load(Ordering::Acquire) {
                    this.publish(&[]).await;
                }
            }
        })
    }

    fn receive(&self, payload: &[u8]) {
        match Envelope::decode(payload) {
            Ok(envelope) => {
                if envelope.resync {
                    tracing::info!("another instance missed publishing; resynchronizing watchers");
                    self.resync_all();
                }
                self.dispatch(envelope.notifications)
            }
            Err(error) => tracing::warn!(%error, "undecodable agent fan-out message"),
        }
    }
}

/// On a cluster: a sharded subscription (`SSUBSCRIBE`) on a fresh cluster connection, which reads
/// the slot map anew (after a fail-over, the promoted replica serves the slot). It holds once the
/// slot's node confirms it (the client may take the request while that node is unreachable, and
/// keep it for later); it ends when any node's connection drops, since that node may have held it.
async fn sharded_subscription(
    nodes: Vec<String>,
    channel: String,
) -> redis::RedisResult<futures::stream::BoxStream<'static, Vec<u8>>> {
    let (tx, mut pushes) = mpsc::unbounded_channel::<redis::PushInfo>();
    let client = crate::redis_link::cluster_client(&nodes, Duration::from_secs(2))?
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()?;
    let mut connection = client.get_async_connection().await?;
    connection.ssubscribe(&channel).await?;
    loop {
        match pushes.recv().await.map(|push| push.kind) {
            Some(redis::PushKind::SSubscribe) => break,
            Some(redis::PushKind::Disconnection) | None => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "disconnected before the subscription was confirmed",
                )));
            }
            Some(_) => {}
        }
    }
    // The connection lives as long as the stream: dropping it would end the pushes.
    Ok(futures::stream::unfold(
        (pushes, connection),
        |(mut pushes, connection)| async move {
            loop {
                match pushes.recv().await.map(|push| (push.kind, push.data)) {
                    Some((redis::PushKind::SMessage, data)) => {
                        if let Some(redis::Value::BulkString(payload)) = data.into_iter().nth(1) {
                            return Some((payload, (pushes, connection)));
                        }
                    }
                    Some((redis::PushKind::Disconnection, _)) | None => return None,
                    Some(_) => {}
                }
            }
        },
    )
    .boxed())
}

/// The wire form of a call for softphones.
pub fn agent_call(call: &CallView) -> v1::AgentCall {
    use crate::call_model::CallState;
    let state = match call.state {
        CallState::Offered => v1::CallState::Offered,
        CallState::Queued => v1::CallState::Queued,
        CallState::Ringing => v1::CallState::Ringing,
        CallState::Connected => v1::CallState::Connected,
        CallState::Held => v1::CallState::Held,
        CallState::Ended => v1::CallState::Ended,
        CallState::Abandoned => v1::CallState::Abandoned,
    };
    v1::AgentCall {
        gateway_id: call.gateway_id.as_str().to_owned(),
        call_id: call.call_id.clone(),
        state: state.into(),
        caller_number: call.caller_number.clone().unwrap_or_default(),
        dialed_number: call.dialed_number.clone().unwrap_or_default(),
        queue: call.queue.clone().unwrap_or_default(),
        current_agent_id: call
            .current_agent
            .as_ref()
            .map(|agent| agent.as_str().to_owned())
            .unwrap_or_default(),
        offered_at: call.offered_at.map(to_timestamp),
        answered_at: call.answered_at.map(to_timestamp),
        customer_id: call
            .customer_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

fn notification(notice: Notice) -> AgentNotification {
    let kind = match notice.kind {
        NoticeKind::Ringing => v1::AgentCallEventKind::Ringing,
        NoticeKind::Answered => v1::AgentCallEventKind::Answered,
        NoticeKind::Held => v1::AgentCallEventKind::Held,
        NoticeKind::Resumed => v1::AgentCallEventKind::Resumed,
        NoticeKind::Conferenced => v1::AgentCallEventKind::Conferenced,
        NoticeKind::TransferredAway => v1::AgentCallEventKind::TransferredAway,
        NoticeKind::Ended => v1::AgentCallEventKind::Ended,
    };
    AgentNotification {
        agent_id: notice.agent_id.into_string(),
        kind: kind.into(),
        call: Some(agent_call(&notice.call)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call_model::CallState;

    fn notice(agent: &str, n: usize) -> Notice {
        Notice {
            agent_id: agent.into(),
            kind: NoticeKind::Ringing,
            call: CallView {
                gateway_id: "pbx".into(),
                call_id: format!("c-{n}"),
                state: CallState::Ringing,
                caller_number: None,
                dialed_number: None,
                queue: None,
                current_agent: Some(agent.into()),
                offered_at: None,
                answered_at: None,
                customer_id: None,
            },
        }
    }

    #[tokio::test]
    async fn a_stuck_watcher_is_marked_lagged_and_never_blocks_the_publisher() {
        let fanout = Fanout::new(None);
        let stuck = fanout.subscribe("a-1");
        let mut reading = fanout.subscribe("a-2");
        let publishing = async {
            for n in 0..WATCHER_BUFFER * 3 {
                fanout
                    .publish(&[(
                        notice("a-1", n).call,
                        vec![notice("a-1", n), notice("a-2", n)],
                    )])
                    .await;
                if let Some(Delivery::Notice(got)) = reading.rx.recv().await {
                    assert_eq!(got.call.map(|c| c.call_id), Some(format!("c-{n}")));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), publishing)
            .await
            .expect("publishing never waits on a stuck watcher");
        assert!(
            stuck.lagged.load(Ordering::Acquire),
            "the stuck watcher is told it missed changes"
        );
        assert!(!reading.lagged.load(Ordering::Acquire));
        assert_eq!(fanout.local_watchers(), 2);
        drop(stuck);
        assert_eq!(
            fanout.local_watchers(),
            1,
            "dropping a subscription unregisters it"
        );
    }
}
