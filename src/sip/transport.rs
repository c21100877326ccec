//! The sockets: UDP datagrams and TCP connections, as tokio tasks around the sans-io layers.
//!
//! UDP: the daemon loop reads the first UDP socket itself ([`Sockets::primary_udp`]), with no
//! hop through a channel; any other UDP socket has a receive task. Each socket has exactly one
//! reader. Sends go straight out of the UDP socket of the right address family.
//!
//! TCP: each accepted or opened connection has a reader task (framing with [`StreamDecoder`],
//! answering CRLF keep-alive pings, closing on broken framing) and a writer task fed by a
//! channel, so the daemon loop never waits on a slow peer. What a connection may do is the
//! shared [`Policy`], read afresh at each decision so a reload applies at once:
//! - connections from untrusted addresses are closed at once;
//! - at most `max_connections` are open (accepted and opened together, and never more than the
//!   process's open-file limit allows); one more closes another to make room, so piles of idle
//!   connections cannot lock the PBX out: another host's before the PBX's own, then one that
//!   never brought a whole message, then the one idle the longest;
//! - a connection from an address no longer trusted (after a reload) is closed;
//! - what sipdesk sends waits in a queue of [`SEND_QUEUE`] messages per connection; a peer that
//!   stops reading, so that the queue fills or one write blocks for `tcp_message_timeout`, is
//!   closed rather than allowed to hold memory;
//! - a connection idle for `tcp_idle_timeout` is closed, and one that starts a message and
//!   does not finish it within `tcp_message_timeout` (a peer trickling bytes) too;
//! - when accepting fails for want of file descriptors, the idlest connection is closed and
//!   the failure logged once per ten seconds, not once per attempt.
//!
//! Each UDP socket asks for a 4 MiB receive buffer ([`UDP_RECEIVE_BUFFER`]): the kernel's
//! default (about 208 KiB) overflowed in bursts at a few thousand calls per second, and a
//! dropped INVITE, ACK or BYE costs a retransmission at best and a call left open at worst.
//! The kernel grants at most `net.core.rmem_max`; sipdesk logs what it got when that is less.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::peer::{Peer, Transport};
use super::policy::{Policy, SharedPolicy};
use super::wire::{Inbound, Refusal, StreamDecoder, StreamItem};

/// The receive buffer asked for on each UDP socket.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Most messages waiting to be written to one TCP connection.
pub const SEND_QUEUE: usize = 1024;

/// File descriptors kept for everything but TCP connections (sockets, the database, helpdesk
/// requests, the journal).
pub const RESERVED_FILES: usize = 64;

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
}

/// One open TCP connection.
#[derive(Debug)]
struct Connection {
    addr: SocketAddr,
    sender: mpsc::Sender<Bytes>,
    /// The last time anything was read or written.
    last: Instant,
    /// Whole messages it brought.
    messages: u64,
    /// Closes it (eviction, a reload, a peer that does not read).
    close: CancellationToken,
}

/// The open TCP connections, shared by the listeners, the connection tasks and the senders.
#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<u64, Connection>,
    by_addr: HashMap<SocketAddr, u64>,
}

impl Table {
    fn insert(&mut self, id: u64, connection: Connection) {
        self.by_addr.insert(connection.addr, id);
        self.by_id.insert(id, connection);
    }

    fn remove(&mut self, id: u64) {
        if let Some(connection) = self.by_id.remove(&id) {
            if self.by_addr.get(&connection.addr) == Some(&id) {
                self.by_addr.remove(&connection.addr);
            }
        }
    }

    fn touch(&mut self, id: u64, message: bool) {
        if let Some(connection) = self.by_id.get_mut(&id) {
            connection.last = Instant::now();
            connection.messages += u64::from(message);
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(connection) = self.by_id.get(&id) {
            connection.close.cancel();
        }
        self.remove(id);
    }

    /// Closes connections until fewer than `max` are open, the least useful first: others'
    /// before the PBX's (`pbx`), then those that never brought a whole message, then the
    /// idlest. Returns how many it closed.
    fn make_room(&mut self, max: usize, pbx: IpAddr) -> usize {
        let mut closed = 0;
        while self.by_id.len() >= max.max(1) {
            let Some(id) = self
                .by_id
                .iter()
                .min_by_key(|(_, c)| (c.addr.ip() == pbx, c.messages > 0, c.last))
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.close(id);
            closed += 1;
        }
        closed
    }

    /// Closes the connections from addresses `policy` no longer trusts.
    fn close_untrusted(&mut self, policy: &Policy) -> usize {
        let untrusted: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, c)| !policy.trusts(c.addr.ip()))
            .map(|(id, _)| *id)
            .collect();
        for id in &untrusted {
            self.close(*id);
        }
        untrusted.len()
    }
}

