//! SDP offer/answer for the calls sipdesk answers itself (voicemail): reading the caller's offer
//! (RFC 4566) as far as audio needs, choosing what to speak (RFC 3264) and writing the answer.
//!
//! sipdesk speaks PCMU and PCMA at 8 kHz over plain RTP (`RTP/AVP`), 20 ms packets, and
//! `telephone-event` (RFC 4733) for the caller's keys. Decisions:
//! - the stream used is the first `m=audio` that is enabled (port ≠ 0), plain `RTP/AVP` and
//!   offers PCMU or PCMA; secure profiles (`RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`) are not
//!   spoken, so an offer that also carries a plain copy of its audio (SDES "best effort") gets
//!   that one. Every other `m=` line is rejected in the answer with port 0, in the offer's order,
//!   as RFC 3264 §6 requires;
//! - the codec is the offer's first PCMU or PCMA (its preference), under the offer's own payload
//!   type number, and `telephone-event` is the offer's one at 8000 Hz, if any;
//! - nothing acceptable is a [`NotAcceptable`] (488 Not Acceptable Here); a body that is not SDP
//!   at all is an [`SdpError`] (400 Bad Request);
//! - a connection address of 0.0.0.0 (RFC 2543's hold) means the offerer will not receive,
//!   whatever its direction attribute says; the answer's direction is the offer's reversed
//!   (RFC 3264 §6.1);
//! - the answer's `o=` version grows only when the answer changes (RFC 3264 §8), so a session
//!   refresh re-INVITE gets the same answer back; `t=` repeats the offer's (§6).
//!
//! Parsing is lenient where the meaning is still clear (LF line ends, unknown lines and
//! attributes, malformed `a=rtpmap`/`a=ptime` values, which are ignored) and strict on the lines
//! negotiation rests on (`v=`, `m=`, `c=`).

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use super::g711::Law;

/// Who sends media on a stream, from the point of view of the SDP's author.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute that states it (`sendrecv`, `sendonly`…).
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the author sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the author receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The direction an answerer that would both send and receive answers to this offered one
    /// (RFC 3264 §6.1): sendonly → recvonly, recvonly → sendonly, the others unchanged.
    pub fn answer(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

/// An RTP payload type offered on a stream, named by `a=rtpmap` or by RFC 3551's static table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadType {
    /// 0 to 127.
    pub number: u8,
    /// The encoding name as written (`PCMU`, `telephone-event`, `opus`); `None` for a dynamic
    /// number without `a=rtpmap`.
    pub name: Option<String>,
    pub clock_rate: Option<u32>,
    /// The rtpmap's encoding parameters; for audio, channels (1 when absent).
    pub channels: u32,
    /// The `a=fmtp` parameters, as written.
    pub fmtp: Option<String>,
}

impl PayloadType {
    fn is(&self, name: &str, clock_rate: u32) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && self.clock_rate == Some(clock_rate)
            && self.channels == 1
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, self.clock_rate) {
            (Some(name), Some(rate)) => write!(f, "{name}/{rate}"),
            (Some(name), None) => f.write_str(name),
            (None, _) => write!(f, "payload type {}", self.number),
        }
    }
}

