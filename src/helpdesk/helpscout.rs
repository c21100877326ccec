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
//!   with the agent's e-mail (after a transfer, the last agent who held the call with a Help
//!   Scout user, else the one before). Otherwise (or when none qualifies) a new conversation.
//! - Texts, only with `log_sms = true` (the seed's "Registrar WhatsApp y SMS"; without it their
//!   deliveries are skipped, saying so): an inbound text is a customer thread (`POST
//!   /v2/conversations/{id}/customer`, or the only thread of a new conversation) with the
//!   customer's words, then the number they texted and the marker; an outbound text is a note
//!   with what was sent, by whom, to whom and whether the PBX delivered it. The seed says texts
//!   do not follow the call-logging rules, read here as: a text with `log = "previous"` (the
//!   default for both text types) joins the customer's newest conversation that is neither
//!   closed nor spam, else opens a new one; it never reopens a closed one
//!   (`reopen_closed_within` is for calls); `log = "new"` opens one per text, except for a
//!   sender past `[sms] max_per_sender`. `reassign_to_agent` applies to texts too (the seed
//!   names them): an inbound text on a number with one agent, an outbound text by its agent. A
//!   customer thread makes the conversation active (Help Scout reopens it); another `status`
//!   chosen for `sms_inbound` is set after it.
//! - Tags: `sipdesk`, `sipdesk-<call type>` and the call's tags; Help Scout replaces the whole
//!   list on update, so the conversation's tags are merged in, never lost.
//! - Created resources answer 201 with an empty body and the id in `Resource-ID`. Each step's
//!   result is saved on the delivery before the next, and a retried delivery looks for its own
//!   threads (each ends with the call's or text's marker) before writing again.
//! - A voicemail's recording is attached to the note thread (`attachments`: file name, type and
//!   the WAV in base64); a recording that is gone fails the delivery for good. One larger than
//!   Help Scout takes ([`MAX_ATTACHMENT`], 10 MB, checked before it is read) is not attached:
//!   the note says a voicemail was left, its length, the signed link when `[media] public_url`
//!   is set, and that the file was too large (with a warning in the log).
//! - Limits: writes count double against the per-minute limit (the pacer spaces them so); the
//!   limit announced in `X-RateLimit-Limit-Minute` is followed when lower, and the wait in
//!   `X-RateLimit-Retry-After` is honoured.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use jiff::Timestamp;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::{Announced, Credentials, Http, Reply, Vendor, header_number};
use super::{Attachable, Delivered, HelpdeskError, Job, Party};
use crate::call::{CallRecord, Direction, Outcome};
use crate::config::{Duplicates, HelpScoutSettings, HelpScoutStatus, HelpdeskSettings, Secret};
use crate::recordings::{self, Audio};
use crate::store::tags::Retag;
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

/// What a delivery saved of its progress. Help Scout has no idempotency keys and its search
/// lags behind writes, so every write whose answer may have been lost is marked here first, and
/// a retry looks before writing again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Progress {
    /// Always "helpscout": a request saved by another kind of connector is not ours.
    kind: String,
    /// A customer create was sent and its answer may have been lost.
    customer_sent: bool,
    /// A conversation create was sent and its answer may have been lost.
    creating: bool,
    /// How many times a retry waited for the search to show what an earlier attempt made.
    looked: u32,
    /// The conversation the call went to, once known.
    conversation: Option<u64>,
    /// The steps done on it.
    done: Vec<String>,
    /// The chosen conversation turned out full, merged or deleted: open a new one.
    fresh: bool,
}

impl Progress {
    fn did(&self, step: &str) -> bool {
        self.done.iter().any(|d| d == step)
    }

    fn mark(&mut self, step: &str) {
        if !self.did(step) {
            self.done.push(step.to_owned());
        }
    }
}

/// How many times a retry waits for Help Scout's search before writing again.
const LOOKS: u32 = 3;
/// How long it waits each time.
const LAG_WAIT: Duration = Duration::from_secs(10);

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
    Existing { id: u64, reopen: bool },
}

