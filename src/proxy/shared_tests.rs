//! Agents shared with other instances: the proxy rings only whom the database claims, tells it
//! what it holds, hears what the others hold, and routes alone when the database is gone.

use super::tests::*;
use super::*;
use crate::routing::AgentState;

fn shared(at: &str) -> Harness {
    let mut h = Harness::new(at);
    h.core.share_agents("a", 1_000);
    h
}

fn invites(h: &mut Harness) -> Vec<String> {
    lines(&h.take_sent())
        .into_iter()
        .filter(|l| l.starts_with("INVITE"))
        .collect()
}

fn ext(text: &str) -> Extension {
    Extension::parse(text).unwrap()
}

/// Answers the last claim asked.
fn answer(h: &mut Harness, agent: Result<Option<&str>, ()>) {
    let claim = h.claims.last().expect("a claim was asked").clone();
    h.core.on_claimed(
        h.now,
        claim.call,
        claim.version,
        agent.map(|a| a.map(str::to_owned)),
    );
    h.collect();
}

/// The database says `instance` holds `extension` so.
fn heard(h: &mut Harness, extension: &str, instance: &str, hold: Hold) {
    h.core.on_remote(
        h.now,
        Remote::Hold {
            extension: extension.into(),
            instance: instance.into(),
            hold,
        },
    );
}

fn state(h: &mut Harness, extension: &str) -> AgentState {
    h.core.agents.state(&ext(extension), h.now.mono)
}

#[test]
fn only_the_agent_the_database_claims_is_rung() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s1", "z9hG4bKs1"));
    assert_eq!(
        lines(&h.take_sent()),
        vec!["SIP/2.0 100 Trying -> 5070"],
        "nobody is rung before the database answers"
    );
    assert_eq!(h.claims.len(), 1);
    let claim = &h.claims[0];
    assert_eq!(claim.group, "support");
    assert_eq!(&*claim.agents, ["2001", "2002", "2003"]);
    assert!(claim.skip.is_empty(), "{:?}", claim.skip);
    assert!(claim.version > 1_000);
    answer(&mut h, Ok(Some("2002")));
    assert_eq!(
        invites(&mut h),
        vec!["INVITE sip:2002@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    assert!(
        h.holds.is_empty(),
        "the claim itself holds the agent: {:?}",
        h.holds
    );
    assert!(
        !h.changes.iter().any(|c| matches!(c, Change::Cursor { .. })),
        "the claim moved the cursor in the database; nothing writes it after"
    );
    assert_eq!(state(&mut h, "2002"), AgentState::Busy);
}

#[test]
fn an_agent_who_does_not_answer_is_freed_and_the_next_claim_skips_them() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s2", "z9hG4bKs2"));
    answer(&mut h, Ok(Some("2001")));
    let sent = h.take_sent();
    let first = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    let claim_version = h.claims[0].version;
    h.receive(pbx(), &respond(&first, 486, "Busy Here", "a1"));
    assert_eq!(h.holds.len(), 1, "{:?}", h.holds);
    let (agent, hold, version) = &h.holds[0];
    assert_eq!((agent.as_str(), *hold), ("2001", Hold::Free));
    assert_eq!(
        *version, claim_version,
        "the release frees the claim's hold and nothing newer"
    );
    assert_eq!(h.claims.len(), 2);
    assert_eq!(h.claims[1].skip, vec!["2001"]);
    assert!(h.claims[1].version > *version);
}

#[test]
fn nobody_free_in_the_database_moves_on_to_the_overflow_then_the_final_action() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s3", "z9hG4bKs3"));
    answer(&mut h, Ok(None));
    assert_eq!(h.claims.len(), 2);
    assert_eq!(h.claims[1].group, "sales");
    assert_eq!(&*h.claims[1].agents, ["3001"]);
    answer(&mut h, Ok(None));
    let sent = lines(&h.take_sent());
    assert!(
        sent.iter().any(|l| l.starts_with("SIP/2.0 480")),
        "{sent:?}"
    );
    assert!(!sent.iter().any(|l| l.starts_with("INVITE")), "{sent:?}");
    assert_eq!(h.records()[0].outcome, crate::call::Outcome::Missed);
}

