//! The Intercom connector (`kind = "intercom"`, REST API version [`VERSION`]), following the
//! seed on Intercom: each call is a message in the contact's new (or, with `log = "previous"`,
//! latest open) conversation, then an internal note with the details.
//!
//! - Bearer token, `Intercom-Version` pinned, the region's API (`region`).
//! - Contacts are found by phone (`POST /contacts/search`). Several contacts with the number:
//!   the call is not logged (the seed), with that reason. No contact: when
//!   `create_unknown_contacts` allows it, a lead named "<E.164> New contact" with that phone. A
//!   409 on create means the contact exists: the id in Intercom's message is used. Withheld
//!   numbers share one lead, the one with `anonymous_email`, created under the same rule;
//!   without `anonymous_email` they are not logged. Search lags behind writes, so the
//!   directory (what sipdesk learnt) is the key.
//! - The message: "<Inbound call answered | Inbound call unanswered | Outbound call answered |
//!   Outbound call unanswered | Missed call | Voicemail> on <group>" ("unanswered" when agents
//!   were rung, "Missed call" when nobody could be). The note (written by `admin_email`'s
//!   admin): the caller's number, the queue and group, and the configured fields (wait, who
//!   answered or dialled, duration, recording).
//! - Assignment (seed): an answered or outbound call to the Intercom admin with the agent's
//!   e-mail (a transferred call: the last agent who held it with an admin, else the one before
//!   down to who answered), else to `admin_email`'s admin; a missed call is left unassigned so
//!   Intercom's own assignment rules apply.
//! - Texts (seed): the message is "Inbound SMS on <number name>" or "Outbound SMS on <number
//!   name>", in a new conversation or, with `log = "previous"` (the default for texts, and for a
//!   sender past `[sms] max_per_sender` whatever the rule), the contact's latest open one; the
//!   note lists the number used, who sent the text, to whom, the text and, for an outbound
//!   one, whether it was delivered. An inbound text on a number with one agent goes to that
//!   agent's admin, else to `admin_email`'s; on a number with several it assigns nobody (a new
//!   conversation stays unassigned, an open one keeps its assignee). An outbound text goes to
//!   the admin of the agent who sent it, else to `admin_email`'s.
//! - The call's tags are applied to the conversation (tags are created when missing).
//! - Each write whose answer may be lost is marked on the delivery first; a retry looks for
//!   what it may have written before writing again: its note (it ends with the call's marker),
//!   its message in a joined conversation (one more of the contact's messages like it than
//!   before), a contact or conversation it may have created (waiting up to three minutes for
//!   search to catch up). A contact deleted or merged in Intercom (404 "User Not Found") is
//!   forgotten and the caller looked up again.
//! - A voicemail: the note says it was left, how long it is, and gives a signed link to the
//!   recording (Intercom takes no file in a note), or says there is no link without
//!   `[media] public_url`. The link is made when the note is written.
//! - Limits: Intercom counts requests in 10-second windows (`X-RateLimit-Limit` per window,
//!   `X-RateLimit-Reset` when the next starts); sipdesk follows the announced window and waits
//!   for the reset when it is used up or on 429.

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
use crate::call::{CallRecord, CallType, Direction, MissedReason, Outcome};
use crate::config::{HelpdeskSettings, IntercomSettings, Secret};
use crate::store::tags::Retag;
use crate::tickets::{self, Log, Rules};

/// The API version sipdesk is written against.
pub const VERSION: &str = "2.16";

/// How many times a retry waits for Intercom's search before creating a contact again.
const LOOKS: u32 = 6;
/// How long it waits each time: Intercom says new contacts "may not appear" in search for a few
/// minutes, so six looks span three.
const LAG_WAIT: Duration = Duration::from_secs(30);

/// How long the admins list is trusted.
const ADMINS_FRESH: Duration = Duration::from_secs(600);
/// How long a contact from the directory is used before Intercom is asked again.
const CONTACT_FRESH: Duration = Duration::from_secs(24 * 3600);

