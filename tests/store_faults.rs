//! The store and its background writer under database faults: a disk that fills up or turns
//! read-only, values the database refuses, a stop while the database cannot be written. Each
//! test counts what a fresh connection finds afterwards: nothing may be lost or doubled.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use common::fs::SmallFs;
use jiff::Timestamp;
use sipdesk::call::{CallEvent, CallRecord, CallStart, Change, Direction, Outcome};
use sipdesk::store::spill::Spill;
use sipdesk::store::writer::{self, Health, Report, WriterSettings};
use sipdesk::store::{CallFilter, Store};
use tokio::sync::mpsc;

fn start(id: &str, caller: &str) -> Change {
    Change::CallStarted(CallStart {
        id: id.into(),
        sip_call_id: format!("sip-{id}"),
        direction: Direction::Inbound,
        queue: Some("100".into()),
        caller: caller.into(),
        callee: "100".into(),
        started_at: Timestamp::now(),
        instance: "test".into(),
    })
}

fn event(id: &str, seq: u64) -> Change {
    Change::Event(CallEvent {
        call_id: id.into(),
        seq,
        at: Timestamp::now(),
        kind: "offered".into(),
        detail: format!("ringing 2001 for {id}, padding the row {}", "x".repeat(200)),
    })
}

fn end(id: &str, caller: &str) -> Change {
    let now = Timestamp::now();
    Change::CallEnded(Box::new(CallRecord {
        id: id.into(),
        sip_call_id: format!("sip-{id}"),
        direction: Direction::Inbound,
        queue: Some("100".into()),
        group: Some("support".into()),
        groups: vec!["support".into()],
        caller: caller.into(),
        callee: "100".into(),
        agent: Some("2001".into()),
        agent_email: None,
        agents: vec![],
        started_at: now,
        answered_at: Some(now),
        ended_at: now,
        outcome: Outcome::Answered,
        reason: None,
        ended_by: None,
        out_of_hours: false,
        recording_url: None,
        voicemail: None,
        explanation: vec![],
        tags: vec![],
        sms: None,
    }))
}

/// A whole call: start, an event, its end.
fn call(id: &str) -> [Change; 3] {
    [
        start(id, "+34600123456"),
        event(id, 1),
        end(id, "+34600123456"),
    ]
}

async fn count_calls(url: &str) -> (usize, usize) {
    let store = Store::open(url).await.expect("a fresh connection opens");
    let calls = store
        .calls(CallFilter {
            active: false,
            limit: 1_000_000,
        })
        .await
        .unwrap();
    let ended = calls.iter().filter(|c| c.outcome.is_some()).count();
    (calls.len(), ended)
}

struct Running {
    changes: mpsc::UnboundedSender<Change>,
    thread: std::thread::JoinHandle<Report>,
    health: Arc<Health>,
}

fn spawn_writer(url: &str, spill: Spill, queue_limit: usize, stop: Duration) -> Running {
    spawn_writer_telling(url, spill, queue_limit, stop, None)
}

fn spawn_writer_telling(
    url: &str,
    spill: Spill,
    queue_limit: usize,
    stop: Duration,
    kept: Option<mpsc::UnboundedSender<String>>,
) -> Running {
    let (changes, rx) = mpsc::unbounded_channel();
    let health = Arc::new(Health::default());
    let thread = writer::spawn(
        WriterSettings {
            url: url.to_owned(),
            queue_limit,
            stop_write_timeout: stop,
            spill,
            kept,
        },
        rx,
        std::sync::Arc::new(|_: &sipdesk::call::CallRecord| Vec::new()),
        health.clone(),
    )
    .unwrap();
    Running {
        changes,
        thread,
        health,
    }
}

