//! Texts end to end: SIPp plays the PBX delivering customers' texts (SIP MESSAGE) to the running
//! daemon and taking the texts sipdesk sends; the fake Zendesk (see `common/zendesk.rs`) gets the
//! text conversations (the Klaviyo seed's lifecycle), and agents' replies written in it come back
//! to SIPp as MESSAGEs, once, across a restart.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::calls::injection_file;
use common::daemon::{Daemon, SippMore, SippRun, free_port, test_dir};
use common::zendesk::{FakeZendesk, Settings, Ticket};
use serde_json::Value;
use sipdesk::store::Store;

const NUMBER: &str = "+34910000000";
const WAIT: Duration = Duration::from_secs(60);

fn config(zd: &FakeZendesk) -> String {
    format!(
        r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "support"
queues = ["100"]
agents = [{{ extension = "2001", email = "ana@example.com" }}, {{ extension = "2002" }}]

[[sms_numbers]]
number = "{NUMBER}"
name = "Soporte"
groups = ["support"]

[sms]
reply_poll = "10s"

[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{zd}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["support"]
request_timeout = "2s"
"#,
        zd = zd.url
    )
}

struct World {
    daemon: Daemon,
    zd: FakeZendesk,
    ana: u64,
    dir: PathBuf,
}

fn world(name: &str) -> World {
    world_with(name, "")
}

/// With more `[[helpdesks]]` after the Zendesk one.
fn world_with(name: &str, more: &str) -> World {
    let zd = FakeZendesk::start(Settings::default());
    let ana = zd.add_agent("Ana", "ana@example.com");
    let dir = test_dir(name);
    let daemon = Daemon::start_in(
        dir.clone(),
        "trusted = [\"127.0.0.1\"]",
        &format!("{}{more}", config(&zd)),
        None,
        &[("zd.token", "t0ken\n")],
    );
    World {
        daemon,
        zd,
        ana,
        dir,
    }
}

impl World {
    /// SIPp delivers `texts` (sender, text) to the company's number, in order, and every one
    /// gets its 202.
    fn texts(&self, scenario: &str, texts: &[(&str, &str)], rate: u32) {
        let lines: Vec<String> = texts
            .iter()
            .map(|(from, text)| format!("{from};{text}"))
            .collect();
        let inf = injection_file(&self.dir, &lines);
        let sipp = SippRun {
            scenario,
            ip: "127.0.0.1",
            port: free_port(),
            target: Some(format!("127.0.0.1:{}", self.daemon.port)),
            service: NUMBER,
            calls: texts.len() as u32,
            rate,
            tcp: false,
        }
        .spawn_with(
            &self.dir,
            &SippMore {
                inf: Some(inf),
                ..SippMore::default()
            },
        );
        self.daemon.succeeded(sipp);
    }

    /// Waits until `n` deliveries are settled (done, skipped or failed) and returns them all.
    fn settled(&self, n: usize) -> Vec<Value> {
        self.daemon.settled_deliveries(n, WAIT)
    }

    fn tickets_of(&self, requester_phone: &str) -> Vec<Ticket> {
        let users = self.zd.users();
        let ids: Vec<u64> = users
            .iter()
            .filter(|u| u.phone.as_deref() == Some(requester_phone))
            .map(|u| u.id)
            .collect();
        let mut tickets: Vec<Ticket> = self
            .zd
            .tickets()
            .into_iter()
            .filter(|t| ids.contains(&t.requester_id))
            .collect();
        tickets.sort_by_key(|t| t.id);
        tickets
    }

    async fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}/sipdesk.db", self.dir.display()))
            .await
            .unwrap()
    }
}

/// The customer's texts on a ticket, in order (the comment bodies before the marker).
fn texts_on(ticket: &Ticket) -> Vec<String> {
    ticket
        .comments
        .iter()
        .filter(|c| c.public && c.body.contains("[sipdesk:sms-"))
        .map(|c| c.body.split("\n\n[sipdesk:").next().unwrap().to_owned())
        .collect()
}

