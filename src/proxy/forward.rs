//! What the proxy sends on: requests with sipdesk's Via on top, a Record-Route on initial
//! requests and Max-Forwards decremented (RFC 3261 §16.6), responses without sipdesk's Via
//! (§16.7), the next hop of a request inside a dialog (loose routing, §16.12), and loop detection
//! (§16.3 step 4).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use rsip::Header;

use crate::sip::message::{self, Request, Response};
use crate::sip::peer::{Peer, Transport};
use crate::sip::syntax::{self, SipUri, Via};

/// Where sipdesk is reached: the address in its Via and Record-Route headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    pub host: String,
    pub port: u16,
}

impl Local {
    fn sent_by(&self) -> String {
        format!("{}:{}", self.host.to_ascii_lowercase(), self.port)
    }

    /// Whether a URI names sipdesk itself.
    pub fn is_me(&self, uri: &SipUri) -> bool {
        uri.host.eq_ignore_ascii_case(&self.host) && uri.port.unwrap_or(5060) == self.port
    }

    pub(crate) fn via(&self, transport: Transport, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            transport.via_name(),
            self.host,
            self.port
        )
    }

    fn record_route(&self) -> String {
        format!("<sip:{}:{};lr>", self.host, self.port)
    }
}

const BRANCH_PREFIX: &str = "z9hG4bKsd";

/// The part of a request that stays the same when it loops back unchanged.
fn loop_hash(request: &Request) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    request.uri.to_string().hash(&mut hasher);
    request.from.tag().hash(&mut hasher);
    request.to.tag().hash(&mut hasher);
    request.call_id.hash(&mut hasher);
    request.cseq.seq.hash(&mut hasher);
    message::header_value(&request.message.headers, "Proxy-Require").hash(&mut hasher);
    hasher.finish()
}

/// A fresh branch for a request sipdesk sends on; it carries the request's loop hash.
pub fn branch(request: &Request, counter: u64) -> String {
    format!("{BRANCH_PREFIX}{:016x}.{counter:x}", loop_hash(request))
}

/// Whether a request already passed through sipdesk unchanged: one of its Vias is sipdesk's with
/// this request's loop hash (a spiral, with a new Request-URI, is not a loop).
pub fn is_loop(request: &Request, local: &Local) -> bool {
    let hash = format!("{BRANCH_PREFIX}{:016x}.", loop_hash(request));
    request.vias.iter().any(|via| {
        via.sent_by() == local.sent_by() && via.branch().is_some_and(|b| b.starts_with(&hash))
    })
}

/// The request to send on. `uri` replaces the Request-URI (initial INVITEs to an agent);
/// `record_route` adds sipdesk's Record-Route so it stays in the dialog.
pub fn forward_request(
    request: &Request,
    source: Peer,
    uri: Option<rsip::Uri>,
    local: &Local,
    transport: Transport,
    branch: &str,
    record_route: bool,
) -> rsip::Request {
    let mut headers: Vec<Header> = Vec::with_capacity(request.message.headers.iter().count() + 3);
    headers.push(message::header("Via", &local.via(transport, branch)));
    if record_route {
        headers.push(message::header("Record-Route", &local.record_route()));
    }
    let mut first_via = true;
    let mut first_route = true;
    let mut max_forwards = false;
    for header in request.message.headers.iter() {
        match header {
            Header::Via(_) if first_via => {
                first_via = false;
                headers.push(message::header(
                    "Via",
                    &stamp_via(&request.vias[0], header, source),
                ));
            }
            Header::Route(_) if first_route => {
                first_route = false;
                let ours = request.routes.first().is_some_and(|r| match &r.uri {
                    syntax::Uri::Sip(uri) => local.is_me(uri),
                    syntax::Uri::Other { .. } => false,
                });
                if !ours {
                    headers.push(header.clone());
                }
            }
            Header::MaxForwards(_) => {
                max_forwards = true;
                let left = request.max_forwards.unwrap_or(70).saturating_sub(1);
                headers.push(message::header("Max-Forwards", &left.to_string()));
            }
            other => headers.push(other.clone()),
        }
    }
    if !max_forwards {
        headers.push(message::header("Max-Forwards", "70"));
    }
    rsip::Request {
        method: request.message.method,
        uri: uri.unwrap_or_else(|| request.message.uri.clone()),
        version: rsip::Version::V2,
        headers: headers.into(),
        body: request.message.body.clone(),
    }
}

