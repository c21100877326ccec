//! `GET /groups`: each group now (callers ringing and the longest wait, agents by state, from
//! the proxy's snapshot) and today ([`crate::figures`], from the store).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;

use super::{Shared, store_failed};
use crate::figures::{self, Today};
use crate::live::{AgentStatus, CallState, Live};
use crate::routing::Group;

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

/// The live part of one group.
fn now_of(group: &Group, live: &Live) -> GroupNow {
    let name = group.name.to_string();
    let mine = live
        .calls
        .iter()
        .filter(|c| c.group.as_deref() == Some(name.as_str()));
    let waiting: Vec<_> = mine
        .clone()
        .filter(|c| matches!(c.state, CallState::Waiting | CallState::Ringing))
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
    let today = match figures::today(&shared.store, &config, now).await {
        Ok(today) => today,
        Err(failure) => return store_failed("read today's calls", &failure),
    };
    let groups: Vec<GroupNow> = config
        .groups
        .iter()
        .zip(today)
        .map(|(group, today)| {
            let mut now_of = now_of(group, &live);
            now_of.today = today;
            now_of
        })
        .collect();
    Json(serde_json::json!({ "at": live.at, "groups": groups })).into_response()
}
