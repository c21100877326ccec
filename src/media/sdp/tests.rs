use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

/// Joins lines with CRLF, as on the wire.
fn sdp(lines: &[&str]) -> Vec<u8> {
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text.into_bytes()
}

fn negotiated(lines: &[&str]) -> Negotiated {
    negotiate(&parse(&sdp(lines)).unwrap()).unwrap()
}

fn refusal(lines: &[&str]) -> NotAcceptable {
    negotiate(&parse(&sdp(lines)).unwrap()).unwrap_err()
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

const LOCAL: &str = "203.0.113.5:16000";

fn local() -> SocketAddr {
    LOCAL.parse().unwrap()
}

const ASTERISK: &[&str] = &[
    "v=0",
    "o=- 1234567890 1234567890 IN IP4 192.0.2.10",
    "s=Asterisk",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 10000 RTP/AVP 8 0 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendrecv",
];

const FREESWITCH: &[&str] = &[
    "v=0",
    "o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.7",
    "s=FreeSWITCH",
    "c=IN IP4 198.51.100.7",
    "t=0 0",
    "m=audio 23456 RTP/AVP 102 9 0 8 101 13",
    "a=rtpmap:102 opus/48000/2",
    "a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtpmap:13 CN/8000",
    "a=ptime:20",
];

/// SIPp's `uac` scenario.
const SIPP: &[&str] = &[
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.1.1",
    "s=-",
    "c=IN IP4 127.0.1.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
];

/// A softphone (Linphone-like) offering video too, wideband events and dynamic numbers.
const SOFTPHONE: &[&str] = &[
    "v=0",
    "o=alice 3724 1812 IN IP4 10.0.0.23",
    "s=Talk",
    "c=IN IP4 10.0.0.23",
    "t=0 0",
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics",
    "m=audio 7078 RTP/AVP 96 97 98 0 8 101 99 100",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:97 speex/16000",
    "a=rtpmap:98 speex/8000",
    "a=rtpmap:101 telephone-event/48000",
    "a=rtpmap:99 telephone-event/16000",
    "a=rtpmap:100 telephone-event/8000",
    "a=rtcp-fb:* trr-int 1000",
    "m=video 9078 RTP/AVP 96 97",
    "a=rtpmap:96 VP8/90000",
    "a=rtpmap:97 H264/90000",
    "a=fmtp:97 profile-level-id=42801F",
];

#[test]
fn asterisk_offer_gets_its_first_choice_pcma_and_events() {
    let n = negotiated(ASTERISK);
    assert_eq!(
        n.codec,
        Codec {
            law: Law::A,
            payload_type: 8
        }
    );
    assert_eq!(n.telephone_event, Some(101));
    assert_eq!(n.remote, v4(192, 0, 2, 10, 10000));
    assert_eq!(n.direction, Direction::SendRecv);
    assert_eq!(n.ptime, 20);
}

#[test]
fn the_answer_to_asterisk_is_exact() {
    let n = negotiated(ASTERISK);
    let mut session = SessionVersion::new(4242);
    assert_eq!(
        answer(&n, local(), &mut session),
        "v=0\r\n\
         o=sipdesk 4242 4242 IN IP4 203.0.113.5\r\n\
         s=sipdesk\r\n\
         c=IN IP4 203.0.113.5\r\n\
         t=0 0\r\n\
         m=audio 16000 RTP/AVP 8 101\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    );
}

#[test]
fn freeswitch_offer_skips_opus_and_g722_for_pcmu() {
    let offer = parse(&sdp(FREESWITCH)).unwrap();
    let stream = &offer.streams[0];
    assert_eq!(stream.formats, ["102", "9", "0", "8", "101", "13"]);
    assert_eq!(stream.payload_types[0].to_string(), "opus/48000");
    assert_eq!(stream.payload_types[0].channels, 2);
    assert_eq!(
        stream.payload_types[0].fmtp.as_deref(),
        Some("useinbandfec=1; maxaveragebitrate=30000")
    );
    assert_eq!(stream.payload_types[4].fmtp.as_deref(), Some("0-16"));
    assert_eq!(stream.ptime, Some(20));
    assert_eq!(
        offer.origin,
        Some(Origin {
            username: "FreeSWITCH".into(),
            session_id: "1700000000".into(),
            version: "1700000001".into()
        })
    );
    let n = negotiate(&offer).unwrap();
    assert_eq!(
        n.codec,
        Codec {
            law: Law::Mu,
            payload_type: 0
        }
    );
    assert_eq!(n.telephone_event, Some(101));
}

#[test]
fn sipp_offer_without_events_gets_pcmu_alone() {
    let n = negotiated(SIPP);
    assert_eq!(n.codec.law, Law::Mu);
    assert_eq!(n.telephone_event, None);
    assert_eq!(n.remote, v4(127, 0, 1, 1, 6000));
    let answer = answer(&n, local(), &mut SessionVersion::new(1));
    assert!(answer.contains("m=audio 16000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"));
    assert!(!answer.contains("telephone-event"));
    assert!(!answer.contains("fmtp"));
}

#[test]
fn static_payload_types_need_no_rtpmap() {
    let n = negotiated(&[
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 6000 RTP/AVP 18 8",
    ]);
    assert_eq!(
        n.codec,
        Codec {
            law: Law::A,
            payload_type: 8
        }
    );
    let offer = parse(&sdp(&[
        "v=0",
        "c=IN IP4 127.0.0.1",
        "m=audio 6000 RTP/AVP 18 96",
    ]))
    .unwrap();
    let names: Vec<String> = offer.streams[0]
        .payload_types
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["G729/8000", "payload type 96"]);
}

#[test]
fn a_dynamic_number_for_pcmu_is_kept() {
    let n = negotiated(&[
        "v=0",
        "c=IN IP4 127.0.0.1",
        "m=audio 6000 RTP/AVP 112 96",
        "a=rtpmap:112 pcmu/8000",
        "a=rtpmap:96 telephone-event/8000",
        "a=fmtp:96 0-15",
    ]);
    assert_eq!(
        n.codec,
        Codec {
            law: Law::Mu,
            payload_type: 112
        }
    );
    assert_eq!(n.telephone_event, Some(96));
    let answer = answer(&n, local(), &mut SessionVersion::new(1));
    assert!(answer.contains("m=audio 16000 RTP/AVP 112 96\r\na=rtpmap:112 PCMU/8000\r\n"));
    assert!(answer.contains("a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"));
}

#[test]
fn a_codec_at_another_rate_or_in_stereo_is_not_g711() {
    let refused = refusal(&[
        "v=0",
        "c=IN IP4 127.0.0.1",
        "m=audio 6000 RTP/AVP 0 96",
        "a=rtpmap:0 PCMU/16000",
        "a=rtpmap:96 PCMA/8000/2",
    ]);
    assert_eq!(
        refused.to_string(),
        "the offer's audio has no codec sipdesk speaks (PCMU or PCMA): it offered PCMU/16000, PCMA/8000"
    );
}

#[test]
fn the_softphone_gets_narrowband_events_and_its_video_rejected_in_place() {
    let n = negotiated(SOFTPHONE);
    assert_eq!(
        n.codec,
        Codec {
            law: Law::Mu,
            payload_type: 0
        }
    );
    assert_eq!(n.telephone_event, Some(100));
    let answer = answer(&n, local(), &mut SessionVersion::new(7));
    let media: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        media,
        ["m=audio 16000 RTP/AVP 0 100", "m=video 0 RTP/AVP 96"]
    );
}

