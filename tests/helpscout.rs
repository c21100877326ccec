//! Calls become Help Scout conversations, end to end: SIPp plays the PBX and places calls
//! through the running daemon; two fake Help Scout accounts (`common/helpscout.rs`, built from
//! Help Scout's developer documentation) receive them.
//!
//! `hs` follows the seed's "find an existing conversation" (`log = "previous"`), reopens one
//! closed less than 48 hours ago and reassigns to the agent; `strict` always opens a new
//! conversation, creates no customers and skips numbers two customers share. Answers are lost
//! on the way back (the request done, sipdesk not told) at the steps where a retry could write
//! twice, with Help Scout's search lagging behind writes as it does.
//!
//! Texts (SIP MESSAGE) go to Help Scout only where `log_sms` is set: an inbound one as the
//! customer's thread, an outbound one as a note.

mod common;

use std::time::Duration;

use common::calls::{CLOSED, Ring, SUPPORT, place_and_settle};
use common::daemon::Daemon;
use common::helpscout::{FakeHelpScout, Fault, Settings};
use common::texts::{settle, sms_number, text_from_phone, text_in};
use serde_json::Value;

const HOUR: Duration = Duration::from_secs(3600);

fn config(hs: &str, strict: &str) -> String {
    format!(
        r#"
{SUPPORT}
{CLOSED}
[[helpdesks]]
name = "hs"
kind = "helpscout"
base_url = "{hs}"
client_id = "app-id"
token_file = "hs.secret"
mailbox_id = 7
groups = ["support", "closed"]
inbound_answered = {{ log = "previous", status = "closed" }}
missed = {{ log = "previous", status = "active" }}
reopen_closed_within = "48h"
reassign_to_agent = true
request_timeout = "2s"

[[helpdesks]]
name = "strict"
kind = "helpscout"
base_url = "{strict}"
client_id = "strict-app"
token_file = "strict.secret"
mailbox_id = 9
groups = ["support", "closed"]
duplicates = "skip"
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
    let hs = FakeHelpScout::start(Settings {
        search_lag: Duration::from_secs(3),
        ..Settings::default()
    });
    let strict = FakeHelpScout::start(Settings {
        client_id: "strict-app".to_owned(),
        client_secret: "strict-secret".to_owned(),
        mailboxes: vec![9],
        ..Settings::default()
    });
    let ana = hs.add_user("ana@example.com");
    let a = hs.add_customer("+34600123456", 10 * HOUR);
    let open = hs.add_conversation(a, "active", &["vip"], 5 * HOUR, None);
    let b = hs.add_customer("+34611222333", 10 * HOUR);
    let spam = hs.add_conversation(b, "active", &["spam"], HOUR, None);
    let recently_closed = hs.add_conversation(b, "closed", &[], 5 * HOUR, Some(HOUR));
    let c = hs.add_customer("+34622333444", 100 * HOUR);
    let long_closed = hs.add_conversation(c, "closed", &[], 90 * HOUR, Some(72 * HOUR));
    let _older_twin = hs.add_customer("+34644555666", 20 * HOUR);
    let newer_twin = hs.add_customer("+34644555666", 2 * HOUR);
    let strict_a = strict.add_customer("+34600123456", HOUR);
    strict.add_customer("+34644555666", 3 * HOUR);
    strict.add_customer("+34644555666", 2 * HOUR);

    let daemon = Daemon::start_in(
        common::daemon::test_dir("helpscout"),
        "trusted = [\"127.0.0.1\"]",
        &config(&hs.url, &strict.url),
        None,
        &[
            ("hs.secret", "app-secret\n"),
            ("strict.secret", "strict-secret"),
        ],
    );

    // 1. A known customer with an open conversation calls and Ana answers: the call joins it.
    let first = place_and_settle(&daemon, 1, 2, "600123456", "100", Ring::Answer, None);
    let joined = hs.conversation(open);
    let kinds: Vec<&str> = joined.threads.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["customer", "phone", "note"], "{joined:#?}");
    assert!(
        joined.threads[1]
            .text
            .starts_with("Call from +34600123456, agent 2001"),
        "{joined:#?}"
    );
    let note = &joined.threads[2].text;
    assert!(
        note.contains("Agent: 2001 (ana@example.com)")
            && note.contains(&format!("[sipdesk:{first}]")),
        "{note}"
    );
    assert!(note.contains("<br>"), "thread text is HTML: {note}");
    assert_eq!(joined.status, "closed");
    assert_eq!(
        joined.assignee,
        Some(ana),
        "reassigned to the agent's Help Scout user"
    );
    assert_eq!(
        joined.tags,
        ["vip", "sipdesk", "sipdesk-inbound-answered"],
        "tags merged, not replaced"
    );
    assert_eq!(hs.conversations().len(), 4, "no new conversation");
    // `strict` opens a new one, with its default status for answered calls.
    let made = strict.conversations();
    assert_eq!(made.len(), 1);
    assert_eq!(
        (
            made[0].customer,
            made[0].kind.as_str(),
            made[0].status.as_str()
        ),
        (strict_a, "phone", "closed")
    );
    assert_eq!(made[0].mailbox, 9);
    let kinds: Vec<&str> = made[0].threads.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["phone", "note"]);

    // 2. Tokens expire (48 hours pass): a 401 gets a new token, once. B's only open
    //    conversation is spam-tagged; one closed an hour ago is reopened instead.
    hs.expire_tokens();
    let second = place_and_settle(&daemon, 2, 2, "611222333", "100", Ring::NoAnswer, None);
    assert_eq!(hs.stats().tokens_issued, 2);
    let reopened = hs.conversation(recently_closed);
    assert_eq!(reopened.status, "active");
    assert!(
        reopened
            .threads
            .iter()
            .any(|t| t.text.contains(&format!("[sipdesk:{second}]")))
    );
    assert_eq!(
        hs.conversation(spam).threads.len(),
        1,
        "the spam conversation is left alone"
    );
    assert!(
        delivery(&daemon, &second, "hs")
            .to_string()
            .contains("reopened")
    );
    let unknown = delivery(&daemon, &second, "strict");
    assert_eq!(unknown["state"], "skipped");
    assert!(
        unknown.to_string().contains("no contact has this number"),
        "{unknown:#}"
    );

    // 3. C's conversation closed three days ago is not reopened: a new one. Help Scout makes
    //    it but the answer is lost; the retry finds it (once search shows it) instead of
    //    making a second.
    hs.fail_on("POST", "/v2/conversations", Fault::LoseAnswer);
    let third = place_and_settle(&daemon, 3, 2, "622333444", "100", Ring::NoAnswer, None);
    assert_eq!(hs.conversation(long_closed).threads.len(), 1);
    let of_c: Vec<_> = hs
        .conversations()
        .into_iter()
        .filter(|x| x.customer == c)
        .collect();
    assert_eq!(of_c.len(), 2, "{of_c:#?}");
    let new = of_c.iter().find(|x| x.id != long_closed).unwrap();
    assert_eq!(
        (new.kind.as_str(), new.status.as_str(), new.mailbox),
        ("phone", "active", 7)
    );
    assert_eq!(
        new.assignee, None,
        "a missed call is left to the mailbox's own rules"
    );
    assert!(
        new.threads
            .iter()
            .any(|t| t.text.contains(&format!("[sipdesk:{third}]")))
    );
    assert!(
        delivery(&daemon, &third, "hs")["attempts"]
            .as_u64()
            .unwrap()
            >= 2
    );

    // 4. A number no customer has: `hs` creates "Caller <E.164>" with the phone.
    place_and_settle(&daemon, 4, 2, "633444555", "100", Ring::NoAnswer, None);
    let made = hs
        .customers()
        .into_iter()
        .find(|x| x.phones == ["+34633444555"])
        .expect("a customer made for the number");
    assert_eq!(
        (made.first_name.as_deref(), made.last_name.as_deref()),
        (Some("Caller"), Some("+34633444555"))
    );
    assert_eq!(
        hs.conversations()
            .iter()
            .filter(|x| x.customer == made.id)
            .count(),
        1
    );

    // 5. Two customers share a number: `hs` logs to the newer, `strict` skips, saying why.
    let fifth = place_and_settle(&daemon, 5, 2, "644555666", "100", Ring::NoAnswer, None);
    assert_eq!(
        hs.conversations()
            .iter()
            .filter(|x| x.customer == newer_twin)
            .count(),
        1
    );
    let twins = delivery(&daemon, &fifth, "strict");
    assert_eq!(twins["state"], "skipped");
    assert!(
        twins.to_string().contains("2 customers have this number"),
        "{twins:#}"
    );

    // 6. Two withheld calls: `hs` logs both under one "Anonymous caller", each in its own new
    //    conversation (withheld callers are not one customer); `strict` creates nobody.
    let sixth = place_and_settle(&daemon, 6, 2, "anonymous", "300", Ring::Nobody, None);
    place_and_settle(&daemon, 7, 2, "anonymous", "300", Ring::Nobody, None);
    let anonymous: Vec<_> = hs
        .customers()
        .into_iter()
        .filter(|x| x.first_name.as_deref() == Some("Anonymous"))
        .collect();
    assert_eq!(anonymous.len(), 1, "{anonymous:#?}");
    assert!(anonymous[0].phones.is_empty());
    assert_eq!(
        hs.conversations()
            .iter()
            .filter(|x| x.customer == anonymous[0].id)
            .count(),
        2
    );
    let none = delivery(&daemon, &sixth, "strict");
    assert_eq!(none["state"], "skipped");
    assert!(
        none.to_string().contains("the number is withheld"),
        "{none:#}"
    );
    assert_eq!(strict.customers().len(), 3, "strict created nobody");

    // 7. A customer deleted in Help Scout: the next call from the number finds Help Scout
    //    refusing the remembered id, forgets it, and logs under a new customer.
    hs.delete_customer(a);
    let eighth = place_and_settle(&daemon, 8, 2, "600123456", "100", Ring::NoAnswer, None);
    let again: Vec<_> = hs
        .customers()
        .into_iter()
        .filter(|x| x.phones == ["+34600123456"])
        .collect();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_ne!(again[0].id, a);
    assert!(hs.conversations().iter().any(|x| {
        x.customer == again[0].id
            && x.threads
                .iter()
                .any(|t| t.text.contains(&format!("[sipdesk:{eighth}]")))
    }));

    // Help Scout refused nothing but the deleted customer's id (step 7, once).
    let refused = hs.stats().rejections;
    assert!(
        refused.len() == 1
            && refused[0]
                .1
                .contains(&format!("\"customer\":{{\"id\":{a}}}")),
        "{refused:#?}"
    );
    assert!(
        strict.stats().rejections.is_empty(),
        "{:#?}",
        strict.stats().rejections
    );
}

