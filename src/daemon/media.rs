//! The voicemail sessions the proxy starts ([`MediaOrder`]): each runs on a task of its own
//! with its own UDP socket ([`crate::media::runner`]), and its result goes back to the proxy
//! loop, which hands it to [`crate::proxy::Core::on_media_ended`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use tokio::sync::mpsc;

use crate::media::runner::{self, Control, MediaError, Recorded};
use crate::proxy::MediaOrder;

/// A session's end: the call it belonged to and what it left.
pub(super) type Ended = (u64, Result<Recorded, MediaError>);

/// The sessions running, by call.
pub(super) struct Sessions {
    ip: IpAddr,
    running: HashMap<u64, mpsc::UnboundedSender<Control>>,
    ended: mpsc::UnboundedSender<Ended>,
}

impl Sessions {
    /// Sessions bound on `ip`; their ends arrive on the receiver.
    pub(super) fn new(ip: IpAddr) -> (Sessions, mpsc::UnboundedReceiver<Ended>) {
        let (ended, receiver) = mpsc::unbounded_channel();
        let sessions = Sessions {
            ip,
            running: HashMap::new(),
            ended,
        };
        (sessions, receiver)
    }

    pub(super) fn order(&mut self, order: MediaOrder) {
        match order {
            MediaOrder::Start { call, lease, spec } => {
                let (control, commands) = mpsc::unbounded_channel();
                self.running.insert(call, control);
                let ended = self.ended.clone();
                let ip = self.ip;
                let port = lease.port();
                let session = tokio::spawn(async move {
                    let result = match runner::bind(ip, &lease).await {
                        Ok(socket) => runner::run(socket, *spec, commands).await,
                        Err(source) => Err(MediaError::Bind {
                            addr: SocketAddr::new(ip, port),
                            source,
                        }),
                    };
                    // The port is free again only once the socket is closed.
                    drop(lease);
                    result
                });
                // Whatever becomes of the session (a panic included), the call hears of it.
                tokio::spawn(async move {
                    let result = session
                        .await
                        .unwrap_or_else(|error| Err(MediaError::Failed(error.to_string())));
                    let _ = ended.send((call, result));
                });
            }
            MediaOrder::Control { call, control } => {
                if let Some(session) = self.running.get(&call) {
                    let _ = session.send(control);
                }
            }
        }
    }

    /// The session of `call` is over.
    pub(super) fn finished(&mut self, call: u64) {
        self.running.remove(&call);
    }
}
