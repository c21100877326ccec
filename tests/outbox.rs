//! The outbox under failure, end to end: a helpdesk that errors, throttles, hangs or answers
//! HTML; a daemon killed with SIGKILL in the middle of a burst; credentials that are wrong and
//! then fixed; a request Zendesk rejects; a caller number that is not one. Every call must end in
//! exactly one ticket where the rules say so, or in a failed delivery that says why — never
//! lost, never twice. SQLite always, PostgreSQL too when `SIPDESK_TEST_POSTGRES_URL` is set.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::TestDb;
use common::calls::{answered_calls, caller_scenario, groups, numbers};
use common::daemon::{Daemon, SippRun, free_port, test_dir};
use common::zendesk::{FakeZendesk, Fault, Settings};
use serde_json::Value;

fn zendesk(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[helpdesks]]\nname = \"{name}\"\nkind = \"zendesk\"\nbase_url = \"{url}\"\nemail = \"bot@example.com\"\n\
         token_file = \"{name}.token\"\ngroups = [\"support\"]\nrequest_timeout = \"2s\"\n{extra}\n"
    )
}

/// Every call's marker is in exactly one ticket, and the tickets hold nothing else; every
/// contact's phone is on one user only.
fn assert_once_each(fake: &FakeZendesk, calls: &[Value]) {
    let tickets = fake.tickets();
    assert_eq!(tickets.len(), calls.len(), "one ticket per call");
    let mut by_call: HashMap<String, usize> = HashMap::new();
    for ticket in &tickets {
        for comment in &ticket.comments {
            if let Some(start) = comment.body.find("[sipdesk:") {
                let id = comment.body[start + 9..].trim_end_matches(']').to_owned();
                *by_call.entry(id).or_default() += 1;
            }
        }
    }
    for call in calls {
        let id = call["id"].as_str().unwrap();
        assert_eq!(
            by_call.get(id),
            Some(&1),
            "call {id} is in exactly one ticket"
        );
    }
    let mut phones: Vec<String> = fake.users().into_iter().filter_map(|u| u.phone).collect();
    let all = phones.len();
    phones.sort();
    phones.dedup();
    assert_eq!(phones.len(), all, "a phone number on two users");
}

#[test]
fn a_helpdesk_that_fails_then_recovers_gets_every_ticket_once() {
    let fake = FakeZendesk::start(Settings::default());
    fake.add_agent("Ana", "ana@example.com");
    // The first request hangs (past request_timeout), then 503s with Retry-After, 500s, 429s.
    fake.fail_next(1, Fault::Hang);
    fake.fail_next(2, Fault::Unavailable { retry_after: 1 });
    fake.fail_for(Duration::from_secs(3), Fault::Status(500));
    let body = format!("{}{}", groups(10), zendesk("zd", &fake.url, ""));
    let daemon = Daemon::start_with_files(
        "recover",
        "trusted = [\"127.0.0.1\"]",
        &body,
        &[("zd.token", "t0ken")],
    );
    let callers: Vec<String> = numbers(5, 0).into_iter().cycle().take(10).collect();
    answered_calls(&daemon, &callers, 10, 10);
    // Then the account throttles for a while.
    fake.fail_for(
        Duration::from_secs(3),
        Fault::RateLimited { retry_after: 2 },
    );
    let calls = daemon.ended_calls(10);
    let deliveries = daemon.settled_deliveries(10, Duration::from_secs(90));
    assert!(
        deliveries.iter().all(|d| d["state"] == "done"),
        "{deliveries:#?}\n{}",
        daemon.log()
    );
    assert_once_each(&fake, &calls);
    assert_eq!(
        fake.users().iter().filter(|u| u.phone.is_some()).count(),
        5,
        "one contact per caller"
    );
    let retried = deliveries
        .iter()
        .filter(|d| d["attempts"].as_u64().unwrap() > 1)
        .count();
    assert!(
        retried > 0,
        "some deliveries needed more than one attempt: {deliveries:#?}"
    );
    let stats = fake.stats();
    assert!(stats.faults_served >= 4, "{stats:?}");
    assert!(stats.unknown_keys.is_empty(), "{:?}", stats.unknown_keys);
    assert!(!daemon.log().contains("panicked"));
}

