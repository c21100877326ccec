//! `sipdesk groups`: each group now (callers waiting, agents by state) and today (answered,
//! missed, abandoned, average wait, service level), as the running daemon's `GET /groups`
//! gives them. Without the daemon, today's figures come from the store and the live columns
//! say `-`.

use sipdesk::config::Config;

#[derive(clap::Args)]
pub(crate) struct GroupsArgs {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn groups(config: &Config, args: &GroupsArgs) -> anyhow::Result<()> {
    let answer = if super::daemon_runs(config).await {
        super::admin_json(config, "/groups").await?
    } else {
        from_store(config).await?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!(
        "{:<16}  {:>7}  {:>8}  {:>5}  {:>4}  {:>4}  {:>4}  {:>8}  {:>6}  {:>9}  {:>8}  {:>5}",
        "GROUP",
        "WAITING",
        "LONGEST",
        "AVAIL",
        "RING",
        "CALL",
        "WRAP",
        "AWAY",
        "ANSWER",
        "MISSED",
        "ABANDON",
        "SL"
    );
    for group in answer["groups"].as_array().into_iter().flatten() {
        let n = |v: &serde_json::Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
        let agents = &group["agents"];
        let today = &group["today"];
        let longest = group["longest_wait_seconds"]
            .as_u64()
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "-".to_owned());
        let level = today["service_level"]
            .as_f64()
            .map(|l| format!("{:.0}%", l * 100.0))
            .unwrap_or_else(|| "-".to_owned());
        println!(
            "{:<16}  {:>7}  {:>8}  {:>5}  {:>4}  {:>4}  {:>4}  {:>8}  {:>6}  {:>9}  {:>8}  {:>5}",
            group["name"].as_str().unwrap_or_default(),
            n(&group["waiting"]),
            longest,
            n(&agents["available"]),
            n(&agents["ringing"]),
            n(&agents["on_call"]),
            n(&agents["wrap_up"]),
            n(&agents["away"]),
            n(&today["answered"]),
            n(&today["missed"]),
            n(&today["abandoned"]),
            level
        );
    }
    Ok(())
}

/// Today's figures from the store, in the API's shape, without the live part.
async fn from_store(config: &Config) -> anyhow::Result<serde_json::Value> {
    eprintln!("sipdesk is not running: today's figures from the database, nothing live");
    let store = sipdesk::store::Store::open(&config.database.url).await?;
    let today = sipdesk::figures::today(&store, config, jiff::Timestamp::now()).await?;
    let groups: Vec<serde_json::Value> = config
        .groups
        .iter()
        .zip(today)
        .map(|(group, today)| {
            serde_json::json!({
                "name": group.name.to_string(),
                "queues": group.queues,
                "waiting": null,
                "longest_wait_seconds": null,
                "talking": null,
                "agents": {},
                "today": today,
            })
        })
        .collect();
    Ok(serde_json::json!({ "groups": groups }))
}
