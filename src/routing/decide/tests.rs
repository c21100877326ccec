use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::routing::{Action, Decision, Reason, Verdict};

const HEAD: &str = "[sip]\npbx = \"127.0.0.1:5080\"\n\n[defaults]\ntimezone = \"Europe/Madrid\"\nregion = \"ES\"\n\n";

fn groups(body: &str) -> Groups {
    match Config::from_toml(&format!("{HEAD}{body}"), "test.toml") {
        Ok(config) => config.groups,
        Err(e) => panic!("{e}"),
    }
}

fn ext(text: &str) -> Extension {
    Extension::parse(text).unwrap()
}

fn states(pairs: &[(&str, AgentState)]) -> HashMap<Extension, AgentState> {
    pairs.iter().map(|(e, s)| (ext(e), *s)).collect()
}

fn no_cursors() -> HashMap<String, Extension> {
    HashMap::new()
}

fn call(queue: &str, at: &str) -> Call<'static> {
    Call {
        queue: Box::leak(queue.to_owned().into_boxed_str()),
        caller: CallerStatus::Known,
        at: at.parse().unwrap(),
    }
}

fn offered(decision: &Decision) -> Vec<(String, String)> {
    decision
        .offers
        .iter()
        .map(|o| (o.group.to_string(), o.extension.to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(g, e)| (g.to_string(), e.to_string()))
        .collect()
}

/// Monday 2026-11-23, 10:00 in Madrid.
const MONDAY_10: &str = "2026-11-23T10:00:00+01:00";
/// Monday 2026-11-23, 21:00 in Madrid.
const MONDAY_21: &str = "2026-11-23T21:00:00+01:00";

const OFFICE: &str = r#"
[[groups]]
name = "support"
queues = ["100"]
hours = { mon = ["09:00-18:00"], tue = ["09:00-18:00"] }
own_holidays = [{ date = "2026-11-24", name = "Fiesta" }]
agents = [{ extension = "2001" }, { extension = "2002" }, { extension = "2003" }]
overflow = [{ group = "night", when = ["out_of_hours", "holiday"] }, { group = "sales", when = ["no_agents"] }]
unknown_caller_group = "sales"
final_action = "voicemail"

[[groups]]
name = "sales"
queues = ["200"]
hours = { mon = ["09:00-18:00"] }
agents = [{ extension = "3001" }, { extension = "2002" }]
ring_timeout = "10s"

[[groups]]
name = "night"
queues = []
hours = { mon = ["20:00-08:00"] }
holidays = "own"
agents = [{ extension = "4001" }]
final_action = "reject"
"#;

#[test]
fn unknown_queue_is_rejected_with_its_reason() {
    let d = decide(
        &groups(OFFICE),
        &call("999", MONDAY_10),
        &states(&[]),
        &no_cursors(),
    );
    assert_eq!(d.action, Action::Reject);
    assert_eq!(d.reason, Some(Reason::UnknownQueue));
    assert_eq!(d.group, None);
    assert!(d.offers.is_empty());
    assert_eq!(d.explanation[0].verdict, Verdict::Rejected);
    assert_eq!(
        d.explanation[0].detail.to_string(),
        "no group serves queue 999"
    );
}

#[test]
fn an_open_group_rings_its_agents_then_its_no_agents_overflow() {
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_10),
        &states(&[]),
        &no_cursors(),
    );
    assert_eq!(d.action, Action::Ring);
    assert_eq!(d.group.as_deref(), Some("support"));
    assert_eq!(d.extension, Some(ext("2001")));
    assert_eq!(d.reason, None);
    // 2002 is in both groups and is offered once.
    assert_eq!(
        offered(&d),
        pairs(&[
            ("support", "2001"),
            ("support", "2002"),
            ("support", "2003"),
            ("sales", "3001")
        ])
    );
    assert_eq!(d.offers[3].ring_timeout, std::time::Duration::from_secs(10));
    assert_eq!(d.final_action, Some(FinalAction::Voicemail));
    let verdicts: Vec<(Option<&str>, Verdict)> = d
        .explanation
        .iter()
        .map(|s| (s.group.as_deref(), s.verdict))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (Some("support"), Verdict::Entry),
            (Some("support"), Verdict::Ring),
            (Some("night"), Verdict::NotApplicable),
            (Some("sales"), Verdict::Overflow),
            (Some("sales"), Verdict::Ring),
            (Some("support"), Verdict::Final),
        ]
    );
    assert!(
        d.explanation[4]
            .detail
            .to_string()
            .contains("skipped 2002 already offered this call")
    );
}

