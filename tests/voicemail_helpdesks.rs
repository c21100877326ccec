//! Voicemails reach the helpdesks, through the real delivery path: a voicemail call record with
//! a real WAV file is written to the daemon's database with its deliveries (as the store writer
//! does when a call ends), the daemon delivers it to the fakes, and what each helpdesk got is
//! asserted — Zendesk's upload attached to the ticket's note (once, across a 5xx), Help Scout's
//! attachment, Intercom's and the webhook's signed link, fetched from the admin server (and
//! refused when tampered with or expired), and the webhook's inline audio. Retention is checked
//! against the store: an old delivered recording goes, an undelivered one stays.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::calls::groups;
use common::daemon::Daemon;
use common::helpscout::{self, FakeHelpScout};
use common::intercom::{self, FakeIntercom};
use common::receiver::{Receiver, SECRET};
use common::zendesk::{self, FakeZendesk};
use jiff::Timestamp;
use sipdesk::call::{CallRecord, Change, Direction, Outcome, Voicemail};
use sipdesk::store::{NewDelivery, Store};

const WAIT: Duration = Duration::from_secs(30);
const CALLER: &str = "+34600123456";

/// A real recording: 0.5 s of a tone, 8 kHz 16-bit mono PCM.
fn wav() -> Vec<u8> {
    let samples: Vec<i16> = (0..4000)
        .map(|n| ((n as f64 * 0.3).sin() * 8000.0) as i16)
        .collect();
    let data = samples.len() as u32 * 2;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A voicemail call to the `support` group that ended at `ended_at`, its recording written
/// under `dir/voicemail/`.
fn voicemail_call(dir: &Path, id: &str, ended_at: Timestamp) -> CallRecord {
    let folder = dir.join("voicemail");
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join(format!("{id}.wav"));
    std::fs::write(&file, wav()).unwrap();
    let started_at = ended_at - jiff::SignedDuration::from_secs(40);
    CallRecord {
        id: id.into(),
        sip_call_id: format!("sip-{id}"),
        direction: Direction::Inbound,
        queue: Some("100".into()),
        group: Some("support".into()),
        groups: vec!["support".into()],
        caller: CALLER.into(),
        callee: "100".into(),
        agent: None,
        agent_email: None,
        agents: vec![],
        started_at,
        answered_at: None,
        ended_at,
        outcome: Outcome::Voicemail,
        reason: None,
        ended_by: None,
        out_of_hours: false,
        recording_url: None,
        voicemail: Some(Voicemail {
            file: file.display().to_string(),
            duration_ms: 12_400,
            end: "hangup".into(),
        }),
        explanation: vec!["support: serves queue 100".into()],
        tags: vec![],
        sms: None,
    }
}

/// A daemon configured with `helpdesks` (and `public_url` pointing at its own admin server when
/// `links`), not started yet.
fn prepare(name: &str, helpdesks: &str, links: bool, files: &[(&str, &str)]) -> Daemon {
    let daemon = Daemon::prepare_with_env(name, "", &format!("{}{helpdesks}", groups(1)), &[]);
    for (file, contents) in files {
        std::fs::write(daemon.dir.join(file), contents).unwrap();
    }
    if links {
        let mut text = std::fs::read_to_string(&daemon.config).unwrap();
        text.push_str(&format!(
            "\n[media]\npublic_url = \"http://127.0.0.1:{}\"\nlink_lifetime = \"1h\"\n",
            daemon.admin_port
        ));
        std::fs::write(&daemon.config, text).unwrap();
    }
    daemon
}

fn database(dir: &Path) -> String {
    format!("sqlite://{}/sipdesk.db", dir.display())
}

/// Writes the call and one delivery per integration, as the store writer does at a call's end.
fn seed(url: &str, call: &CallRecord, integrations: &[&str]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(url).await.unwrap();
        let deliveries: Vec<NewDelivery> = integrations
            .iter()
            .map(|integration| NewDelivery {
                call_id: call.id.clone(),
                integration: (*integration).to_owned(),
                // One contact per call here, so the retention test can finish them in any order.
                contact_key: call.id.clone(),
                call_started_at: call.started_at,
                skipped: None,
            })
            .collect();
        store
            .apply(&[Change::CallEnded(Box::new(call.clone()))], &deliveries)
            .await
            .unwrap();
    });
}

