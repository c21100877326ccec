//! Agents' availability as the proxy knows it: the state an agent or supervisor set (available
//! or away, persisted), the calls sipdesk is ringing them for or connected them to, and their
//! wrap-up time after a call. Busy and wrap-up are read against the time of the question, so no
//! timer is needed to end a wrap-up.
//!
//! Instances sharing agents on PostgreSQL ([`super::Hold`]) also know what the others hold:
//! an agent another instance rings, connected or keeps in wrap-up is busy here too. Which
//! agents this instance's own counts changed is kept, so the proxy can tell the database.

use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::routing::{AgentState, Extension, Presence};

#[derive(Clone, Debug, Default)]
struct Agent {
    away: bool,
    /// Why the agent is away, when they said.
    reason: Option<String>,
    /// Calls this agent is being rung for or is talking on.
    calls: u32,
    /// Of those, outbound calls the agent dialled.
    outbound: u32,
    wrap_up_until: Option<Instant>,
    /// Held by another instance: busy (`None`) or in wrap-up until then.
    elsewhere: Option<Option<Instant>>,
}

impl Agent {
    /// The state at `now` by this instance's own knowledge.
    fn own_state(&self, now: Instant) -> AgentState {
        if self.away {
            AgentState::Away
        } else if self.calls > 0 {
            AgentState::Busy
        } else if self.wrap_up_until.is_some_and(|u| u > now) {
            AgentState::WrapUp
        } else {
            AgentState::Available
        }
    }
}

/// Every agent sipdesk has heard of; unknown extensions are available. Looked up for every agent
/// of a group on every call, hence the fast (not DoS-resistant) hasher: keys are configured
/// extensions, not attacker input.
#[derive(Clone, Debug, Default)]
pub struct Agents {
    agents: FxHashMap<Extension, Agent>,
    /// Agents whose own counts changed since [`Agents::take_changed`], when kept.
    changed: Option<Vec<Extension>>,
    /// Agents that may be away, rung, talking or in wrap-up here: a superset, pruned when read
    /// ([`Agents::unavailable_here`]), so a claim reads these and not every agent ever heard of.
    maybe_held: rustc_hash::FxHashSet<Extension>,
}

impl Agents {
    /// Sets the state an agent or supervisor chose, with why when away; returns whether it
    /// changed.
    pub fn set_away(&mut self, extension: &Extension, away: bool, reason: Option<String>) -> bool {
        let agent = self.agents.entry(extension.clone()).or_default();
        let reason = reason.filter(|_| away);
        let changed = agent.away != away || agent.reason != reason;
        if away {
            self.maybe_held.insert(extension.clone());
        }
        agent.away = away;
        agent.reason = reason;
        changed
    }

    /// Why the agent is away, when they said.
    pub fn reason(&self, extension: &Extension) -> Option<&str> {
        self.agents.get(extension).and_then(|a| a.reason.as_deref())
    }

    /// The agent is rung, or talks, on one more call.
    pub fn engage(&mut self, extension: &Extension) {
        self.agents.entry(extension.clone()).or_default().calls += 1;
        self.mark(extension);
    }

    /// The agent dials out: one more outbound call.
    pub fn dial(&mut self, extension: &Extension) {
        self.agents.entry(extension.clone()).or_default().outbound += 1;
        self.mark(extension);
    }

    /// One of the agent's outbound calls ended.
    pub fn hang_up_outbound(&mut self, extension: &Extension) {
        if let Some(agent) = self.agents.get_mut(extension) {
            agent.outbound = agent.outbound.saturating_sub(1);
        }
        self.mark(extension);
    }

    /// Forgets every call the agent is counted on (an admin freed them); returns whether any
    /// was still counted.
    pub fn clear(&mut self, extension: &Extension) -> bool {
        let Some(agent) = self.agents.get_mut(extension) else {
            return false;
        };
        let held = agent.calls > 0 || agent.outbound > 0;
        agent.calls = 0;
        agent.outbound = 0;
        self.mark(extension);
        held
    }

    /// How many outbound calls the agent has now.
    pub fn outbound(&self, extension: &Extension) -> u32 {
        self.agents.get(extension).map_or(0, |a| a.outbound)
    }

    /// One of the agent's calls stopped ringing without an answer.
    pub fn release(&mut self, extension: &Extension) {
        if let Some(agent) = self.agents.get_mut(extension) {
            agent.calls = agent.calls.saturating_sub(1);
        }
        self.mark(extension);
    }

    /// One of the agent's calls ended after an answer: wrap-up until `until`.
    pub fn finish(&mut self, extension: &Extension, until: Instant) {
        if let Some(agent) = self.agents.get_mut(extension) {
            agent.calls = agent.calls.saturating_sub(1);
            agent.wrap_up_until = Some(agent.wrap_up_until.map_or(until, |u| u.max(until)));
        }
        self.mark(extension);
    }

