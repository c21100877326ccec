//! A fake Zendesk Support API v2 for the tests and the delivery benchmark: the endpoints sipdesk
//! uses, with Zendesk's published behaviour (developer.zendesk.com API reference and OpenAPI
//! file). Marked [observed] where Zendesk does not document a body and the fake answers what
//! real responses quoted by client libraries show.
//!
//! - Authentication on every request: `{email}/token:{token}` basic or a bearer token; anything
//!   else is 401 `{"error":"Couldn't authenticate you"}` [observed].
//! - Rate limit: at most `rate_limit` requests in any 60 s; beyond, 429 with `Retry-After`
//!   (seconds until a slot frees). Every answer carries `X-Rate-Limit` and
//!   `X-Rate-Limit-Remaining`. Ticket updates are also limited per ticket (30 in 10 minutes).
//! - Users: search (`query` in Zendesk's search syntax: `phone:<digits>` with an optional leading
//!   `*`, `email:`, `role:`, free text; or `external_id`), `create_or_update` (matched by
//!   external id, case-insensitive, or e-mail; 201 with `Location` when created, 200 when
//!   updated), show. Search lags behind writes by `search_lag`, as Zendesk's index does.
//! - Tickets: create (with `Idempotency-Key`: a replay of the same body answers the first
//!   response with `x-idempotency-lookup: hit`; another body under the key is 400
//!   `IdempotentRequestError`; keys last two hours), update (a closed ticket is 422 "Status:
//!   closed prevents ticket update" [observed]; `tags` replaces the list, `additional_tags` and
//!   `remove_tags` add and remove; a ticket that left New cannot be set back to New, 422
//!   [wording assumed]), show, list by `external_id`, a user's requested
//!   tickets (sorted as asked), comments. Validation as documented: a comment is required on
//!   create (422 "Description: cannot be blank" [observed]), status, priority and type take
//!   their listed values, the requester, assignee (an agent) and group must exist, a voice
//!   comment needs its fields; tags are lower-cased with spaces as underscores. A new ticket
//!   that gets an assignee is open; a ticket solved without one is assigned to the API user.
//!   Keys the API does not know are ignored, as Zendesk does, and recorded for the tests.
//! - Uploads (`POST /api/v2/uploads?filename=`, the file as the raw body, its type from
//!   `Content-Type`): 201 with `upload.token` and the `attachment`; no filename is 400, over
//!   50 MB is 413. An upload not attached within `upload_lifetime` (60 minutes, as Zendesk's
//!   "Attaching files to tickets via API" says: the token expires and the file is deleted) is
//!   gone. A comment's `uploads` must name tokens not attached yet and
//!   not expired; what a ticket create or update answers for an unknown or expired token is not
//!   in Zendesk's reference (it says only that the upload is deleted and its URL answers 404), so
//!   the fake keeps the conservative answer, a 422 naming the token, where the real API might
//!   instead make the ticket without the file — either way a client must not send such a token.
//!   Each token attaches once.
//! - Comments keep the `author_id` and `public` a request gives them (Zendesk lets an API
//!   request write a comment as another user); without, the API user writes a public one.
//! - Incremental ticket event export (`GET /api/v2/incremental/ticket_events?start_time=`,
//!   optionally `include=comment_events`), time-based, as "Incremental Exports" and "Using the
//!   Incremental Exports API" describe it. Every ticket create and update (the API's, and the
//!   agent's doings below: [`FakeZendesk::reply`], tags, status) is recorded as an `Audit` event
//!   with its changes as `child_events`. Events come oldest first, at most 1000 a page, from
//!   `start_time` (inclusive) up to a minute before the request: Zendesk leaves the last minute
//!   out (announced October 2024). On a full page `end_of_stream` is false and `end_time` is the
//!   last event's second, where the next page starts (repeating that second's events: the
//!   reference warns time-based exports give duplicates); on the last page `end_time` is the edge
//!   of what was exported, a minute before the request [assumed: the announcement says only that
//!   `end_time` takes the left-out minute into account]. `next_page` is always given, `count` is
//!   the page's. A `start_time` less than a minute old (or in the future) is 422 `InvalidValue`
//!   "Too recent start_time…" [observed wording]; a missing or non-numeric one is 400
//!   `InvalidValue` [assumed]. The export has its own limit, `incremental_rate_limit` requests in
//!   any 60 s (10 per the reference, 30 with the High Volume add-on), on top of the account's;
//!   beyond it, 429 with `Retry-After`. An event carries `id`, `ticket_id`, `timestamp`,
//!   `created_at`, `updater_id` (the user who made the change: the API user for API writes, even
//!   of a comment written as someone else [assumed]), `via` as a name ("Web service" for the API,
//!   "Web form" for an agent in Zendesk) [observed in client fixtures], `system`, `metadata`,
//!   `event_type`. A comment's child event, with the sideload, is the comment: `id` (the
//!   comment's), `type` (`Comment` or `VoiceComment`), `author_id`, `body`, `html_body`,
//!   `plain_body`, `public`, `attachments`, `audit_id`, `created_at`, `event_type`; without it,
//!   only `comment_present` and `comment_public` (as the reference says). Field children are
//!   written as the audit events reference writes them (`type` `Create`/`Change`, `field_name`,
//!   `value`, `previous_value`) [assumed for the export, whose reference shows comments only].
//!   The fake's clock can be moved on ([`FakeZendesk::advance_clock`]) so that a test need not
//!   wait out the minute; request rate windows keep real time.
//! - Faults on demand: 500, 503 with `Retry-After`, 429 with `Retry-After`, an HTML page with
//!   200, or no answer at all — for the next N requests or for a while.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::server::Server;

/// How the fake account is set up.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The API user: its e-mail (basic authentication) and API token.
    pub(crate) email: String,
    pub(crate) token: String,
    /// An OAuth access token also accepted, if any.
    pub(crate) bearer: Option<String>,
    /// How long a new user takes to show up in search.
    pub(crate) search_lag: Duration,
    /// How long every answer takes.
    pub(crate) latency: Duration,
    /// Requests per minute (Zendesk Enterprise: 700).
    pub(crate) rate_limit: u32,
    /// How long an unattached upload's token stays good (Zendesk: 60 minutes).
    pub(crate) upload_lifetime: Duration,
    /// The account's group ids.
    pub(crate) groups: Vec<u64>,
    /// Incremental export requests per minute (Zendesk: 10).
    pub(crate) incremental_rate_limit: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            email: "bot@example.com".to_owned(),
            token: "t0ken".to_owned(),
            bearer: None,
            search_lag: Duration::from_secs(30),
            latency: Duration::ZERO,
            rate_limit: 100_000,
            upload_lifetime: Duration::from_secs(3600),
            groups: vec![5],
            incremental_rate_limit: 10,
        }
    }
}

/// A failure the fake can be told to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// That status with a JSON error body.
    Status(u16),
    /// 503 with `Retry-After`, Zendesk's answer to a database timeout.
    Unavailable { retry_after: u64 },
    /// 429 with `Retry-After`.
    RateLimited { retry_after: u64 },
    /// 200 with an HTML page (a proxy or a wrong base URL).
    Html,
    /// No answer for two minutes.
    Hang,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct User {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) role: String,
    pub(crate) external_id: Option<String>,
    pub(crate) active: bool,
    pub(crate) suspended: bool,
    indexed_at: Instant,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Comment {
    pub(crate) id: u64,
    /// `Comment` or `VoiceComment`.
    pub(crate) kind: String,
    pub(crate) body: String,
    pub(crate) public: bool,
    pub(crate) author_id: u64,
    pub(crate) data: Option<Value>,
    /// The uploads attached to it.
    pub(crate) attachments: Vec<Upload>,
    /// When it was written, by the fake's clock.
    pub(crate) at: Timestamp,
}

