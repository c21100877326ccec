//! The `sipdesk` command line: parses arguments, sets up logging, calls the library and maps
//! errors to exit codes (0 success, 1 failure, 2 usage error).

mod assets;
mod commands;
mod journal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use commands::agents::{AgentsArgs, agents};
use commands::calls::{CallsArgs, calls};
use commands::deliveries::{DeliveriesArgs, deliveries};
use commands::groups::{GroupsArgs, groups};
use commands::route::{RouteArgs, route};
use sipdesk::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "sipdesk",
    version,
    about = "Queue calls from a PBX to agents, and every call to the helpdesk",
    after_long_help = AFTER_HELP
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "SIPDESK_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// What `sipdesk --help` and the manual page say after the options: plain paragraphs, as the
/// manual page fills its lines.
const AFTER_HELP: &str = "\
Files: /etc/sipdesk/sipdesk.toml is the configuration (config.example.toml
documents every key); /var/lib/sipdesk holds the SQLite database.

Environment: SIPDESK_LOG says what is logged: a level (error, warn, info, debug,
trace) for sipdesk itself, TARGET=LEVEL for a module or a dependency, separated
by commas. debug shows every call event; debug,sqlx=debug adds every statement
the database driver runs.

Exit status: 0 success, 1 failure, 2 wrong usage.";

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
    /// Show each group now (callers waiting, agents by state) and today.
    Groups(GroupsArgs),
    /// Show what became of each call on each helpdesk, or send failed ones again.
    Deliveries(DeliveriesArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command()
        .subcommand(assets::subcommand())
        .get_matches();
    let result = match assets::requested(&matches) {
        Some(dir) => assets::generate(Cli::command(), dir),
        None => match Cli::from_arg_matches(&matches) {
            Ok(cli) => command(&cli),
            Err(error) => error.format(&mut Cli::command()).exit(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn command(cli: &Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Run) {
        end_quietly_on_a_closed_pipe();
    }
    journal::init(if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    });
    match &cli.command {
        Command::Run => run(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::Route(args) => route(&cli.config, args),
        Command::Calls(args) => load(&cli.config).and_then(|config| block_on(calls(&config, args))),
        Command::Agents(args) => {
            load(&cli.config).and_then(|config| block_on(agents(&config, args)))
        }
        Command::Groups(args) => {
            load(&cli.config).and_then(|config| block_on(groups(&config, args)))
        }
        Command::Deliveries(args) => {
            load(&cli.config).and_then(|config| block_on(deliveries(&config, args)))
        }
    }
}

/// The commands print with `println!`, which panics when stdout is a pipe whose reader has gone
/// (`sipdesk calls | head -1`). The Rust runtime ignores SIGPIPE; restoring its default makes a
/// command end as other Unix tools do there, at once and without a word (status 141 in a shell).
/// Not for `run`: nothing the daemon writes may end it.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called before any thread is started; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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

/// Checks the file; a helpdesk secret that cannot be read is a warning (it may only exist on
/// the server, under systemd's credentials), not an error.
fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    println!("{}: ok: {}", path.display(), config.summary());
    for helpdesk in &config.helpdesks {
        match helpdesk.secret.read() {
            Err(reason) => eprintln!(
                "warning: helpdesk \"{}\": {reason}; its deliveries wait until the secret is there",
                helpdesk.name
            ),
            Ok(secret) => {
                if let sipdesk::config::Vendor::Webhook(_) = helpdesk.vendor {
                    if let Err(reason) = sipdesk::helpdesk::webhook::signing_keys(&secret) {
                        anyhow::bail!("helpdesk \"{}\": {reason}", helpdesk.name);
                    }
                }
            }
        }
    }
    Ok(())
}
