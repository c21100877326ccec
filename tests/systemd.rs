//! The daemon as systemd runs it (`Type=notify`, `WatchdogSec=`): a minimal `NOTIFY_SOCKET`
//! listener reads what sipdesk tells systemd and when — READY=1 once it answers SIP, WATCHDOG=1
//! pings, STATUS= with calls and deliveries, RELOADING=1 then READY=1 around a reload (a broken
//! file keeps the running configuration, and calls keep being routed), STOPPING=1 on SIGTERM —
//! and a SIGTERM during 50 answered SIPp calls lets every one of them end and be recorded.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, SippMore, SippRun, free_port};

const BODY: &str = r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "trio"
queues = ["500"]
agents = [{ extension = "6001" }, { extension = "6002" }, { extension = "6003" }]
wrap_up = "0s"
"#;

/// What systemd would receive on its notification socket, with when.
struct Notifications {
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notifications {
    fn listen(path: &std::path::Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                // One datagram may carry several assignments, one a line.
                for line in text.lines() {
                    sink.lock().unwrap().push((Instant::now(), line.to_owned()));
                }
            }
        });
        Notifications { seen }
    }

    fn lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    /// Waits until a line starting with `prefix` has come after the first `after` lines; returns
    /// its position.
    fn wait_for(&self, prefix: &str, after: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self
                .lines()
                .iter()
                .skip(after)
                .position(|l| l.starts_with(prefix))
            {
                return after + i;
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix} after line {after}: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One queue call placed with SIPp and answered.
fn one_call(daemon: &Daemon) {
    let uas = daemon.agents("agents-answer.xml", 1);
    let uac = daemon.callers("caller-answered.xml", "500", 1, 10, 1, false);
    daemon.succeeded(uac);
    daemon.succeeded(uas);
}

fn signal(daemon: &Daemon, name: &str) {
    std::process::Command::new("kill")
        .args([&format!("-{name}"), &daemon.pid().to_string()])
        .status()
        .unwrap();
}

#[test]
fn systemd_hears_ready_watchdog_status_reloading_and_stopping_at_the_right_moments() {
    let dir = common::daemon::test_dir("notify-socket");
    let socket = dir.join("notify.sock");
    let notes = Notifications::listen(&socket);
    let mut daemon = Daemon::start_with_env(
        "notify",
        "trusted = [\"127.0.0.1\"]",
        BODY,
        &[
            ("NOTIFY_SOCKET", socket.to_str().unwrap()),
            // WatchdogSec=1s: sipdesk pings every half of it.
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let ready = notes.wait_for("READY=1", 0);
    // Nothing said ready before the database check and the sockets: by READY the database
    // holds its write check, and the SIP port answers.
    assert!(daemon.dir.join("sipdesk.db").exists());
    one_call(&daemon);
    assert!(
        notes.lines()[..ready]
            .iter()
            .all(|l| !l.starts_with("STOPPING") && !l.starts_with("RELOADING")),
        "{:?}",
        notes.lines()
    );
    // The watchdog: pings keep coming from the proxy loop.
    let pings = notes.count("WATCHDOG=1");
    std::thread::sleep(Duration::from_millis(1600));
    assert!(
        notes.count("WATCHDOG=1") >= pings + 2,
        "{:?}",
        notes.lines()
    );
    // The status line (every 5 s) says calls and deliveries.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !notes.lines().iter().any(|l| {
        l.starts_with("STATUS=")
            && l.contains("calls in progress")
            && l.contains("deliveries pending")
    }) {
        assert!(Instant::now() < deadline, "{:?}", notes.lines());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A reload: RELOADING=1 (with the monotonic time systemd asks for), then READY=1.
    let before = notes.lines().len();
    signal(&daemon, "HUP");
    let reloading = notes.wait_for("RELOADING=1", before);
    notes.wait_for("MONOTONIC_USEC=", before);
    notes.wait_for("READY=1", reloading + 1);
    // A broken file: the same, the running configuration stays, calls are still routed.
    let good = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(&daemon.config, format!("{good}\n[[groups]]\nname = 5\n")).unwrap();
    let before = notes.lines().len();
    signal(&daemon, "HUP");
    let reloading = notes.wait_for("RELOADING=1", before);
    notes.wait_for("READY=1", reloading + 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("configuration not reloaded") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    one_call(&daemon);
    std::fs::write(&daemon.config, good).unwrap();

    // SIGTERM: STOPPING=1, and a clean exit.
    let before = notes.lines().len();
    assert_eq!(daemon.stop(), Some(0));
    notes.wait_for("STOPPING=1", before);
    assert_eq!(daemon.ended_calls(2).len(), 2);
}

#[test]
fn sigterm_during_fifty_answered_calls_lets_them_end_and_records_every_one() {
    let mut daemon = Daemon::start(
        "sigterm-fifty",
        "trusted = [\"127.0.0.1\"]\nshutdown_grace = \"30s\"",
        BODY.replace(
            r#"agents = [{ extension = "6001" }, { extension = "6002" }, { extension = "6003" }]"#,
            &format!(
                "agents = [{}]",
                (0..50)
                    .map(|i| format!("{{ extension = \"{}\" }}", 7000 + i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .as_str(),
    );
    let uas = daemon.agents("agents-answer.xml", 50);
    // Fifty calls at once, each lasting 6 s after the answer.
    let uac = SippRun {
        scenario: "caller-answered.xml",
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: "500",
        calls: 50,
        rate: 100,
        tcp: false,
    }
    .spawn_with(
        &daemon.dir,
        &SippMore {
            limit: Some(50),
            duration_ms: Some(6000),
            ..SippMore::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, calls) = daemon.api("GET", "/calls?active=true", None);
        let answered = calls["calls"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["state"] == "answered").count());
        if answered == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{answered} of 50 answered:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&daemon, "TERM");
    // Every call ends by its caller's BYE, which sipdesk still carries while it stops.
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    assert_eq!(daemon.stop(), Some(0));
    let calls = daemon.ended_calls(50);
    assert_eq!(calls.len(), 50);
    for call in &calls {
        assert_eq!(call["outcome"], "answered", "{call:#}");
        assert_eq!(call["ended_by"], "caller", "{call:#}");
    }
}
