//! The Klaviyo connector (`kind = "klaviyo"`): each finished call is an event on the caller's
//! profile, through the Events API (`POST /api/events`), so marketing flows can react to support
//! calls the way the seed's flows react to ticket events.
//!
//! - Private API key as `Authorization: Klaviyo-API-Key <key>`, the pinned [`REVISION`] in the
//!   `revision` header, JSON:API bodies (`application/vnd.api+json`); Klaviyo answers 202 with
//!   no body.
//! - The profile is named by its E.164 phone number; Klaviyo finds it or makes it. With
//!   `create_unknown_contacts = false` the profile is looked up first (`GET /api/profiles`
//!   filtered on `phone_number`; the answer kept in memory for a while, not in the contact
//!   directory: a marketing profile is not a helpdesk contact, and routing must not take it
//!   for one) and a number with no profile is not logged, with that reason. Withheld numbers
//!   have no profile: skipped, with the reason.
//! - The metric (event name) per call type is configurable; the event's properties are the
//!   call's identity (id, type, direction, outcome and reason, out of hours, tags) and, of its
//!   details, those the integration's `fields` list — what leaves for a marketing tool is the
//!   admin's choice; `time` is when the call started; `unique_id` is the call id, so a retry —
//!   or an attempt whose answer was lost — never counts the call twice (Klaviyo keeps one event
//!   per unique id and profile and metric). A voicemail adds `voicemail_seconds` and, with
//!   `[media] public_url`, `voicemail_url` (a signed link) and `voicemail_url_expires_at`.
//! - A text is an event too (`SMS Received`, `SMS Sent` by default), with the text, the company's
//!   number and its name, and for a sent text whether the PBX took it.
//! - Limits: Create Event allows 350 a second in bursts and 3,500 a minute steady; sipdesk
//!   paces at `requests_per_minute` (3,500 by default, 8 deliveries at once) and honours `Retry-After` on 429.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::http::{Announced, Credentials, Http, Reply, Vendor, header_number};
use super::webhook::payload::local;
use super::{Delivered, HelpdeskError, Job, Party};
use crate::call::Direction;
use crate::config::{HelpdeskSettings, KlaviyoSettings, Secret};
use crate::tickets::{self, Field, Rules, Skip};

/// The API revision sipdesk is written against.
pub const REVISION: &str = "2026-07-15";

/// JSON:API's media type, which Klaviyo's API speaks.
const JSON_API: &str = "application/vnd.api+json";

/// How long a profile found is trusted before Klaviyo is asked again.
const CONTACT_FRESH: Duration = Duration::from_secs(24 * 3600);
/// How long "no profile has this number" is trusted: a profile made meanwhile is found soon.
const NO_CONTACT_FRESH: Duration = Duration::from_secs(600);

/// A Klaviyo integration.
pub struct Klaviyo {
    http: Http,
    name: String,
    rules: Rules,
    settings: KlaviyoSettings,
    /// Whether a profile has the number, and when Klaviyo said so.
    profiles: Mutex<HashMap<String, (bool, Instant)>>,
}

/// Klaviyo's rate-limit headers, which describe the steady (one-minute) window:
/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the window
/// resets). A 429 carries `Retry-After` instead, which [`Http`] honours.
fn rate_headers(headers: &HeaderMap) -> Announced {
    let exhausted = header_number(headers, "ratelimit-remaining") == Some(0);
    Announced {
        per_minute: header_number(headers, "ratelimit-limit"),
        wait: header_number(headers, "ratelimit-reset")
            .filter(|_| exhausted)
            .map(|reset| Duration::from_secs(u64::from(reset))),
    }
}

/// What Klaviyo's JSON:API errors say: each error's title and detail, with where it points.
fn errors(reply: &Reply) -> String {
    let listed: Vec<String> = reply
        .body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let mut text = [e.get("title"), e.get("detail")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(": ");
            if let Some(pointer) = e.pointer("/source/pointer").and_then(Value::as_str) {
                text.push_str(&format!(" (at {pointer})"));
            }
            text
        })
        .collect();
    if listed.is_empty() {
        super::http::error_message(&reply.body)
    } else {
        listed.join("; ")
    }
}

impl Klaviyo {
    pub fn new(
        settings: &HelpdeskSettings,
        klaviyo: &KlaviyoSettings,
        secret: &Secret,
    ) -> Result<Klaviyo, String> {
        let http = Http::new(
            &settings.name,
            &klaviyo.base_url,
            Vendor {
                credentials: Credentials::Header {
                    name: "authorization",
                    value: Secret::new(format!("Klaviyo-API-Key {}", secret.expose())),
                },
                rate_headers,
                json_answers: true,
                pass_through: &[],
                write_weight: 1,
            },
            settings.requests_per_minute,
            settings.request_timeout,
        )?;
        Ok(Klaviyo {
            http,
            name: settings.name.clone(),
            rules: settings.rules.clone(),
            settings: klaviyo.clone(),
            profiles: Mutex::new(HashMap::new()),
        })
    }

