//! The ticket rules of the seeds, case by case: which calls an integration logs, which ticket
//! a call goes to, who it is assigned to, and what is written.

// The case tables read best as plain tuples.
#![allow(clippy::type_complexity)]

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::*;
use crate::call::{AgentLeg, CallRecord, Direction, EndedBy, MissedReason, Outcome};

pub(crate) fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

pub(crate) fn rules() -> Rules {
    Rules {
        groups: vec!["support".to_owned()],
        log: PerCallType {
            inbound_answered: Log::New,
            missed: Log::New,
            voicemail: Log::New,
            outbound_answered: Log::Previous,
            outbound_unanswered: Log::Nothing,
            sms_inbound: Log::Previous,
            sms_outbound: Log::Previous,
        },
        create_out_of_hours: true,
        create_unknown_contacts: true,
        fields: Field::ALL.iter().map(|(_, f)| *f).collect(),
        texts_off: None,
        timezone: TimeZone::get("Europe/Madrid").unwrap(),
        group_zones: vec![
            (
                "support".to_owned(),
                TimeZone::get("Europe/Madrid").unwrap(),
            ),
            (
                "suporte".to_owned(),
                TimeZone::get("America/Sao_Paulo").unwrap(),
            ),
        ],
    }
}

/// A text: a customer's to the company's number (inbound), or an agent's from their phone.
pub(crate) fn text(direction: Direction) -> CallRecord {
    let mut record = call(CallType::InboundAnswered);
    record.id = "sms-0001".to_owned();
    record.direction = direction;
    record.queue = None;
    record.agents.clear();
    record.answered_at = None;
    record.ended_at = record.started_at;
    record.ended_by = None;
    record.explanation = vec!["text to +34910000000 (Soporte)".to_owned()];
    if direction == Direction::Inbound {
        record.callee = "+34910000000".to_owned();
        record.agent = None;
        record.agent_email = None;
    } else {
        record.caller = "201".to_owned();
        record.callee = "+34911239613".to_owned();
    }
    record.sms = Some(crate::call::Text {
        number: "+34910000000".to_owned(),
        name: "Soporte".to_owned(),
        body: "¿Dónde está mi pedido?".to_owned(),
        skipped: None,
        flood: false,
        via: (direction == Direction::Outbound).then(|| "phone".to_owned()),
        ticket: None,
        failure: None,
    });
    record
}

pub(crate) fn call(call_type: CallType) -> CallRecord {
    let (direction, outcome) = match call_type {
        CallType::SmsInbound => return text(Direction::Inbound),
        CallType::SmsOutbound => return text(Direction::Outbound),
        CallType::InboundAnswered => (Direction::Inbound, Outcome::Answered),
        CallType::Missed => (Direction::Inbound, Outcome::Missed),
        CallType::Voicemail => (Direction::Inbound, Outcome::Voicemail),
        CallType::OutboundAnswered => (Direction::Outbound, Outcome::Answered),
        CallType::OutboundUnanswered => (Direction::Outbound, Outcome::Missed),
    };
    let answered = outcome == Outcome::Answered;
    CallRecord {
        id: "c0ffee-1".to_owned(),
        sip_call_id: "abc@pbx".to_owned(),
        direction,
        queue: (direction == Direction::Inbound).then(|| "900".to_owned()),
        group: Some("support".to_owned()),
        groups: vec!["support".to_owned()],
        caller: if direction == Direction::Inbound {
            "+34911239613".to_owned()
        } else {
            "201".to_owned()
        },
        callee: if direction == Direction::Inbound {
            "900".to_owned()
        } else {
            "+34911239613".to_owned()
        },
        agent: (answered || direction == Direction::Outbound).then(|| "201".to_owned()),
        agent_email: (answered || direction == Direction::Outbound)
            .then(|| "ana@example.com".to_owned()),
        agents: if answered {
            vec![AgentLeg {
                extension: "201".to_owned(),
                email: Some("ana@example.com".to_owned()),
                from: at("2026-03-02T09:00:12Z"),
                until: at("2026-03-02T09:03:27Z"),
            }]
        } else {
            Vec::new()
        },
        started_at: at("2026-03-02T09:00:00Z"),
        answered_at: answered.then(|| at("2026-03-02T09:00:12Z")),
        ended_at: at("2026-03-02T09:03:27Z"),
        outcome,
        reason: (outcome == Outcome::Missed).then_some(MissedReason::NoAnswer),
        ended_by: answered.then_some(EndedBy::Caller),
        out_of_hours: false,
        recording_url: answered.then(|| "https://pbx.example.com/rec/abc.wav".to_owned()),
        voicemail: None,
        explanation: vec![
            "support: open (Mon 08:00–18:00)".to_owned(),
            "ring 201".to_owned(),
        ],
        tags: Vec::new(),
        sms: None,
    }
}

