//! Test harness: the real server on 127.0.0.1:0 against a real PostgreSQL (a fresh database per
//! test) and a real Redis (a fresh key prefix per test). `scripts/test.sh` provides both through
//! `DATABASE_URL` (an account that may create databases) and `REDIS_URL`.
//! Set `TEST_LOG=1` to see the server's logs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use switchboard::app::Application;
use switchboard::auth::{AuthSettings, JwtKeys, Role};
use switchboard::client::BearerToken;
use switchboard::config::{Limits, Settings, TlsSettings};
use switchboard::db::PoolSettings;
use switchboard::phone::PhoneParser;
use switchboard::proto::v1;
use switchboard::proto::v1::activity_service_client::ActivityServiceClient;
use switchboard::proto::v1::agent_service_client::AgentServiceClient;
use switchboard::proto::v1::audit_service_client::AuditServiceClient;
use switchboard::proto::v1::call_event_service_client::CallEventServiceClient;
use switchboard::proto::v1::case_service_client::CaseServiceClient;
use switchboard::proto::v1::customer_service_client::CustomerServiceClient;
use switchboard::proto::v1::interaction_service_client::InteractionServiceClient;
use switchboard::proto::v1::privacy_service_client::PrivacyServiceClient;
use switchboard::proto::v1::screen_pop_service_client::ScreenPopServiceClient;
use switchboard::redis_link::RedisSettings;
use switchboard::screenpop::PopStats;
use tokio::sync::{OnceCell, oneshot};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        switchboard::telemetry::init(
            switchboard::config::LogFormat::Human,
            &switchboard::telemetry::TraceSettings {
                otlp_endpoint: None,
                sample_ratio: 0.0,
            },
        );
    }
});

/// The signing secret, issuer and audience every test server trusts.
pub const TEST_SECRET: &str = "switchboard-test-secret-of-at-least-32-bytes";
pub const TEST_ISSUER: &str = "switchboard-test";

pub fn test_auth() -> AuthSettings {
    AuthSettings {
        algorithm: jsonwebtoken::Algorithm::HS256,
        keys: JwtKeys::Secret(TEST_SECRET.as_bytes().to_vec()),
        issuer: TEST_ISSUER.into(),
        audience: TEST_ISSUER.into(),
    }
}

/// A valid token for `role`.
pub fn token(role: Role, subject: &str, gateway_id: Option<&str>) -> String {
    test_auth()
        .issue(subject, role, gateway_id, Duration::from_secs(3600))
        .expect("HS256 signs")
}

pub type Authed = InterceptedService<Channel, BearerToken>;

/// `channel` sending `token` with every request.
pub fn authed(channel: Channel, token: &str) -> Authed {
    InterceptedService::new(
        channel,
        BearerToken::new(Some(token)).expect("token header"),
    )
}

pub fn admin(channel: Channel) -> Authed {
    authed(channel, &token(Role::Admin, "test-admin", None))
}

pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must be set: run the tests with scripts/test.sh")
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").expect("REDIS_URL must be set: run the tests with scripts/test.sh")
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("database URL has a path");
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// Drops databases left by earlier runs, once per test process.
async fn drop_stale_databases() {
    static ONCE: OnceCell<()> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let mut admin = PgConnection::connect(&admin_database_url())
            .await
            .expect("connect as admin");
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sbtest\\_%'")
                .fetch_all(&mut admin)
                .await
                .expect("list databases");
        for name in stale {
            let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await
                .ok();
        }
    })
    .await;
}

/// Creates an empty database on the server at `admin_url` and returns its URL.
/// A fresh database migrated up to `version` only: what an older release left, for a test of the
/// migrations after it.
pub async fn database_at_migration(version: i64) -> (String, sqlx::PgPool) {
    let url = fresh_database(&admin_database_url()).await;
    let db = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::migrate::Migrator::with_migrations(
        switchboard::db::MIGRATOR
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect(),
    )
    .run(&db)
    .await
    .expect("the migrations up to the version");
    (url, db)
}

