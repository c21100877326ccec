use std::net::SocketAddr;

use super::*;
use crate::call::{CallRecord, Direction, EndedBy, MissedReason, Outcome};
use crate::routing::AgentState;
use crate::sip::wire::{Datagram, Inbound};

pub(super) const CONFIG: &str = r#"
[sip]
pbx = "127.0.0.1:5080"
trusted = ["127.0.0.1"]

[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
hours = { mon = ["09:00-18:00"] }
agents = [{ extension = "2001", email = "ana@example.com" }, { extension = "2002" }, { extension = "2003" }]
ring_timeout = "15s"
wrap_up = "30s"
overflow = [{ group = "sales", when = ["no_agents"] }]

[[groups]]
name = "sales"
queues = ["200"]
agents = [{ extension = "3001" }]
"#;

/// Monday 2026-11-23 10:00 in Madrid.
pub(super) const OPEN: &str = "2026-11-23T09:00:00Z";
pub(super) const CLOSED: &str = "2026-11-23T20:00:00Z";

pub(super) fn caller() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

pub(super) fn pbx() -> SocketAddr {
    "127.0.0.1:5080".parse().unwrap()
}

pub(super) struct Harness {
    pub(super) core: Core,
    pub(super) now: Now,
    sent: Vec<(Peer, String)>,
    pub(super) changes: Vec<Change>,
    /// What the proxy asked of media sessions.
    pub(super) media: Vec<MediaOrder>,
    /// Claims asked of the database, and holds told it (instances sharing agents).
    pub(super) claims: Vec<Claim>,
    pub(super) holds: Vec<(Extension, Hold, u64)>,
    /// The PBX's answers to texts sent for helpdesk replies.
    pub(super) texts: Vec<(String, Option<String>)>,
}

impl Harness {
    pub(super) fn new(at: &str) -> Harness {
        Harness::with_sip(at, "")
    }

    /// With more `[sip]` settings.
    pub(super) fn with_sip(at: &str, sip: &str) -> Harness {
        let text = CONFIG.replace(
            "trusted = [\"127.0.0.1\"]",
            &format!("trusted = [\"127.0.0.1\"]\n{sip}"),
        );
        Harness::with_config(at, &text)
    }

    /// With a whole configuration of its own (the PBX and listening addresses as in [`CONFIG`]).
    pub(super) fn with_config(at: &str, text: &str) -> Harness {
        Harness::with_media(at, text, None)
    }

    /// With a configuration and where voicemail sessions would run.
    pub(super) fn with_media(at: &str, text: &str, media: Option<MediaPlace>) -> Harness {
        let config = Arc::new(Config::from_toml(text, "test.toml").unwrap());
        let local = Local {
            host: "127.0.0.1".into(),
            port: 5060,
        };
        let mut settings = ProxySettings::new(
            &config,
            local,
            vec!["127.0.0.1:5060".parse().unwrap()],
            pbx(),
        );
        settings.media = media;
        Harness {
            core: Core::new(
                settings,
                config.clone(),
                crate::sip::policy::SharedPolicy::new(config.sip.policy(pbx().ip())),
                HashMap::new(),
                &[],
            ),
            now: Now {
                mono: Instant::now(),
                wall: at.parse().unwrap(),
            },
            sent: Vec::new(),
            changes: Vec::new(),
            media: Vec::new(),
            claims: Vec::new(),
            holds: Vec::new(),
            texts: Vec::new(),
        }
    }

    pub(super) fn collect(&mut self) {
        for output in self.core.outputs() {
            match output {
                Output::Send { peer, bytes } => self
                    .sent
                    .push((peer, String::from_utf8_lossy(&bytes).into_owned())),
                Output::Store(change) => self.changes.push(change),
                Output::Media(order) => self.media.push(order),
                Output::Claim(claim) => self.claims.push(claim),
                Output::Hold {
                    extension,
                    hold,
                    version,
                } => self.holds.push((extension, hold, version)),
                Output::TextAnswered { id, failure } => self.texts.push((id, failure)),
            }
        }
    }

    pub(super) fn receive(&mut self, from: SocketAddr, text: &str) {
        self.core.on_datagram(self.now, text.as_bytes(), from);
        self.collect();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        let until = self.now.plus(d);
        while let Some(at) = self.core.next_deadline() {
            if at > until.mono {
                break;
            }
            let step = at.saturating_duration_since(self.now.mono);
            self.now = self.now.plus(step);
            self.core.poll(self.now);
            self.collect();
        }
        self.now = until;
        self.core.poll(self.now);
        self.collect();
    }

    /// Messages sent since the last call, as (peer, text).
    pub(super) fn take_sent(&mut self) -> Vec<(Peer, String)> {
        std::mem::take(&mut self.sent)
    }

    /// The ids of the calls started so far.
    pub(super) fn changes_started(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::CallStarted(s) => Some(s.id.clone()),
                _ => None,
            })
            .collect()
    }

    /// The call events stored so far of one kind, by detail.
    pub(super) fn events(&self, kind: &str) -> Vec<String> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::Event(e) if e.kind == kind => Some(e.detail.clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn records(&self) -> Vec<&CallRecord> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::CallEnded(r) => Some(r.as_ref()),
                _ => None,
            })
            .collect()
    }
}

