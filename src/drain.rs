//! Draining: on SIGTERM, long-lived streams end cleanly (status OK) instead of being cut when the
//! drain timeout runs out, so gateways and softphones reconnect to another instance at once.
//!
//! A gateway's event stream stops reading new events, acks every event it already read, then
//! ends: whatever the gateway sent after that was never acked, so it resends it elsewhere. An
//! agent's watch stream ends; the softphone re-watches and gets a fresh snapshot.

use tokio::sync::watch;

/// Resolves [`Draining::started`] once the instance begins to drain.
#[derive(Clone, Debug)]
pub struct Draining(watch::Receiver<bool>);

impl Draining {
    /// The handle to start draining, and the signal streams wait on.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Completes when draining starts (or when the instance is gone).
    pub async fn started(mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}