/// One `m=` line of an offer with what applies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// `audio`, `video`, `application`…
    pub media: String,
    /// 0 when the offerer disables the stream.
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`…
    pub proto: String,
    /// The format tokens of the `m=` line, in the offerer's order of preference.
    pub formats: Vec<String>,
    /// The formats that are RTP payload type numbers, in the same order.
    pub payload_types: Vec<PayloadType>,
    /// The connection address (the stream's `c=`, else the session's); `None` when there is
    /// none or it is not an IP address (a host name).
    pub address: Option<IpAddr>,
    /// The stream's direction attribute, else the session's, else sendrecv.
    pub direction: Direction,
    /// `a=ptime`, in milliseconds.
    pub ptime: Option<u32>,
}

/// The `o=` line, kept to tell an unchanged re-offer (same session and version) from a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub version: String,
}

/// An SDP offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub origin: Option<Origin>,
    /// The `t=` value, which the answer repeats.
    pub timing: String,
    pub streams: Vec<Stream>,
}

/// Why a body is not SDP (400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("not SDP: the body does not begin with v=0")]
    NotSdp,
    #[error("SDP line {line} is not <type>=<value>")]
    Line { line: usize },
    #[error("SDP line {line}: an m= line is <media> <port> <proto> <formats>")]
    Media { line: usize },
    #[error("SDP line {line}: a c= line is IN IP4 or IN IP6 and an address")]
    Connection { line: usize },
}

/// Why sipdesk cannot take part in an offered session: answered 488 Not Acceptable Here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAcceptable {
    #[error("the offer has no active audio stream")]
    NoAudio,
    #[error("the offer's audio is {proto}; sipdesk speaks plain RTP/AVP only")]
    Profile { proto: String },
    #[error("the offer's audio has no codec sipdesk speaks (PCMU or PCMA): it offered {offered}")]
    NoCodec { offered: String },
    #[error("the offer's audio has no usable connection address (c=)")]
    NoAddress,
}

/// A G.711 codec under the payload type number the offer gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Codec {
    pub law: Law,
    pub payload_type: u8,
}

impl Codec {
    /// The RTP encoding name.
    pub fn name(self) -> &'static str {
        match self.law {
            Law::Mu => "PCMU",
            Law::A => "PCMA",
        }
    }
}

/// What sipdesk and the offerer agreed on: what the media side needs, and what the answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// The payload type of RFC 4733 events, when the offer has them at 8000 Hz.
    pub telephone_event: Option<u8>,
    /// Where to send RTP. Its address is unspecified (0.0.0.0) when the caller holds the call
    /// RFC 2543 style; `direction` then says not to send.
    pub remote: SocketAddr,
    /// sipdesk's direction, as the answer states it: whether it may send (play a greeting) and
    /// whether it receives (records). The caller holds the call when sipdesk may not send.
    pub direction: Direction,
    /// The packet time sipdesk sends at and asks for, in milliseconds.
    pub ptime: u32,
    /// Which of the offer's `m=` lines carries the audio.
    stream: usize,
    /// Every offered `m=` line, to reject the others in order: media, proto, first format.
    lines: Vec<(String, String, String)>,
    timing: String,
}

/// The packet time sipdesk uses.
const PTIME: u32 = 20;

/// Reads an offer. The body's bytes need not be UTF-8 (free-text lines may use another
/// charset); what negotiation reads is ASCII.
pub fn parse(body: &[u8]) -> Result<Offer, SdpError> {
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .enumerate()
        .map(|(i, line)| (i + 1, String::from_utf8_lossy(line)))
        .filter(|(_, line)| !line.trim().is_empty())
        .peekable();
    match lines.peek() {
        Some((_, line)) if line.trim_end() == "v=0" => {}
        _ => return Err(SdpError::NotSdp),
    }
    let mut origin = None;
    let mut timing = None;
    let mut session_address = None;
    let mut session_direction = None;
    let mut streams: Vec<ParsedStream> = Vec::new();
    for (number, line) in lines {
        let (kind, value) = match line.as_bytes() {
            [kind, b'=', ..] if kind.is_ascii_alphabetic() => (*kind, &line[2..]),
            _ => return Err(SdpError::Line { line: number }),
        };
        match kind {
            b'm' => streams.push(ParsedStream::new(value, number)?),
            b'c' => {
                let address = connection(value, number)?;
                match streams.last_mut() {
                    Some(stream) => stream.address = Some(address),
                    None => session_address = Some(address),
                }
            }
            b'a' => match streams.last_mut() {
                Some(stream) => stream.attribute(value),
                None => {
                    session_direction =
                        Direction::from_attribute(value.trim()).or(session_direction);
                }
            },
            b'o' if streams.is_empty() => origin = parse_origin(value),
            b't' if timing.is_none() && streams.is_empty() => timing = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(Offer {
        origin,
        timing: timing.unwrap_or_else(|| "0 0".to_owned()),
        streams: streams
            .into_iter()
            .map(|s| s.finish(session_address, session_direction))
            .collect(),
    })
}

/// A stream while its attributes are read.
struct ParsedStream {
    media: String,
    port: u16,
    proto: String,
    formats: Vec<String>,
    /// `Some(None)`: a `c=` whose address is not an IP address.
    address: Option<Option<IpAddr>>,
    direction: Option<Direction>,
    ptime: Option<u32>,
    rtpmaps: Vec<(u8, String, u32, u32)>,
    fmtps: Vec<(u8, String)>,
}

impl ParsedStream {
    fn new(value: &str, line: usize) -> Result<ParsedStream, SdpError> {
        let mut fields = value.split_ascii_whitespace();
        let (Some(media), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(SdpError::Media { line });
        };
        // `<port>/<number of ports>` is for layered encodings; the first port is the stream's.
        let port = port.split('/').next().unwrap_or(port);
        let port = port.parse().map_err(|_| SdpError::Media { line })?;
        Ok(ParsedStream {
            media: media.to_owned(),
            port,
            proto: proto.to_owned(),
            formats: fields.map(str::to_owned).collect(),
            address: None,
            direction: None,
            ptime: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
        })
    }

    fn attribute(&mut self, value: &str) {
        let (name, value) = value.split_once(':').unwrap_or((value, ""));
        match name.trim() {
            "rtpmap" => self.rtpmaps.extend(rtpmap(value)),
            "fmtp" => self.fmtps.extend(fmtp(value)),
            "ptime" => self.ptime = value.trim().parse().ok(),
            name => self.direction = Direction::from_attribute(name).or(self.direction),
        }
    }

    fn finish(
        self,
        session_address: Option<Option<IpAddr>>,
        session_direction: Option<Direction>,
    ) -> Stream {
        let rtp = self.proto.to_ascii_uppercase().contains("RTP/");
        let payload_types = if rtp {
            self.formats
                .iter()
                .filter_map(|f| f.parse::<u8>().ok().filter(|&n| n <= 127))
                .map(|number| self.payload_type(number))
                .collect()
        } else {
            Vec::new()
        };
        Stream {
            media: self.media,
            port: self.port,
            proto: self.proto,
            formats: self.formats,
            payload_types,
            address: self.address.or(session_address).flatten(),
            direction: self
                .direction
                .or(session_direction)
                .unwrap_or(Direction::SendRecv),
            ptime: self.ptime,
        }
    }

    fn payload_type(&self, number: u8) -> PayloadType {
        let fmtp = self
            .fmtps
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, parameters)| parameters.clone());
        if let Some((_, name, clock_rate, channels)) =
            self.rtpmaps.iter().find(|(n, ..)| *n == number)
        {
            return PayloadType {
                number,
                name: Some(name.clone()),
                clock_rate: Some(*clock_rate),
                channels: *channels,
                fmtp,
            };
        }
        let (name, clock_rate, channels) = match static_payload_type(number) {
            Some((name, rate, channels)) => (Some(name.to_owned()), Some(rate), channels),
            None => (None, None, 1),
        };
        PayloadType {
            number,
            name,
            clock_rate,
            channels,
            fmtp,
        }
    }
}

/// `<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
fn rtpmap(value: &str) -> Option<(u8, String, u32, u32)> {
    let (number, encoding) = value.trim().split_once(' ')?;
    let number = number.parse().ok()?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let clock_rate = parts.next()?.parse().ok()?;
    let channels = match parts.next() {
        Some(channels) => channels.parse().ok()?,
        None => 1,
    };
    Some((number, name.to_owned(), clock_rate, channels))
}

