//! `[[helpdesks]]` checked. Every entry has the shared keys (name, kind, groups, the secret, the
//! per-call-type `log` rules, `create_out_of_hours`, `fields`, pacing), checked here into
//! [`crate::tickets::Rules`]; each kind's own keys are checked by its module ([`zendesk`],
//! [`webhook`]), and a key of another kind is an error that names the kind's keys. Secrets come
//! from a file or an environment variable, never from the configuration file; they are read
//! when used ([`SecretSource`]) and never appear in logs or `Debug` output.
//!
//! Adding a helpdesk: a module here for its keys, a [`Vendor`] variant, its keys in
//! `RawHelpdesk`, and its connector in [`crate::helpdesk`].

mod helpscout;
mod intercom;
mod klaviyo;
mod webhook;
mod zendesk;

pub use helpscout::{Duplicates, HelpScoutSettings, HelpScoutStatus};
pub use intercom::IntercomSettings;
pub use klaviyo::KlaviyoSettings;
pub use webhook::WebhookSettings;
pub use zendesk::{ZendeskAuth, ZendeskSettings};

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::build::duration;
use super::diagnostic::{Seg, Source, join, keys};
use super::raw::{RawCallTypeRule, RawHelpdesk};
use crate::call::CallType;
use crate::routing::Groups;
use crate::tickets::{Field, Log, PerCallType, Rules};

/// A secret: shown as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret is kept. It is read when it is used, not when the configuration is loaded:
/// a missing or wrong token holds back that helpdesk's deliveries (each says why) and never
/// stops sipdesk from routing calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret; a relative path is under systemd's `$CREDENTIALS_DIRECTORY`
    /// when set (`LoadCredential=`), else under the working directory.
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
}

impl SecretSource {
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretSource::File(file) => {
                let mut path = file.clone();
                if path.is_relative() {
                    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
                        path = PathBuf::from(dir).join(path);
                    }
                }
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => Ok(Secret(text.trim().to_owned())),
                    Ok(_) => Err(format!("the token file {} is empty", path.display())),
                    Err(e) => Err(format!(
                        "cannot read the token file {}: {e}",
                        path.display()
                    )),
                }
            }
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
                _ => Err(format!(
                    "the environment variable {var} (token_env) is not set"
                )),
            },
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "token_file {}", path.display()),
            SecretSource::Env(var) => write!(f, "token_env {var}"),
        }
    }
}

/// The helpdesks sipdesk knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Zendesk,
    HelpScout,
    Intercom,
    Klaviyo,
    Webhook,
}

impl Kind {
    const ALL: [(&'static str, Kind); 5] = [
        ("zendesk", Kind::Zendesk),
        ("helpscout", Kind::HelpScout),
        ("intercom", Kind::Intercom),
        ("klaviyo", Kind::Klaviyo),
        ("webhook", Kind::Webhook),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Zendesk => "zendesk",
            Kind::HelpScout => "helpscout",
            Kind::Intercom => "intercom",
            Kind::Klaviyo => "klaviyo",
            Kind::Webhook => "webhook",
        }
    }

    /// The keys of this kind beyond the shared ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Zendesk => zendesk::KEYS,
            Kind::HelpScout => helpscout::KEYS,
            Kind::Intercom => intercom::KEYS,
            Kind::Klaviyo => klaviyo::KEYS,
            Kind::Webhook => webhook::KEYS,
        }
    }

    /// How many deliveries run at once when `concurrency` is not given: enough to keep the
    /// limit busy when each answer takes 100 ms (one request per Klaviyo call, at 3,500 a
    /// minute, needs 6 at once).
    fn default_concurrency(self) -> u32 {
        match self {
            Kind::Klaviyo => 8,
            _ => 4,
        }
    }

    /// How long a delivery is retried when `give_up_after` is not given: a day, and three for
    /// a webhook (the Standard Webhooks retry schedule spans about three days).
    fn default_give_up_after(self) -> &'static str {
        match self {
            Kind::Webhook => "72h",
            _ => "24h",
        }
    }

    /// The request limit per minute when `requests_per_minute` is not given: the vendor's
    /// documented limit (Zendesk Growth/Professional 400; Help Scout Plus 400, writes counting
    /// double; Intercom a fraction of an app's 10,000 a minute, the workspace sharing it with
    /// other apps; Klaviyo's Create Event 3,500 steady), and a gentle 10 a
    /// second for a webhook receiver.
    fn default_requests_per_minute(self) -> u32 {
        match self {
            Kind::Zendesk | Kind::HelpScout => 400,
            Kind::Intercom => 1000,
            Kind::Klaviyo => 3500,
            Kind::Webhook => 600,
        }
    }
}

