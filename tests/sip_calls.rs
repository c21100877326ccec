//! Queue calls through the real daemon, with SIPp playing the PBX: the caller side (UAC) sends
//! the queue call to sipdesk, the agent side (UAS, at the PBX address) answers for the agents'
//! extensions. Each test asserts on what SIPp saw (its exit code: every expected message arrived,
//! nothing unexpected) and on the call records (`sipdesk calls --json`).

mod common;

use common::daemon::{Daemon, SippRun, free_port};
use common::zendesk::{FakeZendesk, Settings};
use serde_json::Value;

fn body() -> String {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Madrid").unwrap())
        .date();
    format!(
        r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
agents = [{{ extension = "2001", email = "ana@example.com" }}, {{ extension = "2002" }}]
ring_timeout = "1s"
wrap_up = "0s"
overflow = [{{ group = "sales", when = ["no_agents"] }}]

[[groups]]
name = "sales"
queues = ["200"]
agents = [{{ extension = "3001" }}]
wrap_up = "0s"

[[groups]]
name = "closed"
queues = ["300"]
hours = {{}}
agents = [{{ extension = "4001" }}]

[[groups]]
name = "feast"
queues = ["400"]
own_holidays = [{{ date = "{today}", name = "Test holiday" }}]
agents = [{{ extension = "5001" }}]

[[groups]]
name = "trio"
queues = ["500"]
agents = [{{ extension = "6001" }}, {{ extension = "6002" }}, {{ extension = "6003" }}]
wrap_up = "0s"
"#
    )
}

fn start(name: &str) -> Daemon {
    Daemon::start(name, "trusted = [\"127.0.0.1\"]", &body())
}

/// Runs the agents' scenario at the PBX address and the caller's scenario against sipdesk; both
/// must succeed for every call.
fn run(
    daemon: &Daemon,
    agents: Option<&str>,
    caller: &str,
    queue: &str,
    calls: u32,
    caller_tcp: bool,
    agents_tcp: bool,
) {
    let uas = agents.map(|scenario| {
        let uas = SippRun {
            scenario,
            ip: "127.0.0.1",
            port: daemon.pbx_port,
            target: None,
            service: "",
            calls,
            rate: 0,
            tcp: agents_tcp,
        }
        .spawn(&daemon.dir);
        std::thread::sleep(std::time::Duration::from_millis(300));
        uas
    });
    let uac = SippRun {
        scenario: caller,
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: queue,
        calls,
        rate: 10,
        tcp: caller_tcp,
    }
    .spawn(&daemon.dir);
    let (code, errors) = uac.wait();
    assert_eq!(
        code,
        0,
        "the caller's SIPp failed:\n{errors}\nsipdesk:\n{}",
        daemon.log()
    );
    if let Some(uas) = uas {
        let (code, errors) = uas.wait();
        assert_eq!(
            code,
            0,
            "the agents' SIPp failed:\n{errors}\nsipdesk:\n{}",
            daemon.log()
        );
    }
}

fn only_call(daemon: &Daemon) -> Value {
    let calls = daemon.ended_calls(1);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    calls.into_iter().next().unwrap()
}