pub(super) fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

pub(super) fn lines(sent: &[(Peer, String)]) -> Vec<String> {
    sent.iter()
        .map(|(p, t)| format!("{} -> {}", first_line(t), p.addr.port()))
        .collect()
}

pub(super) fn invite(queue: &str, call_id: &str, branch: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:{queue}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:{queue}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:600123456@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The agent's response to a request sipdesk sent it.
pub(super) fn respond(request_text: &str, status: u16, reason: &str, tag: &str) -> String {
    let Ok(Datagram::Message(Inbound::Request(request))) = wire::read_datagram(
        request_text.as_bytes(),
        &crate::sip::wire::Limits::default(),
    ) else {
        panic!("sipdesk sent an invalid request:\n{request_text}");
    };
    let mut response = request.response(status, reason, tag);
    if (200..300).contains(&status) {
        response
            .headers
            .push(message::header("Contact", "<sip:2001@127.0.0.1:5080>"));
        for header in request.message.headers.iter() {
            if matches!(header, rsip::Header::RecordRoute(_)) {
                response.headers.push(header.clone());
            }
        }
    }
    String::from_utf8(message::encode_response(&response)).unwrap()
}

/// The request with this first line among those sent to the PBX.
pub(super) fn sent_to_pbx<'a>(sent: &'a [(Peer, String)], start: &str) -> &'a str {
    sent.iter()
        .find(|(p, t)| p.addr == pbx() && t.starts_with(start))
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| {
            panic!(
                "nothing starting {start:?} sent to the PBX: {:?}",
                lines(sent)
            )
        })
}

#[test]
fn an_answered_call_is_forwarded_record_routed_and_recorded() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "c1", "z9hG4bKc1"));
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec![
            "SIP/2.0 100 Trying -> 5070",
            "INVITE sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"
        ]
    );
    let to_agent = sent[1].1.clone();
    assert!(
        to_agent.contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsd"),
        "{to_agent}"
    );
    assert!(
        to_agent.contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc1\r\n"),
        "{to_agent}"
    );
    assert!(
        to_agent.contains("\r\nRecord-Route: <sip:127.0.0.1:5060;lr>\r\n"),
        "{to_agent}"
    );
    assert!(to_agent.contains("\r\nMax-Forwards: 69\r\n"), "{to_agent}");
    assert!(
        to_agent.ends_with("m=audio 6000 RTP/AVP 0\r\n"),
        "the SDP goes along"
    );

    h.receive(pbx(), &respond(&to_agent, 180, "Ringing", "agent"));
    h.receive(pbx(), &respond(&to_agent, 200, "OK", "agent"));
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec!["SIP/2.0 180 Ringing -> 5070", "SIP/2.0 200 OK -> 5070"]
    );
    assert!(
        !sent[1].1.contains("z9hG4bKsd"),
        "sipdesk's Via is removed: {}",
        sent[1].1
    );
    assert!(
        sent[1].1.contains("Record-Route: <sip:127.0.0.1:5060;lr>"),
        "{}",
        sent[1].1
    );

    let ack = "ACK sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack1\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag=agent\r\nCall-ID: c1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    h.receive(caller(), ack);
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec!["ACK sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    assert!(
        !sent[0].1.contains("Route:"),
        "sipdesk's own Route is removed: {}",
        sent[0].1
    );

    h.advance(Duration::from_secs(60));
    let bye = "BYE sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye1\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag=agent\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    h.receive(caller(), bye);
    let sent = h.take_sent();
    let bye_out = sent_to_pbx(&sent, "BYE ");
    h.receive(pbx(), &respond(bye_out, 200, "OK", "agent"));
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);

    let records = h.records();
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(r.outcome, Outcome::Answered);
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.agent.as_deref(), Some("2001"));
    assert_eq!(r.agent_email.as_deref(), Some("ana@example.com"));
    assert_eq!(r.caller, "+34600123456");
    assert_eq!(r.queue.as_deref(), Some("100"));
    assert_eq!(r.group.as_deref(), Some("support"));
    assert_eq!(r.ended_by, Some(EndedBy::Caller));
    assert_eq!(r.talk_seconds(), 60.0);
    assert!(!r.out_of_hours);
}

