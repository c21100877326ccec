//! Texts through the proxy: inbound MESSAGEs answered 202 and recorded once, keywords,
//! attachments and floods; texts from phones passed to the PBX; helpdesk replies sent.

use super::sms::KEEP_WAIT;
use super::tests::{CONFIG, Harness, OPEN, caller, first_line, lines, pbx, respond, sent_to_pbx};
use super::*;
use crate::call::{CallRecord, Direction, Outcome};

fn config() -> String {
    format!(
        "{CONFIG}\n[[sms_numbers]]\nnumber = \"+34910000000\"\nname = \"Soporte\"\ngroups = [\"support\"]\n\n[sms]\nmax_per_sender = \"3/min\"\nmax_per_agent = \"2/min\"\n"
    )
}

fn message(
    to: &str,
    from: &str,
    call_id: &str,
    cseq: u32,
    content_type: &str,
    body: &str,
) -> String {
    format!(
        "MESSAGE sip:{to}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}{cseq}\r\nFrom: <sip:{from}@127.0.0.1>;tag=t{call_id}\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The store says it kept every text recorded so far.
fn keep_all(h: &mut Harness) {
    let ids: Vec<String> = texts(h).iter().map(|r| r.id.clone()).collect();
    for id in ids {
        h.core.text_kept(h.now, &id);
    }
    h.collect();
}

fn texts(h: &Harness) -> Vec<&CallRecord> {
    h.records()
        .into_iter()
        .filter(|r| r.sms.is_some())
        .collect()
}

#[test]
fn a_text_to_a_company_number_is_answered_202_and_recorded_once() {
    let mut h = Harness::with_config(OPEN, &config());
    let text = message(
        "+34910000000",
        "+34600111222",
        "m1",
        1,
        "text/plain;charset=UTF-8",
        "Hola, ¿mi pedido?",
    );
    h.receive(caller(), &text);
    // Answered only once the store has kept it.
    assert!(h.take_sent().is_empty());
    keep_all(&mut h);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 202 Accepted -> 5070"]);
    // A retransmission within the transaction, and the same MESSAGE again after it ended.
    h.receive(caller(), &text);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 202 Accepted -> 5070"]);
    h.advance(Duration::from_secs(40));
    h.receive(caller(), &text);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 202 Accepted -> 5070"]);
    let records = texts(&h);
    assert_eq!(records.len(), 1, "one record for one text");
    let record = records[0];
    assert_eq!(record.direction, Direction::Inbound);
    assert_eq!(record.caller, "+34600111222");
    assert_eq!(record.callee, "+34910000000");
    assert_eq!(record.groups, vec!["support".to_owned()]);
    let sms = record.sms.as_ref().unwrap();
    assert_eq!(sms.body, "Hola, ¿mi pedido?");
    assert_eq!(sms.name, "Soporte");
    assert_eq!(sms.skipped, None);
    assert!(!sms.flood);
    assert_eq!(record.call_type(), crate::call::CallType::SmsInbound);
}

#[test]
fn a_text_the_store_does_not_keep_in_time_gets_503_and_is_accepted_when_sent_again() {
    let mut h = Harness::with_config(OPEN, &config());
    let text = message(
        "+34910000000",
        "+34600111222",
        "slow",
        1,
        "text/plain",
        "hola",
    );
    h.receive(caller(), &text);
    h.advance(KEEP_WAIT);
    let sent = h.take_sent();
    assert_eq!(
        lines(&sent),
        vec!["SIP/2.0 503 Service Unavailable -> 5070"]
    );
    assert!(sent[0].1.contains("\r\nRetry-After: 30\r\n"));
    // The trunk tries again (a new transaction) before the store kept it: the record goes to
    // the store again (the same id: one record there), and this copy waits for it.
    h.advance(Duration::from_secs(40));
    h.receive(
        caller(),
        &text.replace("branch=z9hG4bKslow1", "branch=z9hG4bKslow1again"),
    );
    assert!(h.take_sent().is_empty());
    let ids: Vec<String> = texts(&h).iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the same record, sent to the store again");
    keep_all(&mut h);
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 202 Accepted -> 5070"]);
    // Once kept, a later copy is answered at once, and nothing more is stored.
    h.advance(Duration::from_secs(40));
    h.receive(
        caller(),
        &text.replace("branch=z9hG4bKslow1", "branch=z9hG4bKslow1third"),
    );
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 202 Accepted -> 5070"]);
    assert_eq!(texts(&h).len(), 2);
}

#[test]
fn keywords_images_and_floods_are_recorded_with_what_they_mean() {
    let mut h = Harness::with_config(OPEN, &config());
    h.receive(
        caller(),
        &message(
            "+34910000000",
            "+34600111222",
            "k1",
            1,
            "text/plain",
            " stop ",
        ),
    );
    h.receive(
        caller(),
        &message(
            "+34910000000",
            "+34600111222",
            "k2",
            1,
            "text/plain",
            "HELP",
        ),
    );
    h.receive(
        caller(),
        &message(
            "+34910000000",
            "+34600111222",
            "k3",
            1,
            "image/jpeg",
            "\u{1}JPEGDATA",
        ),
    );
    h.receive(
        caller(),
        &message(
            "+34910000000",
            "+34600111222",
            "k4",
            1,
            "text/plain",
            "otra vez",
        ),
    );
    h.receive(
        caller(),
        &message(
            "+34910000000",
            "+34600333444",
            "k5",
            1,
            "text/plain",
            "yo no",
        ),
    );
    let records = texts(&h);
    let sms = |i: usize| records[i].sms.clone().unwrap();
    assert_eq!(records.len(), 5);
    assert!(
        sms(0).skipped.unwrap().contains("STOP"),
        "a compliance keyword makes no ticket"
    );
    assert_eq!(sms(1).skipped, None, "HELP makes a ticket");
    assert_eq!(sms(2).body, ATTACHMENT);
    assert!(
        !sms(2).flood,
        "the third text within a minute is within 3/min"
    );
    assert!(sms(3).flood, "the fourth joins the open ticket");
    assert!(!sms(4).flood, "another sender has their own count");
    // A minute later the sender may open tickets again.
    h.advance(Duration::from_secs(61));
    h.receive(
        caller(),
        &message(
            "+34910000000",
            "+34600111222",
            "k6",
            1,
            "text/plain",
            "hola",
        ),
    );
    assert!(!texts(&h)[5].sms.as_ref().unwrap().flood);
}

#[test]
fn a_text_to_an_unknown_number_or_from_a_stranger_gets_404_and_no_record() {
    let mut h = Harness::with_config(OPEN, &config());
    h.receive(
        caller(),
        &message(
            "+34919999999",
            "+34600111222",
            "u1",
            1,
            "text/plain",
            "hola",
        ),
    );
    assert_eq!(lines(&h.take_sent()), vec!["SIP/2.0 404 Not Found -> 5070"]);
    assert!(texts(&h).is_empty());
}

#[test]
fn a_text_from_an_agents_phone_goes_to_the_pbx_and_is_recorded_with_its_answer() {
    let mut h = Harness::with_config(OPEN, &config());
    h.receive(
        caller(),
        &message("611222333", "2001", "p1", 7, "text/plain", "Le llamo luego"),
    );
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, "MESSAGE sip:611222333@127.0.0.1:5080").to_owned();
    assert!(out.ends_with("\r\n\r\nLe llamo luego"), "{out}");
    h.receive(pbx(), &respond(&out, 202, "Accepted", "pbx"));
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|(_, t)| first_line(t)).collect::<Vec<_>>(),
        vec!["SIP/2.0 202 Accepted"]
    );
    let records = texts(&h);
    assert_eq!(records.len(), 1);
    let record = records[0];
    assert_eq!(record.direction, Direction::Outbound);
    assert_eq!(record.agent.as_deref(), Some("2001"));
    assert_eq!(record.agent_email.as_deref(), Some("ana@example.com"));
    assert_eq!(record.callee, "+34611222333");
    assert_eq!(record.outcome, Outcome::Answered);
    let sms = record.sms.as_ref().unwrap();
    assert_eq!(
        (sms.number.as_str(), sms.via.as_deref()),
        ("+34910000000", Some("phone"))
    );
    assert_eq!(sms.failure, None);
}

