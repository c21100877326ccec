//! Voicemail end to end: the real daemon, SIPp as the PBX and the agents' phones, and a UDP
//! socket of the test's own as the caller's RTP address (the SDP offer names it), so what
//! sipdesk plays is heard and measured on the caller's side. The caller's voice is SIPp's
//! `play_pcap_audio` of the pcaps Debian's sip-tester ships (`g711a.pcap`: 236 packets of
//! 30 ms PCMA, 7.08 s; `dtmf_2833_pound.pcap`: `#` as RFC 4733 events).

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, Sipp, SippMore, SippRun, free_port, test_dir};
use common::zendesk::{self, FakeZendesk};

const FAST: &str = "trusted = [\"127.0.0.1\"]\nt1 = \"100ms\"\nt2 = \"500ms\"";

/// The greeting: one second of a 400 Hz tone.
const GREETING_MS: u64 = 1000;
/// What `g711a.pcap` holds: 236 packets of 240 samples.
const PCAP_MS: u64 = 236 * 30;

/// Writes a 16-bit 8 kHz greeting of `GREETING_MS`.
fn write_greeting(path: &Path) {
    let samples: Vec<i16> = (0..GREETING_MS * 8)
        .map(|n| ((n as f64 * 400.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16)
        .collect();
    let file = std::fs::File::create(path).unwrap();
    let mut wav = sipdesk::media::wav::WavWriter::create(file).unwrap();
    wav.append(&samples).unwrap();
    wav.finalize().unwrap();
}

/// An even UDP port free on 127.0.0.1 (voicemail sessions use even ports).
fn free_even_port() -> u16 {
    loop {
        let port = free_port();
        if port % 2 == 0 && port < 65_000 {
            return port;
        }
    }
}

/// A daemon whose group "soporte" (queue 700, agent 2001) goes to voicemail when the agent is
/// busy, with the greeting in its directory.
fn daemon(name: &str) -> Daemon {
    daemon_with(name, "", &[])
}

/// The same, with `helpdesks` (and `files` beside the configuration).
fn daemon_with(name: &str, helpdesks: &str, files: &[(&str, &str)]) -> Daemon {
    let dir = test_dir(name);
    let greeting = dir.join("greeting.wav");
    write_greeting(&greeting);
    let port = free_even_port();
    let body = format!(
        r#"
[media]
address = "127.0.0.1"
rtp_ports = "{port}-{last}"
max_sessions = 1
voicemail_silence = "3s"
voicemail_max = "30s"

[defaults]
timezone = "Europe/Madrid"
region = "ES"

[[groups]]
name = "soporte"
queues = ["700"]
agents = [{{ extension = "2001" }}]
ring_timeout = "5s"
wrap_up = "0s"
final_action = "voicemail"
greeting = "{greeting}"
{helpdesks}"#,
        last = port + 1,
        greeting = greeting.display()
    );
    Daemon::start_in(dir, FAST, &body, None, files)
}

/// The caller: SIPp placing one call to queue 700 with `scenario`, its SDP naming `rtp_port`.
fn caller(daemon: &Daemon, scenario: &str, rtp_port: u16) -> Sipp {
    let inf = daemon.dir.join(format!("rtp-{rtp_port}.csv"));
    std::fs::write(&inf, format!("SEQUENTIAL\n{rtp_port};\n")).unwrap();
    SippRun {
        scenario,
        ip: "127.0.0.1",
        port: free_port(),
        target: Some(format!("127.0.0.1:{}", daemon.port)),
        service: "700",
        calls: 1,
        rate: 1,
        tcp: false,
    }
    .spawn_with(
        &daemon.dir,
        &SippMore {
            inf: Some(inf),
            media_port: Some(free_even_port()),
            ..SippMore::default()
        },
    )
}

/// One RTP packet heard by the caller.
struct Heard {
    at: Instant,
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    payload: usize,
}

/// Everything the caller's socket hears until it has been quiet for `quiet` (or 20 s).
fn listen(socket: &UdpSocket, quiet: Duration) -> Vec<Heard> {
    socket.set_read_timeout(Some(quiet)).unwrap();
    let mut heard = Vec::new();
    let mut buffer = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buffer) else {
            if heard.is_empty() {
                continue;
            }
            break;
        };
        let packet = rtp_rs::RtpReader::new(&buffer[..n]).expect("sipdesk sends RTP");
        heard.push(Heard {
            at: Instant::now(),
            marker: packet.mark(),
            payload_type: packet.payload_type(),
            sequence: u16::from(packet.sequence_number()),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
            payload: packet.payload().len(),
        });
    }
    heard
}

/// The one call's record, once ended.
fn ended_call(daemon: &Daemon) -> serde_json::Value {
    daemon.ended_calls(1).remove(0)
}

/// Samples in a recording, at 8 kHz.
fn wav_ms(path: &str) -> u64 {
    let bytes = std::fs::read(path).expect("the recording is there");
    let wav = sipdesk::media::wav::read(&bytes).expect("the recording is a WAV file");
    wav.to_8khz().len() as u64 / 8
}

