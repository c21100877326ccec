//! Text messages: SIP MESSAGE (RFC 3428) through sipdesk, both ways.
//!
//! - **Inbound.** A MESSAGE outside a dialog whose Request-URI names one of the
//!   `[[sms_numbers]]` is a customer's text: sipdesk records it (`sms_inbound`, one record per
//!   text) and answers 202 Accepted once the store says it is kept ([`Core::text_kept`]:
//!   written, or in the spill file), so an accepted text survives a crash; a text the store
//!   has not kept within [`KEEP_WAIT`] gets 503 with `Retry-After`, and the trunk sends it
//!   again. A retransmission is absorbed by the transaction layer; one that comes again after
//!   its transaction ended (a trunk retrying) is known by its Call-ID and CSeq for ten minutes
//!   and answered without a second record; and the record id comes from the same two, so even
//!   past that (or after a restart) the store keeps one record and each helpdesk one
//!   delivery. A `text/plain` body is the text (UTF-8;
//!   bytes that are not are shown as U+FFFD); any other body (an image, MMS) is recorded as
//!   `[attachment not shown]` (the Klaviyo seed). A text that is only a subscription or
//!   compliance keyword is recorded with why it makes no ticket ([`crate::config::SmsSettings`]);
//!   a sender past `max_per_sender` has their texts marked to join their open ticket.
//! - **Outbound from phones.** A MESSAGE from a configured agent's extension (From) to a
//!   dialable number goes on to the PBX statefully, as an outbound call would; its final answer
//!   goes back to the phone, and the text is recorded as `sms_outbound` by that agent, delivered
//!   or not (with the PBX's status).
//! - **Outbound from helpdesks.** [`Core::send_text`]: an agent's reply in a helpdesk, sent to
//!   the PBX as a new MESSAGE from the number the customer texted; its final answer (or none
//!   within the transaction's 32 s) comes back as [`Output::TextAnswered`], and the text is
//!   recorded as `sms_outbound`.
//!
//! Any other MESSAGE outside a dialog (to an unknown number, from someone who is not an agent)
//! gets 404, as an INVITE there would.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::{Core, Now, Output, forward};
use crate::call::{CallRecord, Change, Direction, Outcome, Text};
use crate::phone::{self, Caller};
use crate::routing::Extension;
use crate::sip::message::{self, Request, Response};
use crate::sip::peer::Peer;
use crate::sip::transaction::TxKey;

/// What a non-text body is recorded as (the Klaviyo seed: images are not shown).
pub const ATTACHMENT: &str = "[attachment not shown]";
/// How long a text's Call-ID and CSeq are remembered, to answer a late retransmission.
const REMEMBER: Duration = Duration::from_secs(600);
/// The largest MESSAGE sent over UDP (RFC 3428 §5: pager-mode requests over a transport without
/// congestion control stay under 1300 bytes, RFC 3261 §18.1.1).
const UDP_MAX: usize = 1300;

/// How long a customer's text waits for the store before its sender is told to try again
/// (longer than the store's one attempt and back-off, well within the 32 s a non-INVITE
/// transaction lasts).
pub(super) const KEEP_WAIT: Duration = Duration::from_secs(20);

/// A text sipdesk sends on behalf of a helpdesk reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextOrder {
    /// Names the order in [`Output::TextAnswered`]; also the record's id.
    pub id: String,
    /// The company's number the text goes out from (E.164).
    pub from: String,
    /// The customer (E.164).
    pub to: String,
    pub body: String,
    /// The integration the reply was written in.
    pub via: String,
    /// The ticket it was written on.
    pub ticket: String,
    /// The e-mail of the agent who wrote it, when the helpdesk said.
    pub author: Option<String>,
}

/// A text on its way to the PBX, until its final answer.
pub(super) struct Outgoing {
    /// The phone's transaction, to relay the answer to (a text from a phone).
    server: Option<(TxKey, Box<Request>)>,
    /// The record, its outcome set when the answer comes.
    record: CallRecord,
}

