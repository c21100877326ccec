//! The admin API of the real daemon, as supervisors, monitoring and the wallboard use it: every
//! endpoint with its refusals (401, 400, 404), the OpenAPI document checked by
//! openapi-spec-validator and answers checked against it, `/metrics` parsed by the Prometheus
//! client's own parser, `/events` read by an SSE client while SIPp places calls, an agent set
//! away through the API skipped by routing, and the feature codes dialled from a phone.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, SippRun, free_port};

const BODY: &str = r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "trio"
queues = ["500"]
agents = [{ extension = "6001", name = "Ana" }, { extension = "6002" }, { extension = "6003" }]
wrap_up = "0s"
"#;

const FAST: &str = "trusted = [\"127.0.0.1\"]\nt1 = \"100ms\"\nt2 = \"500ms\"";

/// The Python with the checkers (`.ci/test` makes it).
fn python() -> String {
    std::env::var("SIPDESK_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs tests/receivers/check_api.py; returns its output, failing the test on a failed check.
fn check(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/receivers/check_api.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "check_api.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks `value` against the OpenAPI document's schema `name`.
fn conforms(daemon: &Daemon, name: &str, value: &serde_json::Value) {
    let doc = daemon.dir.join("openapi.json");
    if !doc.exists() {
        let (status, text) = daemon.admin("GET", "/openapi.json", None);
        assert_eq!(status, 200);
        std::fs::write(&doc, text).unwrap();
    }
    let file = daemon
        .dir
        .join(format!("instance-{}.json", fastrand_name()));
    std::fs::write(&file, value.to_string()).unwrap();
    check(&[
        "schema",
        doc.to_str().unwrap(),
        name,
        file.to_str().unwrap(),
    ]);
}

fn fastrand_name() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The metrics, as the Prometheus parser read them.
fn metrics(daemon: &Daemon) -> serde_json::Value {
    let (status, text) = daemon.admin("GET", "/metrics", Some(&daemon.token()));
    assert_eq!(status, 200, "{text}");
    let file = daemon.dir.join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    serde_json::from_str(&check(&["metrics", file.to_str().unwrap()])).unwrap()
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(families: &serde_json::Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}: {families}"))
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {family}"))
}

#[test]
fn every_endpoint_answers_as_its_contract_says_and_refuses_clearly() {
    let mut daemon = Daemon::start("admin-api", FAST, BODY);
    // No token needed for these three.
    let (status, body) = daemon.admin("GET", "/health", None);
    assert_eq!(status, 200, "{body}");
    let (status, document) = daemon.admin("GET", "/openapi.json", None);
    assert_eq!(status, 200);
    std::fs::write(daemon.dir.join("openapi.json"), &document).unwrap();
    conforms(&daemon, "Health", &serde_json::from_str(&body).unwrap());
    assert_eq!(status, 200);
    let doc = daemon.dir.join("openapi.json");
    std::fs::write(&doc, &document).unwrap();
    assert_eq!(check(&["openapi", doc.to_str().unwrap()]).trim(), "valid");
    let (status, page) = daemon.admin("GET", "/wallboard", None);
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page}");

    // Every other endpoint refuses without the token, and with a wrong one.
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/calls?active=true"),
        ("GET", "/calls/x"),
        ("DELETE", "/calls/x"),
        ("POST", "/calls/x/tags"),
        ("GET", "/agents"),
        ("GET", "/agents/6001"),
        ("PUT", "/agents/6001"),
        ("POST", "/agents/6001/free"),
        ("GET", "/groups"),
        ("GET", "/deliveries?state=failed"),
        ("POST", "/deliveries/x/retry"),
        ("GET", "/events"),
    ] {
        assert_eq!(daemon.admin(method, path, None).0, 401, "{method} {path}");
        assert_eq!(
            daemon.admin(method, path, Some("not-the-token")).0,
            401,
            "{method} {path}"
        );
    }

    // Agents: live, each as the contract says.
    let (status, agents) = daemon.api("GET", "/agents", None);
    assert_eq!(status, 200, "{agents}");
    let list = agents["agents"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{agents}");
    for agent in list {
        conforms(&daemon, "LiveAgent", agent);
        assert_eq!(agent["state"], "available", "{agent}");
    }
    assert_eq!(list[0]["name"], "Ana");
    assert_eq!(daemon.api("GET", "/agents/7777", None).0, 404);

    // Bad bodies and unknown things: 400 and 404, each with the reason.
    for body in [
        "not json",
        r#"{"state": "asleep"}"#,
        r#"{"state": "away", "colour": "red"}"#,
        r#"{"state": "available", "reason": "lunch"}"#,
    ] {
        let (status, answer) = daemon.api("PUT", "/agents/6001", Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let (status, answer) = daemon.api("PUT", "/agents/7777", Some(r#"{"state":"away"}"#));
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = daemon.api("PUT", "/agents/60%2001", Some(r#"{"state":"away"}"#));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = daemon.api("GET", "/calls/no-such-call", None);
    assert_eq!(status, 404, "{answer}");
    assert_eq!(daemon.api("DELETE", "/calls/no-such-call", None).0, 404);
    let (status, answer) = daemon.api(
        "POST",
        "/calls/no-such-call/tags",
        Some(r#"{"add":["averia"]}"#),
    );
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = daemon.api("POST", "/calls/x/tags", Some(r#"{"add":["two words"]}"#));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = daemon.api("GET", "/deliveries?state=lost", None);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = daemon.api("GET", "/deliveries?state=failed", None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deliveries"], serde_json::json!([]));
    assert_eq!(daemon.api("POST", "/deliveries/nope/retry", None).0, 404);
    assert_eq!(daemon.api("GET", "/no/such/endpoint", None).0, 404);

    // Groups and calls, as the contract says.
    let (status, groups) = daemon.api("GET", "/groups", None);
    assert_eq!(status, 200, "{groups}");
    conforms(&daemon, "Group", &groups["groups"][0]);
    assert_eq!(groups["groups"][0]["agents"]["available"], 3, "{groups}");
    assert_eq!(
        groups["groups"][0]["today"]["service_level"],
        serde_json::Value::Null
    );
    let (status, calls) = daemon.api("GET", "/calls?active=true", None);
    assert_eq!(status, 200);
    assert_eq!(calls["calls"], serde_json::json!([]));

    // Metrics parse as Prometheus text, with every family the operator expects.
    let families = metrics(&daemon);
    for (family, kind) in [
        ("sipdesk_calls", "counter"),
        ("sipdesk_ring_attempts", "counter"),
        ("sipdesk_wait_seconds", "histogram"),
        ("sipdesk_sip_messages", "counter"),
        ("sipdesk_active_calls", "gauge"),
        ("sipdesk_agents", "gauge"),
        ("sipdesk_transactions", "gauge"),
        ("sipdesk_voicemail_sessions", "gauge"),
        ("sipdesk_voicemail_sessions_max", "gauge"),
        ("sipdesk_deliveries", "gauge"),
    ] {
        assert_eq!(families[family]["type"], kind, "{family}: {families}");
    }
    assert_eq!(
        sample(
            &families,
            "sipdesk_agents",
            "sipdesk_agents",
            &[("state", "available")]
        ),
        3.0
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// A server-sent events client: the events as (name, JSON data), read on a thread.
struct Events {
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Events {
    fn open(daemon: &Daemon) -> Events {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let url = format!("http://127.0.0.1:{}/events", daemon.admin_port);
        let token = daemon.token();
        sipdesk::helpdesk::http::install_crypto();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut response = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .header("Accept", "text/event-stream")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let mut buffer = String::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    // Events end with a blank line (the SSE format).
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        let mut name = "message".to_owned();
                        let mut data = String::new();
                        for line in block.lines() {
                            if let Some(v) = line.strip_prefix("event:") {
                                name = v.trim().to_owned();
                            } else if let Some(v) = line.strip_prefix("data:") {
                                data.push_str(v.trim_start());
                            }
                        }
                        if !data.is_empty() {
                            let value = serde_json::from_str(&data).unwrap();
                            sink.lock().unwrap().push((name, value));
                        }
                    }
                }
            });
        });
        Events { received }
    }

    /// Waits until an event satisfies `test`; returns it.
    fn wait_for(
        &self,
        what: &str,
        test: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some((_, v)) = self
                .received
                .lock()
                .unwrap()
                .iter()
                .find(|(n, v)| test(n, v))
            {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no event {what}; got {:?}",
                self.received.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn an_agent_set_away_is_skipped_and_supervisors_see_every_change_live() {
    let mut daemon = Daemon::start("admin-live", FAST, BODY);
    let events = Events::open(&daemon);
    let snapshot = events.wait_for("snapshot", |n, _| n == "snapshot");
    assert_eq!(
        snapshot["agents"].as_array().unwrap().len(),
        3,
        "{snapshot}"
    );
    conforms(&daemon, "Live", &snapshot);

    let (status, answer) = daemon.api(
        "PUT",
        "/agents/6001",
        Some(r#"{"state": "away", "reason": "lunch"}"#),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], true);
    let away = events.wait_for("6001 away", |n, v| {
        n == "agent" && v["agent"]["extension"] == "6001" && v["agent"]["state"] == "away"
    });
    assert_eq!(away["agent"]["reason"], "lunch");

    // The round robin would start at 6001; it is away, so 6002 takes the call.
    let uas = daemon.agents("agents-answer.xml", 1);
    let uac = daemon.callers("caller-answered-until-bye.xml", "500", 1, 20, 1, false);
    // The first event of the call: ringing 6002, or already answered by 6002 (the snapshots
    // are at most 200 ms apart, and SIPp answers at once: a state that short may not show).
    let first = events.wait_for("the call", |n, _| n == "call");
    assert_eq!(first["call"]["agent"], "6002", "{first}");
    assert_eq!(first["call"]["group"], "trio");
    assert!(
        first["call"]["state"] == "ringing" || first["call"]["state"] == "answered",
        "{first}"
    );
    let id = first["call"]["id"].as_str().unwrap().to_owned();
    let answered = events.wait_for("the call answered", |n, v| {
        n == "call" && v["call"]["state"] == "answered"
    });
    assert_eq!(answered["call"]["agent"], "6002");
    events.wait_for("6002 on the call", |n, v| {
        n == "agent" && v["agent"]["extension"] == "6002" && v["agent"]["state"] == "on_call"
    });

    conforms(&daemon, "LiveEvent", &answered);
    // 6002, on the call, says it is going away after it: the call still shows, and so does the
    // choice; and back.
    let (status, _) = daemon.api("PUT", "/agents/6002", Some(r#"{"state": "away"}"#));
    assert_eq!(status, 200);
    let (_, agent) = daemon.api("GET", "/agents/6002", None);
    assert_eq!(agent["state"], "on_call", "{agent}");
    assert_eq!(agent["away"], true, "{agent}");
    let (status, _) = daemon.api("PUT", "/agents/6002", Some(r#"{"state": "available"}"#));
    assert_eq!(status, 200);

    // While it is in progress, every view agrees.
    let (status, calls) = daemon.api("GET", "/calls?active=true", None);
    assert_eq!(status, 200);
    let live = &calls["calls"][0];
    conforms(&daemon, "LiveCall", live);
    assert_eq!(live["id"], id.as_str());
    assert_eq!(live["agent"], "6002");
    let (_, agent) = daemon.api("GET", "/agents/6002", None);
    assert_eq!(agent["state"], "on_call");
    assert_eq!(agent["call"], id.as_str());
    let (_, groups) = daemon.api("GET", "/groups", None);
    assert_eq!(groups["groups"][0]["talking"], 1, "{groups}");
    assert_eq!(groups["groups"][0]["agents"]["away"], 1, "{groups}");
    let (code, out) = daemon.command(&["calls", "--active"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answered") && out.contains("6002"), "{out}");
    let (code, out) = daemon.command(&["agents"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("away (lunch)"), "{out}");

    // The admin ends it: both SIPp sides get BYE (or they fail), and the stream says so.
    let (status, _) = daemon.api("DELETE", &format!("/calls/{id}"), None);
    assert_eq!(status, 200);
    events.wait_for("the call ended", |n, v| {
        n == "call_ended" && v["id"] == id.as_str()
    });
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    let call = daemon.ended_calls(1).remove(0);
    assert_eq!(call["agent"], "6002");
    assert_eq!(call["ended_by"], "admin");

    // Today's figures and the metrics count it.
    let (_, groups) = daemon.api("GET", "/groups", None);
    let today = &groups["groups"][0]["today"];
    assert_eq!(today["answered"], 1, "{groups}");
    assert_eq!(today["service_level"], 1.0, "{groups}");
    let (status, shown) = daemon.api("GET", &format!("/calls/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(shown["call"]["outcome"], "answered", "{shown}");
    assert!(shown["events"].as_array().unwrap().len() >= 3, "{shown}");
    conforms(&daemon, "CallRow", &shown["call"]);
    for event in shown["events"].as_array().unwrap() {
        conforms(&daemon, "CallEvent", event);
    }
    let (status, recent) = daemon.api("GET", "/calls?limit=5", None);
    assert_eq!(status, 200);
    assert_eq!(recent["calls"][0]["id"], id.as_str());
    let families = metrics(&daemon);
    assert_eq!(
        sample(
            &families,
            "sipdesk_calls",
            "sipdesk_calls_total",
            &[("group", "trio"), ("outcome", "answered")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &families,
            "sipdesk_ring_attempts",
            "sipdesk_ring_attempts_total",
            &[("group", "trio")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &families,
            "sipdesk_wait_seconds",
            "sipdesk_wait_seconds_count",
            &[]
        ),
        1.0
    );
    assert!(
        sample(
            &families,
            "sipdesk_sip_messages",
            "sipdesk_sip_messages_total",
            &[("direction", "in"), ("method", "INVITE"), ("code", "")]
        ) >= 1.0
    );
    assert!(
        sample(
            &families,
            "sipdesk_sip_messages",
            "sipdesk_sip_messages_total",
            &[("direction", "out"), ("method", "BYE"), ("code", "")]
        ) >= 2.0
    );

    // Tags on the ended call, through the API.
    let (status, tagged) = daemon.api(
        "POST",
        &format!("/calls/{id}/tags"),
        Some(r#"{"add":["Averia"]}"#),
    );
    assert_eq!(status, 200, "{tagged}");
    assert_eq!(tagged["tags"], serde_json::json!(["averia"]));

    // Available again: the choice survives a restart, and the reason went with "away".
    let (status, _) = daemon.api("PUT", "/agents/6001", Some(r#"{"state": "available"}"#));
    assert_eq!(status, 200);
    let (_, answer) = daemon.api(
        "PUT",
        "/agents/6003",
        Some(r#"{"state": "away", "reason": "training"}"#),
    );
    assert_eq!(answer["changed"], true);
    assert_eq!(daemon.stop(), Some(0));
    daemon.restart();
    let (_, agents) = daemon.api("GET", "/agents", None);
    let states: Vec<(String, String, serde_json::Value)> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["extension"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
                a["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("6001".into(), "available".into(), serde_json::Value::Null),
            ("6002".into(), "available".into(), serde_json::Value::Null),
            ("6003".into(), "away".into(), "training".into()),
        ]
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn agents_toggle_their_own_availability_with_feature_codes() {
    let mut daemon = Daemon::start("feature-codes", FAST, BODY);
    let dial = |code: &str| {
        let sipp = SippRun {
            scenario: "agent-feature-code.xml",
            ip: "127.0.0.1",
            port: free_port(),
            target: Some(format!("127.0.0.1:{}", daemon.port)),
            service: code,
            calls: 1,
            rate: 1,
            tcp: false,
        }
        .spawn(&daemon.dir);
        daemon.succeeded(sipp);
        // The snapshot the API reads is at most PUBLISH_EVERY (200 ms) behind the proxy.
        std::thread::sleep(Duration::from_millis(400));
        let (status, agent) = daemon.api("GET", "/agents/6002", None);
        assert_eq!(status, 200);
        agent["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(dial("*46"), "away");
    assert_eq!(dial("*47"), "available");
    assert_eq!(dial("*46"), "away");
    // Restarted, the agent is still away (the choice went to the store).
    assert_eq!(daemon.stop(), Some(0));
    daemon.restart();
    let (_, agent) = daemon.api("GET", "/agents/6002", None);
    assert_eq!(agent["state"], "away");
    assert_eq!(daemon.stop(), Some(0));
}
