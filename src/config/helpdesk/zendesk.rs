//! A Zendesk entry's own keys: where the account is (`subdomain` or `base_url`), how sipdesk
//! signs in (`auth = "token"` with `email`, or `"oauth"`), the statuses each call type sets,
//! assignment, titles, voice comments and tag rules ([`ZendeskRules`]).

use super::super::build::looks_like_email;
use super::super::diagnostic::{Seg, Source, join, keys};
use super::super::raw::RawHelpdesk;
use super::statuses;
use crate::helpdesk::zendesk::rules::{
    Assignee, DEFAULT_STATUS, Priority, STATUSES, Status, TagRule, TicketType, ZendeskRules,
};

/// The keys a Zendesk entry has beyond the shared ones.
pub(super) const KEYS: &[&str] = &[
    "subdomain",
    "base_url",
    "auth",
    "email",
    "missed_assignee",
    "default_assignee",
    "update_title",
    "voice_comments",
    "tag_rules",
    "create_unknown_contacts",
];

/// How sipdesk signs in to Zendesk; the secret is the entry's `token_file`/`token_env`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZendeskAuth {
    /// API token: basic authentication as `{email}/token:{token}`.
    Token { email: String },
    /// An OAuth access token, sent as a bearer token.
    OAuth,
}

/// What a Zendesk entry adds to the shared settings.
#[derive(Clone, Debug)]
pub struct ZendeskSettings {
    /// Without a trailing slash, e.g. `https://example.zendesk.com`.
    pub base_url: String,
    pub auth: ZendeskAuth,
    pub rules: ZendeskRules,
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

/// The entry's base URL: `base_url` as given, else the subdomain's.
pub(super) fn base_url(
    h: &RawHelpdesk,
    at: &[Seg],
    hosted: impl Fn(&str) -> String,
    hosted_key: &'static str,
    src: &mut Source<'_>,
) -> Option<String> {
    match (&h.base_url, &h.subdomain) {
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
            if !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Some(hosted(sub))
        }
        (None, Some(sub)) => {
            src.error(
                &join(at, keys!["subdomain"]),
                format!("\"{sub}\" is not a subdomain; write the part before {hosted_key}"),
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
    }
}

/// Checks a Zendesk entry's own keys.
pub(super) fn build(h: &RawHelpdesk, at: &[Seg], src: &mut Source<'_>) -> Option<ZendeskSettings> {
    let base_url = base_url(
        h,
        at,
        |sub| format!("https://{sub}.zendesk.com"),
        ".zendesk.com",
        src,
    );
    let auth = match (h.auth.as_deref().unwrap_or("token"), &h.email) {
        ("token", Some(email)) if looks_like_email(email) => Some(ZendeskAuth::Token {
            email: email.clone(),
        }),
        ("token", Some(email)) => {
            src.error(
                &join(at, keys!["email"]),
                format!("\"{email}\" is not an e-mail address"),
            );
            None
        }
        ("token", None) => {
            src.error(
                &join(at, keys!["name"]),
                "API token authentication needs `email`, the user the token belongs to",
            );
            None
        }
        ("oauth", _) => Some(ZendeskAuth::OAuth),
        (other, _) => {
            src.error(
                &join(at, keys!["auth"]),
                format!("\"{other}\" is not an authentication; write \"token\" or \"oauth\""),
            );
            None
        }
    };
    let status = statuses(h, at, DEFAULT_STATUS, Status::parse, STATUSES, src);
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
    let mut tag_rules = Vec::new();
    let mut tags_ok = true;
    for (k, tag) in h.tag_rules.iter().flatten().enumerate() {
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
        match (ticket_type, priority) {
            (Some(ticket_type), Some(priority)) => tag_rules.push(TagRule {
                // Call tags are lower case (the PBX's and `calls tag`'s alike).
                tag: tag.tag.trim().to_lowercase(),
                ticket_tags: tag.ticket_tags.clone(),
                ticket_type,
                priority,
            }),
            _ => tags_ok = false,
        }
    }
    Some(ZendeskSettings {
        base_url: base_url?,
        auth: auth?,
        rules: ZendeskRules {
            status: status?,
            missed_assignee: match missed_assignee {
                None => None,
                Some(found) => Some(found?),
            },
            default_assignee: default_assignee?,
            update_title: h.update_title.unwrap_or(true),
            voice_comments: h.voice_comments.unwrap_or(false),
            tag_rules: tags_ok.then_some(tag_rules)?,
        },
    })
}
