//! The Help Scout connector (`kind = "helpscout"`, Mailbox API 2.0), following the seed on Help
//! Scout: a call is a `phone` conversation in the integration's mailbox, with a phone thread
//! telling the call and a note with the configured fields.
//!
//! - Sign-in: OAuth2 client credentials (`client_id`, the App Secret in `token_file` /
//!   `token_env`). Access tokens last 48 hours and come without a refresh token, so a 401 gets a
//!   new token, once, and the request is sent again.
//! - Customers: found by phone with the v3 customer search (`phone:"+34…"`, newest first);
//!   created, when `create_unknown_contacts` allows it, as "Caller <E.164>" with that phone.
//!   The search lags behind writes, so the directory (what sipdesk learnt) is the key.
//!   Two or more customers with the number: `duplicates = "most_recent"` logs to the newest,
//!   `"skip"` logs nothing and says so on the delivery. Withheld numbers share one customer,
//!   "Anonymous caller", created under the same rule.
//! - `log = "previous"` is the seed's "find an existing conversation": the customer's, in this
//!   mailbox, with no `spam` tag and not closed; with `reopen_closed_within`, one closed less
//!   than that ago is reopened; with `reassign_to_agent`, it is assigned to the Help Scout user
//!   with the agent's e-mail. Otherwise (or when none qualifies) a new conversation.
//! - Tags: `sipdesk`, `sipdesk-<call type>` and the call's tags; Help Scout replaces the whole
//!   list on update, so the conversation's tags are merged in, never lost.
//! - Created resources answer 201 with an empty body and the id in `Resource-ID`. Each step's
//!   result is saved on the delivery before the next, and a retried delivery looks for its own
//!   note (it ends with the call's marker) before writing again.
//! - Limits: writes count double against the per-minute limit (the pacer spaces them so); the
//!   limit announced in `X-RateLimit-Limit-Minute` is followed when lower, and the wait in
//!   `X-RateLimit-Retry-After` is honoured.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::{Announced, Credentials, Http, Reply, Vendor, header_number};
use super::{Delivered, HelpdeskError, Job, Party};
use crate::call::{CallRecord, Direction, Outcome};
use crate::config::{Duplicates, HelpScoutSettings, HelpScoutStatus, HelpdeskSettings, Secret};
use crate::tickets::{self, Log, Rules};

/// How long an agent's e-mail → user answer is trusted.
const AGENT_CACHE: Duration = Duration::from_secs(600);
/// How long a customer from the directory is used before Help Scout is asked again.
const CONTACT_FRESH: Duration = Duration::from_secs(24 * 3600);
/// Help Scout reissues tokens early rather than late: one older than this is replaced.
const TOKEN_LIFE: Duration = Duration::from_secs(47 * 3600);

/// A Help Scout integration.
pub struct HelpScout {
    http: Http,
    name: String,
    rules: Rules,
    settings: HelpScoutSettings,
    secret: Secret,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
    agents: Mutex<HashMap<String, (Option<u64>, Instant)>>,
}

/// What a delivery saved of its progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Progress {
    /// Always "helpscout": a request saved by another kind of connector is not ours.
    kind: String,
    /// A conversation create was sent (its answer may have been lost).
    creating: bool,
    /// The conversation the call went to, once known.
    conversation: Option<u64>,
    /// The steps done on it.
    done: Vec<String>,
}

/// A conversation, as listed.
#[derive(Clone, Debug, Deserialize)]
struct Conversation {
    id: u64,
    status: String,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default, rename = "closedAt")]
    closed_at: Option<Timestamp>,
    #[serde(default, rename = "primaryCustomer")]
    primary_customer: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
struct Tag {
    tag: String,
}

impl Conversation {
    fn is_spam(&self) -> bool {
        self.status == "spam" || self.tags.iter().any(|t| t.tag.eq_ignore_ascii_case("spam"))
    }
}

/// Which conversation a call joins.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    New,
    Existing {
        id: u64,
        reopen: bool,
        tags: Vec<String>,
    },
}

