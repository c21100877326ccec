//! A backlog for the delivery benchmarks: `calls` answered calls from `callers` numbers, ended
//! and waiting in the outbox before the real delivery worker starts, then delivered until none
//! is left open.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sipdesk::call::{CallRecord, Direction, EndedBy, Outcome};
use sipdesk::config::Config;
use sipdesk::directory::Directory;
use sipdesk::store::Store;
use tokio_util::sync::CancellationToken;

/// The n-th call of the backlog.
pub(crate) fn record(i: usize, callers: usize, at: Timestamp) -> CallRecord {
    CallRecord {
        id: format!("bench-{i:05}"),
        sip_call_id: format!("bench-{i}@pbx"),
        direction: Direction::Inbound,
        queue: Some("100".to_owned()),
        group: Some("support".to_owned()),
        groups: vec!["support".to_owned()],
        caller: format!("+346{:08}", 10_000_000 + i % callers),
        callee: "100".to_owned(),
        agent: Some("2001".to_owned()),
        agent_email: Some("ana@example.com".to_owned()),
        agents: Vec::new(),
        started_at: at,
        answered_at: Some(at),
        ended_at: at,
        outcome: Outcome::Answered,
        reason: None,
        ended_by: Some(EndedBy::Caller),
        out_of_hours: false,
        recording_url: None,
        voicemail: None,
        explanation: vec!["support: open".to_owned()],
        tags: Vec::new(),
        sms: None,
    }
}

/// How a backlog went.
pub(crate) struct Delivered {
    pub(crate) elapsed: Duration,
    pub(crate) failed: u64,
}

/// The configuration of a benchmark: the database under `dir`, one group, and `helpdesks`.
pub(crate) fn config(dir: &Path, helpdesks: &str) -> (String, Arc<Config>) {
    let url = format!("sqlite://{}/sipdesk.db", dir.display());
    let text = format!(
        r#"
[sip]
pbx = "127.0.0.1:5080"
[database]
url = "{url}"
[defaults]
timezone = "Europe/Madrid"
region = "ES"
[[groups]]
name = "support"
queues = ["100"]
agents = [{{ extension = "2001", email = "ana@example.com" }}]
{helpdesks}
"#
    );
    let config = Config::from_toml(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
    (url, Arc::new(config))
}

/// Puts the backlog in the outbox, runs the delivery worker until nothing is open (or an hour
/// passes), and says how it went.
pub(crate) fn deliver(url: &str, config: Arc<Config>, calls: usize, callers: usize) -> Delivered {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(Store::open(url)).unwrap();
    let start = Timestamp::now();
    let records: Vec<CallRecord> = (0..calls)
        .map(|i| {
            record(
                i,
                callers,
                start
                    .checked_add(jiff::SignedDuration::from_millis(i as i64))
                    .unwrap(),
            )
        })
        .collect();
    for chunk in records.chunks(500) {
        let changes: Vec<sipdesk::call::Change> = chunk
            .iter()
            .map(|r| sipdesk::call::Change::CallEnded(Box::new(r.clone())))
            .collect();
        let deliveries: Vec<_> = chunk
            .iter()
            .flat_map(|r| sipdesk::delivery::outbox_entries(&config, r))
            .collect();
        runtime
            .block_on(store.apply(&changes, &deliveries))
            .unwrap();
    }
    let (_tx, rx) = tokio::sync::watch::channel(config);
    let stop = CancellationToken::new();
    let began = Instant::now();
    let worker = sipdesk::delivery::spawn(
        url.to_owned(),
        rx,
        Arc::new(Directory::default()),
        stop.clone(),
    )
    .unwrap();
    let deadline = began + Duration::from_secs(3600);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let backlog = runtime.block_on(store.backlog()).unwrap();
        let open: u64 = backlog.iter().map(|b| b.pending + b.in_progress).sum();
        if open == 0 || Instant::now() > deadline {
            break;
        }
    }
    let elapsed = began.elapsed();
    stop.cancel();
    worker.join().unwrap();
    let backlog = runtime.block_on(store.backlog()).unwrap();
    Delivered {
        elapsed,
        failed: backlog.iter().map(|b| b.failed).sum(),
    }
}

/// The most arrivals (weighted) within any `window`, and the average per `window` over the
/// whole run.
pub(crate) fn busiest(arrivals: &[(Instant, u32)], window: Duration) -> (u32, f64) {
    let mut most = 0;
    let mut first = 0;
    let mut sum = 0;
    for (last, (at, weight)) in arrivals.iter().enumerate() {
        sum += weight;
        while at.duration_since(arrivals[first].0) >= window {
            sum -= arrivals[first].1;
            first += 1;
        }
        most = most.max(sum);
        let _ = last;
    }
    let total: u32 = arrivals.iter().map(|(_, w)| w).sum();
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(a), Some(b)) => b.0.duration_since(a.0),
        _ => Duration::ZERO,
    };
    let average = f64::from(total) / span.as_secs_f64().max(1e-9) * window.as_secs_f64();
    (most, average)
}