/// An Intercom integration.
pub struct Intercom {
    http: Http,
    name: String,
    rules: Rules,
    settings: IntercomSettings,
    /// The workspace's admins by lower-cased e-mail, and when they were read.
    admins: Mutex<Option<(HashMap<String, String>, Instant)>>,
}

/// What a delivery saved of its progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Progress {
    /// Always "intercom": a request saved by another kind of connector is not ours.
    kind: String,
    /// A contact create was sent and its answer may have been lost.
    contact_sent: bool,
    /// How many times a retry waited for the search to show that contact.
    looked: u32,
    /// A conversation create was sent (its answer may have been lost), at this Unix second.
    creating: bool,
    #[serde(default)]
    sent_at: i64,
    /// A reply to this conversation was sent, when it already held this many of the contact's
    /// messages like it: more on a retry means it went in.
    #[serde(default)]
    joining: Option<(String, usize)>,
    conversation: Option<String>,
    done: Vec<String>,
}

/// Intercom's headers: the limit of the 10-second window, what remains, and when it resets
/// (Unix seconds).
fn rate_headers(headers: &HeaderMap) -> Announced {
    let per_window = header_number(headers, "x-ratelimit-limit");
    let exhausted = header_number(headers, "x-ratelimit-remaining") == Some(0);
    let reset = headers
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let wait = reset.filter(|_| exhausted).map(|at| {
        Duration::from_secs(
            u64::try_from(at - Timestamp::now().as_second())
                .unwrap_or(0)
                .clamp(1, 60),
        )
    });
    Announced {
        per_minute: per_window.map(|n| n.saturating_mul(6)),
        wait,
    }
}

/// What Intercom's `error.list` says.
fn errors(reply: &Reply) -> String {
    let listed: Vec<String> = reply
        .body
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            [e.get("code"), e.get("message")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(": ")
        })
        .collect();
    if listed.is_empty() {
        super::http::error_message(&reply.body)
    } else {
        listed.join("; ")
    }
}

/// The seed's words for a call, or for a text ("Inbound SMS", "Outbound SMS").
pub fn headline(call: &CallRecord) -> &'static str {
    match call.call_type() {
        CallType::SmsInbound => "Inbound SMS",
        CallType::SmsOutbound => "Outbound SMS",
        CallType::InboundAnswered => "Inbound call answered",
        CallType::Missed if call.reason == Some(MissedReason::NoAnswer) => {
            "Inbound call unanswered"
        }
        CallType::Missed => "Missed call",
        CallType::Voicemail => "Voicemail",
        CallType::OutboundAnswered => "Outbound call answered",
        CallType::OutboundUnanswered => "Outbound call unanswered",
    }
}

/// Text for a note: Intercom shows admin notes as HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .split('\n')
        .map(|line| format!("<p>{line}</p>"))
        .collect()
}

