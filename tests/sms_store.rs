//! The store's side of texts, on SQLite and on PostgreSQL (`SIPDESK_TEST_POSTGRES_URL`): a text
//! record keeps its text; a ticket's conversation is found from its deliveries; a reply is kept
//! once, taken for sending by one instance only, never sent again once a stop left it sending;
//! the export position only moves forward.

mod common;

use common::TestDb;
use jiff::Timestamp;
use sipdesk::call::{Change, Direction, Outcome, Text};
use sipdesk::store::replies::{self, Reply};
use sipdesk::store::{NewDelivery, Store};

fn text(id: &str) -> sipdesk::call::CallRecord {
    let at: Timestamp = "2026-12-02T09:00:00Z".parse().unwrap();
    sipdesk::call::CallRecord {
        id: id.into(),
        sip_call_id: format!("sip-{id}"),
        direction: Direction::Inbound,
        queue: None,
        group: Some("support".into()),
        groups: vec!["support".into()],
        caller: "+34600111222".into(),
        callee: "+34910000000".into(),
        agent: None,
        agent_email: None,
        agents: Vec::new(),
        started_at: at,
        answered_at: None,
        ended_at: at,
        outcome: Outcome::Answered,
        reason: None,
        ended_by: None,
        out_of_hours: false,
        recording_url: None,
        voicemail: None,
        explanation: vec!["text to +34910000000 (Soporte)".into()],
        tags: Vec::new(),
        sms: Some(Text {
            number: "+34910000000".into(),
            name: "Soporte".into(),
            body: "Hola, ¿mi pedido?".into(),
            skipped: None,
            flood: false,
            via: None,
            ticket: None,
            failure: None,
        }),
    }
}

fn reply(comment: u64) -> Reply {
    Reply {
        id: format!("zd:{comment}"),
        integration: "zd".into(),
        ticket_id: "42".into(),
        customer: "+34600111222".into(),
        number: "+34910000000".into(),
        body: "Su pedido sale hoy".into(),
        author: Some("ana@example.com".into()),
        state: replies::PENDING.into(),
        detail: None,
    }
}

async fn texts_and_replies(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let now = Timestamp::now();
    let record = text("sms-1");
    store
        .apply(
            &[Change::CallEnded(Box::new(record.clone()))],
            &[NewDelivery {
                call_id: "sms-1".into(),
                integration: "zd".into(),
                contact_key: "+34600111222".into(),
                call_started_at: record.started_at,
                skipped: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(store.call_record("sms-1").await.unwrap(), Some(record));
    // Texts are not calls in today's figures.
    assert!(
        store
            .inbound_calls_since("2026-12-02T00:00:00Z".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    // The ticket the text went to knows its conversation once the delivery is done.
    assert_eq!(store.text_conversation("zd", "42").await.unwrap(), None);
    let claimed = store
        .claim_deliveries(
            "zd",
            10,
            Timestamp::now() + jiff::SignedDuration::from_secs(1),
            Timestamp::now() + jiff::SignedDuration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .delivery_contact(&claimed[0], Some("7001"))
        .await
        .unwrap();
    store
        .delivery_done(&claimed[0], "42", "created ticket #42")
        .await
        .unwrap();
    let conversation = store.text_conversation("zd", "42").await.unwrap().unwrap();
    assert_eq!(conversation.customer, "+34600111222");
    assert_eq!(conversation.number, "+34910000000");
    assert_eq!(conversation.contact_id.as_deref(), Some("7001"));

    // A reply is kept once, however often the export shows it.
    assert!(store.keep_reply(&reply(1), now).await.unwrap());
    assert!(!store.keep_reply(&reply(1), now).await.unwrap());
    assert_eq!(store.pending_replies("zd").await.unwrap().len(), 1);
    // One instance takes it.
    assert!(store.take_reply("zd:1", "a", now).await.unwrap());
    assert!(!store.take_reply("zd:1", "b", now).await.unwrap());
    assert!(store.pending_replies("zd").await.unwrap().is_empty());
    // A stop while sending: failed at the next start, never pending again.
    let abandoned = store.abandon_replies("a", "stopped", now).await.unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].state, replies::FAILED);
    assert!(
        store
            .abandon_replies("a", "stopped", now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.take_reply("zd:1", "a", now).await.unwrap());
    // Sent.
    store.keep_reply(&reply(2), now).await.unwrap();
    assert!(store.take_reply("zd:2", "a", now).await.unwrap());
    store
        .finish_reply("zd:2", replies::SENT, None, now)
        .await
        .unwrap();
    let states: Vec<String> = store
        .replies("zd")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&replies::SENT.to_owned()));
    assert!(states.contains(&replies::FAILED.to_owned()));

    // The export position moves forward only.
    assert_eq!(store.reply_cursor("zd").await.unwrap(), None);
    store.set_reply_cursor("zd", 1000, now).await.unwrap();
    store.set_reply_cursor("zd", 900, now).await.unwrap();
    assert_eq!(store.reply_cursor("zd").await.unwrap(), Some(1000));
    store.set_reply_cursor("zd", 1100, now).await.unwrap();
    assert_eq!(store.reply_cursor("zd").await.unwrap(), Some(1100));
}

#[tokio::test]
async fn texts_and_replies_on_sqlite() {
    texts_and_replies(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn texts_and_replies_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        panic!(
            "SIPDESK_TEST_POSTGRES_URL is not set: this PostgreSQL test cannot run (CI sets it; `.ci/run` does too)"
        );
    };
    texts_and_replies(&db).await;
    db.drop_db().await;
}
