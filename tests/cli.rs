//! Black-box tests of `sipdesk check-config`, `sipdesk route` and what every command shares
//! (logging, a closed pipe): the built binary, real files, exit codes and what an admin reads on
//! the terminal.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sipdesk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .args(args)
        .env_remove("SIPDESK_CONFIG")
        .output()
        .expect("the sipdesk binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn example() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("config.example.toml")
        .display()
        .to_string()
}

/// A configuration file in a fresh temporary directory.
fn write_config(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sipdesk-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sipdesk.toml");
    std::fs::write(&path, contents).unwrap();
    path
}

/// Exit 1, exactly one line on stderr that starts with `location` and contains `says`, and no
/// panic or backtrace.
fn assert_one_located_error(out: &Output, location: &str, says: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(
        stderr.starts_with(location),
        "expected {location}…, got {stderr}"
    );
    assert!(stderr.contains(says), "expected {says:?} in {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

const VALID: &str = "[sip]\npbx = \"127.0.0.1:5080\"\n\n[defaults]\ntimezone = \"Europe/Madrid\"\nregion = \"ES\"\n\n[[groups]]\nname = \"support\"\nqueues = [\"100\"]\nagents = [{ extension = \"2001\" }]\n";

#[test]
fn check_config_accepts_the_example_with_a_one_line_summary() {
    let out = sipdesk(&["check-config", "--config", &example()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout
            .contains(": ok: 4 groups, 4 queues, 10 agents, 4 global holidays, 6 helpdesks, PBX 127.0.0.1:5080"),
        "{stdout}"
    );
    // The example's helpdesk secrets are not on this machine: said, but not an error.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: helpdesk \"zendesk-madrid\": cannot read the token file zendesk-madrid.token")
            && stderr.contains("warning: helpdesk \"zendesk-brasil\": the environment variable SIPDESK_ZENDESK_BR_TOKEN (token_env) is not set"),
        "{stderr}"
    );
}

#[test]
fn check_config_reads_the_path_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .arg("check-config")
        .env("SIPDESK_CONFIG", example())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn check_config_without_any_path_reads_etc_sipdesk() {
    let out = sipdesk(&["check-config"]);
    // Whether this machine has the file or not, the first thing printed names the default path.
    let printed = text(&out.stdout) + &text(&out.stderr);
    assert!(
        printed.starts_with("/etc/sipdesk/sipdesk.toml: "),
        "{printed}"
    );
}

#[test]
fn a_missing_file_is_one_clear_line() {
    let out = sipdesk(&["check-config", "--config", "/nonexistent/sipdesk.toml"]);
    assert_one_located_error(
        &out,
        "/nonexistent/sipdesk.toml: cannot read the configuration file",
        "No such file or directory",
    );
}

#[test]
fn a_toml_syntax_error_is_located() {
    let path = write_config("syntax", "[sip\npbx = \"x\"\n");
    let out = sipdesk(&["check-config", "--config", path.to_str().unwrap()]);
    assert_one_located_error(&out, &format!("{}:1:5: ", path.display()), "expected `]`");
}

#[test]
fn a_wrong_type_is_located() {
    let path = write_config("type", &VALID.replace("[\"100\"]", "[100]"));
    let out = sipdesk(&["check-config", "--config", path.to_str().unwrap()]);
    assert_one_located_error(
        &out,
        &format!("{}:10:11: ", path.display()),
        "invalid type: integer `100`, expected a string",
    );
}

#[test]
fn an_unknown_time_zone_is_located() {
    let path = write_config("zone", &VALID.replace("Europe/Madrid", "Europe/Madird"));
    let out = sipdesk(&["check-config", "--config", path.to_str().unwrap()]);
    assert_one_located_error(
        &out,
        &format!("{}:5:12: ", path.display()),
        "unknown time zone \"Europe/Madird\"",
    );
}

#[test]
fn every_error_is_printed_one_per_line() {
    let broken = VALID
        .replace("Europe/Madrid", "Europe/Madird")
        .replace("\"2001\"", "\"20 01\"")
        + "\n[[groups]]\nname = \"support\"\nqueues = [\"100\"]\nagents = []\n";
    let path = write_config("many", &broken);
    let out = sipdesk(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    let prefix = format!("{}:", path.display());
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{stderr}");
}

#[test]
fn unknown_keys_and_wrong_values_are_printed_together() {
    let broken = VALID
        .replace(
            "pbx = \"127.0.0.1:5080\"",
            "pbx = \"127.0.0.1:5080\"\nmax_transaction = 10\nshutdown_grace = \"soon\"",
        )
        .replace("\"2001\" }]", "\"20 01\", nmae = \"Ana\" }]");
    let path = write_config("keys-and-values", &broken);
    let out = sipdesk(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let at = |line_col: &str, says: &str| {
        let start = format!("{}:{line_col}: ", path.display());
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&start) && l.contains(says)),
            "expected {start}…{says}…, got:\n{stderr}"
        );
    };
    at("3:1", "unknown field `max_transaction`");
    at("4:18", "is not a duration");
    at("13:25", "\"20 01\" has ' '");
    at("13:34", "unknown field `nmae`");
    assert_eq!(lines.len(), 4, "{stderr}");
}

/// A configuration on SQLite in a fresh temporary directory, for the commands that read the
/// store.
fn sqlite_config(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sipdesk-cli-{}-{name}", std::process::id()));
    let config = VALID.replace(
        "[defaults]",
        &format!(
            "[database]\nurl = \"sqlite://calls.db\"\nstate_directory = \"{}\"\n\n[defaults]",
            dir.display()
        ),
    );
    write_config(name, &config)
}

#[test]
fn debug_logging_shows_sipdesk_not_the_database_drivers_statements_and_no_colour_off_a_terminal() {
    let config = sqlite_config("log");
    let calls = |filter: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
            .args(["calls", "--config", config.to_str().unwrap()])
            .env("SIPDESK_LOG", filter)
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "no calls\n");
        text(&out.stderr)
    };
    let debug = calls("debug");
    assert!(!debug.contains("sqlx"), "{debug}");
    // Named, the driver says every statement: the same run is where they would have been.
    let statements = calls("debug,sqlx=debug");
    assert!(
        statements
            .lines()
            .any(|l| l.contains("DEBUG sqlx::query") && l.contains("PRAGMA")),
        "{statements}"
    );
    for stderr in [debug, statements] {
        assert!(
            !stderr.contains('\x1b'),
            "colour codes in a pipe: {stderr:?}"
        );
    }
}

