//! One call through sipdesk: its state, and the proxy's handling of it from the caller's INVITE
//! to the record. Inbound calls walk their groups' agents one at a time; outbound calls (an agent
//! dialling an external number) go to the PBX once. An answered inbound call may then pass from
//! agent to agent ([`transfer`]).

pub(super) mod shared;
mod transfer;
mod voicemail;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::dialog::{Dialog, Side};
use super::forward;
use super::{Core, Now, Own, Timer};
use crate::call::{
    AgentLeg, CallEvent, CallRecord, CallStart, Change, Direction, EndedBy, MissedReason, Outcome,
};
use crate::config::Config;
use crate::phone::{self, Caller};
use crate::routing::{self, Extension, Reason, Route, Verdict};
use crate::sip::message::{self, Request, Response};
use crate::sip::peer::Peer;
use crate::sip::syntax::SipUri;
use crate::sip::transaction::TxKey;
use transfer::Referral;

/// How long an outbound call may ring before sipdesk gives up on it.
const OUTBOUND_RING: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for someone to answer.
    Offering,
    Answered,
    /// Answered by sipdesk itself: greeting and recording ([`voicemail`]).
    Voicemail,
    Ended,
}

/// One attempt to reach an agent (or, outbound, the dialled number).
#[derive(Clone, Debug)]
struct Branch {
    tx: TxKey,
    id: u64,
    /// The agent rung; `None` for an outbound call's single branch.
    extension: Option<Extension>,
    group: Option<Arc<str>>,
    ringing: bool,
}

/// One agent's part of an answered inbound call: the one who answered, then each one it was
/// transferred to. It lasts until the next one's `from`, or the end of the call.
#[derive(Clone, Debug)]
struct Leg {
    extension: Extension,
    from: Timestamp,
    /// Whether the agent is counted busy on this call ([`super::Agents::engage`]): the one who
    /// answered always, one it was transferred to when configured as an agent.
    counted: bool,
}

#[derive(Clone, Debug)]
struct Answer {
    at: Timestamp,
    extension: Option<Extension>,
    group: Option<Arc<str>>,
}

/// A call in progress (or just ended, kept a little for late retransmissions).
pub(super) struct Call {
    key: u64,
    id: String,
    direction: Direction,
    server_tx: TxKey,
    invite: Request,
    /// Where the caller's INVITE came from.
    source: Peer,
    /// The caller's and the agent's Contact: where requests inside the dialog go when their
    /// route leads back to sipdesk (a peer that ignored Record-Route).
    caller_contact: Option<SipUri>,
    agent_contact: Option<SipUri>,
    /// The To tag of the answer that made the call's dialog: a late answer from another branch
    /// makes a second dialog with the same Call-ID, whose BYE must not end this call.
    agent_tag: Option<String>,
    caller: String,
    callee: String,
    queue: Option<String>,
    config: Arc<Config>,
    route: Option<Route>,
    /// Explanation steps already stored as events.
    explained: usize,
    branch: Option<Branch>,
    /// Branches given up on, to recognise an answer that comes anyway.
    abandoned: Vec<Branch>,
    /// A branch cancelled after its ring timeout, whose final response the next offer waits for.
    cancelling: Option<u64>,
    branches: u64,
    state: State,
    offered_any: bool,
    answer: Option<Answer>,
    started: Now,
    max_wait_at: Instant,
    /// The agent who dialled, for outbound calls.
    dialler: Option<Extension>,
    recording_url: Option<String>,
    /// The answered dialog, to send requests into it (BYE, session check).
    dialog: Option<Dialog>,
    /// The highest CSeq number each side used in the call's dialog (early dialog included),
    /// by [`Side::index`]: sipdesk's own requests follow them.
    cseqs: [u32; 2],
    /// Whether the caller acknowledged the answer.
    acked: bool,
    /// Who held the answered inbound call, in order; the last holds it now.
    legs: Vec<Leg>,
    /// A transfer asked for with REFER, until its outcome is known.
    referral: Option<Referral>,
    /// The voicemail, when sipdesk answered the call itself.
    voicemail: Option<Box<voicemail::Voicemail>>,
    /// The claim of the next agent the call waits for (instances sharing agents).
    pub(super) claim: Option<u64>,
}

impl Call {
    /// The Contact a side is reached at (its remote target).
    fn contact_mut(&mut self, side: Side) -> &mut Option<SipUri> {
        match side {
            Side::Caller => &mut self.caller_contact,
            Side::Agent => &mut self.agent_contact,
        }
    }

    /// `side` is now reached at `target` (its Contact in an answer, or in a target refresh).
    fn retarget(&mut self, side: Side, target: SipUri) {
        if let Some(dialog) = &mut self.dialog {
            dialog.refresh(side, target.clone());
        }
        *self.contact_mut(side) = Some(target);
    }

    /// The agent counted busy on the answered inbound call now: who answered, or the configured
    /// agent it was last transferred to (`None` after a transfer to an extension sipdesk does not
    /// route to).
    fn holder(&self) -> Option<&Extension> {
        self.legs.last().filter(|l| l.counted).map(|l| &l.extension)
    }

    pub(super) fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Whether the call still looks for someone to answer.
    pub(super) fn is_offering(&self) -> bool {
        self.state == State::Offering
    }

    /// The call as supervisors see it now; `None` once ended.
    pub(super) fn live(&self) -> Option<crate::live::LiveCall> {
        use crate::live::CallState;
        let (state, agent, group) = match (&self.state, &self.answer, &self.branch) {
            (State::Ended, _, _) => return None,
            (State::Voicemail, _, _) => (CallState::Voicemail, None, None),
            (State::Answered, Some(answer), _) => (
                CallState::Answered,
                // After a transfer, whoever holds the call now.
                self.legs
                    .last()
                    .map(|l| l.extension.clone())
                    .or_else(|| answer.extension.clone())
                    .or_else(|| self.dialler.clone()),
                answer.group.clone(),
            ),
            (_, _, Some(branch)) => (
                CallState::Ringing,
                branch.extension.clone().or_else(|| self.dialler.clone()),
                branch.group.clone(),
            ),
            _ => (CallState::Waiting, self.dialler.clone(), None),
        };
        let group = group.map(|g| g.to_string()).or_else(|| {
            self.route
                .as_ref()
                .map(|r| self.config.groups.get(r.owner()).name.to_string())
        });
        Some(crate::live::LiveCall {
            id: self.id.clone(),
            direction: self.direction,
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            queue: self.queue.clone(),
            group,
            state,
            agent: agent.map(|a| a.to_string()),
            started_at: self.started.wall,
            answered_at: self.answer.as_ref().map(|a| a.at),
        })
    }