/// Help Scout's rate-limit headers: `X-RateLimit-Limit-Minute`, and when the minute is used up
/// (`X-RateLimit-Remaining-Minute: 0`) the seconds in `X-RateLimit-Retry-After`.
fn rate_headers(headers: &HeaderMap) -> Announced {
    Announced {
        per_minute: header_number(headers, "x-ratelimit-limit-minute"),
        wait: header_number(headers, "x-ratelimit-retry-after")
            .map(|s| Duration::from_secs(u64::from(s))),
    }
}

/// What Help Scout's error body says: its message and each field error.
fn errors(reply: &Reply) -> String {
    let mut parts: Vec<String> = reply
        .body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .into_iter()
        .collect();
    for error in reply
        .body
        .pointer("/_embedded/errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = error.get("path").and_then(Value::as_str).unwrap_or("");
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        parts.push(format!("{path} {message}").trim().to_owned());
    }
    if parts.is_empty() {
        super::http::error_message(&reply.body)
    } else {
        parts.join(": ")
    }
}

/// Text for a thread: Help Scout shows thread text as HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\n', "<br>\n")
}

/// The tags a call puts on its conversation.
fn call_tags(call: &CallRecord) -> Vec<String> {
    let mut tags = vec![
        "sipdesk".to_owned(),
        format!("sipdesk-{}", call.call_type().as_str().replace('_', "-")),
    ];
    for tag in &call.tags {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags
}

impl HelpScout {
    pub fn new(
        settings: &HelpdeskSettings,
        helpscout: &HelpScoutSettings,
        secret: &Secret,
    ) -> Result<HelpScout, String> {
        let http = Http::new(
            &settings.name,
            &helpscout.base_url,
            Vendor {
                credentials: Credentials::None,
                rate_headers,
                json_answers: true,
                pass_through: &[401],
                write_weight: 2,
            },
            settings.requests_per_minute,
            settings.request_timeout,
        )?;
        Ok(HelpScout {
            http,
            name: settings.name.clone(),
            rules: settings.rules.clone(),
            settings: helpscout.clone(),
            secret: secret.clone(),
            token: tokio::sync::Mutex::new(None),
            agents: Mutex::new(HashMap::new()),
        })
    }

    /// The access token: the one held while it lasts, else a new one.
    async fn token(&self) -> Result<Secret, HelpdeskError> {
        let mut held = self.token.lock().await;
        if let Some((token, at)) = held.as_ref() {
            if at.elapsed() < TOKEN_LIFE {
                return Ok(token.clone());
            }
        }
        let url = self.http.url("/v2/oauth2/token", &[])?;
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": self.settings.client_id,
            "client_secret": self.secret.expose(),
        });
        let reply = self.http.send(Method::POST, url, Some(&body), &[]).await?;
        let token = reply
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|_| reply.is_success());
        let Some(token) = token else {
            return Err(HelpdeskError::Permanent(format!(
                "POST /v2/oauth2/token: {} refused the app's credentials ({} {}); check client_id and the App Secret (token_file/token_env)",
                self.name,
                reply.status.as_u16(),
                errors(&reply)
            )));
        };
        let token = Secret::new(token.to_owned());
        *held = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// One API request with the access token; a 401 gets a new token, once.
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, HelpdeskError> {
        for fresh in [false, true] {
            let token = self.token().await?;
            let bearer = format!("Bearer {}", token.expose());
            let url = self.http.url(path, query)?;
            let reply = self
                .http
                .send(method.clone(), url, body, &[("authorization", &bearer)])
                .await?;
            if reply.status.as_u16() != 401 {
                return Ok(reply);
            }
            // Expired (48 hours) or revoked: there is no refresh token, so a new one.
            let mut held = self.token.lock().await;
            if held.as_ref().is_some_and(|(t, _)| *t == token) {
                *held = None;
            }
            if fresh {
                return Err(HelpdeskError::Permanent(format!(
                    "{method} {path}: {} refused a new access token (401 {}); check that the app's user still has access",
                    self.name,
                    errors(&reply)
                )));
            }
        }
        unreachable!("the loop returns")
    }

    fn refused(&self, what: &str, reply: &Reply) -> HelpdeskError {
        let reason = format!(
            "{what}: {} refused it ({} {})",
            self.name,
            reply.status.as_u16(),
            errors(reply)
        );
        if reply.status.as_u16() == 409 {
            HelpdeskError::Retry {
                reason,
                after: None,
            }
        } else {
            HelpdeskError::Permanent(reason)
        }
    }

    /// The id in a 201's `Resource-ID`.
    fn created(&self, what: &str, reply: &Reply) -> Result<u64, HelpdeskError> {
        if !reply.is_success() {
            return Err(self.refused(what, reply));
        }
        reply
            .header("resource-id")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| HelpdeskError::Retry {
                reason: format!("{what}: {} answered without a Resource-ID", self.name),
                after: None,
            })
    }

    /// Carries out one delivery.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        let mut progress = job
            .delivery
            .request
            .as_deref()
            .and_then(|text| serde_json::from_str::<Progress>(text).ok())
            .filter(|p| p.kind == "helpscout")
            .unwrap_or_else(|| Progress {
                kind: "helpscout".to_owned(),
                ..Progress::default()
            });
        let customer = match self.customer(job).await? {
            Ok(id) => id,
            Err(skip) => return Ok(Delivered::Skipped(skip)),
        };
        let agent = match &call.agent_email {
            Some(email)
                if call.outcome == Outcome::Answered || call.direction == Direction::Outbound =>
            {
                self.agent(email).await?
            }
            _ => None,
        };
        let status = self.settings.status.get(call.call_type());
        let marker = tickets::marker(&call.id);
        // A retried create whose answer was lost: the conversation may exist already.
        if progress.creating && progress.conversation.is_none() {
            if let Some(id) = self.conversation_with(customer, &marker).await? {
                progress.conversation = Some(id);
                progress.done = vec!["phone".to_owned(), "note".to_owned()];
                self.save(job, &progress).await?;
            }
        }
        let target = match progress.conversation {
            Some(id) => Target::Existing {
                id,
                reopen: false,
                tags: Vec::new(),
            },
            None if self.rules.log.get(call.call_type()) == Log::Previous => {
                self.previous(customer).await?
            }
            None => Target::New,
        };
        match target {
            Target::New => {
                progress.creating = true;
                self.save(job, &progress).await?;
                let mut body = json!({
                    "subject": tickets::subject(call),
                    "type": "phone",
                    "mailboxId": self.settings.mailbox_id,
                    "status": status.as_str(),
                    "customer": { "id": customer },
                    "tags": call_tags(call),
                    "threads": [
                        { "type": "phone", "customer": { "id": customer }, "text": html(&self.phone_text(call)) },
                        { "type": "note", "text": html(&tickets::note(&self.rules, call)) },
                    ],
                });
                if let Some(user) = agent {
                    body["assignTo"] = json!(user);
                }
                let reply = self
                    .request(Method::POST, "/v2/conversations", &[], Some(&body))
                    .await?;
                let id = self.created("POST /v2/conversations", &reply)?;
                progress.conversation = Some(id);
                progress.done = vec!["phone".to_owned(), "note".to_owned()];
                self.save(job, &progress).await?;
                Ok(Delivered::Ticket {
                    id: id.to_string(),
                    detail: format!("created conversation {id} ({})", status.as_str()),
                })
            }
            Target::Existing { id, reopen, tags } => {
                progress.conversation = Some(id);
                self.save(job, &progress).await?;
                self.add_to(
                    job,
                    &mut progress,
                    id,
                    customer,
                    reopen,
                    tags,
                    agent,
                    status,
                )
                .await
            }
        }
    }

    /// Adds the call to an existing conversation, step by step, each step saved.
    #[allow(clippy::too_many_arguments)]
    async fn add_to(
        &self,
        job: &Job<'_>,
        progress: &mut Progress,
        id: u64,
        customer: u64,
        reopen: bool,
        tags: Vec<String>,
        agent: Option<u64>,
        status: HelpScoutStatus,
    ) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        let marker = tickets::marker(&call.id);
        let step_done = |p: &Progress, step: &str| p.done.iter().any(|d| d == step);
        // A retry that does not know whether its note went in looks for it first.
        if !step_done(progress, "note")
            && !progress.done.is_empty()
            && self.has_note(id, &marker).await?
        {
            progress.done.push("phone".to_owned());
            progress.done.push("note".to_owned());
        }
        if reopen && !step_done(progress, "reopen") {
            self.patch(id, "/status", json!("active")).await?;
            progress.done.push("reopen".to_owned());
            self.save(job, progress).await?;
        }
        if !step_done(progress, "phone") {
            let path = format!("/v2/conversations/{id}/phones");
            let body =
                json!({ "customer": { "id": customer }, "text": html(&self.phone_text(call)) });
            let reply = self.request(Method::POST, &path, &[], Some(&body)).await?;
            if reply.status.as_u16() == 404 {
                return self.gone(job, progress, id).await;
            }
            self.created(&format!("POST {path}"), &reply)?;
            progress.done.push("phone".to_owned());
            self.save(job, progress).await?;
        }
        if !step_done(progress, "note") {
            let path = format!("/v2/conversations/{id}/notes");
            let body = json!({ "text": html(&tickets::note(&self.rules, call)), "status": status.as_str() });
            let reply = self.request(Method::POST, &path, &[], Some(&body)).await?;
            self.created(&format!("POST {path}"), &reply)?;
            progress.done.push("note".to_owned());
            self.save(job, progress).await?;
        }
        if !step_done(progress, "status") {
            self.patch(id, "/status", json!(status.as_str())).await?;
            progress.done.push("status".to_owned());
            self.save(job, progress).await?;
        }
        if !step_done(progress, "tags") {
            let mut merged = tags;
            for tag in call_tags(call) {
                if !merged.iter().any(|t| t.eq_ignore_ascii_case(&tag)) {
                    merged.push(tag);
                }
            }
            let path = format!("/v2/conversations/{id}/tags");
            let reply = self
                .request(Method::PUT, &path, &[], Some(&json!({ "tags": merged })))
                .await?;
            if !reply.is_success() {
                return Err(self.refused(&format!("PUT {path}"), &reply));
            }
            progress.done.push("tags".to_owned());
            self.save(job, progress).await?;
        }
        let mut assigned = "";
        if let (true, Some(user)) = (self.settings.reassign_to_agent, agent) {
            if !step_done(progress, "assign") {
                self.patch(id, "/assignTo", json!(user)).await?;
                progress.done.push("assign".to_owned());
                self.save(job, progress).await?;
            }
            assigned = ", assigned to the agent";
        }
        Ok(Delivered::Ticket {
            id: id.to_string(),
            detail: format!(
                "added the call to conversation {id}{} ({}){assigned}",
                if reopen { ", reopened" } else { "" },
                status.as_str()
            ),
        })
    }

    /// The conversation was deleted meanwhile: start over with a new one.
    async fn gone(
        &self,
        job: &Job<'_>,
        progress: &mut Progress,
        id: u64,
    ) -> Result<Delivered, HelpdeskError> {
        *progress = Progress {
            kind: "helpscout".to_owned(),
            ..Progress::default()
        };
        self.save(job, progress).await?;
        Err(HelpdeskError::Retry {
            reason: format!("conversation {id} is gone; the call goes to a new one"),
            after: Some(Duration::from_secs(1)),
        })
    }

    async fn patch(&self, id: u64, path: &str, value: Value) -> Result<(), HelpdeskError> {
        let url = format!("/v2/conversations/{id}");
        let body = json!({ "op": "replace", "path": path, "value": value });
        let reply = self.request(Method::PATCH, &url, &[], Some(&body)).await?;
        if reply.is_success() {
            Ok(())
        } else {
            Err(self.refused(&format!("PATCH {url} {path}"), &reply))
        }
    }

    async fn save(&self, job: &Job<'_>, progress: &Progress) -> Result<(), HelpdeskError> {
        let text = serde_json::to_string(progress)
            .map_err(|e| HelpdeskError::Permanent(format!("cannot save the progress: {e}")))?;
        job.remember_request(Some(&text)).await
    }

    /// The phone thread: the call in one line.
    fn phone_text(&self, call: &CallRecord) -> String {
        let mut text = tickets::subject(call);
        if let Some(agent) = &call.agent {
            text.push_str(&format!(", agent {agent}"));
        }
        if call.answered_at.is_some() {
            text.push_str(&format!(", {}s", call.talk_seconds().round()));
        }
        text
    }

    /// The customer the call goes to (`Err`: why it is not logged).
    async fn customer(&self, job: &Job<'_>) -> Result<Result<u64, String>, HelpdeskError> {
        if let Some(id) = job
            .delivery
            .contact_id
            .as_ref()
            .and_then(|id| id.parse().ok())
        {
            return Ok(Ok(id));
        }
        let anonymous = matches!(job.party, Party::Anonymous { .. });
        if let Some(entry) = job.directory_entry().await? {
            let age = Timestamp::now()
                .duration_since(entry.checked_at)
                .unsigned_abs();
            if let (Some(id), true) = (
                entry
                    .contact_id
                    .as_ref()
                    .and_then(|id| id.parse::<u64>().ok()),
                age < CONTACT_FRESH || anonymous,
            ) {
                job.remember_contact(&id.to_string()).await?;
                return Ok(Ok(id));
            }
        }
        let found = match &job.party {
            Party::Number(number) => {
                let query = format!("phone:\"{number}\"");
                let reply = self
                    .request(
                        Method::GET,
                        "/v3/customers/search",
                        &[("query", &query)],
                        None,
                    )
                    .await?;
                if !reply.is_success() {
                    return Err(self.refused("GET /v3/customers/search", &reply));
                }
                let mut customers: Vec<(Timestamp, u64)> = reply
                    .body
                    .pointer("/_embedded/customers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| {
                        let id = c.get("id")?.as_u64()?;
                        let created = c
                            .get("createdAt")
                            .and_then(Value::as_str)
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(Timestamp::UNIX_EPOCH);
                        Some((created, id))
                    })
                    .collect();
                customers.sort();
                match (customers.len(), self.settings.duplicates) {
                    (0, _) => None,
                    (1, _) | (_, Duplicates::MostRecent) => customers.last().map(|(_, id)| *id),
                    (n, Duplicates::Skip) => {
                        return Ok(Err(format!(
                            "{n} customers have this number and duplicates = \"skip\"; merge them in Help Scout"
                        )));
                    }
                }
            }
            Party::Anonymous { .. } => None,
        };
        let id = match found {
            Some(id) => id,
            None => {
                if let Err(skip) = tickets::may_create_contact(&self.rules, anonymous) {
                    return Ok(Err(skip.to_string()));
                }
                let body = match &job.party {
                    Party::Number(number) => json!({
                        "firstName": "Caller",
                        "lastName": number,
                        "phones": [{ "type": "work", "value": number }],
                    }),
                    Party::Anonymous { .. } => {
                        json!({ "firstName": "Anonymous", "lastName": "caller" })
                    }
                };
                let reply = self
                    .request(Method::POST, "/v2/customers", &[], Some(&body))
                    .await?;
                self.created("POST /v2/customers", &reply)?
            }
        };
        job.learn(Some(id.to_string()), None, false).await?;
        job.remember_contact(&id.to_string()).await?;
        Ok(Ok(id))
    }

    /// The Help Scout user with the agent's e-mail, if any (cached a while).
    async fn agent(&self, email: &str) -> Result<Option<u64>, HelpdeskError> {
        if let Some((id, at)) = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(email)
        {
            if at.elapsed() < AGENT_CACHE {
                return Ok(*id);
            }
        }
        let reply = self
            .request(Method::GET, "/v2/users", &[("email", email)], None)
            .await?;
        if !reply.is_success() {
            return Err(self.refused("GET /v2/users", &reply));
        }
        let id = reply
            .body
            .pointer("/_embedded/users")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|u| {
                u.get("email")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .and_then(|u| u.get("id")?.as_u64());
        self.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(email.to_owned(), (id, Instant::now()));
        Ok(id)
    }

    /// The customer's conversations in the mailbox, newest first.
    async fn conversations(
        &self,
        customer: u64,
        threads: bool,
    ) -> Result<Vec<(Conversation, Value)>, HelpdeskError> {
        let mailbox = self.settings.mailbox_id.to_string();
        let query = format!("(customerIds:{customer})");
        let mut params = vec![
            ("mailbox", mailbox.as_str()),
            ("status", "all"),
            ("query", query.as_str()),
            ("sortField", "createdAt"),
            ("sortOrder", "desc"),
        ];
        if threads {
            params.push(("embed", "threads"));
        }
        let reply = self
            .request(Method::GET, "/v2/conversations", &params, None)
            .await?;
        if !reply.is_success() {
            return Err(self.refused("GET /v2/conversations", &reply));
        }
        Ok(reply
            .body
            .pointer("/_embedded/conversations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    serde_json::from_value::<Conversation>(c.clone()).ok()?,
                    c.clone(),
                ))
            })
            .filter(|(c, _)| {
                c.primary_customer
                    .as_ref()
                    .and_then(|p| p.get("id"))
                    .and_then(Value::as_u64)
                    .is_none_or(|id| id == customer)
            })
            .collect())
    }

    /// The seed's "existing conversation": the newest not closed and not spam; else, with
    /// `reopen_closed_within`, the newest closed less than that ago.
    async fn previous(&self, customer: u64) -> Result<Target, HelpdeskError> {
        let all = self.conversations(customer, false).await?;
        let tags = |c: &Conversation| c.tags.iter().map(|t| t.tag.clone()).collect();
        if let Some((open, _)) = all
            .iter()
            .find(|(c, _)| !c.is_spam() && c.status != "closed")
        {
            return Ok(Target::Existing {
                id: open.id,
                reopen: false,
                tags: tags(open),
            });
        }
        if let Some(within) = self.settings.reopen_closed_within {
            let since =
                Timestamp::now() - jiff::SignedDuration::try_from(within).unwrap_or_default();
            if let Some((closed, _)) = all.iter().find(|(c, _)| {
                !c.is_spam() && c.status == "closed" && c.closed_at.is_some_and(|at| at > since)
            }) {
                return Ok(Target::Existing {
                    id: closed.id,
                    reopen: true,
                    tags: tags(closed),
                });
            }
        }
        Ok(Target::New)
    }

    /// The customer's conversation holding a thread with this marker, if any.
    async fn conversation_with(
        &self,
        customer: u64,
        marker: &str,
    ) -> Result<Option<u64>, HelpdeskError> {
        Ok(self
            .conversations(customer, true)
            .await?
            .into_iter()
            .find(|(_, raw)| raw.to_string().contains(marker))
            .map(|(c, _)| c.id))
    }

    /// Whether the conversation has a thread with this marker.
    async fn has_note(&self, id: u64, marker: &str) -> Result<bool, HelpdeskError> {
        let path = format!("/v2/conversations/{id}");
        let reply = self
            .request(Method::GET, &path, &[("embed", "threads")], None)
            .await?;
        if reply.status.as_u16() == 404 {
            return Ok(false);
        }
        if !reply.is_success() {
            return Err(self.refused(&format!("GET {path}"), &reply));
        }
        Ok(reply.body.to_string().contains(marker))
    }
}
