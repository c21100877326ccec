//! A fake Help Scout Mailbox API 2.0 for the tests: the endpoints sipdesk uses, with Help
//! Scout's published behaviour (developer.helpscout.com: authentication, customers, search v3,
//! conversations, threads, tags, users, errors, rate limiting). Marked [assumed] where Help
//! Scout documents no body.
//!
//! - OAuth2 client credentials at `POST /v2/oauth2/token` (JSON or form): a bearer token for
//!   48 hours (`expires_in: 172800`), no refresh token; wrong credentials are 401
//!   (`invalid_client` [assumed]). API requests need a token that is current: others are 401
//!   [assumed body]. Tokens can be expired on demand.
//! - Rate limit per minute, writes (POST, PUT, PATCH, DELETE) counting two; every answer carries
//!   `X-RateLimit-Limit-Minute` and `X-RateLimit-Remaining-Minute`; beyond, 429 with
//!   `X-RateLimit-Retry-After` (seconds) and `{"message":"API rate limit exceeded"}`.
//! - Customers: `GET /v3/customers/search?query=phone:"…"` (newest first; a customer made
//!   through the API shows up after `search_lag`), `POST /v2/customers` (names 1–40
//!   characters, phone types as listed; 201, `Resource-ID`, no body).
//! - Conversations: create (subject, type chat/email/phone, an existing mailbox, status
//!   active/closed/pending, a customer, threads of the listed types with text, tags, an
//!   existing `assignTo`; 201, `Resource-ID`, no body), list (mailbox, status, `query` of the
//!   form `(customerIds:N)`, sort by `createdAt`, `embed=threads`), get, update (`{op, path,
//!   value}` on `/status`, `/assignTo`, `/subject`; 204), phone thread and note (201,
//!   `Resource-ID`), customer thread (`text` and `customer` by id or e-mail required,
//!   `createdAt` only when `imported`; reopens the conversation unless imported; 201,
//!   `Resource-ID`), tags (PUT replaces the list; 204).
//! - Users: `GET /v2/users?email=`.
//! - Validation errors: 400 `{"logRef", "message": "Bad request", "_embedded": {"errors":
//!   [{"path", "message", "rejectedValue", "source": "JSON"}]}}`.
//! - Conversation lists filtered with `query` come from Help Scout's search index, which lags
//!   behind writes: a conversation shows up in them `search_lag` after it was made.
//! - Threads may carry `attachments` (`fileName`, `mimeType`, `data` in base64, at most 10 MB
//!   each); a missing field or data that is not base64 is 400.
//! - Faults on demand: a status with an error body, no answer, or the request processed and
//!   its answer lost — for the next N requests, or for the next request to one method and path.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::server::Server;

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) mailboxes: Vec<u64>,
    /// Requests a minute (Plus: 400), writes counting two.
    pub(crate) rate_limit: u32,
    pub(crate) search_lag: Duration,
    /// How long every answer takes.
    pub(crate) latency: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            client_id: "app-id".to_owned(),
            client_secret: "app-secret".to_owned(),
            mailboxes: vec![7],
            rate_limit: 100_000,
            search_lag: Duration::from_secs(30),
            latency: Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Status(u16),
    /// No answer, the request not processed.
    Hang,
    /// The request processed, its answer never sent.
    LoseAnswer,
}

#[derive(Clone, Debug)]
pub(crate) struct Customer {
    pub(crate) id: u64,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) phones: Vec<String>,
    pub(crate) emails: Vec<String>,
    pub(crate) created_at: Timestamp,
    indexed_at: Instant,
}

#[derive(Clone, Debug)]
pub(crate) struct Thread {
    pub(crate) id: u64,
    /// phone, note, customer, reply, chat.
    pub(crate) kind: String,
    pub(crate) text: String,
    pub(crate) attachments: Vec<Attachment>,
    /// The customer a customer, phone or chat thread is from.
    pub(crate) customer: Option<u64>,
}

/// A file a thread carries, as sent in `attachments`.
#[derive(Clone, Debug)]
pub(crate) struct Attachment {
    pub(crate) file_name: String,
    pub(crate) mime_type: String,
    pub(crate) data: Vec<u8>,
}

/// Help Scout takes attachments of 10 MB at most.
const MAX_ATTACHMENT: usize = 10 * 1024 * 1024;

