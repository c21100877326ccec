//! What a call is once sipdesk has followed it: the record (one per call) and the events that
//! explain it. The proxy produces them, the store keeps them, ticket rules read them.
//!
//! Transfers: an answered call lists in `agents` every agent who held it, in order, each with
//! their times: the one who answered (or dialled), then each one it was transferred to.
//! `agent` and `agent_email` are the last of them, who held the call when sipdesk's part of it
//! ended. Helpdesks assign the ticket to the last of them they have a user for
//! ([`CallRecord::assignee_emails`]), so a transfer to someone without a helpdesk user leaves
//! the ticket with whoever had it before (the seeds on Intercom and Help Scout).
//!
//! Text messages (SIP MESSAGE, [`crate::proxy`]'s `sms`) are records too, with [`Text`]: one
//! record per text, inbound (a customer texted one of the `[[sms_numbers]]`) or outbound (an
//! agent's phone, or a helpdesk reply, texted a customer). They go through the same outbox, so
//! they reach each helpdesk once, as calls do; their call types are `sms_inbound` and
//! `sms_outbound`. Their outcome is `answered` (received, or delivered to the PBX) or `missed`
//! with reason `rejected` (the PBX refused an outbound text).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Who placed the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A caller reached a queue.
    Inbound,
    /// An agent dialled an external number through sipdesk.
    Outbound,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An agent (inbound) or the called party (outbound) answered.
    Answered,
    /// Nobody answered.
    Missed,
    /// The caller left a message.
    Voicemail,
}

/// Why a call was missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedReason {
    /// Agents were rung, none answered.
    NoAnswer,
    /// The caller hung up before an answer.
    Abandoned,
    OutOfHours,
    Holiday,
    /// Nobody available anywhere the call could go.
    NoAgents,
    /// Refused by the called party or the network (outbound), or by sipdesk itself.
    Rejected,
    /// sipdesk stopped (crash or restart) while the call was in progress.
    Interrupted,
    /// An agent answered but the caller's side never acknowledged the answer (no ACK within
    /// 64·T1): the two were never connected, and sipdesk hung up both (RFC 3261 §13.3.1.4).
    NotConnected,
}

impl MissedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MissedReason::NoAnswer => "no_answer",
            MissedReason::Abandoned => "abandoned",
            MissedReason::OutOfHours => "out_of_hours",
            MissedReason::Holiday => "holiday",
            MissedReason::NoAgents => "no_agents",
            MissedReason::Rejected => "rejected",
            MissedReason::Interrupted => "interrupted",
            MissedReason::NotConnected => "not_connected",
        }
    }
}

/// Who or what ended an answered call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Caller,
    Agent,
    /// The call reached `max_call_duration` without a BYE.
    MaxDuration,
    /// Dropped by an administrator as a stuck call.
    Admin,
    /// sipdesk stopped while the call was in progress.
    Interrupted,
    /// The session check found one side gone (no answer, or 481 to an in-dialog OPTIONS).
    Lost,
}

/// The call types ticket rules are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallType {
    InboundAnswered,
    Missed,
    Voicemail,
    OutboundAnswered,
    OutboundUnanswered,
    /// A text a customer sent to one of the `[[sms_numbers]]`.
    SmsInbound,
    /// A text sent to a customer: from an agent's phone, or a helpdesk reply.
    SmsOutbound,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::InboundAnswered => "inbound_answered",
            CallType::Missed => "missed",
            CallType::Voicemail => "voicemail",
            CallType::OutboundAnswered => "outbound_answered",
            CallType::OutboundUnanswered => "outbound_unanswered",
            CallType::SmsInbound => "sms_inbound",
            CallType::SmsOutbound => "sms_outbound",
        }
    }

    /// Whether this is a text message rather than a call.
    pub fn is_text(self) -> bool {
        matches!(self, CallType::SmsInbound | CallType::SmsOutbound)
    }
}

/// Where a call stands, as the store and `sipdesk calls --active` see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStart {
    /// sipdesk's id of the call.
    pub id: String,
    /// The SIP Call-ID of the caller's leg.
    pub sip_call_id: String,
    pub direction: Direction,
    pub queue: Option<String>,
    /// The caller: E.164 when the number could be read, else as the PBX sent it.
    pub caller: String,
    /// The queue ID (inbound) or the dialled number (outbound).
    pub callee: String,
    pub started_at: Timestamp,
    /// The sipdesk instance handling the call (`[cluster] instance`): if it dies, another
    /// closes the call.
    #[serde(default)]
    pub instance: String,
}

