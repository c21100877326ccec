//! Zendesk's own ticket rules, case by case: which ticket a call goes to, its status, who it is
//! assigned to, tags, type and priority, voice comments.

// The case tables read best as plain tuples.
#![allow(clippy::type_complexity)]

use std::ops::{Deref, DerefMut};

use super::*;
use crate::call::{AgentLeg, CallType};
use crate::tickets::tests::{TYPES, at, call};
use crate::tickets::{Rules, marker, tests};

/// The shared rules of the tests, and Zendesk's (reached through `Deref`).
struct Both {
    base: Rules,
    zd: ZendeskRules,
}

impl Deref for Both {
    type Target = ZendeskRules;
    fn deref(&self) -> &ZendeskRules {
        &self.zd
    }
}

impl DerefMut for Both {
    fn deref_mut(&mut self) -> &mut ZendeskRules {
        &mut self.zd
    }
}

fn rules() -> Both {
    Both {
        base: tests::rules(),
        zd: ZendeskRules {
            status: DEFAULT_STATUS,
            missed_assignee: None,
            default_assignee: None,
            update_title: true,
            voice_comments: false,
            tag_rules: Vec::new(),
        },
    }
}

/// Where and with what status one call type is logged.
fn set(rules: &mut Both, call_type: CallType, log: Log, status: Status) {
    rules.base.log.set(call_type, log);
    rules.zd.status.set(call_type, status);
}

fn ticket(id: u64, status: Status, created: &str) -> TicketSummary {
    TicketSummary {
        id,
        status,
        created_at: at(created),
        tags: Vec::new(),
    }
}

#[test]
fn the_previous_ticket_follows_the_status_order_unless_the_latest_is_solved_or_closed() {
    use Status::*;
    // (tickets as (id, status, created), expected ticket id)
    let cases: &[(&[(u64, Status, &str)], Option<u64>)] = &[
        (&[], None),
        (&[(1, Open, "2026-01-01T00:00:00Z")], Some(1)),
        (&[(1, New, "2026-01-01T00:00:00Z")], Some(1)),
        (&[(1, Pending, "2026-01-01T00:00:00Z")], Some(1)),
        (&[(1, Hold, "2026-01-01T00:00:00Z")], Some(1)),
        // "Nuevo > Abierto > Pendiente > En espera", whatever their age.
        (
            &[
                (1, Open, "2026-01-01T00:00:00Z"),
                (2, New, "2026-01-02T00:00:00Z"),
            ],
            Some(2),
        ),
        (
            &[
                (1, New, "2026-01-01T00:00:00Z"),
                (2, Open, "2026-01-02T00:00:00Z"),
            ],
            Some(1),
        ),
        (
            &[
                (1, Hold, "2026-01-01T00:00:00Z"),
                (2, Pending, "2026-01-02T00:00:00Z"),
                (3, Hold, "2026-01-03T00:00:00Z"),
            ],
            Some(2),
        ),
        (
            &[
                (1, Pending, "2026-01-01T00:00:00Z"),
                (2, Open, "2026-01-02T00:00:00Z"),
                (3, Hold, "2026-01-03T00:00:00Z"),
            ],
            Some(2),
        ),
        // Among equals, the most recent.
        (
            &[
                (1, Open, "2026-01-01T00:00:00Z"),
                (2, Open, "2026-01-05T00:00:00Z"),
                (3, Open, "2026-01-03T00:00:00Z"),
            ],
            Some(2),
        ),
        // "Si el ticket más reciente está Resuelto o Cerrado, se creará un nuevo ticket."
        (&[(1, Solved, "2026-01-01T00:00:00Z")], None),
        (&[(1, Closed, "2026-01-01T00:00:00Z")], None),
        (
            &[
                (1, Open, "2026-01-01T00:00:00Z"),
                (2, Solved, "2026-01-02T00:00:00Z"),
            ],
            None,
        ),
        (
            &[
                (1, New, "2026-01-01T00:00:00Z"),
                (2, Closed, "2026-01-02T00:00:00Z"),
            ],
            None,
        ),
        // An older solved ticket does not stop a newer open one from being chosen.
        (
            &[
                (1, Solved, "2026-01-01T00:00:00Z"),
                (2, Pending, "2026-01-02T00:00:00Z"),
            ],
            Some(2),
        ),
        (
            &[
                (1, Closed, "2026-01-01T00:00:00Z"),
                (2, Solved, "2026-01-02T00:00:00Z"),
                (3, Hold, "2026-01-03T00:00:00Z"),
            ],
            Some(3),
        ),
    ];
    for (tickets, expected) in cases {
        let tickets: Vec<TicketSummary> = tickets
            .iter()
            .map(|(id, s, c)| ticket(*id, *s, c))
            .collect();
        assert_eq!(
            previous_ticket(&tickets).map(|t| t.id),
            *expected,
            "{tickets:?}"
        );
    }
}

