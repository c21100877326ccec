//! The proxy's counters for `GET /metrics`, and their Prometheus text exposition (format
//! 0.0.4). The proxy's thread counts as it works ([`Counters`]) and publishes a copy with each
//! live snapshot; the admin API renders that copy with the gauges it reads at scrape time. No
//! metrics library: the text format is small and a test parses the output with a real parser.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Upper bounds of the caller wait-time histogram, in seconds.
pub const WAIT_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// What the proxy counted since it started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Calls ended, by group (empty: none) and outcome.
    pub calls: BTreeMap<(String, &'static str), u64>,
    /// Agents rung, by group.
    pub ring_attempts: BTreeMap<String, u64>,
    /// How long inbound callers waited for an answer (or in all, when nobody answered).
    pub wait: Histogram,
    /// SIP messages received and sent, by direction, method and status code (empty for
    /// requests).
    pub sip: BTreeMap<(&'static str, String, String), u64>,
}

/// A cumulative histogram over [`WAIT_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or under each bound.
    pub buckets: [u64; WAIT_BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, value: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(WAIT_BUCKETS) {
            if value <= bound {
                *bucket += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

impl Counters {
    /// A SIP message received (`"in"`) or sent (`"out"`).
    pub fn sip_message(&mut self, direction: &'static str, method: &str, code: Option<u16>) {
        let code = code.map(|c| c.to_string()).unwrap_or_default();
        *self
            .sip
            .entry((direction, method.to_owned(), code))
            .or_default() += 1;
    }

    /// A message sipdesk sends, labelled from its bytes: the request's method, or the
    /// response's code and the method in its CSeq.
    pub fn sent(&mut self, bytes: &[u8]) {
        let head = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let head = String::from_utf8_lossy(head);
        if let Some(rest) = head.strip_prefix("SIP/2.0 ") {
            let code = rest.get(..3).and_then(|c| c.parse::<u16>().ok());
            self.sip_message("out", &cseq_method(bytes), code);
        } else {
            let method = head.split(' ').next().unwrap_or_default();
            self.sip_message("out", method, None);
        }
    }
}

/// The method named in a message's CSeq header ("" when there is none).
fn cseq_method(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("cseq").then(|| {
                value
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned()
            })
        })
        .unwrap_or_default()
}

/// A Prometheus label value, escaped.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes a metric's `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Counters {
    /// The counters in the text exposition format.
    pub fn render(&self, out: &mut String) {
        header(
            out,
            "sipdesk_calls_total",
            "counter",
            "Calls ended, by group and outcome.",
        );
        for ((group, outcome), n) in &self.calls {
            let _ = writeln!(
                out,
                "sipdesk_calls_total{{group=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(group)
            );
        }
        header(
            out,
            "sipdesk_ring_attempts_total",
            "counter",
            "Agents rung, by group.",
        );
        for (group, n) in &self.ring_attempts {
            let _ = writeln!(
                out,
                "sipdesk_ring_attempts_total{{group=\"{}\"}} {n}",
                label(group)
            );
        }
        header(
            out,
            "sipdesk_wait_seconds",
            "histogram",
            "How long inbound callers waited for an answer, or in all when nobody answered.",
        );
        for (bound, n) in WAIT_BUCKETS.iter().zip(self.wait.buckets) {
            let _ = writeln!(out, "sipdesk_wait_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "sipdesk_wait_seconds_bucket{{le=\"+Inf\"}} {}",
            self.wait.count
        );
        let _ = writeln!(out, "sipdesk_wait_seconds_sum {}", self.wait.sum);
        let _ = writeln!(out, "sipdesk_wait_seconds_count {}", self.wait.count);
        header(
            out,
            "sipdesk_sip_messages_total",
            "counter",
            "SIP messages received and sent, by method and status code (empty for requests).",
        );
        for ((direction, method, code), n) in &self.sip {
            let _ = writeln!(
                out,
                "sipdesk_sip_messages_total{{direction=\"{direction}\",method=\"{}\",code=\"{code}\"}} {n}",
                label(method)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_messages_are_labelled_from_their_first_line_and_cseq() {
        let mut counters = Counters::default();
        counters.sent(b"SIP/2.0 180 Ringing\r\nVia: x\r\nCSeq: 1 INVITE\r\n\r\n");
        counters.sent(b"BYE sip:a@b SIP/2.0\r\nCSeq: 2 BYE\r\n\r\n");
        assert_eq!(
            counters
                .sip
                .get(&("out", "INVITE".to_owned(), "180".to_owned())),
            Some(&1)
        );
        assert_eq!(
            counters.sip.get(&("out", "BYE".to_owned(), String::new())),
            Some(&1)
        );
    }

    #[test]
    fn the_histogram_is_cumulative() {
        let mut histogram = Histogram::default();
        histogram.observe(0.5);
        histogram.observe(15.0);
        assert_eq!(histogram.buckets[0], 1);
        assert_eq!(histogram.buckets[4], 2);
        assert_eq!(histogram.count, 2);
    }
}
