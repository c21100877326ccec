//! The sockets: UDP datagrams and TCP connections, as tokio tasks around the sans-io layers.
//!
//! UDP: the daemon loop reads the first UDP socket itself ([`Sockets::primary_udp`]), with no
//! hop through a channel; any other UDP socket has a receive task. Sends go straight out of the
//! UDP socket of the right address family. TCP: each accepted or opened connection has a reader task (framing with
//! [`StreamDecoder`], answering CRLF keep-alive pings, closing on broken framing) and a writer
//! task fed by a channel, so the daemon loop never waits on a slow peer. Connections from
//! untrusted addresses are closed at once.
//!
//! Each UDP socket asks for a 4 MiB receive buffer ([`UDP_RECEIVE_BUFFER`]): the kernel's
//! default (about 208 KiB) overflowed in bursts at a few thousand calls per second, and a
//! dropped INVITE, ACK or BYE costs a retransmission at best and a call left open at worst.
//! The kernel grants at most `net.core.rmem_max`; sipdesk logs what it got when that is less.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::peer::{Peer, Transport};
use super::wire::{Inbound, Limits, Refusal, StreamDecoder, StreamItem};

/// The receive buffer asked for on each UDP socket.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Asks for [`UDP_RECEIVE_BUFFER`] and says so when the kernel grants less.
fn grow_receive_buffer(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!(%error, "cannot enlarge the UDP receive buffer");
        return;
    }
    // Linux reports twice the size it accounts for (bookkeeping overhead included).
    match socket.recv_buffer_size() {
        Ok(granted) if granted < UDP_RECEIVE_BUFFER => tracing::warn!(
            granted_kib = granted / 1024,
            wanted_kib = UDP_RECEIVE_BUFFER / 1024,
            "the kernel limits the UDP receive buffer; bursts of calls may be dropped (raise sysctl net.core.rmem_max)"
        ),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "cannot read the UDP receive buffer size"),
    }
}

/// What the sockets tell the daemon loop.
#[derive(Debug)]
pub enum Received {
    Datagram {
        bytes: Vec<u8>,
        from: SocketAddr,
    },
    Stream {
        item: Result<Inbound, Refusal>,
        peer: Peer,
    },
    /// A connection could not be opened.
    Failed {
        peer: Peer,
    },
    /// A connection closed.
    Closed {
        peer: Peer,
    },
}

/// Who may connect: the PBX and the trusted networks. Shared with the listeners and replaced on
/// reload.
#[derive(Clone, Debug, Default)]
pub struct Trust(Arc<RwLock<(Vec<IpAddr>, Vec<IpNet>)>>);