#[test]
fn g729_only_is_refused_with_what_was_offered() {
    let refused = refusal(&[
        "v=0",
        "o=- 3 3 IN IP4 192.0.2.33",
        "s=-",
        "c=IN IP4 192.0.2.33",
        "t=0 0",
        "m=audio 5004 RTP/AVP 18 101",
        "a=rtpmap:18 G729/8000",
        "a=fmtp:18 annexb=no",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    assert_eq!(
        refused,
        NotAcceptable::NoCodec {
            offered: "G729/8000, telephone-event/8000".into()
        }
    );
}

#[test]
fn secure_profiles_are_not_spoken() {
    let refused = refusal(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "m=audio 5004 RTP/SAVP 0 8",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    ]);
    assert_eq!(
        refused.to_string(),
        "the offer's audio is RTP/SAVP; sipdesk speaks plain RTP/AVP only"
    );
    let webrtc = refusal(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
    ]);
    assert!(matches!(webrtc, NotAcceptable::Profile { ref proto } if proto == "UDP/TLS/RTP/SAVPF"));
}

#[test]
fn a_plain_copy_after_a_secure_stream_is_taken() {
    let n = negotiated(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 5004 RTP/SAVP 0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "m=audio 5006 RTP/AVP 0",
    ]);
    assert_eq!(n.remote, v4(192, 0, 2, 1, 5006));
    let answer = answer(&n, local(), &mut SessionVersion::new(1));
    let media: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(media, ["m=audio 0 RTP/SAVP 0", "m=audio 16000 RTP/AVP 0"]);
}

