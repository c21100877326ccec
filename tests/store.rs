//! The store against real databases: SQLite always, PostgreSQL when `SIPDESK_TEST_POSTGRES_URL`
//! is set (CI sets it).

mod common;

use common::TestDb;
use jiff::Timestamp;
use sipdesk::call::{
    AgentLeg, CallEvent, CallRecord, CallStart, Change, Direction, EndedBy, MissedReason, Outcome,
};
use sipdesk::routing::Extension;
use sipdesk::store::{
    CallFilter, ContactEntry, DeliveryFilter, DeliveryState, NewDelivery, Store, StoreError,
};

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
        instance: "test".into(),
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
        agent: Some("2002".into()),
        agent_email: Some("bea@example.com".into()),
        // Answered by 2001, transferred to 2002.
        agents: vec![
            AgentLeg {
                extension: "2001".into(),
                email: Some("ana@example.com".into()),
                from: at("2026-11-23T09:00:05Z"),
                until: at("2026-11-23T09:01:05Z"),
            },
            AgentLeg {
                extension: "2002".into(),
                email: Some("bea@example.com".into()),
                from: at("2026-11-23T09:01:05Z"),
                until: at("2026-11-23T09:03:05Z"),
            },
        ],
        started_at: at("2026-11-23T09:00:00Z"),
        answered_at: Some(at("2026-11-23T09:00:05Z")),
        ended_at: at("2026-11-23T09:03:05Z"),
        outcome: Outcome::Answered,
        reason: None,
        ended_by: Some(EndedBy::Caller),
        out_of_hours: false,
        recording_url: None,
        // Kept with the record (a voicemail call's recording), and read back the same.
        voicemail: Some(sipdesk::call::Voicemail {
            file: format!("/var/lib/sipdesk/voicemail/{id}.wav"),
            duration_ms: 4_020,
            end: "hangup".into(),
        }),
        explanation: vec!["support: serves queue 100".into()],
        tags: vec![],
        sms: None,
    }
}

#[tokio::test]
async fn calls_events_cursors_and_agent_states_round_trip() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", db.label));
        store
            .apply(
                &[
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
                ],
                &[],
            )
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
            .apply(&[Change::CallEnded(Box::new(record("a")))], &[])
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
        assert_eq!(a.agent.as_deref(), Some("2002"));
        assert_eq!(
            a.agents
                .iter()
                .map(|l| l.extension.as_str())
                .collect::<Vec<_>>(),
            vec!["2001", "2002"],
            "{}",
            db.label
        );
        assert_eq!(a.ended_by.as_deref(), Some("caller"));
        assert_eq!(a.answered_at, Some(at("2026-11-23T09:00:05Z")));
        assert_eq!(a.explanation, vec!["support: serves queue 100"]);
        let events = store.events("a").await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            vec!["offered", "answered"]
        );

        store
            .apply(
                &[Change::Cursor {
                    group: "support".into(),
                    extension: "2002".into(),
                }],
                &[],
            )
            .await
            .unwrap();
        let cursors = store.cursors().await.unwrap();
        assert_eq!(
            cursors.get("support"),
            Some(&Extension::parse("2002").unwrap()),
            "{}",
            db.label
        );

        let at = jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap();
        let away = sipdesk::call::AgentSetting {
            extension: "2003".to_owned(),
            away: true,
            reason: Some("lunch".to_owned()),
            at,
        };
        store.set_agent_state(&away).await.unwrap();
        assert_eq!(store.agent_states().await.unwrap(), vec![away.clone()]);
        let back = sipdesk::call::AgentSetting {
            away: false,
            reason: None,
            ..away
        };
        store.set_agent_state(&back).await.unwrap();
        assert_eq!(store.agent_states().await.unwrap(), vec![back]);
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
        store.apply(&batch, &[]).await.unwrap();
        store.apply(&batch, &[]).await.unwrap();
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
            .apply(
                &[
                    Change::CallStarted(start("ringing", "2026-11-23T09:00:00Z")),
                    Change::CallStarted(start("done", "2026-11-23T09:00:00Z")),
                    Change::CallEnded(Box::new(record("done"))),
                ],
                &[],
            )
            .await
            .unwrap();
        let closed = store
            .close_interrupted(at("2026-11-23T10:00:00Z"), "test", &|_| Vec::new())
            .await
            .unwrap();
        assert_eq!(closed.len(), 1, "{}", db.label);
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
                .apply(
                    &[Change::Cursor {
                        group: "g".into(),
                        extension: "1".into(),
                    }],
                    &[],
                )
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

