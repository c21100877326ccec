//! The proxy when the other side misbehaves: answers nobody acknowledges, parties that vanish
//! from an answered call, in-dialog requests for dialogs sipdesk never saw or aimed elsewhere,
//! and agents' phones that dial out without end. No agent may stay held past the call.

use std::time::Duration;

use super::tests::{
    Harness, OPEN, caller, from_caller_in_dialog, invite, lines, pbx, respond, sent_to_pbx,
};
use crate::call::{EndedBy, MissedReason, Outcome};
use crate::routing::{AgentState, Extension};
use crate::sip::peer::Peer;

/// A queue call answered by 2001 (To tag `a1`); returns the INVITE sipdesk sent it.
fn answered(h: &mut Harness, call_id: &str) -> String {
    h.receive(
        caller(),
        &invite("100", call_id, &format!("z9hG4bK{call_id}")),
    );
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&to_agent, 200, "OK", "a1"));
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 200 OK -> 5070"]);
    to_agent
}

fn ack(h: &mut Harness, call_id: &str) {
    h.receive(
        caller(),
        &from_caller_in_dialog("ACK", call_id, "a1", "Max-Forwards: 70\r\n")
            .replace("CSeq: 2 ACK", "CSeq: 1 ACK"),
    );
}

fn state(h: &Harness, ext: &str) -> AgentState {
    h.core
        .agents
        .state(&Extension::parse(ext).unwrap(), h.now.mono)
}

#[test]
fn an_answer_never_acknowledged_is_hung_up_on_both_sides_after_64_t1_and_frees_the_agent() {
    let mut h = Harness::new(OPEN);
    answered(&mut h, "noack");
    assert_eq!(state(&h, "2001"), AgentState::Busy);
    // The agent's phone retransmits its 200 meanwhile; sipdesk relays them and waits.
    h.advance(Duration::from_secs(31));
    assert!(h.records().is_empty());
    h.take_sent();
    h.advance(Duration::from_secs(2));
    let sent = h.take_sent();
    let byes = distinct(&sent, "BYE ");
    assert_eq!(byes.len(), 2, "{:?}", lines(&sent));
    // To the agent as the caller: its Contact, the caller's From, the agent's To, CSeq 2.
    let to_agent = byes.iter().find(|(p, _)| p.addr == pbx()).unwrap();
    assert!(
        to_agent
            .1
            .starts_with("BYE sip:2001@127.0.0.1:5080 SIP/2.0")
    );
    assert!(
        to_agent
            .1
            .contains("From: <sip:600123456@127.0.0.1>;tag=caller\r\n")
    );
    assert!(to_agent.1.contains("To: <sip:100@127.0.0.1>;tag=a1\r\n"));
    assert!(to_agent.1.contains("CSeq: 2 BYE\r\n"));
    // To the caller as the agent.
    let to_caller = byes.iter().find(|(p, _)| p.addr == caller()).unwrap();
    assert!(
        to_caller
            .1
            .starts_with("BYE sip:600123456@127.0.0.1:5070 SIP/2.0")
    );
    assert!(to_caller.1.contains("From: <sip:100@127.0.0.1>;tag=a1\r\n"));
    assert!(
        to_caller
            .1
            .contains("To: <sip:600123456@127.0.0.1>;tag=caller\r\n")
    );
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Missed);
    assert_eq!(records[0].reason, Some(MissedReason::NotConnected));
    assert_eq!(records[0].answered_at, None);
    // Freed at once: nobody talked, so no wrap-up.
    assert_eq!(state(&h, "2001"), AgentState::Available);
    assert_eq!(h.core.active_calls(), 0);
}

