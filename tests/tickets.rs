//! Calls become Zendesk tickets, end to end: SIPp plays the PBX and places calls through the
//! running daemon; two fake Zendesk accounts (see `common/zendesk.rs`) receive what sipdesk
//! delivers, and every ticket, comment, status, assignee and contact is asserted.
//!
//! The two integrations share the groups but not the rules: `zd` logs everything (creating
//! contacts for unknown numbers, out-of-hours calls too), `strict` logs neither out-of-hours
//! calls nor calls from numbers it has no contact for.

mod common;

use std::time::Duration;

use common::calls::caller_scenario;
use common::daemon::{Daemon, SippRun, free_port};
use common::zendesk::{FakeZendesk, Settings, Ticket};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

struct World {
    daemon: Daemon,
    zd: FakeZendesk,
    strict: FakeZendesk,
    ana: u64,
    lead: u64,
    /// The customer Zendesk already knows, +34 600 12 34 56.
    known: u64,
    strict_known: u64,
}

fn config(zd: &FakeZendesk, strict: &FakeZendesk) -> String {
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
agents = [{{ extension = "3001" }}]
ring_timeout = "1s"
wrap_up = "0s"

[[groups]]
name = "closed"
queues = ["300"]
hours = {{}}
agents = [{{ extension = "4001" }}]

[[groups]]
name = "night"
queues = ["400"]
hours = {{}}
agents = [{{ extension = "5001" }}]
overflow = [{{ group = "support", when = ["out_of_hours"] }}]

[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{zd}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["support", "sales", "closed", "night"]
missed = {{ log = "previous", status = "open" }}
missed_assignee = "group:5"
default_assignee = "lead@example.com"
voice_comments = true
tag_rules = [{{ tag = "vip", ticket_tags = ["vip_caller"], priority = "high", type = "incident" }}]
request_timeout = "2s"

[[helpdesks]]
name = "strict"
kind = "zendesk"
base_url = "{strict}"
auth = "oauth"
token_file = "strict.token"
groups = ["support", "sales", "closed", "night"]
create_out_of_hours = false
create_unknown_contacts = false
request_timeout = "2s"
"#,
        zd = zd.url,
        strict = strict.url
    )
}

fn world(name: &str) -> World {
    let zd = FakeZendesk::start(Settings::default());
    let strict = FakeZendesk::start(Settings {
        bearer: Some("oauth-access".to_owned()),
        token: "unused".to_owned(),
        ..Settings::default()
    });
    let ana = zd.add_agent("Ana", "ana@example.com");
    let lead = zd.add_agent("Lead", "lead@example.com");
    let known = zd.add_customer("Known Customer", "+34 600 12 34 56");
    let strict_known = strict.add_customer("Known Customer", "+34600123456");
    let daemon = Daemon::start_with_files(
        name,
        "trusted = [\"127.0.0.1\"]\nrecording_url = \"https://pbx.example.com/rec/{sip_call_id}.wav\"",
        &config(&zd, &strict),
        &[("zd.token", "t0ken\n"), ("strict.token", "oauth-access")],
    );
    World {
        daemon,
        zd,
        strict,
        ana,
        lead,
        known,
        strict_known,
    }
}

/// How a call goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Goes {
    Answered,
    NoAnswer,
    /// Refused without ringing anyone (closed group).
    Refused,
}

