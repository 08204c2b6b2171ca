//! The `bluesminds` command: run the gateway, check a config, manage keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::keys::{issue, KeySpec};
use crate::config::{Config, LimitSettings};
use crate::server;
use crate::store::{now_ms, Store};

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
    /// Manage users (the owners of keys, each on a plan).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Check the usage in the database.
    Usage {
        #[command(subcommand)]
        action: UsageAction,
    },
}

#[derive(Subcommand)]
enum UsageAction {
    /// Compare the daily totals (what quotas and the dashboard read) with the
    /// per-request records, per day, key and model; exits 1 on a difference.
    Verify {
        /// First day, YYYY-MM-DD (UTC); default 30 days before --to.
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (UTC); default today.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Create a user on a plan from the config's `plans`.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        plan: String,
        /// Make the user an admin of the dashboard and the admin API.
        #[arg(long)]
        admin: bool,
    },
    /// Make an existing user (e.g. one who signed up) an admin.
    GrantAdmin {
        #[arg(long)]
        email: String,
    },
    /// Take the admin role back.
    RevokeAdmin {
        #[arg(long)]
        email: String,
    },
    /// List users.
    List,
    /// Move a user to another plan (a running gateway applies it within 60 s).
    SetPlan {
        #[arg(long)]
        email: String,
        #[arg(long)]
        plan: String,
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
        /// Owner of the key (their plan's limits and quota apply).
        #[arg(long)]
        user: Option<String>,
        /// Requests per minute for this key (default: the plan's, else the config's).
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute for this key.
        #[arg(long)]
        tpm: Option<u32>,
        /// Requests in flight at once for this key.
        #[arg(long)]
        concurrency: Option<u32>,
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
        Command::Serve => server::run(cfg, Some(cli.config.clone())),
        Command::CheckConfig => {
            // `Config::load` has read the TLS files too.
            let tls = match &cfg.server.tls {
                Some(t) => format!(
                    ", TLS: {} and {} match",
                    t.cert_file.display(),
                    t.key_file.display()
                ),
                None => String::new(),
            };
            for warning in cfg.warnings().into_iter().chain(unresolved_backends(&cfg)) {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: ok ({} pools{tls})",
                cli.config.display(),
                cfg.pools.len()
            );
            Ok(())
        }
        Command::Keys { action } => keys(cfg, action),
        Command::Users { action } => users(cfg, action),
        Command::Usage {
            action: UsageAction::Verify { from, to },
        } => match verify_usage(cfg, from, to) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Backend host names that do not resolve now. Not an error: the gateway
/// starts without them (a service may come up later), but a typo shows here.
fn unresolved_backends(cfg: &Config) -> Vec<String> {
    let Ok(rt) = server::control_runtime() else {
        return vec!["cannot start a runtime to look the backends' names up".into()];
    };
    rt.block_on(async {
        let lookups = crate::upstream::discovery::Lookups::new(&cfg.dns);
        let checks = cfg.pools.iter().enumerate().flat_map(|(i, p)| {
            let lookups = &lookups;
            p.backends.iter().enumerate().map(move |(j, b)| async move {
                let host = &b.url.host;
                if host.parse::<std::net::IpAddr>().is_ok() {
                    return None;
                }
                let found = tokio::time::timeout(lookups.timeout, lookups.resolver.lookup(host)).await;
                let reason = match found {
                    Ok(Ok(found)) if !found.ips.is_empty() => return None,
                    Ok(Ok(_)) => "no A or AAAA record".to_string(),
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {} ms", lookups.timeout.as_millis()),
                };
                Some(format!(
                    "pools[{i}].backends[{j}].url: cannot resolve `{host}`: {reason} (the gateway starts and keeps this backend out of rotation until the name resolves)"
                ))
            })
        });
        futures_util::future::join_all(checks).await.into_iter().flatten().collect()
    })
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
                user,
                rpm,
                tpm,
                concurrency,
            } => {
                let user_id = match &user {
                    Some(email) => Some(
                        store
                            .find_user_by_email(email)
                            .await?
                            .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?
                            .id,
                    ),
                    None => None,
                };
                let positive = |v: Option<u32>, flag: &str| -> anyhow::Result<Option<u64>> {
                    match v {
                        Some(0) => {
                            anyhow::bail!("--{flag} must be at least 1 (leave it out for no limit)")
                        }
                        v => Ok(v.map(u64::from)),
                    }
                };
                let (secret, record) = issue(
                    &store,
                    KeySpec {
                        name: &name,
                        user_id,
                        models: models.as_deref(),
                        expires_at: expires_in_days.map(|d| now_ms() + i64::from(d) * 86_400_000),
                        limits: LimitSettings {
                            rpm: positive(rpm, "rpm")?,
                            tpm: positive(tpm, "tpm")?,
                            concurrency: positive(concurrency, "concurrency")?,
                        },
                    },
                )
                .await?;
                eprintln!(
                    "created key {} (id {}); store it now, it is not shown again:",
                    record.name, record.id
                );
                println!("{secret}");
            }
            KeysAction::List => {
                println!(
                    "{:>5}  {:<20} {:<16} {:<10} status",
                    "id", "name", "key", "models"
                );
                for k in store.list_keys().await? {
                    let status = k.status(now_ms());
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
                let hash = store.revoke_key(id).await?;
                // Running gateways drop the key from their caches: at once in a
                // cluster (Redis), else when the cached entry expires (60 s).
                if let Some(redis) = &cfg.redis {
                    let channel =
                        crate::auth::invalidation::KeyInvalidations::connect(redis).await?;
                    channel.publish_now(&hash).await?;
                }
                println!("revoked key {id}");
            }
        }
        Ok(())
    })
}