#[test]
fn texts_open_continue_reopen_and_follow_up_a_zendesk_ticket() {
    let w = world("sms-lifecycle");
    let customer = "+34600111222";

    // The first text opens a ticket tagged sms, in the customer's own words.
    w.texts(
        "text-in.xml",
        &[(customer, "Hola, necesito ayuda con mi pedido")],
        1,
    );
    w.settled(1);
    let tickets = w.tickets_of(customer);
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    let first = &tickets[0];
    assert!(first.tags.iter().any(|t| t == "sms"), "{first:#?}");
    assert_eq!(texts_on(first), vec!["Hola, necesito ayuda con mi pedido"]);
    let comment = &first.comments[0];
    assert!(comment.public, "a customer's text is public");
    assert_eq!(
        comment.author_id, first.requester_id,
        "written in the customer's name"
    );
    assert_eq!(
        first.subject.as_deref(),
        Some(&*format!("SMS from {customer}"))
    );

    // A second text while it is open: a comment on it.
    w.texts("text-in.xml", &[(customer, "Es el pedido 1234")], 1);
    w.settled(2);
    let tickets = w.tickets_of(customer);
    assert_eq!(tickets.len(), 1);
    assert_eq!(texts_on(&tickets[0]).len(), 2);

    // Solved: the next text reopens it with the comment.
    w.zd.set_status(first.id, "solved");
    w.texts("text-in.xml", &[(customer, "Sigue sin llegar")], 1);
    w.settled(3);
    let tickets = w.tickets_of(customer);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].status, "open", "reopened");
    assert_eq!(texts_on(&tickets[0]).last().unwrap(), "Sigue sin llegar");

    // Closed: the next text starts a follow-up ticket.
    w.zd.set_status(first.id, "closed");
    w.texts("text-in.xml", &[(customer, "Otra pregunta")], 1);
    w.settled(4);
    let tickets = w.tickets_of(customer);
    assert_eq!(tickets.len(), 2, "{tickets:#?}");
    assert_eq!(tickets[1].followup_source_id, Some(first.id));
    assert!(tickets[1].tags.iter().any(|t| t == "sms"));
    assert_eq!(texts_on(&tickets[1]), vec!["Otra pregunta"]);

    // A compliance keyword makes nothing; HELP makes a ticket.
    let other = "+34600333444";
    w.texts("text-in.xml", &[(other, "STOP")], 1);
    let deliveries = w.settled(5);
    let stop = deliveries
        .iter()
        .find(|d| d["state"] == "skipped")
        .expect("STOP skipped");
    assert!(
        stop["detail"].as_str().unwrap().contains("keyword STOP"),
        "{stop}"
    );
    assert!(w.tickets_of(other).is_empty());
    w.texts("text-in.xml", &[(other, "help")], 1);
    w.settled(6);
    let tickets = w.tickets_of(other);
    assert_eq!(tickets.len(), 1);
    assert_eq!(texts_on(&tickets[0]), vec!["help"]);

    // The same MESSAGE twice (its 202 lost): one comment.
    w.texts("text-in-twice.xml", &[(customer, "Solo una vez")], 1);
    w.settled(7);
    let tickets = w.tickets_of(customer);
    let once: Vec<String> = texts_on(&tickets[1])
        .into_iter()
        .filter(|t| t == "Solo una vez")
        .collect();
    assert_eq!(once.len(), 1, "{tickets:#?}");
}