/// Shared state of the TCP side.
#[derive(Clone, Debug)]
struct Tcp {
    table: Arc<Mutex<Table>>,
    next_id: Arc<AtomicU64>,
    events: mpsc::Sender<Received>,
    policy: SharedPolicy,
    /// The most connections the open-file limit leaves room for.
    file_limit: usize,
    cancel: CancellationToken,
}

impl Tcp {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        match self.table.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn max_connections(&self) -> usize {
        self.policy.load().max_connections.min(self.file_limit)
    }

    /// Registers a new connection, closing another when the table is full.
    fn register(&self, addr: SocketAddr, sender: mpsc::Sender<Bytes>) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = self.cancel.child_token();
        let max = self.max_connections();
        let pbx = self.policy.load().pbx;
        let mut table = self.table();
        let evicted = table.make_room(max, pbx);
        table.insert(
            id,
            Connection {
                addr,
                sender,
                last: Instant::now(),
                messages: 0,
                close: close.clone(),
            },
        );
        drop(table);
        if evicted > 0 {
            tracing::debug!(%addr, evicted, max_connections = max, "TCP connections at their limit: others closed to make room");
        }
        (id, close)
    }
}

/// The open sockets and connections.
pub struct Sockets {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Tcp,
}

/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Sockets {
    /// Binds every listen address; datagrams and stream messages arrive on the returned channel.
    /// `file_limit` is the open-file limit of the process: connections stay below it.
    pub async fn bind(
        listen: &[(Transport, SocketAddr)],
        policy: SharedPolicy,
        file_limit: usize,
        cancel: CancellationToken,
    ) -> std::io::Result<(
        Sockets,
        mpsc::Receiver<Received>,
        Vec<(Transport, SocketAddr)>,
    )> {
        let (events, inbound) = mpsc::channel(8192);
        let tcp = Tcp {
            table: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            events: events.clone(),
            policy,
            file_limit: file_limit.saturating_sub(RESERVED_FILES).max(1),
            cancel: cancel.clone(),
        };
        let mut udp = Vec::new();
        let mut bound = Vec::new();
        for (transport, addr) in listen {
            match transport {
                Transport::Udp => {
                    let socket = UdpSocket::bind(addr).await?;
                    grow_receive_buffer(&socket);
                    let socket = Arc::new(socket);
                    bound.push((Transport::Udp, socket.local_addr()?));
                    // The first UDP socket is read by the daemon loop itself.
                    if !udp.is_empty() {
                        tokio::spawn(receive_datagrams(
                            socket.clone(),
                            events.clone(),
                            cancel.clone(),
                        ));
                    }
                    udp.push(socket);
                }
                Transport::Tcp => {
                    let listener = TcpListener::bind(addr).await?;
                    bound.push((Transport::Tcp, listener.local_addr()?));
                    tokio::spawn(accept(listener, tcp.clone()));
                }
            }
        }
        Ok((Sockets { udp, tcp }, inbound, bound))
    }

    /// The UDP socket the daemon loop reads itself.
    pub fn primary_udp(&self) -> Option<Arc<UdpSocket>> {
        self.udp.first().cloned()
    }

    /// How many TCP connections are open.
    pub fn connections(&self) -> usize {
        self.tcp.table().by_id.len()
    }

    /// After a reload: closes the connections from addresses no longer trusted.
    pub fn close_untrusted(&self) {
        let policy = self.tcp.policy.load();
        let closed = self.tcp.table().close_untrusted(&policy);
        if closed > 0 {
            tracing::info!(
                connections = closed,
                "TCP connections from addresses no longer trusted closed"
            );
        }
    }

    /// Sends a message; TCP messages without a connection open one to the peer.
    pub fn send(&mut self, peer: Peer, bytes: Bytes) {
        match peer.transport {
            Transport::Udp => self.send_datagram(peer.addr, bytes),
            Transport::Tcp => {
                {
                    let mut table = self.tcp.table();
                    let id = peer
                        .connection
                        .filter(|id| table.by_id.contains_key(id))
                        .or_else(|| table.by_addr.get(&peer.addr).copied());
                    if let Some((id, connection)) =
                        id.and_then(|id| table.by_id.get(&id).map(|c| (id, c)))
                    {
                        match connection.sender.try_send(bytes.clone()) {
                            Ok(()) => return,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                tracing::warn!(%peer, queued = SEND_QUEUE, "closing a TCP connection whose peer does not read what sipdesk sends");
                                table.close(id);
                                return;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {}
                        }
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
        let (sender, receiver) = mpsc::channel::<Bytes>(SEND_QUEUE);
        let _ = sender.try_send(first);
        let (id, close) = self.tcp.register(addr, sender.clone());
        let tcp = self.tcp.clone();
        tokio::spawn(async move {
            let peer = Peer::tcp(addr, Some(id));
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    serve_connection(stream, peer, sender, receiver, close, tcp).await;
                }
                _ => {
                    tracing::warn!(%addr, "cannot open a TCP connection");
                    tcp.table().remove(id);
                    let _ = tcp
                        .events
                        .send(Received::Failed {
                            peer: Peer::tcp(addr, None),
                        })
                        .await;
                }
            }
        });
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

/// How often a failing accept is logged.
const ACCEPT_ERROR_EVERY: Duration = Duration::from_secs(10);

async fn accept(listener: TcpListener, tcp: Tcp) {
    let mut failures: u64 = 0;
    let mut logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = tcp.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                failures += 1;
                if logged.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_EVERY) {
                    tracing::warn!(%error, failures, "cannot accept TCP connections; closing the idlest to make room");
                    logged = Some(Instant::now());
                    failures = 0;
                }
                // Out of file descriptors: free one, then give the system a moment.
                let open = tcp.table().by_id.len();
                let pbx = tcp.policy.load().pbx;
                tcp.table().make_room(open, pbx);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !tcp.policy.load().trusts(addr.ip()) {
            tracing::info!(%addr, "TCP connection from an untrusted address closed");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (sender, receiver) = mpsc::channel(SEND_QUEUE);
        let (id, close) = tcp.register(addr, sender.clone());
        let peer = Peer::tcp(addr, Some(id));
        tokio::spawn(serve_connection(
            stream,
            peer,
            sender,
            receiver,
            close,
            tcp.clone(),
        ));
    }
}

/// Reads and frames messages from a connection while a writer task drains its queue; closes
/// it when evicted, idle too long, trickling a message, no longer trusted, or not reading.
async fn serve_connection(
    stream: TcpStream,
    peer: Peer,
    sender: mpsc::Sender<Bytes>,
    mut outgoing: mpsc::Receiver<Bytes>,
    close: CancellationToken,
    tcp: Tcp,
) {
    let Some(id) = peer.connection else { return };
    let (mut reader, mut writer) = stream.into_split();
    let writing = {
        let tcp = tcp.clone();
        let close = close.clone();
        tokio::spawn(async move {
            while let Some(bytes) = outgoing.recv().await {
                let limit = tcp.policy.load().tcp_message_timeout;
                match tokio::time::timeout(limit, writer.write_all(&bytes)).await {
                    Ok(Ok(())) => tcp.table().touch(id, false),
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!(%peer, "closing a TCP connection whose peer does not read what sipdesk sends");
                        close.cancel();
                        return;
                    }
                }
            }
        })
    };
    let mut decoder = StreamDecoder::new(tcp.policy.load().limits);
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_read = Instant::now();
    // When the message being received began, while one is incomplete.
    let mut message_started: Option<Instant> = None;
    'read: loop {
        let policy = tcp.policy.load();
        if !policy.trusts(peer.addr.ip()) {
            tracing::info!(%peer, "closing a TCP connection from an address no longer trusted");
            break;
        }
        decoder.set_limits(policy.limits);
        let idle_until = last_read + policy.tcp_idle_timeout;
        let deadline = match message_started {
            Some(at) => idle_until.min(at + policy.tcp_message_timeout),
            None => idle_until,
        };
        let n = tokio::select! {
            _ = close.cancelled() => {
                tracing::debug!(%peer, "TCP connection closed");
                break;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if message_started.is_some() {
                    tracing::info!(%peer, "closing a TCP connection that did not finish its message in time");
                } else {
                    tracing::debug!(%peer, "closing an idle TCP connection");
                }
                break;
            }
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        last_read = Instant::now();
        tcp.table().touch(id, false);
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_item() {
                Ok(None) => break,
                Ok(Some(StreamItem::Ping)) => {
                    let _ = sender.try_send(Bytes::from_static(b"\r\n"));
                }
                Ok(Some(StreamItem::Message(item))) => {
                    message_started = None;
                    tcp.table().touch(id, true);
                    if tcp
                        .events
                        .send(Received::Stream { item, peer })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(close) => {
                    tracing::info!(%peer, why = close.why, "closing a TCP connection with broken framing");
                    if let Some(answer) = close.answer {
                        let _ = sender.try_send(Bytes::from(answer));
                    }
                    break 'read;
                }
            }
        }
        if decoder.in_message() {
            message_started.get_or_insert(last_read);
        } else {
            message_started = None;
        }
    }
    tcp.table().remove(id);
    drop(sender);
    // Let queued answers go out before the connection closes.
    let abort = writing.abort_handle();
    if tokio::time::timeout(Duration::from_secs(1), writing)
        .await
        .is_err()
    {
        abort.abort();
    }
}