fn kill_mid_burst(db: Option<&TestDb>) {
    let label = db.map_or("sqlite", |d| d.label);
    let fake = FakeZendesk::start(Settings {
        latency: Duration::from_millis(100),
        ..Settings::default()
    });
    fake.add_agent("Ana", "ana@example.com");
    let body = format!(
        "{}{}",
        groups(60),
        zendesk("zd", &fake.url, "requests_per_minute = 3000")
    );
    let mut daemon = Daemon::start_in(
        test_dir("kill"),
        "trusted = [\"127.0.0.1\"]",
        &body,
        db.map(|d| d.url.as_str()),
        &[("zd.token", "t0ken")],
    );
    let callers = numbers(200, 100);
    answered_calls(&daemon, &callers, 100, 50);
    let calls = daemon.ended_calls(200);
    // Kill once a quarter is delivered, with requests in flight.
    let tickets = fake.wait_for_tickets(50, Duration::from_secs(60));
    assert!(
        tickets.len() >= 50,
        "{label}: deliveries did not start\n{}",
        daemon.log()
    );
    daemon.kill();
    let at_kill = fake.tickets().len();
    eprintln!("{label}: {at_kill} of 200 tickets delivered when sipdesk was killed");
    daemon.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    while fake.tickets().len() < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let deliveries = daemon.settled_deliveries(200, Duration::from_secs(30));
    assert!(
        deliveries.iter().all(|d| d["state"] == "done"),
        "{label}: {:#?}\n{}",
        deliveries
            .iter()
            .filter(|d| d["state"] != "done")
            .collect::<Vec<_>>(),
        daemon.log()
    );
    assert!(
        at_kill < 200,
        "{label}: killed after everything was delivered"
    );
    assert_once_each(&fake, &calls);
    assert_eq!(
        fake.users().iter().filter(|u| u.phone.is_some()).count(),
        200,
        "{label}"
    );
}

#[test]
fn a_kill_in_the_middle_of_a_burst_loses_and_duplicates_nothing_on_sqlite() {
    kill_mid_burst(None);
}

#[test]
fn a_kill_in_the_middle_of_a_burst_loses_and_duplicates_nothing_on_postgres() {
    let Some(db) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::postgres())
    else {
        eprintln!("SIPDESK_TEST_POSTGRES_URL is not set: this PostgreSQL test did not run");
        return;
    };
    kill_mid_burst(Some(&db));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(db.drop_db());
}

