//! Calls with chosen callers: SIPp caller scenarios copied with another From user, and SIPp
//! injection files for many callers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::daemon::{free_port, scenario};

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
