//! The Zendesk connector reads what agents write on tickets from the fake Zendesk's incremental
//! ticket event export (see `common/zendesk.rs`): replies and notes with their author, privacy,
//! body and ticket; paging by `end_time`; the export's own refusals and limit; users; and the
//! internal note sipdesk writes when a reply cannot be sent.

mod common;

use std::time::Duration;

use common::zendesk::{FakeZendesk, Settings};
use sipdesk::config::{Config, Secret, Vendor};
use sipdesk::helpdesk::HelpdeskError;
use sipdesk::helpdesk::zendesk::Zendesk;
use sipdesk::helpdesk::zendesk::events::CommentEvent;

/// Past the minute Zendesk leaves out of the export.
const PAST_THE_MINUTE: Duration = Duration::from_secs(61);

fn connector(fake: &FakeZendesk) -> Zendesk {
    let dir = std::env::temp_dir().join(format!("sipdesk-zd-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config::from_toml(
        &format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\npbx = \"127.0.0.1:5061\"\n\n\
             [database]\nstate_directory = \"{dir}\"\nurl = \"sqlite://{dir}/sipdesk.db\"\n\n{groups}\n\
             [[helpdesks]]\nname = \"zd\"\nkind = \"zendesk\"\nbase_url = \"{url}\"\n\
             email = \"bot@example.com\"\ntoken_env = \"SIPDESK_ZD_EVENTS_TOKEN\"\n\
             groups = [\"support\"]\nrequests_per_minute = 6000\nrequest_timeout = \"5s\"\n",
            dir = dir.display(),
            groups = common::calls::groups(1),
            url = fake.url,
        ),
        "zendesk_events.toml",
    )
    .expect("a valid configuration");
    let settings = &config.helpdesks[0];
    let Vendor::Zendesk(own) = &settings.vendor else {
        panic!("a Zendesk entry");
    };
    Zendesk::new(
        settings,
        own,
        &Secret::new("t0ken".to_owned()),
        config.defaults.region,
    )
    .expect("a connector")
}

/// Where a test's export starts: before anything it writes.
fn start(fake: &FakeZendesk) -> i64 {
    fake.now().as_second() - 120
}

/// A plain HTTP client, to speak to the fake as no connector would.
fn raw_client() -> reqwest::Client {
    sipdesk::helpdesk::http::install_crypto();
    reqwest::Client::new()
}

fn ids(comments: &[CommentEvent]) -> Vec<u64> {
    comments.iter().map(|c| c.comment_id).collect()
}

#[tokio::test]
async fn an_agents_public_reply_is_read_once_with_its_author_body_and_ticket() {
    let fake = FakeZendesk::start(Settings::default());
    let zd = connector(&fake);
    let ana = fake.add_agent("Ana", "ana@example.com");
    let caller = fake.add_customer("Caller", "+34600123456");
    let from = start(&fake);
    let ticket = fake.add_ticket(caller, "SMS from +34600123456: hello");
    let reply = fake.reply(ticket, ana, "Hello, how can we help?", true);
    fake.advance_clock(PAST_THE_MINUTE);

    let page = zd.comment_events(from).await.unwrap();

    assert!(page.end_of_stream);
    assert_eq!(page.comments.len(), 2, "{page:?}");
    // sipdesk's own note first, as written: private, by the API user.
    let note = &page.comments[0];
    assert_eq!(
        (note.ticket_id, note.author_id, note.public),
        (ticket, 1, false)
    );
    assert_eq!(note.body, "SMS from +34600123456: hello");
    let answer = &page.comments[1];
    assert_eq!(answer.comment_id, reply);
    assert_eq!(answer.ticket_id, ticket);
    assert_eq!(answer.author_id, ana);
    assert!(answer.public);
    assert_eq!(answer.body, "Hello, how can we help?");
    let written = fake.tickets()[0].comments.last().unwrap().at;
    assert_eq!(answer.at.as_second(), written.as_second());
    assert_eq!(
        page.comments
            .iter()
            .filter(|c| c.comment_id == reply)
            .count(),
        1
    );
}