/// Help Scout entries for the texts test: `hs` logs texts (`log_sms`), `off` does not.
fn texts_config(hs: &str, off: &str) -> String {
    format!(
        r#"
{SUPPORT}
{number}
[[helpdesks]]
name = "hs"
kind = "helpscout"
base_url = "{hs}"
client_id = "app-id"
token_file = "hs.secret"
mailbox_id = 7
groups = ["support"]
log_sms = true
reopen_closed_within = "48h"
reassign_to_agent = true
request_timeout = "2s"

[[helpdesks]]
name = "off"
kind = "helpscout"
base_url = "{off}"
client_id = "app-id"
token_file = "hs.secret"
mailbox_id = 7
groups = ["support"]
request_timeout = "2s"
"#,
        number = sms_number("+34911000001", "Soporte", &["support"]),
    )
}

#[test]
fn texts_are_customer_threads_and_notes_only_with_log_sms() {
    let hs = FakeHelpScout::start(Settings {
        search_lag: Duration::from_secs(3),
        ..Settings::default()
    });
    let off = FakeHelpScout::start(Settings::default());
    let ana = hs.add_user("ana@example.com");
    let a = hs.add_customer("+34600123456", 10 * HOUR);
    let open = hs.add_conversation(a, "pending", &["vip"], 5 * HOUR, None);
    let b = hs.add_customer("+34611222333", 10 * HOUR);
    let recently_closed = hs.add_conversation(b, "closed", &[], 5 * HOUR, Some(HOUR));

    let daemon = Daemon::start_in(
        common::daemon::test_dir("helpscout-texts"),
        "trusted = [\"127.0.0.1\"]",
        &texts_config(&hs.url, &off.url),
        None,
        &[("hs.secret", "app-secret\n")],
    );

    // 1. A customer with a conversation in progress texts the company's number: their words
    //    are a customer thread on it, which makes it active (Help Scout reopens it). The
    //    thread goes in but its answer is lost: the retry finds it and writes nothing again.
    //    The number has one agent, Ana, so the conversation is reassigned to her user. `off`
    //    logs no texts and says why.
    hs.fail_on(
        "POST",
        &format!("/v2/conversations/{open}/customer"),
        Fault::LoseAnswer,
    );
    text_in(&daemon, "+34600123456", "+34911000001", "¿Abrís el sábado?");
    let first = settle(&daemon, 1, 2);
    let joined = hs.conversation(open);
    let said: Vec<_> = joined
        .threads
        .iter()
        .filter(|t| t.text.contains(&format!("[sipdesk:{first}]")))
        .collect();
    assert_eq!(said.len(), 1, "exactly once: {joined:#?}");
    assert_eq!(
        (said[0].kind.as_str(), said[0].customer),
        ("customer", Some(a))
    );
    assert!(
        said[0]
            .text
            .starts_with("¿Abrís el sábado?<br>\n<br>\n(SMS to Soporte, +34911000001)"),
        "{:?}",
        said[0].text
    );
    assert_eq!(joined.status, "active");
    assert_eq!(joined.assignee, Some(ana));
    assert_eq!(joined.tags, ["vip", "sipdesk", "sipdesk-sms-inbound"]);
    assert!(
        delivery(&daemon, &first, "hs")["attempts"]
            .as_u64()
            .unwrap()
            >= 2
    );
    let skipped = delivery(&daemon, &first, "off");
    assert_eq!(skipped["state"], "skipped");
    assert!(
        skipped.to_string().contains("log_sms = true"),
        "{skipped:#}"
    );
    assert_eq!(off.stats().requests, 0, "off asked Help Scout nothing");

    // 2. A customer whose only conversation closed an hour ago texts: a call would reopen it
    //    (reopen_closed_within), a text does not follow the call rules and starts a new one.
    text_in(&daemon, "611222333", "+34911000001", "Sigo sin luz");
    let second = settle(&daemon, 2, 2);
    assert_eq!(hs.conversation(recently_closed).status, "closed");
    assert_eq!(hs.conversation(recently_closed).threads.len(), 1);
    let of_b: Vec<_> = hs
        .conversations()
        .into_iter()
        .filter(|x| x.customer == b && x.id != recently_closed)
        .collect();
    assert_eq!(of_b.len(), 1, "{of_b:#?}");
    let kinds: Vec<&str> = of_b[0].threads.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["customer"]);
    assert!(of_b[0].threads[0].text.starts_with("Sigo sin luz"));
    assert!(
        of_b[0].threads[0]
            .text
            .contains(&format!("[sipdesk:{second}]"))
    );
    assert_eq!(
        (of_b[0].subject.as_str(), of_b[0].status.as_str()),
        ("SMS from +34611222333", "active")
    );

    // 3. Ana texts the first customer from her phone and the PBX takes it: a note on their
    //    conversation telling what was sent, by whom, to whom, and that it was delivered; it
    //    sets the outbound texts' status (pending by default).
    text_from_phone(&daemon, "2001", "600123456", "Sí, de 10 a 14", 202);
    let third = settle(&daemon, 3, 2);
    let joined = hs.conversation(open);
    let note = joined
        .threads
        .iter()
        .find(|t| t.text.contains(&format!("[sipdesk:{third}]")))
        .expect("the note");
    assert_eq!(note.kind, "note");
    for line in [
        "Outbound SMS on Soporte",
        "From: 2001 (ana@example.com)",
        "To: +34600123456",
        "Status: delivered",
        "Sí, de 10 a 14",
    ] {
        assert!(note.text.contains(line), "{line:?} in {:?}", note.text);
    }
    assert_eq!(joined.status, "pending");
    assert_eq!(delivery(&daemon, &third, "off")["state"], "skipped");

    // 4. Ana texts a number no customer has and the PBX refuses it: a customer is made and a
    //    new conversation holds the note, which says the delivery failed. Help Scout makes the
    //    conversation but the answer is lost: the retry finds it once search shows it.
    hs.fail_on("POST", "/v2/conversations", Fault::LoseAnswer);
    text_from_phone(&daemon, "2001", "633444555", "¿Le llamo mañana?", 488);
    let fourth = settle(&daemon, 4, 2);
    let made = hs
        .customers()
        .into_iter()
        .find(|x| x.phones == ["+34633444555"])
        .expect("a customer made for the number");
    let theirs: Vec<_> = hs
        .conversations()
        .into_iter()
        .filter(|x| x.customer == made.id)
        .collect();
    assert_eq!(theirs.len(), 1, "exactly once: {theirs:#?}");
    let kinds: Vec<&str> = theirs[0].threads.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["note"]);
    let note = &theirs[0].threads[0].text;
    assert!(
        note.contains("Status: delivery failed") && note.contains(&format!("[sipdesk:{fourth}]")),
        "{note}"
    );
    assert_eq!(theirs[0].assignee, Some(ana));

    assert!(
        hs.stats().rejections.is_empty(),
        "{:#?}",
        hs.stats().rejections
    );
}
