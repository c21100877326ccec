//! Agents' replies on text tickets, sent back to the customer as texts (the Klaviyo seed: "any
//! reply on the ticket by a Zendesk agent sends an SMS to the customer", from the number the
//! customer texted).
//!
//! sipdesk is never reachable from the internet, so it learns of replies by following each
//! Zendesk integration's incremental ticket event export every `[sms] reply_poll`
//! ([`crate::helpdesk::zendesk::events`]), from a position kept in the database
//! ([`crate::store::replies`]). Only integrations that can have text tickets are followed:
//! Zendesk entries linked to a group of one of the `[[sms_numbers]]`.
//!
//! For each public comment on a ticket that a customer's text was delivered to:
//! - its author is looked up; an end user's comment (the customer's own texts, which sipdesk
//!   writes in their name) is not a reply. A reply whose author has the customer's own e-mail
//!   is kept as `not_sent` with that reason (the seed);
//! - the reply is kept (`pending`) before the position moves past it, then sent as a MESSAGE to
//!   the PBX through the proxy ([`crate::control::Handle::send_text`]) from the company's number
//!   the customer's last text went to, and recorded as an `sms_outbound` text (which the other
//!   integrations log; the Zendesk one it was written in skips it);
//! - a reply the PBX refuses, or that it does not answer, is `failed`, and the ticket gets an
//!   internal note saying so and why. A reply found `sending` at start (sipdesk stopped while
//!   sending it) is failed the same way, never sent twice.
//!
//! The token's user must be a Zendesk admin: the export is "allowed for admins" only.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HelpdeskSettings, Vendor};
use crate::control::Handle;
use crate::helpdesk::HelpdeskError;
use crate::helpdesk::zendesk::Zendesk;
use crate::helpdesk::zendesk::events::CommentEvent;
use crate::proxy::TextOrder;
use crate::store::Store;
use crate::store::replies::{self, Reply};

/// How far back a first reading starts: the export refuses less than a minute.
const FIRST_LOOK_BACK: i64 = 61;
/// Most pages read in one poll (1,000 events each).
const PAGES_PER_POLL: usize = 5;
/// Why a reply left `sending` by a stop is not sent again.
const STOPPED: &str =
    "sipdesk stopped while sending it; it is not sent again, so the customer never gets it twice";

