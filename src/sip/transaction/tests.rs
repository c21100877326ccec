use std::net::SocketAddr;

use super::*;
use crate::sip::wire::{self, Datagram, Inbound, Limits};

const T1: Duration = Duration::from_millis(500);

fn pbx() -> Peer {
    Peer::udp("127.0.0.1:5080".parse::<SocketAddr>().unwrap())
}

fn parse(text: &str) -> Inbound {
    match wire::read_datagram(text.replace('\n', "\r\n").as_bytes(), &Limits::default()) {
        Ok(Datagram::Message(m)) => m,
        other => panic!("{other:?}\n{text}"),
    }
}

fn request(method: &str, branch: &str, to_tag: &str) -> Request {
    let text = format!(
        "{method} sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\nFrom: <sip:600123456@pbx>;tag=caller\nTo: <sip:100@pbx>{to_tag}\nCall-ID: tx-test\nCSeq: 1 {method}\nMax-Forwards: 70\nContent-Length: 0\n\n"
    );
    match parse(&text) {
        Inbound::Request(r) => *r,
        Inbound::Response(_) => unreachable!(),
    }
}

fn response(status: u16, branch: &str, method: &str) -> Response {
    let text = format!(
        "SIP/2.0 {status} Whatever\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\nFrom: <sip:600123456@pbx>;tag=caller\nTo: <sip:2001@pbx>;tag=agent\nCall-ID: tx-test\nCSeq: 1 {method}\nContent-Length: 0\n\n"
    );
    match parse(&text) {
        Inbound::Response(r) => *r,
        Inbound::Request(_) => unreachable!(),
    }
}

/// Sent messages' first lines, and the other events by kind.
fn drain(tx: &mut Transactions) -> (Vec<String>, Vec<String>) {
    let mut sent = Vec::new();
    let mut other = Vec::new();
    for event in tx.events() {
        match event {
            Event::Send { bytes, .. } => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                sent.push(text.lines().next().unwrap_or_default().to_owned());
            }
            Event::Request {
                tx: Some(_),
                request,
                ..
            } => other.push(format!("request {}", request.method())),
            Event::Request {
                tx: None, request, ..
            } => other.push(format!("stateless {}", request.method())),
            Event::Response { response, .. } => other.push(format!("response {}", response.status)),
            Event::Stray { response } => other.push(format!("stray {}", response.status)),
            Event::Timeout { .. } => other.push("timeout".into()),
            Event::NoAck { .. } => other.push("no ack".into()),
            Event::Overloaded { request, .. } => {
                other.push(format!("overloaded {}", request.method()))
            }
        }
    }
    (sent, other)
}

/// Polls at every deadline up to `until`, returning (offset from start, first line) of each
/// message sent.
fn run_until(
    tx: &mut Transactions,
    start: Instant,
    until: Duration,
) -> (Vec<(Duration, String)>, Vec<String>) {
    let mut sent = Vec::new();
    let mut other = Vec::new();
    while let Some(at) = tx.next_deadline() {
        if at > start + until {
            break;
        }
        tx.poll(at);
        let (s, o) = drain(tx);
        sent.extend(s.into_iter().map(|line| (at - start, line)));
        other.extend(o);
    }
    (sent, other)
}

fn invite_request_for_client() -> rsip::Request {
    let mut r = request("INVITE", "z9hG4bKupstream", "").message;
    r.headers = std::iter::once(message::header(
        "Via",
        "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsd1",
    ))
    .chain(r.headers.iter().cloned())
    .collect::<Vec<_>>()
    .into();
    r
}

fn ok_180(request: &Request) -> rsip::Response {
    request.response(180, "Ringing", "sd")
}

#[test]
fn server_invite_absorbs_retransmissions_and_resends_the_last_provisional() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let invite = request("INVITE", "z9hG4bK1", "");
    tx.receive_request(now, invite.clone(), pbx(), usize::MAX);
    assert_eq!(drain(&mut tx).1, vec!["request INVITE"]);
    tx.receive_request(now, invite.clone(), pbx(), usize::MAX);
    assert_eq!(
        drain(&mut tx),
        (vec![], vec![]),
        "absorbed before any response"
    );
    let key = tx.server_key(&invite);
    assert!(tx.respond(now, &key, &ok_180(&invite)));
    assert_eq!(drain(&mut tx).0, vec!["SIP/2.0 180 Ringing"]);
    tx.receive_request(now, invite.clone(), pbx(), usize::MAX);
    assert_eq!(
        drain(&mut tx),
        (vec!["SIP/2.0 180 Ringing".to_owned()], vec![])
    );
}

