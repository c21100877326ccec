//! Call control, sans I/O: sipdesk as a record-routing stateful proxy (RFC 3261 §16) on top of
//! the transaction layer.
//!
//! [`Core`] takes datagrams, stream messages and the time, and returns what to send and what to
//! store. A queue INVITE from a trusted PBX address gets 100 Trying, a routing decision, and is
//! forwarded to one agent at a time at `sip:<extension>@<pbx>` (sequential forking: ring timeout,
//! 486/480/603/408/404 or no response move on to the next agent, then overflow, then the final
//! action). sipdesk record-routes, so ACK, BYE, re-INVITE and UPDATE pass through it and each
//! call's end is seen. Agents are busy while rung or talking and in wrap-up after a call, so two
//! calls are never offered to one agent at once. Records go out as [`Change`]s for the store.
//!
//! Decisions sipdesk makes where RFC 3261 leaves room: every request is refused with 483 when
//! Max-Forwards is 0 (sipdesk is a proxy for all of them); OPTIONS outside a dialog is always
//! answered by sipdesk (keep-alive, health checks: 503 while stopping, like new INVITEs); a MESSAGE outside a dialog is a text (`sms`: to one of the company's numbers, or from an agent's phone; else 404); REGISTER, SUBSCRIBE, NOTIFY, PUBLISH and REFER outside a dialog get
//! 405 (inside a call's dialog they pass, and transfers are followed or, where the group forbids
//! them, a REFER from the agent gets 403); a queue INVITE whose body is not SDP gets 415 and one whose Accept excludes SDP gets 406,
//! because sipdesk may have to answer it itself: the `voicemail` final action makes sipdesk the
//! called party (`call::voicemail`), its media run by the I/O loop ([`MediaOrder`]).

mod agents;
mod call;
mod dialog;
pub mod forward;
mod live;
mod sms;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jiff::Timestamp;
use rustc_hash::FxHashMap;

pub use agents::Agents;
use call::Call;
pub use call::shared::{ALONE_FOR, Claim, Hold, Remote};
pub use forward::Local;
pub use sms::{ATTACHMENT, TextOrder};

use crate::call::Change;
use crate::config::Config;
use crate::directory::Directory;
use crate::routing::Extension;
use crate::sip::message::{self, Request, Response};
use crate::sip::peer::Peer;
use crate::sip::policy::{Policy, SharedPolicy};
use crate::sip::transaction::{Event, Transactions, TxKey};
use crate::sip::wire::{self, Datagram, Inbound, Refusal};

/// The time, as the proxy needs it: monotonic for timers, wall-clock for routing and records.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub wall: Timestamp,
}

impl Now {
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            wall: Timestamp::now(),
        }
    }

    /// The same moment `d` later.
    pub fn plus(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall + jiff::SignedDuration::try_from(d).unwrap_or_default(),
        }
    }
}

/// What the proxy needs from the running system beyond the configuration: addresses the daemon
/// resolved or bound at start (they change only with a restart). Everything else is read from
/// the configuration in force, or from the shared network [`Policy`], so a reload reaches it.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// sipdesk's own address in Via and Record-Route.
    pub local: Local,
    /// The addresses sipdesk listens on, so it never sends a request to itself.
    pub listen: Vec<SocketAddr>,
    /// The PBX, resolved.
    pub pbx: Peer,
    /// The PBX as configured, to recognise it in URIs.
    pub pbx_host: String,
    /// Where voicemail sessions run; `None`: sipdesk cannot answer calls itself (the
    /// `voicemail` final action then answers 480).
    pub media: Option<MediaPlace>,
}

/// Where sipdesk's own media sessions run: the address its SDP names, the ports they take,
/// and the directory recordings are written to.
#[derive(Clone, Debug)]
pub struct MediaPlace {
    pub ip: std::net::IpAddr,
    pub ports: Arc<crate::media::runner::Ports>,
    pub directory: std::path::PathBuf,
}

impl ProxySettings {
    /// Settings from the configuration, with the addresses the daemon resolved.
    pub fn new(
        config: &Config,
        local: Local,
        listen: Vec<SocketAddr>,
        pbx: SocketAddr,
    ) -> ProxySettings {
        let sip = &config.sip;
        ProxySettings {
            local,
            listen,
            pbx: Peer {
                transport: sip.pbx_transport,
                addr: pbx,
                connection: None,
            },
            pbx_host: sip.pbx.host.clone(),
            media: None,
        }
    }
}

