//! Transfers of answered calls as the proxy follows them: REFER and its NOTIFYs, connected-line
//! updates, the group's `allow_transfer`, and who is busy before, during and after.

use std::time::Duration;

use super::tests::{
    CONFIG, Harness, OPEN, caller, from_caller_in_dialog, invite, lines, pbx, respond, sent_to_pbx,
};
use crate::call::{EndedBy, Outcome};
use crate::live::AgentStatus;
use crate::routing::{AgentState, Extension};

/// The test configuration with transfers allowed in `support` (2001 ana@, 2002, 2003; wrap-up
/// 30 s).
fn allowing() -> Harness {
    let text = CONFIG.replacen(
        "wrap_up = \"30s\"",
        "wrap_up = \"30s\"\nallow_transfer = true",
        1,
    );
    Harness::with_config(OPEN, &text)
}

fn state(h: &Harness, ext: &str) -> AgentState {
    h.core
        .agents
        .state(&Extension::parse(ext).unwrap(), h.now.mono)
}

/// A queue call answered by 2001 (To tag `a1`) and acknowledged.
fn answered(h: &mut Harness, call_id: &str) {
    h.receive(
        caller(),
        &invite("100", call_id, &format!("z9hG4bK{call_id}")),
    );
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&to_agent, 200, "OK", "a1"));
    h.receive(
        caller(),
        &from_caller_in_dialog("ACK", call_id, "a1", "Max-Forwards: 70\r\n")
            .replace("CSeq: 2 ACK", "CSeq: 1 ACK"),
    );
    h.take_sent();
}