#[test]
fn without_an_answer_from_the_database_the_instance_routes_alone_for_a_while() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s4", "z9hG4bKs4"));
    answer(&mut h, Err(()));
    assert_eq!(
        invites(&mut h),
        vec!["INVITE sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"],
        "rung on what this instance knows"
    );
    // Alone: the next call asks nothing.
    h.receive(caller(), &invite("100", "s5", "z9hG4bKs5"));
    assert_eq!(h.claims.len(), 1);
    assert_eq!(
        invites(&mut h),
        vec!["INVITE sip:2002@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    // The two agents rung alone are told to the database as held.
    let told: Vec<(&str, Hold)> = h.holds.iter().map(|(e, h, _)| (e.as_str(), *h)).collect();
    assert_eq!(told, vec![("2001", Hold::Busy), ("2002", Hold::Busy)]);
    // Later, claims again.
    h.now = h.now.plus(ALONE_FOR);
    h.receive(caller(), &invite("100", "s6", "z9hG4bKs6"));
    assert_eq!(h.claims.len(), 2);
    assert_eq!(h.claims[1].skip, vec!["2001", "2002"]);
    assert!(invites(&mut h).is_empty());
}

#[test]
fn a_claim_answered_after_the_caller_left_frees_the_agent() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s7", "z9hG4bKs7"));
    h.receive(caller(), &cancel_from_caller("s7", "z9hG4bKs7"));
    h.take_sent();
    answer(&mut h, Ok(Some("2003")));
    assert!(
        invites(&mut h).is_empty(),
        "nobody rings for a call that is over"
    );
    let told: Vec<(&str, Hold)> = h.holds.iter().map(|(e, h, _)| (e.as_str(), *h)).collect();
    assert_eq!(told, vec![("2003", Hold::Free)]);
    assert_eq!(state(&mut h, "2003"), AgentState::Available);
}

#[test]
fn an_answered_call_leaves_the_agent_in_wrap_up_told_with_its_time() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s8", "z9hG4bKs8"));
    answer(&mut h, Ok(Some("2001")));
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&to_agent, 200, "OK", "agent"));
    h.take_sent();
    assert!(
        h.holds.is_empty(),
        "answering changes no hold: {:?}",
        h.holds
    );
    let bye = "BYE sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbyes8\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag=agent\r\nCall-ID: s8\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    h.receive(caller(), bye);
    let told: Vec<(&str, Hold)> = h.holds.iter().map(|(e, h, _)| (e.as_str(), *h)).collect();
    assert_eq!(told, vec![("2001", Hold::WrapUp(Duration::from_secs(30)))]);
}

#[test]
fn what_other_instances_hold_is_busy_here_and_ours_is_not_heard_twice() {
    let mut h = shared(OPEN);
    heard(&mut h, "2001", "b", Hold::Busy);
    heard(&mut h, "2002", "b", Hold::WrapUp(Duration::from_secs(10)));
    // This instance's own notifications change nothing.
    heard(&mut h, "2003", "a", Hold::Busy);
    assert_eq!(state(&mut h, "2001"), AgentState::Busy);
    assert_eq!(state(&mut h, "2002"), AgentState::WrapUp);
    assert_eq!(state(&mut h, "2003"), AgentState::Available);
    // The database decides whom to claim: the others' holds are not skipped here...
    h.receive(caller(), &invite("100", "s9", "z9hG4bKs9"));
    assert!(h.claims[0].skip.is_empty());
    // ...but alone, this instance keeps off them.
    answer(&mut h, Err(()));
    assert_eq!(
        invites(&mut h),
        vec!["INVITE sip:2003@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    h.now = h.now.plus(Duration::from_secs(10));
    assert_eq!(
        state(&mut h, "2002"),
        AgentState::Available,
        "the wrap-up ended"
    );
    heard(&mut h, "2001", "b", Hold::Free);
    assert_eq!(state(&mut h, "2001"), AgentState::Available);
}

#[test]
fn an_agent_set_away_elsewhere_is_away_here_without_being_stored_again() {
    let mut h = shared(OPEN);
    h.core.on_remote(
        h.now,
        Remote::Away {
            extension: "2001".into(),
            away: true,
            reason: Some("lunch".into()),
        },
    );
    assert_eq!(state(&mut h, "2001"), AgentState::Away);
    h.collect();
    assert!(
        !h.changes.iter().any(|c| matches!(c, Change::Agent(_))),
        "already stored by whoever set it"
    );
    h.receive(caller(), &invite("100", "s10", "z9hG4bKs10"));
    assert_eq!(h.claims[0].skip, vec!["2001"]);
}

#[test]
fn a_full_reading_replaces_what_was_heard() {
    let mut h = shared(OPEN);
    heard(&mut h, "2001", "b", Hold::Busy);
    h.core.on_remote(
        h.now,
        Remote::Snapshot {
            holds: vec![("2002".into(), "c".into(), Hold::Busy)],
            away: vec![("2003".into(), true, None)],
        },
    );
    assert_eq!(state(&mut h, "2001"), AgentState::Available);
    assert_eq!(state(&mut h, "2002"), AgentState::Busy);
    assert_eq!(state(&mut h, "2003"), AgentState::Away);
}

#[test]
fn a_single_instance_asks_the_database_nothing() {
    let mut h = Harness::new(OPEN);
    h.receive(caller(), &invite("100", "s11", "z9hG4bKs11"));
    assert_eq!(
        invites(&mut h),
        vec!["INVITE sip:2001@127.0.0.1:5080 SIP/2.0 -> 5080"]
    );
    assert!(h.claims.is_empty() && h.holds.is_empty());
}

#[test]
fn an_agent_set_away_while_the_claim_was_out_is_not_rung() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s12", "z9hG4bKs12"));
    h.core.on_remote(
        h.now,
        Remote::Away {
            extension: "2001".into(),
            away: true,
            reason: None,
        },
    );
    answer(&mut h, Ok(Some("2001")));
    assert!(invites(&mut h).is_empty(), "an away agent is not rung");
    let told: Vec<(&str, Hold)> = h.holds.iter().map(|(e, h, _)| (e.as_str(), *h)).collect();
    assert_eq!(told, vec![("2001", Hold::Free)]);
    assert_eq!(h.claims.len(), 2, "the next agent is claimed");
    assert_eq!(h.claims[1].skip, vec!["2001"]);
}

#[test]
fn a_release_told_late_frees_only_the_hold_it_releases() {
    let mut h = shared(OPEN);
    // 2001 ends a call: wrap-up told with a version of its own.
    h.receive(caller(), &invite("100", "s13", "z9hG4bKs13"));
    answer(&mut h, Ok(Some("2001")));
    let sent = h.take_sent();
    let to_agent = sent_to_pbx(&sent, "INVITE sip:2001@").to_owned();
    h.receive(pbx(), &respond(&to_agent, 200, "OK", "agent"));
    let bye = "BYE sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbyes13\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:600123456@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag=agent\r\nCall-ID: s13\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    h.receive(caller(), bye);
    let (_, hold, wrap_version) = h.holds.last().unwrap().clone();
    assert!(matches!(hold, Hold::WrapUp(_)));
    // Once the wrap-up is over, an admin frees 2001: the release names the wrap-up's
    // version, so a claim made since (newer) stays held in the database.
    h.now = h.now.plus(Duration::from_secs(31));
    h.core.free_agent(h.now, &ext("2001"));
    h.collect();
    let (agent, hold, version) = h.holds.last().unwrap().clone();
    assert_eq!(
        (agent.as_str(), hold, version),
        ("2001", Hold::Free, wrap_version)
    );
}

#[test]
fn a_hold_freed_by_another_instance_is_told_again_while_held_here() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s14", "z9hG4bKs14"));
    answer(&mut h, Ok(Some("2002")));
    assert!(h.holds.is_empty());
    // Taken for dead during an outage: another instance freed our hold of 2002.
    heard(&mut h, "2002", "a", Hold::Free);
    h.collect();
    let told: Vec<(&str, Hold)> = h.holds.iter().map(|(e, h, _)| (e.as_str(), *h)).collect();
    assert_eq!(told, vec![("2002", Hold::Busy)], "told again");
    // A full reading that does not show it any more: told again too.
    h.core.on_remote(
        h.now,
        Remote::Snapshot {
            holds: Vec::new(),
            away: Vec::new(),
        },
    );
    h.collect();
    assert_eq!(h.holds.len(), 2);
    // One that shows it changes nothing.
    h.core.on_remote(
        h.now,
        Remote::Snapshot {
            holds: vec![("2002".into(), "a".into(), Hold::Busy)],
            away: Vec::new(),
        },
    );
    h.collect();
    assert_eq!(h.holds.len(), 2);
}