    /// The agent's state at `now`, another instance's hold included.
    pub fn state(&self, extension: &Extension, now: Instant) -> AgentState {
        match self.own_state(extension, now) {
            AgentState::Available => match self.agents.get(extension).and_then(|a| a.elsewhere) {
                Some(None) => AgentState::Busy,
                Some(Some(until)) if until > now => AgentState::WrapUp,
                _ => AgentState::Available,
            },
            state => state,
        }
    }

    /// The agent's state at `now` as this instance alone knows it.
    pub fn own_state(&self, extension: &Extension, now: Instant) -> AgentState {
        self.agents
            .get(extension)
            .map_or(AgentState::Available, |a| a.own_state(now))
    }

    /// The agents not available here at `now` by this instance's own knowledge: away, rung or
    /// talking, in wrap-up.
    pub fn unavailable_here(&mut self, now: Instant) -> Vec<Extension> {
        let agents = &self.agents;
        self.maybe_held.retain(|e| {
            agents
                .get(e)
                .is_some_and(|a| a.own_state(now) != AgentState::Available)
        });
        self.maybe_held.iter().cloned().collect()
    }

    /// What this instance holds of the agent at `now`, as the database is told: busy while
    /// rung, talking or dialling out, then wrap-up for its time left.
    pub fn own_hold(&self, extension: &Extension, now: Instant) -> super::Hold {
        use super::Hold;
        match self.agents.get(extension) {
            Some(a) if a.calls > 0 => Hold::Busy,
            Some(a) => match a.wrap_up_until {
                Some(until) if until > now => Hold::WrapUp(until - now),
                _ => Hold::Free,
            },
            None => Hold::Free,
        }
    }

    /// Keeps, from now on, which agents' own counts change.
    pub fn keep_changes(&mut self) {
        self.changed.get_or_insert_with(Vec::new);
    }

    /// The agents whose own counts changed since the last call.
    pub fn take_changed(&mut self) -> Vec<Extension> {
        self.changed
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Counts the agent as changed (the database holds them for a call whatever happens next).
    pub fn mark_changed(&mut self, extension: &Extension) {
        self.mark(extension);
    }

    fn mark(&mut self, extension: &Extension) {
        self.maybe_held.insert(extension.clone());
        if let Some(changed) = &mut self.changed {
            changed.push(extension.clone());
        }
    }

    /// Another instance holds the agent (busy: `None`; wrap-up until then), or no longer
    /// (`hold` is `None`). Returns whether anything changed.
    pub fn set_elsewhere(&mut self, extension: &Extension, hold: Option<Option<Instant>>) -> bool {
        if hold.is_none() && !self.agents.contains_key(extension) {
            return false;
        }
        let agent = self.agents.entry(extension.clone()).or_default();
        let changed = agent.elsewhere != hold;
        agent.elsewhere = hold;
        changed
    }

    /// Forgets every other instance's holds (before a full reading of them).
    pub fn clear_elsewhere(&mut self) {
        for agent in self.agents.values_mut() {
            agent.elsewhere = None;
        }
    }

    /// How many agents are held by a call (away or not), and how many outbound calls they have.
    pub fn held(&self) -> (usize, usize) {
        let busy = self.agents.values().filter(|a| a.calls > 0).count();
        let outbound = self.agents.values().map(|a| a.outbound as usize).sum();
        (busy, outbound)
    }

    /// The states at `now`, as routing reads them.
    pub fn at(&self, now: Instant) -> AgentsAt<'_> {
        AgentsAt { agents: self, now }
    }
}

/// [`Agents`] read at one instant.
pub struct AgentsAt<'a> {
    agents: &'a Agents,
    now: Instant,
}

impl Presence for AgentsAt<'_> {
    fn state(&self, extension: &Extension) -> AgentState {
        self.agents.state(extension, self.now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_agent_is_busy_while_engaged_then_in_wrap_up_then_available() {
        let now = Instant::now();
        let ext = Extension::parse("2001").unwrap();
        let mut agents = Agents::default();
        assert_eq!(agents.state(&ext, now), AgentState::Available);
        agents.engage(&ext);
        assert_eq!(agents.state(&ext, now), AgentState::Busy);
        agents.finish(&ext, now + Duration::from_secs(30));
        assert_eq!(
            agents.state(&ext, now + Duration::from_secs(29)),
            AgentState::WrapUp
        );
        assert_eq!(
            agents.state(&ext, now + Duration::from_secs(30)),
            AgentState::Available
        );
        agents.engage(&ext);
        agents.release(&ext);
        assert_eq!(
            agents.state(&ext, now + Duration::from_secs(31)),
            AgentState::Available
        );
    }

    #[test]
    fn away_wins_over_everything() {
        let now = Instant::now();
        let ext = Extension::parse("2001").unwrap();
        let mut agents = Agents::default();
        assert!(agents.set_away(&ext, true, None));
        assert!(!agents.set_away(&ext, true, None));
        agents.engage(&ext);
        assert_eq!(agents.state(&ext, now), AgentState::Away);
    }
}
