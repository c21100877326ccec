//! The wire: bytes in, validated messages out, with the response a malformed request deserves.
//!
//! `rsip` is the message model, but it does not unfold header lines, know compact header names,
//! split comma-joined Vias, parse every valid Request-URI, or represent unknown methods. So this
//! layer frames messages itself (a UDP datagram is one message; a TCP stream is framed by
//! Content-Length, with CRLF keep-alives), tokenises the start line and header lines, unfolds and
//! normalises them (compact names expanded, Via/Contact/Route/Record-Route split into one entry
//! per header), checks them against RFC 3261 (RFC 4475 is the acceptance set), and only then
//! builds the `rsip` message. Limits on message size and header count are settings.

use std::str::FromStr;

use super::message::{self, Request, Response};
use super::syntax::{self, NameAddr, Uri, Via};

/// Bounds on what the wire layer accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, head and body, in bytes.
    pub max_message_size: usize,
    /// Most header lines (after splitting comma-joined values).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 16 * 1024,
            max_headers: 128,
        }
    }
}

/// A message read off the wire.
#[derive(Debug)]
pub enum Inbound {
    Request(Box<Request>),
    Response(Box<Response>),
}

/// Why a message goes no further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A request to answer with this (encoded) response.
    Answer {
        status: u16,
        why: String,
        response: Vec<u8>,
    },
    /// Not answered: a malformed response, or bytes that are not a SIP request.
    Drop { why: String },
}

impl Refusal {
    pub fn why(&self) -> &str {
        match self {
            Refusal::Answer { why, .. } | Refusal::Drop { why } => why,
        }
    }
}

/// What a datagram carried.
#[derive(Debug)]
pub enum Datagram {
    Message(Inbound),
    /// Only line breaks: a keep-alive, needing no answer.
    KeepAlive,
}

/// The header names RFC 3261 and its extensions allow in compact form.
fn expand_compact(name: &str) -> Option<&'static str> {
    let [c] = name.as_bytes() else { return None };
    Some(match c.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

/// Header names sipdesk reads, in their usual spelling.
const KNOWN: [&str; 14] = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Require",
    "Proxy-Require",
    "Accept",
];

/// Headers that may carry several comma-separated entries and are split into one per line.
const LISTS: [&str; 4] = ["Via", "Contact", "Route", "Record-Route"];

/// Headers a request may carry only once.
const SINGLE: [&str; 5] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

fn canonical(name: &str) -> String {
    if let Some(full) = expand_compact(name) {
        return full.to_owned();
    }
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |k| (*k).to_owned())
}

/// The start line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    Request {
        method: String,
        uri: String,
        version: String,
    },
    Response {
        version: String,
        code: String,
        reason: String,
    },
}

/// The head of a message: start line and normalised headers.
#[derive(Debug, Clone)]
struct Head {
    start: Start,
    headers: Vec<(String, String)>,
}

impl Head {
    fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    fn all<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn one<'h>(&'h self, name: &str) -> Option<&'h str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An answer to this (request) head, or a silent drop for a response.
    fn refuse(&self, status: u16, reason: &str, why: impl Into<String>) -> Refusal {
        self.refuse_with(status, reason, why, &[])
    }

    fn refuse_with(
        &self,
        status: u16,
        reason: &str,
        why: impl Into<String>,
        extra: &[(&str, &str)],
    ) -> Refusal {
        let why = why.into();
        if !self.is_request() {
            return Refusal::Drop { why };
        }
        let has_tag = self
            .one("To")
            .is_some_and(|to| syntax::parse_name_addr(to).is_ok_and(|t| t.tag().is_some()));
        let mut headers = message::response_headers(
            self.headers.iter().cloned(),
            status,
            &local_tag(&self.headers),
            has_tag,
        );
        headers.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        // The request's values are kept as written (they may be what was wrong with it), in the
        // same message model and through the same encoder as every other response.
        let response = rsip::Response {
            status_code: message::status_code(status, reason),
            version: rsip::Version::V2,
            headers: headers
                .into_iter()
                .map(|(name, value)| rsip::Header::Other(name, value))
                .collect::<Vec<_>>()
                .into(),
            body: Vec::new(),
        };
        Refusal::Answer {
            status,
            why,
            response: message::encode_response(&response),
        }
    }
}

