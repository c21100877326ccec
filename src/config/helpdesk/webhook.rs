//! A webhook entry's own keys: `url`, where the signed POSTs go, and `inline_audio`, whether a
//! voicemail's audio travels in the payload. The secret (`whsec_…`, the
//! Standard Webhooks form) is the entry's `token_file`/`token_env`. A webhook has no statuses
//! and no contacts: `status` on a call type and `create_unknown_contacts` are refused.

use super::super::diagnostic::{Seg, Source, join, keys};
use super::super::raw::RawHelpdesk;
use super::no_statuses;

/// The keys a webhook entry has beyond the shared ones.
pub(super) const KEYS: &[&str] = &["url", "inline_audio"];

/// What a webhook entry adds to the shared settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The receiver's URL, as given.
    pub url: String,
    /// Whether a voicemail's audio goes in the payload (base64, `voicemail.audio_base64`).
    pub inline_audio: bool,
}

/// Checks a webhook entry's own keys.
pub(super) fn build(h: &RawHelpdesk, at: &[Seg], src: &mut Source<'_>) -> Option<WebhookSettings> {
    let statuses_ok = no_statuses(
        h,
        at,
        "a webhook has no statuses; remove `status` (the receiver gets the call type and decides)",
        src,
    );
    let url = match &h.url {
        Some(url) => match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "https" | "http") && parsed.has_host() => {
                Some(url.clone())
            }
            _ => {
                src.error(
                    &join(at, keys!["url"]),
                    format!("\"{url}\" is not an http(s) URL"),
                );
                None
            }
        },
        None => {
            src.error(
                &join(at, keys!["name"]),
                "a webhook needs `url`, where its POSTs go",
            );
            None
        }
    };
    statuses_ok.then_some(())?;
    Some(WebhookSettings {
        url: url?,
        inline_audio: h.inline_audio.unwrap_or(false),
    })
}