#[tokio::test]
async fn the_next_call_from_end_time_gives_only_later_comments() {
    let fake = FakeZendesk::start(Settings::default());
    let zd = connector(&fake);
    let ana = fake.add_agent("Ana", "ana@example.com");
    let caller = fake.add_customer("Caller", "+34600123456");
    let from = start(&fake);
    let ticket = fake.add_ticket(caller, "SMS");
    let first = fake.reply(ticket, ana, "First", true);
    fake.advance_clock(PAST_THE_MINUTE);
    let page = zd.comment_events(from).await.unwrap();
    assert!(ids(&page.comments).contains(&first));
    assert!(page.end_of_stream);

    let again = zd.comment_events(page.end_time).await.unwrap();
    assert_eq!(again.comments, Vec::new(), "nothing new yet");
    assert!(again.end_time >= page.end_time);

    let second = fake.reply(ticket, ana, "Second", true);
    // Still within the minute Zendesk leaves out.
    let early = zd.comment_events(again.end_time).await.unwrap();
    assert_eq!(early.comments, Vec::new());
    fake.advance_clock(PAST_THE_MINUTE);
    let later = zd.comment_events(early.end_time).await.unwrap();
    assert_eq!(ids(&later.comments), vec![second]);
    assert_eq!(later.comments[0].body, "Second");
}

#[tokio::test]
async fn a_private_note_is_read_as_not_public() {
    let fake = FakeZendesk::start(Settings::default());
    let zd = connector(&fake);
    let ana = fake.add_agent("Ana", "ana@example.com");
    let caller = fake.add_customer("Caller", "+34600123456");
    let from = start(&fake);
    let ticket = fake.add_ticket(caller, "SMS");
    let note = fake.reply(ticket, ana, "Customer sounded upset", false);
    fake.advance_clock(PAST_THE_MINUTE);

    let page = zd.comment_events(from).await.unwrap();

    let read = page
        .comments
        .iter()
        .find(|c| c.comment_id == note)
        .expect("the note");
    assert!(!read.public);
    assert_eq!(read.author_id, ana);
    assert_eq!(read.body, "Customer sounded upset");
}

