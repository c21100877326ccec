//! Sequences of well-formed SIP messages through the proxy, from both sides, with time passing:
//! calls started, answered or refused by the agents, acknowledged or not, cancelled, hung up
//! from either side, re-INVITEd, transferred (REFER and NOTIFY, connected-line updates), plus
//! outbound calls, stray responses and garbage, in any order
//! the fuzzer finds. Then an orderly end: the caller hangs up (or cancels) every call and every
//! request sipdesk sends is answered 200. After that and the protocol's own timers (64·T1,
//! Timer C, max_wait, wrap-up; `max_call_duration` is a week, so it cannot tidy up for the
//! proxy), nothing may be left: no call, no transaction, no pending request, no agent held. A
//! stuck agent or an unbounded table is a crash here. Run: `cargo fuzz run sequence -s none`.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sipdesk::config::Config;
use sipdesk::proxy::{Core, Local, Now, Output, ProxySettings};
use sipdesk::sip::policy::SharedPolicy;

const CONFIG: &str = r#"
[sip]
pbx = "127.0.0.1:5080"
trusted = ["127.0.0.0/8"]
max_call_duration = "7d"
session_check = "20s"
max_transactions = 1000
[defaults]
timezone = "Europe/Madrid"
region = "ES"
[[groups]]
name = "support"
queues = ["100"]
agents = [{ extension = "2001" }, { extension = "2002" }]
ring_timeout = "5s"
max_wait = "20s"
wrap_up = "3s"
allow_transfer = true
"#;

fn config() -> Arc<Config> {
    static ONCE: OnceLock<Arc<Config>> = OnceLock::new();
    ONCE.get_or_init(|| Arc::new(Config::from_toml(CONFIG, "fuzz.toml").expect("valid")))
        .clone()
}

const CALLER: &str = "127.0.0.1:5070";
const PBX: &str = "127.0.0.1:5080";

/// A header's value in a message.
fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A response to a request sipdesk sent (status, To tag), copying its Via, From, To, Call-ID
/// and CSeq, with a Contact (on one of two addresses) and the Record-Routes on 2xx.
fn respond(request: &str, status: u16, tag: &str) -> String {
    respond_from(request, status, tag, "127.0.0.1")
}