/// A customer's text waiting for the store before its 202.
pub(super) struct Waiting {
    id: String,
    key: TxKey,
    request: Box<Request>,
}

/// What the proxy keeps of texts.
#[derive(Default)]
pub(super) struct Texts {
    outgoing: FxHashMap<TxKey, Outgoing>,
    /// Recent inbound texts by id (which their Call-ID and CSeq give): when they came, and the
    /// record until the store has kept it (sent to the store again with a copy of the text
    /// that comes while it is not).
    seen: FxHashMap<String, (Instant, Option<Box<CallRecord>>)>,
    /// Texts waiting for the store, by a number of their own (for their timer).
    waiting: FxHashMap<u64, Waiting>,
    next_wait: u64,
    /// When each sender's recent texts came, for `max_per_sender`.
    senders: FxHashMap<String, VecDeque<Instant>>,
    /// When each agent's phone's recent texts went out, for `max_per_agent`.
    agents: FxHashMap<Extension, VecDeque<Instant>>,
}

/// Drops the times older than `period`; how many are left.
fn recent(times: &mut VecDeque<Instant>, period: Duration, now: Instant) -> usize {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= period)
    {
        times.pop_front();
    }
    times.len()
}

impl Texts {
    /// Forgets what is too old to matter.
    pub(super) fn housekeeping(&mut self, now: Instant) {
        self.seen
            .retain(|_, (at, _)| now.duration_since(*at) < REMEMBER);
        let day = Duration::from_secs(86_400);
        self.senders
            .retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < day));
        self.agents
            .retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < day));
    }

    /// Counts a customer's text now; whether it is within `rate` (count per period).
    fn sender_within(&mut self, who: &str, rate: (u32, Duration), now: Instant) -> bool {
        let (limit, period) = rate;
        let times = self.senders.entry(who.to_owned()).or_default();
        let within = recent(times, period, now) < limit as usize;
        times.push_back(now);
        within
    }

    /// Whether an agent's phone may send one more text now within `rate`; counted when it may
    /// (a refused text does not count, so a phone retrying above the rate is not held back).
    fn agent_may(&mut self, agent: &Extension, rate: (u32, Duration), now: Instant) -> bool {
        let (limit, period) = rate;
        let times = self.agents.entry(agent.clone()).or_default();
        let may = recent(times, period, now) < limit as usize;
        if may {
            times.push_back(now);
        }
        may
    }

    pub(super) fn is_text(&self, tx: &TxKey) -> bool {
        self.outgoing.contains_key(tx)
    }

    pub(super) fn pending(&self) -> usize {
        self.outgoing.len()
    }
}

/// The id of an inbound text: the same for every copy of one MESSAGE.
fn text_id(call_id: &str, cseq: u32) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in call_id.bytes().chain(cseq.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sms-{hash:016x}")
}

/// The body of a MESSAGE as text: a `text/plain` body (any charset parameter; read as UTF-8;
/// surrounding white space left out), or [`ATTACHMENT`] for anything else.
fn body_text(request: &Request) -> String {
    let content_type = message::header_value(&request.message.headers, "Content-Type")
        .unwrap_or_else(|| "text/plain".to_owned());
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media == "text/plain" {
        // The line ends some trunks add are not part of the text.
        String::from_utf8_lossy(&request.message.body)
            .trim()
            .to_owned()
    } else {
        ATTACHMENT.to_owned()
    }
}