#[test]
fn a_helpdesk_reply_goes_out_from_the_number_the_customer_texted() {
    let mut h = Harness::with_config(OPEN, &config());
    h.core.send_text(
        h.now,
        TextOrder {
            id: "reply-zd-1".into(),
            from: "+34910000000".into(),
            to: "+34600111222".into(),
            body: "Su pedido sale hoy".into(),
            via: "zendesk".into(),
            ticket: "42".into(),
            author: Some("ana@example.com".into()),
        },
    );
    h.collect();
    let sent = h.take_sent();
    let out = sent_to_pbx(&sent, "MESSAGE sip:+34600111222@127.0.0.1:5080").to_owned();
    assert!(
        out.contains("\r\nFrom: <sip:+34910000000@127.0.0.1>;tag="),
        "{out}"
    );
    assert!(
        out.contains("\r\nTo: <sip:+34600111222@127.0.0.1>\r\n"),
        "{out}"
    );
    assert!(
        out.contains("\r\nContent-Type: text/plain;charset=UTF-8\r\n"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nSu pedido sale hoy"), "{out}");
    h.receive(pbx(), &respond(&out, 200, "OK", "pbx"));
    assert_eq!(h.texts, vec![("reply-zd-1".to_owned(), None)]);
    let records = texts(&h);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].groups, vec!["support".to_owned()]);
    assert_eq!(
        records[0].sms.as_ref().unwrap().ticket.as_deref(),
        Some("42")
    );
    // The agent who wrote it, as configured.
    assert_eq!(records[0].agent.as_deref(), Some("2001"));
    assert_eq!(records[0].agent_email.as_deref(), Some("ana@example.com"));

    // Refused, and not answered at all.
    for (id, answer) in [("reply-zd-2", Some(488)), ("reply-zd-3", None)] {
        h.core.send_text(
            h.now,
            TextOrder {
                id: id.into(),
                from: "+34910000000".into(),
                to: "+34600111222".into(),
                body: "…".into(),
                via: "zendesk".into(),
                ticket: "42".into(),
                author: None,
            },
        );
        h.collect();
        let sent = h.take_sent();
        let out = sent_to_pbx(&sent, "MESSAGE").to_owned();
        match answer {
            Some(status) => h.receive(pbx(), &respond(&out, status, "Not Acceptable Here", "pbx")),
            None => h.advance(Duration::from_secs(40)),
        }
    }
    assert_eq!(h.texts.len(), 3);
    assert!(
        h.texts[1].1.as_deref().unwrap().contains("488"),
        "{:?}",
        h.texts
    );
    assert_eq!(h.texts[2].1.as_deref(), Some("the PBX did not answer"));
    let failed = texts(&h);
    assert_eq!(failed[1].outcome, Outcome::Missed);
    assert!(failed[2].sms.as_ref().unwrap().failure.is_some());
}

