//! `switchboard`: thin entry point; everything lives in the library.

use std::process::ExitCode;

use clap::Parser;
use switchboard::app::Application;
use switchboard::auth::Role;

use switchboard::config::{
    ApiKeyCommand, Cli, Command, CustomerCommand, ImportCommand, MaintenanceCommand, RetentionArgs,
    RetentionCommand, Settings,
};
use switchboard::{client, db, seed, telemetry};

/// mimalloc instead of glibc's allocator: a hot screen pop allocates and frees many small strings,
/// and glibc's malloc was a fifth of the server's CPU under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = telemetry::init(
        cli.log_format,
        &telemetry::TraceSettings {
            otlp_endpoint: cli.otlp_endpoint,
            sample_ratio: cli.trace_sample_ratio,
        },
    );
    let result = run(cli.command).await;
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let (dev, token_file) = (args.auth.dev, args.auth.dev_token_file.clone());
            let stop = shutdown_signal()?;
            let settings = Settings::try_from(*args)?;
            if dev {
                announce_dev_mode(&settings, token_file.as_deref())?;
            }
            let app = Application::build(settings).await?;
            app.run_until_stopped(stop).await
        }
        Command::Apikey(ApiKeyCommand::Create {
            database,
            role,
            gateway_id,
            subject,
        }) => {
            let role =
                Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
            if role == Role::Gateway && gateway_id.is_none() {
                anyhow::bail!("a gateway key needs --gateway-id");
            }
            let pool = sqlx::PgPool::connect(&database.database_url).await?;
            db::migrate(&pool).await?;
            let subject = subject
                .or_else(|| gateway_id.clone())
                .unwrap_or_else(|| role.as_str().to_owned());
            let key =
                switchboard::auth::create_api_key(&pool, &subject, role, gateway_id.as_deref())
                    .await?;
            println!("{key}");
            eprintln!(
                "Store this key now: it is shown once. Send it as the x-api-key header (or \
                 authorization: Bearer <key>; lookup keys also as ?key= on /v1/cid and /v1/pop)."
            );
            Ok(())
        }
        Command::Migrate(args) => {
            let pool = sqlx::PgPool::connect(&args.database_url).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Retention(RetentionCommand::Run(args)) => retention(args).await,
        Command::Retention(RetentionCommand::Remask(args)) => {
            let pool = sqlx::PgPool::connect(&args.database.database_url).await?;
            db::migrate(&pool).await?;
            let report = switchboard::privacy::remask(&pool).await?;
            let total: u64 = report.iter().map(|(_, n)| n).sum();
            for (column, rows) in report.iter().filter(|(_, n)| *n > 0) {
                println!("{column}: {rows} rows masked");
            }
            println!("remask finished: {total} rows masked");
            Ok(())
        }
        Command::Maintenance(MaintenanceCommand::BuildCards(args)) => {
            let pool = sqlx::PgPool::connect(&args.database_url).await?;
            db::migrate(&pool).await?;
            let started = std::time::Instant::now();
            let built = switchboard::screenpop::card::build_pending(&pool).await?;
            println!(
                "{built} customer cards built in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Maintenance(MaintenanceCommand::Partitions(args)) => {
            let pool = sqlx::PgPool::connect(&args.database.database_url).await?;
            db::migrate(&pool).await?;
            let retention = switchboard::history::Retention {
                audit_months: args.audit_retention_months,
                call_event_months: args.call_event_retention_months,
                call_months: args.call_retention_months,
            };
            let upkeep = switchboard::history::upkeep(&pool, chrono::Utc::now(), retention).await?;
            println!(
                "partitions made: {}; dropped: {}",
                list_or_none(&upkeep.made),
                list_or_none(&upkeep.dropped)
            );
            Ok(())
        }
        Command::Seed(args) => seed::run(args).await,
        Command::Pop(args) => client::pop(args).await,
        Command::Segment(args) => client::segment(args).await,
        Command::Kpis(args) => client::kpis(args).await,
        Command::Queues(args) => client::queues(args).await,
        Command::Scorecard(args) => client::scorecard(args).await,
        Command::Reconcile(args) => switchboard::reconcile::cli::run(args).await.map(|_| ()),
        Command::Import(ImportCommand::Customers(args)) => {
            switchboard::import_file::customers(args).await.map(|_| ())
        }
        Command::Simulate(args) => switchboard::simulate::run(args).await,
        Command::Customer(CustomerCommand::Create(args)) => client::create_customer(args).await,
        Command::Customer(CustomerCommand::Get { id, server }) => {
            client::get_customer(&server, id).await
        }
    }
}

/// Prints the dev-mode banner and an ADMIN token (also written to `token_file`).
fn announce_dev_mode(
    settings: &Settings,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let token = settings
        .auth
        .issue(
            "dev-admin",
            Role::Admin,
            None,
            std::time::Duration::from_secs(12 * 3600),
        )
        .ok_or_else(|| anyhow::anyhow!("dev mode signs with HS256"))?;
    if let Some(path) = token_file {
        switchboard::config::write_secret_file(path, token.as_bytes())?;
    }
    eprintln!("==================== DEVELOPMENT MODE: NOT FOR PRODUCTION ====================");
    eprintln!("Random signing secret; this ADMIN token is valid for 12 hours:");
    eprintln!("{token}");
    if let Some(path) = token_file {
        eprintln!(
            "(also in {}; the switchboard client subcommands read it from .data/dev-token)",
            path.display()
        );
    }
    if settings.web_ui.enabled {
        // Sign-in links for the web app, in development mode only: the token rides in the URL's
        // fragment, which browsers never send to a server, and the app removes it at once.
        let twelve_hours = std::time::Duration::from_secs(12 * 3600);
        let host = match settings.listen.ip() {
            ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        let base = format!(
            "http://{}",
            std::net::SocketAddr::new(host, settings.listen.port())
        );
        for (label, view, subject, role) in [
            (
                "Agent desktop (demo-agent)",
                "agent",
                "demo-agent",
                Role::Agent,
            ),
            (
                "Wallboard (demo-supervisor)",
                "wallboard",
                "demo-supervisor",
                Role::Supervisor,
            ),
        ] {
            if let Some(token) = settings.auth.issue(subject, role, None, twelve_hours) {
                eprintln!("{label}: {base}/#view={view}&token={token}");
            }
        }
    }
    eprintln!("===============================================================================");
    Ok(())
}

/// `switchboard retention run`: purges, then invalidates the pops that showed purged text.
async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    let target = switchboard::privacy::RetentionTarget {
        database_url: args.database.database_url,
        redis: switchboard::config::redis_target(args.redis_url, args.redis_cluster_nodes),
        redis_prefix: args.redis_prefix,
    };
    let (cutoff, report) = switchboard::privacy::run_retention_job(target, args.keep_days).await?;
    tracing::info!(
        %cutoff,
        interactions = report.interactions,
        case_comments = report.case_comments,
        call_events = report.call_events,
        "retention run finished"
    );
    println!(
        "blanked before {cutoff}: {} interactions, {} case comments, {} call events' attached data",
        report.interactions, report.case_comments, report.call_events
    );
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled: the
/// server answers health checks as soon as it is polled, so a supervisor that sends SIGTERM
/// right after the first SERVING must find the handler already there (otherwise the default
/// action kills the process without a drain).
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.ok();
        tracing::info!("shutdown signal received");
    })
}

/// Names joined by commas, or "none".
fn list_or_none(names: &[String]) -> String {
    match names.is_empty() {
        true => "none".to_owned(),
        false => names.join(", "),
    }
}
