//! `switchboard-bench`: the load generator. Loopback targets only; every run is bounded in time
//! (or in calls for the latency probes).
//!
//! Load scenarios (`echo`, `pop-hot`, `pop-cold`, `events`, `mixed`) run open loop at `--rate`
//! requests per second, or closed loop at maximum throughput with `--rate 0`, over `--connections`
//! HTTP/2 connections, after a warm-up. Each prints throughput, latency percentiles (corrected
//! for coordinated omission in open loop: see `engine.rs`), errors by status code, and its
//! throughput as a share of `echo` measured in the same run. The population scenarios sample
//! caller numbers from the seeded database (`--database-url`, default `DATABASE_URL`).
//!
//! The edge scenarios (`http-cid`, `http-pop`, `grpc-web-pop`) run pop-hot's lookups over HTTP/1.1
//! keep-alive connections (see `http1.rs`), and measure native pop-hot before and after, in the
//! same run with the same mode, as their yardstick: each prints its throughput as a share of it.
//!
//! Latency probes (`push`, `pop`) send one request at a time: see `latency.rs`. `import` times a
//! 100,000-row legacy import and its re-run: see `import.rs`. `sinks` measures webhook and NATS
//! delivery: see `sinks.rs`.

mod engine;
mod http1;
mod import;
mod latency;
mod sinks;
mod workloads;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;

use crate::engine::{Mode, Report, Workload};
use crate::http1::{Http1Kind, Http1Pool, Http1Pop};
use crate::workloads::{Connections, Echo, Events, Mixed, PopCold, PopHot, Population, Zipf};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    about = "Switchboard load generator (loopback only)"
)]
pub struct Args {
    /// Scenario to run.
    #[arg(value_parser = ["echo", "pop-hot", "pop-cold", "events", "mixed", "http-cid", "http-pop", "grpc-web-pop", "push", "pop", "import", "sip-ring", "sinks"])]
    scenario: String,
    /// The instance to load (and the one gateways report to, for `push`). For `echo`, `pop-hot`,
    /// `pop-cold`, `events` and `mixed`, several comma-separated instances: the connections are
    /// spread over them round robin (scale-out).
    #[arg(long, alias = "server", default_value = "http://127.0.0.1:50051")]
    gateway_server: String,
    /// `push`: the instance agents watch on (another instance to measure cross-instance push).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    agent_server: String,
    /// Bearer token (an ADMIN token); defaults to the dev token in .data/dev-token.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Requests per second, open loop; 0 runs closed loop at maximum throughput.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Closed loop: requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop: the most requests in flight; beyond it requests are counted as unsent.
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// HTTP/2 connections, used round robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// `http-cid`, `http-pop`, `grpc-web-pop`: HTTP/1.1 keep-alive connections (one request at a
    /// time each; 0: as many as the closed loop's concurrency, or 256 in open loop).
    #[arg(long, default_value_t = 0)]
    http1_connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of the same load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Seconds of closed-loop `echo` (64 in flight) measured first, as the yardstick (0 to skip).
    #[arg(long, default_value_t = 5)]
    echo_secs: u64,
    /// The seeded database to sample caller numbers from.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Numbers sampled from the population (pop-cold needs one per lookup).
    #[arg(long, default_value_t = 100_000)]
    population: usize,
    /// pop-hot, mixed: skip the warm-up pass (the cache is already warm from an earlier run).
    #[arg(long)]
    skip_warm: bool,
    /// Zipf exponent of pop-hot's caller distribution.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// `events`, `mixed`: gateway streams.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// `push`: calls to ring.
    #[arg(long, default_value_t = 500)]
    calls: u32,
    /// Agents the calls ring.
    #[arg(long, default_value_t = 10)]
    agents: u32,
    /// `sinks`: delivering phases, each between two paused ones (at most 6).
    #[arg(long, default_value_t = 3)]
    phases: u32,
    /// `pop`: customers to create (each with a full card).
    #[arg(long, default_value_t = 200)]
    customers: u32,
    /// `pop`: hot lookups after the cold pass.
    #[arg(long, default_value_t = 5000)]
    lookups: u32,
    /// `sip-ring`: the agent whose stream is watched.
    #[arg(long, default_value = "agent-ana")]
    sip_agent: String,
    /// `sinks`: the NATS server the sink publishes to (its messages are read back to time them).
    #[arg(long)]
    nats_url: Option<String>,
    /// `import`: rows in the file.
    #[arg(long, default_value_t = 100_000)]
    rows: u32,
}

