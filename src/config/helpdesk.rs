//! `[[helpdesks]]` checked: where a helpdesk is, how sipdesk authenticates, and the ticket rules
//! ([`crate::tickets::Rules`]) of each integration. Secrets come from a file or an environment
//! variable, never from the configuration file; they are read when used ([`SecretSource`]) and
//! never appear in logs or `Debug` output.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::build::{duration, looks_like_email};
use super::diagnostic::{Seg, Source, join, keys};
use super::raw::{RawCallTypeRule, RawHelpdesk};
use crate::routing::Groups;
use crate::tickets::{
    Assignee, CallTypeRule, Field, Log, Priority, Rules, Status, TagRule, TicketType,
};

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

/// How sipdesk authenticates to a helpdesk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Zendesk API token: basic authentication as `{email}/token:{token}`.
    Token { email: String, token: SecretSource },
    /// An OAuth access token, sent as a bearer token.
    Bearer(SecretSource),
}

impl Auth {
    pub fn secret(&self) -> &SecretSource {
        match self {
            Auth::Token { token, .. } => token,
            Auth::Bearer(token) => token,
        }
    }
}

/// The helpdesks sipdesk knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Zendesk,
}

/// One `[[helpdesks]]` entry, checked.
#[derive(Clone, Debug)]
pub struct HelpdeskSettings {
    pub name: String,
    pub kind: Kind,
    /// Without a trailing slash, e.g. `https://example.zendesk.com`.
    pub base_url: String,
    pub auth: Auth,
    pub rules: Rules,
    pub requests_per_minute: u32,
    pub concurrency: u32,
    pub give_up_after: Duration,
    pub request_timeout: Duration,
}

