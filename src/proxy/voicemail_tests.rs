//! The SIP side of voicemail, sans I/O: sipdesk answering a call itself, its 200 OK resent
//! until the ACK, the offers it refuses, the session limit, hold, the caller's BYE and the
//! session's own end.

use super::tests::{Harness, caller, first_line, invite, lines, pbx, respond, sent_to_pbx};
use super::*;
use crate::call::{EndedBy, MissedReason, Outcome};
use crate::media::runner::{Control, Ports, Recorded};
use crate::media::session::End;

/// Closed at this time: calls go to voicemail at once (out of hours).
const CLOSED: &str = "2026-11-23T20:00:00Z";

const CONFIG: &str = r#"
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
agents = [{ extension = "2001" }]
final_action = "voicemail"
"#;

fn harness(max_sessions: usize) -> Harness {
    let place = MediaPlace {
        ip: "127.0.0.1".parse().unwrap(),
        ports: Ports::new(40_000..=40_009, max_sessions),
        directory: std::env::temp_dir(),
    };
    Harness::with_media(CLOSED, CONFIG, Some(place))
}

/// A queue call whose offer is `media` (an `m=` line and its attributes).
fn invite_offering(call_id: &str, media: &str) -> String {
    let sdp =
        format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n{media}");
    in_dialog_request("INVITE", "sip:100@127.0.0.1:5060", call_id, None, 1, &sdp)
}

/// A request from the caller (`to_tag`: inside the dialog sipdesk made).
fn in_dialog_request(
    method: &str,
    uri: &str,
    call_id: &str,
    to_tag: Option<&str>,
    cseq: u32,
    sdp: &str,
) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let content_type = if sdp.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}{method}{cseq}\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:600123456@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n{content_type}Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The To tag of a response.
fn to_tag(response: &str) -> String {
    let to = response
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("a To header");
    to.split(";tag=").nth(1).expect("a To tag").to_owned()
}

/// The call answered: its 200 OK, and the session it started.
fn answered(h: &mut Harness, call_id: &str) -> (String, u64) {
    h.receive(
        caller(),
        &invite(call_id_queue(), call_id, &format!("z9hG4bK{call_id}")),
    );
    let sent = h.take_sent();
    let ok = sent
        .iter()
        .find(|(_, t)| t.starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("no 200 OK: {:?}", lines(&sent)))
        .1
        .clone();
    let call = match h.media.last() {
        Some(MediaOrder::Start { call, .. }) => *call,
        other => panic!("no session started: {other:?}"),
    };
    (ok, call)
}

fn call_id_queue() -> &'static str {
    "100"
}

fn ack(call_id: &str, tag: &str) -> String {
    in_dialog_request(
        "ACK",
        "sip:sipdesk@127.0.0.1:5060",
        call_id,
        Some(tag),
        1,
        "",
    )
}

fn recorded(
    samples: usize,
    end: Option<End>,
) -> Result<Recorded, crate::media::runner::MediaError> {
    Ok(Recorded {
        file: (samples > 0).then(|| std::path::PathBuf::from("/var/lib/sipdesk/voicemail/x.wav")),
        samples,
        end,
    })
}

#[test]
fn sipdesk_answers_with_its_sdp_resends_until_the_ack_and_hangs_up_after_pound() {
    let mut h = harness(2);
    let (ok, call) = answered(&mut h, "v1");
    assert!(ok.contains("\r\nContent-Type: application/sdp\r\n"), "{ok}");
    assert!(
        ok.contains("\r\nContact: <sip:sipdesk@127.0.0.1:5060>\r\n"),
        "{ok}"
    );
    assert!(ok.contains("m=audio 40000 RTP/AVP 0\r\n"), "{ok}");
    assert!(
        ok.contains("a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"),
        "{ok}"
    );
    assert!(ok.contains("c=IN IP4 127.0.0.1\r\n"), "{ok}");
    let Some(MediaOrder::Start { spec, lease, .. }) = h.media.first() else {
        panic!("no session");
    };
    assert_eq!(spec.remote, "127.0.0.1:6000".parse().unwrap());
    assert_eq!(lease.port(), 40_000);
    assert_eq!(
        h.core.live(h.now).calls[0].state,
        crate::live::CallState::Voicemail
    );

    // No ACK yet: the 200 OK again after T1 (500 ms), then 1 s later.
    h.advance(Duration::from_millis(500));
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    h.advance(Duration::from_millis(1000));
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    let tag = to_tag(&ok);
    h.receive(caller(), &ack("v1", &tag));
    h.advance(Duration::from_secs(10));
    assert!(h.take_sent().is_empty(), "the ACK stops the resending");

    // The caller pressed #: sipdesk hangs up and the voicemail is recorded.
    h.core
        .on_media_ended(h.now, call, recorded(16_000, Some(End::Pound)));
    h.collect();
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec!["BYE sip:600123456@127.0.0.1:5070 SIP/2.0 -> 5070"]
    );
    assert!(
        sent[0]
            .1
            .contains(&format!("\r\nFrom: <sip:100@127.0.0.1>;tag={tag}\r\n")),
        "{}",
        sent[0].1
    );
    assert!(
        sent[0]
            .1
            .contains("\r\nTo: <sip:600123456@127.0.0.1>;tag=caller\r\n"),
        "{}",
        sent[0].1
    );
    let records = h.records();
    assert_eq!(records.len(), 1);
    let record = records[0];
    assert_eq!(record.outcome, Outcome::Voicemail);
    assert_eq!(record.reason, None);
    assert!(record.out_of_hours);
    let voicemail = record.voicemail.as_ref().unwrap();
    assert_eq!(
        (voicemail.duration_ms, voicemail.end.as_str()),
        (2000, "pound")
    );
}