#[tokio::test]
async fn a_comment_written_through_the_api_keeps_its_author_and_privacy() {
    let fake = FakeZendesk::start(Settings::default());
    let zd = connector(&fake);
    let ana = fake.add_agent("Ana", "ana@example.com");
    let caller = fake.add_customer("Caller", "+34600123456");
    let from = start(&fake);
    let ticket = fake.add_ticket(caller, "SMS");
    let answer = raw_client()
        .put(format!("{}/api/v2/tickets/{ticket}.json", fake.url))
        .basic_auth("bot@example.com/token", Some("t0ken"))
        .json(&serde_json::json!({"ticket": {"status": "pending",
            "comment": {"body": "Written as Ana", "public": true, "author_id": ana}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    fake.advance_clock(PAST_THE_MINUTE);

    let page = zd.comment_events(from).await.unwrap();

    let written = page.comments.last().unwrap();
    assert_eq!(
        (written.author_id, written.public, written.body.as_str()),
        (ana, true, "Written as Ana")
    );
    let stored = &fake.tickets()[0].comments[1];
    assert_eq!((stored.author_id, stored.public), (ana, true));
    // The update is the API user's; its status change is a child event too.
    let event = fake.events().last().unwrap().clone();
    assert_eq!(event.updater_id, 1);
    assert!(event.children.iter().any(|c| matches!(c,
        common::zendesk::Child::Change { field: "status", value, .. } if value == "pending")));
}

#[tokio::test]
async fn the_export_refuses_a_missing_or_recent_start_time_and_limits_its_rate() {
    let fake = FakeZendesk::start(Settings::default());
    let zd = connector(&fake);
    let missing = raw_client()
        .get(format!(
            "{}/api/v2/incremental/ticket_events.json",
            fake.url
        ))
        .basic_auth("bot@example.com/token", Some("t0ken"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let unauthenticated = raw_client()
        .get(format!(
            "{}/api/v2/incremental/ticket_events.json?start_time=0",
            fake.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let recent = zd.comment_events(fake.now().as_second() - 30).await;
    assert!(
        matches!(&recent, Err(HelpdeskError::Permanent(m)) if m.contains("422") && m.contains("Too recent")),
        "{recent:?}"
    );
    let future = zd.comment_events(fake.now().as_second() + 3600).await;
    assert!(matches!(future, Err(HelpdeskError::Permanent(_))));

    // Ten requests a minute, the refused ones counted.
    for _ in 3..10 {
        zd.comment_events(0).await.unwrap();
    }
    let limited = zd.comment_events(0).await;
    let Err(HelpdeskError::Retry { after, reason }) = limited else {
        panic!("{limited:?}");
    };
    assert!(reason.contains("429"), "{reason}");
    let after = after.expect("Zendesk's Retry-After");
    assert!(after > Duration::ZERO && after <= Duration::from_secs(60));
    assert_eq!(fake.stats().incremental_rate_limited, 1);
}

#[tokio::test]
async fn a_user_summary_gives_email_and_role_or_nothing() {
    let fake = FakeZendesk::start(Settings::default());
    let zd = connector(&fake);
    let ana = fake.add_agent("Ana", "ana@example.com");
    let caller = fake.add_customer("Caller", "+34600123456");

    assert_eq!(
        zd.user_summary(ana).await.unwrap(),
        Some((Some("ana@example.com".to_owned()), Some("agent".to_owned())))
    );
    assert_eq!(
        zd.user_summary(caller).await.unwrap(),
        Some((None, Some("end-user".to_owned())))
    );
    fake.purge_user(ana);
    assert_eq!(zd.user_summary(ana).await.unwrap(), None);
}

#[tokio::test]
async fn an_internal_note_is_a_private_comment_by_the_api_user() {
    let fake = FakeZendesk::start(Settings::default());
    let zd = connector(&fake);
    let caller = fake.add_customer("Caller", "+34600123456");
    let from = start(&fake);
    let ticket = fake.add_ticket(caller, "SMS");

    zd.internal_note(ticket, "The reply could not be sent: no SMS route")
        .await
        .unwrap();

    let comments = &fake.tickets()[0].comments;
    let note = comments.last().unwrap();
    assert_eq!(note.body, "The reply could not be sent: no SMS route");
    assert!(!note.public);
    assert_eq!(note.author_id, 1);
    fake.advance_clock(PAST_THE_MINUTE);
    let page = zd.comment_events(from).await.unwrap();
    let read = page.comments.last().unwrap();
    assert_eq!((read.comment_id, read.public), (note.id, false));

    let missing = zd.internal_note(999_999, "nobody reads this").await;
    assert!(matches!(missing, Err(HelpdeskError::Permanent(_))));
}

#[tokio::test]
async fn the_fake_export_answers_in_zendesks_shape() {
    let fake = FakeZendesk::start(Settings::default());
    let ana = fake.add_agent("Ana", "ana@example.com");
    let caller = fake.add_customer("Caller", "+34600123456");
    let from = start(&fake);
    let ticket = fake.add_ticket(caller, "SMS");
    let reply = fake.reply(ticket, ana, "a < b", true);
    fake.set_status(ticket, "pending");
    fake.advance_clock(PAST_THE_MINUTE);
    let export = |include: &'static str| {
        let url = format!(
            "{}/api/v2/incremental/ticket_events.json?start_time={from}{include}",
            fake.url
        );
        async move {
            raw_client()
                .get(url)
                .basic_auth("bot@example.com/token", Some("t0ken"))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };

    let page = export("&include=comment_events").await;

    assert_eq!(page["count"], 3, "{page:#}");
    assert_eq!(page["end_of_stream"], true);
    let end_time = page["end_time"].as_i64().unwrap();
    assert_eq!(
        page["next_page"],
        format!(
            "{}/api/v2/incremental/ticket_events.json?start_time={end_time}&include=comment_events",
            fake.url
        )
    );
    let events = page["ticket_events"].as_array().unwrap();
    let created = &events[0];
    assert_eq!(created["ticket_id"], ticket);
    assert_eq!(created["event_type"], "Audit");
    assert_eq!(created["via"], "Web service");
    assert_eq!(created["updater_id"], 1);
    let second = created["timestamp"].as_i64().unwrap();
    assert_eq!(
        created["created_at"],
        jiff::Timestamp::from_second(second).unwrap().to_string()
    );
    let fields: Vec<&str> = created["child_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["event_type"] == "Create")
        .map(|c| c["field_name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["subject", "status", "requester_id"]);
    let comment = &events[1]["child_events"][0];
    assert_eq!(comment["id"], reply);
    assert_eq!(comment["type"], "Comment");
    assert_eq!(comment["author_id"], ana);
    assert_eq!(comment["body"], "a < b");
    assert_eq!(comment["plain_body"], "a < b");
    assert!(comment["html_body"].as_str().unwrap().contains("a &lt; b"));
    assert_eq!(comment["audit_id"], events[1]["id"]);
    assert_eq!(events[1]["updater_id"], ana);
    let status = &events[2]["child_events"][0];
    assert_eq!(
        (
            &status["field_name"],
            &status["value"],
            &status["previous_value"]
        ),
        (&"status".into(), &"pending".into(), &"new".into())
    );

    let bare = export("").await;
    let comment = &bare["ticket_events"][1]["child_events"][0];
    assert_eq!(comment["comment_present"], true);
    assert_eq!(comment["comment_public"], true);
    assert!(comment.get("body").is_none());
}
