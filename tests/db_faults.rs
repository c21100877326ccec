//! The real daemon, SIPp playing the PBX, and the database failing under it: a disk that fills
//! up or turns read-only during a burst of calls, a stop while it still cannot be written, a
//! database the service cannot write at all, and a caller whose number PostgreSQL would refuse.
//! Every call SIPp completed must have exactly one record afterwards.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestDb;
use common::calls::caller_scenario;
use common::daemon::{Daemon, test_dir};
use common::fs::SmallFs;

fn body() -> String {
    let agents: Vec<String> = (0..30)
        .map(|i| format!("{{ extension = \"{}\" }}", 7000 + i))
        .collect();
    format!(
        r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "burst"
queues = ["700"]
agents = [{}]
wrap_up = "0s"
"#,
        agents.join(", ")
    )
}

/// Every call SIPp placed exactly once, each ended: as many records as calls, and as many
/// distinct SIP Call-IDs (a call lost and another recorded twice would not pass).
fn assert_each_call_once(daemon: &Daemon, n: usize) {
    let calls = daemon.calls();
    let sip_calls: HashSet<&str> = calls
        .iter()
        .map(|c| c["sip_call_id"].as_str().unwrap())
        .collect();
    let ended = calls.iter().filter(|c| !c["outcome"].is_null()).count();
    assert_eq!(
        (calls.len(), sip_calls.len(), ended),
        (n, n, n),
        "records, distinct SIP Call-IDs, ended\nsipdesk:\n{}",
        daemon.log()
    );
}

fn on_small_fs(name: &str) -> Option<(SmallFs, Daemon)> {
    let fs = SmallFs::mount(name, "24M")?;
    let url = format!("sqlite://{}", fs.path("sipdesk.db").display());
    let daemon = Daemon::start_in(test_dir(name), "", &body(), Some(&url), &[]);
    Some((fs, daemon))
}

#[test]
fn a_full_disk_during_a_burst_of_calls_loses_no_record() {
    let Some((fs, mut daemon)) = on_small_fs("db-full") else {
        return;
    };
    let uas = daemon.agents("agents-answer.xml", 150);
    let uac = daemon.callers("caller-answered.xml", "700", 150, 30, 20, false);
    std::thread::sleep(Duration::from_millis(1500));
    fs.fill();
    std::thread::sleep(Duration::from_secs(3));
    fs.free();
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    let log = daemon.log();
    assert!(
        log.contains("cannot write call records to the database")
            && log.contains("database or disk is full"),
        "the log names the cause:\n{log}"
    );
    assert_eq!(daemon.stop(), Some(0));
    assert_each_call_once(&daemon, 150);
}