#[test]
fn an_acknowledged_answer_is_left_alone() {
    let mut h = Harness::new(OPEN);
    answered(&mut h, "acked");
    ack(&mut h, "acked");
    assert_eq!(
        lines(&h.take_sent()),
        vec!["ACK sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    h.advance(Duration::from_secs(60));
    assert!(
        !h.take_sent().iter().any(|(_, t)| t.starts_with("BYE ")),
        "no BYE for a connected call"
    );
    assert!(h.records().is_empty());
    assert_eq!(h.core.active_calls(), 1);
}

#[test]
fn three_unacknowledged_answers_do_not_keep_the_queue_from_answering() {
    let mut h = Harness::new(OPEN);
    for (n, ext) in ["2001", "2002", "2003"].iter().enumerate() {
        let id = format!("stuck{n}");
        h.receive(caller(), &invite("100", &id, &format!("z9hG4bK{id}")));
        let sent = h.take_sent();
        let to_agent = sent_to_pbx(&sent, &format!("INVITE sip:{ext}@")).to_owned();
        h.receive(pbx(), &respond(&to_agent, 200, "OK", &format!("t{n}")));
    }
    h.take_sent();
    // Every agent is held now: the next caller overflows to sales.
    h.receive(caller(), &invite("100", "next", "z9hG4bKnext"));
    assert!(sent_to_pbx(&h.take_sent(), "INVITE sip:3001@").contains("Call-ID: next"));
    h.advance(Duration::from_secs(33));
    for ext in ["2001", "2002", "2003"] {
        assert_eq!(state(&h, ext), AgentState::Available, "{ext}");
    }
    h.take_sent();
    h.receive(caller(), &invite("100", "after", "z9hG4bKafter"));
    let sent = h.take_sent();
    sent_to_pbx(&sent, "INVITE sip:200");
}

#[test]
fn the_session_check_ends_a_call_whose_caller_is_gone() {
    let mut h = Harness::with_sip(OPEN, "session_check = \"1m\"");
    answered(&mut h, "check");
    ack(&mut h, "check");
    h.take_sent();
    h.advance(Duration::from_secs(60));
    let sent = h.take_sent();
    let options: Vec<&(Peer, String)> = sent
        .iter()
        .filter(|(_, t)| t.starts_with("OPTIONS "))
        .collect();
    assert_eq!(options.len(), 2, "{:?}", lines(&sent));
    // The same CSeq as the party it stands for last used: their next request stays in order.
    let to_agent = options.iter().find(|(p, _)| p.addr == pbx()).unwrap();
    assert!(to_agent.1.contains("CSeq: 1 OPTIONS\r\n"), "{}", to_agent.1);
    let to_caller = options.iter().find(|(p, _)| p.addr == caller()).unwrap();
    // The agent answers; the caller's side says the dialog is gone.
    h.receive(pbx(), &respond_to(&to_agent.1, 200, "OK"));
    assert!(h.records().is_empty());
    h.receive(
        caller(),
        &respond_to(&to_caller.1, 481, "Call/Transaction Does Not Exist"),
    );
    let sent = h.take_sent();
    assert_eq!(distinct(&sent, "BYE ").len(), 2, "{:?}", lines(&sent));
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::Answered);
    assert_eq!(records[0].ended_by, Some(EndedBy::Lost));
    assert_eq!(state(&h, "2001"), AgentState::WrapUp);
}

#[test]
fn the_session_check_ends_a_call_whose_agent_does_not_answer() {
    let mut h = Harness::with_sip(OPEN, "session_check = \"1m\"");
    answered(&mut h, "silent");
    ack(&mut h, "silent");
    h.advance(Duration::from_secs(60));
    let sent = h.take_sent();
    let to_caller = sent
        .iter()
        .find(|(p, t)| p.addr == caller() && t.starts_with("OPTIONS "))
        .unwrap()
        .1
        .clone();
    h.receive(caller(), &respond_to(&to_caller, 200, "OK"));
    // The agent's side never answers: Timer F (64·T1).
    h.advance(Duration::from_secs(33));
    let records = h.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].ended_by, Some(EndedBy::Lost));
}

#[test]
fn a_call_past_max_call_duration_is_hung_up_on_both_phones() {
    let mut h = Harness::with_sip(OPEN, "max_call_duration = \"1m\"");
    answered(&mut h, "long");
    ack(&mut h, "long");
    h.take_sent();
    h.advance(Duration::from_secs(61));
    let sent = h.take_sent();
    let byes = distinct(&sent, "BYE ");
    assert_eq!(byes.len(), 2, "{:?}", lines(&sent));
    assert!(byes.iter().any(|(p, _)| p.addr == pbx()));
    assert!(byes.iter().any(|(p, _)| p.addr == caller()));
    assert_eq!(h.records()[0].ended_by, Some(EndedBy::MaxDuration));
}

