//! The grammar of the SIP header values sipdesk reads (RFC 3261 §25): URIs, name-addr values
//! (From, To, Contact, Route, Record-Route), Via, CSeq and generic parameters.
//!
//! Parsers work on one header value after the wire layer has unfolded lines and split
//! comma-joined entries. They accept the linear white space the grammar allows around separators
//! (RFC 4475's `wsinv` message) and refuse what it does not (`badaspec`, `baddn`, `quotbal`,
//! `regbadct`, `badinv01`), so that a malformed request is answered 400 instead of being guessed at.

use std::fmt;

/// Why a header value does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct SyntaxError {
    pub what: &'static str,
}

fn fail<T>(what: &'static str) -> Result<T, SyntaxError> {
    Err(SyntaxError { what })
}

/// RFC 3261 `token` characters.
pub fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// Whether `text` is a non-empty `token`.
pub fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token_char)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

/// Checks `%HH` escapes and that every other byte is allowed.
fn check_escaped(text: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(a), Some(b)) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if allowed(bytes[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decodes `%HH` escapes (already checked); invalid UTF-8 is replaced. An escape of a control
/// character (`%00`, `%0D`…) stays as written: no user part sipdesk routes on contains one, and
/// decoded it would reach logs and the database as a raw NUL or line break.
pub fn unescape(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        if bytes[i] == b'%' {
            if let (Some(a), Some(b)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                let decoded = a * 16 + b;
                if decoded.is_ascii_control() {
                    out.extend_from_slice(&bytes[i..i + 3]);
                } else {
                    out.push(decoded);
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URI scheme sipdesk routes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
}

/// A parsed URI: a SIP or SIPS URI in parts, or another scheme kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    /// Any other syntactically valid absolute URI (`tel:`, `isbn:`…), kept as written.
    Other {
        scheme: String,
        text: String,
    },
}

/// A `sip:` or `sips:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: Scheme,
    /// The user part as written, escapes included.
    pub user: Option<String>,
    pub password: Option<String>,
    /// A host name, an IPv4 address, or an IPv6 reference with its brackets.
    pub host: String,
    pub port: Option<u16>,
    /// `;name[=value]` parameters in order, as written.
    pub params: Vec<(String, Option<String>)>,
    /// `?name=value&…` headers, as written (never allowed in a Request-URI).
    pub headers: Option<String>,
}

impl SipUri {
    /// The user part with escapes decoded: what a queue ID or extension is compared with.
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(unescape)
    }

    /// A parameter's value (`Some(None)` for a parameter without value).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(password) = &self.password {
                write!(f, ":{password}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        for (name, value) in &self.params {
            match value {
                Some(value) => write!(f, ";{name}={value}")?,
                None => write!(f, ";{name}")?,
            }
        }
        if let Some(headers) = &self.headers {
            write!(f, "?{headers}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(uri) => uri.fmt(f),
            Uri::Other { text, .. } => f.write_str(text),
        }
    }
}

fn is_scheme(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// Parses a URI with no surrounding white space.
pub fn parse_uri(text: &str) -> Result<Uri, SyntaxError> {
    let Some((scheme, rest)) = text.split_once(':') else {
        return fail("a URI needs a scheme");
    };
    let sip = if scheme.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else if is_scheme(scheme)
        && !rest.is_empty()
        && !text
            .bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
    {
        return Ok(Uri::Other {
            scheme: scheme.to_ascii_lowercase(),
            text: text.to_owned(),
        });
    } else {
        return fail("a URI needs a valid scheme");
    };
    parse_sip_uri(sip, rest).map(Uri::Sip)
}

fn parse_sip_uri(scheme: Scheme, rest: &str) -> Result<SipUri, SyntaxError> {
    // '@' cannot appear unescaped anywhere but after the userinfo.
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            let user_ok = |c: u8| is_unreserved(c) || b"&=+$,;?/".contains(&c);
            if user.is_empty() || !check_escaped(user, user_ok) {
                return fail("invalid user part in URI");
            }
            if let Some(p) = password {
                if !check_escaped(p, |c| is_unreserved(c) || b"&=+$,".contains(&c)) {
                    return fail("invalid password in URI");
                }
            }
            (Some(user.to_owned()), password.map(str::to_owned))
        }
    };
    let (hostport, headers) = match hostpart.split_once('?') {
        Some((h, headers)) => (h, Some(headers)),
        None => (hostpart, None),
    };
    let mut parts = hostport.split(';');
    let hostport = parts.next().unwrap_or_default();
    let (host, port) = parse_hostport(hostport)?;
    let mut params = Vec::new();
    let param_ok = |c: u8| is_unreserved(c) || b"[]/:&+$".contains(&c);
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (param, None),
        };
        if name.is_empty() || !check_escaped(name, param_ok) {
            return fail("invalid URI parameter");
        }
        if let Some(v) = value {
            if v.is_empty() || !check_escaped(v, param_ok) {
                return fail("invalid URI parameter value");
            }
        }
        params.push((name.to_owned(), value.map(str::to_owned)));
    }
    if let Some(h) = headers {
        let header_ok = |c: u8| is_unreserved(c) || b"[]/?:+$=&".contains(&c);
        if h.is_empty() || !check_escaped(h, header_ok) {
            return fail("invalid URI headers");
        }
    }
    Ok(SipUri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers: headers.map(str::to_owned),
    })
}

