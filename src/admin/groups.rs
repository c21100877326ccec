//! `GET /groups`: each group now (callers ringing and the longest wait, agents by state, from
//! the proxy's snapshot) and today (from the store, "today" on the group's own clock).
//!
//! Today's figures count the inbound calls the group owned or answered that started since the
//! group's local midnight and have ended: `answered`; `abandoned` (the caller hung up before an
//! answer); `missed` (every other call nobody answered, out of hours included); `voicemail`.
//! `average_wait_seconds` is over answered calls. `service_level` is the share of those
//! calls answered within `[admin] service_level` (default 20 s), `null` before the first call.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;

use super::{Shared, store_failed};
use crate::live::{AgentStatus, CallState, Live};
use crate::routing::Group;
use crate::store::CallRow;

#[derive(Debug, Default, PartialEq, Serialize)]
pub(super) struct Today {
    answered: u64,
    missed: u64,
    abandoned: u64,
    voicemail: u64,
    average_wait_seconds: Option<f64>,
    /// Answered within the service level, over every call counted (0 to 1).
    service_level: Option<f64>,
    service_level_seconds: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct GroupNow {
    name: String,
    queues: Vec<String>,
    /// Callers in the group's hands not yet answered.
    waiting: usize,
    longest_wait_seconds: Option<u64>,
    /// Calls answered by the group's agents now.
    talking: usize,
    /// The group's agents by state (every state present, zero or not).
    agents: BTreeMap<&'static str, usize>,
    today: Today,
}

/// The group's local midnight before `now`.
fn midnight(group: &Group, now: Timestamp) -> Timestamp {
    let local = now.to_zoned(group.schedule.timezone.clone());
    local.start_of_day().map(|z| z.timestamp()).unwrap_or(now)
}

/// Today's figures for one group from the calls since its midnight.
pub(super) fn today(
    group: &str,
    since: Timestamp,
    calls: &[CallRow],
    service_level: std::time::Duration,
) -> Today {
    let mut today = Today {
        service_level_seconds: service_level.as_secs(),
        ..Today::default()
    };
    let (mut waited, mut within) = (0.0, 0u64);
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
            (Some(_), _) => today.missed += 1,
            // Still in progress: counted once it ends.
            (None, _) => {}
        }
    }
    let counted = today.answered + today.missed + today.abandoned + today.voicemail;
    if today.answered > 0 {
        today.average_wait_seconds = Some((waited / today.answered as f64 * 10.0).round() / 10.0);
    }
    if counted > 0 {
        today.service_level = Some((within as f64 / counted as f64 * 1000.0).round() / 1000.0);
    }
    today
}

/// The live part of one group.
fn now_of(group: &Group, live: &Live) -> GroupNow {
    let name = group.name.to_string();
    let mine = live
        .calls
        .iter()
        .filter(|c| c.group.as_deref() == Some(name.as_str()));
    let waiting: Vec<_> = mine
        .clone()
        .filter(|c| c.state != CallState::Answered)
        .collect();
    let longest = waiting
        .iter()
        .map(|c| live.at.duration_since(c.started_at).as_secs().max(0))
        .max()
        .map(|s| s.unsigned_abs());
    let mut agents: BTreeMap<&'static str, usize> = [
        AgentStatus::Available,
        AgentStatus::Ringing,
        AgentStatus::OnCall,
        AgentStatus::WrapUp,
        AgentStatus::Away,
    ]
    .into_iter()
    .map(|s| (s.as_str(), 0))
    .collect();
    for agent in live.agents.iter().filter(|a| a.groups.contains(&name)) {
        *agents.entry(agent.state.as_str()).or_default() += 1;
    }
    GroupNow {
        queues: group.queues.clone(),
        waiting: waiting.len(),
        longest_wait_seconds: longest,
        talking: mine.filter(|c| c.state == CallState::Answered).count(),
        agents,
        today: Today::default(),
        name,
    }
}

/// `GET /groups`.
pub(super) async fn list(State(shared): State<Shared>) -> Response {
    let config = shared.config();
    let live = shared.handle.live();
    let now = Timestamp::now();
    let since = config
        .groups
        .iter()
        .map(|g| midnight(g, now))
        .min()
        .unwrap_or(now);
    let calls = match shared.store.inbound_calls_since(since).await {
        Ok(calls) => calls,
        Err(failure) => return store_failed("read today's calls", &failure),
    };
    let groups: Vec<GroupNow> = config
        .groups
        .iter()
        .map(|group| {
            let mut now_of = now_of(group, &live);
            now_of.today = today(
                &group.name,
                midnight(group, now),
                &calls,
                config.admin.service_level,
            );
            now_of
        })
        .collect();
    Json(serde_json::json!({ "at": live.at, "groups": groups })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, outcome: &str, reason: Option<&str>, wait: i64) -> CallRow {
        let started = Timestamp::from_second(1_000_000).unwrap();
        CallRow {
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
            row("sales", "answered", None, 1),
        ];
        let today = today(
            "support",
            Timestamp::UNIX_EPOCH,
            &calls,
            std::time::Duration::from_secs(20),
        );
        assert_eq!(today.answered, 2);
        assert_eq!(today.abandoned, 1);
        assert_eq!(today.missed, 1);
        assert_eq!(today.average_wait_seconds, Some(22.5));
        // One of four answered within 20 s.
        assert_eq!(today.service_level, Some(0.25));
        let later = Timestamp::from_second(2_000_000).unwrap();
        assert!(today_is_empty(super::today(
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
