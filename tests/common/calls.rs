//! Calls with chosen callers: SIPp caller scenarios copied with another From user, and SIPp
//! injection files for many callers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use std::time::Duration;

use super::daemon::{Daemon, SippMore, SippRun, free_port, scenario};

/// A copy of a caller scenario of `tests/sipp` whose caller is `from` (a user part such as
/// `611222333` or `[field0]`, or a whole `user@host`), with an extra header if given.
pub(crate) fn caller_scenario(
    dir: &Path,
    base: &str,
    from: &str,
    extra_header: Option<&str>,
) -> PathBuf {
    let text = std::fs::read_to_string(scenario(base)).unwrap();
    let uri = if from.contains('@') {
        from.to_owned()
    } else {
        format!("{from}@[local_ip]:[local_port]")
    };
    let mut text = text.replace(
        "sip:600123456@[local_ip]:[local_port]>;tag",
        &format!("sip:{uri}>;tag"),
    );
    if let Some(header) = extra_header {
        text = text.replacen(
            "Subject: sipdesk test",
            &format!("Subject: sipdesk test\n      {header}"),
            1,
        );
    }
    let name: String = from.chars().filter(char::is_ascii_alphanumeric).collect();
    let path = dir.join(format!("caller-{name}-{}.xml", free_port()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A SIPp injection file giving each call the next of `numbers` as `[field0]`.
pub(crate) fn injection_file(dir: &Path, numbers: &[String]) -> PathBuf {
    let mut text = String::from("SEQUENTIAL\n");
    for number in numbers {
        text.push_str(number);
        text.push_str(";\n");
    }
    let path = dir.join(format!("callers-{}.csv", free_port()));
    std::fs::write(&path, text).unwrap();
    path
}

/// One group, queue 100, with `agents` agents (enough for the calls that come at once).
pub(crate) fn groups(agents: u32) -> String {
    let mut list = vec!["{ extension = \"2001\", email = \"ana@example.com\" }".to_owned()];
    list.extend((2002..2001 + agents).map(|e| format!("{{ extension = \"{e}\" }}")));
    format!(
        "[defaults]\ntimezone = \"Europe/Madrid\"\nregion = \"ES\"\n\n[[groups]]\nname = \"support\"\nqueues = [\"100\"]\n\
         agents = [{}]\nring_timeout = \"1s\"\nwrap_up = \"0s\"\n",
        list.join(", ")
    )
}

/// Places `calls` answered calls, the n-th from `numbers[n]`, `limit` at a time.
pub(crate) fn answered_calls(daemon: &Daemon, numbers: &[String], rate: u32, limit: u32) {
    let calls = numbers.len() as u32;
    let uas = SippRun {
        scenario: "agents-answer.xml",
        ip: "127.0.0.1",
        port: daemon.pbx_port,
        target: None,
        service: "",
        calls,
        rate: 0,
        tcp: false,
    }
    .spawn(&daemon.dir);
    std::thread::sleep(Duration::from_millis(300));
    let scenario = caller_scenario(&daemon.dir, "caller-answered.xml", "[field0]", None);
    let inf = injection_file(&daemon.dir, numbers);
    let (code, errors) = SippRun {
        scenario: scenario.to_str().unwrap(),
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: "100",
        calls,
        rate,
        tcp: false,
    }
    .spawn_with(
        &daemon.dir,
        &SippMore {
            inf: Some(inf),
            limit: Some(limit),
            ..SippMore::default()
        },
    )
    .wait();
    assert_eq!(code, 0, "caller SIPp failed:\n{errors}\n{}", daemon.log());
    let (code, errors) = uas.wait();
    assert_eq!(code, 0, "agents SIPp failed:\n{errors}\n{}", daemon.log());
}

/// Spanish mobile numbers, national form, one per caller.
pub(crate) fn numbers(n: usize, first: usize) -> Vec<String> {
    (first..first + n)
        .map(|i| format!("6{:08}", 10_000_000 + i))
        .collect()
}

/// The defaults and the `support` group (queue 100, agent 2001 with ana@example.com, rung for
/// one second, no wrap-up) the helpdesk tests share.
pub(crate) const SUPPORT: &str = r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
agents = [{ extension = "2001", email = "ana@example.com" }]
ring_timeout = "1s"
wrap_up = "0s"
"#;

/// A group closed at every hour (queue 300): its callers are refused without ringing.
pub(crate) const CLOSED: &str = r#"
[[groups]]
name = "closed"
queues = ["300"]
hours = {}
agents = [{ extension = "4001" }]
"#;

/// What the agents' phones do with a call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ring {
    /// The agent answers; the caller hangs up after a moment.
    Answer,
    /// Rings out unanswered.
    NoAnswer,
    /// Nobody is rung (a closed group): the caller is refused.
    Nobody,
}

/// Places one call from `from` (a user part, or `anonymous`) to `queue`, with an extra INVITE
/// header if given, and waits until SIPp is done with it.
pub(crate) fn place_call(
    daemon: &Daemon,
    from: &str,
    queue: &str,
    ring: Ring,
    header: Option<&str>,
) {
    let agents = match ring {
        Ring::Answer => Some(daemon.agents("agents-answer.xml", 1)),
        Ring::NoAnswer => Some(daemon.agents("agents-ring-no-answer.xml", 1)),
        Ring::Nobody => None,
    };
    let base = if ring == Ring::Answer {
        "caller-answered.xml"
    } else {
        "caller-refused.xml"
    };
    let scenario = caller_scenario(&daemon.dir, base, from, header);
    let (code, errors) = SippRun {
        scenario: scenario.to_str().unwrap(),
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: queue,
        calls: 1,
        rate: 1,
        tcp: false,
    }
    .spawn(&daemon.dir)
    .wait();
    assert_eq!(code, 0, "caller SIPp failed:\n{errors}\n{}", daemon.log());
    if let Some(agents) = agents {
        daemon.succeeded(agents);
    }
}

/// Places the `n`-th call of a test ([`place_call`]) and waits until its `helpdesks` deliveries
/// are settled, each done or skipped; returns the call's id.
pub(crate) fn place_and_settle(
    daemon: &Daemon,
    n: usize,
    helpdesks: usize,
    from: &str,
    queue: &str,
    ring: Ring,
    header: Option<&str>,
) -> String {
    place_call(daemon, from, queue, ring, header);
    let id = daemon.ended_calls(n)[0]["id"].as_str().unwrap().to_owned();
    let all = daemon.settled_deliveries(helpdesks * n, Duration::from_secs(40));
    let mine: Vec<&serde_json::Value> =
        all.iter().filter(|d| d["call_id"] == id.as_str()).collect();
    assert_eq!(mine.len(), helpdesks, "{all:#?}\n{}", daemon.log());
    assert!(
        mine.iter()
            .all(|d| d["state"] == "done" || d["state"] == "skipped"),
        "{mine:#?}\n{}",
        daemon.log()
    );
    id
}
