//! The Zendesk connector (Support API v2), following Zendesk's own recipe for telephony
//! integrations: find the caller's user by phone, create one when allowed, read their tickets
//! for the previous-ticket rule, then create or update a ticket with the call as an internal
//! note.
//!
//! - Users are searched with `phone:<digits>` (`/api/v2/users/search`, Zendesk's documented form,
//!   without `+`), and a result counts only if its phone is the same E.164 number. New users are
//!   made with `create_or_update` and the external id `sipdesk:<E.164>`, so an attempt repeated
//!   after a crash finds the user it made instead of making a second one, whatever the search
//!   index says. Withheld numbers share the user `sipdesk:anonymous` ("Anonymous caller"),
//!   looked up first and created only when `create_unknown_contacts` allows it.
//! - Agents are matched by e-mail (users search, role agent or admin, active); answers are
//!   cached for ten minutes.
//! - Tickets are created with `Idempotency-Key: sipdesk-<integration>-<call id>-<requester id>`
//!   and `external_id: <call id>`; the body is saved before it is sent, so a retry sends the same
//!   body (Zendesk replays its answer) and, past Zendesk's two-hour key lifetime, first looks the
//!   ticket up by external id. An update is recognised on retry by the call's marker in the
//!   ticket's comments. The requester is part of the key because it is the one part of the body
//!   that may change between attempts: when Zendesk says the contact is gone (merged or deleted:
//!   a 422 naming the requester on create, a 404 on their ticket list), the saved request is
//!   dropped, the caller looked up again, and the new body goes out under a new key.
//! - A ticket found closed (422 "closed prevents ticket update") or deleted (404) when updating
//!   gets a follow-up ticket instead (`via_followup_source_id`), as Zendesk itself does.
//! - With `voice_comments`, an answered call with a recording also gets a `voice_comment`
//!   (Zendesk shows a player); the internal note with the fields and the marker is always there.
//! - A voicemail's recording is uploaded (`POST /api/v2/uploads?filename=voicemail-<id>.wav`,
//!   the WAV as the body) and its token attached to the note (`comment.uploads`). The token is
//!   saved with the delivery as soon as Zendesk gives it, and the ticket request that carries it
//!   too, so a retry attaches the same upload instead of sending the file again (an upload
//!   whose answer was lost is sent again; Zendesk drops the unattached one after 60 minutes,
//!   and a saved token older than 50 minutes is not used: a saved ticket request keeps when its
//!   upload was made, and one replayed later uploads the file again and attaches the new token).
//!   A recording that is gone fails the delivery for good. One larger than Zendesk takes
//!   ([`MAX_UPLOAD`], 50 MB, checked before sending; or a 413) is not attached: the note says a
//!   voicemail was left, its length, the signed link when `[media] public_url` is set, and that
//!   the file was too large (with a warning in the log). With `voice_comments` the
//!   voicemail is a voice comment instead, whose `recording_url` is a signed link to sipdesk;
//!   without `[media] public_url` there is no link, and the file is attached as without
//!   `voice_comments` (a configuration that was valid before voicemails stays valid).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use reqwest::header::HeaderMap;

use self::rules::{
    Assignee, AssigneeId, Plan, Status, TicketSummary, TicketWrite, VoiceComment, ZendeskRules,
};
use super::http::{Announced, Credentials, Http, Reply, Vendor, error_message, header_number};
use super::{Attachable, Delivered, HelpdeskError, Job, Party};
use crate::call::Outcome;
use crate::config::{HelpdeskSettings, Secret, ZendeskAuth, ZendeskSettings};
use crate::phone::{self, Caller, Region};
use crate::recordings;
use crate::store::tags::Retag;
use crate::tickets::{self, Log, Rules};

pub mod events;
pub mod rules;

/// The external id of the user withheld numbers are logged under.
const ANONYMOUS_USER: &str = "sipdesk:anonymous";

/// How long an agent's e-mail → user answer is trusted.
const AGENT_CACHE: Duration = Duration::from_secs(600);
/// How long a contact from the directory is used before Zendesk is asked again whether it still
/// exists and is active.
const CONTACT_FRESH: Duration = Duration::from_secs(24 * 3600);

/// A Zendesk integration.
pub struct Zendesk {
    http: Http,
    name: String,
    rules: Rules,
    zendesk: ZendeskRules,
    region: Region,
    agents: Mutex<HashMap<String, (Option<u64>, Instant)>>,
}

/// The request a delivery is about to send, saved before it is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Pending {
    /// `uploaded_at`: when the upload whose token the body carries was made (absent in requests
    /// saved before it was kept, which are then taken as too old).
    Create {
        body: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uploaded_at: Option<Timestamp>,
    },
    /// `fallback`: the ticket to create if this one turns out closed or deleted.
    Update {
        ticket: u64,
        body: Value,
        fallback: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uploaded_at: Option<Timestamp>,
    },
    /// The voicemail was uploaded (`at`) and its token is waiting for the ticket's comment.
    Uploaded { token: String, at: Timestamp },
}

