//! Connectors: how a call reaches a given helpdesk over HTTPS. The delivery worker
//! ([`crate::delivery`]) hands each connector a [`Job`] — the delivery, its call, the party, and
//! the means to save progress (the contact found, the request about to be sent) — and gets back
//! what was written or why nothing was. A connector knows nothing of SIP.
//!
//! What every connector shares lives here and in [`http`] (pacing under the helpdesk's rate
//! limit; one classification of answers into success, retry with the wait the helpdesk asked
//! for, and failure with its own message; pluggable credentials and rate-limit headers) and
//! [`crate::tickets`] (which calls are logged, the call report). Each vendor module holds only
//! its API and its own rules: [`zendesk`] (tickets, Zendesk's previous-ticket rule) and
//! [`klaviyo`] (events on profiles) and [`webhook`] (Standard Webhooks). Adding a helpdesk is one module here, its keys in
//! [`crate::config`], and a [`Connector`] variant.

pub mod helpscout;
pub mod http;
pub mod intercom;
pub mod klaviyo;
pub mod webhook;
pub mod zendesk;

use std::time::Duration;

use jiff::Timestamp;

use crate::call::{CallRecord, Direction};
use crate::config::{HelpdeskSettings, Vendor};
use crate::directory::{Directory, Said};
use crate::phone::{self, Caller, Region};
use crate::recordings::{self, Audio, Link, Recordings};
use crate::store::tags::Retag;
use crate::store::{ContactEntry, Delivery, DeliveryState, NewDelivery, Store, StoreError};

/// Why a delivery attempt did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelpdeskError {
    /// Worth trying again (rate limit, 5xx, timeout, unreachable, a database hiccup); `after`
    /// is the wait the helpdesk asked for, if it did.
    #[error("{reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Nothing failed: the attempt stops to let the helpdesk catch up (its search lags behind a
    /// write an earlier attempt may have made), to let the call's own delivery go first, or to
    /// start again at once after forgetting an id the helpdesk no longer has. The delivery is
    /// tried again after exactly `after`; it does not count as a failed attempt, so the
    /// failures' exponential back-off (which an outage may have driven to minutes) does not
    /// stretch the wait.
    #[error("{reason}")]
    Wait { reason: String, after: Duration },
    /// Will not succeed by trying again (refused credentials, a request the helpdesk rejects):
    /// the delivery fails at once with this reason, until an admin retries it.
    #[error("{0}")]
    Permanent(String),
    /// The delivery is no longer this worker's (its lease ran out and it was claimed again):
    /// the attempt stops without sending or saving anything more.
    #[error("{0}")]
    TakenOver(String),
}

impl From<StoreError> for HelpdeskError {
    fn from(error: StoreError) -> HelpdeskError {
        if let StoreError::TakenOver { .. } = error {
            return HelpdeskError::TakenOver(error.to_string());
        }
        HelpdeskError::Retry {
            reason: format!("{:#}", anyhow::Error::from(error)),
            after: None,
        }
    }
}

/// The helpdesk refused a request (`what`), saying `message`: a 409 (two writes to one record
/// at once) is worth another try, anything else fails the delivery with the helpdesk's words.
pub fn refused(what: &str, helpdesk: &str, reply: &http::Reply, message: &str) -> HelpdeskError {
    let reason = format!(
        "{what}: {helpdesk} refused it ({} {message})",
        reply.status.as_u16()
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

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// A ticket was created or updated; `detail` says which and how.
    Ticket { id: String, detail: String },
    /// The rules log nothing for this call, for this reason.
    Skipped(String),
}

/// Who a call is about, as a helpdesk contact: the other party of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Party {
    Number(String),
    /// Withheld, or a number that cannot be read: logged under the shared anonymous contact,
    /// with what the PBX sent (if anything) for the note.
    Anonymous {
        sent: Option<String>,
    },
}

impl Party {
    /// The caller of an inbound call, the dialled number of an outbound one.
    pub fn of(call: &CallRecord, region: Region) -> Party {
        let number = match call.direction {
            Direction::Inbound => &call.caller,
            Direction::Outbound => &call.callee,
        };
        match phone::normalize(number, region) {
            Ok(Caller::Number(e164)) => Party::Number(e164.to_string()),
            Ok(Caller::Anonymous) => Party::Anonymous { sent: None },
            Err(_) => Party::Anonymous {
                sent: Some(number.clone()),
            },
        }
    }

