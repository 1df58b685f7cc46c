//! One softphone's stream: the snapshot of its current calls, then live changes, with the pop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{AgentError, Agents};
use crate::call_model::CallView;
use crate::ids::{AgentId, GatewayId};
use crate::phone::PhoneParser;
use crate::proto::v1;
use crate::push::{Delivery, Fanout, agent_call};
use crate::screenpop::{PopRequest, ScreenPops};

/// Responses buffered towards one softphone before the watcher waits for it.
const RESPONSE_BUFFER: usize = 32;

/// Where a watcher reads the calls an agent is on now, for its first snapshot: the calls context
/// implements it (`calls::CallBook`), so agents never import calls.
pub trait ActiveCalls: Send + Sync {
    fn for_agent<'a>(&'a self, agent_id: &'a AgentId)
    -> BoxFuture<'a, sqlx::Result<Vec<CallView>>>;
}

#[derive(Clone)]
pub struct Watcher {
    pub calls: Arc<dyn ActiveCalls>,
    pub agents: Agents,
    pub fanout: Arc<Fanout>,
    pub pops: ScreenPops,
    pub phones: PhoneParser,
    /// Where each pop sent is noted, for the scorecard's adoption figures.
    pub shown: super::PopsShown,
}

/// What the stream carries: a response, or the error that ends it.
pub type WatchItem = Result<v1::WatchAgentResponse, AgentError>;

impl Watcher {
    /// Registers the watcher (before the snapshot, so no change falls between the two) and starts
    /// the task that feeds the returned receiver.
    pub async fn watch(&self, agent_id: String) -> Result<mpsc::Receiver<WatchItem>, AgentError> {
        self.agents.ensure_known(&agent_id).await?;
        let mut subscription = self.fanout.subscribe(&agent_id);
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let this = self.clone();
        tokio::spawn(async move {
            if this.send_snapshot(&agent_id, &tx).await.is_err() {
                return;
            }
            loop {
                let delivery = tokio::select! {
                    delivery = subscription.rx.recv() => delivery,
                    () = tx.closed() => break,
                };
                let Some(delivery) = delivery else { break };
                let lagged = subscription.lagged.swap(false, Ordering::AcqRel);
                if lagged || matches!(delivery, Delivery::Resync) {
                    while subscription.rx.try_recv().is_ok() {}
                    if tx
                        .send(Ok(marker(v1::AgentCallEventKind::Resync)))
                        .await
                        .is_err()
                        || this.send_snapshot(&agent_id, &tx).await.is_err()
                    {
                        break;
                    }
                    continue;
                }
                let Delivery::Notice(notice) = delivery else {
                    continue;
                };
                let pop = match notice.kind() {
                    v1::AgentCallEventKind::Ringing => match &notice.call {
                        Some(call) => {
                            this.pop_for(
                                &agent_id,
                                &call.caller_number,
                                &call.gateway_id.as_str().into(),
                                &call.call_id,
                            )
                            .await
                        }
                        None => None,
                    },
                    _ => None,
                };
                let response = v1::WatchAgentResponse {
                    kind: notice.kind,
                    call: notice.call,
                    pop,
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    /// Sends SNAPSHOT for each current call (with its pop), then SYNCED. `Err` when the stream ended.
    async fn send_snapshot(&self, agent_id: &str, tx: &mpsc::Sender<WatchItem>) -> Result<(), ()> {
        let calls = match self.current_calls(agent_id).await {
            Ok(calls) => calls,
            Err(error) => {
                tx.send(Err(error)).await.ok();
                return Err(());
            }
        };
        for call in calls {
            let pop = self
                .pop_for(
                    agent_id,
                    call.caller_number.as_deref().unwrap_or(""),
                    &call.gateway_id,
                    &call.call_id,
                )
                .await;
            let response = v1::WatchAgentResponse {
                kind: v1::AgentCallEventKind::Snapshot.into(),
                call: Some(agent_call(&call)),
                pop,
            };
            tx.send(Ok(response)).await.map_err(|_| ())?;
        }
        tx.send(Ok(marker(v1::AgentCallEventKind::Synced)))
            .await
            .map_err(|_| ())
    }

    async fn current_calls(&self, agent_id: &str) -> Result<Vec<CallView>, AgentError> {
        Ok(self.calls.for_agent(&AgentId::new(agent_id)).await?)
    }

    /// The call's pop (its pin when current), noted as shown to the agent; `None` without a
    /// caller number or on failure.
    async fn pop_for(
        &self,
        agent_id: &str,
        caller_number: &str,
        gateway_id: &GatewayId,
        call_id: &str,
    ) -> Option<v1::ScreenPop> {
        let caller = self.phones.parse(caller_number, "").ok()?;
        let request = PopRequest {
            caller,
            dialed: None,
            call_id: Some(crate::call_model::call_key(gateway_id, call_id)),
        };
        let (pop, _) = self.pops.lookup(&request).await.ok()?;
        self.shown.note(gateway_id.as_str(), call_id, agent_id);
        Some(pop)
    }
}

fn marker(kind: v1::AgentCallEventKind) -> v1::WatchAgentResponse {
    v1::WatchAgentResponse {
        kind: kind.into(),
        call: None,
        pop: None,
    }
}
