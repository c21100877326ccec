//! `GET /metrics`: Prometheus text exposition. The proxy's counters and census come from its
//! last published snapshot (at most a second old); deliveries are counted in the store at
//! scrape time, and the store writer's queue is read as it is. When the store cannot be read
//! the deliveries are left out (`sipdesk_deliveries_up 0`) and everything else still answers:
//! a database outage is exactly when the other figures matter.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::metrics::{header as help, label};

/// `GET /metrics`.
pub(super) async fn metrics(State(shared): State<Shared>) -> Response {
    let backlog = match shared.store.backlog().await {
        Ok(backlog) => Some(backlog),
        Err(failure) => {
            tracing::warn!(error = %crate::report::Chain(&failure), "metrics: cannot count deliveries");
            None
        }
    };
    let published = shared.handle.counters();
    let (counters, census) = published.as_ref();
    let live = shared.handle.live();
    let mut out = String::new();
    counters.render(&mut out);
    help(
        &mut out,
        "sipdesk_active_calls",
        "gauge",
        "Calls in progress, by group.",
    );
    let mut by_group: std::collections::BTreeMap<String, u64> = Default::default();
    for call in &live.calls {
        *by_group
            .entry(call.group.clone().unwrap_or_default())
            .or_default() += 1;
    }
    for (group, n) in &by_group {
        let _ = writeln!(
            out,
            "sipdesk_active_calls{{group=\"{}\"}} {n}",
            label(group)
        );
    }
    help(&mut out, "sipdesk_agents", "gauge", "Agents by state.");
    for state in ["available", "ringing", "on_call", "wrap_up", "away"] {
        let n = live
            .agents
            .iter()
            .filter(|a| a.state.as_str() == state)
            .count();
        let _ = writeln!(out, "sipdesk_agents{{state=\"{state}\"}} {n}");
    }
    help(
        &mut out,
        "sipdesk_transactions",
        "gauge",
        "SIP transactions held, by kind.",
    );
    let _ = writeln!(
        out,
        "sipdesk_transactions{{kind=\"server\"}} {}",
        census.server_transactions
    );
    let _ = writeln!(
        out,
        "sipdesk_transactions{{kind=\"client\"}} {}",
        census.client_transactions
    );
    help(
        &mut out,
        "sipdesk_voicemail_sessions",
        "gauge",
        "Voicemails being played or recorded now.",
    );
    let _ = writeln!(
        out,
        "sipdesk_voicemail_sessions {}",
        census.voicemail_sessions
    );
    help(
        &mut out,
        "sipdesk_voicemail_sessions_max",
        "gauge",
        "The most voicemails at once ([media] max_sessions); beyond, calls are rejected.",
    );
    let _ = writeln!(
        out,
        "sipdesk_voicemail_sessions_max {}",
        census.voicemail_limit
    );
    help(
        &mut out,
        "sipdesk_deliveries",
        "gauge",
        "Helpdesk deliveries, by helpdesk and state.",
    );
    for entry in backlog.iter().flatten() {
        for (state, n) in [
            ("pending", entry.pending),
            ("in_progress", entry.in_progress),
            ("done", entry.done),
            ("failed", entry.failed),
        ] {
            let _ = writeln!(
                out,
                "sipdesk_deliveries{{helpdesk=\"{}\",state=\"{state}\"}} {n}",
                label(&entry.integration)
            );
        }
    }
    help(
        &mut out,
        "sipdesk_deliveries_up",
        "gauge",
        "1 when the deliveries could be counted in the database for this scrape, else 0.",
    );
    let _ = writeln!(out, "sipdesk_deliveries_up {}", u8::from(backlog.is_some()));
    help(
        &mut out,
        "sipdesk_records_waiting",
        "gauge",
        "Call records waiting for the database.",
    );
    let _ = writeln!(out, "sipdesk_records_waiting {}", shared.health.waiting());
    help(
        &mut out,
        "sipdesk_database_writable",
        "gauge",
        "1 when the database takes writes, 0 when it refuses them.",
    );
    let _ = writeln!(
        out,
        "sipdesk_database_writable {}",
        u8::from(shared.health.writable())
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
