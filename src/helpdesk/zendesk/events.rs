//! What agents write on tickets, read back from Zendesk: sipdesk is never reachable from the
//! internet, so instead of a webhook it follows the incremental ticket event export
//! (`GET /api/v2/incremental/ticket_events?start_time=&include=comment_events`), time-based.
//!
//! - A page holds the comments of the events from `start_time` (Unix seconds, inclusive), in
//!   Zendesk's order, with each comment's plain-text `body` (not `html_body`). Only comments
//!   (`Comment` child events) are kept: voice comments and field changes are not replies.
//! - The next page (or the next poll, once `end_of_stream`) starts at `end_time`. Time-based
//!   exports repeat the events of the second a page ends on, so a comment may come twice: the
//!   caller keys on [`CommentEvent::comment_id`].
//! - Zendesk leaves out the minute before the request and refuses a `start_time` less than a
//!   minute old (422); the export has its own limit (10 requests a minute), and a 429 holds
//!   every request of the integration for the wait Zendesk asks, as any 429 does.

use jiff::Timestamp;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Zendesk, conflict_or_rejected, parse, rejected};
use crate::helpdesk::HelpdeskError;

const EXPORT: &str = "/api/v2/incremental/ticket_events.json";

/// One page of comment events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommentPage {
    /// In the order Zendesk gave them.
    pub comments: Vec<CommentEvent>,
    /// Where the next page, or the next poll, starts (Unix seconds).
    pub end_time: i64,
    /// Whether this page reached the end of what Zendesk exports now.
    pub end_of_stream: bool,
}

/// A comment written on a ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommentEvent {
    pub ticket_id: u64,
    pub comment_id: u64,
    pub author_id: u64,
    /// A reply the requester sees (`true`) or an internal note.
    pub public: bool,
    /// The plain text.
    pub body: String,
    pub at: Timestamp,
}

/// A ticket tagged `sms`: who it is with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextTicket {
    pub requester: u64,
    /// The requester's phone as Zendesk has it.
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TicketEvent {
    ticket_id: u64,
    /// Unix seconds.
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    child_events: Vec<Value>,
}

/// A `Comment` child event, as the `comment_events` sideload writes it.
#[derive(Debug, Deserialize)]
struct CommentChild {
    id: u64,
    /// Negative for Zendesk's own system comments.
    author_id: i64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    created_at: Option<Timestamp>,
}

impl Zendesk {
    /// One page of comment events from `start_time` (Unix seconds).
    pub async fn comment_events(&self, start_time: i64) -> Result<CommentPage, HelpdeskError> {
        let what = format!("GET {EXPORT}?start_time={start_time}");
        let start = start_time.to_string();
        let reply = self
            .get(
                EXPORT,
                &[("start_time", &start), ("include", "comment_events")],
            )
            .await?;
        if !reply.is_success() {
            return Err(rejected(&what, &reply));
        }
        let events: Vec<TicketEvent> = parse(&reply, "ticket_events", &what)?;
        // Documented as always there; without it, the next page starts where this one did.
        let end_time: Option<i64> = parse(&reply, "end_time", &what)?;
        let end_of_stream: bool = parse(&reply, "end_of_stream", &what)?;
        let mut comments = Vec::new();
        for event in events {
            let event_at = event.timestamp.and_then(|s| Timestamp::from_second(s).ok());
            for child in &event.child_events {
                let kind = child
                    .get("type")
                    .or_else(|| child.get("event_type"))
                    .and_then(Value::as_str);
                if kind != Some("Comment") {
                    continue;
                }
                // One comment read wrong must not stop every reply after it: it is said and
                // passed over (no agent's reply is a comment sipdesk cannot read).
                let comment: CommentChild = match serde_json::from_value(child.clone()) {
                    Ok(comment) => comment,
                    Err(e) => {
                        tracing::warn!(ticket = event.ticket_id, error = %e, "a comment event sipdesk cannot read is passed over");
                        continue;
                    }
                };
                let Ok(author_id) = u64::try_from(comment.author_id) else {
                    // Zendesk's own system comments: never a reply.
                    continue;
                };
                comments.push(CommentEvent {
                    ticket_id: event.ticket_id,
                    comment_id: comment.id,
                    author_id,
                    public: comment.public,
                    body: comment.body,
                    at: comment
                        .created_at
                        .or(event_at)
                        .unwrap_or(Timestamp::UNIX_EPOCH),
                });
            }
        }
        Ok(CommentPage {
            comments,
            end_time: end_time.unwrap_or(start_time),
            end_of_stream,
        })
    }

    /// Whether a ticket is a text conversation (tagged `sms`), and then its requester's phone
    /// and e-mail; `None` for another ticket, or one Zendesk no longer has.
    pub async fn text_ticket(&self, ticket: u64) -> Result<Option<TextTicket>, HelpdeskError> {
        let path = format!("/api/v2/tickets/{ticket}.json");
        let reply = self.get(&path, &[]).await?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        if !reply.is_success() {
            return Err(rejected(&format!("GET {path}"), &reply));
        }
        #[derive(Deserialize)]
        struct Ticket {
            #[serde(default)]
            tags: Vec<String>,
            requester_id: Option<u64>,
        }
        let found: Ticket = parse(&reply, "ticket", &format!("GET {path}"))?;
        if !found.tags.iter().any(|t| t == super::rules::SMS_TAG) {
            return Ok(None);
        }
        let Some(requester) = found.requester_id else {
            return Ok(None);
        };
        let user = self.user(requester).await?;
        Ok(Some(TextTicket {
            requester,
            phone: user.as_ref().and_then(|u| u.phone.clone()),
            email: user.and_then(|u| u.email),
        }))
    }

    /// The user's e-mail and role, None when Zendesk has no such user.
    pub async fn user_summary(
        &self,
        id: u64,
    ) -> Result<Option<(Option<String>, Option<String>)>, HelpdeskError> {
        Ok(self.user(id).await?.map(|user| (user.email, user.role)))
    }

    /// Adds an internal note to a ticket (for "the reply could not be sent: <reason>").
    pub async fn internal_note(&self, ticket: u64, body: &str) -> Result<(), HelpdeskError> {
        let path = format!("/api/v2/tickets/{ticket}.json");
        let url = self.http.url(&path, &[])?;
        let note = json!({ "ticket": { "comment": { "body": body, "public": false } } });
        let reply = self.http.send(Method::PUT, url, Some(&note), &[]).await?;
        if !reply.is_success() {
            return Err(conflict_or_rejected(&format!("PUT {path}"), &reply));
        }
        Ok(())
    }
}