#[test]
fn in_dialog_requests_of_unknown_dialogs_get_481_and_reach_no_one() {
    let mut h = Harness::new(OPEN);
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "nobody", "x1", "Max-Forwards: 70\r\n").replace(
            "BYE sip:2001@127.0.0.1:5080",
            "BYE sip:victim@192.0.2.7:5060;transport=tcp",
        ),
    );
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 481 Call/Transaction Does Not Exist -> 5070"]
    );
    // An ACK of no dialog gets nothing and goes nowhere.
    h.receive(
        caller(),
        &from_caller_in_dialog("ACK", "nobody", "x1", "Max-Forwards: 70\r\n"),
    );
    assert!(h.take_sent().is_empty());
}

#[test]
fn a_request_of_a_known_dialog_aimed_elsewhere_goes_to_the_call_not_there() {
    let mut h = Harness::new(OPEN);
    answered(&mut h, "aim");
    ack(&mut h, "aim");
    h.take_sent();
    h.receive(
        caller(),
        &from_caller_in_dialog("INFO", "aim", "a1", "Max-Forwards: 70\r\n").replace(
            "INFO sip:2001@127.0.0.1:5080",
            "INFO sip:victim@192.0.2.7:5060;transport=tcp",
        ),
    );
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1, "{:?}", lines(&sent));
    assert_eq!(sent[0].0.addr, pbx(), "{:?}", lines(&sent));
    assert!(
        sent[0]
            .1
            .starts_with("INFO sip:2001@127.0.0.1:5080 SIP/2.0")
    );
}

#[test]
fn an_agent_may_dial_out_at_most_max_outbound_per_agent_calls_at_once() {
    let mut h = Harness::new(OPEN);
    let outbound = |id: &str| {
        invite("+34911239613", id, &format!("z9hG4bK{id}")).replace(
            "sip:600123456@127.0.0.1>;tag=caller",
            "sip:2001@127.0.0.1>;tag=caller",
        )
    };
    h.receive(pbx(), &outbound("o1"));
    h.receive(pbx(), &outbound("o2"));
    h.take_sent();
    h.receive(pbx(), &outbound("o3"));
    let sent = h.take_sent();
    assert_eq!(lines(&sent), vec!["SIP/2.0 486 Busy Here -> 5080"]);
    assert!(
        sent[0]
            .1
            .contains("Warning: 399 sipdesk \"2001 already has 2 outbound calls\"")
    );
    assert_eq!(h.core.active_calls(), 2);
}

/// The messages starting with `start`, retransmissions left out.
fn distinct<'a>(sent: &'a [(Peer, String)], start: &str) -> Vec<&'a (Peer, String)> {
    let mut seen = std::collections::HashSet::new();
    sent.iter()
        .filter(|(_, t)| t.starts_with(start) && seen.insert(t.clone()))
        .collect()
}

/// A response to a request sipdesk sent itself.
fn respond_to(request: &str, status: u16, reason: &str) -> String {
    respond(request, status, reason, "")
}

#[test]
fn beyond_max_transactions_new_calls_get_503_with_retry_after() {
    let mut h = Harness::with_sip(OPEN, "max_transactions = 1000");
    for n in 0..1200 {
        h.receive(
            caller(),
            &invite("999", &format!("flood{n}"), &format!("z9hG4bKflood{n}")),
        );
    }
    let sent = h.take_sent();
    let refused = sent
        .iter()
        .filter(|(_, t)| t.starts_with("SIP/2.0 503 ") && t.contains("Retry-After: 5\r\n"))
        .count();
    assert_eq!(refused, 200, "{:?}", &lines(&sent)[995..1005]);
    assert_eq!(h.core.tx.len(), (1000, 0));
    // Once the flood's transactions end (Timer H, 64·T1), calls are taken again.
    h.advance(Duration::from_secs(40));
    assert_eq!(h.core.tx.len(), (0, 0));
    h.take_sent();
    h.receive(caller(), &invite("100", "normal", "z9hG4bKnormal"));
    sent_to_pbx(&h.take_sent(), "INVITE sip:2001@");
}

#[test]
fn an_admin_ends_a_stuck_call_with_bye_to_both_sides_and_frees_its_agent() {
    let mut h = Harness::new(OPEN);
    answered(&mut h, "stuck");
    ack(&mut h, "stuck");
    h.take_sent();
    let id = match h.changes_started().first() {
        Some(id) => id.clone(),
        None => panic!("no call"),
    };
    assert!(!h.core.end_call(h.now, "no-such-call"));
    assert!(h.core.end_call(h.now, &id));
    h.collect();
    let sent = h.take_sent();
    assert_eq!(distinct(&sent, "BYE ").len(), 2, "{:?}", lines(&sent));
    assert_eq!(h.records()[0].ended_by, Some(EndedBy::Admin));
    assert_eq!(state(&h, "2001"), AgentState::WrapUp);
    assert!(!h.core.end_call(h.now, &id), "already ended");
}

