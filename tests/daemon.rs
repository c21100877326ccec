//! The daemon as an IT person runs it: state that survives restarts (on SQLite and, when
//! `SIPDESK_TEST_POSTGRES_URL` is set, PostgreSQL), a database that stalls without stalling
//! calls, and a graceful stop.

mod common;

use common::TestDb;
use common::daemon::{Daemon, SippRun, free_port};

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

fn call(daemon: &Daemon, agents: &str, caller: &str, calls: u32) {
    let uas = SippRun {
        scenario: agents,
        ip: "127.0.0.1",
        port: daemon.pbx_port,
        target: None,
        service: "",
        calls,
        rate: 0,
        tcp: false,
    }
    .spawn(&daemon.dir);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let uac = SippRun {
        scenario: caller,
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: "500",
        calls,
        rate: 10,
        tcp: false,
    }
    .spawn(&daemon.dir);
    let (code, errors) = uac.wait();
    assert_eq!(code, 0, "{errors}\n{}", daemon.log());
    let (code, errors) = uas.wait();
    assert_eq!(code, 0, "{errors}\n{}", daemon.log());
}

fn agents_of(calls: &[serde_json::Value]) -> Vec<String> {
    let mut calls = calls.to_vec();
    calls.sort_by_key(|c| c["started_at"].as_str().unwrap_or_default().to_owned());
    calls
        .iter()
        .map(|c| c["agent"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn sipdesk(daemon: &Daemon, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .args(args)
        .args(["--config", daemon.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_round_robin_cursor_and_agent_states_survive_a_restart() {
    for db in TestDb::all().await {
        let label = db.label;
        let url = db.url.clone();
        let daemon = tokio::task::spawn_blocking(move || {
            let mut daemon = Daemon::start_with_database(
                "restart",
                "trusted = [\"127.0.0.1\"]",
                BODY,
                Some(&url),
            );
            call(&daemon, "agents-answer.xml", "caller-answered.xml", 1);
            daemon.ended_calls(1);
            assert_eq!(daemon.stop(), Some(0));
            // 6001 took the first call; the next one starts after it, even after a restart.
            daemon.restart();
            call(&daemon, "agents-answer.xml", "caller-answered.xml", 1);
            assert_eq!(
                agents_of(&daemon.ended_calls(2)),
                vec!["6001", "6002"],
                "{label}"
            );
            // A supervisor marks 6003 away: the daemon picks it up within two seconds.
            assert_eq!(
                sipdesk(&daemon, &["agents", "set", "6003", "away"]).trim(),
                "6003: away"
            );
            std::thread::sleep(std::time::Duration::from_millis(2500));
            assert_eq!(daemon.stop(), Some(0));
            daemon.restart();
            call(&daemon, "agents-answer.xml", "caller-answered.xml", 1);
            assert_eq!(
                agents_of(&daemon.ended_calls(3)),
                vec!["6001", "6002", "6001"],
                "{label}: 6003 is away"
            );
            let listing = sipdesk(&daemon, &["agents"]);
            assert!(
                listing
                    .lines()
                    .any(|l| l.starts_with("6003") && l.contains("away")),
                "{listing}"
            );
            assert_eq!(daemon.stop(), Some(0));
            daemon
        })
        .await
        .unwrap();
        drop(daemon);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_database_does_not_hold_up_calls_and_nothing_is_lost() {
    use sqlx::Connection;
    let daemon = Daemon::start("locked-db", "trusted = [\"127.0.0.1\"]", BODY);
    // Another connection holds an exclusive lock on the SQLite file: every write waits.
    let url = format!("sqlite://{}", daemon.dir.join("sipdesk.db").display());
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let (daemon, took) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        call(&daemon, "agents-answer.xml", "caller-answered.xml", 5);
        (daemon, started.elapsed())
    })
    .await
    .unwrap();
    // Five calls of about half a second each, at ten a second, went through with the database
    // locked: the lock is still held here, so nothing is written yet.
    assert!(
        daemon.calls().is_empty(),
        "the lock held: {:#?}",
        daemon.calls()
    );
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    drop(locker);
    let mut daemon = tokio::task::spawn_blocking(move || {
        let calls = daemon.ended_calls(5);
        assert!(
            calls.iter().all(|c| c["outcome"] == "answered"),
            "{calls:#?}"
        );
        daemon
    })
    .await
    .unwrap();
    assert!(
        took < std::time::Duration::from_secs(5),
        "calls waited for the database: {took:?}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn while_stopping_new_calls_are_refused_503_and_calls_in_progress_finish() {
    let mut daemon = Daemon::start(
        "draining",
        "trusted = [\"127.0.0.1\"]\nshutdown_grace = \"20s\"",
        BODY,
    );
    // A call that lasts (the caller pauses 300 ms before BYE) is in progress when SIGTERM comes.
    let uas = SippRun {
        scenario: "agents-answer.xml",
        ip: "127.0.0.1",
        port: daemon.pbx_port,
        target: None,
        service: "",
        calls: 1,
        rate: 0,
        tcp: false,
    }
    .spawn(&daemon.dir);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let invite = |call_id: &str, branch: &str| {
        format!(
            "INVITE sip:500@127.0.0.1:{daemon} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\nFrom: <sip:600123456@127.0.0.1>;tag=a\r\nTo: <sip:500@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:600123456@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            daemon = daemon.port
        )
    };
    socket
        .send_to(
            invite("drain-1", "z9hG4bK-d1").as_bytes(),
            ("127.0.0.1", daemon.port),
        )
        .unwrap();
    let mut buf = [0u8; 4096];
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let ok = loop {
        let n = socket.recv(&mut buf).expect("answer from sipdesk");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            break text;
        }
    };
    // The BYE belongs to the dialog the agent's answer made: its To tag.
    let to = ok
        .lines()
        .find(|l| l.starts_with("To:") || l.starts_with("t:"))
        .expect("a To header")
        .to_owned();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.pid().to_string()])
        .status();
    std::thread::sleep(std::time::Duration::from_millis(500));
    socket
        .send_to(
            invite("drain-2", "z9hG4bK-d2").as_bytes(),
            ("127.0.0.1", daemon.port),
        )
        .unwrap();
    // The first call's 200 OK is still being retransmitted (nothing here acknowledges it).
    let answer = loop {
        let n = socket
            .recv(&mut buf)
            .expect("an answer to the second INVITE");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains("Call-ID: drain-2") {
            break text;
        }
    };
    assert!(
        answer.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(
        daemon.log().contains("stopping: new calls are refused"),
        "{}",
        daemon.log()
    );
    // The call in progress ends normally, then the daemon exits on its own.
    uas.kill();
    let bye = "BYE sip:agent@127.0.0.1:PBX SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK-d1bye\r\nFrom: <sip:600123456@127.0.0.1>;tag=a\r\nTO\r\nCall-ID: drain-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n".replace("PORT", &port.to_string()).replace("PBX", &daemon.pbx_port.to_string()).replace("TO", &to);
    socket
        .send_to(bye.as_bytes(), ("127.0.0.1", daemon.port))
        .unwrap();
    assert_eq!(daemon.stop(), Some(0));
    let calls = daemon.calls();
    let first = calls.iter().find(|c| {
        c["events"].as_array().is_some_and(|e| !e.is_empty()) && c["outcome"] == "answered"
    });
    assert!(
        first.is_some(),
        "the call in progress was recorded as answered: {calls:#?}"
    );
}
