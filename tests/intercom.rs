//! Calls become Intercom conversations, end to end: SIPp plays the PBX and places calls through
//! the running daemon; two fake Intercom workspaces (`common/intercom.rs`, built from
//! Intercom's OpenAPI file) receive them.
//!
//! `ic` joins a contact's latest open conversation (`log = "previous"`), creates leads for
//! unknown numbers and logs withheld numbers under one anonymous lead; `strict` creates nobody
//! and has no anonymous lead.

mod common;

use std::time::Duration;

use common::calls::caller_scenario;
use common::daemon::{Daemon, SippRun, free_port};
use common::intercom::{FakeIntercom, Fault, Settings};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

fn config(ic: &str, strict: &str) -> String {
    format!(
        r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
agents = [{{ extension = "2001", email = "ana@example.com" }}]
ring_timeout = "1s"
wrap_up = "0s"

[[groups]]
name = "sales"
queues = ["200"]
agents = [{{ extension = "3001", email = "carl@example.com" }}]
ring_timeout = "1s"
wrap_up = "0s"

[[groups]]
name = "closed"
queues = ["300"]
hours = {{}}
agents = [{{ extension = "4001" }}]

[[helpdesks]]
name = "ic"
kind = "intercom"
base_url = "{ic}"
token_file = "ic.token"
admin_email = "boss@example.com"
anonymous_email = "anonymous@example.com"
groups = ["support", "sales", "closed"]
inbound_answered = {{ log = "previous" }}
missed = {{ log = "previous" }}
request_timeout = "2s"

[[helpdesks]]
name = "strict"
kind = "intercom"
base_url = "{strict}"
token_file = "strict.token"
admin_email = "boss@example.com"
groups = ["support", "sales", "closed"]
create_unknown_contacts = false
request_timeout = "2s"
"#
    )
}

/// Places one call and waits until both its deliveries are settled; returns the call id.
fn call(
    daemon: &Daemon,
    n: usize,
    from: &str,
    queue: &str,
    agents: Option<&str>,
    answered: bool,
    header: Option<&str>,
) -> String {
    let uas = agents.map(|scenario| daemon.agents(scenario, 1));
    let base = if answered {
        "caller-answered.xml"
    } else {
        "caller-refused.xml"
    };
    let scenario = caller_scenario(&daemon.dir, base, from, header);
    let (code, errors) = SippRun {
        scenario: scenario.to_str().unwrap(),
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: queue,
        calls: 1,
        rate: 1,
        tcp: false,
    }
    .spawn(&daemon.dir)
    .wait();
    assert_eq!(code, 0, "caller SIPp failed:\n{errors}\n{}", daemon.log());
    if let Some(uas) = uas {
        daemon.succeeded(uas);
    }
    let id = daemon.ended_calls(n)[0]["id"].as_str().unwrap().to_owned();
    let all = daemon.settled_deliveries(2 * n, WAIT);
    let mine: Vec<&Value> = all.iter().filter(|d| d["call_id"] == id.as_str()).collect();
    assert_eq!(mine.len(), 2, "{all:#?}\n{}", daemon.log());
    assert!(
        mine.iter()
            .all(|d| d["state"] == "done" || d["state"] == "skipped"),
        "{mine:#?}\n{}",
        daemon.log()
    );
    id
}

fn delivery(daemon: &Daemon, call: &str, integration: &str) -> Value {
    daemon
        .deliveries()
        .into_iter()
        .find(|d| d["call_id"] == call && d["integration"] == integration)
        .unwrap_or_else(|| panic!("no delivery of {call} to {integration}"))
}

