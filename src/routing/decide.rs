//! The decision for one queue call, DESIGN.md "Groups and routing" steps 1 to 7, as a pure
//! function of the groups, the time, the agents' states, the round-robin cursors and what the
//! contact directory knows of the caller.
//!
//! A call walks its groups one at a time ([`Route`]): the owning group's available agents in
//! round-robin order, then, when they are exhausted (or the group cannot take calls), its overflow
//! targets for the reason at hand, depth first in priority order, each group at most once. Each
//! group is read when the call reaches it. The proxy moves the group's cursor on every offer and
//! checks an agent's state again just before ringing; [`decide`] plans the whole walk at once,
//! as if nobody answered, for `sipdesk route` and the tests.

use std::collections::HashMap;

use rustc_hash::FxHashSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::decision::{Action, Decision, Detail, LocalTime, Offer, Passed, Reason, Step, Verdict};
use super::group::{Condition, Extension, FinalAction, GroupId, Groups};
use super::schedule::Availability;

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

/// Decides where a call goes, planning every offer as if nobody answered and nothing changed
/// meanwhile: what `sipdesk route` shows. The proxy walks the same [`Route`] one group at a time.
pub fn decide(
    groups: &Groups,
    call: &Call<'_>,
    presence: &impl Presence,
    cursors: &impl Cursors,
) -> Decision {
    let mut route = match Route::start(groups, call) {
        Ok(route) => route,
        Err(rejected) => return rejected,
    };
    let mut offers = Vec::new();
    while route.next_group(groups, call.at, presence, cursors) {
        while let Some(offer) = route.next_offer(groups, presence) {
            offers.push(offer);
        }
    }
    route.finish(groups, offers)
}

/// A call's walk through its groups: the owning group first, then its overflow targets for the
/// reason at hand, depth first in priority order, each group at most once. Each step yields the
/// next group that can ring, read at the time of that step, so an overflow target's hours and
/// agents are judged when the call actually reaches it.
#[derive(Clone, Debug)]
pub struct Route {
    /// The group that owns the call (after a caller redirect).
    owner: GroupId,
    /// Why the owner could not ring, once it has been read.
    reason: Option<Reason>,
    visited: Vec<bool>,
    /// Groups whose overflow targets are still to be tried, innermost last.
    stack: Vec<Frame>,
    /// Extensions offered so far in this call.
    offered: FxHashSet<Extension>,
    /// The group being rung and where its round-robin order stands.
    ring: Option<Ring>,
    started: bool,
    steps: Vec<Step>,
}

/// A group being rung: its agents in round-robin order from `start`, `next` of them tried.
#[derive(Clone, Copy, Debug)]
struct Ring {
    group: GroupId,
    start: usize,
    next: usize,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    group: GroupId,
    condition: Condition,
    next_overflow: usize,
}

impl Route {
    /// Finds the group that owns a call: the queue's group, or the group it redirects this
    /// caller to. An unknown queue is the whole decision: rejected.
    pub fn start(groups: &Groups, call: &Call<'_>) -> Result<Route, Decision> {
        let mut route = Route {
            owner: 0,
            reason: None,
            visited: vec![false; groups.len()],
            stack: Vec::new(),
            offered: FxHashSet::default(),
            ring: None,
            started: false,
            steps: Vec::new(),
        };
        let Some(entry) = groups.by_queue(call.queue) else {
            let detail = Detail::UnknownQueue(call.queue.to_owned());
            route.step(
                groups,
                None,
                Verdict::Rejected,
                Some(Reason::UnknownQueue),
                detail,
            );
            return Err(Decision {
                action: Action::Reject,
                group: None,
                extension: None,
                reason: Some(Reason::UnknownQueue),
                offers: Vec::new(),
                final_action: None,
                max_wait: None,
                explanation: route.steps,
            });
        };
        let detail = Detail::ServesQueue(call.queue.to_owned());
        route.step(groups, Some(entry), Verdict::Entry, None, detail);
        let group = groups.get(entry);
        let redirect = match call.caller {
            CallerStatus::Unknown => group
                .unknown_caller_group
                .map(|to| (to, "unknown_caller_group")),
            CallerStatus::Inactive => group
                .inactive_caller_group
                .map(|to| (to, "inactive_caller_group")),
            CallerStatus::Known | CallerStatus::Unchecked => None,
        };
        route.owner = entry;
        if let Some((to, key)) = redirect {
            let detail = Detail::Redirected {
                from: group.name.clone(),
                key,
            };
            route.step(groups, Some(to), Verdict::Redirected, None, detail);
            route.owner = to;
        }
        Ok(route)
    }

    /// The group that owns the call.
    pub fn owner(&self) -> GroupId {
        self.owner
    }

