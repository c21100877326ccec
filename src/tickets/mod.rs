//! The rules every helpdesk shares, pure (no I/O): whether an integration logs a call at all,
//! whether a contact may be created, and the call report written on a ticket or conversation
//! (title, the configured fields, times in the group's time zone with its offset). What
//! "previous" means, statuses and assignment are each vendor's ([`crate::helpdesk`]).
//!
//! - Whether an integration logs a call: its linked groups, the call type's `log` setting, and
//!   `create_out_of_hours`, which applies only to calls left unanswered because the office was
//!   closed ([`logs`]).
//! - A contact is created only under `create_unknown_contacts`, the shared anonymous contact
//!   too ([`may_create_contact`]).
//! - A voicemail call's note says a voicemail was left and how long it is, whether or not the
//!   `voicemail` field is listed (where it is, the line goes in its place).
//! - The note lists the configured fields and ends with a marker (`[sipdesk:<call id>]`) by
//!   which a retried delivery recognises its own note ([`note`]).

use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::call::{CallRecord, CallType, Direction, Outcome};

#[cfg(test)]
pub(crate) mod tests;

/// Where a type of call is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Log {
    New,
    Previous,
    #[serde(rename = "none")]
    Nothing,
}

/// A call detail that can be written on the ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    CallType,
    Agent,
    Start,
    End,
    Duration,
    WaitTime,
    Direction,
    RecordingUrl,
    Voicemail,
    Disposition,
    Queue,
    Group,
    Explanation,
}

impl Field {
    pub const ALL: [(&'static str, Field); 13] = [
        ("call_type", Field::CallType),
        ("agent", Field::Agent),
        ("start", Field::Start),
        ("end", Field::End),
        ("duration", Field::Duration),
        ("wait_time", Field::WaitTime),
        ("direction", Field::Direction),
        ("recording_url", Field::RecordingUrl),
        ("voicemail", Field::Voicemail),
        ("disposition", Field::Disposition),
        ("queue", Field::Queue),
        ("group", Field::Group),
        ("explanation", Field::Explanation),
    ];

    pub fn parse(text: &str) -> Option<Field> {
        Field::ALL.iter().find(|(n, _)| *n == text).map(|(_, f)| *f)
    }
}

/// One value per call type: a setting every integration has for each of the seven (five of
/// calls, two of texts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PerCallType<T> {
    pub inbound_answered: T,
    pub missed: T,
    pub voicemail: T,
    pub outbound_answered: T,
    pub outbound_unanswered: T,
    pub sms_inbound: T,
    pub sms_outbound: T,
}

impl<T: Copy> PerCallType<T> {
    pub fn get(&self, call_type: CallType) -> T {
        *self.of(call_type)
    }
}

impl<T> PerCallType<T> {
    pub fn of(&self, call_type: CallType) -> &T {
        match call_type {
            CallType::InboundAnswered => &self.inbound_answered,
            CallType::Missed => &self.missed,
            CallType::Voicemail => &self.voicemail,
            CallType::OutboundAnswered => &self.outbound_answered,
            CallType::OutboundUnanswered => &self.outbound_unanswered,
            CallType::SmsInbound => &self.sms_inbound,
            CallType::SmsOutbound => &self.sms_outbound,
        }
    }

    pub fn set(&mut self, call_type: CallType, value: T) {
        let slot = match call_type {
            CallType::InboundAnswered => &mut self.inbound_answered,
            CallType::Missed => &mut self.missed,
            CallType::Voicemail => &mut self.voicemail,
            CallType::OutboundAnswered => &mut self.outbound_answered,
            CallType::OutboundUnanswered => &mut self.outbound_unanswered,
            CallType::SmsInbound => &mut self.sms_inbound,
            CallType::SmsOutbound => &mut self.sms_outbound,
        };
        *slot = value;
    }
}

/// What every integration shares of its rules, checked.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The groups whose calls are logged.
    pub groups: Vec<String>,
    /// Per call type: a new ticket or conversation, the party's previous one, or nothing.
    pub log: PerCallType<Log>,
    pub create_out_of_hours: bool,
    pub create_unknown_contacts: bool,
    pub fields: Vec<Field>,
    /// Why this integration logs no texts at all, when its own switch keeps them out (Help
    /// Scout without `log_sms`); its text call types then log nothing.
    pub texts_off: Option<&'static str>,
    /// Times are written in the zone of the call's group (by name), else in this one (the
    /// default zone).
    pub timezone: TimeZone,
    pub group_zones: Vec<(String, TimeZone)>,
}

impl Rules {
    /// The zone a call's times are written in: its group's.
    pub fn zone_of(&self, call: &CallRecord) -> &TimeZone {
        call.group
            .as_deref()
            .and_then(|g| self.group_zones.iter().find(|(name, _)| name == g))
            .map_or(&self.timezone, |(_, zone)| zone)
    }
}