/// `<payload type> <format parameters>`.
fn fmtp(value: &str) -> Option<(u8, String)> {
    let (number, parameters) = value.trim().split_once(' ')?;
    Some((number.parse().ok()?, parameters.trim().to_owned()))
}

/// RFC 3551's static payload types (tables 4 and 5): encoding name, clock rate, channels.
fn static_payload_type(number: u8) -> Option<(&'static str, u32, u32)> {
    Some(match number {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        25 => ("CelB", 90000, 1),
        26 => ("JPEG", 90000, 1),
        28 => ("nv", 90000, 1),
        31 => ("H261", 90000, 1),
        32 => ("MPV", 90000, 1),
        33 => ("MP2T", 90000, 1),
        34 => ("H263", 90000, 1),
        _ => return None,
    })
}

/// `IN IP4 <address>` or `IN IP6 <address>`; `Ok(None)` for a host name or an address of the
/// other family, which are valid SDP that sipdesk cannot send to.
fn connection(value: &str, line: usize) -> Result<Option<IpAddr>, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [network, family, address] = fields[..] else {
        return Err(SdpError::Connection { line });
    };
    if network != "IN" || !matches!(family, "IP4" | "IP6") {
        return Err(SdpError::Connection { line });
    }
    // Multicast addresses carry `/<ttl>` or `/<number of addresses>`.
    let address = address.split('/').next().unwrap_or(address);
    Ok(match address.parse::<IpAddr>() {
        Ok(ip @ IpAddr::V4(_)) if family == "IP4" => Some(ip),
        Ok(ip @ IpAddr::V6(_)) if family == "IP6" => Some(ip),
        _ => None,
    })
}

fn parse_origin(value: &str) -> Option<Origin> {
    let mut fields = value.split_ascii_whitespace();
    Some(Origin {
        username: fields.next()?.to_owned(),
        session_id: fields.next()?.to_owned(),
        version: fields.next()?.to_owned(),
    })
}