#[test]
fn an_offer_without_g711_is_refused_with_488_and_missed() {
    let mut h = harness(2);
    h.receive(
        caller(),
        &invite_offering("v2", "m=audio 6000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"),
    );
    let sent = h.take_sent();
    let refusal = &sent
        .iter()
        .find(|(_, t)| !t.starts_with("SIP/2.0 100"))
        .unwrap()
        .1;
    assert_eq!(first_line(refusal), "SIP/2.0 488 Not Acceptable Here");
    assert!(
        refusal
            .contains("\r\nWarning: 304 sipdesk \"the offer's audio has no codec sipdesk speaks"),
        "{refusal}"
    );
    assert!(h.media.is_empty());
    let records = h.records();
    assert_eq!(records[0].outcome, Outcome::Missed);
    assert_eq!(records[0].reason, Some(MissedReason::OutOfHours));
}

#[test]
fn beyond_max_sessions_a_call_takes_the_reject_path() {
    let mut h = harness(1);
    let _first = answered(&mut h, "v3");
    h.receive(caller(), &invite("100", "v4", "z9hG4bKv4"));
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec![
            "SIP/2.0 100 Trying -> 5070",
            "SIP/2.0 480 Temporarily Unavailable -> 5070"
        ]
    );
    assert_eq!(h.media.len(), 1, "one session only");
    assert_eq!(h.records()[0].outcome, Outcome::Missed);
}

#[test]
fn hold_reaches_the_session_and_the_callers_bye_stops_it() {
    let mut h = harness(2);
    let (ok, call) = answered(&mut h, "v5");
    let tag = to_tag(&ok);
    h.receive(caller(), &ack("v5", &tag));
    let held = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=sendonly\r\n";
    h.receive(
        caller(),
        &in_dialog_request(
            "INVITE",
            "sip:sipdesk@127.0.0.1:5060",
            "v5",
            Some(&tag),
            2,
            held,
        ),
    );
    let sent = h.take_sent();
    let ok = &sent[0].1;
    assert_eq!(first_line(ok), "SIP/2.0 200 OK");
    assert!(ok.contains("a=recvonly\r\n"), "{ok}");
    assert!(ok.contains("o=sipdesk "), "{ok}");
    assert!(matches!(
        h.media.last(),
        Some(MediaOrder::Control {
            control: Control::Hold(true),
            ..
        })
    ));

    h.receive(
        caller(),
        &in_dialog_request("BYE", "sip:sipdesk@127.0.0.1:5060", "v5", Some(&tag), 3, ""),
    );
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    assert!(matches!(
        h.media.last(),
        Some(MediaOrder::Control {
            control: Control::Stop,
            ..
        })
    ));
    assert!(
        h.records().is_empty(),
        "recorded once the session says what it left"
    );
    // The caller left during the greeting: nothing recorded, a missed call, no BYE from sipdesk.
    h.core.on_media_ended(h.now, call, recorded(0, None));
    h.collect();
    assert!(h.take_sent().is_empty());
    let record = h.records()[0];
    assert_eq!(record.outcome, Outcome::Missed);
    assert_eq!(record.reason, Some(MissedReason::OutOfHours));
    assert_eq!(record.ended_by, Some(EndedBy::Caller));
    assert!(record.voicemail.is_none());
}

#[test]
fn without_an_ack_the_session_stops_and_sipdesk_hangs_up() {
    let mut h = harness(2);
    let (_, call) = answered(&mut h, "v6");
    h.advance(Duration::from_secs(40));
    assert!(matches!(
        h.media.last(),
        Some(MediaOrder::Control {
            control: Control::Stop,
            ..
        })
    ));
    h.take_sent();
    h.core.on_media_ended(h.now, call, recorded(8_000, None));
    h.collect();
    let sent = h.take_sent();
    assert_eq!(
        first_line(&sent[0].1),
        "BYE sip:600123456@127.0.0.1:5070 SIP/2.0"
    );
    let record = h.records()[0];
    assert_eq!(record.outcome, Outcome::Voicemail);
    assert_eq!(record.ended_by, Some(EndedBy::Lost));
}

