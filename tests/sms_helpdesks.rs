//! Texts reach every helpdesk exactly once, across an outage and a crash: SIPp delivers a burst
//! of texts from many numbers to the running daemon; the signed webhook (the independent
//! Standard Webhooks receiver, checking every payload against sipdesk's schema) and the fake
//! Klaviyo, Zendesk, Help Scout and Intercom each fail their first requests with 503; the daemon
//! is killed with SIGKILL while deliveries are in flight, then restarted. Every text must be one
//! accepted `sms.received`, one `SMS Received` event, one public comment on a Zendesk ticket
//! tagged sms, one customer thread in Help Scout, one message and note in Intercom. A text from an
//! agent's phone then passes to the PBX and becomes `sms.sent` / `SMS Sent`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::calls::injection_file;
use common::daemon::{Daemon, SippMore, SippRun, free_port, scenario, test_dir};
use common::helpscout::{self, FakeHelpScout};
use common::intercom::{self, FakeIntercom};
use common::klaviyo::{self, FakeKlaviyo};
use common::receiver::{Receiver, SECRET};
use common::zendesk::{self, FakeZendesk};
use serde_json::Value;

const TEXTS: usize = 100;
const NUMBER: &str = "+34910000000";

fn config(hook: &str, kv: &str, zd: &str, hs: &str, ic: &str) -> String {
    format!(
        r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
agents = [{{ extension = "2001", email = "ana@example.com" }}, {{ extension = "2002" }}]

[[sms_numbers]]
number = "{NUMBER}"
name = "Soporte"
groups = ["support"]

[[helpdesks]]
name = "hook"
kind = "webhook"
url = "{hook}"
token_file = "hook.secret"
groups = ["support"]
requests_per_minute = 100000
request_timeout = "2s"

[[helpdesks]]
name = "kv"
kind = "klaviyo"
base_url = "{kv}"
token_file = "kv.key"
groups = ["support"]
requests_per_minute = 100000
request_timeout = "2s"

[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{zd}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["support"]
requests_per_minute = 100000
request_timeout = "2s"

[[helpdesks]]
name = "hs"
kind = "helpscout"
base_url = "{hs}"
client_id = "app-id"
token_file = "hs.secret"
mailbox_id = 7
groups = ["support"]
log_sms = true
requests_per_minute = 100000
request_timeout = "2s"

[[helpdesks]]
name = "ic"
kind = "intercom"
base_url = "{ic}"
token_file = "ic.token"
admin_email = "boss@example.com"
groups = ["support"]
requests_per_minute = 100000
request_timeout = "2s"
"#
    )
}

/// How often each `[sipdesk:<id>]` marker occurs in these texts.
fn markers<'a>(texts: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for text in texts {
        let mut rest = text;
        while let Some(at) = rest.find("[sipdesk:") {
            let tail = &rest[at + 9..];
            let end = tail.find(']').unwrap_or(tail.len());
            *seen.entry(tail[..end].to_owned()).or_default() += 1;
            rest = &tail[end..];
        }
    }
    seen
}

/// The accepted webhook payloads, by text id, with the webhook ids each came under.
fn accepted(receiver: &Receiver) -> HashMap<String, (Value, HashSet<String>)> {
    let mut by_text: HashMap<String, (Value, HashSet<String>)> = HashMap::new();
    for request in receiver.requests() {
        assert_eq!(request["verified"], true, "{request:#}");
        assert!(request["schema_error"].is_null(), "{request:#}");
        if request["status"].as_u64().is_some_and(|s| s < 300) {
            let payload: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
            let id = payload["data"]["id"].as_str().unwrap().to_owned();
            by_text
                .entry(id)
                .or_insert_with(|| (payload.clone(), HashSet::new()))
                .1
                .insert(request["id"].as_str().unwrap().to_owned());
        }
    }
    by_text
}