/// The path and query of a link on the admin server.
fn path_of(link: &str) -> String {
    let rest = link.strip_prefix("http://127.0.0.1:").unwrap();
    rest[rest.find('/').unwrap()..].to_owned()
}

/// A raw GET on the admin server (no token): status and body bytes.
fn fetch(daemon: &Daemon, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.admin_port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: sipdesk\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.to_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 4 + size..];
    }
}

/// The link works (the very bytes), and refuses a changed signature, a stretched expiry and an
/// expired link with 403.
fn link_works(daemon: &Daemon, link: &str) {
    let path = path_of(link);
    let (status, body) = fetch(daemon, &path);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, wav());
    let signature = path.split("signature=").nth(1).unwrap();
    let flipped: String = signature
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'a' { 'b' } else { 'a' }
            } else {
                c
            }
        })
        .collect();
    let tampered = path.replace(signature, &flipped);
    assert_eq!(fetch(daemon, &tampered).0, 403);
    let expires: i64 = path
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stretched = path.replace(
        &format!("expires={expires}"),
        &format!("expires={}", expires + 3600),
    );
    assert_eq!(fetch(daemon, &stretched).0, 403);
    // An expired link, properly signed with the daemon's own key.
    let key = std::fs::read(daemon.dir.join("media.key")).unwrap();
    let call_id = path
        .strip_prefix("/voicemail/")
        .unwrap()
        .split(".wav")
        .next()
        .unwrap();
    let past = Timestamp::now().as_second() - 10;
    let expired = sipdesk::recordings::link::url("", &key, call_id, past);
    let (status, body) = fetch(daemon, &expired);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("expired"));
    // Without any signature.
    assert_eq!(fetch(daemon, &format!("/voicemail/{call_id}.wav")).0, 403);
}

