//! A fake Klaviyo API for the tests: the two endpoints sipdesk uses, with Klaviyo's published
//! behaviour (the OpenAPI file of revision 2026-07-15 in klaviyo/openapi, and the "Rate limits
//! and error handling" guide). Marked [assumed] where Klaviyo documents no wording.
//!
//! - Authentication: `Authorization: Klaviyo-API-Key <private key>`; anything else is 401 with a
//!   JSON:API error (`not_authenticated` [assumed]).
//! - `revision` is required (`YYYY-MM-DD`, optionally `.suffix`): missing or malformed is 400.
//! - `POST /api/events` takes only `application/vnd.api+json` (415 otherwise) and validates the
//!   body as `EventCreateQueryV2` says: `data.type` "event"; `attributes.properties` an object
//!   of at most 400 keys; `metric.data.type` "metric" with a `name` under 128 characters;
//!   `profile.data.type` "profile" with at least one identifier (`id`, `email`,
//!   `phone_number`, `external_id`, `anonymous_id`), a `phone_number` in E.164; `time`, when
//!   given, a date-time after 1990 and less than a year ahead. Errors are 400 with
//!   `errors: [{id, status, code: "invalid", title: "Invalid input.", detail, source:
//!   {pointer}}]`. Success is 202 with no body. The profile is made when no profile has the
//!   identifier. A repeated `unique_id` for the same profile and metric is accepted (202) and
//!   dropped: only the first event is kept.
//! - `GET /api/profiles?filter=equals(phone_number,"+…")`: the profiles with that number.
//! - Rate limits per account and endpoint in fixed windows: `burst` a second and `steady` a
//!   minute for Create Event, 75 and 750 for Get Profiles; beyond,
//!   429 with `Retry-After` (whole seconds) and no RateLimit headers; other answers carry
//!   `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` of the steady window.
//! - Faults on demand: a status with a JSON:API error, or no answer at all, for the next N
//!   requests.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::server::Server;

/// How the fake account is set up.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) key: String,
    /// Requests a second (Create Event: 350).
    pub(crate) burst: u32,
    /// Requests a minute (Create Event: 3,500).
    pub(crate) steady: u32,
    pub(crate) latency: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            key: "pk_test_0123456789abcdef".to_owned(),
            burst: 350,
            steady: 3500,
            latency: Duration::ZERO,
        }
    }
}

/// A failure the fake can be told to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Status(u16),
    /// No answer at all, the request not processed.
    Hang,
    /// The request processed, the answer never sent (a connection lost on the way back).
    LoseAnswer,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Profile {
    pub(crate) id: String,
    pub(crate) phone_number: Option<String>,
    pub(crate) email: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Event {
    pub(crate) profile_id: String,
    pub(crate) metric: String,
    pub(crate) unique_id: Option<String>,
    pub(crate) time: Option<String>,
    pub(crate) properties: Value,
}

/// What the fake saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    /// Requests within the limits and authenticated.
    pub(crate) requests: u64,
    pub(crate) arrivals: Vec<Instant>,
    pub(crate) rate_limited: u64,
    pub(crate) unauthenticated: u64,
    /// Events accepted but dropped as repeats of a unique id.
    pub(crate) repeats_dropped: u64,
    /// Every 4xx answered other than 401 and 429, with its body.
    pub(crate) rejections: Vec<(u16, String)>,
}

struct Account {
    settings: Settings,
    profiles: Vec<Profile>,
    events: Vec<Event>,
    next_id: u64,
    second: (Instant, u32),
    minute: (Instant, u32),
    /// Get Profiles' own windows.
    profile_windows: ((Instant, u32), (Instant, u32)),
    faults: Vec<Fault>,
    stats: Stats,
}

pub(crate) struct FakeKlaviyo {
    pub(crate) url: String,
    account: Arc<Mutex<Account>>,
    /// Stops serving when the fake is dropped.
    _server: Server,
}

