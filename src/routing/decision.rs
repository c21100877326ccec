//! What the routing engine decided for a call, and why: the value `sipdesk route` prints, the
//! proxy executes and the call's events keep.
//!
//! The explanation is kept as data ([`Detail`]) and put into words only when shown or stored, so
//! deciding stays cheap on the SIP path however many groups a call walks through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::{DateTime, Weekday};
use serde::{Serialize, Serializer};

use super::decide::AgentState;
use super::group::{Condition, Extension, FinalAction};
use super::schedule::{ClockTime, HolidayDate, Interval};

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
    pub group: Arc<str>,
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
    pub group: Option<Arc<str>>,
    pub verdict: Verdict,
    pub reason: Option<Reason>,
    /// In words when serialized.
    #[serde(serialize_with = "words")]
    pub detail: Detail,
}

/// The wall-clock time a group's schedule was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub datetime: DateTime,
    pub zone: Arc<str>,
}

/// An agent passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    pub extension: Extension,
    /// `None`: available, but already offered this call in another group.
    pub state: Option<AgentState>,
}

/// What a step found, as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    ServesQueue(String),
    UnknownQueue(String),
    Redirected {
        from: Arc<str>,
        /// The key that sent the caller here: `unknown_caller_group` or `inactive_caller_group`.
        key: &'static str,
    },
    Holiday {
        name: Arc<str>,
        date: HolidayDate,
        /// For a partial day.
        hours: Option<(ClockTime, ClockTime)>,
        at: LocalTime,
    },
    Closed {
        at: LocalTime,
    },
    /// Open, with agents to ring in this order: the first few named, `available` counted, and
    /// `more` when the count stopped there (large groups are not read to their end).
    Ring {
        at: LocalTime,
        open: Option<(Weekday, Interval)>,
        order: Vec<Extension>,
        available: usize,
        more: bool,
        /// Who was offered the group's previous call, when the order starts after them.
        after: Option<Extension>,
        /// Agents passed over (the first few named, `passed_count` in all).
        passed: Vec<Passed>,
        passed_count: usize,
    },
    /// Open, but nobody can ring.
    NoAgents {
        at: LocalTime,
        open: Option<(Weekday, Interval)>,
        passed: Vec<Passed>,
        passed_count: usize,
    },
    OverflowNotFor {
        from: Arc<str>,
        when: Vec<Condition>,
    },
    AlreadyVisited,
    Overflow {
        from: Arc<str>,
        condition: Condition,
    },
    /// The walk found agents: what follows when none answers.
    Afterwards {
        max_wait: Duration,
        action: FinalAction,
    },
    /// The walk found nobody.
    Missed {
        reason: Reason,
        action: FinalAction,
    },
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.datetime;
        write!(
            f,
            "{} {:04}-{:02}-{:02} {:02}:{:02} {}",
            day_name(d.weekday()),
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            self.zone
        )
    }
}

fn open_words(
    f: &mut fmt::Formatter<'_>,
    at: &LocalTime,
    open: &Option<(Weekday, Interval)>,
) -> fmt::Result {
    match open {
        Some((day, interval)) => write!(f, "open ({at}, within {} {interval})", day_name(*day)),
        None => write!(f, "open, no business hours set ({at})"),
    }
}

fn passed_words(passed: &[Passed], count: usize) -> String {
    let words: Vec<String> = passed
        .iter()
        .map(|p| match p.state {
            Some(state) => format!("{} {}", p.extension, state.as_str()),
            None => format!("{} already offered this call", p.extension),
        })
        .collect();
    with_more(words.join(", "), count.saturating_sub(passed.len()))
}

fn list<T: fmt::Display>(items: &[T], count: usize) -> String {
    let words: Vec<String> = items.iter().map(ToString::to_string).collect();
    with_more(words.join(", "), count.saturating_sub(items.len()))
}

