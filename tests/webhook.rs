//! The signed webhook, end to end: SIPp plays the PBX and places calls through the running
//! daemon, and an independent receiver (`tests/receivers/standard_webhooks.py`: the Standard
//! Webhooks reference library verifies each signature, `jsonschema` checks each payload against
//! `src/helpdesk/webhook/schema.json`) records what arrives and answers what the test tells it:
//! a 503 with `Retry-After` (during which the configuration is reloaded with other fields, so the
//! retry must send the saved bytes, not new ones), a 200 with a text body, a 410, a 400.
//!
//! The receiver needs Python with the libraries of `tests/receivers/requirements.txt`:
//! `.ci/test` makes a virtual environment with them and names its interpreter in
//! `SIPDESK_TEST_PYTHON`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::calls::{CLOSED, Ring, SUPPORT, place_call};
use common::daemon::Daemon;
use common::receiver::{Receiver, SECRET, python};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn config(url: &str) -> String {
    format!(
        r#"
{SUPPORT}
{CLOSED}
[[helpdesks]]
name = "hook"
kind = "webhook"
url = "{url}"
token_file = "hook.secret"
groups = ["support", "closed"]
missed = {{ log = "previous" }}
fields = ["call_type", "agent", "start", "queue"]
request_timeout = "2s"
"#
    )
}