/// A ticket create or update, as the ticket event export shows it (Zendesk's audit).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TicketEvent {
    pub(crate) id: u64,
    pub(crate) ticket_id: u64,
    /// By the fake's clock.
    pub(crate) at: Timestamp,
    pub(crate) updater_id: u64,
    /// `Web service` (the API) or `Web form` (an agent in Zendesk).
    pub(crate) via: &'static str,
    pub(crate) children: Vec<Child>,
}

/// One change an event made.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Child {
    /// A field set on a new ticket.
    Create {
        id: u64,
        field: &'static str,
        value: Value,
    },
    /// A field changed on an existing ticket.
    Change {
        id: u64,
        field: &'static str,
        value: Value,
        previous: Value,
    },
    /// A comment added, by its id (a comment's id is its event's).
    Comment(u64),
}

/// A file sent to `POST /api/v2/uploads`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Upload {
    pub(crate) token: String,
    pub(crate) attachment_id: u64,
    pub(crate) file_name: String,
    pub(crate) content_type: String,
    pub(crate) bytes: Vec<u8>,
    /// Whether a comment took it (a token attaches once).
    pub(crate) attached: bool,
    /// When it was received, and how much older the test made it look ([`FakeZendesk::age_uploads`]).
    pub(crate) at: Instant,
    pub(crate) aged: Duration,
}

impl Upload {
    /// Whether its token can no longer be attached (Zendesk deleted the unattached file).
    fn expired(&self, lifetime: Duration) -> bool {
        !self.attached && self.at.elapsed() + self.aged >= lifetime
    }
}

/// Zendesk's attachment size limit (50 MB); larger uploads are 413.
const MAX_UPLOAD: usize = 50 * 1024 * 1024;

/// Events on a page of the ticket event export (Zendesk: up to 1000).
const EXPORT_PAGE: usize = 1000;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ticket {
    pub(crate) id: u64,
    pub(crate) subject: Option<String>,
    pub(crate) status: String,
    pub(crate) priority: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) requester_id: u64,
    pub(crate) assignee_id: Option<u64>,
    pub(crate) group_id: Option<u64>,
    pub(crate) tags: Vec<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) followup_source_id: Option<u64>,
    pub(crate) created_at: Timestamp,
    pub(crate) comments: Vec<Comment>,
}

/// What the fake saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    /// Requests that reached the account (authenticated, within the limit).
    pub(crate) requests: u64,
    /// When each of them arrived.
    pub(crate) arrivals: Vec<Instant>,
    /// 429 answers sent for the account limit.
    pub(crate) rate_limited: u64,
    /// 429 answers sent for the incremental export limit.
    pub(crate) incremental_rate_limited: u64,
    pub(crate) unauthenticated: u64,
    pub(crate) faults_served: u64,
    /// `METHOD /path` → how many.
    pub(crate) endpoints: HashMap<String, u64>,
    pub(crate) idempotent_hits: u64,
    /// Ticket or user keys Zendesk does not know, as sent (a client bug the real API would hide).
    pub(crate) unknown_keys: Vec<String>,
    /// 4xx answers with their bodies, for the tests to read.
    pub(crate) rejections: Vec<(u16, String)>,
}

#[derive(Default)]
struct Faults {
    next: Vec<Fault>,
    /// Faults for the next requests to one endpoint (`POST /api/v2/tickets`).
    on: Vec<(String, Fault)>,
    until: Option<(Instant, Fault)>,
}

struct Account {
    settings: Settings,
    base: String,
    users: Vec<User>,
    tickets: Vec<Ticket>,
    next_id: u64,
    uploads: Vec<Upload>,
    api_user: u64,
    idempotency: HashMap<String, (Value, Value, Instant)>,
    window: Vec<Instant>,
    updates: HashMap<u64, Vec<Instant>>,
    faults: Faults,
    stats: Stats,
    events: Vec<TicketEvent>,
    /// Incremental export requests in the last 60 s.
    incremental_window: Vec<Instant>,
    /// How far the fake's clock is ahead of the system's ([`FakeZendesk::advance_clock`]).
    clock: jiff::SignedDuration,
}

/// The fake, serving on 127.0.0.1 from its own thread.
pub(crate) struct FakeZendesk {
    pub(crate) url: String,
    account: Arc<Mutex<Account>>,
    /// Stops serving when the fake is dropped.
    _server: Server,
}

const TICKET_KEYS: &[&str] = &[
    "subject",
    "comment",
    "requester_id",
    "requester",
    "submitter_id",
    "assignee_id",
    "assignee_email",
    "group_id",
    "organization_id",
    "status",
    "custom_status_id",
    "priority",
    "type",
    "tags",
    "external_id",
    "custom_fields",
    "due_at",
    "problem_id",
    "collaborator_ids",
    "email_ccs",
    "followers",
    "metadata",
    "via_id",
    "voice_comment",
    "safe_update",
    "updated_stamp",
    "via_followup_source_id",
    "brand_id",
    "ticket_form_id",
    "additional_tags",
    "remove_tags",
];
const USER_KEYS: &[&str] = &[
    "name",
    "email",
    "phone",
    "shared_phone_number",
    "role",
    "external_id",
    "verified",
    "tags",
    "user_fields",
    "organization_id",
    "time_zone",
    "locale",
    "notes",
    "details",
    "skip_verify_email",
    "alias",
    "signature",
];
const STATUSES: &[&str] = &["new", "open", "pending", "hold", "solved", "closed"];
const PRIORITIES: &[&str] = &["urgent", "high", "normal", "low"];
const TYPES: &[&str] = &["problem", "incident", "question", "task"];