/// `host[:port]`: a host name, IPv4 address or bracketed IPv6 reference.
pub fn parse_hostport(text: &str) -> Result<(String, Option<u16>), SyntaxError> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return fail("unterminated IPv6 reference");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return fail("invalid IPv6 address");
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(SyntaxError {
                what: "junk after IPv6 reference",
            })?),
        };
        (&text[..addr.len() + 2], port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| SyntaxError {
                what: "port out of range",
            })?)
        }
        Some(_) => return fail("invalid port"),
    };
    if !host.starts_with('[') && !is_hostname(host) {
        return fail("invalid host");
    }
    Ok((host.to_owned(), port))
}

/// A host name or IPv4 address (a trailing dot allowed).
fn is_hostname(text: &str) -> bool {
    let text = text.strip_suffix('.').unwrap_or(text);
    !text.is_empty()
        && text.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn skip_ws(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

/// `;name[=value]` parameters after a value, with white space allowed around `;` and `=`.
/// Values are tokens, hosts or quoted strings.
pub fn parse_params(mut text: &str) -> Result<Vec<(String, Option<String>)>, SyntaxError> {
    let mut params = Vec::new();
    loop {
        text = skip_ws(text);
        if text.is_empty() {
            return Ok(params);
        }
        let Some(rest) = text.strip_prefix(';') else {
            return fail("expected ';' before a parameter");
        };
        text = skip_ws(rest);
        let name_len = text.bytes().take_while(|b| is_token_char(*b)).count();
        if name_len == 0 {
            return fail("empty parameter");
        }
        let name = &text[..name_len];
        text = skip_ws(&text[name_len..]);
        let value = if let Some(rest) = text.strip_prefix('=') {
            text = skip_ws(rest);
            if text.starts_with('"') {
                let (quoted, rest) = quoted_string(text)?;
                text = rest;
                Some(quoted.to_owned())
            } else {
                let len = text
                    .bytes()
                    .take_while(|b| is_token_char(*b) || b"[]:".contains(b))
                    .count();
                if len == 0 {
                    return fail("empty parameter value");
                }
                let v = &text[..len];
                text = &text[len..];
                Some(v.to_owned())
            }
        } else {
            None
        };
        params.push((name.to_owned(), value));
    }
}

/// A quoted string at the start of `text` (with its quotes); returns it and what follows.
fn quoted_string(text: &str) -> Result<(&str, &str), SyntaxError> {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Ok((&text[..=i], &text[i + 1..])),
            b'\r' | b'\n' => return fail("line break inside a quoted string"),
            _ => i += 1,
        }
    }
    fail("unterminated quoted string")
}

/// A From, To, Contact, Route or Record-Route value: `[display] <uri> ;params` or
/// `uri ;params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    /// Whether the URI was written inside `<>`.
    pub bracketed: bool,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// A header parameter's value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

