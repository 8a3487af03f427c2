//! The `engine` command line: load the chunks announced on the partition streams, or apply
//! migrations. The binary's `main` is this, so the system tests' copy of the binary
//! (`system-tests/src/bin/engine.rs`) runs the same code.

use clap::{Parser, Subcommand};

use crate::EngineSettings;

/// The ingestion engine: validates stored CSV chunks and COPYs them into PostgreSQL, exactly once.
#[derive(Parser)]
#[command(name = "engine", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: EngineSettings,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the partition streams and load chunks (the default).
    Run,
    /// Create the database if needed, apply migrations and exit.
    Migrate,
}

/// Parses the command line and runs the command until it ends (or a shutdown signal).
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ingest_runtime::telemetry::init_tracing(cli.settings.log_format);
    ingest_runtime::memory::disable_transparent_huge_pages();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let listener = tokio::net::TcpListener::bind(cli.settings.addr).await?;
            crate::run(listener, cli.settings, ingest_runtime::shutdown_signal()).await
        }
        Command::Migrate => {
            ingest_runtime::db::prepare(&cli.settings.shared.database_url).await?;
            println!("migrations applied");
            Ok(())
        }
    }
}
