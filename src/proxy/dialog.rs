//! What sipdesk knows of an answered call's dialog, to send requests into it itself (RFC 3261
//! §12.2.1): the BYEs that end a call whose answer nobody acknowledged (§13.3.1.4) or whose far
//! end is gone, and the in-dialog OPTIONS of the session check. sipdesk sits between the two
//! legs, so it speaks to each as the other party would: towards the agent as the caller (the
//! caller's From, the agent's To, the caller's CSeq space), towards the caller as the agent.
//!
//! CSeq (the call keeps the highest number each party used, early dialog included): a BYE takes
//! the next number after the other party's highest, which ends the dialog anyway. An OPTIONS
//! re-uses the highest number of the party it stands in for (1 when that party sent nothing),
//! where RFC 3261 §12.2.1.1 would take the next: a number taken by sipdesk would make that
//! party's own next request look out of order to the other (§12.2.2: 500). A UAS that refuses
//! a number that is not higher than the last (PJSIP answers 500) still proves by answering that
//! it holds the dialog; only 481, 408 or silence mean it is gone.
//!
//! Where these requests go is limited to what the dialog itself named: the PBX, the address
//! the caller's INVITE came from, or a Contact or Record-Route of the call; anything else falls
//! back to the PBX or the caller's source, so no message makes sipdesk reach out elsewhere.

use std::net::IpAddr;

use rsip::Header;

use super::forward::{self, Local};
use crate::sip::message::{self, Request, Response};
use crate::sip::peer::Peer;
use crate::sip::syntax::{self, SipUri, Uri};

/// One side of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Side {
    Caller,
    Agent,
}

impl Side {
    pub(super) fn other(self) -> Side {
        match self {
            Side::Caller => Side::Agent,
            Side::Agent => Side::Caller,
        }
    }

    /// The index of per-side values.
    pub(super) fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Agent => 1,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Agent => "agent",
        }
    }
}

/// How to reach one party inside the dialog.
#[derive(Clone, Debug)]
struct Party {
    /// Its Contact: the Request-URI of requests to it.
    target: Option<SipUri>,
    /// Record-Route entries between sipdesk and it, nearest first.
    route: Vec<String>,
    /// Where the requests go when the route and target name nothing allowed.
    fallback: Peer,
    /// Its header (From when it sends): URI and tag.
    header: String,
}

/// The answered dialog of a call.
#[derive(Clone, Debug)]
pub(super) struct Dialog {
    call_id: String,
    caller: Party,
    agent: Party,
    /// Addresses requests inside this dialog may be sent to.
    allowed: Vec<IpAddr>,
}

fn record_routes(headers: &rsip::Headers) -> Vec<String> {
    message::header_values(headers, "Record-Route").collect()
}

/// The IP a URI names, when its host is one (not a name to resolve).
pub(super) fn uri_ip(uri: &SipUri) -> Option<IpAddr> {
    uri.host.trim_matches(['[', ']']).parse().ok()
}

/// The addresses a dialog's requests may go to: `fixed` ones, and those the dialog's Contacts
/// and Record-Routes name.
fn allowed_ips<'a>(
    fixed: &[IpAddr],
    contacts: impl Iterator<Item = &'a SipUri>,
    routes: impl Iterator<Item = &'a String>,
) -> Vec<IpAddr> {
    let routed = routes.filter_map(|entry| match syntax::parse_name_addr(entry).ok()?.uri {
        Uri::Sip(uri) => uri_ip(&uri),
        Uri::Other { .. } => None,
    });
    let mut allowed: Vec<IpAddr> = fixed
        .iter()
        .copied()
        .chain(contacts.filter_map(uri_ip))
        .chain(routed)
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    allowed
}

fn is_ours(entry: &str, local: &Local) -> bool {
    match syntax::parse_name_addr(entry).map(|n| n.uri) {
        Ok(Uri::Sip(uri)) => local.is_me(&uri),
        _ => false,
    }
}

impl Dialog {
    /// The dialog made by `answer` to the caller's `invite`, which came from `source` and was
    /// sent on to the agent at `pbx`.
    pub(super) fn new(
        invite: &Request,
        answer: &Response,
        source: Peer,
        pbx: Peer,
        local: &Local,
        caller_contact: Option<SipUri>,
        agent_contact: Option<SipUri>,
    ) -> Dialog {
        let header = |name: &str, headers: &rsip::Headers| {
            message::header_value(headers, name).unwrap_or_default()
        };
        // Towards the caller: the Record-Routes the INVITE brought (upstream proxies), nearest
        // first. Towards the agent: those of the answer above sipdesk's own, nearest first.
        let upstream: Vec<String> = record_routes(&invite.message.headers);
        let answered = record_routes(&answer.message.headers);
        let mut downstream: Vec<String> = answered
            .iter()
            .take_while(|entry| !is_ours(entry, local))
            .cloned()
            .collect();
        downstream.reverse();
        let allowed = allowed_ips(
            &[pbx.addr.ip(), source.addr.ip()],
            caller_contact.iter().chain(agent_contact.iter()),
            upstream.iter().chain(downstream.iter()),
        );
        Dialog {
            call_id: invite.call_id.clone(),
            caller: Party {
                target: caller_contact,
                route: upstream,
                fallback: source,
                header: header("From", &invite.message.headers),
            },
            agent: Party {
                target: agent_contact,
                route: downstream,
                fallback: pbx,
                header: header("To", &answer.message.headers),
            },
            allowed,
        }
    }

