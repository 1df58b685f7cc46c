//! The in-flight limit, adapted to how late the runtime runs its tasks.
//!
//! A fixed limit on requests in flight bounds memory and protects PostgreSQL, but it does not
//! bound latency when the CPU is the bottleneck: requests that are admitted then wait for a
//! worker thread behind everything else, and an admitted pop that waits longer than the Redis
//! timeout falls back to PostgreSQL, which costs more CPU still. So a probe task asks to be woken
//! every [`PROBE_PERIOD`] and measures how late it runs (the runtime's *lag*, the queueing delay
//! every task sees). While the lag is above the target the limit shrinks by a quarter per probe
//! (down to a floor); while it is at or below the target it grows back by a 64th of the ceiling
//! per probe (additive increase, multiplicative decrease, as TCP does). The ceiling is
//! `--max-in-flight`; a target of zero turns the adaptation off.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the probe asks to be woken.
pub const PROBE_PERIOD: Duration = Duration::from_millis(10);

/// How long after its last refusal an instance counts as shedding (see [`AdaptiveLimit::is_shedding`]).
pub const SHEDDING_WINDOW: Duration = Duration::from_millis(250);

/// The lowest the limit goes: a few requests always get through, so the lag can be measured
/// against real work and the instance never refuses everything.
const FLOOR: usize = 4;

#[derive(Debug)]
pub struct AdaptiveLimit {
    ceiling: usize,
    floor: usize,
    target: Duration,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    last_lag_micros: AtomicU64,
    shed: AtomicU64,
    /// When the last request was refused, in ms since `epoch` (0: never).
    last_shed_ms: AtomicU64,
    epoch: Instant,
}

