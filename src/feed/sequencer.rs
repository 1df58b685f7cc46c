//! The background task every instance runs: it numbers committed events when no other instance
//! is doing it, applies retention (positions first, then whole months of events), and publishes
//! the head so this instance's subscribers wake up.
//!
//! Every instance polls (one indexed query per [`POLL_INTERVAL`]) rather than having writers
//! `NOTIFY`: a `NOTIFY` serializes commits in PostgreSQL, and call events commit thousands of
//! times a second. So an event reaches subscribers about one poll interval after its commit.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::store::{self, Head};

/// How often each instance looks for new events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Most events numbered by one statement.
const SEQUENCE_BATCH: i64 = 5_000;
/// Most positions pruned by one retention statement.
const PRUNE_BATCH: i64 = 10_000;

/// Drops the months of events that retention has passed entirely (see
/// [`store::months_to_drop`]). One DROP a month; it waits at most a moment for its lock, and a
/// round that cannot have it leaves the month for the next.
async fn drop_pruned_months(pool: &PgPool, cutoff: chrono::DateTime<Utc>) -> sqlx::Result<()> {
    let months = crate::history::store::months(pool, crate::history::Table::FeedEvents).await?;
    let cap = crate::history::month_of(cutoff);
    let Some(keep_from) = store::months_to_drop(pool, &months, cap).await? else {
        return Ok(());
    };
    if months.first().is_some_and(|first| *first < keep_from)
        && let Some(dropped) = crate::history::store::try_drop_before(
            pool,
            crate::history::Table::FeedEvents,
            keep_from,
        )
        .await?
    {
        tracing::info!(?dropped, "feed months dropped");
    }
    Ok(())
}

/// The feed's head as this instance last saw it.
#[derive(Clone)]
pub struct FeedHead(watch::Receiver<Head>);

impl FeedHead {
    pub fn watch(&self) -> watch::Receiver<Head> {
        self.0.clone()
    }
}

pub struct Sequencer {
    pool: PgPool,
    retention: Duration,
    head: watch::Sender<Head>,
    /// Committed events not numbered yet at the last pass (the outbox lag, for metrics).
    unsequenced: Arc<AtomicI64>,
    settling: store::Settling,
}

impl Sequencer {
    pub fn new(pool: PgPool, retention: Duration, unsequenced: Arc<AtomicI64>) -> (Self, FeedHead) {
        let (head, rx) = watch::channel(Head::default());
        (
            Self {
                pool,
                retention,
                head,
                unsequenced,
                settling: store::Settling::default(),
            },
            FeedHead(rx),
        )
    }

    /// Runs until `stop` turns true.
    pub fn spawn(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let prune_every =
                (self.retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            let mut ticks = tokio::time::interval(POLL_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune = tokio::time::Instant::now();
            let mut streak = crate::failure_streak::FailureStreak::default();
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                let prune = last_prune.elapsed() >= prune_every;
                if prune {
                    last_prune = tokio::time::Instant::now();
                }
                let result = self.pass(prune).await;
                streak.record("event feed: sequencing", result);
            }
        })
    }

    async fn pass(&mut self, prune: bool) -> sqlx::Result<()> {
        let poll = store::poll(&self.pool).await?;
        let mut head = poll.head;
        self.unsequenced
            .store(poll.waiting, std::sync::atomic::Ordering::Relaxed);
        if (poll.waiting > 0 || poll.unsettled)
            && let Some(position) =
                store::sequence(&self.pool, SEQUENCE_BATCH, &mut self.settling).await?
        {
            head.position = position;
        }
        if prune {
            let retention =
                chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
            let cutoff = Utc::now() - retention;
            while store::prune(&self.pool, cutoff, PRUNE_BATCH).await? == PRUNE_BATCH as u64 {}
            head = store::poll(&self.pool).await?.head;
            // A month left for now is dropped at a later round; numbering must not wait on it.
            if let Err(error) = drop_pruned_months(&self.pool, cutoff).await {
                tracing::warn!(%error, "feed months not dropped yet");
            }
        }
        self.head.send_if_modified(|seen| {
            // Another instance's read may lag this one's: the head never goes back.
            let next = Head {
                position: head.position.max(seen.position),
                pruned_through: head.pruned_through.max(seen.pruned_through),
            };
            let changed = next != *seen;
            *seen = next;
            changed
        });
        Ok(())
    }
}