fn users(cfg: Config, action: UsersAction) -> anyhow::Result<()> {
    let known_plan = |plan: &str| -> anyhow::Result<()> {
        if cfg.plans.contains_key(plan) {
            Ok(())
        } else {
            let known: Vec<&str> = cfg.plans.keys().map(String::as_str).collect();
            anyhow::bail!(
                "plan `{plan}` is not in the config (plans: {})",
                known.join(", ")
            )
        }
    };
    let rt = server::control_runtime()?;
    rt.block_on(async {
        let store = Store::connect(&cfg.database.url, 1).await?;
        match action {
            UsersAction::Create { email, plan, admin } => {
                known_plan(&plan)?;
                let u = store.create_user(&email, &plan).await?;
                if admin {
                    store.set_user_admin(&u.email, true).await?;
                }
                let role = if admin { ", admin" } else { "" };
                println!(
                    "created user {} (id {}) on plan {}{role}",
                    u.email, u.id, u.plan
                );
            }
            UsersAction::GrantAdmin { email } => {
                if !store.set_user_admin(&email, true).await? {
                    anyhow::bail!("no user with email {email}");
                }
                println!("user {email} is now an admin");
            }
            UsersAction::RevokeAdmin { email } => {
                if !store.set_user_admin(&email, false).await? {
                    anyhow::bail!("no user with email {email}");
                }
                println!("user {email} is no longer an admin");
            }
            UsersAction::List => {
                println!("{:>5}  {:<32} {:<12} status", "id", "email", "plan");
                for u in store.list_users().await? {
                    let status = if u.disabled { "disabled" } else { "active" };
                    let role = if u.is_admin { ", admin" } else { "" };
                    println!("{:>5}  {:<32} {:<12} {status}{role}", u.id, u.email, u.plan);
                }
            }
            UsersAction::SetPlan { email, plan } => {
                known_plan(&plan)?;
                let u = store
                    .find_user_by_email(&email)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no user with email {email}"))?;
                store.set_user_plan(u.id, &plan).await?;
                println!("user {email} is now on plan {plan}");
            }
        }
        Ok(())
    })
}

/// Prints the reconciliation; true when every total matches its records.
fn verify_usage(cfg: Config, from: Option<String>, to: Option<String>) -> anyhow::Result<bool> {
    let day = |flag: &str, v: &str| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(v, format).map_err(|_| anyhow::anyhow!("--{flag} must be YYYY-MM-DD"))
    };
    let to = match to {
        Some(v) => day("to", &v)?,
        None => time::OffsetDateTime::now_utc().date(),
    };
    let from = match from {
        Some(v) => day("from", &v)?,
        None => to - time::Duration::days(30),
    };
    anyhow::ensure!(from <= to, "--from is after --to");
    let rt = server::control_runtime()?;
    rt.block_on(async {
        let store = Store::connect(&cfg.database.url, 1).await?;
        let ledger_dir = std::path::Path::new(&cfg.usage.ledger_dir);
        let report = crate::usage::verify::verify(&store, ledger_dir, from, to).await?;
        print!("{report}");
        Ok(report.is_consistent())
    })
}