/// How a write to a chosen conversation went.
enum Step {
    Done,
    /// The conversation is gone (404), merged into another (301) or full (412).
    Gone(&'static str),
}

/// Why a conversation can take no more of the call, if it cannot.
fn gone(reply: &Reply) -> Option<&'static str> {
    match reply.status.as_u16() {
        301 => Some("was merged into another"),
        404 => Some("is gone"),
        412 => Some("is full (100 threads)"),
        _ => None,
    }
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

/// A voicemail's recording as a thread's `attachments`: file name, type and the bytes in base64.
/// The note's text and attachments for the call's voicemail: the recording attached when Help
/// Scout takes its size, else lines in the note saying a voicemail was left.
async fn voicemail_note(
    job: &Job<'_>,
    note: String,
) -> Result<(String, Option<Value>), HelpdeskError> {
    Ok(
        match job.voicemail_within(MAX_ATTACHMENT, "Help Scout").await? {
            Attachable::None => (note, None),
            Attachable::Audio(audio) => (note, Some(attachments(&audio))),
            Attachable::TooLarge { size } => {
                let instead = job.too_large_text(size, Some(MAX_ATTACHMENT), "Help Scout")?;
                (super::before_marker(&note, &instead), None)
            }
        },
    )
}

/// The largest attachment Help Scout takes: 10 MB (its API reference: "we only support
/// attachments of 10MB or lower"), counted in decimal megabytes, the smaller reading.
pub const MAX_ATTACHMENT: u64 = 10_000_000;

fn attachments(audio: &Audio) -> Value {
    json!([{
        "fileName": audio.file_name,
        "mimeType": recordings::CONTENT_TYPE,
        "data": base64::engine::general_purpose::STANDARD.encode(&audio.bytes),
    }])
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

/// A text's one thread, as a conversation's `threads` entry, with its step (the thread's type)
/// and where a thread of its kind is added: an inbound text is the customer's own thread (their
/// words, then the number they texted and the marker a retry looks for); an outbound text is a
/// note telling what was sent, from whom, to whom and whether it was delivered. `None` for a
/// call.
fn thread_of_text(
    rules: &Rules,
    call: &CallRecord,
    customer: u64,
) -> Option<(&'static str, &'static str, Value)> {
    let text = call.sms.as_ref()?;
    Some(match call.direction {
        Direction::Inbound => {
            let words = format!(
                "{}\n\n(SMS to {}, {}) {}",
                text.body,
                text.name,
                text.number,
                tickets::marker(&call.id)
            );
            (
                "customer",
                "customer",
                json!({ "type": "customer", "customer": { "id": customer }, "text": html(&words) }),
            )
        }
        Direction::Outbound => (
            "note",
            "notes",
            json!({ "type": "note", "text": html(&tickets::note(rules, call)) }),
        ),
    })
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
                pass_through: &[301, 401, 412],
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
        super::refused(what, &self.name, reply, &errors(reply))
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

    /// Tags added or removed after the call: the conversation's tags, read and written back
    /// with the change (Help Scout replaces the whole list).
    pub async fn retag(
        &self,
        retag: &Retag,
        conversation: &str,
    ) -> Result<Delivered, HelpdeskError> {
        let path = format!("/v2/conversations/{conversation}");
        let reply = self.request(Method::GET, &path, &[], None).await?;
        if let Some(why) = gone(&reply) {
            return Err(HelpdeskError::Permanent(format!(
                "conversation {conversation} {why}: its tags cannot change"
            )));
        }
        if !reply.is_success() {
            return Err(self.refused(&format!("GET {path}"), &reply));
        }
        let mut tags: Vec<String> = reply
            .body
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("tag").and_then(Value::as_str).map(str::to_owned))
            .filter(|t| !retag.removed.iter().any(|r| r.eq_ignore_ascii_case(t)))
            .collect();
        for tag in &retag.added {
            if !tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                tags.push(tag.clone());
            }
        }
        let path = format!("/v2/conversations/{conversation}/tags");
        let reply = self
            .request(Method::PUT, &path, &[], Some(&json!({ "tags": tags })))
            .await?;
        if !reply.is_success() {
            return Err(self.refused(&format!("PUT {path}"), &reply));
        }
        Ok(Delivered::Ticket {
            id: conversation.to_owned(),
            detail: format!("conversation {conversation}: tags now {}", tags.join(", ")),
        })
    }