#[test]
fn a_command_writing_to_a_closed_pipe_ends_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    // A pipe whose reader is gone before sipdesk writes a byte: `sipdesk route … | head -0`.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just opened and nothing else owns them.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .args(["route", "--config", &example(), "--queue", "100"])
        .args(["--from", "600123456"])
        .env_remove("SIPDESK_CONFIG")
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(stderr, "", "nothing said on stderr");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn route_prints_the_decision_in_words() {
    let out = sipdesk(&[
        "route",
        "--config",
        &example(),
        "--queue",
        "100",
        "--from",
        "600 123 456",
        "--at",
        "2026-11-23T10:00:00+01:00",
        "--away",
        "2001",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("call to queue 100 from +34600123456 at 2026-11-23T09:00:00Z\nring 2002 in group soporte-madrid\n"), "{stdout}");
    assert!(stdout.contains("skipped 2001 away"), "{stdout}");
    assert!(stdout.contains("if nobody answers: voicemail"), "{stdout}");
}

#[test]
fn route_json_has_action_group_extension_reason_and_explanation() {
    let config = example();
    let run = |at: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "route",
            "--json",
            "--config",
            &config,
            "--queue",
            "100",
            "--from",
            "+34911239613",
            "--at",
            at,
        ];
        args.extend_from_slice(extra);
        let out = sipdesk(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    };
    let open = run("2026-11-23T10:00:00+01:00", &[]);
    assert_eq!(open["action"], "ring");
    assert_eq!(open["group"], "soporte-madrid");
    assert_eq!(open["extension"], "2001");
    assert!(open["reason"].is_null());
    assert!(
        open["explanation"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );

    // Everyone in Madrid busy or away: overflow to São Paulo (08:00 there) for no_agents.
    let busy = run(
        "2026-11-23T12:00:00+01:00",
        &["--busy", "2001,2002", "--away", "2003,2004"],
    );
    assert_eq!(busy["action"], "ring");
    assert_eq!(busy["group"], "suporte-sao-paulo");
    assert_eq!(busy["extension"], "3001");
    assert_eq!(busy["reason"], "no_agents");

    // Christmas day: a holiday in Madrid and in São Paulo; Madrid does not overflow on holidays.
    let christmas = run("2026-12-25T10:00:00+01:00", &[]);
    assert_eq!(christmas["action"], "voicemail");
    assert_eq!(christmas["reason"], "holiday");
    assert!(christmas["extension"].is_null());

    let unknown = {
        let out = sipdesk(&[
            "route",
            "--json",
            "--config",
            &example(),
            "--queue",
            "999",
            "--from",
            "anonymous",
        ]);
        assert_eq!(out.status.code(), Some(0));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(unknown["action"], "reject");
    assert_eq!(unknown["reason"], "unknown_queue");
}

#[test]
fn route_redirects_unknown_callers_when_asked() {
    let out = sipdesk(&[
        "route",
        "--json",
        "--config",
        &example(),
        "--queue",
        "100",
        "--from",
        "600123456",
        "--at",
        "2026-11-23T12:00:00+01:00",
        "--caller",
        "unknown",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["group"], "ventas-madrid");
    assert_eq!(json["explanation"][1]["verdict"], "redirected");
}

#[test]
fn route_refuses_a_number_that_is_not_one() {
    let out = sipdesk(&[
        "route",
        "--config",
        &example(),
        "--queue",
        "100",
        "--from",
        "hello",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "--from: \"hello\" is not a phone number"
    );
}

#[test]
fn route_refuses_a_bad_time_as_a_usage_error() {
    let out = sipdesk(&[
        "route",
        "--config",
        &example(),
        "--queue",
        "100",
        "--from",
        "600123456",
        "--at",
        "tomorrow",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--at"), "{}", text(&out.stderr));
}

#[test]
fn route_with_a_broken_config_reports_it_like_check_config() {
    let path = write_config(
        "route-broken",
        &VALID.replace("Europe/Madrid", "Europe/Madird"),
    );
    let out = sipdesk(&[
        "route",
        "--config",
        path.to_str().unwrap(),
        "--queue",
        "100",
        "--from",
        "600123456",
    ]);
    assert_one_located_error(
        &out,
        &format!("{}:5:12: ", path.display()),
        "unknown time zone",
    );
}
