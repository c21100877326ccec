//! `sipdesk route`: where a call would go, and why, without placing it.

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;

use sipdesk::phone::{self, Caller};
use sipdesk::routing::{self, AgentState, Call, CallerStatus, Extension};

use crate::load;

#[derive(clap::Args)]
pub(crate) struct RouteArgs {
    /// The queue ID the PBX would call (the Request-URI user part).
    #[arg(long)]
    pub(crate) queue: String,
    /// The caller's number, in any national or international form, or "anonymous".
    #[arg(long)]
    pub(crate) from: String,
    /// When the call happens, RFC 3339 (e.g. 2026-03-29T10:00:00+02:00). Default: now.
    #[arg(long)]
    pub(crate) at: Option<Timestamp>,
    /// Extensions marked away, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) away: Vec<String>,
    /// Extensions on a call, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) busy: Vec<String>,
    /// Extensions in wrap-up after a call, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) wrap_up: Vec<String>,
    /// What the contact directory would say of the caller (for redirect rules).
    #[arg(long, value_enum, default_value = "unchecked")]
    pub(crate) caller: CallerArg,
    /// Print the decision as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum CallerArg {
    Known,
    Unknown,
    Inactive,
    Unchecked,
}

pub(crate) fn route(path: &Path, args: &RouteArgs) -> anyhow::Result<()> {
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