#[test]
fn texts_reach_every_helpdesk_once_through_an_outage_and_a_kill() {
    let dir = test_dir("sms-helpdesks");
    let down = vec!["503"; 20].join(",");
    let receiver = Receiver::start(&dir, &down);
    let kv = FakeKlaviyo::start(klaviyo::Settings {
        latency: Duration::from_millis(100),
        ..klaviyo::Settings::default()
    });
    kv.fail_next(20, klaviyo::Fault::Status(503));
    let zd = FakeZendesk::start(zendesk::Settings {
        rate_limit: 100_000,
        latency: Duration::from_millis(100),
        search_lag: Duration::from_secs(2),
        ..zendesk::Settings::default()
    });
    zd.fail_next(20, zendesk::Fault::Status(503));
    let hs = FakeHelpScout::start(helpscout::Settings {
        latency: Duration::from_millis(100),
        search_lag: Duration::from_secs(2),
        ..helpscout::Settings::default()
    });
    hs.fail_next(20, helpscout::Fault::Status(503));
    let ic = FakeIntercom::start(intercom::Settings {
        latency: Duration::from_millis(100),
        search_lag: Duration::from_secs(2),
        ..intercom::Settings::default()
    });
    ic.add_admin("boss@example.com");
    ic.fail_next(20, intercom::Fault::Status(503));
    let mut daemon = Daemon::start_in(
        dir.clone(),
        "trusted = [\"127.0.0.1\"]",
        &config(&receiver.url(), &kv.url, &zd.url, &hs.url, &ic.url),
        None,
        &[
            ("hook.secret", SECRET),
            ("kv.key", "pk_test_0123456789abcdef"),
            ("zd.token", "t0ken\n"),
            ("hs.secret", "app-secret"),
            ("ic.token", "ic-token"),
        ],
    );
    let senders: Vec<String> = (0..TEXTS).map(|i| format!("+3460010{i:04}")).collect();
    let lines: Vec<String> = senders
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s};Texto numero {i}"))
        .collect();
    let sipp = SippRun {
        scenario: "text-in.xml",
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: NUMBER,
        calls: TEXTS as u32,
        rate: 100,
        tcp: false,
    }
    .spawn_with(
        &dir,
        &SippMore {
            inf: Some(injection_file(&dir, &lines)),
            limit: Some(20),
            ..SippMore::default()
        },
    );
    daemon.succeeded(sipp);
    // Kill once both have some of the texts, with more to come.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (kv.events().len() < 10
        || accepted(&receiver).len() < 10
        || zd.tickets().len() < 10
        || hs.conversations().len() < 10
        || ic.conversations().len() < 10)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.kill();
    eprintln!(
        "at the kill, of {TEXTS}: webhook {}, Klaviyo {}, Zendesk {}, Help Scout {}, Intercom {}",
        accepted(&receiver).len(),
        kv.events().len(),
        zd.tickets().len(),
        hs.conversations().len(),
        ic.conversations().len()
    );
    // Zendesk, Help Scout and Intercom at least are mid-way (the webhook and Klaviyo, one request
    // a text, may be done).
    assert!(
        zd.tickets().len() < TEXTS
            && hs.conversations().len() < TEXTS
            && ic.conversations().len() < TEXTS,
        "killed too late to matter"
    );
    daemon.restart();
    let deliveries = daemon.settled_deliveries(5 * TEXTS, Duration::from_secs(180));
    let open: Vec<&Value> = deliveries.iter().filter(|d| d["state"] != "done").collect();
    assert!(open.is_empty(), "{open:#?}\n{}", daemon.log());
    assert_eq!(deliveries.len(), 5 * TEXTS);
    let ids: std::collections::HashSet<String> = deliveries
        .iter()
        .map(|d| d["call_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), TEXTS);

    // Zendesk: one ticket per sender, tagged sms, with the text once as a public comment.
    let tickets = zd.tickets();
    assert_eq!(tickets.len(), TEXTS, "Zendesk tickets");
    assert!(
        tickets
            .iter()
            .all(|t| t.tags.iter().any(|tag| tag == "sms"))
    );
    let seen = markers(tickets.iter().flat_map(|t| {
        t.comments
            .iter()
            .filter(|c| c.public)
            .map(|c| c.body.as_str())
    }));
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), ids, "Zendesk");
    assert!(
        seen.values().all(|n| *n == 1),
        "a Zendesk comment written twice"
    );

    // Help Scout: one conversation per sender, the text once as a customer thread.
    let conversations = hs.conversations();
    assert_eq!(conversations.len(), TEXTS, "Help Scout conversations");
    let seen = markers(conversations.iter().flat_map(|c| {
        c.threads
            .iter()
            .filter(|t| t.kind == "customer")
            .map(|t| t.text.as_str())
    }));
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        ids,
        "Help Scout"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "a Help Scout thread written twice"
    );

    // Intercom: one conversation per sender, "Inbound SMS on Soporte" and the note once.
    let conversations = ic.conversations();
    assert_eq!(conversations.len(), TEXTS, "Intercom conversations");
    let seen = markers(conversations.iter().flat_map(|c| {
        c.parts
            .iter()
            .filter(|p| p.kind == "note")
            .map(|p| p.body.as_str())
    }));
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        ids,
        "Intercom"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "an Intercom note written twice"
    );

    // The webhook: every text once, as sms.received, under one webhook id.
    let hook = accepted(&receiver);
    assert_eq!(hook.len(), TEXTS);
    let mut seen_senders = HashSet::new();
    for (payload, ids) in hook.values() {
        assert_eq!(ids.len(), 1, "one webhook id per text");
        assert_eq!(payload["type"], "sms.received");
        let data = &payload["data"];
        assert_eq!(data["call_type"], "sms_inbound");
        assert_eq!(data["number"]["number"], NUMBER);
        assert_eq!(data["number"]["name"], "Soporte");
        assert_eq!(data["status"], "received");
        let from = data["from"].as_str().unwrap();
        let i = senders.iter().position(|s| s == from).unwrap();
        assert_eq!(data["text"], format!("Texto numero {i}"));
        seen_senders.insert(from.to_owned());
    }
    assert_eq!(seen_senders.len(), TEXTS);

    // Klaviyo: one "SMS Received" event per text, on the sender's profile, with the text.
    let events = kv.events();
    assert_eq!(events.len(), TEXTS, "Klaviyo events");
    let unique: HashSet<&str> = events
        .iter()
        .filter_map(|e| e.unique_id.as_deref())
        .collect();
    assert_eq!(unique.len(), TEXTS);
    assert!(events.iter().all(|e| e.metric == "SMS Received"));
    assert!(events.iter().all(|e| {
        e.properties["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Texto numero "))
    }));

    // A text from an agent's phone: on to the PBX, then sms.sent and "SMS Sent".
    let text = std::fs::read_to_string(scenario("text-uas.xml"))
        .unwrap()
        .replace("FROM_NUMBER", "2001")
        .replace("TO_NUMBER", "611222333")
        .replace(
            // Passed on as the phone sent it, with the line end SIPp puts after a body.
            "BODY_TEXT",
            "Le llamo en cinco minutos[[:space:]]*",
        )
        .replace("ANSWER", "202 Accepted");
    let uas_path = dir.join("pbx-takes-text.xml");
    std::fs::write(&uas_path, text).unwrap();
    let pbx = SippRun {
        scenario: uas_path.to_str().unwrap(),
        ip: "127.0.0.1",
        port: daemon.pbx_port,
        target: None,
        service: "",
        calls: 1,
        rate: 0,
        tcp: false,
    }
    .spawn(&dir);
    std::thread::sleep(Duration::from_millis(300));
    let phone = SippRun {
        scenario: "text-from-phone.xml",
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: "611222333",
        calls: 1,
        rate: 1,
        tcp: false,
    }
    .spawn(&dir);
    daemon.succeeded(phone);
    daemon.succeeded(pbx);
    daemon.settled_deliveries(5 * TEXTS + 5, Duration::from_secs(60));
    let sent: Vec<Value> = accepted(&receiver)
        .into_values()
        .map(|(p, _)| p)
        .filter(|p| p["type"] == "sms.sent")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let data = &sent[0]["data"];
    assert_eq!(data["status"], "delivered");
    assert_eq!(data["to"], "+34611222333");
    assert_eq!(data["agent"]["extension"], "2001");
    assert_eq!(data["via"], "phone");
    assert_eq!(data["text"], "Le llamo en cinco minutos");
    let sms_sent: Vec<_> = kv
        .events()
        .into_iter()
        .filter(|e| e.metric == "SMS Sent")
        .collect();
    assert_eq!(sms_sent.len(), 1);
    assert_eq!(sms_sent[0].properties["delivered"], true);
}