fn respond_from(request: &str, status: u16, tag: &str, contact_ip: &str) -> String {
    let mut out = format!("SIP/2.0 {status} Whatever\r\n");
    for line in request.lines().skip(1) {
        let Some((name, _)) = line.split_once(':') else { break };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "record-route" if (200..300).contains(&status) => {
                out.push_str(&format!("{line}\r\n"))
            }
            "to" if line.contains("tag=") || status == 100 => out.push_str(&format!("{line}\r\n")),
            "to" => out.push_str(&format!("{line};tag={tag}\r\n")),
            _ => {}
        }
    }
    if (200..300).contains(&status) {
        out.push_str(&format!("Contact: <sip:2001@{contact_ip}:5080>\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

struct Run {
    core: Core,
    now: Now,
    /// Requests sipdesk sent, by Call-ID, newest last: (to the PBX?, text).
    sent: HashMap<String, Vec<(bool, String)>>,
    /// The agent's To tag each call was answered with.
    tags: HashMap<String, String>,
}

impl Run {
    fn collect(&mut self) {
        for output in self.core.outputs() {
            if let Output::Send { peer, bytes } = output {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if !text.starts_with("SIP/2.0") {
                    if let Some(id) = header(&text, "Call-ID") {
                        let to_pbx = peer.addr.port() == 5080;
                        let list = self.sent.entry(id.to_owned()).or_default();
                        list.push((to_pbx, text));
                        if list.len() > 16 {
                            list.remove(0);
                        }
                    }
                }
            }
        }
    }

    fn receive(&mut self, from: &str, text: &str) {
        let from: SocketAddr = from.parse().unwrap();
        self.core.on_datagram(self.now, text.as_bytes(), from);
        self.collect();
    }

    fn advance(&mut self, d: Duration) {
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

    /// The last request of `call` sipdesk sent to the PBX (`pbx`) or the caller.
    fn last_sent(&self, call: &str, pbx: bool, method: Option<&str>) -> Option<String> {
        self.sent.get(call)?.iter().rev().find_map(|(to_pbx, text)| {
            (*to_pbx == pbx && method.is_none_or(|m| text.starts_with(m))).then(|| text.clone())
        })
    }
}

fn invite(call: &str, branch: u8, from_user: &str, to: &str) -> String {
    format!(
        "INVITE sip:{to}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKf{branch}\r\nFrom: <sip:{from_user}@127.0.0.1>;tag=caller{call}\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_user}@{CALLER}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn in_dialog(method: &str, call: &str, agent_tag: &str, cseq: u32, from_caller: bool) -> String {
    in_dialog_with(method, call, agent_tag, cseq, from_caller, "", "")
}

/// A request inside the dialog with more headers (each ending in CRLF) and a body.
fn in_dialog_with(
    method: &str,
    call: &str,
    agent_tag: &str,
    cseq: u32,
    from_caller: bool,
    headers: &str,
    body: &str,
) -> String {
    let (from, to) = if from_caller {
        (
            format!("<sip:600123456@127.0.0.1>;tag=caller{call}"),
            format!("<sip:100@127.0.0.1>;tag={agent_tag}"),
        )
    } else {
        (
            format!("<sip:100@127.0.0.1>;tag={agent_tag}"),
            format!("<sip:600123456@127.0.0.1>;tag=caller{call}"),
        )
    };
    let (via, uri) = if from_caller {
        (CALLER, "sip:2001@127.0.0.1:5080")
    } else {
        (PBX, "sip:600123456@127.0.0.1:5070")
    };
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKd{method}{cseq}{call}\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const STATUSES: [u16; 10] = [100, 180, 183, 200, 486, 480, 603, 408, 500, 481];

fuzz_target!(|data: &[u8]| {
    let config = config();
    let local = Local { host: "127.0.0.1".into(), port: 5060 };
    let settings = ProxySettings::new(
        &config,
        local,
        vec!["127.0.0.1:5060".parse().unwrap()],
        PBX.parse().unwrap(),
    );
    let policy = SharedPolicy::new(config.sip.policy("127.0.0.1".parse().unwrap()));
    let mut run = Run {
        core: Core::new(settings, config, policy, Default::default(), &[]),
        now: Now::system(),
        sent: HashMap::new(),
        tags: HashMap::new(),
    };
    let mut bytes = data.iter().copied();
    let mut step = 0;
    while let Some(op) = bytes.next() {
        step += 1;
        if step > 400 {
            break;
        }
        let arg = bytes.next().unwrap_or(0);
        let call = format!("c{}", arg % 4);
        let tag = run.tags.get(&call).cloned().unwrap_or_else(|| format!("t{}", arg % 3));
        match op % 16 {
            0 => run.receive(CALLER, &invite(&call, arg, "600123456", "100")),
            1 => run.receive(PBX, &invite(&call, arg, "2001", "+34911239613")),
            2 | 3 => {
                if let Some(request) = run.last_sent(&call, true, Some("INVITE")) {
                    let status = STATUSES[usize::from(arg) % STATUSES.len()];
                    let agent_tag = format!("a{}", arg % 3);
                    if status == 200 {
                        run.tags.insert(call.clone(), agent_tag.clone());
                    }
                    let contact_ip = if arg % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
                    run.receive(PBX, &respond_from(&request, status, &agent_tag, contact_ip));
                }
            }
            4 => run.receive(CALLER, &in_dialog("ACK", &call, &tag, 1, true)),
            5 => run.receive(CALLER, &in_dialog("BYE", &call, &tag, 2 + u32::from(arg % 3), true)),
            6 => run.receive(PBX, &in_dialog("BYE", &call, &tag, 1 + u32::from(arg % 3), false)),
            7 => {
                let cancel = invite(&call, arg, "600123456", "100")
                    .replace("INVITE sip:", "CANCEL sip:")
                    .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
                run.receive(CALLER, &cancel);
            }
            8 => {
                // An answer to whatever sipdesk last sent itself (BYE, OPTIONS) or forwarded.
                let to_pbx = arg % 2 == 0;
                if let Some(request) = run.last_sent(&call, to_pbx, None) {
                    if !request.starts_with("ACK") {
                        let status = STATUSES[usize::from(arg / 2) % STATUSES.len()];
                        let from = if to_pbx { PBX } else { CALLER };
                        run.receive(from, &respond(&request, status, &tag));
                    }
                }
            }
            9 => run.advance(Duration::from_millis(u64::from(arg) * 50)),
            10 => run.advance(Duration::from_secs(u64::from(arg % 64))),
            11 => run.receive(CALLER, &in_dialog("INVITE", &call, &tag, 3 + u32::from(arg % 3), true)),
            12 => {
                let n = usize::from(arg);
                let raw: Vec<u8> = bytes.by_ref().take(n).collect();
                run.core.on_datagram(run.now, &raw, CALLER.parse().unwrap());
                run.collect();
            }
            13 => run.receive(CALLER, &invite(&call, arg, "600123456", "100")),
            14 => {
                // From the agent's side: INFO, a REFER, or a connected-line update, naming a
                // configured agent, the one who answered, or an extension sipdesk does not know.
                let cseq = 1 + u32::from(arg % 5);
                let who = ["2002", "2001", "4999"][usize::from(arg / 4) % 3];
                let request = match (arg / 16) % 3 {
                    1 => in_dialog_with("REFER", &call, &tag, cseq, false, &format!("Refer-To: <sip:{who}@127.0.0.1>\r\n"), ""),
                    2 => in_dialog_with("UPDATE", &call, &tag, cseq, false, &format!("P-Asserted-Identity: <sip:{who}@127.0.0.1>\r\n"), ""),
                    _ => in_dialog("INFO", &call, &tag, cseq, false),
                };
                run.receive(PBX, &request);
            }
            _ => {
                let cseq = 2 + u32::from(arg % 5);
                if (arg / 4) % 3 == 0 {
                    // The transferee's report on a REFER: trying, done or failed.
                    let status = ["100 Trying", "200 OK", "486 Busy Here"][usize::from(arg / 12) % 3];
                    let headers = format!("Event: refer;id={}\r\nSubscription-State: active\r\nContent-Type: message/sipfrag\r\n", arg % 5);
                    let body = format!("SIP/2.0 {status}\r\n");
                    run.receive(CALLER, &in_dialog_with("NOTIFY", &call, &tag, cseq, true, &headers, &body));
                } else {
                    run.receive(CALLER, &in_dialog("UPDATE", &call, &tag, cseq, true));
                }
            }
        }
    }
    // The orderly end: every call hung up or cancelled by its caller, whatever agent answered,
    // and every request sipdesk sends answered 200 (it may take a few rounds: a BYE forwarded
    // to the agent, sipdesk's own BYEs).
    for n in 0..4 {
        let call = format!("c{n}");
        let cancel = invite(&call, 0, "600123456", "100")
            .replace("INVITE sip:", "CANCEL sip:")
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
        run.receive(CALLER, &cancel);
        for tag in ["a0", "a1", "a2", "t0", "t1", "t2"] {
            run.receive(CALLER, &in_dialog("BYE", &call, tag, 100, true));
        }
    }
    for _ in 0..4 {
        let waiting: Vec<(bool, String)> = run.sent.values().flatten().cloned().collect();
        run.sent.clear();
        for (to_pbx, request) in waiting {
            if !request.starts_with("ACK") {
                run.receive(if to_pbx { PBX } else { CALLER }, &respond(&request, 200, "end"));
            }
        }
        run.advance(Duration::from_secs(1));
    }
    // Long enough for max_wait, Timer C, 64·T1 lingering and wrap-up.
    run.advance(Duration::from_secs(20 * 60));
    let census = run.core.census();
    assert_eq!(census.active_calls, 0, "{census:?}");
    assert_eq!(census.calls, 0, "a call outlived its timers: {census:?}");
    assert_eq!(census.busy_agents, 0, "an agent is held after every call ended: {census:?}");
    assert_eq!(census.outbound_calls, 0, "{census:?}");
    assert_eq!(census.pending_requests, 0, "{census:?}");
    assert_eq!(
        (census.server_transactions, census.client_transactions),
        (0, 0),
        "{census:?}"
    );
});
