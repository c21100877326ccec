//! Which ticket a call goes to and what is written on it: the rules of the helpdesk seeds, pure
//! (no I/O). The delivery worker asks the helpdesk for what these rules need (the contact, their
//! tickets, the agent's user) and carries out the [`Plan`].
//!
//! - Whether an integration logs a call at all: its linked groups, the call type's `log`
//!   setting, and `create_out_of_hours` ([`logs`]).
//! - Zendesk's previous-ticket rule: among the contact's tickets, New > Open > Pending > On-hold;
//!   if the most recent ticket is Solved or Closed, a new ticket ([`previous_ticket`]). A ticket
//!   found closed when updating starts a new ticket (the SMS seed's lifecycle).
//! - Assignment: an answered call goes to the agent's helpdesk user (matched by e-mail), else to
//!   `default_assignee`; a missed call or voicemail to `missed_assignee`, else unassigned; an
//!   outbound call, answered or not, to the agent who dialled, else `default_assignee`
//!   (`missed_assignee` is the follow-up of customers who could not reach the company)
//!   ([`assignee_candidates`]).
//! - Every ticket carries the tags `sipdesk` and `sipdesk_<call type>`, plus those of the tag
//!   rules whose call tag the call has; tag rules also set type and priority. An update adds the
//!   call's tags to the ticket's (Zendesk's `additional_tags`), so tags agents set meanwhile
//!   stay.
//! - An update never sets the status back to New (Zendesk forbids it once a ticket left New):
//!   with `status = "new"` an updated ticket keeps its status.
//! - The note written is an internal note (`public: false`) listing the configured fields, ending
//!   with a marker (`[sipdesk:<call id>]`) by which a retried delivery recognises its own note.

use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::call::{CallRecord, CallType, Direction, Outcome};

#[cfg(test)]
mod tests;

/// Where a type of call is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Log {
    New,
    Previous,
    #[serde(rename = "none")]
    Nothing,
}

/// A ticket status, as Zendesk names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Open,
    Pending,
    Hold,
    Solved,
    Closed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::New,
        Status::Open,
        Status::Pending,
        Status::Hold,
        Status::Solved,
        Status::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Hold => "hold",
            Status::Solved => "solved",
            Status::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A ticket type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketType {
    Problem,
    Incident,
    Question,
    Task,
}

impl TicketType {
    pub fn parse(text: &str) -> Option<TicketType> {
        [
            TicketType::Problem,
            TicketType::Incident,
            TicketType::Question,
            TicketType::Task,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TicketType::Problem => "problem",
            TicketType::Incident => "incident",
            TicketType::Question => "question",
            TicketType::Task => "task",
        }
    }
}

/// A ticket priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Normal,
    Low,
}

impl Priority {
    pub fn parse(text: &str) -> Option<Priority> {
        [
            Priority::Urgent,
            Priority::High,
            Priority::Normal,
            Priority::Low,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Who a ticket should go to, before the helpdesk says who that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignee {
    /// A helpdesk user, by e-mail.
    User(String),
    /// A helpdesk group, by id.
    Group(u64),
}

/// Who a ticket goes to, as the helpdesk knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssigneeId {
    User(u64),
    Group(u64),
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

/// Where and with what status one call type is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallTypeRule {
    pub log: Log,
    pub status: Status,
}

/// A call tag and what it sets on the ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRule {
    pub tag: String,
    pub ticket_tags: Vec<String>,
    pub ticket_type: Option<TicketType>,
    pub priority: Option<Priority>,
}

/// An integration's ticket rules, checked.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The groups whose calls are logged.
    pub groups: Vec<String>,
    pub inbound_answered: CallTypeRule,
    pub missed: CallTypeRule,
    pub voicemail: CallTypeRule,
    pub outbound_answered: CallTypeRule,
    pub outbound_unanswered: CallTypeRule,
    pub create_out_of_hours: bool,
    pub create_unknown_contacts: bool,
    pub missed_assignee: Option<Assignee>,
    pub default_assignee: Option<String>,
    pub fields: Vec<Field>,
    pub update_title: bool,
    pub voice_comments: bool,
    pub tag_rules: Vec<TagRule>,
    /// Times on tickets are written in the zone of the call's group (by name), else in this
    /// one (the default zone).
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

