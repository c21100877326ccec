//! Delivery throughput against a rate-limited helpdesk: a backlog of calls in the outbox, the
//! real delivery worker, and the fake Zendesk of the tests answering after 100 ms with a
//! 700 requests/minute limit (Zendesk Enterprise). It reports how busy the worker keeps the
//! limit, the busiest minute, and how many 429s it drew.
//!
//! `cargo bench --bench delivery` runs the full measure (2,000 calls from 500 callers, about
//! five minutes); options after `--`: `--calls N`, `--callers N`, `--limit RPM` (the fake's),
//! `--configured RPM` (sipdesk's `requests_per_minute`, default the limit: a higher one shows
//! sipdesk following the limit Zendesk announces), `--latency-ms MS`, `--concurrency N`. Under `cargo test` it runs a small smoke version
//! that only checks every call gets its ticket.

#[path = "../tests/common/zendesk.rs"]
mod zendesk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sipdesk::call::{CallRecord, Direction, EndedBy, Outcome};
use sipdesk::config::Config;
use sipdesk::directory::Directory;
use sipdesk::store::Store;
use tokio_util::sync::CancellationToken;
use zendesk::{FakeZendesk, Settings};

struct Options {
    calls: usize,
    callers: usize,
    limit: u32,
    /// `requests_per_minute` in sipdesk's configuration (default: the limit).
    configured: Option<u32>,
    latency: Duration,
    concurrency: u32,
}

fn options() -> (Options, bool) {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let mut o = if full {
        Options {
            calls: 2000,
            callers: 500,
            limit: 700,
            configured: None,
            latency: Duration::from_millis(100),
            concurrency: 4,
        }
    } else {
        Options {
            calls: 40,
            callers: 10,
            limit: 100_000,
            configured: None,
            latency: Duration::ZERO,
            concurrency: 4,
        }
    };
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(v) = value("--calls") {
        o.calls = v as usize;
    }
    if let Some(v) = value("--callers") {
        o.callers = v as usize;
    }
    if let Some(v) = value("--limit") {
        o.limit = v as u32;
    }
    if let Some(v) = value("--configured") {
        o.configured = Some(v as u32);
    }
    if let Some(v) = value("--latency-ms") {
        o.latency = Duration::from_millis(v);
    }
    if let Some(v) = value("--concurrency") {
        o.concurrency = v as u32;
    }
    (o, full)
}

fn record(i: usize, callers: usize, at: Timestamp) -> CallRecord {
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
        started_at: at,
        answered_at: Some(at),
        ended_at: at,
        outcome: Outcome::Answered,
        reason: None,
        ended_by: Some(EndedBy::Caller),
        out_of_hours: false,
        recording_url: None,
        explanation: vec!["support: open".to_owned()],
        tags: Vec::new(),
    }
}

fn main() {
    let (o, full) = options();
    let fake = FakeZendesk::start(Settings {
        latency: o.latency,
        rate_limit: o.limit,
        ..Settings::default()
    });
    fake.add_agent("Ana", "ana@example.com");
    let dir = std::env::temp_dir().join(format!("sipdesk-bench-delivery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("zd.token");
    std::fs::write(&token, "t0ken").unwrap();
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
[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{base}"
email = "bot@example.com"
token_file = "{token}"
groups = ["support"]
requests_per_minute = {limit}
concurrency = {concurrency}
"#,
        base = fake.url,
        token = token.display(),
        limit = o.configured.unwrap_or(o.limit),
        concurrency = o.concurrency,
    );
    let config = Arc::new(Config::from_toml(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(Store::open(&url)).unwrap();
    // The backlog: every call ended, its delivery waiting, before the worker starts.
    let start = Timestamp::now();
    let records: Vec<CallRecord> = (0..o.calls)
        .map(|i| {
            record(
                i,
                o.callers,
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
    let (_tx, rx) = tokio::sync::watch::channel(config.clone());
    let stop = CancellationToken::new();
    let began = Instant::now();
    let worker = sipdesk::delivery::spawn(
        url.clone(),
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
    let stats = fake.stats();
    let tickets = fake.tickets().len();
    // The busiest 60 s: the most arrivals within any minute.
    let arrivals = &stats.arrivals;
    let mut busiest = 0;
    let mut first = 0;
    for (last, at) in arrivals.iter().enumerate() {
        while at.duration_since(arrivals[first]) >= Duration::from_secs(60) {
            first += 1;
        }
        busiest = busiest.max(last + 1 - first);
    }
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(a), Some(b)) => b.duration_since(*a),
        _ => Duration::ZERO,
    };
    let per_minute = stats.requests as f64 / span.as_secs_f64().max(1e-9) * 60.0;
    println!(
        "delivery benchmark: {} calls from {} callers, fake Zendesk with {} ms latency, limit {} requests/minute \
         (sipdesk configured for {}), concurrency {}",
        o.calls,
        o.callers,
        o.latency.as_millis(),
        o.limit,
        o.configured.unwrap_or(o.limit),
        o.concurrency
    );
    println!(
        "  all delivered in {:.1} s: {} tickets, {} failed",
        elapsed.as_secs_f64(),
        tickets,
        backlog.iter().map(|b| b.failed).sum::<u64>()
    );
    println!(
        "  requests: {} ({:.2} per call), {:.0} per minute over {:.1} s = {:.1}% of the limit",
        stats.requests,
        stats.requests as f64 / o.calls as f64,
        per_minute,
        span.as_secs_f64(),
        per_minute / f64::from(o.limit) * 100.0
    );
    println!(
        "  busiest minute: {busiest} requests ({:.1}% of the limit)",
        busiest as f64 / f64::from(o.limit) * 100.0
    );
    println!("  429 answers: {}", stats.rate_limited);
    for (endpoint, n) in {
        let mut e: Vec<_> = stats.endpoints.iter().collect();
        e.sort();
        e
    } {
        println!("    {n:>6}  {endpoint}");
    }
    assert_eq!(tickets, o.calls, "every call gets its ticket");
    if !full {
        println!("(smoke run; `cargo bench --bench delivery` measures)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