#[test]
fn server_invite_retransmits_a_failure_with_timer_g_until_the_ack() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let invite = request("INVITE", "z9hG4bK2", "");
    tx.receive_request(now, invite.clone(), pbx(), usize::MAX);
    drain(&mut tx);
    let key = tx.server_key(&invite);
    tx.respond(
        now,
        &key,
        &invite.response(480, "Temporarily Unavailable", "sd"),
    );
    drain(&mut tx);
    // Timer G: T1, 2T1, 4T1, then capped at T2 = 4 s.
    let (sent, _) = run_until(&mut tx, now, Duration::from_millis(7600));
    let times: Vec<u128> = sent.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, vec![500, 1500, 3500, 7500]);
    let ack = request("ACK", "z9hG4bK2", ";tag=sd");
    tx.receive_request(now + Duration::from_secs(8), ack.clone(), pbx(), usize::MAX);
    assert_eq!(drain(&mut tx), (vec![], vec![]), "the ACK is absorbed");
    let (sent, other) = run_until(&mut tx, now, Duration::from_secs(60));
    assert!(
        sent.is_empty(),
        "no retransmission once confirmed: {sent:?}"
    );
    assert!(other.is_empty());
    assert_eq!(tx.len(), (0, 0), "timer I removed it");
}

#[test]
fn server_invite_without_ack_reports_timer_h() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let invite = request("INVITE", "z9hG4bK3", "");
    tx.receive_request(now, invite.clone(), pbx(), usize::MAX);
    tx.respond(
        now,
        &tx.server_key(&invite),
        &invite.response(486, "Busy Here", "sd"),
    );
    drain(&mut tx);
    let (sent, other) = run_until(&mut tx, now, Duration::from_secs(40));
    assert_eq!(other, vec!["no ack"]);
    assert_eq!(sent.last().map(|(t, _)| *t < 64 * T1), Some(true));
    assert_eq!(tx.len(), (0, 0));
}

#[test]
fn server_invite_accepted_absorbs_retransmissions_for_timer_l() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let invite = request("INVITE", "z9hG4bK4", "");
    let key = tx.server_key(&invite);
    tx.receive_request(now, invite.clone(), pbx(), usize::MAX);
    tx.respond(now, &key, &invite.response(200, "OK", "sd"));
    drain(&mut tx);
    tx.receive_request(now + T1, invite.clone(), pbx(), usize::MAX);
    assert_eq!(drain(&mut tx), (vec![], vec![]));
    run_until(&mut tx, now, 64 * T1);
    assert_eq!(tx.len(), (0, 0));
}

#[test]
fn server_non_invite_answers_retransmissions_until_timer_j() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let options = request("OPTIONS", "z9hG4bK5", "");
    let key = tx.server_key(&options);
    tx.receive_request(now, options.clone(), pbx(), usize::MAX);
    tx.respond(now, &key, &options.response(200, "OK", "sd"));
    drain(&mut tx);
    tx.receive_request(now + T1, options.clone(), pbx(), usize::MAX);
    assert_eq!(drain(&mut tx).0, vec!["SIP/2.0 200 OK"]);
    let (_, other) = run_until(&mut tx, now, 64 * T1 - Duration::from_millis(1));
    assert!(other.is_empty());
    assert_eq!(tx.len(), (1, 0));
    run_until(&mut tx, now, 64 * T1);
    assert_eq!(tx.len(), (0, 0), "timer J");
}

#[test]
fn over_tcp_nothing_is_retransmitted_and_nothing_lingers() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let tcp = Peer::tcp("127.0.0.1:5080".parse().unwrap(), Some(7));
    let options = request("OPTIONS", "z9hG4bK6", "");
    tx.receive_request(now, options.clone(), tcp, usize::MAX);
    tx.respond(
        now,
        &tx.server_key(&options),
        &options.response(200, "OK", "sd"),
    );
    drain(&mut tx);
    tx.poll(now);
    assert_eq!(tx.len(), (0, 0), "timer J is zero over TCP");
    tx.request(now, invite_request_for_client(), tcp, "z9hG4bKsd1");
    drain(&mut tx);
    let (sent, other) = run_until(&mut tx, now, Duration::from_secs(40));
    assert!(sent.is_empty(), "no timer A over TCP: {sent:?}");
    assert_eq!(other, vec!["timeout"], "timer B still applies");
}

#[test]
fn client_invite_retransmits_with_timer_a_and_times_out_with_timer_b() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    tx.request(now, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    assert_eq!(drain(&mut tx).0, vec!["INVITE sip:100@127.0.0.1 SIP/2.0"]);
    let (sent, other) = run_until(&mut tx, now, Duration::from_secs(40));
    let times: Vec<u128> = sent.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(other, vec!["timeout"]);
    assert_eq!(tx.len(), (0, 0));
}

