//! The seam into the running proxy: what the rest of the daemon (the admin API, the wallboard)
//! asks of the proxy's thread and what it reads from it. The proxy owns every call on one
//! thread and nothing else touches its state:
//!
//! - **Commands with replies** ([`Command`]): end a call, free an agent, set an agent away or
//!   available. Sent through a [`Handle`]; the proxy's loop answers each in turn.
//! - **A published snapshot** ([`Live`]): the proxy's loop hands a new one to the
//!   [`Publisher`] after anything changed (at most every [`PUBLISH_EVERY`]) and once a second
//!   regardless; readers take the latest from [`Handle::live`] without waiting on the proxy.
//! - **Events** ([`LiveEvent`]): the publisher compares each snapshot with the one before and
//!   broadcasts what changed, for `GET /events`. A reader too slow to keep up is told it lagged
//!   and starts again from a snapshot. A state that lasts less than the time between two
//!   snapshots (a call answered at its first ring) may not show: the events say where things
//!   are, not every step they took (the call's events in the store have every step).
//!
//! Nothing here polls the database: an agent's change reaches routing through a command.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::live::{Live, LiveEvent};
use crate::metrics::Counters;
use crate::proxy::Census;
use crate::routing::Extension;

/// The most often a snapshot is published while things change.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// How many events a slow reader may fall behind before it is told it lagged.
const EVENT_BACKLOG: usize = 4096;

/// What the proxy's thread is asked to do.
#[derive(Debug)]
pub enum Command {
    /// End the call with this sipdesk id; the reply says whether one was in progress.
    EndCall {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    /// Free an agent: end (or move on) every call holding them; the reply says how many.
    FreeAgent {
        extension: Extension,
        reply: oneshot::Sender<usize>,
    },
    /// Mark an agent away (with why, when given) or available; the reply says whether it
    /// changed anything.
    SetAgent {
        extension: Extension,
        away: bool,
        reason: Option<String>,
        reply: oneshot::Sender<bool>,
    },
    /// Send a helpdesk reply to the customer as a text; the reply is the PBX's answer: `None`
    /// when it took the text, else why not.
    SendText {
        order: crate::proxy::TextOrder,
        reply: oneshot::Sender<Option<String>>,
    },
}

/// The proxy's thread has stopped and answers nothing more.
#[derive(Debug, thiserror::Error)]
#[error("sipdesk is stopping")]
pub struct Stopped;

/// A way to the proxy's thread, cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    draining: Arc<AtomicBool>,
    live: watch::Receiver<Arc<Live>>,
    events: broadcast::Sender<Arc<LiveEvent>>,
    counters: watch::Receiver<Arc<(Counters, Census)>>,
}

/// The proxy loop's end of the seam: where it publishes snapshots.
#[derive(Debug)]
pub struct Publisher {
    live: watch::Sender<Arc<Live>>,
    events: broadcast::Sender<Arc<LiveEvent>>,
    counters: watch::Sender<Arc<(Counters, Census)>>,
}

impl Publisher {
    /// Publishes a new snapshot with the proxy's counters and census, and broadcasts what
    /// changed since the last one.
    pub fn publish(&self, live: Live, counters: Counters, census: Census) {
        self.counters.send_replace(Arc::new((counters, census)));
        let before = self.live.borrow().clone();
        for event in live.changes_since(&before) {
            // No subscriber is not an error.
            let _ = self.events.send(Arc::new(event));
        }
        self.live.send_replace(Arc::new(live));
    }
}

impl Handle {
    /// A handle, the receiving end of the commands the daemon loop reads, and the publisher it
    /// hands snapshots to.
    pub fn new() -> (Handle, mpsc::UnboundedReceiver<Command>, Publisher) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (live_tx, live) = watch::channel(Arc::new(Live::default()));
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let (counters_tx, counters) = watch::channel(Arc::default());
        let handle = Handle {
            commands,
            draining: Arc::default(),
            live,
            events: events.clone(),
            counters,
        };
        let publisher = Publisher {
            live: live_tx,
            events,
            counters: counters_tx,
        };
        (handle, receiver, publisher)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Ends a call in progress; `Ok(false)` when there is none with that id.
    pub async fn end_call(&self, id: &str) -> Result<bool, Stopped> {
        let id = id.to_owned();
        self.ask(|reply| Command::EndCall { id, reply }).await
    }

    /// Sends a text through the PBX; `Ok(None)` when the PBX took it, `Ok(Some(why))` when not.
    pub async fn send_text(
        &self,
        order: crate::proxy::TextOrder,
    ) -> Result<Option<String>, Stopped> {
        self.ask(|reply| Command::SendText { order, reply }).await
    }

    /// Frees an agent; returns how many calls held them.
    pub async fn free_agent(&self, extension: Extension) -> Result<usize, Stopped> {
        self.ask(|reply| Command::FreeAgent { extension, reply })
            .await
    }

    /// Marks an agent away or available; returns whether it changed anything.
    pub async fn set_agent(
        &self,
        extension: Extension,
        away: bool,
        reason: Option<String>,
    ) -> Result<bool, Stopped> {
        self.ask(|reply| Command::SetAgent {
            extension,
            away,
            reason,
            reply,
        })
        .await
    }

    /// The latest snapshot.
    pub fn live(&self) -> Arc<Live> {
        self.live.borrow().clone()
    }

    /// The proxy's counters and census as last published.
    pub fn counters(&self) -> Arc<(Counters, Census)> {
        self.counters.borrow().clone()
    }

    /// A receiver that wakes when a new snapshot is published.
    pub fn watch_live(&self) -> watch::Receiver<Arc<Live>> {
        self.live.clone()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.events.subscribe()
    }

    /// The daemon is stopping: new calls are refused.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
