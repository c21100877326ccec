//! `sipdesk agents`: agents and their state, or set one. While the daemon runs, the live state
//! (ringing, on a call, wrap-up, since when) comes from it and a change goes to it, taken at
//! once; when it does not, the store's saved choices are read and written, for the next start.

use clap::Subcommand;

use sipdesk::call::AgentSetting;
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
    /// Mark an agent available or away (the running daemon takes it at once).
    Set {
        extension: String,
        #[arg(value_enum)]
        state: SetState,
        /// Why the agent is away (shown on the wallboard).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum SetState {
    Available,
    Away,
}

pub(crate) async fn agents(config: &Config, args: &AgentsArgs) -> anyhow::Result<()> {
    match &args.action {
        Some(AgentsAction::Free { extension }) => free(config, extension).await,
        Some(AgentsAction::Set {
            extension,
            state,
            reason,
        }) => set(config, extension, *state, reason.clone()).await,
        None => list(config, args.json).await,
    }
}

async fn free(config: &Config, extension: &str) -> anyhow::Result<()> {
    let path = format!("/agents/{}/free", super::segment(extension));
    match super::admin(config, reqwest::Method::POST, &path).await? {
        (200, body) => {
            let calls = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["calls_ended"].as_u64())
                .unwrap_or(0);
            println!("{extension}: free ({calls} calls ended or moved on)");
            Ok(())
        }
        (status, body) => anyhow::bail!("sipdesk answered {status}: {body}"),
    }
}

async fn set(
    config: &Config,
    extension: &str,
    state: SetState,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let away = matches!(state, SetState::Away);
    let word = if away { "away" } else { "available" };
    if super::daemon_runs(config).await {
        let path = format!("/agents/{}", super::segment(extension));
        let body = serde_json::json!({ "state": word, "reason": reason });
        return match super::admin_with(config, reqwest::Method::PUT, &path, Some(body)).await? {
            (200, _) => {
                println!("{extension}: {word}");
                Ok(())
            }
            (_, body) => {
                let why = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                anyhow::bail!("{why}")
            }
        };
    }
    let parsed = Extension::parse(extension).map_err(|e| anyhow::anyhow!("extension: {e}"))?;
    if !config
        .groups
        .iter()
        .any(|g| g.agents.iter().any(|a| a.extension == parsed))
    {
        anyhow::bail!("{extension} is not an agent of any group");
    }
    let store = Store::open(&config.database.url).await?;
    store
        .set_agent_state(&AgentSetting {
            extension: parsed.to_string(),
            away,
            reason: reason.filter(|_| away),
            at: jiff::Timestamp::now(),
        })
        .await?;
    if config.admin.listen.is_none() {
        println!(
            "{extension}: {word}, saved; with the admin API off ([admin] listen = \"off\") a running sipdesk takes it at its next start"
        );
    } else {
        println!("{extension}: {word} (sipdesk is not running: taken at its next start)");
    }
    Ok(())
}

async fn list(config: &Config, json: bool) -> anyhow::Result<()> {
    let agents: Vec<serde_json::Value> = if super::daemon_runs(config).await {
        let live = super::admin_json(config, "/agents").await?;
        live["agents"].as_array().cloned().unwrap_or_default()
    } else {
        saved(config).await?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
        return Ok(());
    }
    let zone = &config.defaults.timezone;
    println!(
        "{:<10}  {:<24}  {:<9}  {:<8}  GROUPS",
        "EXTENSION", "NAME", "STATE", "SINCE"
    );
    for agent in agents {
        let text = |key: &str| agent[key].as_str().unwrap_or_default().to_owned();
        let since = text("since")
            .parse::<jiff::Timestamp>()
            .map(|t| zone.to_datetime(t).strftime("%H:%M:%S").to_string())
            .unwrap_or_default();
        let mut state = text("state");
        if let Some(reason) = agent["reason"].as_str() {
            state = format!("{state} ({reason})");
        }
        let groups: Vec<&str> = agent["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:<10}  {:<24}  {state:<9}  {since:<8}  {}",
            text("extension"),
            text("name"),
            groups.join(", ")
        );
    }
    Ok(())
}

/// The agents as the store keeps them while the daemon does not run: available or away.
async fn saved(config: &Config) -> anyhow::Result<Vec<serde_json::Value>> {
    let store = Store::open(&config.database.url).await?;
    let settings = store.agent_states().await?;
    let mut agents: Vec<serde_json::Value> = Vec::new();
    for group in config.groups.iter() {
        for agent in &group.agents {
            if let Some(found) = agents
                .iter_mut()
                .find(|a| a["extension"] == agent.extension.as_str())
            {
                if let Some(groups) = found["groups"].as_array_mut() {
                    groups.push(group.name.to_string().into());
                }
                continue;
            }
            let setting = settings
                .iter()
                .find(|s| s.extension == agent.extension.as_str());
            let away = setting.is_some_and(|s| s.away);
            agents.push(serde_json::json!({
                "extension": agent.extension.as_str(),
                "name": agent.name,
                "groups": [group.name.to_string()],
                "state": if away { "away" } else { "available" },
                "since": setting.map(|s| s.at),
                "reason": setting.and_then(|s| s.reason.clone()),
            }));
        }
    }
    Ok(agents)
}
