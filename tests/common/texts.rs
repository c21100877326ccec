//! Texts (SIP MESSAGE, RFC 3428) through the running daemon: a customer's text to one of the
//! `[[sms_numbers]]`, and an agent's phone texting a customer with the test playing the PBX.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::time::Duration;

use super::daemon::Daemon;

/// A `[[sms_numbers]]` entry.
pub(crate) fn sms_number(number: &str, name: &str, groups: &[&str]) -> String {
    let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        "[[sms_numbers]]\nnumber = \"{number}\"\nname = \"{name}\"\ngroups = [{}]\n",
        groups.join(", ")
    )
}

fn token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Reads datagrams until one is a SIP response with a final status; returns that status.
fn final_status(socket: &UdpSocket) -> u16 {
    let mut buf = [0u8; 65_535];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("an answer to the MESSAGE");
        let text = String::from_utf8_lossy(&buf[..n]);
        let status = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        if let Some(status) = status.filter(|s| *s >= 200) {
            return status;
        }
    }
}

fn message(target: &str, daemon: &Daemon, socket: &UdpSocket, from: &str, body: &str) -> String {
    let local = socket.local_addr().unwrap();
    format!(
        "MESSAGE sip:{target}@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from}@127.0.0.1>;tag={tag}\r\n\
         To: <sip:{target}@127.0.0.1>\r\n\
         Call-ID: {call}@127.0.0.1\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {len}\r\n\r\n{body}",
        port = daemon.port,
        branch = token(),
        tag = token(),
        call = token(),
        len = body.len(),
    )
}

/// A customer (`from`, as the trunk writes it) texts `to`, one of the company's numbers; returns
/// once sipdesk has answered (202).
pub(crate) fn text_in(daemon: &Daemon, from: &str, to: &str, body: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = message(to, daemon, &socket, from, body);
    socket
        .send_to(request.as_bytes(), ("127.0.0.1", daemon.port))
        .unwrap();
    assert_eq!(final_status(&socket), 202, "{}", daemon.log());
}

/// An agent's phone (`extension`) texts `to`; the test, as the PBX, answers the forwarded
/// MESSAGE with `pbx_status`, which must come back to the phone.
pub(crate) fn text_from_phone(
    daemon: &Daemon,
    extension: &str,
    to: &str,
    body: &str,
    pbx_status: u16,
) {
    let pbx = UdpSocket::bind(("127.0.0.1", daemon.pbx_port)).expect("the PBX port is free");
    pbx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = message(to, daemon, &phone, extension, body);
    phone
        .send_to(request.as_bytes(), ("127.0.0.1", daemon.port))
        .unwrap();
    let mut buf = [0u8; 65_535];
    let (n, source) = pbx
        .recv_from(&mut buf)
        .expect("the MESSAGE reaches the PBX");
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        forwarded.starts_with("MESSAGE ") && forwarded.contains(body),
        "{forwarded}"
    );
    let head = forwarded.split("\r\n\r\n").next().unwrap_or_default();
    let copied: Vec<&str> = head
        .lines()
        .skip(1)
        .filter(|line| {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str())
        })
        .collect();
    let reason = if pbx_status < 300 {
        "Accepted"
    } else {
        "Not Acceptable Here"
    };
    let mut response = format!("SIP/2.0 {pbx_status} {reason}\r\n");
    for line in copied {
        let lower = line.to_ascii_lowercase();
        if (lower.starts_with("to:") || lower.starts_with("t:")) && !lower.contains("tag=") {
            response.push_str(&format!("{line};tag={}\r\n", token()));
        } else {
            response.push_str(line);
            response.push_str("\r\n");
        }
    }
    response.push_str("Content-Length: 0\r\n\r\n");
    pbx.send_to(response.as_bytes(), source).unwrap();
    assert_eq!(final_status(&phone), pbx_status, "{}", daemon.log());
}

/// Waits until the daemon has `n` finished records (calls and texts) and every one's
/// `helpdesks` deliveries are settled (done or skipped); returns the newest record's id.
pub(crate) fn settle(daemon: &Daemon, n: usize, helpdesks: usize) -> String {
    let id = daemon.ended_calls(n)[0]["id"].as_str().unwrap().to_owned();
    let all = daemon.settled_deliveries(helpdesks * n, Duration::from_secs(60));
    let mine: Vec<&serde_json::Value> =
        all.iter().filter(|d| d["call_id"] == id.as_str()).collect();
    assert_eq!(mine.len(), helpdesks, "{all:#?}\n{}", daemon.log());
    assert!(
        mine.iter()
            .all(|d| d["state"] == "done" || d["state"] == "skipped"),
        "{mine:#?}\n{}",
        daemon.log()
    );
    id
}