impl Args {
    fn mode(&self) -> Mode {
        if self.rate > 0.0 {
            Mode::Open {
                rate: self.rate,
                max_in_flight: self.max_in_flight,
            }
        } else {
            Mode::Closed {
                concurrency: self.concurrency,
            }
        }
    }
}

async fn connections(args: &Args) -> anyhow::Result<Connections> {
    let servers: Vec<&str> = args.gateway_server.split(',').map(str::trim).collect();
    let mut channels = Vec::with_capacity(args.connections.max(1));
    for i in 0..args.connections.max(1) {
        let server = servers[i % servers.len()];
        channels.push(latency::connect(server, args.token.as_deref()).await?);
    }
    Ok(Connections(Arc::new(channels)))
}

async fn population(args: &Args) -> anyhow::Result<Population> {
    let url = args
        .database_url
        .as_deref()
        .context("this scenario samples the seeded population: pass --database-url")?;
    let sampled = Population::sample(url, args.population).await?;
    println!(
        "sampled {} caller numbers from the seeded population",
        sampled.numbers.len()
    );
    Ok(sampled)
}

/// Looks every number up once, 64 at a time, so that pop-hot starts hot.
async fn warm(connections: &Connections, numbers: &[String]) {
    let started = std::time::Instant::now();
    futures::stream::iter(numbers.iter().cloned().enumerate())
        .for_each_concurrent(64, |(i, number)| {
            let channel = connections.0[i % connections.0.len()].clone();
            async move {
                switchboard::proto::v1::screen_pop_service_client::ScreenPopServiceClient::new(
                    channel,
                )
                .lookup(switchboard::proto::v1::LookupRequest {
                    caller_number: number,
                    ..Default::default()
                })
                .await
                .ok();
            }
        })
        .await;
    println!(
        "warmed {} numbers in {:.1} s",
        numbers.len(),
        started.elapsed().as_secs_f64()
    );
}

async fn workload(args: &Args, connections: &Connections) -> anyhow::Result<Arc<dyn Workload>> {
    let run = format!("r{}", chrono::Utc::now().timestamp_millis());
    Ok(match args.scenario.as_str() {
        "echo" => Arc::new(Echo(connections.clone())),
        "pop-hot" => {
            let sampled = population(args).await?;
            if !args.skip_warm {
                warm(connections, &sampled.numbers).await;
            }
            Arc::new(PopHot {
                connections: connections.clone(),
                zipf: Zipf::new(sampled.numbers.len(), args.zipf),
                numbers: Arc::new(sampled.numbers),
            })
        }
        "pop-cold" => {
            // From the end of the sample: pop-hot uses (and warms) its beginning.
            let mut numbers = population(args).await?.numbers;
            numbers.reverse();
            Arc::new(PopCold {
                connections: connections.clone(),
                numbers: Arc::new(numbers),
            })
        }
        "events" => {
            let sampled = population(args).await?;
            Arc::new(
                Events::open(
                    connections,
                    args.streams,
                    u64::from(args.agents),
                    Arc::new(sampled.numbers),
                    &run,
                )
                .await?,
            )
        }
        scenario if Http1Kind::of(scenario).is_some() => {
            anyhow::bail!("{scenario} runs through edge_load")
        }
        _ => {
            let sampled = population(args).await?;
            if !args.skip_warm {
                warm(connections, &sampled.numbers).await;
            }
            let numbers = Arc::new(sampled.numbers);
            Arc::new(Mixed {
                connections: connections.clone(),
                events: Events::open(
                    connections,
                    args.streams,
                    u64::from(args.agents),
                    Arc::clone(&numbers),
                    &run,
                )
                .await?,
                pops: PopHot {
                    connections: connections.clone(),
                    zipf: Zipf::new(numbers.len(), args.zipf),
                    numbers,
                },
                customers: Arc::new(sampled.customers),
                run,
            })
        }
    })
}

async fn measure(workload: Arc<dyn Workload>, mode: Mode, warmup: u64, duration: u64) -> Report {
    let mut next = 0;
    if warmup > 0 {
        next = engine::run(
            Arc::clone(&workload),
            mode,
            Duration::from_secs(warmup),
            next,
        )
        .await
        .next_index;
    }
    engine::run(workload, mode, Duration::from_secs(duration), next).await
}

