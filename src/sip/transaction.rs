//! RFC 3261 §17 transactions, sans I/O: INVITE and non-INVITE, client and server, with timers
//! A to K and RFC 6026's Accepted state (timers L and M) for 2xx.
//!
//! The layer absorbs retransmitted requests (answering them with the last response), retransmits
//! over UDP, acknowledges non-2xx final responses hop by hop, builds CANCEL requests and tells the
//! transaction user what it must act on. Time is always passed in; the I/O loop sleeps until
//! [`Transactions::next_deadline`] and then calls [`Transactions::poll`].
//!
//! A client INVITE that has a provisional response never waits forever: Timer C (3 minutes,
//! restarted by every provisional response, RFC 3261 §16.8) cancels it, and a cancelled one gets
//! 64·T1 for its final response before it ends as a timeout (§9.1).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use bytes::Bytes;
use rsip::Header;

use super::message::{self, Request, Response};
use super::peer::Peer;

/// Timer C: how long a proxied INVITE may ring without a final response (more than three
/// minutes, RFC 3261 §16.6 step 11).
pub const TIMER_C: Duration = Duration::from_secs(181);

/// RFC 3261 timer base values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerSettings {
    /// Round-trip estimate (500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerSettings {
    fn default() -> TimerSettings {
        TimerSettings {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Identifies a transaction. A server transaction is matched on its top Via's branch and
/// sent-by, the method (ACK counts as INVITE), the Call-ID and the CSeq number; RFC 3261 §17.2.3
/// matches on the first three only, and requiring the same Call-ID and CSeq number too (which
/// every genuine retransmission has) keeps a client that reuses branches (RFC 4475's test set
/// does) from having distinct requests taken for retransmissions. RFC 2543 requests without a
/// magic-cookie branch are matched on Call-ID, CSeq number, From tag and top Via. A client
/// transaction is matched on its branch and method.
///
/// The key is a 128-bit digest of those fields, made with per-process random hash keys (so it
/// cannot be steered from outside): it is copied freely, and tables of transactions stay small
/// and quick to grow, which keeps pauses out of the SIP path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey {
    digest: u128,
    invite: bool,
}

impl TxKey {
    fn is_invite(self) -> bool {
        self.invite
    }
}

/// Makes [`TxKey`]s.
#[derive(Clone, Debug)]
struct KeyMaker {
    first: RandomState,
    second: RandomState,
}

impl KeyMaker {
    fn new() -> KeyMaker {
        KeyMaker {
            first: RandomState::new(),
            second: RandomState::new(),
        }
    }

    fn key(&self, parts: &[&[u8]], invite: bool) -> TxKey {
        let mut first = self.first.build_hasher();
        let mut second = self.second.build_hasher();
        for part in parts {
            first.write(part);
            second.write(part);
            // 0xff never occurs in UTF-8 text: fields cannot run into each other.
            first.write_u8(0xff);
            second.write_u8(0xff);
        }
        TxKey {
            digest: (u128::from(first.finish()) << 64) | u128::from(second.finish()),
            invite,
        }
    }
}

/// What the transaction layer asks of the I/O loop and the transaction user.
#[derive(Debug)]
pub enum Event {
    /// Put these bytes on the wire.
    Send { peer: Peer, bytes: Bytes },
    /// A new request for the transaction user; `tx` is `None` for an ACK to a 2xx, which
    /// belongs to no transaction.
    Request {
        tx: Option<TxKey>,
        request: Box<Request>,
        peer: Peer,
    },
    /// A response on one of our client transactions.
    Response { tx: TxKey, response: Box<Response> },
    /// A response that matches no client transaction (a 2xx retransmission after the
    /// transaction ended, or a stray): a proxy forwards 2xx statelessly.
    Stray { response: Box<Response> },
    /// A client transaction got no final response in time (timer B or F) or could not be sent.
    Timeout { tx: TxKey },
    /// A server INVITE transaction sent a non-2xx final response that was never acknowledged.
    NoAck { tx: TxKey },
    /// A new request came while `max` transactions were alive: no transaction was made; the
    /// transaction user answers it statelessly (503).
    Overloaded { request: Box<Request>, peer: Peer },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Client: Calling (INVITE) or Trying. Server: Trying (non-INVITE) or Proceeding before any
    /// response.
    Initial,
    Proceeding,
    Completed,
    /// Server INVITE only: ACK received.
    Confirmed,
    /// RFC 6026: a 2xx was sent (server) or received (client).
    Accepted,
}

#[derive(Debug)]
struct Deadlines {
    /// Timers A, E, G.
    retransmit: Option<Instant>,
    /// Timers B, F, H, L, M.
    timeout: Option<Instant>,
    /// Timers D, I, J, K.
    end: Option<Instant>,
}

impl Deadlines {
    fn none() -> Deadlines {
        Deadlines {
            retransmit: None,
            timeout: None,
            end: None,
        }
    }

    fn earliest(&self) -> Option<Instant> {
        [self.retransmit, self.timeout, self.end]
            .into_iter()
            .flatten()
            .min()
    }
}

#[derive(Debug)]
struct ServerTx {
    state: State,
    peer: Peer,
    /// The last response sent, for retransmission.
    last: Option<Bytes>,
    interval: Duration,
    at: Deadlines,
}

#[derive(Debug)]
struct ClientTx {
    state: State,
    /// The branch of the request's top Via (a CANCEL reuses it).
    branch: String,
    peer: Peer,
    request: rsip::Request,
    bytes: Bytes,
    /// The ACK sent for a non-2xx final response, resent on retransmissions of that response.
    ack: Option<Bytes>,
    interval: Duration,
    at: Deadlines,
    /// A CANCEL waits for a provisional response (RFC 3261 §9.1).
    cancel_pending: bool,
    /// A CANCEL was sent: the final response is waited for 64·T1 at most.
    cancelled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Which {
    Server(TxKey),
    Client(TxKey),
}

/// Every transaction of one sipdesk instance.
#[derive(Debug)]
pub struct Transactions {
    timers: TimerSettings,
    keys: KeyMaker,
    servers: FxHashMap<TxKey, Box<ServerTx>>,
    clients: FxHashMap<TxKey, Box<ClientTx>>,
    queue: BinaryHeap<Reverse<(Instant, Which)>>,
    events: Vec<Event>,
}

fn which_server(key: &TxKey) -> Which {
    Which::Server(*key)
}

fn which_client(key: &TxKey) -> Which {
    Which::Client(*key)
}

impl Transactions {
    pub fn new(timers: TimerSettings) -> Transactions {
        Transactions {
            timers,
            keys: KeyMaker::new(),
            servers: FxHashMap::default(),
            clients: FxHashMap::default(),
            queue: BinaryHeap::new(),
            events: Vec::new(),
        }
    }

    /// Timer values for transactions started from now on.
    pub fn set_timers(&mut self, timers: TimerSettings) {
        self.timers = timers;
    }

    /// The events produced so far, oldest first.
    pub fn events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// The server transaction a request belongs to.
    pub fn server_key(&self, request: &Request) -> TxKey {
        let method = match request.method() {
            rsip::Method::Ack => "INVITE".to_owned(),
            m => m.to_string(),
        };
        self.server_key_as(request, &method)
    }

    /// The server transaction a request would belong to with another method: the INVITE a
    /// CANCEL cancels.
    pub fn server_key_as(&self, request: &Request, method: &str) -> TxKey {
        let via = request.top_via();
        let seq = request.cseq.seq.to_string();
        let sent_by = via.sent_by();
        let invite = method == "INVITE";
        match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => self.keys.key(
                &[
                    b.as_bytes(),
                    method.as_bytes(),
                    sent_by.as_bytes(),
                    request.call_id.as_bytes(),
                    seq.as_bytes(),
                ],
                invite,
            ),
            other => self.keys.key(
                &[
                    b"2543",
                    other.unwrap_or_default().as_bytes(),
                    request.from.tag().unwrap_or_default().as_bytes(),
                    method.as_bytes(),
                    sent_by.as_bytes(),
                    request.call_id.as_bytes(),
                    seq.as_bytes(),
                ],
                invite,
            ),
        }
    }

    fn client_key(&self, branch: &str, method: &str) -> TxKey {
        self.keys.key(
            &[b"client", branch.as_bytes(), method.as_bytes()],
            method == "INVITE",
        )
    }

    /// When [`Transactions::poll`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Gives back the memory of tables that grew for a burst and emptied since.
    pub fn housekeeping(&mut self) -> bool {
        let mut shrunk = false;
        if self.servers.capacity() > 1024 && self.servers.len() < self.servers.capacity() / 4 {
            self.servers.shrink_to(self.servers.len() * 2);
            shrunk = true;
        }
        if self.clients.capacity() > 1024 && self.clients.len() < self.clients.capacity() / 4 {
            self.clients.shrink_to(self.clients.len() * 2);
            shrunk = true;
        }
        if self.queue.capacity() > 1024 && self.queue.len() < self.queue.capacity() / 4 {
            self.queue.shrink_to(self.queue.len() * 2);
            shrunk = true;
        }
        shrunk
    }

    /// How many transactions are alive (server, client).
    pub fn len(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    fn schedule(&mut self, at: Option<Instant>, which: Which) {
        if let Some(at) = at {
            self.queue.push(Reverse((at, which)));
        }
    }

    fn send(&mut self, peer: Peer, bytes: Bytes) {
        self.events.push(Event::Send { peer, bytes });
    }

    /// A request from the network; beyond `max` transactions alive, a new one is
    /// [`Event::Overloaded`] instead of a transaction (retransmissions of existing ones are
    /// still absorbed).
    pub fn receive_request(&mut self, now: Instant, request: Request, peer: Peer, max: usize) {
        let key = self.server_key(&request);
        if request.method() == rsip::Method::Ack {
            let linger = if peer.transport.reliable() {
                Duration::ZERO
            } else {
                self.timers.t4
            };
            let mut absorbed = None;
            if let Some(tx) = self.servers.get_mut(&key) {
                if tx.state == State::Completed {
                    // The ACK of our non-2xx final response: absorb it (timer I).
                    tx.state = State::Confirmed;
                    tx.at = Deadlines::none();
                    tx.at.end = Some(now + linger);
                    absorbed = Some(tx.at.end);
                } else if tx.state != State::Accepted {
                    absorbed = Some(None);
                }
            }
            if let Some(end) = absorbed {
                self.schedule(end, which_server(&key));
                return;
            }
            // An ACK to a 2xx is end to end: no transaction.
            self.events.push(Event::Request {
                tx: None,
                request: Box::new(request),
                peer,
            });
            return;
        }
        if let Some(tx) = self.servers.get(&key) {
            // A retransmission: answer with the last response, if any; never bother the TU.
            if let (Some(last), false) = (tx.last.clone(), tx.state == State::Accepted) {
                let peer = tx.peer;
                self.send(peer, last);
            }
            return;
        }
        if self.servers.len() + self.clients.len() >= max {
            self.events.push(Event::Overloaded {
                request: Box::new(request),
                peer,
            });
            return;
        }
        self.servers.insert(
            key,
            Box::new(ServerTx {
                state: State::Initial,
                peer,
                last: None,
                interval: self.timers.t1,
                at: Deadlines::none(),
            }),
        );
        self.events.push(Event::Request {
            tx: Some(key),
            request: Box::new(request),
            peer,
        });
    }

    /// The transaction user answers a request. Returns `false` when the transaction is gone.
    pub fn respond(&mut self, now: Instant, key: &TxKey, response: &rsip::Response) -> bool {
        let timers = self.timers;
        let Some(tx) = self.servers.get_mut(key) else {
            return false;
        };
        if matches!(tx.state, State::Completed | State::Confirmed) {
            return false;
        }
        let status = response.status_code.code();
        let bytes = Bytes::from(message::encode_response(response));
        let reliable = tx.peer.transport.reliable();
        let peer = tx.peer;
        tx.last = Some(bytes.clone());
        if status < 200 {
            tx.state = State::Proceeding;
        } else if key.is_invite() && status < 300 {
            // RFC 6026: keep absorbing INVITE retransmissions for 64*T1.
            tx.state = State::Accepted;
            tx.at.timeout = Some(now + 64 * timers.t1);
        } else if key.is_invite() {
            tx.state = State::Completed;
            if !reliable {
                tx.interval = timers.t1;
                tx.at.retransmit = Some(now + timers.t1);
            }
            tx.at.timeout = Some(now + 64 * timers.t1);
        } else {
            tx.state = State::Completed;
            tx.at.end = Some(
                now + if reliable {
                    Duration::ZERO
                } else {
                    64 * timers.t1
                },
            );
        }
        let next = tx.at.earliest();
        self.schedule(next, which_server(key));
        self.send(peer, bytes);
        true
    }

    /// Whether a server transaction still exists.
    pub fn has_server(&self, key: &TxKey) -> bool {
        self.servers.contains_key(key)
    }

    /// Starts a client transaction for a request whose top Via carries a fresh branch.
    pub fn request(
        &mut self,
        now: Instant,
        request: rsip::Request,
        peer: Peer,
        branch: &str,
    ) -> TxKey {
        let key = self.client_key(branch, &request.method.to_string());
        let bytes = Bytes::from(message::encode_request(&request));
        let mut at = Deadlines::none();
        if !peer.transport.reliable() {
            at.retransmit = Some(now + self.timers.t1);
        }
        at.timeout = Some(now + 64 * self.timers.t1);
        let next = at.earliest();
        self.clients.insert(
            key,
            Box::new(ClientTx {
                state: State::Initial,
                branch: branch.to_owned(),
                peer,
                request,
                bytes: bytes.clone(),
                ack: None,
                interval: self.timers.t1,
                at,
                cancel_pending: false,
                cancelled: false,
            }),
        );
        self.schedule(next, which_client(&key));
        self.send(peer, bytes);
        key
    }

    /// Cancels a client INVITE transaction (RFC 3261 §9.1): now if a provisional response
    /// arrived, else as soon as one does. Does nothing once a final response arrived.
    pub fn cancel(&mut self, now: Instant, key: &TxKey) {
        let Some(tx) = self.clients.get_mut(key) else {
            return;
        };
        match tx.state {
            State::Initial => tx.cancel_pending = true,
            State::Proceeding if !tx.cancelled => self.send_cancel(now, key),
            _ => {}
        }
    }

    /// Sends the CANCEL of a client INVITE transaction in Proceeding and gives its final
    /// response 64·T1 to arrive.
    fn send_cancel(&mut self, now: Instant, key: &TxKey) {
        let t1 = self.timers.t1;
        let Some(tx) = self.clients.get_mut(key) else {
            return;
        };
        tx.cancel_pending = false;
        tx.cancelled = true;
        tx.at.timeout = Some(now + 64 * t1);
        let (cancel, peer, branch) = (cancel_for(&tx.request), tx.peer, tx.branch.clone());
        let at = tx.at.earliest();
        self.schedule(at, which_client(key));
        self.request(now, cancel, peer, &branch);
    }

    /// A response from the network.
    pub fn receive_response(&mut self, now: Instant, response: Response) {
        let branch = response.top_via().branch().unwrap_or_default();
        let key = self.client_key(branch, &response.cseq.method);
        let timers = self.timers;
        let Some(tx) = self.clients.get_mut(&key) else {
            self.events.push(Event::Stray {
                response: Box::new(response),
            });
            return;
        };
        let status = response.status;
        let reliable = tx.peer.transport.reliable();
        let invite = key.is_invite();
        match (tx.state, status) {
            (State::Initial | State::Proceeding, 100..=199) => {
                let first = tx.state == State::Initial;
                tx.state = State::Proceeding;
                if invite {
                    tx.at.retransmit = None;
                    if !tx.cancelled {
                        // Timer C, restarted by every provisional response. Not queued here:
                        // the timer A or B entry already queued finds it when it comes due
                        // (`poll_client`), so a call that rings and is answered at once adds
                        // nothing to the queue.
                        tx.at.timeout = Some(now + TIMER_C);
                    }
                } else if tx.at.retransmit.is_some() {
                    tx.interval = timers.t2;
                }
                let Some(tx) = self.clients.get(&key) else {
                    return;
                };
                let cancel = first && tx.cancel_pending;
                if status > 100 || !invite {
                    self.events.push(Event::Response {
                        tx: key,
                        response: Box::new(response),
                    });
                }
                if cancel {
                    self.send_cancel(now, &key);
                }
            }
            (State::Initial | State::Proceeding, 200..=299) if invite => {
                tx.state = State::Accepted;
                tx.at = Deadlines::none();
                tx.at.timeout = Some(now + 64 * timers.t1);
                let at = tx.at.timeout;
                self.schedule(at, which_client(&key));
                self.events.push(Event::Response {
                    tx: key,
                    response: Box::new(response),
                });
            }
            (State::Initial | State::Proceeding, _) => {
                tx.state = State::Completed;
                tx.at = Deadlines::none();
                let linger = if invite {
                    Duration::from_secs(32)
                } else {
                    timers.t4
                };
                tx.at.end = Some(now + if reliable { Duration::ZERO } else { linger });
                let at = tx.at.end;
                if invite {
                    let ack =
                        Bytes::from(message::encode_request(&ack_for(&tx.request, &response)));
                    tx.ack = Some(ack.clone());
                    let peer = tx.peer;
                    self.send(peer, ack);
                }
                self.schedule(at, which_client(&key));
                self.events.push(Event::Response {
                    tx: key,
                    response: Box::new(response),
                });
            }
            (State::Accepted, 200..=299) => {
                // A retransmitted 2xx: the proxy forwards it again.
                self.events.push(Event::Response {
                    tx: key,
                    response: Box::new(response),
                });
            }
            (State::Completed, 300..=699) if invite => {
                if let Some(ack) = tx.ack.clone() {
                    let peer = tx.peer;
                    self.send(peer, ack);
                }
            }
            _ => {}
        }
    }

    /// The transport could not deliver to `peer`: its client transactions on that transport
    /// fail at once (a failed TCP connection says nothing of UDP to the same address).
    pub fn transport_failed(&mut self, peer: Peer) {
        let failed: Vec<TxKey> = self
            .clients
            .iter()
            .filter(|(_, tx)| {
                tx.peer.addr == peer.addr
                    && tx.peer.transport == peer.transport
                    && matches!(tx.state, State::Initial | State::Proceeding)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in failed {
            self.clients.remove(&key);
            self.events.push(Event::Timeout { tx: key });
        }
    }

    /// Fires every timer due at `now`.
    pub fn poll(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, which))) = self.queue.pop() else {
                break;
            };
            match which {
                Which::Server(key) => self.poll_server(now, key),
                Which::Client(key) => self.poll_client(now, key),
            }
        }
    }

    fn poll_server(&mut self, now: Instant, key: TxKey) {
        let timers = self.timers;
        let Some(tx) = self.servers.get_mut(&key) else {
            return;
        };
        if tx.at.end.is_some_and(|t| t <= now) {
            self.servers.remove(&key);
            return;
        }
        if tx.at.timeout.is_some_and(|t| t <= now) {
            let no_ack = tx.state == State::Completed;
            self.servers.remove(&key);
            if no_ack {
                self.events.push(Event::NoAck { tx: key });
            }
            return;
        }
        if tx.at.retransmit.is_some_and(|t| t <= now) {
            // Timer G: resend the final response, doubling up to T2.
            tx.interval = (tx.interval * 2).min(timers.t2);
            tx.at.retransmit = Some(now + tx.interval);
            let (peer, last) = (tx.peer, tx.last.clone());
            let next = tx.at.earliest();
            self.schedule(next, which_server(&key));
            if let Some(last) = last {
                self.send(peer, last);
            }
        }
    }

    fn poll_client(&mut self, now: Instant, key: TxKey) {
        let timers = self.timers;
        let Some(tx) = self.clients.get_mut(&key) else {
            return;
        };
        if tx.at.end.is_some_and(|t| t <= now) {
            self.clients.remove(&key);
            return;
        }
        if tx.at.timeout.is_some_and(|t| t <= now) {
            if key.is_invite() && tx.state == State::Proceeding && !tx.cancelled {
                // Timer C: the INVITE rang too long; cancel it (RFC 3261 §16.8).
                self.send_cancel(now, &key);
                return;
            }
            let timed_out = matches!(tx.state, State::Initial | State::Proceeding);
            self.clients.remove(&key);
            if timed_out {
                self.events.push(Event::Timeout { tx: key });
            }
            return;
        }
        if tx.at.retransmit.is_none_or(|t| t > now) {
            // Nothing due yet (a deadline moved later): queue the next one.
            let next = tx.at.earliest();
            self.schedule(next, which_client(&key));
            return;
        }
        // Timer A doubles without bound (INVITE); timer E doubles up to T2.
        tx.interval = if key.is_invite() {
            tx.interval * 2
        } else {
            (tx.interval * 2).min(timers.t2)
        };
        tx.at.retransmit = Some(now + tx.interval);
        let (peer, bytes) = (tx.peer, tx.bytes.clone());
        let next = tx.at.earliest();
        self.schedule(next, which_client(&key));
        self.send(peer, bytes);
    }
}