    /// Carries out one delivery.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        let mut progress = job
            .saved::<Progress>()
            .filter(|p| p.kind == "helpscout")
            .unwrap_or_else(|| Progress {
                kind: "helpscout".to_owned(),
                ..Progress::default()
            });
        let customer = match self.customer(job, &mut progress).await? {
            Ok(id) => id,
            Err(skip) => return Ok(Delivered::Skipped(skip)),
        };
        let handled = call.outcome == Outcome::Answered || call.direction == Direction::Outbound;
        let agent = if self.settings.reassign_to_agent && handled {
            self.first_agent(&call.assignee_emails()).await?
        } else {
            None
        };
        let status = self.settings.status.get(call.call_type());
        let marker = tickets::marker(&call.id);
        // A create whose answer was lost: the conversation may exist, once search shows it.
        if progress.creating && progress.conversation.is_none() {
            match self.conversation_with(customer, &marker).await? {
                Some(id) => progress.conversation = Some(id),
                None if progress.looked < LOOKS => {
                    progress.looked += 1;
                    self.save(job, &progress).await?;
                    return Err(HelpdeskError::Wait {
                        reason: "an earlier attempt may have created the conversation; waiting for Help Scout's search to show it".to_owned(),
                        after: LAG_WAIT,
                    });
                }
                None => {}
            }
        }
        // A conversation chosen by an earlier attempt: what it already holds of this call.
        if let Some(id) = progress.conversation {
            match self.threads_of(id, &marker).await? {
                None => return self.start_over(job, &mut progress, id, "is gone").await,
                Some(kinds) => {
                    for kind in kinds {
                        progress.mark(&kind);
                    }
                }
            }
        }
        // Withheld callers share one customer: their calls never join each other's.
        let anonymous = matches!(job.party, Party::Anonymous { .. });
        let target = match progress.conversation {
            Some(id) => Target::Existing { id, reopen: false },
            None if progress.fresh || anonymous => Target::New,
            // A text never reopens a closed conversation: the call rules do not apply to it.
            None if tickets::log_of(&self.rules, call) == Log::Previous => {
                self.previous(customer, call.sms.is_none()).await?
            }
            None => Target::New,
        };
        match target {
            Target::New => {
                self.create(job, &mut progress, customer, agent, status)
                    .await
            }
            Target::Existing { id, reopen } => {
                progress.conversation = Some(id);
                self.save(job, &progress).await?;
                self.add_to(job, &mut progress, id, customer, reopen, agent, status)
                    .await
            }
        }
    }

    /// A new phone conversation holding the call: one request, its answer awaited under a mark.
    async fn create(
        &self,
        job: &Job<'_>,
        progress: &mut Progress,
        customer: u64,
        agent: Option<u64>,
        status: HelpScoutStatus,
    ) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        let threads = match thread_of_text(&self.rules, call, customer) {
            Some((_, _, thread)) => vec![thread],
            None => {
                let (text, files) = voicemail_note(job, tickets::note(&self.rules, call)).await?;
                let mut note = json!({ "type": "note", "text": html(&text) });
                if let Some(files) = files {
                    note["attachments"] = files;
                }
                vec![
                    json!({ "type": "phone", "customer": { "id": customer }, "text": html(&self.phone_text(call)) }),
                    note,
                ]
            }
        };
        progress.creating = true;
        progress.looked = 0;
        self.save(job, progress).await?;
        let mut body = json!({
            "subject": tickets::subject(call),
            "type": "phone",
            "mailboxId": self.settings.mailbox_id,
            "status": status.as_str(),
            "customer": { "id": customer },
            "tags": call_tags(call),
            "threads": threads,
        });
        if let Some(user) = agent {
            body["assignTo"] = json!(user);
        }
        let reply = self
            .request(Method::POST, "/v2/conversations", &[], Some(&body))
            .await?;
        if self.customer_refused(&reply) {
            return self.customer_gone(job, progress).await;
        }
        let id = self.created("POST /v2/conversations", &reply)?;
        progress.creating = false;
        progress.conversation = Some(id);
        for step in ["phone", "note", "customer", "tags", "assign"] {
            progress.mark(step);
        }
        self.save(job, progress).await?;
        Ok(Delivered::Ticket {
            id: id.to_string(),
            detail: format!(
                "created conversation {id} ({}){}",
                status.as_str(),
                if agent.is_some() {
                    ", assigned to the agent"
                } else {
                    ""
                }
            ),
        })
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
        agent: Option<u64>,
        status: HelpScoutStatus,
    ) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        if reopen && !progress.did("reopen") {
            match self.patch(id, "/status", json!("active")).await? {
                Step::Done => {}
                Step::Gone(why) => return self.start_over(job, progress, id, why).await,
            }
            progress.mark("reopen");
            self.save(job, progress).await?;
        }
        let steps = match thread_of_text(&self.rules, call, customer) {
            // A text is one thread: the customer's words, or the note of what was sent.
            Some((step, path, mut body)) => {
                if let Some(thread) = body.as_object_mut() {
                    thread.remove("type");
                    if step == "note" {
                        thread.insert("status".to_owned(), json!(status.as_str()));
                    }
                }
                vec![(step, format!("/v2/conversations/{id}/{path}"), body)]
            }
            None => {
                let mut text = tickets::note(&self.rules, call);
                let mut files = None;
                if !progress.did("note") {
                    (text, files) = voicemail_note(job, text).await?;
                }
                let mut note = json!({ "text": html(&text), "status": status.as_str() });
                if let Some(files) = files {
                    note["attachments"] = files;
                }
                // The phone thread tells the call; the note carries the fields, the voicemail's
                // recording and sets the status.
                vec![
                    (
                        "phone",
                        format!("/v2/conversations/{id}/phones"),
                        json!({ "customer": { "id": customer }, "text": html(&self.phone_text(call)) }),
                    ),
                    ("note", format!("/v2/conversations/{id}/notes"), note),
                ]
            }
        };
        for (step, path, body) in steps {
            if progress.did(step) {
                continue;
            }
            // Marked before it is sent: a retry then looks for it in the conversation.
            progress.mark(&format!("{step}-sent"));
            self.save(job, progress).await?;
            let reply = self.request(Method::POST, &path, &[], Some(&body)).await?;
            if let Some(why) = gone(&reply) {
                return self.start_over(job, progress, id, why).await;
            }
            if self.customer_refused(&reply) {
                return self.customer_gone(job, progress).await;
            }
            self.created(&format!("POST {path}"), &reply)?;
            progress.mark(step);
            self.save(job, progress).await?;
        }
        // A customer thread makes the conversation active (Help Scout reopens it): another
        // status chosen for inbound texts is set after it.
        let customer_said = call.sms.is_some() && call.direction == Direction::Inbound;
        if customer_said && status != HelpScoutStatus::Active && !progress.did("status") {
            match self.patch(id, "/status", json!(status.as_str())).await? {
                Step::Done => {}
                Step::Gone(why) => return self.start_over(job, progress, id, why).await,
            }
            progress.mark("status");
            self.save(job, progress).await?;
        }
        if !progress.did("tags") {
            // Read now, just before the write that replaces the list, so no tag is lost.
            let path = format!("/v2/conversations/{id}");
            let reply = self.request(Method::GET, &path, &[], None).await?;
            if let Some(why) = gone(&reply) {
                return self.start_over(job, progress, id, why).await;
            }
            if !reply.is_success() {
                return Err(self.refused(&format!("GET {path}"), &reply));
            }
            let mut merged: Vec<String> = reply
                .body
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("tag").and_then(Value::as_str).map(str::to_owned))
                .collect();
            for tag in call_tags(call) {
                if !merged.iter().any(|t| t.eq_ignore_ascii_case(&tag)) {
                    merged.push(tag);
                }
            }
            let path = format!("/v2/conversations/{id}/tags");
            let reply = self
                .request(Method::PUT, &path, &[], Some(&json!({ "tags": merged })))
                .await?;
            if !reply.is_success() && gone(&reply).is_none() {
                return Err(self.refused(&format!("PUT {path}"), &reply));
            }
            progress.mark("tags");
            self.save(job, progress).await?;
        }
        let mut assigned = String::new();
        if let Some(user) = agent.filter(|_| !progress.did("assign")) {
            // An assignment Help Scout refuses does not undo the call's logging: said, not failed.
            assigned = match self.patch(id, "/assignTo", json!(user)).await {
                Ok(Step::Done) => ", assigned to the agent".to_owned(),
                Ok(Step::Gone(why)) => format!(", not assigned (the conversation {why})"),
                Err(HelpdeskError::Permanent(reason)) => format!(", not assigned: {reason}"),
                Err(other) => return Err(other),
            };
            progress.mark("assign");
            self.save(job, progress).await?;
        }
        Ok(Delivered::Ticket {
            id: id.to_string(),
            detail: format!(
                "added the {} to conversation {id}{} ({}){assigned}",
                if call.sms.is_some() { "text" } else { "call" },
                if reopen { ", reopened" } else { "" },
                status.as_str()
            ),
        })
    }

    /// The chosen conversation is gone, merged or full: the next attempt opens a new one.
    async fn start_over(
        &self,
        job: &Job<'_>,
        progress: &mut Progress,
        id: u64,
        why: &str,
    ) -> Result<Delivered, HelpdeskError> {
        *progress = Progress {
            kind: "helpscout".to_owned(),
            fresh: true,
            ..Progress::default()
        };
        self.save(job, progress).await?;
        Err(HelpdeskError::Wait {
            reason: format!("conversation {id} {why}; the delivery goes to a new one"),
            after: Duration::from_secs(1),
        })
    }

    /// Help Scout no longer has the customer (deleted or merged): forgotten, looked up again.
    async fn customer_gone(
        &self,
        job: &Job<'_>,
        progress: &mut Progress,
    ) -> Result<Delivered, HelpdeskError> {
        job.contact_gone().await?;
        *progress = Progress {
            kind: "helpscout".to_owned(),
            ..Progress::default()
        };
        self.save(job, progress).await?;
        Err(HelpdeskError::Wait {
            reason: "Help Scout no longer has the customer; looking the caller up again".to_owned(),
            after: Duration::from_secs(1),
        })
    }

    /// Whether Help Scout refused the request for its customer id (deleted or merged).
    fn customer_refused(&self, reply: &Reply) -> bool {
        reply.status.as_u16() == 400
            && reply
                .body
                .pointer("/_embedded/errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|e| {
                    e.get("path")
                        .and_then(Value::as_str)
                        .is_some_and(|p| p.starts_with("customer"))
                })
    }

    async fn patch(&self, id: u64, path: &str, value: Value) -> Result<Step, HelpdeskError> {
        let url = format!("/v2/conversations/{id}");
        let body = json!({ "op": "replace", "path": path, "value": value });
        let reply = self.request(Method::PATCH, &url, &[], Some(&body)).await?;
        if let Some(why) = gone(&reply) {
            return Ok(Step::Gone(why));
        }
        if reply.is_success() {
            Ok(Step::Done)
        } else {
            Err(self.refused(&format!("PATCH {url} {path}"), &reply))
        }
    }

    async fn save(&self, job: &Job<'_>, progress: &Progress) -> Result<(), HelpdeskError> {
        job.save(progress).await
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
        // The marker lets a retry see that this thread went in.
        text.push(' ');
        text.push_str(&tickets::marker(&call.id));
        text
    }

    /// The customer the call goes to (`Err`: why it is not logged).
    async fn customer(
        &self,
        job: &Job<'_>,
        progress: &mut Progress,
    ) -> Result<Result<u64, String>, HelpdeskError> {
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
            Party::Number(number) => self.customer_by_phone(number).await?,
            Party::Anonymous { .. } => Ok(None),
        };
        let found = match found {
            Ok(found) => found,
            Err(skip) => return Ok(Err(skip)),
        };
        let id = match found {
            Some(id) => id,
            None => {
                if let Err(skip) = tickets::may_create_contact(&self.rules, anonymous) {
                    return Ok(Err(skip.to_string()));
                }
                // An earlier attempt's create may have gone through: search lags behind it.
                if progress.customer_sent && !anonymous && progress.looked < LOOKS {
                    progress.looked += 1;
                    self.save(job, progress).await?;
                    return Err(HelpdeskError::Wait {
                        reason: "an earlier attempt may have created the customer; waiting for Help Scout's search to show it".to_owned(),
                        after: LAG_WAIT,
                    });
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
                progress.customer_sent = true;
                self.save(job, progress).await?;
                let reply = self
                    .request(Method::POST, "/v2/customers", &[], Some(&body))
                    .await?;
                self.created("POST /v2/customers", &reply)?
            }
        };
        job.learn(Some(id.to_string()), None, false).await?;
        job.remember_contact(&id.to_string()).await?;
        if progress.customer_sent {
            progress.customer_sent = false;
            progress.looked = 0;
            self.save(job, progress).await?;
        }
        Ok(Ok(id))
    }

    /// The customer with this phone (`Err`: why the call is not logged): the only one, or by
    /// `duplicates` when several have it.
    async fn customer_by_phone(
        &self,
        number: &str,
    ) -> Result<Result<Option<u64>, String>, HelpdeskError> {
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
        Ok(match (customers.len(), self.settings.duplicates) {
            (0, _) => Ok(None),
            (1, _) | (_, Duplicates::MostRecent) => Ok(customers.last().map(|(_, id)| *id)),
            (n, Duplicates::Skip) => Err(format!(
                "{n} customers have this number and duplicates = \"skip\"; merge them in Help Scout"
            )),
        })
    }

    /// The Help Scout user with the agent's e-mail, if any (cached a while).
    /// The first of these e-mails (the agents who held a call, the last first) that is a Help
    /// Scout user's: a transferred call goes to the last agent Help Scout knows.
    async fn first_agent(&self, emails: &[&str]) -> Result<Option<u64>, HelpdeskError> {
        for email in emails {
            if let Some(id) = self.agent(email).await? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

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
        // Only users with access to the mailbox can be assigned its conversations.
        let mailbox = self.settings.mailbox_id.to_string();
        let reply = self
            .request(
                Method::GET,
                "/v2/users",
                &[("email", email), ("mailbox", &mailbox)],
                None,
            )
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
    /// `reopen_closed_within` and `reopen` (calls only), the newest closed less than that ago.
    async fn previous(&self, customer: u64, reopen: bool) -> Result<Target, HelpdeskError> {
        let all = self.conversations(customer, false).await?;
        if let Some((open, _)) = all
            .iter()
            .find(|(c, _)| !c.is_spam() && c.status != "closed")
        {
            return Ok(Target::Existing {
                id: open.id,
                reopen: false,
            });
        }
        if let Some(within) = self.settings.reopen_closed_within.filter(|_| reopen) {
            let since =
                Timestamp::now() - jiff::SignedDuration::try_from(within).unwrap_or_default();
            if let Some((closed, _)) = all.iter().find(|(c, _)| {
                !c.is_spam() && c.status == "closed" && c.closed_at.is_some_and(|at| at > since)
            }) {
                return Ok(Target::Existing {
                    id: closed.id,
                    reopen: true,
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

    /// The types of this call's threads the conversation holds (phone, note, customer), by
    /// their marker; `None` when the conversation is gone or merged.
    async fn threads_of(
        &self,
        id: u64,
        marker: &str,
    ) -> Result<Option<Vec<String>>, HelpdeskError> {
        let path = format!("/v2/conversations/{id}");
        let reply = self
            .request(Method::GET, &path, &[("embed", "threads")], None)
            .await?;
        if gone(&reply).is_some() {
            return Ok(None);
        }
        if !reply.is_success() {
            return Err(self.refused(&format!("GET {path}"), &reply));
        }
        Ok(Some(
            reply
                .body
                .pointer("/_embedded/threads")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| t.to_string().contains(marker))
                .filter_map(|t| Some(t.get("type")?.as_str()?.to_owned()))
                .collect(),
        ))
    }
}