    pub fn rule(&self, call_type: CallType) -> CallTypeRule {
        match call_type {
            CallType::InboundAnswered => self.inbound_answered,
            CallType::Missed => self.missed,
            CallType::Voicemail => self.voicemail,
            CallType::OutboundAnswered => self.outbound_answered,
            CallType::OutboundUnanswered => self.outbound_unanswered,
        }
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
    let call_type = call.call_type();
    if rules.rule(call_type).log == Log::Nothing {
        return Err(Skip::NotLogged(call_type));
    }
    // Only a call left unanswered because the office was closed: one a closed group overflowed
    // to an open group that answered it is logged like any other.
    if call.out_of_hours && call.outcome != Outcome::Answered && !rules.create_out_of_hours {
        return Err(Skip::OutOfHours);
    }
    Ok(())
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

/// A ticket of the contact, as the helpdesk lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSummary {
    pub id: u64,
    pub status: Status,
    pub created_at: Timestamp,
}

/// Zendesk's previous-ticket rule: when the most recent ticket is Solved or Closed, none (a new
/// ticket); otherwise the ticket whose status comes first in New > Open > Pending > On-hold, the
/// most recent among equals.
pub fn previous_ticket(tickets: &[TicketSummary]) -> Option<&TicketSummary> {
    let most_recent = tickets.iter().max_by_key(|t| (t.created_at, t.id))?;
    if matches!(most_recent.status, Status::Solved | Status::Closed) {
        return None;
    }
    let rank = |s: Status| match s {
        Status::New => 0,
        Status::Open => 1,
        Status::Pending => 2,
        Status::Hold => 3,
        Status::Solved | Status::Closed => 4,
    };
    tickets
        .iter()
        .filter(|t| rank(t.status) < 4)
        .min_by_key(|t| (rank(t.status), std::cmp::Reverse((t.created_at, t.id))))
}

/// Who the ticket should go to, in order of preference: the first that the helpdesk knows wins.
pub fn assignee_candidates(rules: &Rules, call: &CallRecord) -> Vec<Assignee> {
    let handled_by_an_agent =
        call.outcome == Outcome::Answered || call.direction == Direction::Outbound;
    if !handled_by_an_agent {
        return rules.missed_assignee.iter().cloned().collect();
    }
    call.agent_email
        .iter()
        .chain(&rules.default_assignee)
        .map(|email| Assignee::User(email.clone()))
        .collect()
}

/// A voice comment: the call with its recording, shown as a call on the ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VoiceComment {
    pub from: String,
    pub to: String,
    pub recording_url: String,
    pub started_at: Timestamp,
    pub call_duration: u64,
}

/// What is written to a ticket, created or updated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketWrite {
    /// Set on creation, and on updates when the title follows the latest call.
    pub subject: Option<String>,
    /// The internal note, ending with the call's marker.
    pub note: String,
    /// `None`: the ticket keeps its status (an update whose rule says New).
    pub status: Option<Status>,
    pub assignee: Option<AssigneeId>,
    /// The call's tags: the ticket's tag list when created, added to its tags when updated.
    pub tags: Vec<String>,
    pub ticket_type: Option<TicketType>,
    pub priority: Option<Priority>,
    pub voice: Option<VoiceComment>,
    /// The call id, so a ticket can be found again by the call it was made for.
    pub external_id: String,
}

/// What to do with the helpdesk for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Create(TicketWrite),
    Update { ticket: u64, write: TicketWrite },
}

/// The plan for a call once the contact's tickets and the assignee are known. `previous` is the
/// contact's ticket chosen by [`previous_ticket`], if any.
pub fn plan(
    rules: &Rules,
    call: &CallRecord,
    previous: Option<&TicketSummary>,
    assignee: Option<AssigneeId>,
) -> Plan {
    let rule = rules.rule(call.call_type());
    let mut tags = vec![
        "sipdesk".to_owned(),
        format!("sipdesk_{}", call.call_type().as_str()),
    ];
    let mut ticket_type = None;
    let mut priority = None;
    for tag_rule in rules
        .tag_rules
        .iter()
        .filter(|r| call.tags.contains(&r.tag))
    {
        tags.extend(tag_rule.ticket_tags.iter().cloned());
        ticket_type = tag_rule.ticket_type.or(ticket_type);
        priority = tag_rule.priority.or(priority);
    }
    let voice = match (&call.recording_url, rules.voice_comments) {
        (Some(url), true) => Some(VoiceComment {
            from: if call.direction == Direction::Inbound {
                call.caller.clone()
            } else {
                call.agent.clone().unwrap_or_default()
            },
            to: call.callee.clone(),
            recording_url: url.clone(),
            started_at: call.started_at,
            call_duration: call.talk_seconds().round() as u64,
        }),
        _ => None,
    };
    let mut write = TicketWrite {
        subject: Some(subject(call)),
        note: note(rules, call),
        status: Some(rule.status),
        assignee,
        tags,
        ticket_type,
        priority,
        voice,
        external_id: call.id.clone(),
    };
    match (rule.log, previous) {
        (Log::Previous, Some(ticket)) => {
            if !rules.update_title {
                write.subject = None;
            }
            if rule.status == Status::New {
                write.status = None;
            }
            Plan::Update {
                ticket: ticket.id,
                write,
            }
        }
        _ => Plan::Create(write),
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
    }
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

/// A time as tickets show it: local to the call's group, with the offset, e.g.
/// `2026-11-23 10:02:11 +01:00`.
pub fn local_time(rules: &Rules, call: &CallRecord, t: Timestamp) -> String {
    t.to_zoned(rules.zone_of(call).clone())
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// The internal note for a call: a headline, the configured fields, the marker.
pub fn note(rules: &Rules, call: &CallRecord) -> String {
    let time = |t: Timestamp| local_time(rules, call, t);
    let mut lines = vec![subject(call)];
    for field in &rules.fields {
        let line = match field {
            Field::CallType => {
                let mut text = format!("Call type: {}", call.call_type().as_str());
                if let Some(reason) = call.reason {
                    text.push_str(&format!(" ({})", reason.as_str()));
                }
                Some(text)
            }
            Field::Agent => call.agent.as_ref().map(|a| match &call.agent_email {
                Some(email) => format!("Agent: {a} ({email})"),
                None => format!("Agent: {a}"),
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
            Field::Voicemail => (call.outcome == Outcome::Voicemail)
                .then(|| "Voicemail: left by the caller".to_owned()),
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
    lines.push(marker(&call.id));
    lines.join("\n")
}