/// One finished call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    pub sip_call_id: String,
    pub direction: Direction,
    pub queue: Option<String>,
    /// The group that answered, or that owned the call when nobody did.
    pub group: Option<String>,
    /// Every group the call reached, in order.
    pub groups: Vec<String>,
    pub caller: String,
    pub callee: String,
    /// The agent's extension: who held the call last (who answered, or the last agent it was
    /// transferred to) for inbound calls; who dialled for outbound ones.
    pub agent: Option<String>,
    /// That agent's configured e-mail.
    pub agent_email: Option<String>,
    /// Every agent who held the answered call, in order, with their times (one entry unless it
    /// was transferred); empty when nobody answered. Records written before transfers were
    /// followed have none.
    #[serde(default)]
    pub agents: Vec<AgentLeg>,
    pub started_at: Timestamp,
    pub answered_at: Option<Timestamp>,
    pub ended_at: Timestamp,
    pub outcome: Outcome,
    pub reason: Option<MissedReason>,
    pub ended_by: Option<EndedBy>,
    /// Whether the owning group was closed (out of hours or holiday) when the call came.
    pub out_of_hours: bool,
    pub recording_url: Option<String>,
    /// The voicemail the caller left (outcome `voicemail`).
    #[serde(default)]
    pub voicemail: Option<Voicemail>,
    /// The routing explanation, one line per step.
    pub explanation: Vec<String>,
    pub tags: Vec<String>,
    /// The text, when this record is a text message rather than a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<Text>,
}

/// A text message: what a customer texted, or what was texted to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The company's number of the text (`[[sms_numbers]]`), E.164: the one the customer texted,
    /// or the one the text went out from.
    pub number: String,
    /// That number's name, shown in helpdesks ("SMS on <name>").
    pub name: String,
    /// The text as sent (UTF-8); `[attachment not shown]` for a body that is not text.
    pub body: String,
    /// Why nothing is logged for it (a subscription or compliance keyword), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The sender went past `[sms] max_per_sender`: the text joins their open ticket or
    /// conversation even where a new one would be made.
    #[serde(default)]
    pub flood: bool,
    /// Where an outbound text came from: `phone` (an agent's extension) or the name of the
    /// helpdesk integration an agent replied in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The ticket an outbound reply was written on, in `via`'s helpdesk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Why the PBX did not take an outbound text (its status and reason), if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A voicemail: the recording sipdesk made of the caller after its greeting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voicemail {
    /// The WAV file (8 kHz, 16-bit, mono PCM), under the state directory's `voicemail/`.
    pub file: String,
    /// How long the recording is.
    pub duration_ms: u64,
    /// Why the recording ended: `hangup` (the caller's BYE), `pound` (`#`), `silence`,
    /// `max_length`, or `stopped` (an admin, or sipdesk stopping).
    pub end: String,
}

impl Voicemail {
    /// The file name helpdesks show: `voicemail-<call id>.wav`.
    pub fn file_name(&self, call_id: &str) -> String {
        format!("voicemail-{call_id}.wav")
    }
}

/// One agent's part of an answered call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLeg {
    pub extension: String,
    /// The agent's configured e-mail (`None` for an extension that is not a configured agent,
    /// or one without an e-mail).
    pub email: Option<String>,
    /// When the agent took the call: the answer, or the transfer to them.
    pub from: Timestamp,
    /// When they stopped holding it: the transfer away from them, or the end of the call.
    pub until: Timestamp,
}

impl CallRecord {
    /// The e-mails a helpdesk looks its assignee up by, best first: the agents who held the
    /// call, the last first, each once; `agent_email` for a record without `agents`. A
    /// connector assigns the ticket to the first it has a user for.
    pub fn assignee_emails(&self) -> Vec<&str> {
        let mut emails: Vec<&str> = Vec::new();
        let legs = self.agents.iter().rev().filter_map(|l| l.email.as_deref());
        for email in legs.chain(self.agent_email.as_deref()) {
            if !emails.iter().any(|e| e.eq_ignore_ascii_case(email)) {
                emails.push(email);
            }
        }
        emails
    }

    /// The e-mail of the agent who answered (or dialled): the first who held the call.
    pub fn answered_by_email(&self) -> Option<&str> {
        match self.agents.first() {
            Some(leg) => leg.email.as_deref(),
            None => self.agent_email.as_deref(),
        }
    }

    /// How long the caller waited before an answer, or in all when nobody answered.
    pub fn wait_seconds(&self) -> f64 {
        let until = self.answered_at.unwrap_or(self.ended_at);
        until.duration_since(self.started_at).as_secs_f64().max(0.0)
    }

