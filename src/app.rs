//! Start-up and shutdown: `Application::build` binds its own listener (tests pass port 0 and read
//! the real port back), `run_until_stopped` serves until the shutdown future resolves, then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::activity::Activity;
use crate::activity::grpc::ActivityGrpc;
use crate::admission::{AdaptiveLimit, AdmissionLayer, Targets};
use crate::agents::grpc::AgentGrpc;
use crate::agents::{Agents, Fanout, Watcher};
use crate::analytics::Analytics;
use crate::analytics::grpc::AnalyticsGrpc;
use crate::audit::Auditor;
use crate::audit::grpc::AuditGrpc;
use crate::auth::layer::AuthLayer;
use crate::auth::{Authenticator, RateLimiter};
use crate::calls::CallEvents;
use crate::calls::grpc::CallEventGrpc;
use crate::campaigns::grpc::CampaignGrpc;
use crate::campaigns::{Campaigns, OfferDirectory};
use crate::cases::Cases;
use crate::cases::grpc::CaseGrpc;
use crate::config::Settings;
use crate::customers::Customers;
use crate::customers::grpc::CustomerGrpc;
use crate::db;
use crate::diagnostics::grpc::DiagnosticsGrpc;
use crate::drain::Draining;
use crate::feed::Sequencer;
use crate::feed::grpc::EventFeedGrpc;
use crate::feedback::FeedbackDesk;
use crate::feedback::grpc::FeedbackGrpc;
use crate::import::grpc::ImportGrpc;
use crate::interactions::Interactions;
use crate::interactions::grpc::InteractionGrpc;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::privacy::Privacy;
use crate::privacy::grpc::PrivacyGrpc;
use crate::proto::v1::activity_service_server::ActivityServiceServer;
use crate::proto::v1::agent_service_server::AgentServiceServer;
use crate::proto::v1::analytics_service_server::AnalyticsServiceServer;
use crate::proto::v1::audit_service_server::AuditServiceServer;
use crate::proto::v1::call_event_service_server::CallEventServiceServer;
use crate::proto::v1::caller_id_service_server::CallerIdServiceServer;
use crate::proto::v1::campaign_service_server::CampaignServiceServer;
use crate::proto::v1::case_service_server::CaseServiceServer;
use crate::proto::v1::customer_service_server::CustomerServiceServer;
use crate::proto::v1::diagnostics_service_server::DiagnosticsServiceServer;
use crate::proto::v1::event_feed_service_server::EventFeedServiceServer;
use crate::proto::v1::feedback_service_server::FeedbackServiceServer;
use crate::proto::v1::import_service_server::ImportServiceServer;
use crate::proto::v1::interaction_service_server::InteractionServiceServer;
use crate::proto::v1::privacy_service_server::PrivacyServiceServer;
use crate::proto::v1::screen_pop_service_server::ScreenPopServiceServer;
use crate::proto::v1::segmentation_service_server::SegmentationServiceServer;
use crate::proto::{self};
use crate::redis_link::RedisLink;
use crate::screenpop::cache::{CacheTtls, PopCache};
use crate::screenpop::grpc::ScreenPopGrpc;
use crate::screenpop::http::CallerIdHttpLayer;
use crate::screenpop::{PopInvalidator, PopStats, ScreenPops};
use crate::segments::Segmentation;
use crate::segments::grpc::SegmentationGrpc;
use crate::telemetry::RpcLayer;

/// How often pending pop invalidations are retried (and the cache re-trusted).
const INVALIDATION_RELAY_INTERVAL: Duration = Duration::from_millis(500);
/// How often customers' call chains are restamped (KPI requests also catch up first).
const CHAIN_STAMP_INTERVAL: Duration = Duration::from_millis(250);

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Settings,
    pool: PgPool,
    customers: Customers,
    pops: ScreenPops,
    invalidator: PopInvalidator,
    offers: OfferDirectory,
    fanout: Arc<Fanout>,
    /// The Redis link shared by the pop cache and the live queue state (`None` without Redis).
    redis: Option<RedisLink>,
    /// The Prometheus metrics port, bound at build (`None`: none).
    metrics_listener: Option<TcpListener>,
    /// Load shedding, shared with the pops (which skip their PostgreSQL fallback while shedding).
    admission: Arc<AdaptiveLimit>,
}

