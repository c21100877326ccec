//! The webhook's JSON payload, version 1: the call's full record, in the Standard Webhooks
//! envelope (`type`, `timestamp`, `data`). `schema.json` beside this file is its JSON Schema
//! (the tests check every payload they receive against it; the README shows an example).
//!
//! Versioning: fields may be added within version 1; a field removed, renamed or given another
//! meaning makes version 2, announced in the README before it ships. Added in version 1:
//! `agents` (every agent who held the call, transfers included; `agent` is the last of them);
//! `voicemail` (the recording's length, a signed link, and its audio with `inline_audio`);
//! `voicemail.audio_omitted` and `voicemail.audio_size` (a recording too large to inline).
//!
//! Times are RFC 3339 with the offset of the group's time zone (`2026-03-02T10:00:12+01:00`),
//! the zone named in `timezone`, so a receiver shows them as the office saw them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::call::{CallRecord, Direction};
use crate::helpdesk::{Attachable, Party};
use crate::recordings::{self, Link};
use crate::store::tags::Retag;
use crate::tickets::{self, Log, Rules};

/// The payload's version.
pub const VERSION: u32 = 1;

/// The event type of a finished call.
pub const CALL_ENDED: &str = "call.ended";

/// The event type of tags added or removed after a call.
pub const CALL_TAGGED: &str = "call.tagged";

/// The event type of a text a customer sent to one of the company's numbers.
pub const SMS_RECEIVED: &str = "sms.received";

/// The event type of a text sent to a customer.
pub const SMS_SENT: &str = "sms.sent";

/// The payload's JSON Schema.
pub const SCHEMA: &str = include_str!("schema.json");

/// A time in RFC 3339 with the zone's offset at that time.
pub fn local(t: Timestamp, zone: &TimeZone) -> String {
    let offset = zone.to_offset(t);
    t.display_with_offset(offset).to_string()
}

/// The payload of one finished call for one integration.
pub fn payload(integration: &str, rules: &Rules, call: &CallRecord, party: &Party) -> Value {
    let zone = rules.zone_of(call);
    let time = |t: Timestamp| local(t, zone);
    let (number, as_sent) = match party {
        Party::Number(number) => (Some(number.as_str()), None),
        Party::Anonymous { sent } => (None, sent.as_deref()),
    };
    if call.sms.is_some() {
        return text(integration, rules, call, party);
    }
    let log = match rules.log.get(call.call_type()) {
        Log::Previous => "previous",
        // Calls the rules do not log never reach a connector; "new" is the rest.
        Log::New | Log::Nothing => "new",
    };
    json!({
        "type": CALL_ENDED,
        "version": VERSION,
        "timestamp": call.ended_at.to_string(),
        "integration": integration,
        "data": {
            "id": call.id,
            "sip_call_id": call.sip_call_id,
            "direction": call.direction,
            "call_type": call.call_type(),
            "outcome": call.outcome,
            "reason": call.reason,
            "ended_by": call.ended_by,
            "out_of_hours": call.out_of_hours,
            "queue": call.queue,
            "group": call.group,
            "groups": call.groups,
            "party": {
                "number": number,
                "anonymous": number.is_none(),
                "as_sent": as_sent,
            },
            "caller": call.caller,
            "callee": call.callee,
            "agent": call.agent.as_ref().map(|extension| json!({
                "extension": extension,
                "email": call.agent_email,
            })),
            "agents": call.agents.iter().map(|leg| json!({
                "extension": leg.extension,
                "email": leg.email,
                "from": time(leg.from),
                "until": time(leg.until),
            })).collect::<Vec<_>>(),
            "timezone": zone.iana_name().unwrap_or("UTC"),
            "started_at": time(call.started_at),
            "answered_at": call.answered_at.map(time),
            "ended_at": time(call.ended_at),
            "wait_seconds": (call.direction == Direction::Inbound)
                .then(|| round(call.wait_seconds())),
            "talk_seconds": call.answered_at.map(|_| round(call.talk_seconds())),
            "recording_url": call.recording_url,
            "tags": call.tags,
            "explanation": call.explanation,
            "log": log,
            "summary": tickets::summary(rules, call),
            "voicemail": voicemail(call, None, &Attachable::None),
        }
    })
}