/// A To tag for a stateless answer, the same for a request and its retransmissions.
fn local_tag(headers: &[(String, String)]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (name, value) in headers {
        if name == "Call-ID" || name == "From" || name == "CSeq" {
            value.hash(&mut hasher);
        }
    }
    format!("sd{:x}", hasher.finish())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits the head into the start line and normalised headers.
fn parse_head(head: &[u8], limits: &Limits) -> Result<Head, Refusal> {
    let drop = |why: &str| Refusal::Drop {
        why: why.to_owned(),
    };
    let text = String::from_utf8_lossy(head);
    let utf8 = std::str::from_utf8(head).is_ok();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let start = parse_start(first)
        .ok_or_else(|| drop("the first line is neither a request line nor a status line"))?;
    let mut head = Head {
        start,
        headers: Vec::new(),
    };
    let mut folded: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match folded.last_mut() {
                Some((_, value)) => {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(line.trim_matches([' ', '\t']));
                    continue;
                }
                None => {
                    return Err(head.refuse(
                        400,
                        "Bad Request",
                        "a continuation line before any header",
                    ));
                }
            }
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(head.refuse(
                400,
                "Bad Request",
                format!("header line without a colon: {line:?}"),
            ));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !syntax::is_token(name) {
            return Err(head.refuse(400, "Bad Request", format!("invalid header name {name:?}")));
        }
        folded.push((canonical(name), value.trim_matches([' ', '\t']).to_owned()));
    }
    if !utf8 {
        head.headers = folded;
        return Err(head.refuse(400, "Bad Request", "the header section is not UTF-8"));
    }
    for (name, value) in folded {
        if LISTS.contains(&name.as_str()) && value != "*" {
            let Some(parts) = syntax::split_commas(&value) else {
                head.headers.push((name.clone(), value));
                return Err(head.refuse(
                    400,
                    "Bad Request",
                    format!("unbalanced quotes or brackets in {name}"),
                ));
            };
            for part in parts {
                head.headers.push((name.clone(), part.to_owned()));
            }
        } else {
            head.headers.push((name, value));
        }
    }
    if head.headers.len() > limits.max_headers {
        return Err(head.refuse(
            400,
            "Too Many Headers",
            format!("more than {} headers", limits.max_headers),
        ));
    }
    Ok(head)
}