/// A request from the agent's side (the PBX leg sipdesk sent the call on) inside the dialog.
fn from_agent(method: &str, call_id: &str, cseq: u32, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:600123456@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{method}{cseq}\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:100@127.0.0.1>;tag=a1\r\nTo: <sip:600123456@127.0.0.1>;tag=caller\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:2001@127.0.0.1:5080>\r\nMax-Forwards: 70\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The REFER of a transfer to `target`, from the agent's side.
fn refer(call_id: &str, cseq: u32, target: &str) -> String {
    from_agent(
        "REFER",
        call_id,
        cseq,
        &format!("Refer-To: <sip:{target}@127.0.0.1:5080>\r\n"),
        "",
    )
}

/// The transferee's NOTIFY reporting `status_line` on the REFER with CSeq `id`.
fn notify(call_id: &str, cseq: u32, id: u32, status_line: &str) -> String {
    let body = format!("{status_line}\r\n");
    let state = if status_line.starts_with("SIP/2.0 1") {
        "active;expires=60"
    } else {
        "terminated;reason=noresource"
    };
    format!(
        "NOTIFY sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnotify{cseq}\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag=a1\r\nCall-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\nEvent: refer;id={id}\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\nMax-Forwards: 70\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends a request from the caller's side and answers it 200 at the agent's side.
fn caller_request_answered(h: &mut Harness, text: &str, start: &str) {
    h.receive(caller(), text);
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, start).to_owned();
    h.receive(pbx(), &respond(&out, 200, "OK", "a1"));
    h.take_sent();
}

/// Sends a request from the agent's side, checks it reached the caller, and answers it.
fn agent_request_answered(h: &mut Harness, text: &str, status: u16, reason: &str) {
    h.receive(pbx(), text);
    let sent = h.take_sent();
    let out = sent
        .iter()
        .find(|(p, _)| p.addr == caller())
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| panic!("not sent on to the caller: {:?}", lines(&sent)));
    let answer = respond(&out, status, reason, "caller").replace(
        "Contact: <sip:2001@127.0.0.1:5080>",
        "Contact: <sip:600123456@127.0.0.1:5070>",
    );
    h.receive(caller(), &answer);
    h.take_sent();
}

/// The agent's BYE, after a blind transfer.
fn agent_hangs_up(h: &mut Harness, call_id: &str, cseq: u32) {
    agent_request_answered(h, &from_agent("BYE", call_id, cseq, "", ""), 200, "OK");
}

#[test]
fn a_refer_completed_by_a_notify_200_hands_the_call_to_the_new_agent() {
    let mut h = allowing();
    answered(&mut h, "xfer");
    assert_eq!(state(&h, "2001"), AgentState::Busy);
    h.advance(Duration::from_secs(20));
    agent_request_answered(&mut h, &refer("xfer", 1, "2002"), 202, "Accepted");
    assert_eq!(
        h.events("transfer"),
        vec!["2001 transfers the call to 2002 (REFER)"]
    );
    // Trying: nothing is decided yet.
    caller_request_answered(
        &mut h,
        &notify("xfer", 2, 1, "SIP/2.0 100 Trying"),
        "NOTIFY ",
    );
    assert_eq!(state(&h, "2001"), AgentState::Busy);
    assert_eq!(state(&h, "2002"), AgentState::Available);
    h.advance(Duration::from_secs(5));
    caller_request_answered(&mut h, &notify("xfer", 3, 1, "SIP/2.0 200 OK"), "NOTIFY ");
    assert_eq!(
        h.events("transfer")[1],
        "2001 transferred the call to 2002 (NOTIFY 200 OK)"
    );
    // 2001 is in wrap-up from the transfer on, 2002 is on the call.
    assert_eq!(state(&h, "2001"), AgentState::WrapUp);
    assert_eq!(state(&h, "2002"), AgentState::Busy);
    let transferred_at = h.now.wall;
    // Supervisors see the same: the call is 2002's now.
    let live = h.core.live(h.now);
    assert_eq!(live.calls[0].agent.as_deref(), Some("2002"));
    let status = |ext: &str| live.agent(ext).map(|a| (a.state, a.call.is_some()));
    assert_eq!(status("2001"), Some((AgentStatus::WrapUp, false)));
    assert_eq!(status("2002"), Some((AgentStatus::OnCall, true)));
    // 2001 hangs up its leg: the PBX carries the call on without sipdesk.
    h.advance(Duration::from_secs(1));
    agent_hangs_up(&mut h, "xfer", 2);
    let records = h.records();
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(r.outcome, Outcome::Answered);
    assert_eq!(r.ended_by, Some(EndedBy::Agent));
    assert_eq!(r.agent.as_deref(), Some("2002"));
    assert_eq!(r.agent_email, None, "2002 has no e-mail");
    let legs: Vec<(&str, Option<&str>)> = r
        .agents
        .iter()
        .map(|l| (l.extension.as_str(), l.email.as_deref()))
        .collect();
    assert_eq!(
        legs,
        vec![("2001", Some("ana@example.com")), ("2002", None)]
    );
    assert_eq!(r.agents[0].from, r.answered_at.unwrap());
    assert_eq!(r.agents[0].until, transferred_at);
    assert_eq!(r.agents[1].from, transferred_at);
    assert_eq!(r.agents[1].until, r.ended_at);
    assert_eq!(r.assignee_emails(), vec!["ana@example.com"]);
    // Nobody is held past the call.
    assert_eq!(state(&h, "2002"), AgentState::WrapUp);
    assert_eq!(h.core.census().busy_agents, 0);
    h.advance(Duration::from_secs(31));
    assert_eq!(state(&h, "2001"), AgentState::Available);
    assert_eq!(state(&h, "2002"), AgentState::Available);
}

#[test]
fn without_allow_transfer_the_agents_refer_is_refused_403_and_the_call_goes_on() {
    let mut h = Harness::new(OPEN);
    answered(&mut h, "noxfer");
    h.receive(pbx(), &refer("noxfer", 1, "2002"));
    let sent = h.take_sent();
    assert_eq!(lines(&sent), vec!["SIP/2.0 403 Forbidden -> 5080"]);
    assert!(
        sent[0]
            .1
            .contains("Warning: 399 sipdesk \"group support does not allow transfers\"\r\n"),
        "{}",
        sent[0].1
    );
    assert_eq!(
        h.events("transfer"),
        vec![
            "2001 asked to transfer the call to 2002: refused (403), group support does not allow transfers"
        ]
    );
    // A connected-line update is sent on and not followed.
    agent_request_answered(
        &mut h,
        &from_agent(
            "UPDATE",
            "noxfer",
            2,
            "P-Asserted-Identity: <sip:2002@127.0.0.1>\r\n",
            "",
        ),
        200,
        "OK",
    );
    // The caller's side may still REFER: that is not an agent's transfer.
    h.receive(
        caller(),
        &from_caller_in_dialog(
            "REFER",
            "noxfer",
            "a1",
            "Refer-To: <sip:3001@127.0.0.1>\r\nMax-Forwards: 70\r\n",
        ),
    );
    assert_eq!(
        lines(&h.take_sent()),
        vec!["REFER sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    assert_eq!(state(&h, "2001"), AgentState::Busy);
    assert_eq!(state(&h, "2002"), AgentState::Available);
    agent_hangs_up(&mut h, "noxfer", 3);
    let r = h.records()[0];
    assert_eq!(r.agent.as_deref(), Some("2001"));
    assert_eq!(r.agents.len(), 1);
    assert_eq!(h.core.census().busy_agents, 0);
}

#[test]
fn a_transfer_that_fails_leaves_the_call_with_the_first_agent() {
    let mut h = allowing();
    answered(&mut h, "fail");
    agent_request_answered(&mut h, &refer("fail", 1, "2002"), 202, "Accepted");
    caller_request_answered(
        &mut h,
        &notify("fail", 2, 1, "SIP/2.0 486 Busy Here"),
        "NOTIFY ",
    );
    // A NOTIFY about another REFER (another id), or a late 200 after the failure, is not it.
    caller_request_answered(&mut h, &notify("fail", 3, 7, "SIP/2.0 200 OK"), "NOTIFY ");
    caller_request_answered(&mut h, &notify("fail", 4, 1, "SIP/2.0 200 OK"), "NOTIFY ");
    // A REFER the caller's side refuses is a failed transfer too.
    agent_request_answered(&mut h, &refer("fail", 2, "2003"), 603, "Decline");
    assert_eq!(
        h.events("transfer"),
        vec![
            "2001 transfers the call to 2002 (REFER)",
            "the transfer to 2002 failed (NOTIFY 486 Busy Here): 2001 keeps the call",
            "2001 transfers the call to 2003 (REFER)",
            "the transfer to 2003 failed (REFER answered 603): 2001 keeps the call",
        ]
    );
    assert_eq!(state(&h, "2001"), AgentState::Busy);
    assert_eq!(state(&h, "2002"), AgentState::Available);
    assert_eq!(state(&h, "2003"), AgentState::Available);
    agent_hangs_up(&mut h, "fail", 3);
    let r = h.records()[0];
    assert_eq!(r.agent.as_deref(), Some("2001"));
    assert_eq!(r.agents.len(), 1);
}

#[test]
fn a_connected_line_update_hands_the_call_to_the_agent_it_asserts() {
    let mut h = allowing();
    answered(&mut h, "pai");
    // The agent's own identity changes nothing.
    agent_request_answered(
        &mut h,
        &from_agent(
            "UPDATE",
            "pai",
            1,
            "P-Asserted-Identity: \"Ana\" <sip:2001@127.0.0.1>\r\n",
            "",
        ),
        200,
        "OK",
    );
    assert!(h.events("transfer").is_empty());
    // Asterisk bridged the caller to 2003 and says so in a re-INVITE.
    let sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";
    agent_request_answered(
        &mut h,
        &from_agent(
            "INVITE",
            "pai",
            2,
            "P-Asserted-Identity: \"Carla\" <sip:2003@127.0.0.1>\r\nContent-Type: application/sdp\r\n",
            sdp,
        ),
        200,
        "OK",
    );
    assert_eq!(
        h.events("transfer"),
        vec!["2001 transferred the call to 2003 (P-Asserted-Identity in INVITE)"]
    );
    assert_eq!(state(&h, "2001"), AgentState::WrapUp);
    assert_eq!(state(&h, "2003"), AgentState::Busy);
    // An identity that is no agent's (an extension sipdesk does not route to, a trunk's E.164
    // number) is not taken for a transfer: 2003 keeps the call.
    for (cseq, identity) in [(3, "<tel:4999>"), (4, "<tel:+34911000000>")] {
        agent_request_answered(
            &mut h,
            &from_agent(
                "UPDATE",
                "pai",
                cseq,
                &format!("P-Asserted-Identity: {identity}\r\n"),
                "",
            ),
            200,
            "OK",
        );
    }
    assert_eq!(h.events("transfer").len(), 1);
    assert_eq!(state(&h, "2003"), AgentState::Busy);
    // Freeing the first agent does not touch a call they handed on.
    assert_eq!(
        h.core.free_agent(h.now, &Extension::parse("2001").unwrap()),
        0
    );
    assert_eq!(h.core.active_calls(), 1);
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "pai", "a1", "Max-Forwards: 70\r\n")
            .replace("CSeq: 2 BYE", "CSeq: 5 BYE"),
    );
    let r = h.records()[0];
    assert_eq!(r.ended_by, Some(EndedBy::Caller));
    assert_eq!(r.agent.as_deref(), Some("2003"));
    assert_eq!(
        r.agents
            .iter()
            .map(|l| l.extension.as_str())
            .collect::<Vec<_>>(),
        vec!["2001", "2003"]
    );
    assert_eq!(r.assignee_emails(), vec!["ana@example.com"]);
    assert_eq!(h.core.census().busy_agents, 0);
}

#[test]
fn a_refer_without_subscription_is_done_when_accepted() {
    let mut h = allowing();
    answered(&mut h, "nosub");
    agent_request_answered(
        &mut h,
        &refer("nosub", 1, "2002").replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRefer-Sub: false\r\n",
        ),
        202,
        "Accepted",
    );
    // The 202 did not say Refer-Sub: false: NOTIFYs will come, so nothing is decided yet.
    assert_eq!(state(&h, "2002"), AgentState::Available);
    h.receive(
        pbx(),
        &refer("nosub", 2, "2002").replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRefer-Sub: false\r\n",
        ),
    );
    let sent = h.take_sent();
    let out = sent
        .iter()
        .find(|(p, _)| p.addr == caller())
        .map(|(_, t)| t.clone())
        .unwrap();
    let accepted = respond(&out, 202, "Accepted", "caller").replace(
        "Content-Length: 0\r\n",
        "Refer-Sub: false\r\nContent-Length: 0\r\n",
    );
    h.receive(caller(), &accepted);
    assert_eq!(state(&h, "2002"), AgentState::Busy);
    assert_eq!(
        h.events("transfer").last().unwrap(),
        "2001 transferred the call to 2002 (REFER answered 202 with Refer-Sub: false)"
    );
}

#[test]
fn a_call_that_ends_before_the_transfers_outcome_keeps_its_agent() {
    let mut h = allowing();
    answered(&mut h, "early");
    agent_request_answered(&mut h, &refer("early", 1, "2002"), 202, "Accepted");
    agent_hangs_up(&mut h, "early", 2);
    assert_eq!(
        h.events("transfer").last().unwrap(),
        "the call ended before the transfer to 2002 was known to succeed: not counted"
    );
    let r = h.records()[0];
    assert_eq!(r.agent.as_deref(), Some("2001"));
    // The NOTIFY that comes after the end changes nothing.
    h.receive(caller(), &notify("early", 2, 1, "SIP/2.0 200 OK"));
    assert_eq!(state(&h, "2002"), AgentState::Available);
    assert_eq!(h.core.census().busy_agents, 0);
}
