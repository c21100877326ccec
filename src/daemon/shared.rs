//! The daemon's side of agents shared between instances on PostgreSQL ([`crate::proxy`]'s
//! `shared`): three tasks between the proxy loop and the database.
//!
//! - **Claims**: each claim the proxy asks for is one call of `sipdesk_claim`, answered back
//!   to the proxy loop. A claim the database does not answer within [`CLAIM_TIMEOUT`] is
//!   answered "no answer", and the proxy routes alone for a while; meanwhile claims are
//!   answered so at once (no call waits for a database that is gone), and an error is logged
//!   once per outage, its end once too. A claim whose answer was lost is undone in the
//!   background (it may have held an agent nobody rings).
//! - **Holds**: what this instance holds of each agent, told in the background; only the
//!   latest state of an agent matters, so a backlog never grows past one entry per agent and
//!   is told when the database is back.
//! - **Notifications**: `LISTEN` on the holds, agent states and contacts channels; at each
//!   (re)connection everything is read whole first, so nothing said while not listening is
//!   missed (a connection quiet for a minute is made anew, so one that died silently is not
//!   kept). Contacts go straight to the shared [`Directory`]; the rest to the proxy loop.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::directory::{Directory, Said};
use crate::proxy::{ALONE_FOR, Claim, Hold, Remote};
use crate::routing::Extension;
use crate::store::Store;
use crate::store::holds::{AgentsLink, read_hold};

/// How long a claim may take before the instance routes alone.
pub(super) const CLAIM_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the listening connection may stay quiet before it is made anew.
const LISTEN_QUIET: Duration = Duration::from_secs(60);

/// The channels notifications come on.
const CHANNELS: [&str; 3] = ["sipdesk_holds", "sipdesk_agents", "sipdesk_contacts"];

/// A claim's answer, for the proxy loop: the call, the claim's version, the agent held (or
/// nobody), or `Err` for no answer.
pub(super) type Claimed = (u64, u64, Result<Option<String>, ()>);

/// Where the proxy loop sends claims and holds.
pub(super) struct SharedAgents {
    claims: mpsc::UnboundedSender<Claim>,
    holds: mpsc::UnboundedSender<(Extension, Hold, u64)>,
    /// To answer a claim itself when the claims task is gone (it panicked): the call is then
    /// routed alone rather than left waiting.
    answers: mpsc::UnboundedSender<Claimed>,
    /// Whether that was said already.
    gone_said: std::sync::atomic::AtomicBool,
}

impl SharedAgents {
    pub(super) fn claim(&self, claim: Claim) {
        if let Err(unsent) = self.claims.send(claim) {
            let claim = unsent.0;
            if !self
                .gone_said
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::error!("the task claiming agents is gone: routing alone until a restart");
            }
            let _ = self.answers.send((claim.call, claim.version, Err(())));
        }
    }

    pub(super) fn hold(&self, extension: Extension, hold: Hold, version: u64) {
        let _ = self.holds.send((extension, hold, version));
    }
}

/// Starts the three tasks; answers and what the database says come back on the two
/// receivers.
pub(super) fn spawn(
    store: Store,
    url: String,
    instance: String,
    directory: Arc<Directory>,
    stop: CancellationToken,
) -> (
    SharedAgents,
    mpsc::UnboundedReceiver<Claimed>,
    mpsc::UnboundedReceiver<Remote>,
) {
    let (claims, claims_rx) = mpsc::unbounded_channel();
    let (holds, holds_rx) = mpsc::unbounded_channel();
    let (answers, answers_rx) = mpsc::unbounded_channel();
    let (remote, remote_rx) = mpsc::unbounded_channel();
    tokio::spawn(run_claims(
        store.clone(),
        AgentsLink::new(&url),
        instance.clone(),
        claims_rx,
        answers.clone(),
    ));
    tokio::spawn(run_holds(
        AgentsLink::new(&url),
        instance,
        holds_rx,
        stop.clone(),
    ));
    tokio::spawn(listen(store, url, directory, remote, stop));
    (
        SharedAgents {
            claims,
            holds,
            answers,
            gone_said: std::sync::atomic::AtomicBool::new(false),
        },
        answers_rx,
        remote_rx,
    )
}

