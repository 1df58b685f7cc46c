//! The tonic server: the layers every request passes, outermost first (docs/ARCHITECTURE.md), and
//! every service, each added with the same request-size limit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::transport::server::Router;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::pb::health_server::{Health, HealthServer};

use super::wiring::Services;
use crate::activity::grpc::ActivityGrpc;
use crate::admission::{AdaptiveLimit, AdmissionLayer};
use crate::agents::grpc::AgentGrpc;
use crate::analytics::grpc::AnalyticsGrpc;
use crate::audit::Auditor;
use crate::audit::grpc::AuditGrpc;
use crate::auth::layer::AuthLayer;
use crate::auth::{Authenticator, RateLimiter};
use crate::calls::grpc::CallEventGrpc;
use crate::campaigns::grpc::CampaignGrpc;
use crate::cases::grpc::CaseGrpc;
use crate::config::Settings;
use crate::customers::grpc::CustomerGrpc;
use crate::diagnostics::grpc::DiagnosticsGrpc;
use crate::drain::Draining;
use crate::feed::grpc::EventFeedGrpc;
use crate::feedback::grpc::FeedbackGrpc;
use crate::import::grpc::ImportGrpc;
use crate::interactions::grpc::InteractionGrpc;
use crate::metrics::Metrics;
use crate::privacy::grpc::PrivacyGrpc;
use crate::proto;
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
use crate::proto::v1::reconcile_service_server::ReconcileServiceServer;
use crate::proto::v1::scorecard_service_server::ScorecardServiceServer;
use crate::proto::v1::screen_pop_service_server::ScreenPopServiceServer;
use crate::proto::v1::segmentation_service_server::SegmentationServiceServer;
use crate::proto::v1::webhook_service_server::WebhookServiceServer;
use crate::reconcile::grpc::ReconcileGrpc;
use crate::scorecard::grpc::ScorecardGrpc;
use crate::screenpop::grpc::ScreenPopGrpc;
use crate::screenpop::http::CallerIdHttpLayer;
use crate::segments::grpc::SegmentationGrpc;
use crate::telemetry::RpcLayer;
use crate::webhooks::grpc::WebhookGrpc;

/// A generated service server whose decoded messages may be capped.
trait Limited: Sized {
    fn limited(self, max_bytes: usize) -> Self;
}

macro_rules! limited {
    ($($server:ident),* $(,)?) => {
        $(impl<T> Limited for $server<T> {
            fn limited(self, max_bytes: usize) -> Self {
                self.max_decoding_message_size(max_bytes)
            }
        })*
    };
}

limited!(
    ActivityServiceServer,
    AgentServiceServer,
    AnalyticsServiceServer,
    AuditServiceServer,
    CallEventServiceServer,
    CallerIdServiceServer,
    CampaignServiceServer,
    CaseServiceServer,
    CustomerServiceServer,
    DiagnosticsServiceServer,
    EventFeedServiceServer,
    FeedbackServiceServer,
    ImportServiceServer,
    InteractionServiceServer,
    PrivacyServiceServer,
    ReconcileServiceServer,
    ScorecardServiceServer,
    ScreenPopServiceServer,
    SegmentationServiceServer,
    WebhookServiceServer,
);

/// What the layers and adapters need besides the services.
pub struct Edge<H> {
    pub metrics: Arc<Metrics>,
    pub admission: Arc<AdaptiveLimit>,
    pub auditor: Auditor,
    pub draining: Draining,
    /// The health service (its reporter is the background's).
    pub health: HealthServer<H>,
}

