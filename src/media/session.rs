//! One voicemail media session, sans I/O: the time comes in, RTP packets to send, audio to
//! record and the session's end come out. The caller's call (the proxy) creates it once sipdesk
//! has answered; the media layer owns its socket and feeds it the packets that arrive.
//!
//! - **Greeting, then a tone.** The group's greeting (converted once at load to 8 kHz in both
//!   G.711 laws, so a packet is a slice of ready bytes) goes out in 20 ms packets of 160 samples on an absolute schedule (packet *n* at
//!   start + *n*·20 ms, so pacing does not drift), then a 400 ms 1 kHz tone. Sequence numbers
//!   and timestamps start at random values and wrap; the first packet, and the first after the
//!   caller takes the call off hold, carry the marker bit (RFC 3551 §4.1). A loop that falls
//!   more than 100 ms behind starts its schedule again from now rather than sending a burst.
//! - **Recording.** Audio is recorded from the end of the tone. Packets go through a small
//!   reordering buffer keyed by extended sequence number (RFC 3550 A.1): in order they are
//!   released at once; a missing packet is waited for until [`JITTER_DEPTH`] later ones have
//!   come, then its time is filled with silence (from the RTP timestamps, so the recording lasts
//!   what the caller spoke). A late or duplicated packet is dropped. Audio that arrives during
//!   the greeting is not recorded.
//! - **The end** ([`End`]): `#` as an RFC 4733 `telephone-event` (event 11, with its end bit)
//!   or in band ([`super::dtmf`]); `silence` of quiet audio; `silence` without any packet; or
//!   `max_length` recorded. BYE and CANCEL are the call's business, not the session's: the call
//!   drops it and keeps what was recorded.
//! - **Hold.** On hold (a re-INVITE with `sendonly`/`inactive`) nothing is sent, nothing is
//!   recorded (music on hold is not a message) and the silence and no-media clocks stop; off
//!   hold, the greeting or tone goes on where it was.
//! - **Always an end.** Only audio of the negotiated codec that reaches the recording keeps the
//!   no-media clock going (keepalives, other payload types and late packets do not), and every
//!   session ends by its limit — the greeting, the tone, `max_length` and `silence`, hold
//!   included — so none holds a port past it. A new SSRC, or a sequence number that jumps more
//!   than RFC 3550's `MAX_DROPOUT` ahead or `MAX_MISORDER` behind, starts a new sequence.
//! - Nothing grows without bound: the reordering buffer holds at most [`JITTER_DEPTH`] + 1
//!   packets, and what to record leaves with each call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dtmf::PoundDetector;
use super::g711::Law;
use super::greeting::Greeting;

/// The packet time, and the samples in one packet at 8 kHz.
pub const PTIME: Duration = Duration::from_millis(20);
pub const SAMPLES_PER_PACKET: usize = 160;
/// The sample rate of G.711.
pub const RATE: u32 = 8000;
/// How many later packets may arrive before a missing one is given up on.
pub const JITTER_DEPTH: usize = 3;
/// The tone after the greeting.
const TONE: Duration = Duration::from_millis(400);
const TONE_HZ: f32 = 1000.0;
/// How far behind its schedule the sender may fall before it starts again from now.
const CATCH_UP: Duration = Duration::from_millis(100);
/// Below this RMS level (about −44 dBFS) a packet's audio counts as silence.
const SILENCE_RMS: f32 = 200.0;
/// The longest gap in the caller's timestamps filled with silence; beyond it, a jump.
const LONGEST_GAP: u32 = RATE;
/// How far ahead, and how far behind, a sequence number may jump before it is taken for a new
/// sequence (RFC 3550 A.1's values).
const MAX_DROPOUT: u64 = 3000;
const MAX_MISORDER: u64 = 100;
/// The `telephone-event` code of `#` (RFC 4733 §3.2).
const POUND: u8 = 11;

/// What the negotiation (SDP) and the configuration decided.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The negotiated codec's law.
    pub law: Law,
    /// The payload type of the audio codec.
    pub payload_type: u8,
    /// The caller's `telephone-event` payload type, when offered.
    pub telephone_event: Option<u8>,
    pub ssrc: u32,
    pub first_sequence: u16,
    pub first_timestamp: u32,
    /// Quiet (or no packets) this long ends the recording.
    pub silence: Duration,
    /// The longest recording.
    pub max_length: Duration,
}

/// Why a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The caller pressed `#`.
    Pound,
    /// `silence` of quiet audio.
    Silence,
    /// `silence` without any packet from the caller.
    NoMedia,
    /// `max_length` recorded.
    MaxLength,
}