/// Fifty texts from one number in a second make one ticket, never a storm. Zendesk allows 30
/// updates of one ticket in 10 minutes: the first 30 comments land at once, the rest wait for
/// the ticket's limit (retried, visibly, not dropped) — the test checks that much, not the
/// 10-minute wait.
#[test]
fn a_flood_of_texts_from_one_number_makes_one_ticket() {
    let w = world("sms-flood");
    let sender = "+34600555666";
    let texts: Vec<String> = (1..=50).map(|i| format!("mensaje {i}")).collect();
    let list: Vec<(&str, &str)> = texts.iter().map(|t| (sender, t.as_str())).collect();
    w.texts("text-in.xml", &list, 50);
    let until = Instant::now() + WAIT;
    let deliveries = loop {
        let deliveries = w.daemon.deliveries();
        let done = deliveries.iter().filter(|d| d["state"] == "done").count();
        if deliveries.len() == 50 && done >= 31 {
            break deliveries;
        }
        assert!(
            Instant::now() < until,
            "{deliveries:#?}\n{}",
            w.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let tickets = w.tickets_of(sender);
    assert_eq!(tickets.len(), 1, "one ticket for the whole flood");
    let on_ticket = texts_on(&tickets[0]);
    assert_eq!(on_ticket.len(), 31, "the first text and 30 updates");
    let mut unique = on_ticket.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), on_ticket.len(), "each text once");
    for d in deliveries.iter().filter(|d| d["state"] != "done") {
        // Waiting, or being tried again right now; never failed or skipped.
        assert!(
            d["state"] == "pending" || d["state"] == "in_progress",
            "{d}"
        );
        if d["state"] == "pending" && d["attempts"].as_u64().unwrap_or(0) > 0 {
            assert!(
                d["last_error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("limit"),
                "waiting for the ticket's limit: {d}"
            );
        }
    }
}

/// Past `max_per_sender`, a sender's texts join their open ticket even where each text would
/// make a new one (`log = "new"`): 50 texts make 10 tickets (the limit, 10 a minute), not 50.
#[test]
fn past_max_per_sender_texts_join_the_open_ticket_where_each_would_make_a_new_one() {
    let each = FakeZendesk::start(Settings::default());
    let w = world_with(
        "sms-flood-new",
        &format!(
            r#"
[[helpdesks]]
name = "each"
kind = "zendesk"
base_url = "{}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["support"]
sms_inbound = {{ log = "new" }}
request_timeout = "2s"
"#,
            each.url
        ),
    );
    let sender = "+34600555777";
    let texts: Vec<String> = (1..=50).map(|i| format!("texto {i}")).collect();
    let list: Vec<(&str, &str)> = texts.iter().map(|t| (sender, t.as_str())).collect();
    w.texts("text-in.xml", &list, 50);
    // Zendesk takes 30 updates of one ticket in 10 minutes: 10 new tickets and 30 comments
    // on the last of them land at once.
    let until = Instant::now() + WAIT;
    loop {
        let done = w
            .daemon
            .deliveries()
            .iter()
            .filter(|d| d["integration"] == "each" && d["state"] == "done")
            .count();
        if done >= 40 {
            break;
        }
        assert!(Instant::now() < until, "{}", w.daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let tickets = each.tickets();
    assert_eq!(tickets.len(), 10, "one new ticket per text up to the limit");
    let on_tickets: usize = tickets.iter().map(|t| texts_on(t).len()).sum();
    assert!(on_tickets >= 40, "{on_tickets}");
    let firsts: Vec<String> = tickets.iter().map(|t| texts_on(t)[0].clone()).collect();
    let mut expected: Vec<String> = (1..=10).map(|i| format!("texto {i}")).collect();
    let mut got = firsts.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "the first ten texts opened the tickets");
}

/// The trunk sends a text again after sipdesk restarted (its 202 lost): one text, one comment.
#[test]
fn the_same_message_after_a_restart_is_one_text() {
    let mut w = world("sms-restart-dedup");
    let port = w.daemon.port;
    let message = |branch: &str| {
        format!(
            "MESSAGE sip:{NUMBER}@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{{local}};branch={branch};rport\r\nFrom: <sip:+34600111999@127.0.0.1>;tag=t1\r\nTo: <sip:{NUMBER}@127.0.0.1>\r\nCall-ID: same-text@trunk\r\nCSeq: 7 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nuna vez solo",
        )
    };
    let send = |text: String| -> String {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let local = socket.local_addr().unwrap().port();
        socket
            .send_to(
                text.replace("{local}", &local.to_string()).as_bytes(),
                ("127.0.0.1", port),
            )
            .unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = socket.recv_from(&mut buf).expect("an answer");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = send(message("z9hG4bKfirst"));
    assert!(first.starts_with("SIP/2.0 202"), "{first}");
    w.settled(1);
    w.daemon.stop();
    w.daemon.restart();
    let again = send(message("z9hG4bKagain"));
    assert!(again.starts_with("SIP/2.0 202"), "{again}");
    std::thread::sleep(Duration::from_secs(2));
    let deliveries = w.settled(1);
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    let tickets = w.tickets_of("+34600111999");
    assert_eq!(tickets.len(), 1);
    assert_eq!(texts_on(&tickets[0]), vec!["una vez solo"]);
}

/// SIPp as the PBX taking one text: from `from`, to `to`, with exactly `body`; answered `answer`.
fn pbx_takes_text(
    w: &World,
    from: &str,
    to: &str,
    body: &str,
    answer: &str,
) -> common::daemon::Sipp {
    let text = std::fs::read_to_string(common::daemon::scenario("text-uas.xml"))
        .unwrap()
        .replace("FROM_NUMBER", &from.replace('+', "\\+"))
        .replace("TO_NUMBER", &to.replace('+', "\\+"))
        .replace("BODY_TEXT", body)
        .replace("ANSWER", answer);
    let path = w.dir.join(format!("text-uas-{}.xml", free_port()));
    std::fs::write(&path, text).unwrap();
    SippRun {
        scenario: path.to_str().unwrap(),
        ip: "127.0.0.1",
        port: w.daemon.pbx_port,
        target: None,
        service: "",
        calls: 1,
        rate: 0,
        tcp: false,
    }
    .spawn(&w.dir)
}

/// Waits for a ticket to have a comment matching `found`.
fn wait_for_comment(w: &World, ticket: u64, found: impl Fn(&common::zendesk::Comment) -> bool) {
    let until = Instant::now() + WAIT;
    loop {
        let tickets = w.zd.tickets();
        let t = tickets.iter().find(|t| t.id == ticket).unwrap();
        if t.comments.iter().any(&found) {
            return;
        }
        assert!(
            Instant::now() < until,
            "no such comment: {t:#?}\n{}",
            w.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Nothing reaches the PBX's address for `how_long` (SIPp no longer listens there).
fn nothing_more_reaches_the_pbx(w: &World, how_long: Duration) {
    let socket = UdpSocket::bind(("127.0.0.1", w.daemon.pbx_port)).unwrap();
    socket.set_read_timeout(Some(how_long)).unwrap();
    let mut buf = [0u8; 4096];
    if let Ok((n, _)) = socket.recv_from(&mut buf) {
        panic!(
            "something more reached the PBX:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_reply_goes_back_to_the_customer_once_even_across_a_restart() {
    let mut w = world("sms-replies");
    let customer = "+34600111222";
    let customer_id =
        w.zd.add_customer_with_email("Cliente", customer, "cliente@example.com");
    // An agent texting from her own mobile: her ticket's requester is herself, and her own
    // replies on it are not texted back to her (the seed's same-e-mail rule; Zendesk e-mails
    // are one per user).
    let bea_phone = "+34600999888";
    let bea =
        w.zd.add_agent_with_phone("Bea", "bea@example.com", bea_phone);
    w.texts(
        "text-in.xml",
        &[(customer, "Hola"), (bea_phone, "Prueba desde mi movil")],
        1,
    );
    w.settled(2);
    let ticket = w.tickets_of(customer)[0].id;
    assert_eq!(w.tickets_of(customer)[0].requester_id, customer_id);
    let bea_ticket = w.tickets_of(bea_phone)[0].id;
    assert_eq!(w.tickets_of(bea_phone)[0].requester_id, bea);

    // An agent's public reply comes back to the PBX as a MESSAGE from the number texted.
    let pbx = pbx_takes_text(&w, NUMBER, customer, "Su pedido sale hoy", "200 OK");
    w.zd.reply(ticket, w.ana, "Su pedido sale hoy", true);
    // An internal note is never sent; neither is a reply by the customer's own e-mail.
    w.zd.reply(ticket, w.ana, "nota interna", false);
    w.zd.reply(bea_ticket, bea, "no debe salir", true);
    // The export leaves out the last minute.
    w.zd.advance_clock(Duration::from_secs(61));
    w.daemon.succeeded(pbx);

    let store = w.store().await;
    let until = Instant::now() + WAIT;
    let replies = loop {
        let replies = store.replies("zd").await.unwrap();
        if replies.len() == 2
            && replies
                .iter()
                .all(|r| r.state != "pending" && r.state != "sending")
        {
            break replies;
        }
        assert!(Instant::now() < until, "{replies:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sent: Vec<_> = replies.iter().filter(|r| r.state == "sent").collect();
    assert_eq!(sent.len(), 1, "{replies:#?}");
    assert_eq!(sent[0].body, "Su pedido sale hoy");
    assert_eq!(
        (sent[0].customer.as_str(), sent[0].number.as_str()),
        (customer, NUMBER)
    );
    let own = replies.iter().find(|r| r.state == "not_sent").unwrap();
    assert!(
        own.detail
            .as_deref()
            .unwrap()
            .contains("customer's own e-mail"),
        "{own:?}"
    );
    assert_eq!(own.ticket_id, bea_ticket.to_string());

    // A reply written while sipdesk is stopped goes out once after it starts again.
    w.daemon.stop();
    w.zd.reply(ticket, w.ana, "Ya salio", true);
    w.zd.advance_clock(Duration::from_secs(61));
    let pbx = pbx_takes_text(&w, NUMBER, customer, "Ya salio", "200 OK");
    w.daemon.restart();
    w.daemon.succeeded(pbx);
    // Two more polls: nothing is sent again.
    nothing_more_reaches_the_pbx(&w, Duration::from_secs(25));
    let replies = store.replies("zd").await.unwrap();
    assert_eq!(
        replies.iter().filter(|r| r.state == "sent").count(),
        2,
        "{replies:#?}"
    );

    // A reply the PBX refuses is noted on the ticket with why.
    let pbx = pbx_takes_text(
        &w,
        NUMBER,
        customer,
        "No llegara",
        "488 Not Acceptable Here",
    );
    w.zd.reply(ticket, w.ana, "No llegara", true);
    w.zd.advance_clock(Duration::from_secs(61));
    w.daemon.succeeded(pbx);
    wait_for_comment(&w, ticket, |c| {
        !c.public && c.body.contains("not sent") && c.body.contains("488")
    });
}
