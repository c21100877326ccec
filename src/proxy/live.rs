//! The proxy's live view for supervisors ([`crate::live`]): built from the calls table and the
//! agents' availability, never from the store. An agent's state is read from the calls that
//! hold them (ringing for an inbound call offered to them, on a call when answered or when they
//! dialled out), then from their own choice (away) and the wrap-up clock, so what the wallboard
//! shows is what routing uses. Only configured agents are listed: a transfer to an extension
//! of no group shows on the call, not as an agent.

use rustc_hash::FxHashMap;

use super::{Core, Now};
use crate::call::Direction;
use crate::live::{AgentStatus, CallState, Live, LiveAgent, LiveCall};
use crate::routing::{AgentState, Extension};

impl Core {
    /// Whether anything supervisors see may have changed since the last call; clears the mark.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// What the proxy counted since it started.
    pub fn counters(&self) -> crate::metrics::Counters {
        self.counters.clone()
    }

    /// Every call in progress and every agent, now.
    pub fn live(&mut self, now: Now) -> Live {
        let mut calls: Vec<LiveCall> = self.calls.values().filter_map(|c| c.live()).collect();
        calls.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));

        // Which call holds each agent: talking wins over ringing.
        let mut holding: FxHashMap<&str, (AgentStatus, &str)> = FxHashMap::default();
        for call in &calls {
            let Some(agent) = call.agent.as_deref() else {
                continue;
            };
            let status = match (call.direction, call.state) {
                (Direction::Outbound, _) | (_, CallState::Answered) => AgentStatus::OnCall,
                (
                    Direction::Inbound,
                    CallState::Ringing | CallState::Waiting | CallState::Voicemail,
                ) => AgentStatus::Ringing,
            };
            let entry = holding.entry(agent).or_insert((status, &call.id));
            if status == AgentStatus::OnCall {
                *entry = (status, &call.id);
            }
        }

        // Configured agents in configuration order.
        let mut order: Vec<(Extension, Option<String>, Vec<String>)> = Vec::new();
        for group in self.config.groups.iter() {
            for agent in &group.agents {
                match order.iter_mut().find(|(e, _, _)| *e == agent.extension) {
                    Some((_, _, groups)) => groups.push(group.name.to_string()),
                    None => order.push((
                        agent.extension.clone(),
                        agent.name.clone(),
                        vec![group.name.to_string()],
                    )),
                }
            }
        }

        let mut agents = Vec::with_capacity(order.len());
        for (extension, name, groups) in order {
            let routing = self.agents.state(&extension, now.mono);
            let held = holding.get(extension.as_str()).copied();
            // A call in progress shows even when the agent has meanwhile said they are away.
            let (state, call) = match (routing, held) {
                (_, Some((status, call))) => (status, Some(call.to_owned())),
                (AgentState::Away, None) => (AgentStatus::Away, None),
                // Busy with nothing sipdesk rings or connects: an outbound call it lost sight
                // of, or one it still counts; shown as on a call.
                (AgentState::Busy, None) => (AgentStatus::OnCall, None),
                (AgentState::WrapUp, None) => (AgentStatus::WrapUp, None),
                (AgentState::Available, None) => (AgentStatus::Available, None),
            };
            let since = match self.live_since.get(&extension) {
                Some((was, was_call, since)) if *was == state && *was_call == call => *since,
                _ => now.wall,
            };
            self.live_since
                .insert(extension.clone(), (state, call.clone(), since));
            agents.push(LiveAgent {
                away: routing == AgentState::Away,
                reason: self.agents.reason(&extension).map(str::to_owned),
                extension: extension.to_string(),
                name,
                groups,
                state,
                since,
                call,
            });
        }
        // Extensions no longer configured are forgotten.
        self.live_since
            .retain(|e, _| agents.iter().any(|a| a.extension == e.as_str()));
        Live {
            at: now.wall,
            calls,
            agents,
        }
    }
}
