//! PostgreSQL read replicas (`--database-replica-url`, streaming standbys of the primary): which
//! database a read goes to. A leaf module: the contexts that read from replicas hold a [`Reads`].
//!
//! Two kinds of read:
//! - [`Reads::behind`]: a read that may be up to `--database-replica-max-lag-ms` behind the
//!   primary (customer search, audit lists). It goes to a replica that is up and within that lag,
//!   in turn, or else to the primary.
//! - [`Reads::current`]: a read that must see every commit made before it started (KPIs, after
//!   the chain stamper's catch-up). It notes the primary's WAL position, and goes to a replica
//!   that has replayed past it, waiting at most `--database-replica-timeout-ms` for one; or else
//!   to the primary.
//!
//! Either way a read that fails on a replica because the replica cannot be reached is sent again
//! to the primary ([`Reads::run`]): a replica going down costs time, never an error.
//!
//! A monitor task on each instance measures each replica every 250 ms: the primary's WAL position
//! is sampled, and a replica's lag is the age of the newest sample it has replayed (so a replica of
//! an idle primary is not behind). A replica that does not answer within the timeout, or is not
//! in recovery, or lags more than the bound, is skipped until it is back within it. The lag is
//! the `switchboard_db_replica_lag_seconds` gauge. Writes, the feed, screen pops and anything
//! that must read its own writes stay on the primary: they are not given a [`Reads`].

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

/// How often the monitor measures the replicas.
const MONITOR_EVERY: Duration = Duration::from_millis(250);
/// How often [`Reads::current`] asks a replica whether it has caught up.
const CATCH_UP_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// Connection URLs of the replicas (none: every read goes to the primary).
    pub urls: Vec<String>,
    /// A replica further behind than this takes no reads.
    pub max_lag: Duration,
    /// How long a replica may take to answer, or to catch up for a current read.
    pub timeout: Duration,
    /// Connections per replica.
    pub max_connections: u32,
}

/// Where reads go: the primary, and the replicas with what the monitor last saw of them.
#[derive(Clone)]
pub struct Reads {
    inner: Arc<Inner>,
}

struct Inner {
    primary: PgPool,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    max_lag: Duration,
    timeout: Duration,
    /// Samples of the primary's WAL position, newest last, kept for a little over `max_lag`.
    samples: Mutex<VecDeque<(Instant, i64)>>,
}

struct Replica {
    pool: PgPool,
    /// Answering, in recovery, and within the lag bound.
    usable: AtomicBool,
    /// The last measured lag in milliseconds; -1: unknown (not answering, or not a standby).
    lag_ms: AtomicI64,
}

/// Which database served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Primary,
    Replica(usize),
}

impl Reads {
    /// Every read on the primary (no replicas configured).
    pub fn primary_only(primary: PgPool) -> Self {
        Self::with_replicas(primary, Vec::new(), Duration::ZERO, Duration::ZERO)
    }

    /// The primary and lazily connected pools to the replicas in `settings`. Replicas start
    /// unused until the monitor ([`Reads::spawn_monitor`]) has measured them.
    pub fn new(primary: PgPool, settings: &ReplicaSettings) -> Result<Self, sqlx::Error> {
        let pools = settings
            .urls
            .iter()
            .map(|url| {
                let options = crate::db::connect_options(url)?;
                Ok(sqlx::postgres::PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .min_connections(0)
                    .acquire_timeout(settings.timeout)
                    .test_before_acquire(false)
                    .connect_lazy_with(options))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Self::with_replicas(
            primary,
            pools,
            settings.max_lag,
            settings.timeout,
        ))
    }

    fn with_replicas(
        primary: PgPool,
        pools: Vec<PgPool>,
        max_lag: Duration,
        timeout: Duration,
    ) -> Self {
        let replicas = pools
            .into_iter()
            .map(|pool| Replica {
                pool,
                usable: AtomicBool::new(false),
                lag_ms: AtomicI64::new(-1),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                primary,
                replicas,
                next: AtomicUsize::new(0),
                max_lag,
                timeout,
                samples: Mutex::new(VecDeque::new()),
            }),
        }
    }

