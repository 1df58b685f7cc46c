//! The tasks that run beside the server, started together and stopped behind one handle:
//! the database health monitor, the pop-invalidation relay, the stored-card builder, the offer
//! directory's refresh, the live board's reconciler, the call-chain stamper, the KPI rollups, the
//! history partitions' upkeep, the admission probe, the metrics port, the feed sequencer, the
//! agent fan-out subscriber, and the audit writer (stopped last, after the server has drained, so
//! the reads of draining calls are written).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::wiring::{Core, Shared};
use crate::audit::Auditor;
use crate::config::Settings;
use crate::feed::Sequencer;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::proto;

/// How often pending pop invalidations are retried (and the cache re-trusted).
const INVALIDATION_RELAY_INTERVAL: Duration = Duration::from_millis(500);
/// How often stale stored cards are rebuilt ahead of the pops that would need them.
const CARD_BUILD_INTERVAL: Duration = Duration::from_millis(500);
/// How often customers' call chains are restamped (KPI requests also catch up first).
const CHAIN_STAMP_INTERVAL: Duration = Duration::from_millis(250);
/// How often the KPI rollups look for closed days to roll up (src/analytics/rollups.rs). A read
/// scans any day not yet rolled up, so this bounds only how long a changed day is scanned.
const KPI_ROLLUP_INTERVAL: Duration = Duration::from_secs(5);
/// How often a resync owed after a failed fan-out publish is tried again.
const FANOUT_RESYNC_RETRY: Duration = Duration::from_millis(500);

pub struct Background {
    stop: watch::Sender<bool>,
    stop_audit: watch::Sender<bool>,
    monitor: JoinHandle<()>,
    audit_writer: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    reporter: HealthReporter,
    auditor: Auditor,
}

impl Background {
    /// Starts every task, and returns what the services share with them.
    pub fn start(
        core: &Core,
        settings: &Settings,
        metrics: &Arc<Metrics>,
        reporter: HealthReporter,
        metrics_listener: Option<TcpListener>,
    ) -> (Self, Shared) {
        let pool = &core.pool;
        let (stop, stop_rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor_database(
            pool.clone(),
            reporter.clone(),
            settings.health_interval,
            stop_rx.clone(),
        ));
        let mut tasks = vec![
            core.invalidator
                .spawn_relay(INVALIDATION_RELAY_INTERVAL, stop_rx.clone()),
            core.offers.spawn_refresh(stop_rx.clone()),
            crate::screenpop::card::spawn_builder(
                pool.clone(),
                CARD_BUILD_INTERVAL,
                stop_rx.clone(),
            ),
        ];
        let live = Live::new(pool.clone(), core.redis.clone(), settings.live);
        tasks.push(live.spawn_reconciler(stop_rx.clone()));
        tasks.push(crate::analytics::spawn_chain_stamper(
            pool.clone(),
            CHAIN_STAMP_INTERVAL,
            settings.misdial_seconds,
            stop_rx.clone(),
        ));
        tasks.push(crate::analytics::spawn_rollups(
            pool.clone(),
            KPI_ROLLUP_INTERVAL,
            settings.kpi_time_zone.clone(),
            stop_rx.clone(),
        ));
        let (sequencer, feed_head) = Sequencer::new(
            pool.clone(),
            settings.feed_retention,
            Arc::clone(&metrics.feed_unsequenced),
        );
        let (stop_audit, audit_stop) = watch::channel(false);
        let (auditor, audit_writer) =
            Auditor::spawn(pool.clone(), audit_stop, settings.audit_max_pending);
        tasks.push(crate::history::spawn_upkeep(
            pool.clone(),
            Arc::clone(&metrics.history_default_rows),
            stop_rx.clone(),
        ));
        tasks.push(core.admission.spawn_probe(stop_rx.clone()));
        tasks.push(tokio::spawn(core.reads.clone().monitor(stop_rx.clone())));
        if let Some(listener) = metrics_listener {
            let sources = crate::metrics::Sources {
                pool: pool.clone(),
                reads: core.reads.clone(),
                pops: core.pops.stats(),
                fanout: Arc::clone(&core.fanout),
                redis: core.redis.clone(),
                feed_head: feed_head.clone(),
                feed_unsequenced: Arc::clone(&metrics.feed_unsequenced),
                history_default_rows: Arc::clone(&metrics.history_default_rows),
                admission: Arc::clone(&core.admission),
                auditor: auditor.clone(),
                sinks: Arc::clone(&metrics.sinks),
            };
            tasks.push(crate::metrics::serve(
                listener,
                crate::metrics::registry(metrics, sources),
                stop_rx.clone(),
            ));
        }
        tasks.push(sequencer.spawn(stop_rx.clone()));
        tasks.push(crate::webhooks::spawn_workers(
            pool.clone(),
            settings.webhooks.clone(),
            feed_head.clone(),
            Arc::clone(&metrics.sinks),
            core.ingest.clone(),
            stop_rx.clone(),
        ));
        if let Some(redis) = &settings.redis {
            tasks.push(
                core.fanout
                    .spawn_owed_resync(FANOUT_RESYNC_RETRY, stop_rx.clone()),
            );
            tasks.push(core.fanout.spawn_subscriber(redis.target.clone(), stop_rx));
        }
        let shared = Shared {
            auditor: auditor.clone(),
            feed_head,
            live,
        };
        let background = Self {
            stop,
            stop_audit,
            monitor,
            audit_writer,
            tasks,
            reporter,
            auditor,
        };
        (background, shared)
    }

    /// The first step of a stop: every task is told to stop, and health goes NOT_SERVING (after
    /// the monitor has stopped, so it cannot turn it back).
    pub async fn stop(&mut self) {
        self.stop.send(true).ok();
        (&mut self.monitor).await.ok();
        set_health(&self.reporter, ServingStatus::NotServing).await;
    }

    /// The last step, once the server has drained: the audit writer flushes, every task ends,
    /// and the pool closes, all by `deadline`. Returns how many audit entries were abandoned
    /// (`None`: everything was flushed).
    pub async fn finish(self, pool: &PgPool, deadline: tokio::time::Instant) -> Option<usize> {
        self.stop_audit.send(true).ok();
        let flushed = tokio::time::timeout_at(deadline, async {
            self.audit_writer.await.ok();
            for task in self.tasks {
                task.await.ok();
            }
            pool.close().await;
        })
        .await;
        // The tasks still waiting end with the runtime when the process returns.
        flushed.is_err().then(|| self.auditor.abandon())
    }
}

/// Every service's health follows PostgreSQL: the server as a whole ("") and each service the
/// descriptor set declares, so a probe naming any of them gets an answer, never NOT_FOUND.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in proto::service_names() {
        reporter.set_service_status(service, status).await;
    }
}

/// Reports SERVING while PostgreSQL answers `SELECT 1`, NOT_SERVING while it does not.
async fn monitor_database(
    pool: PgPool,
    reporter: HealthReporter,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let status = if crate::db::ping(&pool, Duration::from_secs(1)).await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(?status, "database health changed");
            set_health(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