/// What the I/O loop must do.
#[derive(Debug)]
pub enum Output {
    Send {
        peer: Peer,
        bytes: Bytes,
    },
    Store(Change),
    /// Something for a call's media session (voicemail); its end comes back through
    /// [`Core::on_media_ended`].
    Media(MediaOrder),
    /// Claim the next agent in the database (instances sharing agents); the answer comes back
    /// through [`Core::on_claimed`].
    Claim(Claim),
    /// Tell the database what this instance holds of an agent now.
    Hold {
        extension: Extension,
        hold: Hold,
        version: u64,
    },
    /// The PBX's final answer to a text sent with [`Core::send_text`]: `failure` is `None` when
    /// it took the text, else why not.
    TextAnswered {
        id: String,
        failure: Option<String>,
    },
}

/// What the I/O loop does for a call's media session.
#[derive(Debug)]
pub enum MediaOrder {
    /// Bind the lease's port and run the session.
    Start {
        call: u64,
        lease: crate::media::runner::Lease,
        spec: Box<crate::media::runner::Spec>,
    },
    /// Tell the running session of `call`.
    Control {
        call: u64,
        control: crate::media::runner::Control,
    },
}

/// A proxy timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The agent of this branch rang long enough.
    Ring { call: u64, branch: u64 },
    /// A cancelled branch had time enough to confirm with its final response.
    CancelWait { call: u64, branch: u64 },
    /// The caller waited `max_wait` in all.
    MaxWait { call: u64 },
    /// An answered call outlived `max_call_duration`.
    MaxDuration { call: u64 },
    /// An answered call whose ACK has not come by now was never connected (RFC 3261
    /// §13.3.1.4: 64·T1 after the 2xx).
    AckWait { call: u64 },
    /// Time to check that both sides of an answered call are still there (`session_check`).
    SessionCheck { call: u64 },
    /// sipdesk's own 200 OK to a call it answered (or to its re-INVITE) is resent until the
    /// ACK; `round` tells a later answer's resending from an earlier one's.
    OkResend { call: u64, round: u32 },
    /// A voicemail that outlived every limit of its session (it never reported): ended.
    VoicemailLimit { call: u64 },
    /// An ended call can be forgotten: late retransmissions have passed.
    Forget { call: u64 },
    /// The claim of this version, out for a call, should have been answered by now (the task
    /// asking the database answers within its own timeout): taken as no answer.
    ClaimOverdue { call: u64, version: u64 },
    /// A customer's text the store has not said it kept by now: its sender is told to try
    /// again later.
    TextUnkept { text: u64 },
}

/// A request sipdesk sent itself inside a call's dialog.
#[derive(Clone, Copy, Debug)]
enum Own {
    /// Ending the call: the answer does not matter.
    Bye,
    /// The session check of one side: 481 or no answer means it is gone.
    Check(dialog::Side),
}

/// At most `rate` events a second, for answers to untrusted sources.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    fn take(&mut self, now: Instant, rate: u32) -> bool {
        let rate = f64::from(rate);
        let elapsed = self
            .at
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        self.at = Some(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counters for logs, metrics and the systemd status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls_started: u64,
    pub calls_answered: u64,
    pub calls_missed: u64,
    pub malformed: u64,
    pub untrusted: u64,
    /// Requests refused with 503 at `max_transactions`.
    pub overloaded: u64,
    /// Outbound calls refused at `max_outbound_per_agent`.
    pub outbound_refused: u64,
    /// Texts received on the company's numbers.
    pub texts_in: u64,
    /// Texts sent on to the PBX (from phones and helpdesk replies), with their answer.
    pub texts_out: u64,
}

/// How many of each thing the proxy holds: for the status line, metrics, and the checks that
/// nothing outlives its call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Calls in the table, ended ones still remembered for late retransmissions included.
    pub calls: usize,
    /// Calls not yet ended.
    pub active_calls: usize,
    pub server_transactions: usize,
    pub client_transactions: usize,
    /// Requests forwarded inside dialogs, or sent by sipdesk itself, awaiting their answer.
    pub pending_requests: usize,
    /// Agents held by a call (ringing or talking).
    pub busy_agents: usize,
    /// Outbound calls counted against agents.
    pub outbound_calls: usize,
    /// Voicemail media sessions running (their ports held), and the most allowed.
    pub voicemail_sessions: usize,
    pub voicemail_limit: usize,
}