impl Trust {
    pub fn set(&self, hosts: Vec<IpAddr>, nets: Vec<IpNet>) {
        if let Ok(mut guard) = self.0.write() {
            *guard = (hosts, nets);
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0
            .read()
            .map(|g| g.0.contains(&ip) || g.1.iter().any(|n| n.contains(&ip)))
            .unwrap_or(false)
    }
}

/// The open sockets and connections.
pub struct Sockets {
    udp: Vec<Arc<UdpSocket>>,
    connections: HashMap<u64, UnboundedSender<Bytes>>,
    by_addr: HashMap<SocketAddr, u64>,
    next_id: Arc<AtomicU64>,
    events: mpsc::Sender<Received>,
    /// Connections accepted by the listeners, to add to `connections`.
    registry: mpsc::UnboundedReceiver<(u64, SocketAddr, UnboundedSender<Bytes>)>,
    limits: Limits,
    cancel: CancellationToken,
}

/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Sockets {
    /// Binds every listen address; datagrams and stream messages arrive on the returned channel.
    pub async fn bind(
        listen: &[(Transport, SocketAddr)],
        limits: Limits,
        trust: Trust,
        cancel: CancellationToken,
    ) -> std::io::Result<(
        Sockets,
        mpsc::Receiver<Received>,
        Vec<(Transport, SocketAddr)>,
    )> {
        let (events, inbound) = mpsc::channel(8192);
        let (register, registry) = mpsc::unbounded_channel();
        let next_id = Arc::new(AtomicU64::new(1));
        let mut udp = Vec::new();
        let mut bound = Vec::new();
        for (transport, addr) in listen {
            match transport {
                Transport::Udp => {
                    let socket = UdpSocket::bind(addr).await?;
                    grow_receive_buffer(&socket);
                    let socket = Arc::new(socket);
                    bound.push((Transport::Udp, socket.local_addr()?));
                    tokio::spawn(receive_datagrams(
                        socket.clone(),
                        events.clone(),
                        cancel.clone(),
                    ));
                    udp.push(socket);
                }
                Transport::Tcp => {
                    let listener = TcpListener::bind(addr).await?;
                    bound.push((Transport::Tcp, listener.local_addr()?));
                    let accept = Accept {
                        listener,
                        events: events.clone(),
                        register: register.clone(),
                        next_id: next_id.clone(),
                        limits,
                        trust: trust.clone(),
                        cancel: cancel.clone(),
                    };
                    tokio::spawn(accept.run());
                }
            }
        }
        let sockets = Sockets {
            udp,
            connections: HashMap::new(),
            by_addr: HashMap::new(),
            next_id,
            events,
            registry,
            limits,
            cancel,
        };
        Ok((sockets, inbound, bound))
    }

    /// The UDP socket the daemon loop reads itself.
    pub fn primary_udp(&self) -> Option<Arc<UdpSocket>> {
        self.udp.first().cloned()
    }

    /// Sends a message; TCP messages without a connection open one to the peer.
    pub fn send(&mut self, peer: Peer, bytes: Bytes) {
        while let Ok((id, addr, sender)) = self.registry.try_recv() {
            self.by_addr.insert(addr, id);
            self.connections.insert(id, sender);
        }
        match peer.transport {
            Transport::Udp => self.send_datagram(peer.addr, bytes),
            Transport::Tcp => {
                let id = peer
                    .connection
                    .or_else(|| self.by_addr.get(&peer.addr).copied());
                if let Some(sender) = id.and_then(|id| self.connections.get(&id)) {
                    if sender.send(bytes.clone()).is_ok() {
                        return;
                    }
                }
                if peer.connection.is_some() {
                    // The connection a response belongs to is gone; RFC 3261 §18.2.2 would try a
                    // new one to the sent-by address, which for sipdesk's peers is the same host.
                    tracing::debug!(%peer, "connection closed before the response");
                }
                self.connect(peer.addr, bytes);
            }
        }
    }

    fn send_datagram(&self, to: SocketAddr, bytes: Bytes) {
        let Some(socket) = self
            .udp
            .iter()
            .find(|s| s.local_addr().is_ok_and(|l| l.is_ipv4() == to.is_ipv4()))
            .or(self.udp.first())
        else {
            tracing::warn!(%to, "no UDP socket to send from");
            return;
        };
        match socket.try_send_to(&bytes, to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    if let Err(e) = socket.send_to(&bytes, to).await {
                        tracing::warn!(%to, error = %e, "UDP send failed");
                    }
                });
            }
            Err(e) => tracing::warn!(%to, error = %e, "UDP send failed"),
        }
    }

    fn connect(&mut self, addr: SocketAddr, first: Bytes) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
        let _ = sender.send(first);
        self.connections.insert(id, sender.clone());
        self.by_addr.insert(addr, id);
        let events = self.events.clone();
        let limits = self.limits;
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let peer = Peer::tcp(addr, Some(id));
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    serve_connection(stream, peer, sender, receiver, events, limits, cancel).await;
                }
                _ => {
                    tracing::warn!(%addr, "cannot open a TCP connection");
                    let _ = events
                        .send(Received::Failed {
                            peer: Peer::tcp(addr, None),
                        })
                        .await;
                }
            }
        });
    }

    /// A connection ended: forget it.
    pub fn forget(&mut self, peer: Peer) {
        while let Ok((id, addr, sender)) = self.registry.try_recv() {
            self.by_addr.insert(addr, id);
            self.connections.insert(id, sender);
        }
        if let Some(id) = peer.connection {
            self.connections.remove(&id);
            self.by_addr.retain(|_, v| *v != id);
        }
    }
}

async fn receive_datagrams(
    socket: Arc<UdpSocket>,
    events: mpsc::Sender<Received>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let bytes = buf[..n].to_vec();
                    if events.send(Received::Datagram { bytes, from }).await.is_err() {
                        return;
                    }
                }
                // ICMP port unreachable from an earlier send shows up here on Linux: not fatal.
                Err(e) => tracing::debug!(error = %e, "UDP receive error"),
            },
        }
    }
}

struct Accept {
    listener: TcpListener,
    events: mpsc::Sender<Received>,
    register: mpsc::UnboundedSender<(u64, SocketAddr, UnboundedSender<Bytes>)>,
    next_id: Arc<AtomicU64>,
    limits: Limits,
    trust: Trust,
    cancel: CancellationToken,
}

impl Accept {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, addr) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !self.trust.allows(addr.ip()) {
                tracing::info!(%addr, "TCP connection from an untrusted address closed");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (sender, receiver) = mpsc::unbounded_channel();
            let _ = self.register.send((id, addr, sender.clone()));
            let peer = Peer::tcp(addr, Some(id));
            tokio::spawn(serve_connection(
                stream,
                peer,
                sender,
                receiver,
                self.events.clone(),
                self.limits,
                self.cancel.clone(),
            ));
        }
    }
}

/// Reads and frames messages from a connection while a writer task drains its channel.
async fn serve_connection(
    stream: TcpStream,
    peer: Peer,
    sender: UnboundedSender<Bytes>,
    mut outgoing: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::Sender<Received>,
    limits: Limits,
    cancel: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut decoder = StreamDecoder::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => break,
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_item() {
                Ok(None) => break,
                Ok(Some(StreamItem::Ping)) => {
                    let _ = sender.send(Bytes::from_static(b"\r\n"));
                }
                Ok(Some(StreamItem::Message(item))) => {
                    if events.send(Received::Stream { item, peer }).await.is_err() {
                        break 'read;
                    }
                }
                Err(close) => {
                    tracing::info!(%peer, why = close.why, "closing a TCP connection with broken framing");
                    if let Some(answer) = close.answer {
                        let _ = sender.send(Bytes::from(answer));
                    }
                    break 'read;
                }
            }
        }
    }
    drop(sender);
    let _ = events.send(Received::Closed { peer }).await;
    // Let queued answers go out before the connection closes.
    let abort = writing.abort_handle();
    if tokio::time::timeout(Duration::from_secs(1), writing)
        .await
        .is_err()
    {
        abort.abort();
    }
}