    pub fn primary(&self) -> &PgPool {
        &self.inner.primary
    }

    /// `--database-replica-timeout-ms`: how long a replica may take.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// For a read that may be up to the lag bound behind: a usable replica in turn, else the
    /// primary.
    pub fn behind(&self) -> (Source, PgPool) {
        match self.next_usable() {
            Some(index) => (
                Source::Replica(index),
                self.inner.replicas[index].pool.clone(),
            ),
            None => (Source::Primary, self.inner.primary.clone()),
        }
    }

    /// For a read that must see every commit made before this call: a usable replica that has
    /// replayed past the primary's current WAL position (waiting up to the timeout), else the
    /// primary.
    pub async fn current(&self) -> (Source, PgPool) {
        let primary = || (Source::Primary, self.inner.primary.clone());
        // No primary round trip when no replica could take the read anyway.
        if !self
            .inner
            .replicas
            .iter()
            .any(|r| r.usable.load(Ordering::Relaxed))
        {
            return primary();
        }
        let Ok(Some(target)) = primary_lsn(&self.inner.primary).await else {
            return primary();
        };
        let deadline = Instant::now() + self.inner.timeout;
        loop {
            let caught_up = tokio::time::timeout_at(deadline, self.replayed_past(target)).await;
            if let Ok(Some(replica)) = caught_up {
                return replica;
            }
            if Instant::now() + CATCH_UP_POLL >= deadline {
                return primary();
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// For a miss that must see every write up to the WAL position `fence`: a usable replica
    /// that has replayed past it now (no waiting: a pop is not kept waiting for a replica), else
    /// `None` (read the primary).
    pub async fn replayed_past(&self, fence: i64) -> Option<(Source, PgPool)> {
        let index = self.next_usable()?;
        let replica = &self.inner.replicas[index].pool;
        match tokio::time::timeout(self.inner.timeout, replayed_lsn(replica)).await {
            Ok(Ok(Some(lsn))) if lsn >= fence => Some((Source::Replica(index), replica.clone())),
            _ => None,
        }
    }

    /// Runs `read` on the database `pick` chose, and once more on the primary if a replica
    /// could not be reached.
    pub async fn run<T, F, Fut>(&self, (source, pool): (Source, PgPool), read: F) -> sqlx::Result<T>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        match (source, read(pool).await) {
            (Source::Replica(index), Err(error))
                if crate::db::classify(&error) == crate::db::Failure::Unavailable =>
            {
                tracing::warn!(replica = index, %error, "a replica read failed; reading the primary");
                self.inner.replicas[index]
                    .usable
                    .store(false, Ordering::Relaxed);
                read(self.inner.primary.clone()).await
            }
            (_, result) => result,
        }
    }

    fn next_usable(&self) -> Option<usize> {
        let count = self.inner.replicas.len();
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| self.inner.replicas[index].usable.load(Ordering::Relaxed))
    }

    /// Each replica's last measured lag in seconds (`None`: not answering or not a standby).
    pub fn lags(&self) -> Vec<Option<f64>> {
        self.inner
            .replicas
            .iter()
            .map(|replica| {
                let ms = replica.lag_ms.load(Ordering::Relaxed);
                (ms >= 0).then(|| ms as f64 / 1000.0)
            })
            .collect()
    }

    /// Whether each replica takes reads now.
    pub fn usable(&self) -> Vec<bool> {
        self.inner
            .replicas
            .iter()
            .map(|replica| replica.usable.load(Ordering::Relaxed))
            .collect()
    }

    /// Measures the replicas every 250 ms until `stop` changes (none configured: ends at once).
    pub async fn monitor(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.inner.replicas.is_empty() {
            return;
        }
        let mut ticker = tokio::time::interval(MONITOR_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticker.tick() => self.measure().await,
            }
        }
    }

