//! `sipdesk deliveries`: what became of each call on each helpdesk (the outbox), and sending
//! failed deliveries again.

use clap::Subcommand;
use jiff::Timestamp;

use sipdesk::config::Config;
use sipdesk::store::{Delivery, DeliveryFilter, DeliveryState, Store};

#[derive(clap::Args)]
pub(crate) struct DeliveriesArgs {
    #[command(subcommand)]
    pub(crate) action: Option<DeliveriesAction>,
    /// Only failed deliveries (those that need an admin).
    #[arg(long)]
    pub(crate) failed: bool,
    /// How many, newest call first.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum DeliveriesAction {
    /// Send a delivery again now (the running daemon picks it up within a second).
    Retry {
        /// The delivery's ID, as listed (`<call id>:<integration>`, or `…:tags:NNNNNN` for a tag change).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<String>,
        /// Every failed delivery.
        #[arg(long)]
        failed: bool,
    },
}

pub(crate) async fn deliveries(config: &Config, args: &DeliveriesArgs) -> anyhow::Result<()> {
    let store = Store::open(&config.database.url).await?;
    if let Some(DeliveriesAction::Retry { id, failed }) = &args.action {
        let now = Timestamp::now();
        if *failed {
            let n = store.retry_failed_deliveries(now).await?;
            println!("{n} failed deliveries will be sent again");
            return Ok(());
        }
        let id = id.as_deref().unwrap_or_default();
        match store.delivery(id).await? {
            None => anyhow::bail!("no delivery has the ID {id}; `sipdesk deliveries` lists them"),
            Some(d) if d.state == DeliveryState::InProgress => {
                anyhow::bail!("{id} is being delivered right now")
            }
            Some(d) if d.state == DeliveryState::Done => anyhow::bail!(
                "{id} was delivered already ({}); sipdesk does not log a call twice",
                d.detail.as_deref().unwrap_or("done")
            ),
            Some(d) if d.state == DeliveryState::Skipped => anyhow::bail!(
                "{id} was skipped by the integration's rules ({}); change the rules for later calls",
                d.detail.as_deref().unwrap_or("skipped")
            ),
            Some(_) => {
                store.retry_delivery(id, now).await?;
                println!("{id}: will be sent again");
            }
        }
        return Ok(());
    }
    let list = store
        .deliveries(DeliveryFilter {
            state: args.failed.then_some(sipdesk::store::DeliveryState::Failed),
            limit: args.limit,
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for backlog in store.backlog().await? {
        let configured = config
            .helpdesks
            .iter()
            .any(|h| h.name == backlog.integration);
        println!(
            "{}: {} pending, {} in progress, {} failed, {} done{}",
            backlog.integration,
            backlog.pending,
            backlog.in_progress,
            backlog.failed,
            backlog.done,
            if configured {
                ""
            } else {
                " (no longer in the configuration: its deliveries wait)"
            }
        );
    }
    if list.is_empty() {
        println!(
            "{}",
            if args.failed {
                "no failed deliveries"
            } else {
                "no deliveries"
            }
        );
        return Ok(());
    }
    println!();
    let zone = &config.defaults.timezone;
    println!(
        "{:<19}  {:<16}  {:<11}  {:>5}  {:<8}  {:<48}  ID",
        "CALL STARTED", "HELPDESK", "STATE", "TRIES", "TICKET", "WHAT HAPPENED"
    );
    for d in list {
        let started = zone
            .to_datetime(d.call_started_at)
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        println!(
            "{started:<19}  {:<16}  {:<11}  {:>5}  {:<8}  {:<48}  {}",
            d.integration,
            d.state.as_str(),
            d.attempts,
            d.ticket_id.as_deref().unwrap_or("-"),
            what_happened(&d),
            d.id
        );
    }
    Ok(())
}

/// One line: the outcome, or the last error and when the next attempt is.
fn what_happened(d: &Delivery) -> String {
    match d.state {
        DeliveryState::Done | DeliveryState::Skipped => d.detail.clone().unwrap_or_default(),
        DeliveryState::Failed => d.last_error.clone().unwrap_or_default(),
        DeliveryState::InProgress => "being delivered".to_owned(),
        DeliveryState::Pending => match &d.last_error {
            Some(error) => {
                let wait = d.next_attempt_at.duration_since(Timestamp::now());
                let secs = wait.as_secs().max(0) as u64;
                format!(
                    "retry in {}: {error}",
                    humantime::format_duration(std::time::Duration::from_secs(secs))
                )
            }
            None => "waiting".to_owned(),
        },
    }
}