#[test]
fn client_invite_acknowledges_a_failure_hop_by_hop_and_absorbs_its_retransmission() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    tx.request(now, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    drain(&mut tx);
    tx.receive_response(now, response(180, "z9hG4bKsd1", "INVITE"));
    assert_eq!(drain(&mut tx), (vec![], vec!["response 180".to_owned()]));
    let (sent, _) = run_until(&mut tx, now, Duration::from_secs(10));
    assert!(sent.is_empty(), "timer A stops on a provisional response");
    tx.receive_response(now, response(486, "z9hG4bKsd1", "INVITE"));
    let mut acks = Vec::new();
    for event in tx.events() {
        if let Event::Send { bytes, .. } = event {
            acks.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    assert_eq!(acks.len(), 1);
    let ack = &acks[0];
    assert!(
        ack.starts_with("ACK sip:100@127.0.0.1 SIP/2.0\r\n"),
        "{ack}"
    );
    assert!(
        ack.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsd1\r\n"),
        "{ack}"
    );
    assert!(!ack.contains("z9hG4bKupstream"), "only the top Via: {ack}");
    assert!(
        ack.contains("To: <sip:2001@pbx>;tag=agent\r\n"),
        "To from the response: {ack}"
    );
    assert!(ack.contains("CSeq: 1 ACK\r\n"), "{ack}");
    tx.receive_response(now, response(486, "z9hG4bKsd1", "INVITE"));
    assert_eq!(
        drain(&mut tx),
        (vec!["ACK sip:100@127.0.0.1 SIP/2.0".to_owned()], vec![]),
        "retransmission absorbed, ACK resent"
    );
    run_until(&mut tx, now, Duration::from_secs(32));
    assert_eq!(tx.len(), (0, 0), "timer D");
}

#[test]
fn client_invite_2xx_and_its_retransmissions_reach_the_transaction_user() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    tx.request(now, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    drain(&mut tx);
    tx.receive_response(now, response(200, "z9hG4bKsd1", "INVITE"));
    assert_eq!(
        drain(&mut tx),
        (vec![], vec!["response 200".to_owned()]),
        "no ACK for a 2xx"
    );
    tx.receive_response(now + T1, response(200, "z9hG4bKsd1", "INVITE"));
    assert_eq!(drain(&mut tx).1, vec!["response 200"]);
    run_until(&mut tx, now, 64 * T1);
    assert_eq!(tx.len(), (0, 0), "timer M");
    tx.receive_response(now + 65 * T1, response(200, "z9hG4bKsd1", "INVITE"));
    assert_eq!(drain(&mut tx).1, vec!["stray 200"]);
}

#[test]
fn client_non_invite_retransmits_with_timer_e_capped_at_t2_and_times_out_with_f() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let mut bye = invite_request_for_client();
    bye.method = rsip::Method::Bye;
    tx.request(now, bye, pbx(), "z9hG4bKsd2");
    drain(&mut tx);
    let (sent, other) = run_until(&mut tx, now, Duration::from_secs(40));
    let times: Vec<u128> = sent.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(
        times,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(other, vec!["timeout"]);
}

#[test]
fn client_non_invite_completes_and_lingers_for_timer_k() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let mut bye = invite_request_for_client();
    bye.method = rsip::Method::Bye;
    tx.request(now, bye, pbx(), "z9hG4bKsd3");
    drain(&mut tx);
    tx.receive_response(now, response(200, "z9hG4bKsd3", "BYE"));
    assert_eq!(drain(&mut tx).1, vec!["response 200"]);
    tx.receive_response(now, response(200, "z9hG4bKsd3", "BYE"));
    assert_eq!(drain(&mut tx), (vec![], vec![]), "absorbed");
    assert_eq!(tx.len(), (0, 1));
    run_until(&mut tx, now, Duration::from_secs(5));
    assert_eq!(tx.len(), (0, 0), "timer K");
}

#[test]
fn a_cancel_waits_for_a_provisional_response() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let key = tx.request(now, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    drain(&mut tx);
    tx.cancel(now, &key);
    assert_eq!(
        drain(&mut tx),
        (vec![], vec![]),
        "not before a provisional response"
    );
    tx.receive_response(now, response(100, "z9hG4bKsd1", "INVITE"));
    let sent: Vec<String> = tx
        .events()
        .filter_map(|e| match e {
            Event::Send { bytes, .. } => Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("CANCEL sip:100@127.0.0.1 SIP/2.0\r\n"));
    assert!(
        sent[0].contains("branch=z9hG4bKsd1\r\n"),
        "same branch as the INVITE"
    );
    assert!(sent[0].contains("CSeq: 1 CANCEL\r\n"));
    assert!(
        sent[0].contains("To: <sip:100@pbx>\r\n"),
        "To of the INVITE, without tag"
    );
}

#[test]
fn a_cancel_in_proceeding_goes_out_at_once() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let key = tx.request(now, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    tx.receive_response(now, response(180, "z9hG4bKsd1", "INVITE"));
    drain(&mut tx);
    tx.cancel(now, &key);
    assert_eq!(drain(&mut tx).0, vec!["CANCEL sip:100@127.0.0.1 SIP/2.0"]);
}

#[test]
fn an_ack_to_a_2xx_belongs_to_no_transaction() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    tx.receive_request(
        now,
        request("ACK", "z9hG4bKnew", ";tag=agent"),
        pbx(),
        usize::MAX,
    );
    assert_eq!(drain(&mut tx).1, vec!["stateless ACK"]);
}

#[test]
fn rfc2543_requests_without_a_cookie_are_matched_on_their_identity() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let old = request("INVITE", "oldstyle", "");
    tx.receive_request(now, old.clone(), pbx(), usize::MAX);
    tx.receive_request(now, old, pbx(), usize::MAX);
    assert_eq!(drain(&mut tx).1, vec!["request INVITE"]);
}

