//! A Help Scout entry's own keys: the OAuth2 application (`client_id`; its secret is the
//! entry's `token_file`/`token_env`), the mailbox (`mailbox_id`), the statuses each call type
//! sets (Help Scout's: active, pending, closed), what "previous" may do (`reopen_closed_within`,
//! `reassign_to_agent`) and what to do when two customers share a number (`duplicates`).
//!
//! Texts are logged only with `log_sms = true` (the seed's "Registrar WhatsApp y SMS", off
//! unless chosen): without it both text call types log nothing, their deliveries say so, and an
//! `sms_inbound`/`sms_outbound` table asking for `log = "new"` or `"previous"` is an error
//! rather than a rule that silently does nothing.

use std::time::Duration;

use super::super::build::duration;
use super::super::diagnostic::{Seg, Source, join, keys};
use super::super::raw::RawHelpdesk;
use super::statuses;
use crate::tickets::PerCallType;

/// The keys a Help Scout entry has beyond the shared ones.
pub(super) const KEYS: &[&str] = &[
    "base_url",
    "client_id",
    "mailbox_id",
    "reopen_closed_within",
    "reassign_to_agent",
    "duplicates",
    "create_unknown_contacts",
    "log_sms",
];

/// Why a text is not logged in a Help Scout integration without `log_sms`: said on its
/// delivery.
pub(super) const TEXTS_OFF: &str = "texts are not logged in this Help Scout integration (log_sms = false); set log_sms = true to log them";

/// Where Help Scout's Mailbox API is.
const API: &str = "https://api.helpscout.net";

/// A conversation status, as Help Scout names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelpScoutStatus {
    Active,
    Pending,
    Closed,
}

impl HelpScoutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HelpScoutStatus::Active => "active",
            HelpScoutStatus::Pending => "pending",
            HelpScoutStatus::Closed => "closed",
        }
    }

    fn parse(text: &str) -> Option<HelpScoutStatus> {
        [
            HelpScoutStatus::Active,
            HelpScoutStatus::Pending,
            HelpScoutStatus::Closed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Two or more customers with the caller's number (seed: "Manejo de duplicados").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicates {
    /// Log to the most recently created customer.
    MostRecent,
    /// Log nothing, saying why on the delivery.
    Skip,
}

/// What a Help Scout entry adds to the shared settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelpScoutSettings {
    /// Without a trailing slash.
    pub base_url: String,
    pub client_id: String,
    pub mailbox_id: u64,
    pub status: PerCallType<HelpScoutStatus>,
    pub reopen_closed_within: Option<Duration>,
    pub reassign_to_agent: bool,
    pub duplicates: Duplicates,
    /// Whether texts are logged (`log_sms`): an inbound text as the customer's thread, an
    /// outbound one as a note.
    pub log_sms: bool,
}

/// Answered calls are done; a missed call or a voicemail waits for someone.
const DEFAULT_STATUS: PerCallType<HelpScoutStatus> = PerCallType {
    inbound_answered: HelpScoutStatus::Closed,
    missed: HelpScoutStatus::Active,
    voicemail: HelpScoutStatus::Active,
    outbound_answered: HelpScoutStatus::Closed,
    outbound_unanswered: HelpScoutStatus::Active,
    sms_inbound: HelpScoutStatus::Active,
    sms_outbound: HelpScoutStatus::Pending,
};

/// Checks a Help Scout entry's own keys.
pub(super) fn build(
    h: &RawHelpdesk,
    at: &[Seg],
    src: &mut Source<'_>,
) -> Option<HelpScoutSettings> {
    let status = statuses(
        h,
        at,
        DEFAULT_STATUS,
        HelpScoutStatus::parse,
        "\"active\", \"pending\" or \"closed\" (Help Scout's statuses)",
        src,
    );
    let base_url = match &h.base_url {
        None => Some(API.to_owned()),
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            Some(url.trim_end_matches('/').to_owned())
        }
        Some(url) => {
            src.error(
                &join(at, keys!["base_url"]),
                format!("\"{url}\" is not an http(s) URL"),
            );
            None
        }
    };
    let client_id = match h.client_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => Some(id.to_owned()),
        Some(_) => {
            src.error(
                &join(at, keys!["client_id"]),
                "client_id is empty; copy the App ID of your Help Scout app (Your Profile → My Apps)",
            );
            None
        }
        None => {
            src.error(
                &join(at, keys!["name"]),
                "Help Scout needs client_id, the App ID of the app whose App Secret is in token_file/token_env",
            );
            None
        }
    };
    let mailbox_id = match h.mailbox_id {
        Some(id) if id > 0 => Some(id),
        Some(_) => {
            src.error(
                &join(at, keys!["mailbox_id"]),
                "mailbox_id is the number in the mailbox's address (…/mailbox/<id>/)",
            );
            None
        }
        None => {
            src.error(
                &join(at, keys!["name"]),
                "Help Scout needs mailbox_id, the inbox calls are logged in",
            );
            None
        }
    };
    let reopen_closed_within = match &h.reopen_closed_within {
        None => Some(None),
        Some(text) => duration(
            text,
            &join(at, keys!["reopen_closed_within"]),
            (Duration::from_secs(60), Duration::from_secs(90 * 24 * 3600)),
            src,
        )
        .map(Some),
    };
    let duplicates = match h.duplicates.as_deref() {
        None | Some("most_recent") => Some(Duplicates::MostRecent),
        Some("skip") => Some(Duplicates::Skip),
        Some(other) => {
            src.error(
                &join(at, keys!["duplicates"]),
                format!("\"{other}\" is not a way to handle duplicates; write \"most_recent\" or \"skip\""),
            );
            None
        }
    };
    let log_sms = h.log_sms.unwrap_or(false);
    let mut texts_ok = true;
    if !log_sms {
        for (key, table) in [
            ("sms_inbound", &h.sms_inbound),
            ("sms_outbound", &h.sms_outbound),
        ] {
            if table.as_ref().is_some_and(|t| t.log != "none") {
                src.error(
                    &join(at, &[Seg::Key(key), Seg::Key("log")]),
                    format!(
                        "texts are logged in Help Scout only with log_sms = true; add it to this entry, or write log = \"none\" in {key}"
                    ),
                );
                texts_ok = false;
            }
        }
    }
    texts_ok.then_some(())?;
    Some(HelpScoutSettings {
        base_url: base_url?,
        client_id: client_id?,
        mailbox_id: mailbox_id?,
        status: status?,
        reopen_closed_within: reopen_closed_within?,
        reassign_to_agent: h.reassign_to_agent.unwrap_or(false),
        duplicates: duplicates?,
        log_sms,
    })
}
