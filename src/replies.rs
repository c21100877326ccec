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
//! For each public comment (sipdesk's own comments, which carry its `[sipdesk:…]` marker, left
//! aside) on a text ticket — one a customer's text was delivered to, or, for a ticket sipdesk
//! has no delivery for yet (a follow-up, a merge, a create whose answer was lost), one Zendesk
//! shows tagged `sms` whose requester has a phone number:
//! - its author is looked up; only an agent's or admin's comment is a reply (an end user's is
//!   the customer's own words). A reply by an author Zendesk no longer has, or whose author has
//!   the customer's own e-mail (the seed), or to a customer whose number is not a phone number,
//!   is kept as `not_sent` with that reason;
//! - the reply is kept (`pending`) before the position moves past it, then sent as a MESSAGE to
//!   the PBX through the proxy ([`crate::control::Handle::send_text`]) from the company's number
//!   the customer's last text went to, and recorded as an `sms_outbound` text (which the other
//!   integrations log; the Zendesk one it was written in skips it);
//! - a reply the PBX refuses, or that it does not answer, is `failed`, and the ticket gets an
//!   internal note saying so and why. A reply found `sending` at start (sipdesk stopped while
//!   sending it: the PBX may or may not have taken it) is failed the same way, never sent twice.
//!
//! Each integration keeps one connector across polls (rebuilt when the configuration changes),
//! so a 429's wait holds its next requests; a poll reads at most one page per 12 s of
//! `reply_poll`, keeping one instance within the export's 10 requests a minute. Tickets found
//! (or not) to be text tickets, and comments' authors, are remembered for ten minutes. A comment
//! that cannot be looked into (Zendesk refuses or fails the lookup) holds the position for up to
//! three polls, then is kept as `not_sent` with the error, so one lasting failure never holds
//! back the replies after it.
//!
//! The token's user must be a Zendesk admin: the export is "allowed for admins" only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HelpdeskSettings, Vendor};
use crate::control::Handle;
use crate::helpdesk::HelpdeskError;
use crate::helpdesk::zendesk::Zendesk;
use crate::helpdesk::zendesk::events::CommentEvent;
use crate::phone::{self, Caller};
use crate::proxy::TextOrder;
use crate::store::Store;
use crate::store::replies::{self, Reply};

/// How far back a first reading starts: the export refuses less than a minute.
const FIRST_LOOK_BACK: i64 = 61;
/// A page (1,000 events) may be read per this much of `reply_poll`.
const PAGE_EVERY: Duration = Duration::from_secs(12);
/// How long a ticket found to be (or not to be) a text ticket is remembered.
const TICKET_MEMORY: Duration = Duration::from_secs(600);
/// Why a reply left `sending` by a stop is not sent again.
const STOPPED: &str = "sipdesk stopped while sending it (the PBX may or may not have taken it); it is not sent again, so the customer never gets it twice";

/// The slowest poll allowed by the export's limit with room for a few pages.
pub const MIN_POLL: Duration = Duration::from_secs(10);

/// Who a text ticket is with.
#[derive(Clone, Debug)]
struct Party {
    customer: String,
    number: String,
    /// The customer's e-mail, when Zendesk has one.
    email: Option<String>,
}

/// A comment whose handling failed this many polls in a row is kept as not sent, with the
/// error, so one lasting failure cannot hold back every reply after it.
const TRIES: u32 = 3;

/// A user's e-mail and role, as Zendesk said; `None` when it has no such user.
type Author = Option<(Option<String>, Option<String>)>;

/// One followed integration, kept across polls.
#[derive(Default)]
struct Memory {
    /// Tickets known to be text tickets (with whom) or not, and since when.
    tickets: HashMap<u64, (Instant, Option<Party>)>,
    /// Authors looked up, and since when.
    authors: HashMap<u64, (Instant, Author)>,
    /// Comments whose handling failed, and how many polls in a row.
    failures: HashMap<u64, u32>,
}

