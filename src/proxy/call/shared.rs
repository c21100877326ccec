//! Agents shared by several instances on one PostgreSQL database (DESIGN.md "Scale").
//!
//! Each instance rings agents for its own calls, so two of them could ring one agent for two
//! calls at once. With `share_agents` on (the store is PostgreSQL), the agent to ring next is
//! claimed in the database ([`Output::Claim`]): one statement, one round trip, that takes the
//! group's round-robin cursor in turn, picks the first agent after it who is free everywhere
//! and holds them for the call. The call waits for the answer ([`Core::on_claimed`]); nothing
//! else does. What this instance holds of each agent afterwards (busy, wrap-up for so long,
//! free) is told to the database as it changes ([`Output::Hold`], in the background, the
//! latest state per agent winning by `version`), and what the others hold comes back through
//! the database's notifications ([`Core::on_remote`]), so routing reads every instance's
//! agents without asking.
//!
//! When the database cannot answer a claim, the instance routes alone on what it last knew
//! ([`ALONE_FOR`]) and says so; the daemon logs it loudly. Claims resume by themselves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::Call;
use crate::config::Config;
use crate::proxy::{Core, Now, Output, Timer};
use crate::routing::{AgentState, Extension};

/// What an instance holds of an agent, as the database is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Rung, talking or dialling out.
    Busy,
    /// In wrap-up for this long still.
    WrapUp(Duration),
    Free,
}

/// A request to claim the next agent of a group for a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The call asking.
    pub call: u64,
    /// The call's sipdesk id, kept with the hold.
    pub call_id: String,
    pub group: String,
    /// The group's agents in configuration order (the rotation's order): made once per group
    /// and configuration, not for every claim.
    pub agents: Arc<[String]>,
    /// Agents not to ring: already offered this call, or away, busy or in wrap-up here.
    pub skip: Vec<String>,
    /// Orders this instance's hold changes: the claim's hold is newer than every change
    /// before it. It also tells the claim apart (one instance has one claim out at a time).
    pub version: u64,
}

/// What the database says about the agents (its notifications, and a full reading when the
/// instance starts listening or listens again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// `instance` holds `extension` so now (`Free`: no longer).
    Hold {
        extension: String,
        instance: String,
        hold: Hold,
    },
    /// An agent was set away or available, by whichever instance or command.
    Away {
        extension: String,
        away: bool,
        reason: Option<String>,
    },
    /// Every hold and agent state there is.
    Snapshot {
        holds: Vec<(String, String, Hold)>,
        away: Vec<(String, bool, Option<String>)>,
    },
}

/// A call's claim while it waits for the one out to be answered.
const WAITING: u64 = 0;

/// How long a claim may be out before it is taken as unanswered (the daemon's claims task
/// gives up after a second; this covers a task that is gone).
const CLAIM_OVERDUE: Duration = Duration::from_secs(5);

/// How long the instance routes alone after the database failed a claim.
pub const ALONE_FOR: Duration = Duration::from_secs(2);

/// A group's agents as claims name them, with the configuration they were read from.
type AgentList = (Arc<Config>, Arc<[String]>);

/// This instance's part in sharing agents.
pub(in crate::proxy) struct Shared {
    instance: String,
    /// The version of the latest hold change told or claim asked; starts from the wall
    /// clock, so a restart continues above what an earlier run wrote.
    version: u64,
    /// What the database was last told this instance holds of each agent, and the version
    /// of that hold (a release frees that hold and no newer one).
    told: FxHashMap<Extension, (Hold, u64)>,
    /// Until when the instance routes alone (the database failed a claim).
    alone_until: Option<Instant>,
    /// The claim out, by its version: one at a time, so each is asked knowing whom the last
    /// one held; calls wanting one meanwhile wait here, in order.
    out: Option<u64>,
    /// Each group's agents as claims name them, for the configuration they were read from.
    lists: FxHashMap<Arc<str>, AgentList>,
    waiting: std::collections::VecDeque<u64>,
}

impl Core {
    /// Shares agents with the other instances on the database, as `instance`: claims before
    /// ringing, holds told, the others' holds heard. `version_from` orders this run's hold
    /// changes after an earlier run's (the wall clock in microseconds will do).
    pub fn share_agents(&mut self, instance: &str, version_from: u64) {
        self.agents.keep_changes();
        self.shared = Some(Shared {
            instance: instance.to_owned(),
            version: version_from,
            told: FxHashMap::default(),
            alone_until: None,
            out: None,
            lists: FxHashMap::default(),
            waiting: std::collections::VecDeque::new(),
        });
    }