impl FakeZendesk {
    pub(crate) fn start(settings: Settings) -> FakeZendesk {
        let api_user = 1;
        let account = Arc::new(Mutex::new(Account {
            users: vec![User {
                id: api_user,
                name: "Integration".to_owned(),
                email: Some(settings.email.clone()),
                phone: None,
                role: "admin".to_owned(),
                external_id: None,
                active: true,
                suspended: false,
                indexed_at: Instant::now(),
            }],
            settings,
            // Known once the server listens, before any request.
            base: String::new(),
            tickets: Vec::new(),
            next_id: 100,
            uploads: Vec::new(),
            api_user,
            idempotency: HashMap::new(),
            window: Vec::new(),
            updates: HashMap::new(),
            faults: Faults::default(),
            stats: Stats::default(),
            events: Vec::new(),
            incremental_window: Vec::new(),
            clock: jiff::SignedDuration::ZERO,
        }));
        let server = Server::start(
            "fake Zendesk",
            Router::new().fallback(handle).with_state(account.clone()),
        );
        account.lock().unwrap().base = server.url.clone();
        FakeZendesk {
            url: server.url.clone(),
            account,
            _server: server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        f(&mut self.account.lock().unwrap())
    }

    /// An agent, found by e-mail.
    pub(crate) fn add_agent(&self, name: &str, email: &str) -> u64 {
        self.add_user(name, Some(email), None, "agent")
    }

    /// An end user with a phone, already in the search index.
    pub(crate) fn add_customer(&self, name: &str, phone: &str) -> u64 {
        self.add_user(name, None, Some(phone), "end-user")
    }

    /// An agent with a phone (their own mobile, say).
    pub(crate) fn add_agent_with_phone(&self, name: &str, email: &str, phone: &str) -> u64 {
        self.add_user(name, Some(email), Some(phone), "agent")
    }

    /// An end user with a phone and an e-mail.
    pub(crate) fn add_customer_with_email(&self, name: &str, phone: &str, email: &str) -> u64 {
        self.add_user(name, Some(email), Some(phone), "end-user")
    }

    /// An end user made by an integration earlier, found by its external id.
    pub(crate) fn add_user_with_external_id(&self, name: &str, external_id: &str) -> u64 {
        let id = self.add_user(name, None, None, "end-user");
        self.with(|a| {
            if let Some(user) = a.users.iter_mut().find(|u| u.id == id) {
                user.external_id = Some(external_id.to_owned());
            }
        });
        id
    }

    fn add_user(&self, name: &str, email: Option<&str>, phone: Option<&str>, role: &str) -> u64 {
        self.with(|a| {
            let id = a.new_id();
            // Made long ago: in the search index already.
            let long_ago = Instant::now()
                .checked_sub(a.settings.search_lag)
                .unwrap_or_else(Instant::now);
            a.users.push(User {
                id,
                name: name.to_owned(),
                email: email.map(str::to_owned),
                phone: phone.map(str::to_owned),
                role: role.to_owned(),
                external_id: None,
                active: true,
                suspended: false,
                indexed_at: long_ago,
            });
            id
        })
    }

    /// Deletes a user, as an admin would: Zendesk keeps it as inactive, out of search, and no
    /// longer takes it as a requester.
    pub(crate) fn delete_user(&self, id: u64) {
        self.with(|a| {
            a.users
                .iter_mut()
                .find(|u| u.id == id)
                .expect("a user")
                .active = false
        });
    }

    /// Deletes a user for good (GDPR permanent deletion, or a merge's loser once purged): the
    /// user and everything under `/users/{id}` answer 404 from then on.
    pub(crate) fn purge_user(&self, id: u64) {
        self.with(|a| a.users.retain(|u| u.id != id));
    }

    /// Adds a tag to a ticket, as an agent would (the API user stands for the agent in the
    /// ticket's events).
    pub(crate) fn add_tag(&self, ticket: u64, tag: &str) {
        self.with(|a| a.agent_change(ticket, |t| t.tags.push(tag.to_owned())));
    }

    /// Sets a ticket's status, as an agent would.
    pub(crate) fn set_status(&self, ticket: u64, status: &str) {
        self.with(|a| a.agent_change(ticket, |t| t.status = status.to_owned()));
    }

    /// A ticket made through the API as sipdesk makes one: requested by `requester`, with
    /// `note` as its first, internal comment; its id.
    pub(crate) fn add_ticket(&self, requester: u64, note: &str) -> u64 {
        self.with(|a| {
            let (status, _, answer) = a.create_ticket(&json!({"ticket": {
                "subject": "Call", "requester_id": requester,
                "comment": {"body": note, "public": false},
            }}));
            assert_eq!(status, StatusCode::CREATED, "{answer}");
            answer["ticket"]["id"].as_u64().expect("a ticket id")
        })
    }

    /// A comment written on a ticket in Zendesk by `author` (an agent's reply when `public`, an
    /// internal note when not): in the ticket's comments and, as an update by `author`, in the
    /// ticket event export. Its id.
    pub(crate) fn reply(&self, ticket: u64, author: u64, body: &str, public: bool) -> u64 {
        self.with(|a| {
            let id = a.new_id();
            let at = a.now();
            a.tickets
                .iter_mut()
                .find(|t| t.id == ticket)
                .expect("a ticket")
                .comments
                .push(Comment {
                    id,
                    kind: "Comment".to_owned(),
                    body: body.to_owned(),
                    public,
                    author_id: author,
                    data: None,
                    attachments: Vec::new(),
                    at,
                });
            a.record(ticket, author, "Web form", Vec::new(), &[id]);
            id
        })
    }

    /// Moves the fake's clock on by `by`: what was written looks that much older, and the
    /// export's last minute is that much later (as if the time had passed).
    pub(crate) fn advance_clock(&self, by: Duration) {
        self.with(|a| {
            a.clock += jiff::SignedDuration::try_from(by).expect("a clock step");
        });
    }

    /// The fake's time now.
    pub(crate) fn now(&self) -> Timestamp {
        self.with(|a| a.now())
    }

    /// Every ticket event recorded, oldest first.
    pub(crate) fn events(&self) -> Vec<TicketEvent> {
        self.with(|a| a.events.clone())
    }

    /// The next `n` requests get `fault`.
    pub(crate) fn fail_next(&self, n: usize, fault: Fault) {
        self.with(|a| a.faults.next.extend(std::iter::repeat_n(fault, n)));
    }

    /// Every request gets `fault` for this long.
    /// The next `n` requests to `endpoint` (`METHOD /path`, ids as `{id}`) get `fault`.
    pub(crate) fn fail_next_on(&self, endpoint: &str, n: usize, fault: Fault) {
        self.with(|a| {
            a.faults
                .on
                .extend(std::iter::repeat_n((endpoint.to_owned(), fault), n))
        });
    }

    pub(crate) fn fail_for(&self, how_long: Duration, fault: Fault) {
        self.with(|a| a.faults.until = Some((Instant::now() + how_long, fault)));
    }

    pub(crate) fn heal(&self) {
        self.with(|a| a.faults = Faults::default());
    }

    pub(crate) fn users(&self) -> Vec<User> {
        self.with(|a| a.users.clone())
    }

    pub(crate) fn tickets(&self) -> Vec<Ticket> {
        self.with(|a| a.tickets.clone())
    }

    /// An upload made as `POST /api/v2/uploads` makes it; its token.
    pub(crate) fn add_upload(&self, file_name: &str, bytes: Vec<u8>) -> String {
        self.with(|a| {
            let attachment_id = a.new_id();
            let token = format!("tok{attachment_id}x{}", bytes.len());
            a.uploads.push(Upload {
                token: token.clone(),
                attachment_id,
                file_name: file_name.to_owned(),
                content_type: "audio/wav".to_owned(),
                bytes,
                attached: false,
                at: Instant::now(),
                aged: Duration::ZERO,
            });
            token
        })
    }

    /// Makes every upload received so far look `by` older (as if that time had passed).
    pub(crate) fn age_uploads(&self, by: Duration) {
        self.with(|a| {
            for upload in &mut a.uploads {
                upload.aged += by;
            }
        })
    }

    /// Every upload received, attached or not.
    pub(crate) fn uploads(&self) -> Vec<Upload> {
        self.with(|a| a.uploads.clone())
    }

    pub(crate) fn stats(&self) -> Stats {
        self.with(|a| a.stats.clone())
    }

    /// Waits until `n` tickets exist (or `wait` passes) and returns them all.
    pub(crate) fn wait_for_tickets(&self, n: usize, wait: Duration) -> Vec<Ticket> {
        let deadline = Instant::now() + wait;
        loop {
            let tickets = self.tickets();
            if tickets.len() >= n || Instant::now() > deadline {
                return tickets;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn json_response(status: u16, body: Value) -> (StatusCode, HeaderMap, Value) {
    (
        StatusCode::from_u16(status).unwrap(),
        HeaderMap::new(),
        body,
    )
}

fn record_invalid(field: &str, description: &str, error: &str) -> (StatusCode, HeaderMap, Value) {
    json_response(
        422,
        json!({"error": "RecordInvalid", "description": "Record validation errors",
               "details": {field: [{"description": description, "error": error}]}}),
    )
}

/// A 422, boxed for `Result`.
fn invalid(field: &str, description: &str, error: &str) -> Box<Answer> {
    Box::new(record_invalid(field, description, error))
}

/// An answer: status, headers, JSON body.
type Answer = (StatusCode, HeaderMap, Value);

fn not_found() -> (StatusCode, HeaderMap, Value) {
    json_response(
        404,
        json!({"error": "RecordNotFound", "description": "Not found"}),
    )
}

async fn handle(
    State(account): State<Arc<Mutex<Account>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (next, latency) = {
        let mut a = account.lock().unwrap();
        let latency = a.settings.latency;
        (a.serve(&method, &uri, &headers, &body), latency)
    };
    match next {
        Next::Hang => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Next::Answer(response) => {
            tokio::time::sleep(latency).await;
            response
        }
    }
}

/// What a request gets: an answer, or nothing at all.
enum Next {
    Answer(Response),
    Hang,
}

impl Account {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn now(&self) -> Timestamp {
        Timestamp::now() + self.clock
    }

    /// Records a ticket event: `fields` set (no previous value, on a new ticket) or changed,
    /// and `comments` added. An update that changes nothing records nothing.
    fn record(
        &mut self,
        ticket_id: u64,
        updater_id: u64,
        via: &'static str,
        fields: Vec<(&'static str, Value, Option<Value>)>,
        comments: &[u64],
    ) -> Option<u64> {
        if fields.is_empty() && comments.is_empty() {
            return None;
        }
        let id = self.new_id();
        let mut children = Vec::new();
        for (field, value, previous) in fields {
            let child = self.new_id();
            children.push(match previous {
                None => Child::Create {
                    id: child,
                    field,
                    value,
                },
                Some(previous) => Child::Change {
                    id: child,
                    field,
                    value,
                    previous,
                },
            });
        }
        children.extend(comments.iter().map(|c| Child::Comment(*c)));
        let at = self.now();
        self.events.push(TicketEvent {
            id,
            ticket_id,
            at,
            updater_id,
            via,
            children,
        });
        Some(id)
    }

    /// An agent's change to a ticket in Zendesk, recorded as an event of the API user's.
    fn agent_change(&mut self, ticket: u64, change: impl FnOnce(&mut Ticket)) {
        let t = self
            .tickets
            .iter_mut()
            .find(|t| t.id == ticket)
            .expect("a ticket");
        let before = ticket_fields(t);
        change(t);
        let changed = changes(&before, &ticket_fields(t));
        let api_user = self.api_user;
        self.record(ticket, api_user, "Web form", changed, &[]);
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if let Some(encoded) = value.strip_prefix("Basic ") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            return decoded
                == format!("{}/token:{}", self.settings.email, self.settings.token).as_bytes();
        }
        if let Some(token) = value.strip_prefix("Bearer ") {
            return self.settings.bearer.as_deref() == Some(token.trim());
        }
        false
    }

    fn fault(&mut self) -> Option<Fault> {
        if !self.faults.next.is_empty() {
            return Some(self.faults.next.remove(0));
        }
        match self.faults.until {
            Some((until, fault)) if Instant::now() < until => Some(fault),
            _ => None,
        }
    }

    fn serve(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Next {
        let endpoint = format!(
            "{method} {}",
            endpoint_name(uri.path().trim_end_matches(".json"))
        );
        let targeted = self
            .faults
            .on
            .iter()
            .position(|(e, _)| *e == endpoint)
            .map(|i| self.faults.on.remove(i).1);
        if let Some(fault) = targeted.or_else(|| self.fault()) {
            self.stats.faults_served += 1;
            let response = match fault {
                Fault::Hang => return Next::Hang,
                Fault::Html => (
                    StatusCode::OK,
                    [("content-type", "text/html; charset=utf-8")],
                    "<!DOCTYPE html><html><head><title>Help Center</title></head><body>Sign in</body></html>",
                )
                    .into_response(),
                Fault::Status(status) => (
                    StatusCode::from_u16(status).unwrap(),
                    axum::Json(json!({"error": "InternalError", "description": "Something went wrong"})),
                )
                    .into_response(),
                Fault::Unavailable { retry_after } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", retry_after.to_string())],
                    axum::Json(json!({"error": "DatabaseTimeout", "description": "Please retry"})),
                )
                    .into_response(),
                Fault::RateLimited { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", retry_after.to_string())],
                    "Too Many Requests",
                )
                    .into_response(),
            };
            return Next::Answer(response);
        }
        if !self.authenticated(headers) {
            self.stats.unauthenticated += 1;
            return Next::Answer(
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "Couldn't authenticate you"})),
                )
                    .into_response(),
            );
        }
        let now = Instant::now();
        self.window
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        let limit = self.settings.rate_limit as usize;
        if self.window.len() >= limit {
            self.stats.rate_limited += 1;
            let frees = self.window[0] + Duration::from_secs(60);
            let wait = frees
                .saturating_duration_since(now)
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64;
            return Next::Answer(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        ("retry-after", wait.to_string()),
                        ("x-rate-limit", limit.to_string()),
                        ("x-rate-limit-remaining", "0".to_owned()),
                    ],
                    "Too Many Requests",
                )
                    .into_response(),
            );
        }
        self.window.push(now);
        self.stats.requests += 1;
        self.stats.arrivals.push(now);
        let path = uri.path().trim_end_matches(".json").to_owned();
        *self
            .stats
            .endpoints
            .entry(format!("{method} {}", endpoint_name(&path)))
            .or_default() += 1;
        let query: HashMap<String, String> = uri.query().map(url_pairs).unwrap_or_default();
        let (status, mut extra, body) = self.route(method, &path, &query, headers, body);
        if status.is_client_error() {
            self.stats
                .rejections
                .push((status.as_u16(), body.to_string()));
        }
        extra.insert("x-rate-limit", HeaderValue::from(limit));
        extra.insert(
            "x-rate-limit-remaining",
            HeaderValue::from(limit - self.window.len()),
        );
        Next::Answer((status, extra, axum::Json(body)).into_response())
    }

    fn route(
        &mut self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> (StatusCode, HeaderMap, Value) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let id = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
        let parsed = || serde_json::from_slice::<Value>(body);
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["api", "v2", "users", "search"]) => self.search_users(query),
            ("GET", ["api", "v2", "incremental", "ticket_events"]) => self.ticket_events(query),
            ("POST", ["api", "v2", "uploads"]) => self.upload(query, headers, body),
            ("POST", ["api", "v2", "users", "create_or_update"]) => match parsed() {
                Ok(body) => self.create_or_update_user(&body),
                Err(_) => bad_json(),
            },
            ("GET", ["api", "v2", "users", _]) => {
                match id(3).and_then(|id| self.users.iter().find(|u| u.id == id)) {
                    Some(user) => json_response(200, json!({"user": self.user_json(user)})),
                    None => not_found(),
                }
            }
            ("GET", ["api", "v2", "users", _, "tickets", "requested"]) => match id(3) {
                Some(user) if self.users.iter().any(|u| u.id == user) => {
                    self.requested(user, query)
                }
                _ => not_found(),
            },
            ("GET", ["api", "v2", "tickets"]) => {
                let list: Vec<Value> = self
                    .tickets
                    .iter()
                    .filter(|t| {
                        query
                            .get("external_id")
                            .is_none_or(|e| t.external_id.as_ref() == Some(e))
                    })
                    .map(|t| self.ticket_json(t))
                    .collect();
                json_response(
                    200,
                    json!({"tickets": list, "next_page": null, "previous_page": null, "count": list.len()}),
                )
            }
            ("POST", ["api", "v2", "tickets"]) => match parsed() {
                Ok(body) => self.create_ticket_idempotent(headers, body),
                Err(_) => bad_json(),
            },
            ("GET", ["api", "v2", "tickets", _]) => {
                match id(3).and_then(|id| self.tickets.iter().find(|t| t.id == id)) {
                    Some(ticket) => json_response(200, json!({"ticket": self.ticket_json(ticket)})),
                    None => not_found(),
                }
            }
            ("PUT", ["api", "v2", "tickets", _]) => match (id(3), parsed()) {
                (Some(id), Ok(body)) => self.update_ticket(id, &body),
                (None, _) => not_found(),
                (_, Err(_)) => bad_json(),
            },
            ("GET", ["api", "v2", "tickets", _, "comments"]) => {
                match id(3).and_then(|id| self.tickets.iter().find(|t| t.id == id)) {
                    Some(ticket) => {
                        let mut comments: Vec<Value> =
                            ticket.comments.iter().map(comment_json).collect();
                        if query.get("sort_order").map(String::as_str) == Some("desc") {
                            comments.reverse();
                        }
                        json_response(
                            200,
                            json!({"comments": comments, "next_page": null, "previous_page": null, "count": comments.len()}),
                        )
                    }
                    None => not_found(),
                }
            }
            _ => json_response(
                404,
                json!({"error": "InvalidEndpoint", "description": "Not found"}),
            ),
        }
    }

    /// `POST /api/v2/uploads?filename=...`: the file is the raw body, its type the request's
    /// `Content-Type`; 201 with the token to attach it by and the attachment.
    fn upload(
        &mut self,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> (StatusCode, HeaderMap, Value) {
        let Some(file_name) = query.get("filename").filter(|f| !f.is_empty()) else {
            return json_response(
                400,
                json!({"error": "InvalidValue", "description": "filename is required"}),
            );
        };
        if body.len() > MAX_UPLOAD {
            return json_response(
                413,
                json!({"error": "FileTooLarge", "description": "Attachment size exceeds limit"}),
            );
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/binary")
            .to_owned();
        let attachment_id = self.new_id();
        let token = format!("tok{attachment_id}x{}", body.len());
        let upload = Upload {
            token: token.clone(),
            attachment_id,
            file_name: file_name.clone(),
            content_type,
            bytes: body.to_vec(),
            attached: false,
            at: Instant::now(),
            aged: Duration::ZERO,
        };
        let attachment = self.attachment_json(&upload);
        self.uploads.push(upload);
        let mut extra = HeaderMap::new();
        extra.insert(
            "location",
            HeaderValue::from_str(&format!(
                "{}/api/v2/attachments/{attachment_id}.json",
                self.base
            ))
            .unwrap(),
        );
        (
            StatusCode::CREATED,
            extra,
            json!({"upload": {"token": token, "expires_at": "2026-01-01T01:00:00Z",
                              "attachment": attachment, "attachments": [attachment]}}),
        )
    }

    /// `GET /api/v2/incremental/ticket_events?start_time=`: one page of the time-based export.
    fn ticket_events(&mut self, query: &HashMap<String, String>) -> Answer {
        let now = Instant::now();
        self.incremental_window
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if self.incremental_window.len() >= self.settings.incremental_rate_limit as usize {
            self.stats.incremental_rate_limited += 1;
            let frees = self.incremental_window[0] + Duration::from_secs(60);
            let wait = frees
                .saturating_duration_since(now)
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64;
            let mut headers = HeaderMap::new();
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(wait));
            return (
                StatusCode::TOO_MANY_REQUESTS,
                headers,
                json!({"error": "TooManyRequests", "description": "Number of allowed incremental export API requests per minute exceeded"}),
            );
        }
        self.incremental_window.push(now);
        let Some(start) = query
            .get("start_time")
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s >= 0)
        else {
            return json_response(
                400,
                json!({"error": "InvalidValue", "description": "start_time is required and must be a Unix time in seconds"}),
            );
        };
        // The minute before the request is left out.
        let edge = self.now().as_second() - 60;
        if start > edge {
            return json_response(
                422,
                json!({"error": "InvalidValue", "description": "Too recent start_time. Use a start_time older than 1 minute"}),
            );
        }
        let comments = query
            .get("include")
            .is_some_and(|i| i.split(',').any(|s| s.trim() == "comment_events"));
        let mut events: Vec<&TicketEvent> = self
            .events
            .iter()
            .filter(|e| (start..=edge).contains(&e.at.as_second()))
            .collect();
        events.sort_by_key(|e| (e.at.as_second(), e.id));
        let end_of_stream = events.len() <= EXPORT_PAGE;
        events.truncate(EXPORT_PAGE);
        let end_time = match events.last() {
            Some(last) if !end_of_stream => last.at.as_second(),
            _ => edge,
        };
        let page: Vec<Value> = events
            .iter()
            .map(|e| self.ticket_event_json(e, comments))
            .collect();
        let include = if comments {
            "&include=comment_events"
        } else {
            ""
        };
        json_response(
            200,
            json!({
                "ticket_events": page,
                "next_page": format!("{}/api/v2/incremental/ticket_events.json?start_time={end_time}{include}", self.base),
                "count": page.len(),
                "end_time": end_time,
                "end_of_stream": end_of_stream,
            }),
        )
    }

    fn ticket_event_json(&self, e: &TicketEvent, comments: bool) -> Value {
        let channel = if e.via == "Web form" { "web" } else { "api" };
        let via = json!({"channel": channel, "source": {"from": {}, "to": {}, "rel": null}});
        let children: Vec<Value> = e
            .children
            .iter()
            .filter_map(|child| match child {
                Child::Create { id, field, value } => Some(json!({
                    "id": id, "via": e.via, "via_reference_id": null, "type": "Create",
                    "event_type": "Create", "field_name": field, "value": value,
                })),
                Child::Change {
                    id,
                    field,
                    value,
                    previous,
                } => Some(json!({
                    "id": id, "via": e.via, "via_reference_id": null, "type": "Change",
                    "event_type": "Change", "field_name": field, "value": value,
                    "previous_value": previous,
                })),
                Child::Comment(id) => {
                    let c = self
                        .tickets
                        .iter()
                        .find(|t| t.id == e.ticket_id)?
                        .comments
                        .iter()
                        .find(|c| c.id == *id)?;
                    Some(if comments {
                        let mut comment = comment_json(c);
                        let extra = json!({
                            "via": via, "via_reference_id": null, "html_body": html(&c.body),
                            "plain_body": c.body, "audit_id": e.id, "event_type": c.kind,
                        });
                        for (key, value) in extra.as_object().into_iter().flatten() {
                            comment[key] = value.clone();
                        }
                        if let Some(comment) = comment.as_object_mut() {
                            comment.remove("data");
                        }
                        comment
                    } else {
                        json!({
                            "id": id, "via": e.via, "via_reference_id": null,
                            "comment_present": true, "comment_public": c.public,
                            "event_type": c.kind,
                        })
                    })
                }
            })
            .collect();
        json!({
            "id": e.id, "ticket_id": e.ticket_id, "timestamp": e.at.as_second(),
            "created_at": second(e.at), "updater_id": e.updater_id, "via": e.via,
            "system": {}, "metadata": {}, "event_type": "Audit", "child_events": children,
        })
    }

    fn attachment_json(&self, u: &Upload) -> Value {
        json!({"id": u.attachment_id, "file_name": u.file_name, "content_type": u.content_type,
               "size": u.bytes.len(), "inline": false, "deleted": false,
               "content_url": format!("{}/attachments/token/{}/?name={}", self.base, u.token, u.file_name),
               "url": format!("{}/api/v2/attachments/{}.json", self.base, u.attachment_id)})
    }

    fn user_json(&self, u: &User) -> Value {
        json!({
            "id": u.id, "url": format!("{}/api/v2/users/{}.json", self.base, u.id), "name": u.name,
            "email": u.email, "phone": u.phone, "shared_phone_number": false, "role": u.role,
            "external_id": u.external_id, "active": u.active, "suspended": u.suspended, "verified": false,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        })
    }

    fn ticket_json(&self, t: &Ticket) -> Value {
        json!({
            "id": t.id, "url": format!("{}/api/v2/tickets/{}.json", self.base, t.id), "subject": t.subject,
            "raw_subject": t.subject, "description": t.comments.first().map(|c| c.body.clone()),
            "status": t.status, "priority": t.priority, "type": t.kind, "requester_id": t.requester_id,
            "submitter_id": self.api_user, "assignee_id": t.assignee_id, "group_id": t.group_id, "tags": t.tags,
            "external_id": t.external_id, "followup_source_id": t.followup_source_id,
            "created_at": t.created_at.to_string(), "updated_at": t.created_at.to_string(), "via": {"channel": "api"},
        })
    }

    fn search_users(&self, query: &HashMap<String, String>) -> (StatusCode, HeaderMap, Value) {
        let now = Instant::now();
        let indexed =
            |u: &&User| u.active && now.duration_since(u.indexed_at) >= self.settings.search_lag;
        let found: Vec<Value> = if let Some(external_id) = query.get("external_id") {
            self.users
                .iter()
                .filter(indexed)
                .filter(|u| {
                    u.external_id
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(external_id))
                })
                .map(|u| self.user_json(u))
                .collect()
        } else if let Some(q) = query.get("query") {
            self.users
                .iter()
                .filter(indexed)
                .filter(|u| matches_query(u, q))
                .map(|u| self.user_json(u))
                .collect()
        } else {
            return json_response(
                400,
                json!({"error": "InvalidSearch", "description": "Specify either a query or an external_id"}),
            );
        };
        json_response(
            200,
            json!({"users": found, "next_page": null, "previous_page": null, "count": found.len()}),
        )
    }

    fn create_or_update_user(&mut self, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let Some(user) = body.get("user").and_then(Value::as_object) else {
            return json_response(
                400,
                json!({"error": "InvalidValue", "description": "Parameter user is required"}),
            );
        };
        for key in user.keys().filter(|k| !USER_KEYS.contains(&k.as_str())) {
            self.stats.unknown_keys.push(format!("user.{key}"));
        }
        if let Some(role) = user.get("role") {
            if !role
                .as_str()
                .is_some_and(|r| ["end-user", "agent", "admin"].contains(&r))
            {
                return record_invalid(
                    "role",
                    &format!("Role: {role} is not a valid role"),
                    "InvalidValue",
                );
            }
        }
        for key in ["name", "email", "phone", "external_id"] {
            if user
                .get(key)
                .is_some_and(|v| !v.is_string() && !v.is_null())
            {
                return record_invalid(key, &format!("{key}: is invalid"), "InvalidValue");
            }
        }
        let text = |key: &str| user.get(key).and_then(Value::as_str).map(str::to_owned);
        let external_id = text("external_id");
        let email = text("email");
        let existing = self.users.iter().position(|u| {
            u.active
                && (external_id.as_ref().is_some_and(|e| {
                    u.external_id
                        .as_ref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(e))
                }) || email
                    .as_ref()
                    .is_some_and(|e| u.email.as_ref().is_some_and(|x| x.eq_ignore_ascii_case(e))))
        });
        match existing {
            Some(i) => {
                let u = &mut self.users[i];
                if let Some(name) = text("name").filter(|n| !n.trim().is_empty()) {
                    u.name = name;
                }
                if let Some(phone) = text("phone") {
                    u.phone = Some(phone);
                }
                if let Some(external_id) = external_id {
                    u.external_id = Some(external_id);
                }
                let user = self.users[i].clone();
                json_response(200, json!({"user": self.user_json(&user)}))
            }
            None => {
                let Some(name) = text("name").filter(|n| !n.trim().is_empty()) else {
                    return record_invalid(
                        "name",
                        "Name:  is too short (minimum is 1 character)",
                        "TooShort",
                    );
                };
                let id = self.new_id();
                let user = User {
                    id,
                    name,
                    email,
                    phone: text("phone"),
                    role: text("role").unwrap_or_else(|| "end-user".to_owned()),
                    external_id,
                    active: true,
                    suspended: false,
                    indexed_at: Instant::now(),
                };
                self.users.push(user.clone());
                let mut headers = HeaderMap::new();
                headers.insert(
                    "location",
                    HeaderValue::from_str(&format!("{}/api/v2/users/{id}.json", self.base))
                        .unwrap(),
                );
                (
                    StatusCode::CREATED,
                    headers,
                    json!({"user": self.user_json(&user)}),
                )
            }
        }
    }

    fn requested(
        &self,
        user: u64,
        query: &HashMap<String, String>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut tickets: Vec<&Ticket> = self
            .tickets
            .iter()
            .filter(|t| t.requester_id == user)
            .collect();
        match query.get("sort_by").map(String::as_str) {
            Some("created_at") => tickets.sort_by_key(|t| (t.created_at, t.id)),
            Some("status") => tickets.sort_by_key(|t| t.status.clone()),
            None | Some("id") => tickets.sort_by_key(|t| t.id),
            Some(other) => {
                return json_response(
                    400,
                    json!({"error": "InvalidValue", "description": format!("sort_by {other} is not supported")}),
                );
            }
        }
        if query.get("sort_order").map(String::as_str) == Some("desc") {
            tickets.reverse();
        }
        let per_page = query
            .get("per_page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, 100);
        let page: Vec<Value> = tickets
            .iter()
            .take(per_page)
            .map(|t| self.ticket_json(t))
            .collect();
        let next = (tickets.len() > per_page).then(|| {
            format!(
                "{}/api/v2/users/{user}/tickets/requested.json?page=2",
                self.base
            )
        });
        json_response(
            200,
            json!({"tickets": page, "next_page": next, "previous_page": null, "count": tickets.len()}),
        )
    }

    fn create_ticket_idempotent(
        &mut self,
        headers: &HeaderMap,
        body: Value,
    ) -> (StatusCode, HeaderMap, Value) {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(key) = &key {
            self.idempotency
                .retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(2 * 3600));
            if let Some((sent, answer, _)) = self.idempotency.get(key) {
                if *sent != body {
                    return json_response(
                        400,
                        json!({"error": "IdempotentRequestError", "description": "Request parameters don't match the given idempotency key"}),
                    );
                }
                self.stats.idempotent_hits += 1;
                let mut headers = HeaderMap::new();
                headers.insert("x-idempotency-lookup", HeaderValue::from_static("hit"));
                return (StatusCode::CREATED, headers, answer.clone());
            }
        }
        let (status, mut out, answer) = self.create_ticket(&body);
        if let Some(key) = key {
            if status == StatusCode::CREATED {
                self.idempotency
                    .insert(key, (body, answer.clone(), Instant::now()));
            }
            out.insert("x-idempotency-lookup", HeaderValue::from_static("miss"));
        }
        (status, out, answer)
    }

    /// Checks the ticket fields both create and update accept; `Err` is the 422 to answer.
    fn check_ticket(&mut self, ticket: &serde_json::Map<String, Value>) -> Result<(), Box<Answer>> {
        for key in ticket.keys().filter(|k| !TICKET_KEYS.contains(&k.as_str())) {
            self.stats.unknown_keys.push(format!("ticket.{key}"));
        }
        let one_of = |key: &str, values: &[&str], name: &str| -> Result<(), Box<Answer>> {
            match ticket.get(key) {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(v)) if values.contains(&v.as_str()) => Ok(()),
                Some(v) => Err(invalid(
                    key,
                    &format!("{name}: {v} is not valid"),
                    "InvalidValue",
                )),
            }
        };
        one_of("status", STATUSES, "Status")?;
        one_of("priority", PRIORITIES, "Priority")?;
        one_of("type", TYPES, "Type")?;
        if let Some(subject) = ticket.get("subject") {
            if !subject.is_string() {
                return Err(invalid("subject", "Subject: is invalid", "InvalidValue"));
            }
        }
        for key in ["tags", "additional_tags", "remove_tags"] {
            if let Some(tags) = ticket.get(key) {
                if !tags
                    .as_array()
                    .is_some_and(|t| t.iter().all(Value::is_string))
                {
                    return Err(invalid(
                        key,
                        "Tags: must be a list of strings",
                        "InvalidValue",
                    ));
                }
            }
        }
        if let Some(comment) = ticket.get("comment") {
            let Some(comment) = comment.as_object() else {
                return Err(invalid("comment", "Comment: is invalid", "InvalidValue"));
            };
            if let Some(tokens) = comment.get("uploads") {
                let Some(tokens) = tokens.as_array() else {
                    return Err(invalid(
                        "comment",
                        "Uploads: must be a list of tokens",
                        "InvalidValue",
                    ));
                };
                for token in tokens {
                    let known = token.as_str().and_then(|t| {
                        self.uploads.iter().find(|u| {
                            u.token == t && !u.attached && !u.expired(self.settings.upload_lifetime)
                        })
                    });
                    if known.is_none() {
                        return Err(invalid(
                            "comment",
                            &format!("Uploads: {token} is not a valid upload token"),
                            "InvalidValue",
                        ));
                    }
                }
            }
            if comment.get("public").is_some_and(|p| !p.is_boolean()) {
                return Err(invalid(
                    "comment",
                    "Comment: public must be true or false",
                    "InvalidValue",
                ));
            }
        }
        if let Some(assignee) = ticket.get("assignee_id").filter(|v| !v.is_null()) {
            let agent = assignee
                .as_u64()
                .and_then(|id| self.users.iter().find(|u| u.id == id));
            if !agent.is_some_and(|u| u.role != "end-user" && u.active && !u.suspended) {
                return Err(invalid(
                    "assignee",
                    "Assignee: is not permitted to be an assignee",
                    "InvalidValue",
                ));
            }
        }
        if let Some(group) = ticket.get("group_id").filter(|v| !v.is_null()) {
            if !group
                .as_u64()
                .is_some_and(|g| self.settings.groups.contains(&g))
            {
                return Err(invalid("group", "Group: is invalid", "InvalidValue"));
            }
        }
        if let Some(voice) = ticket.get("voice_comment") {
            let Some(voice) = voice.as_object() else {
                return Err(invalid(
                    "voice_comment",
                    "Voice comment: is invalid",
                    "InvalidValue",
                ));
            };
            for key in ["from", "to", "recording_url", "started_at"] {
                if !voice.get(key).is_some_and(Value::is_string) {
                    return Err(invalid(
                        "voice_comment",
                        &format!("Voice comment: {key} is required"),
                        "BlankValue",
                    ));
                }
            }
            if voice["started_at"]
                .as_str()
                .and_then(|s| s.parse::<Timestamp>().ok())
                .is_none()
            {
                return Err(invalid(
                    "voice_comment",
                    "Voice comment: started_at is not an ISO 8601 time",
                    "InvalidValue",
                ));
            }
            if !voice.get("call_duration").is_some_and(Value::is_u64) {
                return Err(invalid(
                    "voice_comment",
                    "Voice comment: call_duration must be a number of seconds",
                    "InvalidValue",
                ));
            }
        }
        Ok(())
    }

    fn comments_of(&mut self, ticket: &serde_json::Map<String, Value>) -> Vec<Comment> {
        let mut comments = Vec::new();
        if let Some(comment) = ticket.get("comment").and_then(Value::as_object) {
            let body = comment
                .get("body")
                .or_else(|| comment.get("html_body"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let id = self.new_id();
            let mut attachments = Vec::new();
            for token in comment
                .get("uploads")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Some(upload) = self.uploads.iter_mut().find(|u| u.token == token) {
                    upload.attached = true;
                    attachments.push(upload.clone());
                }
            }
            let at = self.now();
            comments.push(Comment {
                id,
                attachments,
                at,
                kind: "Comment".to_owned(),
                body: body.to_owned(),
                public: comment
                    .get("public")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                author_id: comment
                    .get("author_id")
                    .and_then(Value::as_u64)
                    .unwrap_or(self.api_user),
                data: None,
            });
        }
        if let Some(voice) = ticket.get("voice_comment") {
            let id = self.new_id();
            comments.push(Comment {
                id,
                kind: "VoiceComment".to_owned(),
                body: format!(
                    "Call from: {}\nRecording: {}",
                    voice["from"].as_str().unwrap_or(""),
                    voice["recording_url"].as_str().unwrap_or("")
                ),
                public: false,
                author_id: self.api_user,
                data: Some(voice.clone()),
                attachments: Vec::new(),
                at: self.now(),
            });
        }
        comments
    }

    fn create_ticket(&mut self, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let Some(ticket) = body.get("ticket").and_then(Value::as_object) else {
            return json_response(
                400,
                json!({"error": "InvalidValue", "description": "Parameter ticket is required"}),
            );
        };
        if let Err(answer) = self.check_ticket(ticket) {
            return *answer;
        }
        let has_comment = ticket
            .get("comment")
            .and_then(|c| c.get("body").or_else(|| c.get("html_body")))
            .and_then(Value::as_str)
            .is_some_and(|b| !b.trim().is_empty());
        if !has_comment {
            return record_invalid("base", "Description: cannot be blank", "BlankValue");
        }
        let requester_id = match ticket.get("requester_id").and_then(Value::as_u64) {
            Some(id) if self.users.iter().any(|u| u.id == id && u.active) => id,
            Some(_) => return record_invalid("requester", "Requester: is invalid", "InvalidValue"),
            None => self.api_user,
        };
        let followup_source_id = match ticket.get("via_followup_source_id") {
            None => None,
            Some(source) => match source
                .as_u64()
                .and_then(|id| self.tickets.iter().find(|t| t.id == id))
            {
                Some(t) if t.status == "closed" => Some(t.id),
                _ => {
                    return record_invalid(
                        "via_followup_source_id",
                        "Follow-up source: must be a closed ticket",
                        "InvalidValue",
                    );
                }
            },
        };
        let comments = self.comments_of(ticket);
        let id = self.new_id();
        let text = |key: &str| ticket.get(key).and_then(Value::as_str).map(str::to_owned);
        let mut new = Ticket {
            id,
            subject: text("subject"),
            status: text("status").unwrap_or_else(|| "new".to_owned()),
            priority: text("priority"),
            kind: text("type"),
            requester_id,
            assignee_id: ticket.get("assignee_id").and_then(Value::as_u64),
            group_id: ticket.get("group_id").and_then(Value::as_u64),
            tags: tags(ticket.get("tags")),
            external_id: text("external_id"),
            followup_source_id,
            created_at: self.now(),
            comments,
        };
        settle_status(&mut new, self.api_user);
        let set: Vec<_> = ticket_fields(&new)
            .into_iter()
            .chain([("requester_id", json!(new.requester_id))])
            .filter(|(_, value)| !value.is_null() && *value != json!([]))
            .map(|(field, value)| (field, value, None))
            .collect();
        let comment_ids: Vec<u64> = new.comments.iter().map(|c| c.id).collect();
        let api_user = self.api_user;
        let audit = self.record(id, api_user, "Web service", set, &comment_ids);
        let answer = json!({"ticket": self.ticket_json(&new), "audit": {"id": audit, "ticket_id": id, "events": []}});
        self.tickets.push(new);
        let mut headers = HeaderMap::new();
        headers.insert(
            "location",
            HeaderValue::from_str(&format!("{}/api/v2/tickets/{id}.json", self.base)).unwrap(),
        );
        (StatusCode::CREATED, headers, answer)
    }

    fn update_ticket(&mut self, id: u64, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let Some(index) = self.tickets.iter().position(|t| t.id == id) else {
            return not_found();
        };
        let Some(ticket) = body.get("ticket").and_then(Value::as_object) else {
            return json_response(
                400,
                json!({"error": "InvalidValue", "description": "Parameter ticket is required"}),
            );
        };
        let recent = self.updates.entry(id).or_default();
        recent.retain(|t| t.elapsed() < Duration::from_secs(600));
        if recent.len() >= 30 {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("60"),
                )]
                .into_iter()
                .collect(),
                json!({"error": "TooManyRequests", "description": "You have exceeded the rate limit for updating this ticket"}),
            );
        }
        recent.push(Instant::now());
        if self.tickets[index].status == "closed" {
            return record_invalid(
                "status",
                "Status: closed prevents ticket update",
                "ClosedTicket",
            );
        }
        if let Err(answer) = self.check_ticket(ticket) {
            return *answer;
        }
        if ticket.get("status").and_then(Value::as_str) == Some("new")
            && self.tickets[index].status != "new"
        {
            return record_invalid(
                "status",
                "Status: new is not valid for a ticket that is no longer new",
                "InvalidValue",
            );
        }
        let comments = self.comments_of(ticket);
        let comment_ids: Vec<u64> = comments.iter().map(|c| c.id).collect();
        let before = ticket_fields(&self.tickets[index]);
        let t = &mut self.tickets[index];
        let text = |key: &str| ticket.get(key).and_then(Value::as_str).map(str::to_owned);
        if let Some(subject) = text("subject") {
            t.subject = Some(subject);
        }
        if let Some(status) = text("status") {
            t.status = status;
        }
        if let Some(priority) = text("priority") {
            t.priority = Some(priority);
        }
        if let Some(kind) = text("type") {
            t.kind = Some(kind);
        }
        if let Some(assignee) = ticket.get("assignee_id").and_then(Value::as_u64) {
            t.assignee_id = Some(assignee);
        }
        if let Some(group) = ticket.get("group_id").and_then(Value::as_u64) {
            t.group_id = Some(group);
        }
        if ticket.contains_key("tags") {
            t.tags = tags(ticket.get("tags"));
        }
        for tag in tags(ticket.get("additional_tags")) {
            if !t.tags.contains(&tag) {
                t.tags.push(tag);
            }
        }
        let removed = tags(ticket.get("remove_tags"));
        t.tags.retain(|tag| !removed.contains(tag));
        if let Some(external_id) = text("external_id") {
            t.external_id = Some(external_id);
        }
        t.comments.extend(comments);
        let api_user = self.api_user;
        settle_status(&mut self.tickets[index], api_user);
        let updated = self.tickets[index].clone();
        let changed = changes(&before, &ticket_fields(&updated));
        self.record(id, api_user, "Web service", changed, &comment_ids);
        json_response(
            200,
            json!({"ticket": self.ticket_json(&updated), "audit": {"ticket_id": id, "events": []}}),
        )
    }
}

