//! The media session driven by hand: time passed in, packets in and out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// The law of these tests' calls.
const MU: Law = Law::Mu;

const PT: u8 = 0;
const EVENT: u8 = 101;

fn settings() -> Settings {
    Settings {
        law: MU,
        payload_type: PT,
        telephone_event: Some(EVENT),
        ssrc: 0x1234_5678,
        first_sequence: 65534,
        first_timestamp: u32::MAX - 200,
        silence: Duration::from_secs(5),
        max_length: Duration::from_secs(180),
    }
}

/// A greeting of `packets` packets of a loud square-ish wave.
fn greeting(packets: usize) -> Arc<Greeting> {
    let samples: Vec<i16> = (0..packets * SAMPLES_PER_PACKET)
        .map(|n| if n % 20 < 10 { 8000 } else { -8000 })
        .collect();
    Arc::new(Greeting::from_samples(&samples))
}

fn sent(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn recorded(actions: &[Action]) -> Vec<i16> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Record(s) => s.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn ended(actions: &[Action]) -> Option<End> {
    actions.iter().find_map(|a| match a {
        Action::Ended(e) => Some(*e),
        _ => None,
    })
}

/// A caller's audio packet: 160 samples of `level`.
fn audio(sequence: u16, timestamp: u32, level: i16) -> Vec<u8> {
    let payload: Vec<u8> = (0..SAMPLES_PER_PACKET)
        .map(|n| {
            let s = if n % 16 < 8 { level } else { -level };
            MU.encode(s)
        })
        .collect();
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(PT)
        .ssrc(99)
        .sequence(rtp_rs::Seq::from(sequence))
        .timestamp(timestamp)
        .payload(&payload)
        .build()
        .unwrap()
}

/// An RFC 4733 event packet.
fn event(sequence: u16, code: u8, end: bool) -> Vec<u8> {
    let payload = [code, if end { 0x80 | 10 } else { 10 }, 0x03, 0x20];
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(EVENT)
        .ssrc(99)
        .sequence(rtp_rs::Seq::from(sequence))
        .timestamp(5000)
        .payload(&payload)
        .build()
        .unwrap()
}

/// Plays the greeting and the tone through, 20 ms at a time; returns the session in its
/// recording phase, the time, and every packet sent.
fn through_the_greeting(packets: usize) -> (Session, Instant, Vec<Vec<u8>>) {
    let start = Instant::now();
    let mut session = Session::new(start, settings(), greeting(packets));
    let mut out = Vec::new();
    let mut now = start;
    while session.phase != Phase::Recording {
        out.extend(sent(&session.poll(now)));
        now += PTIME;
    }
    (session, now, out)
}

#[test]
fn the_greeting_and_tone_go_out_one_packet_each_20_ms_with_continuous_numbering() {
    let start = Instant::now();
    let mut session = Session::new(start, settings(), greeting(50));
    let mut packets = Vec::new();
    for n in 0..80u32 {
        let now = start + PTIME * n;
        if n < 70 {
            assert_eq!(session.next_deadline(), Some(now));
        }
        let out = sent(&session.poll(now));
        // Due exactly then, and not a moment before.
        assert!(out.len() <= 1, "packet {n}: {}", out.len());
        packets.extend(out);
        assert!(sent(&session.poll(now + Duration::from_millis(19))).is_empty());
    }
    // 1 s of greeting (50 packets) and 400 ms of tone (20).
    assert_eq!(packets.len(), 70);
    for (i, bytes) in packets.iter().enumerate() {
        let packet = rtp_rs::RtpReader::new(bytes).unwrap();
        assert_eq!(packet.payload_type(), PT);
        assert_eq!(packet.ssrc(), 0x1234_5678);
        assert_eq!(packet.payload().len(), SAMPLES_PER_PACKET);
        assert_eq!(
            u16::from(packet.sequence_number()),
            65534u16.wrapping_add(i as u16),
            "sequence numbers wrap from 65535 to 0"
        );
        assert_eq!(
            packet.timestamp(),
            (u32::MAX - 200).wrapping_add(160 * i as u32),
            "timestamps wrap"
        );
        assert_eq!(packet.mark(), i == 0, "only the first packet is marked");
    }
    assert_eq!(session.phase, Phase::Recording);
}

#[test]
fn a_loop_that_falls_far_behind_starts_again_rather_than_bursting() {
    let start = Instant::now();
    let mut session = Session::new(start, settings(), greeting(50));
    assert_eq!(sent(&session.poll(start)).len(), 1);
    // 40 ms late: the three packets due by then are sent at once.
    assert_eq!(
        sent(&session.poll(start + Duration::from_millis(60))).len(),
        3
    );
    // Half a second late: one packet now, the next 20 ms later.
    let late = start + Duration::from_millis(600);
    assert_eq!(sent(&session.poll(late)).len(), 1);
    assert_eq!(session.next_deadline(), Some(late + PTIME));
}

#[test]
fn audio_during_the_greeting_is_not_recorded_and_recording_follows_the_tone() {
    let start = Instant::now();
    let mut session = Session::new(start, settings(), greeting(2));
    assert!(recorded(&session.receive(start, &audio(1, 0, 8000))).is_empty());
    let (mut session, now, packets) = through_the_greeting(2);
    assert_eq!(packets.len(), 22);
    let out = session.receive(now, &audio(10, 1600, 8000));
    assert_eq!(recorded(&out).len(), SAMPLES_PER_PACKET);
}

#[test]
fn packets_out_of_order_are_recorded_in_order_and_a_lost_one_becomes_silence() {
    let (mut session, now, _) = through_the_greeting(1);
    let mut record = Vec::new();
    // 1, 3, 2: 3 waits for 2.
    record.extend(recorded(&session.receive(now, &audio(1, 160, 1000))));
    assert_eq!(record.len(), 160);
    assert!(recorded(&session.receive(now, &audio(3, 480, 3000))).is_empty());
    record.extend(recorded(&session.receive(now, &audio(2, 320, 2000))));
    assert_eq!(record.len(), 480);
    let levels: Vec<i16> = record.chunks(160).map(|c| c[0]).collect();
    assert_eq!(
        levels,
        vec![
            MU.decode(MU.encode(1000)),
            MU.decode(MU.encode(2000)),
            MU.decode(MU.encode(3000))
        ]
    );
    // 4 is lost: once 5, 6, 7 and 8 have come, its 20 ms are silence.
    for (sequence, timestamp) in [(5, 800), (6, 960), (7, 1120)] {
        assert!(recorded(&session.receive(now, &audio(sequence, timestamp, 4000))).is_empty());
    }
    let out = recorded(&session.receive(now, &audio(8, 1280, 4000)));
    assert_eq!(out.len(), 160 * 5);
    assert!(
        out[..160].iter().all(|s| *s == 0),
        "the lost packet is silence"
    );
    // Late (4 after all) and duplicated packets are dropped.
    assert!(recorded(&session.receive(now, &audio(4, 640, 4000))).is_empty());
    assert!(recorded(&session.receive(now, &audio(8, 1280, 4000))).is_empty());
    assert_eq!(session.recorded_samples(), 160 * 8);
}

#[test]
fn sequence_numbers_wrapping_while_recording_stay_in_order() {
    let (mut session, now, _) = through_the_greeting(1);
    let mut total = 0;
    for (i, sequence) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
        total += recorded(&session.receive(now, &audio(sequence, 160 * i as u32, 3000))).len();
    }
    assert_eq!(total, 640);
    // Reordered across the wrap.
    assert!(recorded(&session.receive(now, &audio(3, 800, 3000))).is_empty());
    assert_eq!(
        recorded(&session.receive(now, &audio(2, 640, 3000))).len(),
        320
    );
}

