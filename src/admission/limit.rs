//! The in-flight limit, adapted to congestion.
//!
//! A fixed limit on requests in flight bounds memory and protects PostgreSQL. Set high enough to
//! ride out a burst (a stall of the machine piles up a few milliseconds of arrivals), it is a
//! queue under sustained overload: admitted requests wait behind each other (for a CPU, for Redis,
//! for a database connection), and an admitted pop that waits longer than the Redis timeout falls
//! back to PostgreSQL, which costs more still. So the limit shrinks while the instance is
//! congested and grows back when it is not (additive increase, multiplicative decrease, as TCP
//! does), between a floor of [`FLOOR`] and the ceiling `--max-in-flight`. Two signals, each off
//! with a zero target:
//!
//! - **Lag** (`--shed-lag-ms`): a probe task asks to be woken every [`PROBE_PERIOD`] and measures
//!   how late it runs, the wait for a CPU that every task sees. Above the target, the limit drops
//!   by a quarter at that probe.
//! - **A standing queue** (`--shed-queue-ms`): over each [`WINDOW`], the *fastest* admitted
//!   request's time. When at least [`WINDOW_SAMPLES`] finished and even the fastest took longer
//!   than the target, every request is waiting (a burst leaves some fast ones; slow RPCs among
//!   fast ones do not count), and the limit drops by a quarter for that window. This is CoDel's
//!   test, applied to the limit instead of to a queue.
//!
//! Otherwise the limit grows by a 64th of the ceiling per probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the probe asks to be woken.
pub const PROBE_PERIOD: Duration = Duration::from_millis(10);

/// The span over which the fastest admitted request is judged.
pub const WINDOW: Duration = Duration::from_millis(100);

/// Requests a window needs before its fastest one means anything.
pub const WINDOW_SAMPLES: u64 = 8;

/// How long after its last refusal an instance counts as shedding (see [`AdaptiveLimit::is_shedding`]).
pub const SHEDDING_WINDOW: Duration = Duration::from_millis(250);

/// The lowest the limit goes: a few requests always get through, so the signals are measured
/// against real work and the instance never refuses everything.
pub const FLOOR: usize = 4;

const PROBES_PER_WINDOW: u64 = (WINDOW.as_millis() / PROBE_PERIOD.as_millis()) as u64;

/// What the limit reacts to; a zero target turns its signal off.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    pub lag: Duration,
    pub queue: Duration,
}

#[derive(Debug)]
pub struct AdaptiveLimit {
    ceiling: usize,
    floor: usize,
    targets: Targets,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    last_lag_micros: AtomicU64,
    /// This window's fastest admitted request (µs; `u64::MAX`: none yet) and how many finished.
    window_fastest_micros: AtomicU64,
    window_count: AtomicU64,
    probes: AtomicU64,
    /// The last window found a standing queue.
    standing_queue: AtomicBool,
    shed: AtomicU64,
    /// When the last request was refused, in ms since `epoch` (0: never).
    last_shed_ms: AtomicU64,
    epoch: Instant,
}

/// An admitted request's place; it is given back (and its time recorded) when dropped.
#[derive(Debug)]
pub struct Admitted {
    limit: Arc<AdaptiveLimit>,
    since: Instant,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.limit.record(self.since.elapsed());
    }
}

