//! Admission, in front of everything but health: load shedding, the caller's deadline, and the
//! server's own time on every answer.
//!
//! - **Shedding.** At most `max_in_flight` requests are handled at once, fewer while the instance
//!   is congested (its tasks run late, or every request waits; see [`limit`]); beyond that a request is
//!   refused at once with UNAVAILABLE rather than queued (a queue only turns overload into
//!   timeouts for everyone). A place is held until the handler has answered; a stream's body
//!   runs on without one.
//! - **Deadline.** With a `grpc-timeout`, the answer is DEADLINE_EXCEEDED a little before the
//!   caller's own timer fires (10% earlier, at most 20 ms), so the caller learns why; dropping the
//!   handler cancels its queries. (tonic's own timeout answers CANCELLED.)
//! - **Whole messages first.** A unary call's message is read before it takes a place, so places
//!   go to work, not to waiting on clients (see [`message`]).
//! - **Server-Timing.** Every answer carries `server-timing: app;dur=<ms>, recv;dur=<ms>`: the
//!   time from having the request's message to the answer, and the wait for that message after
//!   its headers, so clients (and the benchmark) can tell server time from network and client
//!   time.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::auth::permissions;

pub mod limit;
mod message;

pub use limit::{AdaptiveLimit, Targets};

#[derive(Clone)]
pub struct AdmissionLayer {
    permits: Arc<AdaptiveLimit>,
    max_message_bytes: usize,
}

impl AdmissionLayer {
    /// `max_message_bytes`: the largest request message a unary call may send.
    pub fn new(permits: Arc<AdaptiveLimit>, max_message_bytes: usize) -> Self {
        Self {
            permits,
            max_message_bytes,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            permits: Arc::clone(&self.permits),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

#[derive(Clone)]
pub struct AdmissionService<S> {
    inner: S,
    permits: Arc<AdaptiveLimit>,
    max_message_bytes: usize,
}

impl<S> Service<http::Request<Body>> for AdmissionService<S>
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
        // The ready inner service serves this request; its clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let permits = Arc::clone(&self.permits);
        let max_message_bytes = self.max_message_bytes;
        Box::pin(async move {
            let received = Instant::now();
            let path = request.uri().path().to_owned();
            if permissions::is_public(&path) {
                return inner.call(request).await;
            }
            let deadline = request
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout);
            let admitted = async {
                let request = if message::sends_one_message(&path) {
                    let (parts, body) = request.into_parts();
                    match message::read_ahead(body, max_message_bytes).await {
                        Ok(body) => http::Request::from_parts(parts, body),
                        Err(status) => return Ok(status.into_http()),
                    }
                } else {
                    request
                };
                let read = Instant::now();
                let Some(_place) = permits.try_admit() else {
                    tracing::debug!(rpc = %path, "overloaded: request shed");
                    return Ok(Status::unavailable(
                        "this instance is at capacity; retry with back-off or on another instance",
                    )
                    .into_http());
                };
                let response = inner.call(request).await;
                response.map(|response| with_timing(response, read.elapsed(), read - received))
            };
            match deadline {
                None => admitted.await,
                Some(deadline) => {
                    let margin = (deadline / 10).min(Duration::from_millis(20));
                    match tokio::time::timeout(deadline - margin, admitted).await {
                        Ok(response) => response,
                        Err(_) => {
                            tracing::info!(rpc = %path, ?deadline, "deadline exceeded");
                            Ok(Status::deadline_exceeded("the caller's deadline passed")
                                .into_http())
                        }
                    }
                }
            }
        })
    }
}

/// `server-timing: app;dur=<ms>, recv;dur=<ms>`: the time from having the request's message to
/// the answer, and the time spent waiting for that message after its headers.
fn with_timing(
    mut response: http::Response<Body>,
    app: Duration,
    recv: Duration,
) -> http::Response<Body> {
    let value = format!(
        "app;dur={:.3}, recv;dur={:.3}",
        app.as_secs_f64() * 1000.0,
        recv.as_secs_f64() * 1000.0
    );
    if let Ok(value) = http::HeaderValue::from_str(&value) {
        response.headers_mut().insert("server-timing", value);
    }
    response
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
