//! Delivery throughput of the Help Scout, Intercom and Klaviyo connectors against their fakes
//! (the ones the tests use), each answering after 100 ms at the vendor's published limit: Help
//! Scout 400 requests a minute with writes counting two; Intercom 10,000 a minute counted in
//! 10-second windows of 1,667; Klaviyo's Create Event 350 a second and 3,500 a minute. A
//! backlog of 2,000 calls from 500 callers waits in the outbox; the benchmark reports how much
//! of the limit the worker keeps in use, the busiest window, and how many 429s it drew.
//!
//! `cargo bench --bench connectors` runs the full measure (Help Scout alone takes about
//! fifteen minutes: its limit is low); `-- --kind helpscout|intercom|klaviyo` runs one,
//! `--calls N`, `--callers N`, `--latency-ms MS` change the backlog. Under `cargo test` it runs
//! a small smoke version that only checks every call is delivered.

#[path = "support/backlog.rs"]
mod backlog;
#[path = "../tests/common/helpscout.rs"]
mod helpscout;
#[path = "../tests/common/intercom.rs"]
mod intercom;
#[path = "../tests/common/klaviyo.rs"]
mod klaviyo;
#[path = "../tests/common/server.rs"]
mod server;

use std::time::{Duration, Instant};

struct Options {
    calls: usize,
    callers: usize,
    latency: Duration,
    kinds: Vec<String>,
    full: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number =
        |name: &str, default: u64| value(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    Options {
        calls: number("--calls", if full { 2000 } else { 40 }) as usize,
        callers: number("--callers", if full { 500 } else { 10 }) as usize,
        latency: Duration::from_millis(number("--latency-ms", if full { 100 } else { 0 })),
        kinds: match value("--kind") {
            Some(kind) => vec![kind],
            None => vec![
                "klaviyo".to_owned(),
                "intercom".to_owned(),
                "helpscout".to_owned(),
            ],
        },
        full,
    }
}

/// What a run measured, in the vendor's own unit (Help Scout's weighted requests).
struct Measure {
    name: &'static str,
    /// The limit per `window`.
    limit: u32,
    window: Duration,
    arrivals: Vec<(Instant, u32)>,
    rate_limited: u64,
    delivered: usize,
}

fn report(o: &Options, run: &backlog::Delivered, m: &Measure) {
    let (busiest, average) = backlog::busiest(&m.arrivals, m.window);
    let total: u32 = m.arrivals.iter().map(|(_, w)| w).sum();
    println!(
        "{}: {} calls from {} callers, {} ms latency, limit {} per {} s",
        m.name,
        o.calls,
        o.callers,
        o.latency.as_millis(),
        m.limit,
        m.window.as_secs()
    );
    println!(
        "  all delivered in {:.1} s: {} delivered, {} failed; {} requests counted ({:.2} per call)",
        run.elapsed.as_secs_f64(),
        m.delivered,
        run.failed,
        total,
        f64::from(total) / o.calls as f64
    );
    println!(
        "  {:.0} per {} s on average = {:.1}% of the limit; busiest window {} ({:.1}%); 429 answers: {}",
        average,
        m.window.as_secs(),
        average / f64::from(m.limit) * 100.0,
        busiest,
        f64::from(busiest) / f64::from(m.limit) * 100.0,
        m.rate_limited
    );
    assert_eq!(m.delivered, o.calls, "{}: every call delivered", m.name);
}

fn main() {
    let o = options();
    for kind in &o.kinds {
        let dir = std::env::temp_dir().join(format!("sipdesk-bench-{kind}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        // The smoke run neither limits nor paces.
        let big = !o.full;
        let pace = |limit: u32| if big { 100_000 } else { limit };
        match kind.as_str() {
            "klaviyo" => {
                let fake = klaviyo::FakeKlaviyo::start(klaviyo::Settings {
                    latency: o.latency,
                    burst: if big { 100_000 } else { 350 },
                    steady: if big { 1_000_000 } else { 3500 },
                    ..klaviyo::Settings::default()
                });
                std::fs::write(&secret, "pk_test_0123456789abcdef").unwrap();
                let (url, config) = backlog::config(
                    &dir,
                    &format!(
                        "[[helpdesks]]\nname = \"kv\"\nkind = \"klaviyo\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\ngroups = [\"support\"]\nrequests_per_minute = {}\nconcurrency = 8\n",
                        fake.url,
                        secret.display(),
                        pace(3500)
                    ),
                );
                let run = backlog::deliver(&url, config, o.calls, o.callers);
                let stats = fake.stats();
                report(
                    &o,
                    &run,
                    &Measure {
                        name: "Klaviyo (Create Event)",
                        limit: 3500,
                        window: Duration::from_secs(60),
                        arrivals: stats.arrivals.iter().map(|a| (*a, 1)).collect(),
                        rate_limited: stats.rate_limited,
                        delivered: fake.events().len(),
                    },
                );
            }
            "intercom" => {
                let fake = intercom::FakeIntercom::start(intercom::Settings {
                    latency: o.latency,
                    per_window: if big { 1_000_000 } else { 1667 },
                    search_lag: Duration::ZERO,
                    ..intercom::Settings::default()
                });
                fake.add_admin("boss@example.com");
                fake.add_admin("ana@example.com");
                std::fs::write(&secret, "ic-token").unwrap();
                let (url, config) = backlog::config(
                    &dir,
                    &format!(
                        "[[helpdesks]]\nname = \"ic\"\nkind = \"intercom\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\nadmin_email = \"boss@example.com\"\ngroups = [\"support\"]\nrequests_per_minute = {}\nconcurrency = 32\n",
                        fake.url,
                        secret.display(),
                        pace(10000)
                    ),
                );
                let run = backlog::deliver(&url, config, o.calls, o.callers);
                let stats = fake.stats();
                report(
                    &o,
                    &run,
                    &Measure {
                        name: "Intercom",
                        limit: 1667,
                        window: Duration::from_secs(10),
                        arrivals: stats.arrivals.iter().map(|a| (*a, 1)).collect(),
                        rate_limited: stats.rate_limited,
                        delivered: fake.conversations().len(),
                    },
                );
            }
            "helpscout" => {
                let fake = helpscout::FakeHelpScout::start(helpscout::Settings {
                    latency: o.latency,
                    rate_limit: if big { 1_000_000 } else { 400 },
                    search_lag: Duration::ZERO,
                    ..helpscout::Settings::default()
                });
                std::fs::write(&secret, "app-secret").unwrap();
                let (url, config) = backlog::config(
                    &dir,
                    &format!(
                        "[[helpdesks]]\nname = \"hs\"\nkind = \"helpscout\"\nbase_url = \"{}\"\nclient_id = \"app-id\"\ntoken_file = \"{}\"\nmailbox_id = 7\ngroups = [\"support\"]\nrequests_per_minute = {}\n",
                        fake.url,
                        secret.display(),
                        pace(400)
                    ),
                );
                let run = backlog::deliver(&url, config, o.calls, o.callers);
                let stats = fake.stats();
                report(
                    &o,
                    &run,
                    &Measure {
                        name: "Help Scout (writes count two)",
                        limit: 400,
                        window: Duration::from_secs(60),
                        arrivals: stats.arrivals.clone(),
                        rate_limited: stats.rate_limited,
                        delivered: fake.conversations().len(),
                    },
                );
            }
            other => panic!("--kind {other}: write helpscout, intercom or klaviyo"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !o.full {
        println!("(smoke run; `cargo bench --bench connectors` measures)");
    }
}