/// A thread's `attachments` (at `at`), checked: each needs `fileName`, `mimeType` and `data`
/// (base64); `Err` is the 400 to answer.
fn attachments(value: Option<&Value>, at: &str) -> Result<Vec<Attachment>, Answer> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Some(list) = value.as_array() else {
        return Err(bad_request(at, "must be a list", Some(value)));
    };
    let mut found = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let field = |key: &str| {
            item.get(key)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let here = |key: &str| format!("{at}[{i}].{key}");
        let Some(file_name) = field("fileName") else {
            return Err(bad_request(&here("fileName"), "may not be empty", None));
        };
        let Some(mime_type) = field("mimeType").filter(|m| m.contains('/')) else {
            return Err(bad_request(
                &here("mimeType"),
                "may not be empty",
                item.get("mimeType"),
            ));
        };
        let Some(encoded) = field("data") else {
            return Err(bad_request(&here("data"), "may not be empty", None));
        };
        let Ok(data) = base64::engine::general_purpose::STANDARD.decode(&encoded) else {
            return Err(bad_request(&here("data"), "must be Base64-encoded", None));
        };
        if data.len() > MAX_ATTACHMENT {
            return Err(bad_request(
                &here("data"),
                "attachments may be 10MB at most",
                None,
            ));
        }
        found.push(Attachment {
            file_name,
            mime_type,
            data,
        });
    }
    Ok(found)
}

#[derive(Clone, Debug)]
pub(crate) struct Conversation {
    pub(crate) id: u64,
    pub(crate) mailbox: u64,
    pub(crate) customer: u64,
    pub(crate) subject: String,
    pub(crate) kind: String,
    pub(crate) status: String,
    pub(crate) tags: Vec<String>,
    pub(crate) assignee: Option<u64>,
    pub(crate) created_at: Timestamp,
    pub(crate) closed_at: Option<Timestamp>,
    pub(crate) threads: Vec<Thread>,
    indexed_at: Instant,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) tokens_issued: u64,
    pub(crate) unauthorized: u64,
    pub(crate) rate_limited: u64,
    pub(crate) requests: u64,
    /// When each request within the limit arrived, and what it counted (writes count two).
    pub(crate) arrivals: Vec<(Instant, u32)>,
    /// Every 4xx other than 401 and 429: method, path, body.
    pub(crate) rejections: Vec<(u16, String)>,
}

struct Account {
    settings: Settings,
    tokens: Vec<String>,
    users: Vec<(u64, String)>,
    customers: Vec<Customer>,
    conversations: Vec<Conversation>,
    next_id: u64,
    window: Vec<(Instant, u32)>,
    faults: Vec<Fault>,
    /// Faults for the next request to a method and path.
    aimed: Vec<(String, String, Fault)>,
    stats: Stats,
}

pub(crate) struct FakeHelpScout {
    pub(crate) url: String,
    account: Arc<Mutex<Account>>,
    /// Stops serving when the fake is dropped.
    _server: Server,
}