fn events(call: &Value) -> Vec<String> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["kind"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn an_answered_call_ends_with_the_callers_bye() {
    let mut daemon = start("answered");
    run(
        &daemon,
        Some("agents-answer.xml"),
        "caller-answered.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["agent"], "2001");
    assert_eq!(call["group"], "support");
    assert_eq!(call["ended_by"], "caller");
    assert_eq!(call["queue"], "100");
    assert_eq!(call["caller"], "+34600123456");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn an_answered_call_ends_with_the_agents_bye() {
    let mut daemon = start("agent-bye");
    run(
        &daemon,
        Some("agents-answer-agent-hangs-up.xml"),
        "caller-answered-agent-hangs-up.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["ended_by"], "agent");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn an_agent_who_does_not_answer_is_cancelled_and_the_next_one_rung() {
    let mut daemon = start("no-answer");
    run(
        &daemon,
        Some("agents-2001-no-answer-2002-answers.xml"),
        "caller-answered.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["agent"], "2002");
    let events = events(&call);
    assert!(
        events.contains(&"no_answer: 2001: no answer after 1s".to_owned()),
        "{events:#?}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_busy_agent_is_passed_over_for_the_next_one() {
    let mut daemon = start("busy");
    run(
        &daemon,
        Some("agents-2001-busy-2002-answers.xml"),
        "caller-answered.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["agent"], "2002");
    assert!(
        events(&call).contains(&"declined: 2001 answered 486 Busy Here".to_owned()),
        "{:#?}",
        events(&call)
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_caller_who_hangs_up_while_ringing_is_an_abandoned_call() {
    let mut daemon = start("abandoned");
    run(
        &daemon,
        Some("agents-2001-rings.xml"),
        "caller-cancels.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["outcome"], "missed");
    assert_eq!(call["reason"], "abandoned");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn when_every_agent_is_busy_the_call_overflows() {
    let mut daemon = start("overflow");
    run(
        &daemon,
        Some("agents-all-busy-3001-answers.xml"),
        "caller-answered.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["agent"], "3001");
    assert_eq!(call["group"], "sales");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn out_of_hours_calls_are_refused_480_and_recorded_missed() {
    let mut daemon = start("closed");
    run(&daemon, None, "caller-refused.xml", "300", 1, false, false);
    let call = only_call(&daemon);
    assert_eq!(call["outcome"], "missed");
    assert_eq!(call["reason"], "out_of_hours");
    assert!(
        call["explanation"][1]
            .as_str()
            .unwrap()
            .starts_with("closed: closed ("),
        "{call:#?}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn holiday_calls_are_refused_480_and_recorded_missed() {
    let mut daemon = start("holiday");
    run(&daemon, None, "caller-refused.xml", "400", 1, false, false);
    let call = only_call(&daemon);
    assert_eq!(call["reason"], "holiday");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_retransmitted_invite_over_udp_is_absorbed() {
    let mut daemon = start("retransmission");
    // The agents' side takes exactly one INVITE: a second one would fail its scenario.
    run(
        &daemon,
        Some("agents-answer.xml"),
        "caller-retransmits.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["outcome"], "answered");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_caller_over_tcp_reaches_agents_over_udp() {
    let mut daemon = start("tcp-caller");
    run(
        &daemon,
        Some("agents-answer.xml"),
        "caller-answered.xml",
        "100",
        1,
        true,
        false,
    );
    assert_eq!(only_call(&daemon)["outcome"], "answered");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn agents_are_reached_over_tcp_when_configured() {
    let mut daemon = Daemon::start(
        "tcp-agents",
        "trusted = [\"127.0.0.1\"]\npbx_transport = \"tcp\"",
        &body(),
    );
    run(
        &daemon,
        Some("agents-answer.xml"),
        "caller-answered.xml",
        "100",
        1,
        false,
        true,
    );
    assert_eq!(only_call(&daemon)["outcome"], "answered");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn requests_from_untrusted_addresses_are_refused_and_nothing_is_recorded() {
    let mut daemon = start("untrusted");
    let uac = SippRun {
        scenario: "caller-untrusted.xml",
        ip: "127.0.0.2",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: "100",
        calls: 1,
        rate: 1,
        tcp: false,
    }
    .spawn(&daemon.dir);
    let (code, errors) = uac.wait();
    assert_eq!(code, 0, "{errors}\n{}", daemon.log());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(daemon.calls().is_empty());
    run(&daemon, None, "options.xml", "", 1, false, false);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn twenty_calls_in_a_row_are_spread_round_robin_over_three_agents() {
    let mut daemon = start("round-robin");
    run(
        &daemon,
        Some("agents-answer.xml"),
        "caller-answered.xml",
        "500",
        20,
        false,
        false,
    );
    let calls = daemon.ended_calls(20);
    let mut counts = std::collections::BTreeMap::new();
    for call in &calls {
        assert_eq!(call["outcome"], "answered");
        *counts
            .entry(call["agent"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    let (min, max) = (
        counts.values().min().unwrap(),
        counts.values().max().unwrap(),
    );
    assert!(max - min <= 1, "{counts:?}");
    assert_eq!(daemon.stop(), Some(0));
}

/// Two groups for transfers: `support` (queue 100) allows them, `strict` (queue 600) does not;
/// both agents of `support` have e-mails. Calls are logged to the Zendesk at `zendesk`.
fn transfers(zendesk: &str) -> String {
    format!(
        r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
agents = [{{ extension = "2001", email = "ana@example.com" }}, {{ extension = "2002", email = "bea@example.com" }}]
ring_timeout = "1s"
wrap_up = "0s"
allow_transfer = true

[[groups]]
name = "strict"
queues = ["600"]
agents = [{{ extension = "7001", email = "ana@example.com" }}]
ring_timeout = "1s"
wrap_up = "0s"

[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{zendesk}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["support", "strict"]
request_timeout = "2s"
"#
    )
}

fn extensions(call: &Value) -> Vec<&str> {
    call["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["extension"].as_str().unwrap())
        .collect()
}

#[test]
fn a_refer_transfer_reassigns_the_zendesk_ticket_to_the_new_agent() {
    let zd = FakeZendesk::start(Settings::default());
    let ana = zd.add_agent("Ana", "ana@example.com");
    let bea = zd.add_agent("Bea", "bea@example.com");
    let mut daemon = Daemon::start_with_files(
        "transfer",
        "trusted = [\"127.0.0.1\"]",
        &transfers(&zd.url),
        &[("zd.token", "t0ken\n")],
    );
    // 2001 answers and transfers to 2002 with REFER; the caller's side reports it done in a
    // NOTIFY (sipfrag 200 OK), then 2001 hangs up its leg.
    run(
        &daemon,
        Some("agents-answer-then-transfer.xml"),
        "caller-answered-transferred.xml",
        "100",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["ended_by"], "agent");
    assert_eq!(call["agent"], "2002");
    assert_eq!(extensions(&call), vec!["2001", "2002"]);
    assert_eq!(call["agents"][0]["until"], call["agents"][1]["from"]);
    let events = events(&call);
    assert!(
        events.contains(&"transfer: 2001 transfers the call to 2002 (REFER)".to_owned())
            && events.contains(
                &"transfer: 2001 transferred the call to 2002 (NOTIFY 200 OK)".to_owned()
            ),
        "{events:#?}"
    );
    let deliveries = daemon.settled_deliveries(1, std::time::Duration::from_secs(30));
    assert_eq!(
        deliveries[0]["state"],
        "done",
        "{deliveries:#?}\n{}",
        daemon.log()
    );
    let tickets = zd.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(
        tickets[0].assignee_id,
        Some(bea),
        "assigned to 2002's user (Bea), not 2001's (Ana, {ana})"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_refer_in_a_group_without_transfers_is_refused_403_and_the_ticket_stays_with_the_agent() {
    let zd = FakeZendesk::start(Settings::default());
    let ana = zd.add_agent("Ana", "ana@example.com");
    let mut daemon = Daemon::start_with_files(
        "transfer-refused",
        "trusted = [\"127.0.0.1\"]",
        &transfers(&zd.url),
        &[("zd.token", "t0ken\n")],
    );
    // The agents' SIPp expects the 403 to its REFER; the caller's side never sees the REFER.
    run(
        &daemon,
        Some("agents-answer-transfer-refused.xml"),
        "caller-answered-agent-hangs-up.xml",
        "600",
        1,
        false,
        false,
    );
    let call = only_call(&daemon);
    assert_eq!(call["agent"], "7001");
    assert_eq!(extensions(&call), vec!["7001"]);
    assert!(
        events(&call).contains(
            &"transfer: 7001 asked to transfer the call to 2002: refused (403), group strict does not allow transfers"
                .to_owned()
        ),
        "{:#?}",
        events(&call)
    );
    daemon.settled_deliveries(1, std::time::Duration::from_secs(30));
    let tickets = zd.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    assert_eq!(tickets[0].assignee_id, Some(ana));
    assert_eq!(daemon.stop(), Some(0));
}