/// The payload of a text: `sms.received` or `sms.sent`.
fn text(integration: &str, rules: &Rules, call: &CallRecord, party: &Party) -> Value {
    let zone = rules.zone_of(call);
    let Some(sms) = &call.sms else {
        return Value::Null;
    };
    let (number, as_sent) = match party {
        Party::Number(number) => (Some(number.as_str()), None),
        Party::Anonymous { sent } => (None, sent.as_deref()),
    };
    let (kind, status) = match (call.direction, &sms.failure) {
        (Direction::Inbound, _) => (SMS_RECEIVED, "received"),
        (Direction::Outbound, None) => (SMS_SENT, "delivered"),
        (Direction::Outbound, Some(_)) => (SMS_SENT, "failed"),
    };
    let log = match tickets::log_of(rules, call) {
        Log::Previous => "previous",
        Log::New | Log::Nothing => "new",
    };
    json!({
        "type": kind,
        "version": VERSION,
        "timestamp": call.ended_at.to_string(),
        "integration": integration,
        "data": {
            "id": call.id,
            "sip_call_id": call.sip_call_id,
            "direction": call.direction,
            "call_type": call.call_type(),
            "number": { "number": sms.number, "name": sms.name },
            "party": {
                "number": number,
                "anonymous": number.is_none(),
                "as_sent": as_sent,
            },
            "from": call.caller,
            "to": call.callee,
            "agent": call.agent.as_ref().map(|extension| json!({
                "extension": extension,
                "email": call.agent_email,
            })),
            "text": sms.body,
            "status": status,
            "failure": sms.failure,
            "via": sms.via,
            "ticket": sms.ticket,
            "group": call.group,
            "groups": call.groups,
            "timezone": zone.iana_name().unwrap_or("UTC"),
            "at": local(call.started_at, zone),
            "log": log,
            "summary": tickets::sms_summary(rules, call),
        }
    })
}

/// The call's voicemail: its length, why it ended, its type, a signed link to it (`null` without
/// `[media] public_url`) and, with `inline_audio`, the WAV itself in base64 — or, for a
/// recording too large to carry, `audio_omitted: "too_large"` and its size. `null` for a call
/// without a voicemail.
pub fn voicemail(call: &CallRecord, link: Option<&Link>, audio: &Attachable) -> Value {
    let Some(voicemail) = &call.voicemail else {
        return Value::Null;
    };
    let mut value = json!({
        "duration_ms": voicemail.duration_ms,
        "end": voicemail.end,
        "file_name": voicemail.file_name(&call.id),
        "content_type": recordings::CONTENT_TYPE,
        "url": link.map(|l| &l.url),
        "url_expires_at": link.map(|l| l.expires.to_string()),
    });
    match audio {
        Attachable::None => {}
        Attachable::Audio(audio) => value["audio_base64"] = json!(BASE64.encode(&audio.bytes)),
        Attachable::TooLarge { size } => {
            value["audio_omitted"] = json!("too_large");
            value["audio_size"] = json!(size);
        }
    }
    value
}

/// The payload of a tag change on a call already posted: what was added and removed, and the
/// call's tags now.
pub fn tagged(integration: &str, call: &CallRecord, retag: &Retag, at: Timestamp) -> Value {
    json!({
        "type": CALL_TAGGED,
        "version": VERSION,
        "timestamp": at.to_string(),
        "integration": integration,
        "data": {
            "id": call.id,
            "added": retag.added,
            "removed": retag.removed,
            "tags": retag.tags,
        }
    })
}

