//! HTTPS to a helpdesk: one client per integration, paced under the account's request limit,
//! with every answer classified the same way for all connectors. What differs per vendor is
//! given when the client is made: the [`Credentials`], how the vendor announces its limits
//! ([`RateHeaders`]), and whether its answers are JSON.
//!
//! - Pacing: requests leave evenly spaced at 98% of `requests_per_minute` (or of the limit the
//!   helpdesk announces, when lower), so a backlog keeps the limit busy without ever crossing
//!   it; a 429 (or a 503 with `Retry-After`), or an announced empty window, pauses every request
//!   of the integration until the time the helpdesk gave, so retries never storm.
//! - Classification: 2xx is success; 400, 404, 409, 410, 413 and 422 go back to the connector,
//!   which knows what they mean for its request; 401 and 403 fail the delivery at once with the
//!   helpdesk's message (a token or permission that is wrong stays wrong); a redirect fails it
//!   too (redirects are not followed: a POST must not turn into a GET elsewhere); 429, 5xx,
//!   timeouts, refused connections and, for JSON APIs, a 2xx that is not JSON are retried.
//! - Certificates are verified against the system's trust store (rustls platform verifier), so
//!   a company CA installed on the machine works; plain `http://` is for tests and local proxies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::HelpdeskError;
use crate::config::Secret;

/// Requests leave at this share of the limit: under it even when the helpdesk counts a window
/// that does not line up with ours.
const SHARE_OF_LIMIT: f64 = 0.98;

/// Spaces an integration's requests and holds them all while the helpdesk asks to wait.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    interval: Duration,
    configured_per_minute: u32,
    next: Instant,
    paused_until: Instant,
}

impl Pacer {
    pub fn new(per_minute: u32) -> Pacer {
        let now = Instant::now();
        Pacer {
            state: Mutex::new(PacerState {
                interval: interval(per_minute),
                configured_per_minute: per_minute,
                next: now,
                paused_until: now,
            }),
        }
    }

    /// Waits for this request's turn; a request that counts `weight` times against the limit
    /// takes that many turns.
    pub async fn turn(&self, weight: u32) {
        let at = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = now.max(state.next).max(state.paused_until);
            state.next = at + state.interval * weight.max(1);
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }

    /// Holds every request until `for_` has passed.
    pub fn pause(&self, for_: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = Instant::now() + for_;
        if until > state.paused_until {
            state.paused_until = until;
        }
    }

    /// The helpdesk announced its limit: pace under it when it is lower than configured.
    pub fn announced_limit(&self, per_minute: u32) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limit = per_minute.min(state.configured_per_minute).max(1);
        state.interval = interval(limit);
    }

    /// The current spacing of requests.
    pub fn interval(&self) -> Duration {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .interval
    }
}

fn interval(per_minute: u32) -> Duration {
    Duration::from_secs_f64(60.0 / (f64::from(per_minute.max(1)) * SHARE_OF_LIMIT))
}

/// An answer the connector looks at: a success, or a 400/404/409/422.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The credentials sent with every request.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Basic authentication (Zendesk's API token: `{email}/token` and the token).
    Basic {
        user: String,
        password: Secret,
    },
    Bearer(Secret),
    /// A header of the vendor's own (Klaviyo: `Authorization: Klaviyo-API-Key <key>`).
    Header {
        name: &'static str,
        value: Secret,
    },
    /// None in the headers: the connector signs each request itself (webhooks).
    None,
}

/// What a vendor's answer headers say of its limit: the limit per minute, and how long to
/// hold every request when the window is used up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Announced {
    pub per_minute: Option<u32>,
    pub wait: Option<Duration>,
}

/// Reads a vendor's rate-limit headers.
pub type RateHeaders = fn(&HeaderMap) -> Announced;

/// For vendors that announce nothing beyond `Retry-After`.
pub fn no_rate_headers(_: &HeaderMap) -> Announced {
    Announced::default()
}

/// A header as a number.
pub fn header_number(headers: &HeaderMap, name: &str) -> Option<u32> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
}

/// What the vendor behind a client is like.
#[derive(Clone, Debug)]
pub struct Vendor {
    pub credentials: Credentials,
    pub rate_headers: RateHeaders,
    /// Whether a 2xx must carry JSON (an API) or may carry anything (a webhook receiver).
    pub json_answers: bool,
    /// Statuses handed to the connector beyond the shared ones (Help Scout: 401, to fetch a
    /// new token once).
    pub pass_through: &'static [u16],
    /// How many requests a write (POST, PUT, PATCH, DELETE) counts as (Help Scout: 2).
    pub write_weight: u32,
}

/// A client for one integration.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
    vendor: Vendor,
    base: String,
    /// Who is talking, for messages: the integration's name.
    name: Arc<str>,
    pacer: Arc<Pacer>,
}

