//! The tower layer in front of every gRPC service: authenticate, check the permission table and
//! the principal's rate limit, audit denials, and run the handler with the principal in the
//! request's extensions and an audit context around it.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
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
    admission: Arc<Semaphore>,
}

impl AuthLayer {
    /// `max_in_flight`: requests handled at once; more are shed with UNAVAILABLE.
    pub fn new(
        auth: Arc<Authenticator>,
        limiter: Arc<RateLimiter>,
        auditor: Auditor,
        max_in_flight: usize,
    ) -> Self {
        Self {
            auth,
            limiter,
            auditor,
            admission: Arc::new(Semaphore::new(max_in_flight.max(1))),
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
            admission: Arc::clone(&self.admission),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    limiter: Arc<RateLimiter>,
    auditor: Auditor,
    admission: Arc<Semaphore>,
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
        let admission = Arc::clone(&self.admission);
        Box::pin(async move {
            let received = std::time::Instant::now();
            let path = request.uri().path().to_owned();
            if permissions::is_public(&path) {
                return inner.call(request).await;
            }
            // Shed at once rather than queue: a queue only turns overload into timeouts for all.
            // The permit is held until the handler has answered (a stream's body runs on without).
            let Ok(_admitted) = admission.try_acquire_owned() else {
                tracing::debug!(rpc = %path, "overloaded: request shed");
                return Ok(Status::unavailable(
                    "this instance is at capacity; retry with back-off or on another instance",
                )
                .into_http());
            };
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
            let deadline = request
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout);
            let handled = audit::scope(audit, inner.call(request));
            let response = match deadline {
                None => handled.await,
                // Answer DEADLINE_EXCEEDED a little before the caller's own timer fires, so the
                // caller learns why; dropping the handler cancels its queries.
                Some(deadline) => {
                    let margin = (deadline / 10).min(Duration::from_millis(20));
                    match tokio::time::timeout(deadline - margin, handled).await {
                        Ok(response) => response,
                        Err(_) => {
                            tracing::info!(rpc = %path, ?deadline, "deadline exceeded");
                            Ok(Status::deadline_exceeded("the caller's deadline passed")
                                .into_http())
                        }
                    }
                }
            };
            // W3C Server-Timing: the time from receiving the request to the handler's answer, so
            // clients (and the benchmark) can tell server time from network and client time.
            response.map(|mut response| {
                let value = format!("app;dur={:.3}", received.elapsed().as_secs_f64() * 1000.0);
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    response.headers_mut().insert("server-timing", value);
                }
                response
            })
        })
    }
}

/// The `grpc-timeout` header: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_unit_and_reject_garbage() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