#[test]
fn a_pound_event_ends_the_recording_only_at_its_end_bit() {
    let (mut session, now, _) = through_the_greeting(1);
    assert_eq!(
        recorded(&session.receive(now, &audio(1, 0, 3000))).len(),
        160
    );
    assert_eq!(ended(&session.receive(now, &event(2, POUND, false))), None);
    assert_eq!(
        ended(&session.receive(now, &event(3, 5, true))),
        None,
        "5 is not #"
    );
    assert_eq!(
        ended(&session.receive(now, &event(4, POUND, true))),
        Some(End::Pound)
    );
    assert!(session.is_ended());
    // The end packet's retransmissions change nothing.
    assert!(session.receive(now, &event(5, POUND, true)).is_empty());
}

#[test]
fn a_pound_in_band_ends_the_recording() {
    let (mut session, now, _) = through_the_greeting(1);
    let mut out = Vec::new();
    for i in 0..5u16 {
        let payload: Vec<u8> = (0..160)
            .map(|n| {
                let t = (f32::from(i) * 160.0 + n as f32) / 8000.0;
                let s = 6000.0
                    * ((2.0 * std::f32::consts::PI * 941.0 * t).sin()
                        + (2.0 * std::f32::consts::PI * 1477.0 * t).sin());
                MU.encode(s as i16)
            })
            .collect();
        let packet = rtp_rs::RtpPacketBuilder::new()
            .payload_type(PT)
            .sequence(rtp_rs::Seq::from(i + 1))
            .timestamp(u32::from(i) * 160)
            .payload(&payload)
            .build()
            .unwrap();
        out.extend(session.receive(now, &packet));
    }
    assert_eq!(ended(&out), Some(End::Pound));
}

