//! Start-up and shutdown. `Application::build` binds its own listener (tests pass port 0 and read
//! the real port back), `run_until_stopped` serves until the shutdown future resolves, then
//! drains. The work is split three ways:
//! - [`wiring`]: the composition root, where every service is built from the settings;
//! - [`background`]: the tasks beside the server, started together, stopped behind one handle;
//! - [`server`]: the tonic server, its layers, and each service added with its limits.

mod background;
mod server;
pub mod wiring;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use self::background::Background;
use self::server::Edge;
use self::wiring::{Core, Services};
use crate::config::Settings;
use crate::db;
use crate::drain::Draining;
use crate::metrics::Metrics;
use crate::screenpop::PopStats;

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Settings,
    core: Core,
    /// The Prometheus metrics port, bound at build (`None`: none).
    metrics_listener: Option<TcpListener>,
}

impl Application {
    /// Connects (lazily), migrates unless disabled, builds the core, and binds the listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::lazy_pool(&settings.database_url, &settings.pool)
            .context("invalid DATABASE_URL")?;
        if settings.migrate {
            db::wait_until_reachable(&pool, Duration::from_secs(30))
                .await
                .context("PostgreSQL is unreachable; cannot migrate")?;
            db::migrate(&pool).await.context("applying migrations")?;
            // Before any request reads a KPI (without migrations, the chain stamper applies it).
            crate::analytics::apply_misdial_rule(&pool, settings.misdial_seconds)
                .await
                .context("applying the misdial threshold")?;
            crate::analytics::apply_rollup_zone(&pool, &settings.kpi_time_zone)
                .await
                .context("applying the KPI time zone")?;
        }
        // Invalid URLs are refused here; the replicas themselves are connected lazily.
        let reads = crate::read_replicas::Reads::new(pool.clone(), &settings.replicas)
            .context("invalid --database-replica-url")?;
        let core = Core::build(&settings, pool, reads).await;
        // Loaded now, not on the runtime once requests are in flight: the descriptor set's service
        // names, and the phone-number metadata (its first parse compiles many patterns and would
        // hold the runtime long enough to time out the Redis commands waiting on it).
        crate::proto::service_names();
        settings.phones.parse("+14155550100", "").ok();
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        let metrics_listener = match settings.metrics_listen {
            None => None,
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the metrics port {address}"))?,
            ),
        };
        Ok(Self {
            listener,
            local_addr,
            settings,
            core,
            metrics_listener,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics port's address, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// What screen-pop lookups did since start.
    pub fn pop_stats(&self) -> Arc<PopStats> {
        self.core.pops.stats()
    }

    /// Serves until `shutdown` resolves, then: health NOT_SERVING, stop accepting, let in-flight
    /// calls finish, flush the audit trail and close the pool, all within the drain timeout.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            local_addr,
            settings,
            core,
            metrics_listener,
        } = self;
        let metrics = Arc::new(Metrics::new());
        let (reporter, health) = tonic_health::server::health_reporter();
        let admission = Arc::clone(&core.admission);
        let pool = core.pool.clone();
        let (mut background, shared) =
            Background::start(&core, &settings, &metrics, reporter, metrics_listener);
        let auditor = shared.auditor.clone();
        let services = Services::build(core, &shared, &settings);
        let (start_draining, draining) = Draining::new();
        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        let edge = Edge {
            metrics,
            admission,
            auditor,
            draining,
            health,
        };
        let server = server::serve(listener, &settings, services, edge, async {
            stopped.await.ok();
        })?;
        tracing::info!(%local_addr, "switchboard listening");

        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                result.context("gRPC server failed")?;
                return Ok(());
            }
            () = shutdown => {}
        }

        // One deadline for the whole stop, whatever state PostgreSQL and Redis are in: what is
        // not flushed by then is counted and named in one log line, and the process exits.
        let deadline = tokio::time::Instant::now() + settings.drain_timeout;
        tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
        background.stop().await;
        start_draining.send(true).ok();
        stop_accepting.send(()).ok();
        match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(result) => result.context("gRPC server failed while draining")?,
            Err(_) => {
                tracing::warn!(timeout = ?settings.drain_timeout, "drain timeout: closing remaining calls")
            }
        }
        if let Some(lost) = background.finish(&pool, deadline).await {
            tracing::error!(
                audit_entries_lost = lost,
                timeout = ?settings.drain_timeout,
                "stopped at the drain deadline with work not flushed: {lost} audit entries not written"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}
