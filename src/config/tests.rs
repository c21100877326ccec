use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::routing::FinalAction;

const MINIMAL: &str = r#"[sip]
pbx = "10.0.0.10:5060"

[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
agents = [{ extension = "2001" }]
"#;

/// The diagnostics of an invalid configuration, as printed.
fn errors(text: &str) -> Vec<String> {
    match Config::from_toml(text, "test.toml") {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(ConfigError::Invalid(diagnostics)) => {
            diagnostics.iter().map(ToString::to_string).collect()
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// `test.toml:LINE:COL` of the first occurrence of `needle`; with `"before|needle"` (or more
/// parts), of the first occurrence after the parts before it, in order.
fn at(text: &str, needle: &str) -> String {
    let parts: Vec<&str> = needle.split('|').collect();
    let (last, before) = parts.split_last().expect("a needle");
    let mut skip = 0;
    for part in before {
        skip += text[skip..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} not in text"))
            + part.len();
    }
    let offset = skip
        + text[skip..]
            .find(last)
            .unwrap_or_else(|| panic!("{needle:?} not in text"));
    let d = diagnostic::locate("test.toml", text, offset, String::new());
    format!("test.toml:{}:{}", d.line, d.column)
}

/// Asserts one diagnostic starts at `needle` and says `says`.
fn assert_error(text: &str, needle: &str, says: &str) {
    let errors = errors(text);
    let location = at(text, needle);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{location}: ")) && e.contains(says)),
        "expected an error at {location} saying {says:?}, got:\n{}",
        errors.join("\n")
    );
}

fn fixtures() -> Vec<(PathBuf, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("config.example.toml")];
    let dir = root.join("tests/fixtures");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    found.sort();
    files.extend(found);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable fixture");
            (p, text)
        })
        .collect()
}

#[test]
fn the_example_configuration_is_valid_and_complete() {
    let text = include_str!("../../config.example.toml");
    let config = Config::from_toml(text, "config.example.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.groups.len(), 4);
    assert_eq!(config.global_holidays, 4);
    assert_eq!(config.database.url, "sqlite:///var/lib/sipdesk/sipdesk.db");
    assert_eq!(
        config.database.sqlite_file(),
        Some("/var/lib/sipdesk/sipdesk.db".into())
    );
    let madrid = config.groups.get(config.groups.by_queue("101").unwrap());
    assert_eq!(&*madrid.name, "soporte-madrid");
    assert_eq!(madrid.agents.len(), 4);
    assert_eq!(madrid.ring_timeout, Duration::from_secs(20));
    assert_eq!(madrid.final_action, FinalAction::Voicemail);
    // Global holidays plus its own two.
    assert_eq!(madrid.schedule.holidays.len(), 6);
    let night = config
        .groups
        .get(config.groups.by_name("plantao-noturno").unwrap());
    assert!(night.queues.is_empty());
}

#[test]
fn every_fixture_is_valid() {
    for (path, text) in fixtures() {
        if let Err(e) = Config::from_toml(&text, &path.display().to_string()) {
            panic!("{e}");
        }
    }
}

/// Every table of a document, as a path of keys and indexes.
fn tables(item: &toml_edit::Item) -> usize {
    use toml_edit::{Item, Value};
    fn in_value(value: &Value) -> usize {
        match value {
            Value::InlineTable(t) => 1 + t.iter().map(|(_, v)| in_value(v)).sum::<usize>(),
            Value::Array(a) => a.iter().map(in_value).sum(),
            _ => 0,
        }
    }
    match item {
        Item::Table(t) => 1 + t.iter().map(|(_, i)| tables(i)).sum::<usize>(),
        Item::ArrayOfTables(a) => a
            .iter()
            .map(|t| 1 + t.iter().map(|(_, i)| tables(i)).sum::<usize>())
            .sum(),
        Item::Value(v) => in_value(v),
        Item::None => 0,
    }
}

/// Inserts `sipdesk_unknown_key = 1` into the `n`-th table in visiting order; returns whether
/// that table was found.
fn inject(item: &mut toml_edit::Item, n: &mut usize) -> bool {
    use toml_edit::{Item, Value};
    const KEY: &str = "sipdesk_unknown_key";
    fn in_value(value: &mut Value, n: &mut usize) -> bool {
        match value {
            Value::InlineTable(t) => {
                if *n == 0 {
                    t.insert(KEY, Value::from(1));
                    return true;
                }
                *n -= 1;
                t.iter_mut().any(|(_, v)| in_value(v, n))
            }
            Value::Array(a) => a.iter_mut().any(|v| in_value(v, n)),
            _ => false,
        }
    }
    fn in_table(t: &mut toml_edit::Table, n: &mut usize) -> bool {
        if *n == 0 {
            t.insert(KEY, toml_edit::value(1));
            return true;
        }
        *n -= 1;
        t.iter_mut().any(|(_, i)| inject(i, n))
    }
    match item {
        Item::Table(t) => in_table(t, n),
        Item::ArrayOfTables(a) => a.iter_mut().any(|t| in_table(t, n)),
        Item::Value(v) => in_value(v, n),
        Item::None => false,
    }
}

#[test]
fn an_unknown_key_in_any_table_of_any_fixture_is_a_located_error() {
    for (path, text) in fixtures() {
        let doc: toml_edit::DocumentMut = text.parse().expect("fixture parses");
        let count = tables(doc.as_item());
        assert!(count > 3, "{} has tables", path.display());
        for n in 0..count {
            let mut doc: toml_edit::DocumentMut = text.parse().unwrap();
            let mut k = n;
            assert!(
                inject(doc.as_item_mut(), &mut k),
                "table {n} of {}",
                path.display()
            );
            let injected = doc.to_string();
            let line = injected
                .lines()
                .position(|l| l.contains("sipdesk_unknown_key"))
                .expect("key written")
                + 1;
            let errors = errors(&injected);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&format!("test.toml:{line}:"))
                        && e.contains("sipdesk_unknown_key")),
                "{} table {n}: expected an error on line {line} naming the key, got:\n{}\nin:\n{injected}",
                path.display(),
                errors.join("\n")
            );
        }
    }
}