/// Seconds to the millisecond.
fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallType;
    use crate::tickets::tests::{call, rules};

    #[test]
    fn times_carry_the_groups_offset_and_the_party_is_e164_or_anonymous() {
        let rules = rules();
        let mut answered = call(CallType::InboundAnswered);
        let body = payload(
            "hook",
            &rules,
            &answered,
            &Party::Number("+34911239613".to_owned()),
        );
        let data = &body["data"];
        assert_eq!(body["type"], "call.ended");
        assert_eq!(body["version"], 1);
        assert_eq!(body["timestamp"], "2026-03-02T09:03:27Z");
        assert_eq!(data["timezone"], "Europe/Madrid");
        assert_eq!(data["started_at"], "2026-03-02T10:00:00+01:00");
        assert_eq!(data["answered_at"], "2026-03-02T10:00:12+01:00");
        assert_eq!(data["wait_seconds"], 12.0);
        assert_eq!(data["talk_seconds"], 195.0);
        assert_eq!(data["party"]["number"], "+34911239613");
        assert_eq!(data["agent"]["email"], "ana@example.com");
        assert_eq!(data["agents"][0]["extension"], "201");
        assert_eq!(data["agents"][0]["from"], "2026-03-02T10:00:12+01:00");
        assert_eq!(data["agents"][0]["until"], "2026-03-02T10:03:27+01:00");
        assert_eq!(data["log"], "new");
        assert!(!data["summary"].as_str().unwrap().contains("[sipdesk:"));
        // São Paulo's calls in São Paulo's time; a zone at UTC still writes its offset.
        answered.group = Some("suporte".to_owned());
        let body = payload("hook", &rules, &answered, &Party::Anonymous { sent: None });
        assert_eq!(body["data"]["started_at"], "2026-03-02T06:00:00-03:00");
        assert_eq!(body["data"]["party"]["anonymous"], true);
        let mut utc = rules.clone();
        utc.group_zones = vec![("support".to_owned(), TimeZone::UTC)];
        let missed = call(CallType::Missed);
        let body = payload(
            "hook",
            &utc,
            &missed,
            &Party::Anonymous {
                sent: Some("abc".to_owned()),
            },
        );
        assert_eq!(body["data"]["started_at"], "2026-03-02T09:00:00+00:00");
        assert_eq!(body["data"]["agent"], Value::Null);
        assert_eq!(body["data"]["agents"], json!([]));
        assert_eq!(body["data"]["talk_seconds"], Value::Null);
        assert_eq!(body["data"]["reason"], "no_answer");
        assert_eq!(body["data"]["party"]["as_sent"], "abc");
    }
}

#[cfg(test)]
mod readme {
    use super::*;
    use crate::call::CallType;
    use crate::tickets::tests::{call, rules};

    /// The README's example has exactly the fields sipdesk sends (the receiver test checks real
    /// payloads against the schema; this keeps the documentation in step).
    #[test]
    fn the_readme_example_has_the_payloads_fields() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("### Webhooks").expect("a Webhooks section")..];
        let start = section.find("```json\n").expect("an example") + 8;
        let end = start + section[start..].find("```").unwrap();
        let example: Value = serde_json::from_str(&section[start..end]).unwrap();
        let sent = payload(
            "hook",
            &rules(),
            &call(CallType::InboundAnswered),
            &Party::Number("+34911239613".to_owned()),
        );
        let keys = |v: &Value| -> Vec<String> {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&example), keys(&sent));
        assert_eq!(keys(&example["data"]), keys(&sent["data"]));
        assert_eq!(
            keys(&example["data"]["party"]),
            keys(&sent["data"]["party"])
        );
        assert_eq!(
            keys(&example["data"]["agent"]),
            keys(&sent["data"]["agent"])
        );
        assert_eq!(
            keys(&example["data"]["agents"][0]),
            keys(&sent["data"]["agents"][0])
        );
    }
}
