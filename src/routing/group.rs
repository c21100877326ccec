//! What a phone group is once its configuration has been checked: queues, schedule, ordered
//! agents, timers, overflow and redirects. Built by `config`, read by the decision.

use crate::media::greeting::Greeting;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::schedule::Schedule;

/// Index of a group in [`Groups`].
pub type GroupId = usize;

/// An agent's extension: the user part of `sip:<extension>@<pbx>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Extension(Arc<str>);

/// Why a text cannot be the user part of a SIP URI (an extension or a queue ID).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserPartError {
    #[error("it cannot be empty")]
    Empty,
    #[error(
        "\"{text}\" has {found:?}, which a SIP user part cannot carry unescaped; use digits, letters and - _ . ! ~ * ' ( ) & = + $ , ; ? /"
    )]
    BadCharacter { text: String, found: char },
    #[error("\"{text}\" is longer than 64 characters")]
    TooLong { text: String },
}

/// Checks that `text` is a SIP user part (RFC 3261 `user`, without %-escapes).
pub fn check_user_part(text: &str) -> Result<(), UserPartError> {
    if text.is_empty() {
        return Err(UserPartError::Empty);
    }
    if text.len() > 64 {
        return Err(UserPartError::TooLong {
            text: text.to_owned(),
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c);
    match text.chars().find(|c| !allowed(*c)) {
        Some(found) => Err(UserPartError::BadCharacter {
            text: text.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

impl Extension {
    /// An extension is any SIP user part.
    pub fn parse(text: &str) -> Result<Extension, UserPartError> {
        check_user_part(text).map(|()| Extension(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Someone who answers a group's calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub extension: Extension,
    /// Matches the agent with their helpdesk user.
    pub email: Option<String>,
    pub name: Option<String>,
}

/// A situation in which a group sends its calls elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Nobody available, or everybody tried without answer.
    NoAgents,
    OutOfHours,
    Holiday,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::NoAgents,
        Condition::OutOfHours,
        Condition::Holiday,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::NoAgents => "no_agents",
            Condition::OutOfHours => "out_of_hours",
            Condition::Holiday => "holiday",
        }
    }
}

/// One overflow target of a group, in priority order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overflow {
    pub target: GroupId,
    pub when: Vec<Condition>,
}

/// What happens to a call once every group and agent has been tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalAction {
    /// sipdesk answers and records a message.
    Voicemail,
    /// The call is refused with a final response.
    Reject,
}

/// A phone group, checked.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: Arc<str>,
    pub queues: Vec<String>,
    pub schedule: Schedule,
    /// In the order calls are distributed.
    pub agents: Vec<Agent>,
    pub ring_timeout: Duration,
    pub wrap_up: Duration,
    pub max_wait: Duration,
    pub overflow: Vec<Overflow>,
    pub unknown_caller_group: Option<GroupId>,
    pub inactive_caller_group: Option<GroupId>,
    pub final_action: FinalAction,
    /// The final action for a call that came while the group was closed (out of hours or a
    /// holiday) and that no overflow took.
    pub closed_action: FinalAction,
    /// Whether the transfers of its answered calls are followed (else an agent's REFER gets 403).
    pub allow_transfer: bool,
    /// What a voicemail plays first.
    pub greetings: Greetings,
    /// Where each extension is in `agents` (filled by [`Groups::new`]).
    pub positions: FxHashMap<Extension, usize>,
}

/// A group's voicemail greetings, loaded once with the configuration.
#[derive(Clone, Debug, Default)]
pub struct Greetings {
    pub default: Option<Arc<Greeting>>,
    pub out_of_hours: Option<Arc<Greeting>>,
    pub holiday: Option<Arc<Greeting>>,
    pub no_agents: Option<Arc<Greeting>>,
}

impl Greetings {
    /// The greeting for a call that reached voicemail for `reason` (`None`: every agent was
    /// tried): the reason's own, else the group's.
    pub fn for_reason(&self, reason: Option<super::Reason>) -> Option<&Arc<Greeting>> {
        use super::Reason;
        let own = match reason {
            Some(Reason::OutOfHours) => self.out_of_hours.as_ref(),
            Some(Reason::Holiday) => self.holiday.as_ref(),
            Some(Reason::NoAgents) => self.no_agents.as_ref(),
            _ => None,
        };
        own.or(self.default.as_ref())
    }
}

impl Group {
    /// The final action for a call that ends here for `reason` (`None`: agents were rung).
    pub fn final_action_for(&self, reason: Option<super::Reason>) -> FinalAction {
        match reason {
            Some(super::Reason::OutOfHours | super::Reason::Holiday) => self.closed_action,
            _ => self.final_action,
        }
    }

    /// The position of an agent in the distribution order.
    pub fn position(&self, extension: &Extension) -> Option<usize> {
        self.positions.get(extension).copied()
    }
}

/// Every group, indexed by queue ID and by name.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    groups: Vec<Group>,
    by_queue: HashMap<String, GroupId>,
    by_name: HashMap<Arc<str>, GroupId>,
}

impl Groups {
    /// Indexes groups whose names and queues were already checked to be unique.
    pub fn new(mut groups: Vec<Group>) -> Groups {
        let mut by_queue = HashMap::new();
        let mut by_name = HashMap::new();
        for group in &mut groups {
            group.positions = group
                .agents
                .iter()
                .enumerate()
                .map(|(i, a)| (a.extension.clone(), i))
                .collect();
        }
        for (id, group) in groups.iter().enumerate() {
            by_name.insert(group.name.clone(), id);
            for queue in &group.queues {
                by_queue.insert(queue.clone(), id);
            }
        }
        Groups {
            groups,
            by_queue,
            by_name,
        }
    }

    pub fn get(&self, id: GroupId) -> &Group {
        &self.groups[id]
    }

    pub fn by_queue(&self, queue: &str) -> Option<GroupId> {
        self.by_queue.get(queue).copied()
    }

    /// The e-mail of the agent with this extension, in whichever group gives one (the
    /// configuration refuses one extension with two).
    pub fn email_of(&self, extension: &Extension) -> Option<String> {
        self.groups
            .iter()
            .flat_map(|g| g.agents.iter())
            .filter(|a| &a.extension == extension)
            .find_map(|a| a.email.clone())
    }

    pub fn by_name(&self, name: &str) -> Option<GroupId> {
        self.by_name.get(name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_sip_user_parts() {
        for good in ["2001", "agent.maria", "+34911239613", "a-b_c", "x;y=z"] {
            assert!(Extension::parse(good).is_ok(), "{good} should be accepted");
        }
        assert_eq!(Extension::parse(""), Err(UserPartError::Empty));
        for bad in ["20 01", "2001@pbx", "ext:1", "<2001>", "ñ", "a%20b"] {
            assert!(
                matches!(
                    Extension::parse(bad),
                    Err(UserPartError::BadCharacter { .. })
                ),
                "{bad} should be refused"
            );
        }
    }
}
