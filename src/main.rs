//! The `sipdesk` command line: parses arguments, sets up logging, calls the library and maps
//! errors to exit codes (0 success, 1 failure, 2 usage error).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::Timestamp;

use sipdesk::config::{self, Config};
use sipdesk::phone::{self, Caller};
use sipdesk::routing::{self, AgentState, Call, CallerStatus, Extension};

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
    /// Check the configuration file and print a summary, or every error found.
    CheckConfig,
    /// Show where a call would go, and why, without placing it.
    Route(RouteArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIPDESK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match &cli.command {
        Command::CheckConfig => check_config(&cli.config),
        Command::Route(args) => route(&cli.config, args),
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
