//! The `sipdesk` command line: parses arguments, sets up logging, calls the library and maps
//! errors to exit codes (0 success, 1 failure, 2 usage error).

mod journal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use sipdesk::config::{self, Config};
use sipdesk::phone::{self, Caller};
use sipdesk::routing::{self, AgentState, Call, CallerStatus, Extension};
use sipdesk::store::{CallFilter, Store};

#[derive(Parser)]
#[command(
    name = "sipdesk",
    version,
    about = "Queue calls from a PBX to agents, and every call to the helpdesk"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "SIPDESK_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: take the PBX's queue calls until stopped.
    Run,
    /// Check the configuration file and print a summary, or every error found.
    CheckConfig,
    /// Show where a call would go, and why, without placing it.
    Route(RouteArgs),
    /// List recent calls with their outcome.
    Calls(CallsArgs),
    /// Show agents and their state, or set one.
    Agents(AgentsArgs),
}

#[derive(clap::Args)]
struct RouteArgs {
    /// The queue ID the PBX would call (the Request-URI user part).
    #[arg(long)]
    queue: String,
    /// The caller's number, in any national or international form, or "anonymous".
    #[arg(long)]
    from: String,
    /// When the call happens, RFC 3339 (e.g. 2026-03-29T10:00:00+02:00). Default: now.
    #[arg(long)]
    at: Option<Timestamp>,
    /// Extensions marked away, comma-separated.
    #[arg(long, value_delimiter = ',')]
    away: Vec<String>,
    /// Extensions on a call, comma-separated.
    #[arg(long, value_delimiter = ',')]
    busy: Vec<String>,
    /// Extensions in wrap-up after a call, comma-separated.
    #[arg(long, value_delimiter = ',')]
    wrap_up: Vec<String>,
    /// What the contact directory would say of the caller (for redirect rules).
    #[arg(long, value_enum, default_value = "unchecked")]
    caller: CallerArg,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CallerArg {
    Known,
    Unknown,
    Inactive,
    Unchecked,
}

#[derive(clap::Args)]
struct CallsArgs {
    /// Only calls in progress.
    #[arg(long)]
    active: bool,
    /// How many calls, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON, with each call's routing explanation and events.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct AgentsArgs {
    #[command(subcommand)]
    action: Option<AgentsAction>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AgentsAction {
    /// Mark an agent available or away (taken up by the daemon within two seconds).
    Set {
        extension: String,
        #[arg(value_enum)]
        state: SetState,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SetState {
    Available,
    Away,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    journal::init(if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    });
    let result = match &cli.command {
        Command::Run => run(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::Route(args) => route(&cli.config, args),
        Command::Calls(args) => load(&cli.config).and_then(|config| block_on(calls(&config, args))),
        Command::Agents(args) => {
            load(&cli.config).and_then(|config| block_on(agents(&config, args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// The daemon runs on one thread: the proxy loop owns all call state, so more threads would only
/// add wake-ups between them (SQLite and the kernel do their work on their own threads).
fn run(path: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(sipdesk::daemon::run(
        path.to_owned(),
        CancellationToken::new(),
    ))?;
    Ok(())
}

/// Runs a command that talks to the store.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    println!("{}: ok: {}", path.display(), config.summary());
    Ok(())
}

fn route(path: &Path, args: &RouteArgs) -> anyhow::Result<()> {
    let config = load(path)?;
    let caller = phone::normalize(&args.from, config.defaults.region)
        .map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let mut presence: HashMap<Extension, AgentState> = HashMap::new();
    for (list, state, flag) in [
        (&args.away, AgentState::Away, "--away"),
        (&args.busy, AgentState::Busy, "--busy"),
        (&args.wrap_up, AgentState::WrapUp, "--wrap-up"),
    ] {
        for text in list {
            let extension = Extension::parse(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
            presence.insert(extension, state);
        }
    }
    let status = match (args.caller, &caller) {
        (_, Caller::Anonymous) | (CallerArg::Unchecked, _) => CallerStatus::Unchecked,
        (CallerArg::Known, _) => CallerStatus::Known,
        (CallerArg::Unknown, _) => CallerStatus::Unknown,
        (CallerArg::Inactive, _) => CallerStatus::Inactive,
    };
    let call = Call {
        queue: &args.queue,
        caller: status,
        at: args.at.unwrap_or_else(Timestamp::now),
    };
    let cursors: HashMap<String, Extension> = HashMap::new();
    let decision = routing::decide(&config.groups, &call, &presence, &cursors);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else {
        let from = match &caller {
            Caller::Number(number) => number.to_string(),
            Caller::Anonymous => "an anonymous caller".to_owned(),
        };
        println!("call to queue {} from {from} at {}", args.queue, call.at);
        print!("{decision}");
    }
    Ok(())
}

async fn calls(config: &Config, args: &CallsArgs) -> anyhow::Result<()> {
    let store = Store::open(&config.database.url).await?;
    let rows = store
        .calls(CallFilter {
            active: args.active,
            limit: args.limit,
        })
        .await?;
    if args.json {
        let mut out = Vec::new();
        for row in rows {
            let events = store.events(&row.id).await?;
            let mut value = serde_json::to_value(&row)?;
            value["events"] = serde_json::to_value(&events)?;
            out.push(value);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no calls");
        return Ok(());
    }
    let zone = &config.defaults.timezone;
    println!(
        "{:<19}  {:<8}  {:<5}  {:<16}  {:<6}  {:<24}  ID",
        "STARTED", "DIR", "QUEUE", "CALLER", "AGENT", "OUTCOME"
    );
    for row in rows {
        let started = zone
            .to_datetime(row.started_at)
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        let outcome = match (&row.outcome, &row.reason) {
            (None, _) => "in progress".to_owned(),
            (Some(o), Some(r)) => format!("{o} ({r})"),
            (Some(o), None) => match (row.answered_at, row.ended_at) {
                (Some(a), Some(e)) => format!(
                    "{o} {}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        e.duration_since(a).as_secs().max(0) as u64
                    ))
                ),
                _ => o.clone(),
            },
        };
        println!(
            "{started:<19}  {:<8}  {:<5}  {:<16}  {:<6}  {outcome:<24}  {}",
            row.direction,
            row.queue.as_deref().unwrap_or("-"),
            row.caller,
            row.agent.as_deref().unwrap_or("-"),
            row.id
        );
    }
    Ok(())
}

async fn agents(config: &Config, args: &AgentsArgs) -> anyhow::Result<()> {
    let store = Store::open(&config.database.url).await?;
    if let Some(AgentsAction::Set { extension, state }) = &args.action {
        let extension =
            Extension::parse(extension).map_err(|e| anyhow::anyhow!("extension: {e}"))?;
        let known = config
            .groups
            .iter()
            .any(|g| g.agents.iter().any(|a| a.extension == extension));
        if !known {
            anyhow::bail!(
                "extension {extension} is not an agent of any group in {}",
                "the configuration"
            );
        }
        store
            .set_agent_state(&extension, matches!(state, SetState::Away))
            .await?;
        println!(
            "{extension}: {}",
            if matches!(state, SetState::Away) {
                "away"
            } else {
                "available"
            }
        );
        return Ok(());
    }
    let away: HashMap<Extension, bool> = store.agent_states().await?.into_iter().collect();
    let mut agents: Vec<(String, String, String, Vec<String>)> = Vec::new();
    for group in config.groups.iter() {
        for agent in &group.agents {
            match agents.iter_mut().find(|a| a.0 == agent.extension.as_str()) {
                Some(found) => found.3.push(group.name.to_string()),
                None => agents.push((
                    agent.extension.to_string(),
                    agent.name.clone().unwrap_or_default(),
                    if away.get(&agent.extension).copied().unwrap_or(false) {
                        "away"
                    } else {
                        "available"
                    }
                    .to_owned(),
                    vec![group.name.to_string()],
                )),
            }
        }
    }
    if args.json {
        let list: Vec<serde_json::Value> = agents
            .iter()
            .map(|(e, n, s, g)| serde_json::json!({ "extension": e, "name": n, "state": s, "groups": g }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<10}  {:<24}  {:<9}  GROUPS",
            "EXTENSION", "NAME", "STATE"
        );
        for (extension, name, state, groups) in agents {
            println!(
                "{extension:<10}  {name:<24}  {state:<9}  {}",
                groups.join(", ")
            );
        }
    }
    Ok(())
}
