//! `sipdesk calls`: recent calls with their outcome, or end a stuck one through the running
//! daemon's admin API.

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
    if let Some(CallsAction::End { id }) = &args.action {
        return end(config, id).await;
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
            row.direction,
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