    /// The directory key and the outbox's ordering key: the E.164 number, or `anonymous`.
    pub fn key(&self) -> &str {
        match self {
            Party::Number(number) => number,
            Party::Anonymous { .. } => ANONYMOUS,
        }
    }
}

/// The directory key of the shared anonymous contact.
pub const ANONYMOUS: &str = "anonymous";

/// A call's recording for a helpdesk that takes files up to some size.
#[derive(Debug)]
pub enum Attachable {
    /// The call has no voicemail.
    None,
    Audio(Audio),
    /// The file (`size` bytes) is larger than the helpdesk takes: the note says a voicemail was
    /// left instead ([`Job::too_large_text`]).
    TooLarge {
        size: u64,
    },
}

/// `extra` lines put into a note just before its last line, the call's marker, which stays last.
pub fn before_marker(note: &str, extra: &str) -> String {
    match note.rsplit_once('\n') {
        Some((body, marker)) => format!("{body}\n{extra}\n{marker}"),
        None => format!("{extra}\n{note}"),
    }
}

/// One delivery attempt, with what a connector may use and save.
pub struct Job<'a> {
    pub delivery: &'a Delivery,
    pub call: &'a CallRecord,
    pub party: Party,
    pub store: &'a Store,
    pub directory: &'a Directory,
    /// The way to the call's voicemail: its file, a signed link to it.
    pub recordings: &'a Recordings,
}