/// Follows every Zendesk integration that may have text tickets, until `stop`.
pub async fn run(
    config: watch::Receiver<Arc<Config>>,
    store: Store,
    handle: Handle,
    instance: String,
    stop: CancellationToken,
) {
    let now = Timestamp::now();
    match store.abandon_replies(&instance, STOPPED, now).await {
        Ok(abandoned) => {
            for reply in abandoned {
                tracing::warn!(integration = %reply.integration, ticket = %reply.ticket_id, "a reply was being sent when sipdesk stopped; it is not sent again");
                let config = config.borrow().clone();
                if let Some(zendesk) = connector(&config, &reply.integration) {
                    note_failure(&zendesk, &reply, STOPPED).await;
                }
            }
        }
        Err(error) => tracing::warn!(error = %error, "could not read the replies left sending"),
    }
    loop {
        let config_now = config.borrow().clone();
        let every = config_now.sms.reply_poll;
        for settings in followed(&config_now) {
            let Some(zendesk) = connector(&config_now, &settings.name) else {
                continue;
            };
            let follower = Follower {
                name: &settings.name,
                zendesk: &zendesk,
                store: &store,
                handle: &handle,
                instance: &instance,
            };
            if let Err(error) = follower.poll().await {
                tracing::warn!(integration = %settings.name, error = %error, "could not read replies from Zendesk; trying again at the next poll");
            }
            if let Err(error) = follower.send_pending().await {
                tracing::warn!(integration = %settings.name, error = %error, "could not send replies; trying again at the next poll");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The Zendesk integrations linked to a group of one of the company's text numbers.
fn followed(config: &Config) -> Vec<&HelpdeskSettings> {
    config
        .helpdesks
        .iter()
        .filter(|h| matches!(h.vendor, Vendor::Zendesk(_)))
        .filter(|h| {
            config
                .sms
                .numbers
                .iter()
                .any(|n| n.groups.iter().any(|g| h.rules.groups.contains(g)))
        })
        .collect()
}

/// A Zendesk connector of its own for the integration (so the export's strict limit never holds
/// back ticket deliveries); `None`, said in the log, when it cannot be made.
fn connector(config: &Config, name: &str) -> Option<Zendesk> {
    let settings = config.helpdesks.iter().find(|h| h.name == name)?;
    let Vendor::Zendesk(own) = &settings.vendor else {
        return None;
    };
    let made = settings
        .secret
        .read()
        .and_then(|secret| Zendesk::new(settings, own, &secret, config.defaults.region));
    match made {
        Ok(zendesk) => Some(zendesk),
        Err(error) => {
            tracing::warn!(integration = %name, error = %error, "cannot follow replies");
            None
        }
    }
}

async fn note_failure(zendesk: &Zendesk, reply: &Reply, why: &str) {
    let Ok(ticket) = reply.ticket_id.parse::<u64>() else {
        return;
    };
    let note = format!(
        "This reply was not sent to {} as a text: {why}.\n\n{}",
        reply.customer, reply.body
    );
    if let Err(error) = zendesk.internal_note(ticket, &note).await {
        tracing::warn!(integration = %reply.integration, ticket, error = %error, "could not note on the ticket that a reply was not sent");
    }
}

struct Follower<'a> {
    name: &'a str,
    zendesk: &'a Zendesk,
    store: &'a Store,
    handle: &'a Handle,
    instance: &'a str,
}

impl Follower<'_> {
    /// Reads the export from the kept position, keeps each reply, moves the position on.
    async fn poll(&self) -> Result<(), String> {
        let now = Timestamp::now();
        let mut position = match self.store.reply_cursor(self.name).await {
            Ok(Some(position)) => position,
            Ok(None) => {
                // The first reading: from now (nothing before sipdesk logged texts matters).
                let start = now.as_second() - FIRST_LOOK_BACK;
                self.store
                    .set_reply_cursor(self.name, start, now)
                    .await
                    .map_err(|e| e.to_string())?;
                start
            }
            Err(error) => return Err(error.to_string()),
        };
        for _ in 0..PAGES_PER_POLL {
            let page = self
                .zendesk
                .comment_events(position)
                .await
                .map_err(|e| say(&e))?;
            for comment in page.comments.iter().filter(|c| c.public) {
                self.consider(comment).await?;
            }
            if page.end_time > position {
                position = page.end_time;
                self.store
                    .set_reply_cursor(self.name, position, Timestamp::now())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if page.end_of_stream {
                break;
            }
        }
        Ok(())
    }

    /// One public comment: kept as a reply to send, or as not sent with why, or ignored.
    async fn consider(&self, comment: &CommentEvent) -> Result<(), String> {
        let ticket = comment.ticket_id.to_string();
        let Some(conversation) = self
            .store
            .text_conversation(self.name, &ticket)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let author = self
            .zendesk
            .user_summary(comment.author_id)
            .await
            .map_err(|e| say(&e))?;
        let (author_email, role) = author.unwrap_or((None, None));
        if role.as_deref() == Some("end-user") {
            // The customer's own words (their texts, written in their name), not a reply.
            return Ok(());
        }
        let customer_email = match conversation
            .contact_id
            .as_deref()
            .and_then(|id| id.parse::<u64>().ok())
        {
            Some(id) => self
                .zendesk
                .user_summary(id)
                .await
                .map_err(|e| say(&e))?
                .and_then(|(email, _)| email),
            None => None,
        };
        let same_email = matches!((&author_email, &customer_email), (Some(a), Some(c)) if a.eq_ignore_ascii_case(c));
        let body = comment.body.trim().to_owned();
        let (state, detail) = if same_email {
            (
                replies::NOT_SENT,
                Some("its author has the customer's own e-mail address".to_owned()),
            )
        } else if body.is_empty() {
            (replies::NOT_SENT, Some("the reply has no text".to_owned()))
        } else {
            (replies::PENDING, None)
        };
        let reply = Reply {
            id: format!("{}:{}", self.name, comment.comment_id),
            integration: self.name.to_owned(),
            ticket_id: ticket,
            customer: conversation.customer,
            number: conversation.number,
            body,
            author: author_email,
            state: state.to_owned(),
            detail,
        };
        let new = self
            .store
            .keep_reply(&reply, Timestamp::now())
            .await
            .map_err(|e| e.to_string())?;
        if new && state == replies::NOT_SENT {
            tracing::info!(integration = %self.name, ticket = %reply.ticket_id, why = reply.detail.as_deref().unwrap_or_default(), "a reply is not sent as a text");
        }
        Ok(())
    }

    /// Sends the integration's pending replies, one at a time.
    async fn send_pending(&self) -> Result<(), String> {
        let pending = self
            .store
            .pending_replies(self.name)
            .await
            .map_err(|e| e.to_string())?;
        for reply in pending {
            let taken = self
                .store
                .take_reply(&reply.id, self.instance, Timestamp::now())
                .await
                .map_err(|e| e.to_string())?;
            if !taken {
                continue;
            }
            let order = TextOrder {
                id: format!("reply-{}", reply.id.replace(':', "-")),
                from: reply.number.clone(),
                to: reply.customer.clone(),
                body: reply.body.clone(),
                via: self.name.to_owned(),
                ticket: reply.ticket_id.clone(),
            };
            let failure = match self.handle.send_text(order).await {
                Ok(failure) => failure,
                // Stopping: the row stays `sending`, and the next start fails it with why.
                Err(_) => return Ok(()),
            };
            let now = Timestamp::now();
            match failure {
                None => {
                    tracing::info!(integration = %self.name, ticket = %reply.ticket_id, to = %reply.customer, "reply sent as a text");
                    self.store
                        .finish_reply(&reply.id, replies::SENT, None, now)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Some(why) => {
                    tracing::warn!(integration = %self.name, ticket = %reply.ticket_id, to = %reply.customer, why = %why, "the PBX did not take a reply sent as a text");
                    let why = format!("the PBX answered {why}");
                    self.store
                        .finish_reply(&reply.id, replies::FAILED, Some(&why), now)
                        .await
                        .map_err(|e| e.to_string())?;
                    note_failure(self.zendesk, &reply, &why).await;
                }
            }
        }
        Ok(())
    }
}

fn say(error: &HelpdeskError) -> String {
    error.to_string()
}

/// The slowest poll allowed by the export's limit with room for a few pages.
pub const MIN_POLL: Duration = Duration::from_secs(10);
