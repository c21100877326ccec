//! RFC 4475's torture messages, byte for byte, sent over UDP to the running daemon: each gets
//! the handling the RFC names (or, where it leaves a choice, the one sipdesk documents), and the
//! daemon still answers OPTIONS afterwards.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::daemon::Daemon;

const TORTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rfc4475");

/// A closed group serving queue `user` (the user part most torture INVITEs are addressed to),
/// so that INVITEs which pass the checks are routed and refused 480 out of hours.
const BODY: &str = r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "torture"
queues = ["user"]
hours = {}
agents = [{ extension = "2001" }]
"#;

/// (file, the final status sipdesk answers with, or 0 for no answer at all).
const EXPECTED: &[(&str, u16)] = &[
    // 3.1.1 valid: processed. INVITEs to unknown users are 404, to the closed queue 480;
    // a request inside a dialog sipdesk does not know (a To tag) is 481 (RFC 3261 §12.2.2);
    // OPTIONS is answered by sipdesk; REGISTER is not its business (405); a MESSAGE to a number
    // that takes no texts, from no agent, is 404, as an INVITE there is (the multipart one
    // included: its body is parsed, then it has nowhere to go); unknown methods are 501;
    // responses that match nothing are dropped.
    ("wsinv", 481),
    ("intmeth", 501),
    ("esc01", 404),
    ("escnull", 405),
    ("esc02", 501),
    ("lwsdisp", 200),
    ("longreq", 480),
    ("dblreq", 405),
    ("semiuri", 200),
    ("transports", 200),
    ("mpart01", 404),
    ("unreason", 0),
    ("noreason", 0),
    // 3.1.2 invalid: 400 (505 for the version), responses dropped.
    ("badinv01", 400),
    ("clerr", 400),
    ("ncl", 400),
    ("scalar02", 400),
    ("scalarlg", 0),
    ("quotbal", 400),
    ("ltgtruri", 400),
    ("lwsruri", 400),
    ("lwsstart", 400),
    ("trws", 400),
    ("escruri", 400),
    ("baddate", 480),
    ("regbadct", 400),
    ("badaspec", 400),
    ("baddn", 400),
    ("badvers", 505),
    ("mismatch01", 400),
    ("mismatch02", 400),
    ("bigcode", 0),
    // 3.2
    ("badbranch", 400),
    // 3.3 application layer
    ("insuf", 400),
    ("unkscm", 416),
    ("novelsc", 416),
    ("unksm2", 405),
    ("bext01", 420),
    ("invut", 415),
    ("regaut01", 405),
    ("multi01", 400),
    ("mcl01", 400),
    ("bcast", 0),
    ("zeromf", 483),
    ("cparam01", 405),
    ("cparam02", 405),
    ("regescrt", 405),
    ("sdp01", 406),
    // 3.4
    ("inv2543", 404),
];

/// Every response to what was just sent, until `quiet` passes without one.
fn responses(socket: &UdpSocket, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65_536];
    let mut until = Instant::now() + quiet;
    while Instant::now() < until {
        socket
            .set_read_timeout(Some(until - Instant::now()))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            until = Instant::now() + quiet;
        }
    }
    got
}

/// A message's Call-ID (long or compact form), if it has one.
fn call_id(message: &str) -> Option<String> {
    message.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("Call-ID") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim().to_owned())
    })
}

fn status(response: &str) -> u16 {
    response
        .get(8..11)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_torture_message_gets_the_rfc_handling_and_the_daemon_keeps_serving() {
    let mut daemon = Daemon::start("rfc4475", "trusted = [\"127.0.0.1\"]", BODY);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", daemon.port)).unwrap();
    let index = std::fs::read_to_string(format!("{TORTURE}/INDEX.tsv")).unwrap();
    let files: Vec<&str> = index
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(files.len(), EXPECTED.len());
    let mut wrong = Vec::new();
    for file in files {
        let name = file.trim_end_matches(".dat");
        let (_, want) = EXPECTED
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}: no expectation"));
        let bytes = std::fs::read(format!("{TORTURE}/{file}")).unwrap();
        socket.send(&bytes).unwrap();
        // Earlier INVITEs' final responses are retransmitted (nobody acknowledges them here):
        // keep only the answers to this message.
        let id = call_id(&String::from_utf8_lossy(&bytes));
        let got: Vec<String> = responses(&socket, Duration::from_millis(250))
            .into_iter()
            .filter(|r| call_id(r) == id)
            .collect();
        // Provisional responses may precede the final one; retransmissions may follow it.
        let finals: Vec<u16> = got
            .iter()
            .map(|r| status(r))
            .filter(|s| *s >= 200)
            .collect();
        let seen = finals.first().copied().unwrap_or(0);
        if seen != *want || (finals.iter().any(|s| *s != seen)) {
            wrong.push(format!("{name}: expected {want}, got {got:?}"));
        }
        if name == "dblreq" && got.iter().any(|r| r.contains("CSeq: 8 INVITE")) {
            wrong.push("dblreq: the INVITE after the REGISTER's body was processed".into());
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nsipdesk:\n{}",
        wrong.join("\n"),
        daemon.log()
    );

    // 420 lists the unsupported option tags.
    socket
        .send(&std::fs::read(format!("{TORTURE}/bext01.dat")).unwrap())
        .unwrap();
    let answer = responses(&socket, Duration::from_millis(250))
        .into_iter()
        .filter(|r| r.contains("bext01"))
        .collect::<String>();
    assert!(
        answer.contains("Unsupported: nothingSupportsThis, nothingSupportsThisEither, noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n"),
        "{answer}"
    );

    let options = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-after-torture\r\nFrom: <sip:pbx@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: after-torture\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        port = daemon.port
    );
    socket.send(options.as_bytes()).unwrap();
    let answer: Vec<String> = responses(&socket, Duration::from_millis(250))
        .into_iter()
        .filter(|r| r.contains("after-torture"))
        .collect();
    assert_eq!(
        answer.iter().map(|r| status(r)).collect::<Vec<_>>(),
        vec![200],
        "{answer:?}"
    );
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log());
}
