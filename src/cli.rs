//! The `bluesminds` command: run the gateway, check a config, manage keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::generate_key;
use crate::config::Config;
use crate::server;
use crate::store::{now_ms, NewKey, Store};

#[derive(Parser)]
#[command(
    name = "bluesminds",
    version,
    about = "BluesMinds Gateway: an OpenAI-compatible AI gateway"
)]
struct Cli {
    /// Path to the gateway's YAML config.
    #[arg(
        short,
        long,
        env = "BLUESMINDS_CONFIG",
        default_value = "config/gateway.yaml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the config file and exit.
    CheckConfig,
    /// Manage API keys without the dashboard.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it (it is shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated model allow-list (default: every model).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Days until the key expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (prefix and last 4 characters only).
    List,
    /// Revoke a key by id.
    Revoke { id: i64 },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::run(cfg),
        Command::CheckConfig => {
            println!("{}: ok ({} pools)", cli.config.display(), cfg.pools.len());
            Ok(())
        }
        Command::Keys { action } => keys(cfg, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn keys(cfg: Config, action: KeysAction) -> anyhow::Result<()> {
    let rt = server::control_runtime()?;
    rt.block_on(async {
        let store = Store::connect(&cfg.database.url, 1).await?;
        match action {
            KeysAction::Create {
                name,
                models,
                expires_in_days,
            } => {
                let key = generate_key();
                let record = store
                    .create_key(NewKey {
                        name: &name,
                        key_hash: &key.hash,
                        key_prefix: &key.prefix,
                        key_last4: &key.last4,
                        user_id: None,
                        models: models.as_deref(),
                        expires_at: expires_in_days.map(|d| now_ms() + i64::from(d) * 86_400_000),
                    })
                    .await?;
                eprintln!(
                    "created key {} (id {}); store it now, it is not shown again:",
                    record.name, record.id
                );
                println!("{}", key.secret);
            }
            KeysAction::List => {
                println!(
                    "{:>5}  {:<20} {:<16} {:<10} status",
                    "id", "name", "key", "models"
                );
                for k in store.list_keys().await? {
                    let status = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expires_at.is_some_and(|t| t <= now_ms()) {
                        "expired"
                    } else {
                        "active"
                    };
                    let models = k.models.map_or("all".to_string(), |m| m.join(","));
                    println!(
                        "{:>5}  {:<20} {:<16} {:<10} {status}",
                        k.id,
                        k.name,
                        format!("{}...{}", k.key_prefix, k.key_last4),
                        models
                    );
                }
            }
            KeysAction::Revoke { id } => {
                store.revoke_key(id).await?;
                println!("revoked key {id}");
            }
        }
        Ok(())
    })
}
