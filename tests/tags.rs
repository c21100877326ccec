//! Tags after the call, end to end: a call tagged `vip` by the PBX reaches Zendesk, Help Scout,
//! Intercom, Klaviyo and a webhook; then an admin runs `sipdesk calls tag ID +averia -vip` and
//! every helpdesk the call went to gets the change through the outbox: Zendesk's ticket tags
//! (through its tag rules), Help Scout's and Intercom's conversation tags, a signed
//! `call.tagged` webhook (checked against the schema by the independent receiver); Klaviyo's
//! event cannot change, and its delivery says so.

mod common;

use std::time::Duration;

use common::calls::{Ring, SUPPORT, place_call};
use common::daemon::{Daemon, test_dir};
use common::helpscout::{self, FakeHelpScout};
use common::intercom::{self, FakeIntercom};
use common::klaviyo::{self, FakeKlaviyo};
use common::receiver::{Receiver, SECRET};
use common::zendesk::{FakeZendesk, Settings};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);

fn config(zd: &str, hs: &str, ic: &str, kv: &str, hook: &str) -> String {
    format!(
        r#"
{SUPPORT}
[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{zd}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["support"]
tag_rules = [{{ tag = "vip", ticket_tags = ["cliente_vip"] }}, {{ tag = "averia", ticket_tags = ["averia"] }}]

[[helpdesks]]
name = "hs"
kind = "helpscout"
base_url = "{hs}"
client_id = "app-id"
token_file = "hs.secret"
mailbox_id = 7
groups = ["support"]

[[helpdesks]]
name = "ic"
kind = "intercom"
base_url = "{ic}"
token_file = "ic.token"
admin_email = "boss@example.com"
groups = ["support"]

[[helpdesks]]
name = "kv"
kind = "klaviyo"
base_url = "{kv}"
token_file = "kv.key"
groups = ["support"]

[[helpdesks]]
name = "hook"
kind = "webhook"
url = "{hook}"
token_file = "hook.secret"
groups = ["support"]
"#
    )
}

#[test]
fn tags_added_and_removed_after_the_call_reach_every_helpdesk() {
    let dir = test_dir("tags");
    let zd = FakeZendesk::start(Settings::default());
    zd.add_agent("Ana", "ana@example.com");
    let hs = FakeHelpScout::start(helpscout::Settings::default());
    let ic = FakeIntercom::start(intercom::Settings::default());
    ic.add_admin("boss@example.com");
    let kv = FakeKlaviyo::start(klaviyo::Settings::default());
    let receiver = Receiver::start(&dir, "");
    let daemon = Daemon::start_in(
        dir.clone(),
        "trusted = [\"127.0.0.1\"]",
        &config(&zd.url, &hs.url, &ic.url, &kv.url, &receiver.url()),
        None,
        &[
            ("zd.token", "t0ken"),
            ("hs.secret", "app-secret"),
            ("ic.token", "ic-token"),
            ("kv.key", "pk_test_0123456789abcdef"),
            ("hook.secret", SECRET),
        ],
    );

    place_call(
        &daemon,
        "600123456",
        "100",
        Ring::Answer,
        Some("X-Sipdesk-Tags: vip"),
    );
    let call = daemon.ended_calls(1)[0]["id"].as_str().unwrap().to_owned();
    let first = daemon.settled_deliveries(5, WAIT);
    assert!(
        first.iter().all(|d| d["state"] == "done"),
        "{first:#?}\n{}",
        daemon.log()
    );
    assert!(zd.tickets()[0].tags.contains(&"cliente_vip".to_owned()));
    assert!(hs.conversations()[0].tags.contains(&"vip".to_owned()));
    assert_eq!(ic.conversations()[0].tags, ["vip"]);

    // Nothing to change, an unknown call, a bad word: refused with the reason.
    let (code, out) = daemon.command(&["calls", "tag", &call, "+vip"]);
    assert_ne!(code, 0);
    assert!(out.contains("nothing changes"), "{out}");
    let (code, out) = daemon.command(&["calls", "tag", "no-such-call", "+vip"]);
    assert_ne!(code, 0);
    assert!(out.contains("no call has the id no-such-call"), "{out}");
    let (code, out) = daemon.command(&["calls", "tag", &call, "averia"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("write +tag to add a tag, -tag to remove one"),
        "{out}"
    );

    let (code, out) = daemon.command(&["calls", "tag", &call, "+x", "-x"]);
    assert_ne!(code, 0);
    assert!(out.contains("added and removed at once"), "{out}");

    // Intercom fails the first request of the change: it is retried, not lost.
    ic.fail_next(1, intercom::Fault::Status(500));
    let (code, out) = daemon.command(&["calls", "tag", &call, "+Averia", "-vip"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("tags now [averia]") && out.contains("queued for hook, hs, ic, kv, zd"),
        "{out}"
    );
    let all = daemon.settled_deliveries(10, WAIT);
    let tag_deliveries: Vec<&Value> = all
        .iter()
        .filter(|d| d["id"].as_str().unwrap().ends_with(":tags:000001"))
        .collect();
    assert_eq!(tag_deliveries.len(), 5, "{all:#?}");
    let state = |integration: &str| {
        tag_deliveries
            .iter()
            .find(|d| d["integration"] == integration)
            .unwrap_or_else(|| panic!("no tag delivery to {integration}"))
            .to_owned()
            .clone()
    };
    assert!(
        state("ic")["attempts"].as_u64().unwrap() >= 2,
        "{:#}",
        state("ic")
    );
    for integration in ["zd", "hs", "ic", "hook"] {
        assert_eq!(
            state(integration)["state"],
            "done",
            "{:#}\n{}",
            state(integration),
            daemon.log()
        );
    }
    let klaviyo = state("kv");
    assert_eq!(klaviyo["state"], "skipped");
    assert!(
        klaviyo
            .to_string()
            .contains("a Klaviyo event cannot change"),
        "{klaviyo:#}"
    );
    assert_eq!(kv.events().len(), 1);

    // Zendesk: the tag rules' ticket tags, the other tags left alone.
    let tags = &zd.tickets()[0].tags;
    assert!(
        tags.contains(&"averia".to_owned()) && !tags.contains(&"cliente_vip".to_owned()),
        "{tags:?}"
    );
    assert!(tags.contains(&"sipdesk".to_owned()), "{tags:?}");
    // Help Scout: the conversation's tags, with sipdesk's own kept.
    let conversation = &hs.conversations()[0];
    assert!(
        conversation.tags.contains(&"averia".to_owned()),
        "{:?}",
        conversation.tags
    );
    assert!(!conversation.tags.contains(&"vip".to_owned()));
    assert!(conversation.tags.contains(&"sipdesk".to_owned()));
    // Intercom: vip off, averia on.
    assert_eq!(ic.conversations()[0].tags, ["averia"]);
    // The webhook: call.tagged, signed and as the schema says, after the call's call.ended.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(
        requests
            .iter()
            .all(|r| r["verified"] == true && r["schema_error"].is_null()),
        "{requests:#?}"
    );
    let tagged: Value = serde_json::from_str(requests[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(tagged["type"], "call.tagged");
    assert_eq!(tagged["data"]["id"], call.as_str());
    assert_eq!(tagged["data"]["added"], serde_json::json!(["averia"]));
    assert_eq!(tagged["data"]["removed"], serde_json::json!(["vip"]));
    assert_eq!(tagged["data"]["tags"], serde_json::json!(["averia"]));
    assert_ne!(
        requests[0]["id"], requests[1]["id"],
        "a new webhook id for the change"
    );
    // The call's events say so too.
    let calls = daemon.ended_calls(1);
    let events = calls[0]["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "tagged" && e["detail"] == "+averia -vip"),
        "{events:#?}"
    );
}
