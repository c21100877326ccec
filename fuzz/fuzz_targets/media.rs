//! Untrusted media input: the first byte picks what the rest goes to — a caller's SDP offer
//! (parsed, negotiated, answered), a WAV file (read, converted to 8 kHz), or RTP packets into a
//! voicemail session that is recording. Nothing may panic. Run: `cargo fuzz run media -s none`.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sipdesk::media::g711::Law;
use sipdesk::media::session::{Session, Settings, PTIME};
use sipdesk::media::greeting::Greeting;
use sipdesk::media::{sdp, wav};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    match pick % 3 {
        0 => {
            if let Ok(offer) = sdp::parse(rest) {
                if let Ok(negotiated) = sdp::negotiate(&offer) {
                    let mut version = sdp::SessionVersion::new(1);
                    let answer = sdp::answer(&negotiated, "127.0.0.1:16000".parse().unwrap(), &mut version);
                    // What sipdesk answers, it can read back.
                    assert!(sdp::parse(answer.as_bytes()).is_ok(), "{answer}");
                }
            }
        }
        1 => {
            if let Ok(file) = wav::read(rest) {
                let _ = file.to_8khz();
            }
        }
        _ => {
            let start = Instant::now();
            let settings = Settings {
                law: Law::A,
                payload_type: 8,
                telephone_event: Some(101),
                ssrc: 1,
                first_sequence: 0,
                first_timestamp: 0,
                silence: Duration::from_secs(5),
                max_length: Duration::from_secs(10),
            };
            let greeting = Arc::new(Greeting::from_samples(&[0i16; 160]));
            let mut session = Session::new(start, settings, greeting);
            // Through the greeting and the tone, to the recording.
            let mut now = start;
            for _ in 0..30 {
                session.poll(now);
                now += PTIME;
            }
            // Packets cut from the input by a length byte each.
            let mut rest = rest;
            while let Some((&length, tail)) = rest.split_first() {
                let length = (length as usize).min(tail.len());
                let (packet, tail) = tail.split_at(length);
                session.receive(now, packet);
                rest = tail;
            }
            let _ = session.close();
        }
    }
});