#[test]
fn disabled_and_missing_audio_is_refused() {
    assert_eq!(
        refusal(&["v=0", "c=IN IP4 192.0.2.1", "m=audio 0 RTP/AVP 0"]),
        NotAcceptable::NoAudio
    );
    assert_eq!(
        refusal(&["v=0", "c=IN IP4 192.0.2.1", "m=video 5000 RTP/AVP 31"]),
        NotAcceptable::NoAudio
    );
    assert_eq!(refusal(&["v=0", "s=-"]), NotAcceptable::NoAudio);
}

#[test]
fn audio_without_a_usable_address_is_refused() {
    assert_eq!(
        refusal(&["v=0", "m=audio 5000 RTP/AVP 0"]),
        NotAcceptable::NoAddress
    );
    assert_eq!(
        refusal(&["v=0", "c=IN IP4 pbx.example.com", "m=audio 5000 RTP/AVP 0"]),
        NotAcceptable::NoAddress
    );
    // IP4 that is not an IPv4 address.
    assert_eq!(
        refusal(&["v=0", "c=IN IP4 2001:db8::1", "m=audio 5000 RTP/AVP 0"]),
        NotAcceptable::NoAddress
    );
}

#[test]
fn the_stream_connection_overrides_the_session_one() {
    let n = negotiated(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "m=audio 5000 RTP/AVP 0",
        "c=IN IP4 192.0.2.99",
    ]);
    assert_eq!(n.remote, v4(192, 0, 2, 99, 5000));
    let n = negotiated(&["v=0", "m=audio 5000 RTP/AVP 0", "c=IN IP4 224.2.1.1/127"]);
    assert_eq!(n.remote, v4(224, 2, 1, 1, 5000));
}

#[test]
fn ipv6_offers_get_ipv6_answers() {
    let n = negotiated(&[
        "v=0",
        "o=- 1 1 IN IP6 2001:db8::10",
        "s=-",
        "c=IN IP6 2001:db8::10",
        "t=0 0",
        "m=audio 5004 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let remote_ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    assert_eq!(n.remote, SocketAddr::new(IpAddr::V6(remote_ip), 5004));
    let local: SocketAddr = "[2001:db8::5]:16002".parse().unwrap();
    let answer = answer(&n, local, &mut SessionVersion::new(9));
    assert!(answer.contains("o=sipdesk 9 9 IN IP6 2001:db8::5\r\n"));
    assert!(answer.contains("c=IN IP6 2001:db8::5\r\n"));
    assert!(answer.contains("m=audio 16002 RTP/AVP 0 101\r\n"));
}

fn hold(direction: Option<&str>, address: &str) -> Negotiated {
    let connection = format!("c=IN IP4 {address}");
    let mut lines = vec![
        "v=0",
        "o=- 1 2 IN IP4 192.0.2.1",
        "s=-",
        &connection,
        "t=0 0",
    ];
    lines.push("m=audio 5000 RTP/AVP 0");
    let attribute = direction.map(|d| format!("a={d}"));
    if let Some(attribute) = &attribute {
        lines.push(attribute);
    }
    negotiated(&lines)
}

#[test]
fn answer_directions_follow_rfc_3264() {
    assert_eq!(hold(None, "192.0.2.1").direction, Direction::SendRecv);
    assert_eq!(
        hold(Some("sendrecv"), "192.0.2.1").direction,
        Direction::SendRecv
    );
    assert_eq!(
        hold(Some("sendonly"), "192.0.2.1").direction,
        Direction::RecvOnly
    );
    assert_eq!(
        hold(Some("recvonly"), "192.0.2.1").direction,
        Direction::SendOnly
    );
    assert_eq!(
        hold(Some("inactive"), "192.0.2.1").direction,
        Direction::Inactive
    );
}

#[test]
fn rfc_2543_hold_with_0000_stops_sipdesk_sending() {
    let n = hold(None, "0.0.0.0");
    assert_eq!(n.direction, Direction::RecvOnly);
    assert!(!n.direction.sends());
    assert!(n.remote.ip().is_unspecified());
    assert_eq!(n.remote.port(), 5000);
    assert_eq!(
        hold(Some("sendonly"), "0.0.0.0").direction,
        Direction::RecvOnly
    );
    assert_eq!(
        hold(Some("recvonly"), "0.0.0.0").direction,
        Direction::Inactive
    );
    assert_eq!(
        hold(Some("inactive"), "0.0.0.0").direction,
        Direction::Inactive
    );
    let answer = answer(&n, local(), &mut SessionVersion::new(1));
    assert!(answer.contains("c=IN IP4 203.0.113.5\r\n"));
    assert!(answer.ends_with("a=recvonly\r\n"));
}

#[test]
fn a_session_direction_applies_unless_the_stream_has_its_own() {
    let n = negotiated(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "a=sendonly",
        "m=audio 5000 RTP/AVP 0",
    ]);
    assert_eq!(n.direction, Direction::RecvOnly);
    let n = negotiated(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "a=inactive",
        "m=audio 5000 RTP/AVP 0",
        "a=sendrecv",
    ]);
    assert_eq!(n.direction, Direction::SendRecv);
}