#[test]
fn every_call_type_goes_to_a_new_or_the_previous_ticket_with_its_status() {
    let open = ticket(7, Status::Open, "2026-03-01T10:00:00Z");
    for call_type in TYPES {
        for log in [Log::New, Log::Previous] {
            for status in Status::ALL {
                for previous in [None, Some(&open)] {
                    let mut rules = rules();
                    set(&mut rules, call_type, log, status);
                    let call = call(call_type);
                    let plan = plan(&rules.base, &rules, &call, previous, None);
                    let write = match (&plan, log, previous) {
                        (Plan::Update { ticket, write }, Log::Previous, Some(p)) => {
                            assert_eq!(*ticket, p.id);
                            write
                        }
                        (Plan::Create(write), Log::New, _)
                        | (Plan::Create(write), Log::Previous, None) => write,
                        _ => panic!("{call_type:?} log={log:?} previous={previous:?}: {plan:?}"),
                    };
                    // A ticket never goes back to New: an update keeps the ticket's status.
                    let updated = matches!(plan, Plan::Update { .. });
                    let expected = (!(updated && status == Status::New)).then_some(status);
                    assert_eq!(write.status, expected, "{call_type:?} {log:?}");
                    assert_eq!(write.external_id, call.id);
                    assert!(write.note.ends_with(&marker(&call.id)));
                    assert!(write.tags.contains(&"sipdesk".to_owned()));
                    assert!(
                        write
                            .tags
                            .contains(&format!("sipdesk_{}", call_type.as_str()))
                    );
                }
            }
        }
    }
}

#[test]
fn the_title_follows_the_latest_call_only_when_update_title_is_on() {
    let open = ticket(7, Status::Open, "2026-03-01T10:00:00Z");
    // The seed's example: a missed call's ticket, later an answered outbound call.
    for (update_title, expected) in [(true, Some("Call to +34911239613")), (false, None)] {
        let mut rules = rules();
        rules.update_title = update_title;
        let Plan::Update { write, .. } = plan(
            &rules.base,
            &rules,
            &call(CallType::OutboundAnswered),
            Some(&open),
            None,
        ) else {
            panic!("not an update");
        };
        assert_eq!(write.subject.as_deref(), expected);
    }
    for call_type in TYPES {
        let mut rules = rules();
        rules.update_title = false;
        set(&mut rules, call_type, Log::New, Status::Open);
        let Plan::Create(write) = plan(&rules.base, &rules, &call(call_type), None, None) else {
            panic!()
        };
        assert_eq!(
            write.subject,
            Some(subject(&call(call_type))),
            "a new ticket always has a title"
        );
    }
}

#[test]
fn titles_name_the_call() {
    let expected = [
        (CallType::InboundAnswered, "Call from +34911239613"),
        (CallType::Missed, "Missed call from +34911239613"),
        (CallType::Voicemail, "Voicemail from +34911239613"),
        (CallType::OutboundAnswered, "Call to +34911239613"),
        (
            CallType::OutboundUnanswered,
            "Unanswered call to +34911239613",
        ),
    ];
    for (call_type, title) in expected {
        assert_eq!(subject(&call(call_type)), title);
    }
}

