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