fn with_more(text: String, more: usize) -> String {
    if more == 0 {
        text
    } else {
        format!("{text} and {more} more")
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::ServesQueue(queue) => write!(f, "serves queue {queue}"),
            Detail::UnknownQueue(queue) => write!(f, "no group serves queue {queue}"),
            Detail::Redirected { from, key } => {
                let why = if *key == "unknown_caller_group" {
                    "the caller's number is not in the contact directory"
                } else {
                    "the caller is an inactive contact"
                };
                write!(f, "{why}: {from} sends such calls here ({key})")
            }
            Detail::Holiday {
                name,
                date,
                hours,
                at,
            } => {
                write!(f, "holiday \"{name}\" on {date}")?;
                if let Some((from, until)) = hours {
                    write!(f, " from {from} until {until}")?;
                }
                write!(f, " ({at})")
            }
            Detail::Closed { at } => write!(f, "closed ({at})"),
            Detail::Ring {
                at,
                open,
                order,
                available,
                more,
                after,
                passed,
                passed_count,
            } => {
                open_words(f, at, open)?;
                if *more {
                    write!(f, "; ring {} and more", list(order, order.len()))?;
                } else {
                    write!(f, "; ring {}", list(order, *available))?;
                }
                match after {
                    Some(last) => {
                        write!(f, " (round-robin: {last} was offered the previous call)")?
                    }
                    None => write!(f, " (round-robin from the top of the list)")?,
                }
                if !passed.is_empty() {
                    write!(f, "; skipped {}", passed_words(passed, *passed_count))?;
                }
                Ok(())
            }
            Detail::NoAgents {
                at,
                open,
                passed,
                passed_count,
            } => {
                open_words(f, at, open)?;
                write!(
                    f,
                    " but no agent available: {}",
                    passed_words(passed, *passed_count)
                )
            }
            Detail::OverflowNotFor { from, when } => {
                let when: Vec<&str> = when.iter().map(|c| c.as_str()).collect();
                write!(f, "{from}'s overflow here is only for {}", when.join(", "))
            }
            Detail::AlreadyVisited => {
                write!(
                    f,
                    "already considered for this call; overflow does not loop"
                )
            }
            Detail::Overflow { from, condition } => {
                write!(f, "overflow from {from} ({})", condition.as_str())
            }
            Detail::Afterwards { max_wait, action } => write!(
                f,
                "if nobody answers within {} in all: {}",
                humantime::format_duration(*max_wait),
                final_action_words(*action)
            ),
            Detail::Missed { reason, action } => write!(
                f,
                "no group can take the call: missed ({}), {}",
                reason.as_str(),
                final_action_words(*action)
            ),
        }
    }
}

/// The routing decision for one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// Ring: the group of the first agent. Missed or voicemail: the group that owns the call.
    pub group: Option<Arc<str>>,
    /// The first agent to ring.
    pub extension: Option<Extension>,
    /// Why the owning group does not ring itself (even when an overflow target does).
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

fn words<S: Serializer>(detail: &Detail, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(detail)
}

impl fmt::Display for Decision {
    /// The decision in words, as `sipdesk route` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.group.as_deref().unwrap_or("-");
        match self.action {
            Action::Ring => {
                let first = self.extension.as_ref().map_or("-", |e| e.as_str());
                writeln!(f, "ring {first} in group {group}")?;
                let order: Vec<String> = self
                    .offers
                    .iter()
                    .map(|o| {
                        let timeout = humantime::format_duration(o.ring_timeout);
                        format!("{} ({}, {timeout})", o.extension, o.group)
                    })
                    .collect();
                writeln!(f, "  ring order: {}", order.join(", "))?;
                if let Some(action) = self.final_action {
                    writeln!(f, "  if nobody answers: {}", final_action_words(action))?;
                }
            }
            Action::Missed | Action::Voicemail => {
                let reason = self.reason.map_or("-", Reason::as_str);
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
fn final_action_words(action: FinalAction) -> &'static str {
    match action {
        FinalAction::Voicemail => "voicemail",
        FinalAction::Reject => "rejected (480 Temporarily Unavailable)",
    }
}

pub(crate) fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "Monday",
        Weekday::Tuesday => "Tuesday",
        Weekday::Wednesday => "Wednesday",
        Weekday::Thursday => "Thursday",
        Weekday::Friday => "Friday",
        Weekday::Saturday => "Saturday",
        Weekday::Sunday => "Sunday",
    }
}