/// Places one call and waits until its record and deliveries are settled.
fn call(w: &World, from: &str, queue: &str, goes: Goes, extra_header: Option<&str>) -> String {
    let before = w.daemon.calls().len();
    let agents = match goes {
        Goes::Answered => Some("agents-answer.xml"),
        Goes::NoAnswer => Some("agents-ring-no-answer.xml"),
        Goes::Refused => None,
    };
    let uas = agents.map(|scenario| {
        let run = SippRun {
            scenario,
            ip: "127.0.0.1",
            port: w.daemon.pbx_port,
            target: None,
            service: "",
            calls: 1,
            rate: 0,
            tcp: false,
        }
        .spawn(&w.daemon.dir);
        std::thread::sleep(Duration::from_millis(300));
        run
    });
    let base = if goes == Goes::Answered {
        "caller-answered.xml"
    } else {
        "caller-refused.xml"
    };
    let scenario = caller_scenario(&w.daemon.dir, base, from, extra_header);
    let (code, errors) = SippRun {
        scenario: scenario.to_str().unwrap(),
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", w.daemon.port)),
        service: queue,
        calls: 1,
        rate: 1,
        tcp: false,
    }
    .spawn(&w.daemon.dir)
    .wait();
    assert_eq!(code, 0, "caller SIPp failed:\n{errors}\n{}", w.daemon.log());
    if let Some(uas) = uas {
        let (code, errors) = uas.wait();
        assert_eq!(code, 0, "agents SIPp failed:\n{errors}\n{}", w.daemon.log());
    }
    let calls = w.daemon.ended_calls(before + 1);
    let id = calls[0]["id"].as_str().unwrap().to_owned();
    let deliveries = w.daemon.settled_deliveries(2 * (before + 1), WAIT);
    let mine: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["call_id"] == id.as_str())
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "one delivery per integration: {deliveries:#?}\n{}",
        w.daemon.log()
    );
    assert!(
        mine.iter()
            .all(|d| d["state"] == "done" || d["state"] == "skipped"),
        "{mine:#?}\n{}",
        w.daemon.log()
    );
    id
}

fn delivery(w: &World, call: &str, integration: &str) -> Value {
    w.daemon
        .deliveries()
        .into_iter()
        .find(|d| d["call_id"] == call && d["integration"] == integration)
        .unwrap_or_else(|| panic!("no delivery of {call} to {integration}"))
}

fn ticket_of(fake: &FakeZendesk, call: &str) -> Ticket {
    let tickets: Vec<Ticket> = fake
        .tickets()
        .into_iter()
        .filter(|t| {
            t.comments
                .iter()
                .any(|c| c.body.contains(&format!("[sipdesk:{call}]")))
        })
        .collect();
    assert_eq!(
        tickets.len(),
        1,
        "exactly one ticket holds call {call}: {tickets:#?}"
    );
    tickets.into_iter().next().unwrap()
}

fn note_of(ticket: &Ticket, call: &str) -> String {
    let notes: Vec<&str> = ticket
        .comments
        .iter()
        .filter(|c| c.body.contains(&format!("[sipdesk:{call}]")))
        .map(|c| c.body.as_str())
        .collect();
    assert_eq!(notes.len(), 1, "one note per call: {ticket:#?}");
    assert!(
        ticket.comments.iter().all(|c| !c.public),
        "calls are internal notes: {ticket:#?}"
    );
    notes[0].to_owned()
}