impl Job<'_> {
    /// The call's voicemail recording, read whole; `None` for a call without one. A recording
    /// that is gone (removed by retention, or by hand) fails the delivery for good, saying so.
    pub async fn voicemail_audio(&self) -> Result<Option<Audio>, HelpdeskError> {
        recordings::audio(self.call).await.map_err(|missing| {
            HelpdeskError::Permanent(format!(
                "the voicemail cannot be attached: {missing}; retrying will not bring it back"
            ))
        })
    }

    /// The call's voicemail recording when it is at most `limit` bytes (`vendor` takes no
    /// larger), read whole; its size only when larger (checked before reading it, with a
    /// warning). A recording that is gone fails the delivery for good, as
    /// [`Job::voicemail_audio`].
    pub async fn voicemail_within(
        &self,
        limit: u64,
        vendor: &str,
    ) -> Result<Attachable, HelpdeskError> {
        let size = recordings::size(self.call).await.map_err(|missing| {
            HelpdeskError::Permanent(format!(
                "the voicemail cannot be attached: {missing}; retrying will not bring it back"
            ))
        })?;
        match size {
            None => Ok(Attachable::None),
            Some(size) if size > limit => {
                tracing::warn!(
                    delivery = %self.delivery.id,
                    call = %self.call.id,
                    size,
                    limit,
                    "the voicemail's recording is larger than {vendor} takes: the note says a voicemail was left, without the file"
                );
                Ok(Attachable::TooLarge { size })
            }
            Some(_) => Ok(match self.voicemail_audio().await? {
                Some(audio) => Attachable::Audio(audio),
                None => Attachable::None,
            }),
        }
    }

    /// The lines a note carries instead of a recording too large to attach: that a voicemail
    /// was left, how long it is, that the file was too large for `vendor` (which takes up to
    /// `limit` bytes, when known), and the signed link to it (or why there is none).
    pub fn too_large_text(
        &self,
        size: u64,
        limit: Option<u64>,
        vendor: &str,
    ) -> Result<String, HelpdeskError> {
        let duration = self
            .call
            .voicemail
            .as_ref()
            .map_or(0, |voicemail| voicemail.duration_ms);
        let link = self.voicemail_link()?;
        Ok(format!(
            "A voicemail was left ({}). Its recording ({}) is too large to attach: {}.\n{}",
            recordings::duration_text(duration),
            recordings::size_text(size),
            match limit {
                Some(limit) => format!(
                    "{vendor} takes files up to {}",
                    recordings::size_text(limit)
                ),
                None => format!("{vendor} refused it as too large"),
            },
            self.voicemail_link_text(link.as_ref())
        ))
    }

    /// A signed link to the call's voicemail, made now; `None` for a call without one, or when
    /// `[media] public_url` is not set.
    pub fn voicemail_link(&self) -> Result<Option<Link>, HelpdeskError> {
        if self.call.voicemail.is_none() {
            return Ok(None);
        }
        self.recordings
            .link(&self.call.id, Timestamp::now())
            .map_err(|error| HelpdeskError::Retry {
                reason: format!("{:#}", anyhow::Error::from(error)),
                after: None,
            })
    }

    /// The lines a note adds about the voicemail's link: where to listen and until when, or why
    /// there is no link. Empty for a call without a voicemail.
    pub fn voicemail_link_text(&self, link: Option<&Link>) -> String {
        if self.call.voicemail.is_none() {
            return String::new();
        }
        match link {
            Some(link) => format!(
                "Listen: {} (the link works until {})",
                link.url,
                link.expires.strftime("%Y-%m-%d %H:%M UTC")
            ),
            None => "No link to the recording: sipdesk's [media] public_url is not set".to_owned(),
        }
    }

    /// Saves the contact the delivery goes to, so a retry does not look for it again.
    pub async fn remember_contact(&self, contact_id: &str) -> Result<(), HelpdeskError> {
        Ok(self
            .store
            .delivery_contact(self.delivery, Some(contact_id))
            .await?)
    }

    /// The contact turned out gone from the helpdesk (merged, deleted): forgets it everywhere
    /// and drops the request made for it, so the next attempt looks the caller up again.
    pub async fn contact_gone(&self) -> Result<(), HelpdeskError> {
        self.forget().await?;
        self.store.delivery_contact(self.delivery, None).await?;
        self.remember_request(None).await
    }

    /// Saves the request about to be sent (`None`: none outstanding), so a retry sends the very
    /// same one (same idempotency key, same body) or sees that it already went through.
    pub async fn remember_request(&self, request: Option<&str>) -> Result<(), HelpdeskError> {
        Ok(self.store.delivery_request(self.delivery, request).await?)
    }

    /// The progress an earlier attempt saved, when it is of type `T` (another kind of
    /// connector's, after the entry's kind changed, is not).
    pub fn saved<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.delivery.request.as_deref()?).ok()
    }

    /// Saves the connector's progress, so the next attempt takes up from there.
    pub async fn save<T: serde::Serialize>(&self, progress: &T) -> Result<(), HelpdeskError> {
        let text = serde_json::to_string(progress)
            .map_err(|e| HelpdeskError::Permanent(format!("cannot save the progress: {e}")))?;
        self.remember_request(Some(&text)).await
    }

    /// What the directory knows of the party on this integration.
    pub async fn directory_entry(&self) -> Result<Option<ContactEntry>, HelpdeskError> {
        Ok(self
            .store
            .contact(&self.delivery.integration, self.party.key())
            .await?)
    }

    /// Records what the helpdesk said about the party: `None` when it has no contact.
    pub async fn learn(
        &self,
        contact_id: Option<String>,
        name: Option<String>,
        inactive: bool,
    ) -> Result<(), HelpdeskError> {
        let entry = ContactEntry {
            integration: self.delivery.integration.clone(),
            phone: self.party.key().to_owned(),
            contact_id,
            name,
            inactive,
            checked_at: Timestamp::now(),
        };
        self.store.save_contact(&entry).await?;
        self.directory
            .learn(&entry.integration, &entry.phone, Said::of(&entry));
        Ok(())
    }

    /// Forgets the party's contact (the helpdesk no longer has it).
    pub async fn forget(&self) -> Result<(), HelpdeskError> {
        self.store
            .forget_contact(&self.delivery.integration, self.party.key())
            .await?;
        self.directory
            .forget(&self.delivery.integration, self.party.key());
        Ok(())
    }
}

/// A helpdesk integration, ready to deliver.
pub enum Connector {
    Zendesk(zendesk::Zendesk),
    HelpScout(helpscout::HelpScout),
    Intercom(intercom::Intercom),
    Klaviyo(klaviyo::Klaviyo),
    Webhook(webhook::Webhook),
}

