//! Which agent was shown which call's pop: the record behind the scorecard's "pop delivered"
//! share (docs/SCORECARD.md).
//!
//! A softphone stream notes each pop it sends (RINGING, or SNAPSHOT after a reconnect) here; one
//! task writes the notes in batches, one row per call and agent (the first delivery wins). The
//! note never waits for the database: the queue is bounded and a note that finds it full is
//! dropped and counted, because a pop must not wait for its own statistics. What is dropped, or
//! still queued when the process dies, makes the share read low, never high.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;

/// Notes queued before new ones are dropped.
const QUEUE: usize = 8192;
/// Notes written in one statement.
const BATCH: usize = 512;

struct Shown {
    gateway_id: String,
    call_id: String,
    agent_id: String,
    at: DateTime<Utc>,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct PopsShown {
    tx: mpsc::Sender<Shown>,
    dropped: Arc<AtomicU64>,
}

impl PopsShown {
    /// Starts the writer task; it ends when every sender is gone.
    pub fn spawn(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(pool, rx));
        Self {
            tx,
            dropped: Arc::default(),
        }
    }

    /// Notes that `agent_id`'s softphone got the pop of the call.
    pub fn note(&self, gateway_id: &str, call_id: &str, agent_id: &str) {
        let shown = Shown {
            gateway_id: gateway_id.to_owned(),
            call_id: call_id.to_owned(),
            agent_id: agent_id.to_owned(),
            at: Utc::now(),
        };
        if self.tx.try_send(shown).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "pop delivery notes dropped: the writer is behind");
            }
        }
    }
}

async fn write(pool: PgPool, mut rx: mpsc::Receiver<Shown>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if let Err(error) = super::store::record_pops_shown(
            &pool,
            batch.iter().map(|s| {
                (
                    s.gateway_id.as_str(),
                    s.call_id.as_str(),
                    s.agent_id.as_str(),
                    s.at,
                )
            }),
        )
        .await
        {
            tracing::warn!(
                error = &error as &dyn std::error::Error,
                rows = batch.len(),
                "pop delivery notes not written"
            );
        }
        batch.clear();
    }
}
