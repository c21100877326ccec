//! The I/O around one voicemail [`Session`]: its UDP socket, its clock and its recording file.
//! A call sipdesk answers gets a port from [`Ports`] (one RTP port per session, even numbers of
//! `[media] rtp_ports`, at most `max_sessions` at once); [`run`] then plays the greeting, records
//! the caller into a WAV file (8 kHz, 16-bit) and returns what was recorded when the session
//! ends or the call tells it to stop ([`Control`]).
//!
//! - **Who may send.** RTP is taken from the address the caller's SDP named. A phone behind NAT
//!   sends from another address than it announced: until a packet has come from the announced
//!   one, the first packet from the call's signalling source IP (the PBX or phone that sent the
//!   INVITE) moves the session there (symmetric RTP) when it is RTP; anything else is dropped.
//!   Addresses are compared in canonical form (an IPv4-mapped IPv6 address is its IPv4). The
//!   other port of that host may be the same machine's: a phone or PBX that announces one RTP
//!   port and sends from another is common, so it is followed; a previous call's late packets
//!   cannot take a session over because ports are handed out in turn (below).
//! - **No message, no file.** A caller who hangs up before the tone ends (or during it), or
//!   whose recording holds no voiced audio at all (quiet RTP until `silence` ended it), leaves
//!   no voicemail: the file is removed, [`Recorded::file`] is `None`, and the call is recorded
//!   as missed.
//! - **Ports in turn.** [`Ports`] hands out the even ports round-robin, so a port a session just
//!   gave back is the last to be taken again: late packets of the previous call do not reach
//!   the next one.
//! - RTCP is not sent; RTP's port + 1 is left unbound (RFC 3550 makes RTCP optional to use for
//!   a receiver this short-lived).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::session::{Action, End, Session, Settings};
use super::wav::{WavWriteError, WavWriter};

/// The RTP ports sessions may use, and which are taken.
#[derive(Debug)]
pub struct Ports {
    range: RangeInclusive<u16>,
    max_sessions: usize,
    taken: Mutex<BTreeSet<u16>>,
    /// The port given last: the next search starts after it.
    last: Mutex<Option<u16>>,
}

/// A port held by one session; given back when dropped.
#[derive(Debug)]
pub struct Lease {
    port: u16,
    ports: Arc<Ports>,
}

impl Lease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut taken) = self.ports.taken.lock() {
            taken.remove(&self.port);
        }
    }
}

impl Ports {
    pub fn new(range: RangeInclusive<u16>, max_sessions: usize) -> Arc<Ports> {
        Arc::new(Ports {
            range,
            max_sessions,
            taken: Mutex::default(),
            last: Mutex::default(),
        })
    }

    /// A free even port, or `None` when `max_sessions` are running or the range is used up.
    pub fn take(self: &Arc<Ports>) -> Option<Lease> {
        let mut taken = self.taken.lock().ok()?;
        if taken.len() >= self.max_sessions {
            return None;
        }
        let mut last = self.last.lock().ok()?;
        let after = last.map_or(0, |p| p.saturating_add(1));
        let even = |p: &u16| p % 2 == 0 && !taken.contains(p);
        let port = self
            .range
            .clone()
            .filter(|p| *p >= after)
            .find(even)
            .or_else(|| self.range.clone().find(even))?;
        *last = Some(port);
        taken.insert(port);
        Some(Lease {
            port,
            ports: self.clone(),
        })
    }

    /// Sessions running now.
    pub fn in_use(&self) -> usize {
        self.taken.lock().map_or(0, |t| t.len())
    }
}

/// What the call tells its media session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// The caller put the call on hold (true) or took it off (false).
    Hold(bool),
    /// The call ended (BYE, CANCEL, an admin): stop, keep what was recorded.
    Stop,
    /// A new offer named another address for the caller's RTP.
    Redirect(SocketAddr),
}

/// One session to run.
#[derive(Debug)]
pub struct Spec {
    /// Where the caller's SDP said to send RTP.
    pub remote: SocketAddr,
    /// The IP the call's INVITE came from (symmetric RTP is allowed from it).
    pub signalling_source: IpAddr,
    pub settings: Settings,
    pub greeting: Arc<super::greeting::Greeting>,
    /// The recording's file.
    pub file: PathBuf,
}