    /// Where the caller's INVITE came from.
    pub(super) fn source(&self) -> Peer {
        self.source
    }

    /// Whether a request inside a dialog belongs to the dialog of the call's answer (rather
    /// than to a second dialog made by a late answer from another branch).
    fn in_answered_dialog(&self, request: &Request) -> bool {
        let Some(agent_tag) = self.agent_tag.as_deref() else {
            return true;
        };
        let far = if request.from.tag() == self.invite.from.tag() {
            request.to.tag()
        } else {
            request.from.tag()
        };
        far == Some(agent_tag)
    }
}

/// A call id: a UUIDv7 (RFC 9562) of the call's start: ids sort by their millisecond (within
/// one, at random), and no two instances, or two runs of one, make the same (74 random bits).
fn new_call_id(at: Timestamp) -> String {
    let millis = u64::try_from(at.as_millisecond()).unwrap_or_default();
    let stamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        u32::try_from(millis % 1000).unwrap_or_default() * 1_000_000,
    );
    uuid::Uuid::new_v7(stamp).to_string()
}

/// The wrap-up time of an agent: their first group's.
fn wrap_up_of(call: &Call, agent: &Extension) -> Duration {
    call.config
        .groups
        .iter()
        .find(|g| g.agents.iter().any(|a| &a.extension == agent))
        .map_or(Duration::ZERO, |g| g.wrap_up)
}

/// The URI of a message's first Contact.
fn contact(headers: &rsip::Headers) -> Option<SipUri> {
    let value = message::header_value(headers, "Contact")?;
    match crate::sip::syntax::parse_name_addr(&value).ok()?.uri {
        crate::sip::syntax::Uri::Sip(uri) => Some(uri),
        crate::sip::syntax::Uri::Other { .. } => None,
    }
}

