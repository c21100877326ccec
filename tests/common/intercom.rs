//! A fake Intercom REST API for the tests: the endpoints sipdesk uses, with Intercom's published
//! behaviour (the OpenAPI file of version 2.16 in intercom/Intercom-OpenAPI, and the docs' rate
//! limiting and error pages).
//!
//! - Bearer token; anything else is 401 `unauthorized` "Access Token Invalid", without rate
//!   headers. An `Intercom-Version` Intercom does not know is 400 `intercom_version_invalid`.
//! - Rate limit in 10-second windows: `X-RateLimit-Limit` (per window), `X-RateLimit-Remaining`,
//!   `X-RateLimit-Reset` (Unix seconds) on every authenticated answer; beyond, 429
//!   `rate_limit_exceeded` ("Exceeded rate limit of N in 10_seconds"), no `Retry-After`.
//! - Contacts: search (`phone` or `email` with `=`, alone or in an `AND` group; a contact made
//!   through the API shows up after `search_lag`, as the spec warns; conversations too), create (one of `email`,
//!   `external_id`, `role` required; `role` user or lead; an e-mail already taken is 409
//!   `conflict` "A contact matching those details already exists with id=<id>"; 200 with the
//!   contact).
//! - Conversations: create from a contact (`from` lead/user/contact with an existing id, a
//!   `body`; 200 with a `user_message` and its `conversation_id`), search (`contact_ids`,
//!   `open`, `state`, `created_at` in an `AND` group; `conversation.list`), get (with
//!   `conversation_parts`), reply (admin comment or note with an existing `admin_id`, or a
//!   contact's comment with `intercom_user_id`), parts (`assignment` by an admin to an admin,
//!   or "0"), tags (create as upsert, case-insensitive; tag a conversation with string `id` and
//!   `admin_id`; untag with `DELETE …/tags/{id}` and `admin_id` in the body). Errors in `error.list` shape; unknown ids are 404 `not_found`.
//! - Faults on demand: a status, no answer, or the request processed and its answer lost — for
//!   the next N requests, or for the next request to one method and path.
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

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) token: String,
    /// Requests per 10-second window (10,000 a minute: 1,667).
    pub(crate) per_window: u32,
    pub(crate) search_lag: Duration,
    /// How long every answer takes.
    pub(crate) latency: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            token: "ic-token".to_owned(),
            per_window: 1667,
            search_lag: Duration::from_secs(60),
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
pub(crate) struct Contact {
    pub(crate) id: String,
    pub(crate) role: String,
    pub(crate) name: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) email: Option<String>,
    indexed_at: Instant,
}

#[derive(Clone, Debug)]
pub(crate) struct Part {
    /// comment, note, assignment.
    pub(crate) kind: String,
    pub(crate) author: String,
    pub(crate) body: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Conversation {
    pub(crate) id: String,
    pub(crate) contact: String,
    pub(crate) source: String,
    pub(crate) open: bool,
    pub(crate) assignee: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) parts: Vec<Part>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    indexed_at: Instant,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: u64,
    /// When each request within the limit arrived.
    pub(crate) arrivals: Vec<Instant>,
    pub(crate) unauthorized: u64,
    pub(crate) rate_limited: u64,
    pub(crate) conflicts: u64,
    /// Every 4xx other than 401, 409 and 429: what was asked, and the answer.
    pub(crate) rejections: Vec<String>,
}

struct Account {
    settings: Settings,
    admins: Vec<(String, String)>,
    contacts: Vec<Contact>,
    conversations: Vec<Conversation>,
    tags: Vec<(String, String)>,
    next_id: u64,
    window: (Instant, i64, u32),
    faults: Vec<Fault>,
    /// Faults for the next request to a method and path.
    aimed: Vec<(String, String, Fault)>,
    stats: Stats,
}

pub(crate) struct FakeIntercom {
    pub(crate) url: String,
    account: Arc<Mutex<Account>>,
    /// Stops serving when the fake is dropped.
    _server: Server,
}