/// Zendesk's own status rules: an assigned new ticket is open; solving assigns the ticket to
/// the agent who solves it when it has no assignee.
fn settle_status(ticket: &mut Ticket, api_user: u64) {
    if ticket.status == "new" && ticket.assignee_id.is_some() {
        ticket.status = "open".to_owned();
    }
    if matches!(ticket.status.as_str(), "solved" | "closed") && ticket.assignee_id.is_none() {
        ticket.assignee_id = Some(api_user);
    }
}

/// Tags as Zendesk keeps them: lower case, spaces as underscores, each once.
fn tags(value: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tag in value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let tag = tag.trim().to_lowercase().replace(' ', "_");
        if !tag.is_empty() && !out.contains(&tag) {
            out.push(tag);
        }
    }
    out
}

fn comment_json(c: &Comment) -> Value {
    let attachments: Vec<Value> = c
        .attachments
        .iter()
        .map(|u| json!({"id": u.attachment_id, "file_name": u.file_name, "content_type": u.content_type, "size": u.bytes.len()}))
        .collect();
    json!({"id": c.id, "type": c.kind, "body": c.body, "public": c.public, "author_id": c.author_id, "data": c.data,
           "attachments": attachments, "created_at": second(c.at)})
}

/// The fields a ticket event reports, as they stand.
fn ticket_fields(t: &Ticket) -> Vec<(&'static str, Value)> {
    vec![
        ("subject", json!(t.subject)),
        ("status", json!(t.status)),
        ("priority", json!(t.priority)),
        ("type", json!(t.kind)),
        ("assignee_id", json!(t.assignee_id)),
        ("group_id", json!(t.group_id)),
        ("tags", json!(t.tags)),
    ]
}