    /// The dialog of a call sipdesk answered itself with `ok` (voicemail): towards the caller
    /// as for any call; the "agent" side is sipdesk, never sent to.
    pub(super) fn answered_here(
        invite: &Request,
        ok: &rsip::Response,
        source: Peer,
        caller_contact: Option<SipUri>,
    ) -> Dialog {
        let upstream: Vec<String> = record_routes(&invite.message.headers);
        let allowed = allowed_ips(&[source.addr.ip()], caller_contact.iter(), upstream.iter());
        Dialog {
            call_id: invite.call_id.clone(),
            caller: Party {
                target: caller_contact,
                route: upstream,
                fallback: source,
                header: message::header_value(&invite.message.headers, "From").unwrap_or_default(),
            },
            agent: Party {
                target: None,
                route: Vec::new(),
                fallback: source,
                header: message::header_value(&ok.headers, "To").unwrap_or_default(),
            },
            allowed,
        }
    }

    fn party(&self, side: Side) -> &Party {
        match side {
            Side::Caller => &self.caller,
            Side::Agent => &self.agent,
        }
    }

    /// A target refresh (a 2xx to a re-INVITE or UPDATE, RFC 3261 §12.2.1.2): `side` is now
    /// reached at `target`.
    pub(super) fn refresh(&mut self, side: Side, target: SipUri) {
        if let Some(ip) = uri_ip(&target) {
            if !self.allowed.contains(&ip) {
                self.allowed.push(ip);
            }
        }
        match side {
            Side::Caller => self.caller.target = Some(target),
            Side::Agent => self.agent.target = Some(target),
        }
    }

    /// Whether requests of this dialog may be sent to `peer`.
    pub(super) fn allows(&self, peer: &Peer) -> bool {
        self.allowed.contains(&peer.addr.ip())
    }

    /// A request of `method` from sipdesk to `side`, in the name of the other party whose
    /// highest CSeq so far is `last_cseq`, and where it goes.
    pub(super) fn request(
        &self,
        side: Side,
        method: rsip::Method,
        last_cseq: u32,
        local: &Local,
        pbx_host: &str,
        branch: &str,
    ) -> (rsip::Request, Peer) {
        let to = self.party(side);
        let from = self.party(side.other());
        let cseq = match method {
            rsip::Method::Bye => last_cseq.saturating_add(1),
            _ => last_cseq.max(1),
        };
        // Loose routing (§16.12): the Request-URI is the party's Contact, the route set goes
        // in Route; the first hop is the first Route, else the Contact.
        let first_hop = to
            .route
            .first()
            .and_then(|entry| match syntax::parse_name_addr(entry).ok()?.uri {
                Uri::Sip(uri) => Some(uri),
                Uri::Other { .. } => None,
            })
            .or_else(|| to.target.clone());
        let peer = first_hop
            .and_then(|uri| forward::resolve(&uri, pbx_host, to.fallback))
            .filter(|peer| self.allows(peer))
            .map(|peer| {
                if peer.addr == to.fallback.addr && peer.transport == to.fallback.transport {
                    // The connection the party's requests came on (TCP).
                    to.fallback
                } else {
                    peer
                }
            })
            .unwrap_or(to.fallback);
        let uri = to
            .target
            .as_ref()
            .map(crate::sip::wire::rsip_uri)
            .unwrap_or_else(|| crate::sip::wire::rsip_uri(&fallback_uri(&to.fallback)));
        let mut headers: Vec<Header> = vec![
            message::header("Via", &local.via(peer.transport, branch)),
            message::header("Max-Forwards", "70"),
        ];
        for entry in &to.route {
            headers.push(message::header("Route", entry));
        }
        headers.push(message::header("From", &from.header));
        headers.push(message::header("To", &to.header));
        headers.push(message::header("Call-ID", &self.call_id));
        headers.push(message::header("CSeq", &format!("{cseq} {method}")));
        headers.push(message::header("User-Agent", "sipdesk"));
        let request = rsip::Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        };
        (request, peer)
    }
}

/// `sip:<address>` for a party that gave no Contact.
fn fallback_uri(peer: &Peer) -> SipUri {
    let host = match peer.addr.ip() {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    SipUri {
        scheme: syntax::Scheme::Sip,
        user: None,
        password: None,
        host,
        port: Some(peer.addr.port()),
        params: Vec::new(),
        headers: None,
    }
}