#[test]
fn closed_action_applies_only_while_the_group_is_closed() {
    let config = CONFIG.replace(
        "final_action = \"voicemail\"",
        "final_action = \"reject\"\nclosed_action = \"voicemail\"",
    );
    let place = || MediaPlace {
        ip: "127.0.0.1".parse().unwrap(),
        ports: Ports::new(40_000..=40_009, 2),
        directory: std::env::temp_dir(),
    };
    // Closed: voicemail.
    let mut h = Harness::with_media(CLOSED, &config, Some(place()));
    h.receive(caller(), &invite("100", "v7", "z9hG4bKv7"));
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 100 Trying -> 5070", "SIP/2.0 200 OK -> 5070"]
    );
    // Open, the agent busy: the final action, reject.
    let mut h = Harness::with_media("2026-11-23T09:00:00Z", &config, Some(place()));
    h.receive(caller(), &invite("100", "v8", "z9hG4bKv8"));
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE").to_owned();
    h.receive(pbx(), &respond(&to_agent, 486, "Busy Here", "agent"));
    let sent = h.take_sent();
    assert!(
        sent.iter()
            .any(|(_, t)| first_line(t) == "SIP/2.0 480 Temporarily Unavailable"),
        "{:?}",
        lines(&sent)
    );
    assert!(h.media.is_empty());
}

#[test]
fn a_reinvites_200_is_resent_until_its_ack_and_a_codec_change_is_refused() {
    let mut h = harness(2);
    let (ok, _) = answered(&mut h, "v9");
    let tag = to_tag(&ok);
    h.receive(caller(), &ack("v9", &tag));
    let offer = |pt: &str| {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP {pt}\r\na=sendonly\r\n"
        )
    };
    // PCMA where the call runs on PCMU: refused, the session goes on as it was.
    h.receive(
        caller(),
        &in_dialog_request(
            "INVITE",
            "sip:sipdesk@127.0.0.1:5060",
            "v9",
            Some(&tag),
            2,
            &offer("8"),
        ),
    );
    let sent = h.take_sent();
    assert_eq!(first_line(&sent[0].1), "SIP/2.0 488 Not Acceptable Here");
    assert!(
        sent[0].1.contains("this call stays on PCMU"),
        "{}",
        sent[0].1
    );
    // The ACK of a non-2xx answer is hop by hop: the INVITE's own branch.
    let ack488 = in_dialog_request("ACK", "sip:sipdesk@127.0.0.1:5060", "v9", Some(&tag), 2, "")
        .replace("z9hG4bKv9ACK2", "z9hG4bKv9INVITE2");
    h.receive(caller(), &ack488);
    h.take_sent();

    // Hold: 200 OK, resent until its own ACK (CSeq 3).
    h.receive(
        caller(),
        &in_dialog_request(
            "INVITE",
            "sip:sipdesk@127.0.0.1:5060",
            "v9",
            Some(&tag),
            3,
            &offer("0"),
        ),
    );
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    h.advance(Duration::from_millis(500));
    let again = h.take_sent();
    assert_eq!(lines(&again), vec!["SIP/2.0 200 OK -> 5070"]);
    assert!(again[0].1.contains("CSeq: 3 INVITE"), "{}", again[0].1);
    h.receive(
        caller(),
        &in_dialog_request("ACK", "sip:sipdesk@127.0.0.1:5060", "v9", Some(&tag), 3, ""),
    );
    h.advance(Duration::from_secs(10));
    assert!(h.take_sent().is_empty(), "the ACK stops the resending");
}

#[test]
fn a_request_with_another_to_tag_belongs_to_no_dialog() {
    let mut h = harness(2);
    let (ok, _) = answered(&mut h, "v10");
    h.receive(caller(), &ack("v10", &to_tag(&ok)));
    h.receive(
        caller(),
        &in_dialog_request(
            "BYE",
            "sip:sipdesk@127.0.0.1:5060",
            "v10",
            Some("stranger"),
            2,
            "",
        ),
    );
    let sent = h.take_sent();
    assert_eq!(
        first_line(&sent[0].1),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
    assert!(
        !h.media.iter().any(|m| matches!(
            m,
            MediaOrder::Control {
                control: Control::Stop,
                ..
            }
        )),
        "the voicemail goes on"
    );
}

#[test]
fn while_stopping_a_call_that_would_reach_voicemail_is_rejected() {
    let mut h = harness(2);
    h.core.drain(h.now);
    h.receive(caller(), &invite("100", "v11", "z9hG4bKv11"));
    let sent = h.take_sent();
    assert!(
        lines(&sent).iter().all(|l| !l.starts_with("SIP/2.0 200")),
        "{:?}",
        lines(&sent)
    );
    assert!(h.media.is_empty());
}

#[test]
fn a_session_that_never_reports_ends_the_call_at_its_limit() {
    let mut h = harness(2);
    let (ok, _) = answered(&mut h, "v12");
    h.receive(caller(), &ack("v12", &to_tag(&ok)));
    h.take_sent();
    // Greeting (none) + 1 s + 3 min + 5 s + 30 s: nothing yet just before.
    h.advance(Duration::from_secs(215));
    assert!(h.records().is_empty());
    h.advance(Duration::from_secs(2));
    let sent = h.take_sent();
    assert!(
        lines(&sent).iter().any(|l| l.starts_with("BYE ")),
        "{:?}",
        lines(&sent)
    );
    let record = h.records()[0];
    assert_eq!(record.outcome, Outcome::Missed);
    assert_eq!(record.ended_by, Some(EndedBy::Lost));
}
