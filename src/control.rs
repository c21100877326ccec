//! The seam into the running proxy: what the rest of the daemon (the admin API) asks of the
//! proxy's thread, as commands with replies. The proxy owns every call on one thread and nothing
//! else touches its state; a [`Handle`] is how the HTTP side reaches it, never the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::routing::Extension;

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
}

impl Handle {
    /// A handle, and the receiving end the daemon loop reads.
    pub fn new() -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let handle = Handle {
            commands,
            draining: Arc::default(),
        };
        (handle, receiver)
    }

    /// Ends a call in progress; `Ok(false)` when there is none with that id.
    pub async fn end_call(&self, id: &str) -> Result<bool, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::EndCall {
                id: id.to_owned(),
                reply,
            })
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// Frees an agent; returns how many calls held them.
    pub async fn free_agent(&self, extension: Extension) -> Result<usize, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::FreeAgent { extension, reply })
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// The daemon is stopping: new calls are refused.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