    /// Whether the next offer of a call is claimed in the database (`false`: the instance
    /// decides alone, as a single instance always does).
    pub(super) fn claims_agents(&self, now: Now) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.alone_until.is_none_or(|until| now.mono >= until))
    }

    /// Asks the database for the next agent of the group `call` is ringing; `false` when
    /// nobody of it is left to ask for (the group is then exhausted). While another claim is
    /// out the call waits its turn (and nothing is read for it yet).
    pub(super) fn ask_claim(&mut self, now: Now, call: &mut Call) -> bool {
        let Some(group) = call.route.as_ref().and_then(|r| r.ringing()) else {
            return false;
        };
        let Some(shared) = self.shared.as_mut() else {
            return false;
        };
        if shared.out.is_some() {
            shared.waiting.push_back(call.key);
            call.claim = Some(WAITING);
            return true;
        }
        let group = call.config.groups.get(group);
        // Not rung: whoever was offered this call, and whoever this instance holds or knows
        // away. Read from the agents held here, not from the whole group, which may be large.
        let Some(route) = call.route.as_mut() else {
            return false;
        };
        let mut skip: rustc_hash::FxHashSet<&Extension> = route
            .offered()
            .filter(|e| group.position(e).is_some())
            .collect();
        let held = self.agents.unavailable_here(now.mono);
        skip.extend(held.iter().filter(|e| group.position(e).is_some()));
        if skip.len() >= group.agents.len() {
            route.exhaust();
            return false;
        }
        let skip: Vec<String> = skip.into_iter().map(Extension::to_string).collect();
        let agents = match shared.lists.get(&group.name) {
            Some((config, list)) if Arc::ptr_eq(config, &call.config) => list.clone(),
            _ => {
                let list: Arc<[String]> = group
                    .agents
                    .iter()
                    .map(|a| a.extension.to_string())
                    .collect();
                shared
                    .lists
                    .insert(group.name.clone(), (call.config.clone(), list.clone()));
                list
            }
        };
        let group = group.name.to_string();
        // Hold changes made so far are told first, so the claim is newer than all of them: a
        // release told after it must not free the agent it claims.
        self.tell_holds(now);
        let Some(shared) = self.shared.as_mut() else {
            return false;
        };
        shared.version += 1;
        shared.out = Some(shared.version);
        let claim = Claim {
            call: call.key,
            call_id: call.id.clone(),
            group,
            agents,
            skip,
            version: shared.version,
        };
        call.claim = Some(claim.version);
        self.schedule(
            now.mono + CLAIM_OVERDUE,
            Timer::ClaimOverdue {
                call: call.key,
                version: claim.version,
            },
        );
        self.out.push(Output::Claim(claim));
        true
    }

    /// Forgets the groups' agent lists made for claims (a new configuration is in force; calls
    /// on the old one make theirs again).
    pub(in crate::proxy) fn forget_agent_lists(&mut self) {
        if let Some(shared) = self.shared.as_mut() {
            shared.lists.clear();
        }
    }

    /// A claim still out when it should long have been answered: no answer, so the calls
    /// waiting behind it go on (alone for a while).
    pub(in crate::proxy) fn claim_overdue(&mut self, now: Now, key: u64, version: u64) {
        if self.shared.as_ref().is_some_and(|s| s.out == Some(version)) {
            tracing::error!("a claim of an agent got no answer at all; routing alone");
            self.on_claimed(now, key, version, Err(()));
        }
    }

    /// The database answered the claim `version` of call `key`: the agent held for the call
    /// (`Ok(Some)`), nobody free in the group (`Ok(None)`), or no answer (`Err`: routed alone
    /// for [`ALONE_FOR`]).
    pub fn on_claimed(
        &mut self,
        now: Now,
        key: u64,
        version: u64,
        answer: Result<Option<String>, ()>,
    ) {
        self.claimed(now, key, version, answer);
        // The next call waiting for a claim asks now.
        while let Some(next) = self.shared.as_mut().and_then(|s| {
            if s.out.is_some() {
                None
            } else {
                s.waiting.pop_front()
            }
        }) {
            if let Some(mut call) = self.take(next) {
                if call.claim == Some(WAITING) {
                    call.claim = None;
                    self.advance(now, &mut call);
                }
                self.put(call);
            }
        }
        self.pump(now);
    }

    fn claimed(&mut self, now: Now, key: u64, version: u64, answer: Result<Option<String>, ()>) {
        if let Some(shared) = self.shared.as_mut() {
            if shared.out == Some(version) {
                shared.out = None;
            }
        }
        let agent = match &answer {
            Ok(Some(agent)) => Extension::parse(agent).ok(),
            _ => None,
        };
        if let (Some(agent), Some(shared)) = (&agent, self.shared.as_mut()) {
            // The database holds the agent for this instance now, whatever becomes of the
            // call; if nothing here engages them, the next sync frees them.
            // Unless a newer hold of this instance was told since the claim went out (an
            // outbound call): that one is the row's now.
            if shared
                .told
                .get(agent)
                .is_none_or(|(_, told)| *told < version)
            {
                shared.told.insert(agent.clone(), (Hold::Busy, version));
            }
            self.agents.mark_changed(agent);
        }
        if answer.is_err() {
            if let Some(shared) = self.shared.as_mut() {
                shared.alone_until = Some(now.mono + ALONE_FOR);
            }
        }
        match self.take(key) {
            Some(mut call) if call.claim == Some(version) => {
                call.claim = None;
                if !call.is_offering() {
                    self.put(call);
                } else {
                    match (&answer, agent) {
                        // Away or on another call since the claim went out: not rung (the
                        // mark above frees the hold), the next one is claimed.
                        (Ok(Some(_)), Some(agent))
                            if self.agents.own_state(&agent, now.mono) != AgentState::Available =>
                        {
                            self.advance(now, &mut call)
                        }
                        (Ok(Some(_)), Some(agent)) => {
                            let offer = call
                                .route
                                .as_mut()
                                .and_then(|r| r.take(&call.config.groups, &agent));
                            match offer {
                                Some(offer) => self.ring(now, &mut call, offer),
                                None => self.advance(now, &mut call),
                            }
                        }
                        (Ok(None), _) => {
                            if let Some(route) = call.route.as_mut() {
                                route.exhaust();
                            }
                            self.advance(now, &mut call);
                        }
                        _ => self.advance(now, &mut call),
                    }
                    self.put(call);
                }
            }
            Some(call) => self.put(call),
            None => {}
        }
    }

    /// What the database says of the agents.
    pub fn on_remote(&mut self, now: Now, remote: Remote) {
        let Some(me) = self.shared.as_ref().map(|s| s.instance.clone()) else {
            return;
        };
        match remote {
            Remote::Hold {
                extension,
                instance,
                hold,
            } => {
                if instance != me {
                    self.hold_elsewhere(now, &extension, hold);
                } else if hold == Hold::Free {
                    // Ours, freed: by this instance's own release, or by another taking it
                    // for dead (a long outage). If it is still held here, it is told again.
                    self.tell_again(&extension);
                }
            }
            Remote::Away {
                extension,
                away,
                reason,
            } => self.away_elsewhere(&extension, away, reason),
            Remote::Snapshot { holds, away } => {
                self.agents.clear_elsewhere();
                let mut ours = rustc_hash::FxHashSet::default();
                for (extension, instance, hold) in holds {
                    if instance != me {
                        self.hold_elsewhere(now, &extension, hold);
                    } else {
                        ours.insert(extension);
                    }
                }
                // What this instance holds and the database no longer shows (freed while it
                // was not listening) is told again.
                let lost: Vec<Extension> = self
                    .shared
                    .as_ref()
                    .map(|s| {
                        s.told
                            .keys()
                            .filter(|e| !ours.contains(e.as_str()))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for extension in lost {
                    self.tell_again(extension.as_str());
                }
                for (extension, away, reason) in away {
                    self.away_elsewhere(&extension, away, reason);
                }
                self.changed = true;
            }
        }
        self.tell_holds(now);
    }

    /// Forgets what the database was told of an agent this instance holds, so the next
    /// [`Core::tell_holds`] tells it again (when it is held here still).
    fn tell_again(&mut self, extension: &str) {
        let Ok(extension) = Extension::parse(extension) else {
            return;
        };
        if let Some(shared) = self.shared.as_mut() {
            if shared.told.remove(&extension).is_some() {
                self.agents.mark_changed(&extension);
            }
        }
    }

    fn hold_elsewhere(&mut self, now: Now, extension: &str, hold: Hold) {
        let Ok(extension) = Extension::parse(extension) else {
            return;
        };
        let held = match hold {
            Hold::Busy => Some(None),
            Hold::WrapUp(left) => Some(Some(now.mono + left)),
            Hold::Free => None,
        };
        if self.agents.set_elsewhere(&extension, held) {
            self.changed = true;
        }
    }

    /// An agent's away state as stored (by this instance or another): applied here without
    /// being stored again.
    fn away_elsewhere(&mut self, extension: &str, away: bool, reason: Option<String>) {
        let Ok(extension) = Extension::parse(extension) else {
            return;
        };
        if self.agents.set_away(&extension, away, reason) {
            self.changed = true;
        }
    }

    /// Tells the database what changed in this instance's holds: one [`Output::Hold`] per
    /// agent whose hold is not what it was last told. A hold carries a new version; a release
    /// carries the version of the hold it frees, so it never frees a newer claim.
    pub(in crate::proxy) fn tell_holds(&mut self, now: Now) {
        let Some(shared) = self.shared.as_mut() else {
            return;
        };
        for extension in self.agents.take_changed() {
            let hold = self.agents.own_hold(&extension, now.mono);
            let version = match (hold, shared.told.get(&extension).copied()) {
                (Hold::Free, None) | (Hold::Busy, Some((Hold::Busy, _))) => continue,
                (Hold::Free, Some((_, told))) => {
                    shared.told.remove(&extension);
                    told
                }
                _ => {
                    shared.version += 1;
                    shared
                        .told
                        .insert(extension.clone(), (hold, shared.version));
                    shared.version
                }
            };
            self.out.push(Output::Hold {
                extension,
                hold,
                version,
            });
        }
    }
}
