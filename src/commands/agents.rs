//! `sipdesk agents`: agents and their state, or set one.

use std::collections::HashMap;

use clap::Subcommand;

use sipdesk::config::Config;
use sipdesk::routing::Extension;
use sipdesk::store::Store;

#[derive(clap::Args)]
pub(crate) struct AgentsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<AgentsAction>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum AgentsAction {
    /// Free an agent held by a stuck call: every call holding them ends (both phones get BYE)
    /// or, while it rings them, moves on to the next agent. Asks the running daemon.
    Free { extension: String },
    /// Mark an agent available or away (taken up by the daemon within two seconds).
    Set {
        extension: String,
        #[arg(value_enum)]
        state: SetState,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum SetState {
    Available,
    Away,
}

pub(crate) async fn agents(config: &Config, args: &AgentsArgs) -> anyhow::Result<()> {
    if let Some(AgentsAction::Free { extension }) = &args.action {
        let path = format!("/agents/{}/free", super::segment(extension));
        return match super::admin(config, reqwest::Method::POST, &path).await? {
            (200, body) => {
                let calls = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["calls_ended"].as_u64())
                    .unwrap_or(0);
                println!("{extension}: free ({calls} calls ended or moved on)");
                Ok(())
            }
            (status, body) => anyhow::bail!("sipdesk answered {status}: {body}"),
        };
    }
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
