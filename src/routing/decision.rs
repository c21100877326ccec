//! What the routing engine decided for a call, and why: the value `sipdesk route` prints, the
//! proxy executes and the call's events keep.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::group::{Condition, Extension, FinalAction};

/// What happens to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Agents are rung one after another ([`Decision::offers`]).
    Ring,
    /// Nobody is rung; the call is turned away with a final response and recorded as missed.
    Missed,
    /// Nobody is rung; sipdesk answers and records a voicemail.
    Voicemail,
    /// The call is not a queue call sipdesk knows (404); no group records it.
    Reject,
}

/// Why a call is not rung in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    OutOfHours,
    Holiday,
    NoAgents,
    UnknownQueue,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OutOfHours => "out_of_hours",
            Reason::Holiday => "holiday",
            Reason::NoAgents => "no_agents",
            Reason::UnknownQueue => "unknown_queue",
        }
    }
}

impl From<Condition> for Reason {
    fn from(condition: Condition) -> Reason {
        match condition {
            Condition::NoAgents => Reason::NoAgents,
            Condition::OutOfHours => Reason::OutOfHours,
            Condition::Holiday => Reason::Holiday,
        }
    }
}

/// One agent to ring, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offer {
    pub group: String,
    pub extension: Extension,
    #[serde(rename = "ring_timeout_seconds", serialize_with = "seconds")]
    pub ring_timeout: Duration,
}

/// What a step of the explanation says about a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The group serves the called queue.
    Entry,
    /// The caller is sent to this group instead (unknown or inactive caller).
    Redirected,
    /// The group's agents are rung.
    Ring,
    /// The group cannot take the call (see the reason).
    Skipped,
    /// The call goes on to this overflow target.
    Overflow,
    /// An overflow target whose conditions do not include the current reason.
    NotApplicable,
    /// The group was already considered for this call; overflow never loops.
    AlreadyVisited,
    /// What happens at the end.
    Final,
    /// No group serves the queue.
    Rejected,
}

/// One line of the explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub group: Option<String>,
    pub verdict: Verdict,
    pub reason: Option<Reason>,
    pub detail: String,
}

/// The routing decision for one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// Ring: the group of the first agent. Missed or voicemail: the group that owns the call.
    pub group: Option<String>,
    /// The first agent to ring.
    pub extension: Option<Extension>,
    pub reason: Option<Reason>,
    /// Every agent to ring, in order, if nobody answers earlier.
    pub offers: Vec<Offer>,
    /// What follows when every offer goes unanswered.
    pub final_action: Option<FinalAction>,
    /// How long the caller may wait in all before the final action.
    #[serde(rename = "max_wait_seconds", serialize_with = "optional_seconds")]
    pub max_wait: Option<Duration>,
    pub explanation: Vec<Step>,
}

fn seconds<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(duration.as_secs_f64())
}

fn optional_seconds<S: Serializer>(duration: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => seconds(d, s),
        None => s.serialize_none(),
    }
}

impl fmt::Display for Decision {
    /// The decision in words, as `sipdesk route` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.group.as_deref().unwrap_or("-");
        match self.action {
            Action::Ring => {
                let first = self
                    .offers
                    .first()
                    .map(|o| o.extension.as_str())
                    .unwrap_or("-");
                writeln!(f, "ring {first} in group {group}")?;
                let order: Vec<String> = self
                    .offers
                    .iter()
                    .map(|o| {
                        format!(
                            "{} ({}, {})",
                            o.extension,
                            o.group,
                            humantime::format_duration(o.ring_timeout)
                        )
                    })
                    .collect();
                writeln!(f, "  ring order: {}", order.join(", "))?;
                if let Some(action) = self.final_action {
                    writeln!(f, "  if nobody answers: {}", final_action_words(action))?;
                }
            }
            Action::Missed | Action::Voicemail => {
                let reason = self.reason.map(Reason::as_str).unwrap_or("-");
                let what = if self.action == Action::Missed {
                    "missed: rejected"
                } else {
                    "missed: to voicemail"
                };
                writeln!(f, "{what} ({reason}) in group {group}")?;
            }
            Action::Reject => writeln!(f, "rejected: not found (unknown_queue)")?,
        }
        writeln!(f, "why:")?;
        for (n, step) in self.explanation.iter().enumerate() {
            match &step.group {
                Some(group) => writeln!(f, "  {}. {group}: {}", n + 1, step.detail)?,
                None => writeln!(f, "  {}. {}", n + 1, step.detail)?,
            }
        }
        Ok(())
    }
}

/// How the final action reads in an explanation.
pub(crate) fn final_action_words(action: FinalAction) -> &'static str {
    match action {
        FinalAction::Voicemail => "voicemail",
        FinalAction::Reject => "rejected (480 Temporarily Unavailable)",
    }
}