/// The headers an ACK or CANCEL copies from the INVITE: top Via, From, Call-ID, Route; To is
/// given; CSeq gets the new method.
fn hop_by_hop(invite: &rsip::Request, method: rsip::Method, to: Header) -> rsip::Request {
    let mut headers: Vec<Header> = Vec::new();
    let mut via_done = false;
    let mut seq = String::new();
    for header in invite.headers.iter() {
        match header {
            Header::Via(_) if !via_done => {
                headers.push(header.clone());
                via_done = true;
            }
            Header::From(_) | Header::CallId(_) | Header::Route(_) => headers.push(header.clone()),
            Header::CSeq(cseq) => {
                let (_, value) = message::header_pair(&Header::CSeq(cseq.clone()));
                seq = value.split_whitespace().next().unwrap_or("1").to_owned();
            }
            _ => {}
        }
    }
    headers.push(to);
    headers.push(message::header("CSeq", &format!("{seq} {method}")));
    headers.push(message::header("Max-Forwards", "70"));
    rsip::Request {
        method,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): To from the response.
fn ack_for(invite: &rsip::Request, response: &Response) -> rsip::Request {
    let to = response
        .message
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .unwrap_or_else(|| message::header("To", "<sip:unknown>"));
    hop_by_hop(invite, rsip::Method::Ack, to)
}

/// The CANCEL of an INVITE (RFC 3261 §9.1): To from the INVITE.
fn cancel_for(invite: &rsip::Request) -> rsip::Request {
    let to = invite
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .unwrap_or_else(|| message::header("To", "<sip:unknown>"));
    hop_by_hop(invite, rsip::Method::Cancel, to)
}

#[cfg(test)]
mod tests;