fn parse_start(line: &str) -> Option<Start> {
    if let Some(rest) = line.strip_prefix("SIP/").filter(|_| line.len() > 4) {
        let (version_number, rest) = rest.split_once(' ')?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        return Some(Start::Response {
            version: format!("SIP/{version_number}"),
            code: code.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !syntax::is_token(method) || uri.is_empty() {
        // Extra or missing spaces (RFC 4475 lwsstart, trws, lwsruri): still answerable.
        return Some(Start::Request {
            method: method.to_owned(),
            uri: String::new(),
            version: String::new(),
        });
    }
    Some(Start::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
        version: version.to_owned(),
    })
}

fn is_sip_version(text: &str) -> Option<bool> {
    let rest = text
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .map(|_| &text[4..])?;
    let (major, minor) = rest.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| rest == "2.0")
}

/// The body length Content-Length announces: `Ok(None)` when absent, `Err` when malformed or
/// contradictory.
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, String> {
    let mut found: Option<usize> = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "Content-Length") {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "Content-Length {value:?} is not a non-negative number"
            ));
        }
        let n = value
            .parse::<usize>()
            .map_err(|_| format!("Content-Length {value} is too large"))?;
        match found {
            Some(previous) if previous != n => {
                return Err(format!(
                    "conflicting Content-Length values {previous} and {n}"
                ));
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Reads one UDP datagram: one message, whose body is what Content-Length says (octets after
/// it are ignored, RFC 4475 `dblreq`) or the rest of the datagram when there is none.
pub fn read_datagram(bytes: &[u8], limits: &Limits) -> Result<Datagram, Refusal> {
    if bytes.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Ok(Datagram::KeepAlive);
    }
    let (head_bytes, body) = match find(bytes, b"\r\n\r\n") {
        Some(end) => (&bytes[..end], &bytes[end + 4..]),
        None => (
            bytes.strip_suffix(b"\r\n").unwrap_or(bytes),
            &bytes[bytes.len()..],
        ),
    };
    let head = parse_head(head_bytes, limits)?;
    if bytes.len() > limits.max_message_size {
        return Err(head.refuse(
            513,
            "Message Too Large",
            format!(
                "{} bytes, more than {}",
                bytes.len(),
                limits.max_message_size
            ),
        ));
    }
    let length =
        content_length(&head.headers).map_err(|why| head.refuse(400, "Bad Request", why))?;
    let body = match length {
        None => body,
        Some(n) if n <= body.len() => &body[..n],
        Some(n) => {
            let why = format!(
                "Content-Length {n} is more than the {} octets received",
                body.len()
            );
            return Err(head.refuse(400, "Bad Request", why));
        }
    };
    check(head, body).map(Datagram::Message)
}

/// What a stream decoder found.
#[derive(Debug)]
pub enum StreamItem {
    Message(Result<Inbound, Refusal>),
    /// A CRLF CRLF keep-alive ping: answer with one CRLF (RFC 5626 §3.5.1).
    Ping,
}

/// Why a stream must be closed: its framing can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClose {
    pub why: String,
    /// An answer to send before closing, when the head was a request.
    pub answer: Option<Vec<u8>>,
}

/// Frames messages on a TCP stream by Content-Length, across partial reads.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    limits: Limits,
}