/// The fields that differ between two [`ticket_fields`]: (field, now, before).
fn changes(
    before: &[(&'static str, Value)],
    after: &[(&'static str, Value)],
) -> Vec<(&'static str, Value, Option<Value>)> {
    before
        .iter()
        .zip(after)
        .filter(|((_, old), (_, new))| old != new)
        .map(|((field, old), (_, new))| (*field, new.clone(), Some(old.clone())))
        .collect()
}

/// A time as Zendesk writes it: whole seconds, UTC.
fn second(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second())
        .unwrap_or(at)
        .to_string()
}

/// A comment body as the `html_body` Zendesk renders.
fn html(body: &str) -> String {
    let escaped = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\n', "<br>");
    format!("<div class=\"zd-comment\" dir=\"auto\"><p dir=\"auto\">{escaped}</p></div>")
}

fn bad_json() -> (StatusCode, HeaderMap, Value) {
    json_response(
        400,
        json!({"error": "Unprocessable Entity", "description": "The request body is not valid JSON"}),
    )
}

/// `/api/v2/users/123/tickets/requested` → `/api/v2/users/{id}/tickets/requested`.
fn endpoint_name(path: &str) -> String {
    path.split('/')
        .map(|p| if p.parse::<u64>().is_ok() { "{id}" } else { p })
        .collect::<Vec<_>>()
        .join("/")
}

fn url_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Percent-decoding, with `+` as a space.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Zendesk's search syntax, as far as users go: `key:value` terms and free text, all of which
/// must match.
fn matches_query(user: &User, query: &str) -> bool {
    query
        .split_whitespace()
        .all(|term| match term.split_once(':') {
            Some(("phone", value)) => {
                let wildcard = value.starts_with('*');
                let wanted: String = value.chars().filter(char::is_ascii_digit).collect();
                let have: String = user
                    .phone
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
                !wanted.is_empty()
                    && if wildcard {
                        have.ends_with(&wanted)
                    } else {
                        have == wanted
                    }
            }
            Some(("email", value)) => user
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(value.trim_matches('"'))),
            Some(("role", value)) => user.role == value,
            Some(("name", value)) => user.name.to_lowercase().contains(&value.to_lowercase()),
            _ => {
                let term = term.to_lowercase();
                user.name.to_lowercase().contains(&term)
                    || user
                        .email
                        .as_deref()
                        .is_some_and(|e| e.to_lowercase().contains(&term))
                    || user.phone.as_deref().is_some_and(|p| p.contains(&term))
            }
        })
}
