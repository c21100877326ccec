//! Several sipdesk instances on one database (issue 12): migrations run once when instances
//! start together, a restarting instance closes only its own calls, the calls of an instance
//! that went silent are closed by one survivor exactly once, a second instance on one SQLite
//! file is refused, and two instances behind one PBX share one group of agents. PostgreSQL tests need
//! `SIPDESK_TEST_POSTGRES_URL` (CI sets it) and say so loudly when it is missing.

mod common;

use std::process::Command;
use std::time::Duration;

use std::collections::{HashMap, HashSet};

use common::TestDb;
use common::daemon::Daemon;
use common::klaviyo::{self, FakeKlaviyo};
use common::receiver::{Receiver, SECRET};
use jiff::Timestamp;
use sipdesk::call::{CallStart, Change, Direction, MissedReason};
use sipdesk::store::{CallFilter, NewDelivery, Store};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn start(id: &str, instance: &str) -> Change {
    Change::CallStarted(CallStart {
        id: id.into(),
        sip_call_id: format!("sip-{id}"),
        direction: Direction::Inbound,
        queue: Some("100".into()),
        caller: "+34600123456".into(),
        callee: "100".into(),
        started_at: at("2026-11-23T09:00:00Z"),
        instance: instance.into(),
    })
}

fn delivery_of(record: &sipdesk::call::CallRecord) -> Vec<NewDelivery> {
    vec![NewDelivery {
        call_id: record.id.clone(),
        integration: "zd".into(),
        contact_key: record.caller.clone(),
        call_started_at: record.started_at,
        skipped: None,
    }]
}

/// One signed webhook (the independent receiver) and one Klaviyo (its fake) that every instance
/// reports to: each call must reach each once, whichever instance delivers it.
struct Helpdesks {
    receiver: Receiver,
    klaviyo: FakeKlaviyo,
}

impl Helpdesks {
    fn start(dir: &std::path::Path) -> Helpdesks {
        Helpdesks {
            receiver: Receiver::start(dir, ""),
            klaviyo: FakeKlaviyo::start(klaviyo::Settings::default()),
        }
    }

    /// The `[[helpdesks]]` of `group`.
    fn config(&self, group: &str) -> String {
        format!(
            "\n[[helpdesks]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\ntoken_file = \"hook.secret\"\ngroups = [\"{group}\"]\n\n[[helpdesks]]\nname = \"kv\"\nkind = \"klaviyo\"\nbase_url = \"{}\"\ntoken_file = \"kv.key\"\ngroups = [\"{group}\"]\n",
            self.receiver.url(),
            self.klaviyo.url
        )
    }

    /// The secrets the configuration names, for each instance's directory.
    const FILES: [(&str, &str); 2] = [
        ("hook.secret", SECRET),
        ("kv.key", "pk_test_0123456789abcdef"),
    ];