impl AdaptiveLimit {
    /// `ceiling` requests at most, fewer while congested by `targets`.
    pub fn new(ceiling: usize, targets: Targets) -> Arc<Self> {
        let ceiling = ceiling.max(1);
        Arc::new(Self {
            ceiling,
            floor: FLOOR.min(ceiling),
            targets,
            limit: AtomicUsize::new(ceiling),
            in_flight: AtomicUsize::new(0),
            last_lag_micros: AtomicU64::new(0),
            window_fastest_micros: AtomicU64::new(u64::MAX),
            window_count: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            standing_queue: AtomicBool::new(false),
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
        Some(Admitted {
            limit: Arc::clone(self),
            since: Instant::now(),
        })
    }

    /// An admitted request's time, for the standing-queue test.
    fn record(&self, took: Duration) {
        if self.targets.queue.is_zero() {
            return;
        }
        let micros = took.as_micros().try_into().unwrap_or(u64::MAX);
        self.window_fastest_micros
            .fetch_min(micros, Ordering::Relaxed);
        self.window_count.fetch_add(1, Ordering::Relaxed);
    }

    /// One probe: its measured lag, and every [`WINDOW`] the standing-queue verdict; the limit
    /// shrinks when either says congested and grows back when neither does.
    pub fn tick(&self, lag: Duration) {
        self.last_lag_micros.store(
            lag.as_micros().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let mut shrink = self.lagging(lag);
        if (self.probes.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(PROBES_PER_WINDOW) {
            let fastest = self.window_fastest_micros.swap(u64::MAX, Ordering::Relaxed);
            let count = self.window_count.swap(0, Ordering::Relaxed);
            let standing = !self.targets.queue.is_zero()
                && count >= WINDOW_SAMPLES
                && Duration::from_micros(fastest) > self.targets.queue;
            self.standing_queue.store(standing, Ordering::Relaxed);
            shrink |= standing;
        }
        let standing = self.standing_queue.load(Ordering::Relaxed);
        let limit = self.limit.load(Ordering::Acquire);
        let next = if shrink {
            (limit - limit / 4).max(self.floor)
        } else if standing {
            limit
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

    /// Whether the instance is over its capacity: the last probe found it congested (lagging
    /// past the target, or a standing queue), or a request was refused in the last
    /// [`SHEDDING_WINDOW`]. Work that has a cheap failure and a costly fallback should fail then.
    pub fn is_shedding(&self) -> bool {
        let last = self.last_shed_ms.load(Ordering::Relaxed);
        let refused_lately = last != 0
            && self.millis_since_epoch().saturating_sub(last) < SHEDDING_WINDOW.as_millis() as u64;
        self.lagging(self.last_lag())
            || self.standing_queue.load(Ordering::Relaxed)
            || refused_lately
    }

    fn lagging(&self, lag: Duration) -> bool {
        !self.targets.lag.is_zero() && lag > self.targets.lag
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
                this.tick(asked.elapsed().saturating_sub(PROBE_PERIOD));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn lag_only(target: Duration) -> Targets {
        Targets {
            lag: target,
            queue: Duration::ZERO,
        }
    }

    fn queue_only(target: Duration) -> Targets {
        Targets {
            lag: Duration::ZERO,
            queue: target,
        }
    }

    fn admit_all(limit: &Arc<AdaptiveLimit>) -> Vec<Admitted> {
        std::iter::from_fn(|| limit.try_admit())
            .take(10_000)
            .collect()
    }

    /// A whole window of probes without lag, with `times` recorded first.
    fn window(limit: &AdaptiveLimit, times: &[Duration]) {
        for took in times {
            limit.record(*took);
        }
        for _ in 0..PROBES_PER_WINDOW {
            limit.tick(Duration::ZERO);
        }
    }

    #[test]
    fn the_ceiling_holds_and_a_place_comes_back_when_dropped() {
        let limit = AdaptiveLimit::new(3, lag_only(20 * MS));
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
        let limit = AdaptiveLimit::new(256, lag_only(20 * MS));
        limit.tick(21 * MS);
        assert_eq!(limit.limit(), 192, "a quarter off");
        for _ in 0..40 {
            limit.tick(80 * MS);
        }
        assert_eq!(limit.limit(), FLOOR);
        assert!(limit.is_shedding(), "lagging");
        assert_eq!(admit_all(&limit).len(), FLOOR, "the floor still admits");
        limit.tick(20 * MS);
        assert_eq!(limit.limit(), FLOOR + 4, "a 64th of the ceiling back");
        for _ in 0..100 {
            limit.tick(MS);
        }
        assert_eq!(limit.limit(), 256, "never above the ceiling");
        assert_eq!(limit.last_lag(), MS);
    }

    #[test]
    fn a_lower_limit_refuses_while_more_are_in_flight_until_they_finish() {
        let limit = AdaptiveLimit::new(16, lag_only(20 * MS));
        let mut admitted = admit_all(&limit);
        assert_eq!(admitted.len(), 16);
        limit.tick(50 * MS);
        assert_eq!(limit.limit(), 12);
        admitted.truncate(13);
        assert!(limit.try_admit().is_none(), "13 in flight, limit 12");
        admitted.truncate(11);
        assert!(limit.try_admit().is_some(), "11 in flight, limit 12");
    }

    #[test]
    fn a_window_where_even_the_fastest_request_waited_shrinks_the_limit() {
        let limit = AdaptiveLimit::new(256, queue_only(10 * MS));
        let slow = [12 * MS; WINDOW_SAMPLES as usize];
        window(&limit, &slow);
        assert_eq!(limit.limit(), 192, "a quarter off for the window");
        assert!(limit.is_shedding(), "a standing queue");
        window(&limit, &slow);
        assert_eq!(limit.limit(), 144, "held, then a quarter off again");
    }

    #[test]
    fn one_fast_request_or_too_few_requests_is_no_standing_queue() {
        let limit = AdaptiveLimit::new(256, queue_only(10 * MS));
        let mut mostly_slow = vec![900 * MS; WINDOW_SAMPLES as usize];
        mostly_slow.push(MS);
        window(&limit, &mostly_slow);
        assert_eq!(
            limit.limit(),
            256,
            "a burst or slow RPCs leave some fast ones"
        );
        window(&limit, &[900 * MS; WINDOW_SAMPLES as usize - 1]);
        assert_eq!(limit.limit(), 256, "too few to judge");
        assert!(!limit.is_shedding());
    }

    #[test]
    fn admitted_requests_report_their_time_when_they_finish() {
        let limit = AdaptiveLimit::new(64, queue_only(MS));
        let places: Vec<Admitted> = (0..WINDOW_SAMPLES)
            .filter_map(|_| limit.try_admit())
            .collect();
        std::thread::sleep(2 * MS);
        drop(places);
        window(&limit, &[]);
        assert_eq!(limit.limit(), 48, "enough requests, the fastest over 1 ms");
    }

    #[test]
    fn shedding_ends_a_window_after_the_last_refusal() {
        let limit = AdaptiveLimit::new(1, lag_only(20 * MS));
        let _held = limit.try_admit();
        assert!(limit.try_admit().is_none());
        assert!(limit.is_shedding());
        limit.tick(20 * MS);
        std::thread::sleep(SHEDDING_WINDOW + 20 * MS);
        assert!(
            !limit.is_shedding(),
            "no refusal for a whole window, lag at the target"
        );
        limit.tick(21 * MS);
        assert!(limit.is_shedding(), "lagging past the target");
    }

    #[test]
    fn zero_targets_keep_the_ceiling_whatever_happens() {
        let limit = AdaptiveLimit::new(8, lag_only(Duration::ZERO));
        window(&limit, &[Duration::from_secs(1); 100]);
        limit.tick(Duration::from_secs(1));
        assert_eq!(limit.limit(), 8);
        assert_eq!(limit.last_lag(), Duration::from_secs(1));
    }
}
