//! What is happening now, as the proxy publishes it for supervisors: every call in progress
//! with its state and agent, and every agent's state with since when and on which call.
//!
//! The proxy's thread builds a [`Live`] snapshot ([`crate::proxy::Core::live`]) after anything
//! changed (at most five times a second) and once a second regardless (a wrap-up ends by the
//! clock); [`crate::control::Publisher`] hands it to the admin API and turns the difference
//! between two snapshots into [`LiveEvent`]s for `GET /events`. Readers never touch the
//! proxy's state, and the snapshot never reaches the database: it is the truth of one instance
//! now, where the store keeps what happened.

use jiff::Timestamp;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

use crate::call::Direction;

/// One moment of the proxy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Live {
    pub at: Timestamp,
    /// Calls not yet ended, oldest first.
    pub calls: Vec<LiveCall>,
    /// Every configured agent, in configuration order.
    pub agents: Vec<LiveAgent>,
}

/// Where a call in progress is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Waiting between two agents (or for the next group).
    Waiting,
    /// An agent's phone rings.
    Ringing,
    /// An agent took it.
    Answered,
    /// sipdesk took it: the caller hears the greeting or leaves a message.
    Voicemail,
}

/// A call in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveCall {
    pub id: String,
    pub direction: Direction,
    pub caller: String,
    pub callee: String,
    pub queue: Option<String>,
    /// The group ringing or answering it now, else the group owning it.
    pub group: Option<String>,
    pub state: CallState,
    /// The agent rung or talking.
    pub agent: Option<String>,
    pub started_at: Timestamp,
    pub answered_at: Option<Timestamp>,
}

/// An agent's state, as a supervisor reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Available,
    Ringing,
    OnCall,
    WrapUp,
    Away,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Available => "available",
            AgentStatus::Ringing => "ringing",
            AgentStatus::OnCall => "on_call",
            AgentStatus::WrapUp => "wrap_up",
            AgentStatus::Away => "away",
        }
    }
}

/// One agent now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveAgent {
    pub extension: String,
    pub name: Option<String>,
    /// The groups the agent takes calls for, in configuration order.
    pub groups: Vec<String>,
    pub state: AgentStatus,
    /// When the agent entered this state (as seen by this instance).
    pub since: Timestamp,
    /// The call ringing them or that they talk on.
    pub call: Option<String>,
    /// Whether the agent said they are away: routing skips them. Usually `state` is `away` then,
    /// but a call already in progress shows until it ends.
    pub away: bool,
    /// Why the agent is away, when they said.
    pub reason: Option<String>,
}

/// A change between two snapshots, as `GET /events` sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A call started or changed state (or agent).
    Call { call: LiveCall },
    /// A call is no longer in progress (its record is in the store).
    CallEnded { id: String },
    /// An agent's state changed.
    Agent { agent: LiveAgent },
}

impl LiveEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Call { .. } => "call",
            LiveEvent::CallEnded { .. } => "call_ended",
            LiveEvent::Agent { .. } => "agent",
        }
    }
}

impl Live {
    /// What changed from `before` to `self`, calls first.
    pub fn changes_since(&self, before: &Live) -> Vec<LiveEvent> {
        // Indexed: a large company's snapshot holds thousands of agents, and this runs on the
        // proxy's thread several times a second.
        let old_calls: HashMap<&str, &LiveCall> =
            before.calls.iter().map(|c| (c.id.as_str(), c)).collect();
        let new_calls: HashSet<&str> = self.calls.iter().map(|c| c.id.as_str()).collect();
        let old_agents: HashMap<&str, &LiveAgent> = before
            .agents
            .iter()
            .map(|a| (a.extension.as_str(), a))
            .collect();
        let mut events = Vec::new();
        for call in &self.calls {
            if old_calls.get(call.id.as_str()) != Some(&call) {
                events.push(LiveEvent::Call { call: call.clone() });
            }
        }
        for call in &before.calls {
            if !new_calls.contains(call.id.as_str()) {
                events.push(LiveEvent::CallEnded {
                    id: call.id.clone(),
                });
            }
        }
        for agent in &self.agents {
            if old_agents.get(agent.extension.as_str()) != Some(&agent) {
                events.push(LiveEvent::Agent {
                    agent: agent.clone(),
                });
            }
        }
        events
    }

    pub fn call(&self, id: &str) -> Option<&LiveCall> {
        self.calls.iter().find(|c| c.id == id)
    }

    pub fn agent(&self, extension: &str) -> Option<&LiveAgent> {
        self.agents.iter().find(|a| a.extension == extension)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(extension: &str, state: AgentStatus) -> LiveAgent {
        LiveAgent {
            extension: extension.to_owned(),
            name: None,
            groups: vec!["support".to_owned()],
            state,
            since: Timestamp::UNIX_EPOCH,
            call: None,
            away: state == AgentStatus::Away,
            reason: None,
        }
    }

    fn call(id: &str, state: CallState) -> LiveCall {
        LiveCall {
            id: id.to_owned(),
            direction: Direction::Inbound,
            caller: "+34911000000".to_owned(),
            callee: "600".to_owned(),
            queue: Some("600".to_owned()),
            group: Some("support".to_owned()),
            state,
            agent: Some("2001".to_owned()),
            started_at: Timestamp::UNIX_EPOCH,
            answered_at: None,
        }
    }

    #[test]
    fn only_what_changed_is_an_event() {
        let before = Live {
            at: Timestamp::UNIX_EPOCH,
            calls: vec![call("a", CallState::Ringing), call("b", CallState::Ringing)],
            agents: vec![
                agent("2001", AgentStatus::Ringing),
                agent("2002", AgentStatus::Away),
            ],
        };
        let after = Live {
            at: Timestamp::UNIX_EPOCH,
            calls: vec![
                call("a", CallState::Answered),
                call("c", CallState::Ringing),
            ],
            agents: vec![
                agent("2001", AgentStatus::OnCall),
                agent("2002", AgentStatus::Away),
            ],
        };
        let events = after.changes_since(&before);
        assert_eq!(
            events,
            vec![
                LiveEvent::Call {
                    call: call("a", CallState::Answered)
                },
                LiveEvent::Call {
                    call: call("c", CallState::Ringing)
                },
                LiveEvent::CallEnded { id: "b".to_owned() },
                LiveEvent::Agent {
                    agent: agent("2001", AgentStatus::OnCall)
                },
            ]
        );
        assert!(after.changes_since(&after).is_empty());
    }
}