    /// How long the call was answered for.
    pub fn talk_seconds(&self) -> f64 {
        self.answered_at.map_or(0.0, |a| {
            self.ended_at.duration_since(a).as_secs_f64().max(0.0)
        })
    }

    /// The type ticket rules use.
    pub fn call_type(&self) -> CallType {
        if self.sms.is_some() {
            return match self.direction {
                Direction::Inbound => CallType::SmsInbound,
                Direction::Outbound => CallType::SmsOutbound,
            };
        }
        match (self.direction, self.outcome) {
            (Direction::Inbound, Outcome::Answered) => CallType::InboundAnswered,
            (Direction::Inbound, Outcome::Missed) => CallType::Missed,
            (_, Outcome::Voicemail) => CallType::Voicemail,
            (Direction::Outbound, Outcome::Answered) => CallType::OutboundAnswered,
            (Direction::Outbound, Outcome::Missed) => CallType::OutboundUnanswered,
        }
    }
}

/// Something that happened during a call, for its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent {
    pub call_id: String,
    /// Orders the events of a call.
    pub seq: u64,
    pub at: Timestamp,
    /// `routing`, `offered`, `ringing`, `no_answer`, `declined`, `answered`, `overflow`,
    /// `ended`, …
    pub kind: String,
    pub detail: String,
}

/// What the proxy asks the store to keep. Written in the background: the SIP path never waits.
/// Serialized (JSON lines) only in the spill file of records that could not be written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    CallStarted(CallStart),
    Event(CallEvent),
    /// A call in progress was answered (its final record says it again): kept at once, so a
    /// call closed as interrupted is known answered, and by whom.
    Answered {
        id: String,
        at: Timestamp,
        agent: Option<String>,
        agent_email: Option<String>,
    },
    CallEnded(Box<CallRecord>),
    /// The round-robin cursor of a group moved to this extension.
    Cursor {
        group: String,
        extension: String,
    },
    /// An agent or supervisor set an agent available or away.
    Agent(AgentSetting),
}

/// The availability an agent or supervisor chose (the API, the wallboard, a feature code, the
/// `sipdesk agents` command); kept so it survives a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSetting {
    pub extension: String,
    pub away: bool,
    /// Why, when away.
    pub reason: Option<String>,
    pub at: Timestamp,
}

impl Change {
    /// What kind of change this is, and the call it belongs to (the group for a cursor).
    pub fn describe(&self) -> (&'static str, &str) {
        match self {
            Change::CallStarted(start) => ("call_started", &start.id),
            Change::Event(event) => ("event", &event.call_id),
            Change::CallEnded(record) => ("call_ended", &record.id),
            Change::Answered { id, .. } => ("answered", id),
            Change::Cursor { group, .. } => ("cursor", group),
            Change::Agent(setting) => ("agent", &setting.extension),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tickets::tests::call;

    fn leg(extension: &str, email: Option<&str>) -> AgentLeg {
        let at: Timestamp = "2026-03-02T09:00:12Z".parse().unwrap();
        AgentLeg {
            extension: extension.to_owned(),
            email: email.map(str::to_owned),
            from: at,
            until: at,
        }
    }

    #[test]
    fn the_assignee_is_looked_for_from_the_last_agent_back_to_the_first() {
        let mut record = call(CallType::InboundAnswered);
        record.agents = vec![
            leg("201", Some("ana@example.com")),
            leg("202", None),
            leg("203", Some("Bea@example.com")),
            leg("201", Some("ana@example.com")),
            leg("204", Some("bea@example.com")),
        ];
        record.agent = Some("204".to_owned());
        record.agent_email = Some("bea@example.com".to_owned());
        assert_eq!(
            record.assignee_emails(),
            vec!["bea@example.com", "ana@example.com"]
        );
        assert_eq!(record.answered_by_email(), Some("ana@example.com"));
        // A record from before transfers were followed: its agent alone.
        record.agents.clear();
        assert_eq!(record.assignee_emails(), vec!["bea@example.com"]);
    }

    #[test]
    fn a_record_written_without_agents_still_reads() {
        let record = call(CallType::InboundAnswered);
        let mut json = serde_json::to_value(&record).unwrap();
        json.as_object_mut().unwrap().remove("agents");
        let read: CallRecord = serde_json::from_value(json).unwrap();
        assert!(read.agents.is_empty());
        assert_eq!(read.agent, record.agent);
    }
}