#[test]
fn zendesk_gets_one_upload_attached_to_one_voicemail_ticket_across_a_5xx() {
    let zd = FakeZendesk::start(zendesk::Settings::default());
    let helpdesks = format!(
        r#"
[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["support"]
voicemail = {{ log = "new", status = "pending" }}
missed_assignee = "group:5"
request_timeout = "2s"
"#,
        zd.url
    );
    let mut daemon = prepare("vm-zendesk", &helpdesks, false, &[("zd.token", "t0ken")]);
    let call = voicemail_call(&daemon.dir, "vm-zd-1", Timestamp::now());
    seed(&database(&daemon.dir), &call, &["zd"]);
    // The ticket's creation fails once with a 500: the retry must not upload again.
    zd.fail_next_on("POST /api/v2/tickets", 1, zendesk::Fault::Status(500));
    daemon.launch();
    let deliveries = daemon.settled_deliveries(1, WAIT);
    assert_eq!(
        deliveries[0]["state"],
        "done",
        "{deliveries:?}\n{}",
        daemon.log()
    );
    let tickets = zd.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let ticket = &tickets[0];
    assert_eq!(
        ticket.subject.as_deref(),
        Some(&*format!("Voicemail from {CALLER}"))
    );
    assert!(
        ticket.tags.contains(&"sipdesk_voicemail".to_owned()),
        "{:?}",
        ticket.tags
    );
    assert_eq!(ticket.status, "pending", "the voicemail rule's status");
    assert_eq!(ticket.group_id, Some(5));
    let note = &ticket.comments[0];
    assert!(!note.public);
    assert!(
        note.body.contains("Voicemail: 12s left by the caller"),
        "{}",
        note.body
    );
    assert_eq!(note.attachments.len(), 1, "{note:?}");
    let attachment = &note.attachments[0];
    assert_eq!(attachment.file_name, "voicemail-vm-zd-1.wav");
    assert_eq!(attachment.content_type, "audio/wav");
    assert_eq!(attachment.bytes, wav());
    let stats = zd.stats();
    assert_eq!(
        stats.endpoints.get("POST /api/v2/uploads"),
        Some(&1),
        "{:?}",
        stats.endpoints
    );
    // The 500 is answered before the request reaches the account (not counted there); the
    // retry looks the ticket up, then sends the saved request with the same upload token.
    assert_eq!(stats.faults_served, 1);
    assert_eq!(
        stats.endpoints.get("POST /api/v2/tickets"),
        Some(&1),
        "{:?}",
        stats.endpoints
    );
    assert_eq!(
        stats.endpoints.get("GET /api/v2/tickets"),
        Some(&1),
        "{:?}",
        stats.endpoints
    );
    assert_eq!(zd.uploads().len(), 1);
    daemon.stop();
}

#[test]
fn a_removed_recording_fails_the_zendesk_delivery_saying_so() {
    let zd = FakeZendesk::start(zendesk::Settings::default());
    let helpdesks = format!(
        "\n[[helpdesks]]\nname = \"zd\"\nkind = \"zendesk\"\nbase_url = \"{}\"\nemail = \"bot@example.com\"\ntoken_file = \"zd.token\"\ngroups = [\"support\"]\nrequest_timeout = \"2s\"\n",
        zd.url
    );
    let mut daemon = prepare("vm-removed", &helpdesks, false, &[("zd.token", "t0ken")]);
    let call = voicemail_call(&daemon.dir, "vm-gone-1", Timestamp::now());
    std::fs::remove_file(&call.voicemail.as_ref().unwrap().file).unwrap();
    seed(&database(&daemon.dir), &call, &["zd"]);
    daemon.launch();
    let deliveries = daemon.settled_deliveries(1, WAIT);
    assert_eq!(deliveries[0]["state"], "failed", "{deliveries:?}");
    let error = deliveries[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("was removed"), "{deliveries:?}");
    assert!(zd.tickets().is_empty());
    daemon.stop();
}

#[test]
fn help_scout_gets_the_recording_attached_to_the_note() {
    let hs = FakeHelpScout::start(helpscout::Settings::default());
    let helpdesks = format!(
        r#"
[[helpdesks]]
name = "hs"
kind = "helpscout"
base_url = "{}"
client_id = "app-id"
token_file = "hs.secret"
mailbox_id = 7
groups = ["support"]
request_timeout = "2s"
"#,
        hs.url
    );
    let mut daemon = prepare(
        "vm-helpscout",
        &helpdesks,
        false,
        &[("hs.secret", "app-secret")],
    );
    let call = voicemail_call(&daemon.dir, "vm-hs-1", Timestamp::now());
    seed(&database(&daemon.dir), &call, &["hs"]);
    daemon.launch();
    let deliveries = daemon.settled_deliveries(1, WAIT);
    assert_eq!(
        deliveries[0]["state"],
        "done",
        "{deliveries:?}\n{}",
        daemon.log()
    );
    let conversations = hs.conversations();
    assert_eq!(conversations.len(), 1);
    let note = conversations[0]
        .threads
        .iter()
        .find(|t| t.kind == "note")
        .expect("a note");
    assert!(
        note.text.contains("Voicemail: 12s left by the caller"),
        "{}",
        note.text
    );
    assert_eq!(note.attachments.len(), 1);
    assert_eq!(note.attachments[0].file_name, "voicemail-vm-hs-1.wav");
    assert_eq!(note.attachments[0].mime_type, "audio/wav");
    assert_eq!(note.attachments[0].data, wav());
    daemon.stop();
}

#[test]
fn intercom_and_the_webhook_get_a_working_signed_link_and_inline_audio() {
    let ic = FakeIntercom::start(intercom::Settings::default());
    ic.add_admin("boss@example.com");
    let dir = common::daemon::test_dir("vm-links-receiver");
    let receiver = Receiver::start(&dir, "");
    let helpdesks = format!(
        r#"
[[helpdesks]]
name = "ic"
kind = "intercom"
base_url = "{}"
token_file = "ic.token"
admin_email = "boss@example.com"
groups = ["support"]
request_timeout = "2s"

[[helpdesks]]
name = "hook"
kind = "webhook"
url = "{}"
token_file = "hook.secret"
groups = ["support"]
inline_audio = true
request_timeout = "2s"
"#,
        ic.url,
        receiver.url()
    );
    let mut daemon = prepare(
        "vm-links",
        &helpdesks,
        true,
        &[("ic.token", "ic-token"), ("hook.secret", SECRET)],
    );
    let call = voicemail_call(&daemon.dir, "vm-link-1", Timestamp::now());
    seed(&database(&daemon.dir), &call, &["ic", "hook"]);
    daemon.launch();
    let deliveries = daemon.settled_deliveries(2, WAIT);
    assert!(
        deliveries.iter().all(|d| d["state"] == "done"),
        "{deliveries:?}\n{}",
        daemon.log()
    );

    // Intercom: the note says it, with the link.
    let conversations = ic.conversations();
    assert_eq!(conversations.len(), 1);
    let note = conversations[0]
        .parts
        .iter()
        .find(|p| p.kind == "note")
        .expect("a note");
    let text = note.body.replace("&amp;", "&");
    assert!(text.contains("Voicemail: 12s left by the caller"), "{text}");
    let start = text.find("Listen: ").expect("a link") + 8;
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '<')
        .collect();
    assert!(
        link.starts_with(&format!(
            "http://127.0.0.1:{}/voicemail/vm-link-1.wav?expires=",
            daemon.admin_port
        )),
        "{link}"
    );
    link_works(&daemon, &link);

    // The webhook: the voicemail object, its link, and the bytes inline.
    let posted = receiver.requests();
    let payload = posted
        .iter()
        .find_map(|r| {
            let body: serde_json::Value = serde_json::from_str(r["body"].as_str()?).ok()?;
            (body["data"]["id"] == "vm-link-1").then_some(body)
        })
        .unwrap_or_else(|| panic!("no payload for the call: {posted:?}"));
    let voicemail = &payload["data"]["voicemail"];
    assert_eq!(voicemail["duration_ms"], 12_400);
    assert_eq!(voicemail["content_type"], "audio/wav");
    assert_eq!(payload["data"]["call_type"], "voicemail");
    use base64::Engine;
    let inline = base64::engine::general_purpose::STANDARD
        .decode(voicemail["audio_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(inline, wav());
    link_works(&daemon, voicemail["url"].as_str().unwrap());
    daemon.stop();
}

#[test]
fn retention_removes_an_old_delivered_recording_and_keeps_an_undelivered_one() {
    let dir = std::env::temp_dir().join(format!("sipdesk-retention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = database(&dir);
    let old = Timestamp::now() - jiff::SignedDuration::from_hours(24 * 40);
    let delivered = voicemail_call(&dir, "vm-old-done", old);
    let waiting = voicemail_call(&dir, "vm-old-pending", old);
    let recent = voicemail_call(&dir, "vm-new-done", Timestamp::now());
    for call in [&delivered, &waiting, &recent] {
        seed(&url, call, &["zd"]);
    }
    let file = |c: &CallRecord| PathBuf::from(&c.voicemail.as_ref().unwrap().file);
    let config = sipdesk::config::Config::from_toml(
        &format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\npbx = \"127.0.0.1:5061\"\n\n[database]\nstate_directory = \"{}\"\nurl = \"{url}\"\n\n{}",
            dir.display(),
            groups(1)
        ),
        "test.toml",
    )
    .unwrap();
    let recordings = sipdesk::recordings::Recordings::of(&config);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let swept = runtime.block_on(async {
        let store = Store::open(&url).await.unwrap();
        let now = Timestamp::now();
        let claimed = store
            .claim_deliveries("zd", 10, now, now + jiff::SignedDuration::from_secs(30))
            .await
            .unwrap();
        for call in [&delivered, &recent] {
            let mine = claimed.iter().find(|d| d.call_id == call.id).unwrap();
            store
                .delivery_done(mine, "1", "created ticket #1")
                .await
                .unwrap();
        }
        let swept = sipdesk::recordings::retention::sweep(&store, &recordings, Timestamp::now())
            .await
            .unwrap();
        // The removed recording is marked on its call: later sweeps no longer read it.
        let listed: Vec<String> = store
            .voicemails_before(Timestamp::now(), None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        assert!(!listed.contains(&delivered.id), "{listed:?}");
        assert!(listed.contains(&waiting.id), "{listed:?}");
        // Batches: one at a time, each after the last.
        let first = store
            .voicemails_before(Timestamp::now(), None, 1)
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        let next = store
            .voicemails_before(Timestamp::now(), Some((first[0].1, &first[0].0)), 1)
            .await
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].0, first[0].0);
        let again = sipdesk::recordings::retention::sweep(&store, &recordings, Timestamp::now())
            .await
            .unwrap();
        assert_eq!((again.removed, again.kept), (0, 1));
        swept
    });
    assert!(
        !file(&delivered).exists(),
        "an old delivered recording is removed"
    );
    assert!(file(&waiting).exists(), "an undelivered one is kept");
    assert!(file(&recent).exists(), "a recent one is kept");
    assert_eq!((swept.removed, swept.kept), (1, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The recording of `call` replaced by a sparse file of `size` bytes (never read: too large).
fn oversized(call: &CallRecord, size: u64) {
    let file = std::fs::File::create(&call.voicemail.as_ref().unwrap().file).unwrap();
    file.set_len(size).unwrap();
}

#[test]
fn a_saved_zendesk_request_whose_upload_expired_uploads_again() {
    let zd = FakeZendesk::start(zendesk::Settings::default());
    let helpdesks = format!(
        "\n[[helpdesks]]\nname = \"zd\"\nkind = \"zendesk\"\nbase_url = \"{}\"\nemail = \"bot@example.com\"\ntoken_file = \"zd.token\"\ngroups = [\"support\"]\nrequest_timeout = \"2s\"\n",
        zd.url
    );
    let mut daemon = prepare("vm-zd-stale", &helpdesks, false, &[("zd.token", "t0ken")]);
    let call = voicemail_call(&daemon.dir, "vm-zd-stale-1", Timestamp::now());
    let url = database(&daemon.dir);
    seed(&url, &call, &["zd"]);
    // An earlier attempt uploaded the recording and saved its ticket request, then Zendesk was
    // out of reach for two hours: the upload is gone, and the saved request says how old it is.
    let requester = zd.add_customer("Caller", CALLER);
    let old_token = zd.add_upload("voicemail-vm-zd-stale-1.wav", wav());
    zd.age_uploads(Duration::from_secs(2 * 3600));
    let uploaded_at = Timestamp::now() - jiff::SignedDuration::from_hours(2);
    let saved = serde_json::json!({
        "kind": "create",
        "uploaded_at": uploaded_at,
        "body": { "ticket": {
            "subject": format!("Voicemail from {CALLER}"),
            "comment": {
                "body": format!("Voicemail: 12s left by the caller\n[sipdesk:{}]", call.id),
                "public": false,
                "uploads": [old_token],
            },
            "tags": ["sipdesk", "sipdesk_voicemail"],
            "requester_id": requester,
            "external_id": call.id,
        }},
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(&url).await.unwrap();
        let now = Timestamp::now();
        let claimed = store
            .claim_deliveries("zd", 1, now, now + jiff::SignedDuration::from_millis(1))
            .await
            .unwrap();
        store
            .delivery_request(&claimed[0], Some(&saved.to_string()))
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(20));
    daemon.launch();
    let deliveries = daemon.settled_deliveries(1, WAIT);
    assert_eq!(
        deliveries[0]["state"],
        "done",
        "{deliveries:?}\n{}",
        daemon.log()
    );
    let tickets = zd.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let note = &tickets[0].comments[0];
    assert_eq!(note.attachments.len(), 1, "{note:?}");
    assert_ne!(note.attachments[0].token, old_token, "a new upload");
    assert_eq!(note.attachments[0].bytes, wav());
    assert_eq!(zd.uploads().len(), 2, "uploaded once more");
    assert!(
        zd.stats().rejections.is_empty(),
        "{:?}",
        zd.stats().rejections
    );
    daemon.stop();
}

#[test]
fn a_recording_too_large_for_zendesk_goes_as_a_note_saying_so_with_its_link() {
    let zd = FakeZendesk::start(zendesk::Settings::default());
    let helpdesks = format!(
        "\n[[helpdesks]]\nname = \"zd\"\nkind = \"zendesk\"\nbase_url = \"{}\"\nemail = \"bot@example.com\"\ntoken_file = \"zd.token\"\ngroups = [\"support\"]\nrequest_timeout = \"2s\"\n",
        zd.url
    );
    let mut daemon = prepare("vm-zd-large", &helpdesks, true, &[("zd.token", "t0ken")]);
    let call = voicemail_call(&daemon.dir, "vm-zd-large-1", Timestamp::now());
    oversized(&call, sipdesk::helpdesk::zendesk::MAX_UPLOAD + 1);
    seed(&database(&daemon.dir), &call, &["zd"]);
    daemon.launch();
    let deliveries = daemon.settled_deliveries(1, WAIT);
    assert_eq!(
        deliveries[0]["state"],
        "done",
        "{deliveries:?}\n{}",
        daemon.log()
    );
    let tickets = zd.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let note = &tickets[0].comments[0];
    assert!(note.attachments.is_empty(), "{note:?}");
    for says in [
        "A voicemail was left (12s)",
        "too large to attach",
        "Zendesk takes files up to 50.0 MB",
        &format!(
            "Listen: http://127.0.0.1:{}/voicemail/vm-zd-large-1.wav?expires=",
            daemon.admin_port
        ),
    ] {
        assert!(note.body.contains(says), "{says}: {}", note.body);
    }
    assert!(
        note.body.trim_end().ends_with("[sipdesk:vm-zd-large-1]"),
        "the marker stays last: {}",
        note.body
    );
    assert_eq!(zd.stats().endpoints.get("POST /api/v2/uploads"), None);
    assert!(
        daemon.log().contains("larger than Zendesk takes"),
        "{}",
        daemon.log()
    );
    daemon.stop();
}

#[test]
fn a_recording_too_large_for_help_scout_or_inline_audio_is_left_out_saying_so() {
    let hs = FakeHelpScout::start(helpscout::Settings::default());
    let dir = common::daemon::test_dir("vm-large-receiver");
    let receiver = Receiver::start(&dir, "");
    let helpdesks = format!(
        r#"
[[helpdesks]]
name = "hs"
kind = "helpscout"
base_url = "{}"
client_id = "app-id"
token_file = "hs.secret"
mailbox_id = 7
groups = ["support"]
request_timeout = "2s"

[[helpdesks]]
name = "hook"
kind = "webhook"
url = "{}"
token_file = "hook.secret"
groups = ["support"]
inline_audio = true
request_timeout = "2s"
"#,
        hs.url,
        receiver.url()
    );
    let mut daemon = prepare(
        "vm-large",
        &helpdesks,
        false,
        &[("hs.secret", "app-secret"), ("hook.secret", SECRET)],
    );
    let call = voicemail_call(&daemon.dir, "vm-large-1", Timestamp::now());
    let size = sipdesk::helpdesk::helpscout::MAX_ATTACHMENT
        .max(sipdesk::helpdesk::webhook::MAX_INLINE_AUDIO)
        + 1;
    oversized(&call, size);
    seed(&database(&daemon.dir), &call, &["hs", "hook"]);
    daemon.launch();
    let deliveries = daemon.settled_deliveries(2, WAIT);
    assert!(
        deliveries.iter().all(|d| d["state"] == "done"),
        "{deliveries:?}\n{}",
        daemon.log()
    );
    let conversations = hs.conversations();
    assert_eq!(conversations.len(), 1);
    let note = conversations[0]
        .threads
        .iter()
        .find(|t| t.kind == "note")
        .expect("a note");
    assert!(note.attachments.is_empty());
    for says in [
        "A voicemail was left (12s)",
        "too large to attach: Help Scout takes files up to 10.0 MB",
        "No link to the recording",
    ] {
        assert!(note.text.contains(says), "{says}: {}", note.text);
    }
    let posted = receiver.requests();
    let payload = posted
        .iter()
        .find_map(|r| {
            let body: serde_json::Value = serde_json::from_str(r["body"].as_str()?).ok()?;
            (body["data"]["id"] == "vm-large-1").then_some(body)
        })
        .unwrap_or_else(|| panic!("no payload for the call: {posted:?}"));
    let voicemail = &payload["data"]["voicemail"];
    assert_eq!(voicemail["audio_omitted"], "too_large");
    assert_eq!(voicemail["audio_size"], size);
    assert!(voicemail.get("audio_base64").is_none());
    assert_eq!(voicemail["duration_ms"], 12_400);
    daemon.stop();
}
