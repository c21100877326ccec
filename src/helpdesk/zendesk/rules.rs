//! Zendesk's own ticket rules, pure (no I/O): statuses, the previous-ticket rule, assignment,
//! tags, type and priority, and the plan a delivery carries out. The rules every helpdesk
//! shares (which calls are logged, the note) are [`crate::tickets`].
//!
//! - The previous ticket: among the contact's tickets, New > Open > Pending > On-hold; if the
//!   most recent ticket is Solved or Closed, a new ticket ([`previous_ticket`]). A ticket found
//!   closed when updating starts a new ticket (the SMS seed's lifecycle).
//! - Assignment: an answered call goes to the agent's Zendesk user (matched by e-mail), else to
//!   `default_assignee`; a missed call or voicemail to `missed_assignee`, else unassigned; an
//!   outbound call, answered or not, to the agent who dialled, else `default_assignee`
//!   (`missed_assignee` is the follow-up of customers who could not reach the company); a
//!   transferred call to the last agent who held it with a Zendesk user, else the ones before
//!   ([`assignee_candidates`]).
//! - Every ticket carries the tags `sipdesk` and `sipdesk_<call type>`, plus those of the tag
//!   rules whose call tag the call has; tag rules also set type and priority. An update adds the
//!   call's tags to the ticket's (Zendesk's `additional_tags`), so tags agents set meanwhile
//!   stay.
//! - An update never sets the status back to New (Zendesk forbids it once a ticket left New):
//!   with `status = "new"` an updated ticket keeps its status.
//! - The note is an internal note (`public: false`).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::call::{CallRecord, Direction, Outcome};
use crate::tickets::{self, Log, PerCallType, Rules, note, subject};

#[cfg(test)]
mod tests;

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

/// A call tag and what it sets on the ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRule {
    pub tag: String,
    pub ticket_tags: Vec<String>,
    pub ticket_type: Option<TicketType>,
    pub priority: Option<Priority>,
}

/// The rules only a Zendesk integration has, checked.
#[derive(Clone, Debug)]
pub struct ZendeskRules {
    /// The status each call type sets.
    pub status: PerCallType<Status>,
    pub missed_assignee: Option<Assignee>,
    pub default_assignee: Option<String>,
    pub update_title: bool,
    pub voice_comments: bool,
    pub tag_rules: Vec<TagRule>,
}

/// The statuses a Zendesk call type may set, as written in the configuration.
pub const STATUSES: &str = "\"new\", \"open\", \"pending\", \"hold\", \"solved\" or \"closed\"";

/// The default status per call type: answered calls are done, missed ones wait for a callback.
pub const DEFAULT_STATUS: PerCallType<Status> = PerCallType {
    inbound_answered: Status::Solved,
    missed: Status::Open,
    voicemail: Status::Open,
    outbound_answered: Status::Solved,
    outbound_unanswered: Status::Open,
    // A customer's text reopens the conversation; an agent's text waits for their answer.
    sms_inbound: Status::Open,
    sms_outbound: Status::Pending,
};

/// A ticket of the contact, as the helpdesk lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSummary {
    pub id: u64,
    pub status: Status,
    pub created_at: Timestamp,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The tag every ticket of a text conversation carries (the Klaviyo seed's view filters on it).
pub const SMS_TAG: &str = "sms";

/// The customer's text conversation: their most recent ticket tagged `sms`, whatever its
/// status (the Klaviyo seed: open → a comment, solved → reopened, closed → a follow-up).
pub fn sms_ticket(tickets: &[TicketSummary]) -> Option<&TicketSummary> {
    tickets
        .iter()
        .filter(|t| t.tags.iter().any(|tag| tag == SMS_TAG))
        .max_by_key(|t| (t.created_at, t.id))
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
/// A transferred call goes to the last agent who held it with a Zendesk user, else to the one
/// before, down to the one who answered ([`CallRecord::assignee_emails`]).
pub fn assignee_candidates(zendesk: &ZendeskRules, call: &CallRecord) -> Vec<Assignee> {
    if call.sms.is_some() && call.direction == Direction::Inbound {
        // A customer's text goes to the number's one agent, if it has one; otherwise the
        // ticket keeps whoever has it (or Zendesk's own assignment rules take a new one).
        return call
            .assignee_emails()
            .into_iter()
            .map(|email| Assignee::User(email.to_owned()))
            .collect();
    }
    let handled_by_an_agent =
        call.outcome == Outcome::Answered || call.direction == Direction::Outbound;
    if !handled_by_an_agent {
        return zendesk.missed_assignee.iter().cloned().collect();
    }
    call.assignee_emails()
        .into_iter()
        .chain(zendesk.default_assignee.as_deref())
        .map(|email| Assignee::User(email.to_owned()))
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
    /// Upload tokens of files the note carries (a voicemail's recording).
    pub uploads: Vec<String>,
    /// The call id, so a ticket can be found again by the call it was made for.
    pub external_id: String,
    /// A customer's text: the comment is public, in the name of `author` (the customer).
    pub public: bool,
    pub author: Option<u64>,
    /// The closed ticket a new one follows up (`via_followup_source_id`).
    pub followup: Option<u64>,
}

/// What to do with the helpdesk for one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    Create(TicketWrite),
    Update { ticket: u64, write: TicketWrite },
}

impl Plan {
    /// The plan with a customer's text written in `requester`'s name.
    pub fn authored_by(mut self, requester: u64) -> Plan {
        let write = match &mut self {
            Plan::Create(write) | Plan::Update { write, .. } => write,
        };
        if write.public {
            write.author = Some(requester);
        }
        self
    }
}

/// The plan for a call once the contact's tickets and the assignee are known. `previous` is the
/// contact's ticket chosen by [`previous_ticket`], if any.
pub fn plan(
    rules: &Rules,
    zendesk: &ZendeskRules,
    call: &CallRecord,
    previous: Option<&TicketSummary>,
    assignee: Option<AssigneeId>,
) -> Plan {
    let log = tickets::log_of(rules, call);
    let status = zendesk.status.get(call.call_type());
    let mut tags = vec![
        "sipdesk".to_owned(),
        format!("sipdesk_{}", call.call_type().as_str()),
    ];
    let mut ticket_type = None;
    let mut priority = None;
    for tag_rule in zendesk
        .tag_rules
        .iter()
        .filter(|r| call.tags.contains(&r.tag))
    {
        tags.extend(tag_rule.ticket_tags.iter().cloned());
        ticket_type = tag_rule.ticket_type.or(ticket_type);
        priority = tag_rule.priority.or(priority);
    }
    let voice = match (&call.recording_url, zendesk.voice_comments) {
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
        status: Some(status),
        assignee,
        tags,
        ticket_type,
        priority,
        voice,
        uploads: Vec::new(),
        external_id: call.id.clone(),
        public: false,
        author: None,
        followup: None,
    };
    if let Some(text) = &call.sms {
        write.tags.push(SMS_TAG.to_owned());
        if call.direction == Direction::Inbound {
            // The customer's own words, as a public comment; the marker last, as on notes.
            write.note = format!("{}\n\n{}", text.body, tickets::marker(&call.id));
            write.public = true;
        }
    }
    match (log, previous) {
        (Log::Previous, Some(ticket)) if ticket.status == Status::Closed => {
            // A closed ticket takes nothing more: a follow-up.
            write.followup = Some(ticket.id);
            Plan::Create(write)
        }
        (Log::Previous, Some(ticket)) => {
            if !zendesk.update_title {
                write.subject = None;
            }
            if status == Status::New {
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