impl FakeHelpScout {
    pub(crate) fn start(settings: Settings) -> FakeHelpScout {
        let account = Arc::new(Mutex::new(Account {
            settings,
            tokens: Vec::new(),
            users: Vec::new(),
            customers: Vec::new(),
            conversations: Vec::new(),
            next_id: 1000,
            window: Vec::new(),
            faults: Vec::new(),
            aimed: Vec::new(),
            stats: Stats::default(),
        }));
        let server = Server::start(
            "fake Help Scout",
            Router::new().fallback(handle).with_state(account.clone()),
        );
        FakeHelpScout {
            url: server.url.clone(),
            account,
            _server: server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        f(&mut self.account.lock().unwrap())
    }

    pub(crate) fn add_user(&self, email: &str) -> u64 {
        self.with(|a| {
            let id = a.new_id();
            a.users.push((id, email.to_owned()));
            id
        })
    }

    /// A customer with this phone, made `age` ago and already searchable.
    pub(crate) fn add_customer(&self, phone: &str, age: Duration) -> u64 {
        self.with(|a| {
            let id = a.new_id();
            a.customers.push(Customer {
                id,
                first_name: Some("Known".to_owned()),
                last_name: Some("Customer".to_owned()),
                phones: vec![phone.to_owned()],
                emails: Vec::new(),
                created_at: Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap(),
                indexed_at: Instant::now(),
            });
            id
        })
    }

    /// A conversation of the customer in the first mailbox, made `age` ago; a closed one closed
    /// `closed_ago` ago.
    pub(crate) fn add_conversation(
        &self,
        customer: u64,
        status: &str,
        tags: &[&str],
        age: Duration,
        closed_ago: Option<Duration>,
    ) -> u64 {
        self.with(|a| {
            let id = a.new_id();
            let mailbox = a.settings.mailboxes[0];
            let ago = |d: Duration| Timestamp::now() - jiff::SignedDuration::try_from(d).unwrap();
            a.conversations.push(Conversation {
                id,
                mailbox,
                customer,
                subject: "Earlier".to_owned(),
                kind: "email".to_owned(),
                status: status.to_owned(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                assignee: None,
                created_at: ago(age),
                closed_at: closed_ago.map(ago),
                threads: vec![Thread {
                    id: id + 1,
                    kind: "customer".to_owned(),
                    text: "Hello".to_owned(),
                    attachments: Vec::new(),
                    customer: Some(customer),
                }],
                indexed_at: Instant::now(),
            });
            a.next_id += 1;
            id
        })
    }

    pub(crate) fn customers(&self) -> Vec<Customer> {
        self.with(|a| a.customers.clone())
    }

    pub(crate) fn conversations(&self) -> Vec<Conversation> {
        self.with(|a| a.conversations.clone())
    }

    pub(crate) fn conversation(&self, id: u64) -> Conversation {
        self.with(|a| a.conversations.iter().find(|c| c.id == id).cloned())
            .unwrap_or_else(|| panic!("no conversation {id}"))
    }

    /// The account's customers with their phones (the benchmark's callers), searchable now.
    pub(crate) fn add_customers(&self, phones: &[String]) {
        for phone in phones {
            self.add_customer(phone, Duration::from_secs(3600));
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.with(|a| a.stats.clone())
    }

    /// Every token issued so far stops working (as 48 hours passing would do).
    pub(crate) fn expire_tokens(&self) {
        self.with(|a| a.tokens.clear());
    }

    pub(crate) fn fail_next(&self, n: usize, fault: Fault) {
        self.with(|a| a.faults.extend(std::iter::repeat_n(fault, n)));
    }

    /// The next request with this method and path gets `fault`.
    pub(crate) fn fail_on(&self, method: &str, path: &str, fault: Fault) {
        self.with(|a| a.aimed.push((method.to_owned(), path.to_owned(), fault)));
    }

    /// The customer is deleted (as an admin would in Help Scout).
    pub(crate) fn delete_customer(&self, id: u64) {
        self.with(|a| a.customers.retain(|c| c.id != id));
    }
}

type Answer = (StatusCode, Vec<(&'static str, String)>, Option<Value>);

fn ok(status: u16) -> Answer {
    (StatusCode::from_u16(status).unwrap(), Vec::new(), None)
}

fn created(id: u64) -> Answer {
    (
        StatusCode::CREATED,
        vec![("resource-id", id.to_string())],
        None,
    )
}

fn json_answer(status: u16, body: Value) -> Answer {
    (
        StatusCode::from_u16(status).unwrap(),
        Vec::new(),
        Some(body),
    )
}

/// Help Scout's validation error.
fn bad_request(path: &str, message: &str, rejected: Option<&Value>) -> Answer {
    let mut error = json!({"path": path, "message": message, "source": "JSON",
        "_links": {"about": {"href": "https://developer.helpscout.com/mailbox-api/overview/errors"}}});
    if let Some(value) = rejected {
        error["rejectedValue"] = value.clone();
    }
    json_answer(
        400,
        json!({"logRef": format!("{:016x}", fastrand::u64(..)), "message": "Bad request",
            "_embedded": {"errors": [error]},
            "_links": {"about": {"href": "https://developer.helpscout.com/mailbox-api/overview/errors"}}}),
    )
}

fn not_found() -> Answer {
    json_answer(404, json!({"logRef": "0", "message": "Resource not found"}))
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
    tokio::time::sleep(latency).await;
    match answer {
        None => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some((status, headers, body)) => {
            let mut response = match body {
                Some(body) => (
                    status,
                    [("content-type", "application/hal+json")],
                    body.to_string(),
                )
                    .into_response(),
                None => status.into_response(),
            };
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    }
}

fn query_pairs(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) =
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const STATUSES: &[&str] = &["active", "closed", "pending"];
const THREAD_TYPES: &[&str] = &["customer", "reply", "note", "phone", "chat"];
const PHONE_TYPES: &[&str] = &["fax", "home", "mobile", "other", "pager", "work"];

impl Account {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn serve(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Answer> {
        let aimed = self
            .aimed
            .iter()
            .position(|(m, p, _)| m == method.as_str() && p == uri.path())
            .map(|i| self.aimed.remove(i).2);
        let fault = aimed.or_else(|| (!self.faults.is_empty()).then(|| self.faults.remove(0)));
        match fault {
            None => self.answer(method, uri, headers, body),
            Some(Fault::Hang) => None,
            Some(Fault::LoseAnswer) => {
                self.answer(method, uri, headers, body);
                None
            }
            Some(Fault::Status(status)) => Some(json_answer(
                status,
                json!({"logRef": "f", "message": "Internal error"}),
            )),
        }
    }

    fn answer(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Answer> {
        let path = uri.path().trim_end_matches('/').to_owned();
        if method == Method::POST && path == "/v2/oauth2/token" {
            return Some(self.token(headers, body));
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !bearer.is_some_and(|t| self.tokens.iter().any(|k| k == t)) {
            self.stats.unauthorized += 1;
            return Some(json_answer(
                401,
                json!({"logRef": "a", "message": "Unauthorized"}),
            ));
        }
        // Writes count two.
        let weight = if method == Method::GET { 1 } else { 2 };
        let now = Instant::now();
        self.window
            .retain(|(t, _)| now.duration_since(*t) < Duration::from_secs(60));
        let used: u32 = self.window.iter().map(|(_, w)| w).sum();
        let limit = self.settings.rate_limit;
        if used + weight > limit {
            self.stats.rate_limited += 1;
            let wait = self
                .window
                .first()
                .map(|(t, _)| {
                    (Duration::from_secs(60).saturating_sub(now.duration_since(*t)))
                        .as_secs()
                        .max(1)
                })
                .unwrap_or(1);
            return Some((
                StatusCode::TOO_MANY_REQUESTS,
                vec![
                    ("x-ratelimit-limit-minute", limit.to_string()),
                    ("x-ratelimit-remaining-minute", "0".to_owned()),
                    ("x-ratelimit-retry-after", wait.to_string()),
                ],
                Some(json!({"message": "API rate limit exceeded"})),
            ));
        }
        self.window.push((now, weight));
        self.stats.requests += 1;
        self.stats.arrivals.push((now, weight));
        let doc: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(doc) => doc,
                Err(_) => return Some(bad_request("", "Malformed JSON", None)),
            }
        };
        let mut answer = self.route(method, &path, uri, &doc);
        let status = answer.0.as_u16();
        if (400..500).contains(&status) {
            self.stats
                .rejections
                .push((status, format!("{method} {path} {doc}")));
        }
        let used: u32 = self.window.iter().map(|(_, w)| w).sum();
        answer
            .1
            .push(("x-ratelimit-limit-minute", limit.to_string()));
        answer.1.push((
            "x-ratelimit-remaining-minute",
            limit.saturating_sub(used).to_string(),
        ));
        Some(answer)
    }

    fn token(&mut self, headers: &HeaderMap, body: &Bytes) -> Answer {
        let json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let fields: HashMap<String, String> = if json {
            serde_json::from_slice::<HashMap<String, Value>>(body)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                .collect()
        } else {
            String::from_utf8_lossy(body)
                .split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (decode(k), decode(v)))
                .collect()
        };
        let field = |k: &str| fields.get(k).map(String::as_str);
        if field("grant_type") != Some("client_credentials") {
            return json_answer(400, json!({"error": "unsupported_grant_type"}));
        }
        if field("client_id") != Some(self.settings.client_id.as_str())
            || field("client_secret") != Some(self.settings.client_secret.as_str())
        {
            return json_answer(
                401,
                json!({"error": "invalid_client", "error_description": "Bad client credentials"}),
            );
        }
        let token = format!("tok{:016x}", fastrand::u64(..));
        self.tokens.push(token.clone());
        self.stats.tokens_issued += 1;
        json_answer(
            200,
            json!({"token_type": "bearer", "access_token": token, "expires_in": 172800}),
        )
    }

    fn route(&mut self, method: &Method, path: &str, uri: &Uri, doc: &Value) -> Answer {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let id = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["v3", "customers", "search"]) => self.search_customers(uri),
            ("POST", ["v2", "customers"]) => self.create_customer(doc),
            ("GET", ["v2", "users"]) => {
                let email = query_pairs(uri).get("email").cloned().unwrap_or_default();
                let users: Vec<Value> = self
                    .users
                    .iter()
                    .filter(|(_, e)| email.is_empty() || e.eq_ignore_ascii_case(&email))
                    .map(|(id, e)| json!({"id": id, "firstName": "Agent", "lastName": "User", "email": e, "role": "user", "type": "user"}))
                    .collect();
                json_answer(
                    200,
                    json!({"_embedded": {"users": users}, "page": {"size": 50, "totalElements": users.len(), "totalPages": 1, "number": 1}}),
                )
            }
            ("POST", ["v2", "conversations"]) => self.create_conversation(doc),
            ("GET", ["v2", "conversations"]) => self.list_conversations(uri),
            ("GET", ["v2", "conversations", _]) => {
                match self.conversations.iter().find(|c| Some(c.id) == id(2)) {
                    Some(c) => json_answer(200, conversation_json(c, true)),
                    None => not_found(),
                }
            }
            ("PATCH", ["v2", "conversations", _]) => self.update_conversation(id(2), doc),
            ("POST", ["v2", "conversations", _, kind @ ("phones" | "notes")]) => {
                self.add_thread(id(2), if *kind == "phones" { "phone" } else { "note" }, doc)
            }
            ("POST", ["v2", "conversations", _, "customer"]) => {
                self.add_customer_thread(id(2), doc)
            }
            ("PUT", ["v2", "conversations", _, "tags"]) => {
                let Some(tags) = doc.get("tags").and_then(Value::as_array) else {
                    return bad_request("tags", "may not be null", None);
                };
                let tags: Vec<String> = tags
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_lowercase)
                    .collect();
                match self.conversations.iter_mut().find(|c| Some(c.id) == id(2)) {
                    Some(c) => {
                        c.tags = tags;
                        ok(204)
                    }
                    None => not_found(),
                }
            }
            _ => not_found(),
        }
    }

    fn search_customers(&self, uri: &Uri) -> Answer {
        let query = query_pairs(uri).get("query").cloned().unwrap_or_default();
        if query.chars().count() > 500 {
            return bad_request("query", "size must be between 0 and 500", None);
        }
        let Some(phone) = query
            .strip_prefix("phone:\"")
            .and_then(|q| q.strip_suffix('"'))
        else {
            return bad_request("query", "Unsupported search query", Some(&json!(query)));
        };
        let now = Instant::now();
        let mut found: Vec<&Customer> = self
            .customers
            .iter()
            .filter(|c| now >= c.indexed_at && c.phones.iter().any(|p| p == phone))
            .collect();
        found.sort_by_key(|c| std::cmp::Reverse((c.created_at, c.id)));
        let customers: Vec<Value> = found
            .iter()
            .map(|c| json!({"id": c.id, "firstName": c.first_name, "lastName": c.last_name, "createdAt": c.created_at.to_string()}))
            .collect();
        json_answer(
            200,
            json!({"_embedded": {"customers": customers}, "page": {"size": 50, "totalElements": customers.len()}}),
        )
    }

    fn create_customer(&mut self, doc: &Value) -> Answer {
        for key in ["firstName", "lastName"] {
            if let Some(name) = doc.get(key) {
                let len = name.as_str().map(|n| n.chars().count()).unwrap_or(0);
                if !(1..=40).contains(&len) {
                    return bad_request(key, "size must be between 1 and 40", Some(name));
                }
            }
        }
        let mut phones = Vec::new();
        for (i, phone) in doc
            .get("phones")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let kind = phone.get("type").and_then(Value::as_str).unwrap_or("");
            if !PHONE_TYPES.contains(&kind) {
                return bad_request(
                    &format!("phones[{i}].type"),
                    "Value not supported",
                    phone.get("type"),
                );
            }
            match phone.get("value").and_then(Value::as_str) {
                Some(value) if !value.is_empty() => phones.push(value.to_owned()),
                _ => return bad_request(&format!("phones[{i}].value"), "may not be empty", None),
            }
        }
        let id = self.new_id();
        let lag = self.settings.search_lag;
        self.customers.push(Customer {
            id,
            first_name: doc
                .get("firstName")
                .and_then(Value::as_str)
                .map(str::to_owned),
            last_name: doc
                .get("lastName")
                .and_then(Value::as_str)
                .map(str::to_owned),
            phones,
            emails: Vec::new(),
            created_at: Timestamp::now(),
            indexed_at: Instant::now() + lag,
        });
        created(id)
    }

    fn create_conversation(&mut self, doc: &Value) -> Answer {
        let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("");
        if text("subject").is_empty() {
            return bad_request("subject", "may not be empty", None);
        }
        if !["chat", "email", "phone"].contains(&text("type")) {
            return bad_request(
                "type",
                "Expected one of these: 'chat', 'email', 'phone'",
                doc.get("type"),
            );
        }
        let mailbox = doc.get("mailboxId").and_then(Value::as_u64);
        if !mailbox.is_some_and(|m| self.settings.mailboxes.contains(&m)) {
            return bad_request("mailboxId", "Invalid identifier", doc.get("mailboxId"));
        }
        if !STATUSES.contains(&text("status")) {
            return bad_request(
                "status",
                "Expected one of these: 'active', 'closed', 'pending'",
                doc.get("status"),
            );
        }
        let customer = doc.pointer("/customer/id").and_then(Value::as_u64);
        if !customer.is_some_and(|c| self.customers.iter().any(|k| k.id == c)) {
            return bad_request(
                "customer.id",
                "Invalid identifier",
                doc.pointer("/customer/id"),
            );
        }
        let assignee = match doc.get("assignTo") {
            None | Some(Value::Null) => None,
            Some(value) => match value
                .as_u64()
                .filter(|u| self.users.iter().any(|(id, _)| id == u))
            {
                Some(user) => Some(user),
                None => return bad_request("assignTo", "Invalid identifier", Some(value)),
            },
        };
        let Some(threads) = doc
            .get("threads")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
        else {
            return bad_request("threads", "may not be empty", None);
        };
        if threads.len() > 100 {
            return json_answer(
                412,
                json!({"logRef": "t", "message": "Conversation cannot have more than 100 threads"}),
            );
        }
        let mut made = Vec::new();
        for (i, thread) in threads.iter().enumerate() {
            let kind = thread.get("type").and_then(Value::as_str).unwrap_or("");
            if !THREAD_TYPES.contains(&kind) {
                return bad_request(
                    &format!("threads[{i}].type"),
                    "Value not supported",
                    thread.get("type"),
                );
            }
            let Some(body) = thread
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            else {
                return bad_request(&format!("threads[{i}].text"), "may not be empty", None);
            };
            if matches!(kind, "phone" | "customer")
                && thread
                    .pointer("/customer/id")
                    .and_then(Value::as_u64)
                    .is_none()
            {
                return bad_request(&format!("threads[{i}].customer"), "may not be null", None);
            }
            let files = match attachments(
                thread.get("attachments"),
                &format!("threads[{i}].attachments"),
            ) {
                Ok(files) => files,
                Err(answer) => return answer,
            };
            let author = thread.pointer("/customer/id").and_then(Value::as_u64);
            made.push((kind.to_owned(), body.to_owned(), files, author));
        }
        let id = self.new_id();
        let threads = made
            .into_iter()
            .map(|(kind, text, attachments, customer)| Thread {
                id: self.new_id(),
                kind,
                text,
                attachments,
                customer,
            })
            .collect();
        let status = text("status").to_owned();
        self.conversations.push(Conversation {
            id,
            mailbox: mailbox.unwrap(),
            customer: customer.unwrap(),
            subject: text("subject").to_owned(),
            kind: text("type").to_owned(),
            closed_at: (status == "closed").then(Timestamp::now),
            status,
            tags: doc
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .collect(),
            assignee,
            created_at: Timestamp::now(),
            threads,
            indexed_at: Instant::now() + self.settings.search_lag,
        });
        created(id)
    }

    fn list_conversations(&self, uri: &Uri) -> Answer {
        let q = query_pairs(uri);
        let status = q.get("status").map(String::as_str).unwrap_or("active");
        if !["active", "all", "closed", "open", "pending", "spam"].contains(&status) {
            return bad_request("status", "Value not supported", Some(&json!(status)));
        }
        let mailboxes: Vec<u64> = q
            .get("mailbox")
            .map(|m| m.split(',').filter_map(|id| id.parse().ok()).collect())
            .unwrap_or_default();
        let customer = match q.get("query") {
            None => None,
            Some(query) => match query
                .strip_prefix("(customerIds:")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|id| id.parse::<u64>().ok())
            {
                Some(id) => Some(id),
                None => {
                    return bad_request("query", "Unsupported search query", Some(&json!(query)));
                }
            },
        };
        let threads = q.get("embed").is_some_and(|e| e == "threads");
        let now = Instant::now();
        let mut found: Vec<&Conversation> = self
            .conversations
            .iter()
            // `query` is answered from the search index, which lags behind writes.
            .filter(|c| customer.is_none() || now >= c.indexed_at)
            .filter(|c| mailboxes.is_empty() || mailboxes.contains(&c.mailbox))
            .filter(|c| customer.is_none_or(|id| c.customer == id))
            .filter(|c| match status {
                "all" => true,
                "open" => c.status == "active",
                other => c.status == other,
            })
            .collect();
        found.sort_by_key(|c| (c.created_at, c.id));
        if q.get("sortOrder").is_none_or(|o| o == "desc") {
            found.reverse();
        }
        let list: Vec<Value> = found
            .iter()
            .map(|c| conversation_json(c, threads))
            .collect();
        json_answer(
            200,
            json!({"_embedded": {"conversations": list}, "page": {"size": 25, "totalElements": list.len(), "totalPages": 1, "number": 1}}),
        )
    }

    fn update_conversation(&mut self, id: Option<u64>, doc: &Value) -> Answer {
        let op = doc.get("op").and_then(Value::as_str).unwrap_or("");
        let path = doc.get("path").and_then(Value::as_str).unwrap_or("");
        let value = doc.get("value").cloned().unwrap_or(Value::Null);
        let known_user = value
            .as_u64()
            .is_some_and(|u| self.users.iter().any(|(id, _)| *id == u));
        let Some(c) = self.conversations.iter_mut().find(|c| Some(c.id) == id) else {
            return not_found();
        };
        match (op, path) {
            ("replace", "/status") => {
                let Some(status) = value
                    .as_str()
                    .filter(|s| STATUSES.contains(s) || *s == "spam")
                else {
                    return bad_request(
                        "value",
                        "Expected one of these: 'active', 'closed', 'pending', 'spam'",
                        Some(&value),
                    );
                };
                if status == "closed" && c.status != "closed" {
                    c.closed_at = Some(Timestamp::now());
                }
                if status != "closed" {
                    c.closed_at = None;
                }
                c.status = status.to_owned();
            }
            ("replace", "/assignTo") if known_user => c.assignee = value.as_u64(),
            ("replace", "/assignTo") => {
                return bad_request("value", "Invalid identifier", Some(&value));
            }
            ("remove", "/assignTo") => c.assignee = None,
            ("replace", "/subject") => c.subject = value.as_str().unwrap_or_default().to_owned(),
            _ => return bad_request("op", "Unsupported operation", Some(doc)),
        }
        ok(204)
    }

    fn add_thread(&mut self, id: Option<u64>, kind: &str, doc: &Value) -> Answer {
        let Some(text) = doc
            .get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return bad_request("text", "may not be empty", None);
        };
        if kind == "phone" {
            let customer = doc.pointer("/customer/id").and_then(Value::as_u64);
            if !customer.is_some_and(|c| self.customers.iter().any(|k| k.id == c)) {
                return bad_request(
                    "customer.id",
                    "Invalid identifier",
                    doc.pointer("/customer/id"),
                );
            }
        }
        let files = match attachments(doc.get("attachments"), "attachments") {
            Ok(files) => files,
            Err(answer) => return answer,
        };
        let status = doc.get("status").and_then(Value::as_str).map(str::to_owned);
        if status.as_deref().is_some_and(|s| !STATUSES.contains(&s)) {
            return bad_request("status", "Value not supported", doc.get("status"));
        }
        let thread_id = self.new_id();
        let Some(c) = self.conversations.iter_mut().find(|c| Some(c.id) == id) else {
            return not_found();
        };
        if c.threads.len() >= 100 {
            return json_answer(
                412,
                json!({"logRef": "t", "message": "Conversation cannot have more than 100 threads"}),
            );
        }
        c.threads.push(Thread {
            id: thread_id,
            kind: kind.to_owned(),
            text: text.to_owned(),
            attachments: files,
            customer: doc.pointer("/customer/id").and_then(Value::as_u64),
        });
        if let Some(status) = status {
            if status == "closed" && c.status != "closed" {
                c.closed_at = Some(Timestamp::now());
            }
            c.status = status;
        }
        created(thread_id)
    }
}