impl StreamDecoder {
    pub fn new(limits: Limits) -> StreamDecoder {
        StreamDecoder {
            buf: Vec::new(),
            limits,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// New limits, for the messages framed from now on (a reload).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether part of a message is waiting for the rest (not just keep-alive line breaks).
    pub fn in_message(&self) -> bool {
        self.buf.iter().any(|b| !matches!(b, b'\r' | b'\n'))
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, StreamClose> {
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.drain(..4);
                return Ok(Some(StreamItem::Ping));
            }
            if self.buf.starts_with(b"\r\n") && self.buf.len() > 2 && self.buf[2] != b'\r' {
                self.buf.drain(..2);
                continue;
            }
            break;
        }
        if self.buf.is_empty() || self.buf == b"\r\n" || self.buf == b"\r\n\r" || self.buf == b"\r"
        {
            return Ok(None);
        }
        let Some(end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > self.limits.max_message_size {
                return Err(StreamClose {
                    why: "no end of headers within the size limit".into(),
                    answer: None,
                });
            }
            return Ok(None);
        };
        let head = parse_head(&self.buf[..end], &self.limits);
        let length = match &head {
            Ok(head) => content_length(&head.headers).map_err(|why| (Some(head.clone()), why))?,
            Err(_) => None,
        };
        let length = length.unwrap_or(0);
        // Saturating: a Content-Length near usize::MAX is simply too large, never an overflow.
        let total = (end + 4).saturating_add(length);
        if total > self.limits.max_message_size {
            let answer = match head {
                Ok(head) => match head.refuse(513, "Message Too Large", "too large") {
                    Refusal::Answer { response, .. } => Some(response),
                    Refusal::Drop { .. } => None,
                },
                Err(_) => None,
            };
            return Err(StreamClose {
                why: format!("message of {total} bytes, more than the limit"),
                answer,
            });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buf.drain(..total).collect();
        let item = match head {
            Err(refusal) => Err(refusal),
            Ok(head) => check(head, &message[end + 4..]),
        };
        Ok(Some(StreamItem::Message(item)))
    }
}

impl From<(Option<Head>, String)> for StreamClose {
    fn from((head, why): (Option<Head>, String)) -> StreamClose {
        let answer = head.and_then(|h| match h.refuse(400, "Bad Request", why.clone()) {
            Refusal::Answer { response, .. } => Some(response),
            Refusal::Drop { .. } => None,
        });
        StreamClose { why, answer }
    }
}

/// The RFC 3261 checks, then the `rsip` model.
fn check(head: Head, body: &[u8]) -> Result<Inbound, Refusal> {
    match &head.start {
        Start::Request { .. } => check_request(&head, body).map(|r| Inbound::Request(Box::new(r))),
        Start::Response { .. } => {
            check_response(&head, body).map(|r| Inbound::Response(Box::new(r)))
        }
    }
}

/// The header values every message needs, parsed.
struct Essentials {
    vias: Vec<Via>,
    from: NameAddr,
    to: NameAddr,
    call_id: String,
    cseq: syntax::CSeq,
}

fn essentials(head: &Head) -> Result<Essentials, Refusal> {
    let bad = |why: String| head.refuse(400, "Bad Request", why);
    let missing: Vec<&str> = ["Via", "From", "To", "Call-ID", "CSeq"]
        .into_iter()
        .filter(|name| head.one(name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!("missing {}", missing.join(", "))));
    }
    for name in SINGLE {
        if head.all(name).count() > 1 {
            return Err(bad(format!("more than one {name}")));
        }
    }
    let mut vias = Vec::new();
    for value in head.all("Via") {
        let via = syntax::parse_via(value).map_err(|e| bad(format!("Via {value:?}: {e}")))?;
        if via.branch() == Some("z9hG4bK") {
            return Err(bad("Via branch is only the magic cookie".to_owned()));
        }
        vias.push(via);
    }
    let name_addr = |name: &str| {
        let value = head.one(name).unwrap_or_default();
        syntax::parse_name_addr(value).map_err(|e| bad(format!("{name} {value:?}: {e}")))
    };
    let from = name_addr("From")?;
    let to = name_addr("To")?;
    let call_id = head.one("Call-ID").unwrap_or_default();
    if call_id.is_empty() || call_id.contains([' ', '\t']) {
        return Err(bad(format!("Call-ID {call_id:?} is not a word")));
    }
    let cseq = head.one("CSeq").unwrap_or_default();
    let cseq = syntax::parse_cseq(cseq).map_err(|e| bad(format!("CSeq {cseq:?}: {e}")))?;
    Ok(Essentials {
        vias,
        from,
        to,
        call_id: call_id.to_owned(),
        cseq,
    })
}

fn rsip_headers(head: &Head) -> rsip::Headers {
    head.headers
        .iter()
        .map(|(name, value)| message::header(name, value))
        .collect::<Vec<_>>()
        .into()
}

/// Methods sipdesk implements somewhere (the Allow header of its 405 and 501 answers).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, MESSAGE";

fn check_request(head: &Head, body: &[u8]) -> Result<Request, Refusal> {
    let Start::Request {
        method,
        uri,
        version,
    } = &head.start
    else {
        unreachable!("check_request is only called for requests");
    };
    if uri.is_empty() {
        return Err(head.refuse(
            400,
            "Bad Request",
            "the request line is not METHOD SP URI SP SIP/2.0",
        ));
    }
    match is_sip_version(version) {
        Some(true) => {}
        Some(false) => {
            return Err(head.refuse(505, "Version Not Supported", format!("version {version}")));
        }
        None => return Err(head.refuse(400, "Bad Request", format!("version {version:?}"))),
    }
    let essentials = essentials(head)?;
    if &essentials.cseq.method != method {
        let why = format!(
            "CSeq method {} does not match {method}",
            essentials.cseq.method
        );
        return Err(head.refuse(400, "Bad Request", why));
    }
    let max_forwards = match head.one("Max-Forwards") {
        None => None,
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            // An absurdly large value is treated as absent (RFC 4475 scalar02).
            v.parse::<u32>().ok().filter(|n| *n <= 255)
        }
        Some(v) => return Err(head.refuse(400, "Bad Request", format!("Max-Forwards {v:?}"))),
    };
    let mut routes = Vec::new();
    for name in ["Contact", "Route", "Record-Route"] {
        for value in head.all(name) {
            if name == "Contact" && value == "*" {
                continue;
            }
            let parsed = syntax::parse_name_addr(value)
                .map_err(|e| head.refuse(400, "Bad Request", format!("{name} {value:?}: {e}")))?;
            if name == "Route" {
                routes.push(parsed);
            }
        }
    }
    let Ok(rsip_method) = rsip::Method::from_str(method) else {
        return Err(head.refuse_with(
            501,
            "Not Implemented",
            format!("method {method}"),
            &[("Allow", ALLOW)],
        ));
    };
    let uri = match syntax::parse_uri(uri) {
        Ok(Uri::Sip(uri)) if uri.headers.is_none() => uri,
        Ok(Uri::Sip(_)) => {
            return Err(head.refuse(400, "Bad Request", "the Request-URI carries headers"));
        }
        Ok(Uri::Other { scheme, .. }) => {
            return Err(head.refuse(416, "Unsupported URI Scheme", format!("scheme {scheme}")));
        }
        Err(e) => return Err(head.refuse(400, "Bad Request", format!("Request-URI {uri:?}: {e}"))),
    };
    let message = rsip::Request {
        method: rsip_method,
        uri: rsip_uri(&uri),
        version: rsip::Version::V2,
        headers: rsip_headers(head),
        body: body.to_vec(),
    };
    Ok(Request {
        message,
        uri,
        vias: essentials.vias,
        from: essentials.from,
        to: essentials.to,
        call_id: essentials.call_id,
        cseq: essentials.cseq,
        max_forwards,
        routes,
    })
}

