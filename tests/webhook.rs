//! The signed webhook, end to end: SIPp plays the PBX and places calls through the running
//! daemon, and an independent receiver (`tests/receivers/standard_webhooks.py`: the Standard
//! Webhooks reference library verifies each signature, `jsonschema` checks each payload against
//! `src/helpdesk/webhook/schema.json`) records what arrives. The receiver refuses its first
//! valid request with 503, so a retry is seen carrying the same id and the same bytes.
//!
//! The receiver needs Python with `standardwebhooks` and `jsonschema`: `.ci/test` makes a
//! virtual environment with both and names its interpreter in `SIPDESK_TEST_PYTHON`.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::calls::caller_scenario;
use common::daemon::{Daemon, SippRun, free_port};
use serde_json::Value;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(30);

/// The receiver, stopped when dropped.
struct Receiver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(dir: &Path, fail_first: u32) -> Receiver {
        let python = std::env::var("SIPDESK_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let port_file = dir.join("receiver.port");
        let log = dir.join("receiver.jsonl");
        let mut child = Command::new(&python)
            .arg(root.join("tests/receivers/standard_webhooks.py"))
            .arg(SECRET)
            .arg(root.join("src/helpdesk/webhook/schema.json"))
            .arg(&log)
            .arg(&port_file)
            .arg(fail_first.to_string())
            .spawn()
            .unwrap_or_else(|e| panic!("{python} runs (see .ci/test): {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().unwrap();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the webhook receiver exited ({status}): it needs Python with standardwebhooks and jsonschema; run .ci/test, which installs them"
                );
            }
            assert!(Instant::now() < deadline, "the receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Receiver { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/sipdesk", self.port)
    }

    /// Every request received, in order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Posts `body` with these webhook headers; returns the status answered.
    fn post(&self, id: &str, timestamp: &str, signature: &str, body: &str) -> u16 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST /hooks/sipdesk HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nwebhook-id: {id}\r\nwebhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

fn config(url: &str) -> String {
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
name = "closed"
queues = ["300"]
hours = {{}}
agents = [{{ extension = "4001" }}]

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

/// Places one call from `from` to `queue`, answered by agent 2001 or refused.
fn call(daemon: &Daemon, from: &str, queue: &str, answered: bool) {
    let agents = answered.then(|| daemon.agents("agents-answer.xml", 1));
    let base = if answered {
        "caller-answered.xml"
    } else {
        "caller-refused.xml"
    };
    let scenario = caller_scenario(&daemon.dir, base, from, None);
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
    if let Some(agents) = agents {
        daemon.succeeded(agents);
    }
}

#[test]
fn every_call_reaches_the_receiver_signed_once_and_as_the_schema_says() {
    let dir = common::daemon::test_dir("webhook");
    let receiver = Receiver::start(&dir, 1);
    let daemon = Daemon::start_in(
        dir.clone(),
        "trusted = [\"127.0.0.1\"]\nrecording_url = \"https://pbx.example.com/rec/{sip_call_id}.wav\"",
        &config(&receiver.url()),
        None,
        &[("hook.secret", &format!("{SECRET}\n"))],
    );

    call(&daemon, "600123456", "100", true);
    call(&daemon, "anonymous", "300", false);
    let calls = daemon.ended_calls(2);
    let deliveries = daemon.settled_deliveries(2, WAIT);
    assert_eq!(deliveries.len(), 2, "{deliveries:#?}");
    assert!(
        deliveries.iter().all(|d| d["state"] == "done"),
        "{deliveries:#?}\n{}",
        daemon.log()
    );

    let requests = receiver.requests();
    // Every request verified with the reference library and passed the schema.
    for request in &requests {
        assert_eq!(request["verified"], true, "{request:#}");
        assert_eq!(request["schema_error"], Value::Null, "{request:#}");
        assert_eq!(request["content_type"], "application/json");
    }
    // The first was refused (503) and sent again: same id, same bytes, accepted once.
    assert_eq!(requests[0]["status"], 503);
    let first_id = requests[0]["id"].as_str().unwrap();
    let again: Vec<&Value> = requests.iter().filter(|r| r["id"] == first_id).collect();
    assert_eq!(again.len(), 2, "{requests:#?}");
    assert_eq!(again[1]["status"], 204);
    assert_eq!(again[0]["body"], again[1]["body"]);
    let accepted: Vec<&Value> = requests.iter().filter(|r| r["status"] == 204).collect();
    assert_eq!(
        accepted.len(),
        2,
        "one accepted request per call: {requests:#?}"
    );
    let ids: std::collections::HashSet<&str> =
        accepted.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);

    let payloads: Vec<Value> = accepted
        .iter()
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect();
    let find = |call_type: &str| {
        payloads
            .iter()
            .find(|p| p["data"]["call_type"] == call_type)
            .unwrap_or_else(|| panic!("no {call_type} payload: {payloads:#?}"))
            .clone()
    };
    let answered = find("inbound_answered");
    let data = &answered["data"];
    assert_eq!(answered["type"], "call.ended");
    assert_eq!(answered["version"], 1);
    assert_eq!(answered["integration"], "hook");
    assert!(calls.iter().any(|c| c["id"] == data["id"]));
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
    assert!(
        summary.starts_with("Call from ") && summary.contains("Agent: 2001 (ana@example.com)"),
        "{summary}"
    );

    let missed = find("missed");
    let data = &missed["data"];
    assert_eq!(data["party"]["anonymous"], true);
    assert_eq!(data["party"]["number"], Value::Null);
    assert_eq!(data["agent"], Value::Null);
    assert_eq!(data["out_of_hours"], true);
    assert_eq!(data["reason"], "out_of_hours");
    assert_eq!(data["log"], "previous");

    // The receiver really verifies: the same signed request passes again (receivers drop
    // repeats by id), with one byte changed or under another id it is refused.
    let last = accepted.last().unwrap();
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
    assert_eq!(receiver.post("another-id", timestamp, signature, body), 401);
}