/// An edge scenario: the same lookups over HTTP/1.1, against native pop-hot over HTTP/2 measured
/// before and after it, and both against the echo yardstick.
async fn edge_load(args: &Args, kind: Http1Kind) -> anyhow::Result<()> {
    let connections = connections(args).await?;
    let echo = measure(
        Arc::new(Echo(connections.clone())),
        Mode::Closed { concurrency: 64 },
        1,
        args.echo_secs.max(1),
    )
    .await;
    echo.print("echo (yardstick)");
    let sampled = population(args).await?;
    if !args.skip_warm {
        warm(&connections, &sampled.numbers).await;
    }
    let numbers = Arc::new(sampled.numbers);
    let native = || {
        measure(
            Arc::new(PopHot {
                connections: connections.clone(),
                zipf: Zipf::new(numbers.len(), args.zipf),
                numbers: Arc::clone(&numbers),
            }),
            args.mode(),
            args.warmup,
            args.duration,
        )
    };
    // Native pop-hot before and after the edge run, so that drift (a cache warming, PostgreSQL
    // busy after an earlier scenario) shows and does not favor either side.
    let before = native().await;
    before.print("pop-hot (native gRPC, yardstick, before)");
    let size = match (args.http1_connections, args.mode()) {
        (0, Mode::Closed { concurrency }) => concurrency,
        (0, Mode::Open { .. }) => 256,
        (size, _) => size,
    };
    let pool = Http1Pool::open(&args.gateway_server, args.token.as_deref(), size).await?;
    let edge = measure(
        Arc::new(Http1Pop {
            pool,
            zipf: Zipf::new(numbers.len(), args.zipf),
            numbers: Arc::clone(&numbers),
            kind,
        }),
        args.mode(),
        args.warmup,
        args.duration,
    )
    .await;
    edge.print(&format!("{} ({size} HTTP/1.1 connections)", args.scenario));
    let after = native().await;
    after.print("pop-hot (native gRPC, yardstick, after)");
    let native = (before.throughput() + after.throughput()) / 2.0;
    let echo = echo.throughput().max(1e-9);
    println!(
        "  pop-hot / echo: {:.2}; {} / echo: {:.2}; {} / pop-hot: {:.2} ({:.0}/s against {:.0}/s, \
         the mean of {:.0}/s before and {:.0}/s after)",
        native / echo,
        args.scenario,
        edge.throughput() / echo,
        args.scenario,
        edge.throughput() / native.max(1e-9),
        edge.throughput(),
        native,
        before.throughput(),
        after.throughput(),
    );
    Ok(())
}

async fn load(args: &Args) -> anyhow::Result<()> {
    if let Some(kind) = Http1Kind::of(&args.scenario) {
        return edge_load(args, kind).await;
    }
    let connections = connections(args).await?;
    let echo = if args.echo_secs > 0 && args.scenario != "echo" {
        let report = measure(
            Arc::new(Echo(connections.clone())),
            // Always the same yardstick, whatever the scenario's concurrency.
            Mode::Closed { concurrency: 64 },
            1,
            args.echo_secs,
        )
        .await;
        report.print("echo (yardstick)");
        Some(report.throughput())
    } else {
        None
    };
    let workload = workload(args, &connections).await?;
    let report = measure(workload, args.mode(), args.warmup, args.duration).await;
    report.print(&args.scenario);
    let echo = echo.or_else(|| (args.scenario == "echo").then(|| report.throughput()));
    if let Some(echo) = echo.filter(|e| *e > 0.0) {
        println!(
            "  {} / echo: {:.2} ({:.0}/s against {:.0}/s)",
            args.scenario,
            report.throughput() / echo,
            report.throughput(),
            echo
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.scenario.as_str() {
        "push" => latency::push_scenario(&args).await,
        "sip-ring" => latency::sip_ring_scenario(&args).await,
        "sinks" => sinks::sinks_scenario(&args).await,
        "pop" => {
            let run = format!("p{}", chrono::Utc::now().timestamp_millis());
            latency::pop_scenario(&args, &run).await
        }
        "import" => {
            let run = format!("i{}", chrono::Utc::now().timestamp_millis());
            import::import_scenario(&args, &run).await
        }
        _ => load(&args).await,
    }
}