/// A caller's INVITE that came through a proxy upstream (Record-Route P1) to queue 100.
fn invite_via_proxy(call_id: &str) -> String {
    invite("100", call_id, &format!("z9hG4bK{call_id}")).replace(
        "Max-Forwards: 70\r\n",
        "Record-Route: <sip:192.0.2.1;lr>\r\nMax-Forwards: 70\r\n",
    )
}

#[test]
fn sipdesks_own_bye_follows_each_sides_route_set_and_cseq_from_the_early_dialog() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite_via_proxy("routes"));
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    // A proxy beyond the PBX record-routes too (P2, above sipdesk's own entry).
    let ringing = respond(&to_agent, 183, "Session Progress", "a1");
    h.receive(pbx(), &ringing);
    // The caller uses the early dialog (a PRACK with CSeq 2) before the answer.
    h.receive(
        caller(),
        &from_caller_in_dialog("PRACK", "routes", "a1", "Max-Forwards: 70\r\n"),
    );
    h.take_sent();
    let ok = respond(&to_agent, 200, "OK", "a1").replace(
        "Record-Route: <sip:127.0.0.1:5060;lr>",
        "Record-Route: <sip:198.51.100.2;lr>\r\nRecord-Route: <sip:127.0.0.1:5060;lr>",
    );
    h.receive(pbx(), &ok);
    h.take_sent();
    // No ACK: after 64·T1 sipdesk hangs up both sides.
    h.advance(Duration::from_secs(33));
    let sent = h.take_sent();
    let byes = distinct(&sent, "BYE ");
    let to_agent = byes
        .iter()
        .find(|(_, t)| t.contains("To: <sip:100@127.0.0.1>;tag=a1"))
        .unwrap();
    // Towards the agent: the downstream route (P2), the caller's next CSeq after the PRACK.
    assert!(
        to_agent.1.contains("Route: <sip:198.51.100.2;lr>\r\n"),
        "{}",
        to_agent.1
    );
    assert!(!to_agent.1.contains("192.0.2.1"), "{}", to_agent.1);
    assert!(to_agent.1.contains("CSeq: 3 BYE\r\n"), "{}", to_agent.1);
    let to_caller = byes
        .iter()
        .find(|(_, t)| t.contains("To: <sip:600123456@127.0.0.1>;tag=caller"))
        .unwrap();
    // Towards the caller: the upstream route (P1) only.
    assert!(
        to_caller.1.contains("Route: <sip:192.0.2.1;lr>\r\n"),
        "{}",
        to_caller.1
    );
    assert!(!to_caller.1.contains("198.51.100.2"), "{}", to_caller.1);
}

#[test]
fn a_target_refresh_moves_where_sipdesk_reaches_the_party() {
    let mut h = Harness::new(OPEN);
    answered(&mut h, "moved");
    ack(&mut h, "moved");
    h.take_sent();
    // The agent's phone moves (a re-INVITE from the caller answered with a new Contact).
    h.receive(
        caller(),
        &from_caller_in_dialog("INVITE", "moved", "a1", "Max-Forwards: 70\r\n"),
    );
    let sent = h.take_sent();
    let reinvite = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    let ok = respond(&reinvite, 200, "OK", "a1").replace(
        "Contact: <sip:2001@127.0.0.1:5080>",
        "Contact: <sip:2001@127.0.0.7:5090>",
    );
    h.receive(pbx(), &ok);
    h.take_sent();
    // A BYE from the caller now goes to the new target.
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "moved", "a1", "Max-Forwards: 70\r\n")
            .replace("CSeq: 2 BYE", "CSeq: 3 BYE")
            .replace("BYE sip:2001@127.0.0.1:5080", "BYE sip:2001@127.0.0.7:5090"),
    );
    let sent = h.take_sent();
    let bye = sent.iter().find(|(_, t)| t.starts_with("BYE ")).unwrap();
    assert_eq!(
        bye.0.addr,
        "127.0.0.7:5090".parse().unwrap(),
        "{:?}",
        lines(&sent)
    );
}