pub(crate) const TYPES: [CallType; 5] = [
    CallType::InboundAnswered,
    CallType::Missed,
    CallType::Voicemail,
    CallType::OutboundAnswered,
    CallType::OutboundUnanswered,
];

#[test]
fn which_calls_an_integration_logs() {
    // (call type, log setting, out of hours, create_out_of_hours, group of the call, expected)
    let cases: &[(CallType, Log, bool, bool, &str, Result<(), Skip>)] = &[
        (
            CallType::InboundAnswered,
            Log::New,
            false,
            true,
            "support",
            Ok(()),
        ),
        (
            CallType::Missed,
            Log::Previous,
            false,
            true,
            "support",
            Ok(()),
        ),
        (
            CallType::Voicemail,
            Log::New,
            false,
            false,
            "support",
            Ok(()),
        ),
        (
            CallType::OutboundAnswered,
            Log::Previous,
            false,
            true,
            "support",
            Ok(()),
        ),
        (
            CallType::OutboundUnanswered,
            Log::New,
            false,
            true,
            "support",
            Ok(()),
        ),
        // "No registrar en ningún ticket".
        (
            CallType::InboundAnswered,
            Log::Nothing,
            false,
            true,
            "support",
            Err(Skip::NotLogged(CallType::InboundAnswered)),
        ),
        (
            CallType::Missed,
            Log::Nothing,
            false,
            true,
            "support",
            Err(Skip::NotLogged(CallType::Missed)),
        ),
        (
            CallType::OutboundUnanswered,
            Log::Nothing,
            false,
            true,
            "support",
            Err(Skip::NotLogged(CallType::OutboundUnanswered)),
        ),
        // Calls missed out of hours create tickets only when asked to; a call answered after a
        // closed group overflowed to an open one is logged regardless.
        (CallType::Missed, Log::New, true, true, "support", Ok(())),
        (
            CallType::InboundAnswered,
            Log::New,
            true,
            false,
            "support",
            Ok(()),
        ),
        (
            CallType::Missed,
            Log::New,
            true,
            false,
            "support",
            Err(Skip::OutOfHours),
        ),
        (
            CallType::Voicemail,
            Log::New,
            true,
            false,
            "support",
            Err(Skip::OutOfHours),
        ),
        // "Las llamadas a o desde números no conectados a la integración no se registrarán".
        (
            CallType::InboundAnswered,
            Log::New,
            false,
            true,
            "sales",
            Err(Skip::NotLinked),
        ),
        (
            CallType::OutboundAnswered,
            Log::New,
            false,
            true,
            "sales",
            Err(Skip::NotLinked),
        ),
    ];
    for (call_type, log, out_of_hours, create_out_of_hours, group, expected) in cases {
        let mut rules = rules();
        rules.log.set(*call_type, *log);
        rules.create_out_of_hours = *create_out_of_hours;
        let mut call = call(*call_type);
        call.out_of_hours = *out_of_hours;
        call.group = Some((*group).to_owned());
        call.groups = vec![(*group).to_owned()];
        assert_eq!(
            &logs(&rules, &call),
            expected,
            "{call_type:?} log={log:?} out_of_hours={out_of_hours} group={group}"
        );
    }
}