#[test]
fn round_robin_starts_after_the_agent_offered_the_previous_call() {
    let mut cursors = no_cursors();
    cursors.insert("support".into(), ext("2002"));
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_10),
        &states(&[]),
        &cursors,
    );
    assert_eq!(
        offered(&d)[..3],
        pairs(&[
            ("support", "2003"),
            ("support", "2001"),
            ("support", "2002")
        ])[..]
    );
    assert!(
        d.explanation[1]
            .detail
            .to_string()
            .contains("2002 was offered the previous call")
    );
}

#[test]
fn a_cursor_naming_an_agent_no_longer_in_the_group_starts_from_the_top() {
    let mut cursors = no_cursors();
    cursors.insert("support".into(), ext("2999"));
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_10),
        &states(&[]),
        &cursors,
    );
    assert_eq!(d.extension, Some(ext("2001")));
}

#[test]
fn away_busy_and_wrap_up_agents_are_skipped_and_named() {
    let presence = states(&[
        ("2001", AgentState::Away),
        ("2002", AgentState::Busy),
        ("3001", AgentState::WrapUp),
    ]);
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_10),
        &presence,
        &no_cursors(),
    );
    assert_eq!(offered(&d), pairs(&[("support", "2003")]));
    assert!(
        d.explanation[1]
            .detail
            .to_string()
            .contains("skipped 2001 away, 2002 busy"),
        "{:?}",
        d.explanation[1]
    );
    let sales = d
        .explanation
        .iter()
        .find(|s| s.group.as_deref() == Some("sales") && s.verdict == Verdict::Skipped)
        .unwrap();
    assert_eq!(sales.reason, Some(Reason::NoAgents));
    assert!(
        sales.detail.to_string().contains("3001 in wrap-up"),
        "{}",
        sales.detail
    );
}

#[test]
fn nobody_available_overflows_for_no_agents() {
    let presence = states(&[
        ("2001", AgentState::Away),
        ("2002", AgentState::Away),
        ("2003", AgentState::Busy),
    ]);
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_10),
        &presence,
        &no_cursors(),
    );
    assert_eq!(d.action, Action::Ring);
    assert_eq!(d.group.as_deref(), Some("sales"));
    assert_eq!(d.reason, Some(Reason::NoAgents));
    assert_eq!(offered(&d), pairs(&[("sales", "3001")]));
}

#[test]
fn out_of_hours_overflows_only_to_targets_for_out_of_hours() {
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_21),
        &states(&[]),
        &no_cursors(),
    );
    assert_eq!(d.action, Action::Ring);
    assert_eq!(d.reason, Some(Reason::OutOfHours));
    assert_eq!(offered(&d), pairs(&[("night", "4001")]));
    let sales = d
        .explanation
        .iter()
        .find(|s| s.group.as_deref() == Some("sales"))
        .unwrap();
    assert_eq!(sales.verdict, Verdict::NotApplicable);
}

#[test]
fn out_of_hours_everywhere_ends_in_the_owning_groups_final_action() {
    // Sunday: support closed, night closed.
    let d = decide(
        &groups(OFFICE),
        &call("100", "2026-11-22T12:00:00+01:00"),
        &states(&[]),
        &no_cursors(),
    );
    assert_eq!(d.action, Action::Voicemail);
    assert_eq!(d.reason, Some(Reason::OutOfHours));
    assert_eq!(d.group.as_deref(), Some("support"));
    assert!(d.offers.is_empty());
    let last = d.explanation.last().unwrap();
    assert_eq!(last.verdict, Verdict::Final);
    assert!(
        last.detail
            .to_string()
            .contains("missed (out_of_hours), voicemail"),
        "{}",
        last.detail
    );
}

#[test]
fn a_group_whose_final_action_is_reject_gives_missed() {
    let d = decide(
        &groups(OFFICE),
        &call("200", MONDAY_21),
        &states(&[]),
        &no_cursors(),
    );
    assert_eq!(d.action, Action::Missed);
    assert_eq!(d.reason, Some(Reason::OutOfHours));
    assert_eq!(d.group.as_deref(), Some("sales"));
}