/// What the session asks of its I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// An RTP packet for the caller.
    Send(Vec<u8>),
    /// Linear 8 kHz samples to append to the recording.
    Record(Vec<i16>),
    /// The recording is over (the call hangs up).
    Ended(End),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Playing the greeting from this sample.
    Greeting(usize),
    /// Playing the tone from this sample.
    Tone(usize),
    Recording,
    Ended,
}

/// One session.
pub struct Session {
    settings: Settings,
    greeting: Arc<Greeting>,
    phase: Phase,
    sequence: u16,
    timestamp: u32,
    /// When the next packet is due, while sending.
    next_send: Instant,
    marker: bool,
    held: bool,
    jitter: Jitter,
    /// When the recording started or was last taken off hold, for the no-media clock.
    listening_since: Instant,
    /// When audio last reached the recording (not any packet: a keepalive, another payload
    /// type or a late packet keeps nothing alive).
    last_packet: Option<Instant>,
    /// The session ends by then whatever happens (hold included): the greeting, the tone,
    /// `max_length` and `silence`.
    limit: Instant,
    /// The caller's SSRC: a new one starts a new sequence.
    ssrc: Option<u32>,
    /// The timestamp of a `#` pressed before the recording started, whose retransmitted end
    /// packets must not end it.
    early_pound: Option<u32>,
    /// Quiet samples in a row.
    quiet: usize,
    recorded: usize,
    /// Samples recorded that were not quiet: a recording without any is no message.
    voiced: usize,
    pound: PoundDetector,
    out: Vec<Action>,
}

impl Session {
    /// A session that starts playing `greeting` at `now`.
    pub fn new(now: Instant, settings: Settings, greeting: Arc<Greeting>) -> Session {
        let playing = Duration::from_millis(
            greeting.audio(settings.law).len() as u64 * 1000 / u64::from(RATE),
        );
        let limit = now + playing + TONE + settings.max_length + settings.silence;
        Session {
            sequence: settings.first_sequence,
            timestamp: settings.first_timestamp,
            settings,
            greeting,
            phase: Phase::Greeting(0),
            next_send: now,
            marker: true,
            held: false,
            jitter: Jitter::default(),
            listening_since: now,
            last_packet: None,
            limit,
            ssrc: None,
            early_pound: None,
            quiet: 0,
            recorded: 0,
            voiced: 0,
            pound: PoundDetector::default(),
            out: Vec::new(),
        }
    }

    /// Whether the recording has ended.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// How many samples were recorded.
    pub fn recorded_samples(&self) -> usize {
        self.recorded
    }

    /// How many of them were not quiet (below about −44 dBFS counts as quiet).
    pub fn voiced_samples(&self) -> usize {
        self.voiced
    }