fn check_response(head: &Head, body: &[u8]) -> Result<Response, Refusal> {
    let Start::Response {
        version,
        code,
        reason,
    } = &head.start
    else {
        unreachable!("check_response is only called for responses");
    };
    let drop = |why: String| Refusal::Drop { why };
    if is_sip_version(version) != Some(true) {
        return Err(drop(format!("response version {version:?}")));
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| code.len() == 3 && (100..=699).contains(c))
        .ok_or_else(|| drop(format!("status code {code:?}")))?;
    let essentials = essentials(head).map_err(|r| drop(r.why().to_owned()))?;
    if reason.contains(['\r', '\n']) {
        return Err(drop("line break in the reason phrase".into()));
    }
    let message = rsip::Response {
        status_code: message::status_code(status, reason),
        version: rsip::Version::V2,
        headers: rsip_headers(head),
        body: body.to_vec(),
    };
    Ok(Response {
        message,
        status,
        vias: essentials.vias,
        from: essentials.from,
        to: essentials.to,
        call_id: essentials.call_id,
        cseq: essentials.cseq,
    })
}

/// The `rsip` form of a SIP URI, faithful to what was written.
pub fn rsip_uri(uri: &syntax::SipUri) -> rsip::Uri {
    let host = match uri.host.parse::<std::net::IpAddr>() {
        Ok(ip) => rsip::Host::IpAddr(ip),
        Err(_) => rsip::Host::Domain(uri.host.clone().into()),
    };
    rsip::Uri {
        scheme: Some(match uri.scheme {
            syntax::Scheme::Sip => rsip::Scheme::Sip,
            syntax::Scheme::Sips => rsip::Scheme::Sips,
        }),
        auth: uri.user.as_ref().map(|user| rsip::Auth {
            user: user.clone(),
            password: uri.password.clone(),
        }),
        host_with_port: rsip::HostWithPort {
            host,
            port: uri.port.map(Into::into),
        },
        params: uri
            .params
            .iter()
            .map(|(name, value)| {
                rsip::Param::Other(name.clone().into(), value.clone().map(Into::into))
            })
            .collect(),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
