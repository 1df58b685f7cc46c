//! A Redis connection that is an accelerator, never a dependency.
//!
//! Every command runs under a short timeout. After a failure the link stays *open* (skipped) for a
//! back-off period, so that while Redis is down, slow or blackholed only one request per period pays
//! the timeout and every other one goes straight to PostgreSQL. The underlying
//! `ConnectionManager` connects lazily and reconnects by itself, so caching resumes without a
//! restart when Redis comes back, and a Redis that is down at startup does not stop the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Redis settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Upper bound on one command; past it the request falls back to PostgreSQL.
    pub op_timeout: Duration,
    /// How long to skip Redis after a failure before trying again.
    pub retry_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisLinkError {
    #[error("redis is skipped after a recent failure")]
    Skipped,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis command failed")]
    Command(#[from] redis::RedisError),
}

#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    manager: Option<ConnectionManager>,
    key_prefix: String,
    op_timeout: Duration,
    retry_after: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is skipped; 0 when healthy.
    skip_until_ms: AtomicU64,
    failures: AtomicU64,
}

impl RedisLink {
    /// Builds the link without connecting. An unusable URL yields a link that is always skipped
    /// (logged once), so a misconfigured cache degrades speed, not availability.
    pub fn new(settings: &RedisSettings) -> Self {
        let manager = redis::Client::open(settings.url.as_str())
            .and_then(|client| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(
                        settings.op_timeout.max(Duration::from_millis(250)),
                    ))
                    .set_response_timeout(Some(settings.op_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client, config)
            })
            .inspect_err(
                |error| tracing::error!(%error, "invalid Redis URL; running without cache"),
            )
            .ok();
        Self {
            inner: Arc::new(Inner {
                manager,
                key_prefix: settings.key_prefix.clone(),
                op_timeout: settings.op_timeout,
                retry_after: settings.retry_after,
                epoch: Instant::now(),
                skip_until_ms: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// `prefix + name`: every key this service writes goes through here.
    pub fn key(&self, name: &str) -> String {
        let mut key = String::with_capacity(self.inner.key_prefix.len() + name.len());
        key.push_str(&self.inner.key_prefix);
        key.push_str(name);
        key
    }

    /// Whether a command would be attempted now (not in a back-off period).
    pub fn is_available(&self) -> bool {
        self.inner.manager.is_some()
            && self.now_ms() >= self.inner.skip_until_ms.load(Ordering::Relaxed)
    }

    /// Failures seen since start.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Opens the connection before the first command needs it: the connect and handshake would
    /// otherwise count against that command's short timeout, and the first pops after a deploy
    /// would fall back to PostgreSQL and distrust the cache for a relay pass. Best effort, within
    /// `patience`: a Redis that does not answer is logged, and commands keep trying on their own.
    pub async fn warm(&self, patience: Duration) {
        let Some(manager) = self.inner.manager.clone() else {
            return;
        };
        let ping = async move {
            let mut last = None;
            for _ in 0..3 {
                let mut manager = manager.clone();
                match redis::cmd("PING").query_async::<String>(&mut manager).await {
                    Ok(_) => return Ok(()),
                    Err(error) => last = Some(error),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(patience, ping).await {
            Ok(Ok(())) => tracing::debug!("redis connection open"),
            _ => tracing::info!(
                "redis did not answer at start; serving from PostgreSQL until it does"
            ),
        }
    }

    /// Runs one command or pipeline under the timeout; on failure, starts a back-off period.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, RedisLinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(manager) = self.inner.manager.clone().filter(|_| self.is_available()) else {
            return Err(RedisLinkError::Skipped);
        };
        // A trace span per command (debug: off unless traces are exported). No key, no value.
        let span = tracing::debug_span!(
            "redis",
            otel.kind = "client",
            db.system = "redis",
            error = tracing::field::Empty
        );
        let timed = tokio::time::timeout(self.inner.op_timeout, command(manager));
        let result = match tracing::Instrument::instrument(timed, span.clone()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => RedisLinkError::Command(error),
            Err(_) => RedisLinkError::Timeout(self.inner.op_timeout),
        };
        span.record("error", true);
        let failures = self.inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.now_ms();
        let until = now + self.inner.retry_after.as_millis() as u64;
        let previous = self.inner.skip_until_ms.swap(until, Ordering::Relaxed);
        // Once per back-off period, not once per failed command: under load, hundreds of commands
        // in flight fail together, and a log line each would add to the overload.
        if previous <= now {
            tracing::warn!(error = %crate::grpc_status::ErrorChain(&result), failures, "redis unavailable; serving from PostgreSQL");
        }
        Err(result)
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }
}