#[test]
fn a_reply_too_long_for_udp_is_not_sent_and_says_why() {
    let mut h = Harness::with_config(OPEN, &config());
    h.core.send_text(
        h.now,
        TextOrder {
            id: "reply-long".into(),
            from: "+34910000000".into(),
            to: "+34600111222".into(),
            body: "x".repeat(1400),
            via: "zendesk".into(),
            ticket: "42".into(),
            author: None,
        },
    );
    h.collect();
    assert!(h.take_sent().is_empty(), "nothing goes to the PBX");
    assert_eq!(h.texts.len(), 1);
    assert!(
        h.texts[0]
            .1
            .as_deref()
            .unwrap()
            .contains("too long to send over UDP")
    );
    assert_eq!(texts(&h)[0].outcome, Outcome::Missed);
}

#[test]
fn an_agents_phone_past_max_per_agent_is_refused() {
    let mut h = Harness::with_config(OPEN, &config());
    for i in 0..3 {
        h.receive(
            caller(),
            &message(
                "611222333",
                "2001",
                &format!("a{i}"),
                1,
                "text/plain",
                "hola",
            ),
        );
    }
    let sent = h.take_sent();
    let to_pbx = sent.iter().filter(|(p, _)| p.addr == pbx()).count();
    assert_eq!(to_pbx, 2, "{:?}", lines(&sent));
    let refused = sent
        .iter()
        .find(|(_, t)| t.starts_with("SIP/2.0 403"))
        .expect("the third is refused");
    assert!(refused.1.contains("max_per_agent"), "{}", refused.1);
}