impl FakeIntercom {
    pub(crate) fn start(settings: Settings) -> FakeIntercom {
        let account = Arc::new(Mutex::new(Account {
            settings,
            admins: Vec::new(),
            contacts: Vec::new(),
            conversations: Vec::new(),
            tags: Vec::new(),
            next_id: 100,
            window: (Instant::now(), Timestamp::now().as_second(), 0),
            faults: Vec::new(),
            aimed: Vec::new(),
            stats: Stats::default(),
        }));
        let server = Server::start(
            "fake Intercom",
            Router::new().fallback(handle).with_state(account.clone()),
        );
        FakeIntercom {
            url: server.url.clone(),
            account,
            _server: server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        f(&mut self.account.lock().unwrap())
    }

    pub(crate) fn add_admin(&self, email: &str) -> String {
        self.with(|a| {
            let id = a.new_id();
            a.admins.push((id.clone(), email.to_owned()));
            id
        })
    }

    /// A contact, already searchable unless `hidden` (made so recently search does not show it).
    pub(crate) fn add_contact(
        &self,
        role: &str,
        phone: Option<&str>,
        email: Option<&str>,
        hidden: bool,
    ) -> String {
        self.with(|a| {
            let id = format!("{:024x}", u128::from(a.next_id) + 0x6762f0dd1bb69f9f0000);
            a.next_id += 1;
            let lag = if hidden {
                Duration::from_secs(3600)
            } else {
                Duration::ZERO
            };
            a.contacts.push(Contact {
                id: id.clone(),
                role: role.to_owned(),
                name: None,
                phone: phone.map(str::to_owned),
                email: email.map(str::to_owned),
                indexed_at: Instant::now() + lag,
            });
            id
        })
    }

    /// An open conversation started by the contact, updated `age` ago.
    pub(crate) fn add_conversation(&self, contact: &str, open: bool, age: Duration) -> String {
        self.with(|a| {
            let id = a.new_id();
            let at = Timestamp::now().as_second() - age.as_secs() as i64;
            a.conversations.push(Conversation {
                id: id.clone(),
                contact: contact.to_owned(),
                source: "Hello".to_owned(),
                open,
                assignee: None,
                tags: Vec::new(),
                parts: Vec::new(),
                created_at: at,
                updated_at: at,
                indexed_at: Instant::now(),
            });
            id
        })
    }

    /// The contact is deleted (or merged into another), as an admin would in Intercom.
    pub(crate) fn delete_contact(&self, id: &str) {
        self.with(|a| a.contacts.retain(|c| c.id != id));
    }

    pub(crate) fn contacts(&self) -> Vec<Contact> {
        self.with(|a| a.contacts.clone())
    }

    pub(crate) fn conversations(&self) -> Vec<Conversation> {
        self.with(|a| a.conversations.clone())
    }

    pub(crate) fn conversation(&self, id: &str) -> Conversation {
        self.with(|a| a.conversations.iter().find(|c| c.id == id).cloned())
            .unwrap_or_else(|| panic!("no conversation {id}"))
    }

    pub(crate) fn stats(&self) -> Stats {
        self.with(|a| a.stats.clone())
    }

    pub(crate) fn fail_next(&self, n: usize, fault: Fault) {
        self.with(|a| a.faults.extend(std::iter::repeat_n(fault, n)));
    }

    /// The next request with this method and path gets `fault`.
    pub(crate) fn fail_on(&self, method: &str, path: &str, fault: Fault) {
        self.with(|a| a.aimed.push((method.to_owned(), path.to_owned(), fault)));
    }

    /// The conversation is assigned to this admin (as a teammate would in Intercom).
    pub(crate) fn assign(&self, conversation: &str, admin: &str) {
        self.with(|a| {
            if let Some(c) = a.conversations.iter_mut().find(|c| c.id == conversation) {
                c.assignee = Some(admin.to_owned());
            }
        });
    }
}

type Answer = (u16, Value);

/// An answer with the headers it carries.
type Full = (u16, Vec<(&'static str, String)>, Value);

fn error(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        json!({"type": "error.list", "request_id": format!("{:032x}", fastrand::u128(..)),
            "errors": [{"code": code, "message": message}]}),
    )
}

fn not_found(message: &str) -> Answer {
    error(404, "not_found", message)
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
        Some((status, extra, body)) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body.to_string(),
            )
                .into_response();
            for (name, value) in extra {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    }
}

/// A string or a number, as a string.
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Account {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    fn serve(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Full> {
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
            Some(Fault::Status(status)) => Some((
                status,
                Vec::new(),
                json!({"type": "error", "request_id": null,
                "message": "Request failed due to an internal error. Please reach out to support"}),
            )),
        }
    }

    fn answer(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<Full> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if token != Some(self.settings.token.as_str()) {
            self.stats.unauthorized += 1;
            let (status, body) = error(401, "unauthorized", "Access Token Invalid");
            return Some((status, Vec::new(), body));
        }
        let now = Instant::now();
        if now.duration_since(self.window.0) >= Duration::from_secs(10) {
            self.window = (now, Timestamp::now().as_second(), 0);
        }
        let limit = self.settings.per_window;
        let reset = (self.window.1 + 10).to_string();
        if self.window.2 >= limit {
            self.stats.rate_limited += 1;
            let (status, body) = error(
                429,
                "rate_limit_exceeded",
                &format!("Exceeded rate limit of {limit} in 10_seconds"),
            );
            return Some((
                status,
                vec![
                    ("x-ratelimit-limit", limit.to_string()),
                    ("x-ratelimit-remaining", "0".to_owned()),
                    ("x-ratelimit-reset", reset),
                ],
                body,
            ));
        }
        self.window.2 += 1;
        self.stats.requests += 1;
        self.stats.arrivals.push(now);
        let rate = vec![
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-remaining", (limit - self.window.2).to_string()),
            ("x-ratelimit-reset", reset),
        ];
        let known = [
            "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6",
            "2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14", "2.15", "2.16",
        ];
        if let Some(version) = headers
            .get("intercom-version")
            .and_then(|v| v.to_str().ok())
        {
            if !known.contains(&version) {
                let (status, body) = error(
                    400,
                    "intercom_version_invalid",
                    "Requested resource is not available in current API version.",
                );
                return Some((status, rate, body));
            }
        }
        let doc: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(doc) => doc,
                Err(_) => {
                    let (status, body) = error(400, "parameter_invalid", "Invalid JSON");
                    return Some((status, rate, body));
                }
            }
        };
        let (status, answer) = self.route(method, uri.path(), &doc);
        if (400..500).contains(&status) && status != 409 {
            self.stats.rejections.push(format!(
                "{method} {} {doc} -> {status} {answer}",
                uri.path()
            ));
        }
        Some((status, rate, answer))
    }

    fn route(&mut self, method: &Method, path: &str, doc: &Value) -> Answer {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["admins"]) => (
                200,
                json!({"type": "admin.list", "admins": self.admins.iter().map(|(id, email)|
                json!({"type": "admin", "id": id, "name": "Admin", "email": email, "away_mode_enabled": false, "has_inbox_seat": true})).collect::<Vec<_>>()}),
            ),
            ("POST", ["contacts", "search"]) => self.search_contacts(doc),
            ("POST", ["contacts"]) => self.create_contact(doc),
            ("POST", ["conversations"]) => self.create_conversation(doc),
            ("POST", ["conversations", "search"]) => self.search_conversations(doc),
            ("GET", ["conversations", id]) => match self.conversations.iter().find(|c| c.id == *id)
            {
                Some(c) => (200, conversation_json(c, true)),
                None => not_found("Resource Not Found"),
            },
            ("POST", ["conversations", id, "reply"]) => self.reply(id, doc),
            ("POST", ["conversations", id, "parts"]) => self.part(id, doc),
            ("POST", ["conversations", id, "tags"]) => self.tag_conversation(id, doc),
            ("DELETE", ["conversations", id, "tags", tag]) => self.untag_conversation(id, tag, doc),
            ("GET", ["tags"]) => (
                200,
                json!({"type": "list", "data": self.tags.iter().map(|(id, name)| json!({"type": "tag", "id": id, "name": name})).collect::<Vec<_>>()}),
            ),
            ("POST", ["tags"]) => {
                let Some(name) = doc
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                else {
                    return error(400, "parameter_invalid", "invalid tag parameters");
                };
                if let Some((id, existing)) =
                    self.tags.iter().find(|(_, n)| n.eq_ignore_ascii_case(name))
                {
                    return (200, json!({"type": "tag", "id": id, "name": existing}));
                }
                let id = self.new_id();
                self.tags.push((id.clone(), name.to_owned()));
                (200, json!({"type": "tag", "id": id, "name": name}))
            }
            _ => not_found("Resource Not Found"),
        }
    }

    /// The filters of a search query: one, or an AND group's.
    fn filters(doc: &Value) -> Result<Vec<(String, String, Value)>, Answer> {
        let query = doc
            .get("query")
            .ok_or_else(|| error(400, "parameter_not_found", "query parameter is required"))?;
        let list: Vec<&Value> = match query.get("operator").and_then(Value::as_str) {
            Some("AND") => query
                .get("value")
                .and_then(Value::as_array)
                .map(|v| v.iter().collect())
                .unwrap_or_default(),
            _ => vec![query],
        };
        list.into_iter()
            .map(|f| {
                let field = f
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| error(400, "parameter_invalid", "field is required"))?;
                let op = f
                    .get("operator")
                    .and_then(Value::as_str)
                    .ok_or_else(|| error(400, "parameter_invalid", "operator is required"))?;
                Ok((
                    field.to_owned(),
                    op.to_owned(),
                    f.get("value").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect()
    }

    fn search_contacts(&self, doc: &Value) -> Answer {
        let filters = match Self::filters(doc) {
            Ok(f) => f,
            Err(e) => return e,
        };
        let now = Instant::now();
        let found: Vec<Value> = self
            .contacts
            .iter()
            .filter(|c| now >= c.indexed_at)
            .filter(|c| {
                filters.iter().all(|(field, op, value)| {
                    let have = match field.as_str() {
                        "phone" => c.phone.as_deref(),
                        "email" => c.email.as_deref(),
                        "role" => Some(c.role.as_str()),
                        _ => None,
                    };
                    op == "=" && have.is_some() && value.as_str() == have
                })
            })
            .map(contact_json)
            .collect();
        (
            200,
            json!({"type": "list", "data": found, "total_count": found.len(), "pages": {"type": "pages", "page": 1, "per_page": 50, "total_pages": 1}}),
        )
    }

    fn create_contact(&mut self, doc: &Value) -> Answer {
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        if text("email").is_none() && text("external_id").is_none() && text("role").is_none() {
            return error(
                400,
                "parameter_invalid",
                "email, external_id or role is required",
            );
        }
        let role = text("role").unwrap_or_else(|| "user".to_owned());
        if role != "user" && role != "lead" {
            return error(400, "parameter_invalid", "role must be user or lead");
        }
        if let Some(email) = text("email") {
            if let Some(existing) = self
                .contacts
                .iter()
                .find(|c| c.email.as_deref() == Some(email.as_str()))
            {
                self.stats.conflicts += 1;
                return error(
                    409,
                    "conflict",
                    &format!(
                        "A contact matching those details already exists with id={}",
                        existing.id
                    ),
                );
            }
        }
        let id = format!("{:024x}", self.next_id + 0x5a5a_0000_0000);
        self.next_id += 1;
        let contact = Contact {
            id,
            role,
            name: text("name"),
            phone: text("phone"),
            email: text("email"),
            indexed_at: Instant::now() + self.settings.search_lag,
        };
        let answer = contact_json(&contact);
        self.contacts.push(contact);
        (200, answer)
    }

    fn create_conversation(&mut self, doc: &Value) -> Answer {
        let kind = doc
            .pointer("/from/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !["lead", "user", "contact"].contains(&kind) {
            return error(
                400,
                "parameter_invalid",
                "from.type must be lead, user or contact",
            );
        }
        let from = doc
            .pointer("/from/id")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(contact) = self
            .contacts
            .iter()
            .find(|c| c.id == from && (kind == "contact" || c.role == kind))
        else {
            return not_found("User Not Found");
        };
        let contact = contact.id.clone();
        let Some(body) = doc
            .get("body")
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
        else {
            return error(400, "parameter_invalid", "body is required");
        };
        let id = self.new_id();
        let message = self.new_id();
        let now = Timestamp::now().as_second();
        self.conversations.push(Conversation {
            id: id.clone(),
            contact,
            // Intercom gives bodies back as HTML.
            source: format!(
                "<p>{}</p>",
                body.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            ),
            open: true,
            assignee: None,
            tags: Vec::new(),
            parts: Vec::new(),
            created_at: now,
            updated_at: now,
            indexed_at: Instant::now() + self.settings.search_lag,
        });
        (
            200,
            json!({"type": "user_message", "id": message, "created_at": now, "body": body, "message_type": "inapp", "conversation_id": id}),
        )
    }

    fn search_conversations(&self, doc: &Value) -> Answer {
        let filters = match Self::filters(doc) {
            Ok(f) => f,
            Err(e) => return e,
        };
        let now = Instant::now();
        let found: Vec<Value> = self
            .conversations
            .iter()
            // Conversation search is index-based too.
            .filter(|c| now >= c.indexed_at)
            .filter(|c| {
                filters
                    .iter()
                    .all(|(field, op, value)| match (field.as_str(), op.as_str()) {
                        ("contact_ids", "=") => value.as_str() == Some(c.contact.as_str()),
                        ("open", "=") => value.as_bool() == Some(c.open),
                        ("state", "=") => {
                            value.as_str() == Some(if c.open { "open" } else { "closed" })
                        }
                        // The spec: `>` means greater than or equal.
                        ("created_at", ">") => value.as_i64().is_some_and(|t| c.created_at >= t),
                        _ => false,
                    })
            })
            .map(|c| conversation_json(c, false))
            .collect();
        (
            200,
            json!({"type": "conversation.list", "conversations": found, "total_count": found.len(), "pages": {"type": "pages", "page": 1, "per_page": 20, "total_pages": 1}}),
        )
    }

    fn reply(&mut self, id: &str, doc: &Value) -> Answer {
        let kind = doc.get("type").and_then(Value::as_str).unwrap_or("");
        let message_type = doc
            .get("message_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let body = doc.get("body").and_then(Value::as_str).unwrap_or("");
        let author = match kind {
            "admin" => {
                let Some(admin) = id_of(doc.get("admin_id")) else {
                    return error(400, "parameter_not_found", "admin_id is required");
                };
                if !self.admins.iter().any(|(a, _)| *a == admin) {
                    return not_found("Resource Not Found");
                }
                if !["comment", "note", "quick_reply"].contains(&message_type) {
                    return error(400, "parameter_invalid", "message_type is invalid");
                }
                admin
            }
            "user" => {
                let Some(user) = doc.get("intercom_user_id").and_then(Value::as_str) else {
                    return error(
                        400,
                        "parameter_not_found",
                        "intercom_user_id, user_id or email is required",
                    );
                };
                if !self.contacts.iter().any(|c| c.id == user) {
                    return not_found("User Not Found");
                }
                if message_type != "comment" {
                    return error(400, "parameter_invalid", "message_type is invalid");
                }
                user.to_owned()
            }
            _ => return error(400, "parameter_invalid", "type must be admin or user"),
        };
        if body.is_empty() && message_type != "quick_reply" {
            return error(400, "parameter_invalid", "body is required");
        }
        let Some(c) = self.conversations.iter_mut().find(|c| c.id == id) else {
            return not_found("Resource Not Found");
        };
        if kind == "user" && c.contact != author {
            return not_found("User Not Found");
        }
        // A contact's message comes back as HTML, as Intercom keeps it; an admin's is HTML already.
        let body = if kind == "user" {
            format!(
                "<p>{}</p>",
                body.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            )
        } else {
            body.to_owned()
        };
        c.parts.push(Part {
            kind: message_type.to_owned(),
            author,
            body,
        });
        c.updated_at = Timestamp::now().as_second();
        if kind == "user" {
            c.open = true;
        }
        (200, conversation_json(c, true))
    }

    fn part(&mut self, id: &str, doc: &Value) -> Answer {
        if doc.get("message_type").and_then(Value::as_str) != Some("assignment")
            || doc.get("type").and_then(Value::as_str) != Some("admin")
        {
            return error(
                400,
                "parameter_invalid",
                "message_type and type are invalid",
            );
        }
        let (Some(admin), Some(assignee)) =
            (id_of(doc.get("admin_id")), id_of(doc.get("assignee_id")))
        else {
            return error(
                400,
                "parameter_not_found",
                "admin_id and assignee_id are required",
            );
        };
        if !self.admins.iter().any(|(a, _)| *a == admin)
            || (assignee != "0" && !self.admins.iter().any(|(a, _)| *a == assignee))
        {
            return not_found("Resource Not Found");
        }
        let Some(c) = self.conversations.iter_mut().find(|c| c.id == id) else {
            return not_found("Resource Not Found");
        };
        c.assignee = (assignee != "0").then_some(assignee);
        c.parts.push(Part {
            kind: "assignment".to_owned(),
            author: admin,
            body: String::new(),
        });
        (200, conversation_json(c, true))
    }

    /// Untagging needs the admin in the body (the spec: a JSON body with `admin_id`).
    fn untag_conversation(&mut self, id: &str, tag: &str, doc: &Value) -> Answer {
        let Some(admin) = id_of(doc.get("admin_id")) else {
            return error(400, "parameter_not_found", "admin_id is required");
        };
        if !self.admins.iter().any(|(a, _)| *a == admin) {
            return error(404, "admin_not_found", "Admin not found");
        }
        let Some(name) = self
            .tags
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, n)| n.clone())
        else {
            return error(404, "tag_not_found", "Tag not found");
        };
        let Some(c) = self.conversations.iter_mut().find(|c| c.id == id) else {
            return error(404, "not_found", "Conversation not found");
        };
        if !c.tags.contains(&name) {
            return error(404, "tag_not_found", "Tag not found");
        }
        c.tags.retain(|t| *t != name);
        (200, json!({"type": "tag", "id": tag, "name": name}))
    }

    fn tag_conversation(&mut self, id: &str, doc: &Value) -> Answer {
        let (Some(tag), Some(admin)) = (
            doc.get("id").and_then(Value::as_str),
            doc.get("admin_id").and_then(Value::as_str),
        ) else {
            return error(
                400,
                "parameter_invalid",
                "id and admin_id are required strings",
            );
        };
        let Some(name) = self
            .tags
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, n)| n.clone())
        else {
            return error(404, "tag_not_found", "Tag not found");
        };
        if !self.admins.iter().any(|(a, _)| a == admin) {
            return error(404, "admin_not_found", "Admin not found");
        }
        let Some(c) = self.conversations.iter_mut().find(|c| c.id == id) else {
            return error(404, "not_found", "Conversation not found");
        };
        if !c.tags.contains(&name) {
            c.tags.push(name.clone());
        }
        (
            200,
            json!({"type": "tag", "id": tag, "name": name, "applied_by": {"type": "admin", "id": admin}}),
        )
    }
}

fn contact_json(c: &Contact) -> Value {
    json!({"type": "contact", "id": c.id, "workspace_id": "ws1", "role": c.role, "name": c.name, "phone": c.phone, "email": c.email})
}

fn conversation_json(c: &Conversation, parts: bool) -> Value {
    let mut value = json!({
        "type": "conversation", "id": c.id, "created_at": c.created_at, "updated_at": c.updated_at,
        "open": c.open, "state": if c.open { "open" } else { "closed" },
        "admin_assignee_id": c.assignee.as_ref().and_then(|a| a.parse::<u64>().ok()).unwrap_or(0),
        "source": {"type": "conversation", "body": c.source, "author": {"type": "user", "id": c.contact}},
        "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": c.contact}]},
        "tags": {"type": "tag.list", "tags": c.tags.iter().map(|t| json!({"type": "tag", "name": t})).collect::<Vec<_>>()},
    });
    if parts {
        value["conversation_parts"] = json!({"type": "conversation_part.list", "conversation_parts":
            c.parts.iter().map(|p| json!({"type": "conversation_part", "part_type": p.kind, "body": p.body, "author": {"id": p.author}})).collect::<Vec<_>>(),
            "total_count": c.parts.len()});
    }
    value
}
