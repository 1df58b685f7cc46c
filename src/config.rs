//! Command line and environment settings (clap derive; every flag also reads an env var).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::{AuthSettings, JwtKeys, RateLimit};
use crate::cases::SlaPolicy;
use crate::db::PoolSettings;
use crate::phone::PhoneParser;
use crate::redis_link::{RedisSettings, RedisTarget};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Call-center integration service: customer record and screen pops over gRPC"
)]
pub struct Cli {
    /// Log output: human-readable lines or one JSON object per line.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector (e.g. http://otel-collector:4317); unset:
    /// no traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces sampled (0 to 1). A request that arrives with a sampled W3C
    /// `traceparent` is always traced, one that arrives unsampled never is.
    #[arg(
        long,
        env = "SWITCHBOARD_TRACE_SAMPLE_RATIO",
        default_value_t = 0.1,
        global = true
    )]
    pub trace_sample_ratio: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Fill the database with synthetic customers (deterministic for a given --seed).
    Seed(SeedArgs),
    /// Client: look up the screen pop for a caller number on a running server.
    Pop(PopArgs),
    /// Client: score every customer (RFM) and store their segments, on a running server.
    Segment(SegmentArgs),
    /// Client: call KPIs for a period, on a running server.
    Kpis(KpisArgs),
    /// Client: the live queue board (calls waiting, longest wait, agents by state), once.
    Queues(QueuesArgs),
    /// Client: the roll-out scorecard (adoption, efficiency against the baseline with a verdict,
    /// the feedback loop, team coordination) on a running server (docs/SCORECARD.md).
    Scorecard(ScorecardArgs),
    /// Client: demo traffic through the public API (calls offered, queued, rung at available
    /// agents, answered, held, transferred, abandoned, ended; simulated agents wrap up).
    Simulate(SimulateArgs),
    /// Client: create or show customers on a running server.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Client: compare the old system's call records (CDRs) with Switchboard's calls, day by day,
    /// during a parallel run (docs/RECONCILE.md).
    Reconcile(ReconcileArgs),
    /// Client: bring legacy data in from files (a customer CSV streamed to ImportService).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Manage API keys for gateways and services.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Data retention.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Database upkeep.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Build every stored screen-pop card that is missing or stale (`customer_cards`), then exit.
    /// Serving instances do this in the background; run it after a bulk load or an upgrade so
    /// that the first pops do not build the cards themselves. Safe beside the servers.
    BuildCards(DatabaseArgs),
    /// Make the months ahead of the partitioned history tables (`audit_events`, `feed_events`,
    /// `call_events`, `calls`), and drop the months that retention no longer keeps (the feed
    /// drops its own). Serving instances make the months ahead themselves;
    /// retention runs only here: run it daily (a CronJob). Safe beside the servers and to re-run.
    Partitions(PartitionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PartitionsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Months the audit trail is kept; its older months are dropped whole (rows stay at least this
    /// long, and less than a month longer). Unset: kept for ever.
    #[arg(long, env = "SWITCHBOARD_AUDIT_RETENTION_MONTHS")]
    pub audit_retention_months: Option<u32>,
    /// Months the gateways' call events are kept; older months are dropped whole. The calls'
    /// records stay (KPIs read them), but a call whose events are gone takes no more events
    /// (they are REJECTED). Unset: kept for ever.
    #[arg(long, env = "SWITCHBOARD_CALL_EVENT_RETENTION_MONTHS")]
    pub call_event_retention_months: Option<u32>,
    /// Months the calls' records are kept; older months are dropped whole. KPIs over whole days
    /// already rolled up keep their figures (the rollups stay); anything else about those calls
    /// (live scans, the scorecard, reconciliation, exports) no longer sees them. Unset: kept for
    /// ever.
    #[arg(long, env = "SWITCHBOARD_CALL_RETENTION_MONTHS")]
    pub call_retention_months: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Blank interaction notes and outcomes, case comments and call events' attached data older
    /// than the retention period. Safe to interrupt and re-run; run it daily (a CronJob).
    Run(RetentionArgs),
    /// Mask card numbers and security codes in rows stored before masking covered their field
    /// (case subjects, agent-state reasons, names, labels, call events' attached data) or their
    /// form (numbers separated by dots or slashes). Run once after upgrading; safe to interrupt
    /// and re-run, and beside the servers.
    Remask(RemaskArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RemaskArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Days free text is kept.
    #[arg(long, env = "SWITCHBOARD_RETENTION_DAYS", default_value_t = 365)]
    pub keep_days: u32,
    /// The servers' Redis, so purged text leaves cached pops at once. Without it, cached pops may
    /// show a purged outcome until they expire (the pop TTL).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// The servers' Redis Cluster instead: some of its nodes' URLs, comma-separated.
    #[arg(long, env = "SWITCHBOARD_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,
    /// The servers' Redis key prefix.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "sb:", value_parser = redis_prefix)]
    pub redis_prefix: String,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        #[command(flatten)]
        database: DatabaseArgs,
        /// agent, supervisor, gateway, service, admin, or lookup (caller-ID lookups only:
        /// CallerIdService and GET /v1/cid, /v1/pop).
        #[arg(long)]
        role: String,
        /// Required for gateways: the gateway id the key may report events for.
        #[arg(long)]
        gateway_id: Option<String>,
        /// Who the key belongs to (defaults to the gateway id or the role).
        #[arg(long)]
        subject: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Development mode: a random signing secret, and an ADMIN token printed at start. Never in production.
    #[arg(long, env = "SWITCHBOARD_DEV")]
    pub dev: bool,
    /// With --dev: also write the dev token to this file (the client subcommands read .data/dev-token).
    #[arg(long, env = "SWITCHBOARD_DEV_TOKEN_FILE")]
    pub dev_token_file: Option<std::path::PathBuf>,
    /// JWT algorithm accepted, and only this one: HS256, RS256 or ES256.
    #[arg(long, env = "SWITCHBOARD_JWT_ALGORITHM", default_value = "HS256")]
    pub jwt_algorithm: String,
    /// HS256 shared secret (prefer the file form or a Kubernetes Secret in the environment).
    #[arg(long, env = "SWITCHBOARD_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// File holding the HS256 shared secret.
    #[arg(long, env = "SWITCHBOARD_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<std::path::PathBuf>,
    /// JWKS file with the RS256/ES256 public keys.
    #[arg(long, env = "SWITCHBOARD_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<std::path::PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER", default_value = "switchboard")]
    pub jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE", default_value = "switchboard")]
    pub jwt_audience: String,
}

impl AuthArgs {
    /// The authentication configuration; an error when there is none outside dev mode.
    pub fn settings(&self) -> anyhow::Result<AuthSettings> {
        use anyhow::{Context as _, bail};
        use jsonwebtoken::Algorithm;
        if self.dev {
            return Ok(AuthSettings::random_hs256(
                &self.jwt_issuer,
                &self.jwt_audience,
            ));
        }
        let algorithm = match self.jwt_algorithm.to_ascii_uppercase().as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => bail!("unsupported --jwt-algorithm {other}: HS256, RS256 or ES256"),
        };
        let keys = match (
            algorithm,
            &self.jwt_hs256_secret,
            &self.jwt_hs256_secret_file,
            &self.jwt_jwks_file,
        ) {
            (Algorithm::HS256, Some(secret), None, None) => {
                JwtKeys::Secret(secret.trim().as_bytes().to_vec())
            }
            (Algorithm::HS256, None, Some(file), None) => JwtKeys::Secret(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .trim()
                    .as_bytes()
                    .to_vec(),
            ),
            (Algorithm::RS256 | Algorithm::ES256, None, None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                JwtKeys::Jwks(
                    serde_json::from_str(&text).context("the JWKS file is not a JWK set")?,
                )
            }
            (_, None, None, None) => bail!(
                "no authentication configured: set --jwt-hs256-secret(-file) or --jwt-jwks-file, or run with --dev for development"
            ),
            _ => bail!("HS256 takes one shared secret; RS256/ES256 take --jwt-jwks-file"),
        };
        if let JwtKeys::Secret(secret) = &keys
            && secret.len() < 32
        {
            bail!("the HS256 secret must be at least 32 bytes");
        }
        Ok(AuthSettings {
            algorithm,
            keys,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics port (`GET /metrics`); empty: no metrics port.
    #[arg(
        long,
        env = "SWITCHBOARD_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Redis URL for the screen-pop cache. Without it the service runs uncached.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// A Redis Cluster instead: some of its nodes' URLs, comma-separated (the rest are found
    /// from them). When set, `--redis-url` is not used.
    #[arg(long, env = "SWITCHBOARD_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,
    /// Replicas that must have a pop invalidation before the write is acknowledged (Redis
    /// `WAIT`), so a fail-over never promotes a replica that still holds the old card. Default:
    /// 1 on a cluster, 0 on one server. While fewer answer, pops are served from PostgreSQL.
    #[arg(long, env = "SWITCHBOARD_REDIS_WAIT_REPLICAS")]
    pub redis_wait_replicas: Option<u32>,
    /// Prefix for every Redis key this deployment writes.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "sb:", value_parser = redis_prefix)]
    pub redis_prefix: String,
    /// Upper bound on one Redis command before falling back to PostgreSQL (milliseconds).
    #[arg(long, env = "SWITCHBOARD_REDIS_TIMEOUT_MS", default_value_t = 50)]
    pub redis_timeout_ms: u64,
    /// Region for phone numbers written without a country code (ISO 3166 code).
    #[arg(long, env = "SWITCHBOARD_DEFAULT_REGION", default_value = "US", value_parser = parse_region)]
    pub default_region: PhoneParser,
    /// Do not apply migrations at startup.
    #[arg(long, env = "SWITCHBOARD_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Maximum PostgreSQL connections in the pool.
    #[arg(long, env = "SWITCHBOARD_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a database connection before UNAVAILABLE (milliseconds).
    #[arg(
        long,
        env = "SWITCHBOARD_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub db_acquire_timeout_ms: u64,
    /// A PostgreSQL streaming replica for reads that may lag (customer search, audit lists) and
    /// KPIs once it has replayed what they must see; repeat the flag, or separate with commas.
    /// Writes, screen pops and the feed stay on the primary. See docs/SCALING.md.
    #[arg(
        long = "database-replica-url",
        env = "SWITCHBOARD_DATABASE_REPLICA_URLS",
        value_delimiter = ','
    )]
    pub database_replica_urls: Vec<String>,
    /// A replica further behind the primary than this takes no reads (milliseconds).
    #[arg(
        long,
        env = "SWITCHBOARD_DATABASE_REPLICA_MAX_LAG_MS",
        default_value_t = 1000
    )]
    pub database_replica_max_lag_ms: u64,
    /// How long a replica may take to answer, or to catch up for a KPI read, before the read
    /// goes to the primary (milliseconds).
    #[arg(
        long,
        env = "SWITCHBOARD_DATABASE_REPLICA_TIMEOUT_MS",
        default_value_t = 200
    )]
    pub database_replica_timeout_ms: u64,
    /// How long a cached card lives in Redis without being invalidated (seconds).
    #[arg(long, env = "SWITCHBOARD_POP_TTL_SECS", default_value_t = 600)]
    pub pop_ttl_secs: u64,
    /// How long an unknown number stays cached as unknown (seconds).
    #[arg(long, env = "SWITCHBOARD_NEGATIVE_TTL_SECS", default_value_t = 30)]
    pub negative_ttl_secs: u64,
    /// How long a pop stays pinned to a call id (seconds).
    #[arg(long, env = "SWITCHBOARD_PIN_TTL_SECS", default_value_t = 4 * 3600)]
    pub pin_ttl_secs: u64,
    /// Time to resolve a case per priority, e.g. "urgent=4h,high=8h,normal=24h,low=72h" (m, h, d).
    #[arg(long, env = "SWITCHBOARD_CASE_SLA", default_value = "urgent=4h,high=8h,normal=24h,low=72h", value_parser = SlaPolicy::parse)]
    pub case_sla: SlaPolicy,
    /// A CSAT score (1-5) at or below this is negative feedback and opens a case.
    #[arg(long, env = "SWITCHBOARD_FEEDBACK_NEGATIVE_CSAT", default_value_t = 2)]
    pub feedback_negative_csat: i32,
    /// An NPS score (0-10) at or below this is negative feedback and opens a case.
    #[arg(long, env = "SWITCHBOARD_FEEDBACK_NEGATIVE_NPS", default_value_t = 6)]
    pub feedback_negative_nps: i32,
    /// How long the event feed keeps events (seconds; default 7 days). A subscriber whose cursor
    /// is older gets OUT_OF_RANGE.
    #[arg(long, env = "SWITCHBOARD_FEED_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub feed_retention_secs: u64,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    /// How often the live queue state in Redis is rebuilt from PostgreSQL, by one instance at a
    /// time (milliseconds), as a safety net: a failed write or a Redis that lost the copy
    /// already brings a rebuild within half a second.
    #[arg(long, env = "SWITCHBOARD_LIVE_REBUILD_MS", default_value_t = 60_000)]
    pub live_rebuild_ms: u64,
    /// A call not ended with no event for this long (seconds, by the events' own times) is
    /// stale on the live board: counted apart, never as waiting or in service.
    #[arg(long, env = "SWITCHBOARD_LIVE_STALE_AFTER_SECS", default_value_t = 4 * 3600)]
    pub live_stale_after_secs: u64,
    /// A call that ends within this many seconds of its offer is a misdial: no contact for
    /// repeat contacts or first-contact resolution (0 to 60; 0: none). One value for every
    /// instance: the database keeps it, and the last instance started sets it.
    #[arg(long, env = "SWITCHBOARD_MISDIAL_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=60))]
    pub misdial_seconds: i32,
    /// The IANA time zone the daily KPI rollups cut days in: KPIs by day or month in this zone,
    /// and KPIs over whole days of it, read them. One value for every instance: the database
    /// keeps it, and an instance started with another rolls every day up again.
    #[arg(long, env = "SWITCHBOARD_KPI_TIME_ZONE", default_value = "UTC", value_parser = kpi_time_zone)]
    pub kpi_time_zone: String,
    /// How long in-flight calls may take to finish after SIGTERM before the server exits (seconds).
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,
    /// Audit entries (reads and denials) that may wait for PostgreSQL, about 330 bytes each. While
    /// PostgreSQL is down, cached pops are still served and audited; beyond this many waiting,
    /// new entries are dropped, counted and logged rather than growing memory without end.
    #[arg(long, env = "SWITCHBOARD_AUDIT_MAX_PENDING", default_value_t = 200_000)]
    pub audit_max_pending: usize,
    /// Sustained requests per second per credential before RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "SWITCHBOARD_RATE_LIMIT_PER_SECOND",
        default_value_t = 200.0
    )]
    pub rate_limit_per_second: f64,
    /// Requests a credential may send at once after a quiet period.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_BURST", default_value_t = 400.0)]
    pub rate_limit_burst: f64,
    /// Largest request message accepted (bytes).
    #[arg(long, env = "SWITCHBOARD_MAX_REQUEST_BYTES", default_value_t = 1 << 20)]
    pub max_request_bytes: usize,
    /// HTTP/2 streams one connection may have open at once.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_CONCURRENT_STREAMS",
        default_value_t = 256
    )]
    pub max_concurrent_streams: u32,
    /// Browser origins allowed to call over gRPC-web (repeat the flag, or comma-separate in the
    /// environment), e.g. `https://desk.example.com`. Empty (the default): no CORS headers for
    /// anyone, so browsers on other origins cannot call; non-browser gRPC-web clients still can.
    #[arg(long, env = "SWITCHBOARD_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origin: Vec<String>,
    /// Serve the web app (agent desktop and supervisor wallboard) at `/` on the same port;
    /// `--web-ui=false` turns it off. It uses the public API over gRPC-web, like any client.
    #[arg(long, env = "SWITCHBOARD_WEB_UI", default_value_t = true, action = clap::ArgAction::Set)]
    pub web_ui: bool,
    /// Requests being handled at once by this instance; beyond it, new ones are shed at once with
    /// UNAVAILABLE (retry with back-off, or on another instance) instead of queueing. High enough
    /// to ride out a stall of a few ms at full rate; under sustained overload the limit shrinks
    /// below it (--shed-lag-ms, --shed-queue-ms). Open streams hold no place.
    #[arg(long, env = "SWITCHBOARD_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Runtime lag (milliseconds) above which the in-flight limit shrinks: how late a task that
    /// asked to be woken actually runs, i.e. how long every admitted request waits for a CPU.
    /// While the lag is above it the limit drops by a quarter every 10 ms (to 4 at least), and
    /// grows back when it is not. Keep it well under the Redis timeout. 0 keeps the limit fixed
    /// at --max-in-flight.
    #[arg(long, env = "SWITCHBOARD_SHED_LAG_MS", default_value_t = 20)]
    pub shed_lag_ms: u64,
    /// Standing queue (milliseconds): when, over 100 ms with at least 8 requests finished, even
    /// the fastest admitted request took longer than this, everything is waiting, and the
    /// in-flight limit drops by a quarter (to 4 at least); it grows back when not. 0: off.
    #[arg(long, env = "SWITCHBOARD_SHED_QUEUE_MS", default_value_t = 10)]
    pub shed_queue_ms: u64,
    /// Deadline for calls that bring none (milliseconds); streams are not cut by it.
    #[arg(
        long,
        env = "SWITCHBOARD_DEFAULT_DEADLINE_MS",
        default_value_t = 30_000
    )]
    pub default_deadline_ms: u64,
    /// TLS certificate chain (PEM). With --tls-key, the server speaks only TLS.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// CA (PEM) that client certificates must chain to: mutual TLS, every client must present one.
    #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Server TLS material, read at start.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_pem: String,
    pub key_pem: String,
    /// Mutual TLS: client certificates must chain to this CA.
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Abuse limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rate: RateLimit,
    pub max_request_bytes: usize,
    pub max_concurrent_streams: u32,
    pub max_in_flight: usize,
    /// Runtime lag above which the in-flight limit shrinks; zero: never.
    pub shed_lag: Duration,
    /// The fastest request's time (over a window) above which it shrinks; zero: never.
    pub shed_queue: Duration,
    pub default_deadline: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// How many synthetic customers to add.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Random seed: the same seed gives the same customers.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Region used to parse national-format numbers.
    #[arg(long, env = "SWITCHBOARD_DEFAULT_REGION", default_value = "US", value_parser = parse_region)]
    pub default_region: PhoneParser,
    /// Also add the named demo customers used in the README (skipped if present).
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server to talk to.
    #[arg(
        long,
        env = "SWITCHBOARD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Bearer token; defaults to the dev token in .data/dev-token when that file exists.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PopArgs {
    /// The caller number, in any common format.
    pub caller_number: String,
    /// The dialed number (DNIS).
    #[arg(long)]
    pub dialed: Option<String>,
    /// Pin the pop to this call id.
    #[arg(long)]
    pub call_id: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SegmentArgs {
    /// The window's length in days.
    #[arg(long, default_value_t = 365)]
    pub window_days: i32,
    /// The currency whose spend counts.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// An IANA time zone name.
fn kpi_time_zone(value: &str) -> Result<String, String> {
    match value.parse::<chrono_tz::Tz>() {
        Ok(_) => Ok(value.to_owned()),
        Err(_) => Err("must be an IANA time zone, such as UTC or America/New_York".into()),
    }
}

/// A Redis key prefix: no braces, which would change the hash tag that keeps each number's keys
/// on one Redis Cluster slot.
fn redis_prefix(value: &str) -> Result<String, String> {
    match value.contains(['{', '}']) {
        true => Err("must not contain { or } (Redis Cluster hash tags)".into()),
        false => Ok(value.to_owned()),
    }
}

/// The Redis to use: the cluster's nodes when any are given, else the URL; none when neither is set.
pub fn redis_target(url: Option<String>, cluster_nodes: Vec<String>) -> Option<RedisTarget> {
    let nodes: Vec<String> = cluster_nodes
        .into_iter()
        .map(|node| node.trim().to_owned())
        .filter(|node| !node.is_empty())
        .collect();
    match (nodes.is_empty(), url.filter(|url| !url.is_empty())) {
        (false, _) => Some(RedisTarget::Cluster(nodes)),
        (true, Some(url)) => Some(RedisTarget::Server(url)),
        (true, None) => None,
    }
}

#[derive(Debug, Clone, Args)]
pub struct KpisArgs {
    /// Start of the period (RFC 3339), inclusive.
    #[arg(long)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the period (RFC 3339), exclusive.
    #[arg(long)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// team, queue, agent, campaign, day, hour or month (default: totals only).
    #[arg(long)]
    pub group_by: Option<String>,
    /// IANA time zone for days and hours.
    #[arg(long, default_value = "")]
    pub time_zone: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ScorecardArgs {
    /// The period after the launch, `FROM..TO` (RFC 3339 times or dates; TO is exclusive).
    #[arg(long)]
    pub period: String,
    /// The period before the launch to compare with, `FROM..TO`.
    #[arg(long)]
    pub baseline: String,
    /// team (default) or queue.
    #[arg(long, default_value = "team")]
    pub group_by: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// New calls a minute (on average; arrivals are random).
    #[arg(long, default_value_t = 8.0)]
    pub calls_per_minute: f64,
    /// Stop after this many calls (0: run until stopped).
    #[arg(long, default_value_t = 0)]
    pub calls: u64,
    /// The gateway id the calls are reported as.
    #[arg(long, default_value = "demo-pbx")]
    pub gateway_id: String,
    /// The agent a person drives from the web desktop: rung while AVAILABLE, never wrapped up
    /// by the simulator.
    #[arg(long, default_value = "demo-agent")]
    pub human_agent: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct QueuesArgs {
    /// Only these queues (repeatable); default: every queue with a call or an agent.
    #[arg(long = "queue")]
    pub queues: Vec<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// The CDR file.
    pub file: std::path::PathBuf,
    /// asterisk (Master.csv), freeswitch (mod_cdr_csv's example template), kamailio (the acc
    /// table exported as CSV with a header) or csv (any CSV with a header, with --mapping).
    #[arg(long)]
    pub format: String,
    /// The gateway whose calls the records are compared with.
    #[arg(long)]
    pub gateway_id: String,
    /// For csv: which column holds what (`field = Column`; see docs/RECONCILE.md).
    #[arg(long)]
    pub mapping: Option<std::path::PathBuf>,
    /// The switch's IANA time zone: times without a zone are read in it, and days are cut in it.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
    /// Seconds a record's start and a call's offer may differ to match by numbers (0: 5).
    #[arg(long, default_value_t = 5)]
    pub time_tolerance: i32,
    /// Seconds the talk times may differ before it is a mismatch (0: 2).
    #[arg(long, default_value_t = 2)]
    pub duration_tolerance: i32,
    /// Where to write the discrepancies and rejected rows. Default: FILE.reconcile.csv.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Stream a legacy customer CSV to ImportService with a progress bar, and write the per-row
    /// report (CREATED, UPDATED, MERGED_INTO, SKIPPED_DUPLICATE, REJECTED with the field) as CSV.
    Customers(ImportCustomersArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImportCustomersArgs {
    /// The CSV file, with a header row.
    pub file: std::path::PathBuf,
    /// Report what the import would do, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Which column holds which field (`field = Column, Column`; see docs/IMPORT.md). Without
    /// it, columns named like the fields are used.
    #[arg(long)]
    pub mapping: Option<std::path::PathBuf>,
    /// Where to write the per-row report: a path, or `-` for stdout. Default: FILE.report.csv.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Rows per request message (1 to 1000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create a customer.
    Create(CreateCustomerArgs),
    /// Show a customer by id.
    Get {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct CreateCustomerArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "")]
    pub company: String,
    /// Phone numbers (repeatable); the first is primary.
    #[arg(long = "phone")]
    pub phones: Vec<String>,
    /// Email addresses (repeatable); the first is primary.
    #[arg(long = "email")]
    pub emails: Vec<String>,
    /// standard, silver, gold or platinum.
    #[arg(long, default_value = "standard")]
    pub tier: String,
    #[arg(long)]
    pub vip: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn parse_region(code: &str) -> Result<PhoneParser, String> {
    PhoneParser::for_region(code)
}

/// Everything `Application::build` needs, independent of how it was parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The Prometheus metrics port; `None`: none.
    pub metrics_listen: Option<SocketAddr>,
    pub database_url: String,
    pub pool: PoolSettings,
    /// Read replicas (none: every read on the primary).
    pub replicas: crate::read_replicas::ReplicaSettings,
    pub redis: Option<RedisSettings>,
    pub phones: PhoneParser,
    pub migrate: bool,
    pub pop_ttl: Duration,
    pub negative_ttl: Duration,
    pub pin_ttl: Duration,
    pub drain_timeout: Duration,
    /// Audit entries that may wait for PostgreSQL before new ones are dropped.
    pub audit_max_pending: usize,
    pub feed_retention: Duration,
    /// Webhook and NATS delivery.
    pub webhooks: std::sync::Arc<crate::webhooks::DeliverySettings>,
    pub live: crate::live::LiveSettings,
    /// Calls ending within this many seconds of the offer are misdials (docs/KPIS.md).
    pub misdial_seconds: i32,
    /// `--kpi-time-zone`.
    pub kpi_time_zone: String,
    pub case_sla: SlaPolicy,
    pub feedback: crate::feedback::Thresholds,
    pub auth: AuthSettings,
    pub limits: Limits,
    /// Plaintext when `None`.
    pub tls: Option<TlsSettings>,
    /// How often PostgreSQL reachability is checked for the health service.
    pub health_interval: Duration,
    /// Browser origins allowed to call over gRPC-web (exact `scheme://host[:port]`).
    pub cors_allow_origins: Vec<http::HeaderValue>,
    /// The web app at `/`.
    pub web_ui: crate::web_ui::WebUi,
}

impl TryFrom<ServeArgs> for Settings {
    type Error = anyhow::Error;

    fn try_from(args: ServeArgs) -> anyhow::Result<Self> {
        let redis_timeout = Duration::from_millis(args.redis_timeout_ms);
        let web_ui = crate::web_ui::WebUi {
            enabled: args.web_ui,
            dev_mode: args.auth.dev,
        };
        let auth = args.auth.settings()?;
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
        };
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
                client_ca_pem: args.tls_client_ca.as_deref().map(read).transpose()?,
            }),
            _ => None,
        };
        Ok(Self {
            listen: args.listen,
            metrics_listen: match args.metrics_listen.trim() {
                "" => None,
                address => Some(address.parse().map_err(|error| {
                    anyhow::anyhow!("SWITCHBOARD_METRICS_LISTEN {address:?}: {error}")
                })?),
            },
            database_url: args.database.database_url,
            pool: PoolSettings {
                max_connections: args.db_max_connections,
                acquire_timeout: Duration::from_millis(args.db_acquire_timeout_ms),
            },
            replicas: crate::read_replicas::ReplicaSettings {
                urls: args
                    .database_replica_urls
                    .into_iter()
                    .filter(|url| !url.trim().is_empty())
                    .collect(),
                max_lag: Duration::from_millis(args.database_replica_max_lag_ms),
                timeout: Duration::from_millis(args.database_replica_timeout_ms),
                max_connections: args.db_max_connections,
            },
            redis: redis_target(args.redis_url, args.redis_cluster_nodes).map(|target| {
                RedisSettings {
                    wait_replicas: args
                        .redis_wait_replicas
                        .unwrap_or_else(|| target.default_wait_replicas()),
                    target,
                    key_prefix: args.redis_prefix,
                    op_timeout: redis_timeout,
                    retry_after: Duration::from_secs(1),
                }
            }),
            phones: args.default_region,
            migrate: !args.no_migrate,
            pop_ttl: Duration::from_secs(args.pop_ttl_secs),
            negative_ttl: Duration::from_secs(args.negative_ttl_secs),
            pin_ttl: Duration::from_secs(args.pin_ttl_secs),
            drain_timeout: Duration::from_secs(args.drain_timeout_secs),
            audit_max_pending: args.audit_max_pending,
            feed_retention: Duration::from_secs(args.feed_retention_secs),
            webhooks: std::sync::Arc::new(args.webhooks.settings()),
            live: crate::live::LiveSettings {
                reconcile_every: Duration::from_millis(args.live_rebuild_ms.max(100)),
                stale_after: Duration::from_secs(args.live_stale_after_secs.max(1)),
            },
            misdial_seconds: args.misdial_seconds,
            kpi_time_zone: args.kpi_time_zone,
            case_sla: args.case_sla,
            feedback: crate::feedback::Thresholds {
                negative_csat: args.feedback_negative_csat,
                negative_nps: args.feedback_negative_nps,
            },
            auth,
            tls,
            limits: Limits {
                rate: RateLimit {
                    per_second: args.rate_limit_per_second,
                    burst: args.rate_limit_burst,
                },
                max_request_bytes: args.max_request_bytes,
                max_concurrent_streams: args.max_concurrent_streams,
                max_in_flight: args.max_in_flight,
                shed_lag: Duration::from_millis(args.shed_lag_ms),
                shed_queue: Duration::from_millis(args.shed_queue_ms),
                default_deadline: Duration::from_millis(args.default_deadline_ms),
            },
            health_interval: Duration::from_millis(500),
            web_ui,
            cors_allow_origins: args
                .cors_allow_origin
                .iter()
                .filter(|o| !o.trim().is_empty())
                .map(|origin| {
                    http::HeaderValue::from_str(origin.trim().trim_end_matches('/')).map_err(|_| {
                        anyhow::anyhow!("--cors-allow-origin {origin:?} is not a header value")
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// Writes a file that holds a secret (the dev token, a key): readable and writable by its owner
/// only (mode 0600), including when it existed before with a wider mode.
pub fn write_secret_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file created now: narrow one that was already there first.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

#[cfg(test)]
mod readme_tests {
    use clap::CommandFactory as _;

    /// Every `serve` flag is in the README's configuration table, which is one table (a blank
    /// line inside it would end the table and print the rest as text).
    #[test]
    fn the_readme_configuration_table_lists_every_serve_flag() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .expect("a Configuration section");
        let table: Vec<&str> = section
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .collect();
        let command = super::Cli::command();
        let serve = command.find_subcommand("serve").expect("serve");
        for argument in serve.get_arguments() {
            let Some(long) = argument.get_long() else {
                continue;
            };
            if matches!(long, "help" | "version") {
                continue;
            }
            let mentioned = table.iter().any(|line| {
                line.contains(&format!("`--{long}`"))
                    || line.contains(&format!("`--{long},"))
                    || line.contains(&format!("--{long}`,"))
            });
            assert!(
                mentioned,
                "--{long} is not in README.md's configuration table"
            );
        }
    }
}

/// Webhook and NATS delivery (the feed pushed out; docs/INTEGRATIONS.md).
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Non-public addresses webhooks may go to anyway (comma-separated CIDR ranges, e.g.
    /// "10.20.0.0/16"). Loopback, private and link-local addresses are refused otherwise.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_ALLOW_CIDR", value_delimiter = ',')]
    pub webhook_allow_cidr: Vec<crate::webhooks::Cidr>,
    /// Attempts on one event before its subscription turns FAILING and stops.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: u32,
    /// How long one event may keep failing before its subscription turns FAILING (seconds).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_MAX_AGE_SECS", default_value_t = 24 * 3600)]
    pub webhook_max_age_secs: u64,
    /// The first retry's delay (milliseconds); each next one doubles, with jitter.
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 2_000
    )]
    pub webhook_retry_base_ms: u64,
    /// The longest delay between two attempts (milliseconds).
    #[arg(
        long,
        env = "SWITCHBOARD_WEBHOOK_RETRY_MAX_MS",
        default_value_t = 600_000
    )]
    pub webhook_retry_max_ms: u64,
    /// One request's time limit, the answer included (milliseconds).
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// How long a worker holds a sink without renewing its lease (milliseconds); a killed
    /// instance's sinks are taken over after it. More than the timeout.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_LEASE_MS", default_value_t = 30_000)]
    pub webhook_lease_ms: u64,
    /// NATS server for the JetStream sink (e.g. nats://127.0.0.1:4222): every feed event is
    /// published to `switchboard.v1.<topic>`. Unset: no NATS sink.
    #[arg(long, env = "SWITCHBOARD_NATS_URL")]
    pub nats_url: Option<String>,
}

impl WebhookArgs {
    pub fn settings(&self) -> crate::webhooks::DeliverySettings {
        let timeout = Duration::from_millis(self.webhook_timeout_ms.max(100));
        crate::webhooks::DeliverySettings {
            allow: crate::webhooks::AllowList::new(self.webhook_allow_cidr.clone()),
            max_attempts: self.webhook_max_attempts.max(1),
            max_age: Duration::from_secs(self.webhook_max_age_secs),
            retry_base: Duration::from_millis(self.webhook_retry_base_ms.max(10)),
            retry_max: Duration::from_millis(self.webhook_retry_max_ms.max(10)),
            timeout,
            lease: Duration::from_millis(self.webhook_lease_ms).max(timeout * 2),
            body_cap: 64 * 1024,
            nats_url: self.nats_url.clone().filter(|url| !url.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_prefix_with_braces_is_refused() {
        assert_eq!(redis_prefix("sb:").as_deref(), Ok("sb:"));
        assert_eq!(redis_prefix("").as_deref(), Ok(""));
        for bad in ["{sb}:", "sb{:", "sb}"] {
            assert!(redis_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_kpi_time_zone_is_an_iana_name() {
        assert!(kpi_time_zone("America/New_York").is_ok());
        assert!(kpi_time_zone("UTC").is_ok());
        assert!(kpi_time_zone("Mars/Olympus").is_err());
        assert!(kpi_time_zone("").is_err());
    }
}