pub(super) fn is_dialable(user: &str) -> bool {
    let digits = user.strip_prefix('+').unwrap_or(user);
    digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn content_type_ok(request: &Request) -> bool {
    if request.message.body.is_empty() {
        return true;
    }
    let Some(content_type) = message::header_value(&request.message.headers, "Content-Type") else {
        return false;
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/sdp" || media.starts_with("multipart/")
}

fn accepts_sdp(request: &Request) -> bool {
    match message::header_value(&request.message.headers, "Accept") {
        None => true,
        Some(accept) if accept.trim().is_empty() => true,
        Some(accept) => accept.split(',').any(|media| {
            let media = media
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            matches!(media.as_str(), "application/sdp" | "application/*" | "*/*")
        }),
    }
}

impl Core {
    fn event(&mut self, now: Now, call: &Call, kind: &str, detail: String) {
        tracing::debug!(call = call.id, kind, detail, "call event");
        let seq = self.next_counter();
        self.store(Change::Event(CallEvent {
            call_id: call.id.clone(),
            seq,
            at: now.wall,
            kind: kind.to_owned(),
            detail,
        }));
    }

    /// Stores the explanation steps added since the last time.
    fn explain(&mut self, now: Now, call: &mut Call) {
        let Some(route) = &call.route else { return };
        let steps: Vec<String> = route.explanation()[call.explained..]
            .iter()
            .map(|s| match &s.group {
                Some(group) => format!("{group}: {}", s.detail),
                None => s.detail.to_string(),
            })
            .collect();
        call.explained += steps.len();
        for step in steps {
            self.event(now, call, "routing", step);
        }
    }

    pub(super) fn take(&mut self, key: u64) -> Option<Box<Call>> {
        self.calls.remove(&key)
    }

    pub(super) fn put(&mut self, call: Box<Call>) {
        self.calls.insert(call.key, call);
    }

    fn caller_number(&self, request: &Request) -> String {
        let user = match &request.from.uri {
            crate::sip::syntax::Uri::Sip(uri) => uri.user_unescaped().unwrap_or_default(),
            other => other.to_string(),
        };
        match phone::normalize(&user, self.config.defaults.region) {
            Ok(Caller::Number(number)) => number.to_string(),
            Ok(Caller::Anonymous) => "anonymous".to_owned(),
            Err(_) => user,
        }
    }

    fn new_call(
        &mut self,
        now: Now,
        key: TxKey,
        request: Request,
        source: Peer,
        direction: Direction,
        callee: String,
    ) -> Box<Call> {
        let counter = self.next_counter();
        // Unique across instances sharing a database and across restarts, and in time order.
        let id = new_call_id(now.wall);
        let caller = self.caller_number(&request);
        Box::new(Call {
            key: counter,
            id,
            direction,
            server_tx: key,
            source,
            caller_contact: contact(&request.message.headers),
            agent_contact: None,
            agent_tag: None,
            caller,
            callee,
            queue: None,
            config: self.config.clone(),
            route: None,
            explained: 0,
            branch: None,
            abandoned: Vec::new(),
            cancelling: None,
            branches: 0,
            state: State::Offering,
            offered_any: false,
            answer: None,
            started: now,
            max_wait_at: now.mono + OUTBOUND_RING,
            dialler: None,
            recording_url: None,
            dialog: None,
            acked: false,
            legs: Vec::new(),
            referral: None,
            voicemail: None,
            claim: None,
            cseqs: [request.cseq.seq, 0],
            invite: request,
        })
    }

    fn register(&mut self, now: Now, call: &Call) {
        self.stats.calls_started += 1;
        self.by_invite.insert(call.server_tx, call.key);
        self.by_call_id
            .insert(call.invite.call_id.clone(), call.key);
        self.store(Change::CallStarted(CallStart {
            id: call.id.clone(),
            sip_call_id: call.invite.call_id.clone(),
            direction: call.direction,
            queue: call.queue.clone(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            started_at: now.wall,
            instance: call.config.cluster.instance.clone(),
        }));
        self.schedule(call.max_wait_at, Timer::MaxWait { call: call.key });
    }

    /// An INVITE outside a dialog: a queue call, an agent's outbound call, or neither (404).
    pub(super) fn on_invite(&mut self, now: Now, key: TxKey, request: Request, source: Peer) {
        let user = request.uri.user_unescaped().unwrap_or_default();
        let config = self.config.clone();
        let codes = &config.agents;
        for (code, away) in [(&codes.away, true), (&codes.available, false)] {
            if code.as_deref() == Some(user.as_str()) {
                // sipdesk answers it itself, so it honours its Require (RFC 3261 §8.2.2.3).
                if !self.refuse_unsupported(now, &key, &request, &["Require"]) {
                    self.feature_code(now, key, &request, away);
                }
                return;
            }
        }
        let queue_call = config.groups.by_queue(&user).is_some();
        // sipdesk answers queue calls itself, so it honours their Require.
        if queue_call && self.refuse_unsupported(now, &key, &request, &["Require"]) {
            return;
        }
        if self.draining {
            self.reply(
                now,
                &key,
                &request,
                503,
                "Service Unavailable",
                &[("Retry-After", "30")],
            );
            return;
        }
        if queue_call {
            if !content_type_ok(&request) {
                self.reply(
                    now,
                    &key,
                    &request,
                    415,
                    "Unsupported Media Type",
                    &[("Accept", "application/sdp")],
                );
            } else if !accepts_sdp(&request) {
                let warning = "399 sipdesk \"only application/sdp answers are possible\"";
                self.reply(
                    now,
                    &key,
                    &request,
                    406,
                    "Not Acceptable",
                    &[("Warning", warning)],
                );
            } else {
                self.start_inbound(now, key, request, source, user);
            }
            return;
        }
        let dialler = match &request.from.uri {
            crate::sip::syntax::Uri::Sip(uri) => uri
                .user_unescaped()
                .and_then(|u| Extension::parse(&u).ok())
                .filter(|e| {
                    config
                        .groups
                        .iter()
                        .any(|g| g.agents.iter().any(|a| &a.extension == e))
                }),
            _ => None,
        };
        match dialler {
            Some(agent)
                if is_dialable(&user)
                    && self.agents.outbound(&agent) >= self.config.sip.max_outbound_per_agent =>
            {
                let warning = format!(
                    "399 sipdesk \"{agent} already has {} outbound calls\"",
                    self.agents.outbound(&agent)
                );
                tracing::debug!(%agent, "outbound call refused: the agent has max_outbound_per_agent calls");
                self.stats.outbound_refused += 1;
                self.reply(
                    now,
                    &key,
                    &request,
                    486,
                    "Busy Here",
                    &[("Warning", &warning)],
                );
            }
            Some(agent) if is_dialable(&user) => {
                self.start_outbound(now, key, request, source, user, agent)
            }
            _ => self.reply(now, &key, &request, 404, "Not Found", &[]),
        }
    }

    fn start_inbound(
        &mut self,
        now: Now,
        key: TxKey,
        request: Request,
        source: Peer,
        queue: String,
    ) {
        self.tx
            .respond(now.mono, &key, &request.response(100, "Trying", ""));
        let mut call = self.new_call(now, key, request, source, Direction::Inbound, queue.clone());
        call.queue = Some(queue.clone());
        let query = routing::Call {
            queue: &queue,
            caller: self.directory.status(&call.caller),
            at: now.wall,
        };
        let route = match Route::start(&call.config.groups, &query) {
            Ok(route) => route,
            Err(_) => unreachable!("the queue was found a moment ago in the same configuration"),
        };
        call.max_wait_at = now.mono + call.config.groups.get(route.owner()).max_wait;
        call.route = Some(route);
        self.register(now, &call);
        self.advance(now, &mut call);
        self.put(call);
    }

    fn start_outbound(
        &mut self,
        now: Now,
        key: TxKey,
        request: Request,
        source: Peer,
        dialled: String,
        agent: Extension,
    ) {
        self.tx
            .respond(now.mono, &key, &request.response(100, "Trying", ""));
        let callee = match phone::normalize(&dialled, self.config.defaults.region) {
            Ok(Caller::Number(n)) => n.to_string(),
            _ => dialled.clone(),
        };
        let mut call = self.new_call(now, key, request, source, Direction::Outbound, callee);
        call.caller = agent.to_string();
        call.dialler = Some(agent.clone());
        self.register(now, &call);
        self.agents.engage(&agent);
        self.agents.dial(&agent);
        self.event(now, &call, "outbound", format!("{agent} dials {dialled}"));
        self.send_branch(now, &mut call, &dialled, None, None);
        self.put(call);
    }

    /// An agent dialled the away or available feature code (`[agents]`): the agent is the
    /// caller's extension (From). The answer is final at once — sipdesk plays no tone — and its
    /// reason phrase is what the phone shows: `480 Away` or `480 Available` (480, so no dialog
    /// is made and no media is needed), `403 Not an agent` for an extension of no group.
    fn feature_code(&mut self, now: Now, key: TxKey, request: &Request, away: bool) {
        let agent = match &request.from.uri {
            crate::sip::syntax::Uri::Sip(uri) => uri
                .user_unescaped()
                .and_then(|u| Extension::parse(&u).ok())
                .filter(|e| self.is_agent(e)),
            _ => None,
        };
        let Some(agent) = agent else {
            self.reply(now, &key, request, 403, "Not an agent", &[]);
            return;
        };
        self.set_away(now, &agent, away, None);
        let (phrase, word) = if away {
            ("Away", "away")
        } else {
            ("Available", "available")
        };
        let warning = format!("399 sipdesk \"{agent} is now {word}\"");
        self.reply(now, &key, request, 480, phrase, &[("Warning", &warning)]);
    }

    /// Rings the next agent that can take the call, or gives up. Instances sharing agents
    /// claim the agent in the database first ([`shared`]): the call then waits for the
    /// answer, which comes back to [`Core::on_claimed`].
    pub(super) fn advance(&mut self, now: Now, call: &mut Call) {
        loop {
            if call.state != State::Offering || call.claim.is_some() {
                return;
            }
            if now.mono >= call.max_wait_at {
                self.give_up(now, call);
                return;
            }
            if call.route.is_none() {
                self.give_up(now, call);
                return;
            }
            if self.claims_agents(now) && self.ask_claim(now, call) {
                return;
            }
            let Some(route) = call.route.as_mut() else {
                return;
            };
            let groups = &call.config.groups;
            // Agents' states are read again at each offer: one who became busy is skipped.
            let offer = match route.ringing() {
                Some(_) => route.next_offer(groups, &self.agents.at(now.mono)),
                None => None,
            };
            let Some(offer) = offer else {
                let more =
                    route.next_group(groups, now.wall, &self.agents.at(now.mono), &self.cursors);
                self.explain(now, call);
                if more {
                    continue;
                }
                self.give_up(now, call);
                return;
            };
            self.ring(now, call, offer);
            return;
        }
    }

    /// Rings the agent of `offer` for the call.
    pub(super) fn ring(&mut self, now: Now, call: &mut Call, offer: crate::routing::Offer) {
        {
            self.agents.engage(&offer.extension);
            *self
                .counters
                .ring_attempts
                .entry(offer.group.to_string())
                .or_default() += 1;
            self.cursors
                .insert(offer.group.to_string(), offer.extension.clone());
            // Shared agents: the claim moved the cursor in the database already.
            if self.shared.is_none() {
                self.store(Change::Cursor {
                    group: offer.group.to_string(),
                    extension: offer.extension.to_string(),
                });
            }
            let timeout = offer.ring_timeout;
            let detail = format!(
                "ringing {} ({}) for {}",
                offer.extension,
                offer.group,
                humantime::format_duration(timeout)
            );
            self.event(now, call, "offered", detail);
            let id = self.send_branch(
                now,
                call,
                offer.extension.as_str(),
                Some(offer.extension.clone()),
                Some(offer.group),
            );
            let at = (now.mono + timeout).min(call.max_wait_at);
            self.schedule(
                at,
                Timer::Ring {
                    call: call.key,
                    branch: id,
                },
            );
            call.offered_any = true;
        }
    }

    /// Forwards the caller's INVITE to `sip:<user>@<pbx>`.
    fn send_branch(
        &mut self,
        now: Now,
        call: &mut Call,
        user: &str,
        extension: Option<Extension>,
        group: Option<Arc<str>>,
    ) -> u64 {
        let counter = self.next_counter();
        let branch = forward::branch(&call.invite, counter);
        let pbx = self.settings.pbx;
        let source = call.source;
        let forwarded = forward::forward_request(
            &call.invite,
            source,
            Some(self.pbx_uri(user)),
            &self.settings.local,
            pbx.transport,
            &branch,
            true,
        );
        let tx = self.tx.request(now.mono, forwarded, pbx, &branch);
        self.by_branch.insert(tx, call.key);
        call.branches += 1;
        call.branch = Some(Branch {
            tx,
            id: call.branches,
            extension,
            group,
            ringing: false,
        });
        call.branches
    }

    /// Stops ringing the current branch.
    fn drop_branch(&mut self, now: Now, call: &mut Call, why: &str) {
        let Some(branch) = call.branch.take() else {
            return;
        };
        self.tx.cancel(now.mono, &branch.tx);
        if let Some(extension) = &branch.extension {
            self.agents.release(extension);
            self.event(now, call, "no_answer", format!("{extension}: {why}"));
        }
        call.abandoned.push(branch);
    }

    /// Nobody answered: the final action. `voicemail` answers the call ([`voicemail`]) when
    /// sipdesk can; `reject` (or a voicemail sipdesk cannot take) answers 480.
    fn give_up(&mut self, now: Now, call: &mut Call) {
        self.drop_branch(now, call, "the caller waited long enough");
        let reason = match (
            call.direction,
            call.offered_any,
            call.route.as_ref().and_then(Route::reason),
        ) {
            (crate::call::Direction::Outbound, _, _) => MissedReason::NoAnswer,
            (_, true, _) => MissedReason::NoAnswer,
            (_, false, Some(Reason::OutOfHours)) => MissedReason::OutOfHours,
            (_, false, Some(Reason::Holiday)) => MissedReason::Holiday,
            (_, false, _) => MissedReason::NoAgents,
        };
        // A closed group's own action applies when nobody was rung because it was closed.
        let closed = match reason {
            MissedReason::OutOfHours => Some(Reason::OutOfHours),
            MissedReason::Holiday => Some(Reason::Holiday),
            _ => None,
        };
        let to_voicemail = call.direction == Direction::Inbound
            && call.route.as_ref().is_some_and(|r| {
                call.config.groups.get(r.owner()).final_action_for(closed)
                    == routing::FinalAction::Voicemail
            });
        if to_voicemail && self.voicemail(now, call, reason) {
            return;
        }
        let server_tx = call.server_tx;
        let invite = call.invite.clone();
        self.reply(
            now,
            &server_tx,
            &invite,
            480,
            "Temporarily Unavailable",
            &[],
        );
        self.end(now, call, Outcome::Missed, Some(reason), None);
    }

    /// The call is over: its record goes to the store.
    fn end(
        &mut self,
        now: Now,
        call: &mut Call,
        outcome: Outcome,
        reason: Option<MissedReason>,
        ended_by: Option<EndedBy>,
    ) {
        call.state = State::Ended;
        self.transfer_unsettled(now, call);
        if let Some(agent) = &call.dialler {
            // An outbound call nobody answered frees the agent who dialled at once (an answered
            // one did, with wrap-up, in `hang_up`).
            if outcome != Outcome::Answered {
                self.agents.release(agent);
            }
            self.agents.hang_up_outbound(agent);
        }
        match outcome {
            Outcome::Answered => self.stats.calls_answered += 1,
            _ => self.stats.calls_missed += 1,
        }
        let mut detail = match reason {
            Some(r) => format!("missed ({})", r.as_str()),
            None => format!("{outcome:?}").to_lowercase(),
        };
        if let Some(by) = ended_by {
            detail.push_str(&format!(", ended by {by:?}").to_lowercase());
        }
        self.event(now, call, "ended", detail);
        let record = self.record(now, call, outcome, reason, ended_by);
        let outcome_name = match outcome {
            Outcome::Answered => "answered",
            Outcome::Missed if reason == Some(MissedReason::Abandoned) => "abandoned",
            Outcome::Missed => "missed",
            Outcome::Voicemail => "voicemail",
        };
        *self
            .counters
            .calls
            .entry((record.group.clone().unwrap_or_default(), outcome_name))
            .or_default() += 1;
        if record.direction == Direction::Inbound {
            self.counters.wait.observe(record.wait_seconds());
        }
        self.store(Change::CallEnded(Box::new(record)));
        self.schedule(
            now.mono + 64 * self.config.sip.timers.t1,
            Timer::Forget { call: call.key },
        );
    }

    fn record(
        &self,
        now: Now,
        call: &Call,
        outcome: Outcome,
        reason: Option<MissedReason>,
        ended_by: Option<EndedBy>,
    ) -> CallRecord {
        let steps = call.route.as_ref().map(|r| r.explanation()).unwrap_or(&[]);
        let mut groups: Vec<String> = Vec::new();
        for step in steps {
            if let (Some(group), Verdict::Ring | Verdict::Skipped) = (&step.group, step.verdict) {
                if !groups.iter().any(|g| g == group.as_ref()) {
                    groups.push(group.to_string());
                }
            }
        }
        if let Some(dialler) = &call.dialler {
            // An outbound call belongs to the groups of the agent who dialled.
            groups.extend(
                call.config
                    .groups
                    .iter()
                    .filter(|g| g.agents.iter().any(|a| &a.extension == dialler))
                    .map(|g| g.name.to_string()),
            );
        }
        let owner = call
            .route
            .as_ref()
            .map(|r| call.config.groups.get(r.owner()).name.to_string());
        let answered_group = call
            .answer
            .as_ref()
            .and_then(|a| a.group.as_ref().map(|g| g.to_string()));
        let email_of = |ext: &Extension| call.config.groups.email_of(ext);
        let (agent, agents) = match call.direction {
            Direction::Inbound => {
                let ends = call.legs.iter().skip(1).map(|l| l.from).chain([now.wall]);
                let agents: Vec<AgentLeg> = call
                    .legs
                    .iter()
                    .zip(ends)
                    .map(|(leg, until)| AgentLeg {
                        extension: leg.extension.to_string(),
                        email: email_of(&leg.extension),
                        from: leg.from,
                        until,
                    })
                    .collect();
                let last = call.legs.last().map(|l| l.extension.clone());
                (last, agents)
            }
            Direction::Outbound => {
                let agents = match (&call.dialler, &call.answer) {
                    (Some(dialler), Some(answer)) => vec![AgentLeg {
                        extension: dialler.to_string(),
                        email: email_of(dialler),
                        from: answer.at,
                        until: now.wall,
                    }],
                    _ => Vec::new(),
                };
                (call.dialler.clone(), agents)
            }
        };
        let agent_email = agent.as_ref().and_then(email_of);
        let out_of_hours = matches!(
            call.route.as_ref().and_then(Route::reason),
            Some(Reason::OutOfHours | Reason::Holiday)
        );
        CallRecord {
            id: call.id.clone(),
            sip_call_id: call.invite.call_id.clone(),
            direction: call.direction,
            queue: call.queue.clone(),
            group: answered_group.or(owner).or_else(|| groups.first().cloned()),
            groups,
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            agent: agent.map(|a| a.to_string()),
            agent_email,
            agents,
            started_at: call.started.wall,
            answered_at: call.answer.as_ref().map(|a| a.at),
            ended_at: now.wall,
            outcome,
            reason,
            ended_by,
            out_of_hours,
            recording_url: call.recording_url.clone(),
            voicemail: call.voicemail.as_ref().and_then(|v| v.left.clone()),
            explanation: steps
                .iter()
                .map(|s| match &s.group {
                    Some(group) => format!("{group}: {}", s.detail),
                    None => s.detail.to_string(),
                })
                .collect(),
            tags: self.call_tags(call),
            sms: None,
        }
    }

    /// The call tags the PBX sent in the configured header: trimmed, lower case, each once.
    fn call_tags(&self, call: &Call) -> Vec<String> {
        let Some(name) = &self.config.sip.tags_header else {
            return Vec::new();
        };
        let mut tags: Vec<String> = Vec::new();
        for value in message::header_values(&call.invite.message.headers, name) {
            for tag in value
                .split(',')
                .map(|t| t.trim().to_lowercase())
                .filter(|t| !t.is_empty())
            {
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        tags
    }

    fn recording_url(&self, call: &Call, response: &Response) -> Option<String> {
        if let Some(name) = &self.config.sip.recording_header {
            if let Some(url) = message::header_value(&response.message.headers, name) {
                return Some(url);
            }
        }
        let template = self.config.sip.recording_url.as_ref()?;
        let agent = call
            .answer
            .as_ref()
            .and_then(|a| a.extension.as_ref())
            .map(|e| e.to_string())
            .unwrap_or_default();
        Some(
            template
                .replace("{sip_call_id}", &call.invite.call_id)
                .replace("{call_id}", &call.id)
                .replace("{queue}", call.queue.as_deref().unwrap_or_default())
                .replace("{agent}", &agent)
                .replace("{caller}", &call.caller),
        )
    }

    /// A response on one of a call's branches.
    pub(super) fn on_branch_response(&mut self, now: Now, key: u64, tx: TxKey, response: Response) {
        let Some(mut call) = self.take(key) else {
            return;
        };
        let current = call.branch.as_ref().is_some_and(|b| b.tx == tx);
        let server_tx = call.server_tx;
        match response.status {
            101..=199 => {
                if current && call.state == State::Offering && response.to.tag().is_some() {
                    // An early dialog: requests inside it (PRACK, UPDATE) go to this Contact.
                    if let Some(target) = contact(&response.message.headers) {
                        call.agent_contact = Some(target);
                    }
                }
                if current && call.state == State::Offering {
                    self.tx
                        .respond(now.mono, &server_tx, &forward::relay_response(&response));
                    if let Some(branch) = call.branch.as_mut().filter(|b| !b.ringing) {
                        branch.ringing = true;
                        let who = branch
                            .extension
                            .as_ref()
                            .map_or_else(|| call.callee.clone(), |e| e.to_string());
                        self.event(
                            now,
                            &call,
                            "ringing",
                            format!("{who} is ringing ({})", response.status),
                        );
                    }
                }
            }
            200..=299 => {
                if call.state == State::Offering {
                    let branch = if current {
                        call.branch.take()
                    } else {
                        // An agent answered a branch already given up on: that agent takes the call.
                        let found = call
                            .abandoned
                            .iter()
                            .position(|b| b.tx == tx)
                            .map(|i| call.abandoned.remove(i));
                        if let Some(extension) = found.as_ref().and_then(|b| b.extension.as_ref()) {
                            self.agents.engage(extension);
                        }
                        if found.is_some() {
                            self.drop_branch(now, &mut call, "another agent answered first");
                        }
                        found
                    };
                    if let Some(branch) = branch {
                        self.answered(now, &mut call, branch, &response);
                    }
                }
                let relayed = forward::relay_response(&response);
                if !self.tx.respond(now.mono, &server_tx, &relayed) {
                    // The caller's transaction already has its final answer (487 after a
                    // CANCEL, 480 at max wait): every 2xx is still forwarded (RFC 3261 §16.7
                    // step 10) so the caller can acknowledge it and hang up with BYE.
                    self.relay_stateless(&response, Some(call.source));
                }
            }
            _ => {
                if current && call.state == State::Offering {
                    let branch = call.branch.take();
                    let reason = response.message.status_code.to_string();
                    match call.direction {
                        Direction::Inbound => {
                            if let Some(extension) =
                                branch.as_ref().and_then(|b| b.extension.as_ref())
                            {
                                self.agents.release(extension);
                                self.event(
                                    now,
                                    &call,
                                    "declined",
                                    format!("{extension} answered {reason}"),
                                );
                            }
                            self.advance(now, &mut call);
                        }
                        Direction::Outbound => {
                            self.event(
                                now,
                                &call,
                                "declined",
                                format!("{} answered {reason}", call.callee),
                            );
                            self.tx.respond(
                                now.mono,
                                &server_tx,
                                &forward::relay_response(&response),
                            );
                            self.end(
                                now,
                                &mut call,
                                Outcome::Missed,
                                Some(MissedReason::Rejected),
                                None,
                            );
                        }
                    }
                } else if call.state == State::Offering
                    && call.cancelling.is_some()
                    && call
                        .abandoned
                        .iter()
                        .any(|b| b.tx == tx && Some(b.id) == call.cancelling)
                {
                    // The cancelled branch confirmed (487): ring the next agent now.
                    call.cancelling = None;
                    self.advance(now, &mut call);
                }
            }
        }
        self.put(call);
    }

    fn answered(&mut self, now: Now, call: &mut Call, branch: Branch, response: &Response) {
        call.state = State::Answered;
        call.agent_contact = contact(&response.message.headers);
        call.agent_tag = response.to.tag().map(str::to_owned);
        call.answer = Some(Answer {
            at: now.wall,
            extension: branch.extension.clone(),
            group: branch.group.clone(),
        });
        if let Some(extension) = &branch.extension {
            call.legs.push(Leg {
                extension: extension.clone(),
                from: now.wall,
                counted: true,
            });
        }
        call.recording_url = self.recording_url(call, response);
        let who = branch
            .extension
            .as_ref()
            .map_or_else(|| call.callee.clone(), |e| e.to_string());
        self.event(now, call, "answered", format!("{who} answered"));
        // Kept at once: a call closed as interrupted (a crash, an instance taken for dead) is
        // then known answered, and by whom.
        let agent = match call.direction {
            Direction::Inbound => branch.extension.clone(),
            Direction::Outbound => call.dialler.clone(),
        };
        self.store(Change::Answered {
            id: call.id.clone(),
            at: now.wall,
            agent_email: agent.as_ref().and_then(|a| call.config.groups.email_of(a)),
            agent: agent.map(|a| a.to_string()),
        });
        call.dialog = Some(Dialog::new(
            &call.invite,
            response,
            call.source,
            self.settings.pbx,
            &self.settings.local,
            call.caller_contact.clone(),
            call.agent_contact.clone(),
        ));
        self.schedule(
            now.mono + self.config.sip.max_call_duration,
            Timer::MaxDuration { call: call.key },
        );
        self.schedule(
            now.mono + 64 * self.config.sip.timers.t1,
            Timer::AckWait { call: call.key },
        );
        if let Some(every) = self.config.sip.session_check {
            self.schedule(now.mono + every, Timer::SessionCheck { call: call.key });
        }
    }

    /// The current branch got no response, or could not be sent.
    pub(super) fn on_branch_failed(&mut self, now: Now, key: u64, tx: TxKey, why: &str) {
        let Some(mut call) = self.take(key) else {
            return;
        };
        if call.branch.as_ref().is_some_and(|b| b.tx == tx) && call.state == State::Offering {
            let branch = call.branch.take();
            if let Some(extension) = branch.as_ref().and_then(|b| b.extension.as_ref()) {
                self.agents.release(extension);
                self.event(now, &call, "unreachable", format!("{extension}: {why}"));
            }
            match call.direction {
                Direction::Inbound => self.advance(now, &mut call),
                Direction::Outbound => {
                    self.give_up(now, &mut call);
                }
            }
        }
        self.put(call);
    }

    /// The caller's CANCEL.
    pub(super) fn on_cancel(&mut self, now: Now, key: TxKey, request: Request) {
        let invite_key = self.tx.server_key_as(&request, "INVITE");
        if !self.tx.has_server(&invite_key) {
            self.no_such_transaction(now, &key, &request);
            return;
        }
        self.reply(now, &key, &request, 200, "OK", &[]);
        let Some(call_key) = self.by_invite.get(&invite_key).copied() else {
            // A re-INVITE forwarded inside a dialog: its branch is cancelled, and the final
            // answer (487) comes back through it (RFC 3261 §16.10).
            let pending: Vec<TxKey> = self
                .forwarded
                .iter()
                .filter(|(_, (server, _))| *server == invite_key)
                .map(|(client, _)| *client)
                .collect();
            for client in pending {
                self.tx.cancel(now.mono, &client);
            }
            return;
        };
        let Some(mut call) = self.take(call_key) else {
            return;
        };
        if call.state == State::Offering {
            self.drop_branch(now, &mut call, "the caller hung up");
            let invite = call.invite.clone();
            self.reply(now, &invite_key, &invite, 487, "Request Terminated", &[]);
            self.end(
                now,
                &mut call,
                Outcome::Missed,
                Some(MissedReason::Abandoned),
                None,
            );
        }
        self.put(call);
    }

    /// A BYE inside a call's dialog (already being forwarded): the call ends.
    pub(super) fn on_bye(&mut self, now: Now, request: &Request) {
        let Some(key) = self.by_call_id.get(&request.call_id).copied() else {
            return;
        };
        let Some(mut call) = self.take(key) else {
            return;
        };
        if call.state == State::Answered && call.in_answered_dialog(request) {
            let by = if request.from.tag() == call.invite.from.tag() {
                EndedBy::Caller
            } else {
                EndedBy::Agent
            };
            self.hang_up(now, &mut call, by);
        }
        self.put(call);
    }

    /// A BYE from `side` that could not be sent on: the other side gets sipdesk's own BYE, and
    /// the call ends as hung up by `side`.
    pub(super) fn bye_unroutable(&mut self, now: Now, key: u64, side: Side, request: &Request) {
        let Some(mut call) = self.take(key) else {
            return;
        };
        if call.state == State::Answered && call.in_answered_dialog(request) {
            self.send_in_dialog(now, &call, side.other(), rsip::Method::Bye, Own::Bye);
            let by = match side {
                Side::Caller => EndedBy::Caller,
                Side::Agent => EndedBy::Agent,
            };
            self.hang_up(now, &mut call, by);
        }
        self.put(call);
    }

    /// An answered call ends: the agent holding it (the last it was transferred to, if counted
    /// busy) or who dialled it starts their wrap-up.
    fn hang_up(&mut self, now: Now, call: &mut Call, by: EndedBy) {
        let agent = match call.direction {
            Direction::Inbound => call.holder().cloned(),
            Direction::Outbound => call.dialler.clone(),
        };
        if let Some(agent) = agent {
            let wrap_up = wrap_up_of(call, &agent);
            self.agents.finish(&agent, now.mono + wrap_up);
        }
        self.end(now, call, Outcome::Answered, None, Some(by));
    }

    /// The call a request inside a dialog belongs to, and the side that sent it: its Call-ID
    /// is a call's and one of its tags the caller's (the other is the answering agent's, or a
    /// late answer's from another branch).
    pub(super) fn dialog_of(&self, request: &Request) -> Option<(u64, Side)> {
        let key = *self.by_call_id.get(&request.call_id)?;
        let call = self.calls.get(&key)?;
        let caller_tag = call.invite.from.tag()?;
        if request.from.tag() == Some(caller_tag) {
            Some((key, Side::Caller))
        } else if request.to.tag() == Some(caller_tag) {
            Some((key, Side::Agent))
        } else {
            None
        }
    }

    /// Whether a request inside the dialog of `call` may go to `peer`: the PBX, the caller's
    /// source, or an address the dialog named (a Contact, a Record-Route).
    pub(super) fn may_reach(&self, key: u64, peer: &Peer) -> bool {
        let Some(call) = self.calls.get(&key) else {
            return false;
        };
        let ip = peer.addr.ip();
        let contact_ip = |c: &Option<SipUri>| c.as_ref().and_then(super::dialog::uri_ip);
        ip == self.settings.pbx.addr.ip()
            || ip == call.source.addr.ip()
            || contact_ip(&call.caller_contact) == Some(ip)
            || contact_ip(&call.agent_contact) == Some(ip)
            || call.dialog.as_ref().is_some_and(|d| d.allows(peer))
    }

    /// Whether sipdesk itself is the far end of the call's dialog (voicemail).
    pub(super) fn answered_here(&self, key: u64) -> bool {
        self.calls
            .get(&key)
            .is_some_and(|c| c.voicemail.is_some() && c.state != State::Ended)
    }

    /// A request from `side` passed through: its CSeq is the one sipdesk's own requests follow.
    pub(super) fn saw_request(&mut self, key: u64, side: Side, request: &Request) {
        if let Some(call) = self.calls.get_mut(&key) {
            let seen = &mut call.cseqs[side.index()];
            *seen = (*seen).max(request.cseq.seq);
        }
    }

    /// A 2xx to a re-INVITE or UPDATE inside a call's dialog: both parties may have moved
    /// (RFC 3261 §12.2.1.2, §12.2.2), the sender to its request's Contact, the other to the
    /// answer's.
    pub(super) fn target_refreshed(&mut self, request: &Request, response: &Response) {
        let refresh = matches!(
            request.method(),
            rsip::Method::Invite | rsip::Method::Update
        );
        if !refresh || !(200..300).contains(&response.status) {
            return;
        }
        let Some((key, side)) = self.dialog_of(request) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if let Some(target) = contact(&request.message.headers) {
            call.retarget(side, target);
        }
        if let Some(target) = contact(&response.message.headers) {
            call.retarget(side.other(), target);
        }
    }

    /// An ACK passed through: the caller's acknowledges the answer.
    pub(super) fn acknowledged(&mut self, key: u64, side: Side, request: &Request) {
        if let Some(call) = self.calls.get_mut(&key) {
            if side == Side::Caller
                && request.cseq.seq == call.invite.cseq.seq
                && call.in_answered_dialog(request)
            {
                call.acked = true;
            }
        }
    }

    /// Where a request inside a call's dialog goes when its route leads back to sipdesk (or
    /// nowhere the dialog named): the other party's Contact, or the PBX or caller's source.
    pub(super) fn dialog_target(&self, key: u64, request: &Request) -> Option<(SipUri, Peer)> {
        let call = self.calls.get(&key)?;
        let from_caller = request.from.tag() == call.invite.from.tag();
        let (contact, fallback) = if from_caller {
            (call.agent_contact.clone(), self.settings.pbx)
        } else {
            (call.caller_contact.clone(), call.source)
        };
        let uri = contact?;
        let peer = forward::resolve(&uri, &self.settings.pbx_host, self.settings.pbx)
            .filter(|p| !self.is_self(p.addr) && self.may_reach(key, p))
            .unwrap_or(fallback);
        Some((uri, peer))
    }

    /// Sends a request of sipdesk's own into a call's dialog, towards `side`.
    fn send_in_dialog(
        &mut self,
        now: Now,
        call: &Call,
        side: Side,
        method: rsip::Method,
        own: Own,
    ) {
        let Some(dialog) = &call.dialog else {
            return;
        };
        let branch = forward::branch(&call.invite, self.next_counter());
        let (request, peer) = dialog.request(
            side,
            method,
            call.cseqs[side.other().index()],
            &self.settings.local,
            &self.settings.pbx_host,
            &branch,
        );
        let tx = self.tx.request(now.mono, request, peer, &branch);
        self.own.insert(tx, (call.key, own));
    }

    /// An admin ends the call `id` (stuck, or to free its agent): an answered one is hung up
    /// on both sides with BYE and recorded as ended by an admin; one still ringing gets 480
    /// and is recorded as missed (rejected). Returns whether a call in progress had that id.
    pub(super) fn end_call_now(&mut self, now: Now, id: &str) -> bool {
        let Some(key) = self
            .calls
            .iter()
            .find(|(_, c)| c.id == id && !c.is_ended())
            .map(|(k, _)| *k)
        else {
            return false;
        };
        let Some(mut call) = self.take(key) else {
            return false;
        };
        self.event(now, &call, "admin", "ended by an admin".to_owned());
        match call.state {
            State::Answered => {
                self.bye_both(now, &call);
                self.hang_up(now, &mut call, EndedBy::Admin);
            }
            State::Offering => {
                self.drop_branch(now, &mut call, "ended by an admin");
                let (server_tx, invite) = (call.server_tx, call.invite.clone());
                self.reply(
                    now,
                    &server_tx,
                    &invite,
                    480,
                    "Temporarily Unavailable",
                    &[],
                );
                self.end(
                    now,
                    &mut call,
                    Outcome::Missed,
                    Some(MissedReason::Rejected),
                    None,
                );
            }
            State::Voicemail => self.stop_voicemail(now, &mut call, EndedBy::Admin),
            State::Ended => {}
        }
        self.put(call);
        true
    }

    /// An admin frees an agent: every call holding them ends (an answered one hung up on
    /// both sides, one they dial out on given up) or, while it rings them, moves on to the next
    /// agent. Whatever still counts the agent as busy after that is a mistake in sipdesk's
    /// bookkeeping, and is cleared with a warning. Returns how many calls were ended or moved.
    pub(super) fn free_agent_now(&mut self, now: Now, extension: &Extension) -> usize {
        let holding: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.is_ended())
            .filter(|(_, c)| {
                c.dialler.as_ref() == Some(extension)
                    || (c.state == State::Answered && c.holder() == Some(extension))
                    || c.branch.as_ref().and_then(|b| b.extension.as_ref()) == Some(extension)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in &holding {
            let Some(mut call) = self.take(*key) else {
                continue;
            };
            let ringing = call.state == State::Offering
                && call.dialler.is_none()
                && call.branch.as_ref().and_then(|b| b.extension.as_ref()) == Some(extension);
            if ringing {
                self.event(
                    now,
                    &call,
                    "admin",
                    format!("{extension} freed by an admin"),
                );
                self.drop_branch(now, &mut call, "freed by an admin");
                self.advance(now, &mut call);
                self.put(call);
            } else {
                let id = call.id.clone();
                self.put(call);
                self.end_call_now(now, &id);
            }
        }
        if self.agents.clear(extension) {
            tracing::warn!(%extension, "the agent was still counted busy with no call holding them; cleared");
        }
        holding.len()
    }

    /// Hangs up both sides of an answered call with BYE.
    fn bye_both(&mut self, now: Now, call: &Call) {
        self.send_in_dialog(now, call, Side::Agent, rsip::Method::Bye, Own::Bye);
        self.send_in_dialog(now, call, Side::Caller, rsip::Method::Bye, Own::Bye);
    }

    /// The final answer to a request sipdesk sent into a call (`None`: none came).
    pub(super) fn on_own_answer(&mut self, now: Now, key: u64, own: Own, status: Option<u16>) {
        let Own::Check(side) = own else { return };
        // 481: the dialog is gone there; 408 or silence: so is the party. Anything else (even
        // 405 or 501) proves someone still holds the call.
        let gone = matches!(status, None | Some(408) | Some(481));
        if !gone {
            return;
        }
        let Some(mut call) = self.take(key) else {
            return;
        };
        if call.state == State::Answered {
            let why = status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
            self.event(
                now,
                &call,
                "session_check",
                format!("the {} is gone ({why}): the call is ended", side.as_str()),
            );
            self.bye_both(now, &call);
            self.hang_up(now, &mut call, EndedBy::Lost);
        }
        self.put(call);
    }

    pub(super) fn on_timer(&mut self, now: Now, timer: Timer) {
        match timer {
            Timer::ClaimOverdue { call, version } => self.claim_overdue(now, call, version),
            Timer::TextUnkept { text } => self.text_unkept(now, text),
            Timer::Ring { call: key, branch } => {
                let Some(mut call) = self.take(key) else {
                    return;
                };
                if call.state == State::Offering
                    && call.branch.as_ref().is_some_and(|b| b.id == branch)
                {
                    let ring = call
                        .branch
                        .as_ref()
                        .and_then(|b| b.group.as_ref())
                        .and_then(|g| call.config.groups.by_name(g));
                    let why = match ring {
                        Some(g) => format!(
                            "no answer after {}",
                            humantime::format_duration(call.config.groups.get(g).ring_timeout)
                        ),
                        None => "no answer".to_owned(),
                    };
                    // The next agent rings once this one has confirmed the CANCEL with its final
                    // response (or after 2*T1): branches never overlap, and an answer racing the
                    // CANCEL is seen before anyone else rings.
                    self.drop_branch(now, &mut call, &why);
                    call.cancelling = Some(branch);
                    let wait = 2 * self.config.sip.timers.t1;
                    self.schedule(now.mono + wait, Timer::CancelWait { call: key, branch });
                }
                self.put(call);
            }
            Timer::CancelWait { call: key, branch } => {
                let Some(mut call) = self.take(key) else {
                    return;
                };
                if call.state == State::Offering && call.cancelling == Some(branch) {
                    call.cancelling = None;
                    self.advance(now, &mut call);
                }
                self.put(call);
            }
            Timer::MaxWait { call: key } => {
                let Some(mut call) = self.take(key) else {
                    return;
                };
                if call.state == State::Offering {
                    self.give_up(now, &mut call);
                }
                self.put(call);
            }
            Timer::MaxDuration { call: key } => {
                let Some(mut call) = self.take(key) else {
                    return;
                };
                if call.state == State::Answered {
                    // A lost BYE, most likely: both phones are told the call is over.
                    self.bye_both(now, &call);
                    self.hang_up(now, &mut call, EndedBy::MaxDuration);
                }
                self.put(call);
            }
            Timer::AckWait { call: key } => {
                let Some(mut call) = self.take(key) else {
                    return;
                };
                if call.state == State::Voicemail && !call.acked {
                    self.stop_voicemail(now, &mut call, EndedBy::Lost);
                }
                if call.state == State::Answered && !call.acked {
                    // RFC 3261 §13.3.1.4: no ACK within 64·T1, the dialog is not confirmed;
                    // sipdesk stands in for both ends and hangs up.
                    self.event(
                        now,
                        &call,
                        "not_connected",
                        "the caller's side never acknowledged the answer: both sides hung up"
                            .to_owned(),
                    );
                    self.bye_both(now, &call);
                    // The agent who answered is free at once (the dialler of an outbound call
                    // is freed as the call ends).
                    if let Some(agent) = call.holder().cloned() {
                        self.agents.release(&agent);
                    }
                    call.answer = None;
                    call.legs.clear();
                    self.end(
                        now,
                        &mut call,
                        Outcome::Missed,
                        Some(MissedReason::NotConnected),
                        None,
                    );
                }
                self.put(call);
            }
            Timer::SessionCheck { call: key } => {
                let Some(call) = self.take(key) else {
                    return;
                };
                if call.state == State::Answered {
                    if let Some(every) = self.config.sip.session_check {
                        for side in [Side::Agent, Side::Caller] {
                            self.send_in_dialog(
                                now,
                                &call,
                                side,
                                rsip::Method::Options,
                                Own::Check(side),
                            );
                        }
                        self.schedule(now.mono + every, Timer::SessionCheck { call: key });
                    }
                }
                self.put(call);
            }
            Timer::OkResend { call: key, round } => self.resend_ok(now, key, round),
            Timer::VoicemailLimit { call: key } => self.voicemail_limit(now, key),
            Timer::Forget { call: key } => {
                if let Some(call) = self.take(key) {
                    self.by_invite.remove(&call.server_tx);
                    if self.by_call_id.get(&call.invite.call_id) == Some(&key) {
                        self.by_call_id.remove(&call.invite.call_id);
                    }
                    for branch in call.branch.iter().chain(call.abandoned.iter()) {
                        self.by_branch.remove(&branch.tx);
                    }
                }
            }
        }
    }
}