/// Serves `services` on `listener` until `stopped` resolves (then tonic drains its calls).
pub fn serve<H: Health>(
    listener: TcpListener,
    settings: &Settings,
    services: Services,
    edge: Edge<H>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = Result<(), tonic::transport::Error>>> {
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
    let limits = settings.limits;
    let authenticator = Arc::new(Authenticator::new(
        settings.auth.clone(),
        services.pool.clone(),
    ));
    let limiter = Arc::new(RateLimiter::new(limits.rate));
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
    // The web app's static files are answered first (GET only, its own paths only). The
    // dialplans' HTTP caller-ID GETs and gRPC-web (HTTP/1.1 and HTTP/2, binary and text) are
    // translated into gRPC first, so every layer below (metrics and traces, admission, auth, rate
    // limits, audit) sees gRPC: nothing bypasses a layer. CORS answers browsers' preflights
    // before anything else.
    let router = builder
        .accept_http1(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timeout(limits.default_deadline)
        .layer(crate::grpc_web::cors(&settings.cors_allow_origins))
        .layer(settings.web_ui)
        .layer(CallerIdHttpLayer)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(RpcLayer::new(Arc::clone(&edge.metrics)))
        .layer(AdmissionLayer::new(
            Arc::clone(&edge.admission),
            limits.max_request_bytes,
        ))
        .layer(AuthLayer::new(authenticator, limiter, edge.auditor.clone()))
        .add_service(edge.health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let router = add_services(
        router,
        settings,
        services,
        &edge.auditor,
        &edge.draining,
        &edge.metrics,
    );
    Ok(router.serve_with_incoming_shutdown(incoming, stopped))
}

/// Every Switchboard service, each with the request-size limit.
fn add_services<L>(
    router: Router<L>,
    settings: &Settings,
    s: Services,
    auditor: &Auditor,
    draining: &Draining,
    metrics: &Arc<Metrics>,
) -> Router<L> {
    let max = settings.limits.max_request_bytes;
    let phones = settings.phones;
    let pops = ScreenPopGrpc::new(s.pops.clone(), phones, auditor.clone());
    router
        .add_service(
            CustomerServiceServer::new(CustomerGrpc::new(s.customers, phones, auditor.clone()))
                .limited(max),
        )
        .add_service(ScreenPopServiceServer::new(pops.clone()).limited(max))
        .add_service(CallerIdServiceServer::new(pops).limited(max))
        .add_service(
            CallEventServiceServer::new(CallEventGrpc::new(
                s.call_events,
                phones,
                draining.clone(),
                Arc::clone(metrics),
            ))
            .limited(max),
        )
        .add_service(
            AgentServiceServer::new(AgentGrpc::new(s.agents, s.watcher, draining.clone()))
                .limited(max),
        )
        .add_service(
            InteractionServiceServer::new(InteractionGrpc::new(s.interactions)).limited(max),
        )
        .add_service(ActivityServiceServer::new(ActivityGrpc::new(s.activity)).limited(max))
        .add_service(CaseServiceServer::new(CaseGrpc::new(s.cases)).limited(max))
        .add_service(
            CampaignServiceServer::new(CampaignGrpc::new(s.campaigns, phones)).limited(max),
        )
        .add_service(FeedbackServiceServer::new(FeedbackGrpc::new(s.feedback)).limited(max))
        .add_service(ImportServiceServer::new(ImportGrpc::new(s.import)).limited(max))
        .add_service(AuditServiceServer::new(AuditGrpc::new(s.audit)).limited(max))
        .add_service(
            AnalyticsServiceServer::new(AnalyticsGrpc::new(s.analytics, s.live)).limited(max),
        )
        .add_service(ScorecardServiceServer::new(ScorecardGrpc::new(s.scorecards)).limited(max))
        .add_service(
            ReconcileServiceServer::new(ReconcileGrpc::new(s.reconciler, phones)).limited(max),
        )
        .add_service(
            SegmentationServiceServer::new(SegmentationGrpc::new(s.segmentation)).limited(max),
        )
        .add_service(
            EventFeedServiceServer::new(EventFeedGrpc::new(s.feed, draining.clone())).limited(max),
        )
        .add_service(DiagnosticsServiceServer::new(DiagnosticsGrpc).limited(max))
        .add_service(PrivacyServiceServer::new(PrivacyGrpc::new(s.privacy)).limited(max))
        .add_service(WebhookServiceServer::new(WebhookGrpc::new(s.webhooks)).limited(max))
}
