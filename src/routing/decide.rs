//! The decision for one queue call, DESIGN.md "Groups and routing" steps 1 to 7, as a pure
//! function of the groups, the time, the agents' states, the round-robin cursors and what the
//! contact directory knows of the caller.
//!
//! The whole ring plan is worked out up front, as if nobody answered: the entry group's available
//! agents in round-robin order, then the overflow targets for the reason at hand, depth first in
//! priority order, each group at most once. The proxy walks the plan, checking each agent's state
//! again just before ringing, and moves the group's cursor on every offer.

use std::collections::HashMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::decision::{Action, Decision, Offer, Reason, Step, Verdict, final_action_words};
use super::group::{Agent, Condition, Extension, FinalAction, GroupId, Groups};
use super::schedule::{Availability, Reading};

/// What the contact directory says about the calling number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerStatus {
    /// A known, active contact.
    Known,
    /// No contact has this number.
    Unknown,
    /// The contact exists but is marked inactive.
    Inactive,
    /// The directory was not consulted (no directory, or anonymous caller): no redirect applies.
    #[default]
    Unchecked,
}

/// A call to route.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The queue ID: the Request-URI user part of the PBX's INVITE.
    pub queue: &'a str,
    pub caller: CallerStatus,
    pub at: Timestamp,
}

/// Whether an agent can take a call now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    #[default]
    Available,
    /// Marked away by the agent or a supervisor.
    Away,
    /// On a call.
    Busy,
    /// Just finished a call; available again after the group's wrap-up time.
    WrapUp,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Available => "available",
            AgentState::Away => "away",
            AgentState::Busy => "busy",
            AgentState::WrapUp => "in wrap-up",
        }
    }
}

/// Agents' current states.
pub trait Presence {
    fn state(&self, extension: &Extension) -> AgentState;
}

/// Agents not in the map are available.
impl Presence for HashMap<Extension, AgentState> {
    fn state(&self, extension: &Extension) -> AgentState {
        self.get(extension).copied().unwrap_or_default()
    }
}

/// The round-robin memory: who was offered a group's previous call.
pub trait Cursors {
    fn last_offered(&self, group: &str) -> Option<&Extension>;
}

/// Keyed by group name.
impl Cursors for HashMap<String, Extension> {
    fn last_offered(&self, group: &str) -> Option<&Extension> {
        self.get(group)
    }
}

/// Decides where a call goes.
pub fn decide(
    groups: &Groups,
    call: &Call<'_>,
    presence: &impl Presence,
    cursors: &impl Cursors,
) -> Decision {
    let mut planner = Planner {
        groups,
        call,
        presence,
        cursors,
        visited: vec![false; groups.len()],
        offers: Vec::new(),
        steps: Vec::new(),
    };
    let Some(mut entry) = groups.by_queue(call.queue) else {
        planner.step(
            None,
            Verdict::Rejected,
            Some(Reason::UnknownQueue),
            format!("no group serves queue {}", call.queue),
        );
        return Decision {
            action: Action::Reject,
            group: None,
            extension: None,
            reason: Some(Reason::UnknownQueue),
            offers: Vec::new(),
            final_action: None,
            max_wait: None,
            explanation: planner.steps,
        };
    };
    planner.step(
        Some(entry),
        Verdict::Entry,
        None,
        format!("serves queue {}", call.queue),
    );

    let group = groups.get(entry);
    let redirect = match call.caller {
        CallerStatus::Unknown => group.unknown_caller_group.map(|to| {
            (
                to,
                "the caller's number is not in the contact directory",
                "unknown_caller_group",
            )
        }),
        CallerStatus::Inactive => group.inactive_caller_group.map(|to| {
            (
                to,
                "the caller is an inactive contact",
                "inactive_caller_group",
            )
        }),
        CallerStatus::Known | CallerStatus::Unchecked => None,
    };
    if let Some((to, why, key)) = redirect {
        planner.step(
            Some(to),
            Verdict::Redirected,
            None,
            format!("{why}: {} sends such calls here ({key})", group.name),
        );
        entry = to;
    }

    // Why the owning group itself does not ring, even when an overflow target does.
    let reason = planner.plan(entry);
    let owner = groups.get(entry);
    let wait = humantime::format_duration(owner.max_wait);
    let ending = final_action_words(owner.final_action);
    let (action, group, extension) = match planner.offers.first() {
        Some(first) => {
            let found = (
                Action::Ring,
                first.group.clone(),
                Some(first.extension.clone()),
            );
            let detail = format!("if nobody answers within {wait} in all: {ending}");
            planner.step(Some(entry), Verdict::Final, None, detail);
            found
        }
        None => {
            // No offers means the owning group was skipped, so a reason is always known here.
            let why = reason.unwrap_or(Reason::NoAgents);
            let action = match owner.final_action {
                FinalAction::Voicemail => Action::Voicemail,
                FinalAction::Reject => Action::Missed,
            };
            let detail = format!(
                "no group can take the call: missed ({}), {ending}",
                why.as_str()
            );
            planner.step(Some(entry), Verdict::Final, Some(why), detail);
            (action, owner.name.clone(), None)
        }
    };
    Decision {
        action,
        group: Some(group),
        extension,
        reason,
        offers: planner.offers,
        final_action: Some(owner.final_action),
        max_wait: Some(owner.max_wait),
        explanation: planner.steps,
    }
}