#[test]
fn quiet_audio_for_the_silence_time_ends_the_recording() {
    let (mut session, mut now, _) = through_the_greeting(1);
    let mut end = None;
    // Speech for a second, then 5 s of near silence.
    for i in 0..(50 + 250u32) {
        let level = if i < 50 { 8000 } else { 50 };
        let out = session.receive(now, &audio(i as u16, i * 160, level));
        end = end.or(ended(&out));
        now += PTIME;
    }
    assert_eq!(end, Some(End::Silence));
    assert_eq!(session.recorded_samples(), 8000 * 6);
}

#[test]
fn no_packets_for_the_silence_time_ends_the_recording() {
    let (mut session, now, _) = through_the_greeting(1);
    let deadline = session.next_deadline().unwrap();
    assert!(deadline >= now + Duration::from_secs(4));
    assert_eq!(
        ended(&session.poll(deadline - Duration::from_millis(1))),
        None
    );
    assert_eq!(ended(&session.poll(deadline)), Some(End::NoMedia));
}

#[test]
fn the_recording_stops_at_its_maximum_length_exactly() {
    let start = Instant::now();
    let mut settings = settings();
    settings.max_length = Duration::from_secs(1);
    let mut session = Session::new(start, settings, greeting(1));
    let mut now = start;
    while session.phase != Phase::Recording {
        session.poll(now);
        now += PTIME;
    }
    let mut end = None;
    let mut samples = 0;
    for i in 0..60u32 {
        let out = session.receive(now, &audio(i as u16, i * 160, 8000));
        samples += recorded(&out).len();
        end = end.or(ended(&out));
    }
    assert_eq!(end, Some(End::MaxLength));
    assert_eq!(samples, 8000);
}

#[test]
fn on_hold_nothing_is_sent_and_off_hold_the_greeting_goes_on_marked() {
    let start = Instant::now();
    let mut session = Session::new(start, settings(), greeting(50));
    let first = sent(&session.poll(start));
    assert_eq!(first.len(), 1);
    session.set_hold(start + PTIME, true);
    // Only the session's limit is left to wait for.
    assert!(session.next_deadline().unwrap() > start + Duration::from_secs(180));
    assert!(session.poll(start + Duration::from_secs(3)).is_empty());
    let back = start + Duration::from_secs(3);
    session.set_hold(back, false);
    let next = sent(&session.poll(back));
    assert_eq!(next.len(), 1);
    let packet = rtp_rs::RtpReader::new(&next[0]).unwrap();
    assert!(packet.mark(), "a new talkspurt after hold");
    assert_eq!(u16::from(packet.sequence_number()), 65535);
    assert_eq!(packet.timestamp(), (u32::MAX - 200).wrapping_add(160));
}

#[test]
fn a_hang_up_keeps_what_the_reordering_buffer_held() {
    let (mut session, now, _) = through_the_greeting(1);
    assert_eq!(
        recorded(&session.receive(now, &audio(1, 0, 3000))).len(),
        160
    );
    assert!(recorded(&session.receive(now, &audio(3, 320, 3000))).is_empty());
    let out = session.close();
    assert_eq!(
        recorded(&out).len(),
        320,
        "the lost packet's time, then packet 3"
    );
    assert!(session.is_ended());
}