#[test]
fn calls_become_the_tickets_the_rules_say() {
    let w = world("tickets");

    // 1. A known customer's answered call: a new solved ticket, theirs, assigned to the agent.
    let c1 = call(
        &w,
        "600123456",
        "100",
        Goes::Answered,
        Some("X-Sipdesk-Tags: VIP"),
    );
    let t1 = ticket_of(&w.zd, &c1);
    assert_eq!(t1.requester_id, w.known);
    assert_eq!(t1.status, "solved");
    assert_eq!(t1.assignee_id, Some(w.ana));
    assert_eq!(t1.external_id.as_deref(), Some(c1.as_str()));
    assert_eq!(t1.subject.as_deref(), Some("Call from +34600123456"));
    assert_eq!(
        t1.tags,
        ["sipdesk", "sipdesk_inbound_answered", "vip_caller"]
    );
    assert_eq!(
        (t1.priority.as_deref(), t1.kind.as_deref()),
        (Some("high"), Some("incident"))
    );
    let note = note_of(&t1, &c1);
    for line in [
        "Call type: inbound_answered",
        "Agent: 2001 (ana@example.com)",
        "Queue: 100",
        "Group: support",
        "Duration: ",
    ] {
        assert!(note.contains(line), "{line:?} in {note}");
    }
    assert_eq!(
        delivery(&w, &c1, "zd")["detail"],
        format!("created ticket #{}", t1.id)
    );
    // Times are the group's local time, with the offset.
    let offset = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Madrid").unwrap())
        .strftime(" %:z")
        .to_string();
    assert!(
        note.lines()
            .any(|l| l.starts_with("Start: ") && l.ends_with(&offset)),
        "{note}"
    );
    // The voice comment names the agent who answered.
    let voice = t1
        .comments
        .iter()
        .find(|c| c.kind == "VoiceComment")
        .unwrap();
    assert_eq!(voice.data.as_ref().unwrap()["answered_by_id"], w.ana);
    // The strict integration knows the customer too: a ticket there as well, unassigned.
    let s1 = ticket_of(&w.strict, &c1);
    assert_eq!(s1.requester_id, w.strict_known);
    assert_eq!(s1.tags, ["sipdesk", "sipdesk_inbound_answered"]);

    // 2. No answer: missed calls go to the previous ticket, but the latest is solved, so a new
    //    open ticket, for the missed-call group.
    let c2 = call(&w, "600123456", "100", Goes::NoAnswer, None);
    let t2 = ticket_of(&w.zd, &c2);
    assert_ne!(t2.id, t1.id);
    assert_eq!((t2.requester_id, t2.status.as_str()), (w.known, "open"));
    assert_eq!((t2.group_id, t2.assignee_id), (Some(5), None));
    assert_eq!(t2.subject.as_deref(), Some("Missed call from +34600123456"));
    assert!(note_of(&t2, &c2).contains("Call type: missed (no_answer)"));

    // 3. Missed again while that ticket is open: the same ticket, one more note. A tag an
    //    agent put on the ticket meanwhile stays.
    w.zd.add_tag(t2.id, "callback_promised");
    let c3 = call(&w, "600123456", "100", Goes::NoAnswer, None);
    let t3 = ticket_of(&w.zd, &c3);
    assert_eq!(t3.id, t2.id, "the open ticket takes the call");
    assert_eq!(t3.comments.len(), 2);
    assert_eq!(t3.status, "open");
    assert_eq!(
        t3.tags,
        ["sipdesk", "sipdesk_missed", "callback_promised"],
        "the agent's tag kept, the call's added once"
    );
    assert_eq!(
        delivery(&w, &c3, "zd")["detail"],
        format!("added the call to ticket #{} (open)", t2.id)
    );

    // 4. An agent solves it; the next missed call starts a new ticket.
    w.zd.set_status(t2.id, "solved");
    let c4 = call(&w, "600123456", "100", Goes::NoAnswer, None);
    let t4 = ticket_of(&w.zd, &c4);
    assert!(t4.id != t2.id && t4.id != t1.id);
    assert_eq!(t4.status, "open");

    // 5. An unknown number, answered in a group whose agent has no e-mail: a new contact with
    //    the E.164 number, the ticket assigned to the default assignee. The strict integration
    //    logs nothing and says why.
    let users_before = w.zd.users().len();
    let c5 = call(&w, "611222333", "200", Goes::Answered, None);
    let t5 = ticket_of(&w.zd, &c5);
    let users = w.zd.users();
    assert_eq!(users.len(), users_before + 1);
    let new = users.iter().find(|u| u.id == t5.requester_id).unwrap();
    assert_eq!(new.phone.as_deref(), Some("+34611222333"));
    assert_eq!(new.name, "Caller +34 611 22 23 33");
    assert_eq!(new.external_id.as_deref(), Some("sipdesk:+34611222333"));
    assert_eq!(
        (t5.status.as_str(), t5.assignee_id),
        ("solved", Some(w.lead))
    );
    // Answered by an agent with no Zendesk user: assigned to the default assignee, but the
    // voice comment does not pretend the default assignee answered.
    let voice = t5
        .comments
        .iter()
        .find(|c| c.kind == "VoiceComment")
        .unwrap();
    assert!(
        voice.data.as_ref().unwrap().get("answered_by_id").is_none(),
        "{voice:#?}"
    );
    let skipped = delivery(&w, &c5, "strict");
    assert_eq!(skipped["state"], "skipped");
    assert_eq!(
        skipped["detail"],
        "no contact has this number and create_unknown_contacts = false"
    );
    assert!(
        w.strict
            .tickets()
            .iter()
            .all(|t| !t.comments.iter().any(|c| c.body.contains(&c5)))
    );

    // 6. Out of hours, from the same (now known) number, right after: Zendesk's search has not
    //    indexed the new user yet, so only the directory knows it — no search, no second
    //    contact. The latest ticket is solved: a new open one, saying why the call was missed.
    let user_requests = |fake: &FakeZendesk| {
        let endpoints = fake.stats().endpoints;
        [
            "GET /api/v2/users/search",
            "POST /api/v2/users/create_or_update",
        ]
        .map(|e| endpoints.get(e).copied().unwrap_or(0))
    };
    let before_c6 = user_requests(&w.zd);
    let c6 = call(&w, "611222333", "300", Goes::Refused, None);
    let t6 = ticket_of(&w.zd, &c6);
    assert_eq!(t6.requester_id, t5.requester_id);
    assert_eq!(w.zd.users().len(), users_before + 1, "no duplicate contact");
    assert_eq!(
        user_requests(&w.zd),
        before_c6,
        "the directory answered, not Zendesk"
    );
    assert_eq!(t6.status, "open");
    assert!(note_of(&t6, &c6).contains("Call type: missed (out_of_hours)"));
    let skipped = delivery(&w, &c6, "strict");
    assert_eq!(
        skipped["detail"],
        "calls missed out of hours are not logged (create_out_of_hours = false)"
    );

    // 6b. Out of hours too, but the closed group overflows to support, where Ana answers: an
    //     answered call is logged everywhere, create_out_of_hours or not.
    let c6b = call(&w, "600123456", "400", Goes::Answered, None);
    assert_eq!(ticket_of(&w.zd, &c6b).status, "solved");
    assert_eq!(ticket_of(&w.strict, &c6b).requester_id, w.strict_known);

    // 7. Withheld numbers share one anonymous contact where contacts may be created; where they
    //    may not (strict), the anonymous contact is used only once it exists.
    let c7 = call(
        &w,
        "anonymous@anonymous.invalid",
        "100",
        Goes::Answered,
        None,
    );
    let c8 = call(
        &w,
        "anonymous@anonymous.invalid",
        "100",
        Goes::Answered,
        None,
    );
    let (t7, t8) = (ticket_of(&w.zd, &c7), ticket_of(&w.zd, &c8));
    assert_ne!(t7.id, t8.id, "answered calls get a ticket each");
    assert_eq!(t7.requester_id, t8.requester_id);
    let anonymous =
        w.zd.users()
            .into_iter()
            .find(|u| u.id == t7.requester_id)
            .unwrap();
    assert_eq!(
        (anonymous.name.as_str(), anonymous.phone.as_deref()),
        ("Anonymous caller", None)
    );
    assert_eq!(anonymous.external_id.as_deref(), Some("sipdesk:anonymous"));
    for c in [&c7, &c8] {
        let skipped = delivery(&w, c, "strict");
        assert_eq!(skipped["state"], "skipped", "{skipped:#}");
        assert!(
            w.strict
                .users()
                .iter()
                .all(|u| u.external_id.as_deref() != Some("sipdesk:anonymous"))
        );
    }
    let strict_anonymous = w
        .strict
        .add_user_with_external_id("Anonymous", "sipdesk:anonymous");
    let c9 = call(
        &w,
        "anonymous@anonymous.invalid",
        "100",
        Goes::Answered,
        None,
    );
    assert_eq!(ticket_of(&w.strict, &c9).requester_id, strict_anonymous);

    // Nothing else was written, and nothing the API does not know was sent.
    assert_eq!(w.zd.tickets().len(), 9, "{:#?}", w.zd.tickets());
    assert_eq!(w.strict.tickets().len(), 6);
    for fake in [&w.zd, &w.strict] {
        let stats = fake.stats();
        assert!(stats.unknown_keys.is_empty(), "{:?}", stats.unknown_keys);
        assert_eq!(stats.rate_limited, 0);
    }
    assert!(!w.daemon.log().contains("panicked"));
}
