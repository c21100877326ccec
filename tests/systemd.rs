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

/// What systemd would receive on its notification socket: each datagram whole, and whether
/// sipdesk answered SIP the moment READY=1 came.
struct Notifications {
    datagrams: Arc<Mutex<Vec<String>>>,
    answered_at_ready: Arc<Mutex<Option<bool>>>,
}

impl Notifications {
    /// Listens on `path`; when READY=1 first comes, sends an OPTIONS to `sip` at once.
    fn listen(path: &std::path::Path, sip: u16) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let answered_at_ready = Arc::new(Mutex::new(None));
        let (sink, probe) = (datagrams.clone(), answered_at_ready.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.lines().any(|l| l == "READY=1") && probe.lock().unwrap().is_none() {
                    *probe.lock().unwrap() = Some(options_answered(sip));
                }
                sink.lock().unwrap().push(text);
            }
        });
        Notifications {
            datagrams,
            answered_at_ready,
        }
    }

    /// Every assignment, in order (one datagram may carry several, a line each).
    fn lines(&self) -> Vec<String> {
        self.datagrams
            .lock()
            .unwrap()
            .iter()
            .flat_map(|d| d.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    fn datagrams(&self) -> Vec<String> {
        self.datagrams.lock().unwrap().clone()
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

/// Whether sipdesk answers an OPTIONS on UDP within a second.
fn options_answered(port: u16) -> bool {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap().port();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let options = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ready\r\nFrom: <sip:probe@127.0.0.1>;tag=r\r\nTo: <sip:127.0.0.1>\r\nCall-ID: ready-probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(options.as_bytes(), ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 4096];
    matches!(socket.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"SIP/2.0 200"))
}

#[test]
fn systemd_hears_ready_watchdog_status_reloading_and_stopping_at_the_right_moments() {
    let dir = common::daemon::test_dir("notify-socket");
    let socket = dir.join("notify.sock");
    let mut daemon = Daemon::prepare_with_env(
        "notify",
        "trusted = [\"127.0.0.1\"]",
        BODY,
        &[
            ("NOTIFY_SOCKET", socket.to_str().unwrap()),
            // WatchdogSec=1s: sipdesk pings every half of it.
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let notes = Notifications::listen(&socket, daemon.port);
    daemon.launch();
    let ready = notes.wait_for("READY=1", 0);
    // Nothing said ready before the sockets: the moment READY=1 came, SIP was answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    let answered = loop {
        if let Some(answered) = *notes.answered_at_ready.lock().unwrap() {
            break answered;
        }
        assert!(
            Instant::now() < deadline,
            "READY came, the probe did not run"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(answered, "READY=1 came before sipdesk answered SIP");
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

    // A reload: RELOADING=1 with, in the same message, the monotonic time systemd asks for
    // (sd_notify(3)); then READY=1.
    let before = notes.lines().len();
    signal(&daemon, "HUP");
    let reloading = notes.wait_for("RELOADING=1", before);
    assert!(
        notes
            .datagrams()
            .iter()
            .any(|d| d.lines().any(|l| l == "RELOADING=1")
                && d.lines().any(|l| l.starts_with("MONOTONIC_USEC="))),
        "{:?}",
        notes.datagrams()
    );
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