#[test]
fn syntax_errors_are_located() {
    let errors = errors("[sip\npbx = \"x\"\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("test.toml:1:5: "), "{errors:?}");
}

#[test]
fn wrong_types_are_located() {
    let text = MINIMAL.replace(r#"queues = ["100"]"#, "queues = [100]");
    assert_error(
        &text,
        "100]",
        "invalid type: integer `100`, expected a string",
    );
}

#[test]
fn unknown_sections_are_located() {
    let text = format!("{MINIMAL}\n[admin_api]\nlisten = 1\n");
    assert_error(&text, "admin_api", "unknown section `admin_api`");
}

#[test]
fn missing_sections_are_reported() {
    let errors =
        errors("[[groups]]\nname = \"a\"\nqueues = []\nagents = [{ extension = \"1\" }]\n");
    assert!(
        errors.iter().any(|e| e.contains("missing section [sip]")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing section [defaults]")),
        "{errors:?}"
    );
}

#[test]
fn a_queue_served_by_two_groups_is_refused() {
    let text = format!(
        "{MINIMAL}\n[[groups]]\nname = \"sales\"\nqueues = [\"200\", \"100\"]\nagents = [{{ extension = \"3001\" }}]\n"
    );
    assert_error(
        &text,
        "\"100\"]\nagents = [{ extension = \"3001\"",
        "already served by group \"support\"",
    );
}

#[test]
fn overflow_and_redirects_to_missing_groups_are_refused() {
    let text = MINIMAL.replace(
        "agents = [{ extension = \"2001\" }]",
        "agents = [{ extension = \"2001\" }]\noverflow = [{ group = \"night\" }]\nunknown_caller_group = \"sales\"\ninactive_caller_group = \"support\"",
    );
    assert_error(
        &text,
        "\"night\"",
        "no group is named \"night\"; the groups are: support",
    );
    assert_error(&text, "\"sales\"", "no group is named \"sales\"");
    assert_error(
        &text,
        "inactive_caller_group = |\"support\"",
        "cannot redirect callers to itself",
    );
}

#[test]
fn overflow_to_itself_or_twice_is_refused() {
    let text = format!(
        "{}\n[[groups]]\nname = \"b\"\nqueues = []\nagents = [{{ extension = \"3\" }}]\n",
        MINIMAL.replace(
            "agents = [{ extension = \"2001\" }]",
            "agents = [{ extension = \"2001\" }]\noverflow = [{ group = \"support\" }, { group = \"b\" }, { group = \"b\", when = [] }]",
        )
    );
    assert_error(&text, "\"support\" }", "cannot overflow to itself");
    assert_error(&text, "\"b\", when", "listed twice");
}

#[test]
fn a_group_without_agents_is_refused() {
    let text = MINIMAL.replace("agents = [{ extension = \"2001\" }]", "agents = []");
    assert_error(&text, "[]", "group \"support\" has no agents");
}

#[test]
fn overlapping_and_malformed_intervals_are_refused() {
    let text = MINIMAL.replace(
        "agents",
        "hours.mon = [\"09:00-14:00\", \"13:30-18:00\"]\nhours.tue = [\"9-17\"]\nhours.sun = [\"22:00-10:00\"]\nagents",
    );
    assert_error(
        &text,
        "\"13:30-18:00\"",
        "\"13:30-18:00\" (mon) overlaps \"09:00-14:00\" (mon)",
    );
    assert_error(&text, "\"9-17\"", "\"9\" is not a time of day");
    assert_error(
        &text,
        "\"22:00-10:00\"",
        "\"22:00-10:00\" (sun) overlaps \"09:00-14:00\" (mon)",
    );
}

#[test]
fn unknown_time_zones_are_refused_where_written() {
    let text = MINIMAL.replace("Europe/Madrid", "Europe/Madird").replace(
        "name = \"support\"",
        "name = \"support\"\ntimezone = \"Mars/Olympus\"",
    );
    assert_error(
        &text,
        "\"Europe/Madird\"",
        "unknown time zone \"Europe/Madird\"",
    );
    assert_error(
        &text,
        "\"Mars/Olympus\"",
        "unknown time zone \"Mars/Olympus\"",
    );
}

#[test]
fn invalid_dates_and_holiday_hours_are_refused() {
    let text = format!(
        "{MINIMAL}\n[[holidays]]\ndate = \"2026-02-29\"\nname = \"a\"\n\n[[holidays]]\ndate = \"12-25\"\nname = \"b\"\nfrom = \"15:00\"\nuntil = \"14:00\"\n\n[[holidays]]\ndate = \"12/31\"\nname = \"c\"\nuntil = \"25:00\"\n"
    );
    assert_error(&text, "\"2026-02-29\"", "is not a date");
    assert_error(&text, "\"15:00\"", "holiday hours 15:00-14:00 are empty");
    assert_error(&text, "\"12/31\"", "is not a date");
    assert_error(&text, "\"25:00\"", "\"25:00\" is not a time of day");
}

#[test]
fn extensions_must_be_sip_user_parts() {
    let text = MINIMAL.replace("\"2001\"", "\"20 01\"");
    assert_error(&text, "\"20 01\"", "extension: \"20 01\" has ' '");
}

#[test]
fn duplicate_group_names_are_refused() {
    let text = format!(
        "{MINIMAL}\n[[groups]]\nname = \"support\"\nqueues = [\"200\"]\nagents = [{{ extension = \"3001\" }}]\n"
    );
    let second = text.rfind("\"support\"").unwrap();
    let errors = errors(&text);
    let d = diagnostic::locate("test.toml", &text, second, String::new());
    let location = format!("test.toml:{}:{}: ", d.line, d.column);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&location) && e.contains("already defined above")),
        "{errors:?}"
    );
}

