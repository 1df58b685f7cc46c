//! `switchboard`: thin entry point; everything lives in the library.

use std::process::ExitCode;

use clap::Parser;
use switchboard::app::Application;
use switchboard::config::{Cli, Command, CustomerCommand};
use switchboard::{client, db, seed, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli.command).await {
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
            let app = Application::build(args.into()).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate(args) => {
            let pool = sqlx::PgPool::connect(&args.database_url).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed(args) => seed::run(args).await,
        Command::Pop(args) => client::pop(args).await,
        Command::Customer(CustomerCommand::Create(args)) => client::create_customer(args).await,
        Command::Customer(CustomerCommand::Get { id, server }) => {
            client::get_customer(&server, id).await
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