/// Why a call is not logged by an integration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// None of the integration's groups took part in the call.
    NotLinked,
    /// The integration does not log this type of call.
    NotLogged(CallType),
    /// The call came while the group was closed and `create_out_of_hours` is off.
    OutOfHours,
    /// No contact has the number (or, `anonymous`, the shared anonymous contact does not
    /// exist) and `create_unknown_contacts` is off.
    UnknownContact { anonymous: bool },
    /// A text that makes no ticket anywhere (a subscription or compliance keyword), and why.
    Text(String),
    /// The integration's own switch keeps texts out ([`Rules::texts_off`]), and why.
    TextsOff(&'static str),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotLinked => write!(f, "none of the integration's groups took the call"),
            Skip::NotLogged(call_type) => write!(
                f,
                "{} calls are not logged (log = \"none\")",
                call_type.as_str()
            ),
            Skip::OutOfHours => write!(
                f,
                "calls missed out of hours are not logged (create_out_of_hours = false)"
            ),
            Skip::UnknownContact { anonymous: false } => write!(
                f,
                "no contact has this number and create_unknown_contacts = false"
            ),
            Skip::UnknownContact { anonymous: true } => write!(
                f,
                "the number is withheld, there is no anonymous contact yet and create_unknown_contacts = false"
            ),
            Skip::Text(why) => write!(f, "{why}"),
            Skip::TextsOff(why) => write!(f, "{why}"),
        }
    }
}

/// Whether an integration logs this call at all (before asking the helpdesk anything).
pub fn logs(rules: &Rules, call: &CallRecord) -> Result<(), Skip> {
    let linked = rules
        .groups
        .iter()
        .any(|g| call.group.as_deref() == Some(g.as_str()) || call.groups.iter().any(|c| c == g));
    if !linked {
        return Err(Skip::NotLinked);
    }
    if let Some(why) = call.sms.as_ref().and_then(|t| t.skipped.as_ref()) {
        return Err(Skip::Text(why.clone()));
    }
    let call_type = call.call_type();
    if rules.log.get(call_type) == Log::Nothing {
        return Err(not_logged(rules, call_type));
    }
    // Only a call left unanswered because the office was closed: one a closed group overflowed
    // to an open group that answered it is logged like any other.
    if call.out_of_hours && call.outcome != Outcome::Answered && !rules.create_out_of_hours {
        return Err(Skip::OutOfHours);
    }
    Ok(())
}

/// Why a call type whose `log` is nothing is not logged: the integration's switch for texts
/// when that is what keeps them out, else its `log = "none"`.
pub fn not_logged(rules: &Rules, call_type: CallType) -> Skip {
    match rules.texts_off {
        Some(why) if call_type.is_text() => Skip::TextsOff(why),
        _ => Skip::NotLogged(call_type),
    }
}

/// Where an integration logs this call: its call type's `log`, except that a text from a sender
/// past `[sms] max_per_sender` joins their open ticket where a new one would be made.
pub fn log_of(rules: &Rules, call: &CallRecord) -> Log {
    let log = rules.log.get(call.call_type());
    match (&call.sms, log) {
        (Some(text), Log::New) if text.flood => Log::Previous,
        _ => log,
    }
}

/// Whether a call whose party no contact has may create one: only under
/// `create_unknown_contacts`, for a number as for the shared anonymous contact (which is used
/// when it exists already).
pub fn may_create_contact(rules: &Rules, anonymous: bool) -> Result<(), Skip> {
    if rules.create_unknown_contacts {
        Ok(())
    } else {
        Err(Skip::UnknownContact { anonymous })
    }
}

/// The ticket title for a call.
pub fn subject(call: &CallRecord) -> String {
    match call.call_type() {
        CallType::InboundAnswered => format!("Call from {}", call.caller),
        CallType::Missed => format!("Missed call from {}", call.caller),
        CallType::Voicemail => format!("Voicemail from {}", call.caller),
        CallType::OutboundAnswered => format!("Call to {}", call.callee),
        CallType::OutboundUnanswered => format!("Unanswered call to {}", call.callee),
        CallType::SmsInbound => format!("SMS from {}", call.caller),
        CallType::SmsOutbound => format!("SMS to {}", call.callee),
    }
}

/// A text's headline, as the Intercom seed words it: `Inbound SMS on <name>` or
/// `Outbound SMS on <name>`.
pub fn sms_headline(call: &CallRecord) -> String {
    let name = call.sms.as_ref().map_or("", |t| t.name.as_str());
    match call.direction {
        Direction::Inbound => format!("Inbound SMS on {name}"),
        Direction::Outbound => format!("Outbound SMS on {name}"),
    }
}

