//! Calls become Klaviyo events, end to end: SIPp plays the PBX and places calls through the
//! running daemon; two fake Klaviyo accounts (`common/klaviyo.rs`, built from Klaviyo's OpenAPI
//! file) receive them. `kv` logs every call with a profile (Klaviyo makes the profile); `strict`
//! (`create_unknown_contacts = false`) only calls from numbers it already has a profile for.

mod common;

use std::time::Duration;

use common::calls::{CLOSED, Ring, SUPPORT, place_call};
use common::daemon::Daemon;
use common::klaviyo::{Event, FakeKlaviyo, Fault, Settings};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

fn config(kv: &str, strict: &str) -> String {
    format!(
        r#"
{SUPPORT}
{CLOSED}
[[helpdesks]]
name = "kv"
kind = "klaviyo"
base_url = "{kv}"
token_file = "kv.key"
groups = ["support", "closed"]
missed = {{ log = "new", metric = "Support Call Missed" }}
fields = ["call_type", "agent", "start", "group"]
request_timeout = "2s"

[[helpdesks]]
name = "strict"
kind = "klaviyo"
base_url = "{strict}"
token_file = "strict.key"
groups = ["support", "closed"]
create_unknown_contacts = false
request_timeout = "2s"
"#
    )
}

fn delivery<'a>(all: &'a [Value], call: &str, integration: &str) -> &'a Value {
    all.iter()
        .find(|d| d["call_id"] == call && d["integration"] == integration)
        .unwrap_or_else(|| panic!("no delivery of {call} to {integration}: {all:#?}"))
}

#[test]
fn every_call_is_one_event_on_the_callers_profile() {
    let kv = FakeKlaviyo::start(Settings::default());
    let strict = FakeKlaviyo::start(Settings {
        key: "pk_strict".to_owned(),
        ..Settings::default()
    });
    let known = strict.add_profile("+34600123456");
    let dir = common::daemon::test_dir("klaviyo");
    let daemon = Daemon::start_in(
        dir,
        "trusted = [\"127.0.0.1\"]\nrecording_url = \"https://pbx.example.com/rec/{sip_call_id}.wav\"",
        &config(&kv.url, &strict.url),
        None,
        &[
            ("kv.key", "pk_test_0123456789abcdef\n"),
            ("strict.key", "pk_strict"),
        ],
    );

    // 1. Answered, from a number both know or learn; Klaviyo's first answer is lost after it
    //    recorded the event, so the retry is a repeat Klaviyo drops by unique_id.
    kv.fail_next(1, Fault::LoseAnswer);
    place_call(&daemon, "600123456", "100", Ring::Answer, None);
    // 2. Missed (rung, no answer), from a number only `kv` takes; `kv` fails once with a 503
    //    (once the first call's deliveries are settled, so the fault is this call's).
    daemon.settled_deliveries(2, WAIT);
    kv.fail_next(1, Fault::Status(503));
    place_call(&daemon, "611222333", "100", Ring::NoAnswer, None);
    // 3. Withheld, refused by a closed group.
    place_call(&daemon, "anonymous", "300", Ring::Nobody, None);

    let calls = daemon.ended_calls(3);
    let id_of = |caller: &str| {
        calls
            .iter()
            .find(|c| c["caller"].as_str().unwrap().contains(caller))
            .unwrap_or_else(|| panic!("no call from {caller}: {calls:#?}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (answered, missed, withheld) = (id_of("600123456"), id_of("611222333"), id_of("anonymous"));
    let all = daemon.settled_deliveries(6, WAIT);
    assert_eq!(all.len(), 6, "{all:#?}\n{}", daemon.log());

    // `kv`: one event per call with a number, whatever the faults.
    let events: Vec<Event> = kv.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let stats = kv.stats();
    assert_eq!(
        stats.repeats_dropped, 1,
        "the retry after the lost answer was a repeat"
    );
    assert!(stats.rejections.is_empty(), "{:?}", stats.rejections);
    let profiles = kv.profiles();
    let profile_of = |phone: &str| {
        profiles
            .iter()
            .find(|p| p.phone_number.as_deref() == Some(phone))
            .unwrap_or_else(|| panic!("no profile {phone}: {profiles:#?}"))
            .id
            .clone()
    };
    let first = events
        .iter()
        .find(|e| e.unique_id.as_deref() == Some(answered.as_str()))
        .unwrap();
    assert_eq!(first.metric, "Phone Call Answered");
    assert_eq!(first.profile_id, profile_of("+34600123456"));
    let p = &first.properties;
    assert_eq!(p["call_id"], answered.as_str());
    assert_eq!(p["call_type"], "inbound_answered");
    assert_eq!(p["agent_email"], "ana@example.com");
    assert_eq!(p["group"], "support");
    let offset = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Madrid").unwrap())
        .strftime("%:z")
        .to_string();
    assert!(
        p["started_at"].as_str().unwrap().ends_with(&offset),
        "{p:#}"
    );
    assert!(
        p.get("recording_url").is_none() && p.get("queue").is_none(),
        "only the details `fields` lists leave for Klaviyo: {p:#}"
    );
    assert!(
        p["summary"]
            .as_str()
            .unwrap()
            .contains("Agent: 2001 (ana@example.com)"),
        "{p:#}"
    );
    let second = events
        .iter()
        .find(|e| e.unique_id.as_deref() == Some(missed.as_str()))
        .unwrap();
    assert_eq!(
        second.metric, "Support Call Missed",
        "the configured metric"
    );
    assert_eq!(second.profile_id, profile_of("+34611222333"));
    assert_eq!(second.properties["reason"], "no_answer");
    assert!(second.properties.get("agent_email").is_none());
    assert_eq!(delivery(&all, &answered, "kv")["state"], "done");
    assert_eq!(delivery(&all, &missed, "kv")["state"], "done");
    assert!(delivery(&all, &missed, "kv")["attempts"].as_u64().unwrap() >= 2);
    let anonymous = delivery(&all, &withheld, "kv");
    assert_eq!(anonymous["state"], "skipped");
    assert!(
        anonymous["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("withheld")
            || anonymous["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("withheld"),
        "{anonymous:#}"
    );

    // `strict`: only the number it had a profile for; the unknown one is not logged, with why,
    // and no profile is made.
    let events = strict.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].profile_id, known);
    assert_eq!(events[0].unique_id.as_deref(), Some(answered.as_str()));
    assert_eq!(strict.profiles().len(), 1);
    let unknown = delivery(&all, &missed, "strict");
    assert_eq!(unknown["state"], "skipped", "{unknown:#}");
    assert!(
        unknown.to_string().contains("no contact has this number"),
        "{unknown:#}"
    );
    assert_eq!(delivery(&all, &withheld, "strict")["state"], "skipped");
}
