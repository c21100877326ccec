//! `[[sms_numbers]]` and `[sms]` checked: the company's numbers that take texts (SIP MESSAGE),
//! and the rules every text follows before any helpdesk sees it.
//!
//! - A number is written in E.164 (`+34911234567`); its `name` is what helpdesks show ("SMS on
//!   <name>"); its `groups` say which groups' integrations log its texts (an integration logs a
//!   text when it is linked to one of them, as for calls).
//! - `ignore_keywords`: a text that is only one of these words (any case, surrounding spaces
//!   and punctuation ignored) is a subscription or compliance keyword and makes no ticket
//!   anywhere; its record says why (the Klaviyo seed). The defaults are JOIN, STOP, START,
//!   UNSUBSCRIBE and their usual Spanish and Portuguese words.
//! - `ticket_keywords`: words that make a ticket even where they are listed in
//!   `ignore_keywords` (the seed's HELP and INFO, and AYUDA, AJUDA).
//! - `max_per_sender = "10/min"`: past this many texts from one number in the period, the next
//!   ones join the sender's open ticket or conversation wherever an integration would make a
//!   new one, so a flood cannot make a storm of tickets.
//! - `max_per_agent = "20/min"`: past this many texts from one agent's phone in the period, its
//!   MESSAGEs are refused (403), so a phone cannot pump texts through the trunk.
//! - `reply_poll = "30s"`: how often Zendesk is asked for agents' replies ([`crate::replies`]).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::diagnostic::{Seg, Source, join, keys};
use crate::phone::{self, Caller, Region};
use crate::routing::Groups;

/// One `[[sms_numbers]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmsNumber {
    /// The number in E.164, e.g. "+34911234567".
    pub(crate) number: String,
    /// Shown in helpdesks: "SMS on <name>".
    pub(crate) name: String,
    /// The groups whose integrations log this number's texts.
    pub(crate) groups: Vec<String>,
}

/// `[sms]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSms {
    /// Texts that are only one of these words make no ticket (subscription and compliance
    /// keywords).
    pub(crate) ignore_keywords: Option<Vec<String>>,
    /// Words that make a ticket even when they are keywords (HELP, INFO).
    pub(crate) ticket_keywords: Option<Vec<String>>,
    /// At most this many texts from one sender make new tickets in the period ("10/min"); the
    /// rest join the sender's open ticket.
    pub(crate) max_per_sender: Option<String>,
    /// At most this many texts from one agent's phone in the period ("20/min"); beyond, the
    /// phone's MESSAGE is refused (403), so a phone cannot pump texts through the trunk.
    pub(crate) max_per_agent: Option<String>,
    /// How often Zendesk is asked for agents' replies on text tickets (at least "10s": its
    /// event export allows 10 requests a minute).
    pub(crate) reply_poll: Option<String>,
}

/// A number that takes texts, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsNumber {
    /// E.164.
    pub number: String,
    pub name: String,
    pub groups: Vec<String>,
}

/// `[[sms_numbers]]` and `[sms]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsSettings {
    pub numbers: Vec<SmsNumber>,
    /// Upper case, without accents.
    pub ignore_keywords: Vec<String>,
    /// Upper case, without accents.
    pub ticket_keywords: Vec<String>,
    /// How many texts per sender, in how long.
    pub max_per_sender: (u32, Duration),
    /// How many texts per agent's phone, in how long.
    pub max_per_agent: (u32, Duration),
    /// How often replies are read from Zendesk.
    pub reply_poll: Duration,
}

/// The default subscription and compliance keywords: English, Spanish, Portuguese.
const IGNORE: &[&str] = &[
    "JOIN",
    "STOP",
    "START",
    "UNSUBSCRIBE",
    "ALTA",
    "BAJA",
    "PARAR",
    "ALTO",
    "DETENER",
    "CANCELAR",
    "INICIAR",
    "COMENZAR",
    "SAIR",
    "ENTRAR",
    "COMECAR",
    "DESCADASTRAR",
];

/// The default keywords that still make a ticket.
const TICKET: &[&str] = &["HELP", "INFO", "AYUDA", "AJUDA"];

impl SmsSettings {
    /// The number a text was sent to, by its E.164 form.
    pub fn number(&self, e164: &str) -> Option<&SmsNumber> {
        self.numbers.iter().find(|n| n.number == e164)
    }

    /// Why a text makes no ticket, if it is only a subscription or compliance keyword.
    pub fn ignored(&self, body: &str) -> Option<String> {
        let word = keyword(body);
        if word.is_empty() || self.ticket_keywords.contains(&word) {
            return None;
        }
        self.ignore_keywords
            .contains(&word)
            .then(|| format!("the text is only the keyword {word} (ignore_keywords)"))
    }
}

/// A text as a keyword: trimmed of spaces and punctuation, upper case, without accents.
pub(super) fn keyword(text: &str) -> String {
    let trimmed = text.trim_matches(|c: char| !c.is_alphanumeric());
    trimmed
        .chars()
        .map(unaccent)
        .collect::<String>()
        .to_uppercase()
}

fn unaccent(c: char) -> char {
    match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'Á' | 'À' | 'Â' | 'Ã' | 'Ä' => 'a',
        'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' | 'Í' | 'Ì' | 'Î' | 'Ï' => 'i',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' | 'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' => 'o',
        'ú' | 'ù' | 'û' | 'ü' | 'Ú' | 'Ù' | 'Û' | 'Ü' => 'u',
        'ç' | 'Ç' => 'c',
        'ñ' | 'Ñ' => 'n',
        other => other,
    }
}

