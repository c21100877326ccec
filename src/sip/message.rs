//! Validated SIP messages: the `rsip` model (start line, headers, body) plus the few header
//! values sipdesk reads, parsed once by [`super::syntax`]. Also builds responses and encodes
//! messages to bytes.

use rsip::{Header, Headers};

use super::syntax::{CSeq, NameAddr, SipUri, Via};

/// A request that passed the wire layer's checks.
#[derive(Clone, Debug)]
pub struct Request {
    pub message: rsip::Request,
    /// The Request-URI, always `sip:` or `sips:`.
    pub uri: SipUri,
    /// Every Via, top first.
    pub vias: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    pub max_forwards: Option<u32>,
    /// Route headers, in order.
    pub routes: Vec<NameAddr>,
}

/// A response that passed the wire layer's checks.
#[derive(Clone, Debug)]
pub struct Response {
    pub message: rsip::Response,
    pub status: u16,
    pub vias: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
}

impl Request {
    pub fn method(&self) -> rsip::Method {
        self.message.method
    }

    /// The top Via (the wire layer guarantees there is one).
    pub fn top_via(&self) -> &Via {
        &self.vias[0]
    }

    /// A response to this request, copying Via, From, To, Call-ID and CSeq; `to_tag` is added to
    /// To when it has none (never on 100 Trying).
    pub fn response(&self, status: u16, reason: &str, to_tag: &str) -> rsip::Response {
        let pairs = self.message.headers.iter().map(header_pair);
        let headers = response_headers(pairs, status, to_tag, self.to.tag().is_some());
        rsip::Response {
            status_code: status_code(status, reason),
            version: rsip::Version::V2,
            headers: headers
                .into_iter()
                .map(|(name, value)| header(&name, &value))
                .collect::<Vec<_>>()
                .into(),
            body: Vec::new(),
        }
    }
}

impl Response {
    pub fn top_via(&self) -> &Via {
        &self.vias[0]
    }
}

/// A status code with its reason phrase as given (`rsip`'s named codes would print their
/// reason phrases without spaces).
pub fn status_code(status: u16, reason: &str) -> rsip::StatusCode {
    rsip::StatusCode::Other(status, reason.to_owned())
}

/// A header's name and value as written.
pub fn header_pair(header: &Header) -> (String, String) {
    let text = header.to_string();
    match text.split_once(':') {
        Some((name, value)) => (name.trim().to_owned(), value.trim().to_owned()),
        None => (text, String::new()),
    }
}

/// Builds an `rsip` header from a name and value.
pub fn header(name: &str, value: &str) -> Header {
    use rsip::headers::header::tokenizer::Tokenizer;
    let tokenizer = Tokenizer::from((name.as_bytes(), value.as_bytes()));
    // Names and values reaching here are UTF-8 text, so the conversion cannot fail; fall back to
    // an opaque header rather than lose it.
    tokenizer
        .try_into()
        .unwrap_or_else(|_| Header::Other(name.to_owned(), value.to_owned()))
}

/// The headers of a response: Via, From, To, Call-ID and CSeq copied from the request, the To
/// tag added when the request's To had none and the response is not 100.
pub(crate) fn response_headers(
    request: impl Iterator<Item = (String, String)>,
    status: u16,
    to_tag: &str,
    has_to_tag: bool,
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (name, value) in request {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "via" | "from" | "call-id" | "cseq" => headers.push((name, value)),
            "to" if status > 100 && !has_to_tag => {
                headers.push((name, format!("{value};tag={to_tag}")))
            }
            "to" => headers.push((name, value)),
            _ => {}
        }
    }
    headers
}

/// Encodes a request: start line, headers, a Content-Length matching the body, the body.
pub fn encode_request(request: &rsip::Request) -> Vec<u8> {
    let start = format!("{} {} SIP/2.0\r\n", request.method, request.uri);
    encode(start, &request.headers, &request.body)
}

/// Encodes a response.
pub fn encode_response(response: &rsip::Response) -> Vec<u8> {
    let start = format!("SIP/2.0 {}\r\n", response.status_code);
    encode(start, &response.headers, &response.body)
}

/// Writes the message; Content-Length always states the body's length, in place of the one
/// the message had, or last when it had none.
fn encode(start: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = start.into_bytes();
    let length = format!("Content-Length: {}\r\n", body.len());
    let mut length_written = false;
    for header in headers.iter() {
        if matches!(header, Header::ContentLength(_)) {
            if !length_written {
                out.extend_from_slice(length.as_bytes());
                length_written = true;
            }
            continue;
        }
        out.extend_from_slice(header.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !length_written {
        out.extend_from_slice(length.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The value of the first header with this name (case-insensitive).
pub fn header_value(headers: &Headers, name: &str) -> Option<String> {
    header_values(headers, name).next()
}

/// The values of every header of this name, in order.
pub fn header_values<'a>(headers: &'a Headers, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers.iter().filter_map(move |h| {
        let (n, v) = header_pair(h);
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}