#[test]
fn a_holiday_overflows_to_targets_for_holidays() {
    // Tuesday 2026-11-24 is support's own holiday; night is closed on Tuesdays at noon.
    let d = decide(
        &groups(OFFICE),
        &call("100", "2026-11-24T12:00:00+01:00"),
        &states(&[]),
        &no_cursors(),
    );
    assert_eq!(d.action, Action::Voicemail);
    assert_eq!(d.reason, Some(Reason::Holiday));
    let support = &d.explanation[1];
    assert_eq!(support.verdict, Verdict::Skipped);
    assert!(
        support
            .detail
            .to_string()
            .starts_with("holiday \"Fiesta\" on 2026-11-24"),
        "{}",
        support.detail
    );
}

#[test]
fn unknown_and_inactive_callers_are_redirected_when_configured() {
    let g = groups(OFFICE);
    let mut unknown = call("100", MONDAY_10);
    unknown.caller = CallerStatus::Unknown;
    let d = decide(&g, &unknown, &states(&[]), &no_cursors());
    assert_eq!(d.group.as_deref(), Some("sales"));
    assert_eq!(d.explanation[1].verdict, Verdict::Redirected);
    // sales has no overflow of its own, so support's agents are not rung.
    assert_eq!(offered(&d), pairs(&[("sales", "3001"), ("sales", "2002")]));
    // support has no inactive_caller_group: no redirect.
    let mut inactive = call("100", MONDAY_10);
    inactive.caller = CallerStatus::Inactive;
    let d = decide(&g, &inactive, &states(&[]), &no_cursors());
    assert_eq!(d.group.as_deref(), Some("support"));
}

const CYCLE: &str = r#"
[[groups]]
name = "a"
queues = ["1"]
agents = [{ extension = "1" }]
overflow = [{ group = "b" }]

[[groups]]
name = "b"
queues = ["2"]
agents = [{ extension = "2" }]
overflow = [{ group = "c" }]

[[groups]]
name = "c"
queues = ["3"]
agents = [{ extension = "3" }]
overflow = [{ group = "a" }, { group = "b" }]
"#;

#[test]
fn an_overflow_cycle_stops_at_the_first_repeat() {
    let d = decide(
        &groups(CYCLE),
        &call("1", MONDAY_10),
        &states(&[]),
        &no_cursors(),
    );
    assert_eq!(offered(&d), pairs(&[("a", "1"), ("b", "2"), ("c", "3")]));
    let repeats: Vec<&str> = d
        .explanation
        .iter()
        .filter(|s| s.verdict == Verdict::AlreadyVisited)
        .map(|s| s.group.as_deref().unwrap())
        .collect();
    assert_eq!(repeats, vec!["a", "b"]);
}

#[test]
fn the_decision_as_json_has_the_documented_fields() {
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_21),
        &states(&[]),
        &no_cursors(),
    );
    let json: serde_json::Value = serde_json::to_value(&d).unwrap();
    assert_eq!(json["action"], "ring");
    assert_eq!(json["group"], "night");
    assert_eq!(json["extension"], "4001");
    assert_eq!(json["reason"], "out_of_hours");
    assert_eq!(json["offers"][0]["ring_timeout_seconds"], 15.0);
    assert!(json["explanation"].as_array().unwrap().len() >= 3);
    let reject = serde_json::to_value(decide(
        &groups(OFFICE),
        &call("9", MONDAY_21),
        &states(&[]),
        &no_cursors(),
    ))
    .unwrap();
    assert_eq!(reject["action"], "reject");
    assert_eq!(reject["reason"], "unknown_queue");
    assert!(reject["group"].is_null());
    assert!(reject["extension"].is_null());
}

#[test]
fn the_decision_in_words_names_the_first_agent_and_the_reasons() {
    let d = decide(
        &groups(OFFICE),
        &call("100", MONDAY_10),
        &states(&[]),
        &no_cursors(),
    );
    let words = d.to_string();
    assert!(words.starts_with("ring 2001 in group support\n"), "{words}");
    assert!(words.contains("if nobody answers: voicemail"), "{words}");
    assert!(
        words.contains(
            "support: open (Monday 2026-11-23 10:00 Europe/Madrid, within Monday 09:00-18:00)"
        ),
        "{words}"
    );
}

// ---- properties ----

/// A random configuration: up to five groups sharing a pool of extensions, random hours,
/// holidays, overflow graphs (cycles included) and redirects.
#[derive(Debug, Clone)]
struct World {
    groups: Vec<GroupSpec>,
}