/// A text told for people, as the Intercom seed lists it: the number used, who sent it, to
/// whom, the text, and for an outbound text whether it was delivered.
pub fn sms_summary(rules: &Rules, call: &CallRecord) -> String {
    let Some(text) = &call.sms else {
        return summary(rules, call);
    };
    let sender = match (call.direction, &call.agent) {
        (Direction::Inbound, _) => call.caller.clone(),
        (Direction::Outbound, Some(agent)) => match &call.agent_email {
            Some(email) => format!("{agent} ({email})"),
            None => agent.clone(),
        },
        (Direction::Outbound, None) => text.via.clone().unwrap_or_default(),
    };
    let mut lines = vec![
        sms_headline(call),
        format!("Number: {} ({})", text.number, text.name),
        format!("From: {sender}"),
        format!("To: {}", call.callee),
        format!("Time: {}", local_time(rules, call, call.started_at)),
    ];
    if call.direction == Direction::Outbound {
        lines.push(match &text.failure {
            None => "Status: delivered".to_owned(),
            Some(why) => format!("Status: delivery failed ({why})"),
        });
    }
    lines.push(format!("Text:\n{}", text.body));
    lines.join("\n")
}

/// What identifies a call's note on a ticket.
pub fn marker(call_id: &str) -> String {
    format!("[sipdesk:{call_id}]")
}

fn seconds(value: f64) -> String {
    let secs = value.round() as u64;
    if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// The voicemail the caller left and its length, for a voicemail call.
fn voicemail_line(call: &CallRecord) -> Option<String> {
    if call.outcome != Outcome::Voicemail {
        return None;
    }
    Some(match &call.voicemail {
        Some(voicemail) => format!(
            "Voicemail: {} left by the caller",
            seconds(voicemail.duration_ms as f64 / 1000.0)
        ),
        None => "Voicemail: left by the caller".to_owned(),
    })
}

/// A time as tickets show it: local to the call's group, with the offset, e.g.
/// `2026-11-23 10:02:11 +01:00`.
pub fn local_time(rules: &Rules, call: &CallRecord, t: Timestamp) -> String {
    t.to_zoned(rules.zone_of(call).clone())
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// The internal note for a call: its [`summary`] (a text's [`sms_summary`]), then the marker.
pub fn note(rules: &Rules, call: &CallRecord) -> String {
    let told = if call.sms.is_some() {
        sms_summary(rules, call)
    } else {
        summary(rules, call)
    };
    format!("{told}\n{}", marker(&call.id))
}

/// The call told for people: a headline, then the configured fields.
pub fn summary(rules: &Rules, call: &CallRecord) -> String {
    let time = |t: Timestamp| local_time(rules, call, t);
    let mut lines = vec![subject(call)];
    if !rules.fields.contains(&Field::Voicemail) {
        // A voicemail is always said, with its length, whatever the fields.
        lines.extend(voicemail_line(call));
    }
    for field in &rules.fields {
        let line = match field {
            Field::CallType => {
                let mut text = format!("Call type: {}", call.call_type().as_str());
                if let Some(reason) = call.reason {
                    text.push_str(&format!(" ({})", reason.as_str()));
                }
                Some(text)
            }
            Field::Agent => call.agent.as_ref().map(|a| {
                let mut text = match &call.agent_email {
                    Some(email) => format!("Agent: {a} ({email})"),
                    None => format!("Agent: {a}"),
                };
                if call.agents.len() > 1 {
                    let handovers: Vec<String> = call
                        .agents
                        .windows(2)
                        .map(|w| {
                            format!(
                                "{} → {} at {}",
                                w[0].extension,
                                w[1].extension,
                                time(w[1].from)
                            )
                        })
                        .collect();
                    text.push_str(&format!("\nTransferred: {}", handovers.join(", ")));
                }
                text
            }),
            Field::Start => Some(format!("Start: {}", time(call.started_at))),
            Field::End => Some(format!("End: {}", time(call.ended_at))),
            Field::Duration => call
                .answered_at
                .map(|_| format!("Duration: {}", seconds(call.talk_seconds()))),
            Field::WaitTime => (call.direction == Direction::Inbound)
                .then(|| format!("Wait time: {}", seconds(call.wait_seconds()))),
            Field::Direction => Some(format!(
                "Direction: {}",
                if call.direction == Direction::Inbound {
                    "inbound"
                } else {
                    "outbound"
                }
            )),
            Field::RecordingUrl => call
                .recording_url
                .as_ref()
                .map(|u| format!("Recording: {u}")),
            Field::Voicemail => voicemail_line(call),
            Field::Disposition => call.ended_by.map(|by| {
                format!(
                    "Ended by: {}",
                    serde_json::to_value(by)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            }),
            Field::Queue => call.queue.as_ref().map(|q| format!("Queue: {q}")),
            Field::Group => call.group.as_ref().map(|g| format!("Group: {g}")),
            Field::Explanation => (!call.explanation.is_empty())
                .then(|| format!("Routing:\n- {}", call.explanation.join("\n- "))),
        };
        lines.extend(line);
    }
    lines.join("\n")
}