#[test]
fn a_bye_with_nowhere_to_go_still_ends_the_call_and_the_other_side_hears_of_it() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "nohop", "z9hG4bKnohop"));
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    // An answer without a Contact: sipdesk has no target for requests to the agent.
    let ok =
        respond(&to_agent, 200, "OK", "a1").replace("Contact: <sip:2001@127.0.0.1:5080>\r\n", "");
    h.receive(pbx(), &ok);
    ack(&mut h, "nohop");
    h.take_sent();
    // The caller's BYE names sipdesk itself: nothing to send it on to.
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "nohop", "a1", "Max-Forwards: 70\r\n")
            .replace("BYE sip:2001@127.0.0.1:5080", "BYE sip:127.0.0.1:5060"),
    );
    let sent = h.take_sent();
    assert!(
        sent.iter()
            .any(|(p, t)| p.addr == caller() && t.starts_with("SIP/2.0 200 OK")),
        "{:?}",
        lines(&sent)
    );
    // The agent's side hears of it from sipdesk (at the PBX, for want of a Contact).
    assert!(
        sent.iter()
            .any(|(p, t)| p.addr == pbx() && t.starts_with("BYE ")),
        "{:?}",
        lines(&sent)
    );
    assert_eq!(h.records()[0].ended_by, Some(EndedBy::Caller));
    assert_eq!(state(&h, "2001"), AgentState::WrapUp);
}

#[test]
fn at_max_transactions_the_bye_of_a_call_in_progress_still_gets_through() {
    let mut h = Harness::with_sip(OPEN, "max_transactions = 1000");
    answered(&mut h, "busy");
    ack(&mut h, "busy");
    for n in 0..1200 {
        h.receive(
            caller(),
            &invite("999", &format!("flood{n}"), &format!("z9hG4bKflood{n}")),
        );
    }
    h.take_sent();
    h.receive(
        caller(),
        &from_caller_in_dialog("BYE", "busy", "a1", "Max-Forwards: 70\r\n"),
    );
    let sent = h.take_sent();
    assert!(
        sent.iter()
            .any(|(p, t)| p.addr == pbx() && t.starts_with("BYE ")),
        "{:?}",
        lines(&sent)
    );
    assert_eq!(h.records()[0].ended_by, Some(EndedBy::Caller));
}

#[test]
fn after_a_restart_the_bye_of_an_interrupted_call_reaches_the_pbx_and_nothing_else() {
    let mut h = Harness::new(OPEN);
    h.core
        .remember_interrupted(h.now, vec!["before-restart".to_owned()]);
    let bye = |call_id: &str| {
        from_caller_in_dialog("BYE", call_id, "a1", "Max-Forwards: 70\r\n").replace(
            "BYE sip:2001@127.0.0.1:5080",
            "BYE sip:2001@192.0.2.9:5060;transport=tcp",
        )
    };
    h.receive(caller(), &bye("before-restart"));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1, "{:?}", lines(&sent));
    assert_eq!(sent[0].0.addr, pbx());
    assert!(
        sent[0]
            .1
            .starts_with("BYE sip:2001@192.0.2.9:5060;transport=tcp")
    );
    h.receive(caller(), &bye("never-seen"));
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 481 Call/Transaction Does Not Exist -> 5070"]
    );
}

#[test]
fn an_admin_frees_an_agent_ringing_moves_the_call_on_talking_ends_it() {
    let mut h = Harness::new(OPEN);
    answered(&mut h, "talking");
    ack(&mut h, "talking");
    h.take_sent();
    assert_eq!(
        h.core.free_agent(h.now, &Extension::parse("2001").unwrap()),
        1
    );
    h.collect();
    assert_eq!(h.records()[0].ended_by, Some(EndedBy::Admin));
    // A call ringing 2002 moves on to 2003.
    h.receive(caller(), &invite("100", "ringing", "z9hG4bKringing"));
    let sent = h.take_sent();
    sent_to_pbx(&sent, "INVITE sip:2002@");
    assert_eq!(
        h.core.free_agent(h.now, &Extension::parse("2002").unwrap()),
        1
    );
    h.collect();
    h.advance(Duration::from_secs(2));
    let sent = h.take_sent();
    sent_to_pbx(&sent, "INVITE sip:2003@");
    assert_eq!(state(&h, "2002"), AgentState::Available);
}