#[test]
fn direction_answers_reverse_who_sends() {
    let cases = [
        (Direction::SendRecv, Direction::SendRecv),
        (Direction::SendOnly, Direction::RecvOnly),
        (Direction::RecvOnly, Direction::SendOnly),
        (Direction::Inactive, Direction::Inactive),
    ];
    for (offer, answer) in cases {
        assert_eq!(offer.answer(), answer);
        assert_eq!(answer.answer(), offer);
        assert_eq!(offer.sends(), answer.receives());
        assert_eq!(Direction::from_attribute(offer.attribute()), Some(offer));
    }
}

#[test]
fn the_version_grows_only_when_the_answer_changes() {
    let mut session = SessionVersion::new(100);
    let first = answer(&negotiated(ASTERISK), local(), &mut session);
    assert!(first.contains("o=sipdesk 100 100 "));
    // A session refresh: the same offer again.
    let again = answer(&negotiated(ASTERISK), local(), &mut session);
    assert_eq!(again, first);
    // The caller holds, then resumes.
    let held = answer(&hold(Some("sendonly"), "192.0.2.1"), local(), &mut session);
    assert!(held.contains("o=sipdesk 100 101 "), "{held}");
    let resumed = answer(&hold(None, "192.0.2.1"), local(), &mut session);
    assert!(resumed.contains("o=sipdesk 100 102 "), "{resumed}");
    assert_eq!(session.version(), 102);
}

#[test]
fn session_ids_stay_below_2_to_the_62() {
    let session = SessionVersion::new(u64::MAX);
    assert_eq!(session.version(), (1 << 62) - 1);
}

#[test]
fn the_timing_of_the_offer_is_repeated() {
    let n = negotiated(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "t=3034423619 3042462419",
        "m=audio 5000 RTP/AVP 0",
    ]);
    assert!(
        answer(&n, local(), &mut SessionVersion::new(1))
            .contains("\r\nt=3034423619 3042462419\r\n")
    );
    let n = negotiated(&["v=0", "c=IN IP4 192.0.2.1", "m=audio 5000 RTP/AVP 0"]);
    assert!(answer(&n, local(), &mut SessionVersion::new(1)).contains("\r\nt=0 0\r\n"));
}

#[test]
fn answers_parse_back_to_what_was_negotiated() {
    for offer in [ASTERISK, FREESWITCH, SIPP, SOFTPHONE] {
        let n = negotiated(offer);
        let text = answer(&n, local(), &mut SessionVersion::new(55));
        let parsed = parse(text.as_bytes()).unwrap();
        let audio = parsed.streams.iter().find(|s| s.port != 0).unwrap();
        assert_eq!(audio.address, Some(local().ip()));
        assert_eq!(audio.port, local().port());
        assert_eq!(audio.ptime, Some(20));
        assert_eq!(audio.direction, n.direction);
        assert_eq!(
            parsed.streams.len(),
            parse(&sdp(offer)).unwrap().streams.len()
        );
        // Negotiating over the answer picks the same codec and events.
        let back = negotiate(&parsed).unwrap();
        assert_eq!(back.codec, n.codec);
        assert_eq!(back.telephone_event, n.telephone_event);
        assert_eq!(back.remote, local());
        let events = audio
            .payload_types
            .iter()
            .find(|pt| pt.is("telephone-event", 8000));
        assert_eq!(
            events.map(|pt| pt.fmtp.as_deref()),
            n.telephone_event.map(|_| Some("0-15"))
        );
    }
}

