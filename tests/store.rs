//! The store against real databases: SQLite always, PostgreSQL when `SIPDESK_TEST_POSTGRES_URL`
//! is set (CI sets it).

mod common;

use common::TestDb;
use jiff::Timestamp;
use sipdesk::call::{
    CallEvent, CallRecord, CallStart, Change, Direction, EndedBy, MissedReason, Outcome,
};
use sipdesk::routing::Extension;
use sipdesk::store::{CallFilter, Store};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn start(id: &str, t: &str) -> CallStart {
    CallStart {
        id: id.into(),
        sip_call_id: format!("sip-{id}"),
        direction: Direction::Inbound,
        queue: Some("100".into()),
        caller: "+34600123456".into(),
        callee: "100".into(),
        started_at: at(t),
    }
}

fn record(id: &str) -> CallRecord {
    CallRecord {
        id: id.into(),
        sip_call_id: format!("sip-{id}"),
        direction: Direction::Inbound,
        queue: Some("100".into()),
        group: Some("support".into()),
        groups: vec!["support".into()],
        caller: "+34600123456".into(),
        callee: "100".into(),
        agent: Some("2001".into()),
        agent_email: Some("ana@example.com".into()),
        started_at: at("2026-11-23T09:00:00Z"),
        answered_at: Some(at("2026-11-23T09:00:05Z")),
        ended_at: at("2026-11-23T09:03:05Z"),
        outcome: Outcome::Answered,
        reason: None,
        ended_by: Some(EndedBy::Caller),
        out_of_hours: false,
        recording_url: None,
        explanation: vec!["support: serves queue 100".into()],
        tags: vec![],
    }
}

#[tokio::test]
async fn calls_events_cursors_and_agent_states_round_trip() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", db.label));
        store
            .apply(&[
                Change::CallStarted(start("a", "2026-11-23T09:00:00Z")),
                Change::Event(CallEvent {
                    call_id: "a".into(),
                    seq: 1,
                    at: at("2026-11-23T09:00:00Z"),
                    kind: "offered".into(),
                    detail: "ringing 2001".into(),
                }),
                Change::Event(CallEvent {
                    call_id: "a".into(),
                    seq: 2,
                    at: at("2026-11-23T09:00:05Z"),
                    kind: "answered".into(),
                    detail: "2001 answered".into(),
                }),
                Change::Cursor {
                    group: "support".into(),
                    extension: "2001".into(),
                },
                Change::CallStarted(start("b", "2026-11-23T09:01:00Z")),
            ])
            .await
            .unwrap();
        let active = store
            .calls(CallFilter {
                active: true,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(
            active.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            vec!["b", "a"],
            "{}",
            db.label
        );
        store
            .apply(&[Change::CallEnded(Box::new(record("a")))])
            .await
            .unwrap();
        let active = store
            .calls(CallFilter {
                active: true,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(active.len(), 1, "{}", db.label);
        let all = store
            .calls(CallFilter {
                active: false,
                limit: 10,
            })
            .await
            .unwrap();
        let a = all.iter().find(|c| c.id == "a").unwrap();
        assert_eq!(a.outcome.as_deref(), Some("answered"), "{}", db.label);
        assert_eq!(a.agent.as_deref(), Some("2001"));
        assert_eq!(a.ended_by.as_deref(), Some("caller"));
        assert_eq!(a.answered_at, Some(at("2026-11-23T09:00:05Z")));
        assert_eq!(a.explanation, vec!["support: serves queue 100"]);
        let events = store.events("a").await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            vec!["offered", "answered"]
        );

        store
            .apply(&[Change::Cursor {
                group: "support".into(),
                extension: "2002".into(),
            }])
            .await
            .unwrap();
        let cursors = store.cursors().await.unwrap();
        assert_eq!(
            cursors.get("support"),
            Some(&Extension::parse("2002").unwrap()),
            "{}",
            db.label
        );

        let ext = Extension::parse("2003").unwrap();
        store.set_agent_state(&ext, true).await.unwrap();
        assert_eq!(
            store.agent_states().await.unwrap(),
            vec![(ext.clone(), true)]
        );
        store.set_agent_state(&ext, false).await.unwrap();
        assert_eq!(store.agent_states().await.unwrap(), vec![(ext, false)]);
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn applying_the_same_changes_twice_changes_nothing() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let batch = vec![
            Change::CallStarted(start("x", "2026-11-23T09:00:00Z")),
            Change::Event(CallEvent {
                call_id: "x".into(),
                seq: 7,
                at: at("2026-11-23T09:00:00Z"),
                kind: "offered".into(),
                detail: "d".into(),
            }),
            Change::CallEnded(Box::new(record("x"))),
        ];
        store.apply(&batch).await.unwrap();
        store.apply(&batch).await.unwrap();
        assert_eq!(
            store
                .calls(CallFilter {
                    active: false,
                    limit: 10
                })
                .await
                .unwrap()
                .len(),
            1,
            "{}",
            db.label
        );
        assert_eq!(store.events("x").await.unwrap().len(), 1, "{}", db.label);
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn calls_left_in_progress_by_a_crash_are_closed_as_interrupted() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let mut answered = record("answered");
        answered.outcome = Outcome::Answered;
        store
            .apply(&[
                Change::CallStarted(start("ringing", "2026-11-23T09:00:00Z")),
                Change::CallStarted(start("done", "2026-11-23T09:00:00Z")),
                Change::CallEnded(Box::new(record("done"))),
            ])
            .await
            .unwrap();
        let closed = store
            .close_interrupted(at("2026-11-23T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!(closed, 1, "{}", db.label);
        let calls = store
            .calls(CallFilter {
                active: false,
                limit: 10,
            })
            .await
            .unwrap();
        let ringing = calls.iter().find(|c| c.id == "ringing").unwrap();
        assert_eq!(ringing.outcome.as_deref(), Some("missed"));
        assert_eq!(
            ringing.reason.as_deref(),
            Some(MissedReason::Interrupted.as_str())
        );
        assert_eq!(
            calls
                .iter()
                .find(|c| c.id == "done")
                .unwrap()
                .ended_by
                .as_deref(),
            Some("caller")
        );
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn reopening_a_database_keeps_its_data_and_does_not_migrate_twice() {
    for db in TestDb::all().await {
        {
            let store = Store::open(&db.url).await.unwrap();
            store
                .apply(&[Change::Cursor {
                    group: "g".into(),
                    extension: "1".into(),
                }])
                .await
                .unwrap();
        }
        let store = Store::open(&db.url).await.unwrap();
        assert_eq!(store.cursors().await.unwrap().len(), 1, "{}", db.label);
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let error = Store::open("postgres://sipdesk:secret@127.0.0.1:1/sipdesk")
        .await
        .unwrap_err();
    let text = format!("{error}");
    assert!(
        text.starts_with("cannot open the database postgres://sipdesk:***@127.0.0.1:1/sipdesk"),
        "{text}"
    );
    assert!(!format!("{error:?}").contains("secret"), "{error:?}");
}