#[test]
fn no_answer_cancels_the_agent_and_rings_the_next_one_once_the_cancel_is_confirmed() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "c2", "z9hG4bKc2"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 180, "Ringing", "a1"));
    h.take_sent();
    h.advance(Duration::from_secs(15));
    assert_eq!(
        lines(&h.take_sent()),
        vec!["CANCEL sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    // The first agent confirms: its 487 is acknowledged hop by hop, then the next agent rings.
    h.receive(pbx(), &respond(&first, 487, "Request Terminated", "a1"));
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec![
            "ACK sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080",
            "INVITE sip:2002@127.0.0.1:5080 SIP/2.0 -> 5080"
        ]
    );
    let second = sent_to_pbx(&sent, "INVITE sip:2002@").to_owned();
    h.receive(pbx(), &respond(&second, 200, "OK", "a2"));
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    let events: Vec<String> = h
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Event(e) => Some(format!("{}: {}", e.kind, e.detail)),
            _ => None,
        })
        .collect();
    assert!(
        events.contains(&"no_answer: 2001: no answer after 15s".to_owned()),
        "{events:#?}"
    );
}

#[test]
fn a_cancel_never_confirmed_delays_the_next_agent_by_two_t1_only() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "c2b", "z9hG4bKc2b"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 180, "Ringing", "a1"));
    h.advance(Duration::from_secs(15));
    h.take_sent();
    h.advance(Duration::from_millis(999));
    assert!(
        !lines(&h.take_sent())
            .iter()
            .any(|l| l.starts_with("INVITE"))
    );
    h.advance(Duration::from_millis(1));
    assert!(
        lines(&h.take_sent())
            .contains(&"INVITE sip:2002@127.0.0.1:5080 SIP/2.0 -> 5080".to_owned())
    );
}

#[test]
fn an_agent_answering_just_as_the_cancel_goes_out_takes_the_call() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "c2c", "z9hG4bKc2c"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 180, "Ringing", "a1"));
    h.advance(Duration::from_secs(15));
    h.take_sent();
    h.receive(pbx(), &respond(&first, 200, "OK", "a1"));
    let sent = lines(&h.take_sent());
    assert_eq!(
        sent,
        vec!["SIP/2.0 200 OK -> 5070"],
        "relayed, and nobody else rung"
    );
    h.advance(Duration::from_secs(2));
    assert!(
        !lines(&h.take_sent())
            .iter()
            .any(|l| l.starts_with("INVITE"))
    );
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn a_busy_agent_is_skipped_for_the_next_one() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "c3", "z9hG4bKc3"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 486, "Busy Here", "a1"));
    assert_eq!(
        lines(&h.take_sent()),
        vec![
            "ACK sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080",
            "INVITE sip:2002@127.0.0.1:5080 SIP/2.0 -> 5080"
        ]
    );
}

#[test]
fn the_caller_hanging_up_while_ringing_is_an_abandoned_call() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "c4", "z9hG4bKc4"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 180, "Ringing", "a1"));
    h.take_sent();
    h.receive(caller(), &cancel_from_caller("c4", "z9hG4bKc4"));
    let mut got = lines(&h.take_sent());
    got.sort();
    assert_eq!(
        got,
        vec![
            "CANCEL sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080",
            "SIP/2.0 200 OK -> 5070",
            "SIP/2.0 487 Request Terminated -> 5070",
        ]
    );
    let r = h.records()[0];
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Missed, Some(MissedReason::Abandoned))
    );
}