impl Connector {
    /// A connector for the settings, with the secret read now; `Err` says why it cannot work
    /// (the secret is missing, say), and holds the deliveries back until it can.
    pub fn new(settings: &HelpdeskSettings, region: Region) -> Result<Connector, String> {
        let secret = settings.secret.read()?;
        match &settings.vendor {
            Vendor::Zendesk(own) => Ok(Connector::Zendesk(zendesk::Zendesk::new(
                settings, own, &secret, region,
            )?)),
            Vendor::HelpScout(own) => Ok(Connector::HelpScout(helpscout::HelpScout::new(
                settings, own, &secret,
            )?)),
            Vendor::Intercom(own) => Ok(Connector::Intercom(intercom::Intercom::new(
                settings, own, &secret,
            )?)),
            Vendor::Klaviyo(own) => Ok(Connector::Klaviyo(klaviyo::Klaviyo::new(
                settings, own, &secret,
            )?)),
            Vendor::Webhook(own) => Ok(Connector::Webhook(webhook::Webhook::new(
                settings, own, &secret,
            )?)),
        }
    }

    /// Carries out a delivery: the call itself, or a later change to it.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
        if let Some(action) = &job.delivery.action {
            let Some(retag) = Retag::parse(action) else {
                return Err(HelpdeskError::Permanent(format!(
                    "sipdesk cannot read this delivery's action: {action}"
                )));
            };
            return self.retag(job, &retag).await;
        }
        match self {
            Connector::Zendesk(zendesk) => zendesk.deliver(job).await,
            Connector::HelpScout(helpscout) => helpscout.deliver(job).await,
            Connector::Intercom(intercom) => intercom.deliver(job).await,
            Connector::Klaviyo(klaviyo) => klaviyo.deliver(job).await,
            Connector::Webhook(webhook) => webhook.deliver(job).await,
        }
    }

    /// Tags added or removed after the call: applied where the call's own delivery wrote it
    /// (its ticket, conversation or event), once that delivery is done.
    async fn retag(&self, job: &Job<'_>, retag: &Retag) -> Result<Delivered, HelpdeskError> {
        if let Connector::Klaviyo(_) = self {
            return Ok(Delivered::Skipped(
                "a Klaviyo event cannot change once recorded: the tags are not sent".to_owned(),
            ));
        }
        let own_id = NewDelivery::id_of(&job.delivery.call_id, &job.delivery.integration);
        let own = job.store.delivery(&own_id).await?;
        let target = match &own {
            Some(Delivery {
                state: DeliveryState::Done,
                ticket_id: Some(target),
                ..
            }) => target.clone(),
            Some(Delivery {
                state: state @ (DeliveryState::Pending | DeliveryState::InProgress),
                ..
            }) => {
                return Err(HelpdeskError::Wait {
                    reason: format!(
                        "the call's own delivery is {}; the tags follow it",
                        state.as_str()
                    ),
                    after: Duration::from_secs(5),
                });
            }
            Some(Delivery {
                state: DeliveryState::Skipped,
                detail,
                ..
            }) => {
                return Ok(Delivered::Skipped(format!(
                    "the call was not logged here ({}): nothing to tag",
                    detail.as_deref().unwrap_or("skipped")
                )));
            }
            Some(other) => {
                return Err(HelpdeskError::Permanent(format!(
                    "the call's own delivery is {}: retry it (sipdesk deliveries retry {own_id}), then this one",
                    other.state.as_str()
                )));
            }
            None => {
                return Err(HelpdeskError::Permanent(format!(
                    "the call's own delivery {own_id} is not in the database"
                )));
            }
        };
        match self {
            Connector::Zendesk(zendesk) => zendesk.retag(retag, &target).await,
            Connector::HelpScout(helpscout) => helpscout.retag(retag, &target).await,
            Connector::Intercom(intercom) => intercom.retag(retag, &target).await,
            Connector::Klaviyo(_) => unreachable!("answered above"),
            Connector::Webhook(webhook) => webhook.retag(job, retag).await,
        }
    }
}