    async fn measure(&self) {
        let inner = &self.inner;
        let now = Instant::now();
        if let Ok(Ok(Some(lsn))) =
            tokio::time::timeout(inner.timeout, primary_lsn(&inner.primary)).await
        {
            let mut samples = inner.samples.lock().expect("samples");
            samples.push_back((now, lsn));
            // Enough history to tell any lag up to twice the bound.
            let keep = inner.max_lag * 2 + MONITOR_EVERY * 4;
            while samples.len() > 2 && samples.front().is_some_and(|(at, _)| now - *at > keep) {
                samples.pop_front();
            }
        }
        for (index, replica) in inner.replicas.iter().enumerate() {
            let replayed = tokio::time::timeout(inner.timeout, replayed_lsn(&replica.pool)).await;
            let lag = match replayed {
                Ok(Ok(Some(lsn))) => Some(self.lag_of(lsn, now)),
                Ok(Ok(None)) => {
                    tracing::warn!(replica = index, "a configured replica is not in recovery");
                    None
                }
                _ => None,
            };
            let usable = lag.is_some_and(|lag| lag <= inner.max_lag);
            let lag_ms = lag.map_or(-1, |lag| i64::try_from(lag.as_millis()).unwrap_or(i64::MAX));
            replica.lag_ms.store(lag_ms, Ordering::Relaxed);
            if replica.usable.swap(usable, Ordering::Relaxed) != usable {
                tracing::info!(replica = index, usable, lag_ms, "replica usability changed");
            }
        }
    }

    /// The age of the newest primary sample the replica has replayed past (the oldest kept when
    /// it has replayed none of them).
    fn lag_of(&self, replayed: i64, now: Instant) -> Duration {
        let samples = self.inner.samples.lock().expect("samples");
        match samples.iter().rev().find(|(_, lsn)| *lsn <= replayed) {
            Some((at, _)) => now.saturating_duration_since(*at),
            None => samples
                .front()
                .map_or(Duration::MAX, |(at, _)| now.saturating_duration_since(*at))
                .max(self.inner.max_lag + MONITOR_EVERY),
        }
    }
}

/// The primary's current WAL write position, as a byte offset.
pub async fn primary_lsn(pool: &PgPool) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 AS lsn")
        .fetch_one(pool)
        .await
}

/// How far a standby has replayed, as a byte offset; `None` when it is not in recovery.
async fn replayed_lsn(pool: &PgPool) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "SELECT CASE WHEN pg_is_in_recovery() \
                THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 END AS lsn"
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(max_lag_ms: u64) -> Reads {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool");
        Reads::with_replicas(
            pool.clone(),
            vec![pool],
            Duration::from_millis(max_lag_ms),
            Duration::from_millis(100),
        )
    }

    #[tokio::test]
    async fn the_lag_is_the_age_of_the_newest_sample_replayed() {
        let reads = reads(1000);
        let start = Instant::now();
        {
            let mut samples = reads.inner.samples.lock().unwrap();
            samples.push_back((start, 100));
            samples.push_back((start + Duration::from_millis(250), 200));
            samples.push_back((start + Duration::from_millis(500), 300));
        }
        let now = start + Duration::from_millis(600);
        assert_eq!(reads.lag_of(300, now), Duration::from_millis(100));
        assert_eq!(reads.lag_of(250, now), Duration::from_millis(350));
        assert_eq!(reads.lag_of(100, now), Duration::from_millis(600));
        // Behind every sample kept: at least past the bound, never taken as current.
        assert!(reads.lag_of(50, now) > Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn a_replica_not_measured_usable_takes_no_reads() {
        let reads = reads(1000);
        assert_eq!(reads.behind().0, Source::Primary);
        assert_eq!(reads.current().await.0, Source::Primary);
        reads.inner.replicas[0]
            .usable
            .store(true, Ordering::Relaxed);
        assert_eq!(reads.behind().0, Source::Replica(0));
        assert_eq!(reads.lags(), vec![None]);
    }
}