#[test]
fn calls_become_conversations_as_the_seed_says() {
    let ic = FakeIntercom::start(Settings::default());
    let strict = FakeIntercom::start(Settings {
        token: "strict-token".to_owned(),
        ..Settings::default()
    });
    let boss = ic.add_admin("boss@example.com");
    let ana = ic.add_admin("ana@example.com");
    strict.add_admin("boss@example.com");
    let known = ic.add_contact("user", Some("+34600123456"), None, false);
    let _old = ic.add_conversation(&known, true, Duration::from_secs(7200));
    let latest = ic.add_conversation(&known, true, Duration::from_secs(600));
    let _closed = ic.add_conversation(&known, false, Duration::from_secs(60));
    ic.add_contact("lead", Some("+34644555666"), None, false);
    ic.add_contact("user", Some("+34644555666"), None, false);
    // The anonymous lead exists but search does not show it yet: creating it again is a 409.
    let anonymous = ic.add_contact("lead", None, Some("anonymous@example.com"), true);
    let strict_known = strict.add_contact("user", Some("+34600123456"), None, false);

    let daemon = Daemon::start_in(
        common::daemon::test_dir("intercom"),
        "trusted = [\"127.0.0.1\"]\nrecording_url = \"https://pbx.example.com/rec/{sip_call_id}.wav\"",
        &config(&ic.url, &strict.url),
        None,
        &[("ic.token", "ic-token\n"), ("strict.token", "strict-token")],
    );

    // 1. A known contact calls and Ana (an Intercom admin) answers: the call joins their most
    //    recently updated open conversation, as the contact's message, then the admin's note;
    //    it is assigned to Ana and tagged with the call's tag.
    let first = call(
        &daemon,
        1,
        "600123456",
        "100",
        Some("agents-answer.xml"),
        true,
        Some("X-Sipdesk-Tags: vip"),
    );
    let joined = ic.conversation(&latest);
    let kinds: Vec<&str> = joined.parts.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["comment", "note", "assignment"], "{joined:#?}");
    assert_eq!(joined.parts[0].body, "Inbound call answered on support");
    assert_eq!(joined.parts[0].author, known, "the contact's own message");
    let note = &joined.parts[1].body;
    assert_eq!(
        joined.parts[1].author, boss,
        "notes are written by admin_email's admin"
    );
    assert!(
        note.contains("Number: +34600123456") && note.contains("Agent: 2001 (ana@example.com)"),
        "{note}"
    );
    assert!(
        note.contains("Recording: https://pbx.example.com/rec/")
            && note.contains(&format!("[sipdesk:{first}]")),
        "{note}"
    );
    assert_eq!(joined.assignee.as_deref(), Some(ana.as_str()));
    assert_eq!(joined.tags, ["vip"]);
    assert_eq!(ic.conversations().len(), 3, "no new conversation");
    // `strict` logs new conversations (the default), assigned to the admin (Ana is none there).
    let made = strict.conversations();
    assert_eq!(made.len(), 1);
    assert_eq!(
        (made[0].contact.as_str(), made[0].source.as_str()),
        (strict_known.as_str(), "Inbound call answered on support")
    );
    assert!(made[0].assignee.is_some());

    // 2. Several contacts share a number: not logged (the seed), with the reason.
    let second = call(
        &daemon,
        2,
        "644555666",
        "100",
        Some("agents-ring-no-answer.xml"),
        false,
        None,
    );
    let shared = delivery(&daemon, &second, "ic");
    assert_eq!(shared["state"], "skipped");
    assert!(
        shared
            .to_string()
            .contains("2 Intercom contacts have this number"),
        "{shared:#}"
    );

    // 3. An unknown number, answered by Carl, who is no Intercom admin: a lead "<E.164> New
    //    contact", a new conversation assigned to admin_email's admin. Intercom fails once
    //    with a 500 first; the retry still makes one conversation.
    ic.fail_next(1, Fault::Status(500));
    let third = call(
        &daemon,
        3,
        "633444555",
        "200",
        Some("agents-answer.xml"),
        true,
        None,
    );
    let lead = ic
        .contacts()
        .into_iter()
        .find(|c| c.phone.as_deref() == Some("+34633444555"))
        .expect("a lead for the number");
    assert_eq!(
        (lead.role.as_str(), lead.name.as_deref()),
        ("lead", Some("+34633444555 New contact"))
    );
    let theirs: Vec<_> = ic
        .conversations()
        .into_iter()
        .filter(|c| c.contact == lead.id)
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0].source, "Inbound call answered on sales");
    assert_eq!(theirs[0].assignee.as_deref(), Some(boss.as_str()));
    assert!(
        delivery(&daemon, &third, "ic")["attempts"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_eq!(delivery(&daemon, &third, "strict")["state"], "skipped");

    // 4. Nobody can take the call (a closed group), from a withheld number: the anonymous lead
    //    (found through the 409 on create), a "Missed call" left unassigned; `strict` has no
    //    anonymous lead.
    let fourth = call(&daemon, 4, "anonymous", "300", None, false, None);
    assert_eq!(ic.stats().conflicts, 1);
    let missed: Vec<_> = ic
        .conversations()
        .into_iter()
        .filter(|c| c.contact == anonymous)
        .collect();
    assert_eq!(missed.len(), 1, "{missed:#?}");
    assert_eq!(missed[0].source, "Missed call on closed");
    assert_eq!(
        missed[0].assignee, None,
        "left to Intercom's own assignment rules"
    );
    let none = delivery(&daemon, &fourth, "strict");
    assert_eq!(none["state"], "skipped");
    assert!(none.to_string().contains("anonymous_email"), "{none:#}");

    for (name, fake) in [("ic", &ic), ("strict", &strict)] {
        let stats = fake.stats();
        assert!(
            stats.rejections.is_empty(),
            "{name} refused requests: {:#?}",
            stats.rejections
        );
        assert_eq!(stats.unauthorized, 0);
    }
}
