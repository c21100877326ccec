//! One routing decision on a 50-group, 200-agent configuration (the README reports the figures).
//!
//! Every group has four agents, weekday hours with a lunch break, the global holidays and two
//! overflow targets; the measured calls exercise the common paths: an open group that rings, a
//! group whose agents are all away so the call overflows, and a call out of hours.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use sipdesk::config::Config;
use sipdesk::routing::{AgentState, Call, CallerStatus, Extension, Route, decide};

fn config_text() -> String {
    let mut text = String::from(
        "[sip]\npbx = \"10.0.0.10:5060\"\n\n[defaults]\ntimezone = \"Europe/Madrid\"\nregion = \"ES\"\n\n",
    );
    for (date, name) in [
        ("01-01", "Año Nuevo"),
        ("05-01", "Trabajo"),
        ("12-25", "Navidad"),
        ("2026-05-15", "San Isidro"),
    ] {
        let _ = writeln!(text, "[[holidays]]\ndate = \"{date}\"\nname = \"{name}\"\n");
    }
    for g in 0..50 {
        let _ = writeln!(
            text,
            "[[groups]]\nname = \"group-{g}\"\nqueues = [\"{}\"]",
            100 + g
        );
        text.push_str("hours = { mon = [\"09:00-14:00\", \"15:00-19:00\"], tue = [\"09:00-14:00\", \"15:00-19:00\"], wed = [\"09:00-14:00\", \"15:00-19:00\"], thu = [\"09:00-14:00\", \"15:00-19:00\"], fri = [\"09:00-15:00\"] }\n");
        let _ = writeln!(
            text,
            "overflow = [{{ group = \"group-{}\", when = [\"no_agents\"] }}, {{ group = \"group-{}\" }}]",
            (g + 1) % 50,
            (g + 7) % 50
        );
        text.push_str("agents = [\n");
        for a in 0..4 {
            let _ = writeln!(
                text,
                "  {{ extension = \"{}\", email = \"agent{g}-{a}@example.com\" }},",
                2000 + g * 4 + a
            );
        }
        text.push_str("]\n\n");
    }
    text
}

fn bench(c: &mut Criterion) {
    let config = Config::from_toml(&config_text(), "bench.toml").expect("bench config is valid");
    assert_eq!(config.groups.len(), 50);
    let monday_morning: Timestamp = "2026-11-23T10:00:00+01:00".parse().unwrap();
    let sunday: Timestamp = "2026-11-22T10:00:00+01:00".parse().unwrap();
    let mut cursors: HashMap<String, Extension> = HashMap::new();
    cursors.insert("group-7".into(), Extension::parse("2029").unwrap());
    let nobody_away: HashMap<Extension, AgentState> = HashMap::new();
    let group_7_away: HashMap<Extension, AgentState> = (2028..2032)
        .map(|e| (Extension::parse(&e.to_string()).unwrap(), AgentState::Away))
        .collect();
    let call = |at| Call {
        queue: "107",
        caller: CallerStatus::Known,
        at,
    };

    // What the proxy does when an INVITE arrives: find the owning group and the first group that
    // can ring, with its agents in order. Overflow targets are read later, when reached.
    let first_group = |presence: &HashMap<Extension, AgentState>, at| {
        let call = call(at);
        let mut route = Route::start(&config.groups, &call).expect("known queue");
        route.next_group(&config.groups, call.at, presence, &cursors)
    };
    c.bench_function("route: first group, open group rings", |b| {
        b.iter(|| first_group(black_box(&nobody_away), black_box(monday_morning)))
    });
    c.bench_function("route: first group, all agents away, overflow", |b| {
        b.iter(|| first_group(black_box(&group_7_away), black_box(monday_morning)))
    });
    c.bench_function("route: first group, out of hours, overflow", |b| {
        b.iter(|| first_group(black_box(&nobody_away), black_box(sunday)))
    });
    // What `sipdesk route` prints: the whole walk as if nobody answered. In this configuration
    // every group is reachable by overflow, so the plan covers all 50 groups and 200 agents.
    c.bench_function("decide: whole plan, open group rings", |b| {
        b.iter(|| {
            decide(
                black_box(&config.groups),
                black_box(&call(monday_morning)),
                &nobody_away,
                &cursors,
            )
        })
    });
    c.bench_function("decide: whole plan, all agents away", |b| {
        b.iter(|| {
            decide(
                black_box(&config.groups),
                black_box(&call(monday_morning)),
                &group_7_away,
                &cursors,
            )
        })
    });
    c.bench_function("decide: whole plan, out of hours", |b| {
        b.iter(|| {
            decide(
                black_box(&config.groups),
                black_box(&call(sunday)),
                &nobody_away,
                &cursors,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