    /// When [`Session::poll`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let next = match self.phase {
            Phase::Ended => return None,
            _ if self.held => self.limit,
            Phase::Greeting(_) | Phase::Tone(_) => self.next_send,
            Phase::Recording => {
                let heard = self
                    .last_packet
                    .map_or(self.listening_since, |at| at.max(self.listening_since));
                heard + self.settings.silence
            }
        };
        Some(next.min(self.limit))
    }

    /// Sends what is due, checks the clocks; returns what to do.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        if now >= self.limit && self.phase != Phase::Ended {
            self.finish(End::MaxLength);
            return std::mem::take(&mut self.out);
        }
        if !self.held {
            self.send_due(now);
            if self.phase == Phase::Recording {
                let heard = self
                    .last_packet
                    .map_or(self.listening_since, |at| at.max(self.listening_since));
                if now >= heard + self.settings.silence {
                    self.finish(End::NoMedia);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Puts the session on hold (the caller's re-INVITE said `sendonly` or `inactive`) or
    /// takes it off.
    pub fn set_hold(&mut self, now: Instant, held: bool) {
        if held == self.held {
            return;
        }
        self.held = held;
        if !held {
            // The schedule starts again, with the marker bit; the clocks start again.
            self.next_send = now;
            self.marker = true;
            self.listening_since = now;
            self.quiet = 0;
        }
    }

    /// A packet from the caller.
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) -> Vec<Action> {
        let Ok(packet) = rtp_rs::RtpReader::new(bytes) else {
            return Vec::new();
        };
        if self.phase == Phase::Ended || packet.version() != 2 {
            return Vec::new();
        }
        let payload_type = packet.payload_type();
        let sequence = u16::from(packet.sequence_number());
        if Some(payload_type) == self.settings.telephone_event {
            let payload = packet.payload();
            let pound = payload.first() == Some(&POUND);
            if pound && self.phase != Phase::Recording {
                // Pressed during the greeting or the tone: its end packets (sent three times)
                // must not end the recording that starts meanwhile.
                self.early_pound = Some(packet.timestamp());
            } else if self.phase == Phase::Recording
                && is_pound_end(payload)
                && self.early_pound != Some(packet.timestamp())
            {
                self.finish(End::Pound);
            }
        } else if payload_type == self.settings.payload_type
            && self.phase == Phase::Recording
            && !self.held
            && !packet.payload().is_empty()
        {
            // A new SSRC is a new sender (a phone that restarted its stream): what the
            // reordering buffer holds goes out first.
            let ssrc = packet.ssrc();
            if self.ssrc.is_some_and(|s| s != ssrc) {
                for audio in self.jitter.flush() {
                    self.record(audio);
                }
                self.jitter = Jitter::default();
            }
            self.ssrc = Some(ssrc);
            self.last_packet = Some(now);
            let released = self
                .jitter
                .insert(sequence, packet.timestamp(), packet.payload());
            for audio in released {
                self.record(audio);
                if self.phase == Phase::Ended {
                    break;
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Ends the recording now (the call ended); returns what was still held, in order.
    pub fn close(&mut self) -> Vec<Action> {
        if self.phase == Phase::Recording {
            for audio in self.jitter.flush() {
                self.record(audio);
            }
        }
        self.phase = Phase::Ended;
        std::mem::take(&mut self.out)
    }

    fn finish(&mut self, end: End) {
        if self.phase == Phase::Ended {
            return;
        }
        // What the reordering buffer still holds was spoken before the end.
        if end != End::MaxLength {
            for audio in self.jitter.flush() {
                self.record_quietly(audio);
            }
        }
        self.phase = Phase::Ended;
        self.out.push(Action::Ended(end));
    }

    /// Appends released audio, and looks for silence, `#` in band and the maximum length.
    fn record(&mut self, audio: Released) {
        let max = (self.settings.max_length.as_millis() as usize) * (RATE as usize) / 1000;
        let mut samples = self.decode(audio);
        let room = max.saturating_sub(self.recorded);
        let full = samples.len() >= room;
        samples.truncate(room);
        if self.pound.feed(&samples) {
            self.push_samples(samples);
            self.finish(End::Pound);
            return;
        }
        if rms(&samples) < SILENCE_RMS {
            self.quiet += samples.len();
        } else {
            self.quiet = 0;
            self.voiced += samples.len();
        }
        self.push_samples(samples);
        let silence = (self.settings.silence.as_millis() as usize) * (RATE as usize) / 1000;
        if full {
            self.finish(End::MaxLength);
        } else if self.quiet >= silence {
            self.finish(End::Silence);
        }
    }

    /// Appends audio without looking for an end (the end is already known).
    fn record_quietly(&mut self, audio: Released) {
        let max = (self.settings.max_length.as_millis() as usize) * (RATE as usize) / 1000;
        let mut samples = self.decode(audio);
        samples.truncate(max.saturating_sub(self.recorded));
        self.push_samples(samples);
    }

    fn decode(&self, audio: Released) -> Vec<i16> {
        match audio {
            Released::Silence(n) => vec![0; n],
            Released::Audio(bytes) => bytes.iter().map(|b| self.settings.law.decode(*b)).collect(),
        }
    }

    fn push_samples(&mut self, samples: Vec<i16>) {
        if samples.is_empty() {
            return;
        }
        self.recorded += samples.len();
        match self.out.last_mut() {
            Some(Action::Record(held)) => held.extend(samples),
            _ => self.out.push(Action::Record(samples)),
        }
    }

    /// Sends every packet due by `now`.
    fn send_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.next_send) > CATCH_UP {
            self.next_send = now;
        }
        while matches!(self.phase, Phase::Greeting(_) | Phase::Tone(_)) && self.next_send <= now {
            let payload = self.next_frame();
            let packet = rtp_rs::RtpPacketBuilder::new()
                .payload_type(self.settings.payload_type)
                .ssrc(self.settings.ssrc)
                .sequence(rtp_rs::Seq::from(self.sequence))
                .timestamp(self.timestamp)
                .marked(self.marker)
                .payload(&payload)
                .build();
            if let Ok(packet) = packet {
                self.out.push(Action::Send(packet));
            }
            self.marker = false;
            self.sequence = self.sequence.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
            self.next_send += PTIME;
            if self.phase == Phase::Recording {
                self.listening_since = now;
                self.quiet = 0;
            }
        }
    }

    /// The next 160 samples of the greeting or the tone, encoded (the last frame padded with
    /// silence); moves the phase on.
    fn next_frame(&mut self) -> Vec<u8> {
        let law = self.settings.law;
        let mut frame = Vec::with_capacity(SAMPLES_PER_PACKET);
        match self.phase {
            Phase::Greeting(at) => {
                let audio = self.greeting.audio(law);
                let end = (at + SAMPLES_PER_PACKET).min(audio.len());
                frame.extend_from_slice(&audio[at.min(end)..end]);
                self.phase = if end >= audio.len() {
                    Phase::Tone(0)
                } else {
                    Phase::Greeting(end)
                };
            }
            Phase::Tone(at) => {
                let length = (TONE.as_millis() as usize) * (RATE as usize) / 1000;
                for n in at..(at + SAMPLES_PER_PACKET).min(length) {
                    let t = n as f32 / RATE as f32;
                    let sample = 8000.0 * (2.0 * std::f32::consts::PI * TONE_HZ * t).sin();
                    frame.push(law.encode(sample as i16));
                }
                self.phase = if at + SAMPLES_PER_PACKET >= length {
                    Phase::Recording
                } else {
                    Phase::Tone(at + SAMPLES_PER_PACKET)
                };
            }
            Phase::Recording | Phase::Ended => {}
        }
        frame.resize(SAMPLES_PER_PACKET, law.encode(0));
        frame
    }
}

/// Whether a `telephone-event` payload (RFC 4733 §2.3) is the end of a `#`.
fn is_pound_end(payload: &[u8]) -> bool {
    payload.len() >= 4 && payload[0] == POUND && payload[1] & 0x80 != 0
}

fn rms(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// Audio released in order by the reordering buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Released {
    /// A lost stretch, as this many samples of silence.
    Silence(usize),
    Audio(Vec<u8>),
}

/// Packets put back in sequence order.
#[derive(Debug, Default)]
struct Jitter {
    /// The extended sequence number released next, and the timestamp it should have.
    next: Option<(u64, u32)>,
    /// The highest extended sequence number seen.
    highest: u64,
    held: BTreeMap<u64, (u32, Vec<u8>)>,
}

impl Jitter {
    /// The extended sequence number of `sequence`: the one nearest the highest seen.
    fn extend(&self, sequence: u16) -> u64 {
        let cycle = self.highest & !0xFFFF;
        let candidates = [
            cycle.wrapping_sub(0x1_0000) | u64::from(sequence),
            cycle | u64::from(sequence),
            (cycle + 0x1_0000) | u64::from(sequence),
        ];
        candidates
            .into_iter()
            .filter(|c| *c < u64::MAX / 2)
            .min_by_key(|c| c.abs_diff(self.highest))
            .unwrap_or(u64::from(sequence))
    }

    /// Takes a packet; returns what can be released in order now.
    fn insert(&mut self, sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<Released> {
        let extended = match self.next {
            // The first packet: its cycle is the first (room below it for reordering).
            None => {
                let first = 0x1_0000 | u64::from(sequence);
                self.highest = first;
                self.next = Some((first, timestamp));
                first
            }
            Some(_) => self.extend(sequence),
        };
        let (next, _) = self.next.unwrap_or((extended, timestamp));
        if extended + MAX_MISORDER < next || extended > self.highest + MAX_DROPOUT {
            // The sender restarted its numbering (RFC 3550 A.1): what is held goes out, then
            // a new sequence starts at this packet.
            let mut out = self.release(true);
            *self = Jitter::default();
            out.extend(self.insert(sequence, timestamp, payload));
            return out;
        }
        if extended < next || self.held.contains_key(&extended) {
            return Vec::new(); // late, or a duplicate
        }
        self.highest = self.highest.max(extended);
        self.held.insert(extended, (timestamp, payload.to_vec()));
        self.release(false)
    }

    /// Everything held, in order, gaps filled.
    fn flush(&mut self) -> Vec<Released> {
        self.release(true)
    }

    fn release(&mut self, all: bool) -> Vec<Released> {
        let mut out = Vec::new();
        while let Some((&sequence, _)) = self.held.first_key_value() {
            let Some((next, next_timestamp)) = self.next else {
                break;
            };
            let waited_enough = all || self.held.len() > JITTER_DEPTH;
            if sequence != next && !waited_enough {
                break;
            }
            let Some((_, (timestamp, payload))) = self.held.pop_first() else {
                break;
            };
            if sequence != next {
                // Lost packets: their time, from the timestamps, as silence.
                let gap = timestamp.wrapping_sub(next_timestamp);
                if gap > 0 && gap <= LONGEST_GAP {
                    out.push(Released::Silence(gap as usize));
                }
            }
            self.next = Some((sequence + 1, timestamp.wrapping_add(payload.len() as u32)));
            out.push(Released::Audio(payload));
        }
        out
    }
}

#[cfg(test)]
mod tests;