#[test]
fn one_extension_with_two_emails_is_refused() {
    let text = format!(
        "{}\n[[groups]]\nname = \"sales\"\nqueues = [\"200\"]\nagents = [{{ extension = \"2001\", email = \"b@example.com\" }}]\n",
        MINIMAL.replace(
            "{ extension = \"2001\" }",
            "{ extension = \"2001\", email = \"a@example.com\" }"
        )
    );
    assert_error(
        &text,
        "\"b@example.com\"",
        "has e-mail a@example.com in group \"support\"",
    );
}

#[test]
fn durations_sip_and_database_values_are_checked() {
    let text = MINIMAL
        .replace("pbx = \"10.0.0.10:5060\"", "pbx = \"pbx host\"\nlisten = [\"sctp:0.0.0.0:5060\"]\ntrusted = [\"10.0.0.0/33\"]\n\n[database]\nurl = \"mysql://x\"")
        .replace("agents", "ring_timeout = \"soon\"\nagents");
    assert_error(&text, "\"pbx host\"", "is not a host and port");
    assert_error(&text, "\"sctp:", "is not a socket to listen on");
    assert_error(&text, "\"10.0.0.0/33\"", "is not an address or CIDR block");
    assert_error(&text, "\"mysql://x\"", "is not a database URL");
    assert_error(&text, "\"soon\"", "\"soon\" is not a duration");
    // Past three minutes a ringing INVITE is cancelled anyway (RFC 3261 Timer C).
    let text = MINIMAL.replace("agents", "ring_timeout = \"5m\"\nagents");
    assert_error(&text, "\"5m\"", "is not a duration from 1s to 3m");
}