/// What one kind of helpdesk adds to the shared settings.
#[derive(Clone, Debug)]
pub enum Vendor {
    Zendesk(ZendeskSettings),
    HelpScout(HelpScoutSettings),
    Intercom(IntercomSettings),
    Klaviyo(KlaviyoSettings),
    Webhook(WebhookSettings),
}

/// One `[[helpdesks]]` entry, checked.
#[derive(Clone, Debug)]
pub struct HelpdeskSettings {
    pub name: String,
    /// Where the secret is (token, client secret, signing secret: the kind says which).
    pub secret: SecretSource,
    /// The rules every kind shares.
    pub rules: Rules,
    pub vendor: Vendor,
    pub requests_per_minute: u32,
    pub concurrency: u32,
    pub give_up_after: Duration,
    pub request_timeout: Duration,
}

impl HelpdeskSettings {
    pub fn kind(&self) -> Kind {
        match self.vendor {
            Vendor::Zendesk(_) => Kind::Zendesk,
            Vendor::HelpScout(_) => Kind::HelpScout,
            Vendor::Intercom(_) => Kind::Intercom,
            Vendor::Klaviyo(_) => Kind::Klaviyo,
            Vendor::Webhook(_) => Kind::Webhook,
        }
    }
}

/// Where each call type is logged when its table is not given.
const DEFAULT_LOG: PerCallType<Log> = PerCallType {
    inbound_answered: Log::New,
    missed: Log::New,
    voicemail: Log::New,
    outbound_answered: Log::Previous,
    outbound_unanswered: Log::Nothing,
    // Texts join the customer's open ticket, as a text conversation does (the Klaviyo seed).
    sms_inbound: Log::Previous,
    sms_outbound: Log::Previous,
};