/// An id Intercom gives as a string or a number, as text.
fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// Text as Intercom shows it back: HTML tags dropped, entities read.
fn plain(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

/// The contact id in a 409's "… already exists with id=<id>".
fn conflicting_id(reply: &Reply) -> Option<String> {
    let text = errors(reply);
    let at = text.find("id=")? + 3;
    let id: String = text[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty()).then_some(id)
}

impl Intercom {
    pub fn new(
        settings: &HelpdeskSettings,
        intercom: &IntercomSettings,
        secret: &Secret,
    ) -> Result<Intercom, String> {
        let http = Http::new(
            &settings.name,
            &intercom.base_url,
            Vendor {
                credentials: Credentials::Bearer(secret.clone()),
                rate_headers,
                json_answers: true,
                pass_through: &[],
                write_weight: 1,
            },
            settings.requests_per_minute,
            settings.request_timeout,
        )?;
        Ok(Intercom {
            http,
            name: settings.name.clone(),
            rules: settings.rules.clone(),
            settings: intercom.clone(),
            admins: Mutex::new(None),
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, HelpdeskError> {
        let url = self.http.url(path, &[])?;
        self.http
            .send(method, url, body, &[("intercom-version", VERSION)])
            .await
    }

    fn refused(&self, what: &str, reply: &Reply) -> HelpdeskError {
        super::refused(what, &self.name, reply, &errors(reply))
    }

    /// Tags added or removed after the call: applied to and removed from the conversation
    /// (a tag to add is created in Intercom when missing; one to remove that is already off,
    /// or unknown to Intercom, is fine).
    pub async fn retag(
        &self,
        retag: &Retag,
        conversation: &str,
    ) -> Result<Delivered, HelpdeskError> {
        let admin = self
            .admin(&self.settings.admin_email)
            .await?
            .ok_or_else(|| {
                HelpdeskError::Permanent(format!(
                    "admin_email {} is not an admin of this Intercom workspace",
                    self.settings.admin_email
                ))
            })?;
        // Tags to remove are looked up, never created: one Intercom does not have is not on
        // the conversation either.
        let known: Vec<(String, String)> = if retag.removed.is_empty() {
            Vec::new()
        } else {
            let reply = self.request(Method::GET, "/tags", None).await?;
            if !reply.is_success() {
                return Err(self.refused("GET /tags", &reply));
            }
            reply
                .body
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    Some((
                        t.get("name")?.as_str()?.to_lowercase(),
                        t.get("id")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        };
        for tag in &retag.added {
            let reply = self
                .request(Method::POST, "/tags", Some(&json!({ "name": tag })))
                .await?;
            let id = reply
                .body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let Some(id) = id.filter(|_| reply.is_success()) else {
                return Err(self.refused("POST /tags", &reply));
            };
            let path = format!("/conversations/{conversation}/tags");
            let body = json!({ "id": id, "admin_id": admin });
            let reply = self.request(Method::POST, &path, Some(&body)).await?;
            if !reply.is_success() {
                return Err(self.refused(&format!("POST {path}"), &reply));
            }
        }
        for tag in &retag.removed {
            let Some((_, id)) = known.iter().find(|(name, _)| *name == tag.to_lowercase()) else {
                continue;
            };
            let path = format!("/conversations/{conversation}/tags/{id}");
            let reply = self
                .request(Method::DELETE, &path, Some(&json!({ "admin_id": admin })))
                .await?;
            let already_off =
                reply.status.as_u16() == 404 && errors(&reply).contains("tag_not_found");
            if !reply.is_success() && !already_off {
                return Err(self.refused(&format!("DELETE {path}"), &reply));
            }
        }
        Ok(Delivered::Ticket {
            id: conversation.to_owned(),
            detail: format!(
                "conversation {conversation}: tags {}",
                retag
                    .added
                    .iter()
                    .map(|t| format!("+{t}"))
                    .chain(retag.removed.iter().map(|t| format!("-{t}")))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        })
    }

    /// Carries out one delivery.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        let mut progress = job
            .saved::<Progress>()
            .filter(|p| p.kind == "intercom")
            .unwrap_or_else(|| Progress {
                kind: "intercom".to_owned(),
                ..Progress::default()
            });
        let contact = match self.contact(job, &mut progress).await? {
            Ok(found) => found,
            Err(skip) => return Ok(Delivered::Skipped(skip)),
        };
        let admin = self
            .admin(&self.settings.admin_email)
            .await?
            .ok_or_else(|| {
                HelpdeskError::Permanent(format!(
                    "admin_email {} is not an admin of this Intercom workspace",
                    self.settings.admin_email
                ))
            })?;
        // A text is "on" the number's name (the seed's "SMS on <number name>"), a call on its group.
        let group = match &call.sms {
            Some(text) => text.name.as_str(),
            None => call.group.as_deref().unwrap_or("sipdesk"),
        };
        let message = format!("{} on {group}", headline(call));
        let marker = tickets::marker(&call.id);
        let step_done = |p: &Progress, step: &str| p.done.iter().any(|d| d == step);

        if progress.conversation.is_none() && progress.creating {
            // A create whose answer was lost: the conversation may exist, once search shows it.
            match self.made_for(&contact, progress.sent_at, &message).await? {
                Some(id) => {
                    progress.conversation = Some(id);
                    progress.done.push("message".to_owned());
                }
                None if progress.looked < LOOKS => {
                    progress.looked += 1;
                    self.save(job, &progress).await?;
                    return Err(HelpdeskError::Wait {
                        reason: "an earlier attempt may have started the conversation; waiting for Intercom's search to show it".to_owned(),
                        after: LAG_WAIT,
                    });
                }
                None => {}
            }
        }
        if let (None, Some((id, seen))) = (&progress.conversation, progress.joining.clone()) {
            // A reply whose answer was lost: did it go in?
            if self.messages_like(&id, &contact, &message).await? > seen {
                progress.conversation = Some(id);
                progress.done.push("message".to_owned());
                self.save(job, &progress).await?;
            }
        }
        if progress.conversation.is_none()
            && progress.joining.is_none()
            && tickets::log_of(&self.rules, call) == Log::Previous
            && !matches!(job.party, Party::Anonymous { .. })
        {
            if let Some(id) = self.latest_open(&contact).await? {
                let seen = self.messages_like(&id, &contact, &message).await?;
                progress.joining = Some((id, seen));
                self.save(job, &progress).await?;
            }
        }
        if let (None, Some((id, _))) = (&progress.conversation, progress.joining.clone()) {
            let path = format!("/conversations/{id}/reply");
            let body = json!({
                "message_type": "comment", "type": "user",
                "intercom_user_id": contact, "body": message,
            });
            let reply = self.request(Method::POST, &path, Some(&body)).await?;
            if reply.status.as_u16() == 404 {
                return self.contact_gone(job, &reply).await;
            }
            if !reply.is_success() {
                return Err(self.refused(&format!("POST {path}"), &reply));
            }
            progress.conversation = Some(id);
            progress.done.push("message".to_owned());
            self.save(job, &progress).await?;
        }
        let conversation = match progress.conversation.clone() {
            Some(id) => id,
            None => {
                progress.creating = true;
                progress.looked = 0;
                progress.sent_at = Timestamp::now().as_second();
                self.save(job, &progress).await?;
                // `contact` stands for a user or a lead alike.
                let body = json!({ "from": { "type": "contact", "id": contact }, "body": message });
                let reply = self
                    .request(Method::POST, "/conversations", Some(&body))
                    .await?;
                if reply.status.as_u16() == 404 {
                    return self.contact_gone(job, &reply).await;
                }
                if !reply.is_success() {
                    return Err(self.refused("POST /conversations", &reply));
                }
                let Some(id) = id_text(reply.body.get("conversation_id")) else {
                    return Err(HelpdeskError::Retry {
                        reason: "POST /conversations: no conversation_id in the answer".to_owned(),
                        after: None,
                    });
                };
                progress.conversation = Some(id.clone());
                progress.done.push("message".to_owned());
                self.save(job, &progress).await?;
                id
            }
        };
        // The note: looked for first only when an earlier attempt sent it.
        let noted = step_done(&progress, "note")
            || (step_done(&progress, "note-sent") && self.has_note(&conversation, &marker).await?);
        if !noted {
            progress.done.push("note-sent".to_owned());
            self.save(job, &progress).await?;
            let path = format!("/conversations/{conversation}/reply");
            // A text's note is the seed's list alone (the number used, who sent it, to whom, the
            // text and, outbound, whether it was delivered): its summary says all of it.
            let mut text = String::new();
            if call.sms.is_none() {
                text = format!(
                    "{message}\nNumber: {}\n",
                    match &job.party {
                        Party::Number(n) => n.clone(),
                        Party::Anonymous { sent: None } => "withheld".to_owned(),
                        Party::Anonymous { sent: Some(sent) } => {
                            format!("{sent} (not a phone number)")
                        }
                    }
                );
                let link = job.voicemail_link()?;
                let listen = job.voicemail_link_text(link.as_ref());
                if !listen.is_empty() {
                    text.push_str(&listen);
                    text.push('\n');
                }
            }
            text.push_str(&tickets::note(&self.rules, call));
            let body = json!({ "message_type": "note", "type": "admin", "admin_id": admin, "body": html(&text) });
            let reply = self.request(Method::POST, &path, Some(&body)).await?;
            if !reply.is_success() {
                return Err(self.refused(&format!("POST {path}"), &reply));
            }
        }
        if !step_done(&progress, "note") {
            progress.done.push("note".to_owned());
            self.save(job, &progress).await?;
        }
        // An inbound text is someone's only on a number with one agent (the seed): on a shared
        // number it leaves a new conversation unassigned and an open one with its assignee.
        let handled = match call.call_type() {
            CallType::SmsInbound => call.agent.is_some(),
            _ => call.outcome == Outcome::Answered || call.direction == Direction::Outbound,
        };
        let mut assigned = String::new();
        if handled && !step_done(&progress, "assign") {
            // After a transfer, the last agent who held the call with an Intercom admin, else
            // the one before (the seed: it stays with the original teammate).
            let mut agent = None;
            for email in call.assignee_emails() {
                agent = self.admin(email).await?;
                if agent.is_some() {
                    break;
                }
            }
            let assignee = agent.clone().unwrap_or_else(|| admin.clone());
            let path = format!("/conversations/{conversation}/parts");
            let body = json!({ "message_type": "assignment", "type": "admin", "admin_id": admin, "assignee_id": assignee });
            let reply = self.request(Method::POST, &path, Some(&body)).await?;
            if !reply.is_success() {
                return Err(self.refused(&format!("POST {path}"), &reply));
            }
            progress.done.push("assign".to_owned());
            self.save(job, &progress).await?;
            assigned = if agent.is_some() {
                ", assigned to the agent".to_owned()
            } else {
                format!(", assigned to {}", self.settings.admin_email)
            };
        }
        for tag in &call.tags {
            let step = format!("tag:{tag}");
            if step_done(&progress, &step) {
                continue;
            }
            let reply = self
                .request(Method::POST, "/tags", Some(&json!({ "name": tag })))
                .await?;
            let id = reply
                .body
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let Some(id) = id.filter(|_| reply.is_success()) else {
                return Err(self.refused("POST /tags", &reply));
            };
            let path = format!("/conversations/{conversation}/tags");
            let reply = self
                .request(
                    Method::POST,
                    &path,
                    Some(&json!({ "id": id, "admin_id": admin })),
                )
                .await?;
            if !reply.is_success() {
                return Err(self.refused(&format!("POST {path}"), &reply));
            }
            progress.done.push(step);
            self.save(job, &progress).await?;
        }
        Ok(Delivered::Ticket {
            id: conversation.clone(),
            detail: format!("logged \"{message}\" in conversation {conversation}{assigned}"),
        })
    }

    async fn save(&self, job: &Job<'_>, progress: &Progress) -> Result<(), HelpdeskError> {
        job.save(progress).await
    }

    /// The contact the call goes to (`Err`: why it is not logged).
    async fn contact(
        &self,
        job: &Job<'_>,
        progress: &mut Progress,
    ) -> Result<Result<String, String>, HelpdeskError> {
        let anonymous = matches!(job.party, Party::Anonymous { .. });
        let (field, value) = match &job.party {
            Party::Number(number) => ("phone", number.clone()),
            Party::Anonymous { .. } => match &self.settings.anonymous_email {
                Some(email) => ("email", email.clone()),
                None => {
                    return Ok(Err(
                        "the number is withheld and anonymous_email is not set, so there is no anonymous lead to log it under".to_owned(),
                    ));
                }
            },
        };
        if let Some(entry) = job.directory_entry().await? {
            let age = Timestamp::now()
                .duration_since(entry.checked_at)
                .unsigned_abs();
            if let (Some(id), true) = (&entry.contact_id, age < CONTACT_FRESH) {
                job.remember_contact(id).await?;
                return Ok(Ok(id.clone()));
            }
        }
        let body = json!({ "query": { "field": field, "operator": "=", "value": value } });
        let reply = self
            .request(Method::POST, "/contacts/search", Some(&body))
            .await?;
        if !reply.is_success() {
            return Err(self.refused("POST /contacts/search", &reply));
        }
        let found: Vec<String> = reply
            .body
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| Some(c.get("id")?.as_str()?.to_owned()))
            .collect();
        let id = match found.len() {
            1 => found.into_iter().next().expect("one"),
            0 => {
                if let Err(skip) = tickets::may_create_contact(&self.rules, anonymous) {
                    return Ok(Err(skip.to_string()));
                }
                let body = match &job.party {
                    Party::Number(number) => {
                        json!({ "role": "lead", "phone": number, "name": format!("{number} New contact") })
                    }
                    Party::Anonymous { .. } => {
                        json!({ "role": "lead", "email": value, "name": "Anonymous contact" })
                    }
                };
                // An earlier attempt's create may have gone through: search lags behind it.
                if progress.contact_sent && progress.looked < LOOKS {
                    progress.looked += 1;
                    self.save(job, progress).await?;
                    return Err(HelpdeskError::Wait {
                        reason: "an earlier attempt may have created the contact; waiting for Intercom's search to show it".to_owned(),
                        after: LAG_WAIT,
                    });
                }
                progress.contact_sent = true;
                self.save(job, progress).await?;
                let reply = self.request(Method::POST, "/contacts", Some(&body)).await?;
                let id = if reply.status.as_u16() == 409 {
                    conflicting_id(&reply)
                } else if reply.is_success() {
                    reply
                        .body
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                } else {
                    return Err(self.refused("POST /contacts", &reply));
                };
                let Some(id) = id else {
                    return Err(self.refused("POST /contacts", &reply));
                };
                id
            }
            n => {
                return Ok(Err(match &job.party {
                    Party::Number(_) => format!(
                        "{n} Intercom contacts have this number; its calls are not logged until only one has it (the Intercom seed)"
                    ),
                    Party::Anonymous { .. } => {
                        format!("{n} Intercom contacts have the anonymous_email {value}; keep one")
                    }
                }));
            }
        };
        job.learn(Some(id.clone()), None, false).await?;
        job.remember_contact(&id).await?;
        if progress.contact_sent {
            progress.contact_sent = false;
            progress.looked = 0;
            self.save(job, progress).await?;
        }
        Ok(Ok(id))
    }

    /// The id of the admin with this e-mail, if any.
    async fn admin(&self, email: &str) -> Result<Option<String>, HelpdeskError> {
        let key = email.to_lowercase();
        {
            let held = self.admins.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((admins, at)) = held.as_ref() {
                if at.elapsed() < ADMINS_FRESH {
                    return Ok(admins.get(&key).cloned());
                }
            }
        }
        let reply = self.request(Method::GET, "/admins", None).await?;
        if !reply.is_success() {
            return Err(self.refused("GET /admins", &reply));
        }
        let admins: HashMap<String, String> = reply
            .body
            .get("admins")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a.get("email")?.as_str()?.to_lowercase(),
                    id_text(a.get("id"))?,
                ))
            })
            .collect();
        let found = admins.get(&key).cloned();
        *self.admins.lock().unwrap_or_else(|e| e.into_inner()) = Some((admins, Instant::now()));
        Ok(found)
    }

    /// The contact's conversations matching `more` (search filters), as listed.
    async fn search(&self, contact: &str, more: Value) -> Result<Vec<Value>, HelpdeskError> {
        let body = json!({
            "query": { "operator": "AND", "value": [
                { "field": "contact_ids", "operator": "=", "value": contact },
                more,
            ]},
            "pagination": { "per_page": 50 },
        });
        let reply = self
            .request(Method::POST, "/conversations/search", Some(&body))
            .await?;
        if !reply.is_success() {
            return Err(self.refused("POST /conversations/search", &reply));
        }
        Ok(reply
            .body
            .get("conversations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The contact's most recently updated open conversation.
    async fn latest_open(&self, contact: &str) -> Result<Option<String>, HelpdeskError> {
        let open = self
            .search(
                contact,
                json!({ "field": "open", "operator": "=", "value": true }),
            )
            .await?;
        Ok(open
            .iter()
            .filter(|c| c.get("state").and_then(Value::as_str) == Some("open"))
            .max_by_key(|c| c.get("updated_at").and_then(Value::as_i64).unwrap_or(0))
            .and_then(|c| id_text(c.get("id"))))
    }

    /// A conversation started for this call by an attempt whose answer was lost: the
    /// contact's, made since that attempt sent it, whose first message is this call's.
    async fn made_for(
        &self,
        contact: &str,
        sent_at: i64,
        message: &str,
    ) -> Result<Option<String>, HelpdeskError> {
        let made = self
            .search(
                contact,
                json!({ "field": "created_at", "operator": ">", "value": sent_at - 1 }),
            )
            .await?;
        Ok(made
            .iter()
            .find(|c| {
                c.pointer("/source/body")
                    .and_then(Value::as_str)
                    .is_some_and(|body| plain(body) == message)
            })
            .and_then(|c| c.get("id"))
            .and_then(|id| id.as_str().map(str::to_owned)))
    }

    /// How many of the contact's messages in the conversation read `message`.
    async fn messages_like(
        &self,
        conversation: &str,
        contact: &str,
        message: &str,
    ) -> Result<usize, HelpdeskError> {
        let path = format!("/conversations/{conversation}");
        let reply = self.request(Method::GET, &path, None).await?;
        if !reply.is_success() {
            return Err(self.refused(&format!("GET {path}"), &reply));
        }
        Ok(reply
            .body
            .pointer("/conversation_parts/conversation_parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|part| {
                part.pointer("/author/id").and_then(Value::as_str) == Some(contact)
                    && part
                        .get("body")
                        .and_then(Value::as_str)
                        .is_some_and(|b| plain(b) == message)
            })
            .count())
    }

    /// Intercom no longer has the contact (deleted, or merged into another): forgotten, and
    /// the caller looked up again.
    async fn contact_gone(&self, job: &Job<'_>, reply: &Reply) -> Result<Delivered, HelpdeskError> {
        job.contact_gone().await?;
        job.save(&Progress {
            kind: "intercom".to_owned(),
            ..Progress::default()
        })
        .await?;
        Err(HelpdeskError::Wait {
            reason: format!(
                "Intercom no longer has the contact ({}); looking the caller up again",
                errors(reply)
            ),
            after: Duration::from_secs(1),
        })
    }

    /// Whether the conversation already has this call's note.
    async fn has_note(&self, conversation: &str, marker: &str) -> Result<bool, HelpdeskError> {
        let path = format!("/conversations/{conversation}");
        let reply = self.request(Method::GET, &path, None).await?;
        if !reply.is_success() {
            return Err(self.refused(&format!("GET {path}"), &reply));
        }
        Ok(reply
            .body
            .pointer("/conversation_parts/conversation_parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|part| {
                part.get("body")
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.contains(marker))
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tickets::tests::call;

    #[test]
    fn the_message_uses_the_seeds_words() {
        let mut missed = call(CallType::Missed);
        assert_eq!(headline(&missed), "Inbound call unanswered");
        missed.reason = Some(MissedReason::OutOfHours);
        assert_eq!(headline(&missed), "Missed call");
        assert_eq!(
            headline(&call(CallType::InboundAnswered)),
            "Inbound call answered"
        );
        assert_eq!(headline(&call(CallType::Voicemail)), "Voicemail");
        assert_eq!(
            headline(&call(CallType::OutboundAnswered)),
            "Outbound call answered"
        );
        assert_eq!(
            headline(&call(CallType::OutboundUnanswered)),
            "Outbound call unanswered"
        );
    }

    #[test]
    fn a_text_is_an_inbound_or_outbound_sms() {
        assert_eq!(headline(&call(CallType::SmsInbound)), "Inbound SMS");
        assert_eq!(headline(&call(CallType::SmsOutbound)), "Outbound SMS");
    }
}