#[test]
fn a_relative_sqlite_path_is_under_the_state_directory_never_the_working_directory() {
    let with = |database: &str| {
        let text = format!("{MINIMAL}\n[database]\n{database}\n");
        Config::from_toml(&text, "t.toml")
            .unwrap_or_else(|e| panic!("{e}"))
            .database
    };
    let db = with("state_directory = \"/srv/sipdesk\"\nurl = \"sqlite://calls.db?mode=rwc\"");
    assert_eq!(db.url, "sqlite:///srv/sipdesk/calls.db?mode=rwc");
    assert_eq!(db.sqlite_file(), Some("/srv/sipdesk/calls.db".into()));
    let db = with("url = \"sqlite:///data/sipdesk.db\"");
    assert_eq!(db.url, "sqlite:///data/sipdesk.db");
    let db = with("url = \"postgres://sipdesk@db/sipdesk\"");
    assert_eq!(db.url, "postgres://sipdesk@db/sipdesk");
    assert_eq!(db.sqlite_file(), None);
    let text = format!(
        "{MINIMAL}\n[database]\nstate_directory = \"state\"\nstop_write_timeout = \"0s\"\n"
    );
    assert_error(&text, "\"state\"", "is not an absolute path");
    assert_error(&text, "\"0s\"", "is not a duration from 1s to 10m");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = format!(
        "{}\n[[groups]]\nname = \"b\"\nqueues = [\"100\"]\nbogus = true\nagents = []\n\n[[groups]]\nname = \"c\"\nqueues = [\"300\"]\nagents = [{{ extension = \"x y\" }}]\noverflow = [{{ group = \"zzz\" }}]\n",
        MINIMAL.replace("Europe/Madrid", "Nowhere/City")
    );
    // Bad zone; in b a queue taken, an unknown key and no agents; in c a bad extension and an
    // unknown overflow target.
    assert_error(&text, "\"Nowhere/City\"", "unknown time zone");
    assert_error(&text, "name = \"b\"|\"100\"", "is already served by group");
    assert_error(&text, "bogus", "unknown field `bogus`");
    assert_error(&text, "bogus|[]", "group \"b\" has no agents");
    assert_error(&text, "\"x y\"", "cannot carry unescaped");
    assert_error(&text, "\"zzz\"", "no group is named \"zzz\"");
    let errors = errors(&text);
    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn unknown_keys_do_not_hide_the_other_errors_of_their_table() {
    // Two misspelt keys and two wrong values in [sip]; in the group, a misspelt key at each
    // level, a wrong extension beside one, and a wrong ring timeout.
    let text = MINIMAL
        .replace(
            "pbx = \"10.0.0.10:5060\"",
            "pbx = \"10.0.0.10:5060\"\nmax_transaction = 10\ntrusted = [\"10.0.0.0/33\"]\nuntrusted_rte = 5\nshutdown_grace = \"soon\"",
        )
        .replace(
            "agents = [{ extension = \"2001\" }]",
            "agents = [{ extension = \"x y\", nmae = \"Ana\" }]\nring_timout = \"5s\"\nwrap_up = \"never\"",
        );
    assert_error(&text, "max_transaction", "unknown field `max_transaction`");
    assert_error(&text, "untrusted_rte", "unknown field `untrusted_rte`");
    assert_error(&text, "\"10.0.0.0/33\"", "is not an address or CIDR block");
    assert_error(&text, "\"soon\"", "is not a duration");
    assert_error(&text, "nmae", "unknown field `nmae`");
    assert_error(&text, "\"x y\"", "cannot carry unescaped");
    assert_error(&text, "ring_timout", "unknown field `ring_timout`");
    assert_error(&text, "\"never\"", "is not a duration");
    let errors = errors(&text);
    assert_eq!(errors.len(), 8, "{errors:#?}");
}

#[test]
fn defaults_fill_what_a_group_leaves_out() {
    let config = Config::from_toml(MINIMAL, "test.toml").unwrap();
    let group = config.groups.get(0);
    assert_eq!(group.ring_timeout, Duration::from_secs(15));
    assert_eq!(group.wrap_up, Duration::from_secs(30));
    assert_eq!(group.max_wait, Duration::from_secs(300));
    assert_eq!(group.final_action, FinalAction::Reject);
    assert!(group.schedule.hours.is_none());
    assert_eq!(&*group.schedule.timezone_name, "Europe/Madrid");
    assert_eq!(config.sip.listen.len(), 2);
    assert_eq!(config.sip.pbx.to_string(), "10.0.0.10:5060");
    assert_eq!(config.database.url, "sqlite:///var/lib/sipdesk/sipdesk.db");
    assert_eq!(
        config.database.sqlite_file(),
        Some("/var/lib/sipdesk/sipdesk.db".into())
    );
}

const ZENDESK: &str = r#"
[[helpdesks]]
name = "zd"
kind = "zendesk"
subdomain = "acme"
email = "bot@acme.example"
token_env = "ZD_TOKEN"
groups = ["support"]
"#;

#[test]
fn the_example_helpdesks_are_read_with_their_rules() {
    use crate::helpdesk::zendesk::rules::{Assignee, Priority, Status, TicketType};
    use crate::tickets::{Field, Log};
    let zendesk = |h: &HelpdeskSettings| match &h.vendor {
        Vendor::Zendesk(own) => own.clone(),
        other => panic!("not Zendesk: {other:?}"),
    };
    let text = include_str!("../../config.example.toml");
    let config = Config::from_toml(text, "config.example.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.helpdesks.len(), 6);
    let madrid = &config.helpdesks[0];
    assert_eq!(madrid.name, "zendesk-madrid");
    assert_eq!(madrid.kind(), Kind::Zendesk);
    let madrid_zd = zendesk(madrid);
    assert_eq!(madrid_zd.base_url, "https://iberiahogar.zendesk.com");
    assert_eq!(
        madrid_zd.auth,
        ZendeskAuth::Token {
            email: "integraciones@iberiahogar.es".to_owned(),
        }
    );
    assert_eq!(
        madrid.secret,
        SecretSource::File("zendesk-madrid.token".into())
    );
    let rules = &madrid.rules;
    let zd = &madrid_zd.rules;
    assert_eq!(rules.groups, ["soporte-madrid", "ventas-madrid"]);
    assert_eq!(
        (rules.log.missed, zd.status.missed),
        (Log::Previous, Status::Open)
    );
    assert_eq!(rules.log.outbound_unanswered, Log::Nothing);
    assert_eq!(zd.missed_assignee, Some(Assignee::Group(360001234567)));
    assert_eq!(
        zd.default_assignee.as_deref(),
        Some("coordinacion@iberiahogar.es")
    );
    assert_eq!(rules.fields.last(), Some(&Field::Explanation));
    assert_eq!(zd.tag_rules[0].priority, Some(Priority::High));
    assert_eq!(zd.tag_rules[1].ticket_type, Some(TicketType::Incident));
    assert_eq!(madrid.requests_per_minute, 400);
    let brasil = &config.helpdesks[1];
    let brasil_zd = zendesk(brasil);
    assert_eq!(brasil_zd.auth, ZendeskAuth::OAuth);
    assert_eq!(
        brasil.secret,
        SecretSource::Env("SIPDESK_ZENDESK_BR_TOKEN".to_owned())
    );
    assert_eq!(brasil_zd.base_url, "https://iberiahogar-br.zendesk.com");
    // The defaults.
    let (r, zd) = (&brasil.rules, &brasil_zd.rules);
    assert_eq!(
        (r.log.inbound_answered, zd.status.inbound_answered),
        (Log::New, Status::Solved)
    );
    assert_eq!((r.log.missed, zd.status.missed), (Log::New, Status::Open));
    assert_eq!(
        (r.log.voicemail, zd.status.voicemail),
        (Log::New, Status::Open)
    );
    assert_eq!(
        (r.log.outbound_answered, zd.status.outbound_answered),
        (Log::Previous, Status::Solved)
    );
    assert_eq!(r.log.outbound_unanswered, Log::Nothing);
    assert!(
        r.create_out_of_hours && r.create_unknown_contacts && zd.update_title && !zd.voice_comments
    );
    assert_eq!(zd.missed_assignee, None);
    let helpscout = &config.helpdesks[2];
    match &helpscout.vendor {
        Vendor::HelpScout(own) => {
            assert_eq!(own.base_url, "https://api.helpscout.net");
            assert_eq!(
                (own.client_id.as_str(), own.mailbox_id),
                ("a1b2c3d4e5f6", 123456)
            );
            assert_eq!(own.status.missed, HelpScoutStatus::Active);
            assert_eq!(own.status.inbound_answered, HelpScoutStatus::Closed);
            assert_eq!(
                own.reopen_closed_within,
                Some(Duration::from_secs(48 * 3600))
            );
            assert!(own.reassign_to_agent);
            assert_eq!(own.duplicates, Duplicates::MostRecent);
        }
        other => panic!("not Help Scout: {other:?}"),
    }
    assert_eq!(helpscout.rules.log.missed, Log::Previous);
    let intercom = &config.helpdesks[3];
    match &intercom.vendor {
        Vendor::Intercom(own) => {
            assert_eq!(own.base_url, "https://api.intercom.io");
            assert_eq!(own.admin_email, "suporte@iberiahogar.com.br");
            assert_eq!(
                own.anonymous_email.as_deref(),
                Some("anonimo@iberiahogar.com.br")
            );
        }
        other => panic!("not Intercom: {other:?}"),
    }
    assert_eq!(intercom.requests_per_minute, 1000);
    let klaviyo = &config.helpdesks[4];
    match &klaviyo.vendor {
        Vendor::Klaviyo(own) => {
            assert_eq!(own.base_url, "https://a.klaviyo.com");
            assert_eq!(own.metric.missed, "Sales Call Missed");
            assert_eq!(own.metric.inbound_answered, "Phone Call Answered");
        }
        other => panic!("not Klaviyo: {other:?}"),
    }
    assert_eq!(klaviyo.requests_per_minute, 3500);
    assert_eq!(klaviyo.concurrency, 8);
    let hook = &config.helpdesks[5];
    assert_eq!(hook.kind(), Kind::Webhook);
    match &hook.vendor {
        Vendor::Webhook(own) => assert_eq!(own.url, "https://crm.iberiahogar.es/hooks/sipdesk"),
        other => panic!("not a webhook: {other:?}"),
    }
    assert_eq!(hook.rules.log.outbound_answered, Log::Nothing);
    assert_eq!(r.fields.len(), 9);
    assert_eq!(brasil.concurrency, 4);
    assert_eq!(brasil.give_up_after, Duration::from_secs(24 * 3600));
    assert_eq!(brasil.request_timeout, Duration::from_secs(30));
}

const WEBHOOK: &str = r#"
[[helpdesks]]
name = "hook"
kind = "webhook"
url = "https://crm.example.com/hooks/sipdesk"
token_file = "hook.secret"
groups = ["support"]
"#;

#[test]
fn each_kind_has_its_own_keys_and_statuses() {
    let config = Config::from_toml(&format!("{MINIMAL}{WEBHOOK}"), "t.toml").unwrap();
    assert_eq!(config.helpdesks[0].kind(), Kind::Webhook);
    // A Zendesk key on a webhook is an error that lists the webhook's own keys.
    let zendesk_keys = WEBHOOK.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\nsubdomain = \"acme\"\nvoice_comments = true\ncreate_unknown_contacts = false",
    );
    let text = format!("{MINIMAL}{zendesk_keys}");
    for key in [
        "subdomain = |\"acme\"",
        "voice_comments = |true",
        "create_unknown_contacts = |false",
    ] {
        let name = key.split(' ').next().unwrap();
        assert_error(
            &text,
            key,
            &format!("{name} is not a key of a webhook helpdesk; its own keys are: url"),
        );
    }
    // A webhook has no statuses; it needs a URL.
    let status = WEBHOOK.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\nmissed = { log = \"new\", status = \"open\" }",
    );
    assert_error(
        &format!("{MINIMAL}{status}"),
        "status = |\"open\"",
        "a webhook has no statuses",
    );
    let no_url = WEBHOOK.replace("url = \"https://crm.example.com/hooks/sipdesk\"\n", "");
    assert_error(
        &format!("{MINIMAL}{no_url}"),
        "[[helpdesks]]|\"hook\"",
        "a webhook needs `url`",
    );
    let ftp = WEBHOOK.replace(
        "https://crm.example.com/hooks/sipdesk",
        "ftp://crm.example.com/",
    );
    assert_error(
        &format!("{MINIMAL}{ftp}"),
        "url = |\"ftp:",
        "is not an http(s) URL",
    );
    // The webhook's own key on Zendesk is refused the same way.
    let url_on_zendesk = ZENDESK.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\nurl = \"https://x.example\"",
    );
    assert_error(
        &format!("{MINIMAL}{url_on_zendesk}"),
        "url = |\"https://x.example\"",
        "url is not a key of a zendesk helpdesk; its own keys are: subdomain, base_url, auth",
    );
    // Klaviyo: events stand alone and have no status; `metric` belongs to Klaviyo only.
    let klaviyo = r#"
[[helpdesks]]
name = "kl"
kind = "klaviyo"
token_env = "KL"
groups = ["support"]
missed = { log = "previous", status = "open", metric = "" }
"#;
    let text = format!("{MINIMAL}{klaviyo}");
    assert_error(&text, "log = |\"previous\"", "a Klaviyo event stands alone");
    assert_error(&text, "status = |\"open\"", "a Klaviyo event has no status");
    assert_error(
        &text,
        "metric = |\"\"",
        "a metric is a name of 1 to 127 characters",
    );
    let metric_on_zendesk = ZENDESK.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\nmissed = { log = \"new\", metric = \"X\" }",
    );
    assert_error(
        &format!("{MINIMAL}{metric_on_zendesk}"),
        "metric = |\"X\"",
        "metric is a Klaviyo key",
    );
    // Help Scout: its own statuses, listed when one is wrong; its required keys.
    let helpscout = r#"
[[helpdesks]]
name = "hs"
kind = "helpscout"
token_env = "HS"
groups = ["support"]
missed = { log = "new", status = "solved" }
duplicates = "first"
reopen_closed_within = "forever"
"#;
    let text = format!("{MINIMAL}{helpscout}");
    assert_error(
        &text,
        "status = |\"solved\"",
        "\"solved\" is not a status of this helpdesk; write \"active\", \"pending\" or \"closed\"",
    );
    assert_error(&text, "[[helpdesks]]|\"hs\"", "Help Scout needs client_id");
    assert_error(&text, "[[helpdesks]]|\"hs\"", "Help Scout needs mailbox_id");
    assert_error(
        &text,
        "duplicates = |\"first\"",
        "write \"most_recent\" or \"skip\"",
    );
    assert_error(
        &text,
        "reopen_closed_within = |\"forever\"",
        "is not a duration",
    );
    // Intercom: a region it hosts, an admin, no status.
    let intercom = r#"
[[helpdesks]]
name = "ic"
kind = "intercom"
token_env = "IC"
groups = ["support"]
region = "ca"
anonymous_email = "nobody"
missed = { log = "new", status = "open" }
"#;
    let text = format!("{MINIMAL}{intercom}");
    assert_error(&text, "region = |\"ca\"", "write \"us\", \"eu\" or \"au\"");
    assert_error(&text, "[[helpdesks]]|\"ic\"", "Intercom needs admin_email");
    assert_error(
        &text,
        "anonymous_email = |\"nobody\"",
        "is not an e-mail address",
    );
    assert_error(
        &text,
        "status = |\"open\"",
        "an Intercom conversation has no status",
    );
    let both = intercom.replace(
        "region = \"ca\"",
        "region = \"eu\"\nbase_url = \"http://127.0.0.1:9\"",
    );
    assert_error(
        &format!("{MINIMAL}{both}"),
        "region = |\"eu\"",
        "give region or base_url, not both",
    );
    let eu = intercom
        .replace(
            "region = \"ca\"",
            "region = \"eu\"\nadmin_email = \"a@example.com\"",
        )
        .replace("anonymous_email = \"nobody\"\n", "")
        .replace(", status = \"open\"", "");
    let config = Config::from_toml(&format!("{MINIMAL}{eu}"), "t.toml").unwrap();
    let Vendor::Intercom(own) = &config.helpdesks[0].vendor else {
        panic!("not Intercom")
    };
    assert_eq!(own.base_url, "https://api.eu.intercom.io");
    assert_eq!(own.anonymous_email, None);
    // Existing Zendesk entries keep working; a table without status takes the default status.
    let no_status = ZENDESK.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\ninbound_answered = { log = \"previous\" }",
    );
    let config = Config::from_toml(&format!("{MINIMAL}{no_status}"), "t.toml").unwrap();
    let Vendor::Zendesk(zendesk) = &config.helpdesks[0].vendor else {
        panic!("not Zendesk")
    };
    assert_eq!(
        config.helpdesks[0].rules.log.inbound_answered,
        crate::tickets::Log::Previous
    );
    assert_eq!(
        zendesk.rules.status.inbound_answered,
        crate::helpdesk::zendesk::rules::Status::Solved
    );
}