pub(super) fn build(
    numbers: &[Option<RawSmsNumber>],
    sms: RawSms,
    groups: Option<&Groups>,
    region: Option<Region>,
    src: &mut Source<'_>,
) -> Option<SmsSettings> {
    let mut ok = true;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in numbers.iter().enumerate() {
        let Some(raw) = raw else {
            ok = false;
            continue;
        };
        let at: &[Seg] = keys!["sms_numbers", i];
        // Written with +, so the region does not change what the number is.
        let region = region.unwrap_or_else(|| "US".parse().expect("a known region"));
        let number = match phone::normalize(&raw.number, region) {
            Ok(Caller::Number(n)) if raw.number.trim().starts_with('+') => Some(n.to_string()),
            _ => {
                src.error(
                    &join(at, keys!["number"]),
                    format!(
                        "\"{}\" is not a phone number in E.164; write it with + and the country code, e.g. \"+34911234567\"",
                        raw.number
                    ),
                );
                None
            }
        };
        if let Some(n) = &number {
            if !seen.insert(n.clone()) {
                src.error(
                    &join(at, keys!["number"]),
                    format!("{n} is listed twice; give each number one entry"),
                );
                ok = false;
            }
        }
        if raw.name.trim().is_empty() {
            src.error(
                &join(at, keys!["name"]),
                "name is empty; helpdesks show it as \"SMS on <name>\"",
            );
            ok = false;
        }
        if raw.groups.is_empty() {
            src.error(
                &join(at, keys!["groups"]),
                "no groups: list the groups whose integrations log this number's texts",
            );
            ok = false;
        }
        if let Some(groups) = groups {
            for (k, group) in raw.groups.iter().enumerate() {
                if groups.by_name(group).is_none() {
                    let mut known: Vec<&str> = groups.iter().map(|g| &*g.name).collect();
                    known.sort_unstable();
                    src.error(
                        &join(at, &[Seg::Key("groups"), Seg::Index(k)]),
                        format!(
                            "no group is named \"{group}\"; the groups are: {}",
                            known.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let Some(number) = number {
            out.push(SmsNumber {
                number,
                name: raw.name.trim().to_owned(),
                groups: raw.groups.clone(),
            });
        } else {
            ok = false;
        }
    }
    let words = |given: Option<Vec<String>>, default: &[&str], key: &'static str| {
        let list: Vec<String> = match given {
            None => default.iter().map(|w| (*w).to_owned()).collect(),
            Some(list) => list,
        };
        let mut out = Vec::new();
        for (i, word) in list.iter().enumerate() {
            let word = keyword(word);
            if word.is_empty() || word.contains(char::is_whitespace) {
                return Err((i, key));
            }
            out.push(word);
        }
        Ok(out)
    };
    let mut keyword_list = |given, default, key| match words(given, default, key) {
        Ok(list) => Some(list),
        Err((i, key)) => {
            src.error(
                keys!["sms", key, i],
                "a keyword is one word (the whole text of a subscription or compliance message)",
            );
            None
        }
    };
    let ignore_keywords = keyword_list(sms.ignore_keywords, IGNORE, "ignore_keywords");
    let ticket_keywords = keyword_list(sms.ticket_keywords, TICKET, "ticket_keywords");
    let mut rate_of = |given: Option<&str>, default: (u32, Duration), key: &'static str| match given
    {
        None => Some(default),
        Some(text) => match rate(text) {
            Some(rate) => Some(rate),
            None => {
                src.error(
                    keys!["sms", key],
                    format!(
                        "\"{text}\" is not a rate; write texts per period, e.g. \"10/min\", \"30/hour\" or \"5/10s\""
                    ),
                );
                None
            }
        },
    };
    let max_per_sender = rate_of(
        sms.max_per_sender.as_deref(),
        (10, Duration::from_secs(60)),
        "max_per_sender",
    );
    let max_per_agent = rate_of(
        sms.max_per_agent.as_deref(),
        (20, Duration::from_secs(60)),
        "max_per_agent",
    );
    let reply_poll = match sms.reply_poll.as_deref() {
        None => Some(Duration::from_secs(30)),
        Some(text) => super::build::duration(
            text,
            keys!["sms", "reply_poll"],
            (crate::replies::MIN_POLL, Duration::from_secs(3600)),
            src,
        ),
    };
    if !ok {
        return None;
    }
    Some(SmsSettings {
        numbers: out,
        ignore_keywords: ignore_keywords?,
        ticket_keywords: ticket_keywords?,
        max_per_sender: max_per_sender?,
        max_per_agent: max_per_agent?,
        reply_poll: reply_poll?,
    })
}

/// "10/min", "30/hour", "5/10s": a count of at least 1 per a period from 1 s to a day.
fn rate(text: &str) -> Option<(u32, Duration)> {
    let (count, per) = text.split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "day" => Duration::from_secs(86400),
        other => humantime::parse_duration(other).ok()?,
    };
    (per >= Duration::from_secs(1) && per <= Duration::from_secs(86400)).then_some((count, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_ignore_case_accents_spaces_and_punctuation() {
        assert_eq!(keyword("  stop! "), "STOP");
        assert_eq!(keyword("Começar"), "COMECAR");
        assert_eq!(keyword("¿Ayuda?"), "AYUDA");
        assert_eq!(keyword("help me"), "HELP ME");
    }

    #[test]
    fn rates_read_as_count_per_period() {
        assert_eq!(rate("10/min"), Some((10, Duration::from_secs(60))));
        assert_eq!(rate("5/10s"), Some((5, Duration::from_secs(10))));
        assert_eq!(rate("30/hour"), Some((30, Duration::from_secs(3600))));
        assert_eq!(rate("0/min"), None);
        assert_eq!(rate("10"), None);
        assert_eq!(rate("10/fortnight"), None);
    }
}