/// The seven call-type tables of an entry (five of calls, two of texts), with their keys.
pub(super) fn call_type_tables(
    h: &RawHelpdesk,
) -> [(CallType, &'static str, Option<&RawCallTypeRule>); 7] {
    [
        (
            CallType::InboundAnswered,
            "inbound_answered",
            h.inbound_answered.as_ref(),
        ),
        (CallType::Missed, "missed", h.missed.as_ref()),
        (CallType::Voicemail, "voicemail", h.voicemail.as_ref()),
        (
            CallType::OutboundAnswered,
            "outbound_answered",
            h.outbound_answered.as_ref(),
        ),
        (
            CallType::OutboundUnanswered,
            "outbound_unanswered",
            h.outbound_unanswered.as_ref(),
        ),
        (CallType::SmsInbound, "sms_inbound", h.sms_inbound.as_ref()),
        (
            CallType::SmsOutbound,
            "sms_outbound",
            h.sms_outbound.as_ref(),
        ),
    ]
}

/// The `log` of each call type; `None` when one is wrong (each said).
fn logs(h: &RawHelpdesk, at: &[Seg], src: &mut Source<'_>) -> Option<PerCallType<Log>> {
    let mut out = DEFAULT_LOG;
    let mut ok = true;
    for (call_type, key, table) in call_type_tables(h) {
        let Some(table) = table else { continue };
        match table.log.as_str() {
            "new" => out.set(call_type, Log::New),
            "previous" => out.set(call_type, Log::Previous),
            "none" => out.set(call_type, Log::Nothing),
            other => {
                src.error(
                    &join(at, &[Seg::Key(key), Seg::Key("log")]),
                    format!(
                        "\"{other}\" is not a place to log; write \"new\", \"previous\" or \"none\""
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// The `status` of each call type in the kind's own words: `parse` reads one (`None`: not a
/// status of this helpdesk, whose statuses `listed` names), `default` is used where none is given.
fn statuses<S: Copy>(
    h: &RawHelpdesk,
    at: &[Seg],
    default: PerCallType<S>,
    parse: impl Fn(&str) -> Option<S>,
    listed: &str,
    src: &mut Source<'_>,
) -> Option<PerCallType<S>> {
    let mut out = default;
    let mut ok = true;
    for (call_type, key, table) in call_type_tables(h) {
        let Some(status) = table.and_then(|t| t.status.as_deref()) else {
            continue;
        };
        match parse(status) {
            Some(parsed) => out.set(call_type, parsed),
            None => {
                src.error(
                    &join(at, &[Seg::Key(key), Seg::Key("status")]),
                    format!("\"{status}\" is not a status of this helpdesk; write {listed}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Refuses `metric` on every call type: for kinds other than Klaviyo.
fn no_metrics(h: &RawHelpdesk, at: &[Seg], kind: Kind, src: &mut Source<'_>) -> bool {
    let mut ok = true;
    for (_, key, table) in call_type_tables(h) {
        if table.is_some_and(|t| t.metric.is_some()) {
            src.error(
                &join(at, &[Seg::Key(key), Seg::Key("metric")]),
                format!(
                    "metric is a Klaviyo key; a {} call type has log and status",
                    kind.as_str()
                ),
            );
            ok = false;
        }
    }
    ok
}

/// Refuses a `status` on every call type: for kinds that have none.
fn no_statuses(h: &RawHelpdesk, at: &[Seg], why: &str, src: &mut Source<'_>) -> bool {
    let mut ok = true;
    for (_, key, table) in call_type_tables(h) {
        if table.is_some_and(|t| t.status.is_some()) {
            src.error(&join(at, &[Seg::Key(key), Seg::Key("status")]), why);
            ok = false;
        }
    }
    ok
}

/// Where the secret is: exactly one of `token_file` and `token_env`.
fn secret_source(raw: &RawHelpdesk, i: usize, src: &mut Source<'_>) -> Option<SecretSource> {
    match (&raw.token_file, &raw.token_env) {
        (Some(_), Some(_)) | (None, None) => {
            src.error(
                keys!["helpdesks", i, "name"],
                "give the secret with exactly one of token_file (a file holding it) or token_env (an environment variable)",
            );
            None
        }
        (Some(file), None) if file.trim().is_empty() => {
            src.error(
                keys!["helpdesks", i, "token_file"],
                "token_file is empty; name the file holding the token",
            );
            None
        }
        (Some(file), None) => Some(SecretSource::File(PathBuf::from(file))),
        (None, Some(var))
            if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            src.error(
                keys!["helpdesks", i, "token_env"],
                format!("\"{var}\" is not an environment variable name"),
            );
            None
        }
        (None, Some(var)) => Some(SecretSource::Env(var.clone())),
    }
}

/// Checks every `[[helpdesks]]` entry.
pub(super) fn build(
    raw: &[Option<RawHelpdesk>],
    groups: Option<&Groups>,
    timezone: Option<&jiff::tz::TimeZone>,
    src: &mut Source<'_>,
) -> Option<Vec<HelpdeskSettings>> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    let mut ok = true;
    for (i, helpdesk) in raw.iter().enumerate() {
        let Some(h) = helpdesk else {
            ok = false;
            continue;
        };
        let at = keys!["helpdesks", i];
        if !names.insert(h.name.clone()) {
            src.error(
                &join(at, keys!["name"]),
                format!("a helpdesk named \"{}\" is already defined above", h.name),
            );
            ok = false;
        }
        let kind = Kind::ALL
            .iter()
            .find(|(name, _)| *name == h.kind)
            .map(|(_, k)| *k);
        let Some(kind) = kind else {
            let mut names: Vec<String> =
                Kind::ALL.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            let last = names.pop().unwrap_or_default();
            src.error(
                &join(at, keys!["kind"]),
                format!(
                    "\"{}\" is not a helpdesk sipdesk knows; write {} or {last}",
                    h.kind,
                    names.join(", ")
                ),
            );
            ok = false;
            continue;
        };
        for key in h.kind_keys() {
            if !kind.keys().contains(&key) {
                let own = kind.keys();
                src.error(
                    &join(at, &[Seg::Key(key)]),
                    format!(
                        "{key} is not a key of a {} helpdesk; its own keys are: {}",
                        kind.as_str(),
                        if own.is_empty() {
                            "none".to_owned()
                        } else {
                            own.join(", ")
                        }
                    ),
                );
                ok = false;
            }
        }
        let secret = secret_source(h, i, src);
        if h.groups.is_empty() {
            src.error(
                &join(at, keys!["groups"]),
                "no groups: list the groups whose calls are logged here",
            );
        }
        for (k, group) in h.groups.iter().enumerate() {
            if groups.is_some_and(|g| g.by_name(group).is_none()) {
                src.error(
                    &join(at, &[Seg::Key("groups"), Seg::Index(k)]),
                    format!("no group is named \"{group}\""),
                );
            }
        }
        let log = logs(h, at, src);
        let mut fields = Vec::new();
        for (k, field) in h.fields.iter().enumerate() {
            match Field::parse(field) {
                Some(f) => fields.push(f),
                None => {
                    let names: Vec<&str> = Field::ALL.iter().map(|(n, _)| *n).collect();
                    src.error(
                        &join(at, &[Seg::Key("fields"), Seg::Index(k)]),
                        format!(
                            "\"{field}\" is not a call field; the fields are: {}",
                            names.join(", ")
                        ),
                    );
                }
            }
        }
        let give_up_after = duration(
            h.give_up_after
                .as_deref()
                .unwrap_or(kind.default_give_up_after()),
            &join(at, keys!["give_up_after"]),
            (Duration::from_secs(60), Duration::from_secs(30 * 24 * 3600)),
            src,
        );
        let request_timeout = duration(
            &h.request_timeout,
            &join(at, keys!["request_timeout"]),
            (Duration::from_secs(1), Duration::from_secs(300)),
            src,
        );
        let requests_per_minute = h
            .requests_per_minute
            .unwrap_or_else(|| kind.default_requests_per_minute());
        if !(1..=100_000).contains(&requests_per_minute) {
            src.error(
                &join(at, keys!["requests_per_minute"]),
                "requests_per_minute must be from 1 to 100000",
            );
        }
        let concurrency = h.concurrency.unwrap_or_else(|| kind.default_concurrency());
        if !(1..=64).contains(&concurrency) {
            src.error(
                &join(at, keys!["concurrency"]),
                "concurrency must be from 1 to 64",
            );
        }
        let metrics_ok = kind == Kind::Klaviyo || no_metrics(h, at, kind, src);
        let vendor = match kind {
            Kind::Zendesk => zendesk::build(h, at, src).map(Vendor::Zendesk),
            Kind::HelpScout => helpscout::build(h, at, src).map(Vendor::HelpScout),
            Kind::Intercom => intercom::build(h, at, src).map(Vendor::Intercom),
            Kind::Klaviyo => klaviyo::build(h, at, src).map(Vendor::Klaviyo),
            Kind::Webhook => webhook::build(h, at, src).map(Vendor::Webhook),
        }
        .filter(|_| metrics_ok);
        // Help Scout logs texts only when asked to (`log_sms`).
        let texts_off = match &vendor {
            Some(Vendor::HelpScout(own)) if !own.log_sms => Some(helpscout::TEXTS_OFF),
            _ => None,
        };
        let log = log.map(|mut log| {
            if texts_off.is_some() {
                log.sms_inbound = Log::Nothing;
                log.sms_outbound = Log::Nothing;
            }
            log
        });
        let built = (|| {
            Some(HelpdeskSettings {
                name: h.name.clone(),
                secret: secret?,
                rules: Rules {
                    groups: h.groups.clone(),
                    log: log?,
                    create_out_of_hours: h.create_out_of_hours,
                    create_unknown_contacts: h.create_unknown_contacts.unwrap_or(true),
                    fields,
                    texts_off,
                    timezone: timezone?.clone(),
                    group_zones: groups
                        .map(|all| {
                            all.iter()
                                .map(|g| (g.name.to_string(), g.schedule.timezone.clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                },
                vendor: vendor?,
                requests_per_minute,
                concurrency,
                give_up_after: give_up_after?,
                request_timeout: request_timeout?,
            })
        })();
        match built {
            Some(settings) => out.push(settings),
            None => ok = false,
        }
    }
    ok.then_some(out)
}