#[test]
fn two_concurrent_calls_never_ring_the_same_agent() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "c5", "z9hG4bKc5"));
    h.receive(caller(), &invite("100", "c6", "z9hG4bKc6"));
    h.receive(caller(), &invite("100", "c7", "z9hG4bKc7"));
    h.receive(caller(), &invite("100", "c8", "z9hG4bKc8"));
    let invites: Vec<String> = lines(&h.take_sent())
        .into_iter()
        .filter(|l| l.starts_with("INVITE"))
        .collect();
    assert_eq!(
        invites,
        vec![
            "INVITE sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080",
            "INVITE sip:2002@127.0.0.1:5080 SIP/2.0 -> 5080",
            "INVITE sip:2003@127.0.0.1:5080 SIP/2.0 -> 5080",
            // Everyone in support is busy: the fourth call overflows to sales.
            "INVITE sip:3001@127.0.0.1:5080 SIP/2.0 -> 5080",
        ]
    );
}

#[test]
fn an_agent_is_in_wrap_up_after_a_call() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "w1", "z9hG4bKw1"));
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&to_agent, 200, "OK", "agent"));
    h.take_sent();
    let bye = "BYE sip:600123456@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKbyew\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:100@127.0.0.1>;tag=agent\r\nTo: <sip:600123456@127.0.0.1>;tag=caller\r\nCall-ID: w1\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    h.receive(pbx(), bye);
    assert_eq!(
        lines(&h.take_sent()),
        vec!["BYE sip:600123456@127.0.0.1:5070 SIP/2.0 -> 5070"]
    );
    assert_eq!(h.records()[0].ended_by, Some(EndedBy::Agent));
    // 2001 is in wrap-up for 30 s: the next call starts after it anyway (round-robin), and a
    // call 10 s later skips 2001 even when its turn comes round.
    h.receive(caller(), &invite("100", "w2", "z9hG4bKw2"));
    assert!(
        lines(&h.take_sent())
            .contains(&"INVITE sip:2002@127.0.0.1:5080 SIP/2.0 -> 5080".to_owned())
    );
    let ext = Extension::parse("2001").unwrap();
    assert_eq!(h.core.agents.state(&ext, h.now.mono), AgentState::WrapUp);
    h.advance(Duration::from_secs(31));
    assert_eq!(h.core.agents.state(&ext, h.now.mono), AgentState::Available);
}

#[test]
fn out_of_hours_is_refused_480_and_recorded_missed() {
    let mut h = Harness::new(CLOSED);
    h.receive(caller(), &invite("100", "c9", "z9hG4bKc9"));
    assert_eq!(
        lines(&h.take_sent()),
        vec![
            "SIP/2.0 100 Trying -> 5070",
            "SIP/2.0 480 Temporarily Unavailable -> 5070"
        ]
    );
    let r = h.records()[0];
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Missed, Some(MissedReason::OutOfHours))
    );
    assert!(r.out_of_hours);
    assert!(
        r.explanation
            .iter()
            .any(|l| l.starts_with("support: closed (Monday 2026-11-23 21:00")),
        "{:?}",
        r.explanation
    );
}

#[test]
fn nobody_answering_anywhere_ends_in_480_no_answer() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("200", "c10", "z9hG4bKc10"));
    h.take_sent();
    h.advance(Duration::from_secs(16));
    let sent = h.take_sent();
    assert!(
        lines(&sent).contains(&"SIP/2.0 480 Temporarily Unavailable -> 5070".to_owned()),
        "{:?}",
        lines(&sent)
    );
    let r = h.records()[0];
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Missed, Some(MissedReason::NoAnswer))
    );
}

#[test]
fn untrusted_sources_get_403_and_nothing_is_forwarded() {
    let mut h = Harness::new(OPEN);
    h.receive(
        "10.9.9.9:5060".parse().unwrap(),
        &invite("100", "u1", "z9hG4bKu1"),
    );
    let sent = h.take_sent();
    assert_eq!(lines(&sent), vec!["SIP/2.0 403 Forbidden -> 5060"]);
    assert!(h.changes.is_empty());
}