#[derive(Debug, Clone)]
struct GroupSpec {
    agents: Vec<u8>,
    hours: u8,
    holiday: bool,
    overflow: Vec<(usize, Vec<&'static str>)>,
    unknown_to: Option<usize>,
}

fn world() -> impl Strategy<Value = World> {
    let conditions = prop::sample::subsequence(vec!["no_agents", "out_of_hours", "holiday"], 1..=3);
    let group = (
        prop::collection::btree_set(0u8..8, 1..4),
        0u8..3,
        any::<bool>(),
        prop::collection::vec((0usize..5, conditions), 0..4),
        prop::option::of(0usize..5),
    );
    prop::collection::vec(group, 1..=5).prop_map(|specs| {
        let n = specs.len();
        let groups = specs
            .into_iter()
            .enumerate()
            .map(|(i, (agents, hours, holiday, overflow, unknown_to))| {
                let mut seen = Vec::new();
                let overflow = overflow
                    .into_iter()
                    .map(|(t, c)| (t % n, c))
                    .filter(|(t, _)| {
                        *t != i && !seen.contains(t) && {
                            seen.push(*t);
                            true
                        }
                    })
                    .collect();
                GroupSpec {
                    agents: agents.into_iter().collect(),
                    hours,
                    holiday,
                    overflow,
                    unknown_to: unknown_to.map(|t| t % n).filter(|t| *t != i),
                }
            })
            .collect();
        World { groups }
    })
}

impl World {
    fn toml(&self) -> String {
        let mut text = String::new();
        for (i, g) in self.groups.iter().enumerate() {
            let _ = writeln!(text, "[[groups]]\nname = \"g{i}\"\nqueues = [\"{i}\"]");
            let agents: Vec<String> = g
                .agents
                .iter()
                .map(|a| format!("{{ extension = \"{}\" }}", 100 + a))
                .collect();
            let _ = writeln!(text, "agents = [{}]", agents.join(", "));
            match g.hours {
                0 => {}
                1 => text.push_str("hours = {}\n"),
                _ => text.push_str("hours = { mon = [\"09:00-17:00\"], tue = [\"22:00-06:00\"], sat = [\"10:00-14:00\"] }\n"),
            }
            if g.holiday {
                text.push_str(
                    "own_holidays = [{ date = \"11-24\", name = \"h\", until = \"12:00\" }]\n",
                );
            }
            let overflow: Vec<String> = g
                .overflow
                .iter()
                .map(|(t, when)| {
                    let when: Vec<String> = when.iter().map(|w| format!("\"{w}\"")).collect();
                    format!("{{ group = \"g{t}\", when = [{}] }}", when.join(", "))
                })
                .collect();
            let _ = writeln!(text, "overflow = [{}]", overflow.join(", "));
            if let Some(t) = g.unknown_to {
                let _ = writeln!(text, "unknown_caller_group = \"g{t}\"");
            }
            text.push('\n');
        }
        text
    }
}

fn presence_from(states_by_ext: &BTreeMap<u8, u8>) -> HashMap<Extension, AgentState> {
    states_by_ext
        .iter()
        .map(|(e, s)| {
            let state = [
                AgentState::Available,
                AgentState::Away,
                AgentState::Busy,
                AgentState::WrapUp,
            ][*s as usize % 4];
            (ext(&(100 + e).to_string()), state)
        })
        .collect()
}

proptest! {
    #[test]
    fn no_call_is_offered_to_an_unavailable_agent_nor_twice_and_no_group_is_visited_twice(
        world in world(),
        agent_states in prop::collection::btree_map(0u8..8, 0u8..4, 0..8),
        minutes in 0i64..(7 * 24 * 60),
        queue in 0usize..5,
        unknown in any::<bool>(),
    ) {
        let g = groups(&world.toml());
        let presence = presence_from(&agent_states);
        let at = "2026-11-23T00:00:00+01:00".parse::<Timestamp>().unwrap() + jiff::SignedDuration::from_mins(minutes);
        let queue = (queue % world.groups.len()).to_string();
        let call = Call { queue: &queue, caller: if unknown { CallerStatus::Unknown } else { CallerStatus::Known }, at };
        let d = decide(&g, &call, &presence, &no_cursors());
        for offer in &d.offers {
            prop_assert_eq!(presence.state(&offer.extension), AgentState::Available);
        }
        let mut extensions: Vec<&Extension> = d.offers.iter().map(|o| &o.extension).collect();
        extensions.sort();
        let before = extensions.len();
        extensions.dedup();
        prop_assert_eq!(before, extensions.len(), "an extension offered twice");
        let mut visited: Vec<&str> = d
            .explanation
            .iter()
            .filter(|s| matches!(s.verdict, Verdict::Ring | Verdict::Skipped))
            .map(|s| s.group.as_deref().unwrap())
            .collect();
        let before = visited.len();
        visited.sort();
        visited.dedup();
        prop_assert_eq!(before, visited.len(), "a group visited twice: {:?}", d.explanation);
        prop_assert_eq!(d.action == Action::Ring, !d.offers.is_empty());
        prop_assert_eq!(d.extension.as_ref(), d.offers.first().map(|o| &o.extension));
    }

    #[test]
    fn the_same_inputs_give_the_same_decision(
        world in world(),
        agent_states in prop::collection::btree_map(0u8..8, 0u8..4, 0..8),
        minutes in 0i64..(7 * 24 * 60),
        cursor in 0u8..8,
    ) {
        let text = world.toml();
        let presence = presence_from(&agent_states);
        let mut cursors = no_cursors();
        cursors.insert("g0".into(), ext(&(100 + cursor).to_string()));
        let at = "2026-11-23T00:00:00+01:00".parse::<Timestamp>().unwrap() + jiff::SignedDuration::from_mins(minutes);
        let call = Call { queue: "0", caller: CallerStatus::Known, at };
        let first = decide(&groups(&text), &call, &presence, &cursors);
        let second = decide(&groups(&text), &call, &presence, &cursors);
        prop_assert_eq!(first, second);
    }

    #[test]
    fn offers_are_spread_evenly_over_the_available_agents(
        agents in 1usize..9,
        away in prop::collection::btree_set(0usize..9, 0..4),
        unanswered in prop::collection::vec(0usize..4, 1..120),
    ) {
        let list: Vec<String> = (0..agents).map(|a| format!("{{ extension = \"{}\" }}", 500 + a)).collect();
        let g = groups(&format!("[[groups]]\nname = \"q\"\nqueues = [\"1\"]\nagents = [{}]\n", list.join(", ")));
        let presence: HashMap<Extension, AgentState> =
            away.iter().filter(|a| **a < agents).map(|a| (ext(&(500 + a).to_string()), AgentState::Away)).collect();
        let available: Vec<Extension> =
            (0..agents).map(|a| ext(&(500 + a).to_string())).filter(|e| presence.state(e) == AgentState::Available).collect();
        let mut cursors = no_cursors();
        let mut offers: HashMap<Extension, usize> = HashMap::new();
        for skipped in unanswered {
            let d = decide(&g, &call("1", MONDAY_10), &presence, &cursors);
            // The proxy offers agents in order until one answers: `skipped` ring out first.
            for offer in d.offers.iter().take(skipped + 1) {
                *offers.entry(offer.extension.clone()).or_default() += 1;
                cursors.insert("q".into(), offer.extension.clone());
            }
        }
        if available.is_empty() {
            prop_assert!(offers.is_empty());
        } else {
            let counts: Vec<usize> = available.iter().map(|e| offers.get(e).copied().unwrap_or(0)).collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "offer counts {counts:?}");
            prop_assert!(offers.keys().all(|e| available.contains(e)), "offered someone away");
        }
    }
}

#[test]
fn a_large_group_is_explained_with_its_first_agents_only() {
    let agents: Vec<String> = (0..100)
        .map(|a| format!("{{ extension = \"{}\" }}", 7000 + a))
        .collect();
    let g = groups(&format!(
        "[[groups]]\nname = \"big\"\nqueues = [\"7\"]\nagents = [{}]\n",
        agents.join(", ")
    ));
    let presence = states(&[("7000", AgentState::Away), ("7001", AgentState::Busy)]);
    let d = decide(&g, &call("7", MONDAY_10), &presence, &no_cursors());
    assert_eq!(d.offers.len(), 98);
    let detail = d.explanation[1].detail.to_string();
    assert!(
        detail.ends_with("; ring 7002, 7003, 7004, 7005, 7006, 7007, 7008, 7009 and more (round-robin from the top of the list); skipped 7000 away, 7001 busy"),
        "{detail}"
    );
}
