//! Counts and times every RPC by method and status code.
//!
//! The code is the `grpc-status` of the response headers when the answer is an error without a
//! body (how tonic answers a failed call), else OK: a unary call that succeeds carries its status
//! in the trailers. A stream counts when it opens; its latency is the time to open it.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::{Layer, Service};

use super::{Metrics, RpcLabels};

#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// A gRPC status code's name, as Prometheus users read them.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
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

impl<S> Service<http::Request<Body>> for RpcMetricsService<S>
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
        Box::pin(async move {
            let started = Instant::now();
            let method = method_of(request.uri().path());
            let response = inner.call(request).await;
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |c| code_name(tonic::Code::from(c))),
                Err(_) => "UNKNOWN",
            };
            let labels = RpcLabels {
                method,
                code: code.to_owned(),
            };
            metrics
                .rpc_duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            metrics.rpc_requests.get_or_create(&labels).inc();
            response
        })
    }
}