#[test]
fn untrusted_answers_are_rate_limited() {
    let mut h = Harness::new(OPEN);
    for i in 0..50 {
        h.receive(
            "10.9.9.9:5060".parse().unwrap(),
            &invite("100", &format!("u{i}"), &format!("z9hG4bKu{i}")),
        );
    }
    assert_eq!(
        h.take_sent().len(),
        20,
        "at most untrusted_rate answers a second"
    );
}

#[test]
fn options_max_forwards_zero_and_unknown_queues() {
    let mut h = Harness::new(OPEN);
    let options = "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo1\r\nFrom: <sip:pbx@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    h.receive(caller(), options);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    h.receive(
        caller(),
        &options
            .replace("Max-Forwards: 70", "Max-Forwards: 0")
            .replace("z9hG4bKo1", "z9hG4bKo2"),
    );
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 483 Too Many Hops -> 5070"]
    );
    h.receive(caller(), &invite("999", "n1", "z9hG4bKn1"));
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 404 Not Found -> 5070"]);
    // Stopping: probes learn it as new calls do, so they go to another instance.
    h.core.drain(h.now);
    h.receive(caller(), &options.replace("z9hG4bKo1", "z9hG4bKo3"));
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec!["SIP/2.0 503 Service Unavailable -> 5070"]
    );
    assert!(
        sent[0].1.contains("\r\nRetry-After: 30\r\n"),
        "{}",
        sent[0].1
    );
}

#[test]
fn a_retransmitted_invite_starts_no_second_call() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "r1", "z9hG4bKr1"));
    h.take_sent();
    h.receive(caller(), &invite("100", "r1", "z9hG4bKr1"));
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 100 Trying -> 5070"],
        "answered with the last response"
    );
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn an_outbound_call_from_an_agent_goes_to_the_pbx_and_is_recorded() {
    let mut h = Harness::new(OPEN);
    let text = invite("+34911239613", "o9", "z9hG4bKo9").replace(
        "<sip:600123456@127.0.0.1>;tag=caller",
        "<sip:2002@127.0.0.1>;tag=caller",
    );
    h.receive(pbx(), &text);
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, "INVITE sip:+34911239613@127.0.0.1:5080").to_owned();
    h.receive(pbx(), &respond(&out, 486, "Busy Here", "far"));
    let sent = lines(&h.take_sent());
    assert!(
        sent.contains(&"SIP/2.0 486 Busy Here -> 5080".to_owned()),
        "{sent:?}"
    );
    let r = h.records()[0];
    assert_eq!(r.direction, Direction::Outbound);
    assert_eq!(r.call_type(), crate::call::CallType::OutboundUnanswered);
    assert_eq!(r.agent.as_deref(), Some("2002"));
    assert_eq!(r.callee, "+34911239613");
}

#[test]
fn a_request_that_comes_back_unchanged_is_a_loop() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "l1", "z9hG4bKl1"));
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE").to_owned();
    // The PBX sends it back to queue 100 unchanged: the same Request-URI as sipdesk received.
    let looped = to_agent.replacen(
        "INVITE sip:2001@127.0.0.1:5080",
        "INVITE sip:100@127.0.0.1:5060",
        1,
    );
    let looped = looped.replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKpbx\r\nVia: ",
        1,
    );
    h.receive(pbx(), &looped);
    assert!(lines(&h.take_sent()).contains(&"SIP/2.0 482 Loop Detected -> 5080".to_owned()));
}

#[test]
fn unsupported_extensions_are_refused_420() {
    let mut h = Harness::new(OPEN);
    let text = invite("100", "x1", "z9hG4bKx1").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRequire: 100rel, timer\r\n",
    );
    h.receive(caller(), &text);
    let sent = h.take_sent();
    assert_eq!(lines(&sent), vec!["SIP/2.0 420 Bad Extension -> 5070"]);
    assert!(sent[0].1.contains("Unsupported: 100rel, timer\r\n"));
}