struct Followed {
    zendesk: Zendesk,
    memory: Memory,
}

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
    let mut built: Option<Arc<Config>> = None;
    let mut followed: HashMap<String, Followed> = HashMap::new();
    loop {
        let config_now = config.borrow().clone();
        if !built.as_ref().is_some_and(|b| Arc::ptr_eq(b, &config_now)) {
            // A new configuration (or the first): the connectors are made again from it.
            followed.clear();
            built = Some(config_now.clone());
        }
        let every = config_now.sms.reply_poll;
        let pages = (every.as_secs() / PAGE_EVERY.as_secs()).max(1) as usize;
        for settings in followed_integrations(&config_now) {
            if !followed.contains_key(&settings.name) {
                let Some(zendesk) = connector(&config_now, &settings.name) else {
                    continue;
                };
                followed.insert(
                    settings.name.clone(),
                    Followed {
                        zendesk,
                        memory: Memory::default(),
                    },
                );
            }
            let Some(one) = followed.get_mut(&settings.name) else {
                continue;
            };
            one.memory
                .tickets
                .retain(|_, (at, _)| at.elapsed() < TICKET_MEMORY);
            one.memory
                .authors
                .retain(|_, (at, _)| at.elapsed() < TICKET_MEMORY);
            let mut follower = Follower {
                name: &settings.name,
                settings,
                config: &config_now,
                zendesk: &one.zendesk,
                memory: &mut one.memory,
                store: &store,
                handle: &handle,
                instance: &instance,
            };
            if let Err(error) = follower.poll(pages).await {
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
fn followed_integrations(config: &Config) -> Vec<&HelpdeskSettings> {
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

/// A phone number as sipdesk keys customers: E.164, or `None`.
fn e164(text: &str, config: &Config) -> Option<String> {
    match phone::normalize(text, config.defaults.region) {
        Ok(Caller::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

struct Follower<'a> {
    name: &'a str,
    settings: &'a HelpdeskSettings,
    config: &'a Config,
    zendesk: &'a Zendesk,
    memory: &'a mut Memory,
    store: &'a Store,
    handle: &'a Handle,
    instance: &'a str,
}

impl Follower<'_> {
    /// Reads the export from the kept position (at most `pages` pages), keeps each reply,
    /// moves the position on.
    async fn poll(&mut self, pages: usize) -> Result<(), String> {
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
        for _ in 0..pages {
            let page = self
                .zendesk
                .comment_events(position)
                .await
                .map_err(|e| say(&e))?;
            for comment in page.comments.iter().filter(|c| c.public) {
                match self.consider(comment).await {
                    Ok(()) => {
                        self.memory.failures.remove(&comment.comment_id);
                    }
                    Err(error) => {
                        let tries = self.memory.failures.entry(comment.comment_id).or_default();
                        *tries += 1;
                        if *tries < TRIES {
                            return Err(error);
                        }
                        self.memory.failures.remove(&comment.comment_id);
                        self.give_up(comment, &error).await?;
                    }
                }
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

    /// A comment whose handling kept failing: kept as not sent, with the error, so the replies
    /// after it go on.
    async fn give_up(&mut self, comment: &CommentEvent, error: &str) -> Result<(), String> {
        tracing::warn!(integration = %self.name, ticket = comment.ticket_id, comment = comment.comment_id, %error, "a comment could not be looked into {TRIES} times; it is not sent as a text");
        let reply = Reply {
            id: format!("{}:{}", self.name, comment.comment_id),
            integration: self.name.to_owned(),
            ticket_id: comment.ticket_id.to_string(),
            customer: String::new(),
            number: String::new(),
            body: comment.body.trim().to_owned(),
            author: None,
            state: replies::NOT_SENT.to_owned(),
            detail: Some(format!(
                "it could not be looked into ({error}); it is not known to be a reply to a text"
            )),
        };
        self.store
            .keep_reply(&reply, Timestamp::now())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// A user's e-mail and role, remembered for a while.
    async fn author(&mut self, id: u64) -> Result<Author, String> {
        if let Some((_, known)) = self.memory.authors.get(&id) {
            return Ok(known.clone());
        }
        let found = self.zendesk.user_summary(id).await.map_err(|e| say(&e))?;
        self.memory
            .authors
            .insert(id, (Instant::now(), found.clone()));
        Ok(found)
    }

    /// Who a ticket is with, if it is a text ticket: from the texts delivered to it, else from
    /// Zendesk (tagged `sms`, its requester's phone), remembered for a while.
    async fn party(&mut self, ticket: u64) -> Result<Option<Party>, String> {
        if let Some((_, known)) = self.memory.tickets.get(&ticket) {
            return Ok(known.clone());
        }
        let local = self
            .store
            .text_conversation(self.name, &ticket.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let party = match local {
            Some(conversation) => {
                let email = match conversation
                    .contact_id
                    .as_deref()
                    .and_then(|id| id.parse::<u64>().ok())
                {
                    Some(id) => self.author(id).await?.and_then(|(email, _)| email),
                    None => None,
                };
                Some(Party {
                    customer: conversation.customer,
                    number: conversation.number,
                    email,
                })
            }
            None => match self
                .zendesk
                .text_ticket(ticket)
                .await
                .map_err(|e| say(&e))?
            {
                None => None,
                Some(found) => {
                    let customer = found
                        .phone
                        .as_deref()
                        .and_then(|p| e164(p, self.config))
                        .unwrap_or_default();
                    // The company's numbers whose texts this integration logs.
                    let ours: Vec<String> = self
                        .config
                        .sms
                        .numbers
                        .iter()
                        .filter(|n| {
                            n.groups
                                .iter()
                                .any(|g| self.settings.rules.groups.contains(g))
                        })
                        .map(|n| n.number.clone())
                        .collect();
                    let texted = if customer.is_empty() {
                        None
                    } else {
                        self.store
                            .number_texted_by(&customer, &ours)
                            .await
                            .map_err(|e| e.to_string())?
                    };
                    // A customer who never texted one of them: the first of them.
                    let number = texted.or_else(|| ours.first().cloned());
                    number.map(|number| Party {
                        customer,
                        number,
                        email: found.email,
                    })
                }
            },
        };
        self.memory
            .tickets
            .insert(ticket, (Instant::now(), party.clone()));
        Ok(party)
    }

    /// One public comment: kept as a reply to send, or as not sent with why, or ignored.
    async fn consider(&mut self, comment: &CommentEvent) -> Result<(), String> {
        if comment.body.contains("[sipdesk:") {
            // sipdesk's own writing (a customer's text, a note): not a reply.
            return Ok(());
        }
        let Some(party) = self.party(comment.ticket_id).await? else {
            return Ok(());
        };
        let author = self.author(comment.author_id).await?;
        let (author_email, role) = match author {
            Some((email, role)) => (email, role),
            None => (None, None),
        };
        let body = comment.body.trim().to_owned();
        let why_not = match role.as_deref() {
            // The customer's own words (or another end user's): not a reply.
            Some("end-user") => return Ok(()),
            Some("agent" | "admin") => {
                let same = matches!((&author_email, &party.email), (Some(a), Some(c)) if a.eq_ignore_ascii_case(c));
                if same {
                    Some("its author has the customer's own e-mail address")
                } else if !party.customer.starts_with('+') {
                    Some("the customer's number is not a phone number a text can go to")
                } else if body.is_empty() {
                    Some("the reply has no text")
                } else {
                    None
                }
            }
            _ => Some("Zendesk no longer knows its author, so it is not known to be an agent's"),
        };
        let reply = Reply {
            id: format!("{}:{}", self.name, comment.comment_id),
            integration: self.name.to_owned(),
            ticket_id: comment.ticket_id.to_string(),
            customer: party.customer,
            number: party.number,
            body,
            author: author_email,
            state: if why_not.is_some() {
                replies::NOT_SENT
            } else {
                replies::PENDING
            }
            .to_owned(),
            detail: why_not.map(str::to_owned),
        };
        let new = self
            .store
            .keep_reply(&reply, Timestamp::now())
            .await
            .map_err(|e| e.to_string())?;
        if let (true, Some(why)) = (new, why_not) {
            tracing::info!(integration = %self.name, ticket = %reply.ticket_id, why, "a reply is not sent as a text");
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
                author: reply.author.clone(),
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
                    tracing::warn!(integration = %self.name, ticket = %reply.ticket_id, to = %reply.customer, why = %why, "a reply could not be sent as a text");
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