#[test]
fn a_call_that_overflowed_into_a_linked_group_is_logged() {
    let mut call = call(CallType::Missed);
    call.group = Some("sales".to_owned());
    call.groups = vec!["sales".to_owned(), "support".to_owned()];
    assert_eq!(logs(&rules(), &call), Ok(()));
}

#[test]
fn unknown_numbers_and_the_anonymous_contact_are_created_only_when_allowed() {
    let cases = [
        (true, false, Ok(())),
        (true, true, Ok(())),
        (false, false, Err(Skip::UnknownContact { anonymous: false })),
        (false, true, Err(Skip::UnknownContact { anonymous: true })),
    ];
    for (create_unknown_contacts, anonymous, expected) in cases {
        let mut rules = rules();
        rules.create_unknown_contacts = create_unknown_contacts;
        assert_eq!(
            may_create_contact(&rules, anonymous),
            expected,
            "create={create_unknown_contacts} anonymous={anonymous}"
        );
    }
}

#[test]
fn the_note_lists_the_configured_fields_in_the_groups_local_time() {
    let call = call(CallType::InboundAnswered);
    let all = note(&rules(), &call);
    assert_eq!(
        all,
        "Call from +34911239613\n\
         Call type: inbound_answered\n\
         Agent: 201 (ana@example.com)\n\
         Start: 2026-03-02 10:00:00 +01:00\n\
         End: 2026-03-02 10:03:27 +01:00\n\
         Duration: 3m 15s\n\
         Wait time: 12s\n\
         Direction: inbound\n\
         Recording: https://pbx.example.com/rec/abc.wav\n\
         Ended by: caller\n\
         Queue: 900\n\
         Group: support\n\
         Routing:\n- support: open (Mon 08:00–18:00)\n- ring 201\n\
         [sipdesk:c0ffee-1]"
    );
    // A call of the São Paulo group, in São Paulo's time.
    let mut there = call.clone();
    there.group = Some("suporte".to_owned());
    let mut rules = rules();
    rules.fields = vec![Field::Start];
    assert_eq!(
        note(&rules, &there),
        "Call from +34911239613\nStart: 2026-03-02 06:00:00 -03:00\n[sipdesk:c0ffee-1]"
    );
    rules.fields = vec![Field::Duration, Field::Queue];
    assert_eq!(
        note(&rules, &call),
        "Call from +34911239613\nDuration: 3m 15s\nQueue: 900\n[sipdesk:c0ffee-1]"
    );
    // A transferred call names the agent who has it last, and the hand-overs.
    let mut transferred = call.clone();
    let mut second = transferred.agents[0].clone();
    second.extension = "202".to_owned();
    second.email = None;
    second.from = at("2026-03-02T09:01:00Z");
    transferred.agents[0].until = second.from;
    transferred.agents.push(second);
    transferred.agent = Some("202".to_owned());
    transferred.agent_email = None;
    rules.fields = vec![Field::Agent];
    assert_eq!(
        note(&rules, &transferred),
        "Call from +34911239613\nAgent: 202\nTransferred: 201 → 202 at 2026-03-02 10:01:00 +01:00\n[sipdesk:c0ffee-1]"
    );
    let missed = self::call(CallType::Missed);
    rules.fields = vec![
        Field::CallType,
        Field::Agent,
        Field::Duration,
        Field::WaitTime,
        Field::Voicemail,
    ];
    assert_eq!(
        note(&rules, &missed),
        "Missed call from +34911239613\nCall type: missed (no_answer)\nWait time: 3m 27s\n[sipdesk:c0ffee-1]"
    );
    let voicemail = self::call(CallType::Voicemail);
    assert!(note(&rules, &voicemail).contains("Voicemail: left by the caller"));
}