/// How long after its upload a token is used; Zendesk keeps an unattached upload for 60 minutes.
const UPLOAD_FRESH: Duration = Duration::from_secs(50 * 60);

/// The largest file Zendesk takes as an attachment: 50 MB (counted here in decimal megabytes,
/// the smaller reading). A larger recording is not sent: the note says a voicemail was left.
pub const MAX_UPLOAD: u64 = 50_000_000;

/// Whether a token uploaded at `at` may still be attached.
fn fresh(at: Option<Timestamp>) -> bool {
    at.is_some_and(|at| {
        Timestamp::now().duration_since(at).as_secs() < UPLOAD_FRESH.as_secs() as i64
    })
}

/// Whether a saved ticket body attaches an upload.
fn has_upload(body: &Value) -> bool {
    body.pointer("/ticket/comment/uploads")
        .and_then(Value::as_array)
        .is_some_and(|tokens| !tokens.is_empty())
}

/// A saved ticket body made to attach `token` instead of the upload it named; `None`: to attach
/// nothing, its note saying why (`instead`).
fn reattach(body: &mut Value, token: Option<&str>, instead: &str) {
    let Some(comment) = body.pointer_mut("/ticket/comment") else {
        return;
    };
    match token {
        Some(token) => comment["uploads"] = json!([token]),
        None => {
            if let Some(comment) = comment.as_object_mut() {
                comment.remove("uploads");
            }
            if !instead.is_empty() {
                let note = comment["body"].as_str().unwrap_or_default().to_owned();
                comment["body"] = json!(super::before_marker(&note, instead));
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct User {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    suspended: bool,
}

fn yes() -> bool {
    true
}

impl User {
    fn inactive(&self) -> bool {
        !self.active || self.suspended
    }
}

#[derive(Debug, Deserialize)]
struct Ticket {
    id: u64,
    status: String,
    created_at: Timestamp,
    #[serde(default)]
    tags: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(
    reply: &Reply,
    key: &str,
    what: &str,
) -> Result<T, HelpdeskError> {
    let value = reply.body.get(key).cloned().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| HelpdeskError::Retry {
        reason: format!(
            "{what}: unexpected answer ({e}): {}",
            error_message(&reply.body)
        ),
        after: None,
    })
}

fn rejected(what: &str, reply: &Reply) -> HelpdeskError {
    HelpdeskError::Permanent(format!(
        "{what}: Zendesk refused it ({} {})",
        reply.status.as_u16(),
        error_message(&reply.body)
    ))
}

/// A 409 (simultaneous writes to one record) is worth another try.
fn conflict_or_rejected(what: &str, reply: &Reply) -> HelpdeskError {
    if reply.status.as_u16() == 409 {
        HelpdeskError::Retry {
            reason: format!("{what}: conflict (409 {})", error_message(&reply.body)),
            after: None,
        }
    } else {
        rejected(what, reply)
    }
}

/// The request JSON for a ticket write: a new ticket when `requester` is given, else an update
/// (whose tags are added to the ticket's with `additional_tags`, where `tags` would replace
/// them).
fn ticket_body(write: &TicketWrite, requester: Option<u64>, answered_by: Option<u64>) -> Value {
    let mut ticket = serde_json::Map::new();
    if let Some(subject) = &write.subject {
        ticket.insert("subject".into(), json!(subject));
    }
    let mut comment = json!({ "body": write.note, "public": write.public });
    if let Some(author) = write.author {
        comment["author_id"] = json!(author);
    }
    if !write.uploads.is_empty() {
        comment["uploads"] = json!(write.uploads);
    }
    ticket.insert("comment".into(), comment);
    if let Some(status) = write.status {
        ticket.insert("status".into(), json!(status.as_str()));
    }
    let tags = if requester.is_some() {
        "tags"
    } else {
        "additional_tags"
    };
    ticket.insert(tags.into(), json!(write.tags));
    if let Some(requester) = requester {
        ticket.insert("requester_id".into(), json!(requester));
        ticket.insert("external_id".into(), json!(write.external_id));
    }
    if let Some(closed) = write.followup {
        ticket.insert("via_followup_source_id".into(), json!(closed));
    }
    match write.assignee {
        Some(AssigneeId::User(id)) => {
            ticket.insert("assignee_id".into(), json!(id));
        }
        Some(AssigneeId::Group(id)) => {
            ticket.insert("group_id".into(), json!(id));
        }
        None => {}
    }
    if let Some(t) = write.ticket_type {
        ticket.insert("type".into(), json!(t.as_str()));
    }
    if let Some(p) = write.priority {
        ticket.insert("priority".into(), json!(p.as_str()));
    }
    if let Some(voice) = &write.voice {
        let mut comment = json!({
            "from": voice.from,
            "to": voice.to,
            "recording_url": voice.recording_url,
            "started_at": voice.started_at.to_string(),
            "call_duration": voice.call_duration,
        });
        if let Some(agent) = answered_by {
            comment["answered_by_id"] = json!(agent);
        }
        ticket.insert("voice_comment".into(), comment);
    }
    json!({ "ticket": ticket })
}

/// What a ticket write carries of a voicemail.
enum VoicemailPart {
    None,
    /// The token of the uploaded recording (uploaded `at`), attached to the note.
    Upload {
        token: String,
        at: Timestamp,
    },
    /// A voice comment playing the recording from its signed link.
    Voice(VoiceComment),
    /// Lines for the note instead of a recording too large to attach.
    TooLarge(String),
}

/// What uploading the recording came to.
enum Uploaded {
    /// The call has no recording.
    Nothing,
    Token {
        token: String,
        at: Timestamp,
    },
    /// Too large for Zendesk: lines for the note instead.
    TooLarge(String),
}

impl VoicemailPart {
    fn apply(&self, plan: Plan) -> Plan {
        let add = |mut write: TicketWrite| {
            match self {
                VoicemailPart::None => {}
                VoicemailPart::Upload { token, .. } => write.uploads = vec![token.clone()],
                VoicemailPart::Voice(voice) => write.voice = Some(voice.clone()),
                VoicemailPart::TooLarge(text) => {
                    write.note = super::before_marker(&write.note, text)
                }
            }
            write
        };
        match plan {
            Plan::Create(write) => Plan::Create(add(write)),
            Plan::Update { ticket, write } => Plan::Update {
                ticket,
                write: add(write),
            },
        }
    }
}

/// Zendesk's rate-limit headers: `X-Rate-Limit` (the account's limit per minute) and, when
/// `X-Rate-Limit-Remaining` is 0, `ratelimit-reset` (seconds until the window resets).
fn rate_headers(headers: &HeaderMap) -> Announced {
    let exhausted = header_number(headers, "x-rate-limit-remaining") == Some(0);
    Announced {
        per_minute: header_number(headers, "x-rate-limit"),
        wait: header_number(headers, "ratelimit-reset")
            .filter(|_| exhausted)
            .map(|reset| Duration::from_secs(u64::from(reset))),
    }
}

impl Zendesk {
    pub fn new(
        settings: &HelpdeskSettings,
        zendesk: &ZendeskSettings,
        secret: &Secret,
        region: Region,
    ) -> Result<Zendesk, String> {
        let credentials = match &zendesk.auth {
            ZendeskAuth::Token { email } => Credentials::Basic {
                user: format!("{email}/token"),
                password: secret.clone(),
            },
            ZendeskAuth::OAuth => Credentials::Bearer(secret.clone()),
        };
        let http = Http::new(
            &settings.name,
            &zendesk.base_url,
            Vendor {
                credentials,
                rate_headers,
                json_answers: true,
                pass_through: &[],
                write_weight: 1,
            },
            settings.requests_per_minute,
            settings.request_timeout,
        )?;
        Ok(Zendesk {
            http,
            name: settings.name.clone(),
            rules: settings.rules.clone(),
            zendesk: zendesk.rules.clone(),
            region,
            agents: Mutex::new(HashMap::new()),
        })
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Reply, HelpdeskError> {
        let url = self.http.url(path, query)?;
        self.http.send(Method::GET, url, None, &[]).await
    }

    /// Tags added or removed after the call: the ticket tags their tag rules give (the rules in
    /// force now), added to or removed from the call's ticket — tags without a rule change
    /// nothing, as at the call, and a ticket tag another of the call's tags still gives stays.
    /// Type and priority are set at the call only. Like the call's own update, this uses the
    /// ticket's `additional_tags` / `remove_tags`, which leave every other tag as it is.
    pub async fn retag(&self, retag: &Retag, ticket: &str) -> Result<Delivered, HelpdeskError> {
        let ticket_tags = |tags: &[String]| -> Vec<String> {
            self.zendesk
                .tag_rules
                .iter()
                .filter(|rule| tags.contains(&rule.tag))
                .flat_map(|rule| rule.ticket_tags.iter().cloned())
                .collect()
        };
        // A ticket tag another of the call's tags still gives stays.
        let still = ticket_tags(&retag.tags);
        let remove: Vec<String> = ticket_tags(&retag.removed)
            .into_iter()
            .filter(|t| !still.contains(t))
            .collect();
        let add: Vec<String> = ticket_tags(&retag.added)
            .into_iter()
            .filter(|t| !remove.contains(t))
            .collect();
        if add.is_empty() && remove.is_empty() {
            return Ok(Delivered::Ticket {
                id: ticket.to_owned(),
                detail:
                    "no tag rule gives ticket tags for these call tags: the ticket is unchanged"
                        .to_owned(),
            });
        }
        let path = format!("/api/v2/tickets/{ticket}.json");
        let url = self.http.url(&path, &[])?;
        let body = json!({ "ticket": { "additional_tags": add, "remove_tags": remove } });
        let reply = self.http.send(Method::PUT, url, Some(&body), &[]).await?;
        if !reply.is_success() {
            return Err(conflict_or_rejected(&format!("PUT {path}"), &reply));
        }
        Ok(Delivered::Ticket {
            id: ticket.to_owned(),
            detail: format!(
                "ticket #{ticket}: tags {}",
                add.iter()
                    .map(|t| format!("+{t}"))
                    .chain(remove.iter().map(|t| format!("-{t}")))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        })
    }

    /// Carries out one delivery.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
        let call = job.call;
        let mut uploaded = None;
        if let Some(text) = &job.delivery.request {
            match serde_json::from_str::<Pending>(text) {
                Ok(Pending::Create {
                    mut body,
                    uploaded_at,
                }) => {
                    if let Some(id) = self.ticket_by_external_id(&call.id).await? {
                        return Ok(Delivered::Ticket {
                            id: id.to_string(),
                            detail: format!("created ticket #{id}"),
                        });
                    }
                    let uploaded_at = self
                        .refresh_upload(job, &mut body, None, uploaded_at)
                        .await?;
                    return self.create_with(job, &body, uploaded_at).await;
                }
                Ok(Pending::Update {
                    ticket,
                    mut body,
                    mut fallback,
                    uploaded_at,
                }) => {
                    if self.has_note(ticket, &tickets::marker(&call.id)).await? {
                        return Ok(Delivered::Ticket {
                            id: ticket.to_string(),
                            detail: format!("added the call to ticket #{ticket}"),
                        });
                    }
                    let refreshed = self
                        .refresh_upload(job, &mut body, Some(&mut fallback), uploaded_at)
                        .await?;
                    if refreshed != uploaded_at {
                        self.save(
                            job,
                            &Pending::Update {
                                ticket,
                                body: body.clone(),
                                fallback: fallback.clone(),
                                uploaded_at: refreshed,
                            },
                        )
                        .await?;
                    }
                    return self.update(job, ticket, &body, fallback, refreshed).await;
                }
                Ok(Pending::Uploaded { token, at }) => {
                    if fresh(Some(at)) {
                        uploaded = Some((token, at));
                    }
                }
                Err(e) => {
                    tracing::warn!(delivery = %job.delivery.id, error = %e, "ignoring an unreadable saved request")
                }
            }
        }
        let Some(requester) = self.contact(job).await? else {
            let anonymous = matches!(job.party, Party::Anonymous { .. });
            return Ok(Delivered::Skipped(
                tickets::Skip::UnknownContact { anonymous }.to_string(),
            ));
        };
        let previous = if tickets::log_of(&self.rules, call) == Log::Previous {
            let tickets = self.requested_tickets(job, requester).await?;
            if call.sms.is_some() {
                rules::sms_ticket(&tickets).cloned()
            } else {
                rules::previous_ticket(&tickets).cloned()
            }
        } else {
            None
        };
        let assignee = self
            .assignee(&rules::assignee_candidates(&self.zendesk, call))
            .await?;
        // The voice comment names the agent who answered (before any transfer), never a
        // fallback assignee.
        let answered_by = match (call.outcome, call.answered_by_email()) {
            (Outcome::Answered, Some(email)) => self.agent(email).await?,
            _ => None,
        };
        let mut note_call = call.clone();
        if let Party::Anonymous { sent: Some(sent) } = &job.party {
            // The note says what the PBX sent when it was not a number.
            note_call.caller = format!("{sent} (not a phone number)");
        }
        let voicemail = self.voicemail(job, uploaded).await?;
        let uploaded_at = match &voicemail {
            VoicemailPart::Upload { at, .. } => Some(*at),
            _ => None,
        };
        let plan = rules::plan(
            &self.rules,
            &self.zendesk,
            &note_call,
            previous.as_ref(),
            assignee,
        )
        .authored_by(requester);
        match voicemail.apply(plan) {
            Plan::Create(write) => {
                let body = ticket_body(&write, Some(requester), answered_by);
                self.create_with(job, &body, uploaded_at).await
            }
            Plan::Update { ticket, write } => {
                let body = ticket_body(&write, None, answered_by);
                let fallback = match voicemail.apply(
                    rules::plan(&self.rules, &self.zendesk, &note_call, None, assignee)
                        .authored_by(requester),
                ) {
                    Plan::Create(write) => ticket_body(&write, Some(requester), answered_by),
                    Plan::Update { .. } => unreachable!("no previous ticket, no update"),
                };
                self.save(
                    job,
                    &Pending::Update {
                        ticket,
                        body: body.clone(),
                        fallback: fallback.clone(),
                        uploaded_at,
                    },
                )
                .await?;
                self.update(job, ticket, &body, fallback, uploaded_at).await
            }
        }
    }

    /// What the ticket carries of the call's voicemail: the recording uploaded (or the token an
    /// earlier attempt got, `uploaded`), or with `voice_comments` a voice comment that plays it
    /// from a signed link; for a recording larger than Zendesk takes, lines in the note instead.
    async fn voicemail(
        &self,
        job: &Job<'_>,
        uploaded: Option<(String, Timestamp)>,
    ) -> Result<VoicemailPart, HelpdeskError> {
        let call = job.call;
        let Some(voicemail) = &call.voicemail else {
            return Ok(VoicemailPart::None);
        };
        // Without `[media] public_url` there is no link to play: the file is attached instead
        // (the delivery worker warns at start).
        let link = if self.zendesk.voice_comments {
            job.voicemail_link()?
        } else {
            None
        };
        if let Some(link) = link {
            return Ok(VoicemailPart::Voice(VoiceComment {
                from: call.caller.clone(),
                to: call.callee.clone(),
                recording_url: link.url,
                started_at: call.started_at,
                call_duration: voicemail.duration_ms.div_ceil(1000),
            }));
        }
        if let Some((token, at)) = uploaded {
            return Ok(VoicemailPart::Upload { token, at });
        }
        Ok(match self.upload(job).await? {
            Uploaded::Nothing => VoicemailPart::None,
            Uploaded::Token { token, at } => VoicemailPart::Upload { token, at },
            Uploaded::TooLarge(text) => VoicemailPart::TooLarge(text),
        })
    }

    /// Uploads the call's recording (when Zendesk takes its size) and saves the token.
    async fn upload(&self, job: &Job<'_>) -> Result<Uploaded, HelpdeskError> {
        let audio = match job.voicemail_within(MAX_UPLOAD, "Zendesk").await? {
            Attachable::None => return Ok(Uploaded::Nothing),
            Attachable::TooLarge { size } => {
                return Ok(Uploaded::TooLarge(job.too_large_text(
                    size,
                    Some(MAX_UPLOAD),
                    "Zendesk",
                )?));
            }
            Attachable::Audio(audio) => audio,
        };
        let size = audio.bytes.len();
        let url = self
            .http
            .url("/api/v2/uploads.json", &[("filename", &audio.file_name)])?;
        let reply = self
            .http
            .send_bytes(
                Method::POST,
                url,
                audio.bytes.into(),
                recordings::CONTENT_TYPE,
                &[],
            )
            .await?;
        if reply.status.as_u16() == 413 {
            // The account takes less than the documented limit: the note goes without the file.
            tracing::warn!(
                delivery = %job.delivery.id,
                size,
                "POST /api/v2/uploads: Zendesk refused the voicemail as too large (413 {}); the note says a voicemail was left, without the file",
                error_message(&reply.body)
            );
            return Ok(Uploaded::TooLarge(job.too_large_text(
                size as u64,
                None,
                "Zendesk",
            )?));
        }
        if !reply.is_success() {
            return Err(conflict_or_rejected("POST /api/v2/uploads", &reply));
        }
        let Some(token) = reply
            .body
            .pointer("/upload/token")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err(HelpdeskError::Retry {
                reason: format!(
                    "POST /api/v2/uploads: no upload token in the answer: {}",
                    error_message(&reply.body)
                ),
                after: None,
            });
        };
        let at = Timestamp::now();
        self.save(
            job,
            &Pending::Uploaded {
                token: token.clone(),
                at,
            },
        )
        .await?;
        Ok(Uploaded::Token { token, at })
    }

    /// A saved ticket request whose upload may have expired (uploaded at `uploaded_at`, more
    /// than [`UPLOAD_FRESH`] ago, or when unknown): the recording is uploaded again and the
    /// body (and `fallback`) made to attach the new token, or, when it cannot be attached any
    /// more, to say so in the note. Returns when the upload the bodies now carry was made.
    async fn refresh_upload(
        &self,
        job: &Job<'_>,
        body: &mut Value,
        fallback: Option<&mut Value>,
        uploaded_at: Option<Timestamp>,
    ) -> Result<Option<Timestamp>, HelpdeskError> {
        if !has_upload(body) || fresh(uploaded_at) {
            return Ok(uploaded_at);
        }
        tracing::info!(delivery = %job.delivery.id, "the saved request's upload is too old to attach: uploading the voicemail again");
        let (token, at, instead) = match self.upload(job).await? {
            Uploaded::Token { token, at } => (Some(token), Some(at), String::new()),
            Uploaded::TooLarge(text) => (None, None, text),
            Uploaded::Nothing => (None, None, String::new()),
        };
        reattach(body, token.as_deref(), &instead);
        if let Some(fallback) = fallback {
            reattach(fallback, token.as_deref(), &instead);
        }
        Ok(at)
    }

    async fn save(&self, job: &Job<'_>, pending: &Pending) -> Result<(), HelpdeskError> {
        let text = serde_json::to_string(pending)
            .map_err(|e| HelpdeskError::Permanent(format!("cannot write the request: {e}")))?;
        job.remember_request(Some(&text)).await
    }

    /// The idempotency key of a call's ticket on this integration, for this requester.
    fn idempotency_key(&self, call_id: &str, body: &Value) -> String {
        match body["ticket"]["requester_id"].as_u64() {
            Some(requester) => format!("sipdesk-{}-{call_id}-{requester}", self.name),
            None => format!("sipdesk-{}-{call_id}", self.name),
        }
    }

    /// The requester Zendesk no longer has: forgotten, so the next attempt looks the caller up
    /// again (and sends its ticket under a new idempotency key).
    async fn requester_gone(&self, job: &Job<'_>, what: &str, reply: &Reply) -> HelpdeskError {
        if let Err(e) = job.contact_gone().await {
            return e;
        }
        HelpdeskError::Retry {
            reason: format!(
                "{what}: the contact is no longer in Zendesk ({}); looking the caller up again",
                error_message(&reply.body)
            ),
            after: None,
        }
    }

    /// Saves the request (with when its upload was made), then creates the ticket.
    async fn create_with(
        &self,
        job: &Job<'_>,
        body: &Value,
        uploaded_at: Option<Timestamp>,
    ) -> Result<Delivered, HelpdeskError> {
        self.save(
            job,
            &Pending::Create {
                body: body.clone(),
                uploaded_at,
            },
        )
        .await?;
        self.create(job, body).await
    }

    async fn create(&self, job: &Job<'_>, body: &Value) -> Result<Delivered, HelpdeskError> {
        let url = self.http.url("/api/v2/tickets.json", &[])?;
        let key = self.idempotency_key(&job.call.id, body);
        let reply = self
            .http
            .send(Method::POST, url, Some(body), &[("Idempotency-Key", &key)])
            .await?;
        if reply.is_success() {
            let ticket: Ticket = parse(&reply, "ticket", "POST /api/v2/tickets")?;
            let replayed = reply.header("x-idempotency-lookup") == Some("hit");
            let detail = match body["ticket"].get("via_followup_source_id") {
                Some(closed) => format!(
                    "ticket #{closed} was closed: created follow-up ticket #{}",
                    ticket.id
                ),
                None => format!("created ticket #{}", ticket.id),
            };
            tracing::debug!(ticket = ticket.id, replayed, "ticket created");
            return Ok(Delivered::Ticket {
                id: ticket.id.to_string(),
                detail,
            });
        }
        if reply.status.as_u16() == 400
            && reply.body.get("error").and_then(Value::as_str) == Some("IdempotentRequestError")
        {
            // The key was used with another body: the ticket exists if the first request made it.
            if let Some(id) = self.ticket_by_external_id(&job.call.id).await? {
                return Ok(Delivered::Ticket {
                    id: id.to_string(),
                    detail: format!("created ticket #{id}"),
                });
            }
        }
        if reply.status.as_u16() == 422 && reply.body.pointer("/details/requester").is_some() {
            // The user the directory gave was merged or deleted since.
            return Err(self
                .requester_gone(job, "POST /api/v2/tickets", &reply)
                .await);
        }
        Err(conflict_or_rejected("POST /api/v2/tickets", &reply))
    }

    async fn update(
        &self,
        job: &Job<'_>,
        ticket: u64,
        body: &Value,
        fallback: Value,
        uploaded_at: Option<Timestamp>,
    ) -> Result<Delivered, HelpdeskError> {
        let path = format!("/api/v2/tickets/{ticket}.json");
        let url = self.http.url(&path, &[])?;
        let reply = self.http.send(Method::PUT, url, Some(body), &[]).await?;
        if reply.is_success() {
            let status = body["ticket"]["status"].as_str().unwrap_or("updated");
            return Ok(Delivered::Ticket {
                id: ticket.to_string(),
                detail: format!("added the call to ticket #{ticket} ({status})"),
            });
        }
        let closed = reply.status.as_u16() == 422
            && error_message(&reply.body).to_lowercase().contains("closed");
        if closed || reply.status.as_u16() == 404 {
            // A closed ticket takes no more comments: the call starts a follow-up ticket.
            let mut body = fallback;
            if closed {
                body["ticket"]["via_followup_source_id"] = json!(ticket);
            }
            return self.create_with(job, &body, uploaded_at).await;
        }
        Err(conflict_or_rejected(&format!("PUT {path}"), &reply))
    }

    /// The ticket created for a call, found by its external id.
    async fn ticket_by_external_id(&self, call_id: &str) -> Result<Option<u64>, HelpdeskError> {
        let reply = self
            .get("/api/v2/tickets.json", &[("external_id", call_id)])
            .await?;
        if !reply.is_success() {
            return Err(rejected("GET /api/v2/tickets?external_id", &reply));
        }
        let tickets: Vec<Value> = parse(&reply, "tickets", "GET /api/v2/tickets?external_id")?;
        Ok(tickets
            .iter()
            .filter(|t| t.get("external_id").and_then(Value::as_str) == Some(call_id))
            .filter_map(|t| t.get("id").and_then(Value::as_u64))
            .min())
    }

    /// Whether a ticket has the note marked `marker` (its most recent 100 comments).
    async fn has_note(&self, ticket: u64, marker: &str) -> Result<bool, HelpdeskError> {
        let path = format!("/api/v2/tickets/{ticket}/comments.json");
        let reply = self
            .get(&path, &[("sort_order", "desc"), ("per_page", "100")])
            .await?;
        if reply.status.as_u16() == 404 {
            return Ok(false);
        }
        if !reply.is_success() {
            return Err(rejected(&format!("GET {path}"), &reply));
        }
        let comments: Vec<Value> = parse(&reply, "comments", &format!("GET {path}"))?;
        Ok(comments.iter().any(|c| {
            c.get("body")
                .and_then(Value::as_str)
                .is_some_and(|b| b.contains(marker))
        }))
    }

    /// The party's Zendesk user, found or (when the rules allow) created; `None` when there is
    /// none and none may be made.
    async fn contact(&self, job: &Job<'_>) -> Result<Option<u64>, HelpdeskError> {
        if let Some(id) = job
            .delivery
            .contact_id
            .as_ref()
            .and_then(|id| id.parse().ok())
        {
            return Ok(Some(id));
        }
        if let Some(entry) = job.directory_entry().await? {
            if let Some(id) = entry
                .contact_id
                .as_ref()
                .and_then(|id| id.parse::<u64>().ok())
            {
                let age = Timestamp::now().duration_since(entry.checked_at);
                if age.as_secs() < CONTACT_FRESH.as_secs() as i64 {
                    job.remember_contact(&id.to_string()).await?;
                    return Ok(Some(id));
                }
                if let Some(user) = self.user(id).await? {
                    job.learn(Some(id.to_string()), user.name.clone(), user.inactive())
                        .await?;
                    job.remember_contact(&id.to_string()).await?;
                    return Ok(Some(id));
                }
                job.forget().await?;
            }
        }
        let found = match &job.party {
            Party::Number(number) => self.user_by_phone(number).await?,
            Party::Anonymous { .. } => self.user_by_external_id(ANONYMOUS_USER).await?,
        };
        let user = match found {
            Some(user) => user,
            None => {
                let anonymous = matches!(job.party, Party::Anonymous { .. });
                if tickets::may_create_contact(&self.rules, anonymous).is_err() {
                    job.learn(None, None, false).await?;
                    return Ok(None);
                }
                self.create_user(&job.party).await?
            }
        };
        job.learn(
            Some(user.id.to_string()),
            user.name.clone(),
            user.inactive(),
        )
        .await?;
        job.remember_contact(&user.id.to_string()).await?;
        Ok(Some(user.id))
    }

    async fn user(&self, id: u64) -> Result<Option<User>, HelpdeskError> {
        let path = format!("/api/v2/users/{id}.json");
        let reply = self.get(&path, &[]).await?;
        match reply.status.as_u16() {
            404 => Ok(None),
            _ if reply.is_success() => Ok(Some(parse(&reply, "user", &format!("GET {path}"))?)),
            _ => Err(rejected(&format!("GET {path}"), &reply)),
        }
    }

    /// The user whose phone is this number: an active end user first, the oldest among equals.
    async fn user_by_phone(&self, number: &str) -> Result<Option<User>, HelpdeskError> {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let query = format!("phone:{digits}");
        let reply = self
            .get("/api/v2/users/search.json", &[("query", &query)])
            .await?;
        if !reply.is_success() {
            return Err(rejected("GET /api/v2/users/search", &reply));
        }
        let users: Vec<User> = parse(&reply, "users", "GET /api/v2/users/search")?;
        let same = |user: &User| {
            user.phone
                .as_deref()
                .is_some_and(|p| matches!(phone::normalize(p, self.region), Ok(Caller::Number(n)) if n.to_string() == number))
        };
        Ok(users
            .into_iter()
            .filter(same)
            .min_by_key(|u| (u.inactive(), u.role.as_deref() != Some("end-user"), u.id)))
    }

    /// The user sipdesk made with this external id, if any.
    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<User>, HelpdeskError> {
        let reply = self
            .get("/api/v2/users/search.json", &[("external_id", external_id)])
            .await?;
        if !reply.is_success() {
            return Err(rejected("GET /api/v2/users/search?external_id", &reply));
        }
        let users: Vec<User> = parse(&reply, "users", "GET /api/v2/users/search?external_id")?;
        Ok(users.into_iter().min_by_key(|u| u.id))
    }

    async fn create_user(&self, party: &Party) -> Result<User, HelpdeskError> {
        let user = match party {
            Party::Number(number) => {
                let shown = phone::international(number).unwrap_or_else(|| number.clone());
                json!({ "user": { "name": format!("Caller {shown}"), "phone": number, "external_id": format!("sipdesk:{number}") } })
            }
            Party::Anonymous { .. } => {
                json!({ "user": { "name": "Anonymous caller", "external_id": ANONYMOUS_USER } })
            }
        };
        let url = self.http.url("/api/v2/users/create_or_update.json", &[])?;
        let reply = self.http.send(Method::POST, url, Some(&user), &[]).await?;
        if !reply.is_success() {
            return Err(conflict_or_rejected(
                "POST /api/v2/users/create_or_update",
                &reply,
            ));
        }
        parse(&reply, "user", "POST /api/v2/users/create_or_update")
    }

    /// The contact's tickets, most recent first (the latest 100).
    async fn requested_tickets(
        &self,
        job: &Job<'_>,
        user: u64,
    ) -> Result<Vec<TicketSummary>, HelpdeskError> {
        let path = format!("/api/v2/users/{user}/tickets/requested.json");
        let reply = self
            .get(
                &path,
                &[
                    ("sort_by", "created_at"),
                    ("sort_order", "desc"),
                    ("per_page", "100"),
                ],
            )
            .await?;
        if reply.status.as_u16() == 404 {
            // The user the directory gave was merged or deleted since.
            return Err(self
                .requester_gone(job, &format!("GET {path}"), &reply)
                .await);
        }
        if !reply.is_success() {
            return Err(rejected(&format!("GET {path}"), &reply));
        }
        let tickets: Vec<Ticket> = parse(&reply, "tickets", &format!("GET {path}"))?;
        Ok(tickets
            .into_iter()
            .filter_map(|t| {
                Some(TicketSummary {
                    id: t.id,
                    status: Status::parse(&t.status)?,
                    created_at: t.created_at,
                    tags: t.tags,
                })
            })
            .collect())
    }

    /// The first candidate Zendesk knows: an agent by e-mail, or a group as is.
    async fn assignee(&self, candidates: &[Assignee]) -> Result<Option<AssigneeId>, HelpdeskError> {
        for candidate in candidates {
            match candidate {
                Assignee::Group(id) => return Ok(Some(AssigneeId::Group(*id))),
                Assignee::User(email) => {
                    if let Some(id) = self.agent(email).await? {
                        return Ok(Some(AssigneeId::User(id)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The active agent (or admin) with this e-mail.
    async fn agent(&self, email: &str) -> Result<Option<u64>, HelpdeskError> {
        let key = email.to_lowercase();
        if let Some((id, at)) = self
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if at.elapsed() < AGENT_CACHE {
                return Ok(*id);
            }
        }
        let query = format!("email:{email}");
        let reply = self
            .get("/api/v2/users/search.json", &[("query", &query)])
            .await?;
        if !reply.is_success() {
            return Err(rejected("GET /api/v2/users/search", &reply));
        }
        let users: Vec<User> = parse(&reply, "users", "GET /api/v2/users/search")?;
        let id = users
            .iter()
            .filter(|u| {
                u.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .filter(|u| matches!(u.role.as_deref(), Some("agent" | "admin")) && !u.inactive())
            .map(|u| u.id)
            .min();
        if id.is_none() {
            tracing::info!(integration = %self.name, %email, "no active Zendesk agent has this e-mail");
        }
        self.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (id, Instant::now()));
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::rules::{Priority, TicketType};
    use super::*;

    fn write() -> TicketWrite {
        TicketWrite {
            subject: Some("Call from +34911239613".to_owned()),
            note: "Call from +34911239613\n[sipdesk:c1]".to_owned(),
            status: Some(Status::Solved),
            assignee: Some(AssigneeId::User(7)),
            tags: vec!["sipdesk".to_owned()],
            ticket_type: Some(TicketType::Question),
            priority: Some(Priority::High),
            voice: None,
            uploads: Vec::new(),
            external_id: "c1".to_owned(),
            public: false,
            author: None,
            followup: None,
        }
    }

    #[test]
    fn a_new_ticket_names_its_requester_and_call_and_an_update_does_not() {
        let created = ticket_body(&write(), Some(42), None);
        assert_eq!(
            created,
            json!({"ticket": {
                "subject": "Call from +34911239613",
                "comment": {"body": "Call from +34911239613\n[sipdesk:c1]", "public": false},
                "status": "solved", "tags": ["sipdesk"], "requester_id": 42, "external_id": "c1",
                "assignee_id": 7, "type": "question", "priority": "high"
            }})
        );
        let mut update = write();
        update.subject = None;
        update.assignee = Some(AssigneeId::Group(5));
        let updated = ticket_body(&update, None, None);
        assert!(updated["ticket"].get("requester_id").is_none());
        assert!(updated["ticket"].get("external_id").is_none());
        assert!(updated["ticket"].get("subject").is_none());
        assert_eq!(updated["ticket"]["group_id"], json!(5));
        // An update adds its tags to the ticket's instead of replacing them.
        assert!(updated["ticket"].get("tags").is_none());
        assert_eq!(updated["ticket"]["additional_tags"], json!(["sipdesk"]));
        // No status: the ticket keeps its own.
        update.status = None;
        let updated = ticket_body(&update, None, None);
        assert!(updated["ticket"].get("status").is_none());
    }

    #[test]
    fn a_voice_comment_goes_with_the_note() {
        let mut w = write();
        w.voice = Some(VoiceComment {
            from: "+34911239613".to_owned(),
            to: "900".to_owned(),
            recording_url: "https://pbx/r.wav".to_owned(),
            started_at: "2026-03-02T09:00:00Z".parse().unwrap(),
            call_duration: 195,
        });
        let body = ticket_body(&w, Some(42), Some(7));
        assert_eq!(
            body["ticket"]["voice_comment"],
            json!({"from": "+34911239613", "to": "900", "recording_url": "https://pbx/r.wav",
                   "started_at": "2026-03-02T09:00:00Z", "call_duration": 195, "answered_by_id": 7})
        );
        assert_eq!(body["ticket"]["comment"]["public"], json!(false));
    }
}