/// An admitted request's place; it is given back when dropped.
#[derive(Debug)]
pub struct Admitted(Arc<AdaptiveLimit>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AdaptiveLimit {
    /// `ceiling` requests at most; `target` is the lag above which the limit shrinks (zero: the
    /// limit stays at the ceiling).
    pub fn new(ceiling: usize, target: Duration) -> Arc<Self> {
        let ceiling = ceiling.max(1);
        Arc::new(Self {
            ceiling,
            floor: FLOOR.min(ceiling),
            target,
            limit: AtomicUsize::new(ceiling),
            in_flight: AtomicUsize::new(0),
            last_lag_micros: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            last_shed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A place for one more request, or `None` (counted as shed) when the limit is reached.
    pub fn try_admit(self: &Arc<Self>) -> Option<Admitted> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.limit.load(Ordering::Acquire) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.shed.fetch_add(1, Ordering::Relaxed);
            self.last_shed_ms
                .store(self.millis_since_epoch().max(1), Ordering::Relaxed);
            return None;
        }
        Some(Admitted(Arc::clone(self)))
    }

    /// One probe's measured lag: shrink the limit while it is above the target, grow it back
    /// while it is not.
    pub fn observe_lag(&self, lag: Duration) {
        self.last_lag_micros.store(
            lag.as_micros().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if self.target.is_zero() {
            return;
        }
        let limit = self.limit.load(Ordering::Acquire);
        let next = if lag > self.target {
            (limit - limit / 4).max(self.floor)
        } else {
            (limit + (self.ceiling / 64).max(1)).min(self.ceiling)
        };
        self.limit.store(next, Ordering::Release);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The lag the last probe measured.
    pub fn last_lag(&self) -> Duration {
        Duration::from_micros(self.last_lag_micros.load(Ordering::Relaxed))
    }

    /// Whether the instance is over its capacity: the last probe found the runtime lagging past
    /// the target (the CPU is short now), or a request was refused in the last
    /// [`SHEDDING_WINDOW`]. Work that has a cheap failure and a costly fallback should fail then.
    pub fn is_shedding(&self) -> bool {
        let last = self.last_shed_ms.load(Ordering::Relaxed);
        let refused_lately = last != 0
            && self.millis_since_epoch().saturating_sub(last) < SHEDDING_WINDOW.as_millis() as u64;
        let lagging = !self.target.is_zero() && self.last_lag() > self.target;
        lagging || refused_lately
    }

    fn millis_since_epoch(&self) -> u64 {
        self.epoch
            .elapsed()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Requests refused since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Runs the probe until `stop` turns true.
    pub fn spawn_probe(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let asked = Instant::now();
                tokio::select! {
                    () = tokio::time::sleep(PROBE_PERIOD) => {}
                    _ = stop.changed() => return,
                }
                this.observe_lag(asked.elapsed().saturating_sub(PROBE_PERIOD));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn admit_all(limit: &Arc<AdaptiveLimit>) -> Vec<Admitted> {
        std::iter::from_fn(|| limit.try_admit())
            .take(10_000)
            .collect()
    }

    #[test]
    fn the_ceiling_holds_and_a_place_comes_back_when_dropped() {
        let limit = AdaptiveLimit::new(3, 20 * MS);
        assert!(!limit.is_shedding(), "nothing refused yet");
        let mut admitted = admit_all(&limit);
        assert_eq!(admitted.len(), 3);
        assert_eq!(limit.shed(), 1, "the fourth was refused");
        assert!(limit.is_shedding(), "just refused one");
        admitted.pop();
        assert_eq!(limit.in_flight(), 2);
        assert!(limit.try_admit().is_some());
    }

    #[test]
    fn lag_above_the_target_shrinks_the_limit_to_the_floor_and_calm_grows_it_back() {
        let limit = AdaptiveLimit::new(256, 20 * MS);
        limit.observe_lag(21 * MS);
        assert_eq!(limit.limit(), 192, "a quarter off");
        for _ in 0..40 {
            limit.observe_lag(80 * MS);
        }
        assert_eq!(limit.limit(), FLOOR);
        assert!(limit.is_shedding(), "lagging");
        assert_eq!(admit_all(&limit).len(), FLOOR, "the floor still admits");
        limit.observe_lag(20 * MS);
        assert_eq!(limit.limit(), FLOOR + 4, "a 64th of the ceiling back");
        for _ in 0..100 {
            limit.observe_lag(MS);
        }
        assert_eq!(limit.limit(), 256, "never above the ceiling");
        std::thread::sleep(SHEDDING_WINDOW + MS);
        assert!(
            !limit.is_shedding(),
            "back at the ceiling, nothing refused for a window"
        );
        assert_eq!(limit.last_lag(), MS);
    }

    #[test]
    fn a_lower_limit_refuses_while_more_are_in_flight_until_they_finish() {
        let limit = AdaptiveLimit::new(16, 20 * MS);
        let mut admitted = admit_all(&limit);
        assert_eq!(admitted.len(), 16);
        limit.observe_lag(50 * MS);
        assert_eq!(limit.limit(), 12);
        admitted.truncate(13);
        assert!(limit.try_admit().is_none(), "13 in flight, limit 12");
        admitted.truncate(11);
        assert!(limit.try_admit().is_some(), "11 in flight, limit 12");
    }

    #[test]
    fn shedding_ends_a_window_after_the_last_refusal() {
        let limit = AdaptiveLimit::new(1, 20 * MS);
        let _held = limit.try_admit();
        assert!(limit.try_admit().is_none());
        assert!(limit.is_shedding());
        limit.observe_lag(20 * MS);
        std::thread::sleep(SHEDDING_WINDOW + 20 * MS);
        assert!(
            !limit.is_shedding(),
            "no refusal for a whole window, lag at the target"
        );
        limit.observe_lag(21 * MS);
        assert!(limit.is_shedding(), "lagging past the target");
    }

    #[test]
    fn a_zero_target_keeps_the_ceiling_whatever_the_lag() {
        let limit = AdaptiveLimit::new(8, Duration::ZERO);
        limit.observe_lag(Duration::from_secs(1));
        assert_eq!(limit.limit(), 8);
        assert_eq!(limit.last_lag(), Duration::from_secs(1));
    }
}