#[test]
fn a_transport_failure_fails_the_client_transactions_to_that_peer() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    tx.request(now, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    drain(&mut tx);
    // A failed TCP connection to the same address leaves UDP transactions alone.
    let tcp = Peer {
        transport: crate::sip::peer::Transport::Tcp,
        ..pbx()
    };
    tx.transport_failed(tcp);
    assert_eq!(drain(&mut tx).1, Vec::<String>::new());
    tx.transport_failed(pbx());
    assert_eq!(drain(&mut tx).1, vec!["timeout"]);
    assert_eq!(tx.len(), (0, 0));
}

#[test]
fn a_ringing_invite_is_cancelled_by_timer_c_and_ends_64_t1_after_its_cancel() {
    let start = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    tx.request(start, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    tx.receive_response(start, response(180, "z9hG4bKsd1", "INVITE"));
    drain(&mut tx);
    let (sent, other) = run_until(&mut tx, start, Duration::from_secs(60));
    assert_eq!((sent, other), (vec![], vec![]));
    // Another provisional response restarts Timer C.
    let again = start + Duration::from_secs(60);
    tx.receive_response(again, response(183, "z9hG4bKsd1", "INVITE"));
    drain(&mut tx);
    let (sent, _) = run_until(&mut tx, start, Duration::from_secs(60) + TIMER_C);
    let first = sent.first().expect("a CANCEL when Timer C fires");
    assert_eq!(
        first,
        &(
            Duration::from_secs(60) + TIMER_C,
            "CANCEL sip:100@127.0.0.1 SIP/2.0".to_owned()
        )
    );
    assert_eq!(tx.len(), (0, 2), "the INVITE and its CANCEL");
    // No 487 ever comes: 64·T1 later the INVITE ends as a timeout (and the CANCEL with it).
    let (_, other) = run_until(&mut tx, start, Duration::from_secs(60) + TIMER_C + 64 * T1);
    assert_eq!(other, vec!["timeout", "timeout"]);
    assert_eq!(tx.len(), (0, 0));
}

#[test]
fn a_cancelled_invite_without_a_final_response_ends_64_t1_after_the_cancel() {
    let start = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let key = tx.request(start, invite_request_for_client(), pbx(), "z9hG4bKsd1");
    tx.receive_response(start, response(180, "z9hG4bKsd1", "INVITE"));
    let at = start + Duration::from_secs(15);
    tx.cancel(at, &key);
    drain(&mut tx);
    let (_, other) = run_until(&mut tx, start, Duration::from_secs(15) + 64 * T1 - T1);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(tx.len(), (0, 2));
    let (_, other) = run_until(&mut tx, start, Duration::from_secs(15) + 64 * T1);
    assert_eq!(other, vec!["timeout", "timeout"]);
    assert_eq!(tx.len(), (0, 0));
}

#[test]
fn beyond_the_limit_a_new_request_makes_no_transaction_but_retransmissions_are_absorbed() {
    let now = Instant::now();
    let mut tx = Transactions::new(TimerSettings::default());
    let first = request("INVITE", "z9hG4bK1", "");
    tx.receive_request(now, first.clone(), pbx(), 1);
    assert_eq!(drain(&mut tx).1, vec!["request INVITE"]);
    let second = request("INVITE", "z9hG4bK2", "");
    tx.receive_request(now, second, pbx(), 1);
    assert_eq!(drain(&mut tx).1, vec!["overloaded INVITE"]);
    assert_eq!(tx.len(), (1, 0));
    // The first one's retransmission is still its own.
    tx.receive_request(now, first, pbx(), 1);
    assert_eq!(drain(&mut tx), (vec![], vec![]));
}