/// Chooses the stream, codec and events sipdesk will use for an offer (see the module docs).
pub fn negotiate(offer: &Offer) -> Result<Negotiated, NotAcceptable> {
    let mut refusal = None;
    for (index, stream) in offer.streams.iter().enumerate() {
        if !stream.media.eq_ignore_ascii_case("audio") || stream.port == 0 {
            continue;
        }
        match accept(stream) {
            Ok((codec, telephone_event, address)) => {
                // RFC 2543 hold: an unspecified address means the offerer will not receive.
                let offered = if address.is_unspecified() {
                    Direction::from_flags(stream.direction.sends(), false)
                } else {
                    stream.direction
                };
                return Ok(Negotiated {
                    codec,
                    telephone_event,
                    remote: SocketAddr::new(address, stream.port),
                    direction: offered.answer(),
                    ptime: PTIME,
                    stream: index,
                    lines: offer
                        .streams
                        .iter()
                        .map(|s| {
                            let format = s.formats.first().map_or("0", String::as_str);
                            (s.media.clone(), s.proto.clone(), format.to_owned())
                        })
                        .collect(),
                    timing: offer.timing.clone(),
                });
            }
            // The first audio stream's reason is the one to report.
            Err(reason) => refusal = refusal.or(Some(reason)),
        }
    }
    Err(refusal.unwrap_or(NotAcceptable::NoAudio))
}

fn accept(stream: &Stream) -> Result<(Codec, Option<u8>, IpAddr), NotAcceptable> {
    if !stream.proto.eq_ignore_ascii_case("RTP/AVP") {
        return Err(NotAcceptable::Profile {
            proto: stream.proto.clone(),
        });
    }
    let codec = stream.payload_types.iter().find_map(|pt| {
        let law = if pt.is("PCMU", 8000) {
            Law::Mu
        } else if pt.is("PCMA", 8000) {
            Law::A
        } else {
            return None;
        };
        Some(Codec {
            law,
            payload_type: pt.number,
        })
    });
    let Some(codec) = codec else {
        let offered: Vec<String> = stream
            .payload_types
            .iter()
            .map(|pt| pt.to_string())
            .collect();
        return Err(NotAcceptable::NoCodec {
            offered: if offered.is_empty() {
                stream.formats.join(" ")
            } else {
                offered.join(", ")
            },
        });
    };
    let address = stream.address.ok_or(NotAcceptable::NoAddress)?;
    let telephone_event = stream
        .payload_types
        .iter()
        .find(|pt| pt.is("telephone-event", 8000))
        .map(|pt| pt.number);
    Ok((codec, telephone_event, address))
}

/// The `o=` session id and version of the answers sipdesk gives in one dialog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionVersion {
    id: u64,
    version: u64,
    /// The last answer without its `o=` line, to tell whether the next one changed.
    last: Option<String>,
}

impl SessionVersion {
    /// Starts a dialog's answers; `id` should be unique (a clock reading or a random number).
    /// It is kept below 2^62 so that implementations reading it as a signed 64-bit number, and
    /// the versions that follow, are safe.
    pub fn new(id: u64) -> SessionVersion {
        let id = id & ((1 << 62) - 1);
        SessionVersion {
            id,
            version: id,
            last: None,
        }
    }

    /// The version the last answer carried.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// Writes the answer to the offer `negotiated` came from, with sipdesk's RTP at `local`. The
/// version in `o=` grows by one whenever this answer differs from the previous one.
pub fn answer(negotiated: &Negotiated, local: SocketAddr, session: &mut SessionVersion) -> String {
    let family = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let mut body = String::new();
    // `write!` into a String cannot fail.
    let _ = write!(
        body,
        "s=sipdesk\r\nc=IN {family} {ip}\r\nt={}\r\n",
        negotiated.timing
    );
    for (index, (media, proto, format)) in negotiated.lines.iter().enumerate() {
        if index != negotiated.stream {
            let _ = write!(body, "m={media} 0 {proto} {format}\r\n");
            continue;
        }
        let codec = negotiated.codec;
        let pt = codec.payload_type;
        let _ = write!(body, "m=audio {} RTP/AVP {pt}", local.port());
        if let Some(event) = negotiated.telephone_event {
            let _ = write!(body, " {event}");
        }
        let _ = write!(body, "\r\na=rtpmap:{pt} {}/8000\r\n", codec.name());
        if let Some(event) = negotiated.telephone_event {
            let _ = write!(
                body,
                "a=rtpmap:{event} telephone-event/8000\r\na=fmtp:{event} 0-15\r\n"
            );
        }
        let _ = write!(
            body,
            "a=ptime:{}\r\na={}\r\n",
            negotiated.ptime, negotiated.direction
        );
    }
    if session.last.as_ref().is_some_and(|last| *last != body) {
        session.version += 1;
    }
    let answer = format!(
        "v=0\r\no=sipdesk {} {} IN {family} {ip}\r\n{body}",
        session.id, session.version
    );
    session.last = Some(body);
    answer
}

#[cfg(test)]
mod tests;