pub(super) fn cancel_from_caller(call_id: &str, branch: &str) -> String {
    format!(
        "CANCEL sip:100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A request from the caller inside the dialog with the agent whose To tag is `agent_tag`.
pub(super) fn from_caller_in_dialog(
    method: &str,
    call_id: &str,
    agent_tag: &str,
    extra: &str,
) -> String {
    format!(
        "{method} sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{method}{agent_tag}\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag={agent_tag}\r\nCall-ID: {call_id}\r\nCSeq: 2 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn an_answer_after_the_callers_cancel_is_still_forwarded_so_the_caller_can_hang_it_up() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "late", "z9hG4bKlate"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 180, "Ringing", "a1"));
    h.receive(caller(), &cancel_from_caller("late", "z9hG4bKlate"));
    let sent = lines(&h.take_sent());
    assert!(
        sent.contains(&"SIP/2.0 487 Request Terminated -> 5070".to_owned()),
        "{sent:?}"
    );
    // The agent picked up as the CANCEL crossed: the caller gets that 2xx (RFC 3261 §16.7
    // step 10), acknowledges it and sends BYE, both through sipdesk.
    let ok = respond(&first, 200, "OK", "a1");
    h.receive(pbx(), &ok);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    h.advance(Duration::from_millis(500));
    h.take_sent();
    h.receive(pbx(), &ok);
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 200 OK -> 5070"],
        "a retransmission too"
    );
    h.receive(
        caller(),
        &from_caller_in_dialog("ACK", "late", "a1", "Max-Forwards: 70\r\n")
            .replace("CSeq: 2 ACK", "CSeq: 1 ACK"),
    );
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "late", "a1", "Max-Forwards: 70\r\n"),
    );
    assert_eq!(
        lines(&h.take_sent()),
        vec![
            "ACK sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080",
            "BYE sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"
        ]
    );
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].outcome,
        Outcome::Missed,
        "the caller had hung up"
    );
}

#[test]
fn a_second_dialog_from_a_late_answer_ends_without_ending_the_call() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "two", "z9hG4bKtwo"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 180, "Ringing", "a1"));
    // 2001 does not answer in 15 s: cancelled, and 2002 rings.
    h.advance(Duration::from_secs(16));
    let sent = h.take_sent();
    let second = sent_to_pbx(&sent, "INVITE sip:2002@").to_owned();
    h.receive(pbx(), &respond(&second, 200, "OK", "a2"));
    // 2001's phone answered anyway before the CANCEL reached it: a second dialog.
    h.receive(pbx(), &respond(&first, 200, "OK", "a1"));
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 200 OK -> 5070", "SIP/2.0 200 OK -> 5070"],
        "both answers reach the caller (RFC 3261 §16.7 step 10)"
    );
    // The caller hangs up the dialog it did not want: the call with 2002 goes on.
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "two", "a1", "Max-Forwards: 70\r\n"),
    );
    assert!(h.records().is_empty(), "{:?}", h.records());
    assert_eq!(h.core.active_calls(), 1);
    let ext = Extension::parse("2002").unwrap();
    assert_eq!(h.core.agents.state(&ext, h.now.mono), AgentState::Busy);
    // Its own BYE ends it.
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "two", "a2", "Max-Forwards: 70\r\n"),
    );
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].agent.as_deref(), records[0].ended_by),
        (Some("2002"), Some(EndedBy::Caller))
    );
}

#[test]
fn a_retransmitted_answer_to_a_reinvite_is_relayed_again() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "re", "z9hG4bKre"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 200, "OK", "a1"));
    h.take_sent();
    h.receive(
        caller(),
        &from_caller_in_dialog("INVITE", "re", "a1", "Max-Forwards: 70\r\n"),
    );
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    let ok = respond(&out, 200, "OK", "a1");
    h.receive(pbx(), &ok);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    // The first 200 was lost on the way to the caller; the agent's phone sends it again.
    h.advance(Duration::from_millis(500));
    h.take_sent();
    h.receive(pbx(), &ok);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
}

