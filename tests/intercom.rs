//! Calls become Intercom conversations, end to end: SIPp plays the PBX and places calls through
//! the running daemon; two fake Intercom workspaces (`common/intercom.rs`, built from
//! Intercom's OpenAPI file) receive them.
//!
//! `ic` joins a contact's latest open conversation (`log = "previous"`), creates leads for
//! unknown numbers and logs withheld numbers under one anonymous lead; `strict` creates nobody
//! and has no anonymous lead.
//!
//! Texts (SIP MESSAGE from a trunk, or from an agent's phone with the test as the PBX) follow
//! the seed's SMS rules: message, note, and who the conversation is assigned to.

mod common;

use std::time::Duration;

use common::calls::{CLOSED, Ring, SUPPORT, place_and_settle};
use common::daemon::Daemon;
use common::intercom::{FakeIntercom, Fault, Settings};
use common::texts::{settle, sms_number, text_from_phone, text_in};
use serde_json::Value;

fn config(ic: &str, strict: &str) -> String {
    format!(
        r#"
{SUPPORT}
[[groups]]
name = "sales"
queues = ["200"]
agents = [{{ extension = "3001", email = "carl@example.com" }}]
ring_timeout = "1s"
wrap_up = "0s"

{CLOSED}
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
    let first = place_and_settle(
        &daemon,
        1,
        2,
        "600123456",
        "100",
        Ring::Answer,
        Some("X-Sipdesk-Tags: vip"),
    );
    let joined = ic.conversation(&latest);
    let kinds: Vec<&str> = joined.parts.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["comment", "note", "assignment"], "{joined:#?}");
    assert_eq!(
        joined.parts[0].body,
        "<p>Inbound call answered on support</p>"
    );
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
        (
            strict_known.as_str(),
            "<p>Inbound call answered on support</p>"
        )
    );
    assert!(made[0].assignee.is_some());

    // 2. Several contacts share a number: not logged (the seed), with the reason.
    let second = place_and_settle(&daemon, 2, 2, "644555666", "100", Ring::NoAnswer, None);
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
    let third = place_and_settle(&daemon, 3, 2, "633444555", "200", Ring::Answer, None);
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
    assert_eq!(theirs[0].source, "<p>Inbound call answered on sales</p>");
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
    let fourth = place_and_settle(&daemon, 4, 2, "anonymous", "300", Ring::Nobody, None);
    assert_eq!(ic.stats().conflicts, 1);
    let missed: Vec<_> = ic
        .conversations()
        .into_iter()
        .filter(|c| c.contact == anonymous)
        .collect();
    assert_eq!(missed.len(), 1, "{missed:#?}");
    assert_eq!(missed[0].source, "<p>Missed call on closed</p>");
    assert_eq!(
        missed[0].assignee, None,
        "left to Intercom's own assignment rules"
    );
    let none = delivery(&daemon, &fourth, "strict");
    assert_eq!(none["state"], "skipped");
    assert!(none.to_string().contains("anonymous_email"), "{none:#}");

    // 5. A contact deleted (or merged) in Intercom: the next call from the number finds it
    //    gone, forgets it and logs under a new lead.
    ic.delete_contact(&known);
    let fifth = place_and_settle(&daemon, 5, 2, "600123456", "100", Ring::NoAnswer, None);
    let again: Vec<_> = ic
        .contacts()
        .into_iter()
        .filter(|c| c.phone.as_deref() == Some("+34600123456"))
        .collect();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_ne!(again[0].id, known);
    assert_eq!(delivery(&daemon, &fifth, "ic")["state"], "done");
    assert!(ic.conversations().iter().any(|c| c.contact == again[0].id));

    // Intercom refused nothing but the deleted contact (step 5, once).
    let refused = ic.stats().rejections;
    assert!(
        refused.len() == 1 && refused[0].contains(&known) && refused[0].contains("User Not Found"),
        "{refused:#?}"
    );
    assert!(
        strict.stats().rejections.is_empty(),
        "{:#?}",
        strict.stats().rejections
    );
    assert_eq!(ic.stats().unauthorized + strict.stats().unauthorized, 0);
}

/// Intercom for the texts test: "Soporte" is a number with one agent (Ana), "Ventas" one with
/// two (Carl and Dee).
fn texts_config(ic: &str) -> String {
    format!(
        r#"
{SUPPORT}
[[groups]]
name = "sales"
queues = ["200"]
agents = [{{ extension = "3001", email = "carl@example.com" }}, {{ extension = "3002", email = "dee@example.com" }}]
ring_timeout = "1s"
wrap_up = "0s"

{soporte}
{ventas}
[[helpdesks]]
name = "ic"
kind = "intercom"
base_url = "{ic}"
token_file = "ic.token"
admin_email = "boss@example.com"
groups = ["support", "sales"]
request_timeout = "2s"
"#,
        soporte = sms_number("+34911000001", "Soporte", &["support"]),
        ventas = sms_number("+34911000002", "Ventas", &["sales"]),
    )
}