#[test]
fn a_database_made_read_only_during_a_burst_loses_no_record() {
    let Some((fs, mut daemon)) = on_small_fs("db-read-only") else {
        return;
    };
    let uas = daemon.agents("agents-answer.xml", 150);
    let uac = daemon.callers("caller-answered.xml", "700", 150, 30, 20, false);
    std::thread::sleep(Duration::from_millis(1500));
    fs.read_only("sipdesk.db", true);
    // Not healthy while the database refuses writes.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = daemon.admin("GET", "/health", None);
        if status == 503 {
            assert!(body.contains("database_not_writable"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still healthy: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    // Meanwhile the database is not held locked: an admin's command still reads it.
    let (code, out) = daemon.command(&["calls", "--limit", "1"]);
    assert_eq!(code, 0, "{out}");
    fs.read_only("sipdesk.db", false);
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    // The writer may still be waiting out its back-off (at most 5 s) when the calls end.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !daemon
        .log()
        .contains("the database takes call records again")
    {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.stop(), Some(0));
    assert_each_call_once(&daemon, 150);
}

#[test]
fn a_stop_while_the_database_fails_spills_and_the_next_start_writes_it_back() {
    let Some((fs, mut daemon)) = on_small_fs("db-stop-spill") else {
        return;
    };
    let uas = daemon.agents("agents-answer.xml", 40);
    let uac = daemon.callers("caller-answered.xml", "700", 10, 20, 20, false);
    daemon.succeeded(uac);
    // Written before the fault.
    daemon.ended_calls(10);
    fs.read_only("sipdesk.db", true);
    let uac = daemon.callers("caller-answered.xml", "700", 30, 20, 20, false);
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    let stopping = Instant::now();
    assert_eq!(daemon.stop(), Some(0));
    // stop_write_timeout is 15 s by default: the stop does not wait for the database.
    assert!(
        stopping.elapsed() < Duration::from_secs(25),
        "{:?}",
        stopping.elapsed()
    );
    let log = daemon.log();
    assert!(
        log.contains("call records it could not write wait in the spill file"),
        "{log}"
    );
    let spill = daemon.dir.join("unwritten-records.jsonl");
    assert!(spill.exists());
    fs.read_only("sipdesk.db", false);
    daemon.restart();
    assert!(
        daemon
            .log()
            .contains("call records the previous run could not write are now in the database"),
        "{}",
        daemon.log()
    );
    assert!(!spill.exists());
    assert_eq!(daemon.stop(), Some(0));
    assert_each_call_once(&daemon, 40);
}

#[test]
fn a_database_the_service_cannot_write_is_refused_at_start_with_the_reason() {
    let Some(fs) = SmallFs::mount("db-unwritable", "24M") else {
        return;
    };
    let dir = test_dir("db-unwritable-run");
    let url = format!("sqlite://{}", fs.path("sipdesk.db").display());
    // A first run creates the database.
    let mut daemon = Daemon::start_in(dir.clone(), "", &body(), Some(&url), &[]);
    assert_eq!(daemon.stop(), Some(0));
    fs.read_only("sipdesk.db", true);
    let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .args(["run", "--config", daemon.config.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    fs.read_only("sipdesk.db", false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("sipdesk ready"), "{stderr}");
    let file = fs.path("sipdesk.db").display().to_string();
    assert!(
        stderr.contains(&format!("cannot write to the database {file} as user root"))
            && stderr.contains("readonly database"),
        "the error names the file, the user and the reason:\n{stderr}"
    );
}

#[test]
fn a_relative_database_path_is_the_same_file_for_the_daemon_and_the_command_line() {
    let dir = test_dir("db-relative");
    let mut daemon = Daemon::start_in(dir.clone(), "", &body(), Some("sqlite://calls.db"), &[]);
    let uas = daemon.agents("agents-answer.xml", 2);
    daemon.succeeded(daemon.callers("caller-answered.xml", "700", 2, 10, 20, false));
    daemon.succeeded(uas);
    daemon.ended_calls(2);
    assert!(dir.join("calls.db").exists());
    // An admin in another directory sees the same calls.
    let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .args([
            "calls",
            "--json",
            "--config",
            daemon.config.to_str().unwrap(),
        ])
        .current_dir("/")
        .output()
        .unwrap();
    let calls: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(calls.len(), 2);
    assert!(!std::path::Path::new("/calls.db").exists());
    assert_eq!(daemon.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_number_with_an_escaped_nul_is_recorded_and_recording_goes_on() {
    for db in TestDb::all().await {
        let url = db.url.clone();
        let label = db.label;
        tokio::task::spawn_blocking(move || {
            let mut daemon = Daemon::start_in(test_dir("db-nul"), "", &body(), Some(&url), &[]);
            let uas = daemon.agents("agents-answer.xml", 4);
            let nul = caller_scenario(&daemon.dir, "caller-answered.xml", "%00abc", None);
            daemon.succeeded(daemon.callers(nul.to_str().unwrap(), "700", 1, 10, 20, false));
            daemon.succeeded(daemon.callers("caller-answered.xml", "700", 3, 10, 20, false));
            daemon.succeeded(uas);
            let calls = daemon.ended_calls(4);
            assert!(
                calls.iter().any(|c| c["caller"] == "%00abc"),
                "{label}: {calls:#?}"
            );
            assert_eq!(daemon.stop(), Some(0));
            assert_each_call_once(&daemon, 4);
        })
        .await
        .unwrap();
        db.drop_db().await;
    }
}