#[test]
fn an_update_adds_the_calls_tags_to_the_tickets() {
    let mut rules = rules();
    rules.tag_rules = vec![TagRule {
        tag: "vip".to_owned(),
        ticket_tags: vec!["own7".to_owned(), "vip_caller".to_owned()],
        ticket_type: None,
        priority: None,
    }];
    let mut call = call(CallType::OutboundAnswered);
    call.tags = vec!["vip".to_owned()];
    let Plan::Update { write, .. } = plan(
        &rules.base,
        &rules,
        &call,
        Some(&ticket(7, Status::Open, "2026-03-01T10:00:00Z")),
        None,
    ) else {
        panic!()
    };
    // Only the call's: the helpdesk adds them to the ticket's own (`additional_tags`), so tags
    // set on the ticket meanwhile are kept.
    assert_eq!(
        write.tags,
        ["sipdesk", "sipdesk_outbound_answered", "own7", "vip_caller"]
    );
}

#[test]
fn assignment_follows_the_outcome() {
    // (call type, agent e-mail, default_assignee, missed_assignee, expected candidates)
    let user = |e: &str| Assignee::User(e.to_owned());
    let cases: Vec<(
        CallType,
        Option<&str>,
        Option<&str>,
        Option<Assignee>,
        Vec<Assignee>,
    )> = vec![
        // Answered: the agent's helpdesk user by e-mail, else the default user.
        (
            CallType::InboundAnswered,
            Some("ana@example.com"),
            None,
            None,
            vec![user("ana@example.com")],
        ),
        (
            CallType::InboundAnswered,
            Some("ana@example.com"),
            Some("lead@example.com"),
            None,
            vec![user("ana@example.com"), user("lead@example.com")],
        ),
        (
            CallType::InboundAnswered,
            None,
            Some("lead@example.com"),
            None,
            vec![user("lead@example.com")],
        ),
        (
            CallType::InboundAnswered,
            None,
            None,
            Some(Assignee::Group(5)),
            vec![],
        ),
        (
            CallType::OutboundAnswered,
            Some("ana@example.com"),
            Some("lead@example.com"),
            None,
            vec![user("ana@example.com"), user("lead@example.com")],
        ),
        // Missed and voicemail: the configured user or group, else unassigned.
        (
            CallType::Missed,
            None,
            Some("lead@example.com"),
            None,
            vec![],
        ),
        (
            CallType::Missed,
            None,
            None,
            Some(user("triage@example.com")),
            vec![user("triage@example.com")],
        ),
        (
            CallType::Missed,
            None,
            None,
            Some(Assignee::Group(5)),
            vec![Assignee::Group(5)],
        ),
        (
            CallType::Voicemail,
            None,
            None,
            Some(Assignee::Group(5)),
            vec![Assignee::Group(5)],
        ),
        // Outbound, answered or not: the agent who dialled follows it up, else the default
        // user; missed_assignee is for customers who could not reach the company.
        (
            CallType::OutboundUnanswered,
            Some("ana@example.com"),
            None,
            Some(Assignee::Group(5)),
            vec![user("ana@example.com")],
        ),
        (
            CallType::OutboundUnanswered,
            None,
            Some("lead@example.com"),
            Some(Assignee::Group(5)),
            vec![user("lead@example.com")],
        ),
    ];
    for (call_type, agent_email, default_assignee, missed_assignee, expected) in cases {
        let mut rules = rules();
        rules.default_assignee = default_assignee.map(str::to_owned);
        rules.missed_assignee = missed_assignee.clone();
        let mut call = call(call_type);
        call.agent_email = agent_email.map(str::to_owned);
        for leg in &mut call.agents {
            leg.email = call.agent_email.clone();
        }
        assert_eq!(
            assignee_candidates(&rules, &call),
            expected,
            "{call_type:?} {agent_email:?} {default_assignee:?} {missed_assignee:?}"
        );
    }
}