impl FakeKlaviyo {
    pub(crate) fn start(settings: Settings) -> FakeKlaviyo {
        let now = Instant::now();
        let account = Arc::new(Mutex::new(Account {
            settings,
            profiles: Vec::new(),
            events: Vec::new(),
            next_id: 0,
            second: (now, 0),
            minute: (now, 0),
            profile_windows: ((now, 0), (now, 0)),
            faults: Vec::new(),
            stats: Stats::default(),
        }));
        let server = Server::start(
            "fake Klaviyo",
            Router::new().fallback(handle).with_state(account.clone()),
        );
        FakeKlaviyo {
            url: server.url.clone(),
            account,
            _server: server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        f(&mut self.account.lock().unwrap())
    }

    pub(crate) fn add_profile(&self, phone: &str) -> String {
        self.with(|a| a.profile_for(None, Some(phone), None))
    }

    pub(crate) fn profiles(&self) -> Vec<Profile> {
        self.with(|a| a.profiles.clone())
    }

    pub(crate) fn events(&self) -> Vec<Event> {
        self.with(|a| a.events.clone())
    }

    pub(crate) fn stats(&self) -> Stats {
        self.with(|a| a.stats.clone())
    }

    pub(crate) fn fail_next(&self, n: usize, fault: Fault) {
        self.with(|a| a.faults.extend(std::iter::repeat_n(fault, n)));
    }
}

/// A JSON:API error answer.
fn error(status: u16, code: &str, title: &str, detail: &str, pointer: Option<&str>) -> Response {
    let mut error = json!({
        "id": format!("{:032x}", fastrand::u128(..)),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": {},
        "links": {},
        "meta": {},
    });
    if let Some(pointer) = pointer {
        error["source"] = json!({ "pointer": pointer });
    }
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/vnd.api+json")],
        json!({ "errors": [error] }).to_string(),
    )
        .into_response()
}

fn invalid(detail: &str, pointer: &str) -> Response {
    error(400, "invalid", "Invalid input.", detail, Some(pointer))
}

async fn handle(
    State(account): State<Arc<Mutex<Account>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (answer, latency) = {
        let mut a = account.lock().unwrap();
        (a.serve(&method, &uri, &headers, &body), a.settings.latency)
    };
    match answer {
        None => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(response) => {
            tokio::time::sleep(latency).await;
            response
        }
    }
}

