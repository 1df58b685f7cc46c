//! `sinks`: the feed pushed out, measured against a receiver in this process (HTTP/1.1 on
//! loopback, answering 204 at once) and a core NATS subscription on `switchboard.v1.>`.
//!
//! 1. Call-event ingest with the sinks paused and active in turn, `--phases` delivering phases
//!    between paused ones (closed loop, the same workload as `events`): the cost of delivery to
//!    ingest, in the same run, with the cores each program used in each phase.
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
        // Only the timestamp is read (a receiver that parsed it all would take cores from the
        // server it measures).
        #[derive(serde::Deserialize)]
        struct Stamp<'a> {
            timestamp: &'a str,
        }
        let Some(at) = serde_json::from_slice::<Stamp>(body)
            .ok()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.timestamp).ok())
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

/// CPU seconds so far (user and system) of the processes on this machine, by program: the
/// server, PostgreSQL (every backend), Redis, nats-server and this bench. Linux `/proc`; empty
/// elsewhere.
struct Cpu(std::collections::BTreeMap<&'static str, f64>);

impl Cpu {
    const PROGRAMS: [(&'static str, &'static str); 5] = [
        ("switchboard", "switchboard"),
        ("postgres", "postgres"),
        ("redis-server", "redis"),
        ("nats-server", "nats-server"),
        ("switchboard-ben", "bench"),
    ];

    fn now() -> Self {
        let mut totals = std::collections::BTreeMap::new();
        // Clock ticks a second: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK)).
        let tick = 100.0;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Self(totals);
        };
        for entry in entries.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": utime and stime are fields 14 and 15.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let Some((_, name)) = Self::PROGRAMS.iter().find(|(c, _)| *c == comm) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                *totals.entry(*name).or_insert(0.0) += (user + system) / tick;
            }
        }
        Self(totals)
    }

    /// What each program used since `before` (processes that ended meanwhile are missed).
    fn since(&self, before: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(name, now)| (*name, now - before.0.get(name).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    fn total(&self) -> f64 {
        self.0.values().sum()
    }

    fn scaled(&self, by: f64) -> Self {
        Self(
            self.0
                .iter()
                .map(|(name, used)| (*name, used * by))
                .collect(),
        )
    }

    /// This less `scale` times `other` (floored at zero).
    fn minus(&self, other: &Self, scale: f64) -> Self {
        Self(
            self.0
                .iter()
                .map(|(name, used)| {
                    let less = other.0.get(name).copied().unwrap_or(0.0) * scale;
                    (*name, (used - less).max(0.0))
                })
                .collect(),
        )
    }

    /// "switchboard 1.23, postgres 0.61, ...": each program's CPU seconds divided by `by`, with
    /// `decimals` (by wall seconds: the cores it used; by millions of events: µs an event).
    fn divided(&self, by: f64, decimals: usize) -> String {
        self.0
            .iter()
            .map(|(name, used)| format!("{name} {:.*}", decimals, used / by.max(1e-9)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Autovacuum and autoanalyze runs so far on the bench database's tables: a phase they fall in
/// has less of the machine for ingest.
async fn vacuums(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint \
         FROM pg_stat_user_tables",
    )
    .fetch_one(pool)
    .await?)
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

    // 1. Ingest with the sinks paused and delivering, alternating (paused first and last), so
    //    that each delivering phase is compared with the paused phases on both sides of it: the
    //    machine's drift (the feed growing, autovacuum, checkpoints) falls on both.
    let mut paused = Vec::new();
    let mut delivering = Vec::new();
    let labels = [
        "p1", "d1", "p2", "d2", "p3", "d3", "p4", "d4", "p5", "d5", "p6", "d6", "p7",
    ];
    let phases = usize::try_from(args.phases.max(1)).unwrap_or(1) * 2 + 1;
    for (index, label) in labels.iter().take(phases.min(labels.len())).enumerate() {
        let active = index % 2 == 1;
        if active {
            set_sinks(&pool, "active", Some(0)).await?;
        } else {
            set_sinks(&pool, "paused", None).await?;
        }
        take(&hook_seen);
        take(&nats_seen);
        let cpu_before = Cpu::now();
        let vacuums_before = vacuums(&pool).await?;
        let report = measure(events(label).await?, closed, args.warmup, args.duration).await;
        let cpu = Cpu::now().since(&cpu_before);
        let vacuumed = vacuums(&pool).await? - vacuums_before;
        let seen = (take(&hook_seen).count, take(&nats_seen).count);
        let name = if active {
            "events, webhook and NATS delivering"
        } else {
            "events, sinks paused"
        };
        report.print(name);
        let wall = report.elapsed.as_secs_f64() + args.warmup as f64;
        println!(
            "  cores used: {}; autovacuum and autoanalyze runs: {vacuumed}",
            cpu.divided(wall, 2)
        );
        let cores = cpu.scaled(1.0 / wall);
        if active {
            println!(
                "  meanwhile the webhook took {} and NATS {} ({:.0}/s and {:.0}/s)",
                seen.0,
                seen.1,
                seen.0 as f64 / wall,
                seen.1 as f64 / wall
            );
            delivering.push((report.throughput(), cores));
        } else {
            paused.push((report.throughput(), cores));
        }
    }
    let mean = |values: &[(f64, Cpu)]| {
        values.iter().map(|(rate, _)| rate).sum::<f64>() / values.len().max(1) as f64
    };
    // Each delivering phase against the paused ones on both sides; and the same with the
    // receivers' share of the machine given back: the bench's extra cores (its webhook receiver
    // and NATS subscriber) and nats-server's, over the paused phases'. A deployment's receivers
    // run elsewhere; on this machine they take cores ingest would have had.
    let mut ratios = Vec::new();
    let mut without_receivers = Vec::new();
    for (i, (with, cores)) in delivering.iter().enumerate() {
        let (Some(before), Some(after)) = (paused.get(i), paused.get(i + 1)) else {
            continue;
        };
        let ratio = with / ((before.0 + after.0) / 2.0).max(1e-9);
        let base = |name| (before.1.get(name) + after.1.get(name)) / 2.0;
        let receivers = (cores.get("bench") - base("bench")).max(0.0)
            + (cores.get("nats-server") - base("nats-server")).max(0.0);
        let total = cores.total();
        ratios.push(format!("{ratio:.3}"));
        without_receivers.push(format!(
            "{:.3} (receivers {receivers:.2} of {total:.2} cores)",
            ratio * total / (total - receivers).max(1e-9)
        ));
    }
    println!(
        "  ingest with delivery / without: {:.3} overall ({:.0}/s delivering against {:.0}/s \
         paused); each delivering phase against the paused ones around it: {}; \
         the same with the receivers' cores given back: {}",
        mean(&delivering) / mean(&paused).max(1e-9),
        mean(&delivering),
        mean(&paused),
        ratios.join(", "),
        without_receivers.join(", ")
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
    let report = measure(events("steady").await?, steady, 0, args.duration).await;
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
        // What the machine uses idle (the sequencer's polls, autovacuum after the ingest runs),
        // taken off the drain's CPU.
        let idle_before = Cpu::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = Cpu::now().since(&idle_before);
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
        let cpu_before = Cpu::now();
        match until(seen, backlog, Duration::from_secs(120)).await {
            Some(took) => println!(
                "  {name}: a backlog of {backlog} drained in {:.2} s: {:.0} deliveries/s; \
                 CPU µs a delivery (less idle): {}",
                took.as_secs_f64(),
                backlog as f64 / took.as_secs_f64(),
                Cpu::now()
                    .since(&cpu_before)
                    .minus(&idle, took.as_secs_f64() / 2.0)
                    .divided(backlog as f64 / 1e6, 0)
            ),
            None => println!("  {name}: the backlog of {backlog} did not drain in 120 s"),
        }
    }
    set_sinks(&pool, "active", Some(0)).await?;
    Ok(())
}