#[test]
fn a_caller_hears_the_greeting_and_the_tone_then_leaves_a_message() {
    let zd = FakeZendesk::start(zendesk::Settings::default());
    let helpdesks = format!(
        r#"
[[helpdesks]]
name = "zd"
kind = "zendesk"
base_url = "{}"
email = "bot@example.com"
token_file = "zd.token"
groups = ["soporte"]
"#,
        zd.url
    );
    let daemon = daemon_with("voicemail-left", &helpdesks, &[("zd.token", "t0ken")]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agents = daemon.agents("agents-busy.xml", 1);
    let uac = caller(
        &daemon,
        "caller-voicemail.xml",
        rtp.local_addr().unwrap().port(),
    );

    // The greeting and the tone, paced at 20 ms: 50 + 20 packets of 160 PCMA samples.
    let heard = listen(&rtp, Duration::from_millis(800));
    let expected = (GREETING_MS + 400) / 20;
    assert_eq!(heard.len() as u64, expected, "packets heard");
    let first = &heard[0];
    assert!(first.marker, "the first packet has the marker bit");
    for (i, pair) in heard.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.payload_type, 8, "PCMA, as negotiated");
        assert_eq!(b.payload, 160, "20 ms of samples");
        assert_eq!(b.ssrc, first.ssrc);
        assert_eq!(
            b.sequence,
            a.sequence.wrapping_add(1),
            "packet {i}: sequence"
        );
        assert_eq!(
            b.timestamp,
            a.timestamp.wrapping_add(160),
            "packet {i}: timestamp"
        );
        assert!(!b.marker, "packet {i}: only the first has the marker bit");
    }
    // Paced, not sent in a burst: the median gap is 20 ms and the whole takes its time.
    let mut gaps: Vec<u128> = heard
        .windows(2)
        .map(|p| p[1].at.duration_since(p[0].at).as_micros())
        .collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    assert!((15_000..25_000).contains(&median), "median gap {median} µs");
    let span = heard.last().unwrap().at.duration_since(first.at);
    eprintln!(
        "heard {} packets over {span:?}, median gap {median} µs, p100 gap {} µs",
        heard.len(),
        gaps.last().unwrap()
    );
    assert!(span >= Duration::from_millis(1_200), "span {span:?}");

    // The caller is still speaking: supervisors see the session and the call as voicemail.
    let token = daemon.token();
    let (_, metrics) = daemon.admin("GET", "/metrics", Some(token.trim()));
    assert!(
        metrics.contains("\nsipdesk_voicemail_sessions 1\n"),
        "{metrics}"
    );
    let live = daemon.api("GET", "/calls?active=true", None).1;
    assert_eq!(live["calls"][0]["state"], "voicemail", "{live:#}");

    daemon.succeeded(uac);
    daemon.succeeded(agents);
    let call = ended_call(&daemon);
    assert_eq!(call["outcome"], "voicemail", "{call:#}");
    // The port is given back (the metrics are published within a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = daemon.admin("GET", "/metrics", Some(token.trim()));
        if metrics.contains("\nsipdesk_voicemail_sessions 0\n") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let voicemail = &call["voicemail"];
    assert_eq!(voicemail["end"], "hangup", "{call:#}");
    // The recording is what the caller sent, within 100 ms.
    let file = voicemail["file"].as_str().unwrap();
    let recorded = wav_ms(file);
    eprintln!("recorded {recorded} ms of the {PCAP_MS} ms sent");
    assert!(
        recorded.abs_diff(PCAP_MS) <= 100,
        "recorded {recorded} ms of {PCAP_MS} ms sent"
    );
    assert_eq!(voicemail["duration_ms"].as_u64(), Some(recorded));
    assert!(file.starts_with(&daemon.dir.join("voicemail").display().to_string()));

    // Zendesk: one upload, attached to one voicemail ticket — the recording's very bytes.
    let tickets = zd.wait_for_tickets(1, Duration::from_secs(30));
    assert_eq!(tickets.len(), 1, "{tickets:?}\n{}", daemon.log());
    let ticket = &tickets[0];
    assert_eq!(
        ticket.subject.as_deref(),
        Some("Voicemail from +34600123456")
    );
    assert!(
        ticket.tags.contains(&"sipdesk_voicemail".to_owned()),
        "{:?}",
        ticket.tags
    );
    let attachments: Vec<_> = ticket
        .comments
        .iter()
        .flat_map(|c| &c.attachments)
        .collect();
    assert_eq!(attachments.len(), 1, "{ticket:?}");
    assert_eq!(attachments[0].content_type, "audio/wav");
    assert_eq!(attachments[0].bytes, std::fs::read(file).unwrap());
    assert_eq!(zd.uploads().len(), 1);
}

#[test]
fn pound_ends_the_recording_and_sipdesk_hangs_up() {
    let daemon = daemon("voicemail-pound");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agents = daemon.agents("agents-busy.xml", 1);
    let uac = caller(
        &daemon,
        "caller-voicemail-pound.xml",
        rtp.local_addr().unwrap().port(),
    );
    // The scenario succeeds only when sipdesk sends BYE.
    daemon.succeeded(uac);
    daemon.succeeded(agents);
    let call = ended_call(&daemon);
    assert_eq!(call["outcome"], "voicemail", "{call:#}");
    assert_eq!(call["voicemail"]["end"], "pound", "{call:#}");
    // About 2.5 s of speech before the #.
    let recorded = wav_ms(call["voicemail"]["file"].as_str().unwrap());
    assert!((1_500..4_000).contains(&recorded), "recorded {recorded} ms");
}

#[test]
fn a_caller_who_hangs_up_during_the_greeting_leaves_a_missed_call_and_no_file() {
    let daemon = daemon("voicemail-early");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let agents = daemon.agents("agents-busy.xml", 1);
    let uac = caller(
        &daemon,
        "caller-voicemail-hangs-up-early.xml",
        rtp.local_addr().unwrap().port(),
    );
    daemon.succeeded(uac);
    daemon.succeeded(agents);
    let call = ended_call(&daemon);
    assert_eq!(call["outcome"], "missed", "{call:#}");
    assert_eq!(call["reason"], "no_answer", "{call:#}");
    assert!(call["voicemail"].is_null(), "{call:#}");
    let left: Vec<PathBuf> = std::fs::read_dir(daemon.dir.join("voicemail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "files left: {left:?}");
}