    /// Why the owning group did not ring, once known.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// What was considered so far, and why.
    pub fn explanation(&self) -> &[Step] {
        &self.steps
    }

    /// Moves on to the next group that can ring; its agents then come from
    /// [`Route::next_offer`]. `false` when every option is exhausted.
    pub fn next_group(
        &mut self,
        groups: &Groups,
        at: Timestamp,
        presence: &impl Presence,
        cursors: &impl Cursors,
    ) -> bool {
        self.ring = None;
        if !self.started {
            self.started = true;
            if self.visit(groups, self.owner, at, presence, cursors) {
                return true;
            }
        }
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return false;
            };
            let group = groups.get(frame.group);
            let Some(overflow) = group.overflow.get(frame.next_overflow) else {
                self.stack.pop();
                continue;
            };
            frame.next_overflow += 1;
            let (condition, target) = (frame.condition, overflow.target);
            if !overflow.when.contains(&condition) {
                let detail = Detail::OverflowNotFor {
                    from: group.name.clone(),
                    when: overflow.when.clone(),
                };
                self.step(groups, Some(target), Verdict::NotApplicable, None, detail);
            } else if self.visited[target] {
                let detail = Detail::AlreadyVisited;
                self.step(groups, Some(target), Verdict::AlreadyVisited, None, detail);
            } else {
                let detail = Detail::Overflow {
                    from: group.name.clone(),
                    condition,
                };
                self.step(
                    groups,
                    Some(target),
                    Verdict::Overflow,
                    Some(condition.into()),
                    detail,
                );
                if self.visit(groups, target, at, presence, cursors) {
                    return true;
                }
            }
        }
    }

    /// The next agent of the current group to ring, in round-robin order, skipping agents who
    /// are not available now or were already offered this call; `None` when the group is
    /// exhausted. Agents are taken one at a time, so a call holds no list of them.
    pub fn next_offer(&mut self, groups: &Groups, presence: &impl Presence) -> Option<Offer> {
        let ring = self.ring.as_mut()?;
        let group = groups.get(ring.group);
        let agents = &group.agents;
        while ring.next < agents.len() {
            let extension = &agents[(ring.start + ring.next) % agents.len()].extension;
            ring.next += 1;
            if presence.state(extension) == AgentState::Available
                && !self.offered.contains(extension)
            {
                self.offered.insert(extension.clone());
                return Some(Offer {
                    group: group.name.clone(),
                    extension: extension.clone(),
                    ring_timeout: group.ring_timeout,
                });
            }
        }
        self.ring = None;
        None
    }

    /// The group being rung, while it has agents left to try.
    pub fn ringing(&self) -> Option<GroupId> {
        self.ring.as_ref().map(|r| r.group)
    }

    /// The agents the call was offered to so far.
    pub fn offered(&self) -> impl Iterator<Item = &Extension> {
        self.offered.iter()
    }

    /// The offer of the group being rung to an agent chosen elsewhere (instances sharing
    /// agents claim them in the database, [`crate::proxy`]); `None` when the agent is not one
    /// of that group's. The agent counts as offered this call.
    pub fn take(&mut self, groups: &Groups, extension: &Extension) -> Option<Offer> {
        let group = groups.get(self.ring.as_ref()?.group);
        group.position(extension)?;
        self.offered.insert(extension.clone());
        Some(Offer {
            group: group.name.clone(),
            extension: extension.clone(),
            ring_timeout: group.ring_timeout,
        })
    }

    /// The group being rung has nobody left for this call.
    pub fn exhaust(&mut self) {
        self.ring = None;
    }

    /// The decision once the walk is over, with every offer it produced.
    pub fn finish(mut self, groups: &Groups, offers: Vec<Offer>) -> Decision {
        let owner = groups.get(self.owner);
        let (action, group, extension) = match offers.first() {
            Some(first) => {
                let detail = Detail::Afterwards {
                    max_wait: owner.max_wait,
                    action: owner.final_action,
                };
                self.step(groups, Some(self.owner), Verdict::Final, None, detail);
                (
                    Action::Ring,
                    first.group.clone(),
                    Some(first.extension.clone()),
                )
            }
            None => {
                // No offers means the owning group was skipped, so its reason is known.
                let reason = self.reason.unwrap_or(Reason::NoAgents);
                let final_action = owner.final_action_for(Some(reason));
                let action = match final_action {
                    FinalAction::Voicemail => Action::Voicemail,
                    FinalAction::Reject => Action::Missed,
                };
                let detail = Detail::Missed {
                    reason,
                    action: final_action,
                };
                self.step(
                    groups,
                    Some(self.owner),
                    Verdict::Final,
                    Some(reason),
                    detail,
                );
                (action, owner.name.clone(), None)
            }
        };
        Decision {
            action,
            group: Some(group),
            extension,
            reason: self.reason,
            offers,
            final_action: Some(owner.final_action),
            max_wait: Some(owner.max_wait),
            explanation: self.steps,
        }
    }

    fn step(
        &mut self,
        groups: &Groups,
        group: Option<GroupId>,
        verdict: Verdict,
        reason: Option<Reason>,
        detail: Detail,
    ) {
        self.steps.push(Step {
            group: group.map(|g| groups.get(g).name.clone()),
            verdict,
            reason,
            detail,
        });
    }

    /// Reads a group at `at`: whether it can ring (it becomes the current group); otherwise
    /// records why not. Either way its overflow targets are queued for the condition at hand.
    fn visit(
        &mut self,
        groups: &Groups,
        id: GroupId,
        at: Timestamp,
        presence: &impl Presence,
        cursors: &impl Cursors,
    ) -> bool {
        self.visited[id] = true;
        let group = groups.get(id);
        let schedule = &group.schedule;
        let datetime = schedule.timezone.to_datetime(at);
        let local = LocalTime {
            datetime,
            zone: schedule.timezone_name.clone(),
        };
        let outcome = match schedule.read_local(datetime) {
            Availability::Holiday(holiday) => Err((
                Condition::Holiday,
                Detail::Holiday {
                    name: holiday.name.clone(),
                    date: holiday.date,
                    hours: holiday
                        .is_partial()
                        .then_some((holiday.from, holiday.until)),
                    at: local,
                },
            )),
            Availability::OutOfHours => Err((Condition::OutOfHours, Detail::Closed { at: local })),
            Availability::Open(open) => {
                match self.open_group(groups, id, local, open, presence, cursors) {
                    None => Ok(()),
                    Some(why) => Err(why),
                }
            }
        };
        let condition = match &outcome {
            Ok(_) => Condition::NoAgents,
            Err((condition, _)) => *condition,
        };
        self.stack.push(Frame {
            group: id,
            condition,
            next_overflow: 0,
        });
        match outcome {
            Ok(()) => true,
            Err((condition, detail)) => {
                if id == self.owner {
                    self.reason = Some(condition.into());
                }
                self.step(
                    groups,
                    Some(id),
                    Verdict::Skipped,
                    Some(condition.into()),
                    detail,
                );
                false
            }
        }
    }

    /// Makes an open group the one being rung when any of its agents can take the call, noting
    /// the first few in round-robin order; otherwise returns why nobody can.
    fn open_group(
        &mut self,
        groups: &Groups,
        id: GroupId,
        at: LocalTime,
        open: Option<(jiff::civil::Weekday, super::schedule::Interval)>,
        presence: &impl Presence,
        cursors: &impl Cursors,
    ) -> Option<(Condition, Detail)> {
        let group = groups.get(id);
        let agents = &group.agents;
        let last = cursors.last_offered(&group.name);
        let start = last
            .and_then(|ext| group.position(ext))
            .map_or(0, |i| i + 1);
        let mut order: Vec<Extension> = Vec::new();
        let mut available = 0;
        let mut passed: Vec<Passed> = Vec::new();
        let mut passed_count = 0;
        let mut more = false;
        for k in 0..agents.len() {
            if order.len() > SHOWN {
                // Enough to name: a large group is not read to its end on every call.
                more = true;
                break;
            }
            let extension = &agents[(start + k) % agents.len()].extension;
            let state = presence.state(extension);
            let unavailable = if state != AgentState::Available {
                Some(Some(state))
            } else if self.offered.contains(extension) {
                Some(None)
            } else {
                None
            };
            match unavailable {
                Some(state) => {
                    passed_count += 1;
                    if passed.len() < SHOWN {
                        passed.push(Passed {
                            extension: extension.clone(),
                            state,
                        });
                    }
                }
                None => {
                    available += 1;
                    order.push(extension.clone());
                }
            }
        }
        order.truncate(SHOWN);
        if available == 0 {
            let detail = Detail::NoAgents {
                at,
                open,
                passed,
                passed_count,
            };
            return Some((Condition::NoAgents, detail));
        }
        let detail = Detail::Ring {
            at,
            open,
            order,
            available,
            more,
            after: last.filter(|_| start > 0).cloned(),
            passed,
            passed_count,
        };
        self.step(groups, Some(id), Verdict::Ring, None, detail);
        self.ring = Some(Ring {
            group: id,
            start,
            next: 0,
        });
        None
    }
}

/// How many agents an explanation names before it only counts them.
const SHOWN: usize = 8;

#[cfg(test)]
mod tests;
