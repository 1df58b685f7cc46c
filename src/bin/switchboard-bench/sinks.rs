//! `sinks`: the feed pushed out, measured against a receiver in this process (HTTP/1.1 on
//! loopback, answering 204 at once) and a core NATS subscription on `switchboard.v1.>`.
//!
//! 1. Call-event ingest with the sinks paused, active, and paused again (closed loop, the same
//!    workload as `events`): the cost of delivery to ingest, in the same run.
//! 2. The delivery lag at a steady `--rate` call events a second (one feed event each): from the
//!    event's commit (its feed timestamp) to the receiver getting it, per sink.
//! 3. Deliveries a second: a backlog of `--calls` events per sink, drained.
//!
//! The sinks are paused and rewound through the bench database (`--database-url`), which the
//! bench owns: `UPDATE feed_sinks`. Speed is measured here, never asserted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use sqlx::PgPool;
use switchboard::proto::v1;
use switchboard::proto::v1::webhook_service_client::WebhookServiceClient;

use crate::engine::{Mode, Workload};
use crate::workloads::{Connections, Events};
use crate::{Args, connections, measure, population};

/// What one sink's receiver saw.
struct Seen {
    count: u64,
    /// Commit to receipt, microseconds.
    lag: Histogram<u64>,
}

impl Seen {
    fn new() -> Self {
        Self {
            count: 0,
            lag: Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
        }
    }

    /// Records one delivery of `body` (a webhook payload) received now.
    fn record(&mut self, body: &[u8]) {
        self.count += 1;
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let Some(at) = value["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            return;
        };
        let lag = chrono::Utc::now() - at.with_timezone(&chrono::Utc);
        let micros = u64::try_from(lag.num_microseconds().unwrap_or(0)).unwrap_or(1);
        self.lag.saturating_record(micros.max(1));
    }
}

type Shared = Arc<Mutex<Seen>>;

/// A webhook receiver: 204 to every POST, each recorded.
async fn serve_receiver(seen: Shared) -> anyhow::Result<SocketAddr> {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            seen.lock().expect("seen").record(&body);
                            let mut response =
                                hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                            *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await
                    .ok();
            });
        }
    });
    Ok(address)
}

async fn set_sinks(pool: &PgPool, state: &str, back: Option<i64>) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE feed_sinks SET state = $1, attempts = 0, next_attempt_at = now(), \
           cursor = CASE WHEN $2::bigint IS NULL THEN cursor \
                         ELSE greatest((SELECT position FROM feed_head) - $2, 0) END",
    )
    .bind(state)
    .bind(back)
    .execute(pool)
    .await
    .context("the bench database's feed_sinks")?;
    Ok(())
}

/// The feed's own state: events committed and not numbered yet, and the age of the newest
/// numbered one (the sequencer's lag, which every sink inherits).
async fn feed_state(pool: &PgPool) -> anyhow::Result<String> {
    let (waiting, age): (i64, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM feed_events e WHERE NOT EXISTS \
                   (SELECT 1 FROM feed_positions p WHERE p.event_id = e.id)), \
                (SELECT extract(epoch FROM now() - e.created_at)::float8 FROM feed_positions p \
                   JOIN feed_events e ON e.id = p.event_id ORDER BY p.position DESC LIMIT 1)",
    )
    .fetch_one(pool)
    .await?;
    Ok(format!(
        "{waiting} events not numbered yet; the newest numbered one is {:.2} s old",
        age.unwrap_or(0.0)
    ))
}

async fn head(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT position FROM feed_head")
        .fetch_one(pool)
        .await?)
}

fn take(seen: &Shared) -> Seen {
    std::mem::replace(&mut *seen.lock().expect("seen"), Seen::new())
}

fn lag_line(name: &str, seen: &Seen) -> String {
    let ms = |q: f64| seen.lag.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "  {name}: {} delivered; lag p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        seen.count,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        seen.lag.max() as f64 / 1000.0
    )
}

