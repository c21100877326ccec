//! Agents shared by instances on one PostgreSQL database, at the store: the claim takes turns
//! across instances and never holds one agent twice, wrap-ups and away agents are skipped, an
//! older release never frees a newer claim, every change is notified, and a dead instance's
//! agents are freed. Needs `SIPDESK_TEST_POSTGRES_URL` (CI sets it) and says so loudly when it
//! is missing.

mod common;

use std::time::Duration;

use common::TestDb;
use sipdesk::call::AgentSetting;
use sipdesk::proxy::{Claim, Hold};
use sipdesk::store::Store;
use sipdesk::store::holds::AgentsLink;

async fn postgres(test: &str) -> Option<TestDb> {
    let db = TestDb::postgres().await;
    if db.is_none() {
        eprintln!(
            "SKIPPED ON POSTGRESQL: {test} needs SIPDESK_TEST_POSTGRES_URL (CI sets it); nothing was checked"
        );
    }
    db
}

const AGENTS: [&str; 5] = ["2001", "2002", "2003", "2004", "2005"];

/// A claim as one instance makes it, on a connection of its own (as the daemon's claims run).
async fn claim_as(url: &str, instance: &str, claim: &Claim) -> Option<String> {
    AgentsLink::new(url).claim(instance, claim).await.unwrap()
}

/// A hold as one instance tells it.
async fn tell(url: &str, instance: &str, extension: &str, hold: Hold, version: u64) {
    AgentsLink::new(url)
        .tell(instance, extension, hold, version)
        .await
        .unwrap()
}

fn claim(call: &str, version: u64, skip: &[&str]) -> Claim {
    Claim {
        call: 0,
        call_id: call.into(),
        group: "support".into(),
        agents: AGENTS.iter().map(|a| a.to_string()).collect(),
        skip: skip.iter().map(|a| a.to_string()).collect(),
        version,
    }
}

#[tokio::test]
async fn claims_never_hold_one_agent_twice_and_take_turns_across_instances() {
    let Some(db) =
        postgres("claims_never_hold_one_agent_twice_and_take_turns_across_instances").await
    else {
        return;
    };
    let a = Store::open(&db.url).await.unwrap();
    // Twenty claims at once from twenty instances (each has one claim out at a time) for five
    // agents: five get one each.
    let claims = (0..20u64).map(|i| {
        let url = &db.url;
        async move { claim_as(url, &format!("i{i}"), &claim(&format!("c{i}"), 10 + i, &[])).await }
    });
    let got: Vec<Option<String>> = futures_util::future::join_all(claims).await;
    let mut held: Vec<String> = got.into_iter().flatten().collect();
    held.sort();
    assert_eq!(held, AGENTS, "each agent held once, by one claim");
    for i in 0..20 {
        a.free_holds(&format!("i{i}")).await.unwrap();
    }
    assert!(a.holds().await.unwrap().is_empty());

    // One after the other, alternating instances, each freed after: a single rotation.
    let mut order = Vec::new();
    for i in 0..10u64 {
        let instance = if i % 2 == 0 { "a" } else { "b" };
        let agent = claim_as(
            &db.url,
            instance,
            &claim(&format!("r{i}"), 100 + 2 * i, &[]),
        )
        .await
        .unwrap();
        tell(&db.url, instance, &agent, Hold::Free, 101 + 2 * i).await;
        order.push(agent);
    }
    let first = AGENTS.iter().position(|a| *a == order[0]).unwrap();
    let expected: Vec<&str> = (0..10).map(|k| AGENTS[(first + k) % 5]).collect();
    assert_eq!(order, expected, "offers spread evenly over the whole group");
    db.drop_db().await;
}