impl Account {
    /// Create Customer Thread: `text` and `customer` (an id, else an e-mail looked up or made a
    /// customer) are required; `createdAt` only with `imported: true`. Unless imported, the
    /// conversation is reopened (active). 201 with `Resource-ID`.
    fn add_customer_thread(&mut self, id: Option<u64>, doc: &Value) -> Answer {
        if doc
            .get("text")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return bad_request("text", "may not be empty", None);
        }
        let Some(who) = doc.get("customer").filter(|c| c.is_object()) else {
            return bad_request("customer", "may not be null", None);
        };
        let customer = match (who.get("id"), who.get("email").and_then(Value::as_str)) {
            (Some(given), _) => match given
                .as_u64()
                .filter(|c| self.customers.iter().any(|k| k.id == *c))
            {
                Some(known) => known,
                None => return bad_request("customer.id", "Invalid identifier", Some(given)),
            },
            (None, Some(email)) if !email.is_empty() => {
                match self
                    .customers
                    .iter()
                    .find(|k| k.emails.iter().any(|e| e == email))
                {
                    Some(known) => known.id,
                    None => {
                        let made = self.new_id();
                        let lag = self.settings.search_lag;
                        self.customers.push(Customer {
                            id: made,
                            first_name: who
                                .get("firstName")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            last_name: who
                                .get("lastName")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                            phones: Vec::new(),
                            emails: vec![email.to_owned()],
                            created_at: Timestamp::now(),
                            indexed_at: Instant::now() + lag,
                        });
                        made
                    }
                }
            }
            _ => {
                return bad_request(
                    "customer",
                    "must contain a valid customer id or an email address",
                    Some(who),
                );
            }
        };
        let imported = doc.get("imported").and_then(Value::as_bool) == Some(true);
        if doc.get("createdAt").is_some() && !imported {
            return bad_request(
                "createdAt",
                "can only be used with imported set to true",
                doc.get("createdAt"),
            );
        }
        let text = doc
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let files = match attachments(doc.get("attachments"), "attachments") {
            Ok(files) => files,
            Err(answer) => return answer,
        };
        let thread_id = self.new_id();
        let Some(c) = self.conversations.iter_mut().find(|c| Some(c.id) == id) else {
            return not_found();
        };
        if c.threads.len() >= 100 {
            return json_answer(
                412,
                json!({"logRef": "t", "message": "Conversation cannot have more than 100 threads"}),
            );
        }
        c.threads.push(Thread {
            id: thread_id,
            kind: "customer".to_owned(),
            text,
            attachments: files,
            customer: Some(customer),
        });
        if !imported {
            c.status = "active".to_owned();
            c.closed_at = None;
        }
        created(thread_id)
    }
}

fn conversation_json(c: &Conversation, threads: bool) -> Value {
    let mut value = json!({
        "id": c.id, "number": c.id, "subject": c.subject, "type": c.kind, "status": c.status,
        "state": "published", "mailboxId": c.mailbox,
        "createdAt": c.created_at.to_string(),
        "closedAt": c.closed_at.map(|t| t.to_string()),
        "tags": c.tags.iter().enumerate().map(|(i, t)| json!({"id": i + 1, "color": "#929499", "tag": t})).collect::<Vec<_>>(),
        "primaryCustomer": {"id": c.customer, "type": "customer"},
        "assignee": c.assignee.map(|id| json!({"id": id, "type": "user"})),
    });
    if threads {
        value["_embedded"] = json!({"threads": c.threads.iter().map(|t| json!({"id": t.id, "type": t.kind, "body": t.text})).collect::<Vec<_>>()});
    }
    value
}