#[test]
fn an_ack_out_of_hops_is_dropped() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "hop", "z9hG4bKhop"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 200, "OK", "a1"));
    h.take_sent();
    let ack = from_caller_in_dialog("ACK", "hop", "a1", "Max-Forwards: 0\r\n")
        .replace("CSeq: 2 ACK", "CSeq: 1 ACK");
    h.receive(caller(), &ack);
    assert!(h.take_sent().is_empty());
    h.receive(caller(), &ack.replace("Max-Forwards: 0", "Max-Forwards: 1"));
    assert_eq!(
        lines(&h.take_sent()),
        vec!["ACK sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
}

#[test]
fn require_on_an_agents_outbound_call_is_for_the_far_end() {
    let mut h = Harness::new(OPEN);
    let text = invite("+34911239613", "o10", "z9hG4bKo10")
        .replace(
            "<sip:600123456@127.0.0.1>;tag=caller",
            "<sip:2002@127.0.0.1>;tag=caller",
        )
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRequire: 100rel\r\n",
        );
    h.receive(pbx(), &text);
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, "INVITE sip:+34911239613@127.0.0.1:5080");
    assert!(out.contains("Require: 100rel\r\n"), "{out}");
    // Proxy-Require is for sipdesk, and it has no extensions.
    let text = text
        .replace("o10", "o11")
        .replace("Require: 100rel", "Proxy-Require: sec-agree");
    h.receive(pbx(), &text);
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 420 Bad Extension -> 5080"]
    );
}

#[test]
fn a_cancelled_reinvite_is_cancelled_downstream_too() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "rec", "z9hG4bKrec"));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&first, 200, "OK", "a1"));
    h.take_sent();
    let reinvite = from_caller_in_dialog("INVITE", "rec", "a1", "Max-Forwards: 70\r\n");
    h.receive(caller(), &reinvite);
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&out, 180, "Ringing", "a1"));
    h.take_sent();
    let cancel = reinvite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 2 INVITE", "CSeq: 2 CANCEL");
    h.receive(caller(), &cancel);
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec![
            "SIP/2.0 200 OK -> 5070",
            "CANCEL sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"
        ]
    );
    h.receive(pbx(), &respond(&out, 487, "Request Terminated", "a1"));
    let sent = lines(&h.take_sent());
    assert!(
        sent.contains(&"SIP/2.0 487 Request Terminated -> 5070".to_owned()),
        "{sent:?}"
    );
    assert_eq!(h.core.active_calls(), 1, "the call itself goes on");
}

/// An agent's phone dialling a feature code (`*46` away, `*47` available).
fn feature_code(code: &str, from: &str, call_id: &str, extra: &str) -> String {
    format!(
        "INVITE sip:{code}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}\r\nFrom: <sip:{from}@127.0.0.1>;tag=agent\r\nTo: <sip:{code}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from}@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// The first lines of what sipdesk sent since the last look.
fn answers(h: &mut Harness) -> Vec<String> {
    h.take_sent()
        .iter()
        .map(|(_, t)| first_line(t).to_owned())
        .collect()
}

#[test]
fn feature_codes_set_the_dialling_agent_away_and_back_with_a_final_answer_the_phone_shows() {
    let mut h = Harness::with_config(OPEN, CONFIG);
    let ext = Extension::parse("2002").unwrap();
    h.receive(caller(), &feature_code("*46", "2002", "fc1", ""));
    assert_eq!(answers(&mut h), vec!["SIP/2.0 480 Away"]);
    assert_eq!(h.core.agents.state(&ext, h.now.mono), AgentState::Away);
    assert!(h.core.live(h.now).agent("2002").unwrap().away);
    // The choice goes to the store, so it survives a restart.
    assert!(h.changes.iter().any(|c| matches!(
        c,
        Change::Agent(s) if s.extension == "2002" && s.away
    )));
    h.receive(caller(), &feature_code("*47", "2002", "fc2", ""));
    assert_eq!(answers(&mut h), vec!["SIP/2.0 480 Available"]);
    assert_eq!(h.core.agents.state(&ext, h.now.mono), AgentState::Available);
    // Not an agent of any group: refused, nothing changes.
    h.receive(caller(), &feature_code("*46", "600123456", "fc3", ""));
    assert_eq!(answers(&mut h), vec!["SIP/2.0 403 Not an agent"]);
    // sipdesk answers it itself, so an extension it does not support is refused (RFC 3261
    // §8.2.2.3) and the agent stays available.
    h.receive(
        caller(),
        &feature_code("*46", "2002", "fc4", "Require: 100rel\r\n"),
    );
    assert_eq!(answers(&mut h), vec!["SIP/2.0 420 Bad Extension"]);
    assert_eq!(h.core.agents.state(&ext, h.now.mono), AgentState::Available);
}