async fn run_claims(
    store: Store,
    mut claimer: AgentsLink,
    instance: String,
    mut claims: mpsc::UnboundedReceiver<Claim>,
    answers: mpsc::UnboundedSender<Claimed>,
) {
    let mut alone_until: Option<tokio::time::Instant> = None;
    let mut down = false;
    while let Some(claim) = claims.recv().await {
        let now = tokio::time::Instant::now();
        if alone_until.is_some_and(|until| now < until) {
            let _ = answers.send((claim.call, claim.version, Err(())));
            continue;
        }
        let answer =
            match tokio::time::timeout(CLAIM_TIMEOUT, claimer.claim(&instance, &claim)).await {
                Ok(Ok(agent)) => Ok(agent),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => {
                    claimer.reset();
                    Err(format!(
                        "no answer in {}",
                        humantime::format_duration(CLAIM_TIMEOUT)
                    ))
                }
            };
        match answer {
            Ok(agent) => {
                if down {
                    tracing::info!(
                        "agents are claimed in the database again: calls are shared with the other instances"
                    );
                    down = false;
                }
                alone_until = None;
                let _ = answers.send((claim.call, claim.version, Ok(agent)));
            }
            Err(error) => {
                // The claim may have held an agent before its answer was lost: undone in the
                // background, for as long as it takes the database to come back.
                let (store, instance, lost) = (store.clone(), instance.clone(), claim.clone());
                // Once at once, and once more after the statement timeout (30 s), by when a
                // claim still running on the server has ended one way or the other.
                tokio::spawn(async move {
                    for wait in [Duration::ZERO, Duration::from_secs(31)] {
                        tokio::time::sleep(wait).await;
                        for _ in 0..600 {
                            if store.drop_claim(&instance, &lost).await.is_ok() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                });
                if !down {
                    tracing::error!(%error, "the database cannot claim agents: this instance routes calls ALONE on what it last knew, and may ring an agent another instance rings too, until the database answers again");
                    down = true;
                }
                alone_until = Some(now + ALONE_FOR);
                let _ = answers.send((claim.call, claim.version, Err(())));
            }
        }
    }
}

/// Hold changes not told yet: the latest of each agent, oldest agent first.
#[derive(Default)]
struct Backlog {
    pending: HashMap<Extension, (Hold, u64)>,
    order: VecDeque<Extension>,
}

impl Backlog {
    fn keep(&mut self, (extension, hold, version): (Extension, Hold, u64)) {
        if self
            .pending
            .insert(extension.clone(), (hold, version))
            .is_none()
        {
            self.order.push_back(extension);
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next change to tell.
    fn next(&mut self) -> Option<(Extension, Hold, u64)> {
        loop {
            let extension = self.order.front()?;
            match self.pending.get(extension) {
                Some((hold, version)) => return Some((extension.clone(), *hold, *version)),
                None => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// `told` was written: forgotten, unless a newer change of that agent came meanwhile (a
    /// release carries the version of the hold it frees, so the whole change tells).
    fn done(&mut self, told: &(Extension, Hold, u64)) {
        let (extension, hold, version) = told;
        if self.pending.get(extension) == Some(&(*hold, *version)) {
            self.pending.remove(extension);
            self.order.pop_front();
        }
    }
}

async fn run_holds(
    mut link: AgentsLink,
    instance: String,
    mut holds: mpsc::UnboundedReceiver<(Extension, Hold, u64)>,
    stop: CancellationToken,
) {
    let mut backlog = Backlog::default();
    let mut failing = false;
    loop {
        if backlog.is_empty() {
            match holds.recv().await {
                Some(told) => backlog.keep(told),
                None => return,
            }
        }
        while let Ok(told) = holds.try_recv() {
            backlog.keep(told);
        }
        let Some(next) = backlog.next() else {
            continue;
        };
        let (extension, hold, version) = &next;
        let told = tokio::time::timeout(
            Duration::from_secs(5),
            link.tell(&instance, extension.as_str(), *hold, *version),
        )
        .await;
        match told {
            Ok(Ok(())) => {
                backlog.done(&next);
                if failing {
                    tracing::info!("agents' states are told to the database again");
                    failing = false;
                }
            }
            failed => {
                if failed.is_err() {
                    link.reset();
                }
                if !failing {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "no answer in 5s".to_owned(),
                    };
                    tracing::warn!(%error, agents = backlog.pending.len(), "cannot tell the database which agents this instance holds; retrying");
                    failing = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Listens to the database's notifications until `stop`, reconnecting as needed.
async fn listen(
    store: Store,
    url: String,
    directory: Arc<Directory>,
    remote: mpsc::UnboundedSender<Remote>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let listened = tokio::select! {
            _ = stop.cancelled() => return,
            result = listen_once(&store, &url, &directory, &remote, &mut failing) => result,
        };
        // A quiet connection is made anew at once; a failed one after a pause.
        let Err(error) = listened else {
            continue;
        };
        if !failing {
            tracing::warn!(%error, "not hearing the other instances' agent changes; trying again every 2 s");
            failing = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// One connection: listen, read everything whole, then pass each notification on until the
/// connection is lost.
async fn listen_once(
    store: &Store,
    url: &str,
    directory: &Directory,
    remote: &mpsc::UnboundedSender<Remote>,
    failing: &mut bool,
) -> Result<(), String> {
    let mut listener = PgListener::connect(url).await.map_err(|e| e.to_string())?;
    listener
        .listen_all(CHANNELS)
        .await
        .map_err(|e| e.to_string())?;
    let holds = store.holds().await.map_err(|e| e.to_string())?;
    let states = store.agent_states().await.map_err(|e| e.to_string())?;
    let contacts = store.contacts().await.map_err(|e| e.to_string())?;
    // Whole: what was forgotten while not listening is forgotten here too.
    directory.replace(&contacts);
    let _ = remote.send(Remote::Snapshot {
        holds: holds
            .into_iter()
            .map(|h| (h.extension, h.instance, h.hold))
            .collect(),
        away: states
            .into_iter()
            .map(|s| (s.extension, s.away, s.reason))
            .collect(),
    });
    if *failing {
        tracing::info!("hearing the other instances' agent changes again");
        *failing = false;
    }
    loop {
        // A connection that died without a word (a host gone, a firewall's idle cut) would
        // wait forever: after a quiet while the listener is dropped (so a read cut short
        // leaves nothing behind) and everything read again on a new one.
        let Ok(received) = tokio::time::timeout(LISTEN_QUIET, listener.try_recv()).await else {
            return Ok(());
        };
        match received {
            Ok(Some(notification)) => {
                heard(
                    notification.channel(),
                    notification.payload(),
                    directory,
                    remote,
                );
            }
            // The connection was lost: read everything again on a new one.
            Ok(None) => return Err("the connection was lost".to_owned()),
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// One notification.
fn heard(
    channel: &str,
    payload: &str,
    directory: &Directory,
    remote: &mpsc::UnboundedSender<Remote>,
) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
        tracing::debug!(%channel, %payload, "a notification that is not JSON");
        return;
    };
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let flag = |key: &str| value.get(key).and_then(serde_json::Value::as_bool);
    match channel {
        "sipdesk_holds" => {
            let (Some(extension), Some(instance), Some(state)) =
                (text("extension"), text("instance"), text("state"))
            else {
                return;
            };
            let left = value
                .get("remaining_ms")
                .and_then(serde_json::Value::as_i64);
            let _ = remote.send(Remote::Hold {
                extension,
                instance,
                hold: read_hold(&state, left),
            });
        }
        "sipdesk_agents" => {
            let (Some(extension), Some(state)) = (text("extension"), text("state")) else {
                return;
            };
            let _ = remote.send(Remote::Away {
                extension,
                away: state == "away",
                reason: text("reason"),
            });
        }
        "sipdesk_contacts" => {
            let (Some(integration), Some(phone)) = (text("integration"), text("phone")) else {
                return;
            };
            if flag("gone") == Some(true) {
                directory.forget(&integration, &phone);
                return;
            }
            let said = match (flag("contact"), flag("inactive")) {
                (Some(false), _) => Said::NoContact,
                (Some(true), Some(true)) => Said::Inactive,
                _ => Said::Active,
            };
            directory.learn(&integration, &phone, said);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(text: &str) -> Extension {
        Extension::parse(text).unwrap()
    }

    #[test]
    fn a_release_coming_while_its_hold_is_written_is_told_after_it() {
        let mut backlog = Backlog::default();
        backlog.keep((ext("2001"), Hold::Busy, 5));
        let first = backlog.next().unwrap();
        assert_eq!(first, (ext("2001"), Hold::Busy, 5));
        // The release names the hold it frees: the same version.
        backlog.keep((ext("2001"), Hold::Free, 5));
        backlog.done(&first);
        assert_eq!(backlog.next(), Some((ext("2001"), Hold::Free, 5)));
    }

    #[test]
    fn the_latest_state_of_each_agent_is_told_oldest_agent_first() {
        let mut backlog = Backlog::default();
        backlog.keep((ext("2002"), Hold::Busy, 1));
        backlog.keep((ext("2001"), Hold::Busy, 2));
        backlog.keep((ext("2002"), Hold::Free, 1));
        let next = backlog.next().unwrap();
        assert_eq!(next, (ext("2002"), Hold::Free, 1));
        backlog.done(&next);
        let next = backlog.next().unwrap();
        assert_eq!(next, (ext("2001"), Hold::Busy, 2));
        backlog.done(&next);
        assert!(backlog.is_empty() && backlog.next().is_none());
    }
}
