//! Browsers and other gRPC-web clients on the gRPC port (`tonic_web` translates each gRPC-web
//! request, binary or text, over HTTP/1.1 or HTTP/2, into gRPC before any other layer sees it).
//!
//! CORS comes from an explicit allow-list (`--cors-allow-origin`, empty by default):
//! - a request from an allowed origin gets `Access-Control-Allow-Origin` with that origin, and the
//!   gRPC-web response headers exposed (`grpc-status`, `grpc-message`, `grpc-status-details-bin`);
//! - a preflight from an allowed origin is answered for POST with the headers gRPC-web clients
//!   send (`authorization`, `content-type`, `x-grpc-web`, `x-user-agent`, `grpc-timeout`, and
//!   Connect's `connect-protocol-version`, `connect-timeout-ms`), cached for a day;
//! - any other origin gets no CORS headers at all, so the browser refuses the response.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

/// How long a browser may cache a preflight's answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

const REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
];

const EXPOSED_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "server-timing",
];

fn names(names: &[&'static str]) -> Vec<HeaderName> {
    names.iter().map(|n| HeaderName::from_static(n)).collect()
}

/// The CORS layer for `origins` (exact `scheme://host[:port]` values).
pub fn cors(origins: &[HeaderValue]) -> AllowListedCorsLayer {
    let allowed: Arc<[HeaderValue]> = origins.into();
    let listed = Arc::clone(&allowed);
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            listed.iter().any(|a| a == origin)
        }))
        .allow_methods([Method::POST])
        .allow_headers(names(REQUEST_HEADERS))
        .expose_headers(names(EXPOSED_HEADERS))
        .max_age(PREFLIGHT_MAX_AGE);
    AllowListedCorsLayer { cors, allowed }
}

/// `tower_http`'s CORS, and nothing of it for an origin that is not allowed: that layer still
/// answers such a preflight with its allowed methods, headers and max age, which tells a stranger
/// more than it needs and reads as a partial yes.
#[derive(Clone)]
pub struct AllowListedCorsLayer {
    cors: CorsLayer,
    allowed: Arc<[HeaderValue]>,
}

impl<S> Layer<S> for AllowListedCorsLayer {
    type Service = AllowListedCors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AllowListedCors {
            cors: self.cors.layer(inner),
            allowed: Arc::clone(&self.allowed),
        }
    }
}

#[derive(Clone)]
pub struct AllowListedCors<S> {
    cors: Cors<S>,
    allowed: Arc<[HeaderValue]>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AllowListedCors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.cors.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let allowed = request
            .headers()
            .get(http::header::ORIGIN)
            .is_some_and(|origin| self.allowed.iter().any(|a| a == origin));
        let response = self.cors.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if !allowed {
                let cors: Vec<HeaderName> = response
                    .headers()
                    .keys()
                    .filter(|name| name.as_str().starts_with("access-control-"))
                    .cloned()
                    .collect();
                for name in cors {
                    response.headers_mut().remove(name);
                }
            }
            Ok(response)
        })
    }
}