    /// Carries out one delivery.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        let Party::Number(phone) = &job.party else {
            return Ok(Delivered::Skipped(
                "the number is withheld or not a phone number: no Klaviyo profile to put the event on"
                    .to_owned(),
            ));
        };
        if !self.rules.create_unknown_contacts && !self.has_profile(phone).await? {
            return Ok(Delivered::Skipped(
                Skip::UnknownContact { anonymous: false }.to_string(),
            ));
        }
        let metric = self.settings.metric.of(call.call_type());
        let mut properties = properties(&self.rules, job);
        if let Some(voicemail) = &call.voicemail {
            let link = job.voicemail_link()?;
            properties["voicemail_seconds"] = json!(voicemail.duration_ms.div_ceil(1000));
            if let Some(link) = link {
                properties["voicemail_url"] = json!(link.url);
                properties["voicemail_url_expires_at"] = json!(link.expires.to_string());
            }
        }
        let body = json!({
            "data": {
                "type": "event",
                "attributes": {
                    "properties": properties,
                    "time": call.started_at.to_string(),
                    "unique_id": call.id,
                    "metric": { "data": { "type": "metric", "attributes": { "name": metric } } },
                    "profile": { "data": { "type": "profile", "attributes": { "phone_number": phone } } },
                }
            }
        });
        let url = self.http.url("/api/events", &[])?;
        let reply = self
            .http
            .send_text(
                Method::POST,
                url,
                Some(body.to_string()),
                &[
                    ("revision", REVISION),
                    ("content-type", JSON_API),
                    ("accept", JSON_API),
                ],
            )
            .await?;
        match reply.status.as_u16() {
            200..=299 => Ok(Delivered::Ticket {
                id: call.id.clone(),
                detail: format!("recorded the event \"{metric}\" on the profile {phone}"),
            }),
            status => Err(HelpdeskError::Permanent(format!(
                "POST /api/events: {} refused the event ({status} {})",
                self.name,
                errors(&reply)
            ))),
        }
    }

    /// Whether Klaviyo has a profile with this phone number: the answer held while it is
    /// fresh, else Klaviyo's.
    async fn has_profile(&self, phone: &str) -> Result<bool, HelpdeskError> {
        if let Some((found, at)) = self
            .profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(phone)
        {
            let fresh = if *found {
                CONTACT_FRESH
            } else {
                NO_CONTACT_FRESH
            };
            if at.elapsed() < fresh {
                return Ok(*found);
            }
        }
        let filter = format!("equals(phone_number,\"{phone}\")");
        let url = self.http.url(
            "/api/profiles",
            &[("filter", &filter), ("fields[profile]", "phone_number")],
        )?;
        let reply = self
            .http
            .send(
                Method::GET,
                url,
                None,
                &[("revision", REVISION), ("accept", JSON_API)],
            )
            .await?;
        if !reply.is_success() {
            return Err(HelpdeskError::Permanent(format!(
                "GET /api/profiles: {} refused the search ({} {}); the key needs the profiles:read scope",
                self.name,
                reply.status.as_u16(),
                errors(&reply)
            )));
        }
        let found = reply.body.pointer("/data/0/id").is_some();
        let mut held = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() > 100_000 {
            held.clear();
        }
        held.insert(phone.to_owned(), (found, Instant::now()));
        Ok(found)
    }
}

/// The event's properties: the call's identity always, its details as `fields` lists them,
/// times in the group's zone with its offset.
fn properties(rules: &Rules, job: &Job<'_>) -> Value {
    let call = job.call;
    let zone = rules.zone_of(call);
    let time = |t: Timestamp| Value::String(local(t, zone));
    let wants = |field: Field| rules.fields.contains(&field);
    let mut p = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            p.insert(key.to_owned(), value);
        }
    };
    put("call_id", json!(call.id));
    put("call_type", json!(call.call_type()));
    put("direction", json!(call.direction));
    put("outcome", json!(call.outcome));
    put("reason", json!(call.reason));
    put("out_of_hours", json!(call.out_of_hours));
    put("tags", json!(call.tags));
    if let Some(text) = &call.sms {
        // A text's event carries the text and the company's number it went through: what a
        // flow reacting to "SMS Received" needs.
        put("sms_number", json!(text.number));
        put("sms_number_name", json!(text.name));
        put("text", json!(text.body));
        if call.direction == Direction::Outbound {
            put("delivered", json!(text.failure.is_none()));
            put("failure", json!(text.failure));
            put("sent_via", json!(text.via));
        }
    }
    if wants(Field::Queue) {
        put("queue", json!(call.queue));
    }
    if wants(Field::Group) {
        put("group", json!(call.group));
        put("groups", json!(call.groups));
    }
    if wants(Field::Agent) {
        put("agent_extension", json!(call.agent));
        put("agent_email", json!(call.agent_email));
    }
    if wants(Field::Start) {
        put("started_at", time(call.started_at));
        put("answered_at", call.answered_at.map_or(Value::Null, time));
    }
    if wants(Field::End) {
        put("ended_at", time(call.ended_at));
    }
    if wants(Field::WaitTime) && call.direction == Direction::Inbound {
        put("wait_seconds", json!(call.wait_seconds().round()));
    }
    if wants(Field::Duration) {
        put(
            "talk_seconds",
            json!(call.answered_at.map(|_| call.talk_seconds().round())),
        );
    }
    if wants(Field::RecordingUrl) {
        put("recording_url", json!(call.recording_url));
    }
    if wants(Field::Disposition) {
        put("ended_by", json!(call.ended_by));
    }
    if wants(Field::Explanation) {
        put("explanation", json!(call.explanation));
    }
    put("summary", json!(tickets::summary(rules, call)));
    Value::Object(p)
}