/// The proxy: transactions, calls, agents and round-robin cursors of one sipdesk instance.
pub struct Core {
    settings: ProxySettings,
    config: Arc<Config>,
    /// Shared with the sockets; replaced with the configuration.
    policy: SharedPolicy,
    tx: Transactions,
    /// Boxed, so the table stays small and quick to grow.
    calls: FxHashMap<u64, Box<Call>>,
    /// Caller INVITE server transaction → call.
    by_invite: FxHashMap<TxKey, u64>,
    /// INVITE client transaction to an agent → call.
    by_branch: FxHashMap<TxKey, u64>,
    /// SIP Call-ID → call, for requests inside the dialog.
    by_call_id: HashMap<String, u64>,
    /// Requests forwarded inside dialogs: client transaction → the server transaction and the
    /// request it answers.
    forwarded: FxHashMap<TxKey, (TxKey, Box<Request>)>,
    /// Requests sipdesk sent itself inside calls' dialogs: client transaction → call and why.
    own: FxHashMap<TxKey, (u64, Own)>,
    /// SIP Call-IDs of the calls the previous run left in progress, until when their BYEs are
    /// still let through to the PBX (the phones still hold those calls).
    interrupted: HashMap<String, Instant>,
    agents: Agents,
    cursors: HashMap<String, Extension>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    out: Vec<Output>,
    counter: u64,
    draining: bool,
    untrusted: TokenBucket,
    stats: Stats,
    /// What the helpdesks said about calling numbers (known, unknown, inactive).
    directory: Arc<Directory>,
    /// Each agent's state in the last [`Core::live`] snapshot, the call it concerned, and since
    /// when.
    live_since: FxHashMap<Extension, (crate::live::AgentStatus, Option<String>, Timestamp)>,
    /// Whether anything supervisors see may have changed since the last snapshot.
    changed: bool,
    /// What `GET /metrics` shows of the proxy.
    counters: crate::metrics::Counters,
    /// Agents shared with other instances on the database, when they are.
    shared: Option<call::shared::Shared>,
    /// Texts on their way to the PBX, and what inbound texts need remembered.
    texts: sms::Texts,
}

impl Core {
    /// A proxy with the cursors and agent states the store remembered.
    /// `policy` is the network policy shared with the sockets; the proxy replaces it on reload.
    pub fn new(
        settings: ProxySettings,
        config: Arc<Config>,
        policy: SharedPolicy,
        cursors: HashMap<String, Extension>,
        away: &[(Extension, Option<String>)],
    ) -> Core {
        let mut agents = Agents::default();
        for (extension, reason) in away {
            agents.set_away(extension, true, reason.clone());
        }
        Core {
            tx: Transactions::new(config.sip.timers),
            untrusted: TokenBucket {
                tokens: f64::from(config.sip.untrusted_rate),
                at: None,
            },
            settings,
            config,
            policy,
            calls: FxHashMap::default(),
            by_invite: FxHashMap::default(),
            by_branch: FxHashMap::default(),
            by_call_id: HashMap::new(),
            forwarded: FxHashMap::default(),
            own: FxHashMap::default(),
            interrupted: HashMap::new(),
            agents,
            cursors,
            timers: BinaryHeap::new(),
            out: Vec::new(),
            counter: 0,
            draining: false,
            stats: Stats::default(),
            directory: Arc::default(),
            live_since: FxHashMap::default(),
            changed: true,
            counters: crate::metrics::Counters::default(),
            shared: None,
            texts: sms::Texts::default(),
        }
    }

    /// The contact directory routing consults; without one every caller is unchecked.
    pub fn set_directory(&mut self, directory: Arc<Directory>) {
        self.directory = directory;
    }

    /// A new configuration for calls that start from now on (calls in progress keep theirs),
    /// and its network policy for the sockets and the proxy at once.
    pub fn reload(&mut self, config: Arc<Config>) {
        self.policy
            .store(config.sip.policy(self.settings.pbx.addr.ip()));
        self.tx.set_timers(config.sip.timers);
        self.config = config;
        self.forget_agent_lists();
    }

