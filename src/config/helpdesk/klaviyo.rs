//! A Klaviyo entry's own keys: `base_url` (default `https://a.klaviyo.com`), and per call type
//! the `metric` its event is recorded under. The private API key is the entry's
//! `token_file`/`token_env`. An event stands alone: `log` is "new" or "none" ("previous" is
//! refused), and there are no statuses.

use super::super::diagnostic::{Seg, Source, join, keys};
use super::super::raw::RawHelpdesk;
use super::{call_type_tables, no_statuses};
use crate::tickets::PerCallType;

/// The keys a Klaviyo entry has beyond the shared ones (and `metric` in the call types).
pub(super) const KEYS: &[&str] = &["base_url", "create_unknown_contacts"];

/// Where Klaviyo's API is.
const API: &str = "https://a.klaviyo.com";

/// What a Klaviyo entry adds to the shared settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KlaviyoSettings {
    /// Without a trailing slash.
    pub base_url: String,
    /// The metric (event name) of each call type.
    pub metric: PerCallType<String>,
}

/// The metric names when none is given.
fn default_metrics() -> PerCallType<String> {
    PerCallType {
        inbound_answered: "Phone Call Answered".to_owned(),
        missed: "Phone Call Missed".to_owned(),
        voicemail: "Voicemail Received".to_owned(),
        outbound_answered: "Outbound Call Answered".to_owned(),
        outbound_unanswered: "Outbound Call Unanswered".to_owned(),
        sms_inbound: "SMS Received".to_owned(),
        sms_outbound: "SMS Sent".to_owned(),
    }
}

/// Checks a Klaviyo entry's own keys.
pub(super) fn build(h: &RawHelpdesk, at: &[Seg], src: &mut Source<'_>) -> Option<KlaviyoSettings> {
    let mut ok = no_statuses(
        h,
        at,
        "a Klaviyo event has no status; remove `status` (name the event with `metric`)",
        src,
    );
    let mut metric = default_metrics();
    for (call_type, key, table) in call_type_tables(h) {
        let Some(table) = table else { continue };
        if table.log == "previous" {
            src.error(
                &join(at, &[Seg::Key(key), Seg::Key("log")]),
                "a Klaviyo event stands alone: write log = \"new\" (an event) or \"none\"",
            );
            ok = false;
        }
        match table.metric.as_deref().map(str::trim) {
            None => {}
            // Klaviyo: "must be less than 128 characters".
            Some(name) if !name.is_empty() && name.chars().count() < 128 => {
                metric.set(call_type, name.to_owned());
            }
            Some(_) => {
                src.error(
                    &join(at, &[Seg::Key(key), Seg::Key("metric")]),
                    "a metric is a name of 1 to 127 characters, e.g. \"Phone Call Missed\"",
                );
                ok = false;
            }
        }
    }
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
    ok.then_some(())?;
    Some(KlaviyoSettings {
        base_url: base_url?,
        metric,
    })
}
