//! Keeping cached pops no older than the last acknowledged write, even when Redis misbehaves.
//!
//! 1. A customer write records the numbers whose pops it changes in `pop_invalidations`, in the
//!    same transaction ([`PopInvalidator::record`]).
//! 2. After the commit and before the write is acknowledged, [`PopInvalidator::apply`] invalidates
//!    them in Redis and deletes the rows.
//! 3. If Redis could not be reached, the rows stay, marked failed. While any failed row is pending,
//!    anywhere, pops are served from PostgreSQL and the cache is neither read nor filled: this
//!    instance stops trusting the cache at once; other instances notice within one relay interval.
//!    The relay on every instance retries the pending rows and trusts the cache again once none
//!    are left. Rows that are neither failed nor a few seconds old are a writer's step 2 in
//!    progress: they do not make anyone distrust the cache (otherwise a steady stream of writes
//!    would keep every instance off its cache for good). Rows older than that, failed or not, are
//!    pending too: their writer died between its commit and step 2.
//!
//! The windows left: another instance that can reach Redis while the writer cannot may serve a
//! card cached before the write for up to one relay interval (500 ms by default); if the writer
//! could not even mark its rows failed, or died before step 2, up to about five seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::cache::{NumberKey, PopCache};
use super::store;

/// Pending invalidations the relay applies in one Redis round (each number is about six
/// commands), small enough to finish within the Redis timeout on a busy machine. With 1,000, a
/// backlog left by an overload (101,715 rows after a 5-minute soak past capacity, BENCHMARKS.md
/// #25 third pass) never drained while the load went on: every batch timed out, the cache stayed
/// untrusted, and every pop of the next run went to PostgreSQL (hot pops at 0.20 of echo).
pub const RELAY_BATCH: i64 = 100;

/// Invalidations recorded by a transaction, to apply once it has committed.
#[must_use = "apply the invalidations after the commit"]
#[derive(Debug, Default)]
pub struct Pending {
    ids: Vec<i64>,
    numbers: Vec<NumberKey>,
}

#[derive(Clone)]
pub struct PopInvalidator {
    pool: PgPool,
    cache: Option<PopCache>,
    state: Arc<TrustState>,
}

struct TrustState {
    /// Whether cached pops may be served and filled.
    trusted: AtomicBool,
    /// Bumped by every failed invalidation, so the relay never clears a failure it did not see.
    failures: AtomicU64,
}

impl PopInvalidator {
    /// Starts untrusted: pending invalidations from before this start are drained first.
    pub fn new(pool: PgPool, cache: Option<PopCache>) -> Self {
        Self {
            pool,
            cache,
            state: Arc::new(TrustState {
                trusted: AtomicBool::new(false),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// Whether lookups may use the cache now.
    pub fn cache_trusted(&self) -> bool {
        self.state.trusted.load(Ordering::Acquire)
    }

    /// Records, inside the write's transaction, that the pops of `numbers` must be invalidated.
    /// Without a cache there is nothing to invalidate and nothing is recorded.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        numbers: Vec<String>,
    ) -> sqlx::Result<Pending> {
        if self.cache.is_none() || numbers.is_empty() {
            return Ok(Pending::default());
        }
        let mut numbers: Vec<NumberKey> = numbers.iter().map(|n| NumberKey::of(n)).collect();
        numbers.sort();
        numbers.dedup();
        let ids = store::record_invalidations(conn, &numbers).await?;
        Ok(Pending { ids, numbers })
    }

    /// Records the invalidation of every pop that shows these customers (all their phone numbers),
    /// for a write elsewhere (an interaction, a case, an order) that changes their cards.
    pub async fn record_for_customers(
        &self,
        conn: &mut PgConnection,
        customer_ids: &[uuid::Uuid],
    ) -> sqlx::Result<Pending> {
        if self.cache.is_none() {
            return Ok(Pending::default());
        }
        let numbers = store::customer_numbers(&mut *conn, customer_ids).await?;
        self.record(conn, numbers).await
    }

    /// Applies committed invalidations to Redis; on failure leaves them for the relay and stops
    /// trusting the cache before the caller acknowledges its write.
    pub async fn apply(&self, pending: Pending) {
        let Some(cache) = &self.cache else { return };
        if pending.ids.is_empty() {
            return;
        }
        let fence = self.fence().await;
        match cache.invalidate(&pending.numbers, fence).await {
            Ok(()) => {
                if let Err(error) = store::delete_invalidations(&self.pool, &pending.ids).await {
                    // Harmless: the relay applies them again (an extra generation bump) and deletes them.
                    tracing::warn!(%error, "could not delete applied pop invalidations");
                }
            }
            Err(error) => {
                self.state.failures.fetch_add(1, Ordering::AcqRel);
                self.state.trusted.store(false, Ordering::Release);
                tracing::warn!(%error, count = pending.ids.len(), "pop invalidation deferred; serving pops from PostgreSQL");
                // Tells the other instances' relays at once; if this fails too, they still see
                // the rows once they are a few seconds old.
                if let Err(error) = store::mark_invalidations_failed(&self.pool, &pending.ids).await
                {
                    tracing::warn!(%error, "could not mark pop invalidations failed");
                }
            }
        }
    }

    /// Applies pending invalidations ([`RELAY_BATCH`] at a time) and trusts the cache again if none
    /// are left.
    pub async fn drain_once(&self) -> anyhow::Result<()> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        loop {
            let failures_before = self.state.failures.load(Ordering::Acquire);
            let batch = store::pending_invalidations(&self.pool, RELAY_BATCH).await?;
            if batch.is_empty() {
                if self.state.failures.load(Ordering::Acquire) == failures_before
                    && !self.state.trusted.swap(true, Ordering::AcqRel)
                {
                    tracing::info!("no pop invalidations pending; using the cache");
                }
                return Ok(());
            }
            self.state.trusted.store(false, Ordering::Release);
            let (ids, numbers): (Vec<i64>, Vec<NumberKey>) = batch
                .into_iter()
                .map(|(id, key)| (id, NumberKey::from_stored(key)))
                .unzip();
            let fence = self.fence().await;
            cache.invalidate(&numbers, fence).await?;
            store::delete_invalidations(&self.pool, &ids).await?;
        }
    }

    /// The primary's WAL position now, after the invalidated writes committed: a read replica must
    /// have replayed past it before it answers a miss for their numbers (`cache`, `poplsn`).
    /// Unknown (PostgreSQL not answering): `i64::MAX`, which no replica reaches, so the numbers'
    /// misses read the primary until the fence expires.
    async fn fence(&self) -> i64 {
        match crate::read_replicas::primary_lsn(&self.pool).await {
            Ok(Some(lsn)) => lsn,
            _ => i64::MAX,
        }
    }

    /// Runs [`Self::drain_once`] every `interval` until `stop` fires.
    pub fn spawn_relay(
        &self,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            if this.cache.is_none() {
                return;
            }
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // While a streak lasts, pops come from PostgreSQL: its start is a warning.
            let mut streak = crate::failure_streak::FailureStreak::default();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.changed() => return,
                }
                streak.record("pop invalidation relay", this.drain_once().await);
            }
        })
    }
}