struct Planner<'a, P, C> {
    groups: &'a Groups,
    call: &'a Call<'a>,
    presence: &'a P,
    cursors: &'a C,
    visited: Vec<bool>,
    offers: Vec<Offer>,
    steps: Vec<Step>,
}

impl<P: Presence, C: Cursors> Planner<'_, P, C> {
    fn step(
        &mut self,
        group: Option<GroupId>,
        verdict: Verdict,
        reason: Option<Reason>,
        detail: String,
    ) {
        self.steps.push(Step {
            group: group.map(|g| self.groups.get(g).name.clone()),
            verdict,
            reason,
            detail,
        });
    }

    /// Adds a group's offers and those of its overflow targets; returns why the group itself
    /// could not take the call, if it could not.
    fn plan(&mut self, id: GroupId) -> Option<Reason> {
        self.visited[id] = true;
        let group = self.groups.get(id);
        let reading = group.schedule.read(self.call.at);
        let when = local_time_words(&reading, &group.schedule.timezone_name);
        let skipped = match reading.availability {
            Availability::Holiday(holiday) => {
                let mut detail = format!("holiday \"{}\" on {}", holiday.name, holiday.date);
                if holiday.is_partial() {
                    let _ = write!(detail, " from {} until {}", holiday.from, holiday.until);
                }
                let _ = write!(detail, " ({when})");
                Some((Condition::Holiday, detail))
            }
            Availability::OutOfHours => Some((Condition::OutOfHours, format!("closed ({when})"))),
            Availability::Open(interval) => {
                let open = match interval {
                    Some((day, interval)) => {
                        format!("open ({when}, within {} {interval})", day_name(day))
                    }
                    None => format!("open, no business hours set ({when})"),
                };
                self.ring_group(id, open)
            }
        };
        let condition = match &skipped {
            Some((condition, detail)) => {
                let detail = detail.clone();
                self.step(
                    Some(id),
                    Verdict::Skipped,
                    Some((*condition).into()),
                    detail,
                );
                *condition
            }
            None => Condition::NoAgents,
        };
        for overflow in &group.overflow {
            if !overflow.when.contains(&condition) {
                let when: Vec<&str> = overflow.when.iter().map(|c| c.as_str()).collect();
                self.step(
                    Some(overflow.target),
                    Verdict::NotApplicable,
                    None,
                    format!(
                        "{}'s overflow here is only for {}",
                        group.name,
                        when.join(", ")
                    ),
                );
            } else if self.visited[overflow.target] {
                self.step(
                    Some(overflow.target),
                    Verdict::AlreadyVisited,
                    None,
                    "already considered for this call; overflow does not loop".to_owned(),
                );
            } else {
                self.step(
                    Some(overflow.target),
                    Verdict::Overflow,
                    Some(condition.into()),
                    format!("overflow from {} ({})", group.name, condition.as_str()),
                );
                self.plan(overflow.target);
            }
        }
        skipped.map(|(condition, _)| condition.into())
    }

    /// Adds the group's available agents in round-robin order; `Some` (no agents) when none is.
    fn ring_group(&mut self, id: GroupId, open: String) -> Option<(Condition, String)> {
        let group = self.groups.get(id);
        let agents = &group.agents;
        let last = self.cursors.last_offered(&group.name);
        let start = last
            .and_then(|ext| agents.iter().position(|a| &a.extension == ext))
            .map_or(0, |i| i + 1);
        let mut ring: Vec<&Agent> = Vec::new();
        let mut unavailable: Vec<String> = Vec::new();
        for k in 0..agents.len() {
            let agent = &agents[(start + k) % agents.len()];
            let state = self.presence.state(&agent.extension);
            if state != AgentState::Available {
                unavailable.push(format!("{} {}", agent.extension, state.as_str()));
            } else if self.offers.iter().any(|o| o.extension == agent.extension) {
                unavailable.push(format!("{} already offered this call", agent.extension));
            } else {
                ring.push(agent);
            }
        }
        if ring.is_empty() {
            return Some((
                Condition::NoAgents,
                format!("{open} but no agent available: {}", unavailable.join(", ")),
            ));
        }
        let mut detail = open;
        let order: Vec<&str> = ring.iter().map(|a| a.extension.as_str()).collect();
        let _ = write!(detail, "; ring {}", order.join(", "));
        match last.filter(|_| start > 0) {
            Some(last) => {
                let _ = write!(
                    detail,
                    " (round-robin: {last} was offered the previous call)"
                );
            }
            None => detail.push_str(" (round-robin from the top of the list)"),
        }
        if !unavailable.is_empty() {
            let _ = write!(detail, "; skipped {}", unavailable.join(", "));
        }
        for agent in ring {
            self.offers.push(Offer {
                group: group.name.clone(),
                extension: agent.extension.clone(),
                ring_timeout: group.ring_timeout,
            });
        }
        self.step(Some(id), Verdict::Ring, None, detail);
        None
    }
}

fn local_time_words(reading: &Reading<'_>, zone: &str) -> String {
    let local = reading.local;
    format!(
        "{} {} {:02}:{:02} {zone}",
        day_name(local.weekday()),
        local.date(),
        local.hour(),
        local.minute()
    )
}

fn day_name(day: jiff::civil::Weekday) -> &'static str {
    use jiff::civil::Weekday::*;
    match day {
        Monday => "Monday",
        Tuesday => "Tuesday",
        Wednesday => "Wednesday",
        Thursday => "Thursday",
        Friday => "Friday",
        Saturday => "Saturday",
        Sunday => "Sunday",
    }
}

#[cfg(test)]
mod tests;