/// Parses a name-addr or addr-spec header value.
pub fn parse_name_addr(text: &str) -> Result<NameAddr, SyntaxError> {
    let text = text.trim_matches([' ', '\t']);
    let (display, rest) = if text.starts_with('"') {
        let (quoted, rest) = quoted_string(text)?;
        let rest = skip_ws(rest);
        if !rest.starts_with('<') {
            return fail("a quoted display name must be followed by <uri>");
        }
        (Some(quoted.to_owned()), rest)
    } else if let Some(lt) = text.find('<') {
        let display = text[..lt].trim_matches([' ', '\t']);
        if !display.is_empty()
            && !display
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token)
        {
            return fail("a display name must be tokens or a quoted string");
        }
        (
            (!display.is_empty()).then(|| display.to_owned()),
            &text[lt..],
        )
    } else {
        (None, text)
    };
    if let Some(inner) = rest.strip_prefix('<') {
        let Some(end) = inner.find('>') else {
            return fail("missing '>'");
        };
        let uri_text = &inner[..end];
        if uri_text.starts_with([' ', '\t']) || uri_text.ends_with([' ', '\t']) {
            return fail("white space inside <>");
        }
        let uri = parse_uri(uri_text)?;
        let params = parse_params(&inner[end + 1..])?;
        return Ok(NameAddr {
            display,
            uri,
            bracketed: true,
            params,
        });
    }
    // addr-spec without <>: the URI ends at the first ';' and cannot carry ',', '?' or ';'.
    let (uri_text, params) = match rest.find(';') {
        Some(semi) => (rest[..semi].trim_end_matches([' ', '\t']), &rest[semi..]),
        None => (rest, ""),
    };
    if uri_text.contains(['?', ',', ' ', '\t']) {
        return fail("a URI with headers or spaces must be written inside <>");
    }
    let uri = parse_uri(uri_text)?;
    let params = parse_params(params)?;
    Ok(NameAddr {
        display,
        uri,
        bracketed: false,
        params,
    })
}

/// One Via entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, … as written, upper-cased.
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// `host:port` as written (port 5060 when left out), for transaction matching.
    pub fn sent_by(&self) -> String {
        format!(
            "{}:{}",
            self.host.to_ascii_lowercase(),
            self.port.unwrap_or(5060)
        )
    }
}

/// Parses one Via entry: `SIP / 2.0 / transport sent-by *(;param)`, white space allowed
/// around the slashes.
pub fn parse_via(text: &str) -> Result<Via, SyntaxError> {
    let mut rest = skip_ws(text);
    let mut protocol = Vec::with_capacity(3);
    for i in 0..3 {
        let len = rest.bytes().take_while(|b| is_token_char(*b)).count();
        if len == 0 {
            return fail("invalid Via protocol");
        }
        protocol.push(&rest[..len]);
        rest = skip_ws(&rest[len..]);
        if i < 2 {
            rest = skip_ws(rest.strip_prefix('/').ok_or(SyntaxError {
                what: "invalid Via protocol",
            })?);
        }
    }
    if !protocol[0].eq_ignore_ascii_case("SIP") || protocol[1] != "2.0" {
        return fail("Via protocol is not SIP/2.0");
    }
    let end = rest.find([';', ' ', '\t']).unwrap_or(rest.len());
    let (host, port) = parse_hostport(&rest[..end])?;
    let params = parse_params(&rest[end..])?;
    if let Some((_, None)) = params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("branch"))
    {
        return fail("empty Via branch");
    }
    Ok(Via {
        transport: protocol[2].to_ascii_uppercase(),
        host,
        port,
        params,
    })
}

/// A CSeq value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: String,
}

/// Parses `number LWS method`; the number must fit 32 bits.
pub fn parse_cseq(text: &str) -> Result<CSeq, SyntaxError> {
    let text = text.trim_matches([' ', '\t']);
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return fail("CSeq needs a number");
    }
    let seq = text[..digits].parse::<u32>().map_err(|_| SyntaxError {
        what: "CSeq number does not fit 32 bits",
    })?;
    let method = skip_ws(&text[digits..]);
    if method.len() == text.len() - digits || !is_token(method) {
        return fail("CSeq needs a method after white space");
    }
    Ok(CSeq {
        seq,
        method: method.to_owned(),
    })
}

/// Splits a header value on commas outside quoted strings and `<>`; `None` when a quote or
/// bracket is left open.
pub fn split_commas(text: &str) -> Option<Vec<&str>> {
    let bytes = text.as_bytes();
    let (mut parts, mut start, mut i) = (Vec::new(), 0, 0);
    let (mut quoted, mut angle) = (false, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' if !angle => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                parts.push(text[start..i].trim_matches([' ', '\t']));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted || angle {
        return None;
    }
    parts.push(text[start..].trim_matches([' ', '\t']));
    Some(parts)
}

#[cfg(test)]
mod tests;
