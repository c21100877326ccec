//! Today's figures of each group, from the store: what `GET /groups`, the wallboard and
//! `sipdesk groups` show, with or without the daemon running. "Today" is the group's own day
//! (its time zone's midnight).
//!
//! They count the inbound calls the group owned or answered that started since that midnight
//! and have ended: `answered`; `abandoned` (the caller hung up before an answer); `missed`
//! (every other call nobody answered, out of hours and holidays included); `voicemail`.
//! `average_wait_seconds` is over answered calls. `service_level` is the share of calls
//! answered within `[admin] service_level` (default 20 s) among those that reached the group
//! while it was open (calls missed out of hours or on a holiday are left out), `null` before
//! the first.

use jiff::Timestamp;
use serde::Serialize;

use crate::config::Config;
use crate::routing::Group;
use crate::store::{CallRow, Store, StoreError};

#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Today {
    pub answered: u64,
    pub missed: u64,
    pub abandoned: u64,
    pub voicemail: u64,
    pub average_wait_seconds: Option<f64>,
    /// Answered within the service level, over the calls that reached the group while it was
    /// open (0 to 1).
    pub service_level: Option<f64>,
    pub service_level_seconds: u64,
}

/// Today's figures of every group, in configuration order.
pub async fn today(
    store: &Store,
    config: &Config,
    now: Timestamp,
) -> Result<Vec<Today>, StoreError> {
    let since = config
        .groups
        .iter()
        .map(|g| midnight(g, now))
        .min()
        .unwrap_or(now);
    let calls = store.inbound_calls_since(since).await?;
    Ok(config
        .groups
        .iter()
        .map(|g| {
            count(
                &g.name,
                midnight(g, now),
                &calls,
                config.admin.service_level,
            )
        })
        .collect())
}

/// The group's local midnight before `now`.
pub fn midnight(group: &Group, now: Timestamp) -> Timestamp {
    let local = now.to_zoned(group.schedule.timezone.clone());
    local.start_of_day().map(|z| z.timestamp()).unwrap_or(now)
}

/// Today's figures for one group from the calls since its midnight.
pub fn count(
    group: &str,
    since: Timestamp,
    calls: &[CallRow],
    service_level: std::time::Duration,
) -> Today {
    let mut today = Today {
        service_level_seconds: service_level.as_secs(),
        ..Today::default()
    };
    let (mut waited, mut within, mut open_missed) = (0.0, 0u64, 0u64);
    for call in calls {
        if call.group.as_deref() != Some(group) || call.started_at < since {
            continue;
        }
        match (call.outcome.as_deref(), call.reason.as_deref()) {
            (Some("answered"), _) => {
                today.answered += 1;
                let wait = call
                    .answered_at
                    .map_or(0.0, |a| a.duration_since(call.started_at).as_secs_f64());
                waited += wait.max(0.0);
                if wait <= service_level.as_secs_f64() {
                    within += 1;
                }
            }
            (Some("voicemail"), _) => today.voicemail += 1,
            (Some(_), Some("abandoned")) => today.abandoned += 1,
            (Some(_), reason) => {
                today.missed += 1;
                if !matches!(reason, Some("out_of_hours" | "holiday")) {
                    open_missed += 1;
                }
            }
            // Still in progress: counted once it ends.
            (None, _) => {}
        }
    }
    let counted = today.answered + today.abandoned + today.voicemail + open_missed;
    if today.answered > 0 {
        today.average_wait_seconds = Some((waited / today.answered as f64 * 10.0).round() / 10.0);
    }
    if counted > 0 {
        today.service_level = Some((within as f64 / counted as f64 * 1000.0).round() / 1000.0);
    }
    today
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, outcome: &str, reason: Option<&str>, wait: i64) -> CallRow {
        let started = Timestamp::from_second(1_000_000).unwrap();
        CallRow {
            voicemail: None,
            sms: None,
            id: "x".into(),
            sip_call_id: "x".into(),
            direction: "inbound".into(),
            queue: None,
            group: Some(group.into()),
            caller: "+34911000000".into(),
            callee: "600".into(),
            agent: None,
            agents: Vec::new(),
            started_at: started,
            answered_at: (outcome == "answered")
                .then(|| started + jiff::SignedDuration::from_secs(wait)),
            ended_at: Some(started + jiff::SignedDuration::from_secs(wait + 60)),
            outcome: Some(outcome.into()),
            reason: reason.map(Into::into),
            ended_by: None,
            explanation: Vec::new(),
        }
    }

    #[test]
    fn today_counts_each_outcome_and_the_service_level() {
        let calls = vec![
            row("support", "answered", None, 5),
            row("support", "answered", None, 40),
            row("support", "missed", Some("abandoned"), 10),
            row("support", "missed", Some("no_answer"), 30),
            row("support", "missed", Some("out_of_hours"), 0),
            row("sales", "answered", None, 1),
        ];
        let today = count(
            "support",
            Timestamp::UNIX_EPOCH,
            &calls,
            std::time::Duration::from_secs(20),
        );
        assert_eq!(today.answered, 2);
        assert_eq!(today.abandoned, 1);
        assert_eq!(today.missed, 2);
        assert_eq!(today.average_wait_seconds, Some(22.5));
        // One of the four that reached the open group answered within 20 s; the call out of
        // hours is missed but not held against the service level.
        assert_eq!(today.service_level, Some(0.25));
        let later = Timestamp::from_second(2_000_000).unwrap();
        assert!(today_is_empty(super::count(
            "support",
            later,
            &calls,
            std::time::Duration::from_secs(20)
        )));
    }

    fn today_is_empty(today: Today) -> bool {
        today.answered + today.missed + today.abandoned == 0 && today.service_level.is_none()
    }
}
