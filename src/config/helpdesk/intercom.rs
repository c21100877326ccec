//! An Intercom entry's own keys: the region its workspace is hosted in (`region`, or
//! `base_url`), the admin who writes the notes and takes answered calls whose agent is no
//! Intercom admin (`admin_email`), and the e-mail of the one lead withheld numbers share
//! (`anonymous_email`; without it, calls from withheld numbers are not logged). The access token is the entry's `token_file`/`token_env`. Intercom
//! conversations have no status a call sets: `status` is refused.

use super::super::build::looks_like_email;
use super::super::diagnostic::{Seg, Source, join, keys};
use super::super::raw::RawHelpdesk;
use super::no_statuses;

/// The keys an Intercom entry has beyond the shared ones.
pub(super) const KEYS: &[&str] = &[
    "base_url",
    "region",
    "admin_email",
    "anonymous_email",
    "create_unknown_contacts",
];

/// What an Intercom entry adds to the shared settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntercomSettings {
    /// Without a trailing slash: the region's API, or `base_url`.
    pub base_url: String,
    pub admin_email: String,
    /// The lead withheld numbers share; without it their calls are not logged (with why).
    pub anonymous_email: Option<String>,
}

/// Checks an Intercom entry's own keys.
pub(super) fn build(h: &RawHelpdesk, at: &[Seg], src: &mut Source<'_>) -> Option<IntercomSettings> {
    let statuses_ok = no_statuses(
        h,
        at,
        "an Intercom conversation has no status a call sets; remove `status`",
        src,
    );
    let region = match h.region.as_deref() {
        None | Some("us") => Some("https://api.intercom.io"),
        Some("eu") => Some("https://api.eu.intercom.io"),
        Some("au") => Some("https://api.au.intercom.io"),
        Some(other) => {
            src.error(
                &join(at, keys!["region"]),
                format!("\"{other}\" is not a region Intercom hosts workspaces in; write \"us\", \"eu\" or \"au\""),
            );
            None
        }
    };
    if h.base_url.is_some() && h.region.is_some() {
        src.error(
            &join(at, keys!["region"]),
            "give region or base_url, not both: base_url replaces the region's API",
        );
    }
    let base_url = match &h.base_url {
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
        None => region.map(str::to_owned),
    };
    let email = |key: &'static str, value: Option<&String>, src: &mut Source<'_>| match value {
        Some(email) if looks_like_email(email) => Some(email.clone()),
        Some(email) => {
            src.error(
                &join(at, &[Seg::Key(key)]),
                format!("\"{email}\" is not an e-mail address"),
            );
            None
        }
        None => None,
    };
    let admin_email = email("admin_email", h.admin_email.as_ref(), src);
    if h.admin_email.is_none() {
        src.error(
            &join(at, keys!["name"]),
            "Intercom needs admin_email: the admin who writes the call notes (the one who set up the integration)",
        );
    }
    let anonymous_email = match &h.anonymous_email {
        None => Some(None),
        given => email("anonymous_email", given.as_ref(), src).map(Some),
    };
    statuses_ok.then_some(())?;
    Some(IntercomSettings {
        base_url: base_url?,
        admin_email: admin_email?,
        anonymous_email: anonymous_email?,
    })
}