fn delivery(call: &str, contact: &str, started: &str) -> NewDelivery {
    NewDelivery {
        call_id: call.into(),
        integration: "zd".into(),
        contact_key: contact.into(),
        call_started_at: at(started),
        skipped: None,
    }
}

fn ids(deliveries: &[sipdesk::store::Delivery]) -> Vec<String> {
    let mut ids: Vec<String> = deliveries.iter().map(|d| d.call_id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_calls_record_and_its_deliveries_are_written_together_and_once() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let mut skipped = delivery("a", "+34600123456", "2026-11-23T09:00:00Z");
        skipped.integration = "other".into();
        skipped.skipped = Some("missed calls are not logged".into());
        let batch = [Change::CallEnded(Box::new(record("a")))];
        let deliveries = [
            delivery("a", "+34600123456", "2026-11-23T09:00:00Z"),
            skipped,
        ];
        store.apply(&batch, &deliveries).await.unwrap();
        store.apply(&batch, &deliveries).await.unwrap();
        let all = store.deliveries_of("a").await.unwrap();
        assert_eq!(all.len(), 2, "{}", db.label);
        assert_eq!(all[0].id, "a:other");
        assert_eq!(all[0].state, DeliveryState::Skipped);
        assert_eq!(
            all[0].detail.as_deref(),
            Some("missed calls are not logged")
        );
        assert_eq!(all[1].id, "a:zd");
        assert_eq!(all[1].state, DeliveryState::Pending);
        assert_eq!(
            store.call_record("a").await.unwrap(),
            Some(record("a")),
            "{}",
            db.label
        );
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn deliveries_of_one_contact_are_claimed_one_at_a_time_in_call_order() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let deliveries = [
            delivery("ana-2", "+34600000001", "2026-11-23T09:05:00Z"),
            delivery("ana-1", "+34600000001", "2026-11-23T09:00:00Z"),
            delivery("bea-1", "+34600000002", "2026-11-23T09:01:00Z"),
            delivery("anon-1", "anonymous", "2026-11-23T09:02:00Z"),
            delivery("anon-2", "anonymous", "2026-11-23T09:03:00Z"),
        ];
        store.apply(&[], &deliveries).await.unwrap();
        let now = Timestamp::now();
        let lease = now
            .checked_add(jiff::SignedDuration::from_secs(30))
            .unwrap();
        let first = store.claim_deliveries("zd", 10, now, lease).await.unwrap();
        assert_eq!(ids(&first), ["ana-1", "anon-1", "bea-1"], "{}", db.label);
        assert!(
            first
                .iter()
                .all(|d| d.attempts == 1 && d.state == DeliveryState::InProgress)
        );
        // Nothing more while the first ones are in progress.
        assert!(
            store
                .claim_deliveries("zd", 10, now, lease)
                .await
                .unwrap()
                .is_empty()
        );
        // Another integration's deliveries are apart.
        assert!(
            store
                .claim_deliveries("other", 10, now, lease)
                .await
                .unwrap()
                .is_empty()
        );
        let claim = |id: &str| first.iter().find(|d| d.call_id == id).unwrap();
        store
            .delivery_done(claim("ana-1"), "101", "created ticket #101")
            .await
            .unwrap();
        // A failed delivery no longer holds its contact's next one back.
        store
            .delivery_failed(claim("anon-1"), "refused")
            .await
            .unwrap();
        // A retried one does, until it is due.
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap();
        store
            .delivery_retry_later(claim("bea-1"), "500", later)
            .await
            .unwrap();
        let long_lease = later
            .checked_add(jiff::SignedDuration::from_secs(30))
            .unwrap();
        let second = store
            .claim_deliveries("zd", 10, now, long_lease)
            .await
            .unwrap();
        assert_eq!(ids(&second), ["ana-2", "anon-2"], "{}", db.label);
        let due = store
            .claim_deliveries("zd", 10, later, lease)
            .await
            .unwrap();
        assert_eq!(ids(&due), ["bea-1"], "{}", db.label);
        assert_eq!(due[0].attempts, 2);
        assert_eq!(due[0].last_error.as_deref(), Some("500"));
        let done = store.delivery("ana-1:zd").await.unwrap().unwrap();
        assert_eq!(
            (done.state, done.ticket_id.as_deref()),
            (DeliveryState::Done, Some("101"))
        );
        let failed = store
            .deliveries(DeliveryFilter {
                state: Some(sipdesk::store::DeliveryState::Failed),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(ids(&failed), ["anon-1"]);
        assert_eq!(failed[0].last_error.as_deref(), Some("refused"));
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn a_delivery_whose_worker_died_is_taken_up_when_its_lease_runs_out() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        store
            .apply(
                &[],
                &[delivery("a", "+34600000001", "2026-11-23T09:00:00Z")],
            )
            .await
            .unwrap();
        let now = Timestamp::now();
        let lease = now
            .checked_add(jiff::SignedDuration::from_secs(30))
            .unwrap();
        let first = store.claim_deliveries("zd", 10, now, lease).await.unwrap();
        assert_eq!(first.len(), 1);
        let first = &first[0];
        store.delivery_contact(first, Some("77")).await.unwrap();
        store
            .delivery_request(first, Some("{\"kind\":\"create\"}"))
            .await
            .unwrap();
        assert!(
            store
                .claim_deliveries("zd", 10, now, lease)
                .await
                .unwrap()
                .is_empty()
        );
        let after = lease
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap();
        let again = store
            .claim_deliveries("zd", 10, after, after)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{}", db.label);
        // What the first attempt learnt is there for the second.
        assert_eq!(again[0].contact_id.as_deref(), Some("77"));
        assert_eq!(again[0].request.as_deref(), Some("{\"kind\":\"create\"}"));
        assert_eq!(again[0].attempts, 2);
        // The first worker, back from its stall, can no longer write about the delivery: not
        // the request it was about to send, not a result.
        for write in [
            store.delivery_request(first, Some("{}")).await,
            store.delivery_done(first, "9", "created ticket #9").await,
            store.delivery_failed(first, "late").await,
        ] {
            assert!(
                matches!(write, Err(StoreError::TakenOver { .. })),
                "{write:?} {}",
                db.label
            );
        }
        let current = store.delivery("a:zd").await.unwrap().unwrap();
        assert_eq!(
            (current.state, current.request.as_deref()),
            (DeliveryState::InProgress, Some("{\"kind\":\"create\"}"))
        );
        // The second one can.
        store
            .delivery_done(&again[0], "10", "created ticket #10")
            .await
            .unwrap();
        store
            .apply(
                &[],
                &[delivery("b", "+34600000002", "2026-11-23T09:00:00Z")],
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_deliveries("zd", 10, after, after)
                .await
                .unwrap()
                .len(),
            1
        );
        // At start on SQLite, in-progress deliveries are given back at once.
        assert_eq!(store.release_all_leases().await.unwrap(), 1);
        assert_eq!(
            store.delivery("b:zd").await.unwrap().unwrap().state,
            DeliveryState::Pending
        );
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn failed_deliveries_can_be_retried_one_or_all() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let deliveries = [
            delivery("a", "+34600000001", "2026-11-23T09:00:00Z"),
            delivery("b", "+34600000002", "2026-11-23T09:00:00Z"),
            delivery("c", "+34600000003", "2026-11-23T09:00:00Z"),
            delivery("d", "+34600000004", "2026-11-23T09:00:00Z"),
            delivery("e", "+34600000005", "2026-11-23T09:00:00Z"),
        ];
        store.apply(&[], &deliveries).await.unwrap();
        let now = Timestamp::now();
        let lease = now
            .checked_add(jiff::SignedDuration::from_secs(30))
            .unwrap();
        let claimed = store.claim_deliveries("zd", 10, now, lease).await.unwrap();
        assert_eq!(claimed.len(), 5);
        for claim in &claimed[..3] {
            store.delivery_failed(claim, "401").await.unwrap();
        }
        store
            .delivery_done(&claimed[3], "7", "ticket 7 created")
            .await
            .unwrap();
        store
            .delivery_skipped(&claimed[4], "out of hours")
            .await
            .unwrap();
        // Times are kept to the millisecond.
        let later = Timestamp::from_millisecond(now.as_millisecond() + 5000).unwrap();
        assert!(store.retry_delivery("a:zd", later).await.unwrap());
        assert!(!store.retry_delivery("nope:zd", later).await.unwrap());
        // A done or skipped delivery is never sent again: that would log the call twice, or
        // where the rules said not to.
        assert!(!store.retry_delivery("d:zd", later).await.unwrap());
        assert!(!store.retry_delivery("e:zd", later).await.unwrap());
        for (id, state) in [
            ("d:zd", DeliveryState::Done),
            ("e:zd", DeliveryState::Skipped),
        ] {
            assert_eq!(store.delivery(id).await.unwrap().unwrap().state, state);
        }
        let a = store.delivery("a:zd").await.unwrap().unwrap();
        assert_eq!(
            (a.state, a.attempts, a.pending_since),
            (DeliveryState::Pending, 0, later)
        );
        assert_eq!(store.retry_failed_deliveries(later).await.unwrap(), 2);
        let backlog = store.backlog().await.unwrap();
        assert_eq!(backlog.len(), 1);
        assert_eq!(
            (backlog[0].pending, backlog[0].failed, backlog[0].done),
            (3, 0, 1),
            "{}",
            db.label
        );
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn two_workers_sharing_a_database_never_claim_the_same_delivery() {
    for db in TestDb::all().await {
        let first = Store::open(&db.url).await.unwrap();
        let second = Store::open(&db.url).await.unwrap();
        let deliveries: Vec<NewDelivery> = (0..200)
            .map(|i| {
                delivery(
                    &format!("c{i:03}"),
                    &format!("+346000{i:05}"),
                    "2026-11-23T09:00:00Z",
                )
            })
            .collect();
        first.apply(&[], &deliveries).await.unwrap();
        let now = Timestamp::now();
        let lease = now
            .checked_add(jiff::SignedDuration::from_secs(30))
            .unwrap();
        let mut claimed: Vec<String> = Vec::new();
        loop {
            let (a, b) = tokio::join!(
                first.claim_deliveries("zd", 7, now, lease),
                second.claim_deliveries("zd", 7, now, lease)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            if a.is_empty() && b.is_empty() {
                break;
            }
            claimed.extend(a.into_iter().chain(b).map(|d| d.call_id));
        }
        let total = claimed.len();
        claimed.sort();
        claimed.dedup();
        assert_eq!((total, claimed.len()), (200, 200), "{}", db.label);
        drop((first, second));
        db.drop_db().await;
    }
}

#[tokio::test]
async fn the_contact_directory_keeps_what_the_helpdesk_said() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let mut entry = ContactEntry {
            integration: "zd".into(),
            phone: "+34600000001".into(),
            contact_id: None,
            name: None,
            inactive: false,
            checked_at: at("2026-11-23T09:00:00Z"),
        };
        store.save_contact(&entry).await.unwrap();
        assert_eq!(
            store.contact("zd", "+34600000001").await.unwrap(),
            Some(entry.clone())
        );
        entry.contact_id = Some("42".into());
        entry.name = Some("Ana".into());
        entry.inactive = true;
        store.save_contact(&entry).await.unwrap();
        assert_eq!(
            store.contacts().await.unwrap(),
            vec![entry.clone()],
            "{}",
            db.label
        );
        assert_eq!(store.contact("other", "+34600000001").await.unwrap(), None);
        store.forget_contact("zd", "+34600000001").await.unwrap();
        assert!(store.contacts().await.unwrap().is_empty());
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn calls_interrupted_by_a_crash_get_their_deliveries() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        store
            .apply(
                &[Change::CallStarted(start(
                    "ringing",
                    "2026-11-23T09:00:00Z",
                ))],
                &[],
            )
            .await
            .unwrap();
        let closed = store
            .close_interrupted(at("2026-11-23T10:00:00Z"), "test", &|r| {
                assert_eq!(r.reason, Some(MissedReason::Interrupted));
                vec![delivery(&r.id, &r.caller, "2026-11-23T09:00:00Z")]
            })
            .await
            .unwrap();
        assert_eq!(closed, vec!["sip-ringing".to_owned()]);
        let deliveries = store.deliveries_of("ringing").await.unwrap();
        assert_eq!(deliveries.len(), 1, "{}", db.label);
        assert_eq!(deliveries[0].contact_key, "+34600123456");
        drop(store);
        db.drop_db().await;
    }
}

#[tokio::test]
async fn tags_change_within_two_hours_and_every_delivery_of_the_call_follows() {
    use sipdesk::store::tags::TagRefused;
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        let mut call = record("tagged-1");
        call.tags = vec!["vip".into()];
        let ended = call.ended_at;
        let own = delivery("tagged-1", "+34600123456", "2026-11-23T09:00:00Z");
        let skipped = NewDelivery {
            integration: "kv".into(),
            skipped: Some("not logged".into()),
            ..own.clone()
        };
        store
            .apply(
                &[sipdesk::call::Change::CallEnded(Box::new(call))],
                &[own, skipped],
            )
            .await
            .unwrap();
        let after = |minutes: i64| {
            ended
                .checked_add(jiff::SignedDuration::from_mins(minutes))
                .unwrap()
        };
        let configured = ["zd".to_owned(), "kv".to_owned()];
        let tag = |add: &[&str], remove: &[&str], at: Timestamp, to: &[String]| {
            let add: Vec<String> = add.iter().map(|t| (*t).to_owned()).collect();
            let remove: Vec<String> = remove.iter().map(|t| (*t).to_owned()).collect();
            let (store, to) = (store.clone(), to.to_vec());
            async move {
                store
                    .tag_call("tagged-1", &add, &remove, at, &to)
                    .await
                    .unwrap()
            }
        };
        // Within two hours: the record changes and the delivery that wrote something follows,
        // after the call's own (same contact, later id); the skipped one does not.
        let tagged = tag(&["averia"], &["vip"], after(30), &configured)
            .await
            .unwrap();
        assert_eq!(tagged.retag.tags, ["averia"], "{}", db.label);
        assert_eq!(tagged.integrations, ["zd"]);
        let record = store.call_record("tagged-1").await.unwrap().unwrap();
        assert_eq!(record.tags, ["averia"]);
        let all = store.deliveries_of("tagged-1").await.unwrap();
        let retag = all
            .iter()
            .find(|d| d.id == "tagged-1:zd:tags:000001")
            .expect("a tag delivery");
        assert!(
            retag
                .action
                .as_deref()
                .unwrap()
                .contains("\"added\":[\"averia\"]")
        );
        let now = Timestamp::now();
        let lease = now
            .checked_add(jiff::SignedDuration::from_secs(30))
            .unwrap();
        let ids = |claimed: &[sipdesk::store::Delivery]| -> Vec<String> {
            claimed.iter().map(|d| d.id.clone()).collect()
        };
        let claimed = store.claim_deliveries("zd", 10, now, lease).await.unwrap();
        assert_eq!(
            ids(&claimed),
            ["tagged-1:zd"],
            "{}: the call's own first",
            db.label
        );
        store
            .delivery_done(&claimed[0], "101", "created ticket #101")
            .await
            .unwrap();
        let claimed = store.claim_deliveries("zd", 10, now, lease).await.unwrap();
        assert_eq!(ids(&claimed), ["tagged-1:zd:tags:000001"], "{}", db.label);
        // While the change is in progress, a later call of the same contact waits.
        let later = delivery("tagged-2", "+34600123456", "2026-11-23T10:00:00Z");
        store.apply(&[], &[later]).await.unwrap();
        assert!(
            store
                .claim_deliveries("zd", 10, Timestamp::now(), lease)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .delivery_done(&claimed[0], "101", "ticket #101: +averia")
            .await
            .unwrap();
        // (The later call's delivery was made after `now`: it is due from its own making.)
        let later_now = Timestamp::now();
        let claimed = store
            .claim_deliveries("zd", 10, later_now, lease)
            .await
            .unwrap();
        assert_eq!(ids(&claimed), ["tagged-2:zd"], "{}", db.label);
        // Repeats count once; an integration no longer configured gets nothing.
        let tagged = tag(&["x", "x"], &[], after(35), &["kv".to_owned()])
            .await
            .unwrap();
        assert_eq!(tagged.retag.added, ["x"]);
        assert!(tagged.integrations.is_empty(), "{:?}", tagged.integrations);
        tag(&[], &["x"], after(36), &[]).await.unwrap();
        // Nothing to change is refused; a second change is a second tag delivery, ordered
        // after the first even from the tenth on.
        assert!(matches!(
            tag(&["averia"], &["vip"], after(40), &configured).await,
            Err(TagRefused::NothingChanged(_))
        ));
        tag(&["vip"], &[], after(50), &configured).await.unwrap();
        let all = store.deliveries_of("tagged-1").await.unwrap();
        assert!(all.iter().any(|d| d.id == "tagged-1:zd:tags:000002"));
        // Past two hours: refused, nothing written.
        let events = store.events("tagged-1").await.unwrap().len();
        assert!(matches!(
            tag(&["late"], &[], after(121), &configured).await,
            Err(TagRefused::TooLate { .. })
        ));
        let record = store.call_record("tagged-1").await.unwrap().unwrap();
        assert_eq!(record.tags, ["averia", "vip"], "{}", db.label);
        assert_eq!(store.events("tagged-1").await.unwrap().len(), events);
        assert_eq!(
            store.deliveries_of("tagged-1").await.unwrap().len(),
            all.len()
        );
        assert!(matches!(
            store
                .tag_call("nobody", &["x".into()], &[], now, &configured)
                .await
                .unwrap(),
            Err(TagRefused::NoSuchCall(_))
        ));
        db.drop_db().await;
    }
}

#[tokio::test]
async fn retention_reads_voicemails_in_batches_and_never_a_removed_one_again() {
    for db in TestDb::all().await {
        let store = Store::open(&db.url).await.unwrap();
        // Three calls ending at the same moment (ties are broken by id) and one later.
        let mut batch = Vec::new();
        for id in ["a", "b", "c", "d"] {
            let mut call = record(id);
            if id == "d" {
                call.ended_at = at("2026-11-24T09:00:00Z");
            }
            batch.push(Change::CallEnded(Box::new(call)));
        }
        store.apply(&batch, &[]).await.unwrap();
        let cutoff = at("2026-11-24T00:00:00Z");
        let mut seen = Vec::new();
        let mut after: Option<(Timestamp, String)> = None;
        loop {
            let page = store
                .voicemails_before(cutoff, after.as_ref().map(|(t, id)| (*t, id.as_str())), 2)
                .await
                .unwrap();
            let Some((id, ended, _)) = page.last() else {
                break;
            };
            after = Some((*ended, id.clone()));
            seen.extend(page.into_iter().map(|(id, _, _)| id));
        }
        assert_eq!(seen, ["a", "b", "c"], "{}", db.label);
        store.voicemail_removed("b", cutoff).await.unwrap();
        let left: Vec<String> = store
            .voicemails_before(cutoff, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        assert_eq!(left, ["a", "c"], "{}", db.label);
        drop(store);
        db.drop_db().await;
    }
}
