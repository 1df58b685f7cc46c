//! The tower layer in front of every gRPC service: authenticate, check the permission table and
//! the principal's rate limit, audit denials, and run the handler with the principal in the
//! request's extensions and an audit context around it.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{AuthFailure, Authenticator, RateLimiter, client_cert, permissions};
use crate::audit::{self, AuditContext, Auditor};

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    limiter: Arc<RateLimiter>,
    auditor: Auditor,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, limiter: Arc<RateLimiter>, auditor: Auditor) -> Self {
        Self {
            auth,
            limiter,
            auditor,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
            limiter: Arc::clone(&self.limiter),
            auditor: self.auditor.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    limiter: Arc<RateLimiter>,
    auditor: Auditor,
}

impl<S> Service<http::Request<Body>> for AuthService<S>
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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The ready inner service serves this request; its clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        let limiter = Arc::clone(&self.limiter);
        let auditor = self.auditor.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if permissions::is_public(&path) {
                return inner.call(request).await;
            }
            let request_id: String = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(100).collect())
                .unwrap_or_default();
            let context = |actor: &str, role: &str| AuditContext {
                actor: actor.to_owned(),
                role: role.to_owned(),
                rpc: path.clone(),
                request_id: request_id.clone(),
            };
            let extensions = request.extensions();
            let certificate_gateway = || {
                extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(TlsConnectInfo::peer_certs)
                    .and_then(|chain| chain.first().and_then(|leaf| client_cert::gateway_id(leaf)))
            };
            let principal = match auth
                .authenticate(request.headers(), certificate_gateway)
                .await
            {
                Ok(principal) => principal,
                Err(AuthFailure::Unavailable) => {
                    return Ok(
                        Status::unavailable("credentials cannot be checked now; retry").into_http(),
                    );
                }
                Err(failure) => {
                    auditor.denied(context("anonymous", ""));
                    tracing::info!(rpc = %path, reason = %failure, "unauthenticated request");
                    return Ok(Status::unauthenticated(failure.to_string()).into_http());
                }
            };
            let audit = context(&principal.subject, principal.role.as_str());
            let allowed = permissions::allowed_roles(&path)
                .is_some_and(|roles| roles.contains(&principal.role));
            if !allowed {
                auditor.denied(audit);
                tracing::info!(rpc = %path, role = principal.role.as_str(), subject = %principal.subject, "permission denied");
                return Ok(Status::permission_denied(format!(
                    "role {} may not call {path}",
                    principal.role.as_str()
                ))
                .into_http());
            }
            if !limiter.allow(&principal) {
                auditor.denied(audit);
                tracing::info!(rpc = %path, subject = %principal.subject, "rate limited");
                return Ok(Status::resource_exhausted(
                    "rate limit exceeded for this credential; slow down",
                )
                .into_http());
            }
            request.extensions_mut().insert(principal);
            audit::scope(audit, inner.call(request)).await
        })
    }
}