/// Waits until `seen` holds `count` deliveries or `limit` passes; the time it took.
async fn until(seen: &Shared, count: u64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if seen.lock().expect("seen").count >= count {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

pub async fn sinks_scenario(args: &Args) -> anyhow::Result<()> {
    let url = args
        .database_url
        .as_deref()
        .context("sinks: pass --database-url (the bench database)")?;
    let pool = PgPool::connect(url).await?;
    let hook_seen: Shared = Arc::new(Mutex::new(Seen::new()));
    let nats_seen: Shared = Arc::new(Mutex::new(Seen::new()));
    let receiver = serve_receiver(Arc::clone(&hook_seen)).await?;
    let nats = match &args.nats_url {
        Some(url) => {
            let client = async_nats::connect(url.as_str()).await?;
            let mut messages = client.subscribe("switchboard.v1.>").await?;
            let seen = Arc::clone(&nats_seen);
            tokio::spawn(async move {
                while let Some(message) = messages.next().await {
                    seen.lock().expect("seen").record(&message.payload);
                }
            });
            Some(client)
        }
        None => None,
    };
    let connections: Connections = connections(args).await?;
    WebhookServiceClient::new(connections.0[0].clone())
        .create_webhook(v1::CreateWebhookRequest {
            url: format!("http://{receiver}/bench"),
            description: "switchboard-bench sinks".into(),
            ..Default::default()
        })
        .await
        .context("creating the webhook (the server needs --webhook-allow-cidr 127.0.0.0/8)")?;
    let numbers = Arc::new(population(args).await?.numbers);
    let run = format!("s{}", chrono::Utc::now().timestamp_millis());
    // A fresh workload per phase: its calls are new ones (a call id used twice is refused).
    let events = |phase: &'static str| {
        let connections = connections.clone();
        let numbers = Arc::clone(&numbers);
        let run = format!("{run}{phase}");
        async move {
            let workload: Arc<dyn Workload> = Arc::new(
                Events::open(
                    &connections,
                    args.streams,
                    u64::from(args.agents),
                    numbers,
                    &run,
                )
                .await?,
            );
            anyhow::Ok(workload)
        }
    };
    let closed = Mode::Closed {
        concurrency: args.concurrency,
    };

    // 1. Ingest without, with, and again without delivery.
    set_sinks(&pool, "paused", None).await?;
    let without = measure(events("a").await?, closed, args.warmup, args.duration).await;
    without.print("events, sinks paused");
    set_sinks(&pool, "active", Some(0)).await?;
    take(&hook_seen);
    take(&nats_seen);
    let with = measure(events("b").await?, closed, args.warmup, args.duration).await;
    with.print("events, webhook and NATS delivering");
    let during = (take(&hook_seen), take(&nats_seen));
    set_sinks(&pool, "paused", None).await?;
    let again = measure(events("c").await?, closed, args.warmup, args.duration).await;
    again.print("events, sinks paused again");
    let baseline = (without.throughput() + again.throughput()) / 2.0;
    println!(
        "  ingest with delivery / without: {:.3} ({:.0}/s against {:.0}/s, the mean of {:.0} and {:.0}); \
         meanwhile the webhook took {} and NATS {} ({:.0}/s and {:.0}/s)",
        with.throughput() / baseline.max(1e-9),
        with.throughput(),
        baseline,
        without.throughput(),
        again.throughput(),
        during.0.count,
        during.1.count,
        during.0.count as f64 / with.elapsed.as_secs_f64(),
        during.1.count as f64 / with.elapsed.as_secs_f64(),
    );

    // 2. The lag at a steady rate.
    println!(
        "  the feed before the steady run: {}",
        feed_state(&pool).await?
    );
    set_sinks(&pool, "active", Some(0)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    take(&hook_seen);
    take(&nats_seen);
    let start = head(&pool).await?;
    let steady = Mode::Open {
        rate: args.rate.max(1.0),
        max_in_flight: args.max_in_flight,
    };
    let report = measure(events("d").await?, steady, 0, args.duration).await;
    report.print("events, open loop");
    println!(
        "  the feed after the steady run: {}",
        feed_state(&pool).await?
    );
    let made = u64::try_from(head(&pool).await? - start).unwrap_or(0);
    until(&hook_seen, made, Duration::from_secs(30)).await;
    if nats.is_some() {
        until(&nats_seen, made, Duration::from_secs(30)).await;
    }
    println!(
        "  {made} feed events in {:.1} s ({:.0}/s)",
        report.elapsed.as_secs_f64(),
        made as f64 / report.elapsed.as_secs_f64()
    );
    println!("{}", lag_line("webhook", &take(&hook_seen)));
    if nats.is_some() {
        println!("{}", lag_line("NATS", &take(&nats_seen)));
    }

    // 3. A backlog, drained.
    let backlog = u64::from(args.calls).max(1000);
    for (name, kind, seen) in [
        ("webhook", "webhook", &hook_seen),
        ("NATS", "nats", &nats_seen),
    ] {
        if kind == "nats" && nats.is_none() {
            continue;
        }
        set_sinks(&pool, "paused", None).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        take(&hook_seen);
        take(&nats_seen);
        sqlx::query(
            "UPDATE feed_sinks SET state = 'active', next_attempt_at = now(), \
               cursor = greatest((SELECT position FROM feed_head) - $1, 0) WHERE kind = $2",
        )
        .bind(i64::try_from(backlog).unwrap_or(i64::MAX))
        .bind(kind)
        .execute(&pool)
        .await?;
        match until(seen, backlog, Duration::from_secs(120)).await {
            Some(took) => println!(
                "  {name}: a backlog of {backlog} drained in {:.2} s: {:.0} deliveries/s",
                took.as_secs_f64(),
                backlog as f64 / took.as_secs_f64()
            ),
            None => println!("  {name}: the backlog of {backlog} did not drain in 120 s"),
        }
    }
    set_sinks(&pool, "active", Some(0)).await?;
    Ok(())
}