#[test]
fn texts_are_messages_notes_and_assignments_as_the_seed_says() {
    let ic = FakeIntercom::start(Settings {
        search_lag: Duration::from_secs(1),
        ..Settings::default()
    });
    let boss = ic.add_admin("boss@example.com");
    let ana = ic.add_admin("ana@example.com");
    let dee = ic.add_admin("dee@example.com");
    let known = ic.add_contact("user", Some("+34600123456"), None, false);
    let open = ic.add_conversation(&known, true, Duration::from_secs(600));
    ic.assign(&open, &dee);

    let daemon = Daemon::start_in(
        common::daemon::test_dir("intercom-texts"),
        "trusted = [\"127.0.0.1\"]",
        &texts_config(&ic.url),
        None,
        &[("ic.token", "ic-token")],
    );

    // 1. A known contact texts Ventas, a number with several users: the message "Inbound SMS
    //    on Ventas" in their open conversation (texts log to the open one by default), then
    //    the note; nobody is assigned, so the conversation keeps Dee. The message goes in but
    //    its answer is lost: the retry sees it there and does not send it again.
    ic.fail_on(
        "POST",
        &format!("/conversations/{open}/reply"),
        Fault::LoseAnswer,
    );
    text_in(
        &daemon,
        "+34600123456",
        "+34911000002",
        "¿Tenéis la talla 42?",
    );
    let first = settle(&daemon, 1, 1);
    let joined = ic.conversation(&open);
    let kinds: Vec<&str> = joined.parts.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["comment", "note"], "exactly once: {joined:#?}");
    assert_eq!(joined.parts[0].body, "<p>Inbound SMS on Ventas</p>");
    assert_eq!(joined.parts[0].author, known);
    let note = &joined.parts[1].body;
    for line in [
        "<p>Inbound SMS on Ventas</p>",
        "<p>Number: +34911000002 (Ventas)</p>",
        "<p>From: +34600123456</p>",
        "<p>To: +34911000002</p>",
        "<p>¿Tenéis la talla 42?</p>",
    ] {
        assert!(note.contains(line), "{line:?} in {note}");
    }
    assert_eq!(
        note.matches("Inbound SMS on Ventas").count(),
        1,
        "said once: {note}"
    );
    assert!(
        !note.contains("Status:"),
        "only outbound texts have a status"
    );
    assert_eq!(joined.parts[1].author, boss);
    assert_eq!(joined.assignee.as_deref(), Some(dee.as_str()));
    assert!(
        delivery(&daemon, &first, "ic")["attempts"]
            .as_u64()
            .unwrap()
            >= 2
    );

    // 2. An unknown number texts Ventas: a lead and a new conversation, left unassigned.
    text_in(&daemon, "+34633444555", "+34911000002", "Hola");
    let second = settle(&daemon, 2, 1);
    let lead = ic
        .contacts()
        .into_iter()
        .find(|c| c.phone.as_deref() == Some("+34633444555"))
        .expect("a lead for the number");
    let theirs: Vec<_> = ic
        .conversations()
        .into_iter()
        .filter(|c| c.contact == lead.id)
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0].source, "<p>Inbound SMS on Ventas</p>");
    assert_eq!(theirs[0].assignee, None, "{theirs:#?}");
    assert!(
        theirs[0].parts[0]
            .body
            .contains(&format!("[sipdesk:{second}]"))
    );

    // 3. Another unknown number texts Soporte, whose one user is Ana, an Intercom admin: the
    //    new conversation is hers.
    text_in(&daemon, "+34644000111", "+34911000001", "Buenas");
    settle(&daemon, 3, 1);
    let other = ic
        .contacts()
        .into_iter()
        .find(|c| c.phone.as_deref() == Some("+34644000111"))
        .expect("a lead for the number");
    let theirs: Vec<_> = ic
        .conversations()
        .into_iter()
        .filter(|c| c.contact == other.id)
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0].source, "<p>Inbound SMS on Soporte</p>");
    assert_eq!(theirs[0].assignee.as_deref(), Some(ana.as_str()));

    // 4. Ana texts the known contact from her phone and the PBX takes it: "Outbound SMS on
    //    Soporte" in their open conversation, a note saying it was delivered, and the
    //    conversation is hers now.
    text_from_phone(&daemon, "2001", "600123456", "Sí, la tenemos", 202);
    let fourth = settle(&daemon, 4, 1);
    let joined = ic.conversation(&open);
    let note = joined
        .parts
        .iter()
        .find(|p| p.kind == "note" && p.body.contains(&format!("[sipdesk:{fourth}]")))
        .expect("the note");
    for line in [
        "<p>Outbound SMS on Soporte</p>",
        "<p>From: 2001 (ana@example.com)</p>",
        "<p>To: +34600123456</p>",
        "<p>Status: delivered</p>",
        "<p>Sí, la tenemos</p>",
    ] {
        assert!(note.body.contains(line), "{line:?} in {}", note.body);
    }
    assert!(
        joined
            .parts
            .iter()
            .any(|p| p.kind == "comment" && p.body == "<p>Outbound SMS on Soporte</p>")
    );
    assert_eq!(joined.assignee.as_deref(), Some(ana.as_str()));

    // 5. Carl, who is no Intercom admin, texts the lead of step 2 and the PBX refuses it: the
    //    note says the delivery failed, and the conversation goes to admin_email's admin.
    text_from_phone(&daemon, "3001", "633444555", "Le llamo luego", 488);
    let fifth = settle(&daemon, 5, 1);
    let with_it: Vec<_> = ic
        .conversations()
        .into_iter()
        .filter(|c| {
            c.parts
                .iter()
                .any(|p| p.body.contains(&format!("[sipdesk:{fifth}]")))
        })
        .collect();
    assert_eq!(with_it.len(), 1, "{with_it:#?}");
    assert_eq!(with_it[0].contact, lead.id);
    let note = with_it[0]
        .parts
        .iter()
        .find(|p| p.body.contains(&format!("[sipdesk:{fifth}]")))
        .unwrap();
    assert!(
        note.body.contains("<p>Status: delivery failed")
            && note.body.contains("<p>From: 3001 (carl@example.com)</p>"),
        "{}",
        note.body
    );
    assert_eq!(with_it[0].assignee.as_deref(), Some(boss.as_str()));

    assert!(
        ic.stats().rejections.is_empty(),
        "{:#?}",
        ic.stats().rejections
    );
}