fn call_type_rule(raw: &RawCallTypeRule, at: &[Seg], src: &mut Source<'_>) -> Option<CallTypeRule> {
    let log = match raw.log.as_str() {
        "new" => Some(Log::New),
        "previous" => Some(Log::Previous),
        "none" => Some(Log::Nothing),
        other => {
            src.error(
                &join(at, keys!["log"]),
                format!(
                    "\"{other}\" is not a place to log; write \"new\", \"previous\" or \"none\""
                ),
            );
            None
        }
    };
    let status = Status::parse(&raw.status);
    if status.is_none() {
        src.error(
            &join(at, keys!["status"]),
            format!("\"{}\" is not a ticket status; write \"new\", \"open\", \"pending\", \"hold\", \"solved\" or \"closed\"", raw.status),
        );
    }
    Some(CallTypeRule {
        log: log?,
        status: status?,
    })
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

fn assignee(text: &str, at: &[Seg], src: &mut Source<'_>) -> Option<Assignee> {
    if let Some(id) = text.strip_prefix("group:") {
        match id.parse::<u64>() {
            Ok(id) => return Some(Assignee::Group(id)),
            Err(_) => {
                src.error(
                    at,
                    format!("\"{text}\": a group is written \"group:<numeric id>\""),
                );
                return None;
            }
        }
    }
    if looks_like_email(text) {
        Some(Assignee::User(text.to_owned()))
    } else {
        src.error(
            at,
            format!("\"{text}\" is neither a user's e-mail nor \"group:<id>\""),
        );
        None
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
        let kind = match h.kind.as_str() {
            "zendesk" => Some(Kind::Zendesk),
            other => {
                src.error(
                    &join(at, keys!["kind"]),
                    format!("\"{other}\" is not a helpdesk sipdesk knows yet; write \"zendesk\""),
                );
                None
            }
        };
        let base_url = match (&h.base_url, &h.subdomain) {
            (Some(url), _) if url.starts_with("https://") || url.starts_with("http://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            (Some(url), _) => {
                src.error(
                    &join(at, keys!["base_url"]),
                    format!("\"{url}\" is not an http(s) URL"),
                );
                None
            }
            (None, Some(sub))
                if !sub.is_empty()
                    && sub.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                Some(format!("https://{sub}.zendesk.com"))
            }
            (None, Some(sub)) => {
                src.error(
                    &join(at, keys!["subdomain"]),
                    format!("\"{sub}\" is not a subdomain; write the part before .zendesk.com"),
                );
                None
            }
            (None, None) => {
                src.error(
                    &join(at, keys!["name"]),
                    "give the helpdesk's subdomain (or base_url)",
                );
                None
            }
        };
        let token = secret_source(h, i, src);
        let auth = match (h.auth.as_str(), &h.email, token) {
            ("token", Some(email), Some(token)) if looks_like_email(email) => Some(Auth::Token {
                email: email.clone(),
                token,
            }),
            ("token", Some(email), _) if !looks_like_email(email) => {
                src.error(
                    &join(at, keys!["email"]),
                    format!("\"{email}\" is not an e-mail address"),
                );
                None
            }
            ("token", None, _) => {
                src.error(
                    &join(at, keys!["name"]),
                    "API token authentication needs `email`, the user the token belongs to",
                );
                None
            }
            ("oauth", _, Some(token)) => Some(Auth::Bearer(token)),
            ("token" | "oauth", _, None) => None,
            (other, _, _) => {
                src.error(
                    &join(at, keys!["auth"]),
                    format!("\"{other}\" is not an authentication; write \"token\" or \"oauth\""),
                );
                None
            }
        };
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
        let rule = |raw: &RawCallTypeRule, key: &'static str, src: &mut Source<'_>| {
            call_type_rule(raw, &join(at, &[Seg::Key(key)]), src)
        };
        let inbound_answered = rule(&h.inbound_answered, "inbound_answered", src);
        let missed = rule(&h.missed, "missed", src);
        let voicemail = rule(&h.voicemail, "voicemail", src);
        let outbound_answered = rule(&h.outbound_answered, "outbound_answered", src);
        let outbound_unanswered = rule(&h.outbound_unanswered, "outbound_unanswered", src);
        let missed_assignee = h
            .missed_assignee
            .as_ref()
            .map(|t| assignee(t, &join(at, keys!["missed_assignee"]), src));
        let default_assignee = match &h.default_assignee {
            Some(email) if looks_like_email(email) => Some(Some(email.clone())),
            Some(email) => {
                src.error(
                    &join(at, keys!["default_assignee"]),
                    format!("\"{email}\" is not an e-mail address"),
                );
                None
            }
            None => Some(None),
        };
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
        let mut tag_rules = Vec::new();
        for (k, tag) in h.tag_rules.iter().enumerate() {
            let tat = join(at, &[Seg::Key("tag_rules"), Seg::Index(k)]);
            let ticket_type = match tag
                .ticket_type
                .as_deref()
                .map(|t| (t, TicketType::parse(t)))
            {
                None => Some(None),
                Some((_, Some(t))) => Some(Some(t)),
                Some((t, None)) => {
                    src.error(&join(&tat, keys!["type"]), format!("\"{t}\" is not a ticket type; write \"problem\", \"incident\", \"question\" or \"task\""));
                    None
                }
            };
            let priority = match tag.priority.as_deref().map(|p| (p, Priority::parse(p))) {
                None => Some(None),
                Some((_, Some(p))) => Some(Some(p)),
                Some((p, None)) => {
                    src.error(&join(&tat, keys!["priority"]), format!("\"{p}\" is not a priority; write \"urgent\", \"high\", \"normal\" or \"low\""));
                    None
                }
            };
            if let (Some(ticket_type), Some(priority)) = (ticket_type, priority) {
                tag_rules.push(TagRule {
                    tag: tag.tag.clone(),
                    ticket_tags: tag.ticket_tags.clone(),
                    ticket_type,
                    priority,
                });
            }
        }
        let give_up_after = duration(
            &h.give_up_after,
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
        if !(1..=100_000).contains(&h.requests_per_minute) {
            src.error(
                &join(at, keys!["requests_per_minute"]),
                "requests_per_minute must be from 1 to 100000",
            );
        }
        if !(1..=64).contains(&h.concurrency) {
            src.error(
                &join(at, keys!["concurrency"]),
                "concurrency must be from 1 to 64",
            );
        }
        let built = (|| {
            Some(HelpdeskSettings {
                name: h.name.clone(),
                kind: kind?,
                base_url: base_url?,
                auth: auth?,
                rules: Rules {
                    groups: h.groups.clone(),
                    inbound_answered: inbound_answered?,
                    missed: missed?,
                    voicemail: voicemail?,
                    outbound_answered: outbound_answered?,
                    outbound_unanswered: outbound_unanswered?,
                    create_out_of_hours: h.create_out_of_hours,
                    create_unknown_contacts: h.create_unknown_contacts,
                    missed_assignee: match missed_assignee {
                        None => None,
                        Some(found) => Some(found?),
                    },
                    default_assignee: default_assignee?,
                    fields,
                    update_title: h.update_title,
                    voice_comments: h.voice_comments,
                    tag_rules,
                    timezone: timezone?.clone(),
                    group_zones: groups
                        .map(|all| {
                            all.iter()
                                .map(|g| (g.name.to_string(), g.schedule.timezone.clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                },
                requests_per_minute: h.requests_per_minute,
                concurrency: h.concurrency,
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