/// The previous hop's Via with `received` (when its host is not the source address) and the
/// `rport` value filled in (RFC 3261 §18.2.1, RFC 3581), so responses can follow it back.
fn stamp_via(via: &Via, header: &Header, source: Peer) -> String {
    let (_, mut value) = message::header_pair(header);
    let ip = source.addr.ip().to_string();
    if via.host.trim_matches(['[', ']']) != ip && via.param("received").is_none() {
        value.push_str(&format!(";received={ip}"));
    }
    if via.param("rport") == Some(None) {
        // Replace the bare flag with the source port.
        let port = source.addr.port();
        value = replace_bare_param(&value, "rport", &port.to_string());
    }
    value
}

fn replace_bare_param(value: &str, name: &str, with: &str) -> String {
    let parts: Vec<String> = value
        .split(';')
        .map(|part| {
            if part.trim().eq_ignore_ascii_case(name) {
                format!("{name}={with}")
            } else {
                part.to_owned()
            }
        })
        .collect();
    parts.join(";")
}

/// The response to send upstream: the same, without sipdesk's Via.
pub fn relay_response(response: &Response) -> rsip::Response {
    let mut removed = false;
    let headers: Vec<Header> = response
        .message
        .headers
        .iter()
        .filter(|h| {
            if !removed && matches!(h, Header::Via(_)) {
                removed = true;
                return false;
            }
            true
        })
        .cloned()
        .collect();
    rsip::Response {
        status_code: response.message.status_code.clone(),
        version: rsip::Version::V2,
        headers: headers.into(),
        body: response.message.body.clone(),
    }
}

/// Where a response goes once sipdesk's Via is removed: the next Via's `received` address and
/// `rport` port, or its sent-by.
pub fn response_peer(response: &Response) -> Option<Peer> {
    let via = response.vias.get(1)?;
    let host = via.param("received").flatten().unwrap_or(&via.host);
    let ip: IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    let port = via
        .param("rport")
        .flatten()
        .and_then(|p| p.parse().ok())
        .or(via.port)
        .unwrap_or(5060);
    let transport = if via.transport == "TCP" {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
        connection: None,
    })
}

/// The URI a request inside a dialog goes to: the first Route that is not sipdesk, else the
/// Request-URI.
pub fn next_hop(request: &Request, local: &Local) -> SipUri {
    let mut routes = request.routes.iter().filter_map(|r| match &r.uri {
        syntax::Uri::Sip(uri) => Some(uri),
        syntax::Uri::Other { .. } => None,
    });
    let first = routes.next();
    let next = match first {
        Some(uri) if local.is_me(uri) => routes.next(),
        other => other,
    };
    next.cloned().unwrap_or_else(|| request.uri.clone())
}

/// The address for a URI: an IP literal, or the PBX when the URI names it.
pub fn resolve(uri: &SipUri, pbx_host: &str, pbx: Peer) -> Option<Peer> {
    let transport = match uri.param("transport").flatten() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        _ => Transport::Udp,
    };
    let port = uri.port.unwrap_or(5060);
    if let Ok(ip) = uri.host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(Peer {
            transport,
            addr: SocketAddr::new(ip, port),
            connection: None,
        });
    }
    if uri.host.eq_ignore_ascii_case(pbx_host) {
        let port = uri.port.unwrap_or(pbx.addr.port());
        return Some(Peer {
            transport,
            addr: SocketAddr::new(pbx.addr.ip(), port),
            connection: None,
        });
    }
    None
}