impl Running {
    fn send(&self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            self.changes.send(change).unwrap();
        }
    }

    fn stop(self) -> Report {
        drop(self.changes);
        self.thread.join().unwrap()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn after_a_failed_commit_the_connection_is_not_reused_and_later_writes_last() {
    let Some(fs) = SmallFs::mount("full-commit", "8M") else {
        return;
    };
    let url = format!("sqlite://{}", fs.path("sipdesk.db").display());
    let store = Store::open(&url).await.unwrap();
    store.apply(&call("before"), &[]).await.unwrap();
    fs.fill();
    let mut refused = 0;
    for i in 0..20 {
        let batch: Vec<Change> = (0..40)
            .flat_map(|j| call(&format!("full-{i}-{j}")))
            .collect();
        if store.apply(&batch, &[]).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "the full disk refused no write");
    fs.free();
    for i in 0..10 {
        store
            .apply(&call(&format!("after-{i}")), &[])
            .await
            .unwrap_or_else(|e| panic!("a write after the disk was freed: {e:#}"));
    }
    let seen_here = store
        .calls(CallFilter {
            active: false,
            limit: 1_000_000,
        })
        .await
        .unwrap()
        .len();
    drop(store);
    // What this connection reported written is what any other connection finds: before the fix
    // the writes after the fault went into a transaction SQLite kept open and were lost.
    let (seen_fresh, _) = count_calls(&url).await;
    assert_eq!(seen_fresh, seen_here);
    assert_eq!(seen_fresh, 1 + 10 + (20 - refused) * 40);
}

#[test]
fn a_full_disk_during_a_burst_loses_no_record_once_it_is_freed() {
    let Some(fs) = SmallFs::mount("full-burst", "12M") else {
        return;
    };
    let spill_dir = common::daemon::test_dir("full-burst-state");
    let url = format!("sqlite://{}", fs.path("sipdesk.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(Store::open(&url)).unwrap();
    let writer = spawn_writer(
        &url,
        Spill::in_directory(&spill_dir),
        100_000,
        Duration::from_secs(10),
    );
    let mut sent = 0;
    for i in 0..100 {
        writer.send(call(&format!("a{i}")));
        sent += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    fs.fill();
    for i in 0..300 {
        writer.send(call(&format!("b{i}")));
        sent += 1;
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    wait_until("the writer notices the full disk", || {
        !writer.health.writable()
    });
    std::thread::sleep(Duration::from_secs(2));
    fs.free();
    for i in 0..100 {
        writer.send(call(&format!("c{i}")));
        sent += 1;
    }
    wait_until("the writer recovers", || {
        writer.health.writable() && writer.health.waiting() == 0
    });
    let report = writer.stop();
    assert_eq!(report.lost, 0);
    assert_eq!(report.spilled, 0);
    let (calls, ended) = runtime.block_on(count_calls(&url));
    assert_eq!((calls, ended), (sent, sent));
}

#[test]
fn what_cannot_be_written_before_stop_goes_to_the_spill_file_and_back() {
    let Some(fs) = SmallFs::mount("spill-on-stop", "16M") else {
        return;
    };
    let state = common::daemon::test_dir("spill-on-stop-state");
    let spill = Spill::in_directory(&state);
    let url = format!("sqlite://{}", fs.path("sipdesk.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(Store::open(&url)).unwrap();
    let writer = spawn_writer(&url, spill.clone(), 100_000, Duration::from_secs(1));
    writer.send(call("early"));
    wait_until("the first call is written", || {
        runtime.block_on(count_calls(&url)).0 == 1
    });
    fs.read_only("sipdesk.db", true);
    for i in 0..50 {
        writer.send(call(&format!("late{i}")));
    }
    let started = std::time::Instant::now();
    let report = writer.stop();
    // The stop is bounded by stop_write_timeout (1 s), however long the fault lasts.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.spilled, 150);
    assert!(report.spill_left);
    assert_eq!(report.lost, 0);
    assert!(spill.exists());
    fs.read_only("sipdesk.db", false);
    // The next start writes the spill file back, once, and removes it.
    let store = runtime.block_on(Store::open(&url)).unwrap();
    let written = runtime
        .block_on(writer::write_back(&store, &spill, &|_| Vec::new()))
        .unwrap();
    assert_eq!(written, 150);
    assert!(!spill.exists());
    assert_eq!(runtime.block_on(count_calls(&url)), (51, 51));
}

#[test]
fn beyond_the_queue_limit_records_wait_in_the_spill_file_and_come_back_in_order() {
    let Some(fs) = SmallFs::mount("queue-limit", "16M") else {
        return;
    };
    let state = common::daemon::test_dir("queue-limit-state");
    let spill = Spill::in_directory(&state);
    let url = format!("sqlite://{}", fs.path("sipdesk.db").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(Store::open(&url)).unwrap();
    let writer = spawn_writer(&url, spill.clone(), 1_000, Duration::from_secs(10));
    fs.read_only("sipdesk.db", true);
    for i in 0..2_000 {
        writer.send(call(&format!("q{i}")));
    }
    wait_until("the oldest records are spilled", || {
        writer.health.spilled() >= 5_000
    });
    assert!(
        writer.health.waiting() <= 1_000,
        "{}",
        writer.health.waiting()
    );
    fs.read_only("sipdesk.db", false);
    wait_until("everything is written back", || {
        writer.health.writable() && writer.health.waiting() == 0 && !spill.exists()
    });
    let report = writer.stop();
    assert_eq!(report, Report::default());
    assert_eq!(runtime.block_on(count_calls(&url)), (2_000, 2_000));
}

#[tokio::test]
async fn a_nul_in_a_value_is_stored_escaped_on_every_database() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        store
            .apply(&[start("nul", "\0abc"), end("nul", "\0abc")], &[])
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", db.label));
        let record = store.call_record("nul").await.unwrap().unwrap();
        assert_eq!(record.caller, "%00abc", "{}", db.label);
        drop(store);
        db.drop_db().await;
    }
}

/// Makes the database refuse any call whose caller is `refused`, as a constraint would.
async fn refuse_a_caller(store_url: &str, label: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(store_url).await.unwrap();
    let statements: &[&str] = if label == "postgres" {
        &["ALTER TABLE calls ADD CONSTRAINT no_refused CHECK (caller <> 'refused')"]
    } else {
        &[
            "CREATE TRIGGER no_refused BEFORE INSERT ON calls WHEN NEW.caller = 'refused' BEGIN SELECT RAISE(ABORT, 'refused caller'); END",
        ]
    };
    for statement in statements {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
}

#[test]
fn a_record_the_database_refuses_is_kept_apart_and_never_blocks_the_others() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for db in runtime.block_on(TestDb::all()) {
        let store = runtime.block_on(Store::open(&db.url)).unwrap();
        runtime.block_on(refuse_a_caller(&db.url, db.label));
        let state = common::daemon::test_dir("refused-state");
        let writer = spawn_writer(
            &db.url,
            Spill::in_directory(&state),
            100_000,
            Duration::from_secs(5),
        );
        writer.send(call("before"));
        writer.send([
            start("bad", "refused"),
            event("bad", 1),
            end("bad", "refused"),
        ]);
        for i in 0..20 {
            writer.send(call(&format!("after{i}")));
        }
        let report = writer.stop();
        assert_eq!(report, Report::default(), "{}", db.label);
        let calls = runtime
            .block_on(store.calls(CallFilter {
                active: false,
                limit: 100,
            }))
            .unwrap();
        assert_eq!(calls.len(), 21, "{}: {calls:#?}", db.label);
        assert!(calls.iter().all(|c| c.id != "bad"));
        // The refused call's event is written; its start and end are kept as dead records.
        assert_eq!(runtime.block_on(store.events("bad")).unwrap().len(), 1);
        let dead = runtime.block_on(store.dead_records()).unwrap();
        let kinds: Vec<&str> = dead.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(kinds, vec!["call_started", "call_ended"], "{}", db.label);
        assert!(dead.iter().all(|d| d.call_id == "bad"));
        assert!(
            dead[0].reason.contains("no_refused") || dead[0].reason.contains("refused caller"),
            "{}: {}",
            db.label,
            dead[0].reason
        );
        assert!(dead[0].payload.contains("\"caller\":\"refused\""));
        drop(store);
        runtime.block_on(db.drop_db());
    }
}

/// Holds the database's write lock from another connection until dropped.
async fn hold_write_lock(url: &str, label: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let statements: &[&str] = if label == "postgres" {
        &["BEGIN", "LOCK TABLE calls IN ACCESS EXCLUSIVE MODE"]
    } else {
        &["BEGIN EXCLUSIVE"]
    };
    for statement in statements {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn
}

#[test]
fn a_write_that_hangs_on_a_lock_is_abandoned_and_a_stop_still_spills_in_time() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for db in runtime.block_on(TestDb::all()) {
        runtime.block_on(Store::open(&db.url)).unwrap();
        let state = common::daemon::test_dir("locked-state");
        let spill = Spill::in_directory(&state);
        let writer = spawn_writer(&db.url, spill.clone(), 100_000, Duration::from_secs(2));
        writer.send(call("before"));
        wait_until("the first call is written", || {
            runtime.block_on(count_calls(&db.url)).0 == 1
        });
        let lock = runtime.block_on(hold_write_lock(&db.url, db.label));
        for i in 0..20 {
            writer.send(call(&format!("locked{i}")));
        }
        wait_until("the writer says the database cannot be written", || {
            !writer.health.writable()
        });
        let stopping = std::time::Instant::now();
        let report = writer.stop();
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "{}: the stop took {:?}",
            db.label,
            stopping.elapsed()
        );
        assert!(report.spill_left, "{}: {report:?}", db.label);
        assert_eq!(report.lost, 0);
        drop(lock);
        let store = runtime.block_on(Store::open(&db.url)).unwrap();
        runtime
            .block_on(writer::write_back(&store, &spill, &|_| Vec::new()))
            .unwrap();
        assert_eq!(
            runtime.block_on(count_calls(&db.url)),
            (21, 21),
            "{}",
            db.label
        );
        drop(store);
        runtime.block_on(db.drop_db());
    }
}

#[tokio::test]
async fn every_kind_of_write_works_again_once_a_read_only_database_is_writable() {
    use sipdesk::store::ContactEntry;
    let Some(fs) = SmallFs::mount("read-only-writes", "16M") else {
        return;
    };
    let url = format!("sqlite://{}", fs.path("sipdesk.db").display());
    let store = Store::open(&url).await.unwrap();
    let contact = |n: u32| ContactEntry {
        integration: "zendesk".into(),
        phone: format!("+3460000{n:04}"),
        contact_id: Some(n.to_string()),
        name: None,
        inactive: false,
        checked_at: Timestamp::now(),
    };
    store.save_contact(&contact(0)).await.unwrap();
    fs.read_only("sipdesk.db", true);
    for n in 1..=8 {
        assert!(store.save_contact(&contact(n)).await.is_err());
    }
    assert!(store.apply(&call("ro"), &[]).await.is_err());
    fs.read_only("sipdesk.db", false);
    // Every pooled connection that saw the read-only file was closed, not kept read-only.
    for n in 10..30 {
        store
            .save_contact(&contact(n))
            .await
            .unwrap_or_else(|e| panic!("contact {n}: {e:#}"));
    }
    store.apply(&call("rw"), &[]).await.unwrap();
    store.check_writable().await.unwrap();
}

/// A customer's text: the writer must say when it is kept.
fn text(id: &str) -> Change {
    let Change::CallEnded(mut record) = end(id, "+34600111222") else {
        unreachable!()
    };
    record.callee = "+34910000000".into();
    record.sms = Some(sipdesk::call::Text {
        number: "+34910000000".into(),
        name: "Soporte".into(),
        body: "hola".into(),
        skipped: None,
        flood: false,
        via: None,
        ticket: None,
        failure: None,
    });
    Change::CallEnded(record)
}

#[test]
fn a_text_is_told_kept_once_written_and_spilled_at_once_while_the_database_is_locked() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for db in runtime.block_on(TestDb::all()) {
        runtime.block_on(Store::open(&db.url)).unwrap();
        let state = common::daemon::test_dir("text-kept-state");
        let spill = Spill::in_directory(&state);
        let (kept_tx, mut kept) = mpsc::unbounded_channel();
        let writer = spawn_writer_telling(
            &db.url,
            spill.clone(),
            100_000,
            Duration::from_secs(30),
            Some(kept_tx),
        );
        writer.send(call("a-call"));
        writer.send([text("sms-written")]);
        let said = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), kept.recv()).await })
            .expect("told in time");
        assert_eq!(said.as_deref(), Some("sms-written"), "{}", db.label);
        assert_eq!(runtime.block_on(count_calls(&db.url)).0, 2, "{}", db.label);
        // Calls are not texts: nothing else is told.
        assert!(kept.try_recv().is_err());

        let lock = runtime.block_on(hold_write_lock(&db.url, db.label));
        writer.send(call("locked-call"));
        writer.send([text("sms-locked")]);
        let said = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), kept.recv()).await })
            .expect("told while the database is locked");
        assert_eq!(said.as_deref(), Some("sms-locked"), "{}", db.label);
        assert!(
            spill.exists(),
            "{}: the text is in the spill file",
            db.label
        );
        drop(lock);
        let report = writer.stop();
        assert_eq!(report.lost, 0);
        assert!(!report.spill_left, "{}: {report:?}", db.label);
        assert_eq!(runtime.block_on(count_calls(&db.url)).0, 4, "{}", db.label);
        runtime.block_on(db.drop_db());
    }
}
