//! `sipdesk calls`: recent calls with their outcome; end a stuck one through the running
//! daemon's admin API; tag one after it ended (written to the database, which every helpdesk
//! the call went to then gets through the outbox).

use sipdesk::config::Config;
use sipdesk::store::{CallFilter, Store};

#[derive(clap::Subcommand)]
pub(crate) enum CallsAction {
    /// End a call in progress (a stuck call): both phones get BYE, its agent is free, and it is
    /// recorded as ended by an admin. Asks the running daemon.
    End {
        /// The call's id, as `sipdesk calls` shows it.
        id: String,
    },
    /// Add (`+averia`) or remove (`-vip`) tags on a call that ended less than two hours ago;
    /// the change is queued for every helpdesk the call went to (a Klaviyo event cannot change).
    Tag {
        /// The call's id, as `sipdesk calls` shows it.
        id: String,
        /// `+tag` to add, `-tag` to remove.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        changes: Vec<String>,
    },
}

#[derive(clap::Args)]
pub(crate) struct CallsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<CallsAction>,
    /// Only calls in progress.
    #[arg(long)]
    pub(crate) active: bool,
    /// How many calls, newest first.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
    /// Print JSON, with each call's routing explanation and events.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn calls(config: &Config, args: &CallsArgs) -> anyhow::Result<()> {
    match &args.action {
        Some(CallsAction::End { id }) => return end(config, id).await,
        Some(CallsAction::Tag { id, changes }) => return tag(config, id, changes).await,
        None => {}
    }
    if args.active && super::daemon_runs(config).await {
        return active(config, args.json).await;
    }
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
            match (&row.sms, row.direction.as_str()) {
                (Some(_), "inbound") => "sms-in",
                (Some(_), _) => "sms-out",
                (None, direction) => direction,
            },
            row.queue.as_deref().unwrap_or("-"),
            row.caller,
            row.agent.as_deref().unwrap_or("-"),
            row.id
        );
    }
    Ok(())
}

/// `DELETE /calls/{id}` on the daemon's admin API.
async fn end(config: &Config, id: &str) -> anyhow::Result<()> {
    let path = format!("/calls/{}", super::segment(id));
    match super::admin(config, reqwest::Method::DELETE, &path).await? {
        (200, _) => {
            println!("{id}: ended");
            Ok(())
        }
        (404, _) => anyhow::bail!("{id}: no such call in progress"),
        (status, body) => anyhow::bail!("sipdesk answered {status}: {body}"),
    }
}

/// The calls in progress as the running daemon sees them: state and agent now.
async fn active(config: &Config, json: bool) -> anyhow::Result<()> {
    let answer = super::admin_json(config, "/calls?active=true").await?;
    let calls = answer["calls"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&calls)?);
        return Ok(());
    }
    if calls.is_empty() {
        println!("no calls in progress");
        return Ok(());
    }
    let zone = &config.defaults.timezone;
    println!(
        "{:<19}  {:<8}  {:<5}  {:<16}  {:<12}  {:<9}  {:<6}  ID",
        "STARTED", "DIR", "QUEUE", "CALLER", "GROUP", "STATE", "AGENT"
    );
    for call in calls {
        let text = |key: &str| call[key].as_str().unwrap_or("-").to_owned();
        let started = text("started_at")
            .parse::<jiff::Timestamp>()
            .map(|t| {
                zone.to_datetime(t)
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        println!(
            "{started:<19}  {:<8}  {:<5}  {:<16}  {:<12}  {:<9}  {:<6}  {}",
            text("direction"),
            text("queue"),
            text("caller"),
            text("group"),
            text("state"),
            text("agent"),
            text("id")
        );
    }
    Ok(())
}

/// Adds and removes tags on an ended call, as the PBX's tags are written: trimmed, lower case.
async fn tag(config: &Config, id: &str, changes: &[String]) -> anyhow::Result<()> {
    let mut add = Vec::new();
    let mut remove = Vec::new();
    for change in changes {
        if change.starts_with("--") {
            anyhow::bail!(
                "{change}: options go before the tags, e.g. sipdesk --config FILE calls tag ID +tag -tag"
            );
        }
        let (list, tag) = match change.split_at_checked(1) {
            Some(("+", tag)) => (&mut add, tag),
            Some(("-", tag)) => (&mut remove, tag),
            _ => anyhow::bail!("{change}: write +tag to add a tag, -tag to remove one"),
        };
        list.push(tag.to_owned());
    }
    let (add, remove) =
        sipdesk::store::tags::normalize(&add, &remove).map_err(|why| anyhow::anyhow!(why))?;
    let store = Store::open(&config.database.url).await?;
    match store
        .tag_call(
            id,
            &add,
            &remove,
            jiff::Timestamp::now(),
            &config
                .helpdesks
                .iter()
                .map(|h| h.name.clone())
                .collect::<Vec<_>>(),
        )
        .await?
    {
        Ok(tagged) => {
            let to = if tagged.integrations.is_empty() {
                "no helpdesk configured now took the call".to_owned()
            } else {
                format!(
                    "queued for {} (sipdesk deliveries shows how each went)",
                    tagged.integrations.join(", ")
                )
            };
            println!("{id}: tags now [{}]; {to}", tagged.retag.tags.join(", "));
            Ok(())
        }
        Err(refused) => anyhow::bail!("{id}: {refused}"),
    }
}