pub async fn fresh_database(admin_url: &str) -> String {
    drop_stale_databases().await;
    let name = format!("sbtest_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect as admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    with_database(admin_url, &name)
}

pub struct TestOptions {
    /// `None`: no Redis at all; `Some(url)`: that Redis.
    pub redis_url: Option<String>,
    /// A Redis Cluster's nodes instead (`--redis-cluster-nodes`), when not empty.
    pub redis_cluster_nodes: Vec<String>,
    /// Another PostgreSQL server (admin URL) than `DATABASE_URL`.
    pub postgres_admin_url: Option<String>,
    pub acquire_timeout: Duration,
    pub case_sla: switchboard::cases::SlaPolicy,
    pub limits: Limits,
    /// Serve TLS, and connect the test clients with this client configuration.
    pub tls: Option<TestTls>,
    /// Serve this existing database (a second instance of one deployment) instead of a fresh one.
    pub database_url: Option<String>,
    pub feed_retention: Duration,
    /// How often the live queue state in Redis is rebuilt from PostgreSQL.
    pub live_rebuild: Duration,
    /// Audit entries that may wait for PostgreSQL.
    pub audit_max_pending: usize,
    /// Browser origins allowed over gRPC-web.
    pub cors_allow_origins: Vec<http::HeaderValue>,
    /// Listen here (a restart on the same port); `None`: a free port.
    pub listen: Option<std::net::SocketAddr>,
    /// Serve the web app at `/`.
    pub web_ui: bool,
    /// Webhook and NATS delivery: loopback allowed, quick retries and leases.
    pub webhooks: switchboard::webhooks::DeliverySettings,
    /// `--misdial-seconds`.
    pub misdial_seconds: i32,
    /// `--kpi-time-zone`.
    pub kpi_time_zone: String,
    /// `--database-replica-url`s (streaming standbys of the database's server).
    pub database_replica_urls: Vec<String>,
}

/// Delivery settings for the tests: loopback receivers allowed, retries and leases in
/// milliseconds rather than seconds.
pub fn test_delivery() -> switchboard::webhooks::DeliverySettings {
    switchboard::webhooks::DeliverySettings {
        allow: switchboard::webhooks::AllowList::new(vec![
            "127.0.0.0/8".parse().expect("cidr"),
            "::1".parse().expect("cidr"),
        ]),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        timeout: Duration::from_millis(800),
        lease: Duration::from_secs(2),
        ..Default::default()
    }
}

#[derive(Clone)]
pub struct TestTls {
    pub server: TlsSettings,
    pub client: ClientTlsConfig,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            redis_url: Some(redis_url()),
            redis_cluster_nodes: Vec::new(),
            postgres_admin_url: None,
            acquire_timeout: Duration::from_secs(1),
            case_sla: switchboard::cases::SlaPolicy::default(),
            tls: None,
            database_url: None,
            feed_retention: Duration::from_secs(7 * 24 * 3600),
            live_rebuild: Duration::from_millis(200),
            audit_max_pending: 200_000,
            cors_allow_origins: Vec::new(),
            listen: None,
            web_ui: true,
            webhooks: test_delivery(),
            misdial_seconds: 10,
            kpi_time_zone: "UTC".into(),
            database_replica_urls: Vec::new(),
            limits: Limits {
                rate: switchboard::auth::RateLimit {
                    per_second: 100_000.0,
                    burst: 100_000.0,
                },
                max_request_bytes: 1 << 20,
                max_concurrent_streams: 256,
                max_in_flight: 1000,
                // Off: the tests share two cores, so a late task here is the harness, not
                // overload. `faults.rs` turns it on where it is the subject.
                shed_lag: Duration::ZERO,
                shed_queue: Duration::ZERO,
                default_deadline: Duration::from_secs(30),
            },
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub redis_prefix: String,
    pub customers: CustomerServiceClient<Authed>,
    pub pops: ScreenPopServiceClient<Authed>,
    pub calls: CallEventServiceClient<Authed>,
    pub agents: AgentServiceClient<Authed>,
    pub channel: Authed,
    /// The server without credentials (for the health service and for authentication tests).
    pub raw_channel: Channel,
    pub health: HealthClient<Authed>,
    pub stats: Arc<PopStats>,
    /// The Prometheus metrics port.
    pub metrics_address: std::net::SocketAddr,
    pub db: PgPool,
    pub database_url: String,
    /// Sending (or dropping) it starts the same graceful shutdown as SIGTERM.
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    LazyLock::force(&TRACING);
    drop_stale_databases().await;
    let admin_url = options
        .postgres_admin_url
        .clone()
        .unwrap_or_else(admin_database_url);
    let database_url = match &options.database_url {
        Some(url) => url.clone(),
        None => fresh_database(&admin_url).await,
    };
    let redis_prefix = format!("t:{}:", Uuid::new_v4().simple());
    let settings = Settings {
        listen: options
            .listen
            .unwrap_or_else(|| "127.0.0.1:0".parse().expect("address")),
        metrics_listen: Some("127.0.0.1:0".parse().expect("address")),
        database_url: database_url.clone(),
        case_sla: options.case_sla,
        feedback: switchboard::feedback::Thresholds::default(),
        auth: test_auth(),
        limits: options.limits,
        tls: options.tls.as_ref().map(|t| t.server.clone()),
        pool: PoolSettings {
            max_connections: 8,
            acquire_timeout: options.acquire_timeout,
        },
        replicas: switchboard::read_replicas::ReplicaSettings {
            urls: options.database_replica_urls.clone(),
            max_lag: Duration::from_millis(1000),
            timeout: Duration::from_millis(200),
            max_connections: 4,
        },
        redis: switchboard::config::redis_target(options.redis_url, options.redis_cluster_nodes)
            .map(|target| RedisSettings {
                wait_replicas: target.default_wait_replicas(),
                target,
                key_prefix: redis_prefix.clone(),
                op_timeout: Duration::from_millis(50),
                retry_after: Duration::from_millis(300),
            }),
        phones: PhoneParser::for_region("US").expect("US"),
        migrate: true,
        pop_ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(30),
        pin_ttl: Duration::from_secs(3600),
        drain_timeout: Duration::from_secs(5),
        audit_max_pending: options.audit_max_pending,
        feed_retention: options.feed_retention,
        webhooks: std::sync::Arc::new(options.webhooks.clone()),
        live: switchboard::live::LiveSettings {
            reconcile_every: options.live_rebuild,
            ..Default::default()
        },
        misdial_seconds: options.misdial_seconds,
        kpi_time_zone: options.kpi_time_zone,
        health_interval: Duration::from_millis(100),
        cors_allow_origins: options.cors_allow_origins.clone(),
        web_ui: switchboard::web_ui::WebUi {
            enabled: options.web_ui,
            dev_mode: false,
        },
    };
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app.metrics_addr().expect("a metrics port");
    let stats = app.pop_stats();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        stopped.await.ok();
    }));
    let raw_channel = match &options.tls {
        None => Channel::from_shared(address.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
        Some(tls) => Channel::from_shared(address.replace("http://", "https://"))
            .expect("uri")
            .tls_config(tls.client.clone())
            .expect("client TLS")
            .connect()
            .await
            .expect("connect over TLS"),
    };
    let channel = admin(raw_channel.clone());
    let db = PgPool::connect(&database_url).await.expect("test pool");
    TestApp {
        address,
        redis_prefix,
        customers: CustomerServiceClient::new(channel.clone()),
        pops: ScreenPopServiceClient::new(channel.clone()),
        calls: CallEventServiceClient::new(channel.clone()),
        agents: AgentServiceClient::new(channel.clone()),
        channel: channel.clone(),
        raw_channel,
        health: HealthClient::new(channel),
        stats,
        metrics_address,
        db,
        database_url,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// A server stopped on purpose, to start again on the same port and database: a restart.
pub struct Stopped {
    port: u16,
    database_url: String,
}

impl Stopped {
    pub async fn start_again(self) -> TestApp {
        self.start_again_with(TestOptions::default()).await
    }

    /// Starts it again with `options` (on its port and database).
    pub async fn start_again_with(self, options: TestOptions) -> TestApp {
        spawn_app_with(TestOptions {
            database_url: Some(self.database_url),
            listen: Some(([127, 0, 0, 1], self.port).into()),
            ..options
        })
        .await
    }
}

impl TestApp {
    /// Stops the server gracefully (its streams end), keeping its port and database for
    /// [`Stopped::start_again`].
    pub async fn stop_for_restart(&mut self) -> Stopped {
        let port = self
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        self.begin_shutdown()
            .await
            .expect("joined")
            .expect("stopped cleanly");
        Stopped {
            port,
            database_url: self.database_url.clone(),
        }
    }

    pub fn audit(&self) -> AuditServiceClient<Authed> {
        AuditServiceClient::new(self.channel.clone())
    }

    pub fn cases(&self) -> CaseServiceClient<Authed> {
        CaseServiceClient::new(self.channel.clone())
    }

    pub fn activity(&self) -> ActivityServiceClient<Authed> {
        ActivityServiceClient::new(self.channel.clone())
    }

    pub fn privacy(&self) -> PrivacyServiceClient<Authed> {
        PrivacyServiceClient::new(self.channel.clone())
    }

    pub fn interactions(&self) -> InteractionServiceClient<Authed> {
        InteractionServiceClient::new(self.channel.clone())
    }

    /// Adds active wrap-up dispositions: (code, whether it resolves the contact).
    pub async fn dispositions(&self, codes: &[(&str, bool)]) {
        for (code, resolves) in codes {
            self.interactions()
                .upsert_disposition(v1::UpsertDispositionRequest {
                    disposition: Some(v1::Disposition {
                        code: (*code).into(),
                        label: (*code).into(),
                        resolves: *resolves,
                        active: true,
                    }),
                })
                .await
                .expect("disposition");
        }
    }

    /// Starts the graceful shutdown SIGTERM triggers; the handle resolves when the server is done.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        self.server.take().expect("the server is running")
    }

    /// Opens a NORMAL case "refund" for the customer, as agent a-17.
    pub async fn open_case(&self, customer_id: &str, request_id: &str) -> v1::Case {
        self.cases()
            .open_case(v1::OpenCaseRequest {
                request_id: request_id.into(),
                customer_id: customer_id.into(),
                subject: "refund".into(),
                description: "refund".into(),
                priority: v1::CasePriority::Normal.into(),
                actor: "a-17".into(),
            })
            .await
            .expect("case opened")
            .into_inner()
            .case
            .expect("case")
    }

    /// Creates a customer with the given phones (any format) and returns it.
    pub async fn create_customer(&self, name: &str, phones: &[&str]) -> v1::Customer {
        let request = v1::CreateCustomerRequest {
            display_name: name.into(),
            contact_points: phones.iter().map(|p| phone(p)).collect(),
            ..Default::default()
        };
        self.customers
            .clone()
            .create_customer(request)
            .await
            .expect("create customer")
            .into_inner()
            .customer
            .expect("customer")
    }

    /// Renames `customer`, which must be at its current version; returns it as updated.
    pub async fn rename(&self, customer: &v1::Customer, name: &str) -> v1::Customer {
        self.customers
            .clone()
            .update_customer(v1::UpdateCustomerRequest {
                customer: Some(v1::Customer {
                    id: customer.id.clone(),
                    version: customer.version,
                    display_name: name.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            })
            .await
            .expect("renamed")
            .into_inner()
            .customer
            .expect("customer")
    }

    /// Looks up a pop and returns it with its source.
    pub async fn pop(&self, number: &str) -> (v1::ScreenPop, v1::PopSource) {
        self.pop_for_call(number, "").await
    }

    /// Pops `number` until one comes from the cache, at most `attempts` times 100 ms apart.
    pub async fn pop_until_cached(&self, number: &str, attempts: u32) -> bool {
        for _ in 0..attempts {
            if self.pop(number).await.1 == v1::PopSource::Cache {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub async fn pop_for_call(
        &self,
        number: &str,
        call_id: &str,
    ) -> (v1::ScreenPop, v1::PopSource) {
        let response = self
            .pops
            .clone()
            .lookup(v1::LookupRequest {
                caller_number: number.into(),
                call_id: call_id.into(),
                ..Default::default()
            })
            .await
            .expect("lookup")
            .into_inner();
        let source = response.source();
        (response.pop.expect("pop"), source)
    }

    pub async fn health_status(&self, service: &str) -> Option<i32> {
        let request = tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        };
        self.health
            .clone()
            .check(request)
            .await
            .ok()
            .map(|r| r.into_inner().status)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

pub fn phone(value: &str) -> v1::NewContactPoint {
    v1::NewContactPoint {
        kind: v1::ContactKind::Phone.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn email(value: &str) -> v1::NewContactPoint {
    v1::NewContactPoint {
        kind: v1::ContactKind::Email.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// The fields named in an INVALID_ARGUMENT status's `google.rpc.BadRequest`.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let bad = status
        .get_details_bad_request()
        .expect("a BadRequest detail");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

/// The customers with a latest call end in `customer_last_calls`, and how many of those rows, and
/// of the customers with an ended call, differ from the latest `ended_at` among their calls (a
/// row missing on either side counts).
pub async fn last_calls_against_calls(db: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(l.customer_id), count(*) FILTER (WHERE l.ended_at IS DISTINCT FROM c.at) \
         FROM customer_last_calls l \
         FULL JOIN (SELECT customer_id, max(ended_at) AS at FROM calls \
                    WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL GROUP BY customer_id) c \
           ON c.customer_id = l.customer_id",
    )
    .fetch_one(db)
    .await
    .expect("latest call ends")
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port that is free for both TCP and UDP at this moment. Both, because the suite's
/// SIP parts (Kamailio, SIPp) listen on UDP: a port checked only over TCP can be one that another
/// test's Kamailio holds over UDP, and the SIPp given it then fails to bind.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when the tests run as root.
pub fn postgres_tool(bin: &str) -> Command {
    let dir =
        std::env::var("SWITCHBOARD_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let path = PathBuf::from(dir).join(bin);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

/// A PostgreSQL server of this test's own, so it can be stopped without disturbing other tests.
pub struct PrivatePostgres {
    data: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let data = std::env::temp_dir().join(format!("sb-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data).expect("data dir");
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(&data)
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown data dir");
        }
        let status = postgres_tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let server = Self {
            data,
            port: free_port(),
        };
        server.resume();
        server
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off",
            self.port
        );
        let status = postgres_tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(self.data.join("server.log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start runs");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// A streaming standby of `primary`, copied with `pg_basebackup -R` and started on a port of
    /// its own; `apply_delay` sets `recovery_min_apply_delay` (e.g. `"3s"`).
    pub fn standby_of(primary: &PrivatePostgres, apply_delay: Option<&str>) -> Self {
        let data = std::env::temp_dir().join(format!("sb-pg-{}", Uuid::new_v4().simple()));
        let parent = std::env::temp_dir();
        let status = postgres_tool("pg_basebackup")
            .current_dir(&parent)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_basebackup runs");
        assert!(status.success(), "pg_basebackup failed");
        if let Some(delay) = apply_delay {
            let setting = format!("recovery_min_apply_delay = '{delay}'\n");
            let conf = data.join("postgresql.auto.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
            text.push_str(&setting);
            // Written by the test process: as root, give the file back to postgres.
            std::fs::write(&conf, text).expect("standby settings");
            if is_root() {
                Command::new("chown")
                    .arg("postgres:")
                    .arg(&conf)
                    .status()
                    .expect("chown");
            }
        }
        let server = Self {
            data,
            port: free_port(),
        };
        server.resume();
        server
    }

    /// Stops at once, like a crash or a pulled cable.
    pub fn stop_immediately(&self) {
        let status = postgres_tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl stop runs");
        assert!(status.success(), "pg_ctl stop failed");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        postgres_tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok();
        std::fs::remove_dir_all(&self.data).ok();
    }
}

/// A Redis server of this test's own, so it can be stopped and restarted from its own dump.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// With `--cluster-enabled yes`: the cluster bus port (the default, the port + 10,000, can
    /// be past 65,535).
    cluster_port: Option<u16>,
    /// More `redis-server` arguments.
    extra_args: Vec<String>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_as(false)
    }

    /// A Redis that speaks TLS only, with a self-signed certificate for 127.0.0.1 (`tls_url`).
    pub fn start_tls() -> Self {
        let dir = std::env::temp_dir().join(format!("sb-redis-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert written");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key written");
        let port = free_port();
        let mut redis = Self {
            port,
            child: None,
            cluster_port: None,
            extra_args: vec![
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                dir.join("cert.pem").display().to_string(),
                "--tls-key-file".into(),
                dir.join("key.pem").display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            dir,
        };
        redis.resume();
        redis
    }

    /// The `rediss://` URL of a [`Self::start_tls`] server; `#insecure`: its certificate is
    /// self-signed (the service, built without the tests' `tls-rustls-insecure`, refuses
    /// `#insecure` and checks certificates against the system's roots).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/#insecure", self.port)
    }

    /// A Redis Cluster of one master that holds all 16,384 slots: a client that is not cluster
    /// aware works, and every multi-key command, script or MULTI block whose keys hash to
    /// different slots fails with CROSSSLOT, as on any cluster.
    pub fn start_cluster_of_one() -> Self {
        let redis = Self::start_as(true);
        let client = redis::Client::open(redis.url().as_str()).expect("client");
        let mut conn = client.get_connection().expect("connection");
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query::<()>(&mut conn)
            .expect("CLUSTER ADDSLOTSRANGE");
        for _ in 0..200 {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .expect("CLUSTER INFO");
            if info.contains("cluster_state:ok") {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the cluster of one never became ok");
    }

    fn start_as(cluster: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("sb-redis-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = Self {
            port: free_port(),
            dir,
            child: None,
            cluster_port: cluster.then(free_port),
            extra_args: Vec::new(),
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, loading the last `save()` if there was one.
    pub fn resume(&mut self) {
        let tls = self.extra_args.iter().any(|arg| arg == "--tls-port");
        let plain_port = if tls { 0 } else { self.port };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &plain_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(self.cluster_port.iter().flat_map(|port| {
                ["--cluster-enabled".to_owned(), "yes".to_owned()]
                    .into_iter()
                    .chain(["--cluster-port".to_owned(), port.to_string()])
            }))
            .args(&self.extra_args)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let url = if tls { self.tls_url() } else { self.url() };
        for _ in 0..100 {
            if redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    /// Writes the data set to disk (SAVE), so a restart brings it back.
    pub fn save(&self) {
        let client = redis::Client::open(self.url().as_str()).expect("client");
        let mut conn = client.get_connection().expect("connection");
        redis::cmd("SAVE").query::<()>(&mut conn).expect("SAVE");
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, nothing answers.
    pub fn pause(&self, paused: bool) {
        let Some(child) = &self.child else { return };
        let signal = if paused { "-STOP" } else { "-CONT" };
        let sent = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal}");
    }

    /// Kills the server: every command fails until `resume`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A Redis Cluster of this test's own on loopback: `masters` masters with one replica each,
/// created by `redis-cli --cluster create` as an operator would. Fail-over is quick (a node
/// timeout of 1 s) and any replica may take over, however long it was cut off
/// (`cluster-replica-validity-factor 0`).
pub struct PrivateCluster {
    pub nodes: Vec<PrivateRedis>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// A replica's master's id.
    pub master_id: Option<String>,
    pub slots: Vec<(u16, u16)>,
}

impl PrivateCluster {
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<PrivateRedis> = (0..masters * 2)
            .map(|_| {
                let dir =
                    std::env::temp_dir().join(format!("sb-redis-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).expect("redis dir");
                let mut node = PrivateRedis {
                    port: free_port(),
                    dir,
                    child: None,
                    cluster_port: Some(free_port()),
                    extra_args: [
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                };
                node.resume();
                node
            })
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create");
        let cluster = Self { nodes };
        cluster.wait_until_whole();
        cluster
    }

    /// The nodes' URLs, for `--redis-cluster-nodes`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRedis::url).collect()
    }

    fn command<T: redis::FromRedisValue>(&self, port: u16, cmd: &redis::Cmd) -> Option<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        cmd.query(&mut conn).ok()
    }

    /// `CLUSTER NODES` as the node on `port` sees it.
    pub fn topology(&self, port: u16) -> Option<Vec<ClusterNode>> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let text: String = self.command(port, &cmd)?;
        Some(
            text.lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split(' ').collect();
                    let port = fields
                        .get(1)?
                        .split('@')
                        .next()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()?;
                    let flags = fields.get(2)?;
                    let slots = fields
                        .iter()
                        .skip(8)
                        .filter_map(|range| {
                            let (from, to) = range.split_once('-').unwrap_or((range, range));
                            Some((from.parse().ok()?, to.parse().ok()?))
                        })
                        .collect();
                    Some(ClusterNode {
                        id: fields[0].to_owned(),
                        port,
                        master: flags.contains("master"),
                        failed: flags.contains("fail"),
                        master_id: fields
                            .get(3)
                            .filter(|id| **id != "-")
                            .map(|id| (*id).to_owned()),
                        slots,
                    })
                })
                .collect(),
        )
    }

    /// Waits until every running node reports the cluster ok, every slot served, and every
    /// replica in sync with its master.
    pub fn wait_until_whole(&self) {
        for _ in 0..300 {
            let whole = self.nodes.iter().filter(|n| n.child.is_some()).all(|node| {
                let mut info = redis::cmd("CLUSTER");
                info.arg("INFO");
                let mut replication = redis::cmd("INFO");
                replication.arg("replication");
                let cluster: Option<String> = self.command(node.port, &info);
                let replication: Option<String> = self.command(node.port, &replication);
                matches!((cluster, replication), (Some(c), Some(r))
                    if c.contains("cluster_state:ok")
                        && c.contains("cluster_slots_ok:16384")
                        && (r.contains("role:master") || r.contains("master_link_status:up")))
            });
            if whole {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster never became whole");
    }

    /// The index of the master that serves `key`'s slot, and of its replica if it has one.
    pub fn shard_of(&self, key: &str) -> (usize, Option<usize>) {
        let port = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a node")
            .port;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("KEYSLOT").arg(key);
        let slot: u16 = self.command(port, &cmd).expect("CLUSTER KEYSLOT");
        let nodes = self.topology(port).expect("CLUSTER NODES");
        let master = nodes
            .iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .expect("the slot's master");
        let replica = nodes
            .iter()
            .find(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !n.failed);
        let index = |port: u16| {
            self.nodes
                .iter()
                .position(|n| n.port == port)
                .expect("ours")
        };
        (index(master.port), replica.map(|r| index(r.port)))
    }

    /// Waits until the node at `index` is a master that serves slots (it took over).
    pub fn wait_until_master(&self, index: usize) -> bool {
        let port = self.nodes[index].port;
        for _ in 0..200 {
            let serving = self.topology(port).is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n.port == port && n.master && !n.slots.is_empty())
            });
            if serving {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// A file a server process writes its logs to: read once it has stopped, then removed.
pub struct LogFile {
    path: PathBuf,
}

impl LogFile {
    /// A fresh file in the temp directory, and the handle to give the process as its stderr.
    pub fn create(name: &str) -> (Self, Stdio) {
        let path = std::env::temp_dir().join(format!("{name}-{}.log", Uuid::new_v4().simple()));
        let file = std::fs::File::create(&path).expect("log file");
        (Self { path }, Stdio::from(file))
    }

    /// Everything logged, and the file removed.
    pub fn take(self) -> String {
        let logs = std::fs::read_to_string(&self.path).expect("logs");
        std::fs::remove_file(&self.path).ok();
        logs
    }
}

/// The `switchboard serve` binary as a separate process.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
}

impl ServerProcess {
    /// Starts the binary on `port` against `database_url` and waits until it reports SERVING.
    pub async fn start(
        database_url: &str,
        redis_prefix: &str,
        port: u16,
        envs: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url())
            .env("SWITCHBOARD_REDIS_PREFIX", redis_prefix)
            .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD_JWT_HS256_SECRET", TEST_SECRET)
            .env("SWITCHBOARD_JWT_ISSUER", TEST_ISSUER)
            .env("SWITCHBOARD_JWT_AUDIENCE", TEST_ISSUER)
            .env("SWITCHBOARD_METRICS_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_SHED_LAG_MS", "0")
            .env("SWITCHBOARD_SHED_QUEUE_MS", "0")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("server starts");
        let address = format!("http://127.0.0.1:{port}");
        let serving = eventually(Duration::from_secs(30), || {
            let address = address.clone();
            async move {
                let Ok(channel) = Channel::from_shared(address).expect("uri").connect().await else {
                    return false;
                };
                let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
                let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
                matches!(HealthClient::new(channel).check(request).await, Ok(r) if r.get_ref().status == serving)
            }
        })
        .await;
        assert!(serving, "the binary serves");
        Self { child, address }
    }

    /// A connection with an ADMIN token.
    pub async fn channel(&self) -> Authed {
        admin(
            Channel::from_shared(self.address.clone())
                .expect("uri")
                .connect()
                .await
                .expect("connect"),
        )
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits, without blocking the runtime, for the exit.
    pub async fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not exit within 10 s of SIG{signal}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Logs `agent_id` in (AVAILABLE) and opens its `WatchAgent` stream.
pub async fn log_in_and_watch(
    channel: Authed,
    agent_id: &str,
) -> tonic::Streaming<v1::WatchAgentResponse> {
    let mut agents = AgentServiceClient::new(channel);
    agents
        .set_agent_state(v1::SetAgentStateRequest {
            agent_id: agent_id.into(),
            state: v1::AgentState::Available.into(),
            reason: String::new(),
        })
        .await
        .expect("logged in");
    agents
        .watch_agent(v1::WatchAgentRequest {
            agent_id: agent_id.into(),
        })
        .await
        .expect("watching")
        .into_inner()
}

/// An HTTP/1.1 client connection, as a browser's fetch or a dialplan's curl may use.
pub type Http1 = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// An HTTP/1.1 connection (no HTTP/2) to `address` (`http://host:port`).
pub async fn http1(address: &str) -> Http1 {
    let address = address.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}