    /// Every call in `ids` reached the webhook under one id (a repeat of that id after a crash
    /// is allowed) and Klaviyo as one event, and nothing else did.
    fn reached_once(&self, ids: &HashSet<String>) {
        let mut by_call: HashMap<String, HashSet<String>> = HashMap::new();
        for request in self.receiver.requests() {
            assert_eq!(request["verified"], true, "{request:#}");
            if request["status"].as_u64().is_some_and(|s| s < 300) {
                let payload: serde_json::Value =
                    serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
                by_call
                    .entry(payload["data"]["id"].as_str().unwrap().to_owned())
                    .or_default()
                    .insert(request["id"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(
            &by_call.keys().cloned().collect::<HashSet<_>>(),
            ids,
            "webhook"
        );
        assert!(
            by_call.values().all(|hook_ids| hook_ids.len() == 1),
            "one webhook id per call: {by_call:#?}"
        );
        let events = self.klaviyo.events();
        let unique: HashSet<String> = events.iter().filter_map(|e| e.unique_id.clone()).collect();
        assert_eq!(events.len(), ids.len(), "one Klaviyo event per call");
        assert_eq!(&unique, ids, "Klaviyo");
    }
}

async fn postgres(test: &str) -> Option<TestDb> {
    let db = TestDb::postgres().await;
    if db.is_none() {
        eprintln!(
            "SKIPPED ON POSTGRESQL: {test} needs SIPDESK_TEST_POSTGRES_URL (CI sets it); nothing was checked"
        );
    }
    db
}

#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let Some(db) = postgres("instances_starting_together_migrate_once").await else {
        return;
    };
    let opens = (0..3).map(|_| Store::open(&db.url));
    let stores = futures_util::future::join_all(opens).await;
    for store in &stores {
        assert!(store.is_ok(), "{:?}", store.as_ref().err());
    }
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    use sqlx::Row;
    let row = sqlx::query("SELECT COUNT(*) AS n, MAX(version) AS last FROM sipdesk_schema")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (n, last): (i64, i64) = (row.get("n"), row.get("last"));
    assert_eq!(n, last, "every migration, 1 to the last, ran");
    assert!(last >= 9, "{last}");
    drop(stores);
    db.drop_db().await;
}

/// Makes `instance`'s heartbeat a minute old, by the database's clock.
async fn silence(url: &str, instance: &str) {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::query("UPDATE instances SET heartbeat_at = heartbeat_at - 60000 WHERE id = $1")
        .bind(instance.to_owned())
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restart_closes_its_own_calls_and_one_survivor_closes_a_dead_instances_once() {
    let Some(db) = postgres("a_restart_closes_its_own_calls_and_one_survivor…").await else {
        return;
    };
    let a = Store::open(&db.url).await.unwrap();
    let c = Store::open(&db.url).await.unwrap();
    let dead_after = Duration::from_secs(15);
    for instance in ["a", "b", "c"] {
        assert!(
            a.join_cluster(instance, &format!("{instance}-1"), dead_after)
                .await
                .unwrap()
        );
    }
    // A second process with a name in use is refused while the first lives.
    assert!(!a.join_cluster("b", "b-2", dead_after).await.unwrap());
    a.apply(
        &[
            start("a1", "a"),
            start("b1", "b"),
            start("b2", "b"),
            start("c1", "c"),
        ],
        &[],
    )
    .await
    .unwrap();

    // "a" restarts: only its own call is closed.
    let closed = a
        .close_interrupted(at("2026-11-23T09:01:00Z"), "a", &delivery_of)
        .await
        .unwrap();
    assert_eq!(closed, vec!["sip-a1".to_owned()]);

    // Nobody is dead yet.
    let (dead, _) = a
        .take_over_dead("a", Timestamp::now(), &delivery_of)
        .await
        .unwrap();
    assert!(dead.is_empty());

    // "b" goes silent; "a" and "c" stay alive and both look at once.
    silence(&db.url, "b").await;
    assert!(a.heartbeat("a", "a-1", dead_after).await.unwrap());
    assert!(c.heartbeat("c", "c-1", dead_after).await.unwrap());
    let later = Timestamp::now();
    let (by_a, by_c) = tokio::join!(
        a.take_over_dead("a", later, &delivery_of),
        c.take_over_dead("c", later, &delivery_of),
    );
    let (dead_a, closed_a) = by_a.unwrap();
    let (dead_c, closed_c) = by_c.unwrap();
    let mut dead: Vec<String> = dead_a.into_iter().chain(dead_c).collect();
    dead.sort();
    assert_eq!(dead, vec!["b".to_owned()], "one survivor takes b over");
    let mut closed: Vec<String> = closed_a.into_iter().chain(closed_c).collect();
    closed.sort();
    assert_eq!(closed, vec!["sip-b1".to_owned(), "sip-b2".to_owned()]);
    for id in ["b1", "b2"] {
        assert_eq!(
            a.deliveries_of(id).await.unwrap().len(),
            1,
            "{id} reported once"
        );
    }
    let calls = a
        .calls(CallFilter {
            active: false,
            limit: 10,
        })
        .await
        .unwrap();
    let b1 = calls.iter().find(|r| r.id == "b1").unwrap();
    assert_eq!(
        b1.reason.as_deref(),
        Some(MissedReason::Interrupted.as_str())
    );
    let c1 = calls.iter().find(|r| r.id == "c1").unwrap();
    assert!(c1.outcome.is_none(), "the live instance's call stays open");

    // A reloaded dead_after reaches the row with the next heartbeat (others judge by it).
    assert!(
        a.heartbeat("a", "a-1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let row = sqlx::query("SELECT dead_after_ms FROM instances WHERE id = 'a'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::get::<i64, _>(&row, "dead_after_ms"), 60_000);

    // "b" comes back: its heartbeat tells it it was taken over; the name is free again.
    assert!(!a.heartbeat("b", "b-1", dead_after).await.unwrap());
    assert!(a.join_cluster("b", "b-1", dead_after).await.unwrap());

    // Looking again finds nothing more.
    let (dead, closed) = a.take_over_dead("a", later, &delivery_of).await.unwrap();
    assert!(dead.is_empty() && closed.is_empty());
    drop((a, c));
    db.drop_db().await;
}

#[test]
fn a_second_instance_on_one_sqlite_file_is_refused() {
    let daemon = Daemon::start(
        "cluster-sqlite",
        "trusted = [\"127.0.0.1\"]",
        common::calls::SUPPORT,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .args(["run", "--config", daemon.config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("another sipdesk (process {})", daemon.pid())),
        "{stderr}"
    );
    assert!(
        stderr.contains("run several instances on PostgreSQL"),
        "{stderr}"
    );
}

/// A PostgreSQL server of the test's own (the Debian server binaries, run as `postgres`), on a
/// free port, to stop and start under a running sipdesk.
struct PgServer {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
}

impl PgServer {
    fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("the PostgreSQL server is installed (Debian package postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())
            .expect("initdb in /usr/lib/postgresql/*/bin");
        let port = common::daemon::free_port();
        let dir = std::env::temp_dir().join(format!("sipdesk-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = PgServer { dir, bin, port };
        server.run(
            "chown",
            &["-R", "postgres:postgres", server.dir.to_str().unwrap()],
        );
        let data = server.dir.join("data");
        server.as_postgres(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
            ],
        );
        server.up();
        server
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = Command::new(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let mut all = vec!["-u", "postgres", "--", tool.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run("runuser", &all);
    }

    fn up(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stopped at once, as a crash or a lost network would (no goodbye to the clients).
    fn down(&self) {
        let data = self.dir.join("data");
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let tool = self.bin.join("pg_ctl");
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                tool.to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn postgresql_stopped_for_20_s_while_calls_go_on_loses_and_doubles_no_record() {
    if std::env::var("SIPDESK_TEST_POSTGRES_URL").is_err() {
        eprintln!(
            "SKIPPED ON POSTGRESQL: postgresql_stopped_for_20_s… runs where PostgreSQL is installed and SIPDESK_TEST_POSTGRES_URL is set (CI sets it); nothing was checked"
        );
        return;
    }
    let server = PgServer::start();
    let agents: Vec<String> = (0..10)
        .map(|i| format!("{{ extension = \"{}\" }}", 7000 + i))
        .collect();
    let body = format!(
        "[defaults]\ntimezone = \"Europe/Madrid\"\nregion = \"ES\"\n\n[[groups]]\nname = \"burst\"\nqueues = [\"700\"]\nagents = [{}]\nwrap_up = \"0s\"\n",
        agents.join(", ")
    );
    let mut daemon = Daemon::start_in(
        common::daemon::test_dir("pg-outage"),
        "trusted = [\"127.0.0.1\"]",
        &body,
        Some(&server.url()),
        &[],
    );
    let calls = 60;
    let uas = daemon.agents("agents-answer.xml", calls);
    let uac = daemon.callers("caller-answered.xml", "700", calls, 2, 10, false);
    std::thread::sleep(std::time::Duration::from_secs(3));
    server.down();
    std::thread::sleep(std::time::Duration::from_secs(20));
    server.up();
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    let log = daemon.log();
    assert!(
        log.contains("cannot write call records to the database"),
        "the outage is logged:\n{log}"
    );
    assert!(
        log.contains("this instance routes calls ALONE")
            && log.contains("agents are claimed in the database again"),
        "routing alone is logged loudly, and its end:\n{log}"
    );
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log());
    let records = daemon.calls();
    let distinct: std::collections::HashSet<&str> = records
        .iter()
        .map(|c| c["sip_call_id"].as_str().unwrap())
        .collect();
    let ended = records.iter().filter(|c| !c["outcome"].is_null()).count();
    assert_eq!(
        (records.len(), distinct.len(), ended),
        (calls as usize, calls as usize, calls as usize),
        "records, distinct SIP Call-IDs, ended\n{}",
        daemon.log()
    );
}

#[tokio::test]
async fn a_second_instance_with_a_name_in_use_is_refused() {
    let Some(db) = postgres("a_second_instance_with_a_name_in_use_is_refused").await else {
        return;
    };
    let daemon = Daemon::start_in(
        common::daemon::test_dir("cluster-name"),
        "trusted = [\"127.0.0.1\"]",
        &format!(
            "[cluster]\ninstance = \"sipdesk-a\"\n\n{}",
            common::calls::SUPPORT
        ),
        Some(&db.url),
        &[],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sipdesk"))
        .args(["run", "--config", daemon.config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("another running sipdesk has the instance name \"sipdesk-a\""),
        "{stderr}"
    );
    drop(daemon);
    db.drop_db().await;
}

#[tokio::test]
async fn a_killed_instance_restarts_at_once_and_a_stopped_one_frees_its_name() {
    let Some(db) = postgres("a_killed_instance_restarts_at_once…").await else {
        return;
    };
    let mut daemon = Daemon::start_in(
        common::daemon::test_dir("cluster-kill"),
        "trusted = [\"127.0.0.1\"]",
        &format!(
            "[cluster]\ninstance = \"sipdesk-k\"\n\n{}",
            common::calls::SUPPORT
        ),
        Some(&db.url),
        &[],
    );
    // kill -9: the row still names the dead process, which is this host's and gone.
    daemon.kill();
    daemon.restart();
    assert!(
        daemon.log().contains(
            "the previous run of this instance did not stop cleanly; its name is taken over"
        ),
        "{}",
        daemon.log()
    );
    // A clean stop frees the name: the next start joins at once.
    assert_eq!(daemon.stop(), Some(0));
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.cluster_holder("sipdesk-k").await.unwrap(), None);
    drop(store);
    drop(daemon);
    db.drop_db().await;
}

/// Two instances, one group of six agents behind one PBX, callers sending to both at once:
/// every agent is rung by one instance at a time, the offers take turns over the whole group
/// (not per instance), and every call is recorded once.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_one_group_fairly_and_never_ring_an_agent_twice() {
    let Some(db) =
        postgres("two_instances_share_one_group_fairly_and_never_ring_an_agent_twice").await
    else {
        return;
    };
    let agents: Vec<String> = (0..6)
        .map(|i| format!("{{ extension = \"{}\" }}", 7100 + i))
        .collect();
    let dir_a = common::daemon::test_dir("cluster-share-a");
    let helpdesks = Helpdesks::start(&dir_a);
    let body = |instance: &str| {
        format!(
            "[cluster]\ninstance = \"{instance}\"\n\n[defaults]\ntimezone = \"Europe/Madrid\"\nregion = \"ES\"\n\n[[groups]]\nname = \"shared\"\nqueues = [\"710\"]\nagents = [{}]\nring_timeout = \"5s\"\nwrap_up = \"0s\"\n{}",
            agents.join(", "),
            helpdesks.config("shared")
        )
    };
    let pbx_port = common::daemon::free_port();
    let a = Daemon::start_with_pbx(
        dir_a,
        "trusted = [\"127.0.0.1\"]",
        &body("share-a"),
        &db.url,
        pbx_port,
        &Helpdesks::FILES,
    );
    let b = Daemon::start_with_pbx(
        common::daemon::test_dir("cluster-share-b"),
        "trusted = [\"127.0.0.1\"]",
        &body("share-b"),
        &db.url,
        pbx_port,
        &Helpdesks::FILES,
    );
    let per_instance = 18;
    let uas = a.agents("agents-answer.xml", 2 * per_instance);
    // Two calls at a time on each instance, a second each: four at most for six agents, so
    // nobody is ever refused and every offer is answered.
    let callers = |daemon: &Daemon| {
        common::daemon::SippRun {
            scenario: "caller-answered.xml",
            ip: "127.0.0.1",
            port: common::daemon::free_port(),
            target: Some(format!("127.0.0.1:{}", daemon.port)),
            service: "710",
            calls: per_instance,
            rate: 4,
            tcp: false,
        }
        .spawn_with(
            &daemon.dir,
            &common::daemon::SippMore {
                limit: Some(2),
                duration_ms: Some(1000),
                ..Default::default()
            },
        )
    };
    let to_a = callers(&a);
    let to_b = callers(&b);
    a.succeeded(to_a);
    b.succeeded(to_b);
    a.succeeded(uas);
    let records = a.ended_calls(2 * per_instance as usize);
    let distinct: std::collections::HashSet<&str> = records
        .iter()
        .map(|c| c["sip_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (records.len(), distinct.len()),
        (36, 36),
        "every call recorded once"
    );
    // By agent: answered calls in order of answer; none starts before the previous ended.
    let mut by_agent: std::collections::BTreeMap<String, Vec<(i64, i64)>> = Default::default();
    for call in &records {
        assert_eq!(call["outcome"], "answered", "{call}");
        let millis = |key: &str| {
            call[key]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .unwrap()
                .as_millisecond()
        };
        by_agent
            .entry(call["agent"].as_str().unwrap().to_owned())
            .or_default()
            .push((millis("answered_at"), millis("ended_at")));
    }
    for (agent, calls) in &mut by_agent {
        calls.sort();
        for pair in calls.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{agent} had two calls at once: {calls:?}"
            );
        }
    }
    let counts: Vec<usize> = by_agent.values().map(Vec::len).collect();
    assert_eq!(by_agent.len(), 6, "{by_agent:?}");
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(
        max - min <= 1,
        "offers spread within one over the whole group: {by_agent:?}"
    );
    // Both instances deliver from the one outbox: every call reaches each helpdesk once.
    let deliveries = a.settled_deliveries(2 * 36, Duration::from_secs(60));
    assert!(
        deliveries.len() == 2 * 36 && deliveries.iter().all(|d| d["state"] == "done"),
        "{deliveries:#?}"
    );
    let ids: HashSet<String> = records
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    helpdesks.reached_once(&ids);
    drop(a);
    drop(b);
    db.drop_db().await;
}

/// kill -9 of an instance whose calls hold both agents: the survivor cannot ring them at once
/// (they are held), takes the dead instance's calls after `dead_after` (closed as interrupted,
/// once), frees its agents and rings them for the next call.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instances_agents_are_held_until_the_survivor_takes_its_calls_over() {
    let Some(db) =
        postgres("a_killed_instances_agents_are_held_until_the_survivor_takes_its_calls_over")
            .await
    else {
        return;
    };
    let dir_a = common::daemon::test_dir("cluster-killed-a");
    let helpdesks = Helpdesks::start(&dir_a);
    let body = |instance: &str| {
        format!(
            "[cluster]\ninstance = \"{instance}\"\ndead_after = \"10s\"\n\n[defaults]\ntimezone = \"Europe/Madrid\"\nregion = \"ES\"\n\n[[groups]]\nname = \"pair\"\nqueues = [\"720\"]\nagents = [{{ extension = \"7200\" }}, {{ extension = \"7201\" }}]\nring_timeout = \"5s\"\nwrap_up = \"0s\"\n{}",
            helpdesks.config("pair")
        )
    };
    let pbx_port = common::daemon::free_port();
    let mut a = Daemon::start_with_pbx(
        dir_a,
        "trusted = [\"127.0.0.1\"]",
        &body("killed-a"),
        &db.url,
        pbx_port,
        &Helpdesks::FILES,
    );
    let b = Daemon::start_with_pbx(
        common::daemon::test_dir("cluster-killed-b"),
        "trusted = [\"127.0.0.1\"]",
        &body("killed-b"),
        &db.url,
        pbx_port,
        &Helpdesks::FILES,
    );
    let uas = a.agents("agents-answer.xml", 3);
    // Two long calls on a: both agents answer and talk.
    let long = common::daemon::SippRun {
        scenario: "caller-answered.xml",
        ip: "127.0.0.1",
        port: common::daemon::free_port(),
        target: Some(format!("127.0.0.1:{}", a.port)),
        service: "720",
        calls: 2,
        rate: 10,
        tcp: false,
    }
    .spawn_with(
        &a.dir,
        &common::daemon::SippMore {
            limit: Some(2),
            duration_ms: Some(120_000),
            ..Default::default()
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Both answers in the database (a kill -9 loses what is not written yet).
    while a
        .calls()
        .iter()
        .filter(|c| !c["answered_at"].is_null())
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    a.kill();
    // At once: both agents are still held by a's calls, so b finds nobody free.
    let refused = b.callers("caller-refused.xml", "720", 1, 1, 1, false);
    b.succeeded(refused);
    // After dead_after, b takes a's calls over and frees their agents.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while !b
        .log()
        .contains("instances silent for longer than dead_after")
    {
        assert!(std::time::Instant::now() < deadline, "{}", b.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let answered = b.callers("caller-answered.xml", "720", 1, 1, 1, false);
    b.succeeded(answered);
    long.kill();
    uas.kill();
    let calls = b.ended_calls(4);
    let mut summary: Vec<String> = calls
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {}",
                c["agent"], c["outcome"], c["reason"], c["ended_by"]
            )
        })
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        vec![
            // b's call, once a's agents were free.
            "\"7200\" \"answered\" null \"caller\"".to_owned(),
            // a's two calls, answered and talking when it died: closed once each, by b.
            "\"7200\" \"answered\" null \"interrupted\"".to_owned(),
            "\"7201\" \"answered\" null \"interrupted\"".to_owned(),
            // b's first call: both agents still held by the dead instance.
            "null \"missed\" \"no_agents\" null".to_owned(),
        ],
        "{}",
        b.log()
    );
    // The dead instance's calls too reach each helpdesk once, delivered by the survivor.
    let deliveries = b.settled_deliveries(2 * 4, Duration::from_secs(60));
    assert!(
        deliveries.len() == 2 * 4 && deliveries.iter().all(|d| d["state"] == "done"),
        "{deliveries:#?}"
    );
    let ids: HashSet<String> = calls
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    helpdesks.reached_once(&ids);
    drop(b);
    db.drop_db().await;
}