impl Application {
    /// Connects (lazily), migrates unless disabled, and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::lazy_pool(&settings.database_url, &settings.pool)
            .context("invalid DATABASE_URL")?;
        if settings.migrate {
            db::wait_until_reachable(&pool, Duration::from_secs(30))
                .await
                .context("PostgreSQL is unreachable; cannot migrate")?;
            db::migrate(&pool).await.context("applying migrations")?;
        }
        let link = settings.redis.as_ref().map(RedisLink::new);
        let fanout = Fanout::new(link.clone());
        let cache = link.clone().map(|link| {
            PopCache::new(
                link,
                CacheTtls {
                    pop: settings.pop_ttl,
                    negative: settings.negative_ttl,
                    pin: settings.pin_ttl,
                },
            )
        });
        if cache.is_none() {
            tracing::warn!("no REDIS_URL: screen pops are served from PostgreSQL only");
        }
        let invalidator = PopInvalidator::new(pool.clone(), cache.clone());
        if let Err(error) = invalidator.drain_once().await {
            tracing::warn!(%error, "pending pop invalidations not drained yet; the relay will retry");
        }
        let offers = OfferDirectory::new(pool.clone());
        let admission = AdaptiveLimit::new(
            settings.limits.max_in_flight,
            Targets {
                lag: settings.limits.shed_lag,
                queue: settings.limits.shed_queue,
            },
        );
        let pops = ScreenPops::new(
            pool.clone(),
            cache,
            invalidator.clone(),
            offers.clone(),
            Arc::clone(&admission),
        );
        let customers = Customers::new(pool.clone(), invalidator.clone());
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
            pool,
            customers,
            pops,
            invalidator,
            fanout,
            offers,
            redis: link,
            metrics_listener,
            admission,
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
        self.pops.stats()
    }

    /// Serves until `shutdown` resolves, then: health NOT_SERVING, stop accepting, let in-flight
    /// calls finish (at most the drain timeout), close the pool.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            listener,
            local_addr,
            settings,
            pool,
            customers,
            pops,
            invalidator,
            fanout,
            offers,
            redis,
            metrics_listener,
            admission,
        } = self;
        let metrics = Arc::new(Metrics::new());
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let (stop_background, stop_rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor_database(
            pool.clone(),
            reporter.clone(),
            settings.health_interval,
            stop_rx.clone(),
        ));
        let relay = invalidator.spawn_relay(INVALIDATION_RELAY_INTERVAL, stop_rx.clone());
        let offers_refresh = offers.spawn_refresh(stop_rx.clone());
        let live = Live::new(pool.clone(), redis.clone(), settings.live);
        let live_rebuild = live.spawn_reconciler(stop_rx.clone());
        let chain_stamper = crate::analytics::spawn_chain_stamper(
            pool.clone(),
            CHAIN_STAMP_INTERVAL,
            stop_rx.clone(),
        );
        let (sequencer, feed_head) = Sequencer::new(
            pool.clone(),
            settings.feed_retention,
            Arc::clone(&metrics.feed_unsequenced),
        );
        // Stopped only after the server has drained, so the reads of draining calls are written.
        let (stop_audit, audit_stop) = watch::channel(false);
        let (auditor, audit_writer) =
            Auditor::spawn(pool.clone(), audit_stop, settings.audit_max_pending);
        let admission_probe = admission.spawn_probe(stop_rx.clone());
        let metrics_server = metrics_listener.map(|listener| {
            let sources = crate::metrics::Sources {
                pool: pool.clone(),
                pops: pops.stats(),
                fanout: Arc::clone(&fanout),
                redis: redis.clone(),
                feed_head: feed_head.clone(),
                feed_unsequenced: Arc::clone(&metrics.feed_unsequenced),
                admission: Arc::clone(&admission),
                auditor: auditor.clone(),
            };
            crate::metrics::serve(
                listener,
                crate::metrics::registry(&metrics, sources),
                stop_rx.clone(),
            )
        });
        let sequencer = sequencer.spawn(stop_rx.clone());
        let subscriber = settings
            .redis
            .as_ref()
            .map(|redis| fanout.spawn_subscriber(redis.url.clone(), stop_rx));
        let agents = Agents::new(pool.clone(), live.clone());
        let interactions = Interactions::new(pool.clone(), invalidator.clone());
        let activity = Activity::new(pool.clone(), invalidator.clone());
        let cases = Cases::new(pool.clone(), invalidator.clone(), settings.case_sla);
        let campaigns = Campaigns::new(pool.clone(), invalidator.clone(), offers);
        let feedback = FeedbackDesk::new(
            pool.clone(),
            invalidator.clone(),
            settings.case_sla,
            settings.feedback,
        );
        let watcher = Watcher {
            pool: pool.clone(),
            agents: agents.clone(),
            fanout: fanout.clone(),
            pops: pops.clone(),
            phones: settings.phones,
        };
        let call_events = CallEvents::new(
            pool.clone(),
            pops.clone(),
            settings.phones,
            fanout,
            live.clone(),
        );

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        // Small request/response messages: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        let authenticator = Arc::new(Authenticator::new(settings.auth.clone(), pool.clone()));
        let limits = settings.limits;
        let (start_draining, draining) = Draining::new();
        let limiter = Arc::new(RateLimiter::new(limits.rate));
        let pop_grpc = ScreenPopGrpc::new(pops, settings.phones, auditor.clone());
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &settings.tls {
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                config = config
                    .client_ca_root(Certificate::from_pem(ca))
                    .client_auth_optional(false);
            }
            builder = builder.tls_config(config).context("TLS configuration")?;
        }
        // The dialplans' HTTP caller-ID GETs and gRPC-web (HTTP/1.1 and HTTP/2, binary and text)
        // are translated into gRPC first, so every layer below (metrics and traces, admission,
        // auth, rate limits, audit) sees gRPC: nothing bypasses a layer. CORS answers browsers'
        // preflights before anything else.
        let server = builder
            .accept_http1(true)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .timeout(limits.default_deadline)
            .layer(crate::grpc_web::cors(&settings.cors_allow_origins))
            .layer(CallerIdHttpLayer)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(RpcLayer::new(Arc::clone(&metrics)))
            .layer(AdmissionLayer::new(
                Arc::clone(&admission),
                limits.max_request_bytes,
            ))
            .layer(AuthLayer::new(authenticator, limiter, auditor.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                CustomerServiceServer::new(CustomerGrpc::new(
                    customers,
                    settings.phones,
                    auditor.clone(),
                ))
                .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                ScreenPopServiceServer::new(pop_grpc.clone())
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                CallerIdServiceServer::new(pop_grpc)
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                CallEventServiceServer::new(CallEventGrpc::new(
                    call_events,
                    settings.phones,
                    draining.clone(),
                    Arc::clone(&metrics),
                ))
                .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                AgentServiceServer::new(AgentGrpc::new(agents, watcher, draining.clone()))
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                InteractionServiceServer::new(InteractionGrpc::new(interactions))
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                ActivityServiceServer::new(ActivityGrpc::new(activity))
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                CaseServiceServer::new(CaseGrpc::new(cases))
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                CampaignServiceServer::new(CampaignGrpc::new(campaigns, settings.phones))
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                FeedbackServiceServer::new(FeedbackGrpc::new(feedback))
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(
                ImportServiceServer::new(ImportGrpc::new(
                    pool.clone(),
                    invalidator.clone(),
                    settings.phones,
                ))
                .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(AuditServiceServer::new(AuditGrpc::new(pool.clone())))
            .add_service(AnalyticsServiceServer::new(AnalyticsGrpc::new(
                Analytics::new(pool.clone()),
                live,
            )))
            .add_service(SegmentationServiceServer::new(SegmentationGrpc::new(
                Segmentation::new(pool.clone(), invalidator.clone()),
            )))
            .add_service(EventFeedServiceServer::new(EventFeedGrpc::new(
                pool.clone(),
                feed_head,
                draining,
            )))
            .add_service(
                DiagnosticsServiceServer::new(DiagnosticsGrpc)
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .add_service(PrivacyServiceServer::new(PrivacyGrpc::new(Privacy::new(
                pool.clone(),
                invalidator.clone(),
            ))))
            .serve_with_incoming_shutdown(incoming, async {
                stopped.await.ok();
            });
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
        stop_background.send(true).ok();
        monitor.await.ok();
        set_health(&reporter, ServingStatus::NotServing).await;
        start_draining.send(true).ok();
        stop_accepting.send(()).ok();
        match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(result) => result.context("gRPC server failed while draining")?,
            Err(_) => {
                tracing::warn!(timeout = ?settings.drain_timeout, "drain timeout: closing remaining calls")
            }
        }
        stop_audit.send(true).ok();
        let flushed = tokio::time::timeout_at(deadline, async {
            audit_writer.await.ok();
            relay.await.ok();
            offers_refresh.await.ok();
            live_rebuild.await.ok();
            chain_stamper.await.ok();
            admission_probe.await.ok();
            if let Some(metrics_server) = metrics_server {
                metrics_server.await.ok();
            }
            sequencer.await.ok();
            if let Some(subscriber) = subscriber {
                subscriber.await.ok();
            }
            pool.close().await;
        })
        .await;
        if flushed.is_err() {
            // The tasks still waiting end with the runtime when this returns.
            let lost = auditor.abandon();
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

/// Every service's health follows PostgreSQL: the server as a whole ("") and each service the
/// descriptor set declares, so a probe naming any of them gets an answer, never NOT_FOUND.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in proto::service_names() {
        reporter.set_service_status(&service, status).await;
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
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT 1").execute(&pool),
        )
        .await;
        let status = match probe {
            Ok(Ok(_)) => ServingStatus::Serving,
            _ => ServingStatus::NotServing,
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