#[test]
fn line_ends_may_be_bare_lf_and_ports_may_count() {
    let text = b"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 49170/2 RTP/AVP 0\n";
    let n = negotiate(&parse(text).unwrap()).unwrap();
    assert_eq!(n.remote, v4(192, 0, 2, 1, 49170));
}

#[test]
fn malformed_optional_attributes_are_ignored() {
    let offer = parse(&sdp(&[
        "v=0",
        "c=IN IP4 192.0.2.1",
        "m=audio 5000 RTP/AVP 0 8",
        "a=rtpmap:0",
        "a=rtpmap:x PCMA/8000",
        "a=rtpmap:8 PCMA/fast",
        "a=ptime:twenty",
        "a=fmtp:",
        "a=s\u{e9}ance latin-1",
    ]))
    .unwrap();
    let stream = &offer.streams[0];
    assert_eq!(stream.ptime, None);
    assert_eq!(stream.payload_types[0].to_string(), "PCMU/8000");
    assert_eq!(stream.payload_types[1].to_string(), "PCMA/8000");
}

#[test]
fn non_sdp_bodies_are_refused_with_the_line() {
    assert_eq!(parse(b""), Err(SdpError::NotSdp));
    assert_eq!(parse(b"<xml/>"), Err(SdpError::NotSdp));
    assert_eq!(parse(b"v=1\r\n"), Err(SdpError::NotSdp));
    assert_eq!(
        parse(&sdp(&["v=0", "s=-", "this is not sdp"]))
            .unwrap_err()
            .to_string(),
        "SDP line 3 is not <type>=<value>"
    );
    assert_eq!(parse(&sdp(&["v=0", "=x"])), Err(SdpError::Line { line: 2 }));
    assert_eq!(
        parse(&sdp(&["v=0", "m=audio RTP/AVP 0"]))
            .unwrap_err()
            .to_string(),
        "SDP line 2: an m= line is <media> <port> <proto> <formats>"
    );
    assert_eq!(
        parse(&sdp(&["v=0", "m=audio 70000 RTP/AVP 0"])),
        Err(SdpError::Media { line: 2 })
    );
    assert_eq!(
        parse(&sdp(&["v=0", "s=-", "", "c=IN IP4"]))
            .unwrap_err()
            .to_string(),
        "SDP line 4: a c= line is IN IP4 or IN IP6 and an address"
    );
    assert_eq!(
        parse(&sdp(&[
            "v=0",
            "c=ATM NSAP 47.0091.8100.0000.0060.3E64.FD01"
        ])),
        Err(SdpError::Connection { line: 2 })
    );
}

/// Lines that look like SDP, to reach deeper than random bytes do.
fn sdp_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("c=IN IP4 192.0.2.1".to_owned()),
        Just("c=IN IP4 0.0.0.0".to_owned()),
        Just("c=IN IP6 ::".to_owned()),
        Just("t=0 0".to_owned()),
        "m=(audio|video) [0-9]{1,5}(/2)? (RTP/AVP|RTP/SAVP|udp) ([0-9]{1,3} ?){0,4}",
        "a=(rtpmap|fmtp|ptime):[0-9]{0,3} ?[a-zA-Z-]{0,16}(/[0-9]{0,6}){0,3}",
        "a=(sendrecv|sendonly|recvonly|inactive)",
        "[a-z]=[ -~]{0,20}",
        "[ -~]{0,20}",
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
        let mut body = b"v=0\r\n".to_vec();
        body.extend_from_slice(&bytes);
        if let Ok(offer) = parse(&body) {
            let _ = negotiate(&offer);
        }
    }

    #[test]
    fn whatever_is_negotiated_is_answered_with_sdp_that_negotiates_the_same(
        lines in proptest::collection::vec(sdp_line(), 0..12)
    ) {
        let mut body = "v=0\r\n".to_owned();
        for line in &lines {
            body.push_str(line);
            body.push_str("\r\n");
        }
        let Ok(offer) = parse(body.as_bytes()) else { return Ok(()) };
        let Ok(n) = negotiate(&offer) else { return Ok(()) };
        let text = answer(&n, local(), &mut SessionVersion::new(3));
        let parsed = parse(text.as_bytes()).unwrap();
        prop_assert_eq!(parsed.streams.len(), offer.streams.len());
        let back = negotiate(&parsed).unwrap();
        prop_assert_eq!(back.codec, n.codec);
        prop_assert_eq!(back.telephone_event, n.telephone_event);
        prop_assert_eq!(back.remote, local());
    }
}