/// Waits until the receiver has had `n` requests.
fn wait_for(receiver: &Receiver, n: usize, daemon: &Daemon) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let requests = receiver.requests();
        if requests.len() >= n {
            return requests;
        }
        assert!(
            Instant::now() < deadline,
            "{} requests of {n}: {requests:#?}\n{}",
            requests.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rewrites the configuration and reloads it (SIGHUP), waiting until the daemon says so.
fn reload(daemon: &Daemon, text: &str) {
    std::fs::write(&daemon.config, text).unwrap();
    let before = daemon.log().matches("configuration reloaded").count();
    Command::new("kill")
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
fn every_call_reaches_the_receiver_signed_once_and_as_the_schema_says() {
    let dir = common::daemon::test_dir("webhook");
    // Valid requests in turn: the first call's first attempt 503 (retry in 3 s), its retry 200
    // with a text body; the withheld call's 410; the third call's 400, then 204.
    let receiver = Receiver::start(&dir, "503r3,200t,410,400");
    let daemon = Daemon::start_in(
        dir.clone(),
        "trusted = [\"127.0.0.1\"]\nrecording_url = \"https://pbx.example.com/rec/{sip_call_id}.wav\"",
        &config(&receiver.url()),
        None,
        &[("hook.secret", &format!("{SECRET}\n"))],
    );

    place_call(&daemon, "600123456", "100", Ring::Answer, None);
    // While the first attempt waits out its Retry-After, the fields change: the retry must
    // still send the bytes it saved.
    wait_for(&receiver, 1, &daemon);
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    reload(
        &daemon,
        &text.replace(
            "fields = [\"call_type\", \"agent\", \"start\", \"queue\"]",
            "fields = [\"call_type\"]",
        ),
    );
    let answered_id = daemon.ended_calls(1)[0]["id"].as_str().unwrap().to_owned();
    daemon.settled_deliveries(1, WAIT);
    place_call(&daemon, "anonymous", "300", Ring::Nobody, None);
    daemon.settled_deliveries(2, WAIT);
    place_call(&daemon, "611222333", "100", Ring::NoAnswer, None);
    let calls = daemon.ended_calls(3);
    let deliveries = daemon.settled_deliveries(3, WAIT);
    assert_eq!(deliveries.len(), 3, "{deliveries:#?}");
    let state = |call_id: &str| {
        deliveries
            .iter()
            .find(|d| d["call_id"] == call_id)
            .unwrap_or_else(|| panic!("no delivery of {call_id}"))
            .clone()
    };
    let id_of = |caller: &str| {
        calls
            .iter()
            .find(|c| c["caller"].as_str().unwrap().contains(caller))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id_of("600123456"), answered_id);
    let (withheld_id, missed_id) = (id_of("anonymous"), id_of("611222333"));
    assert_eq!(state(&answered_id)["state"], "done", "{deliveries:#?}");
    let gone = state(&withheld_id);
    assert_eq!(gone["state"], "failed", "a 410 fails at once: {gone:#}");
    assert!(gone.to_string().contains("gone"), "{gone:#}");
    let refused = state(&missed_id);
    assert_eq!(refused["state"], "done", "a 400 is retried: {refused:#}");
    assert_eq!(refused["attempts"], 2, "{refused:#}");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 5, "{requests:#?}");
    // Every request verified with the reference library and passed the schema.
    for request in &requests {
        assert_eq!(request["verified"], true, "{request:#}");
        assert_eq!(request["schema_error"], Value::Null, "{request:#}");
        assert_eq!(request["content_type"], "application/json");
        let id = request["id"].as_str().unwrap();
        assert!(id.starts_with("msg_"), "{id}");
    }
    // The refused attempt and its retry: one id, the very same bytes (the fields as they were
    // when the call ended, not the reloaded ones), and a fresh timestamp and signature.
    let (first, retry) = (&requests[0], &requests[1]);
    assert_eq!(
        (first["status"].as_u64(), retry["status"].as_u64()),
        (Some(503), Some(200))
    );
    assert_eq!(first["id"], retry["id"]);
    assert_eq!(first["body"], retry["body"]);
    assert_ne!(first["signature"], retry["signature"]);
    assert!(
        retry["timestamp"].as_str().unwrap().parse::<i64>().unwrap()
            >= first["timestamp"].as_str().unwrap().parse::<i64>().unwrap() + 3,
        "the retry waited for Retry-After and was signed when it left"
    );
    let payload =
        |r: &Value| -> Value { serde_json::from_str(r["body"].as_str().unwrap()).unwrap() };
    let answered = payload(retry);
    assert!(
        answered["data"]["summary"]
            .as_str()
            .unwrap()
            .contains("Agent: 2001"),
        "the saved body, not one rebuilt with the reloaded fields: {answered:#}"
    );
    // One webhook-id per call.
    let ids: std::collections::HashSet<&str> =
        requests.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);

    let data = &answered["data"];
    assert_eq!(answered["type"], "call.ended");
    assert_eq!(answered["version"], 1);
    assert_eq!(answered["integration"], "hook");
    assert_eq!(data["id"], answered_id.as_str());
    assert_eq!(data["party"]["number"], "+34600123456");
    assert_eq!(data["agent"]["extension"], "2001");
    assert_eq!(data["agent"]["email"], "ana@example.com");
    assert_eq!(data["queue"], "100");
    assert_eq!(data["group"], "support");
    assert_eq!(data["timezone"], "Europe/Madrid");
    let offset = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Madrid").unwrap())
        .strftime("%:z")
        .to_string();
    assert!(
        data["started_at"].as_str().unwrap().ends_with(&offset),
        "{} in Madrid's offset {offset}",
        data["started_at"]
    );
    assert!(data["talk_seconds"].as_f64().unwrap() >= 0.0);
    assert!(
        data["recording_url"]
            .as_str()
            .unwrap()
            .starts_with("https://pbx.example.com/rec/")
    );
    assert_eq!(data["log"], "new");
    let summary = data["summary"].as_str().unwrap();
    assert!(summary.starts_with("Call from "), "{summary}");

    let withheld = payload(&requests[2]);
    let data = &withheld["data"];
    assert_eq!(requests[2]["status"], 410);
    assert_eq!(data["party"]["anonymous"], true);
    assert_eq!(data["party"]["number"], Value::Null);
    assert_eq!(data["agent"], Value::Null);
    assert_eq!(data["out_of_hours"], true);
    assert_eq!(data["reason"], "out_of_hours");
    assert_eq!(data["log"], "previous");
    let missed = payload(&requests[4]);
    assert_eq!(missed["data"]["reason"], "no_answer");
    assert_eq!(missed["data"]["party"]["number"], "+34611222333");
    assert_eq!(requests[3]["body"], requests[4]["body"]);

    // The receiver really verifies: the same signed request passes again (the reference
    // library checks signatures, not repeats), with one byte changed or under another id it is
    // refused.
    let last = requests.last().unwrap();
    let body = last["body"].as_str().unwrap();
    let (id, timestamp, signature) = (
        last["id"].as_str().unwrap(),
        last["timestamp"].as_str().unwrap(),
        last["signature"].as_str().unwrap(),
    );
    assert_eq!(receiver.post(id, timestamp, signature, body), 204);
    assert_eq!(
        receiver.post(
            id,
            timestamp,
            signature,
            &body.replacen("call.ended", "call.ended ", 1)
        ),
        401
    );
    assert_eq!(
        receiver.post("msg_another", timestamp, signature, body),
        401
    );
}

#[test]
fn the_readme_example_passes_the_schema() {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("### Webhooks").expect("a Webhooks section")..];
    let start = section.find("```json\n").expect("an example") + 8;
    let end = start + section[start..].find("```").unwrap();
    let dir = common::daemon::test_dir("webhook-readme");
    let example = dir.join("example.json");
    std::fs::write(&example, &section[start..end]).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(root.join("tests/receivers/standard_webhooks.py"))
        .arg("--validate")
        .arg(root.join("src/helpdesk/webhook/schema.json"))
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's example does not pass the schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