#[test]
fn bad_answers_and_bad_numbers_give_a_reason_and_lose_nothing() {
    let wrong_token = FakeZendesk::start(Settings::default());
    let html = FakeZendesk::start(Settings::default());
    let rejects = FakeZendesk::start(Settings::default());
    // The first two requests (two attempts) get HTML: counted, not timed, so a slow start of
    // the daemon cannot let the first attempt through.
    html.fail_next(2, Fault::Html);
    let body = format!(
        "{}{}{}{}",
        groups(1),
        zendesk("wrong", &wrong_token.url, ""),
        zendesk("html", &html.url, ""),
        // Group 999 does not exist in that account: Zendesk refuses the ticket (422).
        zendesk("rejects", &rejects.url, "missed_assignee = \"group:999\""),
    );
    let files = [
        ("wrong.token", "not-the-token"),
        ("html.token", "t0ken"),
        ("rejects.token", "t0ken"),
    ];
    let daemon = Daemon::start_with_files("bad", "trusted = [\"127.0.0.1\"]", &body, &files);
    // A missed call from "12": not a phone number.
    let uas = SippRun {
        scenario: "agents-ring-no-answer.xml",
        ip: "127.0.0.1",
        port: daemon.pbx_port,
        target: None,
        service: "",
        calls: 1,
        rate: 0,
        tcp: false,
    }
    .spawn(&daemon.dir);
    std::thread::sleep(Duration::from_millis(300));
    let scenario = caller_scenario(&daemon.dir, "caller-refused.xml", "12", None);
    let (code, errors) = SippRun {
        scenario: scenario.to_str().unwrap(),
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: "100",
        calls: 1,
        rate: 1,
        tcp: false,
    }
    .spawn(&daemon.dir)
    .wait();
    assert_eq!(code, 0, "{errors}");
    assert_eq!(uas.wait().0, 0);
    let call = daemon.ended_calls(1).remove(0);
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(call["caller"], "12", "the record keeps what the PBX sent");

    let of = |integration: &str| -> Value {
        daemon
            .deliveries()
            .into_iter()
            .find(|d| d["integration"] == integration)
            .unwrap()
    };
    let wait_for = |integration: &str, what: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = of(integration);
            if what(&d) || Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // HTML instead of JSON: retried, with the reason, until the helpdesk answers properly.
    let waiting = wait_for("html", &|d| d["last_error"].is_string());
    assert_eq!(waiting["state"], "pending", "{waiting:#?}");
    let reason = waiting["last_error"].as_str().unwrap();
    assert!(
        reason.contains("text/html") && reason.contains("instead of JSON"),
        "{reason}"
    );
    // Wrong credentials: failed at once, with Zendesk's words.
    let wrong = wait_for("wrong", &|d| d["state"] == "failed");
    assert_eq!(wrong["state"], "failed", "{wrong:#?}");
    let reason = wrong["last_error"].as_str().unwrap();
    assert!(
        reason.contains("401 Couldn't authenticate you")
            && reason.contains(
                "check them (token_file/token_env, and the e-mail for a Zendesk API token)"
            ),
        "{reason}"
    );
    assert_eq!(wrong["attempts"], 1);
    // A ticket Zendesk refuses: failed at once, with the field it names.
    let rejected = wait_for("rejects", &|d| d["state"] == "failed");
    assert_eq!(rejected["state"], "failed", "{rejected:#?}");
    let reason = rejected["last_error"].as_str().unwrap();
    assert!(
        reason.contains("422") && reason.contains("Group: is invalid"),
        "{reason}"
    );
    // The number that is not one: the call is logged under the anonymous contact, saying so.
    let done = wait_for("html", &|d| d["state"] == "done");
    assert_eq!(done["state"], "done", "{done:#?}\n{}", daemon.log());
    let detail = done["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"12\" is not a phone number: logged under the anonymous contact"),
        "{detail}"
    );
    let ticket = html.tickets().remove(0);
    let anonymous = html
        .users()
        .into_iter()
        .find(|u| u.id == ticket.requester_id)
        .unwrap();
    assert_eq!(anonymous.external_id.as_deref(), Some("sipdesk:anonymous"));
    assert!(
        ticket.comments[0]
            .body
            .contains("Missed call from 12 (not a phone number)"),
        "{ticket:#?}"
    );

    // `sipdesk deliveries --failed` lists what needs an admin.
    let (code, out) = daemon.command(&["deliveries", "--failed"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{id}:wrong")) && out.contains(&format!("{id}:rejects")),
        "{out}"
    );
    assert!(!out.contains(&format!("{id}:html")), "{out}");
    // The admin fixes the token file and retries: no reload needed.
    std::fs::write(daemon.dir.join("wrong.token"), "t0ken").unwrap();
    let (code, out) = daemon.command(&["deliveries", "retry", "--failed"]);
    assert_eq!(
        (code, out.trim()),
        (0, "2 failed deliveries will be sent again")
    );
    let fixed = wait_for("wrong", &|d| d["state"] == "done");
    assert_eq!(fixed["state"], "done", "{fixed:#?}\n{}", daemon.log());
    assert_eq!(wrong_token.tickets().len(), 1);
    // Once done, a delivery is not sent again: that would log the call twice.
    let (code, out) = daemon.command(&["deliveries", "retry", &format!("{id}:wrong")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("was delivered already"), "{out}");
    let again = wait_for("rejects", &|d| {
        d["state"] == "failed" && d["attempts"] == 1 && d["updated_at"] != rejected["updated_at"]
    });
    assert_eq!(again["state"], "failed");
    assert!(rejects.tickets().is_empty());
    let (code, out) = daemon.command(&["deliveries", "retry", "nope:zd"]);
    assert_eq!(code, 1);
    assert!(out.contains("no delivery has the ID nope:zd"), "{out}");
    assert_eq!(daemon.calls().len(), 1, "the call record stays");
    assert!(!daemon.log().contains("panicked"));
}

#[test]
fn a_contact_deleted_in_zendesk_is_looked_up_again() {
    contact_removed_in_zendesk("", |fake, id| fake.delete_user(id));
}

/// With the previous-ticket rule sipdesk first reads the contact's tickets; for a user purged
/// for good that list answers 404.
#[test]
fn a_contact_purged_from_zendesk_is_looked_up_again_before_reading_its_tickets() {
    contact_removed_in_zendesk(
        "inbound_answered = { log = \"previous\", status = \"open\" }",
        |fake, id| fake.purge_user(id),
    );
}

fn contact_removed_in_zendesk(rules: &str, remove: fn(&FakeZendesk, u64)) {
    let fake = FakeZendesk::start(Settings::default());
    fake.add_agent("Ana", "ana@example.com");
    let body = format!("{}{}", groups(1), zendesk("zd", &fake.url, rules));
    let daemon = Daemon::start_with_files(
        "deleted",
        "trusted = [\"127.0.0.1\"]",
        &body,
        &[("zd.token", "t0ken")],
    );
    let caller = numbers(1, 500);
    answered_calls(&daemon, &caller, 1, 1);
    let first = fake.wait_for_tickets(1, Duration::from_secs(20));
    assert_eq!(first.len(), 1, "{}", daemon.log());
    let old = first[0].requester_id;
    // An admin deletes the user sipdesk made; sipdesk's directory still has it.
    remove(&fake, old);
    answered_calls(&daemon, &caller, 1, 1);
    let deliveries = daemon.settled_deliveries(2, Duration::from_secs(30));
    assert!(
        deliveries.iter().all(|d| d["state"] == "done"),
        "{deliveries:#?}\n{}",
        daemon.log()
    );
    let tickets = fake.tickets();
    assert_eq!(tickets.len(), 2);
    let new = tickets[1].requester_id;
    assert_ne!(new, old, "a new contact for the number");
    let user = fake.users().into_iter().find(|u| u.id == new).unwrap();
    assert_eq!(user.phone.as_deref(), Some("+34610000500"));
    assert_eq!(
        deliveries[0]["attempts"], 2,
        "one attempt with the old contact, one with the new: {deliveries:#?}"
    );
}

#[test]
fn routing_redirects_a_caller_the_helpdesk_said_it_does_not_know() {
    let fake = FakeZendesk::start(Settings::default());
    fake.add_agent("Ana", "ana@example.com");
    let known = fake.add_customer("Known", "+34610000701");
    let body = format!(
        "{}unknown_caller_group = \"sales\"\n\n[[groups]]\nname = \"sales\"\nqueues = [\"200\"]\nagents = [{{ extension = \"3001\" }}]\nwrap_up = \"0s\"\n{}",
        groups(1),
        zendesk(
            "zd",
            &fake.url,
            "groups = [\"support\", \"sales\"]\ncreate_unknown_contacts = false"
        )
        .replace("groups = [\"support\"]\n", "")
    );
    let daemon = Daemon::start_with_files(
        "redirect",
        "trusted = [\"127.0.0.1\"]",
        &body,
        &[("zd.token", "t0ken")],
    );
    // First calls: nobody asked Zendesk about these numbers yet, so both go to support.
    answered_calls(
        &daemon,
        &["610000700".to_owned(), "610000701".to_owned()],
        1,
        1,
    );
    let deliveries = daemon.settled_deliveries(2, Duration::from_secs(20));
    let states: Vec<&str> = deliveries
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["done", "skipped"],
        "the known caller's call is logged, the stranger's is not: {deliveries:#?}"
    );
    // Now the directory knows: the stranger is redirected to sales, the customer is not.
    answered_calls(
        &daemon,
        &["610000700".to_owned(), "610000701".to_owned()],
        1,
        1,
    );
    let calls = daemon.ended_calls(4);
    let group_of = |caller: &str| -> Vec<String> {
        let mut groups: Vec<(String, String)> = calls
            .iter()
            .filter(|c| c["caller"] == caller)
            .map(|c| {
                (
                    c["started_at"].as_str().unwrap().to_owned(),
                    c["group"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect();
        groups.sort();
        groups.into_iter().map(|(_, g)| g).collect()
    };
    assert_eq!(group_of("+34610000700"), ["support", "sales"], "{calls:#?}");
    assert_eq!(
        group_of("+34610000701"),
        ["support", "support"],
        "{calls:#?}"
    );
    let redirected = calls
        .iter()
        .find(|c| c["caller"] == "+34610000700" && c["group"] == "sales")
        .unwrap();
    let explanation = redirected["explanation"].to_string();
    assert!(explanation.contains("unknown"), "{explanation}");
    daemon.settled_deliveries(4, Duration::from_secs(20));
    assert_eq!(
        fake.tickets()
            .iter()
            .filter(|t| t.requester_id == known)
            .count(),
        2
    );
    assert_eq!(fake.tickets().len(), 2, "nothing for the stranger");
}