impl Core {
    /// A MESSAGE outside a dialog, from a trusted address.
    pub(super) fn on_text(&mut self, now: Now, key: TxKey, request: Request, source: Peer) {
        let config = self.config.clone();
        let region = config.defaults.region;
        let user = request.uri.user_unescaped().unwrap_or_default();
        let to = match phone::normalize(&user, region) {
            Ok(Caller::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        if let Some(number) = to.as_deref().and_then(|n| config.sms.number(n)) {
            if self.refuse_unsupported(now, &key, &request, &["Require"]) {
                return;
            }
            let number = number.clone();
            self.text_in(now, &key, &request, &number);
            return;
        }
        let agent = match &request.from.uri {
            crate::sip::syntax::Uri::Sip(uri) => uri
                .user_unescaped()
                .and_then(|u| Extension::parse(&u).ok())
                .filter(|e| self.is_agent(e)),
            _ => None,
        };
        match agent {
            Some(agent) if super::call::is_dialable(&user) && !self.draining => {
                self.text_from_phone(now, key, request, source, agent, user)
            }
            Some(_) if self.draining => self.reply(
                now,
                &key,
                &request,
                503,
                "Service Unavailable",
                &[("Retry-After", "30")],
            ),
            _ => self.reply(now, &key, &request, 404, "Not Found", &[]),
        }
    }

    /// A customer's text to one of the company's numbers: 202, and its record.
    fn text_in(
        &mut self,
        now: Now,
        key: &TxKey,
        request: &Request,
        number: &crate::config::SmsNumber,
    ) {
        let id = text_id(&request.call_id, request.cseq.seq);
        if let Some((_, unkept)) = self.texts.seen.get(&id) {
            tracing::debug!(
                call_id = request.call_id,
                "a text sent again; already recorded"
            );
            match unkept.clone() {
                None => self.reply(now, key, request, 202, "Accepted", &[]),
                Some(record) => {
                    // Not kept yet: to the store again (the same record twice is one), and
                    // this copy waits too.
                    self.wait_until_kept(now, id, key, request);
                    self.store(Change::CallEnded(record));
                }
            }
            return;
        }
        self.wait_until_kept(now, id.clone(), key, request);
        let sms = &self.config.sms;
        let sender = match &request.from.uri {
            crate::sip::syntax::Uri::Sip(uri) => uri.user_unescaped().unwrap_or_default(),
            crate::sip::syntax::Uri::Other { .. } => String::new(),
        };
        let sender = match phone::normalize(&sender, self.config.defaults.region) {
            Ok(Caller::Number(n)) => n.to_string(),
            _ => sender,
        };
        let (limit, period) = sms.max_per_sender;
        let flood = !self
            .texts
            .sender_within(&sender, sms.max_per_sender, now.mono);
        let body = body_text(request);
        let skipped = sms.ignored(&body);
        // A number whose groups have one agent between them is that agent's: their texts are
        // theirs (the Intercom seed's one-user number).
        let mut agents: Vec<&crate::routing::Agent> = number
            .groups
            .iter()
            .filter_map(|g| self.config.groups.by_name(g))
            .flat_map(|id| self.config.groups.get(id).agents.iter())
            .collect();
        agents.sort_by(|a, b| a.extension.cmp(&b.extension));
        agents.dedup_by(|a, b| a.extension == b.extension);
        let (agent, agent_email) = match agents.as_slice() {
            [one] => (Some(one.extension.to_string()), one.email.clone()),
            _ => (None, None),
        };
        let mut explanation = vec![format!("text to {} ({})", number.number, number.name)];
        if flood {
            explanation.push(format!(
                "the sender sent more than {limit} texts in {}: this one joins their open ticket",
                humantime::format_duration(period)
            ));
        }
        if let Some(why) = &skipped {
            explanation.push(format!("no ticket: {why}"));
        }
        tracing::info!(from = %sender, to = %number.number, skipped = skipped.is_some(), flood, "text received");
        let record = CallRecord {
            id,
            sip_call_id: request.call_id.clone(),
            direction: Direction::Inbound,
            queue: None,
            group: number.groups.first().cloned(),
            groups: number.groups.clone(),
            caller: sender,
            callee: number.number.clone(),
            agent,
            agent_email,
            agents: Vec::new(),
            started_at: now.wall,
            answered_at: None,
            ended_at: now.wall,
            outcome: Outcome::Answered,
            reason: None,
            ended_by: None,
            out_of_hours: false,
            recording_url: None,
            voicemail: None,
            explanation,
            tags: Vec::new(),
            sms: Some(Text {
                number: number.number.clone(),
                name: number.name.clone(),
                body,
                skipped,
                flood,
                via: None,
                ticket: None,
                failure: None,
            }),
        };
        self.stats.texts_in += 1;
        let record = Box::new(record);
        self.texts
            .seen
            .insert(record.id.clone(), (now.mono, Some(record.clone())));
        self.store(Change::CallEnded(record));
    }

    /// Holds the answer to a customer's text until the store keeps it.
    fn wait_until_kept(&mut self, now: Now, id: String, key: &TxKey, request: &Request) {
        self.texts.next_wait += 1;
        let text = self.texts.next_wait;
        self.texts.waiting.insert(
            text,
            Waiting {
                id,
                key: *key,
                request: Box::new(request.clone()),
            },
        );
        self.schedule(now.mono + KEEP_WAIT, super::Timer::TextUnkept { text });
    }

    /// The store kept the customer's text `id`: its sender gets 202.
    pub fn text_kept(&mut self, now: Now, id: &str) {
        if let Some(entry) = self.texts.seen.get_mut(id) {
            entry.1 = None;
        }
        let answered: Vec<u64> = self
            .texts
            .waiting
            .iter()
            .filter(|(_, w)| w.id == id)
            .map(|(n, _)| *n)
            .collect();
        for n in answered {
            if let Some(w) = self.texts.waiting.remove(&n) {
                self.reply(now, &w.key, &w.request, 202, "Accepted", &[]);
            }
        }
        self.pump(now);
    }

    /// A text the store has not kept in time: 503, so the trunk sends it again later.
    pub(super) fn text_unkept(&mut self, now: Now, text: u64) {
        if let Some(w) = self.texts.waiting.remove(&text) {
            tracing::warn!(text = %w.id, "a text could not be kept in time; its sender is told to send it again");
            self.reply(
                now,
                &w.key,
                &w.request,
                503,
                "Service Unavailable",
                &[("Retry-After", "30")],
            );
        }
    }

    /// An agent's phone texting an outside number: on to the PBX.
    fn text_from_phone(
        &mut self,
        now: Now,
        key: TxKey,
        request: Request,
        source: Peer,
        agent: Extension,
        dialled: String,
    ) {
        let config = self.config.clone();
        let (limit, period) = config.sms.max_per_agent;
        if !self
            .texts
            .agent_may(&agent, config.sms.max_per_agent, now.mono)
        {
            let warning = format!(
                "399 sipdesk \"{agent} sent {limit} texts in {} (max_per_agent)\"",
                humantime::format_duration(period)
            );
            tracing::warn!(%agent, "a phone's text refused: max_per_agent");
            self.reply(
                now,
                &key,
                &request,
                403,
                "Forbidden",
                &[("Warning", &warning)],
            );
            return;
        }
        let callee = match phone::normalize(&dialled, config.defaults.region) {
            Ok(Caller::Number(n)) => n.to_string(),
            _ => dialled.clone(),
        };
        let groups: Vec<String> = config
            .groups
            .iter()
            .filter(|g| g.agents.iter().any(|a| a.extension == agent))
            .map(|g| g.name.to_string())
            .collect();
        // The number it goes out from, as far as sipdesk knows: the first of the company's
        // numbers linked to one of the agent's groups (the PBX sets the real sender).
        let number = config
            .sms
            .numbers
            .iter()
            .find(|n| n.groups.iter().any(|g| groups.contains(g)));
        let counter = self.next_counter();
        let branch = forward::branch(&request, counter);
        let pbx = self.settings.pbx;
        let uri = self.pbx_uri(&dialled);
        let forwarded = forward::forward_request(
            &request,
            source,
            Some(uri),
            &self.settings.local,
            pbx.transport,
            &branch,
            false,
        );
        // Logged where the number's texts are (its groups), else where the agent's calls are.
        let groups = number.map_or(groups, |n| n.groups.clone());
        let record = CallRecord {
            id: format!("sms-{:x}-{counter:x}", now.wall.as_millisecond()),
            sip_call_id: request.call_id.clone(),
            direction: Direction::Outbound,
            queue: None,
            group: groups.first().cloned(),
            groups,
            caller: agent.to_string(),
            callee,
            agent: Some(agent.to_string()),
            agent_email: config.groups.email_of(&agent),
            agents: Vec::new(),
            started_at: now.wall,
            answered_at: None,
            ended_at: now.wall,
            outcome: Outcome::Answered,
            reason: None,
            ended_by: None,
            out_of_hours: false,
            recording_url: None,
            voicemail: None,
            explanation: vec![format!("text from {agent}'s phone to {dialled}")],
            tags: Vec::new(),
            sms: Some(Text {
                number: number.map(|n| n.number.clone()).unwrap_or_default(),
                name: number.map_or_else(|| "phone".to_owned(), |n| n.name.clone()),
                body: body_text(&request),
                skipped: None,
                flood: false,
                via: Some("phone".to_owned()),
                ticket: None,
                failure: None,
            }),
        };
        if pbx.transport == crate::sip::peer::Transport::Udp
            && message::encode_request(&forwarded).len() > UDP_MAX
        {
            let warning = format!(
                "399 sipdesk \"too long to pass on over UDP (at most {UDP_MAX} bytes, RFC 3428)\""
            );
            self.reply(
                now,
                &key,
                &request,
                513,
                "Message Too Large",
                &[("Warning", &warning)],
            );
            return;
        }
        let client = self.tx.request(now.mono, forwarded, pbx, &branch);
        self.texts.outgoing.insert(
            client,
            Outgoing {
                server: Some((key, Box::new(request))),
                record,
            },
        );
    }

    /// Sends a helpdesk reply to the customer as a MESSAGE to the PBX, from the company's
    /// number; the answer comes back as [`Output::TextAnswered`].
    pub fn send_text(&mut self, now: Now, order: TextOrder) {
        let counter = self.next_counter();
        let branch = format!("z9hG4bKsdtext{counter:x}{:x}", now.wall.as_millisecond());
        let pbx = self.settings.pbx;
        let local = &self.settings.local;
        let call_id = format!(
            "sdtext-{:x}-{counter:x}@{}",
            now.wall.as_millisecond(),
            local.host
        );
        let from = format!(
            "<sip:{}@{}>;tag=sd{counter:x}",
            order.from,
            if local.host.contains(':') {
                format!("[{}]", local.host)
            } else {
                local.host.clone()
            }
        );
        let to = format!("<sip:{}@{}>", order.to, self.settings.pbx_host);
        let headers: Vec<rsip::Header> = vec![
            message::header("Via", &local.via(pbx.transport, &branch)),
            message::header("Max-Forwards", "70"),
            message::header("From", &from),
            message::header("To", &to),
            message::header("Call-ID", &call_id),
            message::header("CSeq", "1 MESSAGE"),
            message::header("Content-Type", "text/plain;charset=UTF-8"),
            message::header("User-Agent", "sipdesk"),
        ];
        let request = rsip::Request {
            method: rsip::Method::Message,
            uri: self.pbx_uri(&order.to),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: order.body.clone().into_bytes(),
        };
        // The agent who wrote it, as the record names agents: by extension, with their e-mail.
        let agent = order.author.as_deref().and_then(|email| {
            self.config
                .groups
                .iter()
                .flat_map(|g| g.agents.iter())
                .find(|a| {
                    a.email
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(email))
                })
                .map(|a| a.extension.to_string())
        });
        let record = CallRecord {
            id: order.id.clone(),
            sip_call_id: call_id,
            direction: Direction::Outbound,
            queue: None,
            group: None,
            groups: self
                .config
                .sms
                .number(&order.from)
                .map(|n| n.groups.clone())
                .unwrap_or_default(),
            caller: order.from.clone(),
            callee: order.to.clone(),
            agent,
            agent_email: order.author.clone(),
            agents: Vec::new(),
            started_at: now.wall,
            answered_at: None,
            ended_at: now.wall,
            outcome: Outcome::Answered,
            reason: None,
            ended_by: None,
            out_of_hours: false,
            recording_url: None,
            voicemail: None,
            explanation: vec![format!(
                "reply written on ticket {} in {}",
                order.ticket, order.via
            )],
            tags: Vec::new(),
            sms: Some(Text {
                number: order.from.clone(),
                name: self
                    .config
                    .sms
                    .number(&order.from)
                    .map_or_else(|| order.from.clone(), |n| n.name.clone()),
                body: order.body,
                skipped: None,
                flood: false,
                via: Some(order.via),
                ticket: Some(order.ticket),
                failure: None,
            }),
        };
        let mut record = record;
        record.group = record.groups.first().cloned();
        let size = message::encode_request(&request).len();
        if pbx.transport == crate::sip::peer::Transport::Udp && size > UDP_MAX {
            let why = format!(
                "the text is too long to send over UDP ({size} bytes with its headers; at most {UDP_MAX}, RFC 3428): shorten it, or reach the PBX over TCP"
            );
            self.text_failed(record, why);
            return;
        }
        let client = self.tx.request(now.mono, request, pbx, &branch);
        self.texts.outgoing.insert(
            client,
            Outgoing {
                server: None,
                record,
            },
        );
        self.pump(now);
    }

    /// A helpdesk reply that could not be sent at all: recorded, and said to the daemon.
    fn text_failed(&mut self, mut record: CallRecord, why: String) {
        record.outcome = Outcome::Missed;
        record.reason = Some(crate::call::MissedReason::Rejected);
        record.explanation.push(format!("not sent: {why}"));
        if let Some(text) = record.sms.as_mut() {
            text.failure = Some(why.clone());
        }
        self.out.push(Output::TextAnswered {
            id: record.id.clone(),
            failure: Some(why),
        });
        self.store(Change::CallEnded(Box::new(record)));
    }

    /// The final answer to a text sent to the PBX (`None`: no answer in time). Returns whether
    /// the transaction was a text's.
    pub(super) fn text_answered(
        &mut self,
        now: Now,
        tx: &TxKey,
        response: Option<&Response>,
    ) -> bool {
        let Some(mut outgoing) = self.texts.outgoing.remove(tx) else {
            return false;
        };
        let failure = match response {
            Some(r) if (200..300).contains(&r.status) => None,
            Some(r) => Some(format!("the PBX answered {}", r.message.status_code)),
            None => Some("the PBX did not answer".to_owned()),
        };
        if let Some((server, request)) = &outgoing.server {
            match response {
                Some(r) => {
                    self.tx
                        .respond(now.mono, server, &forward::relay_response(r));
                }
                None => self.reply(now, server, request, 408, "Request Timeout", &[]),
            }
        }
        let record = &mut outgoing.record;
        record.ended_at = now.wall;
        if let Some(why) = &failure {
            record.outcome = Outcome::Missed;
            record.reason = Some(crate::call::MissedReason::Rejected);
            record.explanation.push(format!("not delivered: {why}"));
        }
        if let Some(text) = record.sms.as_mut() {
            text.failure = failure.clone();
        }
        if outgoing.server.is_none() {
            self.out.push(Output::TextAnswered {
                id: record.id.clone(),
                failure,
            });
        }
        self.stats.texts_out += 1;
        self.store(Change::CallEnded(Box::new(outgoing.record)));
        true
    }
}