#[test]
fn a_transferred_call_goes_to_the_last_agent_with_an_email_then_those_before() {
    let mut rules = rules();
    rules.default_assignee = Some("lead@example.com".to_owned());
    let mut call = call(CallType::InboundAnswered);
    let first = call.agents[0].clone();
    let leg = |extension: &str, email: Option<&str>| AgentLeg {
        extension: extension.to_owned(),
        email: email.map(str::to_owned),
        ..first.clone()
    };
    // 201 (ana) → 202 (bea) → 203 (no e-mail): bea first, then ana, then the default user.
    call.agents = vec![
        first.clone(),
        leg("202", Some("bea@example.com")),
        leg("203", None),
    ];
    call.agent = Some("203".to_owned());
    call.agent_email = None;
    assert_eq!(
        assignee_candidates(&rules, &call),
        ["bea@example.com", "ana@example.com", "lead@example.com"]
            .map(|e| Assignee::User(e.to_owned()))
            .to_vec()
    );
    // The voice comment still names who answered.
    assert_eq!(call.answered_by_email(), Some("ana@example.com"));
}

#[test]
fn the_chosen_assignee_is_written() {
    let plan = plan(
        &rules().base,
        &rules(),
        &call(CallType::Missed),
        None,
        Some(AssigneeId::Group(5)),
    );
    let Plan::Create(write) = plan else { panic!() };
    assert_eq!(write.assignee, Some(AssigneeId::Group(5)));
}

#[test]
fn tag_rules_set_tags_type_and_priority_for_the_calls_that_have_the_tag() {
    let mut rules = rules();
    rules.tag_rules = vec![
        TagRule {
            tag: "vip".to_owned(),
            ticket_tags: vec!["vip".to_owned()],
            ticket_type: Some(TicketType::Incident),
            priority: Some(Priority::Urgent),
        },
        TagRule {
            tag: "billing".to_owned(),
            ticket_tags: vec!["billing".to_owned()],
            ticket_type: Some(TicketType::Question),
            priority: None,
        },
    ];
    let cases: &[(&[&str], &[&str], Option<TicketType>, Option<Priority>)] = &[
        (&[], &[], None, None),
        (
            &["vip"],
            &["vip"],
            Some(TicketType::Incident),
            Some(Priority::Urgent),
        ),
        (&["billing"], &["billing"], Some(TicketType::Question), None),
        // A later rule overrides what it sets, keeps what it does not.
        (
            &["vip", "billing"],
            &["vip", "billing"],
            Some(TicketType::Question),
            Some(Priority::Urgent),
        ),
        (&["other"], &[], None, None),
    ];
    for (call_tags, ticket_tags, ticket_type, priority) in cases {
        let mut call = call(CallType::InboundAnswered);
        call.tags = call_tags.iter().map(|t| (*t).to_owned()).collect();
        let Plan::Create(write) = plan(&rules.base, &rules, &call, None, None) else {
            panic!()
        };
        let mut expected = vec!["sipdesk".to_owned(), "sipdesk_inbound_answered".to_owned()];
        expected.extend(ticket_tags.iter().map(|t| (*t).to_owned()));
        assert_eq!(write.tags, expected, "{call_tags:?}");
        assert_eq!(write.ticket_type, *ticket_type, "{call_tags:?}");
        assert_eq!(write.priority, *priority, "{call_tags:?}");
    }
}

#[test]
fn a_voice_comment_carries_the_recording_when_enabled() {
    let call = call(CallType::InboundAnswered);
    let Plan::Create(plain) = plan(&rules().base, &rules(), &call, None, None) else {
        panic!()
    };
    assert_eq!(plain.voice, None);
    let mut rules = rules();
    rules.voice_comments = true;
    let Plan::Create(voice) = plan(&rules.base, &rules, &call, None, None) else {
        panic!()
    };
    assert_eq!(
        voice.voice,
        Some(VoiceComment {
            from: "+34911239613".to_owned(),
            to: "900".to_owned(),
            recording_url: "https://pbx.example.com/rec/abc.wav".to_owned(),
            started_at: call.started_at,
            call_duration: 195,
        })
    );
    let Plan::Create(no_recording) = plan(
        &rules.base,
        &rules,
        &self::call(CallType::Missed),
        None,
        None,
    ) else {
        panic!()
    };
    assert_eq!(no_recording.voice, None, "no recording, no voice comment");
}
