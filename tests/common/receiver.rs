//! The independent webhook receiver (`tests/receivers/standard_webhooks.py`): the Standard
//! Webhooks reference library verifies each request, `jsonschema` checks each payload, and every
//! request is logged for the tests to read.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The secret the tests sign with (the Standard Webhooks specification's example).
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(crate) fn python() -> String {
    std::env::var("SIPDESK_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The receiver, stopped when dropped.
pub(crate) struct Receiver {
    child: Child,
    pub(crate) port: u16,
    log: std::path::PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    pub(crate) fn start(dir: &Path, answers: &str) -> Receiver {
        let python = python();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let port_file = dir.join("receiver.port");
        let log = dir.join("receiver.jsonl");
        let mut child = Command::new(&python)
            .arg(root.join("tests/receivers/standard_webhooks.py"))
            .arg(SECRET)
            .arg(root.join("src/helpdesk/webhook/schema.json"))
            .arg(&log)
            .arg(&port_file)
            .arg(answers)
            .spawn()
            .unwrap_or_else(|e| panic!("{python} runs (see .ci/test): {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().parse().unwrap();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the webhook receiver exited ({status}): it needs Python with standardwebhooks and jsonschema; run .ci/test, which installs them"
                );
            }
            assert!(Instant::now() < deadline, "the receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Receiver { child, port, log }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/sipdesk", self.port)
    }

    /// Every request received, in order.
    pub(crate) fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Posts `body` with these webhook headers; returns the status answered.
    pub(crate) fn post(&self, id: &str, timestamp: &str, signature: &str, body: &str) -> u16 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST /hooks/sipdesk HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nwebhook-id: {id}\r\nwebhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer.split(' ').nth(1).unwrap().parse().unwrap()
    }
}