fn packet(payload_type: u8, ssrc: u32, sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(payload_type)
        .ssrc(ssrc)
        .sequence(rtp_rs::Seq::from(sequence))
        .timestamp(timestamp)
        .payload(payload)
        .build()
        .unwrap()
}

#[test]
fn keepalives_and_other_payload_types_do_not_keep_a_session_alive() {
    let (mut session, mut now, _) = through_the_greeting(1);
    let end = session.next_deadline().unwrap();
    let mut ended_at = None;
    for i in 0..400u16 {
        // An empty keepalive (RFC 6263) and a packet of a payload type not negotiated.
        session.receive(now, &packet(PT, 99, i, u32::from(i) * 160, &[]));
        session.receive(now, &packet(18, 99, i, u32::from(i) * 160, &[1; 20]));
        if ended(&session.poll(now)) == Some(End::NoMedia) {
            ended_at = Some(now);
            break;
        }
        now += PTIME;
    }
    let at = ended_at.expect("no media ends the session");
    assert!(at >= end && at < end + PTIME * 2, "{:?}", at - end);
}

#[test]
fn a_hold_that_never_ends_still_ends_the_session_at_its_limit() {
    let start = Instant::now();
    let mut session = Session::new(start, settings(), greeting(50));
    session.poll(start);
    session.set_hold(start + PTIME, true);
    // 1 s greeting + 0.4 s tone + 180 s + 5 s.
    let limit = start + Duration::from_millis(186_400);
    assert_eq!(session.next_deadline(), Some(limit));
    assert!(session.poll(limit - Duration::from_millis(1)).is_empty());
    assert_eq!(ended(&session.poll(limit)), Some(End::MaxLength));
}

#[test]
fn audio_while_on_hold_is_not_recorded() {
    let (mut session, now, _) = through_the_greeting(1);
    session.set_hold(now, true);
    assert!(recorded(&session.receive(now, &audio(1, 0, 8000))).is_empty());
    session.set_hold(now, false);
    assert_eq!(
        recorded(&session.receive(now, &audio(2, 160, 8000))).len(),
        160
    );
}

#[test]
fn a_restarted_sequence_new_ssrc_or_big_jump_goes_on_being_recorded() {
    let (mut session, now, _) = through_the_greeting(1);
    let level = |ssrc: u32, sequence: u16, timestamp: u32| {
        let payload: Vec<u8> = (0..160)
            .map(|n| MU.encode(if n % 16 < 8 { 4000 } else { -4000 }))
            .collect();
        packet(PT, ssrc, sequence, timestamp, &payload)
    };
    let mut total = 0;
    for i in 0..5u16 {
        total += recorded(&session.receive(now, &level(1, 40_000 + i, u32::from(i) * 160))).len();
    }
    // The phone restarts its stream after a re-INVITE: a new SSRC, numbering from 10.
    for i in 0..5u16 {
        total +=
            recorded(&session.receive(now, &level(2, 10 + i, 9_000 + u32::from(i) * 160))).len();
    }
    // Same SSRC, numbering far behind (a restart without a new SSRC).
    for i in 0..5u16 {
        total += recorded(&session.receive(now, &level(2, 5_000 + i, 20_000 + u32::from(i) * 160)))
            .len();
    }
    for i in 0..5u16 {
        total +=
            recorded(&session.receive(now, &level(2, 100 + i, 30_000 + u32::from(i) * 160))).len();
    }
    assert_eq!(total, 160 * 20);
}

#[test]
fn a_pound_pressed_during_the_tone_does_not_end_the_recording() {
    let start = Instant::now();
    let mut session = Session::new(start, settings(), greeting(1));
    let mut now = start;
    // # pressed (and released) during the tone; its end packet is retransmitted after.
    session.poll(now);
    session.receive(now, &event(1, POUND, true));
    while session.phase != Phase::Recording {
        session.poll(now);
        now += PTIME;
    }
    assert_eq!(ended(&session.receive(now, &event(2, POUND, true))), None);
    // A new press (another event timestamp) does.
    let again = rtp_rs::RtpPacketBuilder::new()
        .payload_type(EVENT)
        .sequence(rtp_rs::Seq::from(3))
        .timestamp(6000)
        .payload(&[POUND, 0x80 | 10, 0x03, 0x20])
        .build()
        .unwrap();
    assert_eq!(ended(&session.receive(now, &again)), Some(End::Pound));
}
