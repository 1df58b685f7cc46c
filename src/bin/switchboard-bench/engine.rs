//! The load engine: open loop at a fixed rate, or closed loop at maximum throughput, bounded in
//! time, with latency histograms per label and errors per status code.
//!
//! Open loop: a dedicated OS thread dispatches request `k` at `start + k / rate` (it sleeps ~100 µs
//! between checks, so dispatch is never more than a few hundred µs late and no core spins), and
//! each request's latency is measured from that intended time, not from when it was actually
//! sent. A server that stalls therefore shows its stall in every request scheduled meanwhile: the
//! correction for coordinated omission. The generator's own lateness is reported separately
//! (`dispatch lag`), so a reader can tell a slow server from a saturated generator. When more than
//! `max_in_flight` requests are outstanding, new ones are not sent and are counted as `unsent`.
//!
//! Closed loop: `concurrency` workers send back to back; latency is from send to answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc};

/// What one request came to: its label (what it was, or how it was served), its outcome, and the
/// server's own time for it when the server said (the `server-timing` header), in µs.
pub struct Done {
    pub label: String,
    pub result: Result<(), tonic::Code>,
    pub server_us: Option<u64>,
}

pub type Job = BoxFuture<'static, Done>;

/// A scenario's requests, by index. Must be cheap: the dispatcher calls it for every request.
pub trait Workload: Send + Sync + 'static {
    fn job(&self, index: u64) -> Job;
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Open { rate: f64, max_in_flight: usize },
    Closed { concurrency: usize },
}

struct Sample {
    done: Done,
    latency_us: u64,
    lag_us: u64,
}

pub struct Report {
    pub mode: Mode,
    pub elapsed: Duration,
    pub ok: u64,
    pub unsent: u64,
    pub latency: Histogram<u64>,
    pub server_time: Histogram<u64>,
    pub by_label: BTreeMap<String, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    pub dispatch_lag: Histogram<u64>,
    /// The first request index this run did not use, to continue from.
    pub next_index: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

impl Report {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            elapsed: Duration::ZERO,
            ok: 0,
            unsent: 0,
            latency: histogram(),
            server_time: histogram(),
            by_label: BTreeMap::new(),
            errors: BTreeMap::new(),
            dispatch_lag: histogram(),
            next_index: 0,
        }
    }

    fn add(&mut self, sample: Sample) {
        let latency = sample.latency_us.max(1);
        match sample.done.result {
            Ok(()) => {
                self.ok += 1;
                self.latency.saturating_record(latency);
                if let Some(server_us) = sample.done.server_us {
                    self.server_time.saturating_record(server_us.max(1));
                }
                self.by_label
                    .entry(sample.done.label)
                    .or_insert_with(histogram)
                    .saturating_record(latency);
            }
            Err(code) => *self.errors.entry(format!("{code:?}")).or_default() += 1,
        }
        self.dispatch_lag.saturating_record(sample.lag_us.max(1));
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn print(&self, name: &str) {
        let mode = match self.mode {
            Mode::Open { rate, .. } => format!("open loop at {rate:.0}/s"),
            Mode::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
        };
        println!(
            "{name}: {mode}, {:.1} s: {} ok, {:.0}/s",
            self.elapsed.as_secs_f64(),
            self.ok,
            self.throughput()
        );
        let basis = match self.mode {
            Mode::Open { .. } => "from intended send",
            Mode::Closed { .. } => "from send",
        };
        print_line(&format!("latency ({basis})"), &self.latency);
        print_line("server time (Server-Timing)", &self.server_time);
        if self.by_label.len() > 1 {
            for (label, histogram) in &self.by_label {
                print_line(&format!("  {label}"), histogram);
            }
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        println!(
            "  errors: {}",
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(", ")
            }
        );
        if let Mode::Open { .. } = self.mode {
            println!(
                "  unsent (generator's in-flight bound): {}; dispatch lag p99 {} µs, max {} µs",
                self.unsent,
                self.dispatch_lag.value_at_quantile(0.99),
                self.dispatch_lag.max()
            );
        }
    }
}

fn print_line(name: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    println!(
        "  {name} (µs, n={}): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

/// Runs `workload` for `duration`, numbering requests from `first_index`.
pub async fn run(
    workload: Arc<dyn Workload>,
    mode: Mode,
    duration: Duration,
    first_index: u64,
) -> Report {
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let collector = tokio::spawn(async move {
        let mut report = Report::new(mode);
        while let Some(sample) = rx.recv().await {
            report.add(sample);
        }
        report
    });
    let started = Instant::now();
    let (unsent, next_index) = match mode {
        Mode::Open {
            rate,
            max_in_flight,
        } => open_loop(workload, rate, max_in_flight, duration, first_index, tx).await,
        Mode::Closed { concurrency } => (
            0,
            closed_loop(workload, concurrency, duration, first_index, tx).await,
        ),
    };
    let mut report = collector.await.expect("collector");
    report.elapsed = started.elapsed();
    report.unsent = unsent;
    report.next_index = next_index;
    report
}

async fn open_loop(
    workload: Arc<dyn Workload>,
    rate: f64,
    max_in_flight: usize,
    duration: Duration,
    first_index: u64,
    tx: mpsc::UnboundedSender<Sample>,
) -> (u64, u64) {
    let runtime = tokio::runtime::Handle::current();
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let total = (rate * duration.as_secs_f64()) as u64;
    let dispatcher = {
        let in_flight = Arc::clone(&in_flight);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut unsent = 0;
            let mut k = 0;
            while k < total {
                let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
                while k < due {
                    let intended = start + Duration::from_secs_f64(k as f64 / rate);
                    k += 1;
                    let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                        unsent += 1;
                        continue;
                    };
                    let job = workload.job(first_index + k);
                    let tx = tx.clone();
                    let lag_us = intended.elapsed().as_micros() as u64;
                    runtime.spawn(async move {
                        let done = job.await;
                        let latency_us = intended.elapsed().as_micros() as u64;
                        tx.send(Sample {
                            done,
                            latency_us,
                            lag_us,
                        })
                        .ok();
                        drop(permit);
                    });
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            unsent
        })
    };
    let unsent = tokio::task::spawn_blocking(move || dispatcher.join().expect("dispatcher"))
        .await
        .expect("dispatcher thread");
    // Wait (boundedly) for the requests still in flight.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    tokio::time::timeout(Duration::from_secs(30), in_flight.acquire_many(all))
        .await
        .ok();
    (unsent, first_index + total + 1)
}

async fn closed_loop(
    workload: Arc<dyn Workload>,
    concurrency: usize,
    duration: Duration,
    first_index: u64,
    tx: mpsc::UnboundedSender<Sample>,
) -> u64 {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(first_index));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let workload = Arc::clone(&workload);
            let next = Arc::clone(&next);
            let tx = tx.clone();
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let sent = Instant::now();
                    let done = workload.job(index).await;
                    tx.send(Sample {
                        done,
                        latency_us: sent.elapsed().as_micros() as u64,
                        lag_us: 0,
                    })
                    .ok();
                }
            })
        })
        .collect();
    drop(tx);
    for worker in workers {
        worker.await.ok();
    }
    next.load(std::sync::atomic::Ordering::Relaxed)
}