/// What the session left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The file, when something was recorded.
    pub file: Option<PathBuf>,
    /// Samples recorded (8 kHz): 0 when the caller left before the tone ended.
    pub samples: usize,
    /// Why the recording ended; `None` when the call stopped it.
    pub end: Option<End>,
}

/// Why a session could not run.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot write the recording {path}")]
    File {
        path: String,
        #[source]
        source: WavWriteError,
    },
    #[error("cannot bind the RTP port {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the media session failed: {0}")]
    Failed(String),
    #[error("cannot create the recording {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the session's socket on `ip` at the lease's port.
pub async fn bind(ip: IpAddr, lease: &Lease) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(ip, lease.port())).await
}

/// Runs one session on `socket` until it ends or the call stops it.
pub async fn run(
    socket: UdpSocket,
    spec: Spec,
    mut control: mpsc::UnboundedReceiver<Control>,
) -> Result<Recorded, MediaError> {
    let path = spec.file.display().to_string();
    let file = std::fs::File::create(&spec.file).map_err(|source| MediaError::Create {
        path: path.clone(),
        source,
    })?;
    let mut writer =
        WavWriter::create(std::io::BufWriter::new(file)).map_err(|source| MediaError::File {
            path: path.clone(),
            source,
        })?;
    let mut session = Session::new(Instant::now(), spec.settings, spec.greeting);
    let mut remote = spec.remote;
    let mut heard_from_announced = false;
    let mut end = None;
    let mut buffer = vec![0u8; 2048];
    'running: loop {
        let actions = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok((n, from)) => {
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    if from == remote {
                        heard_from_announced = true;
                    } else if !heard_from_announced
                        && from.ip() == spec.signalling_source.to_canonical()
                        && is_rtp(&buffer[..n])
                    {
                        remote = from;
                        heard_from_announced = true;
                    } else {
                        continue;
                    }
                    session.receive(Instant::now(), &buffer[..n])
                }
                // ICMP port unreachable from an earlier send, on Linux: not fatal.
                Err(_) => continue,
            },
            _ = sleep_until(session.next_deadline()) => session.poll(Instant::now()),
            command = control.recv() => match command {
                Some(Control::Hold(held)) => {
                    session.set_hold(Instant::now(), held);
                    Vec::new()
                }
                Some(Control::Redirect(to)) => {
                    remote = to;
                    heard_from_announced = false;
                    Vec::new()
                }
                Some(Control::Stop) | None => {
                    let held = session.close();
                    apply(&socket, remote, &mut writer, &path, held).await?;
                    break 'running;
                }
            },
        };
        if let Some(ended) = apply(&socket, remote, &mut writer, &path, actions).await? {
            end = Some(ended);
            break;
        }
    }
    let samples = session.recorded_samples();
    writer.finalize().map_err(|source| MediaError::File {
        path: path.clone(),
        source,
    })?;
    if session.voiced_samples() == 0 {
        let _ = std::fs::remove_file(&spec.file);
        return Ok(Recorded {
            file: None,
            samples,
            end,
        });
    }
    Ok(Recorded {
        file: Some(spec.file),
        samples,
        end,
    })
}

/// Whether a datagram is RTP version 2 (what may move the session behind NAT).
fn is_rtp(bytes: &[u8]) -> bool {
    rtp_rs::RtpReader::new(bytes).is_ok_and(|p| p.version() == 2)
}

/// Carries out a session's actions; returns its end when it ended.
async fn apply(
    socket: &UdpSocket,
    remote: SocketAddr,
    writer: &mut WavWriter<std::io::BufWriter<std::fs::File>>,
    path: &str,
    actions: Vec<Action>,
) -> Result<Option<End>, MediaError> {
    let mut ended = None;
    for action in actions {
        match action {
            Action::Send(packet) => {
                // A lost packet is a lost 20 ms: nothing to retry.
                let _ = socket.send_to(&packet, remote).await;
            }
            Action::Record(samples) => {
                writer.append(&samples).map_err(|source| MediaError::File {
                    path: path.to_owned(),
                    source,
                })?;
            }
            Action::Ended(end) => ended = Some(end),
        }
    }
    Ok(ended)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
