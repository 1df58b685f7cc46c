//! A Redis connection that is an accelerator, never a dependency.
//!
//! Every command runs under a short timeout. After a failure the link stays *open* (skipped) for a
//! back-off period, so that while Redis is down, slow or blackholed only one request per period pays
//! the timeout and every other one goes straight to PostgreSQL. A failure opens the link only if
//! Redis has answered nothing since the failed command was sent: when other commands sent after
//! it have come back, Redis is up and that one was slow (queued behind a machine short of CPU, or
//! its own work). Skipping Redis then would send every pop to PostgreSQL for the back-off period,
//! just when the machine has no CPU to spare (#25: under the mixed load, such timeouts had sent
//! thousands of pops a run to PostgreSQL). The underlying
//! `ConnectionManager` connects lazily and reconnects by itself, so caching resumes without a
//! restart when Redis comes back, and a Redis that is down at startup does not stop the service.
//!
//! The same holds for a Redis Cluster (`--redis-cluster-nodes`): the cluster connection keeps one
//! connection per node, follows `MOVED` and `ASK` redirections, and re-reads the slot map after a
//! fail-over. The callers send only commands, scripts, MULTI blocks and pipelines whose keys
//! share one hash tag (one slot), so the same code runs on a single server and on a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Which Redis: one server, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Server(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Replicas an invalidation waits for unless configured: one on a cluster (whose shards
    /// fail over to replicas), none on one server.
    pub fn default_wait_replicas(&self) -> u32 {
        match self {
            Self::Cluster(_) => 1,
            Self::Server(_) => 0,
        }
    }
}

/// Redis settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub target: RedisTarget,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Upper bound on one command; past it the request falls back to PostgreSQL.
    pub op_timeout: Duration,
    /// How long to skip Redis after a failure before trying again.
    pub retry_after: Duration,
    /// Replicas that must hold an invalidation before the write is acknowledged (`WAIT`), so a
    /// fail-over cannot promote a replica that still has the old card. 0: no wait.
    pub wait_replicas: u32,
}

/// A connection to either kind of Redis: what every command of this service runs on.
#[derive(Clone)]
pub enum RedisConn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
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
    manager: Option<RedisConn>,
    key_prefix: String,
    wait_replicas: u32,
    op_timeout: Duration,
    retry_after: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is skipped; 0 when healthy.
    skip_until_ms: AtomicU64,
    /// Milliseconds since `epoch` when a command last succeeded; 0: none yet.
    last_success_ms: AtomicU64,
    failures: AtomicU64,
}

impl RedisLink {
    /// Builds the link without connecting. An unusable URL yields a link that is always skipped
    /// (logged once), so a misconfigured cache degrades speed, not availability.
    pub fn new(settings: &RedisSettings) -> Self {
        let connect_timeout = settings.op_timeout.max(Duration::from_millis(250));
        let manager = match &settings.target {
            RedisTarget::Server(url) => redis::Client::open(url.as_str()).and_then(|client| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(settings.op_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(client, config).map(RedisConn::Server)
            }),
            RedisTarget::Cluster(nodes) => cluster_client(nodes, connect_timeout)
                .and_then(|builder| builder.response_timeout(settings.op_timeout).build())
                .map(|client| {
                    RedisConn::Cluster(client.get_pending_async_connection_with_config(
                        redis::cluster::ClusterConfig::default(),
                    ))
                }),
        }
        .inspect_err(|error| tracing::error!(%error, "invalid Redis URL; running without cache"))
        .ok();
        Self {
            inner: Arc::new(Inner {
                manager,
                key_prefix: settings.key_prefix.clone(),
                wait_replicas: settings.wait_replicas,
                op_timeout: settings.op_timeout,
                retry_after: settings.retry_after,
                epoch: Instant::now(),
                skip_until_ms: AtomicU64::new(0),
                last_success_ms: AtomicU64::new(0),
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

    /// The bound on one command.
    pub fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// Whether this is a Redis Cluster (sharded pub/sub: `SPUBLISH`, `SSUBSCRIBE`).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.manager, Some(RedisConn::Cluster(_)))
    }

    /// Replicas an invalidation must reach before it counts as done (`WAIT`); 0: none.
    pub fn wait_replicas(&self) -> u32 {
        self.inner.wait_replicas
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

    /// Runs one command or pipeline under the timeout; on a failure while Redis answers nothing
    /// else, starts a back-off period.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, RedisLinkError>
    where
        F: FnOnce(RedisConn) -> Fut,
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
        let sent = self.now_ms();
        let timed = tokio::time::timeout(self.inner.op_timeout, command(manager));
        let result = match tracing::Instrument::instrument(timed, span.clone()).await {
            Ok(Ok(value)) => {
                self.inner
                    .last_success_ms
                    .fetch_max(self.now_ms(), Ordering::Relaxed);
                return Ok(value);
            }
            Ok(Err(error)) => RedisLinkError::Command(error),
            Err(_) => RedisLinkError::Timeout(self.inner.op_timeout),
        };
        span.record("error", true);
        let failures = self.inner.failures.fetch_add(1, Ordering::Relaxed) + 1;
        // Another command came back after this one was sent: Redis is up, this one was slow.
        if self.inner.last_success_ms.load(Ordering::Relaxed) > sent {
            return Err(result);
        }
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

    /// Sends `commands` together, their replies ignored: on one server as one pipeline (one round
    /// trip); on a cluster each at once to the shard of its key, since a pipeline must stay in
    /// one slot.
    pub async fn send_all(&self, commands: Vec<redis::Cmd>) -> Result<(), RedisLinkError> {
        if commands.is_empty() {
            return Ok(());
        }
        let cluster = self.is_cluster();
        self.run(|mut conn| async move {
            if cluster {
                let sends = commands.into_iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<()>(&mut conn).await }
                });
                futures::future::try_join_all(sends).await.map(|_| ())
            } else {
                let mut pipe = redis::pipe();
                for cmd in commands {
                    pipe.add_command(cmd).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            }
        })
        .await
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }
}

/// A cluster client's builder for these seed nodes: every node's URL must parse, and a node
/// that is down at start is fine as long as one answers when the first command runs. Redirects
/// and slot-map refreshes are retried by the client within the command's timeout.
pub fn cluster_client(
    nodes: &[String],
    connect_timeout: Duration,
) -> redis::RedisResult<redis::cluster::ClusterClientBuilder> {
    for node in nodes {
        redis::IntoConnectionInfo::into_connection_info(node.as_str())?;
    }
    Ok(redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(connect_timeout)
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(200))
}