    /// Gives back the memory of tables that grew for a burst (a flood of requests) and have
    /// emptied since; returns whether any was.
    pub fn housekeeping(&mut self) -> bool {
        fn shrink<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
            map: &mut HashMap<K, V, S>,
        ) -> bool {
            let shrunk = map.capacity() > 1024 && map.len() < map.capacity() / 4;
            if shrunk {
                map.shrink_to(map.len() * 2);
            }
            shrunk
        }
        let mut shrunk = self.tx.housekeeping();
        shrunk |= shrink(&mut self.calls);
        shrunk |= shrink(&mut self.by_invite);
        shrunk |= shrink(&mut self.by_branch);
        shrunk |= shrink(&mut self.by_call_id);
        shrunk |= shrink(&mut self.forwarded);
        shrunk |= shrink(&mut self.own);
        let now = Instant::now();
        self.interrupted.retain(|_, until| *until > now);
        self.texts.housekeeping(now);
        if self.timers.capacity() > 1024 && self.timers.len() < self.timers.capacity() / 4 {
            self.timers.shrink_to(self.timers.len() * 2);
            shrunk = true;
        }
        shrunk
    }

    /// The calls the previous run left in progress (by SIP Call-ID): their phones still hold
    /// them, so their BYEs are let through to the PBX for up to `max_call_duration`, though
    /// sipdesk knows nothing else of their dialogs.
    pub fn remember_interrupted(&mut self, now: Now, sip_call_ids: Vec<String>) {
        let until = now.mono + self.config.sip.max_call_duration;
        self.interrupted
            .extend(sip_call_ids.into_iter().map(|id| (id, until)));
    }

    /// Marks an agent away (with why, when said) or available, as the agent or a supervisor
    /// chose (the admin API, the wallboard, a feature code); the choice is stored so it
    /// survives a restart. Returns whether it changed anything.
    pub fn set_away(
        &mut self,
        now: Now,
        extension: &Extension,
        away: bool,
        reason: Option<String>,
    ) -> bool {
        let changed = self.agents.set_away(extension, away, reason.clone());
        if changed {
            tracing::info!(%extension, state = if away { "away" } else { "available" }, reason = reason.as_deref().unwrap_or(""), "agent state changed");
            self.store(Change::Agent(crate::call::AgentSetting {
                extension: extension.to_string(),
                away,
                reason: reason.filter(|_| away),
                at: now.wall,
            }));
        }
        changed
    }

    /// Whether an extension is an agent of some group in the configuration in force.
    fn is_agent(&self, extension: &Extension) -> bool {
        self.config
            .groups
            .iter()
            .any(|g| g.agents.iter().any(|a| &a.extension == extension))
    }

    /// Ends a call in progress by its sipdesk id, as an admin asks (see `DELETE /calls/{id}`);
    /// returns whether there was one.
    pub fn end_call(&mut self, now: Now, id: &str) -> bool {
        let ended = self.end_call_now(now, id);
        self.pump(now);
        ended
    }

    /// Frees an agent as an admin asks (see `POST /agents/{extension}/free`): the calls holding
    /// them end or move on; returns how many there were.
    pub fn free_agent(&mut self, now: Now, extension: &Extension) -> usize {
        let freed = self.free_agent_now(now, extension);
        self.pump(now);
        freed
    }

    /// Stops taking new calls (503); calls in progress go on.
    pub fn drain(&mut self, now: Now) {
        self.draining = true;
        // A voicemail could last minutes: it ends now, keeping what was recorded, and sipdesk
        // hangs up (the record is made when the session reports).
        let recording: Vec<u64> = self
            .calls
            .iter()
            .filter(|(k, _)| self.answered_here(**k))
            .map(|(k, _)| *k)
            .collect();
        for key in recording {
            if let Some(mut call) = self.take(key) {
                self.stop_voicemail(now, &mut call, crate::call::EndedBy::Interrupted);
                self.put(call);
            }
        }
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls.values().filter(|c| !c.is_ended()).count()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// What the proxy holds now.
    pub fn census(&self) -> Census {
        let (server_transactions, client_transactions) = self.tx.len();
        let (busy_agents, outbound_calls) = self.agents.held();
        Census {
            calls: self.calls.len(),
            active_calls: self.active_calls(),
            server_transactions,
            client_transactions,
            pending_requests: self.forwarded.len() + self.own.len() + self.texts.pending(),
            busy_agents,
            outbound_calls,
            voicemail_sessions: self.settings.media.as_ref().map_or(0, |m| m.ports.in_use()),
            voicemail_limit: self.config.media.max_sessions,
        }
    }

    /// What to send and store, oldest first.
    pub fn outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    /// When [`Core::poll`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let proxy = self.timers.peek().map(|Reverse((at, _))| *at);
        [proxy, self.tx.next_deadline()].into_iter().flatten().min()
    }

    /// Whether an address is one sipdesk listens on.
    fn is_self(&self, addr: SocketAddr) -> bool {
        self.settings
            .listen
            .iter()
            .any(|l| l.port() == addr.port() && (l.ip() == addr.ip() || l.ip().is_unspecified()))
    }

    /// The next hop of a request inside the dialog of `call`: its route, or when that leads
    /// back to sipdesk (or somewhere the dialog never named), the other party of the call, with
    /// the Request-URI set to it.
    fn in_dialog_hop(&self, call: u64, request: &Request) -> Option<(Option<rsip::Uri>, Peer)> {
        let hop = forward::next_hop(request, &self.settings.local);
        let routed = forward::resolve(&hop, &self.settings.pbx_host, self.settings.pbx)
            .filter(|p| !self.is_self(p.addr) && !self.settings.local.is_me(&hop))
            .filter(|p| self.may_reach(call, p));
        match routed {
            Some(peer) => Some((None, peer)),
            None => self
                .dialog_target(call, request)
                .map(|(uri, peer)| (Some(wire::rsip_uri(&uri)), peer)),
        }
    }

    /// A UDP datagram from `from`.
    pub fn on_datagram(&mut self, now: Now, bytes: &[u8], from: SocketAddr) {
        let peer = Peer::udp(from);
        let policy = self.policy.load();
        if !policy.trusts(from.ip()) {
            self.refuse_untrusted(now, bytes, peer, &policy);
            return;
        }
        match wire::read_datagram(bytes, &policy.limits) {
            Ok(Datagram::KeepAlive) => {}
            Ok(Datagram::Message(message)) => self.on_message(now, message, peer),
            Err(refusal) => self.on_refusal(refusal, peer),
        }
        self.pump(now);
    }

    /// A message framed on a TCP connection.
    pub fn on_stream(&mut self, now: Now, item: Result<Inbound, Refusal>, peer: Peer) {
        if !self.policy.load().trusts(peer.addr.ip()) {
            // Untrusted TCP connections are closed by the transport before they get here.
            self.stats.untrusted += 1;
            return;
        }
        match item {
            Ok(message) => self.on_message(now, message, peer),
            Err(refusal) => self.on_refusal(refusal, peer),
        }
        self.pump(now);
    }

    /// The transport could not reach `peer`.
    pub fn transport_failed(&mut self, now: Now, peer: Peer) {
        tracing::warn!(%peer, "cannot reach peer");
        self.tx.transport_failed(peer);
        self.pump(now);
    }

    /// Fires due timers.
    /// The media session of call `call` is over (its result, or why it failed).
    pub fn on_media_ended(
        &mut self,
        now: Now,
        call: u64,
        result: Result<crate::media::runner::Recorded, crate::media::runner::MediaError>,
    ) {
        self.media_ended(now, call, result);
        self.pump(now);
    }

    pub fn poll(&mut self, now: Now) {
        self.tx.poll(now.mono);
        self.pump(now);
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now.mono {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            self.on_timer(now, timer);
            self.pump(now);
        }
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    fn send(&mut self, peer: Peer, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        self.counters.sent(&bytes);
        self.out.push(Output::Send { peer, bytes });
    }

    fn store(&mut self, change: Change) {
        self.changed = true;
        self.out.push(Output::Store(change));
    }

    fn refuse_untrusted(&mut self, now: Now, bytes: &[u8], peer: Peer, policy: &Policy) {
        self.stats.untrusted += 1;
        if !policy.reject_untrusted || !self.untrusted.take(now.mono, policy.untrusted_rate) {
            return;
        }
        if let Ok(Datagram::Message(Inbound::Request(request))) =
            wire::read_datagram(bytes, &policy.limits)
        {
            if request.method() != rsip::Method::Ack {
                tracing::info!(source = %peer, "request from an untrusted address refused");
                // Only ever back to the source address: a forged Via cannot aim the answer elsewhere.
                let response = request.response(403, "Forbidden", "sduntrusted");
                self.send(peer, message::encode_response(&response));
            }
        }
    }

    /// A new request while `max_transactions` are alive: 503, without a transaction (so the
    /// table, and memory, stay where they are); the peer retries after a while.
    fn overloaded(&mut self, request: &Request, peer: Peer) {
        self.stats.overloaded += 1;
        if self.stats.overloaded.is_power_of_two() {
            tracing::warn!(
                refused = self.stats.overloaded,
                max_transactions = self.policy.load().max_transactions,
                "too many SIP transactions at once: new requests get 503"
            );
        }
        let tag = format!("sd{:x}", self.next_counter());
        let mut response = request.response(503, "Service Unavailable", &tag);
        response.headers.push(message::header("Retry-After", "5"));
        self.send(peer, message::encode_response(&response));
    }

    fn on_refusal(&mut self, refusal: Refusal, peer: Peer) {
        self.stats.malformed += 1;
        match refusal {
            Refusal::Answer {
                status,
                why,
                response,
            } => {
                tracing::info!(source = %peer, status, why, "malformed request answered");
                self.send(peer, response);
            }
            Refusal::Drop { why } => tracing::debug!(source = %peer, why, "message dropped"),
        }
    }

    fn on_message(&mut self, now: Now, message: Inbound, peer: Peer) {
        match message {
            Inbound::Request(request) => {
                self.counters
                    .sip_message("in", &request.method().to_string(), None);
                let reply = reply_peer(&request, peer);
                // The limit holds back new work, never the end of calls in progress: a CANCEL,
                // or a request inside a dialog sipdesk follows (a BYE), is always taken.
                let ends_or_continues = request.method() == rsip::Method::Cancel
                    || (request.to.tag().is_some() && self.dialog_of(&request).is_some());
                let max = if ends_or_continues {
                    usize::MAX
                } else {
                    self.policy.load().max_transactions
                };
                self.tx.receive_request(now.mono, *request, reply, max);
            }
            Inbound::Response(response) => {
                self.counters
                    .sip_message("in", &response.cseq.method, Some(response.status));
                self.tx.receive_response(now.mono, *response)
            }
        }
    }

    /// Hands the transaction layer's events to the proxy until there are none left.
    fn pump(&mut self, now: Now) {
        loop {
            let events: Vec<Event> = self.tx.events().collect();
            if events.is_empty() {
                self.tell_holds(now);
                return;
            }
            for event in events {
                match event {
                    Event::Send { peer, bytes } => self.send(peer, bytes),
                    Event::Request {
                        tx: Some(key),
                        request,
                        peer,
                    } => self.on_request(now, key, *request, peer),
                    Event::Request {
                        tx: None,
                        request,
                        peer,
                    } => self.on_ack(now, *request, peer),
                    Event::Response { tx, response } => self.on_response(now, tx, *response),
                    Event::Stray { response } => self.on_stray(*response),
                    Event::Timeout { tx } => self.on_timeout(now, tx),
                    Event::NoAck { .. } => {
                        tracing::debug!("a final response was never acknowledged")
                    }
                    Event::Overloaded { request, peer } => self.overloaded(&request, peer),
                }
            }
        }
    }

    /// `sip:<user>@<pbx>`, with the PBX's transport: where agents are rung and texts go.
    pub(super) fn pbx_uri(&self, user: &str) -> rsip::Uri {
        let pbx = self.settings.pbx;
        let mut uri = crate::sip::syntax::SipUri {
            scheme: crate::sip::syntax::Scheme::Sip,
            user: Some(user.to_owned()),
            password: None,
            host: self.settings.pbx_host.clone(),
            port: Some(pbx.addr.port()),
            params: Vec::new(),
            headers: None,
        };
        if pbx.transport == crate::sip::peer::Transport::Tcp {
            uri.params
                .push(("transport".to_owned(), Some("tcp".to_owned())));
        }
        crate::sip::wire::rsip_uri(&uri)
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Answers a request on its server transaction.
    fn reply(
        &mut self,
        now: Now,
        key: &TxKey,
        request: &Request,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let tag = format!("sd{:x}", self.next_counter());
        let mut response = request.response(status, reason, &tag);
        for (name, value) in extra {
            response.headers.push(message::header(name, value));
        }
        self.tx.respond(now.mono, key, &response);
    }

    fn on_request(&mut self, now: Now, key: TxKey, request: Request, peer: Peer) {
        let method = request.method();
        if request.max_forwards == Some(0) {
            self.reply(now, &key, &request, 483, "Too Many Hops", &[]);
            return;
        }
        if forward::is_loop(&request, &self.settings.local) {
            self.reply(now, &key, &request, 482, "Loop Detected", &[]);
            return;
        }
        if method == rsip::Method::Cancel {
            self.on_cancel(now, key, request);
            return;
        }
        // As a proxy sipdesk honours Proxy-Require only (RFC 3261 §16.3 step 5): Require is for
        // the far end. Where sipdesk answers itself it honours Require too: OPTIONS here, queue
        // INVITEs once `on_invite` knows the queue.
        let in_dialog = request.to.tag().is_some();
        let options = !in_dialog && method == rsip::Method::Options;
        let names: &[&str] = if options {
            &["Proxy-Require", "Require"]
        } else {
            &["Proxy-Require"]
        };
        if self.refuse_unsupported(now, &key, &request, names) {
            return;
        }
        if in_dialog {
            self.forward_in_dialog(now, key, request, peer);
            return;
        }
        match method {
            // While stopping, 503 as new INVITEs get: a dispatcher or PBX probing with OPTIONS
            // sends new calls to another instance before they are refused.
            rsip::Method::Options if self.draining => {
                self.reply(
                    now,
                    &key,
                    &request,
                    503,
                    "Service Unavailable",
                    &[("Retry-After", "30"), ("Allow", wire::ALLOW)],
                );
            }
            rsip::Method::Options => {
                self.reply(
                    now,
                    &key,
                    &request,
                    200,
                    "OK",
                    &[
                        ("Allow", wire::ALLOW),
                        ("Accept", "application/sdp, text/plain"),
                    ],
                );
            }
            rsip::Method::Invite => self.on_invite(now, key, request, peer),
            rsip::Method::Message => self.on_text(now, key, request, peer),
            rsip::Method::Register
            | rsip::Method::Subscribe
            | rsip::Method::Notify
            | rsip::Method::Publish
            | rsip::Method::Refer => {
                self.reply(
                    now,
                    &key,
                    &request,
                    405,
                    "Method Not Allowed",
                    &[("Allow", wire::ALLOW)],
                );
            }
            _ => self.no_such_transaction(now, &key, &request),
        }
    }

    /// 481: the request belongs to no call or transaction sipdesk knows.
    fn no_such_transaction(&mut self, now: Now, key: &TxKey, request: &Request) {
        self.reply(
            now,
            key,
            request,
            481,
            "Call/Transaction Does Not Exist",
            &[],
        );
    }

    /// Answers 420 listing the option tags the request demands in the headers `names`, if any.
    /// Returns whether it did.
    fn refuse_unsupported(
        &mut self,
        now: Now,
        key: &TxKey,
        request: &Request,
        names: &[&str],
    ) -> bool {
        let unsupported = unsupported_options(request, names);
        if unsupported.is_empty() {
            return false;
        }
        let list = unsupported.join(", ");
        self.reply(
            now,
            key,
            request,
            420,
            "Bad Extension",
            &[("Unsupported", &list)],
        );
        true
    }

    /// A request inside the dialog of `call`, as sent on to its next hop (`None`: there is
    /// none), with the peer and the branch of its new Via.
    fn in_dialog_forward(
        &mut self,
        call: u64,
        request: &Request,
        source: Peer,
    ) -> Option<(rsip::Request, Peer, String)> {
        let (uri, peer) = self.in_dialog_hop(call, request)?;
        let branch = forward::branch(request, self.next_counter());
        let forwarded = forward::forward_request(
            request,
            source,
            uri,
            &self.settings.local,
            peer.transport,
            &branch,
            false,
        );
        Some((forwarded, peer, branch))
    }

    /// A request inside a dialog sipdesk record-routed: sent on statefully to the next hop.
    /// Only dialogs of calls sipdesk is following are routed; for any other, 481 (so a
    /// trusted address cannot use sipdesk to reach hosts of its choosing).
    fn forward_in_dialog(&mut self, now: Now, key: TxKey, request: Request, source: Peer) {
        let Some((call, side)) = self.dialog_of(&request) else {
            if request.method() == rsip::Method::Bye
                && self
                    .interrupted
                    .get(&request.call_id)
                    .is_some_and(|until| *until > now.mono)
            {
                self.forward_interrupted_bye(now, key, request, source);
                return;
            }
            self.no_such_transaction(now, &key, &request);
            return;
        };
        self.saw_request(call, side, &request);
        if self.answered_here(call) {
            self.voicemail_request(now, key, call, request);
            return;
        }
        if self.transfer_request(now, &key, call, side, &request) {
            return;
        }
        let bye = request.method() == rsip::Method::Bye;
        let Some((forwarded, peer, branch)) = self.in_dialog_forward(call, &request, source) else {
            if bye {
                // Nowhere to send it on (no Contact, a route back to sipdesk): the call ends
                // all the same, sipdesk answers for the other side and tells it itself.
                self.reply(now, &key, &request, 200, "OK", &[]);
                self.bye_unroutable(now, call, side, &request);
            } else {
                self.reply(now, &key, &request, 404, "Not Found", &[]);
            }
            return;
        };
        if bye {
            self.on_bye(now, &request);
        }
        let client = self.tx.request(now.mono, forwarded, peer, &branch);
        self.forwarded.insert(client, (key, Box::new(request)));
    }

    /// A BYE of a call the previous run left in progress: sent on along its route, to the PBX
    /// only (the one peer sipdesk can trust with a dialog it no longer knows), so the other
    /// phone hangs up too.
    fn forward_interrupted_bye(&mut self, now: Now, key: TxKey, request: Request, source: Peer) {
        let hop = forward::next_hop(&request, &self.settings.local);
        let peer = forward::resolve(&hop, &self.settings.pbx_host, self.settings.pbx)
            .filter(|p| p.addr.ip() == self.settings.pbx.addr.ip() && !self.is_self(p.addr))
            .unwrap_or(self.settings.pbx);
        let branch = forward::branch(&request, self.next_counter());
        let forwarded = forward::forward_request(
            &request,
            source,
            None,
            &self.settings.local,
            peer.transport,
            &branch,
            false,
        );
        tracing::info!(
            call_id = request.call_id,
            "BYE of a call interrupted by the last stop sent on to the PBX"
        );
        let client = self.tx.request(now.mono, forwarded, peer, &branch);
        self.forwarded.insert(client, (key, Box::new(request)));
    }

    /// An ACK to a 2xx: forwarded statelessly along the route, unless it has run out of hops
    /// (an ACK gets no response, so it is dropped: RFC 3261 §16.3 step 3) or belongs to no
    /// call sipdesk follows.
    fn on_ack(&mut self, _now: Now, request: Request, source: Peer) {
        if request.max_forwards == Some(0) {
            tracing::debug!(call_id = request.call_id, "ACK with Max-Forwards 0 dropped");
            return;
        }
        if forward::is_loop(&request, &self.settings.local) {
            tracing::debug!(call_id = request.call_id, "ACK in a loop dropped");
            return;
        }
        let Some((call, side)) = self.dialog_of(&request) else {
            tracing::debug!(
                call_id = request.call_id,
                "ACK of an unknown dialog dropped"
            );
            return;
        };
        self.acknowledged(call, side, &request);
        if self.answered_here(call) {
            // sipdesk is the far end: the ACK stops its 200 OK's retransmissions.
            self.voicemail_ack(call, &request);
            return;
        }
        let Some((forwarded, peer, _)) = self.in_dialog_forward(call, &request, source) else {
            tracing::debug!(call_id = request.call_id, "ACK with no next hop dropped");
            return;
        };
        self.send(peer, message::encode_request(&forwarded));
    }

    fn on_response(&mut self, now: Now, tx: TxKey, response: Response) {
        if self.texts.is_text(&tx) {
            if response.status >= 200 {
                self.text_answered(now, &tx, Some(&response));
            }
            return;
        }
        if let Some(call) = self.by_branch.get(&tx).copied() {
            self.on_branch_response(now, call, tx, response);
        } else if let Some((call, own)) = self.own.get(&tx).copied() {
            if response.status >= 200 {
                self.own.remove(&tx);
                self.on_own_answer(now, call, own, Some(response.status));
            }
        } else if let Some((server, _)) = self.forwarded.get(&tx) {
            let server = *server;
            if response.status >= 200 {
                if let Some((_, request)) = self.forwarded.remove(&tx) {
                    self.target_refreshed(&request, &response);
                    self.transfer_answered(now, &request, response.status, Some(&response));
                }
            }
            self.tx
                .respond(now.mono, &server, &forward::relay_response(&response));
        } else {
            // A 2xx retransmitted while its client transaction waits in Accepted, after the
            // first one was relayed (RFC 6026 §8).
            let source = self.call_source(&response.call_id);
            self.relay_stateless(&response, source);
        }
    }

    /// A 2xx retransmission after its transaction ended: relayed statelessly (RFC 3261 §16.7).
    fn on_stray(&mut self, response: Response) {
        let ours = response.top_via().sent_by()
            == format!(
                "{}:{}",
                self.settings.local.host.to_ascii_lowercase(),
                self.settings.local.port
            );
        if ours {
            let source = self.call_source(&response.call_id);
            self.relay_stateless(&response, source);
        }
    }

    /// A 2xx to an INVITE that no server transaction can carry any more, sent to the previous
    /// hop by its Via (RFC 3261 §16.7 step 10). Other responses are not relayed this way.
    /// Where the caller's INVITE of the call with this Call-ID came from.
    fn call_source(&self, call_id: &str) -> Option<Peer> {
        self.by_call_id
            .get(call_id)
            .and_then(|key| self.calls.get(key))
            .map(|call| call.source())
    }

    /// `source`: where the INVITE of the response's call came from (`None`: no call sipdesk
    /// follows, and nothing is relayed).
    fn relay_stateless(&mut self, response: &Response, source: Option<Peer>) {
        if !(200..300).contains(&response.status) || response.cseq.method != "INVITE" {
            return;
        }
        let Some(peer) = forward::response_peer(response) else {
            return;
        };
        // Only to the caller's side of a call sipdesk follows: a Via cannot aim sipdesk at an
        // address of its own choosing, nor make it open a connection there.
        let peer = match source {
            Some(source) if source.addr == peer.addr && source.transport == peer.transport => {
                source
            }
            Some(source)
                if peer.addr.ip() == source.addr.ip()
                    || peer.addr.ip() == self.settings.pbx.addr.ip() =>
            {
                peer
            }
            _ => {
                tracing::debug!(call_id = response.call_id, %peer, "2xx for no call sipdesk follows not relayed");
                return;
            }
        };
        self.send(
            peer,
            message::encode_response(&forward::relay_response(response)),
        );
    }

    fn on_timeout(&mut self, now: Now, tx: TxKey) {
        if self.text_answered(now, &tx, None) {
            return;
        }
        if let Some(call) = self.by_branch.get(&tx).copied() {
            self.on_branch_failed(now, call, tx, "no response");
        } else if let Some((call, own)) = self.own.remove(&tx) {
            self.on_own_answer(now, call, own, None);
        } else if let Some((server, request)) = self.forwarded.remove(&tx) {
            self.transfer_answered(now, &request, 408, None);
            self.reply(now, &server, &request, 408, "Request Timeout", &[]);
        }
    }
}

/// Where responses to a request go: the connection it came on (TCP), or the address and port it
/// came from (UDP), as if every Via asked for `rport` (RFC 3581). RFC 3261 §18.2.2 would use the
/// Via's port; sipdesk answers symmetrically because its peers (PBXs) send from the socket they
/// listen on, NAT makes the Via port unreliable, and a forged Via cannot aim answers elsewhere.
fn reply_peer(_request: &Request, source: Peer) -> Peer {
    source
}

/// Option tags in Proxy-Require (and, where sipdesk is the endpoint, Require): sipdesk
/// supports none.
/// The option tags a request demands in the headers `names` (all unsupported: sipdesk knows
/// no SIP extension).
fn unsupported_options(request: &Request, names: &[&str]) -> Vec<String> {
    let mut tags = Vec::new();
    for header in request.message.headers.iter() {
        let (name, value) = message::header_pair(header);
        if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            tags.extend(
                value
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    tags
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod sms_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transfer_tests;
#[cfg(test)]
mod voicemail_tests;