#[tokio::test]
async fn wrap_up_away_and_skipped_agents_are_not_claimed_and_an_older_release_frees_nothing() {
    let Some(db) = postgres("wrap_up_away_and_skipped_agents_are_not_claimed").await else {
        return;
    };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    // 2001 in wrap-up on a for 1.5 s, 2002 away, 2003 skipped by the caller of the claim.
    tell(
        &db.url,
        "a",
        "2001",
        Hold::WrapUp(Duration::from_millis(1500)),
        5,
    )
    .await;
    a.set_agent_state(&AgentSetting {
        extension: "2002".into(),
        away: true,
        reason: None,
        at: jiff::Timestamp::now(),
    })
    .await
    .unwrap();
    let got = claim_as(&db.url, "b", &claim("x1", 1, &["2003"])).await;
    assert_eq!(got.as_deref(), Some("2004"));
    let got = claim_as(&db.url, "b", &claim("x2", 2, &["2003"])).await;
    assert_eq!(got.as_deref(), Some("2005"));
    let got = claim_as(&db.url, "b", &claim("x3", 3, &["2003", "2004", "2005"])).await;
    assert_eq!(got, None, "nobody free: wrap-up, away, skipped, held");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let got = claim_as(&db.url, "b", &claim("x4", 4, &["2003", "2004", "2005"])).await;
    assert_eq!(got.as_deref(), Some("2001"), "a's wrap-up is over");

    // b's release of 2004 told late, older than a claim b made since: the claim stays.
    tell(&db.url, "b", "2004", Hold::Free, 10).await;
    let got = claim_as(&db.url, "b", &claim("x5", 20, &["2003"])).await;
    assert_eq!(got.as_deref(), Some("2004"));
    tell(&db.url, "b", "2004", Hold::Free, 15).await;
    let holds = b.holds().await.unwrap();
    assert!(
        holds
            .iter()
            .any(|h| h.extension == "2004" && h.hold == Hold::Busy),
        "{holds:?}"
    );
    // a never frees b's hold.
    tell(&db.url, "a", "2004", Hold::Free, 1_000).await;
    tell(
        &db.url,
        "a",
        "2005",
        Hold::WrapUp(Duration::from_secs(60)),
        1_001,
    )
    .await;
    let holds = b.holds().await.unwrap();
    assert!(
        holds
            .iter()
            .any(|h| h.extension == "2004" && h.instance == "b" && h.hold == Hold::Busy),
        "{holds:?}"
    );
    assert!(
        holds
            .iter()
            .any(|h| h.extension == "2005" && h.instance == "b" && h.hold == Hold::Busy),
        "{holds:?}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn every_change_is_notified_and_a_dead_instances_agents_are_freed() {
    let Some(db) = postgres("every_change_is_notified_and_a_dead_instances_agents_are_freed").await
    else {
        return;
    };
    let a = Store::open(&db.url).await.unwrap();
    let b = Store::open(&db.url).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener
        .listen_all(["sipdesk_holds", "sipdesk_agents", "sipdesk_contacts"])
        .await
        .unwrap();
    assert!(
        a.join_cluster("a", "ta", Duration::from_secs(15))
            .await
            .unwrap()
    );
    assert!(
        b.join_cluster("b", "tb", Duration::from_secs(15))
            .await
            .unwrap()
    );
    let got = claim_as(&db.url, "a", &claim("n1", 1, &[])).await.unwrap();
    a.set_agent_state(&AgentSetting {
        extension: "2005".into(),
        away: true,
        reason: Some("lunch".into()),
        at: jiff::Timestamp::now(),
    })
    .await
    .unwrap();
    let mut heard = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification")
            .unwrap();
        heard.push((n.channel().to_owned(), n.payload().to_owned()));
    }
    let hold: serde_json::Value = serde_json::from_str(&heard[0].1).unwrap();
    assert_eq!(heard[0].0, "sipdesk_holds");
    assert_eq!(hold["extension"], got.as_str());
    assert_eq!(hold["instance"], "a");
    assert_eq!(hold["state"], "busy");
    let away: serde_json::Value = serde_json::from_str(&heard[1].1).unwrap();
    assert_eq!(heard[1].0, "sipdesk_agents");
    assert_eq!(away["extension"], "2005");
    assert_eq!(away["state"], "away");
    assert_eq!(away["reason"], "lunch");

    // a goes silent: b takes over and a's agent is free (and that is notified too).
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("UPDATE instances SET heartbeat_at = heartbeat_at - 60000 WHERE id = 'a'")
        .execute(&mut conn)
        .await
        .unwrap();
    b.take_over_dead("b", jiff::Timestamp::now(), &|_| Vec::new())
        .await
        .unwrap();
    assert!(b.holds().await.unwrap().is_empty());
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    let freed: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
    assert_eq!(
        (freed["extension"].as_str(), freed["state"].as_str()),
        (Some(got.as_str()), Some("free"))
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_voicemail_is_delivered_by_the_live_instance_that_recorded_it() {
    let Some(db) = postgres("a_voicemail_is_delivered_by_the_live_instance_that_recorded_it").await
    else {
        return;
    };
    let a = Store::open(&db.url).await.unwrap().for_instance("a");
    let b = Store::open(&db.url).await.unwrap().for_instance("b");
    assert!(
        a.join_cluster("a", "ta", Duration::from_secs(15))
            .await
            .unwrap()
    );
    assert!(
        b.join_cluster("b", "tb", Duration::from_secs(15))
            .await
            .unwrap()
    );
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    for (id, voicemail) in [
        (
            "vm",
            Some(
                "{\"file\":\"/var/lib/sipdesk/voicemail/vm.wav\",\"duration_ms\":5000,\"end\":\"silence\"}",
            ),
        ),
        ("plain", None),
    ] {
        sqlx::query(
            "INSERT INTO calls (id, sip_call_id, direction, caller, callee, started_at, ended_at, outcome, instance, voicemail_json)
             VALUES ($1, $1, 'inbound', '+34600123456', '100', $2, $2, 'missed', 'a', $3)",
        )
        .bind(id)
        .bind(now)
        .bind(voicemail)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO deliveries (id, call_id, integration, contact_key, call_started_at, created_at, state, attempts, pending_since, next_attempt_at, updated_at)
             VALUES ($1, $1, 'zd', $1, $2, $2, 'pending', 0, $2, $2, $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    let lease = later + jiff::SignedDuration::from_secs(60);
    let by_b = b.claim_deliveries("zd", 10, later, lease).await.unwrap();
    assert_eq!(
        by_b.iter().map(|d| d.call_id.as_str()).collect::<Vec<_>>(),
        vec!["plain"],
        "b leaves a's voicemail to a"
    );
    let by_a = a.claim_deliveries("zd", 10, later, lease).await.unwrap();
    assert_eq!(
        by_a.iter().map(|d| d.call_id.as_str()).collect::<Vec<_>>(),
        vec!["vm"]
    );
    // b never sweeps a's recordings.
    let far = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    assert!(b.voicemails_before(far, None, 10).await.unwrap().is_empty());
    assert_eq!(a.voicemails_before(far, None, 10).await.unwrap().len(), 1);
    db.drop_db().await;
}

#[tokio::test]
async fn claims_passing_busy_agents_in_opposite_orders_do_not_deadlock() {
    let Some(db) = postgres("claims_passing_busy_agents_in_opposite_orders_do_not_deadlock").await
    else {
        return;
    };
    // Opened for its migrations.
    let _store = Store::open(&db.url).await.unwrap();
    for (i, agent) in ["X", "Y"].iter().enumerate() {
        tell(&db.url, "c", agent, Hold::Busy, 1 + i as u64).await;
    }
    let claims = (0..40u64).map(|i| {
        let url = &db.url;
        async move {
            let agents = if i % 2 == 0 { ["X", "Y"] } else { ["Y", "X"] };
            let claim = Claim {
                call: 0,
                call_id: format!("d{i}"),
                group: format!("g{}", i % 2),
                agents: agents.iter().map(|a| a.to_string()).collect(),
                skip: Vec::new(),
                version: 10 + i,
            };
            AgentsLink::new(url).claim("a", &claim).await
        }
    });
    for result in futures_util::future::join_all(claims).await {
        assert_eq!(result.unwrap(), None, "both held, no error (no deadlock)");
    }
    db.drop_db().await;
}
