//! `gateway`: serve the HTTP API, apply migrations, or manage API clients.

use clap::{Parser, Subcommand};
use gateway::clients::{scope_names, ApiClients, Scope};
use gateway::GatewaySettings;
use ingest_runtime::settings::Secret;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ingestion gateway: JWT auth, upload sessions, chunks streamed to disk and published.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: GatewaySettings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Create the database if needed, apply migrations and exit.
    Migrate,
    /// Manage API clients.
    #[command(subcommand)]
    Client(ClientCommand),
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a client or replace its secret (read from --secret or INGEST_CLIENT_SECRET).
    Add {
        client_id: String,
        #[arg(long, env = "INGEST_CLIENT_SECRET", hide_env_values = true)]
        secret: String,
        /// What its tokens may do: `upload`, `admin` (repeat for both). Without it a new client
        /// gets `upload` and an existing one keeps its scopes.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List clients.
    List,
    /// Disable a client: its secret stops working at once, its live tokens within two seconds.
    Disable { client_id: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ingest_runtime::telemetry::init_tracing(cli.settings.log_format);
    ingest_runtime::memory::disable_transparent_huge_pages();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(cli.settings.addr).await?;
            gateway::run(listener, cli.settings, ingest_runtime::shutdown_signal()).await
        }
        Command::Migrate => {
            ingest_runtime::db::prepare(&cli.settings.shared.database_url).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Client(command) => {
            let pool = gateway::server::database_pool(&cli.settings.shared.database_url).await?;
            let clients = ApiClients::new(pool);
            match command {
                ClientCommand::Add {
                    client_id,
                    secret,
                    scopes,
                } => {
                    let scopes = (!scopes.is_empty())
                        .then(|| Scope::parse_all(scopes.iter().map(String::as_str)))
                        .transpose()?;
                    clients.upsert(&client_id, &Secret::new(secret)).await?;
                    if let Some(scopes) = &scopes {
                        clients.set_scopes(&client_id, scopes).await?;
                    }
                    println!("client {client_id} saved");
                }
                ClientCommand::List => {
                    for client in clients.list().await? {
                        let state = if client.disabled {
                            "disabled"
                        } else {
                            "enabled"
                        };
                        let scopes = scope_names(&client.scopes).join(",");
                        println!(
                            "{}\t{state}\t{scopes}\t{}",
                            client.client_id, client.created_at
                        );
                    }
                }
                ClientCommand::Disable { client_id } => {
                    clients.disable(&client_id).await?;
                    println!("client {client_id} disabled");
                }
            }
            Ok(())
        }
    }
}
