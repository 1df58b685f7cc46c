//! Prometheus metrics, served as text on `GET /metrics` of the metrics port.
//!
//! What each instance exports (names in `docs/OBSERVABILITY.md`):
//! - every RPC and its latency to the response headers (for a stream: until it opened), by
//!   method and status code, from the RPC layer (`crate::telemetry::RpcLayer`, which also opens
//!   each RPC's trace span);
//! - call events acknowledged, by outcome, and the time from receipt to the ack;
//! - screen-pop cache hits, pin hits, PostgreSQL lookups and cache bypasses (fallbacks);
//! - agent streams open, PostgreSQL pool connections in use and idle, Redis failures, and the
//!   event feed's head and its events committed but not yet sequenced (the outbox lag); these
//!   are read at scrape time ([`Sources`]).
//!
//! Labels are method names, codes and outcomes only: never ids, numbers or text.

mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use self::server::serve;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Latency buckets from 50 µs to about 6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// The instruments code updates as it runs.
pub struct Metrics {
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    pub call_events: Family<OutcomeLabel, Counter>,
    pub call_event_ack: Histogram,
    /// Events committed to the feed and not yet numbered, as the sequencer last saw them.
    pub feed_unsequenced: Arc<AtomicI64>,
    /// Rows in the history tables' default partitions at the last upkeep round.
    pub history_default_rows: Arc<AtomicI64>,
    /// What the push sinks' workers did (webhooks, NATS).
    pub sinks: Arc<crate::webhooks::SinkStats>,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            rpc_requests: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            call_events: Family::default(),
            call_event_ack: latency_histogram(),
            feed_unsequenced: Arc::new(AtomicI64::new(0)),
            history_default_rows: Arc::new(AtomicI64::new(0)),
            sinks: Arc::default(),
        }
    }

    /// Records one acknowledged call event ("accepted", "rejected", "invalid" or "failed").
    pub fn call_event(&self, outcome: &str, took: Duration) {
        self.call_events
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.call_event_ack.observe(took.as_secs_f64());
    }

    /// An event answered RESEND at once (its stream had no place for it): counted, not timed.
    pub fn call_event_resend(&self) {
        self.call_events
            .get_or_create(&OutcomeLabel {
                outcome: "resend".to_owned(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Values owned elsewhere, read at each scrape.
#[derive(Clone)]
pub struct Sources {
    pub pool: sqlx::PgPool,
    pub reads: crate::read_replicas::Reads,
    pub pops: Arc<crate::screenpop::PopStats>,
    pub fanout: Arc<crate::push::Fanout>,
    pub redis: Option<crate::redis_link::RedisLink>,
    pub feed_head: crate::feed::FeedHead,
    pub feed_unsequenced: Arc<AtomicI64>,
    pub history_default_rows: Arc<AtomicI64>,
    pub admission: Arc<crate::admission::AdaptiveLimit>,
    pub auditor: crate::audit::Auditor,
    pub sinks: Arc<crate::webhooks::SinkStats>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Each read replica's lag, and whether it takes reads, labelled by its place in
/// `--database-replica-url` (0, 1, ...). A replica not answering has no lag sample.
fn replicas(
    encoder: &mut DescriptorEncoder,
    reads: &crate::read_replicas::Reads,
) -> std::fmt::Result {
    let lags = reads.lags();
    if lags.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        "switchboard_db_replica_lag_seconds",
        "How far each read replica's replay is behind the primary (absent: not answering)",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (index, lag) in lags.iter().enumerate() {
        if let Some(lag) = lag {
            let labels = [("replica", index.to_string())];
            ConstGauge::new(*lag).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "switchboard_db_replica_usable",
        "Whether each read replica takes reads (answering, and within the lag bound)",
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (index, usable) in reads.usable().iter().enumerate() {
        let labels = [("replica", index.to_string())];
        ConstGauge::new(i64::from(*usable)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::screenpop::PopStats;
        let pops = &self.pops;
        let e = &mut encoder;
        counter(
            e,
            "switchboard_screen_pop_cache_hits",
            "Screen pops answered from the Redis cache",
            PopStats::get(&pops.cache_hits),
        )?;
        counter(
            e,
            "switchboard_screen_pop_pin_hits",
            "Screen pops answered from the card pinned to the call",
            PopStats::get(&pops.pin_hits),
        )?;
        counter(
            e,
            "switchboard_screen_pop_database_queries",
            "Screen-pop lookups that queried PostgreSQL (cache misses)",
            PopStats::get(&pops.database_queries),
        )?;
        counter(
            e,
            "switchboard_screen_pop_replica_queries",
            "Of the screen-pop queries, those a read replica answered",
            PopStats::get(&pops.replica_queries),
        )?;
        counter(
            e,
            "switchboard_screen_pop_cache_bypassed",
            "Screen pops served without Redis (down, backing off or untrusted): fallbacks",
            PopStats::get(&pops.cache_bypassed),
        )?;
        gauge(
            e,
            "switchboard_agent_streams_open",
            "Agent softphone streams open on this instance",
            self.fanout.local_watchers() as i64,
        )?;
        let size = i64::from(self.pool.size());
        let idle = self.pool.num_idle() as i64;
        gauge(
            e,
            "switchboard_db_pool_in_use",
            "PostgreSQL connections in use",
            size - idle,
        )?;
        gauge(
            e,
            "switchboard_db_pool_idle",
            "PostgreSQL connections open and idle",
            idle,
        )?;
        gauge(
            e,
            "switchboard_db_pool_waiting",
            "Tasks waiting for a PostgreSQL connection (or for their BEGIN)",
            crate::db::waiting_for_connection(),
        )?;
        let max = i64::from(self.pool.options().get_max_connections());
        gauge(
            e,
            "switchboard_db_pool_max",
            "PostgreSQL connections this instance may open",
            max,
        )?;
        replicas(e, &self.reads)?;
        let redis_failures = self.redis.as_ref().map_or(0, |r| r.failures());
        counter(
            e,
            "switchboard_redis_errors",
            "Redis commands that failed or timed out",
            redis_failures,
        )?;
        gauge(
            e,
            "switchboard_audit_pending",
            "Audit entries (reads, denials) waiting to be written to PostgreSQL",
            i64::try_from(self.auditor.pending()).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            "switchboard_audit_dropped",
            "Audit entries dropped because too many were waiting for PostgreSQL",
            self.auditor.dropped(),
        )?;
        let admission = &self.admission;
        gauge(
            e,
            "switchboard_admission_limit",
            "Requests this instance admits at once now (below --max-in-flight while congested)",
            admission.limit() as i64,
        )?;
        gauge(
            e,
            "switchboard_admission_in_flight",
            "Requests being handled now",
            admission.in_flight() as i64,
        )?;
        gauge(
            e,
            "switchboard_runtime_lag_microseconds",
            "How late the last 10 ms probe task ran: the wait for a CPU every task sees",
            i64::try_from(admission.last_lag().as_micros()).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            "switchboard_admission_shed",
            "Requests refused with UNAVAILABLE because the instance was at its limit",
            admission.shed(),
        )?;
        let head = self.feed_head.watch().borrow().position;
        gauge(
            e,
            "switchboard_feed_head_position",
            "The event feed's last sequenced position",
            head,
        )?;
        gauge(
            e,
            "switchboard_feed_unsequenced_events",
            "Feed events committed and not yet sequenced (the outbox lag; counted up to 1,001)",
            self.feed_unsequenced.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "switchboard_history_default_rows",
            "Rows in the history tables' default partitions at the last hourly upkeep (counted up \
             to 100,000): rows whose month was missing when they were written",
            self.history_default_rows.load(Ordering::Relaxed),
        )?;
        let sinks = &self.sinks;
        counter(
            e,
            "switchboard_webhook_deliveries",
            "Feed events a webhook receiver accepted (2xx), delivered by this instance",
            sinks.webhook_delivered.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "switchboard_webhook_failed_attempts",
            "Webhook attempts that failed (non-2xx, timeout, refused address), by this instance",
            sinks.webhook_failed_attempts.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "switchboard_nats_published",
            "Feed events JetStream acknowledged, published by this instance",
            sinks.nats_delivered.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "switchboard_nats_failed_attempts",
            "NATS publishes that failed or were not acknowledged, by this instance",
            sinks.nats_failed_attempts.load(Ordering::Relaxed),
        )?;
        gauge(
            e,
            "switchboard_webhooks_failing",
            "Push sinks stopped in FAILING (all instances; refreshed every minute)",
            sinks.failing.load(Ordering::Relaxed),
        )?;
        Ok(())
    }
}

/// The registry of one instance: the instruments and the scrape-time sources.
pub fn registry(metrics: &Arc<Metrics>, sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "switchboard_rpc_requests",
        "RPCs answered, by method and gRPC status code",
        metrics.rpc_requests.clone(),
    );
    registry.register(
        "switchboard_rpc_duration_seconds",
        "Time from an RPC's request to its response headers (for a stream: until it opened), by method and gRPC status code",
        metrics.rpc_duration.clone(),
    );
    registry.register(
        "switchboard_call_events",
        "Call events acknowledged, by outcome",
        metrics.call_events.clone(),
    );
    registry.register(
        "switchboard_call_event_ack_seconds",
        "Time from a call event's receipt to its ack (after the commit)",
        metrics.call_event_ack.clone(),
    );
    registry.register_collector(Box::new(sources));
    registry
}
