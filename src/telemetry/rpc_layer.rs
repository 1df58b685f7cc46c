//! Every RPC, observed once: a trace span continuing the caller's W3C `traceparent`, and the
//! Prometheus count and latency by method and status code.
//!
//! - **Span.** At debug level under `switchboard::rpc`: logs (info) never see it, so it costs
//!   nothing unless traces are exported. Its fields are the method and the status code, never the
//!   request.
//! - **Status code.** The code is the `grpc-status` of the response headers when the answer is an
//!   error without a body (how tonic answers a failed call), else OK: a unary call that succeeds
//!   carries its status in the trailers. A stream counts when it opens, and its latency is the
//!   time to open it.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::metrics::{Metrics, RpcLabels};

#[derive(Clone)]
pub struct RpcLayer {
    metrics: Arc<Metrics>,
}

impl RpcLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The method label: the RPC path of a known service, else "other" (unknown paths are not
/// allowed to grow the label set).
fn method_of(path: &str) -> String {
    use crate::auth::permissions;
    match permissions::allowed_roles(path).is_some() || permissions::is_public(path) {
        true => path.trim_start_matches('/').to_owned(),
        false => "other".to_owned(),
    }
}

/// The status code an answer carries in its headers (none: OK, or in the trailers).
fn status_of(response: &http::Response<Body>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

impl<S> Service<http::Request<Body>> for RpcService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = Arc::clone(&self.metrics);
        let started = Instant::now();
        let path = request.uri().path();
        let method = method_of(path);
        let (service, rpc) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        let span = tracing::debug_span!(
            target: "switchboard::rpc",
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %rpc,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
            // A request without (or with a malformed) traceparent starts its own trace.
            let _ = span.set_parent(parent);
        }
        let recorder = span.clone();
        Box::pin(
            async move {
                let response = inner.call(request).await;
                let code = match &response {
                    Ok(response) => status_of(response),
                    Err(_) => tonic::Code::Unknown,
                };
                recorder.record("rpc.grpc.status_code", code as i64);
                let labels = RpcLabels {
                    method,
                    code: crate::grpc_status::code_name(code).to_owned(),
                };
                metrics
                    .rpc_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                metrics.rpc_requests.get_or_create(&labels).inc();
                response
            }
            .instrument(span),
        )
    }
}