fn is_e164(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or("");
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

impl Account {
    fn profile_for(
        &mut self,
        id: Option<&str>,
        phone: Option<&str>,
        email: Option<&str>,
    ) -> String {
        if let Some(found) = self.profiles.iter().find(|p| {
            id.is_some_and(|id| p.id == id)
                || phone.is_some_and(|ph| p.phone_number.as_deref() == Some(ph))
                || email.is_some_and(|e| p.email.as_deref() == Some(e))
        }) {
            return found.id.clone();
        }
        self.next_id += 1;
        let id = format!("01KLAVIYO{:017}", self.next_id);
        self.profiles.push(Profile {
            id: id.clone(),
            phone_number: phone.map(str::to_owned),
            email: email.map(str::to_owned),
        });
        id
    }

    /// Counts the request in its endpoint's windows; `Some(wait)` when it is over a limit.
    fn over_limit(&mut self, profiles: bool) -> Option<u64> {
        let now = Instant::now();
        let (burst, steady) = if profiles {
            (75, 750)
        } else {
            (self.settings.burst, self.settings.steady)
        };
        let (second, minute) = if profiles {
            (&mut self.profile_windows.0, &mut self.profile_windows.1)
        } else {
            (&mut self.second, &mut self.minute)
        };
        if now.duration_since(second.0) >= Duration::from_secs(1) {
            *second = (now, 0);
        }
        if now.duration_since(minute.0) >= Duration::from_secs(60) {
            *minute = (now, 0);
        }
        if minute.1 >= steady {
            let left = Duration::from_secs(60).saturating_sub(now.duration_since(minute.0));
            return Some(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        if second.1 >= burst {
            return Some(1);
        }
        second.1 += 1;
        minute.1 += 1;
        None
    }

    fn serve(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Response> {
        if !self.faults.is_empty() {
            return match self.faults.remove(0) {
                Fault::Hang => None,
                Fault::LoseAnswer => {
                    self.answer(method, uri, headers, body);
                    None
                }
                Fault::Status(status) => Some(error(
                    status,
                    "error",
                    "A server error occurred.",
                    "Please try again later.",
                    None,
                )),
            };
        }
        self.answer(method, uri, headers, body)
    }

    fn answer(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Response> {
        let expected = format!("Klaviyo-API-Key {}", self.settings.key);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            self.stats.unauthenticated += 1;
            return Some(error(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid private key.",
                None,
            ));
        }
        if let Some(wait) = self.over_limit(uri.path().starts_with("/api/profiles")) {
            self.stats.rate_limited += 1;
            return Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", wait.to_string()), ("content-type", "application/vnd.api+json".to_owned())],
                    json!({"errors": [{"id": "throttled", "status": 429, "code": "throttled",
                        "title": "Request was throttled.", "detail": format!("Request was throttled. Expected available in {wait} seconds.")}]})
                        .to_string(),
                )
                    .into_response(),
            );
        }
        self.stats.requests += 1;
        self.stats.arrivals.push(Instant::now());
        let mut response = self.route(method, uri, headers, body);
        let status = response.status().as_u16();
        if (400..500).contains(&status) {
            self.stats
                .rejections
                .push((status, format!("{method} {}", uri.path())));
        }
        let remaining = self.settings.steady.saturating_sub(self.minute.1);
        let reset = 60u64.saturating_sub(self.minute.0.elapsed().as_secs());
        let h = response.headers_mut();
        h.insert("ratelimit-limit", self.settings.steady.into());
        h.insert("ratelimit-remaining", remaining.into());
        h.insert("ratelimit-reset", reset.into());
        Some(response)
    }

    fn route(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
        let revision = headers.get("revision").and_then(|v| v.to_str().ok());
        let good_revision = revision.is_some_and(|r| {
            let date = r.split('.').next().unwrap_or("");
            date.len() == 10 && date.parse::<jiff::civil::Date>().is_ok()
        });
        if !good_revision {
            return error(
                400,
                "invalid",
                "Invalid input.",
                "A valid revision header (YYYY-MM-DD) is required.",
                None,
            );
        }
        match (method.as_str(), uri.path().trim_end_matches('/')) {
            ("POST", "/api/events") => self.create_event(headers, body),
            ("GET", "/api/profiles") => self.profiles_by_filter(uri),
            _ => error(
                404,
                "not_found",
                "Not found.",
                "The requested resource was not found.",
                None,
            ),
        }
    }

    fn create_event(&mut self, headers: &HeaderMap, body: &Bytes) -> Response {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/vnd.api+json") {
            return error(
                415,
                "unsupported_media_type",
                "Unsupported media type.",
                &format!("Unsupported media type \"{content_type}\" in request."),
                None,
            );
        }
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return error(
                400,
                "parse_error",
                "Malformed request.",
                "JSON parse error.",
                None,
            );
        };
        let a = "/data/attributes";
        if doc.pointer("/data/type") != Some(&json!("event")) {
            return invalid("data.type must be \"event\".", "/data/type");
        }
        let Some(attributes) = doc.pointer(a).and_then(Value::as_object) else {
            return invalid("attributes is required.", a);
        };
        let Some(properties) = attributes.get("properties").and_then(Value::as_object) else {
            return invalid(
                "properties is required and must be an object.",
                "/data/attributes/properties",
            );
        };
        if properties.len() > 400 {
            return invalid(
                "An event must not exceed 400 properties.",
                "/data/attributes/properties",
            );
        }
        if doc.pointer("/data/attributes/metric/data/type") != Some(&json!("metric")) {
            return invalid("metric is required.", "/data/attributes/metric/data/type");
        }
        let metric = match doc
            .pointer("/data/attributes/metric/data/attributes/name")
            .and_then(Value::as_str)
        {
            Some(name) if !name.is_empty() && name.chars().count() < 128 => name.to_owned(),
            _ => {
                return invalid(
                    "The metric name must be 1 to 127 characters.",
                    "/data/attributes/metric/data/attributes/name",
                );
            }
        };
        if doc.pointer("/data/attributes/profile/data/type") != Some(&json!("profile")) {
            return invalid("profile is required.", "/data/attributes/profile/data/type");
        }
        let Some(profile) = doc
            .pointer("/data/attributes/profile/data/attributes")
            .and_then(Value::as_object)
        else {
            return invalid(
                "profile attributes are required.",
                "/data/attributes/profile/data/attributes",
            );
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let id = text(doc.pointer("/data/attributes/profile/data/id"));
        let phone = text(profile.get("phone_number"));
        let email = text(profile.get("email"));
        let others = ["external_id", "anonymous_id"]
            .iter()
            .any(|k| profile.get(*k).is_some());
        if id.is_none() && phone.is_none() && email.is_none() && !others {
            return invalid(
                "One of the profile identifiers (id, email, phone_number, external_id, anonymous_id) is required.",
                "/data/attributes/profile/data/attributes",
            );
        }
        if let Some(phone) = &phone {
            if !is_e164(phone) {
                return invalid(
                    &format!(
                        "Invalid phone number format (Example of a valid format: +12345678901): {phone}"
                    ),
                    "/data/attributes/profile/data/attributes/phone_number",
                );
            }
        }
        let time = text(attributes.get("time"));
        if let Some(time) = &time {
            match time.parse::<Timestamp>() {
                Ok(t)
                    if t.as_second() > 631_152_000
                        && t < Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365) => {}
                _ => {
                    return invalid(
                        "time must be a date-time after 1990 and within a year from now.",
                        "/data/attributes/time",
                    );
                }
            }
        }
        let unique_id = text(attributes.get("unique_id"));
        let profile_id = self.profile_for(id.as_deref(), phone.as_deref(), email.as_deref());
        let repeat = unique_id.is_some()
            && self.events.iter().any(|e| {
                e.profile_id == profile_id && e.metric == metric && e.unique_id == unique_id
            });
        if repeat {
            self.stats.repeats_dropped += 1;
        } else {
            self.events.push(Event {
                profile_id,
                metric,
                unique_id,
                time,
                properties: Value::Object(properties.clone()),
            });
        }
        StatusCode::ACCEPTED.into_response()
    }

    fn profiles_by_filter(&self, uri: &Uri) -> Response {
        let filter = uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "filter")
            .map(|(_, v)| percent_decode(v));
        let phone = filter.as_deref().and_then(|f| {
            f.strip_prefix("equals(phone_number,\"")
                .and_then(|rest| rest.strip_suffix("\")"))
        });
        let Some(phone) = phone else {
            return error(
                400,
                "invalid",
                "Invalid input.",
                &format!("Invalid filter: {}", filter.unwrap_or_default()),
                None,
            );
        };
        let data: Vec<Value> = self
            .profiles
            .iter()
            .filter(|p| p.phone_number.as_deref() == Some(phone))
            .map(|p| json!({"type": "profile", "id": p.id, "attributes": {"phone_number": p.phone_number}, "links": {}}))
            .collect();
        (
            StatusCode::OK,
            [("content-type", "application/vnd.api+json")],
            json!({"data": data, "links": {"self": uri.to_string(), "next": null, "prev": null}})
                .to_string(),
        )
            .into_response()
    }
}

/// `%XX` and `+` decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
