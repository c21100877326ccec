//! The wallboard in a real browser: Debian's headless Chromium driven through ChromeDriver
//! (WebDriver), against the real daemon with SIPp placing a call. The page shows the groups;
//! an agent's card turns "on a call" within a second of the answer (measured in the page by a
//! MutationObserver against the answer time sipdesk recorded, both on this machine's clock);
//! the away toggle changes the agent's state in sipdesk.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};

use common::daemon::{Daemon, free_port};

const BODY: &str = r#"
[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "trio"
queues = ["500"]
agents = [{ extension = "6001", name = "Ana" }, { extension = "6002" }, { extension = "6003" }]
wrap_up = "0s"
"#;

const FAST: &str = "trusted = [\"127.0.0.1\"]\nt1 = \"100ms\"\nt2 = \"500ms\"";

/// ChromeDriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (Debian package chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of the first element matching `selector`, read in one step inside the page: the
/// group sections are rebuilt every second, so an element found in one WebDriver call can be
/// stale by the next.
async fn text_of(browser: &fantoccini::Client, selector: &str) -> Option<String> {
    let value = browser
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![serde_json::Value::from(selector)],
        )
        .await
        .ok()?;
    value.as_str().map(str::to_owned)
}

/// Waits (up to 15 s) until `probe` gives `Some`.
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "the page never showed {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_wallboard_shows_groups_follows_an_answer_within_a_second_and_toggles_away() {
    let mut daemon = Daemon::start("wallboard", FAST, BODY);
    let driver = Driver::start();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1600,1000"],
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");

    // Without a token the page asks for one; a wrong one is refused and asked again.
    let page = format!("http://127.0.0.1:{}/wallboard", daemon.admin_port);
    browser.goto(&page).await.unwrap();
    let input = browser
        .wait()
        .for_element(Locator::Id("token"))
        .await
        .unwrap();
    input.send_keys("wrong").await.unwrap();
    browser
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("the refusal", || async {
        let error = browser.find(Locator::Id("login-error")).await.ok()?;
        let text = error.text().await.ok()?;
        text.contains("refused").then_some(())
    })
    .await;
    let input = browser.find(Locator::Id("token")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(daemon.token().trim()).await.unwrap();
    browser
        .find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The group and its agents, live.
    until("the group", || async {
        let text = text_of(&browser, "[data-group=\"trio\"] h2").await?;
        (text == "trio").then_some(())
    })
    .await;
    until("three available agents", || async {
        let cards = browser
            .find_all(Locator::Css(".agent[data-state=\"available\"]"))
            .await
            .ok()?;
        (cards.len() == 3).then_some(())
    })
    .await;

    // The page notes, by its own clock, when each agent's card first shows "on a call".
    browser
        .execute(
            r#"window.onCallSeen = {};
               new MutationObserver(() => {
                 for (const card of document.querySelectorAll('.agent[data-state="on_call"]')) {
                   window.onCallSeen[card.dataset.agent] ??= Date.now();
                 }
               }).observe(document.getElementById('agents'),
                          { subtree: true, attributes: true, attributeFilter: ['data-state'] });"#,
            vec![],
        )
        .await
        .unwrap();
    let uas = daemon.agents("agents-answer.xml", 1);
    let uac = daemon.callers("caller-answered-until-bye.xml", "500", 1, 20, 1, false);
    let (agent, seen_ms): (String, i64) = until("an agent on a call", || async {
        let seen = browser
            .execute("return window.onCallSeen;", vec![])
            .await
            .ok()?;
        let (agent, at) = seen.as_object()?.iter().next()?;
        Some((agent.clone(), at.as_i64()?))
    })
    .await;
    // The answer time sipdesk recorded (the "answered" event), on the same machine's clock.
    let answered_ms = until("the answered event", || async {
        let calls = daemon.calls();
        let events = calls.first()?["events"].as_array()?.clone();
        let at = events.iter().find(|e| e["kind"] == "answered")?["at"]
            .as_str()?
            .parse::<jiff::Timestamp>()
            .ok()?;
        Some(at.as_millisecond())
    })
    .await;
    let lag = seen_ms - answered_ms;
    eprintln!("the page showed {agent} on a call {lag} ms after the answer");
    // For whoever looks at a failure: the page as it was.
    if let Ok(png) = browser.screenshot().await {
        let _ = std::fs::write(daemon.dir.join("wallboard.png"), png);
    }
    assert!(
        (0..1000).contains(&lag),
        "the page showed {agent} on a call {lag} ms after the answer"
    );
    let card = text_of(&browser, &format!("[data-agent=\"{agent}\"]")).await;
    assert!(card.is_some_and(|text| text.contains("on a call")));
    until("one talking in the group", || async {
        let talking = text_of(&browser, "[data-group=\"trio\"] .talking .value").await?;
        (talking == "1").then_some(())
    })
    .await;

    // The away toggle of another agent: sipdesk takes it, and the page shows it.
    let other = if agent == "6003" { "6002" } else { "6003" };
    let toggle = format!("[data-agent=\"{other}\"] button.toggle");
    browser
        .find(Locator::Css(&toggle))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("the agent away in sipdesk", || async {
        let (_, answer) = daemon.api("GET", &format!("/agents/{other}"), None);
        (answer["state"] == "away").then_some(())
    })
    .await;
    until("the agent away on the page", || async {
        browser
            .find(Locator::Css(&format!(
                "[data-agent=\"{other}\"][data-state=\"away\"]"
            )))
            .await
            .ok()
    })
    .await;
    browser
        .find(Locator::Css(&toggle))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("the agent available again", || async {
        let (_, answer) = daemon.api("GET", &format!("/agents/{other}"), None);
        (answer["state"] == "available").then_some(())
    })
    .await;

    // The call ends; today's figures on the page count it.
    let id = daemon.calls()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(daemon.api("DELETE", &format!("/calls/{id}"), None).0, 200);
    daemon.succeeded(uac);
    daemon.succeeded(uas);
    until("one answered today", || async {
        let answered = text_of(&browser, "[data-group=\"trio\"] .today .answered").await?;
        (answered == "1").then_some(())
    })
    .await;
    browser.close().await.unwrap();
    drop(driver);
    assert_eq!(daemon.stop(), Some(0));
}