#[test]
fn a_helpdesk_secret_is_never_in_the_file_and_never_printed() {
    let text =
        format!("{MINIMAL}{ZENDESK}").replace("token_env = \"ZD_TOKEN\"", "token = \"s3cret\"");
    assert_error(&text, "token = ", "unknown field `token`");
    let both = format!("{MINIMAL}{ZENDESK}").replace(
        "token_env = \"ZD_TOKEN\"",
        "token_env = \"ZD_TOKEN\"\ntoken_file = \"x\"",
    );
    assert_error(&both, "[[helpdesks]]|\"zd\"", "exactly one of token_file");
    let neither = format!("{MINIMAL}{ZENDESK}").replace("token_env = \"ZD_TOKEN\"\n", "");
    assert_error(
        &neither,
        "[[helpdesks]]|\"zd\"",
        "exactly one of token_file",
    );
    assert_eq!(format!("{:?}", Secret::new("s3cret".to_owned())), "***");
}

#[test]
fn a_secret_is_read_when_used_and_says_where_it_was_looked_for() {
    let dir = std::env::temp_dir().join(format!("sipdesk-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "abc123\n").unwrap();
    assert_eq!(
        SecretSource::File(file.clone()).read().unwrap().expose(),
        "abc123"
    );
    std::fs::write(&file, "  \n").unwrap();
    assert!(
        SecretSource::File(file.clone())
            .read()
            .unwrap_err()
            .contains("is empty")
    );
    let missing = SecretSource::File(dir.join("missing")).read().unwrap_err();
    assert!(
        missing.contains("cannot read the token file") && missing.contains("missing"),
        "{missing}"
    );
    let unset = SecretSource::Env("SIPDESK_TEST_UNSET_VARIABLE_X".to_owned())
        .read()
        .unwrap_err();
    assert!(unset.contains("SIPDESK_TEST_UNSET_VARIABLE_X"), "{unset}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn helpdesk_values_are_checked_where_written() {
    let unknown = ZENDESK.replace("kind = \"zendesk\"", "kind = \"freshdesk\"");
    assert_error(
        &format!("{MINIMAL}{unknown}"),
        "\"freshdesk\"",
        "\"freshdesk\" is not a helpdesk sipdesk knows; write \"zendesk\", \"helpscout\", \"intercom\", \"klaviyo\" or \"webhook\"",
    );
    let broken = ZENDESK
        .replace("subdomain = \"acme\"", "subdomain = \"acme.zendesk.com\"")
        .replace("email = \"bot@acme.example\"", "email = \"bot\"")
        .replace(
            "groups = [\"support\"]",
            "groups = [\"support\", \"nowhere\"]\nmissed = { log = \"later\", status = \"done\" }\nmissed_assignee = \"team 5\"\n\
             default_assignee = \"lead\"\nfields = [\"agent\", \"mood\"]\ntag_rules = [{ tag = \"vip\", type = \"bug\", priority = \"p1\" }]\n\
             give_up_after = \"5s\"\nrequests_per_minute = 0\nconcurrency = 100",
        );
    let text = format!("{MINIMAL}{broken}");
    assert_error(&text, "\"acme.zendesk.com\"", "is not a subdomain");
    assert_error(&text, "\"bot\"", "is not an e-mail address");
    assert_error(&text, "\"nowhere\"", "no group is named \"nowhere\"");
    assert_error(&text, "\"later\"", "is not a place to log");
    assert_error(
        &text,
        "\"done\"",
        "\"done\" is not a status of this helpdesk; write \"new\", \"open\", \"pending\", \"hold\", \"solved\" or \"closed\"",
    );
    assert_error(
        &text,
        "\"team 5\"",
        "neither a user's e-mail nor \"group:<id>\"",
    );
    assert_error(&text, "\"lead\"", "is not an e-mail address");
    assert_error(&text, "\"mood\"", "is not a call field");
    assert_error(&text, "\"bug\"", "is not a ticket type");
    assert_error(&text, "\"p1\"", "is not a priority");
    assert_error(&text, "\"5s\"", "is not a duration from 1m");
    assert_error(
        &text,
        "requests_per_minute = |0",
        "requests_per_minute must be from 1 to 100000",
    );
    assert_error(
        &text,
        "concurrency = |100",
        "concurrency must be from 1 to 64",
    );
    let twice = format!("{MINIMAL}{ZENDESK}{ZENDESK}");
    assert_error(
        &twice,
        "[[helpdesks]]|[[helpdesks]]|\"zd\"",
        "a helpdesk named \"zd\" is already defined above",
    );
    let no_groups = format!(
        "{MINIMAL}{}",
        ZENDESK.replace("groups = [\"support\"]", "groups = []")
    );
    assert_error(&no_groups, "groups = |[]", "no groups");
    let no_email = format!(
        "{MINIMAL}{}",
        ZENDESK.replace("email = \"bot@acme.example\"\n", "")
    );
    assert_error(&no_email, "[[helpdesks]]|\"zd\"", "needs `email`");
    let no_place = format!("{MINIMAL}{}", ZENDESK.replace("subdomain = \"acme\"\n", ""));
    assert_error(
        &no_place,
        "[[helpdesks]]|\"zd\"",
        "give the helpdesk's subdomain (or base_url)",
    );
    let base_url = format!(
        "{MINIMAL}{}",
        ZENDESK.replace(
            "subdomain = \"acme\"",
            "base_url = \"http://127.0.0.1:9000/\""
        )
    );
    let config = Config::from_toml(&base_url, "test.toml").unwrap();
    match &config.helpdesks[0].vendor {
        Vendor::Zendesk(own) => assert_eq!(own.base_url, "http://127.0.0.1:9000"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reload_keeps_what_needs_a_restart_and_says_what_applies() {
    let running = Config::from_toml(MINIMAL, "t.toml").unwrap();
    let text = MINIMAL
        .replace(
            "pbx = \"10.0.0.10:5060\"",
            "pbx = \"10.0.0.11:5060\"\nlisten = [\"udp:0.0.0.0:5070\"]\ntrusted = [\"10.1.0.0/16\"]\nuntrusted = \"ignore\"",
        )
        .replace("agents = [", "ring_timeout = \"20s\"\nagents = [");
    let mut reloaded = Config::from_toml(&text, "t.toml").unwrap();
    let changes = reloaded.reloaded_over(&running);
    assert_eq!(
        changes.applied,
        vec!["sip.trusted", "sip.untrusted", "groups and holidays"]
    );
    assert_eq!(changes.need_restart, vec!["sip.listen", "sip.pbx"]);
    // What needs a restart keeps its running value.
    assert_eq!(reloaded.sip.listen, running.sip.listen);
    assert_eq!(reloaded.sip.pbx, running.sip.pbx);
    assert!(!reloaded.sip.reject_untrusted);
    let mut same = Config::from_toml(MINIMAL, "t.toml").unwrap();
    assert_eq!(same.reloaded_over(&running), Default::default());
}

#[test]
fn greetings_are_loaded_relative_to_the_file_and_an_unplayable_one_is_a_located_error() {
    let dir = std::env::temp_dir().join(format!("sipdesk-greetings-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("greetings")).unwrap();
    let mut writer =
        crate::media::wav::WavWriter::create(std::io::Cursor::new(Vec::new())).unwrap();
    writer.append(&vec![1000i16; 16000]).unwrap();
    let wav = writer.finalize().unwrap().into_inner();
    std::fs::write(dir.join("greetings/soporte.wav"), &wav).unwrap();
    std::fs::write(dir.join("greetings/broken.wav"), b"RIFF....WAVEnope").unwrap();
    let origin = dir.join("sipdesk.toml");
    let text = format!(
        "{MINIMAL}greeting = \"greetings/soporte.wav\"\ngreetings = {{ out_of_hours = \"{}\" }}\n",
        dir.join("greetings/soporte.wav").display()
    );
    let config = Config::from_toml(&text, origin.to_str().unwrap()).unwrap();
    let group = config.groups.iter().next().unwrap();
    let default = group
        .greetings
        .default
        .as_ref()
        .expect("the group's greeting");
    assert_eq!(default.duration(), Duration::from_secs(2));
    assert!(group.greetings.out_of_hours.is_some());
    assert!(
        std::ptr::eq(
            group
                .greetings
                .for_reason(Some(crate::routing::Reason::NoAgents))
                .unwrap()
                .as_ref(),
            default.as_ref()
        ),
        "no own no_agents greeting: the group's"
    );

    // A missing file and a broken one, each at its key, both in one pass.
    let text = format!(
        "{MINIMAL}greeting = \"greetings/missing.wav\"\ngreetings = {{ holiday = \"greetings/broken.wav\" }}\n"
    );
    let found = match Config::from_toml(&text, origin.to_str().unwrap()) {
        Err(ConfigError::Invalid(diagnostics)) => diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        other => panic!("expected errors, got {other:?}"),
    };
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].contains("sipdesk.toml:12:") && found[0].contains("cannot read greeting"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("sipdesk.toml:13:") && found[1].contains("broken.wav"),
        "{found:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn media_and_cluster_settings_are_checked_and_their_sockets_wait_for_a_restart() {
    let config = Config::from_toml(MINIMAL, "t.toml").unwrap();
    assert_eq!(config.media.rtp_ports, 16000..=16999);
    assert_eq!(config.media.max_sessions, 100);
    assert_eq!(config.media.voicemail_silence, Duration::from_secs(5));
    assert_eq!(config.media.voicemail_max, Duration::from_secs(180));
    assert_eq!(config.media.link_lifetime, config.media.retention);
    assert!(!config.cluster.instance.is_empty(), "the host name");
    assert_eq!(config.cluster.dead_after, Duration::from_secs(15));

    let broken = format!(
        "{MINIMAL}\n[media]\naddress = \"0.0.0.0\"\nrtp_ports = \"16000-16003\"\nmax_sessions = 5\npublic_url = \"ftp://x\"\n\n[cluster]\ninstance = \"a b\"\n"
    );
    // Every one located at its value.
    assert_eq!(
        errors(&broken),
        vec![
            "test.toml:14:11: \"0.0.0.0\" is not an IP address the callers can send to; write e.g. \"192.0.2.10\"",
            "test.toml:16:16: max_sessions must be between 1 and 2, the even ports of rtp_ports (each session takes one)",
            "test.toml:17:14: \"ftp://x\" is not an http(s) URL without a query; write e.g. \"https://sipdesk.example.com\"",
            "test.toml:20:12: \"a b\" is not an instance name: 1 to 64 letters, digits, '-', '_' or '.'",
        ]
    );

    let running = Config::from_toml(MINIMAL, "t.toml").unwrap();
    let text = format!(
        "{MINIMAL}\n[media]\nrtp_ports = \"20000-20099\"\nvoicemail_max = \"1m\"\n\n[cluster]\ninstance = \"other\"\n"
    );
    let mut reloaded = Config::from_toml(&text, "t.toml").unwrap();
    let changes = reloaded.reloaded_over(&running);
    assert_eq!(
        changes.need_restart,
        vec!["media.address/rtp_ports/max_sessions", "cluster.instance"]
    );
    assert!(changes.applied.contains(&"media"), "{:?}", changes.applied);
    assert_eq!(reloaded.media.rtp_ports, running.media.rtp_ports);
    assert_eq!(reloaded.media.voicemail_max, Duration::from_secs(60));
    assert_eq!(reloaded.cluster.instance, running.cluster.instance);
}

const HELPSCOUT: &str = r#"
[[helpdesks]]
name = "hs"
kind = "helpscout"
client_id = "app"
mailbox_id = 7
token_env = "HS_SECRET"
groups = ["support"]
"#;

#[test]
fn help_scout_logs_texts_only_with_log_sms() {
    use crate::call::CallType;
    use crate::tickets::{Log, Skip, not_logged};
    // Off by default: both text types log nothing, and their deliveries say log_sms is why.
    let config = Config::from_toml(&format!("{MINIMAL}{HELPSCOUT}"), "t.toml").unwrap();
    let rules = &config.helpdesks[0].rules;
    assert_eq!(
        (rules.log.sms_inbound, rules.log.sms_outbound),
        (Log::Nothing, Log::Nothing)
    );
    let why = not_logged(rules, CallType::SmsInbound);
    assert!(matches!(why, Skip::TextsOff(_)), "{why:?}");
    assert!(why.to_string().contains("log_sms = true"), "{why}");
    assert!(matches!(
        not_logged(rules, CallType::OutboundUnanswered),
        Skip::NotLogged(_)
    ));
    // On: the texts' own rules (previous by default; "none" keeps one direction out).
    let on = HELPSCOUT.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\nlog_sms = true\nsms_outbound = { log = \"none\" }",
    );
    let config = Config::from_toml(&format!("{MINIMAL}{on}"), "t.toml").unwrap();
    let rules = &config.helpdesks[0].rules;
    assert_eq!(
        (rules.log.sms_inbound, rules.log.sms_outbound),
        (Log::Previous, Log::Nothing)
    );
    assert_eq!(rules.texts_off, None);
    assert!(matches!(
        not_logged(rules, CallType::SmsOutbound),
        Skip::NotLogged(_)
    ));
    // A text rule that would log, without log_sms, is an error where it is written.
    let contradicts = HELPSCOUT.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\nsms_inbound = { log = \"new\" }",
    );
    assert_error(
        &format!("{MINIMAL}{contradicts}"),
        "sms_inbound = { log = |\"new\"",
        "only with log_sms = true",
    );
    // log_sms belongs to Help Scout.
    let on_zendesk = ZENDESK.replace(
        "groups = [\"support\"]",
        "groups = [\"support\"]\nlog_sms = true",
    );
    assert_error(
        &format!("{MINIMAL}{on_zendesk}"),
        "log_sms = |true",
        "log_sms is not a key of a zendesk helpdesk",
    );
}

#[test]
fn text_numbers_and_rules_are_checked_where_written() {
    let text = format!(
        "{MINIMAL}\n[[sms_numbers]]\nnumber = \"911234567\"\nname = \"Soporte\"\ngroups = [\"support\"]\n\n[[sms_numbers]]\nnumber = \"+34910000000\"\nname = \" \"\ngroups = [\"ventas\"]\n\n[sms]\nmax_per_sender = \"lots\"\nreply_poll = \"2s\"\nignore_keywords = [\"STOP\", \"two words\"]\n"
    );
    assert_error(&text, "\"911234567\"", "is not a phone number in E.164");
    assert_error(&text, "\" \"", "name is empty");
    assert_error(&text, "\"ventas\"", "no group is named \"ventas\"");
    assert_error(&text, "\"lots\"", "is not a rate");
    assert_error(&text, "\"2s\"", "is not a duration from 10s");
    assert_error(&text, "\"two words\"", "a keyword is one word");
}

#[test]
fn text_settings_have_the_seeds_defaults() {
    let text = format!(
        "{MINIMAL}\n[[sms_numbers]]\nnumber = \"+34 910 00 00 00\"\nname = \"Soporte\"\ngroups = [\"support\"]\n"
    );
    let config = Config::from_toml(&text, "test.toml").unwrap();
    assert_eq!(config.sms.numbers[0].number, "+34910000000");
    assert_eq!(config.sms.max_per_sender, (10, Duration::from_secs(60)));
    assert_eq!(config.sms.reply_poll, Duration::from_secs(30));
    assert!(config.sms.ignored("stop").is_some());
    assert!(config.sms.ignored("Baja.").is_some());
    assert!(config.sms.ignored("HELP").is_none());
    assert!(config.sms.ignored("stop please").is_none());
}