#[test]
fn a_claim_answered_after_a_newer_hold_of_the_same_agent_keeps_the_newer_version() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s15", "z9hG4bKs15"));
    let claim_version = h.claims[0].version;
    // While the claim is out, 2001 dials out: held here, told with a newer version.
    let dial = invite("+34911239613", "o15", "z9hG4bKo15").replace(
        "<sip:600123456@127.0.0.1>;tag=caller",
        "<sip:2001@127.0.0.1>;tag=caller",
    );
    h.receive(pbx(), &dial);
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, "INVITE sip:+34911239613@").to_owned();
    let (_, hold, busy_version) = h.holds.last().unwrap().clone();
    assert_eq!(hold, Hold::Busy);
    assert!(busy_version > claim_version);
    // The claim took 2001 in the database first; the outbound hold then overwrote its row.
    answer(&mut h, Ok(Some("2001")));
    assert!(invites(&mut h).is_empty(), "2001 is on another call here");
    // The outbound call fails: the release names the newer hold, which is the row's.
    h.receive(pbx(), &respond(&out, 486, "Busy Here", "far"));
    let (agent, hold, version) = h.holds.last().unwrap().clone();
    assert_eq!(
        (agent.as_str(), hold, version),
        ("2001", Hold::Free, busy_version)
    );
}

#[test]
fn a_claim_never_answered_lets_the_calls_behind_it_go_on_alone() {
    let mut h = shared(OPEN);
    h.receive(caller(), &invite("100", "s16", "z9hG4bKs16"));
    h.receive(caller(), &invite("100", "s17", "z9hG4bKs17"));
    assert_eq!(h.claims.len(), 1, "the second call waits its turn");
    assert!(invites(&mut h).is_empty());
    // Nothing ever answers (the task asking the database is gone).
    h.advance(Duration::from_secs(5));
    let rung = invites(&mut h);
    assert_eq!(rung.len(), 2, "both calls rung alone: {rung:?}");
    assert_eq!(h.claims.len(), 1);
}
