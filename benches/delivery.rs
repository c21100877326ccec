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

#[path = "support/backlog.rs"]
mod backlog;
#[path = "../tests/common/server.rs"]
mod server;
#[path = "../tests/common/zendesk.rs"]
mod zendesk;

use std::time::Duration;

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
    let (url, config) = backlog::config(
        &dir,
        &format!(
            r#"
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
        ),
    );
    let run = backlog::deliver(&url, config, o.calls, o.callers);
    let elapsed = run.elapsed;
    let stats = fake.stats();
    let tickets = fake.tickets().len();
    // The busiest 60 s: the most arrivals within any minute.
    let arrivals: Vec<_> = stats.arrivals.iter().map(|at| (*at, 1)).collect();
    let (busiest, _) = backlog::busiest(&arrivals, Duration::from_secs(60));
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(a), Some(b)) => b.0.duration_since(a.0),
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
        run.failed
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
