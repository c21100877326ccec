//! The real daemon under SIP faults and abuse from trusted addresses: answers nobody
//! acknowledges, a burst of garbage, piles of idle or trickling TCP connections, and a reload
//! that changes who is trusted. After each, ordinary calls must still be answered.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, free_port, test_dir};

const BODY: &str = r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "trio"
queues = ["500"]
agents = [{ extension = "6001" }, { extension = "6002" }, { extension = "6003" }]
wrap_up = "0s"
"#;

/// T1 of 100 ms: 64·T1 is 6.4 s, so the tests do not wait the default 32 s.
const FAST: &str = "trusted = [\"127.0.0.1\"]\nt1 = \"100ms\"\nt2 = \"500ms\"";

#[test]
fn answers_nobody_acknowledges_free_their_agents_and_the_next_call_is_answered() {
    let mut daemon = Daemon::start("no-ack", FAST, BODY);
    let uas = daemon.agents("agents-answer-never-acked.xml", 3);
    let uac = daemon.callers("caller-never-acks.xml", "500", 3, 20, 3, false);
    // Both sides get sipdesk's BYE after 64·T1 (RFC 3261 §13.3.1.4), or SIPp fails.
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    let calls = daemon.ended_calls(3);
    for call in &calls {
        assert_eq!(call["outcome"], "missed", "{call:#}");
        assert_eq!(call["reason"], "not_connected", "{call:#}");
    }
    // Every agent is free again: the next call is answered.
    let uas = daemon.agents("agents-answer.xml", 1);
    daemon.succeeded(daemon.callers("caller-answered.xml", "500", 1, 20, 3, false));
    daemon.succeeded(uas);
    let calls = daemon.ended_calls(4);
    assert_eq!(
        calls.iter().filter(|c| c["outcome"] == "answered").count(),
        1
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// Bytes a trusted but broken or hostile peer might send: malformed messages, requests inside
/// dialogs nobody knows aimed at another host, INVITEs to nobody, and outbound calls from an
/// agent's extension that nobody will ever acknowledge.
fn garbage(sipdesk: SocketAddr, victim: u16, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let via = format!("Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKg{i}\r\n");
        let common =
            format!("{via}Max-Forwards: 70\r\nCall-ID: garbage-{i}\r\nContent-Length: 0\r\n");
        out.push(match i % 5 {
            0 => format!("INVITE sip:+3491123{i:04}@{sipdesk} SIP/2.0\r\n{common}From: <sip:6001@127.0.0.1>;tag=g{i}\r\nTo: <sip:+3491123{i:04}@{sipdesk}>\r\nCSeq: 1 INVITE\r\nContact: <sip:6001@127.0.0.1:5999>\r\n\r\n").into_bytes(),
            1 => format!("BYE sip:victim@127.0.0.1:{victim};transport=tcp SIP/2.0\r\n{common}From: <sip:x@127.0.0.1>;tag=a{i}\r\nTo: <sip:y@127.0.0.1>;tag=b{i}\r\nCSeq: 2 BYE\r\n\r\n").into_bytes(),
            2 => format!("INVITE sip:nobody{i}@{sipdesk} SIP/2.0\r\n{common}From: <sip:z@127.0.0.1>;tag=n{i}\r\nTo: <sip:nobody@{sipdesk}>\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
            3 => format!("GARBAGE {i} \0\x01\x02 not sip at all\r\n\r\n").into_bytes(),
            _ => format!("SIP/2.0 200 OK\r\n{common}From: <sip:q@127.0.0.1>;tag=q{i}\r\nTo: <sip:r@127.0.0.1>;tag=r{i}\r\nCSeq: 1 INVITE\r\n\r\n").into_bytes(),
        });
    }
    out
}

#[test]
fn a_garbage_burst_from_a_trusted_address_leaves_the_queue_answering() {
    let mut daemon = Daemon::start("garbage", FAST, BODY);
    // Where the in-dialog garbage asks sipdesk to go: nothing may connect.
    let victim = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    victim.set_nonblocking(true).unwrap();
    let victim_port = victim.local_addr().unwrap().port();
    let sipdesk: SocketAddr = format!("127.0.0.1:{}", daemon.port).parse().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in garbage(sipdesk, victim_port, 5_000) {
        socket.send_to(&datagram, sipdesk).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    // Agent 6001's phone "dialled" 1,000 times; it may have two outbound calls at once.
    let active = daemon
        .calls()
        .into_iter()
        .filter(|c| c["outcome"].is_null())
        .count();
    assert!(active <= 2, "{active} calls in progress");
    assert!(victim.accept().is_err(), "sipdesk connected to the victim");
    // Unanswered at the PBX, those end with Timer B (64·T1); then the queue answers as usual.
    std::thread::sleep(Duration::from_secs(7));
    let uas = daemon.agents("agents-answer.xml", 20);
    daemon.succeeded(daemon.callers("caller-answered.xml", "500", 20, 20, 3, false));
    daemon.succeeded(uas);
    // Records are written in the background: wait for the last ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = daemon
            .calls()
            .into_iter()
            .filter(|c| c["outcome"] == "answered" && c["queue"] == "500")
            .count();
        if answered == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "{answered} of 20 answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(victim.accept().is_err(), "sipdesk connected to the victim");
    assert_eq!(daemon.stop(), Some(0));
}

/// Raises this process's own open-file limit, to hold thousands of connections.
fn raise_own_file_limit() {
    // SAFETY: plain rlimit calls on this process.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[test]
fn five_thousand_idle_tcp_connections_do_not_stop_a_call_over_tcp() {
    raise_own_file_limit();
    // The packaged unit's old default: 1,024 open files.
    let mut daemon = Daemon::start_limited(
        test_dir("idle-tcp"),
        "trusted = [\"127.0.0.1\"]",
        BODY,
        None,
        &[],
        Some(1024),
    );
    let sipdesk: SocketAddr = format!("127.0.0.1:{}", daemon.port).parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..5_000 {
        if let Ok(stream) = TcpStream::connect_timeout(&sipdesk, Duration::from_secs(2)) {
            idle.push(stream);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let uas = daemon.agents("agents-answer.xml", 1);
    daemon.succeeded(daemon.callers("caller-answered.xml", "500", 1, 20, 3, true));
    daemon.succeeded(uas);
    assert_eq!(daemon.ended_calls(1)[0]["outcome"], "answered");
    let log = daemon.log();
    let complaints = log.matches("cannot accept TCP connections").count();
    assert!(complaints <= 10, "{complaints} log lines about accepting");
    drop(idle);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_connection_that_trickles_a_message_is_closed_after_tcp_message_timeout() {
    let mut daemon = Daemon::start(
        "slowloris",
        "trusted = [\"127.0.0.1\"]\ntcp_message_timeout = \"2s\"",
        BODY,
    );
    let sipdesk: SocketAddr = format!("127.0.0.1:{}", daemon.port).parse().unwrap();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(sipdesk).unwrap())
        .collect();
    let started = Instant::now();
    let head = b"OPTIONS sip:500@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKslow\r\nX-Slow: ";
    for stream in &mut slow {
        stream.write_all(head).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    let mut closed = 0;
    while closed < slow.len() && started.elapsed() < Duration::from_secs(10) {
        closed = 0;
        for stream in &mut slow {
            // One more byte a second keeps it from ever being idle; reading 0 means closed.
            let _ = stream.write_all(b"a");
            let mut byte = [0u8; 1];
            if matches!(stream.read(&mut byte), Ok(0) | Err(_)) && stream.write_all(b"a").is_err() {
                closed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(closed, 200, "still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(daemon.stop(), Some(0));
}

fn options_from(source: &str) -> Vec<u8> {
    format!("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {source}:5999;branch=z9hG4bKopt{}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{source}>;tag=o1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: opt-{}@{source}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", free_port(), free_port()).into_bytes()
}

/// The status of sipdesk's answer to an OPTIONS from 127.0.0.2 over UDP, if any.
fn udp_answer(sipdesk: SocketAddr) -> Option<u16> {
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(&options_from("127.0.0.2"), sipdesk).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The same over a TCP connection from 127.0.0.2; `None` when sipdesk closed it unanswered.
fn tcp_answer(sipdesk: SocketAddr) -> Option<u16> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&sipdesk.into()).ok()?;
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = String::from_utf8(options_from("127.0.0.2"))
        .unwrap()
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream.write_all(request.as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn reload(daemon: &Daemon, trusted: &str) {
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("trusted = ") {
                format!("trusted = {trusted}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&daemon.config, text).unwrap();
    let before = daemon.log().matches("configuration reloaded").count();
    std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon.log().matches("configuration reloaded").count() == before {
        assert!(Instant::now() < deadline, "no reload:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_that_changes_who_is_trusted_applies_on_udp_and_tcp_at_once() {
    let mut daemon = Daemon::start("reload-trust", "trusted = [\"127.0.0.2\"]", BODY);
    let sipdesk: SocketAddr = format!("127.0.0.1:{}", daemon.port).parse().unwrap();
    assert_eq!(udp_answer(sipdesk), Some(200));
    assert_eq!(tcp_answer(sipdesk), Some(200));
    reload(&daemon, "[]");
    assert_eq!(udp_answer(sipdesk), Some(403));
    assert_eq!(tcp_answer(sipdesk), None);
    assert!(
        daemon.log().contains("changed=sip.trusted"),
        "{}",
        daemon.log()
    );
    reload(&daemon, "[\"127.0.0.0/29\"]");
    assert_eq!(udp_answer(sipdesk), Some(200));
    assert_eq!(tcp_answer(sipdesk), Some(200));
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn an_admin_ends_a_stuck_call_and_both_phones_get_bye() {
    let mut daemon = Daemon::start("admin-end", FAST, BODY);
    let (status, body) = daemon.admin("GET", "/health", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ready\""), "{body}");
    let uas = daemon.agents("agents-answer.xml", 1);
    let uac = daemon.callers("caller-answered-until-bye.xml", "500", 1, 20, 3, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let calls = daemon.calls();
        // Events are stored as they happen; the record itself when the call ends.
        let answered = |c: &&serde_json::Value| {
            c["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "answered"))
        };
        if let Some(call) = calls.iter().find(answered) {
            break call["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no answered call:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(daemon.admin("DELETE", &format!("/calls/{id}"), None).0, 401);
    assert_eq!(
        daemon
            .admin("DELETE", &format!("/calls/{id}"), Some("wrong"))
            .0,
        401
    );
    let token = std::fs::read_to_string(daemon.dir.join("admin.token")).unwrap();
    assert_eq!(
        daemon
            .admin("DELETE", "/calls/no-such-call", Some(&token))
            .0,
        404
    );
    // What an admin types: the command asks the running daemon.
    let (code, out) = daemon.command(&["calls", "end", &id]);
    assert_eq!(code, 0, "{out}");
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    let call = daemon.ended_calls(1).remove(0);
    assert_eq!(call["ended_by"], "admin", "{call:#}");
    let (code, out) = daemon.command(&["calls", "end", &id]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no such call in progress"), "{out}");
    assert_eq!(daemon.stop(), Some(0));
}