/// Installs the TLS crypto provider (once per process); every HTTP client needs it first.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Http {
    pub fn new(
        name: &str,
        base: &str,
        vendor: Vendor,
        per_minute: u32,
        timeout: Duration,
    ) -> Result<Http, String> {
        install_crypto();
        let secret = match &vendor.credentials {
            Credentials::Basic { password, .. } => Some(password),
            Credentials::Bearer(token) => Some(token),
            Credentials::Header { value, .. } => Some(value),
            Credentials::None => None,
        };
        if secret.is_some_and(|s| s.expose().chars().any(|c| c.is_control() || !c.is_ascii())) {
            return Err("the token holds characters an HTTP header cannot carry".to_owned());
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("sipdesk/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_rustls()
            .build()
            .map_err(|e| format!("cannot set up HTTPS: {e}"))?;
        Ok(Http {
            client,
            vendor,
            base: base.to_owned(),
            name: Arc::from(name),
            pacer: Arc::new(Pacer::new(per_minute)),
        })
    }

    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// The base URL given when the client was made.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of an API path (`/api/v2/...`), with query parameters encoded.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, HelpdeskError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            HelpdeskError::Permanent(format!("{}{path} is not a URL: {e}", self.base))
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends one request with a JSON body in its turn and classifies the answer.
    pub async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, HelpdeskError> {
        self.send_text(method, url, body.map(Value::to_string), headers)
            .await
    }

    /// Sends one request whose JSON body is these very bytes in its turn and classifies the
    /// answer.
    pub async fn send_text(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, HelpdeskError> {
        self.send_signed(method, url, body, headers, |_| Vec::new())
            .await
    }

    /// Like [`Http::send_text`], with headers made by `sign` from the body once the request's
    /// turn has come (a signature whose timestamp must be the moment it leaves).
    pub async fn send_signed(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<String>,
        headers: &[(&str, &str)],
        sign: impl FnOnce(&str) -> Vec<(&'static str, String)>,
    ) -> Result<Reply, HelpdeskError> {
        let signed = sign(body.as_deref().unwrap_or(""));
        let body = body.map(|text| (bytes::Bytes::from(text), "application/json"));
        self.exchange(method, url, body, headers, signed).await
    }

    /// Sends a file (`bytes` of type `content_type`) as the request body, as an upload is sent.
    pub async fn send_bytes(
        &self,
        method: Method,
        url: reqwest::Url,
        bytes: bytes::Bytes,
        content_type: &'static str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, HelpdeskError> {
        self.exchange(
            method,
            url,
            Some((bytes, content_type)),
            headers,
            Vec::new(),
        )
        .await
    }

    async fn exchange(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Option<(bytes::Bytes, &'static str)>,
        headers: &[(&str, &str)],
        signed: Vec<(&'static str, String)>,
    ) -> Result<Reply, HelpdeskError> {
        let weight = if method == Method::GET || method == Method::HEAD {
            1
        } else {
            self.vendor.write_weight
        };
        self.pacer.turn(weight).await;
        let what = format!("{method} {}", url.path());
        let mut request = match &self.vendor.credentials {
            Credentials::Basic { user, password } => self
                .client
                .request(method, url)
                .basic_auth(user, Some(password.expose())),
            Credentials::Bearer(token) => {
                self.client.request(method, url).bearer_auth(token.expose())
            }
            Credentials::Header { name, value } => self
                .client
                .request(method, url)
                .header(*name, value.expose()),
            Credentials::None => self.client.request(method, url),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        for (name, value) in signed {
            request = request.header(name, value);
        }
        if let Some((body, content_type)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let reason = if e.is_timeout() {
                    format!("{what}: no answer from {} in time", self.name)
                } else {
                    format!("{what}: cannot reach {}: {}", self.name, error_chain(&e))
                };
                return Err(HelpdeskError::Retry {
                    reason,
                    after: None,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let announced = (self.vendor.rate_headers)(&headers);
        if let Some(limit) = announced.per_minute {
            self.pacer.announced_limit(limit);
        }
        if let Some(wait) = announced.wait {
            self.pacer.pause(wait.min(Duration::from_secs(3600)));
        }
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => {
                return Err(HelpdeskError::Retry {
                    reason: format!("{what}: the answer was cut off: {}", error_chain(&e)),
                    after: None,
                });
            }
        };
        let json: Option<Value> = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            match serde_json::from_str(&text) {
                Ok(value) => Some(value),
                // A receiver may answer anything: kept as text.
                Err(_) if !self.vendor.json_answers => Some(Value::String(excerpt(&text))),
                Err(_) => None,
            }
        };
        let message = || match &json {
            Some(value) => error_message(value),
            None => excerpt(&text),
        };
        let code = status.as_u16();
        if self.vendor.pass_through.contains(&code) {
            return Ok(Reply {
                status,
                headers,
                body: json.unwrap_or_else(|| Value::String(excerpt(&text))),
            });
        }
        match code {
            200..=299 => match json {
                Some(body) => Ok(Reply {
                    status,
                    headers,
                    body,
                }),
                None => Err(HelpdeskError::Retry {
                    reason: format!(
                        "{what}: {status} with {} instead of JSON (is base_url the helpdesk's API?): {}",
                        if content_type.is_empty() {
                            "no content type"
                        } else {
                            content_type.as_str()
                        },
                        excerpt(&text)
                    ),
                    after: None,
                }),
            },
            300..=399 => Err(HelpdeskError::Permanent(format!(
                "{what}: {} answered {status}, a redirect to {}; redirects are not followed, write the final address in the configuration",
                self.name,
                headers
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("nowhere")
            ))),
            400 | 404 | 409 | 410 | 413 | 422 => Ok(Reply {
                status,
                headers,
                body: json.unwrap_or_else(|| Value::String(excerpt(&text))),
            }),
            401 => Err(HelpdeskError::Permanent(format!(
                "{what}: {} refused the credentials (401 {}); check them (token_file/token_env, and the e-mail for a Zendesk API token)",
                self.name,
                message()
            ))),
            403 => Err(HelpdeskError::Permanent(format!(
                "{what}: {} refused the request (403 {}); check the permissions of the token or its user (role, scopes)",
                self.name,
                message()
            ))),
            429 => {
                let after = retry_after
                    .or(announced.wait)
                    .unwrap_or(Duration::from_secs(60));
                self.pacer.pause(after);
                Err(HelpdeskError::Retry {
                    reason: format!(
                        "{what}: rate limited (429), asked to wait {}s",
                        after.as_secs_f64().ceil()
                    ),
                    after: Some(after),
                })
            }
            _ => {
                if let Some(after) = retry_after {
                    self.pacer.pause(after);
                }
                Err(HelpdeskError::Retry {
                    reason: format!("{what}: {status} {}", message()),
                    after: retry_after,
                })
            }
        }
    }
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The first 200 characters of a body, on one line.
fn excerpt(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None if flat.is_empty() => "(empty body)".to_owned(),
        None => flat,
    }
}

/// What a helpdesk's JSON error says: `error`, `description` and the first details, whatever
/// the nesting.
pub fn error_message(value: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    match value.get("error") {
        Some(Value::String(error)) => parts.push(error.clone()),
        Some(Value::Object(error)) => {
            for key in ["title", "message"] {
                if let Some(Value::String(text)) = error.get(key) {
                    parts.push(text.clone());
                }
            }
        }
        _ => {}
    }
    if let Some(Value::String(description)) = value.get("description") {
        parts.push(description.clone());
    }
    if let Some(Value::Object(details)) = value.get("details") {
        for items in details.values() {
            for item in items.as_array().into_iter().flatten() {
                if let Some(Value::String(description)) = item.get("description") {
                    parts.push(description.clone());
                }
            }
        }
    }
    if parts.is_empty() {
        excerpt(&value.to_string())
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_requests_under_the_limit_and_follows_a_lower_announced_one() {
        let pacer = Pacer::new(600);
        assert_eq!(pacer.interval(), Duration::from_secs_f64(0.1 / 0.98));
        pacer.announced_limit(300);
        assert_eq!(pacer.interval(), Duration::from_secs_f64(0.2 / 0.98));
        // A higher announced limit does not raise the configured one.
        pacer.announced_limit(2500);
        assert_eq!(pacer.interval(), Duration::from_secs_f64(0.1 / 0.98));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_counts_double_takes_two_turns() {
        let pacer = Pacer::new(60);
        let interval = pacer.interval();
        let start = tokio::time::Instant::now();
        // Tokio's timer counts whole milliseconds.
        let waited = |turns: u32| {
            let elapsed = (tokio::time::Instant::now() - start).as_secs_f64();
            (elapsed - (interval * turns).as_secs_f64()).abs() < 0.002
        };
        pacer.turn(2).await;
        assert!(waited(0), "the first request goes at once");
        pacer.turn(1).await;
        assert!(
            waited(2),
            "the read waited for both turns of the write before it"
        );
        pacer.turn(1).await;
        assert!(waited(3));
    }

    #[test]
    fn error_messages_are_read_from_every_shape_zendesk_uses() {
        let flat = serde_json::json!({"error": "Couldn't authenticate you"});
        assert_eq!(error_message(&flat), "Couldn't authenticate you");
        let nested = serde_json::json!({"error": {"title": "Forbidden", "message": "You do not have access to this page."}});
        assert_eq!(
            error_message(&nested),
            "Forbidden: You do not have access to this page."
        );
        let invalid = serde_json::json!({"error": "RecordInvalid", "description": "Record validation errors",
            "details": {"status": [{"description": "Status: closed prevents ticket update"}]}});
        assert_eq!(
            error_message(&invalid),
            "RecordInvalid: Record validation errors: Status: closed prevents ticket update"
        );
    }
}
